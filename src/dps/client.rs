//! The DPS service API over HTTPS: create or update an enrollment, bulk
//! create, read one back, replace or delete one only if unchanged
//! (`If-Match`); for symmetric-key devices, read an enrollment's keys
//! (attestation mechanism) and write and read enrollment groups.
//! Every request is signed afresh.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;

use super::net::{DpsNet, ProxyUrl};
use super::{API_VERSION, ConnectionString, url_encode};

/// What went wrong with a DPS call, sorted by what the uploader does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpsError {
    /// DPS could not be reached or did not answer: try again later.
    #[error("cannot reach DPS: {0}")]
    Network(String),
    /// The TLS connection failed: the certificate problem and its fix
    /// (`net.rs`). Retried like `Network`, shown as its own state.
    #[error("{0}")]
    Tls(String),
    /// The proxy refused to open a tunnel to DPS (407, 403, ...).
    #[error("{0}")]
    Proxy(String),
    /// 429: over the operation budget.
    #[error("DPS is throttling the station (429){}", retry_note(.retry_after))]
    Throttled { retry_after: Option<Duration> },
    /// 5xx: DPS is having trouble.
    #[error("DPS failed ({status}): {message}")]
    Server {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// 401 or 403: the credentials are wrong or lack the right.
    #[error(
        "DPS refused the station's credentials ({status}: {message}): check the connection string and that its policy has EnrollmentWrite and EnrollmentRead, then run `station outbox retry`"
    )]
    Unauthorized { status: u16, message: String },
    /// Another 4xx: this request is wrong and will stay wrong.
    #[error("DPS refused the enrollment ({status}{}: {message})", code.map(|c| format!(", error {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<i64>,
        message: String,
    },
}

fn retry_note(r: &Option<Duration>) -> String {
    r.map(|d| format!(", retry after {} s", d.as_secs()))
        .unwrap_or_default()
}

/// One refused item of a bulk call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    pub registration_id: String,
    pub code: i64,
    pub status: String,
}

impl ItemError {
    /// DPS says the enrollment exists already (409-class).
    pub fn exists(&self) -> bool {
        self.code / 1000 == 409 || self.status.to_ascii_lowercase().contains("exist")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkResult {
    pub errors: Vec<ItemError>,
}

/// The DPS service API, as the uploader needs it.
#[async_trait]
pub trait DpsClient: Send + Sync {
    /// `PUT /enrollments/{registrationId}`: create or replace; the etag.
    async fn put(&self, enrollment: &Value) -> Result<Option<String>, DpsError>;
    /// `POST /enrollments` with mode `create`, at most 10.
    async fn bulk_create(&self, enrollments: &[Value]) -> Result<BulkResult, DpsError>;
    /// `GET /enrollments/{id}`; `None` if DPS has none.
    async fn get(&self, registration_id: &str) -> Result<Option<Value>, DpsError>;
    /// `PUT /enrollments/{registrationId}` with `If-Match: etag`: replaces
    /// the enrollment only if it is still the one read; the enrollment as
    /// stored. A changed one is `Rejected { status: 412 }`.
    async fn replace(&self, enrollment: &Value, etag: &str) -> Result<Value, DpsError>;
    /// `DELETE /enrollments/{id}` with `If-Match: etag`: deletes the
    /// enrollment only if it is still the one read. A changed one is
    /// `Rejected { status: 412 }`, one already gone `Rejected { status:
    /// 404 }`.
    async fn delete(&self, registration_id: &str, etag: &str) -> Result<(), DpsError>;
    /// The service endpoint, for messages.
    fn endpoint(&self) -> &str;
    /// `POST /enrollments/{id}/attestationmechanism`: the enrollment's
    /// attestation with its symmetric keys, which a GET does not give. A
    /// missing enrollment is `Rejected { status: 404 }`.
    async fn attestation_mechanism(&self, registration_id: &str) -> Result<Value, DpsError>;
    /// `PUT /enrollmentGroups/{id}`: create or replace an enrollment group;
    /// with `if_match`, only if it is still the one read (else `Rejected {
    /// status: 412 }`). The group as stored (with its etag).
    async fn put_enrollment_group(
        &self,
        id: &str,
        group: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, DpsError>;
    /// `GET /enrollmentGroups/{id}`; `None` if DPS has none.
    async fn get_enrollment_group(&self, id: &str) -> Result<Option<Value>, DpsError>;
}

/// The real client.
pub struct HttpDps {
    http: reqwest::Client,
    base: String,
    conn: ConnectionString,
    /// The proxy DPS calls go through, for messages.
    proxy: Option<ProxyUrl>,
}

impl HttpDps {
    /// A client with the built-in trust roots and no proxy.
    pub fn new(base: &str, conn: ConnectionString, timeout: Duration) -> Result<HttpDps, String> {
        HttpDps::with_network(base, conn, timeout, &DpsNet::default())
    }

    /// A client with `net`'s extra trust anchors and proxy.
    pub fn with_network(
        base: &str,
        conn: ConnectionString,
        timeout: Duration,
        net: &DpsNet,
    ) -> Result<HttpDps, String> {
        // ring is the only TLS crypto provider built in; installing it twice
        // is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = super::net::client_builder(net)?
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("provisioning-station/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up HTTPS: {e}"))?;
        Ok(HttpDps {
            http,
            base: base.trim_end_matches('/').to_string(),
            conn,
            proxy: net.proxy.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let id = crate::random::bytes::<16>();
        self.http
            .request(
                method,
                format!("{}{path}?api-version={API_VERSION}", self.base),
            )
            .header("Authorization", self.conn.sas_token(now + 3600))
            .header("Accept", "application/json")
            .header("Request-Id", hex::encode(id))
    }

    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<(u16, Option<String>, Value), DpsError> {
        let resp = rb.send().await.map_err(|e| self.network(e))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.map_err(|e| self.network(e))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect());
        let code = body["errorCode"].as_i64().or_else(|| body["code"].as_i64());
        match status {
            200..=299 => Ok((status, etag, body)),
            429 => Err(DpsError::Throttled { retry_after }),
            401 | 403 => Err(DpsError::Unauthorized { status, message }),
            500..=599 => Err(DpsError::Server {
                status,
                message,
                retry_after,
            }),
            _ => Err(DpsError::Rejected {
                status,
                code,
                message,
            }),
        }
    }

    fn network(&self, e: reqwest::Error) -> DpsError {
        super::net::explain(e, &self.base, self.proxy.as_ref())
    }
}

#[async_trait]
impl DpsClient for HttpDps {
    async fn put(&self, enrollment: &Value) -> Result<Option<String>, DpsError> {
        let id = enrollment["registrationId"].as_str().unwrap_or_default();
        let rb = self
            .request(
                reqwest::Method::PUT,
                &format!("/enrollments/{}", url_encode(id)),
            )
            .json(enrollment);
        let (_, etag, body) = self.send(rb).await?;
        Ok(body["etag"].as_str().map(str::to_string).or(etag))
    }

    async fn bulk_create(&self, enrollments: &[Value]) -> Result<BulkResult, DpsError> {
        let rb = self
            .request(reqwest::Method::POST, "/enrollments")
            .json(&serde_json::json!({ "mode": "create", "enrollments": enrollments }));
        let (_, _, body) = self.send(rb).await?;
        let errors = body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| ItemError {
                        registration_id: e["registrationId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        code: e["errorCode"].as_i64().unwrap_or(0),
                        status: e["errorStatus"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(BulkResult { errors })
    }

    async fn get(&self, registration_id: &str) -> Result<Option<Value>, DpsError> {
        let rb = self.request(
            reqwest::Method::GET,
            &format!("/enrollments/{}", url_encode(registration_id)),
        );
        match self.send(rb).await {
            Ok((_, _, body)) => Ok(Some(body)),
            Err(DpsError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn replace(&self, enrollment: &Value, etag: &str) -> Result<Value, DpsError> {
        let id = enrollment["registrationId"].as_str().unwrap_or_default();
        let rb = self
            .request(
                reqwest::Method::PUT,
                &format!("/enrollments/{}", url_encode(id)),
            )
            .header("If-Match", etag)
            .json(enrollment);
        let (_, _, body) = self.send(rb).await?;
        Ok(body)
    }

    async fn delete(&self, registration_id: &str, etag: &str) -> Result<(), DpsError> {
        let rb = self
            .request(
                reqwest::Method::DELETE,
                &format!("/enrollments/{}", url_encode(registration_id)),
            )
            .header("If-Match", etag);
        self.send(rb).await.map(|_| ())
    }

    fn endpoint(&self) -> &str {
        &self.base
    }

    async fn attestation_mechanism(&self, registration_id: &str) -> Result<Value, DpsError> {
        let rb = self.request(
            reqwest::Method::POST,
            &format!(
                "/enrollments/{}/attestationmechanism",
                url_encode(registration_id)
            ),
        );
        let (_, _, body) = self.send(rb).await?;
        Ok(body)
    }

    async fn put_enrollment_group(
        &self,
        id: &str,
        group: &Value,
        if_match: Option<&str>,
    ) -> Result<Value, DpsError> {
        let mut rb = self
            .request(
                reqwest::Method::PUT,
                &format!("/enrollmentGroups/{}", url_encode(id)),
            )
            .json(group);
        if let Some(etag) = if_match {
            rb = rb.header("If-Match", etag);
        }
        let (_, _, body) = self.send(rb).await?;
        Ok(body)
    }

    async fn get_enrollment_group(&self, id: &str) -> Result<Option<Value>, DpsError> {
        let rb = self.request(
            reqwest::Method::GET,
            &format!("/enrollmentGroups/{}", url_encode(id)),
        );
        match self.send(rb).await {
            Ok((_, _, body)) => Ok(Some(body)),
            Err(DpsError::Rejected { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
