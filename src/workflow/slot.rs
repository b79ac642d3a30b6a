//! The slot driver: connect, resynchronise, wait for events, run the core.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tracing::Instrument;

use super::view::{SlotBoard, show_state};
use crate::ca::{CaSigner, CheckedCsr, issue_leaf};
use crate::core::noise::{LineHealth, LineNoise};
use crate::core::{self, Action, Command, Event, Failure, IssuedCert, Output, Review, SlotState};
use crate::dps::EnrollmentTemplate;
use crate::ids::SlotId;
use crate::jig::protocol::{self, AnswerError, JigStatus, Request};
use crate::jig::{JigEvent, JigLink, LineCounters, LinkError};
use crate::store::{BoardId, NewCertificate, StepLine, Store, StoreError, blocking};

/// What an operator asks of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotCommand {
    /// Provision the board in the jig again (after a failure, or one found
    /// finished at start-up).
    Retry,
    /// Stop the board being provisioned, before its next step.
    Abort,
}

/// Opens (or reopens) the slot's jig link.
pub type LinkOpener = Box<dyn FnMut() -> Result<Box<dyn JigLink>, LinkError> + Send>;

/// What a slot needs to know besides its link.
#[derive(Clone)]
pub struct SlotSettings {
    pub station_id: String,
    pub slot: SlotId,
    pub leaf_validity_days: u32,
    /// STATUS poll interval while idle.
    pub poll: Duration,
    /// Wait before reopening a failed link.
    pub reconnect: Duration,
    /// The largest piece of a certificate chain sent to or read from a
    /// board that takes pieces (`[jig] piece_bytes`).
    pub piece_bytes: usize,
}

pub struct SlotDriver {
    pub settings: SlotSettings,
    pub store: Store,
    pub ca: Arc<dyn CaSigner>,
    pub view: SlotBoard,
    /// Builds the DPS enrollment queued with each completed board.
    pub enrollment: Arc<EnrollmentTemplate>,
    /// Wakes the DPS uploader when a job is queued.
    pub uploads: Arc<tokio::sync::Notify>,
    /// Wakes the label worker when a board's label is queued.
    pub labels: Arc<tokio::sync::Notify>,
    /// The work order in production, stamped on each new board.
    pub work_order: Arc<std::sync::RwLock<Option<String>>>,
    /// Where the slot's boards get their keys.
    pub keys: KeySource,
    /// Where the boards register (`None`: `[dps] id_scope` is not set, and
    /// the boards get no provisioning settings).
    pub registration: Option<Registration>,
    /// Symmetric-key attestation: each device's key, derived from the
    /// master key (`None` for X.509 and TPM).
    pub device_keys: Option<Arc<dyn crate::dps::DeviceKeys>>,
}

fn store_failure(e: &StoreError) -> Failure {
    Failure::new(
        "store_failed",
        format!("{e}; the board was not given anything unrecorded"),
    )
}

fn link_failure(e: &LinkError) -> Failure {
    Failure::new(e.code(), e.to_string())
}

/// An answer that is well framed but unusable, named by the request it
/// answers.
fn answer_failure(request: &str, e: &AnswerError) -> Failure {
    Failure::new(
        "bad_answer",
        format!(
            "the board's answer to {request} is not usable: {}: the board firmware may be faulty",
            e.reason
        ),
    )
}

/// The state of one board visit, as the driver tracks it beside the core.
struct Visit {
    board: Option<BoardId>,
    open_step: Option<i64>,
    guid: Option<String>,
    /// The board's TPM, once opened (TPM slots).
    tpm: Option<Arc<dyn crate::tpm::BoardTpm>>,
    /// The capabilities the board announced in its HELLO answer.
    caps: Vec<String>,
    /// The slot's line figures, kept across links.
    noise: LineNoise,
    /// The link's counters when the running step began, and when the
    /// board's visit began.
    step_base: LineCounters,
    board_base: Option<LineCounters>,
    /// Damaged frames of this link already counted into `noise`.
    seen_damaged: u64,
}

impl Visit {
    fn takes(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

impl SlotDriver {
    /// Runs the slot until the task is aborted: the link is reopened after
    /// it fails.
    pub async fn run(
        self,
        mut open: LinkOpener,
        mut commands: tokio::sync::mpsc::Receiver<SlotCommand>,
    ) {
        let slot = self.settings.slot;
        let span = tracing::info_span!("slot", slot = slot.0);
        async move {
            let mut logged_down = None::<String>;
            let mut noise = LineNoise::default();
            loop {
                match open() {
                    Ok(mut link) => {
                        logged_down = None;
                        let device = link.device().to_string();
                        tracing::info!(device, "jig connected");
                        self.view.update(slot, |v| {
                            v.link = "connected";
                            v.link_error = None;
                        });
                        let e = self.drive(link.as_mut(), &mut commands, &mut noise).await;
                        tracing::warn!(device, "jig link lost: {e}");
                        self.view.update(slot, |v| {
                            v.link = "disconnected";
                            v.link_error = Some(e.to_string());
                        });
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if logged_down.as_deref() != Some(msg.as_str()) {
                            tracing::warn!(
                                "cannot open the jig: {msg}; retrying every {:?}",
                                self.settings.reconnect
                            );
                            logged_down = Some(msg.clone());
                        }
                        self.view.update(slot, |v| {
                            v.link = "disconnected";
                            v.link_error = Some(msg);
                        });
                    }
                }
                tokio::time::sleep(self.settings.reconnect).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Drives the slot over one link until the link fails; `noise` is the
    /// slot's line figures, which outlive the link.
    async fn drive(
        &self,
        link: &mut dyn JigLink,
        commands: &mut tokio::sync::mpsc::Receiver<SlotCommand>,
        noise: &mut LineNoise,
    ) -> LinkError {
        let mut visit = Visit {
            board: None,
            open_step: None,
            guid: None,
            tpm: None,
            caps: Vec::new(),
            noise: std::mem::take(noise),
            step_base: LineCounters::default(),
            board_base: None,
            seen_damaged: 0,
        };
        let e = self.drive_link(link, commands, &mut visit).await;
        *noise = std::mem::take(&mut visit.noise);
        e
    }

    async fn drive_link(
        &self,
        link: &mut dyn JigLink,
        commands: &mut tokio::sync::mpsc::Receiver<SlotCommand>,
        visit: &mut Visit,
    ) -> LinkError {
        let mut state = SlotState::Empty;
        let mut event = match self.sync(link).await {
            Ok(e) => e,
            Err(e) => return e,
        };
        loop {
            state = self.feed(link, commands, state, event, visit).await;
            self.note_line(link, visit);
            event = tokio::select! {
                next = link.next_event(self.settings.poll) => match next {
                    Ok(Some(e)) => jig_event(e),
                    Ok(None) => match self.sync(link).await {
                        Ok(e) => e,
                        Err(e) => return e,
                    },
                    Err(e) => return e,
                },
                Some(cmd) = commands.recv() => operator_event(cmd),
            };
        }
    }

    /// Counts what the link saw of damage into the slot's figures, and
    /// shows them; the figures as they are now.
    fn note_line(&self, link: &dyn JigLink, visit: &mut Visit) -> LineHealth {
        let now = std::time::Instant::now();
        let c = link.counters();
        visit
            .noise
            .damaged(c.damaged_frames().saturating_sub(visit.seen_damaged), now);
        visit.seen_damaged = c.damaged_frames();
        let current = visit
            .board_base
            .map(|b| c.resends.saturating_sub(b.resends));
        let health = visit.noise.health(now, current);
        self.view.update(self.settings.slot, |v| v.line = health);
        health
    }

    /// A board's visit ended: its resends count towards the slot's
    /// resends per board.
    fn end_visit(&self, link: &dyn JigLink, visit: &mut Visit) {
        if let Some(base) = visit.board_base.take() {
            let resends = link.counters().resends.saturating_sub(base.resends);
            visit.noise.board(resends, std::time::Instant::now());
        }
        self.note_line(link, visit);
    }

    /// Asks the jig for its STATUS (after connecting, or when idle).
    async fn sync(&self, link: &mut dyn JigLink) -> Result<Event, LinkError> {
        let answer = link.call(&Request::Status).await?;
        let status = JigStatus::from_answer(&answer).map_err(|e| LinkError::Refused {
            verb: "STATUS",
            code: "bad_answer".into(),
            message: format!("the jig's answer to STATUS is not usable: {}", e.reason),
        })?;
        let slot = self.settings.slot;
        let store = self.store.clone();
        let interrupted = blocking(move || store.has_interrupted(slot))
            .await
            .unwrap_or(false);
        Ok(Event::Synced {
            present: status.present,
            test: status.test,
            done: status.done,
            interrupted,
        })
    }

    /// Feeds one event through the core, carrying out the commands and the
    /// events they produce, until the core waits for the jig again.
    async fn feed(
        &self,
        link: &mut dyn JigLink,
        orders: &mut tokio::sync::mpsc::Receiver<SlotCommand>,
        mut state: SlotState,
        first: Event,
        visit: &mut Visit,
    ) -> SlotState {
        let slot = self.settings.slot;
        let mut pending = VecDeque::from([first]);
        while let Some(event) = pending.pop_front() {
            let before = std::mem::discriminant(&state);
            let (next, commands) = core::step(state, event);
            state = next;
            if matches!(state, SlotState::Empty) {
                visit.guid = None;
            }
            if std::mem::discriminant(&state) != before || !commands.is_empty() {
                let guid = visit.guid.clone();
                self.view
                    .update(slot, |v| show_state(v, &state, guid.as_deref()));
            }
            // A command that reports an event ends the batch: the core
            // decides on it before anything further is done (a Complete
            // that failed must not be followed by FINISH).
            for cmd in commands {
                if let Some(e) = self.execute(link, orders, cmd, visit).await {
                    pending.push_back(e);
                    break;
                }
            }
        }
        let guid = visit.guid.clone();
        self.view
            .update(slot, |v| show_state(v, &state, guid.as_deref()));
        state
    }

    /// Carries out one command; a step returns the event it produced.
    async fn execute(
        &self,
        link: &mut dyn JigLink,
        orders: &mut tokio::sync::mpsc::Receiver<SlotCommand>,
        cmd: Command,
        visit: &mut Visit,
    ) -> Option<Event> {
        let now = OffsetDateTime::now_utc();
        let store = self.store.clone();
        let s = &self.settings;
        match cmd {
            Command::OpenBoard => {
                visit.tpm = None;
                // A new board has agreed to nothing yet.
                link.board_takes_notices(false);
                visit.board_base = Some(link.counters());
                let (station, slot) = (s.station_id.clone(), s.slot);
                let stamp = crate::store::Stamp {
                    operator: self.view.operator(slot),
                    work_order: self.work_order.read().ok().and_then(|w| w.clone()),
                };
                match blocking(move || store.open_board_by(&station, slot, &stamp, now)).await {
                    Ok(b) => visit.board = Some(b),
                    Err(e) => return Some(Event::Failed(store_failure(&e))),
                }
            }
            Command::RecordIdentity(id) => {
                visit.guid = Some(id.guid.to_string());
                let board = visit.board?;
                let recorded = blocking(move || {
                    let facts = store.record_facts(board)?;
                    let board = match core::visitor(&facts, &id.guid) {
                        core::Visitor::Same => board,
                        core::Visitor::Swapped { fail_old } => {
                            let why = fail_old.then(Failure::swapped);
                            store.replace_record(board, why.as_ref(), now)?
                        }
                    };
                    store.record_identity(board, &id, now)
                })
                .await;
                match recorded {
                    Ok(b) => visit.board = Some(b),
                    Err(e) => return Some(Event::Failed(store_failure(&e))),
                }
            }
            Command::Run(action) => {
                // A board pulled, or an operator's abort, while the last
                // step ran: take it before the next step.
                if let Ok(Some(JigEvent::Removed)) = link.next_event(Duration::ZERO).await {
                    return Some(Event::Removed);
                }
                if let Ok(SlotCommand::Abort) = orders.try_recv() {
                    return Some(Event::Abort);
                }
                let board = visit.board?;
                let step = action.step();
                visit.step_base = link.counters();
                let st = store.clone();
                match blocking(move || st.begin_step(board, step, now)).await {
                    Ok(id) => visit.open_step = Some(id),
                    Err(e) => return Some(Event::Failed(store_failure(&e))),
                }
                let started = std::time::Instant::now();
                let span = tracing::info_span!(
                    "step",
                    step = step.as_str(),
                    board.guid = visit.guid.as_deref().unwrap_or("")
                );
                let event = self
                    .perform(link, action, board, visit)
                    .instrument(span)
                    .await;
                tracing::debug!(
                    step = step.as_str(),
                    duration_ms = started.elapsed().as_millis() as u64,
                    "step done"
                );
                return Some(event);
            }
            Command::EndStep { error, .. } => {
                let seen = link.counters().since(&visit.step_base);
                let line = StepLine {
                    resends: seen.resends.try_into().unwrap_or(u32::MAX),
                    damaged: seen.damaged_frames().try_into().unwrap_or(u32::MAX),
                };
                self.note_line(link, visit);
                if let Some(id) = visit.open_step.take()
                    && let Err(e) =
                        blocking(move || store.end_step(id, now, error.as_ref(), line)).await
                {
                    tracing::error!("could not record the end of a step: {e}");
                }
            }
            Command::Complete { serial } => {
                // The board's TPM is let go: one client at a time.
                visit.tpm = None;
                let board = visit.board?;
                let sn = serial.clone();
                let template = self.enrollment.clone();
                let build = move |f: &crate::store::EnrollmentFacts| template.body(f).to_string();
                // A group enrollment covers every device: none of its own.
                let individual = self.enrollment.individual;
                let result = blocking(move || {
                    let enroll = if individual {
                        crate::store::Enroll::Individual(&build)
                    } else {
                        crate::store::Enroll::Group
                    };
                    store.complete(board, sn.as_ref(), now, enroll)
                })
                .await;
                self.end_visit(link, visit);
                return Some(match result {
                    Ok(()) => {
                        self.uploads.notify_one();
                        self.labels.notify_one();
                        tracing::info!(
                            board.guid = visit.guid.as_deref().unwrap_or(""),
                            serial = serial.as_ref().map_or("none", |s| s.0.as_str()),
                            "board provisioned and recorded; telling the jig"
                        );
                        crate::failpoint::hit("before_finish");
                        Event::Done(Output::Completed)
                    }
                    Err(e) => {
                        tracing::error!(
                            board.guid = visit.guid.as_deref().unwrap_or(""),
                            "the board passed every check but could not be recorded as provisioned: {e}"
                        );
                        Event::Failed(Failure::not_recorded(&e.to_string()))
                    }
                });
            }
            Command::Fail(f) => {
                visit.tpm = None;
                self.end_visit(link, visit);
                tracing::error!(board.guid = visit.guid.as_deref().unwrap_or(""), code = %f.code, "board failed: {}", f.message);
                if let Some(board) = visit.board
                    && let Err(e) = blocking(move || store.fail(board, &f, now)).await
                {
                    tracing::error!("could not record the failure: {e}");
                }
            }
            Command::NotifyFailed { code } => {
                // Best effort: even when the board fell silent the jig may
                // still answer and show the result.
                let req = Request::Finish {
                    pass: false,
                    code: Some(code),
                };
                if let Err(e) = link.call(&req).await {
                    tracing::warn!("could not tell the jig the board failed: {e}");
                }
            }
        }
        None
    }

    /// Carries out a step and reports its result.
    async fn perform(
        &self,
        link: &mut dyn JigLink,
        action: Action,
        board: BoardId,
        visit: &mut Visit,
    ) -> Event {
        match self.try_perform(link, action, board, visit).await {
            Ok(out) => Event::Done(out),
            Err(mut f) => {
                // A line that failed on a slot whose line is noisy: the
                // cable is the likely cause, and the message says so.
                if ["line_garbled", "no_answer"].contains(&f.code.as_str())
                    && let Some(advice) = self.note_line(link, visit).advice()
                {
                    f.message = format!("{}; {advice}", f.message);
                }
                Event::Failed(f)
            }
        }
    }

    async fn try_perform(
        &self,
        link: &mut dyn JigLink,
        action: Action,
        board: BoardId,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        let call = |f: Result<crate::jig::frame::Frame, LinkError>| f.map_err(|e| link_failure(&e));
        match action {
            Action::Hello => {
                let req = Request::Hello {
                    station: self.settings.station_id.clone(),
                };
                let a = call(link.call(&req).await)?;
                visit.caps = protocol::parse_caps(&a);
                link.board_takes_notices(visit.takes(protocol::CAP_NOTICE));
                Ok(Output::Hello {
                    version: protocol::parse_hello(&a).map_err(|e| answer_failure("HELLO", &e))?,
                })
            }
            Action::Identify => {
                let a = call(link.call(&Request::Ident).await)?;
                Ok(Output::Identified(
                    protocol::parse_identity(&a).map_err(|e| answer_failure("IDENT", &e))?,
                ))
            }
            Action::Review(id) => {
                let store = self.store.clone();
                let now = OffsetDateTime::now_utc();
                let facts = blocking(move || store.review_facts(board, &id.guid, now))
                    .await
                    .map_err(|e| store_failure(&e))?;
                Ok(Output::Reviewed(match core::review(&facts) {
                    Review::Resume(_) if self.device_keys.is_some() => {
                        return Err(Failure::new(
                            "attestation_changed",
                            "this board's interrupted attempt holds a certificate, but the station now gives symmetric keys ([dps] attestation = \"symmetric_key\"): a supervisor decides; take the board out and provision it again with an override (`station board override`)",
                        ));
                    }
                    Review::Resume(mut cert) => {
                        cert.chain.extend(self.ca.chain_der());
                        tracing::info!(serial = %cert.serial, "resuming with the certificate already in the ledger");
                        Review::Resume(cert)
                    }
                    other => other,
                }))
            }
            Action::KeyGen(_) if self.device_keys.is_some() => {
                self.key_set(link, board, visit).await
            }
            Action::KeyGen(id) => self.keygen(link, id, board, visit).await,
            Action::Issue { csr, override_used } => self.issue(board, csr, override_used).await,
            Action::Store(chain) => self.store_chain(link, chain, visit).await,
            Action::ReadBack => self.read_back(link, visit).await,
            Action::Prove if self.device_keys.is_some() => self.key_proof(link, visit).await,
            Action::Prove => self.prove(link, visit).await,
            Action::Settings => self.settings(link, board, visit).await,
            Action::Finish => {
                call(
                    link.call(&Request::Finish {
                        pass: true,
                        code: None,
                    })
                    .await,
                )?;
                Ok(Output::Finished)
            }
        }
    }

    /// Signs the certificate and commits it to the ledger; only then is it
    /// handed back to be sent to the board.
    async fn issue(
        &self,
        board: BoardId,
        csr: CheckedCsr,
        override_used: bool,
    ) -> Result<Output, Failure> {
        let ca = self.ca.clone();
        let store = self.store.clone();
        let days = self.settings.leaf_validity_days;
        let result = tokio::task::spawn_blocking(move || {
            let now = OffsetDateTime::now_utc();
            let leaf = issue_leaf(ca.as_ref(), &csr, now, days).map_err(|e| {
                Failure::new(
                    "ca_failed",
                    format!("{e}: check the CA configuration with `station check`"),
                )
            })?;
            store
                .commit_certificate(
                    board,
                    &NewCertificate {
                        serial: &leaf.serial,
                        guid: &csr.guid,
                        fingerprint: &leaf.fingerprint,
                        pem: &leaf.pem,
                        not_before: leaf.not_before,
                        not_after: leaf.not_after,
                        override_used,
                    },
                    now,
                )
                .map_err(|e| store_failure(&e))?;
            Ok(leaf)
        })
        .await
        .unwrap_or_else(|e| Err(Failure::internal(&e.to_string())))?;
        crate::failpoint::hit("after_ledger_commit");
        tracing::info!(serial = %result.serial, fingerprint = %result.fingerprint, "certificate issued and recorded");
        Ok(Output::Issued(IssuedCert {
            serial: result.serial,
            chain: std::iter::once(result.der)
                .chain(self.ca.chain_der())
                .collect(),
        }))
    }
}

fn operator_event(c: SlotCommand) -> Event {
    match c {
        SlotCommand::Retry => Event::Retry,
        SlotCommand::Abort => Event::Abort,
    }
}

fn jig_event(e: JigEvent) -> Event {
    match e {
        JigEvent::Inserted => Event::Inserted,
        JigEvent::Removed => Event::Removed,
        JigEvent::TestPassed => Event::TestPassed,
        JigEvent::TestFailed { code, message } => Event::TestFailed { code, message },
    }
}

mod keys;
mod registration;
#[cfg(test)]
mod tests;

pub use keys::{KeySource, TpmOpener};
pub use registration::Registration;
