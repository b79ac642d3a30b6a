//! No secret where it must not be: a station process served over HTTPS,
//! logging at trace level, with organisational sign-in against a real
//! OpenID Connect provider (node's oidc-provider), is used as people and
//! scripts use it (a badge and PIN, a password, an organisational
//! sign-in, a bearer token, sessions); then its log, its data folder (the
//! database and its write-ahead log) and `/api/v1/config` are searched for
//! every secret it was given or gave out: the OIDC client secret, the
//! authorization code, the TLS key (PEM, DER and its scalar in every
//! spelling), the session cookies, the token, the PIN and the password.
//! The search is first shown to find each of them where they were planted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::tls::{UI_TLS, client_trusting, install_ui_certificate};
use common::*;

/// The places searched: the log, and every file of the data folder.
fn places(log: &Path, data: &Path) -> Vec<PathBuf> {
    let mut all = vec![log.to_path_buf()];
    common::secrets::files(data, &mut all);
    all
}

/// Which of `places` hold `needle`.
fn holding(places: &[PathBuf], extra: &[(&str, &str)], needle: &[u8]) -> Vec<String> {
    let mut found: Vec<String> = places
        .iter()
        .filter(|p| {
            std::fs::read(p)
                .unwrap_or_default()
                .windows(needle.len())
                .any(|w| w == needle)
        })
        .map(|p| p.display().to_string())
        .collect();
    for (name, text) in extra {
        if text.as_bytes().windows(needle.len()).any(|w| w == needle) {
            found.push(name.to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_the_database_or_the_config_view() {
    let ca_dir = tempfile::tempdir().unwrap();
    let port = common::oidc::free_port();
    let base = format!("https://127.0.0.1:{port}");
    let redirect = format!("{base}/login/oidc/callback");
    let client_secret = "oidc-client-secret-7f3a9c2e-never-logged";
    let provider = common::oidc::Provider::start(client_secret, &redirect, None);
    let oidc = format!(
        r#"
[ui.oidc]
issuer = "{issuer}"
client_id = "station"
redirect_url = "{redirect}"
scopes = ["openid", "profile", "email", "groups"]
[ui.oidc.roles]
supervisor = ["line-supervisors"]
"#,
        issuer = provider.issuer
    );
    // [ui.oidc] is added after the harness read the file (the secret is
    // in the station process's environment only).
    let (dir, cfg) = prepare_with(&[], 300, UI_TLS);
    let config_text = std::fs::read_to_string(dir.path().join("station.toml"))
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &oidc;
    std::fs::write(dir.path().join("station.toml"), config_text).unwrap();
    let files = cfg.ui_tls.clone().unwrap();
    let plant_ca = install_ui_certificate(&files, ca_dir.path(), 90);
    let config = dir.path().join("station.toml");
    let run = |args: &[&str], stdin: &str| {
        let mut c = Command::new(station_bin())
            .env("STATION_OIDC_CLIENT_SECRET", client_secret)
            .args(args)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pin = "86021357";
    let password = "correct horse battery staple 42";
    run(
        &[
            "user", "add", "ana", "--role", "operator", "--badge", "0042", "--pin",
        ],
        &format!("{pin}\n"),
    );
    run(
        &["user", "add", "sam", "--role", "admin", "--password"],
        &format!("{password}\n"),
    );
    let token = run(&["token", "create", "--role", "admin", "--name", "mes"], "")
        .trim()
        .to_string();
    assert!(token.len() >= 32, "{token}");

    let log = dir.path().join("station.log");
    let out = dir.path().join("station.out");
    let _station = Child(
        Command::new(station_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "trace")
            .env("STATION_OIDC_CLIENT_SECRET", client_secret)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = output_line(&out, &log, "the station did not start", |l| {
        l.split(" listening on ").nth(1).map(str::to_string)
    })
    .await;
    assert_eq!(started, base);

    // A badge and PIN, a password, each through the sign-in form.
    let c = client_trusting(&plant_ca.cert, None);
    let mut sessions = Vec::new();
    for form in [
        vec![("badge", "0042"), ("pin", pin)],
        vec![("name", "sam"), ("password", password)],
    ] {
        let page = c.get(format!("{base}/login")).send().await.unwrap();
        let pre = set_cookie(&page, "station_login_csrf").unwrap();
        let csrf = hidden_csrf(&page.text().await.unwrap());
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend(form);
        let r = c
            .post(format!("{base}/login"))
            .header("cookie", format!("station_login_csrf={pre}"))
            .form(&fields)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        let session = set_cookie(&r, "station_session").unwrap();
        let page = c
            .get(format!("{base}/"))
            .header("cookie", format!("station_session={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        sessions.push(session);
    }
    // An organisational sign-in, through the provider and back.
    let start = c.get(format!("{base}/login/oidc")).send().await.unwrap();
    assert_eq!(start.status(), 303);
    let binding = set_cookie(&start, "station_oidc").unwrap();
    let to = start.headers()["location"].to_str().unwrap().to_string();
    let back = common::oidc::Browser::default()
        .sign_in_at_provider(&to, "sam", &redirect)
        .await;
    let code = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let r = c
        .get(&back)
        .header("cookie", format!("station_oidc={binding}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sessions.push(set_cookie(&r, "station_session").unwrap());

    let api = client_trusting(&plant_ca.cert, Some(&token));
    let config_view = api
        .get(format!("{base}/api/v1/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(config_view.contains("\"https\":true"), "{config_view}");
    assert!(
        config_view.contains("\"client_secret_present\":true"),
        "{config_view}"
    );
    // Something at trace level was written, HTTP and TLS included.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = read(&log);
    assert!(logged.contains("TRACE"), "{logged}");

    // The TLS key in every form it could be written down.
    let key_pem = std::fs::read_to_string(&files.key_file).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key_der = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&key_body)
            .unwrap()
    };
    let scalar: [u8; 32] = {
        use p256::pkcs8::DecodePrivateKey;
        p256::SecretKey::from_pkcs8_pem(&key_pem)
            .unwrap()
            .to_bytes()
            .into()
    };
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("TLS key (PEM body)".into(), key_body.into_bytes()),
        ("TLS key (DER)".into(), key_der),
        ("API token".into(), token.clone().into_bytes()),
        (
            "OIDC client secret".into(),
            client_secret.as_bytes().to_vec(),
        ),
        ("OIDC authorization code".into(), code.into_bytes()),
        ("PIN".into(), pin.as_bytes().to_vec()),
        ("password".into(), password.as_bytes().to_vec()),
    ];
    for (how, bytes) in common::secrets::spellings(&scalar) {
        secrets.push((format!("TLS key scalar ({how})"), bytes));
    }
    for (i, s) in sessions.iter().enumerate() {
        secrets.push((format!("session {i}"), s.clone().into_bytes()));
    }

    // The search finds each where it was planted.
    let probe = tempfile::tempdir().unwrap();
    for (i, (_, bytes)) in secrets.iter().enumerate() {
        let mut planted = b"log line ".to_vec();
        planted.extend(bytes);
        std::fs::write(probe.path().join(format!("planted-{i}")), planted).unwrap();
    }
    let probes = places(&probe.path().join("planted-0"), probe.path());
    for (what, bytes) in &secrets {
        assert!(
            !holding(&probes, &[], bytes).is_empty(),
            "the search does not find a planted {what}"
        );
    }

    let searched = places(&log, &dir.path().join("data"));
    assert!(
        searched.iter().any(|p| p.ends_with("station.db")),
        "{searched:?}"
    );
    let extra = [("/api/v1/config", config_view.as_str())];
    for (what, bytes) in &secrets {
        let found = holding(&searched, &extra, bytes);
        assert!(found.is_empty(), "the {what} was found in {found:?}");
    }
}
