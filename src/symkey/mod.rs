//! The station's master key for symmetric-key devices (`[symmetric_key]`)
//! and the device keys derived from it.
//!
//! Each device's key is HMAC-SHA256(key = master key, message = the
//! registration id, UTF-8): exactly how DPS derives a device's key from an
//! enrollment group's key, so a group whose primary key is
//! `base64(master)` accepts every device the station made a key for. The
//! secondary keys come the same way from a secondary master,
//! HMAC-SHA256(master, "secondary master key").
//!
//! The master key is in one of two custodies: an encrypted key file
//! (`file.rs`) or a generic-secret key in a PKCS#11 token (`pkcs11.rs`) that
//! never leaves it. Owns the key material and its derivations; knows
//! nothing of jigs, DPS calls or the store.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::config::{SymKeyBackend, SymKeyConfig};

mod file;
mod pkcs11;

/// The message whose HMAC under the master key is the secondary master.
const SECONDARY_LABEL: &[u8] = b"secondary master key";
/// The message whose HMAC under the master key names the key ([`MasterKey::id`]).
const ID_LABEL: &[u8] = b"station master key id";

/// What went wrong with the master key, in words an operator can act on.
/// Never holds key material.
#[derive(Debug, thiserror::Error)]
pub enum SymKeyError {
    /// The key file is missing and was not to be made.
    #[error(
        "there is no master key file at {path}: make it with `station symkey init` (or check [symmetric_key] key_file)"
    )]
    Missing { path: String },
    /// `init` found a key already.
    #[error(
        "{what} already exists: `station symkey init` never replaces a master key (every device key derived from it would stop working); remove it yourself only if no device uses it"
    )]
    Exists { what: String },
    /// The key file can be read by others.
    #[error("the master key file {path} can be read by others (mode {mode:o}): `chmod 600 {path}`")]
    TooOpen { path: String, mode: u32 },
    /// The key file cannot be read, written or opened.
    #[error("the master key file {path}: {reason}")]
    File { path: String, reason: String },
    /// The passphrase or PIN could not be had.
    #[error("the master key's secret: {0}")]
    Secret(String),
    /// The token, its module, its PIN or the key in it.
    #[error("the master key in the PKCS#11 token {token:?} ({module}): {reason}")]
    Token {
        token: String,
        module: String,
        reason: String,
    },
    /// `group_keys` with a key that never leaves its token.
    #[error(
        "the master key is in the PKCS#11 token {token:?} and never leaves it, so the group enrollment's keys cannot be given: for enrollment = \"group\", keep the master key in a file ([symmetric_key] key = \"file\"), or use individual enrollments"
    )]
    GroupKeysInToken { token: String },
    /// A registration id DPS would not take.
    #[error(
        "{id:?} is not a DPS registration id (1 to 128 letters, digits, ':', '.', '_' or '-'): no device key is derived for it"
    )]
    BadRegistrationId { id: String },
}

/// The station's master key for symmetric-key devices, in its custody.
pub struct MasterKey {
    inner: Inner,
    describe: String,
}

enum Inner {
    /// The 32 key bytes, read from the key file.
    File(Zeroizing<Vec<u8>>),
    /// A logged-in session and the key's handle in the token.
    Pkcs11(pkcs11::TokenKey),
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.describe)
    }
}

impl MasterKey {
    /// Opens the key that `[symmetric_key]` describes; `create`: make it
    /// first if missing (for `station symkey init`).
    pub fn open(cfg: &SymKeyConfig, create: bool) -> Result<MasterKey, SymKeyError> {
        match &cfg.backend {
            SymKeyBackend::File => {
                let path = cfg.key_path();
                let pass = file::passphrase(cfg)?;
                if create && !path.exists() {
                    file::write(&path, pass.as_ref().map(|p| p.as_slice()))?;
                }
                let (key, sealed) = file::read(&path, pass.as_ref().map(|p| p.as_slice()))?;
                if !sealed {
                    tracing::warn!(
                        key = %path.display(),
                        "the master key file is not encrypted: for production, keep it encrypted (STATION_CA_PASSPHRASE or [ca] key_passphrase_file), or keep the key in an HSM ([symmetric_key] key = \"pkcs11\")"
                    );
                }
                Ok(MasterKey {
                    inner: Inner::File(key),
                    describe: file::describe(&path, sealed),
                })
            }
            SymKeyBackend::Pkcs11(p) => {
                let key = pkcs11::TokenKey::open(cfg, p, create)?;
                Ok(MasterKey {
                    describe: key.describe(),
                    inner: Inner::Pkcs11(key),
                })
            }
        }
    }

    /// Makes the key that `[symmetric_key]` describes; refuses if there is
    /// one already (`station symkey init`).
    pub fn create(cfg: &SymKeyConfig) -> Result<MasterKey, SymKeyError> {
        match &cfg.backend {
            SymKeyBackend::File => {
                let path = cfg.key_path();
                if path.exists() {
                    return Err(SymKeyError::Exists {
                        what: format!("the master key file {}", path.display()),
                    });
                }
                MasterKey::open(cfg, true)
            }
            SymKeyBackend::Pkcs11(p) => {
                if pkcs11::TokenKey::exists(cfg, p)? {
                    return Err(SymKeyError::Exists {
                        what: format!(
                            "the key {:?} in the PKCS#11 token {:?}",
                            p.key_label, p.token_label
                        ),
                    });
                }
                MasterKey::open(cfg, true)
            }
        }
    }

    /// "file /path (encrypted)" or "PKCS#11 token T, key L": never any key
    /// bytes.
    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    /// A non-secret id of the master key (hex of the first 8 bytes of
    /// HMAC(master, "station master key id")), for records and docs.
    pub fn id(&self) -> Result<String, SymKeyError> {
        let mac = self.hmac(ID_LABEL)?;
        Ok(hex::encode(&mac.as_bytes()[..8]))
    }

    /// The device's primary key: HMAC-SHA256(master, registration_id).
    pub fn derive(&self, registration_id: &str) -> Result<DeviceKey, SymKeyError> {
        check_registration_id(registration_id)?;
        self.hmac(registration_id.as_bytes())
    }

    /// The device's secondary key: HMAC-SHA256(secondary master,
    /// registration_id), where the secondary master = HMAC-SHA256(master,
    /// "secondary master key"). With a PKCS#11 key the token computes the
    /// secondary master, and the second HMAC is done in memory (the
    /// secondary master is wiped right after).
    pub fn derive_secondary(&self, registration_id: &str) -> Result<DeviceKey, SymKeyError> {
        check_registration_id(registration_id)?;
        let secondary = self.hmac(SECONDARY_LABEL)?;
        Ok(DeviceKey::new(hmac(
            secondary.as_bytes(),
            registration_id.as_bytes(),
        )))
    }

    /// For `enrollment = "group"`: the group enrollment's (primaryKey,
    /// secondaryKey) as base64 = (master, secondary master). Only the file
    /// backend can give them; a PKCS#11 key never leaves its token.
    pub fn group_keys(&self) -> Result<(Zeroizing<String>, Zeroizing<String>), SymKeyError> {
        match &self.inner {
            Inner::File(master) => {
                let secondary = self.hmac(SECONDARY_LABEL)?;
                Ok((
                    Zeroizing::new(B64.encode(master.as_slice())),
                    secondary.to_base64(),
                ))
            }
            Inner::Pkcs11(k) => Err(SymKeyError::GroupKeysInToken {
                token: k.token_label().to_string(),
            }),
        }
    }

    /// HMAC-SHA256 under the master key, wherever it is.
    fn hmac(&self, msg: &[u8]) -> Result<DeviceKey, SymKeyError> {
        match &self.inner {
            Inner::File(master) => Ok(DeviceKey::new(hmac(master, msg))),
            Inner::Pkcs11(k) => k.hmac(msg).map(DeviceKey::new),
        }
    }
}

/// DPS's registration id rule (`dps-service-api.md` 1.2).
fn check_registration_id(id: &str) -> Result<(), SymKeyError> {
    let ok = (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SymKeyError::BadRegistrationId { id: id.to_string() })
    }
}

/// HMAC-SHA256 in memory. (ring keeps the key's padded hash states inside
/// `hmac::Key`, which it does not wipe; the output is wiped by
/// [`DeviceKey`].)
fn hmac(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

/// One device's derived key: 32 bytes, zeroized on drop; `Debug` shows
/// `"[redacted]"`.
pub struct DeviceKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey([redacted])")
    }
}

impl DeviceKey {
    fn new(bytes: Zeroizing<[u8; 32]>) -> DeviceKey {
        DeviceKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as DPS and the device SDKs write it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_slice()))
    }

    /// HMAC-SHA256(self, msg): what a board answers to prove it holds the
    /// key.
    pub fn proof(&self, msg: &[u8]) -> [u8; 32] {
        *hmac(self.0.as_slice(), msg)
    }

    /// Whether `mac` is HMAC-SHA256(self, msg); compares in constant time.
    pub fn verify_proof(&self, msg: &[u8], mac: &[u8]) -> bool {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_slice());
        ring::hmac::verify(&key, msg, mac).is_ok()
    }
}

#[cfg(test)]
mod tests;

/// The slot driver and the uploader derive through this: the key is
/// copied out of the [`DeviceKey`] into a buffer that is wiped in turn.
impl crate::dps::DeviceKeys for MasterKey {
    fn derive(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        let k = MasterKey::derive(self, registration_id).map_err(|e| e.to_string())?;
        Ok(Zeroizing::new(*k.as_bytes()))
    }
    fn derive_secondary(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        let k = MasterKey::derive_secondary(self, registration_id).map_err(|e| e.to_string())?;
        Ok(Zeroizing::new(*k.as_bytes()))
    }
    fn key_id(&self) -> Result<String, String> {
        self.id().map_err(|e| e.to_string())
    }
    fn group_keys(&self) -> Result<(Zeroizing<String>, Zeroizing<String>), String> {
        MasterKey::group_keys(self).map_err(|e| e.to_string())
    }
}
