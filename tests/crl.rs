//! The revocation list: empty at first, then carrying a revoked serial,
//! signed by the factory CA; `openssl crl` reads it and `openssl verify
//! -crl_check` refuses the revoked certificate and accepts it before.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use station::ca::CaSigner;

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed")
}

fn pem(label: &str, der: &[u8]) -> String {
    station::ca::pem_encode(label, der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_serial_is_in_the_crl_and_openssl_refuses_it() {
    let st = TestStation::start(vec![quick_board()]).await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    let ledger = st.ledger(&guid);
    let serial = ledger[0].serial.clone();
    let dir = st.dir.path();
    std::fs::write(dir.join("ca.pem"), st.ca().certificate_pem()).unwrap();
    std::fs::write(dir.join("leaf.pem"), &ledger[0].pem).unwrap();
    let fetch = || async {
        let r = bare_client()
            .get(format!("{}/crl", st.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the list is public");
        assert_eq!(r.headers()["content-type"], "application/pkix-crl");
        r.bytes().await.unwrap().to_vec()
    };
    let verify = || {
        openssl(&[
            "verify",
            "-crl_check",
            "-CAfile",
            dir.join("ca.pem").to_str().unwrap(),
            "-CRLfile",
            dir.join("crl.pem").to_str().unwrap(),
            dir.join("leaf.pem").to_str().unwrap(),
        ])
    };

    // Before: an empty list, and the certificate verifies against it.
    let crl = fetch().await;
    std::fs::write(dir.join("crl.pem"), pem("X509 CRL", &crl)).unwrap();
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Revoked (the mechanism; revoking a device is issue 9's).
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        st.store()
            .revoke_certificate(&serial, "key compromise", "sup", now)
            .unwrap(),
        station::store::Revocation::Revoked
    );
    let crl = fetch().await;
    std::fs::write(dir.join("crl.der"), &crl).unwrap();
    std::fs::write(dir.join("crl.pem"), pem("X509 CRL", &crl)).unwrap();
    let text = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        dir.join("crl.der").to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains(&serial.to_ascii_uppercase()), "{text}");
    let number = text
        .lines()
        .skip_while(|l| !l.contains("X509v3 CRL Number"))
        .nth(1)
        .map(str::trim);
    assert_eq!(number, Some("2"), "one revocation: CRL number 2\n{text}");
    let out = openssl(&[
        "crl",
        "-in",
        dir.join("crl.pem").to_str().unwrap(),
        "-CAfile",
        dir.join("ca.pem").to_str().unwrap(),
        "-noout",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("verify OK"),
        "signed by the CA: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&out.stderr).contains("certificate revoked")
    );

    // The command line writes the same list.
    let file = dir.join("cli.crl");
    let out = Command::new(station_bin())
        .args([
            "ca",
            "crl",
            "--config",
            dir.join("station.toml").to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 revoked certificate"));
    let text = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        file.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&serial.to_ascii_uppercase()));
}
