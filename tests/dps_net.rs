//! DPS through a corporate network, against the strict fake DPS over real
//! HTTPS with its own CA: `[dps] ca_file`, a real CONNECT proxy
//! (tinyproxy) from `[dps] proxy` or HTTPS_PROXY with NO_PROXY, the words
//! for each TLS and proxy failure, and the outbox's `tls_error` state.
//! All traffic stays on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fake_dps::FakeDps;
use common::tinyproxy::Tinyproxy;
use common::*;
use serde_json::Value;
use station::config::{Config, Environment};
use station::dps::{DpsClient, DpsError, HttpDps};

const UNKNOWN_CA: &str =
    "DPS's certificate is issued by an unknown CA: set `[dps] ca_file` to your proxy's CA";

/// A DPS client made the way the station makes it, from a configuration
/// with these `[dps]` lines (besides the connection string) and `env`.
fn client(fake: &FakeDps, lines: &str, env: &Environment) -> HttpDps {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&[], 300)
        + &format!(
            "\n[dps]\nconnection_string = \"{}\"\n{lines}\n",
            fake.connection_string()
        );
    let cfg = Config::parse_in(&text, &dir.path().join("station.toml"), env).unwrap();
    HttpDps::with_network(
        cfg.dps.endpoint.as_deref().unwrap(),
        cfg.dps.connection.clone().unwrap(),
        Duration::from_secs(5),
        &cfg.dps.net,
    )
    .unwrap()
}

fn trusting(fake: &FakeDps) -> String {
    format!(
        "endpoint = \"{}\"\nca_file = \"{}\"",
        fake.https_endpoint(),
        fake.ca_file().display()
    )
}

/// A GET of an enrollment that cannot exist: `Ok(None)` once DPS answered.
async fn probe(c: &HttpDps) -> Result<Option<Value>, DpsError> {
    c.get("no-such-enrollment").await
}

#[tokio::test]
async fn ca_file_lets_the_client_reach_dps_over_tls_and_each_certificate_problem_has_its_words() {
    let fake = FakeDps::start().await;
    let none = Environment::default();
    assert_eq!(
        probe(&client(&fake, &trusting(&fake), &none)).await,
        Ok(None)
    );
    assert_eq!(fake.with(|s| s.ok_requests()), 1, "DPS saw the call");

    // Without ca_file the built-in roots do not know the fake's CA.
    let plain = format!("endpoint = \"{}\"", fake.https_endpoint());
    match probe(&client(&fake, &plain, &none)).await {
        Err(DpsError::Tls(m)) => {
            assert!(m.starts_with(UNKNOWN_CA), "{m}");
            assert!(!m.contains("factory network"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // Another CA's file: still unknown.
    let other = tempfile::tempdir().unwrap();
    let other_ca = other.path().join("other.pem");
    std::fs::write(&other_ca, fake_ca_of_another(&other)).unwrap();
    let lines = format!(
        "endpoint = \"{}\"\nca_file = \"{}\"",
        fake.https_endpoint(),
        other_ca.display()
    );
    assert!(
        matches!(probe(&client(&fake, &lines, &none)).await, Err(DpsError::Tls(m)) if m.starts_with(UNKNOWN_CA))
    );
    // The certificate names 127.0.0.1, not localhost.
    let lines = format!(
        "endpoint = \"https://localhost:{}\"\nca_file = \"{}\"",
        fake.https_port(),
        fake.ca_file().display()
    );
    match probe(&client(&fake, &lines, &none)).await {
        Err(DpsError::Tls(m)) => assert!(
            m.contains("certificate is for another name than localhost")
                && m.contains("intercepting"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        fake.with(|s| s.requests()),
        1,
        "no refused call reached DPS"
    );
}

/// A CA certificate (PEM) that signed nothing the fake presents.
fn fake_ca_of_another(_dir: &tempfile::TempDir) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn through_a_real_connect_proxy() {
    let fake = FakeDps::start().await;
    let port = fake.https_port();
    let mut proxy = Tinyproxy::start("");
    let none = Environment::default();

    // [dps] proxy: the call goes through the proxy's CONNECT.
    let via = format!("{}\nproxy = \"{}\"", trusting(&fake), proxy.url());
    assert_eq!(probe(&client(&fake, &via, &none)).await, Ok(None));
    assert_eq!(proxy.connects_to(port), 1, "the proxy carried the call");

    // TLS is end to end through the tunnel: without ca_file, tls_error.
    let untrusted = format!(
        "endpoint = \"{}\"\nproxy = \"{}\"",
        fake.https_endpoint(),
        proxy.url()
    );
    assert!(
        matches!(probe(&client(&fake, &untrusted, &none)).await, Err(DpsError::Tls(m)) if m.starts_with(UNKNOWN_CA))
    );
    assert_eq!(proxy.connects_to(port), 2);

    // HTTPS_PROXY when [dps] proxy is not set.
    let env = Environment {
        https_proxy: Some(("HTTPS_PROXY", proxy.url())),
        ..Environment::default()
    };
    assert_eq!(
        probe(&client(&fake, &trusting(&fake), &env)).await,
        Ok(None)
    );
    assert_eq!(proxy.connects_to(port), 3);

    // [dps] proxy wins over HTTPS_PROXY (which names a dead port here).
    let dead = Environment {
        https_proxy: Some(("HTTPS_PROXY", "http://127.0.0.1:9".into())),
        ..Environment::default()
    };
    assert_eq!(probe(&client(&fake, &via, &dead)).await, Ok(None));
    assert_eq!(proxy.connects_to(port), 4);

    // NO_PROXY: DPS on 127.0.0.1 is reached directly.
    let bypass = Environment {
        https_proxy: Some(("HTTPS_PROXY", proxy.url())),
        no_proxy: Some("localhost,127.0.0.1".into()),
        ..Environment::default()
    };
    assert_eq!(
        probe(&client(&fake, &trusting(&fake), &bypass)).await,
        Ok(None)
    );
    assert_eq!(proxy.connects_to(port), 4, "NO_PROXY bypasses the proxy");

    // The proxy gone: its words, not the factory network's.
    proxy.stop();
    match probe(&client(&fake, &via, &none)).await {
        Err(DpsError::Network(m)) => assert!(
            m.starts_with(&format!("the proxy at {} cannot be reached", proxy.url())),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    // ... and with NO_PROXY, DPS is still reached without it.
    assert_eq!(
        probe(&client(&fake, &trusting(&fake), &bypass)).await,
        Ok(None)
    );
}

#[tokio::test]
async fn a_proxy_that_refuses_says_so() {
    let fake = FakeDps::start().await;
    let none = Environment::default();

    // CONNECT disabled altogether.
    let closed = Tinyproxy::start("ConnectPort 0");
    let lines = format!("{}\nproxy = \"{}\"", trusting(&fake), closed.url());
    match probe(&client(&fake, &lines, &none)).await {
        Err(DpsError::Proxy(m)) => assert!(
            m.starts_with(&format!(
                "the proxy at {} refused to open a tunnel",
                closed.url()
            )),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // Credentials wanted (407); given in the URL, the call goes through.
    let guarded = Tinyproxy::start("BasicAuth line7 hunter2");
    let lines = format!("{}\nproxy = \"{}\"", trusting(&fake), guarded.url());
    match probe(&client(&fake, &lines, &none)).await {
        Err(DpsError::Proxy(m)) => {
            assert!(
                m.starts_with(&format!("the proxy at {} refused", guarded.url())),
                "{m}"
            );
            assert!(m.contains("407"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let with_credentials = format!(
        "{}\nproxy = \"http://line7:hunter2@127.0.0.1:{}\"",
        trusting(&fake),
        guarded.port
    );
    assert_eq!(
        probe(&client(&fake, &with_credentials, &none)).await,
        Ok(None)
    );
    assert_eq!(fake.with(|s| s.ok_requests()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_failure_is_the_outbox_state_tls_error_until_a_call_succeeds() {
    let fake = FakeDps::start().await;
    // An intercepting proxy's certificate, from a CA the station does not
    // trust.
    fake.present_foreign_certificate(true);
    let st =
        TestStation::start_with(vec![quick_board()], 2000, &dps_section(&fake, 6000), |_| ()).await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    let v = st
        .wait_outbox(Duration::from_secs(30), |v| {
            v["connectivity"] == "tls_error"
        })
        .await;
    let error = v["last_error"].as_str().unwrap();
    assert!(error.starts_with(UNKNOWN_CA), "{v:#}");
    assert!(!error.contains("factory network"), "{v:#}");
    let metrics = st.text("/metrics").await;
    assert!(
        metrics.contains("station_dps_connectivity{state=\"tls_error\"} 1"),
        "{metrics}"
    );
    assert!(fake.with(|s| s.enrollments.is_empty()));
    let sup = session_of(&st, "sue", station::store::Role::Supervisor, "B-1").await;
    let page = st.page_as(&sup, "/supervisor").await;
    assert!(
        page.contains("<strong>tls_error</strong>")
            && page.contains("issued by an unknown CA: set `[dps] ca_file`"),
        "{page}"
    );

    // The interception stops: the next call succeeds, the state is online.
    fake.present_foreign_certificate(false);
    let v = st
        .wait_outbox(Duration::from_secs(30), |v| {
            v["connectivity"] == "online" && v["queue_depth"] == 0
        })
        .await;
    assert!(v["last_error"].is_null(), "{v:#}");
    assert!(fake.with(|s| s.enrollments.contains_key(&guid)));
}

/// `station check`'s output for a configuration whose `[dps]` section is
/// `dps` (no proxy variables from this process's environment).
async fn check_with(dps: String) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, config_text(&[], 300) + &dps).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(station_bin())
            .args(["check", "--config"])
            .arg(&cfg)
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .env_remove("STATION_DPS_CONNECTION_STRING")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn station_check_reaches_dps_and_says_which_step_failed() {
    let fake = FakeDps::start().await;
    let section = |conn: &str, lines: &str| {
        format!("\n[dps]\nconnection_string = \"{conn}\"\nrequest_timeout_ms = 3000\n{lines}\n")
    };
    let good = fake.connection_string();

    let text = check_with(section(&good, &trusting(&fake))).await;
    assert!(
        text.contains(&format!(
            "ok       DPS {}: TLS connection, certificate trusted",
            fake.https_endpoint()
        )),
        "{text}"
    );
    assert!(
        text.contains("ok       DPS key: policy provisioningserviceowner accepted"),
        "{text}"
    );
    let gets = fake.with(|s| {
        s.log
            .iter()
            .filter(|l| l.method == "GET" && l.path.contains("station-check-"))
            .count()
    });
    assert_eq!(gets, 1, "one read of an enrollment that cannot exist");

    // Through a proxy, said so.
    let proxy = Tinyproxy::start("");
    let lines = format!("{}\nproxy = \"{}\"", trusting(&fake), proxy.url());
    let text = check_with(section(&good, &lines)).await;
    assert!(
        text.contains(&format!(
            "TLS connection through the proxy at {}",
            proxy.url()
        )),
        "{text}"
    );
    assert_eq!(proxy.connects_to(fake.https_port()), 1);

    // A wrong key: the connection works, the key step fails.
    let wrong = good.replace(
        good.rsplit("SharedAccessKey=").next().unwrap(),
        "d3Jvbmcga2V5IGZvciB0aGlzIERQUw==",
    );
    let text = check_with(section(&wrong, &trusting(&fake))).await;
    assert!(text.contains("ok       DPS https://"), "{text}");
    assert!(
        text.contains(
            "PROBLEM  DPS key: the key step failed: DPS refused the station's credentials"
        ),
        "{text}"
    );

    // Without ca_file: the TLS step fails, with the words.
    let plain = format!("endpoint = \"{}\"", fake.https_endpoint());
    let text = check_with(section(&good, &plain)).await;
    assert!(
        text.contains(&format!(
            "PROBLEM  DPS {}: the TLS connection step failed: {UNKNOWN_CA}",
            fake.https_endpoint()
        )),
        "{text}"
    );
    assert!(text.contains("skipped  DPS key: not tried"), "{text}");

    // Nothing listening: unreachable, a warning.
    let port = free_port();
    let lines = format!(
        "endpoint = \"https://127.0.0.1:{port}\"\nca_file = \"{}\"",
        fake.ca_file().display()
    );
    let text = check_with(section(&good, &lines)).await;
    assert!(
        text.contains(&format!(
            "WARNING  DPS https://127.0.0.1:{port} is unreachable, the connection step failed: cannot reach DPS"
        )),
        "{text}"
    );
    assert!(!text.contains("PROBLEM  DPS"), "{text}");

    // No DPS: said, and skipped.
    let text = check_with(String::new()).await;
    assert!(
        text.contains("skipped  DPS: no connection string"),
        "{text}"
    );
}
