//! `[symmetric_key]`: where the station's master key for symmetric-key
//! devices lives (`key = "file" | "pkcs11"`, with `[symmetric_key.pkcs11]`).
//! Named and checked as `[ca]` and `[ca.pkcs11]` are; the key file's
//! passphrase and the token's PIN come from where the CA's do
//! (`STATION_CA_PASSPHRASE` or `[ca] key_passphrase_file`;
//! `STATION_CA_PIN` or the section's `pin_file`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Pkcs11Config;

type Invalid = (&'static str, String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSymKey {
    key: String,
    #[serde(default = "default_key_file")]
    key_file: String,
    #[serde(default)]
    pkcs11: Option<RawSymPkcs11>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSymPkcs11 {
    module: String,
    token_label: String,
    key_label: String,
    #[serde(default)]
    pin_file: Option<String>,
}

fn default_key_file() -> String {
    "keys/device-master.key".into()
}

/// Where the master key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SymKeyBackend {
    /// An encrypted key file (`key_file`).
    File,
    /// A generic-secret HMAC key in a PKCS#11 token.
    Pkcs11(Pkcs11Config),
}

impl SymKeyBackend {
    pub fn as_str(&self) -> &'static str {
        match self {
            SymKeyBackend::File => "file",
            SymKeyBackend::Pkcs11(_) => "pkcs11",
        }
    }
}

/// `[symmetric_key]`, validated. Paths are kept as written with the
/// folders they are relative to, so that `--data-dir` moves the key file
/// as it moves the CA's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymKeyConfig {
    pub backend: SymKeyBackend,
    /// The key file as written (`key = "file"`); relative to `data_dir`.
    pub key_file: PathBuf,
    /// The station's data folder.
    pub data_dir: PathBuf,
    /// The configuration file's folder (PIN and passphrase files are
    /// relative to it).
    pub config_dir: PathBuf,
    /// `[ca] key_passphrase_file`, as written: the master key file is
    /// encrypted with the CA key file's passphrase.
    pub passphrase_file: Option<PathBuf>,
}

impl SymKeyConfig {
    /// The master key file (`key = "file"`).
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join(&self.key_file)
    }

    /// The PIN file of `[symmetric_key.pkcs11]`, if one is named.
    pub fn pin_path(&self) -> Option<PathBuf> {
        match &self.backend {
            SymKeyBackend::Pkcs11(p) => p.pin_file.as_ref().map(|f| self.config_dir.join(f)),
            SymKeyBackend::File => None,
        }
    }

    /// The passphrase file (`[ca] key_passphrase_file`), if one is named.
    pub fn passphrase_path(&self) -> Option<PathBuf> {
        self.passphrase_file
            .as_ref()
            .map(|f| self.config_dir.join(f))
    }
}

/// Checks `[symmetric_key]`; `ca_key_file` is `[ca] key_file` as written
/// (the master key must not be written over the CA's key).
pub(super) fn symkey_config(
    raw: Option<&RawSymKey>,
    data_dir: &Path,
    config_dir: &Path,
    ca: &super::CaConfig,
) -> Result<Option<SymKeyConfig>, Invalid> {
    let Some(c) = raw else {
        return Ok(None);
    };
    let backend = match c.key.as_str() {
        "file" => {
            if c.pkcs11.is_some() {
                return Err((
                    "symmetric_key.key",
                    "[symmetric_key.pkcs11] is set but key = \"file\": set key = \"pkcs11\" or remove the section".into(),
                ));
            }
            if c.key_file.trim().is_empty() {
                return Err(("symmetric_key.key_file", "must not be empty".into()));
            }
            if ca.backend == super::CaBackend::File && Path::new(&c.key_file) == ca.key_file {
                return Err((
                    "symmetric_key.key_file",
                    format!(
                        "{:?} is the CA's key file ([ca] key_file): give the master key a file of its own",
                        c.key_file
                    ),
                ));
            }
            SymKeyBackend::File
        }
        "pkcs11" => SymKeyBackend::Pkcs11(pkcs11(c)?),
        other => {
            return Err((
                "symmetric_key.key",
                format!(
                    "{other:?} is not a master key backend; use \"file\" (an encrypted key file) or \"pkcs11\" (a key that never leaves its token)"
                ),
            ));
        }
    };
    Ok(Some(SymKeyConfig {
        backend,
        key_file: PathBuf::from(&c.key_file),
        data_dir: data_dir.to_path_buf(),
        config_dir: config_dir.to_path_buf(),
        passphrase_file: ca.key_passphrase_file.clone(),
    }))
}

fn pkcs11(c: &RawSymKey) -> Result<Pkcs11Config, Invalid> {
    let Some(p) = &c.pkcs11 else {
        return Err((
            "symmetric_key.pkcs11",
            "key = \"pkcs11\" needs a [symmetric_key.pkcs11] section with module, token_label and key_label".into(),
        ));
    };
    for (key, value) in [
        ("symmetric_key.pkcs11.module", &p.module),
        ("symmetric_key.pkcs11.token_label", &p.token_label),
        ("symmetric_key.pkcs11.key_label", &p.key_label),
    ] {
        if value.trim().is_empty() {
            return Err((key, "must not be empty".into()));
        }
    }
    if p.token_label.chars().count() > 32 {
        return Err((
            "symmetric_key.pkcs11.token_label",
            format!(
                "{:?} is longer than 32 characters, which no PKCS#11 token label can be",
                p.token_label
            ),
        ));
    }
    Ok(Pkcs11Config {
        module: PathBuf::from(&p.module),
        token_label: p.token_label.clone(),
        key_label: p.key_label.clone(),
        pin_file: p
            .pin_file
            .as_deref()
            .filter(|f| !f.trim().is_empty())
            .map(PathBuf::from),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    fn reference() -> String {
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("station.toml")).unwrap()
    }

    fn parse(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("{}\n{extra}", reference()),
            Path::new("/etc/station/station.toml"),
        )
    }

    const PKCS11: &str = "[symmetric_key]\nkey = \"pkcs11\"\n[symmetric_key.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"station\"\nkey_label = \"device-master\"\npin_file = \"hsm.pin\"\n";

    #[test]
    fn without_the_section_there_is_no_master_key() {
        assert_eq!(parse("").unwrap().symmetric_key, None);
    }

    #[test]
    fn the_file_backend_and_its_paths() {
        let c = parse("[symmetric_key]\nkey = \"file\"\n").unwrap();
        let s = c.symmetric_key.unwrap();
        assert_eq!(s.backend, SymKeyBackend::File);
        assert_eq!(
            s.key_path(),
            Path::new("/etc/station/data/keys/device-master.key")
        );
        assert_eq!(s.pin_path(), None);

        let c = parse("[symmetric_key]\nkey = \"file\"\nkey_file = \"/srv/master.key\"\n").unwrap();
        assert_eq!(
            c.symmetric_key.unwrap().key_path(),
            Path::new("/srv/master.key")
        );

        let text = reference().replace(
            "leaf_validity_days = 7300",
            "leaf_validity_days = 7300\nkey_passphrase_file = \"secrets/ca.pass\"",
        ) + "\n[symmetric_key]\nkey = \"file\"\n";
        let c = Config::parse(&text, Path::new("/etc/station/station.toml")).unwrap();
        assert_eq!(
            c.symmetric_key.unwrap().passphrase_path(),
            Some(Path::new("/etc/station/secrets/ca.pass").to_path_buf())
        );
    }

    #[test]
    fn the_pkcs11_backend() {
        let s = parse(PKCS11).unwrap().symmetric_key.unwrap();
        assert_eq!(
            s.backend,
            SymKeyBackend::Pkcs11(Pkcs11Config {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token_label: "station".into(),
                key_label: "device-master".into(),
                pin_file: Some("hsm.pin".into()),
            })
        );
        assert_eq!(
            s.pin_path(),
            Some(Path::new("/etc/station/hsm.pin").to_path_buf())
        );
        assert_eq!(s.backend.as_str(), "pkcs11");
    }

    #[test]
    fn mistakes_are_named_with_their_key() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "[symmetric_key]\nkey = \"tpm\"\n".into(),
                "symmetric_key.key",
                "not a master key backend",
            ),
            (
                "[symmetric_key]\nkey = \"pkcs11\"\n".into(),
                "symmetric_key.pkcs11",
                "needs a [symmetric_key.pkcs11] section",
            ),
            (
                PKCS11.replace("key = \"pkcs11\"", "key = \"file\""),
                "symmetric_key.key",
                "set key = \"pkcs11\" or remove the section",
            ),
            (
                PKCS11.replace(
                    "module = \"/usr/lib/softhsm/libsofthsm2.so\"",
                    "module = \" \"",
                ),
                "symmetric_key.pkcs11.module",
                "must not be empty",
            ),
            (
                PKCS11.replace("token_label = \"station\"", "token_label = \"\""),
                "symmetric_key.pkcs11.token_label",
                "must not be empty",
            ),
            (
                PKCS11.replace("key_label = \"device-master\"", "key_label = \"\""),
                "symmetric_key.pkcs11.key_label",
                "must not be empty",
            ),
            (
                PKCS11.replace(
                    "token_label = \"station\"",
                    &format!("token_label = \"{}\"", "t".repeat(33)),
                ),
                "symmetric_key.pkcs11.token_label",
                "longer than 32 characters",
            ),
            (
                "[symmetric_key]\nkey = \"file\"\nkey_file = \"\"\n".into(),
                "symmetric_key.key_file",
                "must not be empty",
            ),
            (
                "[symmetric_key]\nkey = \"file\"\nkey_file = \"ca/factory-ca.key\"\n".into(),
                "symmetric_key.key_file",
                "is the CA's key file",
            ),
            (
                "[symmetric_key]\nkey = \"file\"\npassphrase = \"x\"\n".into(),
                "line",
                "unknown field `passphrase`",
            ),
            (
                PKCS11.to_string() + "pin = \"1234\"\n",
                "line",
                "unknown field `pin`",
            ),
            (
                "[symmetric_key]\nkey_file = \"k\"\n".into(),
                "line",
                "missing field `key`",
            ),
        ];
        for (extra, key, words) in cases {
            let e = parse(&extra).unwrap_err().to_string();
            assert!(
                e.starts_with("/etc/station/station.toml: ")
                    && e.contains(key)
                    && e.contains(words),
                "{key}: {e}"
            );
        }
    }
}
