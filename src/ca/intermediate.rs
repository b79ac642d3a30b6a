//! The per-station intermediate CA. `station ca request` makes the key in
//! the chosen backend and a CSR for it (the station id in the subject, a
//! path length of 0 asked for); the factory root, offline, signs it; and
//! `station ca install` checks the certificate against the key and the
//! root before it replaces the station's chain.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::chain::{ChainFacts, certifies, check_chain, pem_certificates};
use super::key::CaKey;
use super::{CaError, pem_encode};

/// The subject of a station's intermediate: `CN=<common name> station
/// <id>`, `OU=<id>`.
pub fn subject(common_name: &str, station_id: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{common_name} station {station_id}"),
    );
    dn.push(DnType::OrganizationalUnitName, station_id);
    dn
}

/// The CSR (PEM) for this station's intermediate, signed by its key. It
/// asks for CA:TRUE with a path length of 0 and keyCertSign + cRLSign; the
/// root's signer decides what the certificate says, and `install` checks.
pub fn request_pem(key: &CaKey, common_name: &str, station_id: &str) -> Result<String, CaError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(common_name, station_id);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let csr = p
        .serialize_request(key)
        .map_err(|e| CaError::Signing(format!("the request could not be signed: {e}")))?;
    Ok(pem_encode("CERTIFICATE REQUEST", csr.der()))
}

/// Checks a signed intermediate (`signed_pem`: the intermediate, perhaps
/// followed by the root) with `root_pem` (if the root is not in it)
/// against `key`, then writes the chain to `cert_path`, replacing the file
/// in one step. Nothing is written if any check fails.
pub fn install(
    cert_path: &Path,
    signed_pem: &str,
    root_pem: Option<&str>,
    key: &CaKey,
    now: OffsetDateTime,
) -> Result<ChainFacts, CaError> {
    let given = "the certificate to install";
    let mut chain = pem_certificates(signed_pem);
    if chain.is_empty() {
        return Err(CaError::Chain {
            cert: given.into(),
            reason: "it holds no PEM CERTIFICATE block".into(),
        });
    }
    if let Some(root) = root_pem {
        let roots = pem_certificates(root);
        if roots.is_empty() {
            return Err(CaError::Chain {
                cert: "the root certificate (--root)".into(),
                reason: "it holds no PEM CERTIFICATE block".into(),
            });
        }
        for r in roots {
            if !chain.contains(&r) {
                chain.push(r);
            }
        }
    }
    if chain.len() == 1 {
        return Err(CaError::Chain {
            cert: given.into(),
            reason: "it holds one certificate and no root: give the factory root certificate with --root ROOT.pem, or put it after the intermediate".into(),
        });
    }
    let facts = check_chain(&chain, given, now)?;
    if !certifies(&chain[0], key) {
        return Err(CaError::Chain {
            cert: given.into(),
            reason: format!(
                "{} was not made for this station's CA key ({}): install the certificate signed for the request `station ca request` made here",
                facts.subject,
                key.backend()
            ),
        });
    }
    let text: String = chain.iter().map(|d| pem_encode("CERTIFICATE", d)).collect();
    cert_path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| crate::files::write_replacing(cert_path, |f| f.write_all(text.as_bytes())))
        .map_err(|e| CaError::Unreadable {
            path: cert_path.display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(facts)
}
