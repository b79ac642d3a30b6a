//! `station tls request`: the web UI's key and a request for the plant's
//! CA, as `station ca request` does for the device CA.

use std::path::Path;

use anyhow::Context;

use super::ConfigArgs;

/// `station tls request --dns NAME … [--ip ADDRESS …] [--out FILE]`.
pub fn tls_request(
    args: &ConfigArgs,
    dns: &[String],
    ips: &[std::net::IpAddr],
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let Some(files) = &cfg.ui_tls else {
        anyhow::bail!(
            "set [ui] tls_cert_file and tls_key_file in {} first: the key is made in tls_key_file, and the signed certificate goes in tls_cert_file",
            cfg.file.display()
        );
    };
    let common_name = dns
        .first()
        .cloned()
        .unwrap_or_else(|| cfg.station_id.clone());
    let req = crate::web::tls::request(&files.key_file, &common_name, dns, ips)?;
    eprintln!(
        "{} the web UI's key: {}",
        if req.made_key { "made" } else { "using" },
        files.key_file.display()
    );
    match out {
        Some(path) => {
            std::fs::write(path, &req.csr_pem)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote the request to {}", path.display());
        }
        None => print!("{}", req.csr_pem),
    }
    eprintln!(
        "have the plant's CA sign it as a TLS server certificate, save the certificate followed by any intermediates as {}, run `station check --config {}`, then restart the station",
        files.cert_file.display(),
        cfg.file.display()
    );
    Ok(())
}
