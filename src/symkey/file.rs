//! The master key in a file (`[symmetric_key] key = "file"`), under the CA
//! key file's rules: mode 0600 from its creation, a file others can read
//! is refused, and it is encrypted at rest with the CA passphrase
//! (`STATION_CA_PASSPHRASE` or `[ca] key_passphrase_file`) as an encrypted
//! PKCS#8 document ([`crate::ca::sealed`]); without a passphrase it is
//! written plain, for development, and the station warns.
//!
//! The 32 key bytes are a PKCS#8 `PrivateKeyInfo` whose algorithm is
//! hmacWithSHA256 (RFC 8018) and whose private key is the raw bytes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use pkcs8::der::Encode;
use pkcs8::der::pem::LineEnding;
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use zeroize::Zeroizing;

use super::SymKeyError;
use crate::ca::sealed;
use crate::config::SymKeyConfig;

/// hmacWithSHA256, RFC 8018 appendix B.1.2.
const HMAC_SHA256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.9");

/// The PEM label of a plain (unencrypted) key file.
const PLAIN_LABEL: &str = "PRIVATE KEY";

/// The length of the master key.
pub(super) const KEY_LEN: usize = 32;

fn file_error(path: &Path, reason: impl std::fmt::Display) -> SymKeyError {
    SymKeyError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The CA key file's passphrase, from where the CA's comes.
pub(super) fn passphrase(cfg: &SymKeyConfig) -> Result<Option<Zeroizing<Vec<u8>>>, SymKeyError> {
    crate::custody::secret_file(
        crate::custody::CA_PASSPHRASE_ENV,
        cfg.passphrase_path().as_deref(),
        "CA passphrase",
    )
    .map_err(|e| SymKeyError::Secret(format!("{e:#}")))
}

/// How `symkey show` names a key file.
pub(super) fn describe(path: &Path, sealed: bool) -> String {
    if sealed {
        format!("file {} (encrypted)", path.display())
    } else {
        format!("file {} (NOT encrypted)", path.display())
    }
}

/// Makes a new master key of 32 random bytes and writes it to `path`,
/// which must not exist.
pub(super) fn write(path: &Path, passphrase: Option<&[u8]>) -> Result<(), SymKeyError> {
    let key = Zeroizing::new(crate::random::bytes::<KEY_LEN>());
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: HMAC_SHA256_OID,
            parameters: None,
        },
        key.as_slice(),
    );
    let der = Zeroizing::new(info.to_der().map_err(|e| file_error(path, e))?);
    let text = match passphrase {
        Some(p) => sealed::seal(&der, p).map_err(|e| file_error(path, e))?,
        None => Zeroizing::new(
            pkcs8::der::pem::encode_string(PLAIN_LABEL, LineEnding::LF, &der)
                .map_err(|e| file_error(path, e))?,
        ),
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_error(path, e))?;
    let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(file_error(path, e));
    }
    Ok(())
}

/// Reads the key file, refusing one that others can read; the bool says
/// whether it was encrypted.
pub(super) fn read(
    path: &Path,
    passphrase: Option<&[u8]>,
) -> Result<(Zeroizing<Vec<u8>>, bool), SymKeyError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SymKeyError::Missing {
                path: path.display().to_string(),
            });
        }
        Err(e) => return Err(file_error(path, e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SymKeyError::TooOpen {
            path: path.display().to_string(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| file_error(path, e))?);
    let is_sealed = sealed::is_sealed(&text);
    let der = if is_sealed {
        let Some(pass) = passphrase else {
            return Err(file_error(
                path,
                "it is encrypted: give its passphrase in STATION_CA_PASSPHRASE or in the file named by [ca] key_passphrase_file",
            ));
        };
        sealed::open(&text, pass).map_err(|e| file_error(path, e))?
    } else {
        let (label, der) = pkcs8::der::pem::decode_vec(text.as_bytes())
            .map_err(|e| file_error(path, format_args!("it is not a PEM key file: {e}")))?;
        let der = Zeroizing::new(der);
        if label != PLAIN_LABEL {
            return Err(file_error(
                path,
                format_args!("it holds a {label:?}, not a master key"),
            ));
        }
        der
    };
    let info = PrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| file_error(path, format_args!("it is not a PKCS#8 key: {e}")))?;
    if info.algorithm.oid != HMAC_SHA256_OID || info.private_key.len() != KEY_LEN {
        return Err(file_error(
            path,
            "it is not a master key (a 32-byte HMAC-SHA256 key): check [symmetric_key] key_file (is it the CA's key?)",
        ));
    }
    Ok((Zeroizing::new(info.private_key.to_vec()), is_sealed))
}
