//! The plant feed, as the station keeps it: while forwarding is on,
//! triggers (migration 12) note every change to a record the plant keeps in
//! `plant_feed`, in the transaction that makes the change. The forwarder
//! (`crate::plant`) reads the feed in order through a [`PlantFeed`], its own
//! connection (the line's writes never wait behind a forwarder's read),
//! sends the rows named as they are now, and deletes the entries the plant
//! database has committed.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};

/// A board record, as the plant keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedBoard {
    pub id: i64,
    pub station: String,
    pub slot: i64,
    pub guid: Option<String>,
    pub hw_revision: Option<String>,
    pub fw_version: Option<String>,
    pub mac: Option<String>,
    pub operator: Option<String>,
    pub work_order: Option<String>,
    pub status: String,
    pub step: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStep {
    pub id: i64,
    pub board_id: i64,
    /// When its board record started (the plant partitions steps by it).
    pub board_started_at: String,
    pub step: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// Requests sent again to the jig in the step.
    pub resends: i64,
    /// Damaged frames on the jig line in the step.
    pub damaged: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCertificate {
    pub serial: String,
    pub guid: String,
    pub board_id: i64,
    pub fingerprint: String,
    pub pem: String,
    pub not_before: String,
    pub not_after: String,
    pub slot: i64,
    pub operator: Option<String>,
    pub issued_at: String,
    pub override_used: bool,
    pub state: String,
}

/// A DPS enrollment job (the outbox), without the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEnrollment {
    pub id: i64,
    pub guid: String,
    pub board_id: i64,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedDeviceAction {
    pub id: i64,
    pub guid: String,
    pub action: String,
    pub params: String,
    pub reason: Option<String>,
    pub actor: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedLabel {
    pub id: i64,
    pub guid: String,
    pub board_id: Option<i64>,
    pub kind: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub requested_by: String,
    pub created_at: String,
    pub updated_at: String,
    pub printed_at: Option<String>,
}

/// A revoked certificate (the CRL's entry); `guid` is set for a device's
/// revocation (`device_revocations`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedRevocation {
    pub serial: String,
    pub guid: Option<String>,
    pub revoked_at: String,
    pub reason: String,
    pub revoked_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedAudit {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

/// Feed entries up to `last_seq`, with the rows they name as they are now.
/// A row changed several times is here once.
#[derive(Debug, Clone, Default)]
pub struct FeedBatch {
    /// The newest entry in the batch; 0 when the batch is empty.
    pub last_seq: i64,
    /// When each entry's change was made (ms since 1970), for the lag.
    pub at_ms: Vec<i64>,
    pub boards: Vec<FeedBoard>,
    pub steps: Vec<FeedStep>,
    pub certificates: Vec<FeedCertificate>,
    pub enrollments: Vec<FeedEnrollment>,
    pub device_actions: Vec<FeedDeviceAction>,
    pub labels: Vec<FeedLabel>,
    pub revocations: Vec<FeedRevocation>,
    pub device_revocations: Vec<FeedRevocation>,
    pub audit: Vec<FeedAudit>,
}

impl FeedBatch {
    pub fn is_empty(&self) -> bool {
        self.at_ms.is_empty()
    }

    /// Rows the batch carries.
    pub fn rows(&self) -> usize {
        self.boards.len()
            + self.steps.len()
            + self.certificates.len()
            + self.enrollments.len()
            + self.device_actions.len()
            + self.labels.len()
            + self.revocations.len()
            + self.device_revocations.len()
            + self.audit.len()
    }
}

/// How far behind the plant is, as the station sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedLag {
    /// Entries not yet committed by the plant database.
    pub entries: i64,
    /// When the oldest of them was made (ms since 1970).
    pub oldest_at_ms: Option<i64>,
}

impl FeedLag {
    /// How old the oldest waiting change is at `now` (zero when none
    /// waits).
    pub fn age(&self, now: time::OffsetDateTime) -> std::time::Duration {
        let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
        self.oldest_at_ms
            .map(|at| std::time::Duration::from_millis((now_ms - at).max(0) as u64))
            .unwrap_or_default()
    }
}

impl Store {
    /// Turns the feed on (`[plant]` configured) or off, and returns this
    /// database's instance name. Turning it on after it was off notes every
    /// record there is, in order, so that the plant gets the records made
    /// before (sending a record again changes nothing there); turning it
    /// off drops the entries not yet sent (the next turn-on sends all).
    pub fn plant_enable(&self, on: bool) -> Result<String, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (enabled, instance): (bool, Option<String>) = tx.query_row(
                "SELECT enabled, instance FROM plant_control WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let instance = match instance {
                Some(i) => i,
                None => {
                    let i = hex::encode(crate::random::bytes::<16>());
                    tx.execute("UPDATE plant_control SET instance = ?1", [&i])?;
                    i
                }
            };
            if on && !enabled {
                tx.execute("UPDATE plant_control SET enabled = 1", [])?;
                note_everything(&tx)?;
            } else if !on && enabled {
                tx.execute("UPDATE plant_control SET enabled = 0", [])?;
                tx.execute("DELETE FROM plant_feed", [])?;
            }
            tx.commit()?;
            Ok(instance)
        })
    }

    /// A connection of its own for the forwarder.
    pub fn plant_feed(&self) -> Result<PlantFeed, StoreError> {
        PlantFeed::open(&self.path)
    }

    /// How many entries wait (every entry in the feed: the committed ones
    /// are deleted), and the age of the oldest. Two look-ups by key, however
    /// long the feed has grown.
    pub fn plant_lag(&self) -> Result<FeedLag, StoreError> {
        self.with(|c| {
            let oldest: Option<(i64, i64)> = c
                .query_row(
                    "SELECT seq, at_ms FROM plant_feed ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((first, at)) = oldest else {
                return Ok(FeedLag::default());
            };
            let newest: i64 = c.query_row("SELECT MAX(seq) FROM plant_feed", [], |r| r.get(0))?;
            Ok(FeedLag {
                entries: newest - first + 1,
                oldest_at_ms: Some(at),
            })
        })
    }
}

/// What the feed notes: its kind, the table, and the row id it names.
const NOTED: [(&str, &str, &str); 9] = [
    ("board", "boards", "id"),
    ("step", "steps", "id"),
    ("certificate", "certificates", "rowid"),
    ("revocation", "revocations", "rowid"),
    ("device_revocation", "device_revocations", "rowid"),
    ("enrollment", "outbox", "id"),
    ("device_action", "device_actions", "id"),
    ("label", "labels", "id"),
    ("audit", "audit", "id"),
];

/// Notes every record there is in the feed, in order, in one transaction
/// (a station joining the plant, before its line starts).
fn note_everything(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    for noted in NOTED {
        let mut after = 0;
        while let Some(last) = note_some(tx, noted, after)? {
            after = last;
        }
    }
    Ok(())
}

/// Notes up to 10,000 rows of one table after row id `after`, in order;
/// the last row id noted, `None` when there were none.
fn note_some(
    tx: &rusqlite::Transaction<'_>,
    (kind, table, id): (&str, &str, &str),
    after: i64,
) -> rusqlite::Result<Option<i64>> {
    let some = format!("SELECT {id} FROM {table} WHERE {id} > ?1 ORDER BY {id} LIMIT 10000");
    tx.execute(
        &format!(
            "INSERT INTO plant_feed (kind, row) SELECT '{kind}', {id} FROM ({some}) ORDER BY {id}"
        ),
        [after],
    )?;
    tx.query_row(&format!("SELECT MAX({id}) FROM ({some})"), [after], |r| {
        r.get(0)
    })
}

/// What [`PlantFeed::resume`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The plant has what it committed: go on from its cursor.
    Resumed,
    /// The plant had lost records: every record was noted again.
    SentAgain,
    /// The plant has more of this station's feed (`plant`) than this
    /// database ever made (`made`): the database is older than the plant's
    /// copy of it.
    DatabaseBehind { plant: i64, made: i64 },
}

/// The forwarder's own connection to the station database: reads the feed
/// and deletes what the plant has committed. Nothing else.
pub struct PlantFeed {
    /// A store handle of its own: another connection to the same file.
    store: Store,
}

impl PlantFeed {
    fn open(path: &Path) -> Result<PlantFeed, StoreError> {
        let store = Store::open(path)?;
        // Only deletes of sent entries are written here: one lost to a
        // power cut is deleted again at the next connection (the plant's
        // cursor says it was sent), so the write need not wait for the disk.
        store.with(|c| c.pragma_update(None, "synchronous", "NORMAL"))?;
        Ok(PlantFeed { store })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.store.with(f)
    }

    /// Up to `limit` entries after `after`, in order, and the rows they
    /// name, read in one snapshot.
    pub fn batch(&self, after: i64, limit: u32) -> Result<FeedBatch, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let mut batch = FeedBatch::default();
            let mut ids: std::collections::BTreeMap<String, BTreeSet<i64>> = Default::default();
            {
                let mut st = tx.prepare_cached(
                    "SELECT seq, kind, row, at_ms FROM plant_feed WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )?;
                let mut rows = st.query(params![after, limit])?;
                while let Some(r) = rows.next()? {
                    batch.last_seq = r.get(0)?;
                    ids.entry(r.get(1)?).or_default().insert(r.get(2)?);
                    batch.at_ms.push(r.get(3)?);
                }
            }
            for (kind, rows) in &ids {
                let rows: Vec<i64> = rows.iter().copied().collect();
                for chunk in rows.chunks(500) {
                    read_rows(&tx, kind, chunk, &mut batch)?;
                }
            }
            tx.commit()?;
            Ok(batch)
        })
    }

    /// Deletes the entries up to `upto`: the plant database has them.
    pub fn ack(&self, upto: i64) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM plant_feed WHERE seq <= ?1", [upto])?;
            tx.execute(
                "UPDATE plant_control SET acked = MAX(acked, ?1) WHERE id = 1",
                [upto],
            )?;
            tx.commit()
        })
    }

    /// Called with the cursor a plant database gives at connection.
    ///
    /// - A cursor behind what this station saw committed (the plant was
    ///   restored from an older copy, or made anew): every record is noted
    ///   again, in short transactions so that the line's writes never wait
    ///   long behind them, and the plant gets them back. `acked` moves back
    ///   only when all are noted, so a crash in between starts again.
    /// - A cursor beyond any entry this database ever made: this database
    ///   is older than what the plant has from it (restored from a backup),
    ///   and sending would skip or overwrite records: refused.
    /// - Otherwise the entries the plant has are deleted, as [`PlantFeed::ack`].
    pub fn resume(&self, cursor: i64) -> Result<Resume, StoreError> {
        let (acked, made): (i64, i64) = self.with(|c| {
            c.query_row(
                "SELECT acked, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'plant_feed'), 0)
                 FROM plant_control WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })?;
        if cursor > made {
            return Ok(Resume::DatabaseBehind {
                plant: cursor,
                made,
            });
        }
        if cursor < acked {
            self.note_everything_in_steps()?;
            self.with(|c| {
                c.execute("UPDATE plant_control SET acked = ?1 WHERE id = 1", [cursor])
                    .map(|_| ())
            })?;
            return Ok(Resume::SentAgain);
        }
        self.ack(cursor)?;
        Ok(Resume::Resumed)
    }

    /// [`note_everything`], each 10,000 rows in a transaction of their own.
    fn note_everything_in_steps(&self) -> Result<(), StoreError> {
        for noted in NOTED {
            let mut after = 0;
            while let Some(last) = self.with(|c| {
                let tx = c.transaction()?;
                let last = note_some(&tx, noted, after)?;
                tx.commit()?;
                Ok(last)
            })? {
                after = last;
            }
        }
        Ok(())
    }

    /// As [`Store::plant_lag`].
    pub fn lag(&self) -> Result<FeedLag, StoreError> {
        self.store.plant_lag()
    }
}

/// `?, ?, …` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn read_rows(
    tx: &rusqlite::Transaction<'_>,
    kind: &str,
    ids: &[i64],
    b: &mut FeedBatch,
) -> rusqlite::Result<()> {
    let m = marks(ids.len());
    let p = rusqlite::params_from_iter(ids.iter());
    match kind {
        "board" => {
            let mut st = tx.prepare(&format!(
                "SELECT id, station, slot, guid, hw_revision, fw_version, mac, operator, work_order,
                        status, step, error_code, error, started_at, finished_at
                 FROM boards WHERE id IN ({m}) ORDER BY id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedBoard {
                    id: r.get(0)?,
                    station: r.get(1)?,
                    slot: r.get(2)?,
                    guid: r.get(3)?,
                    hw_revision: r.get(4)?,
                    fw_version: r.get(5)?,
                    mac: r.get(6)?,
                    operator: r.get(7)?,
                    work_order: r.get(8)?,
                    status: r.get(9)?,
                    step: r.get(10)?,
                    error_code: r.get(11)?,
                    error: r.get(12)?,
                    started_at: r.get(13)?,
                    finished_at: r.get(14)?,
                })
            })?;
            for r in rows {
                b.boards.push(r?);
            }
        }
        "step" => {
            let mut st = tx.prepare(&format!(
                "SELECT s.id, s.board_id, s.step, s.started_at, s.ended_at, s.duration_ms, s.outcome,
                        s.error_code, s.error, b.started_at, s.resends, s.damaged
                 FROM steps s JOIN boards b ON b.id = s.board_id WHERE s.id IN ({m}) ORDER BY s.id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedStep {
                    id: r.get(0)?,
                    board_id: r.get(1)?,
                    step: r.get(2)?,
                    started_at: r.get(3)?,
                    ended_at: r.get(4)?,
                    duration_ms: r.get(5)?,
                    outcome: r.get(6)?,
                    error_code: r.get(7)?,
                    error: r.get(8)?,
                    board_started_at: r.get(9)?,
                    resends: r.get(10)?,
                    damaged: r.get(11)?,
                })
            })?;
            for r in rows {
                b.steps.push(r?);
            }
        }
        "certificate" => {
            let mut st = tx.prepare(&format!(
                "SELECT serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, slot,
                        operator, issued_at, override_used, state
                 FROM certificates WHERE rowid IN ({m}) ORDER BY rowid"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedCertificate {
                    serial: r.get(0)?,
                    guid: r.get(1)?,
                    board_id: r.get(2)?,
                    fingerprint: r.get(3)?,
                    pem: r.get(4)?,
                    not_before: r.get(5)?,
                    not_after: r.get(6)?,
                    slot: r.get(7)?,
                    operator: r.get(8)?,
                    issued_at: r.get(9)?,
                    override_used: r.get::<_, i64>(10)? != 0,
                    state: r.get(11)?,
                })
            })?;
            for r in rows {
                b.certificates.push(r?);
            }
        }
        "enrollment" => {
            let mut st = tx.prepare(&format!(
                "SELECT id, guid, board_id, state, attempts, last_error, created_at, updated_at
                 FROM outbox WHERE id IN ({m}) ORDER BY id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedEnrollment {
                    id: r.get(0)?,
                    guid: r.get(1)?,
                    board_id: r.get(2)?,
                    state: r.get(3)?,
                    attempts: r.get(4)?,
                    last_error: r.get(5)?,
                    created_at: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            })?;
            for r in rows {
                b.enrollments.push(r?);
            }
        }
        "device_action" => {
            let mut st = tx.prepare(&format!(
                "SELECT id, guid, action, params, reason, actor, state, attempts, last_error, created_at, updated_at
                 FROM device_actions WHERE id IN ({m}) ORDER BY id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedDeviceAction {
                    id: r.get(0)?,
                    guid: r.get(1)?,
                    action: r.get(2)?,
                    params: r.get(3)?,
                    reason: r.get(4)?,
                    actor: r.get(5)?,
                    state: r.get(6)?,
                    attempts: r.get(7)?,
                    last_error: r.get(8)?,
                    created_at: r.get(9)?,
                    updated_at: r.get(10)?,
                })
            })?;
            for r in rows {
                b.device_actions.push(r?);
            }
        }
        "label" => {
            let mut st = tx.prepare(&format!(
                "SELECT id, guid, board_id, kind, state, attempts, last_error, requested_by, created_at,
                        updated_at, printed_at
                 FROM labels WHERE id IN ({m}) ORDER BY id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedLabel {
                    id: r.get(0)?,
                    guid: r.get(1)?,
                    board_id: r.get(2)?,
                    kind: r.get(3)?,
                    state: r.get(4)?,
                    attempts: r.get(5)?,
                    last_error: r.get(6)?,
                    requested_by: r.get(7)?,
                    created_at: r.get(8)?,
                    updated_at: r.get(9)?,
                    printed_at: r.get(10)?,
                })
            })?;
            for r in rows {
                b.labels.push(r?);
            }
        }
        "revocation" => {
            let mut st = tx.prepare(&format!(
                "SELECT serial, revoked_at, reason, revoked_by FROM revocations WHERE rowid IN ({m}) ORDER BY rowid"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedRevocation {
                    serial: r.get(0)?,
                    guid: None,
                    revoked_at: r.get(1)?,
                    reason: r.get(2)?,
                    revoked_by: r.get(3)?,
                })
            })?;
            for r in rows {
                b.revocations.push(r?);
            }
        }
        "device_revocation" => {
            let mut st = tx.prepare(&format!(
                "SELECT serial, guid, revoked_at, reason, revoked_by FROM device_revocations
                 WHERE rowid IN ({m}) ORDER BY rowid"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedRevocation {
                    serial: r.get(0)?,
                    guid: r.get(1)?,
                    revoked_at: r.get(2)?,
                    reason: r.get(3)?,
                    revoked_by: r.get(4)?,
                })
            })?;
            for r in rows {
                b.device_revocations.push(r?);
            }
        }
        "audit" => {
            let mut st = tx.prepare(&format!(
                "SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit
                 WHERE id IN ({m}) ORDER BY id"
            ))?;
            let rows = st.query_map(p, |r| {
                Ok(FeedAudit {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    detail: r.get(5)?,
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                })
            })?;
            for r in rows {
                b.audit.push(r?);
            }
        }
        // A kind this station does not know (a newer one wrote it): skip.
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SlotId;
    use crate::store::tests::{G1, commit, ident, now, store};

    /// A provisioned board: its record, identity, certificate and audit
    /// row.
    fn board(s: &Store, serial: &str) -> crate::store::BoardId {
        // A slot of its own: a slot's unfinished record would be adopted.
        let slot = SlotId(serial.parse().unwrap());
        let b = s.open_board("st-1", slot, now()).unwrap();
        let b = s.record_identity(b, &ident(G1), now()).unwrap();
        commit(s, b, G1, serial, false);
        b
    }

    #[test]
    fn without_the_plant_nothing_is_noted() {
        let (_d, s) = store();
        board(&s, "01");
        assert_eq!(s.plant_feed().unwrap().lag().unwrap(), FeedLag::default());
    }

    #[test]
    fn turning_the_feed_on_notes_the_history_then_every_change_in_order() {
        let (_d, s) = store();
        let b = board(&s, "01");
        let instance = s.plant_enable(true).unwrap();
        assert_eq!(instance.len(), 32);
        // Again: the same database, nothing noted twice.
        assert_eq!(s.plant_enable(true).unwrap(), instance);
        let feed = s.plant_feed().unwrap();
        let lag = feed.lag().unwrap();
        // A board, a certificate and its audit row (no steps yet).
        assert_eq!(lag.entries, 3);
        assert!(lag.oldest_at_ms.is_some());
        let first = feed.batch(0, 100).unwrap();
        assert_eq!(first.boards.len(), 1);
        assert_eq!(first.certificates.len(), 1);
        assert_eq!(first.certificates[0].state, "issued");
        assert_eq!(first.audit.len(), 1);
        assert_eq!(first.audit[0].action, "certificate_issued");

        // A change after: noted, with the row as it is now; a row changed
        // twice comes once.
        s.fail(
            b,
            &crate::core::Failure::new("board_refused", "the board said no"),
            now(),
        )
        .unwrap();
        let next = feed.batch(first.last_seq, 100).unwrap();
        assert!(next.last_seq > first.last_seq);
        assert_eq!(next.boards.len(), 1);
        assert_eq!(next.boards[0].status, "failed");
        assert_eq!(next.certificates[0].state, "abandoned");
        // In pieces of one entry: every entry comes, in order.
        let mut after = 0;
        let mut seen = 0;
        loop {
            let b = feed.batch(after, 1).unwrap();
            if b.is_empty() {
                break;
            }
            assert_eq!(b.at_ms.len(), 1);
            assert!(b.last_seq > after);
            after = b.last_seq;
            seen += 1;
        }
        assert_eq!(seen as i64, feed.lag().unwrap().entries);
        assert_eq!(after, next.last_seq);

        // What the plant committed is deleted; the sequence goes on.
        feed.ack(after).unwrap();
        assert_eq!(feed.lag().unwrap(), FeedLag::default());
        assert!(feed.batch(0, 100).unwrap().is_empty());
        board(&s, "02");
        let again = feed.batch(0, 100).unwrap();
        assert!(
            again.at_ms.len() >= 3 && again.last_seq > after,
            "a number is never used twice"
        );
    }

    #[test]
    fn turning_the_feed_off_drops_it_and_on_again_sends_everything() {
        let (_d, s) = store();
        board(&s, "01");
        let instance = s.plant_enable(true).unwrap();
        s.plant_enable(false).unwrap();
        let feed = s.plant_feed().unwrap();
        assert_eq!(feed.lag().unwrap().entries, 0);
        board(&s, "02");
        assert_eq!(feed.lag().unwrap().entries, 0, "off: nothing noted");
        assert_eq!(s.plant_enable(true).unwrap(), instance, "the same database");
        let all = feed.batch(0, 1000).unwrap();
        assert_eq!(all.boards.len(), 2);
        assert_eq!(all.certificates.len(), 2);
    }
}

#[cfg(test)]
mod resume_tests {
    use crate::store::tests::store;

    #[test]
    fn a_plant_behind_what_it_committed_gets_everything_again() {
        let (_d, s) = store();
        s.plant_enable(true).unwrap();
        s.add_user(
            &crate::store::NewUser {
                name: "ana",
                role: crate::store::Role::Operator,
                badge: None,
                pin: None,
                password: Some("a long enough password"),
            },
            "tests",
            crate::store::tests::now(),
        )
        .unwrap();
        let feed = s.plant_feed().unwrap();
        let all = feed.batch(0, 100).unwrap();
        assert_eq!(all.audit.len(), 1);
        feed.ack(all.last_seq).unwrap();
        // The plant says it has it all: nothing to send.
        assert_eq!(feed.resume(all.last_seq).unwrap(), super::Resume::Resumed);
        assert_eq!(feed.lag().unwrap().entries, 0);
        // The plant says it has less than it committed: everything again.
        assert_eq!(feed.resume(0).unwrap(), super::Resume::SentAgain);
        let again = feed.batch(0, 100).unwrap();
        assert_eq!(again.audit.len(), 1);
        assert!(again.last_seq > all.last_seq);
        // Once, not at every connection.
        feed.ack(again.last_seq).unwrap();
        assert_eq!(feed.resume(again.last_seq).unwrap(), super::Resume::Resumed);
        // A plant with more than this database ever made: refused, and
        // nothing deleted.
        assert_eq!(
            feed.resume(again.last_seq + 5).unwrap(),
            super::Resume::DatabaseBehind {
                plant: again.last_seq + 5,
                made: again.last_seq
            }
        );
    }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::store::tests::store;

    /// Audit rows in the order the feed names them.
    fn audit_order(feed: &PlantFeed, after: i64) -> Vec<i64> {
        feed.with(|c| {
            let mut st = c.prepare(
                "SELECT row FROM plant_feed WHERE kind = 'audit' AND seq > ?1 ORDER BY seq",
            )?;
            st.query_map([after], |r| r.get(0))?.collect()
        })
        .unwrap()
    }

    #[test]
    fn every_record_is_noted_in_order_across_pieces_of_ten_thousand() {
        let (_d, s) = store();
        s.with(|c| {
            let tx = c.transaction()?;
            for i in 1..=25_000i64 {
                tx.execute(
                    "INSERT INTO audit (id, at, actor, action, detail, prev_hash, hash) VALUES (?1, 't', 'a', 'x', '{}', 'p', 'h')",
                    [i],
                )?;
            }
            tx.commit()
        })
        .unwrap();
        s.plant_enable(true).unwrap();
        let feed = s.plant_feed().unwrap();
        let all: Vec<i64> = (1..=25_000).collect();
        assert_eq!(audit_order(&feed, 0), all, "in one transaction");
        let last = feed.lag().unwrap().entries;
        feed.ack(last).unwrap();
        // A plant restored from an older copy: noted again, piece by piece.
        assert_eq!(feed.resume(0).unwrap(), Resume::SentAgain);
        assert_eq!(audit_order(&feed, last), all, "in pieces");
    }
}
