//! Building a board's CSR on the station, for keys the station can use
//! but not hold: a key in the board's TPM (signing done by the TPM), or a
//! station-made key on its way to the board. The signer is a callback; the
//! private key never passes through here.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, PKCS_ECDSA_P256_SHA256, PublicKeyData,
    SignatureAlgorithm, SigningKey,
};

use crate::ids::Guid;

/// Signs a message (ECDSA P-256 with SHA-256); the signature DER-encoded.
pub type Sign<'a> = dyn Fn(&[u8]) -> Result<Vec<u8>, String> + 'a;

/// A P-256 key known by its public point and a way to sign with it.
pub struct ExternalKey<'a> {
    /// Uncompressed SEC1 point (65 bytes).
    pub public: &'a [u8],
    pub sign: &'a Sign<'a>,
}

impl PublicKeyData for ExternalKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for ExternalKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        (self.sign)(msg).map_err(|e| {
            tracing::warn!("the key could not sign the certificate request: {e}");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A CSR with subject CN = the GUID, signed by `key`, DER-encoded.
pub fn build_csr(guid: &Guid, key: &ExternalKey<'_>) -> Result<Vec<u8>, String> {
    if key.public.len() != 65 || key.public[0] != 0x04 {
        return Err("the public key is not an uncompressed P-256 point".into());
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, guid.to_string());
    params
        .serialize_request(key)
        .map(|csr| csr.der().to_vec())
        .map_err(|e| format!("the certificate request could not be made: {e}"))
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey as P256Key};

    use super::*;

    #[test]
    fn a_csr_signed_elsewhere_passes_the_intake_checks() {
        let guid: Guid = "0a1b2c3d-0000-4000-8000-000000000001".parse().unwrap();
        let key = P256Key::from_slice(&[7u8; 32]).unwrap();
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let sign = |m: &[u8]| {
            let s: Signature = key.sign(m);
            Ok(s.to_der().as_bytes().to_vec())
        };
        let der = build_csr(
            &guid,
            &ExternalKey {
                public: &public,
                sign: &sign,
            },
        )
        .unwrap();
        let checked = crate::ca::check_csr(&der, &guid).unwrap();
        assert_eq!(checked.guid, guid);

        let failing = |_: &[u8]| Err("TPM gone".to_string());
        let e = build_csr(
            &guid,
            &ExternalKey {
                public: &public,
                sign: &failing,
            },
        )
        .unwrap_err();
        assert!(e.contains("could not be made"), "{e}");
        let e = build_csr(
            &guid,
            &ExternalKey {
                public: &public[1..],
                sign: &sign,
            },
        )
        .unwrap_err();
        assert!(e.contains("not an uncompressed"), "{e}");
    }
}
