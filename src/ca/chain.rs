//! The CA's certificate chain: the certificate that signs device
//! certificates (a per-station intermediate, or a self-signed CA for
//! development), then its issuers up to the factory root, as one PEM
//! bundle. Checks that the chain holds together before anything is signed
//! with it.

use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::CaError;

/// Every `CERTIFICATE` block of a PEM text, DER, in order.
pub fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let body = &rest[start + BEGIN.len()..];
        let Some(end) = body.find(END) else { break };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(der) => out.push(der),
            Err(_) => out.push(Vec::new()),
        }
        rest = &body[end + END.len()..];
    }
    out
}

/// What the chain says about the signing certificate, once checked.
#[derive(Debug, Clone)]
pub struct ChainFacts {
    /// The signing certificate's subject.
    pub subject: String,
    /// When the signing certificate, or any above it, expires: the
    /// earliest `notAfter` in the chain.
    pub not_after: OffsetDateTime,
    /// True when the signing certificate is an intermediate (a root
    /// follows it); false for a self-signed CA alone.
    pub intermediate: bool,
}

fn named(path: &str, what: impl std::fmt::Display) -> CaError {
    CaError::Chain {
        cert: path.to_string(),
        reason: what.to_string(),
    }
}

/// Checks a chain (signing certificate first, root last) for `path`:
/// every certificate parses and is valid at `now`, each is signed by the
/// next, the last is a self-signed root, and the first may sign
/// certificates; an intermediate must have a path length of 0, so that it
/// can sign device certificates only.
pub fn check_chain(
    ders: &[Vec<u8>],
    path: &str,
    now: OffsetDateTime,
) -> Result<ChainFacts, CaError> {
    if ders.is_empty() {
        return Err(named(path, "it holds no PEM CERTIFICATE block"));
    }
    let mut certs = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, c) = X509Certificate::from_der(der).map_err(|e| {
            named(
                path,
                format_args!("certificate {} of the chain cannot be read: {e}", i + 1),
            )
        })?;
        certs.push(c);
    }
    let ts = now.unix_timestamp();
    let mut not_after = certs[0].validity().not_after.to_datetime();
    for c in &certs {
        let v = c.validity();
        if ts < v.not_before.timestamp() || ts > v.not_after.timestamp() {
            return Err(CaError::NotValidNow {
                cert: format!("{path} ({})", c.subject()),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
            });
        }
        not_after = not_after.min(v.not_after.to_datetime());
    }
    for pair in certs.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        if child.issuer() != parent.subject()
            || child.verify_signature(Some(parent.public_key())).is_err()
        {
            return Err(named(
                path,
                format_args!(
                    "{} is not signed by {}, which follows it: put the certificates in order, the station's first and the root last",
                    child.subject(),
                    parent.subject()
                ),
            ));
        }
        if !is_ca(parent) {
            return Err(named(
                path,
                format_args!("{} is not a CA certificate", parent.subject()),
            ));
        }
    }
    let Some(last) = certs.last() else {
        return Err(named(path, "it holds no certificate"));
    };
    if last.issuer() != last.subject() || last.verify_signature(None).is_err() {
        return Err(named(
            path,
            format_args!(
                "the chain ends at {}, which is not a self-signed root: add the factory root certificate ({}) after it",
                last.subject(),
                last.issuer()
            ),
        ));
    }
    let first = &certs[0];
    if !is_ca(first) {
        return Err(named(
            path,
            format_args!(
                "{} is not a CA certificate (basicConstraints CA:TRUE): it cannot sign device certificates",
                first.subject()
            ),
        ));
    }
    if !can_sign_certificates(first) {
        return Err(named(
            path,
            format_args!(
                "{} has a key usage without keyCertSign: it cannot sign device certificates",
                first.subject()
            ),
        ));
    }
    let intermediate = certs.len() > 1;
    if intermediate && path_len(first) != Some(0) {
        return Err(named(
            path,
            format_args!(
                "the station intermediate {} must have a path length of 0 (basicConstraints critical, CA:TRUE, pathlen:0), so that it can sign device certificates only: have it signed again with that",
                first.subject()
            ),
        ));
    }
    Ok(ChainFacts {
        subject: first.subject().to_string(),
        not_after,
        intermediate,
    })
}

fn is_ca(c: &X509Certificate<'_>) -> bool {
    matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

fn path_len(c: &X509Certificate<'_>) -> Option<u32> {
    match c.basic_constraints() {
        Ok(Some(bc)) => bc.value.path_len_constraint,
        _ => None,
    }
}

fn can_sign_certificates(c: &X509Certificate<'_>) -> bool {
    match c.key_usage() {
        Ok(Some(ku)) => ku.value.key_cert_sign(),
        // No key usage extension: not restricted.
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Whether the certificate (DER) is for `key`'s public key.
pub fn certifies(der: &[u8], key: &impl rcgen::PublicKeyData) -> bool {
    X509Certificate::from_der(der)
        .is_ok_and(|(_, c)| c.public_key().raw == key.subject_public_key_info().as_slice())
}
