//! `[ca]`: where the factory CA's key lives (`key = "file" | "pkcs11" |
//! "tpm"`, with `[ca.pkcs11]` and `[ca.tpm]`), its certificate chain, and
//! the validity of what it signs.

use std::path::PathBuf;

use serde::Deserialize;

type Invalid = (&'static str, String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCa {
    key: String,
    certificate_file: String,
    #[serde(default = "default_key_file")]
    key_file: String,
    leaf_validity_days: u32,
    #[serde(default = "default_cn")]
    common_name: String,
    #[serde(default = "default_ca_days")]
    ca_validity_days: u32,
    #[serde(default)]
    key_passphrase_file: Option<String>,
    #[serde(default = "default_warning_days")]
    expiry_warning_days: u32,
    #[serde(default)]
    pkcs11: Option<RawPkcs11>,
    #[serde(default)]
    tpm: Option<RawCaTpm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: String,
    token_label: String,
    key_label: String,
    #[serde(default)]
    pin_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaTpm {
    tcti: String,
    #[serde(default)]
    handle: Option<u32>,
}

fn default_cn() -> String {
    "Factory Device CA".into()
}
fn default_ca_days() -> u32 {
    9125
}
fn default_key_file() -> String {
    "ca/factory-ca.key".into()
}
fn default_warning_days() -> u32 {
    30
}

/// The persistent handle of the CA key in the station's TPM unless
/// `[ca.tpm] handle` says otherwise.
pub const DEFAULT_CA_TPM_HANDLE: u32 = 0x8101_0100;

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub backend: CaBackend,
    /// The certificate chain: the signing certificate, then its issuers
    /// up to the root.
    pub certificate_file: PathBuf,
    /// The key file (`key = "file"` only).
    pub key_file: PathBuf,
    /// A file holding the key file's passphrase (readable by the station's
    /// user only); STATION_CA_PASSPHRASE wins over it.
    pub key_passphrase_file: Option<PathBuf>,
    pub leaf_validity_days: u32,
    pub common_name: String,
    pub ca_validity_days: u32,
    /// `station check` and start-up warn this many days before the CA
    /// certificate (or any above it) expires.
    pub expiry_warning_days: u32,
}

/// Where the CA key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaBackend {
    File,
    Pkcs11(Pkcs11Config),
    Tpm(CaTpmConfig),
}

impl CaBackend {
    pub fn as_str(&self) -> &'static str {
        match self {
            CaBackend::File => "file",
            CaBackend::Pkcs11(_) => "pkcs11",
            CaBackend::Tpm(_) => "tpm",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    /// A file holding the user PIN (readable by the station's user only),
    /// relative to the configuration file; STATION_CA_PIN wins over it.
    pub pin_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaTpmConfig {
    pub tcti: String,
    pub handle: u32,
}

pub(super) fn ca_config(c: &RawCa) -> Result<CaConfig, Invalid> {
    let backend = match c.key.as_str() {
        "file" | "pkcs11" | "tpm" => backend(c)?,
        other => {
            return Err((
                "ca.key",
                format!("{other:?} is not a CA key backend; use \"file\", \"pkcs11\" or \"tpm\""),
            ));
        }
    };
    if !(1..=36_500).contains(&c.leaf_validity_days) {
        return Err((
            "ca.leaf_validity_days",
            format!("{} must be between 1 and 36500", c.leaf_validity_days),
        ));
    }
    if !(1..=36_500).contains(&c.ca_validity_days) {
        return Err((
            "ca.ca_validity_days",
            format!("{} must be between 1 and 36500", c.ca_validity_days),
        ));
    }
    if c.expiry_warning_days > 3650 {
        return Err((
            "ca.expiry_warning_days",
            format!("{} must be at most 3650", c.expiry_warning_days),
        ));
    }
    Ok(CaConfig {
        backend,
        certificate_file: PathBuf::from(&c.certificate_file),
        key_file: PathBuf::from(&c.key_file),
        key_passphrase_file: c
            .key_passphrase_file
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(PathBuf::from),
        leaf_validity_days: c.leaf_validity_days,
        common_name: c.common_name.clone(),
        ca_validity_days: c.ca_validity_days,
        expiry_warning_days: c.expiry_warning_days,
    })
}

fn backend(c: &RawCa) -> Result<CaBackend, Invalid> {
    let misplaced = |section: &str| {
        Err((
            "ca.key",
            format!(
                "[ca.{section}] is set but key = {:?}: set key = \"{section}\" or remove the section",
                c.key
            ),
        ))
    };
    match c.key.as_str() {
        "pkcs11" => {
            if c.tpm.is_some() {
                return misplaced("tpm");
            }
            let Some(p) = &c.pkcs11 else {
                return Err((
                    "ca.pkcs11",
                    "key = \"pkcs11\" needs a [ca.pkcs11] section with module, token_label and key_label".into(),
                ));
            };
            for (key, value) in [
                ("ca.pkcs11.module", &p.module),
                ("ca.pkcs11.token_label", &p.token_label),
                ("ca.pkcs11.key_label", &p.key_label),
            ] {
                if value.trim().is_empty() {
                    return Err((key, "must not be empty".into()));
                }
            }
            if p.token_label.chars().count() > 32 {
                return Err((
                    "ca.pkcs11.token_label",
                    format!(
                        "{:?} is longer than 32 characters, which no PKCS#11 token label can be",
                        p.token_label
                    ),
                ));
            }
            Ok(CaBackend::Pkcs11(Pkcs11Config {
                module: PathBuf::from(&p.module),
                token_label: p.token_label.clone(),
                key_label: p.key_label.clone(),
                pin_file: p
                    .pin_file
                    .as_deref()
                    .filter(|f| !f.trim().is_empty())
                    .map(PathBuf::from),
            }))
        }
        "tpm" => {
            if c.pkcs11.is_some() {
                return misplaced("pkcs11");
            }
            let Some(t) = &c.tpm else {
                return Err((
                    "ca.tpm",
                    "key = \"tpm\" needs a [ca.tpm] section with the tcti of the station's TPM, like \"device:/dev/tpmrm0\"".into(),
                ));
            };
            let tcti = super::keygen::check_tcti(&t.tcti).map_err(|e| ("ca.tpm.tcti", e))?;
            let handle = t.handle.unwrap_or(DEFAULT_CA_TPM_HANDLE);
            if !(0x8100_0000..=0x817F_FFFF).contains(&handle) {
                return Err((
                    "ca.tpm.handle",
                    format!(
                        "{handle:#010x} is not an owner persistent handle (0x81000000 to 0x817fffff)"
                    ),
                ));
            }
            Ok(CaBackend::Tpm(CaTpmConfig { tcti, handle }))
        }
        _ => {
            if c.pkcs11.is_some() {
                return misplaced("pkcs11");
            }
            if c.tpm.is_some() {
                return misplaced("tpm");
            }
            Ok(CaBackend::File)
        }
    }
}
