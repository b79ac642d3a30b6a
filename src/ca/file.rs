//! The CA key in a PEM file beside its certificate. The key file must be
//! readable by its owner only, and may be encrypted at rest with a
//! passphrase ([`super::sealed`]); a plain one is for development.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CaError, CaSigner};

pub struct FileCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    cert_pem: String,
    key_path: String,
    /// The key file is encrypted at rest.
    sealed: bool,
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl FileCa {
    /// Loads the CA, refusing a key file that others can read and a
    /// certificate that does not match the key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<FileCa, CaError> {
        FileCa::load_with(cert_path, key_path, None)
    }

    /// As [`FileCa::load`], opening an encrypted key file with
    /// `passphrase`.
    pub fn load_with(
        cert_path: &Path,
        key_path: &Path,
        passphrase: Option<&[u8]>,
    ) -> Result<FileCa, CaError> {
        let meta = fs::metadata(key_path).map_err(|e| unreadable(key_path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::KeyTooOpen {
                path: key_path.display().to_string(),
                mode,
            });
        }
        let key_pem = zeroize::Zeroizing::new(
            fs::read_to_string(key_path).map_err(|e| unreadable(key_path, e))?,
        );
        let sealed = super::sealed::is_sealed(&key_pem);
        let key = if sealed {
            let Some(pass) = passphrase else {
                return Err(unreadable(
                    key_path,
                    "it is encrypted: give its passphrase in STATION_CA_PASSPHRASE or in the file named by [ca] key_passphrase_file",
                ));
            };
            let der = super::sealed::open(&key_pem, pass).map_err(|e| unreadable(key_path, e))?;
            KeyPair::try_from(der.as_slice()).map_err(|e| unreadable(key_path, e))?
        } else {
            KeyPair::from_pem(&key_pem).map_err(|e| unreadable(key_path, e))?
        };
        let cert_pem = fs::read_to_string(cert_path).map_err(|e| unreadable(cert_path, e))?;
        let cert_der = pem_to_der(&cert_pem)
            .ok_or_else(|| unreadable(cert_path, "no PEM CERTIFICATE block"))?;
        let (_, cert) =
            X509Certificate::from_der(&cert_der).map_err(|e| unreadable(cert_path, e))?;
        if !cert.validity().is_valid() {
            return Err(CaError::NotValidNow {
                cert: cert_path.display().to_string(),
                not_before: cert.validity().not_before.to_string(),
                not_after: cert.validity().not_after.to_string(),
            });
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::Mismatch {
                cert: cert_path.display().to_string(),
                key: key_path.display().to_string(),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.clone()), key)
            .map_err(|e| unreadable(cert_path, e))?;
        Ok(FileCa {
            issuer,
            cert_der,
            cert_pem,
            key_path: key_path.display().to_string(),
            sealed,
        })
    }

    /// Whether the key file is encrypted at rest.
    pub fn sealed(&self) -> bool {
        self.sealed
    }

    /// Makes a new P-256 root CA: the key (mode 0600) and a self-signed
    /// certificate. Refuses to overwrite either unless `force`.
    pub fn init(
        cert_path: &Path,
        key_path: &Path,
        common_name: &str,
        validity_days: u32,
        force: bool,
    ) -> Result<FileCa, CaError> {
        FileCa::init_with(cert_path, key_path, common_name, validity_days, force, None)
    }

    /// As [`FileCa::init`], the key file encrypted with `passphrase` if
    /// one is given.
    pub fn init_with(
        cert_path: &Path,
        key_path: &Path,
        common_name: &str,
        validity_days: u32,
        force: bool,
        passphrase: Option<&[u8]>,
    ) -> Result<FileCa, CaError> {
        for p in [cert_path, key_path] {
            if p.exists() && !force {
                return Err(CaError::Exists {
                    path: p.display().to_string(),
                });
            }
            if let Some(dir) = p.parent() {
                fs::create_dir_all(dir).map_err(|e| unreadable(dir, e))?;
            }
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let serial: [u8; 16] = crate::random::bytes();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.not_before = now;
        p.not_after = now + time::Duration::days(i64::from(validity_days));
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        // Path length 0: this CA signs device certificates only.
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = p
            .self_signed(&key)
            .map_err(|e| CaError::Signing(e.to_string()))?;

        if force {
            let _ = fs::remove_file(key_path);
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(key_path)
            .map_err(|e| unreadable(key_path, e))?;
        let text = match passphrase {
            Some(p) => super::sealed::seal(&key.serialize_der(), p).map_err(CaError::Signing)?,
            None => zeroize::Zeroizing::new(key.serialize_pem()),
        };
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| unreadable(key_path, e))?;
        fs::write(cert_path, cert.pem()).map_err(|e| unreadable(cert_path, e))?;
        FileCa::load_with(cert_path, key_path, passphrase)
    }
}

pub fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..].find("-----END CERTIFICATE-----")? + start;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

impl CaSigner for FileCa {
    fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }
    fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }
    fn sign(
        &self,
        params: &CertificateParams,
        subject: &SubjectPublicKeyInfo,
    ) -> Result<Vec<u8>, CaError> {
        params
            .signed_by(subject, &self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| CaError::Signing(e.to_string()))
    }
    fn describe(&self) -> String {
        if self.sealed {
            format!("key file {} (encrypted)", self.key_path)
        } else {
            format!("key file {}", self.key_path)
        }
    }
    fn sign_crl(
        &self,
        params: &rcgen::CertificateRevocationListParams,
    ) -> Result<Vec<u8>, CaError> {
        params
            .signed_by(&self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| CaError::Signing(e.to_string()))
    }
}
