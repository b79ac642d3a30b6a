//! Jig protocol v1 framing: one frame per text line, with a CRC.
//!
//! Owns the byte-level format described in `docs/jig-protocol.md`: encoding a
//! [`Frame`] to bytes and decoding a byte stream into frames, comments and
//! framing errors. Pure code, no I/O: the link feeds it whatever the serial
//! line delivered, in whatever pieces.
//!
//! ```text
//! >002A IDENT*67C2\r\n
//! <002A OK guid=0a1b2c3d-0000-4000-8000-00000000abcd hw=B2 fw=1.4.2 mac=02:00:5e:10:00:01*11B4\r\n
//! ```

use std::fmt;

/// Largest frame on the line, from the kind character through `\r\n`.
pub const MAX_FRAME: usize = 4096;

const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

/// Who sent a frame and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `>` station to board.
    Request,
    /// `<` board to station, answering the request with the same id.
    Response,
    /// `!` jig or board to station, unsolicited.
    Event,
}

impl Kind {
    fn to_byte(self) -> u8 {
        match self {
            Kind::Request => b'>',
            Kind::Response => b'<',
            Kind::Event => b'!',
        }
    }
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            b'>' => Some(Kind::Request),
            b'<' => Some(Kind::Response),
            b'!' => Some(Kind::Event),
            _ => None,
        }
    }
}

/// One frame: kind, 16-bit id, verb and `key=value` arguments (values already
/// percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub id: u16,
    pub verb: String,
    pub args: Vec<(String, String)>,
}

impl Frame {
    /// A frame with no arguments yet.
    ///
    /// ```
    /// use station::jig::frame::{Frame, Kind};
    /// let f = Frame::new(Kind::Request, 0x2a, "IDENT");
    /// assert_eq!(f.encode(), b">002A IDENT*67C2\r\n");
    /// ```
    pub fn new(kind: Kind, id: u16, verb: &str) -> Frame {
        Frame {
            kind,
            id,
            verb: verb.to_string(),
            args: Vec::new(),
        }
    }

    /// Adds an argument (builder style).
    pub fn arg(mut self, key: &str, value: impl Into<String>) -> Frame {
        self.args.push((key.to_string(), value.into()));
        self
    }

    /// The value of the first argument named `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The frame as it goes on the line, CRC and `\r\n` included.
    pub fn encode(&self) -> Vec<u8> {
        // Sized once: a buffer that grew would leave copies of the values
        // (a key on its way to a board) in memory it gave back.
        let size = 16
            + self.verb.len()
            + self
                .args
                .iter()
                .map(|(k, v)| k.len() + 3 * v.len() + 2)
                .sum::<usize>();
        let mut body = Vec::with_capacity(size);
        body.push(self.kind.to_byte());
        body.extend_from_slice(format!("{:04X} ", self.id).as_bytes());
        body.extend_from_slice(self.verb.as_bytes());
        for (k, v) in &self.args {
            body.push(b' ');
            body.extend_from_slice(k.as_bytes());
            body.push(b'=');
            percent_encode(v, &mut body);
        }
        let crc = CRC.checksum(&body);
        body.extend_from_slice(format!("*{crc:04X}\r\n").as_bytes());
        body
    }
}

impl Frame {
    /// Overwrites the argument values (after a frame that carried a key
    /// has been sent).
    pub fn wipe(&mut self) {
        use zeroize::Zeroize;
        for (_, v) in &mut self.args {
            v.zeroize();
        }
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.encode();
        let text = String::from_utf8_lossy(&bytes);
        f.write_str(text.trim_end())
    }
}

/// Bytes a value may carry unescaped: printable ASCII except `%` and `*`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'%' && b != b'*'
}

fn percent_encode(v: &str, out: &mut Vec<u8>) {
    for &b in v.as_bytes() {
        if is_plain(b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
}

fn percent_decode(v: &[u8]) -> Result<String, FrameError> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            let hex = v
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(FrameError::Malformed(
                    "a % escape is not followed by two hex digits",
                ))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| FrameError::Malformed("an escaped value is not UTF-8"))
}

/// Why a line is not a frame. The decoder has already skipped to the next
/// line when it reports one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a frame longer than {MAX_FRAME} bytes (no line end in time)")]
    Oversized,
    #[error(
        "a frame whose checksum is wrong (CRC {received:04X} received, {computed:04X} computed)"
    )]
    BadCrc { computed: u16, received: u16 },
    #[error("a malformed frame: {0}")]
    Malformed(&'static str),
}

impl FrameError {
    /// The word a board puts in its damaged-line notice (`why=`).
    pub fn code(&self) -> &'static str {
        match self {
            FrameError::Oversized => "oversized",
            FrameError::BadCrc { .. } => "crc",
            FrameError::Malformed(_) => "malformed",
        }
    }
}

/// What the decoder found in the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    /// A `#` line: human-readable log text from the board, not part of the
    /// protocol.
    Comment(String),
    Error(FrameError),
}

/// Streaming decoder: feed it bytes as they arrive, collect what it decodes.
#[derive(Debug, Default)]
pub struct Decoder {
    line: Vec<u8>,
    /// Set after an oversized line: drop bytes up to the next line end.
    discarding: bool,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Bytes of an unfinished line held back (non-zero after a truncated frame).
    pub fn pending(&self) -> usize {
        self.line.len()
    }

    /// Forgets any unfinished line (used before a retry: a frame cut short
    /// will not be completed). An oversized line still arriving stays
    /// discarded up to its line end, so its tail is not taken for a frame.
    pub fn reset(&mut self) {
        self.line.clear();
    }

    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Decoded>) {
        for &b in data {
            if b == b'\n' {
                if self.discarding {
                    self.discarding = false;
                } else if let Some(d) = decode_line(&self.line) {
                    out.push(d);
                }
                self.line.clear();
                continue;
            }
            if self.discarding {
                continue;
            }
            // MAX_FRAME counts the `\n` too, so a full line has at most MAX-1
            // bytes before it.
            if self.line.len() + 1 >= MAX_FRAME {
                self.line.clear();
                self.discarding = true;
                out.push(Decoded::Error(FrameError::Oversized));
                continue;
            }
            self.line.push(b);
        }
    }
}

/// Decodes one line without its `\n`. `None` for a blank line.
fn decode_line(line: &[u8]) -> Option<Decoded> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(|b| b.is_ascii_whitespace()) {
        return None;
    }
    if line[0] == b'#' {
        return Some(Decoded::Comment(
            String::from_utf8_lossy(&line[1..]).trim().to_string(),
        ));
    }
    Some(match parse_line(line) {
        Ok(f) => Decoded::Frame(f),
        Err(e) => Decoded::Error(e),
    })
}

/// Exactly four upper-case hex digits, so that no two spellings of one value
/// exist on the line.
fn parse_hex4(s: &[u8]) -> Option<u16> {
    if s.len() != 4
        || !s
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
    {
        return None;
    }
    s.iter().try_fold(0u16, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc << 4 | d as u16)
    })
}

fn parse_line(line: &[u8]) -> Result<Frame, FrameError> {
    use FrameError::Malformed;
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(Malformed("it contains bytes that are not printable ASCII"));
    }
    let star = line
        .iter()
        .rposition(|&b| b == b'*')
        .ok_or(Malformed("it has no *CRC at the end"))?;
    let (body, crc_part) = (&line[..star], &line[star + 1..]);
    let received = parse_hex4(crc_part).ok_or(Malformed("the CRC is not four hex digits"))?;
    let computed = CRC.checksum(body);
    if computed != received {
        return Err(FrameError::BadCrc { computed, received });
    }
    let kind = Kind::from_byte(body[0]).ok_or(Malformed("it does not start with >, < or !"))?;
    let mut fields = body[1..].split(|&b| b == b' ');
    let id = fields
        .next()
        .and_then(parse_hex4)
        .ok_or(Malformed("the id is not four hex digits"))?;
    let verb = fields
        .next()
        .filter(|v| !v.is_empty() && v.iter().all(|b| b.is_ascii_uppercase()))
        .ok_or(Malformed("the verb is missing or not upper-case letters"))?;
    let mut frame = Frame::new(kind, id, &String::from_utf8_lossy(verb));
    for field in fields {
        let eq = field
            .iter()
            .position(|&b| b == b'=')
            .ok_or(Malformed("an argument is not key=value"))?;
        let key = &field[..eq];
        if key.is_empty()
            || !key
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        {
            return Err(Malformed(
                "an argument name is not lower-case letters, digits or _",
            ));
        }
        let value = percent_decode(&field[eq + 1..])?;
        frame
            .args
            .push((String::from_utf8_lossy(key).into_owned(), value));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Vec<Decoded> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(bytes, &mut out);
        out
    }

    #[test]
    fn encodes_readably() {
        let f = Frame::new(Kind::Request, 0x2a, "IDENT");
        let s = String::from_utf8(f.encode()).unwrap();
        assert!(s.starts_with(">002A IDENT*"), "{s}");
        assert!(s.ends_with("\r\n"));
    }

    #[test]
    fn round_trip_with_escapes() {
        let f = Frame::new(Kind::Response, 7, "ERR")
            .arg("code", "refused")
            .arg("msg", "flash full: 100% used * twice\n");
        let got = decode_all(&f.encode());
        assert_eq!(got, vec![Decoded::Frame(f)]);
    }

    #[test]
    fn bad_crc_is_reported() {
        let mut bytes = Frame::new(Kind::Response, 1, "OK").encode();
        bytes[3] = b'9';
        assert!(matches!(
            decode_all(&bytes)[..],
            [Decoded::Error(FrameError::BadCrc { .. })]
        ));
    }

    #[test]
    fn oversized_line_is_dropped_and_decoder_resyncs() {
        let mut bytes = vec![b'A'; MAX_FRAME + 10];
        bytes.push(b'\n');
        let good = Frame::new(Kind::Event, 3, "REMOVED");
        bytes.extend(good.encode());
        assert_eq!(
            decode_all(&bytes),
            vec![Decoded::Error(FrameError::Oversized), Decoded::Frame(good)]
        );
    }

    #[test]
    fn largest_frame_fits() {
        let base = Frame::new(Kind::Response, 1, "OK").arg("x", "");
        let room = MAX_FRAME - base.encode().len();
        let f = Frame::new(Kind::Response, 1, "OK").arg("x", "a".repeat(room));
        assert_eq!(f.encode().len(), MAX_FRAME);
        assert_eq!(decode_all(&f.encode()), vec![Decoded::Frame(f)]);
        let f = Frame::new(Kind::Response, 1, "OK").arg("x", "a".repeat(room + 1));
        assert_eq!(
            decode_all(&f.encode()),
            vec![Decoded::Error(FrameError::Oversized)]
        );
    }

    #[test]
    fn truncated_frame_stays_pending() {
        let bytes = Frame::new(Kind::Response, 1, "OK").encode();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&bytes[..5], &mut out);
        assert!(out.is_empty());
        assert_eq!(d.pending(), 5);
        d.reset();
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn reset_keeps_discarding_an_oversized_line() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(&vec![b'<'; MAX_FRAME + 10], &mut out);
        assert_eq!(out, vec![Decoded::Error(FrameError::Oversized)]);
        d.reset();
        let good = Frame::new(Kind::Response, 1, "OK");
        let mut rest = vec![b'<'; 70];
        rest.extend_from_slice(b"\r\n");
        rest.extend(good.encode());
        out.clear();
        d.feed(&rest, &mut out);
        assert_eq!(out, vec![Decoded::Frame(good)]);
    }

    #[test]
    fn comments_and_blank_lines() {
        let got = decode_all(b"\r\n# booting v1.4\r\n\n");
        assert_eq!(got, vec![Decoded::Comment("booting v1.4".into())]);
    }

    #[test]
    fn malformed_lines_are_named() {
        let cases: [(&[u8], &str); 4] = [
            (b"hello\n", "CRC"),
            (b"\x01\x02*0000\n", "printable"),
            (b"?0001 OK*ZZZZ\n", "four hex"),
            (b">01 OK\n", "CRC"),
        ];
        for (bytes, needle) in cases {
            match &decode_all(bytes)[..] {
                [Decoded::Error(e)] => assert!(e.to_string().contains(needle), "{e}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            prop_oneof![Just(Kind::Request), Just(Kind::Response), Just(Kind::Event)],
            any::<u16>(),
            "[A-Z]{1,10}",
            proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}", any::<String>()), 0..5),
        )
            .prop_map(|(kind, id, verb, args)| Frame {
                kind,
                id,
                verb,
                args,
            })
            .prop_filter("fits in a frame", |f| f.encode().len() <= MAX_FRAME)
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..12)
        ) {
            let mut d = Decoder::new();
            let mut out = Vec::new();
            for c in &chunks {
                d.feed(c, &mut out);
                prop_assert!(d.pending() < MAX_FRAME);
            }
        }

        #[test]
        fn any_frame_round_trips_in_any_split(f in arb_frame(), split in any::<prop::sample::Index>()) {
            let bytes = f.encode();
            let at = split.index(bytes.len() + 1);
            let mut d = Decoder::new();
            let mut out = Vec::new();
            d.feed(&bytes[..at], &mut out);
            d.feed(&bytes[at..], &mut out);
            prop_assert_eq!(out, vec![Decoded::Frame(f)]);
        }

        #[test]
        fn garbage_before_a_frame_does_not_hide_it(
            garbage in proptest::collection::vec(any::<u8>(), 0..2000),
            f in arb_frame(),
        ) {
            let mut bytes = garbage;
            bytes.push(b'\n');
            bytes.extend(f.encode());
            let got = decode_all(&bytes);
            prop_assert_eq!(got.last(), Some(&Decoded::Frame(f)));
        }

        #[test]
        fn a_flipped_byte_is_never_taken_for_the_original(
            f in arb_frame(), pos in any::<prop::sample::Index>(), flip in 1u8..=255,
        ) {
            let mut bytes = f.encode();
            let len = bytes.len() - 2; // keep the line end
            let i = pos.index(len);
            bytes[i] ^= flip;
            for d in decode_all(&bytes) {
                prop_assert_ne!(d, Decoded::Frame(f.clone()));
            }
        }
    }
}
