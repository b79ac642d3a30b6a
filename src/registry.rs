//! The device record kept after the line, beside its lifecycle: where the
//! device is (site, building, room, free text) and its service notes. What
//! they may hold and who may change them, with the words a caller sees; no
//! I/O. The store keeps them (`store/registry.rs`), the web and the
//! exports show them, and an activation copies the location into the
//! device's twin tags (`lifecycle::request`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::store::Role;

/// Most characters of the site, building or room.
pub const FIELD_LIMIT: usize = 100;
/// Most characters of the location's free text.
pub const TEXT_LIMIT: usize = 500;
/// Most characters of a service note.
pub const NOTE_LIMIT: usize = 2000;

/// Where a device is. Every field is optional; an absent or blank field is
/// `None`, and a location with no field at all is no location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub building: Option<String>,
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

impl Location {
    /// The location as typed, trimmed and checked; the message says what
    /// to fix.
    pub fn checked(self) -> Result<Location, String> {
        Ok(Location {
            site: field("site", self.site, FIELD_LIMIT, false)?,
            building: field("building", self.building, FIELD_LIMIT, false)?,
            room: field("room", self.room, FIELD_LIMIT, false)?,
            text: field("location text", self.text, TEXT_LIMIT, true)?,
        })
    }

    /// No field is set.
    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }

    /// The fields that are set, by name, in order.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        [
            ("site", &self.site),
            ("building", &self.building),
            ("room", &self.room),
            ("text", &self.text),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
        .collect()
    }

    /// The location as a twin tag: an object of the fields that are set.
    pub fn as_tag(&self) -> Value {
        Value::Object(
            self.fields()
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect::<Map<_, _>>(),
        )
    }

    /// One line for people: `site / building / room — text`.
    pub fn summary(&self) -> String {
        let place: Vec<&str> = [&self.site, &self.building, &self.room]
            .into_iter()
            .filter_map(|v| v.as_deref())
            .collect();
        match (place.is_empty(), self.text.as_deref()) {
            (true, None) => String::new(),
            (true, Some(t)) => t.to_string(),
            (false, None) => place.join(" / "),
            (false, Some(t)) => format!("{} — {t}", place.join(" / ")),
        }
    }
}

/// A field trimmed, blank as `None`, within `limit` characters, without
/// control characters (the free text may hold line breaks and tabs).
fn field(
    what: &str,
    v: Option<String>,
    limit: usize,
    lines: bool,
) -> Result<Option<String>, String> {
    let Some(v) = v else { return Ok(None) };
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let n = v.chars().count();
    if n > limit {
        return Err(format!(
            "the {what} is {n} characters long; at most {limit} are kept: shorten it"
        ));
    }
    if v.chars()
        .any(|c| c.is_control() && !(lines && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(format!(
            "the {what} holds a control character: type plain text"
        ));
    }
    Ok(Some(v.to_string()))
}

/// A service note's text, trimmed and checked.
pub fn checked_note(text: &str) -> Result<String, String> {
    match field("note", Some(text.to_string()), NOTE_LIMIT, true)? {
        Some(t) => Ok(t),
        None => Err("the note is empty: write what was done or seen".into()),
    }
}

/// Whether `role` may set a device's location and add service notes:
/// activators, supervisors and admins, as for an activation; not
/// operators.
pub fn may_edit(role: Role) -> Result<(), String> {
    if role.may_activate() {
        Ok(())
    } else {
        Err(format!(
            "a device's location and service notes need the activator, supervisor or admin role; this is {}",
            role.as_str()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_location_is_trimmed_blank_fields_dropped_and_bounds_named() {
        let l = Location {
            site: Some("  Plant 2 ".into()),
            building: Some("   ".into()),
            room: None,
            text: Some("rack 4,\nshelf 2".into()),
        }
        .checked()
        .unwrap();
        assert_eq!(l.site.as_deref(), Some("Plant 2"));
        assert_eq!(l.building, None);
        assert_eq!(l.summary(), "Plant 2 — rack 4,\nshelf 2");
        assert_eq!(
            l.as_tag(),
            serde_json::json!({"site": "Plant 2", "text": "rack 4,\nshelf 2"})
        );
        assert!(Location::default().checked().unwrap().is_empty());

        let long = Location {
            room: Some("x".repeat(FIELD_LIMIT + 1)),
            ..Location::default()
        };
        let e = long.checked().unwrap_err();
        assert!(
            e.contains("the room is 101 characters long; at most 100"),
            "{e}"
        );
        let bell = Location {
            site: Some("a\u{7}b".into()),
            ..Location::default()
        };
        assert!(bell.checked().unwrap_err().contains("control character"));
        let newline_in_room = Location {
            room: Some("a\nb".into()),
            ..Location::default()
        };
        assert!(newline_in_room.checked().is_err());
    }

    #[test]
    fn a_note_is_not_empty_and_bounded() {
        assert_eq!(checked_note("  swapped fan \n").unwrap(), "swapped fan");
        assert!(checked_note(" \n ").unwrap_err().contains("empty"));
        assert!(
            checked_note(&"n".repeat(NOTE_LIMIT + 1))
                .unwrap_err()
                .contains("at most 2000")
        );
    }

    #[test]
    fn operators_may_not_edit_the_record() {
        assert!(may_edit(Role::Activator).is_ok());
        assert!(may_edit(Role::Supervisor).is_ok());
        assert!(may_edit(Role::Admin).is_ok());
        let e = may_edit(Role::Operator).unwrap_err();
        assert!(e.contains("this is operator"), "{e}");
    }
}
