//! A device registering with DPS over HTTPS, as the official device SDKs
//! do: with its X.509 certificate and key (a register PUT over mutual TLS),
//! or with its symmetric key (a SAS in `Authorization`, no client
//! certificate); then polls of the operation until it ends
//! (`dps-service-api.md` sections 2.1 and 4).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The API version the device SDKs send.
pub const API_VERSION: &str = "2021-06-01";

/// At most this many operation polls.
const MAX_POLLS: usize = 20;

/// Registers the device `registration_id` in `id_scope` at `endpoint`,
/// trusting only `server_ca_der`, presenting the chain in `chain_pem` (leaf
/// first) with the key in `key_pem` (PKCS#8 or SEC1). Returns the final
/// operation body (status `assigned`, `disabled` or `failed`), or the HTTP
/// status and body of any other answer.
pub async fn register(
    endpoint: SocketAddr,
    server_ca_der: &[u8],
    id_scope: &str,
    registration_id: &str,
    chain_pem: &str,
    key_pem: &str,
) -> Result<Value, String> {
    let config = client_config(server_ca_der, chain_pem, key_pem)?;
    register_with(
        endpoint,
        &config,
        id_scope,
        registration_id,
        registration_id,
        None,
    )
    .await
}

/// How a symmetric-key device signs: the SDKs' way by default; tests
/// change one thing at a time.
#[derive(Debug, Clone)]
pub struct Sas {
    /// `skn` (always `registration` for a device).
    pub skn: String,
    /// `se`: seconds from now (negative: already expired).
    pub expires_in: i64,
    /// Put `sr` URL-encoded (C, C#, Python) or raw (the Node SDK).
    pub encode_sr: bool,
    /// The `registrationId` in the body, if not the device's.
    pub body_id: Option<String>,
    /// Sign for this registration id instead of the device's.
    pub sr_id: Option<String>,
}

impl Default for Sas {
    fn default() -> Sas {
        Sas {
            skn: "registration".into(),
            expires_in: 3600,
            encode_sr: true,
            body_id: None,
            sr_id: None,
        }
    }
}

/// `SharedAccessSignature sr=…&sig=…&se=…&skn=…` for a device: HMAC-SHA256
/// with the decoded key over the `sr` as it appears, a newline and `se`.
pub fn device_sas(id_scope: &str, registration_id: &str, key_b64: &str, sas: &Sas) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as B64;
    let resource = format!(
        "{id_scope}/registrations/{}",
        sas.sr_id.as_deref().unwrap_or(registration_id)
    );
    let sr = if sas.encode_sr {
        encode(&resource)
    } else {
        resource
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let se = now + sas.expires_in;
    let key = B64.decode(key_b64).expect("the device key is base64");
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        format!("{sr}\n{se}").as_bytes(),
    );
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={}",
        encode(&B64.encode(mac.as_ref())),
        sas.skn
    )
}

/// Registers the symmetric-key device `registration_id` with its key
/// (base64), signing as `sas` says; trusts only `server_ca_der` and
/// presents no client certificate. Returns as [`register`] does.
pub async fn register_symmetric_key(
    endpoint: SocketAddr,
    server_ca_der: &[u8],
    id_scope: &str,
    registration_id: &str,
    key_b64: &str,
    sas: &Sas,
) -> Result<Value, String> {
    let config = plain_client_config(server_ca_der)?;
    let auth = device_sas(id_scope, registration_id, key_b64, sas);
    let body_id = sas.body_id.as_deref().unwrap_or(registration_id);
    register_with(
        endpoint,
        &config,
        id_scope,
        registration_id,
        body_id,
        Some(&auth),
    )
    .await
}

/// The register PUT and the polls, with `auth` on each request.
async fn register_with(
    endpoint: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    id_scope: &str,
    registration_id: &str,
    body_id: &str,
    auth: Option<&str>,
) -> Result<Value, String> {
    let base = format!(
        "/{}/registrations/{}",
        encode(id_scope),
        encode(registration_id)
    );
    let body = json!({ "registrationId": body_id }).to_string();
    let answer = request(
        endpoint,
        config,
        "PUT",
        &format!("{base}/register?api-version={API_VERSION}"),
        Some(&body),
        auth,
    )
    .await?;
    if answer.status != 202 && answer.status != 200 {
        return Err(format!("register: HTTP {}: {}", answer.status, answer.body));
    }
    let mut current = answer.json()?;
    if is_final(&current) {
        return Ok(current);
    }
    let op = current["operationId"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("register: no operationId in {current}"))?
        .to_string();
    let mut wait = answer.retry_after();
    for _ in 0..MAX_POLLS {
        match current["status"].as_str() {
            Some("assigning" | "unassigned") => {}
            _ if is_final(&current) => return Ok(current),
            other => return Err(format!("unexpected status {other:?}: {current}")),
        }
        tokio::time::sleep(wait).await;
        let answer = request(
            endpoint,
            config,
            "GET",
            &format!(
                "{base}/operations/{}?api-version={API_VERSION}",
                encode(&op)
            ),
            None,
            auth,
        )
        .await?;
        if answer.status != 200 && answer.status != 202 {
            return Err(format!(
                "operation poll: HTTP {}: {}",
                answer.status, answer.body
            ));
        }
        current = answer.json()?;
        wait = answer.retry_after();
    }
    if is_final(&current) {
        return Ok(current);
    }
    Err(format!(
        "still {} after {MAX_POLLS} polls",
        current["status"]
    ))
}

fn is_final(v: &Value) -> bool {
    matches!(
        v["status"].as_str(),
        Some("assigned" | "disabled" | "failed")
    )
}

/// A TLS client trusting only `server_ca_der`, with the device's chain and
/// key.
fn client_config(
    server_ca_der: &[u8],
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_ca_der.to_vec()))
        .map_err(|e| format!("the server CA: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err("no CERTIFICATE in the chain".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the private key: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .map_err(|e| format!("the client certificate: {e}"))?;
    Ok(Arc::new(config))
}

/// A TLS client trusting only `server_ca_der`, without a client
/// certificate.
fn plain_client_config(server_ca_der: &[u8]) -> Result<Arc<rustls::ClientConfig>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(server_ca_der.to_vec()))
        .map_err(|e| format!("the server CA: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Percent-encodes a path segment (all but the unreserved characters).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct Answer {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Retry-After` wait, capped at 2 s; 1 s when absent.
    fn retry_after(&self) -> Duration {
        let secs = self
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(1);
        Duration::from_secs(secs.min(2))
    }

    fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.body).map_err(|e| {
            format!(
                "HTTP {}: the body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }
}

/// One request on a new connection.
async fn request(
    endpoint: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    target: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Result<Answer, String> {
    tokio::time::timeout(
        Duration::from_secs(10),
        request_inner(endpoint, config, method, target, body, auth),
    )
    .await
    .map_err(|_| format!("{method} {target}: no answer in 10 s"))?
}

async fn request_inner(
    endpoint: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    method: &str,
    target: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Result<Answer, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("{method} {target}: {what}: {e}");
    let tcp = tokio::net::TcpStream::connect(endpoint)
        .await
        .map_err(|e| fail("connect", &e))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| fail("TLS handshake", &e))?;
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost:{}\r\nAccept: application/json\r\n",
        endpoint.port()
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        req.push_str("Content-Type: application/json; charset=utf-8\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.push_str(body.unwrap_or(""));
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| fail("write", &e))?;
    tls.flush().await.map_err(|e| fail("write", &e))?;

    let mut buf = Vec::new();
    let mut head: Option<(usize, Option<usize>)> = None;
    loop {
        if head.is_none()
            && let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let text = String::from_utf8_lossy(&buf[..at]).to_string();
            let length = text.split("\r\n").skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            head = Some((at, length));
        }
        if let Some((at, Some(length))) = head
            && buf.len() >= at + 4 + length
        {
            buf.truncate(at + 4 + length);
            break;
        }
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A peer that closes without close_notify, after its answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && head.is_some() => break,
            Err(e) => return Err(fail("read", &e)),
        }
    }
    let Some((at, _)) = head else {
        return Err(fail(
            "read",
            &format!("no HTTP answer ({} bytes)", buf.len()),
        ));
    };
    let text = String::from_utf8_lossy(&buf[..at]).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| fail("read", &format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[at + 4..]).to_string(),
    })
}
