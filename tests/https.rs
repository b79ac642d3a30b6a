//! The station's own doors: the web UI and API over HTTPS with a
//! certificate from a plant CA (the key and request made by `station tls
//! request`, signed with openssl), Secure cookies and HSTS; the browser
//! protections on the answer of every route; the warning of a station in
//! plain HTTP beyond loopback; `station check` and `station tls request`
//! as an operator runs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::tls::{UI_TLS, client_trusting, install_ui_certificate};
use common::*;
use station::store::{NewUser, Role};

fn seed_user(cfg: &station::config::Config) {
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    let ana = NewUser {
        name: "ana",
        role: Role::Supervisor,
        badge: Some("0042"),
        pin: Some("4711"),
        password: None,
    };
    store
        .add_user(&ana, "test", time::OffsetDateTime::now_utc())
        .unwrap();
}

/// A station served over HTTPS, with a supervisor (badge 0042, PIN 4711)
/// and one provisioned device; the plant CA's certificate.
async fn https_station() -> (TestStation, std::path::PathBuf, tempfile::TempDir, String) {
    let ca_dir = tempfile::tempdir().unwrap();
    let mut root = None;
    let mut guids = Vec::new();
    let st = TestStation::start_with(vec![], 300, UI_TLS, |cfg| {
        root = Some(install_ui_certificate(
            cfg.ui_tls.as_ref().unwrap(),
            ca_dir.path(),
            90,
        ));
        seed_user(cfg);
        guids = seed_provisioned(cfg, 1, |_, _| ());
    })
    .await;
    let root = root.unwrap();
    (st, root.cert.clone(), ca_dir, guids.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_and_api_are_served_over_https_with_secure_cookies_and_hsts() {
    let (st, ca, _ca_dir, _) = https_station().await;
    assert!(st.base.starts_with("https://127.0.0.1:"), "{}", st.base);
    let c = client_trusting(&ca, None);

    let page = c.get(format!("{}/login", st.base)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let pre_cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("station_login_csrf="))
        .unwrap();
    assert!(pre_cookie.contains("; Secure"), "{pre_cookie}");
    let pre = set_cookie(&page, "station_login_csrf").unwrap();
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("without HTTPS"),
        "no plain-HTTP warning over HTTPS"
    );
    let csrf = hidden_csrf(&html);
    let signed_in = c
        .post(format!("{}/login", st.base))
        .header("cookie", format!("station_login_csrf={pre}"))
        .form(&[("csrf", csrf.as_str()), ("badge", "0042"), ("pin", "4711")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with("station_session="))
        .unwrap();
    assert!(
        session.contains("; Secure") && session.contains("HttpOnly"),
        "{session}"
    );

    // The API, with a token, over the same TLS.
    let api = client_trusting(&ca, Some(&st.token));
    let r = api
        .get(format!("{}/api/v1/slots", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A client that does not trust the plant's CA is refused by TLS, and
    // the station does not answer plain HTTP on its HTTPS port.
    let e = http_client()
        .get(format!("{}/login", st.base))
        .send()
        .await
        .unwrap_err();
    let chain = format!("{:?}", anyhow::Error::from(e));
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "{chain}"
    );
    let plain = st.base.replace("https://", "http://");
    let r = http_client().get(format!("{plain}/login")).send().await;
    assert!(
        r.is_err() || !r.unwrap().status().is_success(),
        "plain HTTP is not served on the HTTPS port"
    );
}

/// Every path the router names, from its source: a route added later is
/// checked without anyone remembering to list it here.
fn routes() -> Vec<String> {
    let src = include_str!("../src/web/mod.rs");
    let mut paths = BTreeSet::new();
    for part in src.split(".route(").skip(1) {
        let path = part.trim_start().trim_start_matches('"');
        let path = path.split('"').next().unwrap();
        paths.insert(path.to_string());
    }
    assert!(paths.len() > 40, "{paths:?}");
    paths.into_iter().collect()
}

fn concrete(path: &str, guid: &str) -> String {
    path.replace("{guid}", guid)
        .replace("{slot}", "1")
        .replace("{action}", "disable")
}

const STATIC: [&str; 5] = [
    "/static/station.css",
    "/static/line.js",
    "/static/login.js",
    "/static/device.js",
    "/static/report.css",
];

fn check_headers(what: &str, r: &reqwest::Response, https: bool) {
    let h = r.headers();
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("style-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline"),
        "{what}: {csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "same-origin", "{what}");
    let path = what.split(' ').nth(1).unwrap();
    let cache = h["cache-control"].to_str().unwrap();
    if STATIC.contains(&path) || path == "/crl" {
        assert_eq!(cache, "no-cache", "{what}");
    } else {
        assert_eq!(
            cache, "no-store",
            "{what}: pages and answers are kept nowhere"
        );
    }
    assert_eq!(
        h.contains_key("strict-transport-security"),
        https,
        "{what}: HSTS only over HTTPS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_the_security_headers() {
    let (st, ca, _ca_dir, guid) = https_station().await;
    let admin = client_trusting(&ca, Some(&st.token));
    let nobody = client_trusting(&ca, None);
    let mut seen = 0;
    for path in routes() {
        // An event stream (/events) does not end: only its headers are
        // read, as of every answer.
        let url = format!("{}{}", st.base, concrete(&path, &guid));
        for (who, c) in [("admin", &admin), ("nobody", &nobody)] {
            for method in ["GET", "POST"] {
                let r = c
                    .request(method.parse().unwrap(), &url)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("")
                    .send()
                    .await
                    .unwrap();
                check_headers(
                    &format!("{method} {path} as {who} ({})", r.status()),
                    &r,
                    true,
                );
                seen += 1;
            }
        }
    }
    // An unknown path (the fallback) and a static file, for certain.
    for path in ["/no-such-page", "/static/device.js"] {
        let r = admin
            .get(format!("{}{path}", st.base))
            .send()
            .await
            .unwrap();
        check_headers(&format!("GET {path} ({})", r.status()), &r, true);
    }
    assert!(seen > 150, "{seen}");

    // Over plain HTTP the same, without HSTS.
    let plain = TestStation::start(vec![]).await;
    for path in ["/login", "/api/v1/health", "/static/station.css"] {
        let r = bare_client()
            .get(format!("{}{path}", plain.base))
            .send()
            .await
            .unwrap();
        check_headers(&format!("GET {path} ({})", r.status()), &r, false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_in_plain_http_beyond_loopback_says_so_on_the_sign_in_page() {
    let (_dir, mut cfg) = prepare(&[], 300);
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let app = station::app::start(&cfg, false).await.unwrap();
    let page = bare_client()
        .get(format!("http://127.0.0.1:{}/login", app.addr.port()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("served without HTTPS") && page.contains("tls_cert_file"),
        "{page}"
    );
    app.stop();

    let local = TestStation::start(vec![]).await;
    let page = bare_client()
        .get(format!("{}/login", local.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("without HTTPS"),
        "on loopback nothing crosses a network"
    );
}

fn station(args: &[&str]) -> (bool, String) {
    let out = Command::new(station_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn station_tls_request_and_check_as_an_operator_runs_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    let cfg_s = cfg.to_str().unwrap();

    // Without [ui] files there is nowhere to put the key.
    std::fs::write(&cfg, config_text(&[], 200)).unwrap();
    let (ok, text) = station(&["tls", "request", "--config", cfg_s, "--dns", "a.example"]);
    assert!(
        !ok && text.contains("set [ui] tls_cert_file and tls_key_file"),
        "{text}"
    );

    // Plain HTTP on every address: check warns.
    std::fs::write(
        &cfg,
        config_text(&[], 200).replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:8080\""),
    )
    .unwrap();
    let (_, text) = station(&["check", "--config", cfg_s]);
    assert!(
        text.contains("WARNING  the web UI listens on 0.0.0.0:8080 in plain HTTP"),
        "{text}"
    );

    std::fs::write(&cfg, config_text(&[], 200) + UI_TLS).unwrap();
    // No names: refused, nothing made.
    let (ok, text) = station(&["tls", "request", "--config", cfg_s]);
    assert!(!ok && text.contains("--dns"), "{text}");
    assert!(!dir.path().join("ui/ui.key").exists());
    // Not there yet: check says which file.
    let (ok, text) = station(&["check", "--config", cfg_s]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("PROBLEM  web UI HTTPS: cannot read") && text.contains("ui/ui.pem"),
        "{text}"
    );

    std::fs::create_dir_all(dir.path().join("ui")).unwrap();
    let csr = dir.path().join("ui.csr");
    let (ok, text) = station(&[
        "tls",
        "request",
        "--config",
        cfg_s,
        "--dns",
        "station-01.plant.example",
        "--ip",
        "10.1.2.3",
        "--out",
        csr.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("made the web UI's key"), "{text}");
    let key = dir.path().join("ui/ui.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let (_, req) = {
        let out = Command::new("openssl")
            .args([
                "req",
                "-noout",
                "-text",
                "-verify",
                "-in",
                csr.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(
        req.contains("DNS:station-01.plant.example") && req.contains("IP Address:10.1.2.3"),
        "{req}"
    );

    // Signed by the plant's CA for 90 days: ok.
    std::fs::create_dir_all(dir.path().join("plant-ca")).unwrap();
    let ca = root::Root::new(&dir.path().join("plant-ca"));
    let signed = ca.sign_server(&csr, 90, "ui-90");
    std::fs::copy(&signed, dir.path().join("ui/ui.pem")).unwrap();
    let (_, text) = station(&["check", "--config", cfg_s]);
    assert!(
        text.contains("ok       web UI HTTPS certificate")
            && text.contains("station-01.plant.example, 10.1.2.3"),
        "{text}"
    );
    assert!(
        !text.contains("WARNING  the web UI's certificate expires"),
        "{text}"
    );

    // Twenty days left: a warning.
    let soon = ca.sign_server(&csr, 20, "ui-20");
    std::fs::copy(&soon, dir.path().join("ui/ui.pem")).unwrap();
    let (_, text) = station(&["check", "--config", cfg_s]);
    assert!(
        text.contains("WARNING  the web UI's certificate expires in 19 day(s)")
            || text.contains("WARNING  the web UI's certificate expires in 20 day(s)"),
        "{text}"
    );

    // Expired: a problem.
    let old = ca.sign_with(&csr, "ui-old", |p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(100);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    });
    std::fs::copy(&old, dir.path().join("ui/ui.pem")).unwrap();
    let (ok, text) = station(&["check", "--config", cfg_s]);
    assert!(!ok);
    assert!(
        text.contains("PROBLEM  web UI HTTPS: the certificate in") && text.contains("expired on"),
        "{text}"
    );

    // Another key's certificate: a problem naming both files.
    std::fs::copy(&signed, dir.path().join("ui/ui.pem")).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(&key, other.serialize_pem()).unwrap();
    let (ok, text) = station(&["check", "--config", cfg_s]);
    assert!(!ok);
    assert!(text.contains("is not the key of the certificate"), "{text}");

    // The key readable by others: a warning with the fix.
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (_, text) = station(&["check", "--config", cfg_s]);
    assert!(text.contains("chmod 600"), "{text}");

    // `station tls request` again uses the key there, never replaces it.
    let before = std::fs::read(&key).unwrap();
    let (ok, text) = station(&["tls", "request", "--config", cfg_s, "--dns", "b.example"]);
    assert!(ok && text.contains("using the web UI's key"), "{text}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_whose_key_is_not_its_certificates_does_not_start() {
    let ca_dir = tempfile::tempdir().unwrap();
    let (_dir, cfg) = prepare_with(&[], 300, UI_TLS);
    let files = cfg.ui_tls.clone().unwrap();
    install_ui_certificate(&files, ca_dir.path(), 90);
    std::fs::write(
        &files.key_file,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let e = match station::app::start(&cfg, false).await {
        Ok(_) => panic!("started with a key that is not the certificate's"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("web UI's HTTPS") && e.contains("is not the key of the certificate"),
        "{e}"
    );
}
