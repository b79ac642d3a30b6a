//! The CA key in a PKCS#11 token (`[ca] key = "pkcs11"`): a YubiHSM, a
//! network HSM, SoftHSM, anything with a PKCS#11 module. The key pair is
//! made in the token as sensitive and not extractable; the station finds
//! it by token label and key label, logs in with the user PIN, and asks the
//! token for an ECDSA signature over each SHA-256 digest.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::CaError;

/// DER of the P-256 curve's OID (prime256v1), as CKA_EC_PARAMS holds it.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Where the CA key is in a PKCS#11 token, and the PIN to use it.
pub struct Pkcs11Spec {
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    /// The token's user PIN.
    pub pin: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for Pkcs11Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Spec")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"[redacted]")
            .finish()
    }
}

/// A logged-in session and the CA key's handles in it.
pub struct HsmKey {
    session: Mutex<Session>,
    private: ObjectHandle,
    public: Vec<u8>,
    describe: String,
}

fn backend(spec: &Pkcs11Spec, what: impl std::fmt::Display) -> CaError {
    CaError::Backend(format!(
        "CA key in the PKCS#11 token {:?} ({}): {what}",
        spec.token_label,
        spec.module.display()
    ))
}

fn rv(e: &P11Error) -> Option<RvError> {
    match e {
        P11Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// Opens the module, finds the token and logs in.
fn session(spec: &Pkcs11Spec) -> Result<Session, CaError> {
    login(&spec.module, &spec.token_label, &spec.pin, "[ca.pkcs11]").map_err(|e| backend(spec, e))
}

/// The module at `path`, loaded and initialised. Loading it again in the
/// same process (the CA key and the master key for symmetric-key devices
/// may share a module) finds it initialised already, which is fine.
fn context(path: &Path) -> Result<Pkcs11, String> {
    let ctx = Pkcs11::new(path).map_err(|e| format!("cannot load the module: {e}"))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(ctx),
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => Ok(ctx),
        Err(e) => Err(format!("the module failed to start: {e}")),
    }
}

/// Opens `module`, finds the token labelled `token_label` and logs in with
/// `pin`. The errors say what to check in `section` (as `"[ca.pkcs11]"`).
pub(crate) fn login(
    module: &Path,
    token_label: &str,
    pin: &str,
    section: &str,
) -> Result<Session, String> {
    let ctx = context(module).map_err(|e| format!("{e}: check {section} module"))?;
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| format!("cannot list the tokens: {e}"))?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        let label = info.label().trim_end().to_string();
        if label == token_label {
            found = Some(slot);
            break;
        }
        labels.push(label);
    }
    let Some(slot) = found else {
        return Err(format!(
            "no such token; the module has {}: check {section} token_label",
            if labels.is_empty() {
                "no initialised token".to_string()
            } else {
                format!("{labels:?}")
            }
        ));
    };
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| format!("cannot open a session: {e}"))?;
    let pin = AuthPin::new(pin.into());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) => Ok(session),
        Err(e) if rv(&e) == Some(RvError::UserAlreadyLoggedIn) => Ok(session),
        Err(e) => Err(match rv(&e) {
            Some(RvError::PinIncorrect) => {
                format!("the token refused the PIN: check STATION_CA_PIN or {section} pin_file")
            }
            Some(RvError::PinLocked) => {
                "the token's user PIN is locked after too many wrong tries: have the security officer unlock it".to_string()
            }
            _ => format!("cannot log in: {e}"),
        }),
    }
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Vec<ObjectHandle>, P11Error> {
    session.find_objects(&[
        Attribute::Class(class),
        Attribute::KeyType(KeyType::EC),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
}

/// The uncompressed point of an EC public key object.
fn public_point(
    session: &Session,
    spec: &Pkcs11Spec,
    key: ObjectHandle,
) -> Result<Vec<u8>, CaError> {
    let attrs = session
        .get_attributes(key, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(|e| backend(spec, format_args!("cannot read the public key: {e}")))?;
    let mut params = None;
    let mut point = None;
    for a in attrs {
        match a {
            Attribute::EcParams(p) => params = Some(p),
            Attribute::EcPoint(p) => point = Some(p),
            _ => {}
        }
    }
    if params.as_deref() != Some(&P256_PARAMS[..]) {
        return Err(backend(
            spec,
            format_args!("the key {:?} is not a P-256 key", spec.key_label),
        ));
    }
    let point = point.unwrap_or_default();
    // CKA_EC_POINT is a DER OCTET STRING around the point; some modules
    // give the bare point.
    let bare = match point.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
        p if p.len() == 65 && p[0] == 0x04 => p.to_vec(),
        _ => {
            return Err(backend(
                spec,
                "the key's public point is not an uncompressed P-256 point",
            ));
        }
    };
    Ok(bare)
}

/// The private key's handle and the public point of the pair labelled
/// `key_label`, if there is one.
fn lookup(
    session: &Session,
    spec: &Pkcs11Spec,
) -> Result<Option<(ObjectHandle, Vec<u8>)>, CaError> {
    let private = find(session, ObjectClass::PRIVATE_KEY, &spec.key_label)
        .map_err(|e| backend(spec, format_args!("cannot search the token: {e}")))?;
    let public = find(session, ObjectClass::PUBLIC_KEY, &spec.key_label)
        .map_err(|e| backend(spec, format_args!("cannot search the token: {e}")))?;
    match (private.as_slice(), public.as_slice()) {
        ([], []) => Ok(None),
        ([private], [public]) => Ok(Some((*private, public_point(session, spec, *public)?))),
        (p, q) => Err(backend(
            spec,
            format_args!(
                "the label {:?} names {} private and {} public keys; it must name exactly one pair",
                spec.key_label,
                p.len(),
                q.len()
            ),
        )),
    }
}

impl HsmKey {
    /// The key pair labelled `key_label` in the token.
    pub fn open(spec: &Pkcs11Spec) -> Result<HsmKey, CaError> {
        let session = session(spec)?;
        HsmKey::in_session(session, spec)?.ok_or_else(|| {
            backend(
                spec,
                format_args!(
                    "there is no key labelled {:?}: make it with `station ca request`",
                    spec.key_label
                ),
            )
        })
    }

    fn in_session(session: Session, spec: &Pkcs11Spec) -> Result<Option<HsmKey>, CaError> {
        Ok(lookup(&session, spec)?.map(|(private, public)| HsmKey {
            private,
            public,
            describe: format!(
                "PKCS#11 key {:?} in token {:?} ({})",
                spec.key_label,
                spec.token_label,
                spec.module.display()
            ),
            session: Mutex::new(session),
        }))
    }

    /// The key pair labelled `key_label`, made in the token first if there
    /// is none (sensitive, not extractable, on the token); the bool says
    /// whether it was made now.
    pub fn open_or_create(spec: &Pkcs11Spec) -> Result<(HsmKey, bool), CaError> {
        let session = session(spec)?;
        let made = if lookup(&session, spec)?.is_none() {
            let label = spec.key_label.as_bytes().to_vec();
            let public_template = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_PARAMS.to_vec()),
                Attribute::Label(label.clone()),
            ];
            let private_template = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Label(label),
            ];
            session
                .generate_key_pair(
                    &Mechanism::EccKeyPairGen,
                    &public_template,
                    &private_template,
                )
                .map_err(|e| backend(spec, format_args!("cannot make the key pair: {e}")))?;
            true
        } else {
            false
        };
        let key = HsmKey::in_session(session, spec)?
            .ok_or_else(|| backend(spec, "the key pair just made cannot be found"))?;
        Ok((key, made))
    }

    pub fn public_point(&self) -> &[u8] {
        &self.public
    }

    pub fn describe(&self) -> String {
        self.describe.clone()
    }

    /// ECDSA P-256 over SHA-256 of `msg`, DER. The token signs the digest.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        let digest = super::digest::sha256(msg);
        let session = self
            .session
            .lock()
            .map_err(|_| "the token session was poisoned by a panic".to_string())?;
        let raw = session
            .sign(&Mechanism::Ecdsa, self.private, &digest)
            .map_err(|e| format!("the token could not sign: {e}"))?;
        let sig = p256::ecdsa::Signature::from_slice(&raw)
            .map_err(|e| format!("the token's signature is not a P-256 signature: {e}"))?;
        Ok(sig.to_der().as_bytes().to_vec())
    }
}
