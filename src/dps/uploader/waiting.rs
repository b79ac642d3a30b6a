//! How the uploader waits after a batch: a doubling backoff with jitter,
//! DPS's own `Retry-After`, or, while DPS cannot be reached, cheap probes
//! at most `[dps] probe_ms` apart; and how a supervisor's retry (from the
//! API, the supervisor page or another process) cuts the wait short.

use std::time::Duration;

use time::OffsetDateTime;

use super::{Next, Pacer, Uploader};
use crate::store::{blocking, ts};

impl Uploader {
    /// Waits as a batch's outcome says; the failures in a row after it.
    pub(super) async fn after(&self, pacer: &Pacer, next: Next, failures: u32) -> u32 {
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
    pub(super) fn unreachable(&self) -> bool {
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
    pub(super) async fn probe_until_back(&self, pacer: &Pacer, mut failures: u32) -> u32 {
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
    pub(super) async fn sleep_or_retry(&self, wait: Duration) -> bool {
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
    pub(super) async fn idle(&self, max: Duration) {
        tokio::select! {
            _ = self.wake.notified() => {}
            _ = tokio::time::sleep(max) => {}
        }
    }

    /// Waits until a supervisor retries parked jobs (here or from another
    /// process: the store counts retries).
    pub(super) async fn wait_for_retry(&self) {
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
