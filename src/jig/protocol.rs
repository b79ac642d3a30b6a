//! Jig protocol v1 messages: the typed requests the station sends, the
//! answers it expects and the events a jig raises, mapped to and from
//! [`Frame`]s. Both the station's link and the board simulator use this
//! module, so the two sides cannot drift apart.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::frame::{Frame, Kind};
use crate::core::settings::{ProvisioningSettings, SETTINGS_KEYS};
use crate::ids::{Guid, parse_short_text};

/// The protocol version this station speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Length of the station nonce a board signs to prove it holds its key.
pub const NONCE_LEN: usize = 32;

/// Prefix of the message a board signs for SIGN, so that a board key never
/// signs bytes chosen wholly by someone else (a TLS transcript, say).
pub const KEY_PROOF_CONTEXT: &[u8] = b"JIGv1 key-proof\0";

/// The exact bytes a board signs for `SIGN nonce=…`.
pub fn key_proof_message(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut m = KEY_PROOF_CONTEXT.to_vec();
    m.extend_from_slice(nonce);
    m
}

/// The capability a board announces in its HELLO answer (`caps=settings`)
/// when it takes `SETTINGS` and `READSETTINGS`.
pub const CAP_SETTINGS: &str = "settings";

/// The capability a board announces when it takes a symmetric key
/// (`KEYSET`) and proves it (`HMAC`).
pub const CAP_SYMKEY: &str = "symkey";

/// The capability of a board that answers a line it cannot accept with a
/// damaged-line notice (`<0000 NAK why=…`), so that the station resends
/// at once instead of waiting out its timeout; such a board also answers
/// every request (BUSY at least) within the quick timeout.
pub const CAP_NOTICE: &str = "notice";

/// The capability of a board that takes its certificate chain in pieces
/// (`STORE offset= size= data=`) and reads it back in pieces
/// (`READCERT offset= max=`).
pub const CAP_PIECES: &str = "pieces";

/// What the station offers in its HELLO request (`caps=`): the line's
/// own capabilities. The board's answer says which it takes.
pub const STATION_CAPS: &str = "notice,pieces";

/// Once notices are agreed, a line left unfinished this long (no byte
/// arrives) has lost its end on the way, and either side takes it for a
/// damaged line: the board sends a notice, the station resends.
pub const LINE_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// The verb of a damaged-line notice.
pub const NOTICE: &str = "NAK";

/// The longest chain text (base64, comma-separated) a board may announce
/// when it reads its chain back in pieces.
pub const MAX_CHAIN_TEXT: usize = 64 * 1024;

/// A board's damaged-line notice: the line it got was not a frame it can
/// accept, `why` says how (`crc`, `malformed` or `oversized`). Its id is
/// always 0000: the board cannot trust the id of a line it could not read.
pub fn notice(why: &str) -> Frame {
    Frame::new(Kind::Response, 0, NOTICE).arg("why", why)
}

pub use crate::ids::BoardIdentity;

/// A P-256 private key on its way to a board (`KEYLOAD`): wiped from
/// memory when dropped, and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretScalar(pub zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretScalar([redacted])")
    }
}

/// A symmetric key on its way to a board (`KEYSET`): wiped from memory
/// when dropped, and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(pub zeroize::Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// A request from station to board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello {
        station: String,
    },
    Status,
    Ident,
    KeyGen {
        cn: Guid,
    },
    /// Take this key (made by the station) as the board's key.
    KeyLoad {
        key: SecretScalar,
    },
    Store {
        chain: Vec<Vec<u8>>,
    },
    /// One piece of the chain's text (as `chain=` would carry it), from
    /// byte `offset` of `size`: the board keeps the chain only when the
    /// last piece has arrived, after every one before it.
    StorePiece {
        offset: usize,
        size: usize,
        data: String,
    },
    ReadCert,
    /// At most `max` bytes of the stored chain's text from `offset`.
    ReadCertPiece {
        offset: usize,
        max: usize,
    },
    Sign {
        nonce: [u8; NONCE_LEN],
    },
    /// Keep these provisioning settings for the first boot.
    Settings(ProvisioningSettings),
    /// Say which provisioning settings you keep.
    ReadSettings,
    /// Take this symmetric key (derived by the station) as the device key.
    KeySet {
        key: SecretKey,
    },
    /// Prove the symmetric key: HMAC-SHA256 of the key-proof message.
    Hmac {
        nonce: [u8; NONCE_LEN],
    },
    Finish {
        pass: bool,
        code: Option<String>,
    },
}

impl Request {
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "HELLO",
            Request::Status => "STATUS",
            Request::Ident => "IDENT",
            Request::KeyGen { .. } => "KEYGEN",
            Request::KeyLoad { .. } => "KEYLOAD",
            Request::Store { .. } | Request::StorePiece { .. } => "STORE",
            Request::ReadCert | Request::ReadCertPiece { .. } => "READCERT",
            Request::Sign { .. } => "SIGN",
            Request::Settings(_) => "SETTINGS",
            Request::ReadSettings => "READSETTINGS",
            Request::KeySet { .. } => "KEYSET",
            Request::Hmac { .. } => "HMAC",
            Request::Finish { .. } => "FINISH",
        }
    }

    /// Requests that may legitimately take long on the board (key
    /// generation, flash writes) get the slow timeout. Of a chain in
    /// pieces only the last is written to flash.
    pub fn is_slow(&self) -> bool {
        match self {
            Request::StorePiece { offset, size, data } => offset + data.len() >= *size,
            _ => matches!(
                self,
                Request::KeyGen { .. }
                    | Request::KeyLoad { .. }
                    | Request::Store { .. }
                    | Request::Settings(_)
                    | Request::KeySet { .. }
            ),
        }
    }

    pub fn to_frame(&self, id: u16) -> Frame {
        let f = Frame::new(Kind::Request, id, self.verb());
        match self {
            Request::Hello { station } => f
                .arg("v", PROTOCOL_VERSION.to_string())
                .arg("station", station.clone())
                .arg("caps", STATION_CAPS),
            Request::Status | Request::Ident | Request::ReadCert | Request::ReadSettings => f,
            Request::Settings(settings) => settings_args(settings, f),
            Request::KeySet { key } => f
                .arg("alg", "hmac-sha256")
                .arg("key", B64.encode(key.0.as_slice())),
            Request::Hmac { nonce } => f.arg("nonce", B64.encode(nonce)),
            Request::KeyGen { cn } => f.arg("alg", "p256").arg("cn", cn.to_string()),
            Request::KeyLoad { key } => f
                .arg("alg", "p256")
                .arg("key", B64.encode(key.0.as_slice())),
            Request::Store { chain } => f.arg("chain", encode_chain(chain)),
            Request::StorePiece { offset, size, data } => f
                .arg("offset", offset.to_string())
                .arg("size", size.to_string())
                .arg("data", data.clone()),
            Request::ReadCertPiece { offset, max } => f
                .arg("offset", offset.to_string())
                .arg("max", max.to_string()),
            Request::Sign { nonce } => f.arg("nonce", B64.encode(nonce)),
            Request::Finish { pass, code } => {
                let f = f.arg("result", if *pass { "pass" } else { "fail" });
                match code {
                    Some(c) => f.arg("code", c.clone()),
                    None => f,
                }
            }
        }
    }

    /// Board side: reads a request frame.
    pub fn from_frame(f: &Frame) -> Result<Request, AnswerError> {
        Ok(match f.verb.as_str() {
            "HELLO" => Request::Hello {
                station: f.get("station").unwrap_or("").to_string(),
            },
            "STATUS" => Request::Status,
            "IDENT" => Request::Ident,
            "KEYGEN" => Request::KeyGen {
                cn: need(f, "cn")?.parse().map_err(|e| bad(f, "cn", e))?,
            },
            "KEYLOAD" => {
                if need(f, "alg")? != "p256" {
                    return Err(bad(f, "alg", "only p256 is known"));
                }
                let key = zeroize::Zeroizing::new(
                    B64.decode(need(f, "key")?).map_err(|e| bad(f, "key", e))?,
                );
                let scalar: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad(f, "key", "it is not 32 bytes"))?;
                Request::KeyLoad {
                    key: SecretScalar(zeroize::Zeroizing::new(scalar)),
                }
            }
            "STORE" if f.get("data").is_some() => Request::StorePiece {
                offset: number(f, "offset")?,
                size: number(f, "size")?,
                data: need(f, "data")?.to_string(),
            },
            "STORE" => Request::Store {
                chain: decode_chain(need(f, "chain")?).map_err(|e| bad(f, "chain", e))?,
            },
            "READCERT" if f.get("offset").is_some() => Request::ReadCertPiece {
                offset: number(f, "offset")?,
                max: number(f, "max")?,
            },
            "READCERT" => Request::ReadCert,
            "SIGN" => Request::Sign {
                nonce: parse_nonce(f)?,
            },
            "SETTINGS" => Request::Settings(parse_settings(f)?),
            "READSETTINGS" => Request::ReadSettings,
            "KEYSET" => {
                if need(f, "alg")? != "hmac-sha256" {
                    return Err(bad(f, "alg", "only hmac-sha256 is known"));
                }
                let key = zeroize::Zeroizing::new(
                    B64.decode(need(f, "key")?).map_err(|e| bad(f, "key", e))?,
                );
                let bytes: [u8; 32] = key
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad(f, "key", "it is not 32 bytes"))?;
                Request::KeySet {
                    key: SecretKey(zeroize::Zeroizing::new(bytes)),
                }
            }
            "HMAC" => Request::Hmac {
                nonce: parse_nonce(f)?,
            },
            "FINISH" => Request::Finish {
                pass: need(f, "result")? == "pass",
                code: f.get("code").map(str::to_string),
            },
            _ => return Err(AnswerError::new(&f.verb, "an unknown verb")),
        })
    }
}

/// A jig event: unsolicited, describing the jig's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JigEvent {
    Inserted,
    Removed,
    TestPassed,
    TestFailed { code: String, message: String },
}

impl JigEvent {
    pub fn to_frame(&self, seq: u16) -> Frame {
        match self {
            JigEvent::Inserted => Frame::new(Kind::Event, seq, "INSERTED"),
            JigEvent::Removed => Frame::new(Kind::Event, seq, "REMOVED"),
            JigEvent::TestPassed => Frame::new(Kind::Event, seq, "TEST").arg("result", "pass"),
            JigEvent::TestFailed { code, message } => Frame::new(Kind::Event, seq, "TEST")
                .arg("result", "fail")
                .arg("code", code.clone())
                .arg("msg", message.clone()),
        }
    }

    pub fn from_frame(f: &Frame) -> Result<JigEvent, AnswerError> {
        Ok(match f.verb.as_str() {
            "INSERTED" => JigEvent::Inserted,
            "REMOVED" => JigEvent::Removed,
            "TEST" => match need(f, "result")? {
                "pass" => JigEvent::TestPassed,
                _ => JigEvent::TestFailed {
                    code: f.get("code").unwrap_or("unspecified").to_string(),
                    message: f.get("msg").unwrap_or("").to_string(),
                },
            },
            _ => return Err(AnswerError::new(&f.verb, "an unknown event")),
        })
    }
}

/// The jig's view of its slot (`STATUS`), used to resynchronise after a
/// lost event or a station restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JigStatus {
    pub present: bool,
    /// `none`, `running`, `pass` or `fail`.
    pub test: TestState,
    /// The result the station last sent with FINISH for this board, if any.
    pub done: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestState {
    None,
    Running,
    Passed,
    Failed { code: String, message: String },
}

impl JigStatus {
    pub fn to_args(&self, f: Frame) -> Frame {
        let f = f.arg("present", if self.present { "1" } else { "0" });
        let f = match &self.test {
            TestState::None => f.arg("test", "none"),
            TestState::Running => f.arg("test", "running"),
            TestState::Passed => f.arg("test", "pass"),
            TestState::Failed { code, message } => f
                .arg("test", "fail")
                .arg("code", code.clone())
                .arg("msg", message.clone()),
        };
        f.arg(
            "done",
            match self.done {
                None => "none",
                Some(true) => "pass",
                Some(false) => "fail",
            },
        )
    }

    pub fn from_answer(f: &Frame) -> Result<JigStatus, AnswerError> {
        let test = match need(f, "test")? {
            "none" => TestState::None,
            "running" => TestState::Running,
            "pass" => TestState::Passed,
            "fail" => TestState::Failed {
                code: f.get("code").unwrap_or("unspecified").to_string(),
                message: f.get("msg").unwrap_or("").to_string(),
            },
            _ => return Err(bad(f, "test", "not none, running, pass or fail")),
        };
        Ok(JigStatus {
            present: need(f, "present")? == "1",
            test,
            done: match f.get("done") {
                Some("pass") => Some(true),
                Some("fail") => Some(false),
                _ => None,
            },
        })
    }
}

/// An answer that is well framed but whose content is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the board's answer to {verb} is not usable: {reason}")]
pub struct AnswerError {
    pub verb: String,
    pub reason: String,
}

impl AnswerError {
    pub fn new(verb: &str, reason: impl Into<String>) -> Self {
        AnswerError {
            verb: verb.to_string(),
            reason: reason.into(),
        }
    }
}

fn need<'a>(f: &'a Frame, key: &str) -> Result<&'a str, AnswerError> {
    f.get(key)
        .ok_or_else(|| AnswerError::new(&f.verb, format!("it has no {key}=")))
}

/// A decimal number argument (no sign, no leading `+`).
fn number(f: &Frame, key: &str) -> Result<usize, AnswerError> {
    let v = need(f, key)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(f, key, "it is not a decimal number"));
    }
    v.parse().map_err(|e| bad(f, key, e))
}

fn bad(f: &Frame, key: &str, e: impl std::fmt::Display) -> AnswerError {
    AnswerError::new(&f.verb, format!("{key}= is invalid: {e}"))
}

pub fn encode_chain(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|c| B64.encode(c))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_chain(s: &str) -> Result<Vec<Vec<u8>>, base64::DecodeError> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|c| B64.decode(c)).collect()
}

/// Station side: the identity in an `IDENT` answer.
pub fn parse_identity(f: &Frame) -> Result<BoardIdentity, AnswerError> {
    Ok(BoardIdentity {
        guid: need(f, "guid")?.parse().map_err(|e| bad(f, "guid", e))?,
        hw_revision: parse_short_text("hardware revision", need(f, "hw")?)
            .map_err(|e| bad(f, "hw", e))?,
        fw_version: parse_short_text("firmware version", need(f, "fw")?)
            .map_err(|e| bad(f, "fw", e))?,
        mac: need(f, "mac")?.parse().map_err(|e| bad(f, "mac", e))?,
    })
}

pub fn identity_args(id: &BoardIdentity, f: Frame) -> Frame {
    f.arg("guid", id.guid.to_string())
        .arg("hw", id.hw_revision.clone())
        .arg("fw", id.fw_version.clone())
        .arg("mac", id.mac.to_string())
}

/// Station side: the CSR (DER) in a `KEYGEN` answer.
pub fn parse_csr(f: &Frame) -> Result<Vec<u8>, AnswerError> {
    B64.decode(need(f, "csr")?).map_err(|e| bad(f, "csr", e))
}

/// Station side: the chain in a `READCERT` answer.
pub fn parse_chain(f: &Frame) -> Result<Vec<Vec<u8>>, AnswerError> {
    decode_chain(need(f, "chain")?).map_err(|e| bad(f, "chain", e))
}

/// The pieces a chain's text travels in, at most `max` bytes each (at
/// least one piece, so that an empty chain is stored too).
pub fn store_pieces(chain: &[Vec<u8>], max: usize) -> Vec<Request> {
    let text = encode_chain(chain);
    let size = text.len();
    let max = max.max(1);
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let end = (offset + max).min(size);
        out.push(Request::StorePiece {
            offset,
            size,
            // Base64 and commas: every byte is ASCII, so any cut is on a
            // character boundary.
            data: text[offset..end].to_string(),
        });
        offset = end;
        if offset >= size {
            return out;
        }
    }
}

/// Station side: a piece of the stored chain in a `READCERT offset= max=`
/// answer: the whole text's size, and this piece.
pub fn parse_piece(f: &Frame) -> Result<(usize, String), AnswerError> {
    let size = number(f, "size")?;
    if size > MAX_CHAIN_TEXT {
        return Err(bad(
            f,
            "size",
            format!("{size} bytes is more than a chain can be ({MAX_CHAIN_TEXT})"),
        ));
    }
    Ok((size, need(f, "data")?.to_string()))
}

/// Station side: the public key (uncompressed SEC1 point) a board reports
/// in its `KEYLOAD` answer.
pub fn parse_public_key(f: &Frame) -> Result<Vec<u8>, AnswerError> {
    let public = B64.decode(need(f, "pub")?).map_err(|e| bad(f, "pub", e))?;
    if public.len() != 65 || public[0] != 0x04 {
        return Err(bad(f, "pub", "it is not an uncompressed P-256 point"));
    }
    Ok(public)
}

/// Station side: the signature in a `SIGN` answer.
pub fn parse_signature(f: &Frame) -> Result<Vec<u8>, AnswerError> {
    B64.decode(need(f, "sig")?).map_err(|e| bad(f, "sig", e))
}

/// Station side: the version the board chose in its `HELLO` answer.
pub fn parse_hello(f: &Frame) -> Result<u32, AnswerError> {
    need(f, "v")?.parse().map_err(|e| bad(f, "v", e))
}

/// Station side: the capabilities a board announces in its `HELLO` answer
/// (`caps=settings,symkey`); none when it has no `caps=`.
pub fn parse_caps(f: &Frame) -> Vec<String> {
    f.get("caps")
        .unwrap_or("")
        .split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_nonce(f: &Frame) -> Result<[u8; NONCE_LEN], AnswerError> {
    let n = B64
        .decode(need(f, "nonce")?)
        .map_err(|e| bad(f, "nonce", e))?;
    n.try_into()
        .map_err(|_| bad(f, "nonce", "it is not 32 bytes"))
}

/// The settings as `SETTINGS` arguments (and a `READSETTINGS` answer).
pub fn settings_args(s: &ProvisioningSettings, f: Frame) -> Frame {
    SETTINGS_KEYS
        .iter()
        .zip(s.values())
        .fold(f, |f, (k, v)| f.arg(k, v.to_string()))
}

/// The settings in a `SETTINGS` request or a `READSETTINGS` answer.
pub fn parse_settings(f: &Frame) -> Result<ProvisioningSettings, AnswerError> {
    ProvisioningSettings::from_lookup(|k| f.get(k)).map_err(|e| AnswerError::new(&f.verb, e))
}

/// Station side: the MAC in an `HMAC` answer (32 bytes).
pub fn parse_mac(f: &Frame) -> Result<Vec<u8>, AnswerError> {
    let mac = B64.decode(need(f, "mac")?).map_err(|e| bad(f, "mac", e))?;
    if mac.len() != 32 {
        return Err(bad(f, "mac", "it is not 32 bytes"));
    }
    Ok(mac)
}

pub fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_frames() {
        let guid: Guid = "0a1b2c3d-0000-4000-8000-00000000abcd".parse().unwrap();
        for r in [
            Request::Hello {
                station: "st-1".into(),
            },
            Request::Status,
            Request::Ident,
            Request::KeyGen { cn: guid.clone() },
            Request::Store {
                chain: vec![vec![1, 2, 3], vec![4; 700]],
            },
            Request::StorePiece {
                offset: 256,
                size: 700,
                data: "MIIB".into(),
            },
            Request::ReadCert,
            Request::ReadCertPiece {
                offset: 512,
                max: 256,
            },
            Request::Sign { nonce: [9; 32] },
            Request::Settings(ProvisioningSettings {
                endpoint: "global.azure-devices-provisioning.net".into(),
                id_scope: "0ne00A1B2C3".into(),
                registration_id: guid.to_string(),
                attestation: "x509".into(),
            }),
            Request::ReadSettings,
            Request::KeySet {
                key: SecretKey(zeroize::Zeroizing::new([7; 32])),
            },
            Request::Hmac { nonce: [3; 32] },
            Request::Finish {
                pass: false,
                code: Some("csr_rejected".into()),
            },
        ] {
            assert_eq!(Request::from_frame(&r.to_frame(5)).unwrap(), r);
        }
    }

    #[test]
    fn events_and_status_round_trip() {
        for e in [
            JigEvent::Inserted,
            JigEvent::Removed,
            JigEvent::TestPassed,
            JigEvent::TestFailed {
                code: "rf".into(),
                message: "RF power low".into(),
            },
        ] {
            assert_eq!(JigEvent::from_frame(&e.to_frame(1)).unwrap(), e);
        }
        let s = JigStatus {
            present: true,
            test: TestState::Passed,
            done: Some(false),
        };
        let f = s.to_args(Frame::new(Kind::Response, 1, "OK"));
        assert_eq!(JigStatus::from_answer(&f).unwrap(), s);
    }

    #[test]
    fn identity_errors_name_the_field() {
        let f = Frame::new(Kind::Response, 1, "OK")
            .arg("guid", "nope")
            .arg("hw", "B2")
            .arg("fw", "1.0")
            .arg("mac", "02:00:00:00:00:01");
        let e = parse_identity(&f).unwrap_err().to_string();
        assert!(e.contains("guid="), "{e}");
        let f = Frame::new(Kind::Response, 1, "OK");
        assert!(
            parse_identity(&f)
                .unwrap_err()
                .to_string()
                .contains("no guid=")
        );
    }
}
