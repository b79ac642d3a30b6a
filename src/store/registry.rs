//! The device record beside its lifecycle: a device's location and service
//! notes (each change with its audit row, in one transaction), the device
//! lookup by GUID, location or work order, and retirements as the review
//! and the device page read them. A device here is a GUID with a
//! provisioned board record, whatever its attestation.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, audit, ts};
use crate::ids::Guid;
use crate::registry::Location;

/// A service note.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceNote {
    pub id: i64,
    pub author: String,
    pub at: String,
    pub text: String,
}

/// A device retired for good: its enrollment deleted from DPS, its
/// certificates on the CRL, its GUID refused on the line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceRetirement {
    /// The provisioned board record that was retired.
    pub board_id: i64,
    pub retired_at: String,
    pub reason: String,
    pub retired_by: String,
}

/// One device the lookup found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceHit {
    pub guid: String,
    pub location: Option<Location>,
    /// The work order of its newest provisioned board record.
    pub work_order: Option<String>,
    /// When that record finished.
    pub provisioned_at: Option<String>,
    pub retired: bool,
}

/// The newest provisioned board record of a GUID, as a sub-query on `?1`.
pub(super) const CURRENT_BOARD: &str =
    "(SELECT id FROM boards WHERE guid = ?1 AND status = 'provisioned' ORDER BY id DESC LIMIT 1)";

/// The retirement of the board record the device is now, if it is retired
/// (a device provisioned again after an admin's override is not).
pub(super) fn retirement(
    c: &rusqlite::Connection,
    guid: &str,
) -> rusqlite::Result<Option<DeviceRetirement>> {
    c.query_row(
        &format!("SELECT board_id, retired_at, reason, retired_by FROM device_retirements WHERE board_id = {CURRENT_BOARD}"),
        [guid],
        |r| {
            Ok(DeviceRetirement {
                board_id: r.get(0)?,
                retired_at: r.get(1)?,
                reason: r.get(2)?,
                retired_by: r.get(3)?,
            })
        },
    )
    .optional()
}

pub(super) fn location(c: &rusqlite::Connection, guid: &str) -> rusqlite::Result<Option<Location>> {
    c.query_row(
        "SELECT site, building, room, text FROM device_locations WHERE guid = ?1",
        [guid],
        |r| {
            Ok(Location {
                site: r.get(0)?,
                building: r.get(1)?,
                room: r.get(2)?,
                text: r.get(3)?,
            })
        },
    )
    .optional()
}

fn provisioned(c: &rusqlite::Connection, guid: &str) -> rusqlite::Result<bool> {
    c.query_row(
        &format!("SELECT {CURRENT_BOARD} IS NOT NULL"),
        [guid],
        |r| r.get(0),
    )
}

impl Store {
    /// Sets (or, with no field, clears) a device's location, with a
    /// `device_location` audit row naming who and what it was before, in
    /// one transaction. `false` when the station has no provisioned board
    /// record of the GUID (nothing written). `loc` is already checked.
    pub fn set_device_location(
        &self,
        guid: &Guid,
        loc: &Location,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let g = guid.as_str();
        self.with(|c| {
            let tx = c.transaction()?;
            if !provisioned(&tx, g)? {
                return Ok(false);
            }
            let before = location(&tx, g)?;
            if loc.is_empty() {
                tx.execute("DELETE FROM device_locations WHERE guid = ?1", [g])?;
            } else {
                tx.execute(
                    "INSERT INTO device_locations (guid, site, building, room, text, updated_by, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (guid) DO UPDATE SET site = excluded.site, building = excluded.building,
                         room = excluded.room, text = excluded.text, updated_by = excluded.updated_by,
                         updated_at = excluded.updated_at",
                    params![g, loc.site, loc.building, loc.room, loc.text, actor, ts(now)],
                )?;
            }
            audit::append(
                &tx,
                actor,
                "device_location",
                Some(g),
                &serde_json::json!({ "location": (!loc.is_empty()).then_some(loc), "before": before }),
                now,
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Adds a service note by `author`, with a `device_note` audit row, in
    /// one transaction. `None` when the station has no provisioned board
    /// record of the GUID. `text` is already checked.
    pub fn add_device_note(
        &self,
        guid: &Guid,
        text: &str,
        author: &str,
        now: OffsetDateTime,
    ) -> Result<Option<DeviceNote>, StoreError> {
        let g = guid.as_str();
        self.with(|c| {
            let tx = c.transaction()?;
            if !provisioned(&tx, g)? {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO device_notes (guid, author, at, text) VALUES (?1, ?2, ?3, ?4)",
                params![g, author, ts(now), text],
            )?;
            let id = tx.last_insert_rowid();
            audit::append(
                &tx,
                author,
                "device_note",
                Some(g),
                &serde_json::json!({ "note_id": id, "text": text }),
                now,
            )?;
            tx.commit()?;
            Ok(Some(DeviceNote {
                id,
                author: author.to_string(),
                at: ts(now),
                text: text.to_string(),
            }))
        })
    }

    /// A device's location, if one is set.
    pub fn device_location(&self, guid: &str) -> Result<Option<Location>, StoreError> {
        self.with(|c| location(c, guid))
    }

    /// A device's service notes, oldest first.
    pub fn device_notes(&self, guid: &str) -> Result<Vec<DeviceNote>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, author, at, text FROM device_notes WHERE guid = ?1 ORDER BY id",
            )?;
            st.query_map([guid], |r| {
                Ok(DeviceNote {
                    id: r.get(0)?,
                    author: r.get(1)?,
                    at: r.get(2)?,
                    text: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Whether the device is retired now, and how.
    pub fn device_retirement(&self, guid: &str) -> Result<Option<DeviceRetirement>, StoreError> {
        self.with(|c| retirement(c, guid))
    }

    /// Devices whose location holds `text` (any field, ignoring ASCII
    /// case) or whose provisioned board records carry the work order
    /// `text` (ignoring case), by GUID; at most `limit`, and whether there
    /// were more.
    pub fn search_devices(
        &self,
        text: &str,
        limit: usize,
    ) -> Result<(Vec<DeviceHit>, bool), StoreError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok((Vec::new(), false));
        }
        let needle = text.to_ascii_lowercase();
        let take = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT guid FROM (
                     SELECT guid FROM device_locations
                      WHERE instr(lower(coalesce(site, '')), ?1) > 0
                         OR instr(lower(coalesce(building, '')), ?1) > 0
                         OR instr(lower(coalesce(room, '')), ?1) > 0
                         OR instr(lower(coalesce(text, '')), ?1) > 0
                     UNION
                     SELECT guid FROM boards
                      WHERE work_order = ?2 COLLATE NOCASE AND status = 'provisioned' AND guid IS NOT NULL)
                 ORDER BY guid LIMIT ?3",
            )?;
            let guids: Vec<String> = st
                .query_map(params![needle, text, take], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let more = guids.len() > limit;
            let mut hits = Vec::with_capacity(guids.len().min(limit));
            for g in guids.into_iter().take(limit) {
                let (work_order, provisioned_at): (Option<String>, Option<String>) = c
                    .query_row(
                        &format!("SELECT work_order, finished_at FROM boards WHERE id = {CURRENT_BOARD}"),
                        [&g],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?
                    .unwrap_or_default();
                hits.push(DeviceHit {
                    location: location(c, &g)?,
                    retired: retirement(c, &g)?.is_some(),
                    guid: g,
                    work_order,
                    provisioned_at,
                });
            }
            Ok((hits, more))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
