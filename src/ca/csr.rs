//! Intake of a board's certificate signing request: nothing is signed for a
//! CSR that does not pass [`check_csr`].

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer;

use crate::ids::Guid;

/// A CSR that has passed every check: P-256 key, valid self-signature,
/// subject CN equal to the board's GUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    pub guid: Guid,
    /// The board's SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// Why a CSR was refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error(
        "the board's certificate request cannot be read ({0}): the board firmware may be faulty"
    )]
    Unreadable(String),
    #[error(
        "the board made a {0} key, not P-256: its firmware makes the wrong kind of key, so it cannot be provisioned"
    )]
    NotP256(String),
    #[error("the board's certificate request is signed with {0}, not ECDSA with SHA-256")]
    WrongSignatureAlgorithm(String),
    #[error(
        "the board's certificate request is not signed by the key it carries: the board may be faulty or tampered with; set it aside"
    )]
    BadSignature,
    #[error(
        "the board's certificate request names {found:?}, but the board reported GUID {expected}: the board may be faulty or tampered with; set it aside"
    )]
    WrongSubject { expected: Guid, found: String },
}

impl CsrError {
    pub fn code(&self) -> &'static str {
        match self {
            CsrError::Unreadable(_) => "csr_unreadable",
            CsrError::NotP256(_) => "csr_not_p256",
            CsrError::WrongSignatureAlgorithm(_) => "csr_wrong_algorithm",
            CsrError::BadSignature => "csr_bad_signature",
            CsrError::WrongSubject { .. } => "csr_wrong_guid",
        }
    }
}

/// Checks a DER CSR from the board that reported `guid`.
pub fn check_csr(der: &[u8], guid: &Guid) -> Result<CheckedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Unreadable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Unreadable(format!(
            "{} bytes after its end",
            rest.len()
        )));
    }
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let is_ec = spki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if !is_ec || curve.as_ref() != Some(&OID_EC_P256) {
        let found = match (is_ec, curve) {
            (true, Some(c)) if c.to_id_string() == "1.3.132.0.34" => "P-384".to_string(),
            (true, Some(c)) => format!("elliptic-curve ({c})"),
            _ => format!("{} ", spki.algorithm.algorithm).trim().to_string(),
        };
        return Err(CsrError::NotP256(found));
    }
    if csr.signature_algorithm.algorithm != OID_SIG_ECDSA_WITH_SHA256 {
        return Err(CsrError::WrongSignatureAlgorithm(
            csr.signature_algorithm.algorithm.to_id_string(),
        ));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let mut cns = info.subject.iter_common_name();
    let cn = cns
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_string();
    if cns.next().is_some() || cn.parse::<Guid>().ok().as_ref() != Some(guid) {
        return Err(CsrError::WrongSubject {
            expected: guid.clone(),
            found: cn,
        });
    }
    Ok(CheckedCsr {
        guid: guid.clone(),
        spki_der: spki.raw.to_vec(),
    })
}
