//! Opening the factory CA that `[ca]` describes: the key in its backend
//! (key file, PKCS#11 token, the station's TPM), the secrets that unlock it
//! (from the environment or from files only the station's user can read),
//! and the certificate chain that goes with it. Start-up, `station check`
//! and `station ca` all open the CA here, so they refuse the same things
//! with the same words.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::ca::pkcs11::{HsmKey, Pkcs11Spec};
use crate::ca::tpm_key::{TpmCaKey, TpmCaSpec};
use crate::ca::{CaKey, FactoryCa};
use crate::config::{CaBackend, Config};

/// The environment variable holding the CA key file's passphrase; it wins
/// over `[ca] key_passphrase_file`.
pub const CA_PASSPHRASE_ENV: &str = "STATION_CA_PASSPHRASE";

/// The environment variable holding the PKCS#11 token's user PIN; it wins
/// over `[ca.pkcs11] pin_file`.
pub const CA_PIN_ENV: &str = "STATION_CA_PIN";

/// A secret from the environment variable `env`, or else from `file`
/// (relative to the configuration file's folder), which others must not
/// be able to read.
fn secret(
    cfg: &Config,
    env: &str,
    file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    secret_file(env, file.map(|f| config_relative(cfg, f)).as_deref(), what)
}

/// A secret from the environment variable `env`, or else from the file at
/// `path`, which others must not be able to read. The master key for
/// symmetric-key devices takes its passphrase and PIN through here too.
pub fn secret_file(
    env: &str,
    path: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    if let Ok(p) = std::env::var(env)
        && !p.is_empty()
    {
        return Ok(Some(Zeroizing::new(p.into_bytes())));
    }
    let Some(path) = path else {
        return Ok(None);
    };
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the {what} file {} can be read by others (mode {mode:o}): `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the {what} file {}", path.display()))?,
    );
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        anyhow::bail!(
            "the {what} file {} is empty: put the {what} in it",
            path.display()
        );
    }
    Ok(Some(Zeroizing::new(value.as_bytes().to_vec())))
}

fn config_relative(cfg: &Config, file: &Path) -> PathBuf {
    cfg.file.parent().unwrap_or(Path::new(".")).join(file)
}

/// The CA key file's passphrase, if one is given.
pub fn ca_passphrase(cfg: &Config) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    secret(
        cfg,
        CA_PASSPHRASE_ENV,
        cfg.ca.key_passphrase_file.as_deref(),
        "CA passphrase",
    )
}

/// The PKCS#11 token's user PIN, which that backend cannot do without.
fn ca_pin(cfg: &Config, file: Option<&Path>) -> anyhow::Result<Zeroizing<String>> {
    let Some(pin) = secret(cfg, CA_PIN_ENV, file, "PKCS#11 PIN")? else {
        anyhow::bail!(
            "the PKCS#11 token needs its user PIN: set {CA_PIN_ENV} or [ca.pkcs11] pin_file (a file readable by the station's user only)"
        );
    };
    let text = String::from_utf8(pin.to_vec()).context("the PKCS#11 PIN is not UTF-8 text")?;
    Ok(Zeroizing::new(text))
}

/// The CA key as opened: the key, how `ca show` names it, whether a key
/// file is encrypted, and whether the key was made just now.
pub struct OpenedKey {
    pub key: CaKey,
    pub describe: String,
    pub sealed: bool,
    pub made: bool,
}

/// Opens the CA key in the configured backend; with `create`, makes it
/// there first if there is none (`station ca request`).
pub fn open_key(cfg: &Config, create: bool) -> anyhow::Result<OpenedKey> {
    match &cfg.ca.backend {
        CaBackend::File => {
            let path = cfg.ca_key_path();
            let passphrase = ca_passphrase(cfg)?;
            let pass = passphrase.as_ref().map(|p| p.as_slice());
            let made = create && !path.exists();
            if made {
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .context("making the CA key")?;
                crate::ca::file::write_key(&path, &key, pass, false)?;
            }
            let (key, sealed) = crate::ca::file::read_key(&path, pass)?;
            Ok(OpenedKey {
                key: CaKey::File(Box::new(key)),
                describe: crate::ca::file::describe(&path, sealed),
                sealed,
                made,
            })
        }
        CaBackend::Pkcs11(p) => {
            let spec = Pkcs11Spec {
                module: p.module.clone(),
                token_label: p.token_label.clone(),
                key_label: p.key_label.clone(),
                pin: ca_pin(cfg, p.pin_file.as_deref())?,
            };
            let (key, made) = if create {
                HsmKey::open_or_create(&spec)?
            } else {
                (HsmKey::open(&spec)?, false)
            };
            Ok(OpenedKey {
                describe: key.describe(),
                key: CaKey::Pkcs11(key),
                sealed: false,
                made,
            })
        }
        CaBackend::Tpm(t) => {
            let spec = TpmCaSpec {
                tcti: t.tcti.clone(),
                handle: t.handle,
            };
            let (key, made) = if create {
                TpmCaKey::open_or_create(&spec)?
            } else {
                (TpmCaKey::open(&spec)?, false)
            };
            Ok(OpenedKey {
                describe: key.describe(),
                key: CaKey::Tpm(key),
                sealed: false,
                made,
            })
        }
    }
}

/// Loads the factory CA; with `create_if_missing` (demo mode, file
/// backend) makes a self-signed one when neither file exists.
pub fn load_ca(cfg: &Config, create_if_missing: bool) -> anyhow::Result<FactoryCa> {
    let cert = cfg.ca_certificate_path();
    let file_backend = cfg.ca.backend == CaBackend::File;
    if file_backend {
        let key = cfg.ca_key_path();
        if !cert.exists() && !key.exists() {
            if create_if_missing {
                let passphrase = ca_passphrase(cfg)?;
                tracing::warn!(certificate = %cert.display(), "no factory CA yet: creating a new one for the demo");
                return FactoryCa::init_with(
                    &cert,
                    &key,
                    &cfg.ca.common_name,
                    cfg.ca.ca_validity_days,
                    false,
                    passphrase.as_ref().map(|p| p.as_slice()),
                )
                .context("creating a demo factory CA");
            }
            anyhow::bail!(
                "the factory CA is missing ({} and {}): create it with `station ca init --config {}` (development), or make this station's intermediate with `station ca request` and `station ca install`",
                cert.display(),
                key.display(),
                cfg.file.display()
            );
        }
    }
    if !cert.exists() {
        anyhow::bail!(
            "there is no CA certificate at {}: make this station's intermediate with `station ca request --config {}`, have the factory root sign the request, then `station ca install CERT`",
            cert.display(),
            cfg.file.display()
        );
    }
    let opened = open_key(cfg, false)?;
    let ca = FactoryCa::open(&cert, opened.key, opened.describe, opened.sealed)?;
    if file_backend && !ca.sealed() {
        tracing::warn!(
            key = %cfg.ca_key_path().display(),
            "the factory CA key file is not encrypted: for production, keep it encrypted (`station ca init` with {CA_PASSPHRASE_ENV} set), or keep the key in an HSM or TPM ([ca] key)"
        );
    }
    if let Some(w) = expiry_warning(cfg, &ca, OffsetDateTime::now_utc()) {
        tracing::warn!("{w}");
    }
    Ok(ca)
}

/// A warning if the CA certificate (or one above it) expires within
/// `[ca] expiry_warning_days` of `now`.
pub fn expiry_warning(cfg: &Config, ca: &FactoryCa, now: OffsetDateTime) -> Option<String> {
    let facts = ca.facts();
    let left = facts.not_after - now;
    if left > time::Duration::days(i64::from(cfg.ca.expiry_warning_days)) {
        return None;
    }
    let what = if facts.intermediate {
        "the station's intermediate CA certificate"
    } else {
        "the factory CA certificate"
    };
    Some(format!(
        "{what} ({}) expires in {} day{} ({}): request a new one with `station ca request` and install it before then, or the station stops provisioning",
        facts.subject,
        left.whole_days(),
        if left.whole_days() == 1 { "" } else { "s" },
        facts.not_after.date()
    ))
}
