//! The outbox uploader: one background task that sends queued enrollments
//! to DPS in order, in bulk when there is a backlog, then the queued device
//! actions (`actions.rs`), all within the operation budget (`pacer.rs`:
//! the station's own or one shared with the plant), and decides per error
//! whether to wait, park or stop.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{BULK_LIMIT, DpsClient, DpsError};
use crate::store::{Job, Store, blocking, ts};

mod actions;
mod group;
pub mod pacer;

pub use group::GroupEnrollment;
pub use pacer::{Pacer, SharedBudget};

/// What the uploader is doing, for the API and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct OutboxStatus {
    /// False without a connection string: jobs are queued, not sent.
    pub configured: bool,
    pub endpoint: Option<String>,
    /// `online` (the last call was answered), `offline` (DPS or the proxy
    /// unreachable, or the proxy refusing), `tls_error` (the TLS connection
    /// failed: `last_error` names the certificate problem and its fix),
    /// `degraded` (throttled or DPS failing), `unknown` (no call yet) or
    /// `not_configured`.
    pub connectivity: &'static str,
    pub since: String,
    /// Set when sending stopped until a supervisor retries.
    pub paused: Option<String>,
    /// The last failure, cleared by the next success.
    pub last_error: Option<String>,
    /// DPS calls by outcome: ok, network, tls, proxy, throttled, server,
    /// unauthorized, rejected.
    pub calls: std::collections::BTreeMap<&'static str, u64>,
    /// The operation budget calls are paced by: `local` (`[dps]
    /// ops_per_minute`), `shared` (the plant's, `[plant]
    /// dps_ops_per_minute`) or `local (plant database unreachable)`.
    pub budget: &'static str,
    /// When the next call is planned, while the uploader waits (DPS
    /// unreachable: the next probe; throttled or failing: the next try).
    pub next_try: Option<String>,
}

pub type SharedStatus = Arc<Mutex<OutboxStatus>>;

impl OutboxStatus {
    pub fn new(endpoint: Option<String>) -> SharedStatus {
        Arc::new(Mutex::new(OutboxStatus {
            configured: endpoint.is_some(),
            connectivity: if endpoint.is_some() {
                "unknown"
            } else {
                "not_configured"
            },
            endpoint,
            since: ts(OffsetDateTime::now_utc()),
            paused: None,
            last_error: None,
            calls: Default::default(),
            budget: pacer::MODE_LOCAL,
            next_try: None,
        }))
    }
}

pub struct Uploader {
    pub store: Store,
    pub client: Arc<dyn DpsClient>,
    pub status: SharedStatus,
    /// Woken when a board completes or a supervisor retries.
    pub wake: Arc<Notify>,
    /// The local pace, and the fallback while `budget` cannot be reached.
    pub ops_per_minute: u32,
    pub max_backoff: Duration,
    /// While DPS cannot be reached, one cheap call at most this often
    /// (`[dps] probe_ms`); the drain resumes as soon as one is answered.
    pub probe: Duration,
    /// The operation budget shared with the plant's other stations, if any.
    pub budget: Option<Arc<dyn SharedBudget>>,
    /// Symmetric-key attestation: derives the keys put into each
    /// enrollment just before it is sent.
    pub device_keys: Option<Arc<dyn super::DeviceKeys>>,
    /// `[dps] enrollment = "group"`: the line's group, made first.
    pub group: Option<GroupEnrollment>,
}

/// What a failed call means for the work it carried.
enum Verdict {
    /// Try again, after this long if DPS said.
    Retry(Option<Duration>),
    /// Park it; `pause` stops all uploads until a supervisor retries.
    Park { pause: bool },
}

/// The result of handling a batch.
enum Next {
    /// Carry on with the next batch.
    Continue,
    /// Wait before trying again (DPS unreachable, throttling, failing).
    Wait(Option<Duration>),
    /// Stop sending until a supervisor retries.
    Pause(String),
}

impl Uploader {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let pacer =
            Pacer::new(self.ops_per_minute, self.budget.clone()).reporting_to(self.status.clone());
        let mut failures: u32 = 0;
        let mut group_ready = self.group.is_none();
        loop {
            if !group_ready && let Some(group) = &self.group {
                match self.ensure_group(&pacer, group).await {
                    Next::Continue => group_ready = true,
                    other => {
                        failures = self.after(&pacer, other, failures).await;
                        continue;
                    }
                }
            }
            let store = self.store.clone();
            let jobs = match blocking(move || store.due_jobs(BULK_LIMIT as u32)).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!("cannot read the outbox: {e}");
                    self.idle(Duration::from_secs(5)).await;
                    continue;
                }
            };
            let next = if jobs.is_empty() {
                // Enrollments first: a device action waits for its
                // device's enrollment anyway.
                let store = self.store.clone();
                match blocking(move || store.due_device_action()).await {
                    Ok(Some(action)) => self.send_action(&pacer, &action).await,
                    Ok(None) => {
                        self.idle(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("cannot read the device actions: {e}");
                        self.idle(Duration::from_secs(5)).await;
                        continue;
                    }
                }
            } else {
                self.send(&pacer, &jobs).await
            };
            failures = self.after(&pacer, next, failures).await;
        }
    }

    /// Waits as a batch's outcome says; the failures in a row after it.
    async fn after(&self, pacer: &Pacer, next: Next, failures: u32) -> u32 {
        match next {
            Next::Continue => 0,
            Next::Wait(None) if self.unreachable() => {
                // DPS (or the way to it) is down: probe it cheaply until
                // it answers, then drain at once.
                self.probe_until_back(pacer, failures.saturating_add(1))
                    .await
            }
            Next::Wait(retry_after) => {
                let failures = failures.saturating_add(1);
                let wait = retry_after.unwrap_or_else(|| backoff(failures, self.max_backoff));
                tracing::debug!(wait_ms = wait.as_millis() as u64, "DPS upload waits");
                self.set(|s| s.next_try = Some(ts(OffsetDateTime::now_utc() + wait)));
                pacer.hold(wait);
                failures
            }
            Next::Pause(reason) => {
                tracing::error!("DPS uploads stopped until a supervisor retries: {reason}");
                self.set(|s| s.paused = Some(reason));
                self.wait_for_retry().await;
                self.set(|s| s.paused = None);
                0
            }
        }
    }

    /// The last call did not reach DPS (network, proxy or TLS).
    fn unreachable(&self) -> bool {
        self.status
            .lock()
            .map(|s| matches!(s.connectivity, "offline" | "tls_error"))
            .unwrap_or(false)
    }

    /// While DPS cannot be reached: one cheap call (a read of an
    /// enrollment that does not exist) after the backoff, but at most
    /// [`Uploader::probe`] apart, and at once when a supervisor retries.
    /// Returns when DPS answers (the failures in a row: none), or when it
    /// answers with a refusal the outbox handles itself (throttling,
    /// credentials: one failure, so the batch is tried and judged).
    async fn probe_until_back(&self, pacer: &Pacer, mut failures: u32) -> u32 {
        loop {
            let wait = backoff(failures, self.max_backoff).min(jittered(self.probe));
            self.set(|s| s.next_try = Some(ts(OffsetDateTime::now_utc() + wait)));
            if self.sleep_or_retry(wait).await {
                tracing::info!("a supervisor asked to retry: probing DPS now");
            }
            pacer.slot().await;
            self.set(|s| s.next_try = None);
            match self.client.get(PROBE_ID).await {
                Ok(_) => {
                    self.count("ok");
                    tracing::info!("DPS answers again: sending the outbox");
                    return 0;
                }
                Err(e) => {
                    let msg = e.to_string();
                    let _ = self.verdict(&e);
                    self.set(|s| s.last_error = Some(msg.clone()));
                    if !self.unreachable() {
                        return 1;
                    }
                    tracing::debug!("DPS still cannot be reached: {msg}");
                    failures = failures.saturating_add(1);
                }
            }
        }
    }

    /// Sleeps `wait`, or less if a supervisor retries meanwhile (the API,
    /// the supervisor page or `station outbox retry` in another process:
    /// the store counts retries, looked at every [`RETRY_POLL`]). True if
    /// cut short by a retry. A board completing does not cut it short:
    /// while DPS is down, the line's pace sets no pace for probes.
    async fn sleep_or_retry(&self, wait: Duration) -> bool {
        let store = self.store.clone();
        let start = blocking(move || store.retry_count()).await.unwrap_or(0);
        let until = tokio::time::Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(left.min(RETRY_POLL)).await;
            let store = self.store.clone();
            if blocking(move || store.retry_count()).await.unwrap_or(start) != start {
                return true;
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

    /// Counts a call; an answered call means DPS is reachable.
    fn count(&self, outcome: &'static str) {
        self.set(|s| {
            *s.calls.entry(outcome).or_default() += 1;
            match outcome {
                "ok" => {
                    s.connectivity = "online";
                    s.last_error = None;
                    s.next_try = None;
                }
                "network" | "proxy" => s.connectivity = "offline",
                "tls" => s.connectivity = "tls_error",
                "throttled" | "server" => s.connectivity = "degraded",
                _ => s.connectivity = "online",
            }
        });
    }

    /// Puts a symmetric-key device's derived keys into its enrollment.
    fn fill_keys(&self, body: &mut Value) -> Result<(), String> {
        if body["attestation"]["type"] != "symmetricKey" {
            return Ok(());
        }
        let keys = self.device_keys.as_ref().ok_or(
            "a symmetric-key enrollment, but the station has no master key ([symmetric_key]) to derive its keys: configure it and retry",
        )?;
        super::fill_keys(body, keys.as_ref())
            .map_err(|e| format!("the device's keys cannot be derived: {e}: check the master key with `station check`"))
    }

    /// Sends one batch: a single PUT, or a bulk create for a backlog.
    async fn send(&self, pacer: &Pacer, jobs: &[Job]) -> Next {
        let mut bodies = Vec::new();
        let mut sendable = Vec::new();
        for j in jobs {
            match serde_json::from_str::<Value>(&j.body) {
                Ok(mut b) => {
                    if let Err(e) = self.fill_keys(&mut b) {
                        self.park(&[j.id], &e).await;
                        continue;
                    }
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
            // A job tried before may already be in DPS (its answer lost, or
            // the station stopped before recording it): read it back rather
            // than overwrite what someone may have changed since.
            if sendable[0].attempts > 0 {
                return self.reconcile(pacer, &sendable[0], &bodies[0]).await;
            }
            pacer.slot().await;
            if !self.note_sending(&sendable).await {
                return Next::Wait(None);
            }
            let result = self.client.put(&bodies[0]).await;
            return self
                .after_put(pacer, &sendable[0], &bodies[0], result)
                .await;
        }
        pacer.slot().await;
        if !self.note_sending(&sendable).await {
            return Next::Wait(None);
        }
        match self.client.bulk_create(&bodies).await {
            Ok(r) => {
                self.count("ok");
                // Every item DPS took is recorded, whatever happens to the
                // others; once one makes the batch wait or pause, the rest
                // that need another call stay queued for the next round.
                let mut done = Vec::new();
                let mut next = Next::Continue;
                for (job, body) in sendable.iter().zip(&bodies) {
                    // Match DPS's answer by the id that was sent.
                    let sent_id = body["registrationId"].as_str().unwrap_or_default();
                    let error = r
                        .errors
                        .iter()
                        .find(|e| e.registration_id.eq_ignore_ascii_case(sent_id));
                    match error {
                        None => done.push((job.id, None)),
                        Some(_) if !matches!(next, Next::Continue) => {}
                        Some(e) if e.exists() => next = self.reconcile(pacer, job, body).await,
                        // An item DPS could not take for now stays queued.
                        Some(e) if e.code / 1000 == 429 || e.code / 1000 >= 500 => {
                            let msg = format!(
                                "DPS could not take the enrollment for now (error {}: {})",
                                e.code, e.status
                            );
                            self.set(|s| s.last_error = Some(msg));
                            next = Next::Wait(None);
                        }
                        Some(e) => {
                            let refused = DpsError::Rejected {
                                status: 400,
                                code: Some(e.code),
                                message: e.status.clone(),
                            };
                            self.park(&[job.id], &refused.to_string()).await;
                        }
                    }
                }
                self.mark_done(&done).await;
                next
            }
            // A bad item can fail a whole bulk call: send them one by one
            // to find it.
            Err(DpsError::Rejected { .. }) => {
                self.count("rejected");
                for (job, body) in sendable.iter().zip(&bodies) {
                    pacer.slot().await;
                    let result = self.client.put(body).await;
                    match self.after_put(pacer, job, body, result).await {
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
        pacer: &Pacer,
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
                self.reconcile(pacer, job, body).await
            }
            Err(e) => self.failed(std::slice::from_ref(job), e).await,
        }
    }

    /// DPS may have an enrollment for this GUID already: read it. Ours (same
    /// certificate) counts as enrolled, whatever its status now. None, or an
    /// older certificate (a board re-provisioned since), is written with
    /// ours. A newer certificate than ours means this job is outdated (the
    /// device was provisioned again elsewhere): it is parked, not written.
    async fn reconcile(&self, pacer: &Pacer, job: &Job, body: &Value) -> Next {
        pacer.slot().await;
        // The id sent: the GUID, or a TPM's registration id.
        let id = body["registrationId"].as_str().unwrap_or(&job.guid);
        let existing = match self.client.get(id).await {
            Ok(e) => e,
            Err(e) => return self.failed(std::slice::from_ref(job), e).await,
        };
        self.count("ok");
        // A GET does not give symmetric keys: read them to compare.
        let held = match existing.as_ref() {
            Some(_) if body["attestation"]["type"] == "symmetricKey" => {
                pacer.slot().await;
                match self.client.attestation_mechanism(id).await {
                    Ok(theirs) => Some(compare_keys(&theirs, body)),
                    Err(e) => return self.failed(std::slice::from_ref(job), e).await,
                }
            }
            Some(e) => Some(compare_certificates(e, body)),
            None => None,
        };
        match held {
            Some(Held::Same) => {
                let etag = existing
                    .as_ref()
                    .and_then(|e| e["etag"].as_str())
                    .map(str::to_string);
                self.mark_done(&[(job.id, etag)]).await;
                Next::Continue
            }
            Some(Held::Newer) | Some(Held::Unknown) => {
                let why = if body["attestation"]["type"] == "symmetricKey" {
                    "DPS holds other symmetric keys for this device than the station derives for it: the device was enrolled elsewhere, or with another master key; check the device's history before retrying"
                } else {
                    "DPS holds another certificate or endorsement key for this device, newer than this job's or of unknown age: the job is outdated or the device was enrolled elsewhere; check the device's history before retrying"
                };
                self.park(&[job.id], why).await;
                Next::Continue
            }
            None | Some(Held::Older) => {
                pacer.slot().await;
                let result = self.client.put(body).await;
                match result {
                    Ok(etag) => {
                        self.count("ok");
                        self.mark_done(&[(job.id, etag)]).await;
                        Next::Continue
                    }
                    Err(e) => self.failed(std::slice::from_ref(job), e).await,
                }
            }
        }
    }

    /// Counts a failed call and says what it means: wait and try again
    /// (DPS unreachable, throttling, failing), or park the work, pausing
    /// all uploads when the credentials are refused.
    fn verdict(&self, e: &DpsError) -> Verdict {
        match e {
            DpsError::Network(_) => {
                self.count("network");
                Verdict::Retry(None)
            }
            // Retried with the backoff too: fixing `ca_file` or the proxy
            // means a restart, but a proxy's passing trouble heals alone.
            DpsError::Tls(_) => {
                self.count("tls");
                Verdict::Retry(None)
            }
            DpsError::Proxy(_) => {
                self.count("proxy");
                Verdict::Retry(None)
            }
            DpsError::Throttled { retry_after } => {
                self.count("throttled");
                Verdict::Retry(*retry_after)
            }
            DpsError::Server { retry_after, .. } => {
                self.count("server");
                Verdict::Retry(*retry_after)
            }
            DpsError::Unauthorized { .. } => {
                self.count("unauthorized");
                Verdict::Park { pause: true }
            }
            DpsError::Rejected { .. } => {
                self.count("rejected");
                Verdict::Park { pause: false }
            }
        }
    }

    /// A call failed as a whole.
    async fn failed(&self, jobs: &[Job], e: DpsError) -> Next {
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let msg = e.to_string();
        let next = match self.verdict(&e) {
            Verdict::Retry(after) => Next::Wait(after),
            Verdict::Park { pause } => {
                self.park(&ids, &msg).await;
                return if pause {
                    Next::Pause(msg)
                } else {
                    Next::Continue
                };
            }
        };
        tracing::warn!(jobs = ids.len(), "DPS upload failed, will retry: {msg}");
        self.set(|s| s.last_error = Some(msg.clone()));
        let store = self.store.clone();
        let now = OffsetDateTime::now_utc();
        if let Err(e) = blocking(move || store.note_failure(&ids, &msg, now)).await {
            tracing::error!("cannot record the failed upload: {e}");
        }
        next
    }

    /// Records that these jobs are being sent, just before the call: after
    /// a crash, a job that may have reached DPS is read back before it is
    /// sent again. False if it could not be recorded (then nothing is sent).
    async fn note_sending(&self, jobs: &[Job]) -> bool {
        let store = self.store.clone();
        let ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        let now = OffsetDateTime::now_utc();
        match blocking(move || store.note_sending(&ids, now)).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("cannot record the upload before sending it: {e}");
                false
            }
        }
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
        self.set(|s| s.last_error = Some(reason.to_string()));
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
    jittered(base.min(cap)).min(cap)
}

/// `d` ±20 %, so that stations that lost DPS together do not call it
/// together.
fn jittered(d: Duration) -> Duration {
    let r = crate::random::bytes::<2>();
    d.mul_f64(0.8 + 0.4 * f64::from(u16::from_be_bytes(r)) / f64::from(u16::MAX))
}

/// The enrollment a probe reads: none such exists, and DPS answers 404.
const PROBE_ID: &str = "station-probe-not-an-enrollment";

/// How often a waiting uploader looks for a retry asked from another
/// process.
const RETRY_POLL: Duration = Duration::from_millis(500);

/// How the certificate DPS holds compares with ours.
#[derive(Debug, PartialEq, Eq)]
enum Held {
    Same,
    /// Issued before ours: ours replaces it.
    Older,
    /// Issued after ours.
    Newer,
    /// Another certificate whose age DPS did not say.
    Unknown,
}

/// A symmetric-key enrollment is ours when DPS holds our derived primary
/// key (the attestation as `/attestationmechanism` gives it).
fn compare_keys(theirs: &Value, ours: &Value) -> Held {
    let key = |v: &Value| v["symmetricKey"]["primaryKey"].as_str().map(str::to_string);
    match (
        key(theirs),
        ours["attestation"]["symmetricKey"]["primaryKey"].as_str(),
    ) {
        (Some(a), Some(b)) if a == b => Held::Same,
        _ => Held::Unknown,
    }
}

fn compare_certificates(existing: &Value, ours: &Value) -> Held {
    // TPM attestation: the same endorsement key is the same device; DPS
    // says nothing of an endorsement key's age.
    if ours["attestation"]["type"] == "tpm" {
        let ek = |v: &Value| {
            v["attestation"]["tpm"]["endorsementKey"]
                .as_str()
                .map(str::to_string)
        };
        return match (ek(existing), ek(ours)) {
            (Some(a), Some(b)) if a == b => Held::Same,
            _ => Held::Unknown,
        };
    }
    let primary = |v: &Value| v["attestation"]["x509"]["clientCertificates"]["primary"].clone();
    let our_pem = primary(ours)["certificate"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(our_der) = crate::ca::pem_to_der(&our_pem) else {
        return Held::Unknown;
    };
    let theirs = primary(existing);
    let their_der = theirs["certificate"]
        .as_str()
        .and_then(crate::ca::pem_to_der);
    let same = match (theirs["info"]["sha256Thumbprint"].as_str(), &their_der) {
        (Some(sha), _) => sha.eq_ignore_ascii_case(&crate::ca::fingerprint(&our_der)),
        (None, Some(d)) => *d == our_der,
        (None, None) => false,
    };
    if same {
        return Held::Same;
    }
    let ours_from = not_before(&our_der);
    let theirs_from = theirs["info"]["notBeforeUtc"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| t.unix_timestamp())
        .or_else(|| their_der.as_deref().and_then(not_before));
    match (ours_from, theirs_from) {
        (Some(o), Some(t)) if t < o => Held::Older,
        (Some(_), Some(_)) => Held::Newer,
        _ => Held::Unknown,
    }
}

fn not_before(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_before.timestamp())
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

    fn enrollment(pem: &str) -> Value {
        serde_json::json!({"attestation": {"x509": {"clientCertificates": {"primary": {"certificate": pem}}}}})
    }

    fn cert(days_ago: i64) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.not_before = OffsetDateTime::now_utc() - time::Duration::days(days_ago);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn certificates_are_compared_by_identity_then_age() {
        let (old, new) = (cert(10), cert(1));
        assert_eq!(
            compare_certificates(&enrollment(&new), &enrollment(&new)),
            Held::Same
        );
        assert_eq!(
            compare_certificates(&enrollment(&old), &enrollment(&new)),
            Held::Older
        );
        assert_eq!(
            compare_certificates(&enrollment(&new), &enrollment(&old)),
            Held::Newer
        );
        let info_only = serde_json::json!({"attestation": {"x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "AB"}}}}}});
        assert_eq!(
            compare_certificates(&info_only, &enrollment(&new)),
            Held::Unknown
        );
    }
}
