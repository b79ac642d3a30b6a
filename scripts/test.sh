#!/usr/bin/env bash
# Runs every test of the station. Installs what the tests need on a fresh
# Debian machine (as root): a C compiler for the bundled SQLite and ring,
# Chromium with its WebDriver for the browser test, and the TPM 2.0
# simulator (swtpm), tpm2-tools and libtss2 for the TPM tests, SoftHSM
# for the CA key in a PKCS#11 token, PostgreSQL for the plant tier, and
# tinyproxy, a real HTTP CONNECT proxy for DPS through a corporate network.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# The browser test drives Debian's Chromium over WebDriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
# It runs over HTTPS: the browser trusts the test's plant CA through its
# NSS database, made with certutil.
command -v certutil >/dev/null 2>&1 || need+=(libnss3-tools)
# The TPM tests run one swtpm per simulated board, through libtss2.
command -v swtpm >/dev/null 2>&1 || need+=(swtpm swtpm-tools)
command -v tpm2_createek >/dev/null 2>&1 || need+=(tpm2-tools)
pkg-config --exists tss2-esys 2>/dev/null || need+=(libtss2-dev)
# The CA key in a PKCS#11 token: SoftHSM.
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
# The offline factory root in the CA tests is kept with openssl.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The plant tier tests start their own private PostgreSQL clusters
# (tests/common/pg.rs) with initdb and pg_ctl from Debian's postgresql
# (it brings postgresql-client's psql). The package also starts a system
# cluster on port 5432, which the tests do not use.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ -x /usr/bin/psql ] || need+=(postgresql-client)
# DPS through a corporate network: tests/dps_net.rs runs its own
# tinyproxy on a loopback port.
command -v tinyproxy >/dev/null 2>&1 || need+=(tinyproxy)
# The organisational sign-in tests run node's oidc-provider (below).
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# The line view's accessibility check (tests/line_view.rs) runs axe-core
# in the browser: pinned, from npm, into target/axe, once.
AXE_VERSION=4.10.3
if [ ! -f target/axe/node_modules/axe-core/axe.min.js ] ||
  ! grep -q "\"version\": \"$AXE_VERSION\"" target/axe/node_modules/axe-core/package.json; then
  command -v npm >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
  npm install --no-save --no-audit --no-fund --prefix target/axe "axe-core@$AXE_VERSION"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust (cargo) is not installed: install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi

# The organisational sign-in tests run a real OpenID Connect provider:
# node's oidc-provider, pinned, installed under target/ (not the repo).
OIDC_PROVIDER_VERSION=9.13.3
if ! grep -qs "\"version\": \"$OIDC_PROVIDER_VERSION\"" target/oidc-provider/node_modules/oidc-provider/package.json; then
  npm install --prefix target/oidc-provider --no-audit --no-fund --no-save "oidc-provider@$OIDC_PROVIDER_VERSION"
fi

# Unit, integration and benchmark-smoke tests, then documentation tests,
# with the TPM backend built in.
cargo test --all-targets --features tpm
cargo test --doc --features tpm
