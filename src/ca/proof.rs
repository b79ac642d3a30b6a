//! Checks on what a board sends back: the certificate it read back and its
//! signature over a station nonce.

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::jig::protocol::{NONCE_LEN, key_proof_message};

/// Verifies that `signature` over the key-proof message for `nonce` was made
/// with the key certified by `cert_der`.
pub fn verify_key_proof(cert_der: &[u8], nonce: &[u8; NONCE_LEN], signature: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert_der) else {
        return false;
    };
    let point = cert.public_key().subject_public_key.data.as_ref();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
        .verify(&key_proof_message(nonce), signature)
        .is_ok()
}

/// SHA-256 of the DER, lower-case hex: the fingerprint in the ledger.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}
