//! One simulated board: its identity, its key and what it has stored.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256,
    PKCS_ECDSA_P384_SHA384, PublicKeyData, SignatureAlgorithm, SigningKey,
};

use super::{Fault, SimOptions};
use crate::core::settings::ProvisioningSettings;
use crate::ids::{Guid, Mac};
use crate::jig::frame::Frame;
use crate::jig::protocol::{BoardIdentity, NONCE_LEN, identity_args, key_proof_message};

/// What a test may check about a board the simulator ran.
#[derive(Debug, Clone)]
pub struct ObservedBoard {
    pub guid: Guid,
    /// The board's public key as a SubjectPublicKeyInfo (DER), if it made one.
    pub public_key_spki: Option<Vec<u8>>,
    /// The certificate chain the board stored (DER).
    pub stored: Vec<Vec<u8>>,
    /// Every nonce the board signed, with its signature.
    pub signatures: Vec<([u8; NONCE_LEN], Vec<u8>)>,
    /// The private key the station sent with `KEYLOAD`, if it sent one (a
    /// test looks for it where it must not be).
    pub loaded_key: Option<[u8; 32]>,
    /// The symmetric key the station sent with `KEYSET`, if any.
    pub symmetric_key: Option<[u8; 32]>,
    /// The provisioning settings the board keeps (`SETTINGS`).
    pub settings: Option<ProvisioningSettings>,
    /// Every FINISH result the jig got for this board (`true`: pass).
    pub finishes: Vec<bool>,
}

/// The board's key: made by the board, or loaded from the station.
enum BoardKey {
    Made(KeyPair),
    Loaded(p256::ecdsa::SigningKey),
}

pub struct Board {
    identity: BoardIdentity,
    key: Option<BoardKey>,
    pub stored: Vec<Vec<u8>>,
    signatures: Vec<([u8; NONCE_LEN], Vec<u8>)>,
    pub symmetric_key: Option<[u8; 32]>,
    pub settings: Option<ProvisioningSettings>,
    /// Every FINISH result the jig got for this board, in order.
    pub finishes: Vec<bool>,
}

impl Board {
    pub fn new(guid: Guid, opts: &SimOptions) -> Board {
        let r: [u8; 4] = crate::random::bytes();
        Board {
            identity: BoardIdentity {
                guid,
                hw_revision: opts.hw_revision.clone(),
                fw_version: opts.fw_version.clone(),
                // Locally administered unicast address.
                mac: Mac::new([0x02, 0x00, r[0], r[1], r[2], r[3]]),
            },
            key: None,
            stored: Vec::new(),
            signatures: Vec::new(),
            symmetric_key: None,
            settings: None,
            finishes: Vec::new(),
        }
    }

    pub fn identify(&self, f: Frame) -> Frame {
        identity_args(&self.identity, f)
    }

    /// Makes a new key and a CSR for it; faults make either wrong on purpose.
    pub fn keygen(&mut self, fault: Option<&Fault>) -> Result<Vec<u8>, String> {
        let alg: &'static SignatureAlgorithm = if fault == Some(&Fault::NotP256) {
            &PKCS_ECDSA_P384_SHA384
        } else {
            &PKCS_ECDSA_P256_SHA256
        };
        let key = KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
        let cn = if fault == Some(&Fault::WrongGuid) {
            Guid::from_bytes(crate::random::bytes()).to_string()
        } else {
            self.identity.guid.to_string()
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let csr = if fault == Some(&Fault::WrongKey) {
            let other = KeyPair::generate_for(alg).map_err(|e| e.to_string())?;
            params.serialize_request(&Mismatched {
                public: &key,
                signer: &other,
            })
        } else {
            params.serialize_request(&key)
        }
        .map_err(|e| e.to_string())?;
        self.key = Some(BoardKey::Made(key));
        Ok(csr.der().to_vec())
    }

    /// Takes the station's key; answers its public point (uncompressed).
    pub fn load_key(&mut self, scalar: &[u8; 32]) -> Result<Vec<u8>, String> {
        let key = p256::ecdsa::SigningKey::from_slice(scalar).map_err(|e| e.to_string())?;
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        self.key = Some(BoardKey::Loaded(key));
        Ok(public)
    }

    pub fn sign(&mut self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, String> {
        let msg = key_proof_message(nonce);
        let sig = match self.key.as_ref().ok_or("no key has been made")? {
            BoardKey::Made(key) => key.sign(&msg).map_err(|e| e.to_string())?,
            BoardKey::Loaded(key) => {
                use p256::ecdsa::signature::Signer;
                let s: p256::ecdsa::Signature = key.sign(&msg);
                s.to_der().as_bytes().to_vec()
            }
        };
        self.signatures.push((*nonce, sig.clone()));
        Ok(sig)
    }

    /// HMAC-SHA256 of the key-proof message under the symmetric key.
    pub fn hmac(&self, nonce: &[u8; NONCE_LEN]) -> Result<Vec<u8>, String> {
        let key = self.symmetric_key.ok_or("no symmetric key has been set")?;
        let tag = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            &key_proof_message(nonce),
        );
        Ok(tag.as_ref().to_vec())
    }

    pub fn observed(&self) -> ObservedBoard {
        ObservedBoard {
            guid: self.identity.guid.clone(),
            public_key_spki: self.key.as_ref().and_then(|k| match k {
                BoardKey::Made(k) => Some(k.subject_public_key_info()),
                BoardKey::Loaded(k) => {
                    use p256::pkcs8::EncodePublicKey;
                    p256::PublicKey::from(k.verifying_key())
                        .to_public_key_der()
                        .ok()
                        .map(|d| d.as_bytes().to_vec())
                }
            }),
            loaded_key: self.key.as_ref().and_then(|k| match k {
                BoardKey::Loaded(k) => Some(k.to_bytes().into()),
                BoardKey::Made(_) => None,
            }),
            stored: self.stored.clone(),
            signatures: self.signatures.clone(),
            symmetric_key: self.symmetric_key,
            settings: self.settings.clone(),
            finishes: self.finishes.clone(),
        }
    }
}

/// Claims one key and signs with another: a CSR whose signature does not
/// verify against the key it carries.
struct Mismatched<'a> {
    public: &'a KeyPair,
    signer: &'a KeyPair,
}

impl PublicKeyData for Mismatched<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public.der_bytes()
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.public.algorithm()
    }
}

impl SigningKey for Mismatched<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer.sign(msg)
    }
}
