//! The factory CA: checking CSRs, the leaf certificate profile, and the
//! signer that holds the CA key.
//!
//! Owns: what a device certificate looks like and what a CSR must prove.
//! The signing key sits behind [`CaSigner`] so that HSM and TPM backends can
//! replace the key file without touching the profile. Does no database or
//! jig I/O: the workflow records what this module issues.

pub mod chain;
pub mod crl;
mod csr;
pub(crate) mod digest;
mod factory;
pub mod file;
pub mod intermediate;
pub mod key;
pub mod pkcs11;
mod proof;
mod request;
pub mod sealed;
pub mod tpm_key;

use std::sync::Mutex;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;

pub use csr::{CheckedCsr, CsrError, check_csr};
pub use factory::FactoryCa;
pub use file::pem_to_der;
pub use key::CaKey;
pub use proof::{fingerprint, verify_key_proof};
pub use request::{ExternalKey, build_csr};

use crate::ids::Serial;

/// A CA signing failure, or a CA that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the factory CA could not sign: {0}")]
    Signing(String),
    #[error(
        "the CA key file {path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`"
    )]
    KeyTooOpen { path: String, mode: u32 },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error(
        "{path} already exists: the factory CA is not overwritten; use --force to replace it (every certificate it issued will stop verifying)"
    )]
    Exists { path: String },
    #[error(
        "the CA certificate {cert} does not belong to the CA key ({key}): install the certificate made for this key (`station ca install`), or point [ca] at the right key"
    )]
    Mismatch { cert: String, key: String },
    #[error(
        "the CA certificate {cert} is valid only from {not_before} to {not_after}: renew it (or check the PC's clock) before provisioning"
    )]
    NotValidNow {
        cert: String,
        not_before: String,
        not_after: String,
    },
    #[error("the CA certificate chain {cert} cannot be used: {reason}")]
    Chain { cert: String, reason: String },
    #[error("{0}")]
    Backend(String),
}

/// Something that signs with the factory CA key.
pub trait CaSigner: Send + Sync {
    /// The certificate that signs device certificates, DER.
    fn certificate_der(&self) -> &[u8];
    /// That certificate and its issuers up to the root, PEM.
    fn certificate_pem(&self) -> &str;
    /// That certificate and its issuers up to the root, DER: what follows
    /// a device certificate in the chain the board receives.
    fn chain_der(&self) -> Vec<Vec<u8>> {
        vec![self.certificate_der().to_vec()]
    }
    /// Signs a certificate with these parameters for this subject key.
    fn sign(
        &self,
        params: &CertificateParams,
        subject: &SubjectPublicKeyInfo,
    ) -> Result<Vec<u8>, CaError>;
    /// Where the key lives, for start-up messages and `station ca show`.
    fn describe(&self) -> String;
    /// Signs a certificate revocation list. Backends that cannot say so.
    fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        let _ = params;
        Err(CaError::Signing(format!(
            "the CA backend ({}) cannot sign revocation lists",
            self.describe()
        )))
    }
}

/// A leaf certificate as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub serial: Serial,
    pub der: Vec<u8>,
    pub pem: String,
    pub fingerprint: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The device certificate profile: subject CN = GUID, 128-bit random serial,
/// KeyUsage digitalSignature (critical), ExtendedKeyUsage clientAuth,
/// BasicConstraints CA:FALSE, subject and authority key identifiers.
pub fn leaf_params(
    csr: &CheckedCsr,
    now: OffsetDateTime,
    validity_days: u32,
) -> (CertificateParams, Serial) {
    let serial: [u8; 16] = crate::random::bytes();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, csr.guid.to_string());
    p.not_before = now;
    p.not_after = now + time::Duration::days(i64::from(validity_days));
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    (p, serial_string(&serial))
}

/// The serial as lower-case hex of its integer value, as `openssl x509
/// -serial` prints it (without leading zero bytes).
pub fn serial_string(bytes: &[u8]) -> Serial {
    let hex = hex::encode(bytes);
    let trimmed = hex.trim_start_matches("00");
    Serial(if trimmed.is_empty() {
        "00".into()
    } else {
        trimmed.into()
    })
}

/// Issues a leaf for a checked CSR.
pub fn issue_leaf(
    ca: &dyn CaSigner,
    csr: &CheckedCsr,
    now: OffsetDateTime,
    validity_days: u32,
) -> Result<Leaf, CaError> {
    let (params, serial) = leaf_params(csr, now, validity_days);
    let spki = SubjectPublicKeyInfo::from_der(&csr.spki_der)
        .map_err(|e| CaError::Signing(e.to_string()))?;
    let der = ca.sign(&params, &spki)?;
    Ok(Leaf {
        serial,
        pem: pem_encode("CERTIFICATE", &der),
        fingerprint: fingerprint(&der),
        not_before: params.not_before,
        not_after: params.not_after,
        der,
    })
}

/// A self-signed root's profile (development CA, `station ca init`): path
/// length 0, since it signs device certificates itself.
pub(crate) fn root_params(common_name: &str, validity_days: u32) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let serial: [u8; 16] = crate::random::bytes();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.not_before = now;
    p.not_after = now + time::Duration::days(i64::from(validity_days));
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// A CA signer for tests that fails the next `n` signatures with a given
/// message, then signs with the signer it wraps.
pub struct ScriptedCa<S> {
    inner: S,
    failures: Mutex<Vec<String>>,
}

impl<S: CaSigner> ScriptedCa<S> {
    pub fn new(inner: S, failures: Vec<String>) -> Self {
        ScriptedCa {
            inner,
            failures: Mutex::new(failures),
        }
    }
}

impl<S: CaSigner> CaSigner for ScriptedCa<S> {
    fn certificate_der(&self) -> &[u8] {
        self.inner.certificate_der()
    }
    fn certificate_pem(&self) -> &str {
        self.inner.certificate_pem()
    }
    fn chain_der(&self) -> Vec<Vec<u8>> {
        self.inner.chain_der()
    }
    fn sign(
        &self,
        params: &CertificateParams,
        subject: &SubjectPublicKeyInfo,
    ) -> Result<Vec<u8>, CaError> {
        let next = self.failures.lock().ok().and_then(|mut f| f.pop());
        match next {
            Some(msg) => Err(CaError::Signing(msg)),
            None => self.inner.sign(params, subject),
        }
    }
    fn describe(&self) -> String {
        format!("scripted fake around {}", self.inner.describe())
    }
    fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        self.inner.sign_crl(params)
    }
}

#[cfg(test)]
mod tests;
