//! The CA key in a PEM file (`[ca] key = "file"`). The key file must be
//! readable by its owner only, and may be encrypted at rest with a
//! passphrase ([`super::sealed`]); a plain one is for development.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rcgen::KeyPair;

use super::CaError;

fn unreadable(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// How `ca show` names a key file.
pub fn describe(key_path: &Path, sealed: bool) -> String {
    if sealed {
        format!("key file {} (encrypted)", key_path.display())
    } else {
        format!("key file {}", key_path.display())
    }
}

/// Reads the key file, refusing one that others can read; the bool says
/// whether it was encrypted.
pub fn read_key(key_path: &Path, passphrase: Option<&[u8]>) -> Result<(KeyPair, bool), CaError> {
    let meta = fs::metadata(key_path).map_err(|e| unreadable(key_path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyTooOpen {
            path: key_path.display().to_string(),
            mode,
        });
    }
    let key_pem =
        zeroize::Zeroizing::new(fs::read_to_string(key_path).map_err(|e| unreadable(key_path, e))?);
    let sealed = super::sealed::is_sealed(&key_pem);
    let key = if sealed {
        let Some(pass) = passphrase else {
            return Err(unreadable(
                key_path,
                "it is encrypted: give its passphrase in STATION_CA_PASSPHRASE or in the file named by [ca] key_passphrase_file",
            ));
        };
        let der = super::sealed::open(&key_pem, pass).map_err(|e| unreadable(key_path, e))?;
        KeyPair::try_from(der.as_slice()).map_err(|e| unreadable(key_path, e))?
    } else {
        KeyPair::from_pem(&key_pem).map_err(|e| unreadable(key_path, e))?
    };
    Ok((key, sealed))
}

/// Refuses to replace any of `paths` unless `force`; makes their folders.
pub(super) fn refuse_overwrite(paths: &[&Path], force: bool) -> Result<(), CaError> {
    for p in paths {
        if p.exists() && !force {
            return Err(CaError::Exists {
                path: p.display().to_string(),
            });
        }
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(|e| unreadable(dir, e))?;
        }
    }
    Ok(())
}

/// Writes a key file, mode 0600 from its creation, encrypted with
/// `passphrase` if one is given. Replaces an existing file only if `force`.
pub fn write_key(
    key_path: &Path,
    key: &KeyPair,
    passphrase: Option<&[u8]>,
    force: bool,
) -> Result<(), CaError> {
    if let Some(dir) = key_path.parent() {
        fs::create_dir_all(dir).map_err(|e| unreadable(dir, e))?;
    }
    if force {
        let _ = fs::remove_file(key_path);
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key_path)
        .map_err(|e| unreadable(key_path, e))?;
    let text = match passphrase {
        Some(p) => super::sealed::seal(&key.serialize_der(), p).map_err(CaError::Signing)?,
        None => zeroize::Zeroizing::new(key.serialize_pem()),
    };
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| unreadable(key_path, e))
}

/// The first certificate of a PEM text, DER.
pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    super::chain::pem_certificates(pem)
        .into_iter()
        .next()
        .filter(|d| !d.is_empty())
}
