//! The board simulator: the board (and jig) side of protocol v1 over a real
//! serial line or pseudo-terminal, so the station can be run and tested
//! without hardware.
//!
//! A simulated jig inserts a board, runs its functional test, answers the
//! station, and in line mode removes the board and inserts a new one (a new
//! GUID) after a pause. Faults from [`Fault`] make it misbehave on purpose.
//! Owns nothing the station depends on; the station only sees the line.

mod board;
pub mod cable;
mod fault;
pub mod swtpm;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

pub use board::ObservedBoard;
pub use fault::Fault;

use crate::ids::Guid;
use crate::jig::frame::{Decoded, Decoder, Frame, Kind, MAX_FRAME};
use crate::jig::protocol::{
    CAP_NOTICE, CAP_PIECES, JigEvent, JigStatus, LINE_GAP, Request, TestState, notice, parse_caps,
};
use board::Board;

/// How a simulated board behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Time the board takes to make a key pair and CSR.
    pub keygen_time: Duration,
    /// Flash write speed for STORE, in bytes per second (0: instant).
    pub flash_bytes_per_sec: u32,
    /// Time the jig's functional test takes.
    pub test_time: Duration,
    /// Delay before the first board is inserted.
    pub first_insert_after: Duration,
    /// `None`: one board is inserted and stays. `Some`: the board is removed
    /// `dwell` after FINISH and the next one arrives `pause` later.
    pub line: Option<LineCycle>,
    pub hw_revision: String,
    pub fw_version: String,
    /// The first board's GUID (random when `None`); later boards are random.
    pub guid: Option<Guid>,
    pub fault: Option<Fault>,
    /// How many times the fault strikes; `None` for every time.
    pub fault_times: Option<u32>,
    /// In line mode, how many boards come through (`None`: no end).
    pub boards: Option<u32>,
    /// Run as each new board is inserted, before the jig says so (a
    /// simulated board's TPM is made fresh here).
    pub on_insert: Option<InsertHook>,
    /// The board takes the line capabilities the station offers in
    /// HELLO: damaged-line notices and the chain in pieces (`false`: a
    /// board from before them).
    pub line_caps: bool,
}

/// Something to do when a simulated board arrives.
#[derive(Clone)]
pub struct InsertHook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for InsertHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InsertHook")
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LineCycle {
    pub dwell: Duration,
    pub pause: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            keygen_time: Duration::from_millis(50),
            flash_bytes_per_sec: 0,
            test_time: Duration::from_millis(50),
            first_insert_after: Duration::from_millis(20),
            line: None,
            hw_revision: "B2".into(),
            fw_version: "1.4.2".into(),
            guid: None,
            fault: None,
            fault_times: None,
            boards: None,
            on_insert: None,
            line_caps: true,
        }
    }
}

/// What the simulator did, for tests to check against the station's records.
#[derive(Debug, Default)]
pub struct Observations {
    pub boards: Vec<ObservedBoard>,
    /// The board in the jig now, as of its last answer.
    pub current: Option<ObservedBoard>,
    /// Requests received (id, verb), including repeats.
    pub requests: Vec<(u16, String)>,
}

pub type SharedObservations = Arc<Mutex<Observations>>;

/// Runs a simulated jig with boards on `io` until the line closes.
pub async fn run<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    opts: SimOptions,
    seen: SharedObservations,
) -> std::io::Result<()> {
    let mut sim = Sim::new(opts, seen);
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 1024];
    let mut last_byte = Instant::now();
    loop {
        let timer = sim.next_timer();
        let mut out: Vec<u8> = Vec::new();
        // Once notices are agreed, a line left unfinished for LINE_GAP
        // lost its end on the way: it is a damaged line.
        let cut = sim.notices && !sim.silent && decoder.pending() > 0;
        tokio::select! {
            _ = tokio::time::sleep_until(last_byte + LINE_GAP), if cut => {
                decoder.reset();
                wr.write_all(&notice("cut").encode()).await?;
                wr.flush().await?;
            }
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    // A pseudo-terminal whose other side nobody holds open
                    // reads EIO: wait for the station to open it.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                last_byte = Instant::now();
                let mut items = Vec::new();
                decoder.feed(&buf[..n], &mut items);
                for item in items {
                    match item {
                        Decoded::Frame(f) if f.kind == Kind::Request => sim.serve(&f, &mut wr).await?,
                        // A line it cannot accept: say so, once notices
                        // are agreed (otherwise say nothing).
                        Decoded::Error(e) if sim.notices && !sim.silent => {
                            wr.write_all(&notice(e.code()).encode()).await?;
                            wr.flush().await?;
                        }
                        _ => {}
                    }
                }
            }
            _ = tokio::time::sleep_until(timer.unwrap_or_else(far_future)), if timer.is_some() => {
                sim.on_timer(&mut out);
            }
        }
        if !out.is_empty() && !sim.silent {
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86400)
}

enum Timer {
    Insert,
    TestDone,
    Remove,
}

struct Sim {
    opts: SimOptions,
    seen: SharedObservations,
    board: Option<Board>,
    test: TestState,
    done: Option<bool>,
    timer: Option<(Instant, Timer)>,
    event_seq: u16,
    /// Last request id and verb answered, and the answer, for repeats.
    replay: Option<(u16, String, Vec<u8>)>,
    fault_left: Option<u32>,
    /// Boards inserted so far.
    inserted: u32,
    silent: bool,
    next_guid: Option<Guid>,
    /// Agreed in the last HELLO: damaged lines get a notice.
    notices: bool,
    /// Agreed in the last HELLO: the chain may come in pieces.
    pieces: bool,
}

impl Sim {
    fn new(opts: SimOptions, seen: SharedObservations) -> Sim {
        let first = Instant::now() + opts.first_insert_after;
        let mut sim = Sim {
            fault_left: opts.fault_times,
            next_guid: opts.guid.clone(),
            opts,
            seen,
            board: None,
            test: TestState::None,
            done: None,
            timer: Some((first, Timer::Insert)),
            event_seq: 0,
            replay: None,
            inserted: 0,
            silent: false,
            notices: false,
            pieces: false,
        };
        sim.notices = sim.sends_notices();
        sim
    }

    /// Whether the board sends notices before any HELLO: a board that
    /// takes them may (a station that did not offer them reads a notice as
    /// an answer to no request of its own, and ignores it).
    fn sends_notices(&self) -> bool {
        self.opts.line_caps && self.opts.fault != Some(Fault::OldFirmware)
    }

    /// True if the configured fault strikes now (it is of the kind asked
    /// about and has strikes left); uses up one strike.
    fn strike(&mut self, applies: impl Fn(&Fault) -> bool) -> bool {
        match &self.opts.fault {
            Some(f) if applies(f) && self.fault_left != Some(0) => {
                if let Some(n) = self.fault_left.as_mut() {
                    *n -= 1;
                }
                true
            }
            _ => false,
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timer.as_ref().map(|(t, _)| *t)
    }

    fn event(&mut self, e: JigEvent, out: &mut Vec<u8>) {
        self.event_seq = self.event_seq.wrapping_add(1);
        out.extend(e.to_frame(self.event_seq).encode());
    }

    fn on_timer(&mut self, out: &mut Vec<u8>) {
        let Some((_, what)) = self.timer.take() else {
            return;
        };
        match what {
            Timer::Insert => {
                let guid = self
                    .next_guid
                    .take()
                    .unwrap_or_else(|| Guid::from_bytes(crate::random::bytes()));
                if let Some(hook) = &self.opts.on_insert {
                    (hook.0)();
                }
                self.board = Some(Board::new(guid, &self.opts));
                self.inserted += 1;
                self.test = TestState::Running;
                self.done = None;
                self.replay = None;
                self.pieces = false;
                self.notices = self.sends_notices();
                self.event(JigEvent::Inserted, out);
                self.timer = Some((Instant::now() + self.opts.test_time, Timer::TestDone));
            }
            Timer::TestDone => {
                let e = if self.strike(|f| *f == Fault::FailTest) {
                    let (code, message) = ("rf_power_low", "RF output 3 dB below limit at 2.4 GHz");
                    self.test = TestState::Failed {
                        code: code.into(),
                        message: message.into(),
                    };
                    JigEvent::TestFailed {
                        code: code.into(),
                        message: message.into(),
                    }
                } else {
                    self.test = TestState::Passed;
                    JigEvent::TestPassed
                };
                self.event(e, out);
                if matches!(self.test, TestState::Failed { .. }) {
                    self.schedule_removal();
                }
            }
            Timer::Remove => {
                if let Some(b) = self.board.take()
                    && let Ok(mut s) = self.seen.lock()
                {
                    s.boards.push(b.observed());
                    s.current = None;
                }
                self.test = TestState::None;
                self.done = None;
                self.event(JigEvent::Removed, out);
                let more = self.opts.boards.is_none_or(|n| self.inserted < n);
                if let (Some(cycle), true) = (self.opts.line, more) {
                    self.timer = Some((Instant::now() + cycle.pause, Timer::Insert));
                }
            }
        }
    }

    fn schedule_removal(&mut self) {
        if let Some(cycle) = self.opts.line {
            self.timer = Some((Instant::now() + cycle.dwell, Timer::Remove));
        }
    }

    async fn serve<W: AsyncWrite + Unpin>(&mut self, f: &Frame, wr: &mut W) -> std::io::Result<()> {
        if let Ok(mut s) = self.seen.lock() {
            s.requests.push((f.id, f.verb.clone()));
        }
        if self.board.is_some()
            && self.strike(|x| matches!(x, Fault::Silence { verb } if *verb == f.verb))
        {
            self.silent = true;
        }
        if self.silent {
            return Ok(());
        }
        if self.notices && self.board.is_some() && self.naks(f) {
            wr.write_all(&notice("crc").encode()).await?;
            return wr.flush().await;
        }
        let answer = match &self.replay {
            Some((id, verb, bytes)) if *id == f.id && *verb == f.verb => bytes.clone(),
            _ => {
                let bytes = self.execute(f, wr).await?.encode();
                self.replay = Some((f.id, f.verb.clone(), bytes.clone()));
                if let Ok(mut s) = self.seen.lock() {
                    s.current = self.board.as_ref().map(Board::observed);
                }
                bytes
            }
        };
        let sent = self.damage(&f.verb, answer);
        wr.write_all(&sent).await?;
        wr.flush().await
    }

    /// Whether a notice fault makes the board take this request for a
    /// damaged line.
    fn naks(&mut self, f: &Frame) -> bool {
        // STATUS is the jig's: it answers whatever the board's line does.
        if f.verb == "STATUS" {
            return false;
        }
        let later_piece = f.verb == "STORE" && f.get("offset").is_some_and(|o| o != "0");
        self.strike(|x| match x {
            Fault::Nak { verb } => verb.as_ref().is_none_or(|v| *v == f.verb),
            Fault::CutStore => later_piece,
            _ => false,
        })
    }

    /// Applies the configured line fault to an answer to `verb`.
    fn damage(&mut self, verb: &str, mut bytes: Vec<u8>) -> Vec<u8> {
        let Some(fault) = self.opts.fault.clone() else {
            return bytes;
        };
        if matches!(fault, Fault::Silence { .. }) || !self.strike(|f| f.line_verb() == Some(verb)) {
            return bytes;
        }
        match fault {
            Fault::Corrupt { .. } => {
                let i = bytes.len() / 2;
                bytes[i] = if bytes[i] == b'#' { b'$' } else { b'#' };
                bytes
            }
            Fault::BadCrc { .. } => {
                let n = bytes.len();
                let crc = &mut bytes[n - 6..n - 2];
                crc.copy_from_slice(if crc == b"0000" { b"FFFF" } else { b"0000" });
                bytes
            }
            Fault::Drop { .. } => Vec::new(),
            Fault::Truncated { .. } => bytes[..bytes.len() / 2].to_vec(),
            Fault::Oversized { .. } => {
                let mut b = vec![b'<'; MAX_FRAME + 64];
                b.extend_from_slice(b"\r\n");
                b
            }
            Fault::Garbage { .. } => {
                let mut b = crate::random::bytes::<128>().to_vec();
                b.retain(|&c| c != b'\n');
                b.extend_from_slice(b"\r\n");
                b
            }
            _ => bytes,
        }
    }

    async fn execute<W: AsyncWrite + Unpin>(
        &mut self,
        f: &Frame,
        wr: &mut W,
    ) -> std::io::Result<Frame> {
        let ok = Frame::new(Kind::Response, f.id, "OK");
        let err = |code: &str, msg: &str| {
            Frame::new(Kind::Response, f.id, "ERR")
                .arg("code", code)
                .arg("msg", msg)
        };
        let old_firmware = self.opts.fault == Some(Fault::OldFirmware);
        if old_firmware && ["SETTINGS", "READSETTINGS", "KEYSET", "HMAC"].contains(&f.verb.as_str())
        {
            return Ok(err(
                "unknown_request",
                &format!("unknown request {}", f.verb),
            ));
        }
        let req = match Request::from_frame(f) {
            Ok(r) => r,
            Err(e) => return Ok(err("bad_request", &e.to_string())),
        };
        if let Request::Hello { .. } = req {
            let ok = ok.arg("v", crate::jig::protocol::PROTOCOL_VERSION.to_string());
            // The line's capabilities are taken only when offered.
            let offered = parse_caps(f);
            let takes = |cap: &str| {
                self.opts.line_caps && !old_firmware && offered.iter().any(|c| c == cap)
            };
            self.notices = takes(CAP_NOTICE);
            self.pieces = takes(CAP_PIECES);
            if old_firmware {
                return Ok(ok);
            }
            let mut caps = vec!["settings", "symkey"];
            caps.extend(self.notices.then_some(CAP_NOTICE));
            caps.extend(self.pieces.then_some(CAP_PIECES));
            return Ok(ok.arg("caps", caps.join(",")));
        }
        if let Request::Status = req {
            let status = JigStatus {
                present: self.board.is_some(),
                test: self.test.clone(),
                done: self.done,
            };
            return Ok(status.to_args(ok));
        }
        if self.board.is_none() {
            return Ok(err("no_board", "no board in the jig"));
        }
        // Board faults strike when the request they spoil is acted on.
        let key_fault = matches!(req, Request::KeyGen { .. })
            && self.strike(|f| matches!(f, Fault::WrongGuid | Fault::WrongKey | Fault::NotP256));
        let commits = match &req {
            Request::Store { .. } => true,
            Request::StorePiece { offset, size, data } => offset + data.len() >= *size,
            _ => false,
        };
        let refuse_store = commits && self.strike(|f| *f == Fault::RefuseStore);
        let pieces = self.pieces;
        let fault = self.opts.fault.clone().filter(|_| key_fault);
        let wrong_settings =
            matches!(req, Request::ReadSettings) && self.strike(|f| *f == Fault::WrongSettings);
        let wrong_hmac =
            matches!(req, Request::Hmac { .. }) && self.strike(|f| *f == Fault::WrongHmac);
        let Some(board) = self.board.as_mut() else {
            return Ok(err("no_board", "no board in the jig"));
        };
        Ok(match req {
            Request::Ident => board.identify(ok),
            Request::KeyGen { .. } => {
                work(f.id, self.opts.keygen_time, BUSY_AGAIN, wr).await?;
                match board.keygen(fault.as_ref()) {
                    Ok(csr) => ok.arg("csr", crate::jig::protocol::b64(&csr)),
                    Err(e) => err("keygen_failed", &e),
                }
            }
            Request::KeyLoad { key } => {
                work(f.id, self.opts.keygen_time / 4, BUSY_AGAIN, wr).await?;
                match board.load_key(&key.0) {
                    Ok(public) => ok.arg("pub", crate::jig::protocol::b64(&public)),
                    Err(e) => err("bad_key", &e),
                }
            }
            Request::Store { chain } => {
                if refuse_store {
                    return Ok(err(
                        "flash_write_failed",
                        "certificate sector did not erase",
                    ));
                }
                let bytes: usize = chain.iter().map(Vec::len).sum();
                if self.opts.flash_bytes_per_sec > 0 {
                    busy(f.id, wr).await?;
                    let secs = bytes as f64 / f64::from(self.opts.flash_bytes_per_sec);
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                board.stored = chain;
                ok
            }
            Request::StorePiece { .. } | Request::ReadCertPiece { .. } if !pieces => {
                err("bad_request", "pieces were not agreed in HELLO")
            }
            Request::StorePiece { offset, size, data } => {
                let chain = match board.take_piece(offset, size, &data) {
                    Ok(Some(chain)) => chain,
                    Ok(None) => return Ok(ok),
                    Err(e) => return Ok(err("bad_piece", &e)),
                };
                if refuse_store {
                    return Ok(err(
                        "flash_write_failed",
                        "certificate sector did not erase",
                    ));
                }
                if self.opts.flash_bytes_per_sec > 0 {
                    busy(f.id, wr).await?;
                    let bytes: usize = chain.iter().map(Vec::len).sum();
                    let secs = bytes as f64 / f64::from(self.opts.flash_bytes_per_sec);
                    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                }
                board.stored = chain;
                ok
            }
            Request::ReadCert => ok.arg("chain", crate::jig::protocol::encode_chain(&board.stored)),
            Request::ReadCertPiece { offset, max } => {
                let text = crate::jig::protocol::encode_chain(&board.stored);
                if offset > text.len() || max == 0 {
                    return Ok(err(
                        "bad_request",
                        &format!(
                            "offset {offset} and max {max} are outside the {} bytes stored",
                            text.len()
                        ),
                    ));
                }
                let end = (offset + max).min(text.len());
                ok.arg("size", text.len().to_string())
                    .arg("data", &text[offset..end])
            }
            Request::Sign { nonce } => match board.sign(&nonce) {
                Ok(sig) => ok.arg("sig", crate::jig::protocol::b64(&sig)),
                Err(e) => err("no_key", &e),
            },
            Request::Settings(settings) => {
                board.settings = Some(settings);
                ok
            }
            Request::ReadSettings => match &board.settings {
                Some(s) => {
                    let mut s = s.clone();
                    if wrong_settings {
                        s.id_scope = "0ne00WRONG0".into();
                    }
                    crate::jig::protocol::settings_args(&s, ok)
                }
                None => err("no_settings", "no provisioning settings are kept"),
            },
            Request::KeySet { key } => {
                busy(f.id, wr).await?;
                board.symmetric_key = Some(*key.0);
                ok
            }
            Request::Hmac { nonce } => match board.hmac(&nonce) {
                Ok(mut mac) => {
                    if wrong_hmac {
                        mac[0] ^= 1;
                    }
                    ok.arg("mac", crate::jig::protocol::b64(&mac))
                }
                Err(e) => err("no_key", &e),
            },
            Request::Finish { pass, .. } => {
                board.finishes.push(pass);
                self.done = Some(pass);
                self.schedule_removal();
                ok
            }
            Request::Hello { .. } | Request::Status => ok,
        })
    }
}

/// How often long work says BUSY again: well inside the station's
/// `slow_timeout_ms` (15 s by default).
const BUSY_AGAIN: Duration = Duration::from_secs(5);

/// Long work, as jig-protocol.md 5.3 asks of a board: BUSY as it starts,
/// and again every `again` while it lasts.
async fn work<W: AsyncWrite + Unpin>(
    id: u16,
    time: Duration,
    again: Duration,
    wr: &mut W,
) -> std::io::Result<()> {
    let end = Instant::now() + time;
    loop {
        busy(id, wr).await?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        tokio::time::sleep(left.min(again)).await;
        if Instant::now() >= end {
            return Ok(());
        }
    }
}

async fn busy<W: AsyncWrite + Unpin>(id: u16, wr: &mut W) -> std::io::Result<()> {
    wr.write_all(&Frame::new(Kind::Response, id, "BUSY").encode())
        .await?;
    wr.flush().await
}

/// A simulated jig on a fresh pseudo-terminal. Dropping it ends the
/// simulation.
pub struct PtySim {
    /// The path the station opens, like `/dev/pts/7`.
    pub device: String,
    pub seen: SharedObservations,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl PtySim {
    /// Opens a pseudo-terminal pair and runs a simulated jig on its master
    /// side. The slave side stays open in this process so the line does not
    /// hang up between station connections.
    pub fn spawn(opts: SimOptions) -> std::io::Result<PtySim> {
        use tokio_serial::SerialPort;
        let (master, slave) = tokio_serial::SerialStream::pair().map_err(std::io::Error::other)?;
        let device = slave
            .name()
            .ok_or_else(|| std::io::Error::other("the pseudo-terminal has no name"))?;
        let seen = SharedObservations::default();
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let _keep_open = slave;
            run(master, opts, seen2).await
        });
        Ok(PtySim { device, seen, task })
    }

    /// The boards that have been in the jig (removed ones) plus the current one.
    pub fn boards(&self) -> Vec<ObservedBoard> {
        self.seen
            .lock()
            .map(|s| s.boards.iter().chain(&s.current).cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for PtySim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_work_says_busy_again_while_it_lasts() {
        let mut out = Vec::new();
        work(
            7,
            Duration::from_secs(1),
            Duration::from_millis(100),
            &mut out,
        )
        .await
        .unwrap();
        let busy = Frame::new(Kind::Response, 7, "BUSY").encode();
        assert_eq!(out.len() % busy.len(), 0);
        assert!(out.chunks(busy.len()).all(|f| f == busy.as_slice()));
        let n = out.len() / busy.len();
        // Once at the start, then every 100 ms (however late the timer).
        assert!((2..=11).contains(&n), "{n} BUSY in 1 s of work");
    }
}
