//! The outbox uploader: one background task that sends queued enrollments
//! to DPS in order, in bulk when there is a backlog, then the queued device
//! actions (`actions.rs`), all within the operation budget (`pacer.rs`:
//! the station's own or one shared with the plant), and decides per error
//! whether to wait (`waiting.rs`), park or stop; an enrollment DPS already
//! holds is compared with ours (`reconcile.rs`).

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
mod reconcile;
mod waiting;

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
