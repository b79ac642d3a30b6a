//! Board records and step timings: one record per attempt at a board in a
//! slot (adopted again after a restart), what the board said about itself
//! and its TPM keys, each step's start, end and outcome, and failure. The
//! certificates themselves are the ledger's (`ledger.rs`).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Store, StoreError, ts};
use crate::core::settings::ProvisioningSettings;
use crate::core::{Failure, RecordFacts, Step};
use crate::ids::BoardIdentity;
use crate::ids::{Guid, SlotId};

/// A board record's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardId(pub i64);

/// One board record as the API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BoardRow {
    pub id: i64,
    pub guid: Option<String>,
    pub slot: u16,
    pub station: String,
    pub status: String,
    pub step: String,
    pub hw_revision: Option<String>,
    pub fw_version: Option<String>,
    pub mac: Option<String>,
    pub operator: Option<String>,
    pub work_order: Option<String>,
    pub certificate_serial: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The provisioning settings written to the board and read back.
    pub settings: Option<ProvisioningSettings>,
    /// Why no settings were written (the board did not announce support,
    /// or `[dps] id_scope` is not set).
    pub settings_note: Option<String>,
}

/// Who provisions a board, and for which work order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub operator: Option<String>,
    pub work_order: Option<String>,
}

/// A step's timing and outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRow {
    pub step: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Requests sent to the jig again in this step.
    pub resends: i64,
    /// Damaged frames on the jig line, either way, in this step.
    pub damaged: i64,
}

pub(super) const BOARD_COLUMNS: &str = "b.id, b.guid, b.slot, b.station, b.status, b.step, b.hw_revision, b.fw_version, b.mac, b.operator, b.work_order,
     (SELECT serial FROM certificates c WHERE c.board_id = b.id ORDER BY c.issued_at DESC LIMIT 1),
     b.error_code, b.error, b.started_at, b.finished_at, b.settings, b.settings_note";

pub(super) fn board_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BoardRow> {
    Ok(BoardRow {
        id: r.get(0)?,
        guid: r.get(1)?,
        slot: r.get(2)?,
        station: r.get(3)?,
        status: r.get(4)?,
        step: r.get(5)?,
        hw_revision: r.get(6)?,
        fw_version: r.get(7)?,
        mac: r.get(8)?,
        operator: r.get(9)?,
        work_order: r.get(10)?,
        certificate_serial: r.get(11)?,
        error_code: r.get(12)?,
        error: r.get(13)?,
        started_at: r.get(14)?,
        finished_at: r.get(15)?,
        settings: r
            .get::<_, Option<String>>(16)?
            .and_then(|t| serde_json::from_str(&t).ok()),
        settings_note: r.get(17)?,
    })
}

/// How the jig line fared in one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepLine {
    /// Requests sent again.
    pub resends: u32,
    /// Damaged frames either way.
    pub damaged: u32,
}

impl Store {
    /// True if the slot has an unfinished board record (a restart resumes it).
    pub fn has_interrupted(&self, slot: SlotId) -> Result<bool, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM boards WHERE slot = ?1 AND status = 'in_progress')",
                [slot.0],
                |r| r.get(0),
            )
        })
    }

    /// Starts a board record for the slot, or adopts its unfinished one
    /// (closing the steps a crash left open as `interrupted`).
    pub fn open_board(
        &self,
        station: &str,
        slot: SlotId,
        now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.open_board_by(station, slot, &Stamp::default(), now)
    }

    /// As [`Store::open_board`], stamping who provisions the board and for
    /// which work order (a new record only: an adopted one keeps its own).
    ///
    /// Adopted, in this order: the slot's unfinished record; else the
    /// slot's newest record if it is provisioned but its jig never
    /// acknowledged FINISH (the board may still be in the jig, waiting to
    /// be told).
    pub fn open_board_by(
        &self,
        station: &str,
        slot: SlotId,
        stamp: &Stamp,
        now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM boards WHERE slot = ?1 AND status = 'in_progress'",
                    [slot.0],
                    |r| r.get(0),
                )
                .optional()?;
            if existing.is_none() {
                existing = tx
                    .query_row(
                        &format!(
                            "SELECT b.id FROM boards b WHERE b.id = (SELECT max(id) FROM boards WHERE slot = ?1 AND station = ?2) AND {UNTOLD}"
                        ),
                        params![slot.0, station],
                        |r| r.get(0),
                    )
                    .optional()?;
            }
            let id = match existing {
                Some(id) => {
                    tx.execute(
                        "UPDATE steps SET ended_at = ?2, outcome = 'interrupted' WHERE board_id = ?1 AND ended_at IS NULL",
                        params![id, ts(now)],
                    )?;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO boards (station, slot, status, step, started_at, operator, work_order) VALUES (?1, ?2, 'in_progress', 'hello', ?3, ?4, ?5)",
                        params![station, slot.0, ts(now), stamp.operator, stamp.work_order],
                    )?;
                    tx.last_insert_rowid()
                }
            };
            tx.commit()?;
            Ok(BoardId(id))
        })
    }

    /// Records the provisioning settings the board keeps (read back), or
    /// why it was given none.
    pub fn record_settings(
        &self,
        board: BoardId,
        settings: Option<&ProvisioningSettings>,
        note: Option<&str>,
    ) -> Result<(), StoreError> {
        let json = settings.and_then(|s| serde_json::to_string(s).ok());
        self.with(|c| {
            c.execute(
                "UPDATE boards SET settings = ?2, settings_note = ?3 WHERE id = ?1",
                params![board.0, json, note],
            )?;
            Ok(())
        })
    }

    /// The endorsement key recorded for the board's TPM.
    pub fn tpm_ek(&self, board: BoardId) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|c| {
            let hex: Option<String> =
                c.query_row("SELECT tpm_ek FROM boards WHERE id = ?1", [board.0], |r| {
                    r.get(0)
                })?;
            Ok(hex.and_then(|h| hex::decode(h).ok()))
        })
    }

    /// Records that the board is given a symmetric key derived under the
    /// master key `key_id` (never the key): before the key leaves.
    pub fn record_device_key(
        &self,
        board: BoardId,
        guid: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO device_keys (board_id, guid, master_key_id, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (board_id) DO UPDATE SET master_key_id = excluded.master_key_id",
                params![board.0, guid, key_id, ts(now)],
            )?;
            super::audit::append(
                &tx,
                "station",
                "device_key_given",
                Some(guid),
                &serde_json::json!({ "board_id": board.0, "master_key_id": key_id }),
                now,
            )?;
            tx.commit()
        })
    }

    /// Records the endorsement key of the board's TPM (hex of the
    /// TPM2B_PUBLIC).
    pub fn record_tpm_ek(&self, board: BoardId, ek: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE boards SET tpm_ek = ?2 WHERE id = ?1",
                params![board.0, hex::encode(ek)],
            )?;
            Ok(())
        })
    }

    /// Records the public key the station had the board's TPM make (hex of
    /// the SEC1 point), so that a retry can tell the key at the handle is
    /// its own.
    pub fn record_tpm_key(&self, board: BoardId, public: &[u8]) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE boards SET tpm_key = ?2 WHERE id = ?1",
                params![board.0, hex::encode(public)],
            )?;
            Ok(())
        })
    }

    /// Whether this station made `public` in the TPM of a board with this
    /// GUID and no certificate for it was installed: a key left by a failed
    /// attempt, safe to use again.
    pub fn tpm_key_left_by_failure(&self, guid: &Guid, public: &[u8]) -> Result<bool, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM boards b WHERE b.guid = ?1 AND b.tpm_key = ?2 AND b.status != 'provisioned'
                   AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.board_id = b.id AND c.state = 'installed'))",
                params![guid.as_str(), hex::encode(public)],
                |r| r.get(0),
            )
        })
    }

    /// Whether the certificate with this SHA-256 fingerprint was issued by
    /// this station for this GUID and abandoned (its board failed).
    pub fn is_abandoned(&self, guid: &Guid, fingerprint: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM certificates WHERE guid = ?1 AND fingerprint_sha256 = ?2 AND state = 'abandoned')",
                params![guid.as_str(), fingerprint],
                |r| r.get(0),
            )
        })
    }

    /// What the core needs to tell whether the board in the jig is the
    /// record's own ([`crate::core::visitor`]).
    pub fn record_facts(&self, board: BoardId) -> Result<RecordFacts, StoreError> {
        self.with(|c| {
            let (guid, status): (Option<String>, String) = c.query_row(
                "SELECT guid, status FROM boards WHERE id = ?1",
                [board.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(RecordFacts {
                guid: guid.and_then(|g| g.parse().ok()),
                provisioned: status == "provisioned",
            })
        })
    }

    /// Another board than the record's is in the jig: a new record for it,
    /// in one transaction. With `fail_old`, the old (unfinished) record is
    /// closed as failed, its open steps as interrupted; else it stands as
    /// it is (provisioned), and the new record takes over the steps still
    /// open.
    pub fn replace_record(
        &self,
        board: BoardId,
        fail_old: Option<&Failure>,
        now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (station, slot): (String, u16) = tx.query_row(
                "SELECT station, slot FROM boards WHERE id = ?1",
                [board.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            // Closed first: a slot has one unfinished record at most. Its
            // open steps end with it, as interrupted.
            if let Some(f) = fail_old {
                fail_in(&tx, board.0, f, now)?;
            }
            tx.execute(
                "INSERT INTO boards (station, slot, status, step, started_at) VALUES (?1, ?2, 'in_progress', 'identify', ?3)",
                params![station, slot, ts(now)],
            )?;
            let target = tx.last_insert_rowid();
            tx.execute(
                "UPDATE steps SET board_id = ?2 WHERE board_id = ?1 AND ended_at IS NULL",
                params![board.0, target],
            )?;
            tx.commit()?;
            Ok(BoardId(target))
        })
    }

    /// Records what the board said about itself.
    pub fn record_identity(
        &self,
        board: BoardId,
        id: &BoardIdentity,
        _now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE boards SET guid = ?2, hw_revision = ?3, fw_version = ?4, mac = ?5 WHERE id = ?1",
                params![board.0, id.guid.as_str(), id.hw_revision, id.fw_version, id.mac.to_string()],
            )?;
            Ok(board)
        })
    }

    /// Records the start of a step and makes it the board's current step.
    pub fn begin_step(
        &self,
        board: BoardId,
        step: Step,
        now: OffsetDateTime,
    ) -> Result<i64, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO steps (board_id, step, started_at) VALUES (?1, ?2, ?3)",
                params![board.0, step.as_str(), ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            // A provisioned record (FINISH told again) keeps its last step.
            tx.execute(
                "UPDATE boards SET step = ?2 WHERE id = ?1 AND status = 'in_progress'",
                params![board.0, step.as_str()],
            )?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Records the end of a step.
    pub fn end_step(
        &self,
        step_id: i64,
        now: OffsetDateTime,
        error: Option<&Failure>,
        line: StepLine,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let started: String = c.query_row("SELECT started_at FROM steps WHERE id = ?1", [step_id], |r| r.get(0))?;
            let ms = OffsetDateTime::parse(&started, &Rfc3339)
                .map(|s| (now - s).whole_milliseconds().max(0) as i64)
                .unwrap_or(0);
            c.execute(
                "UPDATE steps SET ended_at = ?2, duration_ms = ?3, outcome = ?4, error_code = ?5, error = ?6, resends = ?7, damaged = ?8 WHERE id = ?1",
                params![
                    step_id,
                    ts(now),
                    ms,
                    if error.is_some() { "failed" } else { "ok" },
                    error.map(|f| f.code.as_str()),
                    error.map(|f| f.message.as_str()),
                    line.resends,
                    line.damaged,
                ],
            )?;
            Ok(())
        })
    }

    /// The board failed; a certificate it never proved is abandoned.
    pub fn fail(&self, board: BoardId, f: &Failure, now: OffsetDateTime) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            fail_in(&tx, board.0, f, now)?;
            tx.commit()
        })
    }

    /// Board records, newest first.
    pub fn boards(&self, limit: u32) -> Result<Vec<BoardRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {BOARD_COLUMNS} FROM boards b ORDER BY b.id DESC LIMIT ?1"
            ))?;
            st.query_map([limit], board_row)?.collect()
        })
    }

    /// The newest record for a GUID.
    pub fn board(&self, guid: &Guid) -> Result<Option<BoardRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {BOARD_COLUMNS} FROM boards b WHERE b.guid = ?1 ORDER BY b.id DESC LIMIT 1"),
                [guid.as_str()],
                board_row,
            )
            .optional()
        })
    }

    pub fn steps(&self, board: i64) -> Result<Vec<StepRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT step, started_at, ended_at, duration_ms, outcome, error_code, error, resends, damaged FROM steps WHERE board_id = ?1 ORDER BY id",
            )?;
            st
                .query_map([board], |r| {
                    Ok(StepRow {
                        step: r.get(0)?,
                        started_at: r.get(1)?,
                        ended_at: r.get(2)?,
                        duration_ms: r.get(3)?,
                        outcome: r.get(4)?,
                        error_code: r.get(5)?,
                        error: r.get(6)?,
                        resends: r.get(7)?,
                        damaged: r.get(8)?,
                    })
                })?
                .collect()
        })
    }
}

/// A provisioned record whose jig never acknowledged FINISH: it has
/// steps (a station provisioned it), none of them a FINISH that ended well.
/// (`b` is the board.)
pub(super) const UNTOLD: &str = "b.status = 'provisioned'
    AND EXISTS (SELECT 1 FROM steps s WHERE s.board_id = b.id)
    AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.board_id = b.id AND s.step = 'finish' AND s.outcome = 'ok')";

fn fail_in(
    tx: &rusqlite::Transaction<'_>,
    board: i64,
    f: &Failure,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    // Only an unfinished record fails: a provisioned one (adopted because
    // its jig was never told) stands whatever happens to a later visit.
    tx.execute(
        "UPDATE boards SET status = 'failed', error_code = ?2, error = ?3, finished_at = ?4 WHERE id = ?1 AND status = 'in_progress'",
        params![board, f.code, f.message, ts(now)],
    )?;
    tx.execute(
        "UPDATE steps SET ended_at = ?2, outcome = 'interrupted' WHERE board_id = ?1 AND ended_at IS NULL",
        params![board, ts(now)],
    )?;
    tx.execute(
        "UPDATE certificates SET state = 'abandoned' WHERE board_id = ?1 AND state = 'issued'",
        [board],
    )?;
    Ok(())
}
