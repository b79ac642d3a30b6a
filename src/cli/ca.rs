//! `station ca init|request|install|show|crl`: making, installing and
//! describing the station's CA. Owns the CA summary that `check` also
//! prints; knows nothing of the jigs.

use std::path::Path;

use anyhow::Context;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ConfigArgs;
use crate::ca::chain::pem_certificates;
use crate::ca::{CaSigner, FactoryCa, fingerprint};
use crate::config::CaBackend;

pub async fn ca_init(args: &ConfigArgs, force: bool) -> anyhow::Result<()> {
    let cfg = args.load()?;
    if cfg.ca.backend != CaBackend::File {
        anyhow::bail!(
            "`station ca init` makes a self-signed CA in files, but [ca] key = {:?}: with a key in an HSM or TPM, make this station's intermediate with `station ca request` and `station ca install`",
            cfg.ca.backend.as_str()
        );
    }
    let passphrase = crate::custody::ca_passphrase(&cfg)?;
    let ca = FactoryCa::init_with(
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

/// `station ca request`: the key in the backend (made if there is none)
/// and the CSR for this station's intermediate.
pub fn ca_request(args: &ConfigArgs, out: Option<&Path>) -> anyhow::Result<()> {
    let cfg = args.load()?;
    if cfg.ca.backend == CaBackend::File {
        refuse_root_key(&cfg)?;
    }
    let opened = crate::custody::open_key(&cfg, true)?;
    let pem =
        crate::ca::intermediate::request_pem(&opened.key, &cfg.ca.common_name, &cfg.station_id)?;
    eprintln!(
        "{} the CA key: {}",
        if opened.made { "made" } else { "using" },
        opened.describe
    );
    match out {
        Some(path) => {
            std::fs::write(path, &pem).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote the request to {}", path.display());
        }
        None => print!("{pem}"),
    }
    eprintln!(
        "have the factory root sign it as a CA with path length 0 (basicConstraints critical, CA:TRUE, pathlen:0; keyUsage critical, keyCertSign, cRLSign), then run `station ca install CERT --root ROOT.pem --config {}`",
        cfg.file.display()
    );
    Ok(())
}

/// A key file that belongs to a self-signed CA (`ca init`) is a root's
/// key: an intermediate must have its own.
fn refuse_root_key(cfg: &crate::config::Config) -> anyhow::Result<()> {
    let cert = cfg.ca_certificate_path();
    if !cfg.ca_key_path().exists() {
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string(&cert) else {
        return Ok(());
    };
    let chain = pem_certificates(&text);
    if let [only] = chain.as_slice()
        && let Ok((_, c)) = X509Certificate::from_der(only)
        && c.subject() == c.issuer()
    {
        anyhow::bail!(
            "the key file {} belongs to the self-signed CA in {}: a station intermediate needs a key of its own; point [ca] key_file and certificate_file at new files (or use an HSM or TPM) and run `station ca request` again",
            cfg.ca_key_path().display(),
            cert.display()
        );
    }
    Ok(())
}

/// `station ca install CERT [--root ROOT]`.
pub fn ca_install(args: &ConfigArgs, cert: &Path, root: Option<&Path>) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let signed =
        std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    let root_text = root
        .map(|r| std::fs::read_to_string(r).with_context(|| format!("reading {}", r.display())))
        .transpose()?;
    let opened = crate::custody::open_key(&cfg, false)?;
    let target = cfg.ca_certificate_path();
    let facts = crate::ca::intermediate::install(
        &target,
        &signed,
        root_text.as_deref(),
        &opened.key,
        time::OffsetDateTime::now_utc(),
    )?;
    if cfg.data_dir.exists() {
        let store = crate::store::Store::open(&cfg.database_path())?;
        store.audit(
            "cli",
            "ca_installed",
            None,
            &serde_json::json!({
                "subject": facts.subject,
                "not_after": facts.not_after.to_string(),
                "key": opened.describe,
            }),
            time::OffsetDateTime::now_utc(),
        )?;
    }
    println!("installed the station intermediate {}", facts.subject);
    println!("chain:       {}", target.display());
    println!("valid until: {}", facts.not_after.date());
    println!("key:         {}", opened.describe);
    Ok(())
}

pub fn ca_show(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = crate::custody::load_ca(&cfg, false)?;
    print!("{}", ca_summary(&ca)?);
    if let Some(w) = crate::custody::expiry_warning(&cfg, &ca, time::OffsetDateTime::now_utc()) {
        println!("WARNING:     {w}");
    }
    print!("{}", ca.certificate_pem());
    Ok(())
}

/// `station ca crl --out FILE`: the revocation list as the station
/// publishes it at `/crl`.
pub fn ca_crl(args: &ConfigArgs, out: &std::path::Path) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = crate::custody::load_ca(&cfg, false)?;
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

/// One certificate of the chain, as `ca show` lists it.
struct ChainLine {
    role: &'static str,
    subject: String,
    serial: String,
    not_before: String,
    not_after: String,
    fingerprint: String,
}

/// What `ca show` and `check` say about the CA.
pub(super) struct CaSummary {
    chain: Vec<ChainLine>,
    pub(super) not_after: String,
    pub(super) key: String,
}

pub(super) fn ca_summary(ca: &dyn CaSigner) -> anyhow::Result<CaSummary> {
    let ders = ca.chain_der();
    let mut chain = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        let (_, cert) = X509Certificate::from_der(der).context("reading the CA certificate")?;
        let role = match (i, ders.len()) {
            (0, 1) => "self-signed CA (signs devices)",
            (0, _) => "station intermediate (signs devices)",
            (i, n) if i + 1 == n => "factory root",
            _ => "intermediate",
        };
        chain.push(ChainLine {
            role,
            subject: cert.subject().to_string(),
            serial: crate::ca::serial_string(cert.raw_serial()).0,
            not_before: cert.validity().not_before.to_string(),
            not_after: cert.validity().not_after.to_string(),
            fingerprint: fingerprint(der),
        });
    }
    Ok(CaSummary {
        not_after: chain
            .first()
            .map(|c| c.not_after.clone())
            .unwrap_or_default(),
        chain,
        key: ca.describe(),
    })
}

impl std::fmt::Display for CaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "key:         {}", self.key)?;
        for (i, c) in self.chain.iter().enumerate() {
            writeln!(f, "[{}] {}", i + 1, c.role)?;
            writeln!(f, "subject:     {}", c.subject)?;
            writeln!(f, "serial:      {}", c.serial)?;
            writeln!(f, "valid from:  {}", c.not_before)?;
            writeln!(f, "valid until: {}", c.not_after)?;
            writeln!(f, "SHA-256:     {}", c.fingerprint)?;
        }
        Ok(())
    }
}
