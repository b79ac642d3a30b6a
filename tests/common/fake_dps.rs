//! A strict fake of the DPS service API on 127.0.0.1, checking what the
//! real service checks (`../shared/docs/dps-service-api.md`): the SAS
//! signature, policy and expiry; `api-version`; the body (registrationId
//! equals the path, the certificate parses and its CN is the id); at most 10
//! per bulk call and no duplicate ids in one. It keeps enrollments with
//! etags, deletes one only with an `If-Match` that matches its etag (or
//! `*`), counting every DELETE, and can be told to misbehave.
//!
//! The service API is served twice, on two ports: plain http (for tests
//! that send raw requests) and HTTPS with a certificate for 127.0.0.1
//! from the fake's own CA, which a station trusts through `[dps]
//! ca_file` ([`FakeDps::ca_file`]); `dps_section` configures stations so.
//!
//! A third listener serves the device registration API (section 4 of the
//! same document) over TLS: a device registers with the client certificate
//! its X.509 individual enrollment holds, or with a SAS signed by its
//! symmetric key (an individual enrollment's, or one derived from an
//! enrollment group's), and gets `disabled` or `assigned` from the
//! enrollment as it is at the time.
//!
//! Symmetric keys (`symkey`): keys given in an enrollment or group must be
//! base64 of 16 to 64 bytes; missing or empty ones are generated (64
//! bytes), as DPS does; a GET hides them and `POST
//! /enrollments/{id}/attestationmechanism` gives them.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

mod symkey;
#[allow(unused_imports)]
pub use symkey::{device_key_from_group, stored_keys};

/// A forced answer for the next request(s).
#[derive(Debug, Clone)]
pub enum Misbehave {
    /// Answer with this status (and Retry-After seconds) instead.
    Status(u16, Option<u64>),
    /// Answer normally, after this long.
    Slow(Duration),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub body: Value,
    pub certificate_pem: String,
    pub etag: String,
    /// How many times this enrollment was created or replaced.
    pub writes: u32,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The status the fake's checks gave: 200 when the request passed them
    /// (the handler may still answer 404 or a per-item error), the refusal
    /// otherwise, 0 for a request left hanging.
    pub status: u16,
    /// Enrollments in the request (bulk size, 1 for PUT, 0 for GET).
    pub items: usize,
}

/// A change someone else makes to a stored enrollment.
pub type Change = Box<dyn FnOnce(&mut Value) + Send>;

pub struct FakeState {
    pub key: Vec<u8>,
    pub policy: String,
    /// The `sr` the station must sign (the connection string's HostName).
    pub resource: String,
    pub enrollments: BTreeMap<String, Stored>,
    pub log: Vec<Logged>,
    /// Misbehaviours for the next requests, in order.
    pub script: VecDeque<Misbehave>,
    /// A misbehaviour for every request while set.
    pub always: Option<Misbehave>,
    /// Error codes to give, one per bulk call, to the first item of the
    /// call instead of taking it (e.g. 503001: "try again later").
    pub item_errors: VecDeque<i64>,
    /// Operations per minute allowed (token bucket with `burst`); `None`
    /// for no limit.
    pub quota: Option<(u32, f64)>,
    tokens: f64,
    refilled: Instant,
    /// Device registration operations by operation id.
    pub operations: BTreeMap<String, Operation>,
    /// Every single-enrollment PUT that passed the checks: the id and the
    /// `If-Match` it carried.
    pub puts: Vec<(String, Option<String>)>,
    /// Someone else's change, made to the enrollment with this id right
    /// after the next GET of it has been answered (a new etag with it).
    pub after_get: Option<(String, Change)>,
    /// Enrollment groups by lower-case id (symmetric-key groups only).
    pub groups: BTreeMap<String, Stored>,
    /// Every `DELETE /enrollments/{id}` that passed the checks, in order.
    pub deletes: Vec<Deleted>,
}

/// A DELETE the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The id, lower case.
    pub id: String,
    pub if_match: Option<String>,
    /// 204 deleted, 412 the etag did not match, 404 none, 428 without
    /// `If-Match` (the fake insists: the station deletes only
    /// conditionally).
    pub status: u16,
}

/// A device registration operation, with the answer its poll gives.
#[derive(Debug, Clone)]
pub struct Operation {
    pub operation_id: String,
    /// As in the request path.
    pub registration_id: String,
    /// The operation status body, computed from the enrollment when the
    /// device registered.
    pub outcome: Value,
}

impl FakeState {
    pub fn requests(&self) -> usize {
        self.log.len()
    }
    pub fn ok_requests(&self) -> usize {
        self.log.iter().filter(|l| l.status == 200).count()
    }
    /// The DELETEs of one enrollment.
    pub fn deletes_of(&self, id: &str) -> Vec<Deleted> {
        let id = id.to_ascii_lowercase();
        self.deletes
            .iter()
            .filter(|d| d.id == id)
            .cloned()
            .collect()
    }
}

pub struct FakeDps {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The device registration API (mutual TLS).
    device_addr: SocketAddr,
    device_tls: Arc<rustls::ServerConfig>,
    device_ca: Vec<u8>,
    device_task: Option<tokio::task::JoinHandle<()>>,
    /// The service API over HTTPS.
    tls_addr: SocketAddr,
    /// The certificate the HTTPS listener presents now: its own, or
    /// (`present_foreign_certificate`) one from a CA nobody trusts.
    tls: Arc<Mutex<Arc<rustls::ServerConfig>>>,
    own_tls: Arc<rustls::ServerConfig>,
    foreign_tls: Arc<rustls::ServerConfig>,
    tls_task: Option<tokio::task::JoinHandle<()>>,
    /// Holds `ca.pem`, the CA of the HTTPS listener's certificate.
    ca_dir: tempfile::TempDir,
}

pub const POLICY: &str = "provisioningserviceowner";

/// The ID scope of the fake's device registration API.
pub const ID_SCOPE: &str = "0ne00FAKE01";

impl FakeDps {
    /// A fake on a new port, with a fresh random key.
    pub async fn start() -> FakeDps {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            key: station::random::bytes::<32>().to_vec(),
            policy: POLICY.into(),
            resource: addr.to_string(),
            enrollments: BTreeMap::new(),
            log: Vec::new(),
            script: VecDeque::new(),
            always: None,
            item_errors: VecDeque::new(),
            quota: None,
            tokens: 0.0,
            refilled: Instant::now(),
            operations: BTreeMap::new(),
            puts: Vec::new(),
            after_get: None,
            groups: BTreeMap::new(),
            deletes: Vec::new(),
        }));
        let device_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let device_addr = device_listener.local_addr().unwrap();
        let (device_tls, device_ca) = device_tls_config();
        let tls_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_addr = tls_listener.local_addr().unwrap();
        let (own_tls, ca_pem) = service_tls_config("fake DPS test CA");
        let (foreign_tls, _) = service_tls_config("an intercepting proxy's CA");
        let ca_dir = tempfile::tempdir().unwrap();
        std::fs::write(ca_dir.path().join("ca.pem"), ca_pem).unwrap();
        let mut f = FakeDps {
            addr,
            state,
            task: None,
            device_addr,
            device_tls,
            device_ca,
            device_task: None,
            tls_addr,
            tls: Arc::new(Mutex::new(own_tls.clone())),
            own_tls,
            foreign_tls,
            tls_task: None,
            ca_dir,
        };
        f.serve(listener, tls_listener);
        f.serve_devices(device_listener);
        f
    }

    /// Where devices register (TLS with a client certificate).
    pub fn device_endpoint(&self) -> SocketAddr {
        self.device_addr
    }

    /// The device API's self-signed server certificate (DER), for "localhost"
    /// and 127.0.0.1: the one certificate a device client should trust.
    pub fn device_server_ca(&self) -> Vec<u8> {
        self.device_ca.clone()
    }

    fn serve_devices(&mut self, listener: tokio::net::TcpListener) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.device_tls.clone());
        let state = self.state.clone();
        self.device_task = Some(tokio::spawn(async move {
            // Connections live in this set, so aborting the task (stop())
            // drops them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                connections.spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        device_connection(acceptor, tcp, state),
                    )
                    .await;
                });
            }
        }));
    }

    /// The connection string a station uses for this fake.
    pub fn connection_string(&self) -> String {
        let s = self.state.lock().unwrap();
        format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            s.resource,
            s.policy,
            B64.encode(&s.key)
        )
    }

    /// The service API over plain http (loopback only).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The service API over HTTPS; its certificate names 127.0.0.1 only
    /// and is issued by the CA in [`FakeDps::ca_file`].
    pub fn https_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_addr.port())
    }

    /// Presents a certificate from another CA (as an intercepting proxy
    /// would) on new HTTPS connections, or the fake's own again.
    pub fn present_foreign_certificate(&self, foreign: bool) {
        *self.tls.lock().unwrap() = if foreign {
            self.foreign_tls.clone()
        } else {
            self.own_tls.clone()
        };
    }

    /// The HTTPS port, for endpoints under another name.
    pub fn https_port(&self) -> u16 {
        self.tls_addr.port()
    }

    /// The CA of the HTTPS listener's certificate (PEM), for `[dps] ca_file`.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.ca_dir.path().join("ca.pem")
    }

    fn serve(&mut self, listener: tokio::net::TcpListener, tls_listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route(
                "/enrollments/{id}",
                put(put_one).get(get_one).delete(delete_one),
            )
            .route(
                "/enrollments/{id}/attestationmechanism",
                post(symkey::attestation_mechanism),
            )
            .route(
                "/enrollmentGroups/{id}",
                put(symkey::put_group).get(symkey::get_group),
            )
            .route("/enrollments", post(bulk))
            .route("/enrollments/", post(bulk))
            .with_state(self.state.clone());
        let tls = TlsListener {
            tcp: tls_listener,
            config: self.tls.clone(),
        };
        let tls_app = app.clone();
        self.tls_task = Some(tokio::spawn(async move {
            let _ = axum::serve(tls, tls_app).await;
        }));
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops answering: connections are refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(t) = self.device_task.take() {
            t.abort();
        }
        if let Some(t) = self.tls_task.take() {
            t.abort();
        }
    }

    /// Answers again on the same ports, with the same enrollments (and the
    /// same device server certificate).
    pub async fn restart(&mut self) {
        self.stop();
        let listener = rebind(self.addr).await;
        let tls_listener = rebind(self.tls_addr).await;
        self.serve(listener, tls_listener);
        let device_listener = rebind(self.device_addr).await;
        self.serve_devices(device_listener);
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

impl Drop for FakeDps {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Listens on `addr` again, waiting a little for the old socket to go.
async fn rebind(addr: SocketAddr) -> tokio::net::TcpListener {
    let mut tries = 0;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on {addr} again: {e}"),
        }
    }
}

fn error_body(code: i64, message: &str) -> Value {
    json!({"errorCode": code, "trackingId": "fake", "message": message, "timestampUtc": "2026-11-22T00:00:00Z"})
}

fn error(status: u16, code: i64, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(error_body(code, message)),
    )
        .into_response();
    r.headers_mut()
        .insert("x-ms-error-code", code.to_string().parse().unwrap());
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The checks and misbehaviours every request goes through first.
async fn gate(
    state: &Arc<Mutex<FakeState>>,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    items: usize,
) -> Result<(), Response> {
    let forced = {
        let mut s = state.lock().unwrap();
        s.script.pop_front().or_else(|| s.always.clone())
    };
    let log = |status: u16| {
        state.lock().unwrap().log.push(Logged {
            at: Instant::now(),
            method: method.to_string(),
            path: path.to_string(),
            status,
            items,
        })
    };
    match forced {
        Some(Misbehave::Hang) => {
            log(0);
            std::future::pending::<()>().await;
        }
        Some(Misbehave::Slow(d)) => tokio::time::sleep(d).await,
        Some(Misbehave::Status(code, retry)) => {
            log(code);
            let mut r = error(code, i64::from(code) * 1000, "the fake was told to fail");
            if let Some(s) = retry {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            return Err(r);
        }
        None => {}
    }
    let result = check(state, q, headers);
    log(match &result {
        Ok(()) => 200,
        Err(r) => r.status().as_u16(),
    });
    result
}

fn check(
    state: &Arc<Mutex<FakeState>>,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let mut s = state.lock().unwrap();
    if q.get("api-version").map(String::as_str) != Some("2021-10-01") {
        return Err(error(
            400,
            400001,
            "api-version is missing or not supported",
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("SharedAccessSignature "))
        .ok_or_else(|| error(401, 401000, "Unauthorized"))?;
    let fields: BTreeMap<&str, &str> = auth.split('&').filter_map(|p| p.split_once('=')).collect();
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (
        fields.get("sr"),
        fields.get("sig"),
        fields.get("se"),
        fields.get("skn"),
    ) else {
        return Err(error(
            401,
            401000,
            "Unauthorized: malformed SharedAccessSignature",
        ));
    };
    if percent_decode(skn) != s.policy {
        return Err(error(401, 401000, "Unauthorized: unknown policy"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let se_n: u64 = se
        .parse()
        .map_err(|_| error(401, 401000, "Unauthorized: bad expiry"))?;
    if se_n <= now {
        return Err(error(401, 401000, "Unauthorized: the token has expired"));
    }
    if !percent_decode(sr).eq_ignore_ascii_case(&s.resource) {
        return Err(error(
            401,
            401000,
            "Unauthorized: the token is for another resource",
        ));
    }
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &s.key),
        format!("{sr}\n{se}").as_bytes(),
    );
    if B64.encode(mac.as_ref()) != percent_decode(sig) {
        return Err(error(401, 401002, "Unauthorized"));
    }
    if let Some((per_minute, burst)) = s.quota {
        let elapsed = s.refilled.elapsed().as_secs_f64();
        s.refilled = Instant::now();
        s.tokens = (s.tokens + elapsed * f64::from(per_minute) / 60.0).min(burst);
        if s.tokens < 1.0 {
            let wait = ((1.0 - s.tokens) * 60.0 / f64::from(per_minute))
                .ceil()
                .max(1.0) as u64;
            let mut r = error(429, 429001, "Too many requests");
            r.headers_mut()
                .insert("retry-after", wait.to_string().parse().unwrap());
            return Err(r);
        }
        s.tokens -= 1.0;
    }
    Ok(())
}

/// Validates an enrollment; returns its lower-case id and certificate PEM.
fn validate(e: &Value) -> Result<(String, String), (i64, String)> {
    let id = e["registrationId"]
        .as_str()
        .ok_or((400004, "registrationId is required".to_string()))?;
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":._-".contains(c))
    {
        return Err((400004, format!("registrationId {id:?} is not valid")));
    }
    if !matches!(
        e["provisioningStatus"].as_str(),
        Some("enabled" | "disabled") | None
    ) {
        return Err((
            400004,
            "provisioningStatus must be enabled or disabled".into(),
        ));
    }
    if e["attestation"]["type"] == "tpm" {
        // TPM attestation: the endorsement key must be a TPM2B_PUBLIC.
        let ek = e["attestation"]["tpm"]["endorsementKey"]
            .as_str()
            .ok_or((400004, "the endorsementKey is missing".to_string()))?;
        let ek = B64
            .decode(ek)
            .map_err(|_| (400004, "the endorsementKey is not base64".to_string()))?;
        let declared = ek
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));
        if declared != Some(ek.len().saturating_sub(2)) {
            return Err((
                400004,
                "the endorsementKey is not a TPM2B_PUBLIC (size prefix)".into(),
            ));
        }
        if !matches!(ek.get(2..4), Some([0x00, 0x01] | [0x00, 0x23])) {
            return Err((400004, "the endorsementKey is not an RSA or ECC key".into()));
        }
        return Ok((id.to_ascii_lowercase(), String::new()));
    }
    if e["attestation"]["type"] == "symmetricKey" {
        symkey::check_keys(&e["attestation"])?;
        return Ok((id.to_ascii_lowercase(), String::new()));
    }
    if e["attestation"]["type"] != "x509" {
        return Err((
            400004,
            "attestation type must be x509, tpm or symmetricKey".into(),
        ));
    }
    let pem = e["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"]
        .as_str()
        .ok_or((400004, "the primary certificate is missing".to_string()))?;
    let der =
        station::ca::pem_to_der(pem).ok_or((400004, "the certificate is not PEM".to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| (400004, "the certificate does not parse".to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("");
    if !cn.eq_ignore_ascii_case(id) {
        return Err((
            400004,
            format!("the certificate CN {cn:?} is not the registrationId"),
        ));
    }
    Ok((id.to_ascii_lowercase(), pem.to_string()))
}

/// The `info` DPS fills in for an X.509 certificate (it returns this, not
/// the certificate, on reads).
fn info(pem: &str) -> Value {
    let der = station::ca::pem_to_der(pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let not_before =
        time::OffsetDateTime::from_unix_timestamp(cert.validity().not_before.timestamp()).unwrap();
    json!({
        "sha256Thumbprint": station::ca::fingerprint(&der).to_ascii_uppercase(),
        "subjectName": cert.subject().to_string(),
        "notBeforeUtc": not_before.format(&time::format_description::well_known::Rfc3339).unwrap(),
    })
}

fn store(s: &mut FakeState, id: &str, body: &Value, pem: &str) -> Value {
    let etag = B64.encode(format!(
        "\"{}\"",
        hex::encode(station::random::bytes::<8>())
    ));
    // Symmetric keys left out are generated, whatever was stored before.
    let mut body = body.clone();
    symkey::fill_keys(&mut body["attestation"]);
    let body = &body;
    let mut out = body.clone();
    out["etag"] = json!(etag);
    if !pem.is_empty() {
        out["attestation"]["x509"]["clientCertificates"]["primary"] = json!({ "info": info(pem) });
    }
    let writes = s.enrollments.get(id).map(|e| e.writes).unwrap_or(0) + 1;
    s.enrollments.insert(
        id.to_string(),
        Stored {
            body: body.clone(),
            certificate_pem: pem.to_string(),
            etag,
            writes,
        },
    );
    out
}

async fn put_one(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = gate(
        &state,
        &Method::PUT,
        &format!("/enrollments/{id}"),
        &q,
        &headers,
        1,
    )
    .await
    {
        return r;
    }
    let Ok(e) = serde_json::from_slice::<Value>(&body) else {
        return error(400, 400004, "the body is not JSON");
    };
    let (eid, pem) = match validate(&e) {
        Ok(v) => v,
        Err((code, msg)) => return error(400, code, &msg),
    };
    if eid != id.to_ascii_lowercase() {
        return error(
            400,
            400004,
            "registrationId in the body does not match the path",
        );
    }
    let mut s = state.lock().unwrap();
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.puts.push((eid.clone(), if_match));
    if let Some(m) = headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let current = s.enrollments.get(&eid).map(|x| x.etag.clone());
        if m != "*" && current.as_deref() != Some(m.trim_matches('"')) {
            return error(412, 412001, "The ETag in the request does not match");
        }
    }
    let out = store(&mut s, &eid, &e, &pem);
    (StatusCode::OK, axum::Json(out)).into_response()
}

async fn get_one(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &state,
        &Method::GET,
        &format!("/enrollments/{id}"),
        &q,
        &headers,
        0,
    )
    .await
    {
        return r;
    }
    let mut s = state.lock().unwrap();
    let lower = id.to_ascii_lowercase();
    let answer = match s.enrollments.get(&lower) {
        Some(e) => {
            let mut out = e.body.clone();
            out["etag"] = json!(e.etag);
            symkey::hide_keys(&mut out["attestation"]);
            if !e.certificate_pem.is_empty() {
                out["attestation"]["x509"]["clientCertificates"]["primary"] =
                    json!({"info": info(&e.certificate_pem)});
            }
            (StatusCode::OK, axum::Json(out)).into_response()
        }
        None => error(404, 404201, "Enrollment not found"),
    };
    if s.after_get.as_ref().is_some_and(|(i, _)| *i == lower) {
        let (_, change) = s.after_get.take().unwrap();
        if let Some(e) = s.enrollments.get_mut(&lower) {
            change(&mut e.body);
            e.etag = B64.encode(format!(
                "\"{}\"",
                hex::encode(station::random::bytes::<8>())
            ));
            e.writes += 1;
        }
    }
    answer
}

async fn delete_one(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = gate(
        &state,
        &Method::DELETE,
        &format!("/enrollments/{id}"),
        &q,
        &headers,
        0,
    )
    .await
    {
        return r;
    }
    let mut s = state.lock().unwrap();
    let lower = id.to_ascii_lowercase();
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let current = s.enrollments.get(&lower).map(|e| e.etag.clone());
    let (status, answer) = match (&if_match, current) {
        // Real DPS deletes unconditionally without If-Match; the fake
        // refuses, so a test finds a station that forgets it.
        (None, _) => (
            428,
            error(428, 428001, "the fake deletes only with If-Match"),
        ),
        (Some(_), None) => (404, error(404, 404201, "Enrollment not found")),
        (Some(m), Some(etag)) if m != "*" && m.trim_matches('"') != etag => (
            412,
            error(412, 412001, "The ETag in the request does not match"),
        ),
        (Some(_), Some(_)) => {
            s.enrollments.remove(&lower);
            (204, StatusCode::NO_CONTENT.into_response())
        }
    };
    s.deletes.push(Deleted {
        id: lower,
        if_match,
        status,
    });
    answer
}

async fn bulk(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return error(400, 400004, "the body is not JSON");
    };
    let items = b["enrollments"].as_array().cloned().unwrap_or_default();
    if let Err(r) = gate(
        &state,
        &Method::POST,
        "/enrollments",
        &q,
        &headers,
        items.len(),
    )
    .await
    {
        return r;
    }
    let mode = b["mode"].as_str().unwrap_or("");
    if !["create", "update"].contains(&mode) {
        return error(400, 400004, "mode must be create or update here");
    }
    if items.is_empty() || items.len() > 10 {
        return error(400, 400004, "a bulk operation takes 1 to 10 enrollments");
    }
    let mut ids: Vec<String> = items
        .iter()
        .filter_map(|e| e["registrationId"].as_str().map(str::to_ascii_lowercase))
        .collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n {
        return error(
            400,
            400004,
            "the same registrationId appears twice in one bulk operation",
        );
    }
    let mut s = state.lock().unwrap();
    let mut errors = Vec::new();
    let mut forced = s.item_errors.pop_front();
    for e in &items {
        let rid = e["registrationId"].as_str().unwrap_or("").to_string();
        if let Some(code) = forced.take() {
            errors.push(json!({"registrationId": rid, "errorCode": code, "errorStatus": "Service unavailable, try again"}));
            continue;
        }
        match validate(e) {
            Err((code, msg)) => errors.push(json!({"registrationId": rid, "errorCode": code, "errorStatus": msg})),
            Ok((id, _)) if mode == "create" && s.enrollments.contains_key(&id) => {
                errors.push(json!({"registrationId": rid, "errorCode": 409201, "errorStatus": "Enrollment already exists"}))
            }
            Ok((id, pem)) => {
                store(&mut s, &id, e, &pem);
            }
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({"isSuccessful": errors.is_empty(), "errors": errors})),
    )
        .into_response()
}

// The device registration API (`dps-service-api.md` section 4), over TLS
// with a mandatory client certificate, in minimal hand-written HTTP/1.1: one
// request per connection.

/// The API versions the device API takes.
const DEVICE_API_VERSIONS: [&str; 3] = ["2019-03-31", "2021-06-01", "2021-10-01"];

/// Asks for a client certificate and checks the handshake signature made
/// with its key, but trusts any certificate: the handlers match it against
/// the individual enrollment, as DPS does. A device without one must sign
/// a SAS with a symmetric key.
#[derive(Debug)]
struct AnyClientCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    /// Optional: a symmetric-key device presents none and signs a SAS.
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts TCP connections and completes their TLS handshake; a client
/// that gives up on the handshake (it does not trust the certificate) is
/// dropped and the next one taken.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    config: Arc<Mutex<Arc<rustls::ServerConfig>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(self.config.lock().unwrap().clone());
            let handshake =
                tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await;
            if let Ok(Ok(tls)) = handshake {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// The service API's TLS configuration: a certificate for 127.0.0.1
/// only, from a CA of the fake's own named `ca_name`, and that CA (PEM).
fn service_tls_config(ca_name: &str) -> (Arc<rustls::ServerConfig>, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![server.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    (Arc::new(config), ca.pem())
}

/// The device API's TLS configuration and its self-signed server
/// certificate (DER).
fn device_tls_config() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake DPS device API");
    let cert = params.self_signed(&key).unwrap();
    let der = cert.der().to_vec();
    let verifier = Arc::new(AnyClientCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![rustls_pki_types::CertificateDer::from(der.clone())],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (Arc::new(config), der)
}

struct DeviceRequest {
    method: String,
    /// The request target: path and query.
    target: String,
    /// The `Authorization` header (a symmetric-key device's SAS).
    authorization: Option<String>,
    body: Vec<u8>,
}

struct DeviceAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

fn device_error(status: u16, code: i64, message: &str) -> DeviceAnswer {
    DeviceAnswer {
        status,
        headers: vec![("x-ms-error-code".into(), code.to_string())],
        body: error_body(code, message),
    }
}

/// Reads one request: the head up to a blank line, then a `Content-Length`
/// body. `Err(None)` when the peer sent nothing.
async fn read_device_request<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<DeviceRequest, Option<String>> {
    use tokio::io::AsyncReadExt;
    const MAX: usize = 64 * 1024;
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX {
            return Err(Some("the request head is too long".into()));
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if buf.is_empty() => return Err(None),
            Ok(0) | Err(_) => return Err(Some("the request ended early".into())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err(Some("malformed request line".into()));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Some("not HTTP/1.x".into()));
    }
    let mut length = 0usize;
    let mut authorization = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(Some("malformed header".into()));
        };
        if name.trim().eq_ignore_ascii_case("authorization") {
            authorization = Some(value.trim().to_string());
        }
        if name.trim().eq_ignore_ascii_case("content-length") {
            length = value
                .trim()
                .parse()
                .map_err(|_| Some("bad Content-Length".to_string()))?;
        }
    }
    if length > MAX {
        return Err(Some("the body is too long".into()));
    }
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(Some("the body ended early".into())),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(length);
    Ok(DeviceRequest {
        method: method.to_string(),
        target: target.to_string(),
        authorization,
        body,
    })
}

async fn device_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    state: Arc<Mutex<FakeState>>,
) {
    use tokio::io::AsyncWriteExt;
    let Ok(mut tls) = acceptor.accept(tcp).await else {
        return;
    };
    let peer: Vec<Vec<u8>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.to_vec()).collect())
        .unwrap_or_default();
    let (method, path, answer) = match read_device_request(&mut tls).await {
        Err(None) => return,
        Err(Some(why)) => (
            "?".to_string(),
            "?".to_string(),
            device_error(400, 400004, &why),
        ),
        Ok(req) => {
            let path = req.target.split('?').next().unwrap_or("").to_string();
            let answer = device_answer(&state, &req, &peer);
            (req.method, path, answer)
        }
    };
    state.lock().unwrap().log.push(Logged {
        at: Instant::now(),
        method,
        path,
        status: answer.status,
        items: 0,
    });
    let body = answer.body.to_string();
    let reason = StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", answer.status);
    out.push_str("Content-Type: application/json; charset=utf-8\r\n");
    out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out.push_str(&body);
    let _ = tls.write_all(out.as_bytes()).await;
    let _ = tls.flush().await;
    let _ = tls.shutdown().await;
}

/// The subject CN of a DER certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .map(str::to_string)
}

/// The X.509 check of an individual enrollment: the client certificate's CN
/// is the registration id, and the enrollment holds that very certificate.
fn authenticate(s: &FakeState, id: &str, peer: &[Vec<u8>]) -> Result<Stored, DeviceAnswer> {
    let unauthorized = || device_error(401, 401002, "Unauthorized");
    let leaf = peer.first().ok_or_else(unauthorized)?;
    let cn = common_name(leaf).ok_or_else(unauthorized)?;
    if !cn.eq_ignore_ascii_case(id) {
        return Err(unauthorized());
    }
    let stored = s
        .enrollments
        .get(&id.to_ascii_lowercase())
        .ok_or_else(unauthorized)?;
    if station::ca::pem_to_der(&stored.certificate_pem).as_deref() != Some(leaf.as_slice()) {
        return Err(unauthorized());
    }
    Ok(stored.clone())
}

/// `5.<16 hex>.<uuid-like hex>`, as DPS's operation ids look.
fn operation_id() -> String {
    let u = hex::encode(station::random::bytes::<16>());
    format!(
        "5.{}.{}-{}-{}-{}-{}",
        hex::encode(station::random::bytes::<8>()),
        &u[..8],
        &u[8..12],
        &u[12..16],
        &u[16..20],
        &u[20..]
    )
}

/// The operation status body for an enrollment, as it is now.
fn outcome(op: &str, id: &str, e: &Stored) -> Value {
    if e.body["provisioningStatus"] == "disabled" {
        // DPS documents the `disabled` status but not the errorCode and
        // errorMessage it gives with it (no captured body was found):
        // 401008 and this message are the fake's own.
        return json!({
            "operationId": op,
            "status": "disabled",
            "registrationState": {
                "registrationId": id,
                "status": "disabled",
                "errorCode": 401008,
                "errorMessage": "The enrollment is disabled",
            },
        });
    }
    let hub = e.body["iotHubs"]
        .as_array()
        .and_then(|h| h.first())
        .and_then(Value::as_str)
        .unwrap_or("fake-hub.azure-devices.net");
    let device_id = e.body["deviceId"].as_str().unwrap_or(id);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut state = json!({
        "x509": {},
        "registrationId": id,
        "createdDateTimeUtc": now,
        "assignedHub": hub,
        "deviceId": device_id,
        "status": "assigned",
        "substatus": "initialAssignment",
        "lastUpdatedDateTimeUtc": now,
        "etag": e.etag,
    });
    if let Some(twin) = e.body.get("initialTwin") {
        // Test-only: real DPS does not return the initial twin; the device
        // gets it from the IoT hub. Here a test can see what it would be.
        state["fakeInitialTwin"] = twin.clone();
    }
    json!({"operationId": op, "status": "assigned", "registrationState": state})
}

fn device_answer(
    state: &Arc<Mutex<FakeState>>,
    req: &DeviceRequest,
    peer: &[Vec<u8>],
) -> DeviceAnswer {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let q: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    if !q
        .get("api-version")
        .is_some_and(|v| DEVICE_API_VERSIONS.contains(&v.as_str()))
    {
        return device_error(400, 400001, "api-version is missing or not supported");
    }
    let segments: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut s = state.lock().unwrap();
    match (req.method.as_str(), segments.as_slice()) {
        ("PUT", [scope, "registrations", id, "register"]) => {
            if *scope != ID_SCOPE {
                return device_error(404, 404201, "Unknown ID scope");
            }
            let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                return device_error(400, 400004, "the body is not JSON");
            };
            if body["registrationId"].as_str() != Some(*id) {
                return device_error(
                    400,
                    400004,
                    "registrationId in the body does not match the path",
                );
            }
            let op = operation_id();
            let outcome = match &req.authorization {
                Some(sas) => match symkey::authenticate(&s, scope, id, sas) {
                    Ok((e, group)) => symkey::outcome(outcome(&op, id, &e), group.as_deref()),
                    Err(a) => return a,
                },
                None => match authenticate(&s, id, peer) {
                    Ok(e) => outcome(&op, id, &e),
                    Err(a) => return a,
                },
            };
            s.operations.insert(
                op.clone(),
                Operation {
                    operation_id: op.clone(),
                    registration_id: id.to_string(),
                    outcome,
                },
            );
            DeviceAnswer {
                status: 202,
                headers: vec![
                    ("Retry-After".into(), "1".into()),
                    (
                        "Location".into(),
                        format!("https://localhost/{scope}/registrations/{id}/register"),
                    ),
                    (
                        "x-ms-request-id".into(),
                        hex::encode(station::random::bytes::<16>()),
                    ),
                ],
                body: json!({"operationId": op, "status": "assigning"}),
            }
        }
        ("GET", [scope, "registrations", id, "operations", op]) => {
            if *scope != ID_SCOPE {
                return device_error(404, 404201, "Unknown ID scope");
            }
            let checked = match &req.authorization {
                Some(sas) => symkey::authenticate(&s, scope, id, sas).map(|_| ()),
                None => authenticate(&s, id, peer).map(|_| ()),
            };
            if let Err(a) = checked {
                return a;
            }
            match s.operations.get(*op) {
                Some(o) if o.registration_id.eq_ignore_ascii_case(id) => DeviceAnswer {
                    status: 200,
                    headers: Vec::new(),
                    body: o.outcome.clone(),
                },
                _ => device_error(404, 404201, "Operation not found"),
            }
        }
        _ => device_error(404, 404000, "Not found"),
    }
}
