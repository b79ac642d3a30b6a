//! A strict fake of the DPS service API on 127.0.0.1, checking what the
//! real service checks (`../shared/docs/dps-service-api.md`): the SAS
//! signature, policy and expiry; `api-version`; the body (registrationId
//! equals the path, the certificate parses and its CN is the id); at most 10
//! per bulk call and no duplicate ids in one. It keeps enrollments with
//! etags, and can be told to misbehave.

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
}

impl FakeState {
    pub fn requests(&self) -> usize {
        self.log.len()
    }
    pub fn ok_requests(&self) -> usize {
        self.log.iter().filter(|l| l.status == 200).count()
    }
}

pub struct FakeDps {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub const POLICY: &str = "provisioningserviceowner";

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
        }));
        let mut f = FakeDps {
            addr,
            state,
            task: None,
        };
        f.serve(listener);
        f
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

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/enrollments/{id}", put(put_one).get(get_one))
            .route("/enrollments", post(bulk))
            .route("/enrollments/", post(bulk))
            .with_state(self.state.clone());
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }));
    }

    /// Stops answering: connections are refused.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Answers again on the same port, with the same enrollments.
    pub async fn restart(&mut self) {
        self.stop();
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.serve(listener);
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

fn error(status: u16, code: i64, message: &str) -> Response {
    let mut r = (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"errorCode": code, "trackingId": "fake", "message": message, "timestampUtc": "2026-11-22T00:00:00Z"})),
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
    if e["attestation"]["type"] != "x509" {
        return Err((400004, "attestation type must be x509 or tpm".into()));
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
    let s = state.lock().unwrap();
    match s.enrollments.get(&id.to_ascii_lowercase()) {
        Some(e) => {
            let mut out = e.body.clone();
            out["etag"] = json!(e.etag);
            if !e.certificate_pem.is_empty() {
                out["attestation"]["x509"]["clientCertificates"]["primary"] =
                    json!({"info": info(&e.certificate_pem)});
            }
            (StatusCode::OK, axum::Json(out)).into_response()
        }
        None => error(404, 404201, "Enrollment not found"),
    }
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
