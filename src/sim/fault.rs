//! The faults a simulated board can be told to have, and when.

use std::fmt;
use std::str::FromStr;

/// A misbehaviour of a simulated board or of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Flip a byte in the middle of the answer to `verb`.
    Corrupt { verb: String },
    /// Lose the answer to `verb` on the line (the board still acts).
    Drop { verb: String },
    /// From the request `verb` on, the board says nothing at all.
    Silence { verb: String },
    /// Send the answer to `verb` with a wrong CRC.
    BadCrc { verb: String },
    /// Send the first half of the answer to `verb`, then nothing.
    Truncated { verb: String },
    /// Send a line longer than the largest frame instead of the answer.
    Oversized { verb: String },
    /// Send random bytes instead of the answer to `verb`.
    Garbage { verb: String },
    /// The CSR names another GUID than the board's own.
    WrongGuid,
    /// The CSR's signature is made with a different key than the one it
    /// carries.
    WrongKey,
    /// The board makes a P-384 key instead of P-256.
    NotP256,
    /// The board refuses to store the certificate (flash write fails).
    RefuseStore,
    /// The jig's functional test fails.
    FailTest,
    /// The board runs firmware from before the provisioning settings and
    /// symmetric keys: its HELLO announces no capabilities, and it refuses
    /// SETTINGS, READSETTINGS, KEYSET and HMAC as unknown requests.
    OldFirmware,
    /// The board reads back other provisioning settings than it was sent.
    WrongSettings,
    /// The board answers HMAC with a proof made with another key.
    WrongHmac,
    /// The board takes every request to `verb` (every request but the
    /// jig's STATUS, without `@VERB`) for a damaged line and answers it
    /// with a notice.
    Nak { verb: Option<String> },
    /// The line fails in the middle of a chain sent in pieces: the board
    /// takes the first piece, and answers every later one with a notice.
    CutStore,
}

impl Fault {
    pub const NAMES: &'static str = "corrupt, drop, silence, bad_crc, truncated, oversized, garbage (each optionally @VERB, default IDENT), wrong_guid, wrong_key, not_p256, refuse_store, fail_test, old_firmware, wrong_settings, wrong_hmac, nak (optionally @VERB, default every request), cut_store";

    /// The request whose answer a line fault damages.
    pub fn line_verb(&self) -> Option<&str> {
        match self {
            Fault::Corrupt { verb }
            | Fault::Drop { verb }
            | Fault::Silence { verb }
            | Fault::BadCrc { verb }
            | Fault::Truncated { verb }
            | Fault::Oversized { verb }
            | Fault::Garbage { verb } => Some(verb),
            _ => None,
        }
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        let (name, verb) = match s.split_once('@') {
            Some((n, v)) => (n, Some(v.to_ascii_uppercase())),
            None => (s, None),
        };
        let line_verb = || verb.clone().unwrap_or_else(|| "IDENT".to_string());
        let f = match name {
            "corrupt" => Fault::Corrupt { verb: line_verb() },
            "drop" => Fault::Drop { verb: line_verb() },
            "silence" => Fault::Silence { verb: line_verb() },
            "bad_crc" => Fault::BadCrc { verb: line_verb() },
            "truncated" => Fault::Truncated { verb: line_verb() },
            "oversized" => Fault::Oversized { verb: line_verb() },
            "garbage" => Fault::Garbage { verb: line_verb() },
            "wrong_guid" => Fault::WrongGuid,
            "wrong_key" => Fault::WrongKey,
            "not_p256" => Fault::NotP256,
            "refuse_store" => Fault::RefuseStore,
            "fail_test" => Fault::FailTest,
            "old_firmware" => Fault::OldFirmware,
            "wrong_settings" => Fault::WrongSettings,
            "wrong_hmac" => Fault::WrongHmac,
            "nak" => Fault::Nak { verb: verb.clone() },
            "cut_store" => Fault::CutStore,
            _ => {
                return Err(format!(
                    "unknown fault {s:?}; known faults: {}",
                    Fault::NAMES
                ));
            }
        };
        if verb.is_some() && f.line_verb().is_none() && !matches!(f, Fault::Nak { .. }) {
            return Err(format!("fault {name:?} takes no @VERB"));
        }
        Ok(f)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Fault::Corrupt { .. } => "corrupt",
            Fault::Drop { .. } => "drop",
            Fault::Silence { .. } => "silence",
            Fault::BadCrc { .. } => "bad_crc",
            Fault::Truncated { .. } => "truncated",
            Fault::Oversized { .. } => "oversized",
            Fault::Garbage { .. } => "garbage",
            Fault::WrongGuid => "wrong_guid",
            Fault::OldFirmware => "old_firmware",
            Fault::WrongSettings => "wrong_settings",
            Fault::WrongHmac => "wrong_hmac",
            Fault::WrongKey => "wrong_key",
            Fault::NotP256 => "not_p256",
            Fault::RefuseStore => "refuse_store",
            Fault::FailTest => "fail_test",
            Fault::Nak { .. } => "nak",
            Fault::CutStore => "cut_store",
        };
        let verb = match self {
            Fault::Nak { verb } => verb.as_deref(),
            other => other.line_verb(),
        };
        match verb {
            Some(v) => write!(f, "{name}@{v}"),
            None => f.write_str(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_verbs() {
        assert_eq!(
            "corrupt@keygen".parse::<Fault>().unwrap(),
            Fault::Corrupt {
                verb: "KEYGEN".into()
            }
        );
        assert_eq!("wrong_key".parse::<Fault>().unwrap(), Fault::WrongKey);
        assert!("wrong_key@IDENT".parse::<Fault>().is_err());
        assert!(
            "melt"
                .parse::<Fault>()
                .unwrap_err()
                .contains("known faults")
        );
        for f in [
            "drop@STORE",
            "fail_test",
            "garbage@IDENT",
            "nak",
            "nak@STORE",
            "cut_store",
        ] {
            assert_eq!(f.parse::<Fault>().unwrap().to_string(), f);
        }
    }
}
