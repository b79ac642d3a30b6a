//! When DPS already has an enrollment for a device: whether it is ours
//! (the same certificate, endorsement key or derived key), older (written
//! over with ours) or newer (the job is outdated, and parked).

use serde_json::Value;
use time::OffsetDateTime;

use super::{Next, Pacer, Uploader};
use crate::store::Job;

impl Uploader {
    /// DPS may have an enrollment for this GUID already: read it. Ours (same
    /// certificate) counts as enrolled, whatever its status now. None, or an
    /// older certificate (a board re-provisioned since), is written with
    /// ours. A newer certificate than ours means this job is outdated (the
    /// device was provisioned again elsewhere): it is parked, not written.
    pub(super) async fn reconcile(&self, pacer: &Pacer, job: &Job, body: &Value) -> Next {
        pacer.slot().await;
        // The id sent: the GUID, or a TPM's registration id.
        let id = body["registrationId"].as_str().unwrap_or(&job.guid);
        let existing = match self.client.get(id).await {
            Ok(e) => e,
            Err(e) => return self.failed(std::slice::from_ref(job), e).await,
        };
        self.count("ok");
        // A GET does not give symmetric keys: read them to compare.
        let held = match existing.as_ref() {
            Some(_) if body["attestation"]["type"] == "symmetricKey" => {
                pacer.slot().await;
                match self.client.attestation_mechanism(id).await {
                    Ok(theirs) => Some(compare_keys(&theirs, body)),
                    Err(e) => return self.failed(std::slice::from_ref(job), e).await,
                }
            }
            Some(e) => Some(compare_certificates(e, body)),
            None => None,
        };
        match held {
            Some(Held::Same) => {
                let etag = existing
                    .as_ref()
                    .and_then(|e| e["etag"].as_str())
                    .map(str::to_string);
                self.mark_done(&[(job.id, etag)]).await;
                Next::Continue
            }
            Some(Held::Newer) | Some(Held::Unknown) => {
                let why = if body["attestation"]["type"] == "symmetricKey" {
                    "DPS holds other symmetric keys for this device than the station derives for it: the device was enrolled elsewhere, or with another master key; check the device's history before retrying"
                } else {
                    "DPS holds another certificate or endorsement key for this device, newer than this job's or of unknown age: the job is outdated or the device was enrolled elsewhere; check the device's history before retrying"
                };
                self.park(&[job.id], why).await;
                Next::Continue
            }
            None | Some(Held::Older) => {
                pacer.slot().await;
                let result = self.client.put(body).await;
                match result {
                    Ok(etag) => {
                        self.count("ok");
                        self.mark_done(&[(job.id, etag)]).await;
                        Next::Continue
                    }
                    Err(e) => self.failed(std::slice::from_ref(job), e).await,
                }
            }
        }
    }
}

/// How the certificate DPS holds compares with ours.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    Same,
    /// Issued before ours: ours replaces it.
    Older,
    /// Issued after ours.
    Newer,
    /// Another certificate whose age DPS did not say.
    Unknown,
}

/// A symmetric-key enrollment is ours when DPS holds our derived primary
/// key (the attestation as `/attestationmechanism` gives it).
fn compare_keys(theirs: &Value, ours: &Value) -> Held {
    let key = |v: &Value| v["symmetricKey"]["primaryKey"].as_str().map(str::to_string);
    match (
        key(theirs),
        ours["attestation"]["symmetricKey"]["primaryKey"].as_str(),
    ) {
        (Some(a), Some(b)) if a == b => Held::Same,
        _ => Held::Unknown,
    }
}

fn compare_certificates(existing: &Value, ours: &Value) -> Held {
    // TPM attestation: the same endorsement key is the same device; DPS
    // says nothing of an endorsement key's age.
    if ours["attestation"]["type"] == "tpm" {
        let ek = |v: &Value| {
            v["attestation"]["tpm"]["endorsementKey"]
                .as_str()
                .map(str::to_string)
        };
        return match (ek(existing), ek(ours)) {
            (Some(a), Some(b)) if a == b => Held::Same,
            _ => Held::Unknown,
        };
    }
    let primary = |v: &Value| v["attestation"]["x509"]["clientCertificates"]["primary"].clone();
    let our_pem = primary(ours)["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(our_der) = crate::ca::pem_to_der(&our_pem) else {
        return Held::Unknown;
    };
    let theirs = primary(existing);
    let their_der = theirs["certificate"]
        .as_str()
        .and_then(crate::ca::pem_to_der);
    let same = match (theirs["info"]["sha256Thumbprint"].as_str(), &their_der) {
        (Some(sha), _) => sha.eq_ignore_ascii_case(&crate::ca::fingerprint(&our_der)),
        (None, Some(d)) => *d == our_der,
        (None, None) => false,
    };
    if same {
        return Held::Same;
    }
    let ours_from = not_before(&our_der);
    let theirs_from = theirs["info"]["notBeforeUtc"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| t.unix_timestamp())
        .or_else(|| their_der.as_deref().and_then(not_before));
    match (ours_from, theirs_from) {
        (Some(o), Some(t)) if t < o => Held::Older,
        (Some(_), Some(_)) => Held::Newer,
        _ => Held::Unknown,
    }
}

fn not_before(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_before.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(pem: &str) -> Value {
        serde_json::json!({"attestation": {"x509": {"clientCertificates": {"primary": {"certificate": pem}}}}})
    }

    fn cert(days_ago: i64) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.not_before = OffsetDateTime::now_utc() - time::Duration::days(days_ago);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn certificates_are_compared_by_identity_then_age() {
        let (old, new) = (cert(10), cert(1));
        assert_eq!(
            compare_certificates(&enrollment(&new), &enrollment(&new)),
            Held::Same
        );
        assert_eq!(
            compare_certificates(&enrollment(&old), &enrollment(&new)),
            Held::Older
        );
        assert_eq!(
            compare_certificates(&enrollment(&new), &enrollment(&old)),
            Held::Newer
        );
        let info_only = serde_json::json!({"attestation": {"x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "AB"}}}}}});
        assert_eq!(
            compare_certificates(&info_only, &enrollment(&new)),
            Held::Unknown
        );
    }
}
