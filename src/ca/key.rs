//! The CA's signing key, wherever it lives: a key file the station opens
//! (development), a PKCS#11 token (HSM), or the station PC's TPM. For the
//! token and the TPM only the public key and a handle are here; rcgen asks
//! the device to sign through [`rcgen::SigningKey`].

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm, SigningKey};

use super::pkcs11::HsmKey;
use super::tpm_key::TpmCaKey;

/// A CA key in one of the backends.
pub enum CaKey {
    /// In memory, from the key file.
    File(Box<KeyPair>),
    /// In a PKCS#11 token; never leaves it.
    Pkcs11(HsmKey),
    /// In the station PC's TPM; never leaves it.
    Tpm(TpmCaKey),
}

impl CaKey {
    /// The backend's name as `[ca] key` spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            CaKey::File(_) => "file",
            CaKey::Pkcs11(_) => "pkcs11",
            CaKey::Tpm(_) => "tpm",
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(k) => k.der_bytes(),
            CaKey::Pkcs11(k) => k.public_point(),
            CaKey::Tpm(k) => k.public_point(),
        }
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(k) => k.algorithm(),
            CaKey::Pkcs11(_) | CaKey::Tpm(_) => &PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let remote = match self {
            CaKey::File(k) => return k.sign(msg),
            CaKey::Pkcs11(k) => k.sign(msg),
            CaKey::Tpm(k) => k.sign(msg),
        };
        remote.map_err(|e| {
            tracing::error!(backend = self.backend(), "the CA key could not sign: {e}");
            rcgen::Error::RemoteKeyError
        })
    }
}
