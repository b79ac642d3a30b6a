//! The certificate revocation list: the revoked serials the store keeps,
//! signed by the CA. The list only grows, so its number is the count of
//! revocations it holds (plus one), and the same revocations always give
//! the same number.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};

use super::{CaError, CaSigner};

/// A revoked certificate: its serial (hex, as the ledger keeps it) and
/// when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub serial: String,
    pub revoked_at: OffsetDateTime,
}

/// How long a list is good for: relying parties fetch a new one by then.
pub const CRL_VALIDITY: Duration = Duration::days(7);

/// The CRL (DER) of `revoked`, issued `now`.
pub fn build_crl(
    ca: &dyn CaSigner,
    revoked: &[Revoked],
    now: OffsetDateTime,
) -> Result<Vec<u8>, CaError> {
    let mut revoked_certs = Vec::with_capacity(revoked.len());
    for r in revoked {
        let bytes = hex::decode(&r.serial).map_err(|_| {
            CaError::Signing(format!("serial {:?} in the ledger is not hex", r.serial))
        })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&bytes),
            revocation_time: r.revoked_at,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let number = (revoked.len() as u64 + 1).to_be_bytes();
    let params = CertificateRevocationListParams {
        this_update: now,
        next_update: now + CRL_VALIDITY,
        crl_number: SerialNumber::from_slice(&number),
        issuing_distribution_point: None,
        revoked_certs,
        // The authority key identifier must be the CA certificate's own
        // subject key identifier, however its issuer computed it (openssl
        // uses SHA-1), or verifiers do not find the list.
        key_identifier_method: match subject_key_id(ca.certificate_der()) {
            Some(id) => KeyIdMethod::PreSpecified(id),
            None => KeyIdMethod::Sha256,
        },
    };
    ca.sign_crl(&params)
}

/// The subject key identifier of a certificate, if it has one.
fn subject_key_id(der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}
