//! The station's SQLite database. The only module that writes SQL.
//!
//! Owns the schema and its migrations, the certificate ledger, board
//! records and step timings. Knows the core's types but not the jig, the
//! web or the CA key. Every method is synchronous and short; async callers
//! run them through [`blocking`].
//!
//! Durability: WAL with `synchronous = FULL`, so a committed ledger entry
//! survives a power cut before the certificate is sent to the board.

mod audit;
mod labels;
mod migrations;
mod outbox;
mod people;
mod report;
mod revocations;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use audit::{AuditCheck, AuditRow, GENESIS};
pub use labels::{LabelCounts, LabelJob, LabelRecord, LabelState, TEST_LABEL_GUID};
pub use outbox::{Job, JobRow, OutboxCounts};
pub use people::{NewUser, PeopleError, Role, Session, TokenRow, User, check_password, check_pin};
pub use report::UnitFilter;
pub use revocations::Revocation;

use crate::core::{Failure, Review, Step};
use crate::ids::{Guid, Serial, SlotId};
use crate::jig::protocol::BoardIdentity;

/// A board record's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoardId(pub i64);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the station database {path} failed: {source}: check the disk and its free space")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the station database {path} is from a newer station (schema {found}, this station knows {known}): upgrade the station"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("the station database is unusable: {0}")]
    Poisoned(String),
}

/// A certificate about to enter the ledger.
#[derive(Debug, Clone)]
pub struct NewCertificate<'a> {
    pub serial: &'a Serial,
    pub guid: &'a Guid,
    pub fingerprint: &'a str,
    pub pem: &'a str,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub override_used: bool,
}

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
}

/// Who provisions a board, and for which work order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub operator: Option<String>,
    pub work_order: Option<String>,
}

/// What the store knows of a provisioned board, for its enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentFacts {
    pub guid: String,
    pub hw_revision: Option<String>,
    pub fw_version: Option<String>,
    pub mac: Option<String>,
    pub station: String,
    pub slot: u16,
    pub operator: Option<String>,
    pub work_order: Option<String>,
    pub certificate_pem: String,
    pub provisioned_at: String,
    /// The TPM's endorsement key (TPM2B_PUBLIC), for TPM slots.
    pub tpm_ek: Option<Vec<u8>>,
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
}

/// A ledger entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertificateRow {
    pub serial: String,
    pub guid: String,
    pub board_id: i64,
    pub fingerprint_sha256: String,
    pub pem: String,
    pub not_before: String,
    pub not_after: String,
    pub station: String,
    pub slot: u16,
    pub operator: Option<String>,
    pub issued_at: String,
    pub state: String,
}

/// Runs store calls on tokio's blocking pool, so that async callers (slot
/// tasks, the uploader, web handlers) never block a runtime thread on disk.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Poisoned(e.to_string())))
}

/// Formats a time the way the store keeps it (RFC 3339, UTC, milliseconds).
pub fn ts(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_default()
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

const BOARD_COLUMNS: &str = "b.id, b.guid, b.slot, b.station, b.status, b.step, b.hw_revision, b.fw_version, b.mac, b.operator, b.work_order,
     (SELECT serial FROM certificates c WHERE c.board_id = b.id ORDER BY c.issued_at DESC LIMIT 1),
     b.error_code, b.error, b.started_at, b.finished_at";

fn board_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BoardRow> {
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
    })
}

fn cert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertificateRow> {
    Ok(CertificateRow {
        serial: r.get(0)?,
        guid: r.get(1)?,
        board_id: r.get(2)?,
        fingerprint_sha256: r.get(3)?,
        pem: r.get(4)?,
        not_before: r.get(5)?,
        not_after: r.get(6)?,
        station: r.get(7)?,
        slot: r.get(8)?,
        operator: r.get(9)?,
        issued_at: r.get(10)?,
        state: r.get(11)?,
    })
}

const CERT_COLUMNS: &str = "serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, state";

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        let known = migrations::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found: version,
                known,
            });
        }
        for (i, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(version as usize)
        {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Poisoned("a writer panicked".into()))
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self.lock()?;
        f(&mut c).map_err(|source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })
    }

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
    pub fn open_board_by(
        &self,
        station: &str,
        slot: SlotId,
        stamp: &Stamp,
        now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM boards WHERE slot = ?1 AND status = 'in_progress'",
                    [slot.0],
                    |r| r.get(0),
                )
                .optional()?;
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

    /// Records what the board said about itself. If the record belonged to
    /// another board (the board was swapped while the station was down), that
    /// record is closed as failed and a new one is opened; the id to use from
    /// now on is returned.
    pub fn record_identity(
        &self,
        board: BoardId,
        id: &BoardIdentity,
        now: OffsetDateTime,
    ) -> Result<BoardId, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (guid, station, slot): (Option<String>, String, u16) = tx.query_row(
                "SELECT guid, station, slot FROM boards WHERE id = ?1",
                [board.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let mut target = board.0;
            if guid.as_deref().is_some_and(|g| g != id.guid.as_str()) {
                let f = Failure::new(
                    "interrupted",
                    "the station stopped while this board was in the jig, and another board was there when it came back: put this board back to provision it",
                );
                fail_in(&tx, board.0, &f, now)?;
                tx.execute(
                    "INSERT INTO boards (station, slot, status, step, started_at) VALUES (?1, ?2, 'in_progress', 'identify', ?3)",
                    params![station, slot, ts(now)],
                )?;
                target = tx.last_insert_rowid();
                tx.execute("UPDATE steps SET board_id = ?2 WHERE board_id = ?1 AND ended_at IS NULL", params![board.0, target])?;
            }
            tx.execute(
                "UPDATE boards SET guid = ?2, hw_revision = ?3, fw_version = ?4, mac = ?5 WHERE id = ?1",
                params![target, id.guid.as_str(), id.hw_revision, id.fw_version, id.mac.to_string()],
            )?;
            tx.commit()?;
            Ok(BoardId(target))
        })
    }

    /// What stands between this GUID and a new certificate. The chain in a
    /// resume holds the leaf only; the caller appends the CA.
    pub fn review(
        &self,
        board: BoardId,
        guid: &Guid,
        now: OffsetDateTime,
    ) -> Result<Review, StoreError> {
        self.with(|c| {
            let resume: Option<(String, String)> = c
                .query_row(
                    "SELECT serial, pem FROM certificates WHERE board_id = ?1 AND guid = ?2 AND state = 'issued' ORDER BY issued_at DESC LIMIT 1",
                    params![board.0, guid.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((serial, pem)) = resume {
                let der = crate::ca::pem_to_der(&pem).unwrap_or_default();
                return Ok(Review::Resume(crate::core::IssuedCert {
                    serial: Serial(serial),
                    chain: vec![der],
                }));
            }
            let held: Option<(String, String)> = c
                .query_row(
                    "SELECT serial, issued_at FROM certificates WHERE guid = ?1 AND state = 'installed' AND not_after > ?2 ORDER BY issued_at DESC LIMIT 1",
                    params![guid.as_str(), ts(now)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let granted: bool = c.query_row(
                "SELECT EXISTS (SELECT 1 FROM overrides WHERE guid = ?1)",
                [guid.as_str()],
                |r| r.get(0),
            )?;
            Ok(match held {
                Some((serial, issued_at)) if !granted => Review::AlreadyProvisioned {
                    serial: Serial(serial),
                    issued_at,
                },
                Some(_) => Review::Fresh { override_granted: true },
                None => Review::Fresh { override_granted: false },
            })
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
            tx.execute(
                "UPDATE boards SET step = ?2 WHERE id = ?1",
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
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let started: String = c.query_row("SELECT started_at FROM steps WHERE id = ?1", [step_id], |r| r.get(0))?;
            let ms = OffsetDateTime::parse(&started, &Rfc3339)
                .map(|s| (now - s).whole_milliseconds().max(0) as i64)
                .unwrap_or(0);
            c.execute(
                "UPDATE steps SET ended_at = ?2, duration_ms = ?3, outcome = ?4, error_code = ?5, error = ?6 WHERE id = ?1",
                params![
                    step_id,
                    ts(now),
                    ms,
                    if error.is_some() { "failed" } else { "ok" },
                    error.map(|f| f.code.as_str()),
                    error.map(|f| f.message.as_str()),
                ],
            )?;
            Ok(())
        })
    }

    /// Commits a certificate to the ledger (and uses up an override), in one
    /// transaction. Must return before any byte of it goes to the board.
    pub fn commit_certificate(
        &self,
        board: BoardId,
        cert: &NewCertificate<'_>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO certificates (serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, override_used, state)
                 SELECT ?1, ?2, id, ?3, ?4, ?5, ?6, station, slot, operator, ?7, ?8, 'issued' FROM boards WHERE id = ?9",
                params![
                    cert.serial.0,
                    cert.guid.as_str(),
                    cert.fingerprint,
                    cert.pem,
                    ts(cert.not_before),
                    ts(cert.not_after),
                    ts(now),
                    cert.override_used,
                    board.0
                ],
            )?;
            if cert.override_used {
                tx.execute("DELETE FROM overrides WHERE guid = ?1", [cert.guid.as_str()])?;
            }
            let (operator, slot): (Option<String>, u16) = tx.query_row(
                "SELECT operator, slot FROM boards WHERE id = ?1",
                [board.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            audit::append(
                &tx,
                operator.as_deref().unwrap_or("station"),
                "certificate_issued",
                Some(cert.guid.as_str()),
                &serde_json::json!({
                    "serial": cert.serial.0,
                    "fingerprint_sha256": cert.fingerprint,
                    "slot": slot,
                    "override_used": cert.override_used,
                }),
                now,
            )?;
            tx.commit()
        })
    }

    /// The board is provisioned: its certificate is installed.
    ///
    /// With `enroll`, the DPS enrollment job is queued in the same
    /// transaction: a provisioned board always has its job, and a job
    /// always belongs to a provisioned board. `enroll` turns the board's
    /// recorded facts into the enrollment body. With `label`, the board's
    /// label job is queued in the same transaction too.
    pub fn complete(
        &self,
        board: BoardId,
        serial: &Serial,
        now: OffsetDateTime,
        enroll: Option<&dyn Fn(&EnrollmentFacts) -> String>,
        label: bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE boards SET status = 'provisioned', step = 'finish', error_code = NULL, error = NULL, finished_at = ?2 WHERE id = ?1",
                params![board.0, ts(now)],
            )?;
            tx.execute(
                "UPDATE certificates SET state = 'installed' WHERE serial = ?1 AND board_id = ?2",
                params![serial.0, board.0],
            )?;
            if let Some(build) = enroll {
                let facts = tx.query_row(
                    "SELECT b.guid, b.hw_revision, b.fw_version, b.mac, b.station, b.slot, b.operator, c.pem, b.work_order, b.tpm_ek
                     FROM boards b JOIN certificates c ON c.board_id = b.id AND c.serial = ?2 WHERE b.id = ?1",
                    params![board.0, serial.0],
                    |r| {
                        Ok(EnrollmentFacts {
                            guid: r.get(0)?,
                            hw_revision: r.get(1)?,
                            fw_version: r.get(2)?,
                            mac: r.get(3)?,
                            station: r.get(4)?,
                            slot: r.get(5)?,
                            operator: r.get(6)?,
                            work_order: r.get(8)?,
                            certificate_pem: r.get(7)?,
                            provisioned_at: ts(now),
                            tpm_ek: r
                                .get::<_, Option<String>>(9)?
                                .and_then(|e| hex::decode(e).ok()),
                        })
                    },
                )?;
                outbox::enqueue(&tx, board.0, &build(&facts), now)?;
            }
            if label {
                labels::enqueue_in(&tx, board.0, now)?;
            }
            tx.commit()
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

    /// A station setting that outlives a restart.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
        })
    }

    /// Sets a station setting, with an audit row saying who and what.
    pub fn set_setting(
        &self,
        key: &str,
        value: Option<&str>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            audit::append(&tx, by, "setting_changed", Some(key), &serde_json::json!({ "value": value }), now)?;
            tx.commit()
        })
    }

    /// Lets one more certificate be issued for a GUID that holds one.
    pub fn grant_override(
        &self,
        guid: &Guid,
        by: &str,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO overrides (guid, granted_by, reason, granted_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (guid) DO UPDATE SET granted_by = excluded.granted_by, reason = excluded.reason, granted_at = excluded.granted_at",
                params![guid.as_str(), by, reason, ts(now)],
            )?;
            audit::append(&tx, by, "override_granted", Some(guid.as_str()), &serde_json::json!({ "reason": reason }), now)?;
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
                "SELECT step, started_at, ended_at, duration_ms, outcome, error_code, error FROM steps WHERE board_id = ?1 ORDER BY id",
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
                    })
                })?
                .collect()
        })
    }

    /// Every ledger entry for a GUID, oldest first.
    pub fn certificates(&self, guid: &Guid) -> Result<Vec<CertificateRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE guid = ?1 ORDER BY issued_at, rowid"
            ))?;
            st.query_map([guid.as_str()], cert_row)?.collect()
        })
    }

    /// The ledger entry for a board record's latest certificate.
    pub fn certificate_of_board(&self, board: i64) -> Result<Option<CertificateRow>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {CERT_COLUMNS} FROM certificates WHERE board_id = ?1 ORDER BY issued_at DESC, rowid DESC LIMIT 1"),
                [board],
                cert_row,
            )
            .optional()
        })
    }
}

fn fail_in(
    tx: &rusqlite::Transaction<'_>,
    board: i64,
    f: &Failure,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE boards SET status = 'failed', error_code = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
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
