//! The factory CA's custody: a per-station intermediate requested by the
//! station (`station ca request`), signed by an offline root (openssl),
//! installed (`station ca install`), and then signing the device
//! certificates and the revocation list. The refusals at install and at
//! start-up each say how to fix them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::root::{Root, openssl, station, text};
use common::*;
use station::ca::CaSigner;

fn cfg_arg(cfg: &Path) -> &str {
    cfg.to_str().unwrap()
}

/// `station ca request` for `cfg`, the CSR written beside it.
fn request(cfg: &Path, env: &[(&str, &str)]) -> (PathBuf, String) {
    let csr = cfg.with_file_name("station.csr");
    let out = station(
        &[
            "ca",
            "request",
            "--config",
            cfg_arg(cfg),
            "--out",
            csr.to_str().unwrap(),
        ],
        env,
    );
    assert!(out.status.success(), "{}", text(&out));
    (csr, text(&out))
}

fn install(cfg: &Path, cert: &Path, root: Option<&Path>, env: &[(&str, &str)]) -> (bool, String) {
    let mut args = vec![
        "ca",
        "install",
        cert.to_str().unwrap(),
        "--config",
        cfg_arg(cfg),
    ];
    if let Some(r) = root {
        args.extend(["--root", r.to_str().unwrap()]);
    }
    let out = station(&args, env);
    (out.status.success(), text(&out))
}

fn der_of(path: &Path) -> Vec<u8> {
    pem_der(&std::fs::read_to_string(path).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_intermediate_signs_the_leaves_the_board_gets_the_chain_and_its_crl_revokes() {
    let offline = tempfile::tempdir().unwrap();
    let root = Root::new(offline.path());
    let mut intermediate = PathBuf::new();
    let st = TestStation::start_with(vec![quick_board()], 300, "", |cfg| {
        // The harness made a self-signed development CA: this station uses
        // an intermediate instead, with a key of its own.
        std::fs::remove_file(cfg.ca_certificate_path()).unwrap();
        std::fs::remove_file(cfg.ca_key_path()).unwrap();
        let (csr, said) = request(&cfg.file, &[]);
        assert!(said.contains("made the CA key"), "{said}");
        let csr_text = text(&openssl(&[
            "req",
            "-in",
            csr.to_str().unwrap(),
            "-noout",
            "-text",
            "-verify",
        ]));
        assert!(csr_text.contains("verify OK"), "{csr_text}");
        assert!(csr_text.contains("test-station"), "station id: {csr_text}");
        assert!(csr_text.contains("pathlen:0"), "{csr_text}");

        intermediate = root.sign(&csr, 365, "station-intermediate");
        let (ok, said) = install(&cfg.file, &intermediate, Some(&root.cert), &[]);
        assert!(ok, "{said}");
        assert!(
            said.contains("installed the station intermediate"),
            "{said}"
        );

        let out = station(&["ca", "show", "--config", cfg_arg(&cfg.file)], &[]);
        let show = text(&out);
        assert!(out.status.success(), "{show}");
        for part in [
            "station intermediate (signs devices)",
            "factory root",
            "Example Factory Root CA",
            "test-station",
            "key file",
            "valid until",
        ] {
            assert!(show.contains(part), "{part:?} in {show}");
        }
    })
    .await;

    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(boards[0]["status"], "provisioned", "{:#}", boards[0]);
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    let ledger = st.ledger(&guid);
    let dir = st.dir.path();
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, &ledger[0].pem).unwrap();

    // The root and the intermediate verify the leaf; the root alone does
    // not, so the intermediate is what signed it.
    let (ok, said) = root.verify(&intermediate, &leaf, None);
    assert!(ok, "{said}");
    let alone = openssl(&[
        "verify",
        "-CAfile",
        root.cert.to_str().unwrap(),
        leaf.to_str().unwrap(),
    ]);
    assert!(!alone.status.success(), "{}", text(&alone));

    // The board holds the whole chain: its certificate, the intermediate,
    // the root.
    let board = st.sims[0]
        .boards()
        .into_iter()
        .find(|b| b.guid.as_str() == guid)
        .unwrap();
    assert_eq!(
        board.stored,
        vec![
            pem_der(&ledger[0].pem),
            der_of(&intermediate),
            der_of(&root.cert)
        ]
    );
    assert_eq!(st.ca().chain_der().len(), 2);

    // The CRL is signed by the intermediate; a revoked serial is in it.
    let fetch = || async {
        let r = bare_client()
            .get(format!("{}/crl", st.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    };
    let crl = dir.join("crl.pem");
    std::fs::write(&crl, station::ca::pem_encode("X509 CRL", &fetch().await)).unwrap();
    let (ok, said) = root.verify(&intermediate, &leaf, Some(&crl));
    assert!(ok, "not revoked yet: {said}");

    let serial = ledger[0].serial.clone();
    st.store()
        .revoke_certificate(
            &serial,
            "key compromise",
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    std::fs::write(&crl, station::ca::pem_encode("X509 CRL", &fetch().await)).unwrap();
    let crl_text = text(&openssl(&[
        "crl",
        "-in",
        crl.to_str().unwrap(),
        "-noout",
        "-text",
        "-CAfile",
        intermediate.to_str().unwrap(),
    ]));
    assert!(
        crl_text.contains("verify OK"),
        "signed by the intermediate: {crl_text}"
    );
    assert!(crl_text.contains("test-station"), "issuer: {crl_text}");
    assert!(
        crl_text.contains(&serial.to_uppercase()),
        "{serial} in {crl_text}"
    );
    let (ok, said) = root.verify(&intermediate, &leaf, Some(&crl));
    assert!(!ok && said.contains("revoked"), "{said}");
}

/// A configuration with no data yet and `[ca]` as given.
fn bare_config(dir: &Path, ca_extra: &str) -> PathBuf {
    let text = config_text(&["/dev/null".into()], 300).replace(
        "leaf_validity_days = 365\n",
        &format!("leaf_validity_days = 365\n{ca_extra}"),
    );
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn install_and_start_up_refuse_what_would_not_hold_and_say_how_to_fix_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let cfg = bare_config(dir.path(), "");
    let chain_file = dir.path().join("data/ca/ca.pem");
    let (csr, _) = request(&cfg, &[]);

    // A second request uses the same key.
    let (again, said) = request(&cfg, &[]);
    assert!(said.contains("using the CA key"), "{said}");
    let spki = |p: &Path| {
        text(&openssl(&[
            "req",
            "-in",
            p.to_str().unwrap(),
            "-noout",
            "-pubkey",
        ]))
    };
    let first_key = spki(&csr);
    assert_eq!(first_key, spki(&again));

    let refused = |cert: &Path, root_cert: Option<&Path>, expect: &str| {
        let (ok, said) = install(&cfg, cert, root_cert, &[]);
        assert!(!ok, "should be refused: {said}");
        assert!(said.contains(expect), "{expect:?} in {said}");
        assert!(!chain_file.exists(), "nothing is written on a refusal");
    };

    let good = root.sign(&csr, 10, "good");
    refused(&good, None, "--root");

    let other_dir = tempfile::tempdir().unwrap();
    let other_root = Root::new(other_dir.path());
    refused(
        &other_root.sign(&csr, 10, "other"),
        Some(&root.cert),
        "is not signed by",
    );

    // A certificate for another key.
    let stranger = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "someone else");
    let stranger_csr = dir.path().join("stranger.csr");
    std::fs::write(
        &stranger_csr,
        p.serialize_request(&stranger).unwrap().pem().unwrap(),
    )
    .unwrap();
    refused(
        &root.sign(&stranger_csr, 10, "stranger"),
        Some(&root.cert),
        "was not made for this station's CA key",
    );

    // No path length: it could make more CAs.
    let open = root.sign_with(&csr, "open", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    });
    refused(&open, Some(&root.cert), "path length of 0");

    // Not a CA at all.
    let leafish = root.sign_with(&csr, "leafish", |p| p.is_ca = rcgen::IsCa::ExplicitNoCa);
    refused(&leafish, Some(&root.cert), "not a CA certificate");

    // Expired.
    let now = time::OffsetDateTime::now_utc();
    let expired = root.sign_with(&csr, "expired", |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        p.not_before = now - time::Duration::days(30);
        p.not_after = now - time::Duration::days(1);
    });
    refused(&expired, Some(&root.cert), "is valid only from");

    // The good one, 10 days long: installed, and `check` warns that it
    // expires within the default 30 days, without calling it a problem.
    let (ok, said) = install(&cfg, &good, Some(&root.cert), &[]);
    assert!(ok, "{said}");
    let out = station(&["check", "--config", cfg_arg(&cfg)], &[]);
    let said = text(&out);
    assert!(said.contains("WARNING"), "{said}");
    assert!(said.contains("expires in 9 days"), "{said}");
    assert!(said.contains("station ca request"), "{said}");
    assert!(!said.contains("PROBLEM  factory CA"), "{said}");
    // With a shorter warning period, no warning.
    let quiet = bare_config(dir.path(), "expiry_warning_days = 5\n");
    let said = text(&station(&["check", "--config", cfg_arg(&quiet)], &[]));
    assert!(!said.contains("expires in"), "{said}");
    assert!(said.contains("ok       factory CA"), "{said}");

    let show = |cfg: &Path| text(&station(&["ca", "show", "--config", cfg_arg(cfg)], &[]));
    let cfg = bare_config(dir.path(), "");

    // Start-up refusals: each leaves the station down with the fix named.
    // An expired intermediate put in place by hand.
    let expired_chain = format!(
        "{}{}",
        std::fs::read_to_string(&expired).unwrap(),
        std::fs::read_to_string(&root.cert).unwrap()
    );
    let good_chain = std::fs::read_to_string(&chain_file).unwrap();
    std::fs::write(&chain_file, &expired_chain).unwrap();
    let said = show(&cfg);
    assert!(said.contains("is valid only from"), "{said}");
    assert!(said.contains("renew it"), "{said}");

    // A certificate that is not the key's.
    std::fs::write(&chain_file, std::fs::read_to_string(&root.cert).unwrap()).unwrap();
    let said = show(&cfg);
    assert!(said.contains("does not belong to the CA key"), "{said}");
    assert!(said.contains("station ca install"), "{said}");

    // A key file others can read.
    std::fs::write(&chain_file, &good_chain).unwrap();
    let key = dir.path().join("data/ca/ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = show(&cfg);
    assert!(said.contains("chmod 600"), "{said}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(show(&cfg).contains("station intermediate"));

    // A chain without its root.
    std::fs::write(&chain_file, std::fs::read_to_string(&good).unwrap()).unwrap();
    let said = show(&cfg);
    assert!(said.contains("not a self-signed root"), "{said}");
}

#[test]
fn a_request_refuses_to_reuse_the_key_of_a_self_signed_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bare_config(dir.path(), "");
    let out = station(&["ca", "init", "--config", cfg_arg(&cfg)], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = station(&["ca", "request", "--config", cfg_arg(&cfg)], &[]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("needs a key of its own"), "{said}");
}

/// The CA key in the station PC's TPM (swtpm): made there by `station ca
/// request`, used through the TCTI to sign leaves that openssl verifies,
/// and, per the TPM, fixed to it (it cannot be duplicated out).
#[cfg(feature = "tpm")]
#[test]
fn the_ca_key_in_the_station_tpm_signs_leaves_and_stays_in_the_tpm() {
    let tpm = common::swtpm::Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let root = Root::new(dir.path());
    let cfg = bare_config(dir.path(), "").replace_in_file(
        "key = \"file\"",
        "key = \"tpm\"",
        &format!("\n[ca.tpm]\ntcti = \"{}\"\n", tpm.tcti()),
    );
    let (csr, said) = request(&cfg, &[]);
    assert!(
        said.contains("made the CA key: TPM key 0x81010100"),
        "{said}"
    );
    let (_, said) = request(&cfg, &[]);
    assert!(said.contains("using the CA key: TPM key"), "{said}");
    let intermediate = root.sign(&csr, 365, "intermediate");
    let (ok, said) = install(&cfg, &intermediate, Some(&root.cert), &[]);
    assert!(ok, "{said}");
    assert!(!dir.path().join("data/ca/ca.key").exists());

    let config = station::config::Config::load(&cfg).unwrap();
    let ca = station::custody::load_ca(&config, false).unwrap();
    assert!(
        ca.describe().starts_with("TPM key 0x81010100"),
        "{}",
        ca.describe()
    );
    for n in 1..=2u32 {
        let guid = format!("0a1b2c3d-0000-4000-8000-{n:012x}");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, guid.as_str());
        let csr = p.serialize_request(&key).unwrap().der().to_vec();
        let checked = station::ca::check_csr(&csr, &guid.parse().unwrap()).unwrap();
        let leaf =
            station::ca::issue_leaf(&ca, &checked, time::OffsetDateTime::now_utc(), 365).unwrap();
        let path = dir.path().join(format!("leaf{n}.pem"));
        std::fs::write(&path, &leaf.pem).unwrap();
        let (ok, said) = root.verify(&intermediate, &path, None);
        assert!(ok, "{said}");
    }
    drop(ca);

    // The TPM's own view of the key: the intermediate's key, fixed to
    // this TPM and its parent, made inside it.
    let public = dir.path().join("tpm-key.pem");
    let out = std::process::Command::new("tpm2_readpublic")
        .args([
            "-T",
            &tpm.tcti(),
            "-c",
            "0x81010100",
            "-f",
            "pem",
            "-o",
            public.to_str().unwrap(),
        ])
        .env("TSS2_LOG", "all+NONE")
        .output()
        .expect("tpm2-tools is installed");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for attr in ["fixedtpm", "fixedparent", "sensitivedataorigin"] {
        assert!(said.contains(attr), "{attr} in {said}");
    }
    let from_cert = text(&openssl(&[
        "x509",
        "-in",
        intermediate.to_str().unwrap(),
        "-noout",
        "-pubkey",
    ]));
    assert_eq!(std::fs::read_to_string(&public).unwrap(), from_cert);
}

#[cfg(feature = "tpm")]
trait ReplaceInFile {
    fn replace_in_file(self, from: &str, to: &str, append: &str) -> Self;
}

#[cfg(feature = "tpm")]
impl ReplaceInFile for PathBuf {
    fn replace_in_file(self, from: &str, to: &str, append: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self).unwrap();
        assert!(text.contains(from));
        std::fs::write(&self, text.replace(from, to) + append).unwrap();
        self
    }
}
