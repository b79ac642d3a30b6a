//! HTTPS for a test station: a plant CA (openssl, as a plant keeps one)
//! signs the request `station tls request` makes, and clients that trust
//! that CA, or nothing but the public roots.

use std::path::{Path, PathBuf};

use station::config::TlsFiles;

use super::root::Root;

/// The `[ui]` lines of a station served over HTTPS, files relative to its
/// configuration.
pub const UI_TLS: &str = "\n[ui]\ntls_cert_file = \"ui/ui.pem\"\ntls_key_file = \"ui/ui.key\"\n";

/// Makes the UI's key and request as `station tls request` does (for
/// `localhost` and 127.0.0.1), has a new plant CA in `ca_dir` sign it for
/// `days`, and installs the chain. Returns the plant CA.
pub fn install_ui_certificate(files: &TlsFiles, ca_dir: &Path, days: u32) -> Root {
    std::fs::create_dir_all(ca_dir).unwrap();
    let root = Root::new(ca_dir);
    let req = station::web::tls::request(
        &files.key_file,
        "localhost",
        &["localhost".to_string()],
        &["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let csr = ca_dir.join("ui.csr");
    std::fs::write(&csr, &req.csr_pem).unwrap();
    let cert = root.sign_server(&csr, days, "ui");
    std::fs::create_dir_all(files.cert_file.parent().unwrap()).unwrap();
    std::fs::copy(&cert, &files.cert_file).unwrap();
    root
}

/// A client that trusts `ca` (PEM file) and, with `token`, sends it.
pub fn client_trusting(ca: &PathBuf, token: Option<&str>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b = reqwest::Client::builder()
        .add_root_certificate(cert)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(t) = token {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        b = b.default_headers(headers);
    }
    b.build().unwrap()
}
