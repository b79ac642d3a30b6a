//! Identifiers that arrive as text from boards, operators and configuration,
//! parsed once into types that cannot hold an invalid value.
//!
//! Owns: [`Guid`], [`Mac`], [`SlotId`], [`Serial`]. Knows nothing of where the
//! text came from; callers wrap the parse error with that context.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a piece of text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {reason}")]
pub struct IdError {
    what: &'static str,
    value: String,
    reason: &'static str,
}

impl IdError {
    fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        // Cap the echoed value: it may be line garbage.
        let value: String = value.chars().take(64).collect();
        IdError {
            what,
            value,
            reason,
        }
    }
}

/// A board's GUID, held in canonical lower-case `8-4-4-4-12` form.
///
/// Boards may report upper or lower case; both parse to the same `Guid`, so a
/// board can never get two certificates by changing the case of its GUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Guid(String);

impl Guid {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Builds a GUID from 16 bytes (used by the simulator to mint new boards).
    pub fn from_bytes(b: [u8; 16]) -> Guid {
        let h = hex::encode(b);
        Guid(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
}

impl FromStr for Guid {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 5 || parts.iter().zip(GROUPS).any(|(p, n)| p.len() != n) {
            return Err(IdError::new(
                "GUID",
                s,
                "expected 8-4-4-4-12 hexadecimal digits",
            ));
        }
        if !parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(IdError::new("GUID", s, "contains a non-hexadecimal digit"));
        }
        Ok(Guid(s.to_ascii_lowercase()))
    }
}

impl TryFrom<String> for Guid {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

impl From<Guid> for String {
    fn from(g: Guid) -> String {
        g.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An Ethernet MAC address, canonical form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac([u8; 6]);

impl Mac {
    pub fn new(bytes: [u8; 6]) -> Mac {
        Mac(bytes)
    }
}

impl FromStr for Mac {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 {
            return Err(IdError::new(
                "MAC address",
                s,
                "expected six hexadecimal pairs such as 02:00:5e:10:00:01",
            ));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(IdError::new(
                    "MAC address",
                    s,
                    "each part must be two hexadecimal digits",
                ));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| IdError::new("MAC address", s, "contains a non-hexadecimal digit"))?;
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// A jig slot number as configured in `station.toml` (1-based, as printed on
/// the fixture).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SlotId(pub u16);

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A certificate serial number as lower-case hex, without separators.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Serial(pub String);

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Short, free-form text fields a board reports (hardware revision, firmware
/// version). Printable ASCII only, at most 32 characters.
pub fn parse_short_text(what: &'static str, s: &str) -> Result<String, IdError> {
    if s.is_empty() || s.len() > 32 {
        return Err(IdError::new(what, s, "must be 1 to 32 characters"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(IdError::new(
            what,
            s,
            "must be printable ASCII without spaces",
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_canonicalised_to_lower_case() {
        let g: Guid = "0A1B2C3D-0000-4000-8000-00000000ABCD".parse().unwrap();
        assert_eq!(g.as_str(), "0a1b2c3d-0000-4000-8000-00000000abcd");
    }

    #[test]
    fn guid_rejects_bad_shapes() {
        for bad in [
            "",
            "0a1b2c3d00004000800000000000abcd",
            "0a1b2c3d-0000-4000-8000-00000000abc",
            "0a1b2c3d-0000-4000-8000-00000000abcg",
            "0a1b2c3d-0000-4000-8000-00000000abcd-",
        ] {
            assert!(bad.parse::<Guid>().is_err(), "{bad:?} accepted");
        }
        let e = "xyz".parse::<Guid>().unwrap_err().to_string();
        assert!(e.contains("8-4-4-4-12"), "{e}");
    }

    #[test]
    fn guid_from_bytes_round_trips() {
        let g = Guid::from_bytes([0xab; 16]);
        assert_eq!(g.as_str().parse::<Guid>().unwrap(), g);
    }

    #[test]
    fn mac_parses_both_separators() {
        let a: Mac = "02:00:5E:10:00:01".parse().unwrap();
        let b: Mac = "02-00-5e-10-00-01".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "02:00:5e:10:00:01");
        assert!("02:00:5e:10:00".parse::<Mac>().is_err());
        assert!("02:00:5e:10:00:zz".parse::<Mac>().is_err());
    }

    #[test]
    fn short_text_rules() {
        assert!(parse_short_text("hw", "B2").is_ok());
        assert!(parse_short_text("hw", "").is_err());
        assert!(parse_short_text("hw", "a b").is_err());
        assert!(parse_short_text("hw", &"x".repeat(33)).is_err());
    }
}

/// What a board says about itself (`IDENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardIdentity {
    pub guid: Guid,
    pub hw_revision: String,
    pub fw_version: String,
    pub mac: Mac,
}
