//! The provisioning core: one state machine per jig slot that decides what
//! happens next to the board in it. No I/O, no clock, no runtime: the slot
//! driver feeds it [`Event`]s and carries out the [`Command`]s it returns, in
//! order, persisting each before acting on the next.
//!
//! Must not import tokio, axum, rusqlite, serial or TPM code (a test checks
//! this). Pure checks on what a board sends (CSR, read-back, key proof) are
//! made here, so a refused CSR can never reach the signer.

mod failure;
pub mod noise;
mod review;
pub mod settings;
#[cfg(test)]
mod tests;

pub use failure::Failure;
pub use review::{RecordFacts, ReviewFacts, Visitor, review, visitor};

use crate::ca::{CheckedCsr, check_csr, verify_key_proof};
use crate::ids::Serial;
use crate::jig::protocol::{BoardIdentity, NONCE_LEN, PROTOCOL_VERSION, TestState};

/// The steps of provisioning one board, in order. The names are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Hello,
    Identify,
    Review,
    KeyGen,
    Issue,
    Store,
    ReadBack,
    Prove,
    /// Write the provisioning settings (endpoint, ID scope, registration
    /// id, attestation) and read them back.
    Settings,
    Finish,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Hello => "hello",
            Step::Identify => "identify",
            Step::Review => "review",
            Step::KeyGen => "keygen",
            Step::Issue => "issue",
            Step::Store => "store",
            Step::ReadBack => "readback",
            Step::Prove => "prove",
            Step::Settings => "settings",
            Step::Finish => "finish",
        }
    }
}

/// A certificate the ledger holds for the board in the slot, with the chain
/// the board is to store (leaf first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub serial: Serial,
    pub chain: Vec<Vec<u8>>,
}

/// What the store knows about a GUID before any key is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// Nothing stands in the way; `override_granted` if a supervisor allowed
    /// a second certificate.
    Fresh { override_granted: bool },
    /// The slot's interrupted attempt for this board already holds a
    /// certificate in the ledger: finish with it.
    Resume(IssuedCert),
    /// The GUID holds a valid certificate from this CA already.
    AlreadyProvisioned { serial: Serial, issued_at: String },
    /// The GUID was given its symmetric key already (a provisioned board).
    AlreadyKeyed { keyed_at: String },
    /// The device was revoked, and no admin allowed it a new certificate.
    Revoked { revoked_at: String },
    /// The device was retired, and no admin allowed it a new certificate.
    Retired { retired_at: String },
    /// This record is provisioned already (enrollment and label queued),
    /// but the jig never acknowledged FINISH: tell it, nothing more.
    /// `serial` is the installed certificate (`None`: a symmetric key).
    Untold { serial: Option<Serial> },
}

/// Everything the core remembers about the board being provisioned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardCtx {
    pub identity: Option<BoardIdentity>,
    pub cert: Option<IssuedCert>,
    /// A supervisor allowed this GUID a further certificate.
    pub override_granted: bool,
    /// Set when the jig's functional test failed: the board is only
    /// identified, for the record, then failed.
    pub test_failure: Option<(String, String)>,
    /// The board got a symmetric key (no certificate): set when the key
    /// is written, checked when it is proven and at the end.
    pub symmetric_key: bool,
    /// The board is recorded as provisioned (enrollment and label queued):
    /// only FINISH is left, and nothing may undo the record.
    pub completed: bool,
}

impl BoardCtx {
    /// The installed certificate's serial (`None`: a symmetric key).
    fn serial(&self) -> Option<Serial> {
        self.cert.as_ref().map(|c| c.serial.clone())
    }

    /// A completed board whose jig is still to be told.
    fn completed(serial: Option<Serial>) -> BoardCtx {
        BoardCtx {
            symmetric_key: serial.is_none(),
            cert: serial.map(|serial| IssuedCert {
                serial,
                chain: Vec::new(),
            }),
            completed: true,
            ..BoardCtx::default()
        }
    }
}

/// How a board's visit to the jig ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `serial`: the certificate installed; `None` for a symmetric-key
    /// device.
    Provisioned {
        serial: Option<Serial>,
    },
    Failed(Failure),
    /// Provisioned and recorded (enrollment and label queued), but the jig
    /// was not told: FINISH failed, or was stopped. Retry sends FINISH
    /// alone; no second certificate.
    Untold {
        serial: Option<Serial>,
        why: Failure,
    },
    /// Found finished when the station started; nothing to do until removal.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// No board in the jig.
    Empty,
    /// A board is in; the jig's functional test is running.
    Testing,
    /// Provisioning, at `step`.
    Busy { step: Step, board: BoardCtx },
    /// Finished; the result stays until the board is removed.
    Done(Outcome),
}

/// What the driver reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Inserted,
    TestPassed,
    TestFailed {
        code: String,
        message: String,
    },
    Removed,
    /// The jig's state as read with STATUS (after start-up or a lost event).
    /// `interrupted`: the store holds an unfinished attempt for this slot.
    Synced {
        present: bool,
        test: TestState,
        done: Option<bool>,
        interrupted: bool,
    },
    Done(Output),
    Failed(Failure),
    /// An operator asks to provision the board in the slot again (after a
    /// failure, or one found finished at start-up).
    Retry,
    /// An operator stops the board being provisioned.
    Abort,
}

/// The result of a step the driver carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Hello {
        version: u32,
    },
    Identified(BoardIdentity),
    Reviewed(Review),
    Csr(Vec<u8>),
    Issued(IssuedCert),
    Stored,
    ReadBack(Vec<Vec<u8>>),
    Signed {
        nonce: [u8; NONCE_LEN],
        signature: Vec<u8>,
    },
    /// A symmetric key was derived, recorded and written to the board
    /// (the key itself stays with the driver).
    KeyWritten,
    /// The board proved it holds its symmetric key (the driver checks the
    /// HMAC: the core never sees the key).
    KeyProven,
    /// The settings step is over: written and read back, or skipped with
    /// the reason recorded on the board.
    SettingsDone,
    /// The board is recorded as provisioned, its enrollment and label
    /// queued, in one transaction ([`Command::Complete`]).
    Completed,
    Finished,
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create the board record, or adopt this slot's interrupted one.
    OpenBoard,
    /// Record the identity on the board record.
    RecordIdentity(BoardIdentity),
    /// Record the start of `step`, then carry it out and report the result.
    Run(Action),
    /// Record the end of the running step.
    EndStep { step: Step, error: Option<Failure> },
    /// Record the board as provisioned (ledger entry installed; `None`: a
    /// symmetric-key device, with no certificate), its enrollment and label
    /// queued, in one transaction; then report [`Output::Completed`]. Comes
    /// before FINISH pass: the jig is told only what is recorded.
    Complete { serial: Option<Serial> },
    /// Record the board as failed; abandon an issued but unproven
    /// certificate.
    Fail(Failure),
    /// Tell the jig the board failed (best effort: the line may be down).
    NotifyFailed { code: String },
}

/// A step to carry out, with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Hello,
    Identify,
    Review(BoardIdentity),
    KeyGen(BoardIdentity),
    /// Sign, and commit to the ledger before reporting.
    Issue {
        csr: CheckedCsr,
        override_used: bool,
    },
    Store(Vec<Vec<u8>>),
    ReadBack,
    Prove,
    Settings,
    Finish,
}

impl Action {
    pub fn step(&self) -> Step {
        match self {
            Action::Hello => Step::Hello,
            Action::Identify => Step::Identify,
            Action::Review(_) => Step::Review,
            Action::KeyGen(_) => Step::KeyGen,
            Action::Issue { .. } => Step::Issue,
            Action::Store(_) => Step::Store,
            Action::ReadBack => Step::ReadBack,
            Action::Prove => Step::Prove,
            Action::Settings => Step::Settings,
            Action::Finish => Step::Finish,
        }
    }
}

/// The last check passed: record the board as provisioned before the
/// jig hears a word of it.
fn complete(from: Step, board: BoardCtx) -> (SlotState, Vec<Command>) {
    let serial = board.serial();
    (
        SlotState::Busy {
            step: Step::Finish,
            board,
        },
        vec![
            Command::EndStep {
                step: from,
                error: None,
            },
            Command::Complete { serial },
        ],
    )
}

/// Recorded as provisioned; FINISH did not get through (or was stopped).
/// The record stands: nothing is failed or abandoned, and the jig is not
/// told FAIL.
fn untold(board: &BoardCtx, why: Failure, end_step: bool) -> (SlotState, Vec<Command>) {
    let cmds = if end_step {
        vec![Command::EndStep {
            step: Step::Finish,
            error: Some(why.clone()),
        }]
    } else {
        vec![]
    };
    (
        SlotState::Done(Outcome::Untold {
            serial: board.serial(),
            why,
        }),
        cmds,
    )
}

/// The transition function.
pub fn step(state: SlotState, event: Event) -> (SlotState, Vec<Command>) {
    use SlotState::*;
    match (state, event) {
        // The last result stays until the jig reports the board gone (a
        // REMOVED event, or STATUS present=0). STATUS cannot tell the same
        // board from another one inserted while both events were lost, and
        // a board whose FINISH did not get through reports done=none: taking
        // that for a new board would fail it again at every poll.
        (Done(o), Event::Synced { present: true, .. }) => (Done(o), vec![]),
        (
            _,
            Event::Synced {
                present,
                test,
                done,
                interrupted,
            },
        ) => synced(present, test, done, interrupted),
        // Recorded as provisioned: a pulled board keeps its record.
        (Busy { board, .. }, Event::Removed) if board.completed => (Empty, vec![]),
        (Busy { step, .. }, Event::Removed) => {
            let f = Failure::removed(step);
            (
                Done(Outcome::Failed(f.clone())),
                vec![
                    Command::EndStep {
                        step,
                        error: Some(f.clone()),
                    },
                    Command::Fail(f),
                ],
            )
        }
        (_, Event::Removed) => (Empty, vec![]),
        (Empty | Done(_), Event::Inserted) => (Testing, vec![]),
        (Empty | Testing, Event::TestPassed) => begin(BoardCtx::default()),
        (Empty | Testing, Event::TestFailed { code, message }) => begin_test_failed(code, message),
        (Done(Outcome::Failed(_) | Outcome::Unknown), Event::Retry) => begin(BoardCtx::default()),
        // Only FINISH was missing: send it again, nothing else.
        (Done(Outcome::Untold { serial, .. }), Event::Retry) => (
            Busy {
                step: Step::Finish,
                board: BoardCtx::completed(serial),
            },
            vec![Command::Run(Action::Finish)],
        ),
        (Busy { step, board }, Event::Abort) if board.completed => {
            untold(&board, Failure::aborted(step), false)
        }
        (Busy { step, .. }, Event::Abort) => fail(step, Failure::aborted(step)),
        (Busy { step, board }, Event::Done(out)) => advance(step, board, out),
        // FINISH failed after the record: provisioned, the jig not told.
        (Busy { board, .. }, Event::Failed(f)) if board.completed => untold(&board, f, true),
        // The record itself failed (Complete): the jig is told FAIL, and the
        // attempt stays open with its certificate, so that a Retry or a
        // restart finishes it with the same one.
        (
            Busy {
                step: Step::Finish, ..
            },
            Event::Failed(f),
        ) => {
            let code = f.code.clone();
            (
                Done(Outcome::Failed(f)),
                vec![Command::NotifyFailed { code }],
            )
        }
        (Busy { step, .. }, Event::Failed(f)) => fail(step, f),
        // Anything else is stale (an answer after removal, a repeated event).
        (s, _) => (s, vec![]),
    }
}

fn synced(
    present: bool,
    test: TestState,
    done: Option<bool>,
    interrupted: bool,
) -> (SlotState, Vec<Command>) {
    if !present {
        return (SlotState::Empty, vec![]);
    }
    match test {
        TestState::Passed if done.is_none() || interrupted => begin(BoardCtx::default()),
        TestState::Failed { code, message } if done.is_none() => begin_test_failed(code, message),
        TestState::None | TestState::Running => (SlotState::Testing, vec![]),
        _ => (SlotState::Done(Outcome::Unknown), vec![]),
    }
}

fn begin(board: BoardCtx) -> (SlotState, Vec<Command>) {
    (
        SlotState::Busy {
            step: Step::Hello,
            board,
        },
        vec![Command::OpenBoard, Command::Run(Action::Hello)],
    )
}

fn begin_test_failed(code: String, message: String) -> (SlotState, Vec<Command>) {
    let board = BoardCtx {
        test_failure: Some((code, message)),
        ..BoardCtx::default()
    };
    (
        SlotState::Busy {
            step: Step::Identify,
            board,
        },
        vec![Command::OpenBoard, Command::Run(Action::Identify)],
    )
}

fn fail(step: Step, f: Failure) -> (SlotState, Vec<Command>) {
    let code = f.code.clone();
    (
        SlotState::Done(Outcome::Failed(f.clone())),
        vec![
            Command::EndStep {
                step,
                error: Some(f.clone()),
            },
            Command::Fail(f),
            Command::NotifyFailed { code },
        ],
    )
}

/// Ends `from` and runs `action`.
fn next(
    from: Step,
    board: BoardCtx,
    mut pre: Vec<Command>,
    action: Action,
) -> (SlotState, Vec<Command>) {
    let mut cmds = vec![Command::EndStep {
        step: from,
        error: None,
    }];
    cmds.append(&mut pre);
    let step = action.step();
    cmds.push(Command::Run(action));
    (SlotState::Busy { step, board }, cmds)
}

fn advance(step: Step, mut board: BoardCtx, out: Output) -> (SlotState, Vec<Command>) {
    match (step, out) {
        (Step::Hello, Output::Hello { version }) if version == PROTOCOL_VERSION => {
            next(step, board, vec![], Action::Identify)
        }
        (Step::Hello, Output::Hello { version }) => fail(step, Failure::version(version)),
        (Step::Identify, Output::Identified(id)) => {
            board.identity = Some(id.clone());
            let record = vec![Command::RecordIdentity(id.clone())];
            if let Some((code, message)) = board.test_failure.clone() {
                let (s, mut cmds) = fail(step, Failure::test_failed(&code, &message));
                // The step itself worked: record it as such, then the failure.
                cmds[0] = Command::EndStep { step, error: None };
                let mut all = record;
                all.append(&mut cmds);
                return (s, all);
            }
            next(step, board, record, Action::Review(id))
        }
        (Step::Identify, _) if board.test_failure.is_some() => {
            let (code, message) = board.test_failure.clone().unwrap_or_default();
            fail(step, Failure::test_failed(&code, &message))
        }
        (Step::Review, Output::Reviewed(review)) => {
            let Some(id) = board.identity.clone() else {
                return fail(step, Failure::internal("review without an identity"));
            };
            match review {
                Review::Fresh { override_granted } => {
                    board.override_granted = override_granted;
                    next(step, board, vec![], Action::KeyGen(id))
                }
                Review::Resume(cert) => {
                    let chain = cert.chain.clone();
                    board.cert = Some(cert);
                    next(step, board, vec![], Action::Store(chain))
                }
                Review::AlreadyProvisioned { serial, issued_at } => fail(
                    step,
                    Failure::already_provisioned(&id.guid, &serial, &issued_at),
                ),
                Review::AlreadyKeyed { keyed_at } => {
                    fail(step, Failure::already_keyed(&id.guid, &keyed_at))
                }
                Review::Revoked { revoked_at } => {
                    fail(step, Failure::device_revoked(&id.guid, &revoked_at))
                }
                Review::Retired { retired_at } => {
                    fail(step, Failure::device_retired(&id.guid, &retired_at))
                }
                Review::Untold { serial } => {
                    next(step, BoardCtx::completed(serial), vec![], Action::Finish)
                }
            }
        }
        (Step::KeyGen, Output::Csr(der)) => {
            let Some(id) = board.identity.clone() else {
                return fail(step, Failure::internal("CSR without an identity"));
            };
            match check_csr(&der, &id.guid) {
                Ok(csr) => {
                    let override_used = board.override_granted;
                    next(step, board, vec![], Action::Issue { csr, override_used })
                }
                Err(e) => fail(step, Failure::new(e.code(), e.to_string())),
            }
        }
        (Step::KeyGen, Output::KeyWritten) => {
            board.symmetric_key = true;
            next(step, board, vec![], Action::Prove)
        }
        (Step::Prove, Output::KeyProven) if board.symmetric_key => {
            next(step, board, vec![], Action::Settings)
        }
        (Step::Issue, Output::Issued(cert)) => {
            let chain = cert.chain.clone();
            board.cert = Some(cert);
            next(step, board, vec![], Action::Store(chain))
        }
        (Step::Store, Output::Stored) => next(step, board, vec![], Action::ReadBack),
        (Step::ReadBack, Output::ReadBack(chain)) => {
            if board.cert.as_ref().map(|c| &c.chain) == Some(&chain) {
                next(step, board, vec![], Action::Prove)
            } else {
                fail(step, Failure::readback_mismatch())
            }
        }
        (Step::Prove, Output::Signed { nonce, signature }) => {
            let leaf = board.cert.as_ref().and_then(|c| c.chain.first());
            match leaf {
                Some(der) if verify_key_proof(der, &nonce, &signature) => {
                    next(step, board, vec![], Action::Settings)
                }
                _ => fail(step, Failure::key_proof()),
            }
        }
        (Step::Settings, Output::SettingsDone) => {
            if board.cert.is_some() || board.symmetric_key {
                complete(step, board)
            } else {
                fail(step, Failure::internal("finished without a certificate"))
            }
        }
        (Step::Finish, Output::Completed) if !board.completed => {
            board.completed = true;
            (
                SlotState::Busy { step, board },
                vec![Command::Run(Action::Finish)],
            )
        }
        (Step::Finish, Output::Finished) if board.completed => (
            SlotState::Done(Outcome::Provisioned {
                serial: board.serial(),
            }),
            vec![Command::EndStep { step, error: None }],
        ),
        (step, out) => {
            let f = Failure::internal(&format!(
                "unexpected result {out:?} at step {}",
                step.as_str()
            ));
            if board.completed {
                untold(&board, f, true)
            } else {
                fail(step, f)
            }
        }
    }
}
