//! Test harness: a station in this process on 127.0.0.1:0 with a fresh data
//! folder, its slots on real pseudo-terminals with simulated boards, and
//! typed helpers for the API and the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

pub mod browser;
pub mod device_client;
pub mod fake_dps;
pub mod fake_zebra;
pub mod oidc;
pub mod root;
pub mod secrets;
pub mod softhsm;
pub mod swtpm;
pub mod tinyproxy;
pub mod tls;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use station::ca::{CaSigner, FactoryCa};
use station::config::Config;
use station::ids::Guid;
use station::sim::{PtySim, SimOptions};
use station::store::{CertificateRow, Role, Store};

/// An HTTP client for tests (the ring TLS provider is the only one built).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// An HTTP client without credentials that does not follow redirects, for
/// the sign-in pages.
pub fn bare_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value a response sets for a cookie.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_string())
        })
}

/// The first hidden `csrf` field of a page.
pub fn hidden_csrf(html: &str) -> String {
    let k = "name=\"csrf\" value=\"";
    let at = html.find(k).unwrap() + k.len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Signs in with a badge and PIN through the sign-in page; the response
/// carries the session cookie.
pub async fn sign_in_badge(st: &TestStation, badge: &str, pin: &str) -> reqwest::Response {
    let c = bare_client();
    let page = c.get(format!("{}/login", st.base)).send().await.unwrap();
    let pre = set_cookie(&page, "station_login_csrf").unwrap();
    let csrf = hidden_csrf(&page.text().await.unwrap());
    c.post(format!("{}/login", st.base))
        .header("cookie", format!("station_login_csrf={pre}"))
        .form(&[("csrf", csrf.as_str()), ("badge", badge), ("pin", pin)])
        .send()
        .await
        .unwrap()
}

/// An HTTP client that sends `token` as its bearer token.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Station configuration for tests: quick timeouts, serial slots on the
/// given devices.
pub fn config_text(devices: &[String], timeout_ms: u64) -> String {
    config_text_with(devices, timeout_ms, &|_| String::new())
}

/// As [`config_text`], with `per_slot(i)` added to slot `i`'s table.
pub fn config_text_with(
    devices: &[String],
    timeout_ms: u64,
    per_slot: &dyn Fn(usize) -> String,
) -> String {
    let mut s = format!(
        r#"
[station]
id = "test-station"
line = "test-line"
data_dir = "data"
listen = "127.0.0.1:0"

[ca]
key = "file"
certificate_file = "ca/ca.pem"
key_file = "ca/ca.key"
leaf_validity_days = 365

[jig]
timeout_ms = {timeout_ms}
slow_timeout_ms = {slow}
attempts = 8
poll_ms = 200
reconnect_ms = 200
"#,
        slow = timeout_ms * 4
    );
    for (i, d) in devices.iter().enumerate() {
        s.push_str(&format!(
            "\n[[slot]]\nid = {}\nlink = \"serial\"\ndevice = \"{d}\"\n{}",
            i + 1,
            per_slot(i)
        ));
    }
    s
}

pub struct TestStation {
    pub dir: tempfile::TempDir,
    pub app: station::app::App,
    pub sims: Vec<PtySim>,
    pub base: String,
    /// Sends the admin token with every request.
    pub client: reqwest::Client,
    pub token: String,
}

/// Writes the config and a fresh CA in a new folder.
pub fn prepare(devices: &[String], timeout_ms: u64) -> (tempfile::TempDir, Config) {
    prepare_with(devices, timeout_ms, "")
}

pub fn prepare_with(
    devices: &[String],
    timeout_ms: u64,
    extra: &str,
) -> (tempfile::TempDir, Config) {
    prepare_slots(devices, timeout_ms, &|_| String::new(), extra)
}

/// As [`prepare_with`], with `per_slot(i)` added to slot `i`'s table.
pub fn prepare_slots(
    devices: &[String],
    timeout_ms: u64,
    per_slot: &dyn Fn(usize) -> String,
    extra: &str,
) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station.toml");
    std::fs::write(
        &path,
        config_text_with(devices, timeout_ms, per_slot) + extra,
    )
    .unwrap();
    let cfg = Config::load(&path).unwrap();
    init_ca(&cfg);
    (dir, cfg)
}

/// A fresh self-signed test CA where `cfg` looks for it.
pub fn init_ca(cfg: &Config) {
    FactoryCa::init(
        &cfg.ca_certificate_path(),
        &cfg.ca_key_path(),
        "Test CA",
        30,
        false,
    )
    .unwrap();
}

impl TestStation {
    /// A station with one slot per simulated board.
    pub async fn start(boards: Vec<SimOptions>) -> TestStation {
        TestStation::start_with_timeout(boards, 300).await
    }

    pub async fn start_with_timeout(boards: Vec<SimOptions>, timeout_ms: u64) -> TestStation {
        TestStation::start_with(boards, timeout_ms, "", |_| ()).await
    }

    /// A station with `extra` appended to its configuration, and `before`
    /// run on the configuration before it starts (to seed its database).
    pub async fn start_with(
        boards: Vec<SimOptions>,
        timeout_ms: u64,
        extra: &str,
        before: impl FnOnce(&Config),
    ) -> TestStation {
        TestStation::start_slots(boards, timeout_ms, &|_| String::new(), extra, before).await
    }

    /// As [`TestStation::start_with`], with `per_slot(i)` added to slot
    /// `i`'s table.
    pub async fn start_slots(
        boards: Vec<SimOptions>,
        timeout_ms: u64,
        per_slot: &dyn Fn(usize) -> String,
        extra: &str,
        before: impl FnOnce(&Config),
    ) -> TestStation {
        let sims: Vec<PtySim> = boards
            .into_iter()
            .map(|o| PtySim::spawn(o).unwrap())
            .collect();
        let devices: Vec<String> = sims.iter().map(|s| s.device.clone()).collect();
        TestStation::start_on(sims, &devices, timeout_ms, per_slot, extra, before).await
    }

    /// A station whose slots open `devices` (the simulated boards' own
    /// lines, or cables to them).
    pub async fn start_on(
        sims: Vec<PtySim>,
        devices: &[String],
        timeout_ms: u64,
        per_slot: &dyn Fn(usize) -> String,
        extra: &str,
        before: impl FnOnce(&Config),
    ) -> TestStation {
        let (dir, cfg) = prepare_slots(devices, timeout_ms, per_slot, extra);
        before(&cfg);
        // The harness calls the API as an admin, with a bearer token.
        let token = Store::open(&cfg.database_path())
            .unwrap()
            .create_token(
                "tests",
                station::store::Role::Admin,
                "tests",
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let app = station::app::start(&cfg, false).await.unwrap();
        let scheme = if app.https { "https" } else { "http" };
        let base = format!("{scheme}://{}", app.addr);
        TestStation {
            dir,
            app,
            sims,
            base,
            client: client_with_token(&token),
            token,
        }
    }

    pub fn store(&self) -> &Store {
        &self.app.store
    }

    pub fn ca(&self) -> FactoryCa {
        let d = self.dir.path().join("data/ca");
        FactoryCa::load(&d.join("ca.pem"), &d.join("ca.key")).unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A page or text (such as `/metrics`) as the harness's admin.
    pub async fn text(&self, path: &str) -> String {
        let r = self.client.get(format!("{}{path}", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }

    /// A page as the user signed in with this session cookie.
    pub async fn page_as(&self, session: &str, path: &str) -> String {
        let r = bare_client()
            .get(format!("{}{path}", self.base))
            .header("cookie", format!("station_session={session}"))
            .send();
        r.await.unwrap().text().await.unwrap()
    }

    /// `GET /api/v1/outbox`.
    pub async fn outbox(&self) -> Value {
        let (s, v) = self.get("/api/v1/outbox").await;
        assert_eq!(s, 200);
        v
    }

    /// Waits until `cond` holds on the outbox view.
    pub async fn wait_outbox(&self, within: Duration, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.outbox().await;
            if cond(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox never got there: {v:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn boards(&self) -> Vec<Value> {
        let (s, v) = self.get("/api/v1/boards?limit=1000").await;
        assert_eq!(s, 200);
        v.as_array().unwrap().clone()
    }

    /// Waits until `n` board records are finished (provisioned or failed).
    pub async fn wait_finished(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let boards = self.boards().await;
            let done: Vec<Value> = boards
                .iter()
                .filter(|b| b["status"] != "in_progress")
                .cloned()
                .collect();
            if done.len() >= n {
                return done;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "only {} of {n} boards finished in {within:?}: {boards:#?}\nslots: {:#?}",
                    done.len(),
                    self.get("/api/v1/slots").await.1
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn ledger(&self, guid: &str) -> Vec<CertificateRow> {
        self.store()
            .certificates(&guid.parse::<Guid>().unwrap())
            .unwrap()
    }
}

impl Drop for TestStation {
    fn drop(&mut self) {
        self.app.stop();
    }
}

/// Board options for tests: quick, one board that stays in the jig.
pub fn quick_board() -> SimOptions {
    SimOptions {
        keygen_time: Duration::from_millis(20),
        test_time: Duration::from_millis(20),
        first_insert_after: Duration::from_millis(50),
        ..SimOptions::default()
    }
}

pub fn with_fault(fault: &str) -> SimOptions {
    SimOptions {
        fault: Some(fault.parse().unwrap()),
        ..quick_board()
    }
}

/// Adds a person with a badge and PIN 1234 and signs them in; the session
/// cookie's value.
pub async fn session_of(
    st: &TestStation,
    name: &str,
    role: station::store::Role,
    badge: &str,
) -> String {
    let new = station::store::NewUser {
        name,
        role,
        badge: Some(badge),
        pin: Some("1234"),
        password: None,
    };
    st.store()
        .add_user(&new, "tests", time::OffsetDateTime::now_utc())
        .unwrap();
    let r = sign_in_badge(st, badge, "1234").await;
    set_cookie(&r, "station_session").unwrap()
}

/// The station binary built for these tests.
pub fn station_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_station"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits up to 30 s for a line of a child's standard output (written to
/// `out`) that `find` takes something from, and returns it; panics with
/// `what` and the child's log (`log`) if none comes.
pub async fn output_line(
    out: &Path,
    log: &Path,
    what: &str,
    find: impl Fn(&str) -> Option<String>,
) -> String {
    for _ in 0..300 {
        if let Some(found) = read(out).lines().find_map(&find) {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}; log:\n{}", read(log))
}

/// A child process killed when dropped.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Checks a certificate against the CA and the device profile; returns its
/// SubjectPublicKeyInfo (DER).
pub fn check_leaf(der: &[u8], ca: &dyn CaSigner, guid: &str) -> Vec<u8> {
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(ca.certificate_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key()))
        .expect("leaf verifies against the CA");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        guid
    );
    assert_eq!(cert.issuer(), ca_cert.subject());
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1"
    );
    assert!(cert.raw_serial().len() >= 15);
    let mut found = 0;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(ku) => {
                assert!(ext.critical && ku.digital_signature() && !ku.key_cert_sign());
                found += 1;
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                assert!(eku.client_auth);
                found += 1;
            }
            ParsedExtension::BasicConstraints(bc) => {
                assert!(!bc.ca);
                found += 1;
            }
            ParsedExtension::SubjectKeyIdentifier(_)
            | ParsedExtension::AuthorityKeyIdentifier(_) => found += 1,
            other => panic!("unexpected extension {other:?}"),
        }
    }
    assert_eq!(found, 5, "KU, EKU, BC, SKI, AKI");
    cert.public_key().raw.to_vec()
}

pub fn pem_der(pem: &str) -> Vec<u8> {
    station::ca::pem_to_der(pem).unwrap()
}

/// A `[dps]` section for a station talking to `fake` over HTTPS, trusting
/// the fake's CA through `ca_file`.
pub fn dps_section(fake: &fake_dps::FakeDps, ops_per_minute: u32) -> String {
    format!(
        "\n[dps]\nconnection_string = \"{}\"\nendpoint = \"{}\"\nca_file = \"{}\"\nops_per_minute = {ops_per_minute}\nrequest_timeout_ms = 1000\nmax_backoff_ms = 1000\n",
        fake.connection_string(),
        fake.https_endpoint(),
        fake.ca_file().display()
    )
}

/// Writes `n` provisioned boards with their certificates and queued
/// enrollments straight into a station's database, as if a line had run;
/// `edit` may spoil an enrollment body. Returns the GUIDs.
pub fn seed_provisioned(
    cfg: &Config,
    n: usize,
    edit: impl Fn(usize, &mut serde_json::Value),
) -> Vec<String> {
    let guids: Vec<Guid> = (0..n)
        .map(|_| Guid::from_bytes(station::random::bytes()))
        .collect();
    seed_guids(cfg, &guids, edit)
}

/// As [`seed_provisioned`], with the GUIDs given.
pub fn seed_guids(
    cfg: &Config,
    given: &[Guid],
    edit: impl Fn(usize, &mut serde_json::Value),
) -> Vec<String> {
    use station::ids::{Serial, SlotId};
    let store = Store::open(&cfg.database_path()).unwrap();
    let ca = FactoryCa::load(&cfg.ca_certificate_path(), &cfg.ca_key_path()).unwrap();
    let template = station::dps::EnrollmentTemplate::from_config(cfg);
    let now = time::OffsetDateTime::now_utc();
    let mut guids = Vec::new();
    for (i, guid) in given.iter().enumerate() {
        let guid = guid.clone();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = station::ca::CheckedCsr {
            guid: guid.clone(),
            spki_der: rcgen::PublicKeyData::subject_public_key_info(&key),
        };
        let leaf = station::ca::issue_leaf(&ca, &csr, now, 365).unwrap();
        let b = store.open_board(&cfg.station_id, SlotId(1), now).unwrap();
        let id = station::jig::BoardIdentity {
            guid: guid.clone(),
            hw_revision: "B2".into(),
            fw_version: "1.4.2".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
        };
        let b = store.record_identity(b, &id, now).unwrap();
        store
            .commit_certificate(
                b,
                &station::store::NewCertificate {
                    serial: &leaf.serial,
                    guid: &guid,
                    fingerprint: &leaf.fingerprint,
                    pem: &leaf.pem,
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    override_used: false,
                },
                now,
            )
            .unwrap();
        let build = |f: &station::store::EnrollmentFacts| {
            let mut body = template.body(f);
            edit(i, &mut body);
            body.to_string()
        };
        store
            .complete(
                b,
                Some(&Serial(leaf.serial.0.clone())),
                now,
                station::store::Enroll::Individual(&build),
            )
            .unwrap();
        guids.push(guid.to_string());
    }
    guids
}

/// Adds a person who signs in with a badge and PIN.
pub fn add_badge_user(st: &TestStation, name: &str, role: Role, badge: &str, pin: &str) {
    let who = station::store::NewUser {
        name,
        role,
        badge: Some(badge),
        pin: Some(pin),
        password: None,
    };
    st.store()
        .add_user(&who, "test", time::OffsetDateTime::now_utc())
        .unwrap();
}
