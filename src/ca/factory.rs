//! The station's CA as it signs: the key (any backend) and the chain of
//! its certificate to the factory root, checked together when opened.

use std::path::Path;

use rcgen::{CertificateParams, Issuer, KeyPair, SubjectPublicKeyInfo};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::chain::{ChainFacts, certifies, check_chain, pem_certificates};
use super::key::CaKey;
use super::{CaError, CaSigner, pem_encode};

pub struct FactoryCa {
    issuer: Issuer<'static, CaKey>,
    /// The signing certificate first, the root last (DER).
    chain: Vec<Vec<u8>>,
    chain_pem: String,
    facts: ChainFacts,
    describe: String,
    /// The key file is encrypted at rest (file backend only).
    sealed: bool,
}

impl FactoryCa {
    /// The CA whose certificate chain is in `cert_path` (a PEM bundle: the
    /// signing certificate, then its issuers up to the root) and whose key
    /// is `key`. Refuses a chain that does not hold together, one not
    /// valid now, and a certificate that does not belong to the key.
    pub fn open(
        cert_path: &Path,
        key: CaKey,
        describe: String,
        sealed: bool,
    ) -> Result<FactoryCa, CaError> {
        let text = std::fs::read_to_string(cert_path).map_err(|e| CaError::Unreadable {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let path = cert_path.display().to_string();
        let chain = pem_certificates(&text);
        let facts = check_chain(&chain, &path, OffsetDateTime::now_utc())?;
        if !certifies(&chain[0], &key) {
            return Err(CaError::Mismatch {
                cert: path,
                key: describe,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(chain[0].clone()), key)
            .map_err(|e| CaError::Unreadable {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let chain_pem = chain.iter().map(|d| pem_encode("CERTIFICATE", d)).collect();
        Ok(FactoryCa {
            issuer,
            chain,
            chain_pem,
            facts,
            describe,
            sealed,
        })
    }

    /// Loads a CA whose key is in a plain key file.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<FactoryCa, CaError> {
        FactoryCa::load_with(cert_path, key_path, None)
    }

    /// Loads a CA whose key is in a key file, opening an encrypted one
    /// with `passphrase`; refuses a key file that others can read.
    pub fn load_with(
        cert_path: &Path,
        key_path: &Path,
        passphrase: Option<&[u8]>,
    ) -> Result<FactoryCa, CaError> {
        let (key, sealed) = super::file::read_key(key_path, passphrase)?;
        FactoryCa::open(
            cert_path,
            CaKey::File(Box::new(key)),
            super::file::describe(key_path, sealed),
            sealed,
        )
    }

    /// Makes a new self-signed P-256 CA in files, for development and the
    /// demo: the key (mode 0600) and the certificate. Refuses to overwrite
    /// either unless `force`.
    pub fn init(
        cert_path: &Path,
        key_path: &Path,
        common_name: &str,
        validity_days: u32,
        force: bool,
    ) -> Result<FactoryCa, CaError> {
        FactoryCa::init_with(cert_path, key_path, common_name, validity_days, force, None)
    }

    /// As [`FactoryCa::init`], the key file encrypted with `passphrase` if
    /// one is given.
    pub fn init_with(
        cert_path: &Path,
        key_path: &Path,
        common_name: &str,
        validity_days: u32,
        force: bool,
        passphrase: Option<&[u8]>,
    ) -> Result<FactoryCa, CaError> {
        super::file::refuse_overwrite(&[cert_path, key_path], force)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let cert = super::root_params(common_name, validity_days)
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        super::file::write_key(key_path, &key, passphrase, force)?;
        std::fs::write(cert_path, cert.pem()).map_err(|e| CaError::Unreadable {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
        FactoryCa::load_with(cert_path, key_path, passphrase)
    }

    /// Whether the key file is encrypted at rest (file backend).
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    /// What the chain says: subject, expiry, intermediate or not.
    pub fn facts(&self) -> &ChainFacts {
        &self.facts
    }
}

impl CaSigner for FactoryCa {
    fn certificate_der(&self) -> &[u8] {
        &self.chain[0]
    }
    fn certificate_pem(&self) -> &str {
        &self.chain_pem
    }
    fn chain_der(&self) -> Vec<Vec<u8>> {
        self.chain.clone()
    }
    fn sign(
        &self,
        params: &CertificateParams,
        subject: &SubjectPublicKeyInfo,
    ) -> Result<Vec<u8>, CaError> {
        params
            .signed_by(subject, &self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| CaError::Signing(format!("{e} ({})", self.describe)))
    }
    fn describe(&self) -> String {
        self.describe.clone()
    }
    fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        params
            .signed_by(&self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| CaError::Signing(format!("{e} ({})", self.describe)))
    }
}
