//! The web UI's HTTPS: the certificate chain and key named by `[ui]
//! tls_cert_file` and `tls_key_file` (PEM), checked before they are used
//! (the key must be the certificate's, the certificate in its validity),
//! the rustls server configuration made from them, and the key and CSR
//! `station tls request` makes for the plant's CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::FromDer;

/// Days before expiry that `station check` starts warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What is wrong with the UI's certificate or key, in words that say
/// which file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {err} ([ui] {key})", path.display())]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{} holds no PEM certificate ([ui] tls_cert_file): it must hold the station's certificate, then any intermediates", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key ([ui] tls_key_file): it must hold the key the certificate was issued for (PKCS#8, SEC1 or PKCS#1; not encrypted)", .0.display())]
    NoKey(PathBuf),
    #[error("the certificate in {} cannot be read: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the key in {} cannot be used: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("the key in {} is not the key of the certificate in {}: the certificate was issued for another key; install the certificate made from this key's request (`station tls request`)", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {} expired on {not_after}: browsers refuse it; have the plant's CA issue a new one (`station tls request` makes the request)", path.display())]
    Expired { path: PathBuf, not_after: String },
    #[error("the certificate in {} is not valid before {not_before}: is the station's clock right?", path.display())]
    NotYetValid { path: PathBuf, not_before: String },
}

pub use crate::config::TlsFiles;

/// The station's own certificate, as `station check` and the log show it.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    /// The DNS names and addresses it is valid for.
    pub names: Vec<String>,
    pub not_before: time::OffsetDateTime,
    pub not_after: time::OffsetDateTime,
    /// Certificates in the file after the station's own.
    pub intermediates: usize,
}

impl CertSummary {
    /// A warning when the certificate ends within
    /// [`EXPIRY_WARNING_DAYS`], or has no name a browser checks.
    pub fn warnings(&self, now: time::OffsetDateTime) -> Vec<String> {
        let mut w = Vec::new();
        let left = (self.not_after - now).whole_days();
        if left < EXPIRY_WARNING_DAYS {
            w.push(format!(
                "the web UI's certificate expires in {left} day(s), on {}: have the plant's CA issue a new one (`station tls request`), then replace [ui] tls_cert_file and restart",
                date(self.not_after)
            ));
        }
        if self.names.is_empty() {
            w.push(
                "the web UI's certificate names no host (no subjectAltName): browsers refuse it; request one with --dns or --ip (`station tls request`)".into(),
            );
        }
        w
    }
}

fn date(t: time::OffsetDateTime) -> String {
    t.date().to_string()
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|err| TlsFileError::Unreadable {
        key,
        path: path.to_path_buf(),
        err,
    })
}

/// Reads and checks the files: the chain, the key, that they belong
/// together, and the leaf's validity at `now`.
pub fn load(
    files: &TlsFiles,
    now: time::OffsetDateTime,
) -> Result<(CertifiedKey, CertSummary), TlsFileError> {
    let (key, summary) = load_pair(files)?;
    check_validity(files, &summary, now)?;
    Ok((key, summary))
}

/// The certificate's validity at `now`.
pub fn check_validity(
    files: &TlsFiles,
    summary: &CertSummary,
    now: time::OffsetDateTime,
) -> Result<(), TlsFileError> {
    if now > summary.not_after {
        return Err(TlsFileError::Expired {
            path: files.cert_file.clone(),
            not_after: date(summary.not_after),
        });
    }
    if now < summary.not_before {
        return Err(TlsFileError::NotYetValid {
            path: files.cert_file.clone(),
            not_before: summary.not_before.to_string(),
        });
    }
    Ok(())
}

/// Reads the chain and the key and checks that they belong together,
/// whatever the dates.
pub fn load_pair(files: &TlsFiles) -> Result<(CertifiedKey, CertSummary), TlsFileError> {
    let cert_pem = read("tls_cert_file", &files.cert_file)?;
    let key_pem = zeroize::Zeroizing::new(read("tls_key_file", &files.key_file)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsFileError::BadCertificate {
            path: files.cert_file.clone(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsFileError::NoCertificate(files.cert_file.clone()));
    };
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(k) => k,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsFileError::NoKey(files.key_file.clone()));
        }
        Err(e) => {
            return Err(TlsFileError::BadKey {
                path: files.key_file.clone(),
                reason: e.to_string(),
            });
        }
    };
    let summary =
        summarise(leaf, chain.len() - 1).map_err(|reason| TlsFileError::BadCertificate {
            path: files.cert_file.clone(),
            reason,
        })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsFileError::BadKey {
                path: files.key_file.clone(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(TlsFileError::KeyMismatch {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
        });
    }
    Ok((certified, summary))
}

fn summarise(leaf: &CertificateDer<'_>, intermediates: usize) -> Result<CertSummary, String> {
    let (_, c) =
        x509_parser::certificate::X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = c.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    names.push(ip_text(ip));
                }
                _ => {}
            }
        }
    }
    Ok(CertSummary {
        subject: c.subject().to_string(),
        names,
        not_before: c.validity().not_before.to_datetime(),
        not_after: c.validity().not_after.to_datetime(),
        intermediates,
    })
}

fn ip_text(raw: &[u8]) -> String {
    match raw.len() {
        4 => std::net::Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(raw);
            std::net::Ipv6Addr::from(b).to_string()
        }
        _ => hex::encode(raw),
    }
}

/// The server side of the UI's TLS: TLS 1.2 and 1.3 with ring's safe
/// defaults, HTTP/2 and HTTP/1.1.
pub fn server_config(key: CertifiedKey) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(Single(Arc::new(key))));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// What `station tls request` made.
pub struct Request {
    /// The CSR, PEM.
    pub csr_pem: String,
    /// A new key was made (else the one in the key file was used).
    pub made_key: bool,
}

/// A P-256 key in `key_file` (made, mode 0600, if there is none: an
/// existing key is used, never replaced) and a CSR for it naming `dns`
/// and `ips`, for the plant's CA to sign.
pub fn request(
    key_file: &Path,
    common_name: &str,
    dns: &[String],
    ips: &[std::net::IpAddr],
) -> anyhow::Result<Request> {
    use anyhow::Context;
    if dns.is_empty() && ips.is_empty() {
        anyhow::bail!(
            "name the host names or addresses people type to reach the station (--dns station-01.plant.example, --ip 10.1.2.3): browsers check them against the certificate"
        );
    }
    let (key, made_key) = if key_file.exists() {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(key_file)
                .with_context(|| format!("reading {}", key_file.display()))?,
        );
        let key = rcgen::KeyPair::from_pem(&pem).with_context(|| {
            format!(
                "{} is not a PEM private key the station can use; move it away to make a new one",
                key_file.display()
            )
        })?;
        (key, false)
    } else {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        crate::ca::file::write_key(key_file, &key, None, false)
            .with_context(|| format!("writing the key to {}", key_file.display()))?;
        (key, true)
    };
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    for d in dns {
        params.subject_alt_names.push(rcgen::SanType::DnsName(
            d.as_str()
                .try_into()
                .with_context(|| format!("{d} is not a DNS name"))?,
        ));
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params
        .serialize_request(&key)
        .context("making the certificate request")?;
    Ok(Request {
        csr_pem: csr.pem().context("encoding the certificate request")?,
        made_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(
        dir: &Path,
        name: &str,
        key: &rcgen::KeyPair,
        days: (i64, i64),
    ) -> (TlsFiles, rcgen::KeyPair) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::days(days.0);
        p.not_after = now + time::Duration::days(days.1);
        let leaf = p.signed_by(key, &issuer).unwrap();
        let files = TlsFiles {
            cert_file: dir.join(format!("{name}.crt")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
        std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
        (files, rcgen::KeyPair::generate().unwrap())
    }

    #[test]
    fn a_matching_valid_pair_loads_and_is_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let (files, _) = issue(dir.path(), "station.example", &key, (-1, 90));
        let (k, s) = load(&files, time::OffsetDateTime::now_utc()).unwrap();
        assert_eq!(s.names, vec!["station.example".to_string()]);
        assert_eq!(s.intermediates, 1);
        assert!(s.warnings(time::OffsetDateTime::now_utc()).is_empty());
        server_config(k).unwrap();
    }

    #[test]
    fn every_bad_file_is_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let now = time::OffsetDateTime::now_utc();
        let key = rcgen::KeyPair::generate().unwrap();
        let (files, other) = issue(dir.path(), "a.example", &key, (-1, 90));

        let missing = TlsFiles {
            cert_file: dir.path().join("nope.crt"),
            ..files.clone()
        };
        let e = load(&missing, now).unwrap_err().to_string();
        assert!(e.contains("nope.crt") && e.contains("tls_cert_file"), "{e}");

        std::fs::write(dir.path().join("empty.crt"), "not pem\n").unwrap();
        let e = load(
            &TlsFiles {
                cert_file: dir.path().join("empty.crt"),
                ..files.clone()
            },
            now,
        )
        .unwrap_err();
        assert!(matches!(e, TlsFileError::NoCertificate(_)), "{e}");

        std::fs::write(dir.path().join("nokey.pem"), "").unwrap();
        let e = load(
            &TlsFiles {
                key_file: dir.path().join("nokey.pem"),
                ..files.clone()
            },
            now,
        )
        .unwrap_err();
        assert!(matches!(e, TlsFileError::NoKey(_)), "{e}");

        std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
        let e = load(
            &TlsFiles {
                key_file: dir.path().join("other.key"),
                ..files.clone()
            },
            now,
        )
        .unwrap_err();
        assert!(matches!(e, TlsFileError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("issued for another key"), "{e}");

        let (old, _) = issue(dir.path(), "old.example", &key, (-60, -1));
        let e = load(&old, now).unwrap_err();
        assert!(matches!(e, TlsFileError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired on"), "{e}");

        let (early, _) = issue(dir.path(), "early.example", &key, (2, 90));
        let e = load(&early, now).unwrap_err();
        assert!(matches!(e, TlsFileError::NotYetValid { .. }), "{e}");
    }

    #[test]
    fn a_certificate_ending_within_thirty_days_is_warned_of() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let (files, _) = issue(dir.path(), "soon.example", &key, (-300, 20));
        let now = time::OffsetDateTime::now_utc();
        let (_, s) = load(&files, now).unwrap();
        let w = s.warnings(now);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("expires in 19 day(s)") || w[0].contains("expires in 20 day(s)"));
    }

    #[test]
    fn a_request_makes_a_private_key_once_and_names_the_hosts() {
        use rcgen::PublicKeyData;
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("ui.key");
        let e = request(&key_file, "station-01", &[], &[]).err().unwrap();
        assert!(e.to_string().contains("--dns"), "{e}");
        assert!(!key_file.exists(), "nothing made when refused");

        let r = request(
            &key_file,
            "station-01",
            &["station-01.plant.example".into()],
            &["10.1.2.3".parse().unwrap()],
        )
        .unwrap();
        assert!(r.made_key);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&r.csr_pem).unwrap();
        let names: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        assert!(
            names.iter().any(|n| n.contains("station-01.plant.example")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.contains("10.1.2.3")), "{names:?}");

        let before = std::fs::read(&key_file).unwrap();
        let again = request(&key_file, "station-01", &["x.example".into()], &[]).unwrap();
        assert!(!again.made_key);
        assert_eq!(
            std::fs::read(&key_file).unwrap(),
            before,
            "an existing key is used, never replaced"
        );
        assert_eq!(csr.public_key.der_bytes(), {
            let c = rcgen::CertificateSigningRequestParams::from_pem(&again.csr_pem).unwrap();
            c.public_key.der_bytes().to_vec()
        });
    }
}
