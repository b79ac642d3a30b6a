//! A CA key file encrypted at rest: standard encrypted PKCS#8 (PBES2 with
//! scrypt and AES-256-CBC), which `openssl pkey` also reads. The plain key
//! exists only in memory, in buffers wiped after use.

use pkcs8::der::pem::LineEnding;
use pkcs8::{EncryptedPrivateKeyInfo, PrivateKeyInfo, SecretDocument};
use zeroize::Zeroizing;

/// The PEM label of an encrypted key.
pub const SEALED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// Whether a key file's text is an encrypted key.
pub fn is_sealed(pem: &str) -> bool {
    pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
}

/// Encrypts a PKCS#8 key (DER) under `passphrase`; the PEM to write.
pub fn seal(pkcs8_der: &[u8], passphrase: &[u8]) -> Result<Zeroizing<String>, String> {
    use pkcs8::pkcs5::{pbes2, scrypt};
    let info = PrivateKeyInfo::try_from(pkcs8_der).map_err(|e| e.to_string())?;
    let salt: [u8; 16] = crate::random::bytes();
    let iv: [u8; 16] = crate::random::bytes();
    // scrypt with N = 2^14, r = 8 (16 MiB): within OpenSSL's default 32 MiB
    // limit, so that `openssl pkey` opens the file too.
    let params = scrypt::Params::new(14, 8, 1, 32).map_err(|e| e.to_string())?;
    let scheme =
        pbes2::Parameters::scrypt_aes256cbc(params, &salt, &iv).map_err(|e| e.to_string())?;
    let doc = info
        .encrypt_with_params(scheme, passphrase)
        .map_err(|e| format!("the key could not be encrypted: {e}"))?;
    doc.to_pem(SEALED_LABEL, LineEnding::LF)
        .map_err(|e| e.to_string())
}

/// Decrypts an encrypted key file's text with `passphrase`; the PKCS#8 DER.
pub fn open(pem: &str, passphrase: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let (label, doc) = SecretDocument::from_pem(pem).map_err(|e| e.to_string())?;
    if label != SEALED_LABEL {
        return Err(format!(
            "it holds a {label:?}, not an encrypted private key"
        ));
    }
    let info = EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| e.to_string())?;
    let plain = info
        .decrypt(passphrase)
        .map_err(|_| "the passphrase does not open it (or the file is damaged)".to_string())?;
    Ok(Zeroizing::new(plain.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_with_its_passphrase_only() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = seal(&key.serialize_der(), b"correct horse").unwrap();
        assert!(is_sealed(&pem));
        assert!(!pem.contains(&key.serialize_pem()));
        let der = open(&pem, b"correct horse").unwrap();
        assert_eq!(der.as_slice(), key.serialize_der().as_slice());
        let e = open(&pem, b"wrong").unwrap_err();
        assert!(e.contains("passphrase does not open it"), "{e}");
        assert!(
            open(&key.serialize_pem(), b"x")
                .unwrap_err()
                .contains("not an encrypted")
        );
    }
}
