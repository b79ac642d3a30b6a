//! The outbox uploader: one background task that sends queued enrollments
//! to DPS in order, in bulk when there is a backlog, within the operation
//! budget, and decides per error whether to wait, park or stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{BULK_LIMIT, DpsClient, DpsError};
use crate::store::{Job, Store, StoreError, ts};

/// What the uploader is doing, for the API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    /// False without a connection string: jobs are queued, not sent.
    pub configured: bool,
    pub endpoint: Option<String>,
    /// `online`, `offline`, `degraded` (throttled or DPS failing) or
    /// `not_configured`.
    pub connectivity: &'static str,
    pub since: String,
    /// Set when sending stopped until a supervisor retries.
    pub paused: Option<String>,
    pub last_error: Option<String>,
    /// DPS calls by outcome: ok, network, throttled, server, unauthorized,
    /// rejected.
    pub calls: std::collections::BTreeMap<&'static str, u64>,
}

pub type SharedStatus = Arc<Mutex<OutboxStatus>>;

impl OutboxStatus {
    pub fn new(endpoint: Option<String>) -> SharedStatus {
        Arc::new(Mutex::new(OutboxStatus {
            configured: endpoint.is_some(),
            connectivity: if endpoint.is_some() {
                "offline"
            } else {
                "not_configured"
            },
            endpoint,
            since: ts(OffsetDateTime::now_utc()),
            paused: None,
            last_error: None,
            calls: Default::default(),
        }))
    }
}

pub struct Uploader {
    pub store: Store,
    pub client: Arc<dyn DpsClient>,
    pub status: SharedStatus,
    /// Woken when a board completes or a supervisor retries.
    pub wake: Arc<Notify>,
    pub ops_per_minute: u32,
    pub max_backoff: Duration,
}

/// The result of one DPS call for a batch.
enum Next {
    /// Carry on with the next batch.
    Continue,
    /// Wait before trying again (DPS unreachable, throttling, failing).
    Wait(Option<Duration>),
    /// Stop sending until a supervisor retries.
    Pause(String),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Poisoned(e.to_string())))
}

impl Uploader {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let pace = Duration::from_secs_f64(60.0 / f64::from(self.ops_per_minute.max(1)));
        let mut next_call = Instant::now();
        let mut failures: u32 = 0;
        loop {
            let store = self.store.clone();
            let jobs = match blocking(move || store.due_jobs(BULK_LIMIT as u32)).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!("cannot read the outbox: {e}");
                    self.idle(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                self.idle(Duration::from_secs(1)).await;
                continue;
            }
            // The operation budget: one call per `pace`, never a burst.
            tokio::time::sleep_until(next_call).await;
            next_call = Instant::now().max(next_call) + pace;
            match self.send(&jobs).await {
                Next::Continue => {
                    failures = 0;
                    self.set(|s| s.connectivity = "online");
                }
                Next::Wait(retry_after) => {
                    failures = failures.saturating_add(1);
                    let wait = retry_after.unwrap_or_else(|| backoff(failures, self.max_backoff));
                    tracing::debug!(wait_ms = wait.as_millis() as u64, "DPS upload waits");
                    next_call = next_call.max(Instant::now() + wait);
                }
                Next::Pause(reason) => {
                    tracing::error!("DPS uploads stopped until a supervisor retries: {reason}");
                    self.set(|s| s.paused = Some(reason));
                    self.wait_for_retry().await;
                    self.set(|s| s.paused = None);
                    failures = 0;
                }
            }
        }
    }

    /// Waits for new work, a retry, or `max`.
    async fn idle(&self, max: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(max) => {}
        }
    }

    /// Waits until a supervisor retries parked jobs (here or from another
    /// process: the store counts retries).
    async fn wait_for_retry(&self) {
        let store = self.store.clone();
        let start = blocking(move || store.retry_count()).await.unwrap_or(0);
        loop {
            self.idle(Duration::from_secs(2)).await;
            let store = self.store.clone();
            if blocking(move || store.retry_count()).await.unwrap_or(start) != start {
                return;
            }
        }
    }

    fn set(&self, f: impl FnOnce(&mut OutboxStatus)) {
        if let Ok(mut s) = self.status.lock() {
            let before = (s.connectivity, s.paused.clone());
            f(&mut s);
            if (s.connectivity, s.paused.clone()) != before {
                s.since = ts(OffsetDateTime::now_utc());
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        if let Ok(mut s) = self.status.lock() {
            *s.calls.entry(outcome).or_default() += 1;
        }
    }

    /// Sends one batch: a single PUT, or a bulk create for a backlog.
    async fn send(&self, jobs: &[Job]) -> Next {
        let mut bodies = Vec::new();
        let mut sendable = Vec::new();
        for j in jobs {
            match serde_json::from_str::<Value>(&j.body) {
                Ok(b) => {
                    bodies.push(b);
                    sendable.push(j.clone());
                }
                Err(e) => {
                    self.park(
                        &[j.id],
                        &format!("the queued enrollment is unreadable: {e}"),
                    )
                    .await
                }
            }
        }
        if sendable.is_empty() {
            return Next::Continue;
        }
        if sendable.len() == 1 {
            let result = self.client.put(&bodies[0]).await;
            return self.after_put(&sendable[0], &bodies[0], result).await;
        }
        let result = self.client.bulk_create(&bodies).await;
        match result {
            Ok(r) => {
                self.count("ok");
                let mut done = Vec::new();
                for (job, body) in sendable.iter().zip(&bodies) {
                    // Match DPS's answer by the id that was sent.
                    let sent_id = body["registrationId"].as_str().unwrap_or_default();
                    match r
                        .errors
                        .iter()
                        .find(|e| e.registration_id.eq_ignore_ascii_case(sent_id))
                    {
                        None => done.push((job.id, None)),
                        Some(e) if e.exists() => {
                            if let Next::Wait(w) = self.reconcile(job, body).await {
                                self.mark_done(&done).await;
                                return Next::Wait(w);
                            }
                        }
                        Some(e) => {
                            self.park(
                                &[job.id],
                                &format!(
                                    "DPS refused the enrollment (error {}: {})",
                                    e.code, e.status
                                ),
                            )
                            .await
                        }
                    }
                }
                self.mark_done(&done).await;
                Next::Continue
            }
            // A bad item can fail a whole bulk call: send them one by one
            // to find it.
            Err(DpsError::Rejected { .. }) => {
                self.count("rejected");
                for (job, body) in sendable.iter().zip(&bodies) {
                    let result = self.client.put(body).await;
                    match self.after_put(job, body, result).await {
                        Next::Continue => {}
                        other => return other,
                    }
                }
                Next::Continue
            }
            Err(e) => self.failed(&sendable, e).await,
        }
    }

    async fn after_put(
        &self,
        job: &Job,
        body: &Value,
        result: Result<Option<String>, DpsError>,
    ) -> Next {
        match result {
            Ok(etag) => {
                self.count("ok");
                self.mark_done(&[(job.id, etag)]).await;
                Next::Continue
            }
            Err(DpsError::Rejected {
                status: 409 | 412, ..
            }) => {
                self.count("rejected");
                self.reconcile(job, body).await
            }
            Err(DpsError::Rejected {
                status,
                code,
                message,
            }) => {
                self.count("rejected");
                let e = DpsError::Rejected {
                    status,
                    code,
                    message,
                };
                self.park(&[job.id], &e.to_string()).await;
                Next::Continue
            }
            Err(e) => self.failed(std::slice::from_ref(job), e).await,
        }
    }

    /// DPS has an enrollment for this GUID already: read it. Ours (same
    /// certificate) counts as enrolled, whatever its status now; another
    /// certificate is replaced by ours, which is the newer one this station
    /// issued.
    async fn reconcile(&self, job: &Job, body: &Value) -> Next {
        match self.client.get(&job.guid).await {
            Ok(Some(existing)) if same_certificate(&existing, body) => {
                self.count("ok");
                let etag = existing["etag"].as_str().map(str::to_string);
                self.mark_done(&[(job.id, etag)]).await;
                Next::Continue
            }
            Ok(_) => {
                self.count("ok");
                let result = self.client.put(body).await;
                match result {
                    Ok(etag) => {
                        self.count("ok");
                        self.mark_done(&[(job.id, etag)]).await;
                        Next::Continue
                    }
                    Err(DpsError::Rejected {
                        status,
                        code,
                        message,
                    }) => {
                        self.count("rejected");
                        let e = DpsError::Rejected {
                            status,
                            code,
                            message,
                        };
                        self.park(&[job.id], &e.to_string()).await;
                        Next::Continue
                    }
                    Err(e) => self.failed(std::slice::from_ref(job), e).await,
                }
            }
            Err(e) => self.failed(std::slice::from_ref(job), e).await,
        }
    }

    /// A call failed as a whole.
    async fn failed(&self, jobs: &[Job], e: DpsError) -> Next {
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let msg = e.to_string();
        let (outcome, next) = match &e {
            DpsError::Network(_) => {
                self.set(|s| s.connectivity = "offline");
                ("network", Next::Wait(None))
            }
            DpsError::Throttled { retry_after } => {
                self.set(|s| s.connectivity = "degraded");
                ("throttled", Next::Wait(*retry_after))
            }
            DpsError::Server { retry_after, .. } => {
                self.set(|s| s.connectivity = "degraded");
                ("server", Next::Wait(*retry_after))
            }
            DpsError::Unauthorized { .. } => {
                self.park(&ids, &msg).await;
                self.count("unauthorized");
                return Next::Pause(msg);
            }
            DpsError::Rejected { .. } => {
                self.park(&ids, &msg).await;
                self.count("rejected");
                return Next::Continue;
            }
        };
        self.count(outcome);
        tracing::warn!(jobs = ids.len(), "DPS upload failed, will retry: {msg}");
        self.set(|s| s.last_error = Some(msg.clone()));
        let store = self.store.clone();
        let now = OffsetDateTime::now_utc();
        if let Err(e) = blocking(move || store.note_attempt(&ids, &msg, now)).await {
            tracing::error!("cannot record the failed upload: {e}");
        }
        next
    }

    async fn mark_done(&self, done: &[(i64, Option<String>)]) {
        if done.is_empty() {
            return;
        }
        let store = self.store.clone();
        let done = done.to_vec();
        let now = OffsetDateTime::now_utc();
        let n = done.len();
        match blocking(move || store.mark_enrolled(&done, now)).await {
            Ok(()) => tracing::info!(count = n, "enrolled in DPS"),
            Err(e) => {
                tracing::error!("DPS took {n} enrollments but the outbox could not record it: {e}")
            }
        }
    }

    async fn park(&self, ids: &[i64], reason: &str) {
        tracing::error!(
            jobs = ids.len(),
            "DPS upload parked for a supervisor: {reason}"
        );
        let store = self.store.clone();
        let (ids, reason) = (ids.to_vec(), reason.to_string());
        let now = OffsetDateTime::now_utc();
        if let Err(e) = blocking(move || store.park(&ids, &reason, now)).await {
            tracing::error!("cannot record the parked upload: {e}");
        }
    }
}

/// Exponential backoff from 1 s, doubling, capped, with ±20 % jitter.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let base = base.min(cap);
    let r = crate::random::bytes::<2>();
    let jitter = 0.8 + 0.4 * f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX);
    base.mul_f64(jitter).min(cap)
}

/// True if the enrollment DPS holds carries the same certificate as ours.
fn same_certificate(existing: &Value, ours: &Value) -> bool {
    let primary = |v: &Value| v["attestation"]["x509"]["clientCertificates"]["primary"].clone();
    let our_pem = primary(ours)["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(der) = crate::ca::pem_to_der(&our_pem) else {
        return false;
    };
    let ours_sha = crate::ca::fingerprint(&der);
    let theirs = primary(existing);
    if let Some(sha) = theirs["info"]["sha256Thumbprint"].as_str() {
        return sha.eq_ignore_ascii_case(&ours_sha);
    }
    theirs["certificate"]
        .as_str()
        .and_then(crate::ca::pem_to_der)
        .is_some_and(|d| d == der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cap = Duration::from_secs(60);
        let b1 = backoff(1, cap);
        assert!(
            b1 >= Duration::from_millis(800) && b1 <= Duration::from_millis(1200),
            "{b1:?}"
        );
        let b4 = backoff(4, cap);
        assert!(
            b4 >= Duration::from_millis(6400) && b4 <= Duration::from_millis(9600),
            "{b4:?}"
        );
        assert!(backoff(30, cap) <= cap);
    }
}
