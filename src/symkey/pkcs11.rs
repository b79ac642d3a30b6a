//! The master key in a PKCS#11 token (`[symmetric_key] key = "pkcs11"`): a
//! 32-byte generic-secret key (CKK_GENERIC_SECRET) made in the token with
//! CKM_GENERIC_SECRET_KEY_GEN, on the token, sensitive and not extractable.
//! Each derivation is a C_Sign with CKM_SHA256_HMAC: the device key (the
//! HMAC output) leaves the token; the master never does. The station finds
//! the key by token label and key label and logs in with the user PIN
//! (`STATION_CA_PIN` or `[symmetric_key.pkcs11] pin_file`), through the
//! same module handling as the CA key ([`crate::ca::pkcs11`]).

use std::sync::Mutex;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::SymKeyError;
use super::file::KEY_LEN;
use crate::config::{Pkcs11Config, SymKeyConfig};

/// A logged-in session and the master key's handle in it.
pub(super) struct TokenKey {
    session: Mutex<Session>,
    key: ObjectHandle,
    token_label: String,
    module: String,
    describe: String,
}

fn token_error(p: &Pkcs11Config, reason: impl std::fmt::Display) -> SymKeyError {
    SymKeyError::Token {
        token: p.token_label.clone(),
        module: p.module.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The token's user PIN, which this backend cannot do without.
fn pin(cfg: &SymKeyConfig) -> Result<Zeroizing<String>, SymKeyError> {
    let pin = crate::custody::secret_file(
        crate::custody::CA_PIN_ENV,
        cfg.pin_path().as_deref(),
        "PKCS#11 PIN",
    )
    .map_err(|e| SymKeyError::Secret(format!("{e:#}")))?
    .ok_or_else(|| {
        SymKeyError::Secret(format!(
            "the PKCS#11 token needs its user PIN: set {} or [symmetric_key.pkcs11] pin_file (a file readable by the station's user only)",
            crate::custody::CA_PIN_ENV
        ))
    })?;
    let text = String::from_utf8(pin.to_vec())
        .map_err(|_| SymKeyError::Secret("the PKCS#11 PIN is not UTF-8 text".into()))?;
    Ok(Zeroizing::new(text))
}

fn session(cfg: &SymKeyConfig, p: &Pkcs11Config) -> Result<Session, SymKeyError> {
    let pin = pin(cfg)?;
    crate::ca::pkcs11::login(&p.module, &p.token_label, &pin, "[symmetric_key.pkcs11]")
        .map_err(|e| token_error(p, e))
}

/// The secret key labelled `key_label`, if there is one.
fn lookup(session: &Session, p: &Pkcs11Config) -> Result<Option<ObjectHandle>, SymKeyError> {
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(p.key_label.as_bytes().to_vec()),
        ])
        .map_err(|e| token_error(p, format_args!("cannot search the token: {e}")))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => {
            let attrs = session
                .get_attributes(*one, &[cryptoki::object::AttributeType::KeyType])
                .map_err(|e| token_error(p, format_args!("cannot read the key: {e}")))?;
            if !attrs
                .iter()
                .any(|a| matches!(a, Attribute::KeyType(k) if *k == KeyType::GENERIC_SECRET))
            {
                return Err(token_error(
                    p,
                    format_args!(
                        "the key {:?} is not a generic secret (HMAC) key: check [symmetric_key.pkcs11] key_label",
                        p.key_label
                    ),
                ));
            }
            Ok(Some(*one))
        }
        many => Err(token_error(
            p,
            format_args!(
                "the label {:?} names {} secret keys; it must name exactly one",
                p.key_label,
                many.len()
            ),
        )),
    }
}

/// Makes the master key in the token: sensitive, never extractable, on the
/// token, for HMAC only.
fn generate(session: &Session, p: &Pkcs11Config) -> Result<ObjectHandle, SymKeyError> {
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((KEY_LEN as u64).into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(p.key_label.as_bytes().to_vec()),
    ];
    session
        .generate_key(&Mechanism::GenericSecretKeyGen, &template)
        .map_err(|e| token_error(p, format_args!("cannot make the master key: {e}")))
}

impl TokenKey {
    /// Whether the token holds a key labelled `key_label`.
    pub(super) fn exists(cfg: &SymKeyConfig, p: &Pkcs11Config) -> Result<bool, SymKeyError> {
        let session = session(cfg, p)?;
        Ok(lookup(&session, p)?.is_some())
    }

    /// The key labelled `key_label` in the token; with `create`, made
    /// there first if there is none.
    pub(super) fn open(
        cfg: &SymKeyConfig,
        p: &Pkcs11Config,
        create: bool,
    ) -> Result<TokenKey, SymKeyError> {
        let session = session(cfg, p)?;
        let key = match lookup(&session, p)? {
            Some(k) => k,
            None if create => generate(&session, p)?,
            None => {
                return Err(token_error(
                    p,
                    format_args!(
                        "there is no key labelled {:?}: make it with `station symkey init` (or check [symmetric_key.pkcs11] key_label)",
                        p.key_label
                    ),
                ));
            }
        };
        Ok(TokenKey {
            session: Mutex::new(session),
            key,
            token_label: p.token_label.clone(),
            module: p.module.display().to_string(),
            describe: format!(
                "PKCS#11 token {:?}, key {:?} ({})",
                p.token_label,
                p.key_label,
                p.module.display()
            ),
        })
    }

    pub(super) fn describe(&self) -> String {
        self.describe.clone()
    }

    pub(super) fn token_label(&self) -> &str {
        &self.token_label
    }

    /// HMAC-SHA256 of `msg` under the key, computed by the token.
    pub(super) fn hmac(&self, msg: &[u8]) -> Result<Zeroizing<[u8; 32]>, SymKeyError> {
        let failed = |reason: String| SymKeyError::Token {
            token: self.token_label.clone(),
            module: self.module.clone(),
            reason,
        };
        let session = self
            .session
            .lock()
            .map_err(|_| failed("the token session was poisoned by a panic".into()))?;
        let mac = Zeroizing::new(
            session
                .sign(&Mechanism::Sha256Hmac, self.key, msg)
                .map_err(|e| failed(format!("the token could not compute the HMAC: {e}")))?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        if mac.len() != out.len() {
            return Err(failed(format!(
                "the token gave an HMAC of {} bytes, not 32",
                mac.len()
            )));
        }
        out.copy_from_slice(&mac);
        Ok(out)
    }
}
