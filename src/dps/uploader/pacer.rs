//! The DPS operation budget as the uploader sees it: every DPS call waits
//! for its slot from the [`Pacer`]. Alone, a station paces itself at
//! `[dps] ops_per_minute`. With a [`SharedBudget`] (the plant's, shared by
//! every station that talks to the same DPS instance) each slot is taken
//! from it; while it cannot be reached the station paces itself again,
//! and tries the shared budget now and then in the background, so a plant
//! database that is down or slow never slows the station.
//!
//! Knows nothing of where a shared budget lives (the plant database is
//! `crate::plant::budget`'s business).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::SharedStatus;

/// Longest wait for the shared budget's answer before a slot is paced
/// locally.
pub const TAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a station that fell back tries the shared budget again.
pub const RETRY_SHARED: Duration = Duration::from_secs(5);

/// The budget shown in the outbox status: paced alone, no shared budget.
pub const MODE_LOCAL: &str = "local";
/// Drawing from the shared budget.
pub const MODE_SHARED: &str = "shared";
/// A shared budget is configured but cannot be reached: paced alone.
pub const MODE_FALLBACK: &str = "local (plant database unreachable)";

/// An operation budget shared with other stations.
#[async_trait]
pub trait SharedBudget: Send + Sync {
    /// Takes one operation. `Ok(wait)`: the operation is booked; make the
    /// call `wait` from now (zero: now). `Err(reason)`: the budget cannot
    /// be reached now, in words an operator can act on. Should answer well
    /// within 2 s (`TAKE_TIMEOUT`); the pacer stops waiting after it.
    async fn take(&self) -> Result<Duration, String>;

    /// Which budget this is, for logs (never a password).
    fn describe(&self) -> String;
}

/// Hands out DPS call slots within the operation budget.
pub struct Pacer {
    /// The local pace: one call per `pace` (`[dps] ops_per_minute`).
    pace: Duration,
    local: Mutex<Local>,
    /// The shared budget, when the station has one.
    shared: Option<Shared>,
    /// Where the mode is shown (`OutboxStatus::budget`).
    status: Option<SharedStatus>,
    /// [`TAKE_TIMEOUT`] and [`RETRY_SHARED`] (shorter in tests).
    take_timeout: Duration,
    retry_shared: Duration,
}

/// The local schedule. It keeps its own clock (a timer wakes a little
/// late; re-anchoring on "now" would lose that much every call) unless it
/// fell more than a pace behind, after idling or while the shared budget
/// was used: then no burst follows.
struct Local {
    next: Instant,
    /// No call before this (DPS asked for a pause, or failed).
    held: Instant,
}

struct Shared {
    budget: Arc<dyn SharedBudget>,
    /// `None` while the shared budget is used.
    fallback: Mutex<Option<Fallback>>,
}

/// Paced locally because the shared budget could not be reached.
struct Fallback {
    /// When to try the shared budget again.
    probe_at: Instant,
    /// A try under way (its slot, if it got one, is not used).
    probe: Option<JoinHandle<Result<Duration, String>>>,
}

/// What one slot does with the shared budget.
enum Turn {
    /// Take the slot from the shared budget.
    Take,
    /// Pace locally.
    Local,
    /// A background try has answered.
    Probed(JoinHandle<Result<Duration, String>>),
}

impl Pacer {
    /// Paces at `ops_per_minute`, or draws from `budget` when given.
    pub fn new(ops_per_minute: u32, budget: Option<Arc<dyn SharedBudget>>) -> Pacer {
        let now = Instant::now();
        Pacer {
            pace: Duration::from_secs_f64(60.0 / f64::from(ops_per_minute.max(1))),
            local: Mutex::new(Local {
                next: now,
                held: now,
            }),
            shared: budget.map(|budget| Shared {
                budget,
                fallback: Mutex::new(None),
            }),
            status: None,
            take_timeout: TAKE_TIMEOUT,
            retry_shared: RETRY_SHARED,
        }
    }

    /// Shows the mode in `status` (now, and whenever it changes).
    pub fn reporting_to(mut self, status: SharedStatus) -> Pacer {
        self.status = Some(status);
        self.publish();
        self
    }

    /// [`MODE_LOCAL`], [`MODE_SHARED`] or [`MODE_FALLBACK`].
    pub fn mode(&self) -> &'static str {
        match &self.shared {
            None => MODE_LOCAL,
            Some(s) => match s.fallback.lock() {
                Ok(f) if f.is_none() => MODE_SHARED,
                _ => MODE_FALLBACK,
            },
        }
    }

    /// Waits for the next call's slot.
    pub async fn slot(&self) {
        let Some(shared) = &self.shared else {
            return self.local_slot().await;
        };
        // A token taken now would be wasted while DPS asked for a pause.
        tokio::time::sleep_until(self.held()).await;
        match self.turn(shared) {
            Turn::Take => self.take(shared).await,
            Turn::Local => self.local_slot().await,
            Turn::Probed(probe) => match probe.await {
                Ok(Ok(_)) => {
                    tracing::info!(
                        "the shared DPS budget ({}) is reachable again: pacing with it",
                        shared.budget.describe()
                    );
                    self.set_fallback(shared, None);
                    // The try's slot may be long past: used now, it could
                    // crowd the slots booked since. Book a fresh one.
                    self.take(shared).await
                }
                Ok(Err(reason)) => {
                    tracing::debug!("the shared DPS budget is still unreachable: {reason}");
                    self.set_fallback(shared, Some(Instant::now() + self.retry_shared));
                    self.local_slot().await
                }
                Err(e) => {
                    tracing::debug!("the shared DPS budget's try ended: {e}");
                    self.set_fallback(shared, Some(Instant::now() + self.retry_shared));
                    self.local_slot().await
                }
            },
        }
    }

    /// A slot from the shared budget, or, when it cannot be reached, the
    /// local one (and local pacing until a try in the background reaches
    /// it).
    async fn take(&self, shared: &Shared) {
        let reason = match tokio::time::timeout(self.take_timeout, shared.budget.take()).await {
            Ok(Ok(wait)) => return tokio::time::sleep(wait).await,
            Ok(Err(reason)) => reason,
            Err(_) => no_answer(self.take_timeout),
        };
        tracing::warn!(
            "the shared DPS budget ({}) cannot be reached, pacing with [dps] ops_per_minute until it can: {reason}",
            shared.budget.describe()
        );
        self.set_fallback(shared, Some(Instant::now() + self.retry_shared));
        self.local_slot().await
    }

    /// No call before `wait` from now.
    pub fn hold(&self, wait: Duration) {
        if let Ok(mut l) = self.local.lock() {
            l.held = l.held.max(Instant::now() + wait);
        }
    }

    fn held(&self) -> Instant {
        self.local
            .lock()
            .map(|l| l.held)
            .unwrap_or_else(|_| Instant::now())
    }

    async fn local_slot(&self) {
        let at = match self.local.lock() {
            Ok(mut l) => {
                let now = Instant::now();
                let at = if now.saturating_duration_since(l.next) > self.pace {
                    now
                } else {
                    l.next
                };
                let at = at.max(l.held);
                l.next = at + self.pace;
                at
            }
            Err(_) => Instant::now() + self.pace,
        };
        tokio::time::sleep_until(at).await;
    }

    /// Decides how this slot is paced; starts a background try of the
    /// shared budget when one is due (it answers a later slot).
    fn turn(&self, shared: &Shared) -> Turn {
        let Ok(mut fallback) = shared.fallback.lock() else {
            return Turn::Local;
        };
        let Some(f) = fallback.as_mut() else {
            return Turn::Take;
        };
        match f.probe.take() {
            Some(probe) if probe.is_finished() => Turn::Probed(probe),
            Some(probe) => {
                f.probe = Some(probe);
                Turn::Local
            }
            None if Instant::now() >= f.probe_at => {
                let budget = shared.budget.clone();
                let limit = self.take_timeout;
                f.probe = Some(tokio::spawn(async move {
                    match tokio::time::timeout(limit, budget.take()).await {
                        Ok(answer) => answer,
                        Err(_) => Err(no_answer(limit)),
                    }
                }));
                Turn::Local
            }
            None => Turn::Local,
        }
    }

    /// `Some(when)`: fall back (or stay), next try at `when`; `None`: use
    /// the shared budget.
    fn set_fallback(&self, shared: &Shared, probe_at: Option<Instant>) {
        if let Ok(mut f) = shared.fallback.lock() {
            *f = probe_at.map(|probe_at| Fallback {
                probe_at,
                probe: None,
            });
        }
        self.publish();
    }

    fn publish(&self) {
        if let Some(status) = &self.status {
            let mode = self.mode();
            if let Ok(mut s) = status.lock() {
                s.budget = mode;
            }
        }
    }
}

fn no_answer(limit: Duration) -> String {
    format!("no answer in {:.1} s", limit.as_secs_f64())
}

impl Drop for Pacer {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared
            && let Ok(mut f) = shared.fallback.lock()
            && let Some(probe) = f.as_mut().and_then(|f| f.probe.take())
        {
            probe.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Real time, scaled down (the crate's tokio has no paused clock), with
    //! bounds loose enough for a loaded machine.

    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A scripted shared budget: answers from the script in order, then
    /// the last answer again; `None` never answers.
    struct Scripted {
        answers: Mutex<VecDeque<Option<Result<Duration, String>>>>,
        last: Mutex<Option<Result<Duration, String>>>,
        takes: AtomicU32,
    }

    impl Scripted {
        fn new(answers: Vec<Option<Result<Duration, String>>>) -> Arc<Scripted> {
            Arc::new(Scripted {
                answers: Mutex::new(answers.into()),
                last: Mutex::new(None),
                takes: AtomicU32::new(0),
            })
        }

        /// From now on every take answers `a`.
        fn always(&self, a: Option<Result<Duration, String>>) {
            self.answers.lock().unwrap().clear();
            *self.last.lock().unwrap() = a;
        }

        fn takes(&self) -> u32 {
            self.takes.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl SharedBudget for Scripted {
        async fn take(&self) -> Result<Duration, String> {
            self.takes.fetch_add(1, Ordering::SeqCst);
            let answer = {
                let mut answers = self.answers.lock().unwrap();
                let mut last = self.last.lock().unwrap();
                if let Some(a) = answers.pop_front() {
                    *last = a.clone();
                }
                last.clone()
            };
            match answer {
                Some(a) => a,
                None => std::future::pending().await,
            }
        }

        fn describe(&self) -> String {
            "the scripted budget".into()
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A pacer with the shared budget's timings scaled down.
    fn quick(ops_per_minute: u32, budget: Arc<Scripted>) -> Pacer {
        let mut p = Pacer::new(ops_per_minute, Some(budget));
        p.take_timeout = ms(200);
        p.retry_shared = ms(200);
        p
    }

    #[tokio::test]
    async fn alone_it_paces_at_ops_per_minute_without_a_burst_after_idling() {
        // 100 ms a call.
        let pacer = Pacer::new(600, None);
        let start = Instant::now();
        for _ in 0..5 {
            pacer.slot().await;
        }
        let took = start.elapsed();
        assert!(took >= ms(400) && took < ms(2_000), "{took:?}");
        assert_eq!(pacer.mode(), MODE_LOCAL);
        tokio::time::sleep(ms(500)).await;
        let idle = Instant::now();
        pacer.slot().await;
        pacer.slot().await;
        assert!(idle.elapsed() >= ms(100), "a burst after idling");
        pacer.hold(ms(300));
        let held = Instant::now();
        pacer.slot().await;
        assert!(held.elapsed() >= ms(300));
    }

    #[tokio::test]
    async fn a_shared_budget_sets_the_pace_and_holds_still_apply() {
        let budget = Scripted::new(vec![Some(Ok(ms(0))), Some(Ok(ms(100)))]);
        let status = crate::dps::OutboxStatus::new(None);
        // Locally one call a minute: the shared budget's waits are what count.
        let pacer = quick(1, budget.clone()).reporting_to(status.clone());
        assert_eq!(status.lock().unwrap().budget, MODE_SHARED);
        let start = Instant::now();
        for _ in 0..4 {
            pacer.slot().await;
        }
        let took = start.elapsed();
        assert!(took >= ms(300) && took < ms(5_000), "{took:?}");
        assert_eq!(budget.takes(), 4);
        pacer.hold(ms(300));
        let held = Instant::now();
        pacer.slot().await;
        assert!(held.elapsed() >= ms(400), "{:?}", held.elapsed());
        assert_eq!(budget.takes(), 5);
        assert_eq!(pacer.mode(), MODE_SHARED);
    }

    #[tokio::test]
    async fn an_unreachable_budget_falls_back_without_slowing_and_returns() {
        let budget = Scripted::new(vec![Some(Ok(ms(0)))]);
        let status = crate::dps::OutboxStatus::new(None);
        // 20 ms a call locally.
        let pacer = quick(3_000, budget.clone()).reporting_to(status.clone());
        pacer.slot().await;
        assert_eq!(pacer.mode(), MODE_SHARED);

        budget.always(Some(Err("the plant database is down".into())));
        let down = Instant::now();
        pacer.slot().await;
        assert_eq!(pacer.mode(), MODE_FALLBACK);
        assert_eq!(status.lock().unwrap().budget, MODE_FALLBACK);
        assert_eq!(budget.takes(), 2);
        for _ in 0..49 {
            pacer.slot().await;
        }
        let took = down.elapsed();
        assert!(took >= ms(900) && took < ms(5_000), "{took:?}");
        // Tried again every 200 ms or more, in the background: not once a
        // call.
        let tries = budget.takes() - 2;
        let most = (took.as_millis() / 200) as u32 + 1;
        assert!((1..=most).contains(&tries), "{tries} tries in {took:?}");
        assert_eq!(pacer.mode(), MODE_FALLBACK);

        // Back: the shared budget is used again after the next try.
        budget.always(Some(Ok(ms(10))));
        let up = Instant::now();
        while pacer.mode() != MODE_SHARED {
            pacer.slot().await;
            assert!(up.elapsed() < ms(5_000), "never went back");
        }
        assert_eq!(status.lock().unwrap().budget, MODE_SHARED);
        let before = budget.takes();
        pacer.slot().await;
        assert_eq!(budget.takes(), before + 1);
    }

    #[tokio::test]
    async fn a_budget_that_never_answers_costs_one_timeout_then_nothing() {
        let budget = Scripted::new(vec![None]);
        let pacer = quick(3_000, budget.clone());
        let start = Instant::now();
        pacer.slot().await;
        let first = start.elapsed();
        assert!(first >= ms(200) && first < ms(2_000), "{first:?}");
        assert_eq!(pacer.mode(), MODE_FALLBACK);
        let after = Instant::now();
        for _ in 0..50 {
            pacer.slot().await;
        }
        // 50 local slots of 20 ms; a 200 ms timeout each would be 10 s.
        let took = after.elapsed();
        assert!(took >= ms(900) && took < ms(5_000), "{took:?}");
        assert!(budget.takes() >= 2, "tried again in the background");
        assert_eq!(pacer.mode(), MODE_FALLBACK);
    }
}
