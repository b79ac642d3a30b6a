//! The station's end of a jig link: requests with ids, timeouts, retries and
//! jig events, over any byte stream (a serial port in production, a
//! pseudo-terminal in tests and the demo).
//!
//! Owns the retry rules of `docs/jig-protocol.md`. Knows nothing of what the
//! answers mean: that is the workflow's business.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::frame::{Decoded, Decoder, Frame, Kind};
use super::protocol::{JigEvent, LINE_GAP, NOTICE, Request};

/// How long to wait for answers, and how often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTiming {
    /// Wait for an answer to a quick request.
    pub timeout: Duration,
    /// Wait for an answer to KEYGEN or STORE, and after each BUSY.
    pub slow_timeout: Duration,
    /// Sends of the same request (same id) before giving up; at least 1.
    pub attempts: u32,
    /// Longest a board may keep a request going with BUSY answers.
    pub busy_limit: Duration,
}

impl Default for LinkTiming {
    fn default() -> Self {
        LinkTiming {
            timeout: Duration::from_millis(2000),
            slow_timeout: Duration::from_millis(15000),
            attempts: 8,
            busy_limit: Duration::from_secs(120),
        }
    }
}

/// Attempts of one request that may end in silence before it is given up,
/// whatever `attempts` allows: a damaged answer or a notice is answered
/// at once, silence costs a whole wait, and a board silent three times
/// running is not coming back.
pub const SILENCES: u32 = 3;

/// What a link has seen of its line's health since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineCounters {
    /// Lines from the board that were not frames (bad CRC, malformed,
    /// oversized, cut short).
    pub damaged: u64,
    /// Damaged-line notices from the board: a request of ours arrived
    /// damaged.
    pub notices: u64,
    /// Requests sent again (the same frame, the same id).
    pub resends: u64,
}

impl LineCounters {
    /// Damaged frames either way.
    pub fn damaged_frames(&self) -> u64 {
        self.damaged + self.notices
    }

    /// What happened since `earlier`.
    pub fn since(&self, earlier: &LineCounters) -> LineCounters {
        LineCounters {
            damaged: self.damaged.saturating_sub(earlier.damaged),
            notices: self.notices.saturating_sub(earlier.notices),
            resends: self.resends.saturating_sub(earlier.resends),
        }
    }
}

/// What went wrong talking to a jig, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error(
        "no answer from the board to {verb} on {device} after {attempts} attempts ({wait_ms} ms each): check the cable, the baud rate and that the board is powered"
    )]
    NoAnswer {
        device: String,
        verb: &'static str,
        attempts: u32,
        wait_ms: u64,
    },
    #[error(
        "no usable answer from the board to {verb} on {device} in {attempts} attempts (last problem: {problem}): check the cable, its shielding and the baud rate"
    )]
    Garbled {
        device: String,
        verb: &'static str,
        attempts: u32,
        problem: String,
    },
    #[error("the board refused {verb}: {code}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Refused {
        verb: &'static str,
        code: String,
        message: String,
    },
    #[error(
        "the board kept answering BUSY to {verb} on {device} for {secs} s: it may be hung; power-cycle it and try again"
    )]
    StuckBusy {
        device: String,
        verb: &'static str,
        secs: u64,
    },
    #[error("the serial device {device} failed: {reason}: check that the jig is still connected")]
    Io { device: String, reason: String },
}

impl LinkError {
    /// A short, stable code for records and the jig's FINISH.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::NoAnswer { .. } => "no_answer",
            LinkError::Garbled { .. } => "line_garbled",
            LinkError::Refused { .. } => "board_refused",
            LinkError::StuckBusy { .. } => "board_busy",
            LinkError::Io { .. } => "serial_failed",
        }
    }
}

/// A link to one jig slot. The real one is [`FramedLink`] over a serial
/// port; tests use [`super::fake::ScriptedLink`].
#[async_trait]
pub trait JigLink: Send {
    /// Sends a request and returns the board's `OK` answer, retrying as the
    /// protocol says. Events that arrive meanwhile are kept for
    /// [`JigLink::next_event`].
    async fn call(&mut self, req: &Request) -> Result<Frame, LinkError>;

    /// The next jig event, waiting at most `wait`.
    async fn next_event(&mut self, wait: Duration) -> Result<Option<JigEvent>, LinkError>;

    /// The device name, for messages.
    fn device(&self) -> &str;

    /// Says whether the board in the jig took damaged-line notices in its
    /// HELLO answer: such a board answers every request within the quick
    /// timeout (BUSY at least), so silence is known sooner.
    fn board_takes_notices(&mut self, _on: bool) {}

    /// The line's health so far.
    fn counters(&self) -> LineCounters {
        LineCounters::default()
    }
}

/// The protocol over a byte stream.
pub struct FramedLink<T> {
    io: T,
    device: String,
    timing: LinkTiming,
    decoder: Decoder,
    decoded: VecDeque<Decoded>,
    events: VecDeque<JigEvent>,
    next_id: u16,
    /// The board answers every request within `timeout` (it takes
    /// notices).
    prompt: bool,
    counters: LineCounters,
    /// When the last byte arrived.
    last_byte: Instant,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> FramedLink<T> {
    /// `first_id` should be random, so that a restarted station does not
    /// reuse the id of the board's last remembered request.
    pub fn new(io: T, device: impl Into<String>, timing: LinkTiming, first_id: u16) -> Self {
        FramedLink {
            io,
            device: device.into(),
            timing,
            decoder: Decoder::new(),
            decoded: VecDeque::new(),
            events: VecDeque::new(),
            next_id: first_id,
            prompt: false,
            counters: LineCounters::default(),
            last_byte: Instant::now(),
        }
    }

    fn io_error(&self, e: std::io::Error) -> LinkError {
        LinkError::Io {
            device: self.device.clone(),
            reason: e.to_string(),
        }
    }

    /// The next decoded item, or `None` once `deadline` passes; with
    /// `gap`, also once a line has been left unfinished that long.
    async fn read_until(
        &mut self,
        deadline: Instant,
        gap: Option<Duration>,
    ) -> Result<Option<Decoded>, LinkError> {
        let mut buf = [0u8; 1024];
        loop {
            if let Some(d) = self.decoded.pop_front() {
                return Ok(Some(d));
            }
            let until = match gap {
                Some(gap) if self.decoder.pending() > 0 => deadline.min(self.last_byte + gap),
                _ => deadline,
            };
            match tokio::time::timeout_at(until, self.io.read(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => {
                    return Err(LinkError::Io {
                        device: self.device.clone(),
                        reason: "the line was closed".into(),
                    });
                }
                Ok(Ok(n)) => {
                    self.last_byte = Instant::now();
                    let mut out = Vec::new();
                    self.decoder.feed(&buf[..n], &mut out);
                    self.decoded.extend(out);
                }
                Ok(Err(e)) => return Err(self.io_error(e)),
            }
        }
    }

    fn take_event(&mut self, f: &Frame) {
        match JigEvent::from_frame(f) {
            Ok(e) => self.events.push_back(e),
            Err(e) => tracing::warn!(device = %self.device, "ignoring a jig event: {e}"),
        }
    }
}

#[async_trait]
impl<T: AsyncRead + AsyncWrite + Unpin + Send> JigLink for FramedLink<T> {
    async fn call(&mut self, req: &Request) -> Result<Frame, LinkError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let verb = req.verb();
        // Both copies are wiped when the call ends: a KEYLOAD carries a key.
        let mut frame = req.to_frame(id);
        let bytes = zeroize::Zeroizing::new(frame.encode());
        frame.wipe();
        // A board that takes notices answers at once, BUSY at least; the
        // slow wait is for after its BUSY.
        let wait = if req.is_slow() && !self.prompt {
            self.timing.slow_timeout
        } else {
            self.timing.timeout
        };
        let mut problem: Option<String> = None;
        let attempts = self.timing.attempts.max(1);
        let mut sent = 0;
        let mut silences = 0;
        // BUSY extends the wait, but only up to busy_limit for the request
        // as a whole, over all its attempts.
        let requested = Instant::now();
        while sent < attempts && silences < SILENCES {
            if sent > 0 {
                tracing::debug!(device = %self.device, verb, attempt = sent + 1, "resending request");
                self.counters.resends += 1;
            }
            sent += 1;
            // An unfinished line is a truncated frame: it will not be
            // completed by anything still to come.
            self.decoder.reset();
            self.io
                .write_all(&bytes)
                .await
                .map_err(|e| self.io_error(e))?;
            self.io.flush().await.map_err(|e| self.io_error(e))?;
            let mut deadline = Instant::now() + wait;
            // A board that takes notices writes each frame whole: a line
            // it leaves unfinished for LINE_GAP lost its end on the way.
            let gap = self.prompt.then_some(LINE_GAP);
            loop {
                let item = match self.read_until(deadline, gap).await? {
                    Some(item) => item,
                    None if Instant::now() < deadline && self.decoder.pending() > 0 => {
                        self.counters.damaged += 1;
                        problem = Some(format!(
                            "a frame cut short after {} bytes (its line end lost)",
                            self.decoder.pending()
                        ));
                        silences = 0;
                        break;
                    }
                    None => {
                        if self.decoder.pending() > 0 {
                            self.counters.damaged += 1;
                            problem = Some(format!(
                                "a frame cut short after {} bytes, then silence",
                                self.decoder.pending()
                            ));
                        }
                        silences += 1;
                        break;
                    }
                };
                match item {
                    // A notice names no request: the board could not read
                    // the line. Ours is the only one outstanding.
                    Decoded::Frame(f) if f.kind == Kind::Response && f.verb == NOTICE => {
                        self.counters.notices += 1;
                        let why = f.get("why").unwrap_or("unspecified");
                        tracing::debug!(device = %self.device, verb, why, "the board got a damaged line");
                        problem = Some(format!(
                            "the board said the request arrived damaged ({why})"
                        ));
                        silences = 0;
                        break;
                    }
                    Decoded::Frame(f) if f.kind == Kind::Response && f.id == id => {
                        match f.verb.as_str() {
                            "OK" => return Ok(f),
                            "ERR" => {
                                return Err(LinkError::Refused {
                                    verb,
                                    code: f.get("code").unwrap_or("unspecified").to_string(),
                                    message: f.get("msg").unwrap_or("").to_string(),
                                });
                            }
                            "BUSY" if requested.elapsed() < self.timing.busy_limit => {
                                deadline = Instant::now() + self.timing.slow_timeout;
                            }
                            "BUSY" => {
                                return Err(LinkError::StuckBusy {
                                    device: self.device.clone(),
                                    verb,
                                    secs: requested.elapsed().as_secs(),
                                });
                            }
                            other => {
                                problem = Some(format!(
                                    "an answer {other:?} that is not OK, ERR or BUSY"
                                ));
                                silences = 0;
                                break;
                            }
                        }
                    }
                    Decoded::Frame(f) if f.kind == Kind::Event => self.take_event(&f),
                    Decoded::Frame(f) if f.kind == Kind::Response => {
                        tracing::debug!(device = %self.device, stale_id = f.id, "ignoring an answer to an earlier request");
                    }
                    Decoded::Frame(_) => {
                        problem =
                            Some("our own request echoed back (is the line in echo mode?)".into());
                    }
                    Decoded::Comment(text) => {
                        tracing::debug!(device = %self.device, board_log = %text, "board says");
                    }
                    Decoded::Error(e) => {
                        self.counters.damaged += 1;
                        tracing::debug!(device = %self.device, verb, error = %e, "damaged frame");
                        problem = Some(e.to_string());
                        silences = 0;
                        // Whatever it was, ask again: the board answers a
                        // repeated id from its memory, without acting twice.
                        break;
                    }
                }
            }
        }
        Err(match problem {
            Some(problem) => LinkError::Garbled {
                device: self.device.clone(),
                verb,
                attempts: sent,
                problem,
            },
            None => LinkError::NoAnswer {
                device: self.device.clone(),
                verb,
                attempts: sent,
                wait_ms: wait.as_millis() as u64,
            },
        })
    }

    async fn next_event(&mut self, wait: Duration) -> Result<Option<JigEvent>, LinkError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            match self.read_until(deadline, None).await? {
                None => return Ok(None),
                Some(Decoded::Frame(f)) if f.kind == Kind::Event => self.take_event(&f),
                Some(Decoded::Frame(f)) => {
                    tracing::debug!(device = %self.device, id = f.id, verb = %f.verb, "ignoring a frame while idle");
                }
                Some(Decoded::Comment(text)) => {
                    tracing::debug!(device = %self.device, board_log = %text, "board says");
                }
                Some(Decoded::Error(e)) => {
                    self.counters.damaged += 1;
                    tracing::warn!(device = %self.device, "noise on the jig line while idle: {e}");
                }
            }
        }
    }

    fn device(&self) -> &str {
        &self.device
    }

    fn board_takes_notices(&mut self, on: bool) {
        self.prompt = on;
    }

    fn counters(&self) -> LineCounters {
        self.counters
    }
}

/// Opens a serial device as a jig link.
pub fn open_serial(
    device: &str,
    baud: u32,
    timing: LinkTiming,
    first_id: u16,
) -> Result<FramedLink<tokio_serial::SerialStream>, LinkError> {
    use tokio_serial::{SerialPort, SerialPortBuilderExt};
    let port = tokio_serial::new(device, baud)
        .timeout(Duration::from_millis(100))
        .open_native_async()
        .map_err(|e| LinkError::Io {
            device: device.to_string(),
            reason: match e.kind {
                tokio_serial::ErrorKind::NoDevice => "no such device".to_string(),
                _ => e.to_string(),
            },
        })?;
    // Whatever the board said while nobody listened is stale.
    let _ = port.clear(tokio_serial::ClearBuffer::Input);
    Ok(FramedLink::new(port, device, timing, first_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jig::protocol::Request;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn quick() -> LinkTiming {
        LinkTiming {
            timeout: Duration::from_millis(100),
            slow_timeout: Duration::from_millis(200),
            attempts: 3,
            busy_limit: Duration::from_secs(5),
        }
    }

    /// A board that answers each request line with `answer(attempt, frame)`.
    fn board(
        answer: impl Fn(u32, &Frame) -> Vec<u8> + Send + 'static,
    ) -> FramedLink<tokio::io::DuplexStream> {
        board_with(quick(), answer)
    }

    fn board_with(
        timing: LinkTiming,
        answer: impl Fn(u32, &Frame) -> Vec<u8> + Send + 'static,
    ) -> FramedLink<tokio::io::DuplexStream> {
        let (station, board) = tokio::io::duplex(16 * 1024);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(board);
            let mut lines = BufReader::new(r).lines();
            let mut n = 0;
            while let Ok(Some(line)) = lines.next_line().await {
                n += 1;
                let mut d = Decoder::new();
                let mut out = Vec::new();
                d.feed(format!("{line}\n").as_bytes(), &mut out);
                if let Some(Decoded::Frame(f)) = out.pop() {
                    let bytes = answer(n, &f);
                    if w.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            }
        });
        FramedLink::new(station, "test-line", timing, 0x100)
    }

    fn ok(f: &Frame) -> Vec<u8> {
        Frame::new(Kind::Response, f.id, "OK")
            .arg("x", "1")
            .encode()
    }

    #[tokio::test]
    async fn answers_and_events() {
        let mut link = board(|_, f| {
            let mut b = JigEvent::Inserted.to_frame(1).encode();
            b.extend(ok(f));
            b
        });
        let f = link.call(&Request::Ident).await.unwrap();
        assert_eq!(f.get("x"), Some("1"));
        assert_eq!(
            link.next_event(Duration::from_millis(10)).await.unwrap(),
            Some(JigEvent::Inserted)
        );
    }

    #[tokio::test]
    async fn a_damaged_answer_is_retried_with_the_same_id() {
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        let mut link = board(move |n, f| {
            seen.lock().unwrap().push(f.id);
            let mut b = ok(f);
            if n == 1 {
                b[3] ^= 1;
            }
            b
        });
        link.call(&Request::Ident).await.unwrap();
        let ids = ids.lock().unwrap().clone();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1]);
    }

    #[tokio::test]
    async fn silence_is_no_answer() {
        let mut link = board(|_, _| Vec::new());
        let e = link.call(&Request::Ident).await.unwrap_err();
        assert!(matches!(e, LinkError::NoAnswer { attempts: 3, .. }), "{e}");
        assert!(e.to_string().contains("check the cable"));
    }

    #[tokio::test]
    async fn truncated_answers_are_named() {
        let mut link = board(|_, f| ok(f)[..6].to_vec());
        let e = link.call(&Request::Ident).await.unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[tokio::test]
    async fn stale_answers_are_ignored_and_busy_extends_the_wait() {
        let mut link = board(|_, f| {
            let mut b = Frame::new(Kind::Response, f.id.wrapping_sub(1), "OK").encode();
            b.extend(Frame::new(Kind::Response, f.id, "BUSY").encode());
            b
        });
        // BUSY keeps it waiting past one timeout, then silence: no answer.
        let e = link
            .call(&Request::KeyGen {
                cn: crate::ids::Guid::from_bytes([1; 16]),
            })
            .await;
        assert!(matches!(e, Err(LinkError::NoAnswer { .. })));
    }

    #[tokio::test]
    async fn busy_forever_is_its_own_error() {
        // A board that answers BUSY every 50 ms and never finishes.
        let (station, mut board) = tokio::io::duplex(16 * 1024);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            let n = board.read(&mut buf).await.unwrap();
            let mut d = Decoder::new();
            let mut out = Vec::new();
            d.feed(&buf[..n], &mut out);
            let Some(Decoded::Frame(f)) = out.pop() else {
                return;
            };
            loop {
                let busy = Frame::new(Kind::Response, f.id, "BUSY").encode();
                if board.write_all(&busy).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let timing = LinkTiming {
            busy_limit: Duration::from_millis(400),
            ..quick()
        };
        let mut link = FramedLink::new(station, "test-line", timing, 1);
        let e = link
            .call(&Request::Store { chain: vec![] })
            .await
            .unwrap_err();
        assert_eq!(e.code(), "board_busy", "{e}");
        assert!(e.to_string().contains("power-cycle"), "{e}");
    }

    #[tokio::test]
    async fn a_notice_brings_the_same_request_again_at_once() {
        let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ids.clone();
        // The waits are long: only an immediate resend passes in time.
        let mut link = board_with(
            LinkTiming {
                timeout: Duration::from_secs(30),
                slow_timeout: Duration::from_secs(30),
                ..quick()
            },
            move |n, f| {
                seen.lock().unwrap().push(f.id);
                if n == 1 {
                    crate::jig::protocol::notice("crc").encode()
                } else {
                    ok(f)
                }
            },
        );
        let started = std::time::Instant::now();
        link.call(&Request::Ident).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let ids = ids.lock().unwrap().clone();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1], "the same frame, the same id");
        let c = link.counters();
        assert_eq!((c.notices, c.resends, c.damaged), (1, 1, 0));
    }

    #[tokio::test]
    async fn notices_to_every_send_use_up_the_attempts_without_waiting() {
        let timing = LinkTiming {
            timeout: Duration::from_secs(30),
            slow_timeout: Duration::from_secs(30),
            attempts: 8,
            ..quick()
        };
        let mut link = board_with(timing, |_, _| crate::jig::protocol::notice("crc").encode());
        let e = link.call(&Request::Ident).await.unwrap_err();
        assert!(matches!(e, LinkError::Garbled { attempts: 8, .. }), "{e}");
        assert!(e.to_string().contains("arrived damaged"), "{e}");
        assert_eq!(link.counters().notices, 8);
        assert_eq!(link.counters().resends, 7);
    }

    #[tokio::test]
    async fn silence_ends_a_request_after_three_waits_whatever_the_attempts() {
        let timing = LinkTiming {
            attempts: 10,
            ..quick()
        };
        let sends = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let n = sends.clone();
        let mut link = board_with(timing, move |_, _| {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Vec::new()
        });
        let e = link.call(&Request::Ident).await.unwrap_err();
        assert!(matches!(e, LinkError::NoAnswer { attempts: 3, .. }), "{e}");
        assert_eq!(sends.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_board_that_takes_notices_gets_the_quick_wait_for_slow_requests() {
        // quick(): 100 ms quick, 200 ms slow; three silent sends.
        let mut link = board(|_, _| Vec::new());
        let keygen = Request::KeyGen {
            cn: crate::ids::Guid::from_bytes([1; 16]),
        };
        let e = link.call(&keygen).await.unwrap_err();
        assert!(matches!(e, LinkError::NoAnswer { wait_ms: 200, .. }), "{e}");
        link.board_takes_notices(true);
        let e = link.call(&keygen).await.unwrap_err();
        assert!(matches!(e, LinkError::NoAnswer { wait_ms: 100, .. }), "{e}");
    }

    #[tokio::test]
    async fn an_answer_that_lost_its_line_end_is_sent_again_after_the_gap() {
        let timing = LinkTiming {
            timeout: Duration::from_secs(30),
            slow_timeout: Duration::from_secs(30),
            ..quick()
        };
        // The first answer arrives without its LF, then nothing.
        let mut link = board_with(timing, |n, f| {
            let mut b = ok(f);
            if n == 1 {
                b.pop();
            }
            b
        });
        // A board from before notices gets the whole wait: not here.
        link.board_takes_notices(true);
        let started = std::time::Instant::now();
        link.call(&Request::Ident).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let c = link.counters();
        assert_eq!((c.damaged, c.resends), (1, 1));
    }

    #[tokio::test]
    async fn damaged_answers_are_counted() {
        let mut link = board(|n, f| {
            let mut b = ok(f);
            if n < 3 {
                b[3] ^= 1;
            }
            b
        });
        link.call(&Request::Ident).await.unwrap();
        let c = link.counters();
        assert_eq!((c.damaged, c.resends, c.damaged_frames()), (2, 2, 2));
    }

    #[tokio::test]
    async fn refusals_carry_the_boards_words() {
        let mut link = board(|_, f| {
            Frame::new(Kind::Response, f.id, "ERR")
                .arg("code", "flash_write_failed")
                .arg("msg", "sector 3 will not erase")
                .encode()
        });
        let e = link.call(&Request::ReadCert).await.unwrap_err();
        assert_eq!(e.code(), "board_refused");
        assert!(e.to_string().contains("sector 3 will not erase"), "{e}");
    }
}
