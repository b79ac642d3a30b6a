//! Label print jobs: one written with each completed board (in the same
//! transaction), reprints and test labels asked for at the UI; taken in
//! order by the label worker and marked printed. Also the scan-back checks.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, audit, ts};

pub use crate::label::TEST_LABEL_GUID;

/// A label job waiting for the printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelJob {
    pub id: i64,
    pub guid: String,
    /// `board`, `reprint` or `test`.
    pub kind: String,
    pub attempts: i64,
}

/// A board's facts as its label shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRecord {
    pub guid: String,
    pub hw_revision: Option<String>,
    pub fw_version: Option<String>,
    pub mac: Option<String>,
    pub work_order: Option<String>,
    pub finished_at: Option<String>,
    pub serial: String,
    pub station: String,
    pub slot: u16,
}

/// Label figures for the API, the line view and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LabelCounts {
    pub pending: i64,
    pub printed: i64,
    /// When the oldest pending label was asked for.
    pub oldest_pending: Option<String>,
}

/// The latest label of a GUID, for the board view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabelState {
    pub state: String,
    pub kind: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub printed_at: Option<String>,
}

/// Queues the label of a board that has just been provisioned.
pub(super) fn enqueue_in(
    tx: &Transaction<'_>,
    board_id: i64,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO labels (guid, board_id, kind, requested_by, created_at, updated_at)
         SELECT guid, id, 'board', COALESCE(operator, 'station'), ?2, ?2 FROM boards WHERE id = ?1",
        params![board_id, ts(now)],
    )?;
    Ok(())
}

impl Store {
    /// The oldest pending label jobs, at most `limit`.
    pub fn pending_labels(&self, limit: u32) -> Result<Vec<LabelJob>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, guid, kind, attempts FROM labels WHERE state = 'pending' ORDER BY id LIMIT ?1",
            )?;
            st.query_map([limit], |r| {
                Ok(LabelJob {
                    id: r.get(0)?,
                    guid: r.get(1)?,
                    kind: r.get(2)?,
                    attempts: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// The printer took the label.
    pub fn label_printed(&self, id: i64, now: OffsetDateTime) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE labels SET state = 'printed', attempts = attempts + 1, last_error = NULL, printed_at = ?2, updated_at = ?2 WHERE id = ?1",
                params![id, ts(now)],
            )?;
            Ok(())
        })
    }

    /// The label did not print; it stays pending.
    pub fn label_failed(
        &self,
        id: i64,
        error: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE labels SET attempts = attempts + 1, last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, error, ts(now)],
            )?;
            Ok(())
        })
    }

    /// What the label of the newest provisioned board with this GUID shows;
    /// `None` if there is none.
    pub fn label_record(&self, guid: &str) -> Result<Option<LabelRecord>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT b.guid, b.hw_revision, b.fw_version, b.mac, b.work_order, b.finished_at, c.serial, b.station, b.slot
                 FROM boards b JOIN certificates c ON c.board_id = b.id AND c.state = 'installed'
                 WHERE b.guid = ?1 AND b.status = 'provisioned' ORDER BY b.id DESC LIMIT 1",
                [guid],
                |r| {
                    Ok(LabelRecord {
                        guid: r.get(0)?,
                        hw_revision: r.get(1)?,
                        fw_version: r.get(2)?,
                        mac: r.get(3)?,
                        work_order: r.get(4)?,
                        finished_at: r.get(5)?,
                        serial: r.get(6)?,
                        station: r.get(7)?,
                        slot: r.get(8)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Queues another label for a provisioned board, with an audit row.
    /// `None` when the station provisioned no board with this GUID.
    pub fn reprint_label(
        &self,
        guid: &str,
        by: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let board: Option<i64> = tx
                .query_row(
                    "SELECT id FROM boards WHERE guid = ?1 AND status = 'provisioned' ORDER BY id DESC LIMIT 1",
                    [guid],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(board) = board else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO labels (guid, board_id, kind, requested_by, created_at, updated_at) VALUES (?1, ?2, 'reprint', ?3, ?4, ?4)",
                params![guid, board, by, ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            audit::append(&tx, by, "label_reprint", Some(guid), &serde_json::json!({ "job": id, "reason": reason }), now)?;
            tx.commit()?;
            Ok(Some(id))
        })
    }

    /// Queues a test label, with an audit row.
    pub fn test_label(&self, by: &str, now: OffsetDateTime) -> Result<i64, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO labels (guid, kind, requested_by, created_at, updated_at) VALUES (?1, 'test', ?2, ?3, ?3)",
                params![TEST_LABEL_GUID, by, ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            audit::append(&tx, by, "label_test", None, &serde_json::json!({ "job": id }), now)?;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Labels waiting for the printer: what the line view shows with every
    /// redraw, so it reads the pending part of the index only.
    pub fn pending_label_count(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM labels WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Each figure through the index on the state, not a scan of every
    /// label ever printed.
    pub fn label_counts(&self) -> Result<LabelCounts, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM labels WHERE state = 'pending'),
                        (SELECT COUNT(*) FROM labels WHERE state = 'printed'),
                        (SELECT MIN(created_at) FROM labels WHERE state = 'pending')",
                [],
                |r| {
                    Ok(LabelCounts {
                        pending: r.get(0)?,
                        printed: r.get(1)?,
                        oldest_pending: r.get(2)?,
                    })
                },
            )
        })
    }

    /// The newest label job of a GUID.
    pub fn label_state(&self, guid: &str) -> Result<Option<LabelState>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT state, kind, attempts, last_error, printed_at FROM labels WHERE guid = ?1 ORDER BY id DESC LIMIT 1",
                [guid],
                |r| {
                    Ok(LabelState {
                        state: r.get(0)?,
                        kind: r.get(1)?,
                        attempts: r.get(2)?,
                        last_error: r.get(3)?,
                        printed_at: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    /// Records a scan-back check; a mismatch also goes in the audit trail.
    pub fn record_scan(
        &self,
        slot: u16,
        expected: &str,
        scanned: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let matched = expected.eq_ignore_ascii_case(scanned);
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO label_scans (slot, expected, scanned, matched, scanned_by, scanned_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![slot, expected, scanned, matched, by, ts(now)],
            )?;
            if !matched {
                audit::append(
                    &tx,
                    by,
                    "label_scan_mismatch",
                    Some(expected),
                    &serde_json::json!({ "slot": slot, "scanned": scanned }),
                    now,
                )?;
            }
            tx.commit()?;
            Ok(matched)
        })
    }
}

impl Store {
    /// A job that can never print (its board record is gone) leaves the
    /// queue, with the reason.
    pub fn label_cancelled(
        &self,
        id: i64,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE labels SET state = 'cancelled', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, reason, ts(now)],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{G1, commit, ident, now, store};
    use super::*;
    use crate::ids::{Serial, SlotId};

    /// A board provisioned through the store's own steps, label queued.
    pub(crate) fn provisioned(s: &Store, guid: &str, serial: &str) {
        let b = s.open_board("st", SlotId(2), now()).unwrap();
        let b = s.record_identity(b, &ident(guid), now()).unwrap();
        commit(s, b, guid, serial, false);
        s.complete(
            b,
            Some(&Serial(serial.into())),
            now(),
            crate::store::Enroll::Group,
        )
        .unwrap();
    }

    #[test]
    fn a_completed_board_has_its_label_queued_and_reprints_are_audited() {
        let (_d, s) = store();
        provisioned(&s, G1, "aa");
        let jobs = s.pending_labels(10).unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(
            (jobs[0].guid.as_str(), jobs[0].kind.as_str()),
            (G1, "board")
        );
        let r = s.label_record(G1).unwrap().unwrap();
        assert_eq!(
            (r.serial.as_str(), r.slot, r.mac.as_deref()),
            ("aa", 2, Some("02:00:00:00:00:01"))
        );
        assert!(r.finished_at.is_some());

        s.label_failed(jobs[0].id, "paper out", now()).unwrap();
        let st = s.label_state(G1).unwrap().unwrap();
        assert_eq!(
            (st.state.as_str(), st.attempts, st.last_error.as_deref()),
            ("pending", 1, Some("paper out"))
        );
        s.label_printed(jobs[0].id, now()).unwrap();
        let st = s.label_state(G1).unwrap().unwrap();
        assert_eq!(
            (st.state.as_str(), st.attempts, st.last_error),
            ("printed", 2, None)
        );

        let other = "0a1b2c3d-0000-4000-8000-0000000000ff";
        assert_eq!(s.reprint_label(other, "ana", "", now()).unwrap(), None);
        let id = s.reprint_label(G1, "ana", "torn", now()).unwrap().unwrap();
        let t = s.test_label("sup", now()).unwrap();
        let pending: Vec<i64> = s.pending_labels(10).unwrap().iter().map(|j| j.id).collect();
        assert_eq!(pending, vec![id, t], "in the order asked");
        let c = s.label_counts().unwrap();
        assert_eq!((c.pending, c.printed), (2, 1));
        assert_eq!(s.pending_label_count().unwrap(), 2);
        assert!(c.oldest_pending.is_some());
        s.label_cancelled(t, "gone", now()).unwrap();
        assert_eq!(s.label_counts().unwrap().pending, 1);

        let actions: Vec<(String, String)> = s
            .audit_rows()
            .unwrap()
            .into_iter()
            .map(|r| (r.action, r.actor))
            .collect();
        assert!(actions.contains(&("label_reprint".into(), "ana".into())));
        assert!(actions.contains(&("label_test".into(), "sup".into())));
        assert!(matches!(
            s.verify_audit().unwrap(),
            crate::store::AuditCheck::Intact { .. }
        ));
    }

    #[test]
    fn scans_are_recorded_and_mismatches_audited() {
        let (_d, s) = store();
        assert!(
            s.record_scan(1, G1, &G1.to_uppercase(), "ana", now())
                .unwrap()
        );
        assert!(!s.record_scan(1, G1, "nope", "ana", now()).unwrap());
        let rows = s.audit_rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].action, "label_scan_mismatch");
    }
}
