//! The DPS enrollment outbox: jobs written with the board's completion,
//! taken in order by the uploader, marked enrolled or parked.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, ts};

/// A job to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub guid: String,
    pub body: String,
    pub attempts: i64,
}

/// A job as `station outbox list` and the API show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobRow {
    pub id: i64,
    pub guid: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// Queue figures for the API and metrics.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub enrolled: i64,
    pub parked: i64,
    /// When the oldest pending job was queued.
    pub oldest_pending: Option<String>,
}

pub(super) fn job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        guid: r.get(1)?,
        state: r.get(2)?,
        attempts: r.get(3)?,
        last_error: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

impl Store {
    /// The oldest pending jobs, at most `limit`, one per GUID (a later job
    /// for the same GUID waits for the earlier one).
    pub fn due_jobs(&self, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT o.id, o.guid, o.body, o.attempts FROM outbox o
                 WHERE o.state = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.guid = o.guid AND e.state = 'pending' AND e.id < o.id)
                 ORDER BY o.id LIMIT ?1",
            )?;
            st.query_map([limit], |r| {
                Ok(Job {
                    id: r.get(0)?,
                    guid: r.get(1)?,
                    body: r.get(2)?,
                    attempts: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// DPS holds these enrollments.
    pub fn mark_enrolled(
        &self,
        done: &[(i64, Option<String>)],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for (id, etag) in done {
                tx.execute(
                    "UPDATE outbox SET state = 'enrolled', etag = ?2, last_error = NULL, updated_at = ?3 WHERE id = ?1",
                    params![id, etag, ts(now)],
                )?;
            }
            tx.commit()
        })
    }

    /// These jobs are about to be sent: recorded first, so that after a
    /// crash a job that may have reached DPS is read back before it is sent
    /// again.
    pub fn note_sending(&self, ids: &[i64], now: OffsetDateTime) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, updated_at = ?2 WHERE id = ?1",
                    params![id, ts(now)],
                )?;
            }
            tx.commit()
        })
    }

    /// A try failed in a way that another try may cure.
    pub fn note_failure(
        &self,
        ids: &[i64],
        error: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute(
                    "UPDATE outbox SET last_error = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, error, ts(now)],
                )?;
            }
            tx.commit()
        })
    }

    /// These jobs need a person: no more tries until `retry_parked`.
    pub fn park(&self, ids: &[i64], reason: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            for id in ids {
                tx.execute(
                    "UPDATE outbox SET state = 'parked', last_error = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, reason, ts(now)],
                )?;
            }
            tx.commit()
        })
    }

    /// Puts parked jobs (all, or one GUID's) back in the queue; returns how
    /// many.
    pub fn retry_parked(
        &self,
        guid: Option<&str>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE outbox SET state = 'pending', updated_at = ?2 WHERE state = 'parked' AND (?1 IS NULL OR guid = ?1)",
                params![guid, ts(now)],
            )?;
            tx.execute("UPDATE outbox_control SET retries = retries + 1 WHERE id = 1", [])?;
            super::audit::append(&tx, by, "outbox_retry", guid, &serde_json::json!({ "requeued": n }), now)?;
            tx.commit()?;
            Ok(n)
        })
    }

    /// How many supervisor retries there have been (see `retry_parked`).
    pub fn retry_count(&self) -> Result<i64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT retries FROM outbox_control WHERE id = 1", [], |r| {
                r.get(0)
            })
        })
    }

    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        self.with(|c| {
            let mut counts = OutboxCounts::default();
            let mut st = c.prepare("SELECT state, COUNT(*) FROM outbox GROUP BY state")?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            for row in rows {
                let (state, n) = row?;
                match state.as_str() {
                    "pending" => counts.pending = n,
                    "enrolled" => counts.enrolled = n,
                    _ => counts.parked = n,
                }
            }
            counts.oldest_pending = c
                .query_row(
                    "SELECT MIN(created_at) FROM outbox WHERE state = 'pending'",
                    [],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            Ok(counts)
        })
    }

    /// Board records by status, for metrics.
    pub fn board_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT status, COUNT(*) FROM boards GROUP BY status ORDER BY status")?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }

    /// Jobs in a state (or all), oldest first, at most `limit`.
    pub fn outbox_jobs(&self, state: Option<&str>, limit: u32) -> Result<Vec<JobRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, guid, state, attempts, last_error, created_at, updated_at FROM outbox
                 WHERE (?1 IS NULL OR state = ?1) ORDER BY id LIMIT ?2",
            )?;
            st.query_map(params![state, limit], job_row)?.collect()
        })
    }

    /// The upload state of a board record's enrollment, if it has one.
    pub fn enrollment_state(&self, board: i64) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            c.query_row(
                "SELECT state FROM outbox WHERE board_id = ?1 ORDER BY id DESC LIMIT 1",
                [board],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

pub(super) fn enqueue(
    tx: &rusqlite::Transaction<'_>,
    board: i64,
    body: &str,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (guid, board_id, body, state, created_at, updated_at)
         SELECT guid, id, ?2, 'pending', ?3, ?3 FROM boards WHERE id = ?1 AND guid IS NOT NULL",
        params![board, body, ts(now)],
    )?;
    Ok(())
}
