//! The station's SQLite database. The only module that writes SQL.
//!
//! Owns the schema and its migrations, the certificate ledger, board
//! records and step timings. Knows the core's types but not the jig, the
//! web or the CA key. Every method is synchronous and short; async callers
//! run them through [`blocking`].
//!
//! This file holds the [`Store`] handle (opening, migrating, the one
//! connection behind its lock), [`StoreError`], [`ts`] and the station
//! settings. Board records and step timings are in `boards.rs`, the
//! certificate ledger and overrides in `ledger.rs`; each sibling adds its
//! own `impl Store` block.
//!
//! Durability: WAL with `synchronous = FULL`, so a committed ledger entry
//! survives a power cut before the certificate is sent to the board.

mod audit;
mod boards;
mod devices;
mod labels;
mod ledger;
mod migrations;
mod oidc;
mod outbox;
mod people;
mod plant;
mod registry;
mod report;
mod revocations;
mod tally;
#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

pub use audit::{AuditCheck, AuditRow, GENESIS, row_hash};
pub use boards::{BoardId, BoardRow, Stamp, StepLine, StepRow};
pub use devices::{DeviceAction, DeviceRecord, DeviceRevocation, DpsSeen, LabelPrint, Queued};
pub use labels::{LabelCounts, LabelJob, LabelRecord, LabelState, TEST_LABEL_GUID};
pub use ledger::{CertificateRow, Enroll, EnrollmentFacts, NewCertificate};
pub use oidc::{OrgIdentity, OrgSignIn};
pub use outbox::{Job, JobRow, OutboxCounts};
pub use people::{NewUser, PeopleError, Role, Session, TokenRow, User, check_password, check_pin};
pub use plant::{
    FeedAudit, FeedBatch, FeedBoard, FeedCertificate, FeedDeviceAction, FeedEnrollment, FeedLabel,
    FeedLag, FeedRevocation, FeedStep, PlantFeed, Resume,
};
pub use registry::{DeviceHit, DeviceNote, DeviceRetirement};
pub use report::UnitFilter;
pub use revocations::Revocation;
pub use tally::{LineTally, RECENT, SlotTally};

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
        // Every transaction takes the write lock as it begins. Another
        // process (`station device enable` beside `station serve`) may
        // write between a deferred transaction's read and its write; SQLite
        // then fails the write with "database is locked" at once, without
        // waiting out the busy timeout. Begun IMMEDIATE, it waits instead.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
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
        // Foreign keys are off while migrating, as SQLite asks for when a
        // migration rebuilds a table; checked before they are on again.
        // (The pragma cannot change inside a transaction.)
        conn.pragma_update(None, "foreign_keys", "OFF")
            .map_err(err)?;
        for (i, sql) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(version as usize)
        {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            let broken: i64 = tx
                .query_row("SELECT COUNT(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .map_err(err)?;
            if broken > 0 {
                return Err(err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
                    Some(format!(
                        "migration {} would leave {broken} broken references",
                        i + 1
                    )),
                )));
            }
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
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
}
