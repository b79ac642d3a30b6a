//! The fake DPS's symmetric keys (`dps-service-api.md` 1.2, 1.3(c), 2.1,
//! 4.2): the key checks and generation of enrollments and enrollment
//! groups, the attestation mechanism call that gives keys a GET hides, the
//! enrollment group calls, and the device SAS check.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::{DeviceAnswer, FakeState, Stored, device_error, error, gate, percent_decode};

/// The policy name a device's SAS must carry.
const DEVICE_POLICY: &str = "registration";

/// Checks the keys of a `symmetricKey` attestation: each given one must be
/// base64 of 16 to 64 bytes; missing or empty ones are fine (DPS makes
/// them).
pub(super) fn check_keys(attestation: &Value) -> Result<(), (i64, String)> {
    for which in ["primaryKey", "secondaryKey"] {
        match &attestation["symmetricKey"][which] {
            Value::Null => {}
            Value::String(k) if k.is_empty() => {}
            Value::String(k) => {
                let bytes = B64.decode(k).map_err(|_| {
                    (
                        400004,
                        format!("the symmetric key {which} is not valid base64"),
                    )
                })?;
                if !(16..=64).contains(&bytes.len()) {
                    return Err((
                        400004,
                        format!(
                            "the symmetric key {which} must be 16 to 64 bytes, not {}",
                            bytes.len()
                        ),
                    ));
                }
            }
            _ => return Err((400004, format!("the symmetric key {which} is not a string"))),
        }
    }
    Ok(())
}

/// Generates (64 random bytes, base64) each key of a `symmetricKey`
/// attestation that is missing or empty, as DPS does.
pub(super) fn fill_keys(attestation: &mut Value) {
    if attestation["type"] != "symmetricKey" {
        return;
    }
    if !attestation["symmetricKey"].is_object() {
        attestation["symmetricKey"] = json!({});
    }
    for which in ["primaryKey", "secondaryKey"] {
        let k = &mut attestation["symmetricKey"][which];
        if k.as_str().is_none_or(str::is_empty) {
            *k = json!(B64.encode(station::random::bytes::<64>()));
        }
    }
}

/// What a GET shows of a `symmetricKey` attestation: no keys.
pub(super) fn hide_keys(attestation: &mut Value) {
    if attestation["type"] == "symmetricKey" {
        attestation["symmetricKey"] = json!({});
    }
}

/// The keys the fake holds for an individual enrollment (`None` without a
/// symmetric-key one), for tests.
pub fn stored_keys(s: &FakeState, registration_id: &str) -> Option<(String, String)> {
    keys_of(s.enrollments.get(&registration_id.to_ascii_lowercase())?)
}

fn keys_of(e: &Stored) -> Option<(String, String)> {
    let k = &e.body["attestation"]["symmetricKey"];
    Some((
        k["primaryKey"].as_str()?.to_string(),
        k["secondaryKey"].as_str()?.to_string(),
    ))
}

/// DPS's derivation of a device's key from a group key, both base64.
pub fn device_key_from_group(group_key: &str, registration_id: &str) -> String {
    let key = B64.decode(group_key).unwrap();
    B64.encode(hmac(&key, registration_id.as_bytes()))
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg)
        .as_ref()
        .to_vec()
}

/// `POST /enrollments/{id}/attestationmechanism`: the attestation with its
/// keys.
pub(super) async fn attestation_mechanism(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/enrollments/{id}/attestationmechanism");
    if let Err(r) = gate(&state, &Method::POST, &path, &q, &headers, 0).await {
        return r;
    }
    let s = state.lock().unwrap();
    match s.enrollments.get(&id.to_ascii_lowercase()) {
        Some(e) => (StatusCode::OK, axum::Json(e.body["attestation"].clone())).into_response(),
        None => error(404, 404201, "Enrollment not found"),
    }
}

fn new_etag() -> String {
    B64.encode(format!(
        "\"{}\"",
        hex::encode(station::random::bytes::<8>())
    ))
}

/// `PUT /enrollmentGroups/{id}`: symmetric-key groups, with `If-Match`.
pub(super) async fn put_group(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/enrollmentGroups/{id}");
    if let Err(r) = gate(&state, &Method::PUT, &path, &q, &headers, 1).await {
        return r;
    }
    let Ok(mut g) = serde_json::from_slice::<Value>(&body) else {
        return error(400, 400004, "the body is not JSON");
    };
    if g["enrollmentGroupId"].as_str().map(str::to_ascii_lowercase) != Some(id.to_ascii_lowercase())
    {
        return error(
            400,
            400004,
            "enrollmentGroupId in the body does not match the path",
        );
    }
    if g["attestation"]["type"] != "symmetricKey" {
        return error(
            400,
            400004,
            "the fake takes symmetricKey enrollment groups only",
        );
    }
    if let Err((code, msg)) = check_keys(&g["attestation"]) {
        return error(400, code, &msg);
    }
    if !matches!(
        g["provisioningStatus"].as_str(),
        Some("enabled" | "disabled") | None
    ) {
        return error(
            400,
            400004,
            "provisioningStatus must be enabled or disabled",
        );
    }
    let mut s = state.lock().unwrap();
    let lower = id.to_ascii_lowercase();
    if let Some(m) = headers.get("if-match").and_then(|v| v.to_str().ok()) {
        let current = s.groups.get(&lower).map(|x| x.etag.clone());
        if m != "*" && current.as_deref() != Some(m.trim_matches('"')) {
            return error(412, 412001, "The ETag in the request does not match");
        }
    }
    fill_keys(&mut g["attestation"]);
    let etag = new_etag();
    let writes = s.groups.get(&lower).map(|e| e.writes).unwrap_or(0) + 1;
    s.groups.insert(
        lower,
        Stored {
            body: g.clone(),
            certificate_pem: String::new(),
            etag: etag.clone(),
            writes,
        },
    );
    g["etag"] = json!(etag);
    (StatusCode::OK, axum::Json(g)).into_response()
}

/// `GET /enrollmentGroups/{id}`: without its keys.
pub(super) async fn get_group(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/enrollmentGroups/{id}");
    if let Err(r) = gate(&state, &Method::GET, &path, &q, &headers, 0).await {
        return r;
    }
    let s = state.lock().unwrap();
    match s.groups.get(&id.to_ascii_lowercase()) {
        Some(g) => {
            let mut out = g.body.clone();
            out["etag"] = json!(g.etag);
            hide_keys(&mut out["attestation"]);
            (StatusCode::OK, axum::Json(out)).into_response()
        }
        None => error(404, 404202, "Enrollment group not found"),
    }
}

/// Percent-encodes all but the unreserved characters, with upper- or
/// lower-case hex (the SDKs differ, section 2.1).
fn encode(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// Whether `sig` (base64) is the SAS signature over `sr` (as it appears in
/// the token, or its decoded form re-encoded either way, or decoded as the
/// Node SDK signs it) and `se`, with the base64 `key`.
fn signed_with(key: &str, sr: &str, se: &str, sig: &str) -> bool {
    let Ok(key) = B64.decode(key) else {
        return false;
    };
    let decoded = percent_decode(sr);
    [
        sr.to_string(),
        encode(&decoded, true),
        encode(&decoded, false),
        decoded,
    ]
    .iter()
    .any(|form| B64.encode(hmac(&key, format!("{form}\n{se}").as_bytes())) == sig)
}

/// A symmetric-key device's SAS: `skn=registration`, `sr` names this scope
/// and id, `se` still ahead, and `sig` made with the individual
/// enrollment's primary or secondary key or, with no individual
/// enrollment, with a key derived from a symmetric-key group's. The
/// enrollment (individual or group) and the group's id if it was a group.
pub(super) fn authenticate(
    s: &FakeState,
    scope: &str,
    id: &str,
    authorization: &str,
) -> Result<(Stored, Option<String>), DeviceAnswer> {
    let unauthorized = |why: &str| device_error(401, 401002, &format!("Unauthorized: {why}"));
    let token = authorization
        .strip_prefix("SharedAccessSignature ")
        .ok_or_else(|| unauthorized("not a SharedAccessSignature"))?;
    let fields: BTreeMap<&str, &str> = token.split('&').filter_map(|p| p.split_once('=')).collect();
    let (Some(sr), Some(sig), Some(se), Some(skn)) = (
        fields.get("sr"),
        fields.get("sig"),
        fields.get("se"),
        fields.get("skn"),
    ) else {
        return Err(unauthorized("malformed SharedAccessSignature"));
    };
    if percent_decode(skn) != DEVICE_POLICY {
        return Err(unauthorized("skn must be registration"));
    }
    let resource = format!("{scope}/registrations/{id}");
    if !percent_decode(sr).eq_ignore_ascii_case(&resource) {
        return Err(unauthorized("the token is for another resource"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let se_n: u64 = se.parse().map_err(|_| unauthorized("bad expiry"))?;
    if se_n <= now {
        return Err(unauthorized("the token has expired"));
    }
    let sig = percent_decode(sig);
    if let Some(e) = s.enrollments.get(&id.to_ascii_lowercase()) {
        // An individual enrollment decides alone.
        let (primary, secondary) =
            keys_of(e).ok_or_else(|| unauthorized("not a symmetric-key enrollment"))?;
        if signed_with(&primary, sr, se, &sig) || signed_with(&secondary, sr, se, &sig) {
            return Ok((e.clone(), None));
        }
        return Err(unauthorized("the signature does not match"));
    }
    for (gid, g) in &s.groups {
        let Some((primary, secondary)) = keys_of(g) else {
            continue;
        };
        for group_key in [primary, secondary] {
            if signed_with(&device_key_from_group(&group_key, id), sr, se, &sig) {
                let group_id = g.body["enrollmentGroupId"]
                    .as_str()
                    .unwrap_or(gid)
                    .to_string();
                return Ok((g.clone(), Some(group_id)));
            }
        }
    }
    Err(unauthorized("no enrollment takes this signature"))
}

/// The operation body for a symmetric-key device: `symmetricKey` (with the
/// group's id) where an X.509 device has `x509`.
pub(super) fn outcome(mut body: Value, group: Option<&str>) -> Value {
    if let Some(state) = body["registrationState"].as_object_mut() {
        state.remove("x509");
        state.insert(
            "symmetricKey".into(),
            match group {
                Some(g) => json!({ "enrollmentGroupId": g }),
                None => json!({}),
            },
        );
    }
    body
}
