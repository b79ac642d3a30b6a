#!/usr/bin/env bash
# Runs every test of the station. Installs what the tests need on a fresh
# Debian machine (as root): a C compiler for the bundled SQLite and ring,
# and Chromium with its WebDriver for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# The browser test drives Debian's Chromium over WebDriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust (cargo) is not installed: install it with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi

# Unit, integration and benchmark-smoke tests, then documentation tests.
cargo test --all-targets
cargo test --doc
