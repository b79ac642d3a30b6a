//! `station ca init` and `station ca show`: making and describing the
//! factory CA. Owns the CA summary that `check` also prints; knows nothing
//! of the store or the jigs.

use anyhow::Context;

use super::ConfigArgs;
use crate::ca::{CaSigner, FileCa, fingerprint};

pub async fn ca_init(args: &ConfigArgs, force: bool) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let passphrase = crate::app::ca_passphrase(&cfg)?;
    let ca = FileCa::init_with(
        &cfg.ca_certificate_path(),
        &cfg.ca_key_path(),
        &cfg.ca.common_name,
        cfg.ca.ca_validity_days,
        force,
        passphrase.as_ref().map(|p| p.as_slice()),
    )?;
    println!("created the factory CA {:?}", cfg.ca.common_name);
    println!("certificate: {}", cfg.ca_certificate_path().display());
    println!(
        "key:         {} (mode 0600, {}; keep it secret and backed up)",
        cfg.ca_key_path().display(),
        if ca.sealed() {
            "encrypted with the passphrase"
        } else {
            "NOT encrypted: set STATION_CA_PASSPHRASE or [ca] key_passphrase_file for production"
        }
    );
    println!("SHA-256:     {}", fingerprint(ca.certificate_der()));
    Ok(())
}

pub fn ca_show(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = crate::app::load_ca(&cfg, false)?;
    print!("{}", ca_summary(&ca)?);
    print!("{}", ca.certificate_pem());
    Ok(())
}

/// `station ca crl --out FILE`: the revocation list as the station
/// publishes it at `/crl`.
pub fn ca_crl(args: &ConfigArgs, out: &std::path::Path) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = crate::app::load_ca(&cfg, false)?;
    let store = crate::store::Store::open(&cfg.database_path())?;
    let revoked = store.revoked()?;
    let der = crate::ca::crl::build_crl(&ca, &revoked, time::OffsetDateTime::now_utc())?;
    std::fs::write(out, &der).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote the revocation list ({} revoked certificate{}) to {}",
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" },
        out.display()
    );
    Ok(())
}

/// What `ca show` and `check` say about the CA.
pub(super) struct CaSummary {
    subject: String,
    serial: String,
    not_before: String,
    pub(super) not_after: String,
    fingerprint: String,
    pub(super) key: String,
}

pub(super) fn ca_summary(ca: &dyn CaSigner) -> anyhow::Result<CaSummary> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(ca.certificate_der()).context("reading the CA certificate")?;
    Ok(CaSummary {
        subject: cert.subject().to_string(),
        serial: crate::ca::serial_string(cert.raw_serial()).0,
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        fingerprint: fingerprint(ca.certificate_der()),
        key: ca.describe(),
    })
}

impl std::fmt::Display for CaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "subject:     {}", self.subject)?;
        writeln!(f, "serial:      {}", self.serial)?;
        writeln!(f, "valid from:  {}", self.not_before)?;
        writeln!(f, "valid until: {}", self.not_after)?;
        writeln!(f, "SHA-256:     {}", self.fingerprint)?;
        writeln!(f, "key:         {}", self.key)
    }
}
