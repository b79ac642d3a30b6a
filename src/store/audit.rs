//! The audit trail: an append-only table of security-relevant events, each
//! row hash-chained to the one before, so that an edited or deleted row is
//! detected by [`Store::verify_audit`].

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, ts};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One event in the trail.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditRow {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What `verify_audit` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditCheck {
    Intact {
        rows: i64,
    },
    /// The first row at which the chain breaks, and why.
    Broken {
        row: i64,
        reason: String,
    },
}

/// The chained hash of a row: SHA-256 over the previous hash and every
/// field, each on its own line.
pub fn row_hash(
    prev: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    detail: &str,
) -> String {
    let text = format!(
        "{prev}\n{id}\n{at}\n{actor}\n{action}\n{}\n{detail}",
        subject.unwrap_or("")
    );
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// Appends an event inside the caller's transaction, so that the event and
/// what it records commit together.
pub(super) fn append(
    tx: &rusqlite::Transaction<'_>,
    actor: &str,
    action: &str,
    subject: Option<&str>,
    detail: &serde_json::Value,
    now: OffsetDateTime,
) -> rusqlite::Result<()> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, prev) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_string()),
    };
    let at = ts(now);
    let detail = detail.to_string();
    let hash = row_hash(&prev, id, &at, actor, action, subject, &detail);
    tx.execute(
        "INSERT INTO audit (id, at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![id, at, actor, action, subject, detail, prev, hash],
    )?;
    Ok(())
}

impl Store {
    /// Records an event on its own.
    pub fn audit(
        &self,
        actor: &str,
        action: &str,
        subject: Option<&str>,
        detail: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            append(&tx, actor, action, subject, detail, now)?;
            tx.commit()
        })
    }

    /// The whole trail, oldest first.
    pub fn audit_rows(&self) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_where(None)
    }

    /// The rows about one subject (a GUID), oldest first.
    pub fn audit_about(&self, subject: &str) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_where(Some(subject))
    }

    fn audit_where(&self, subject: Option<&str>) -> Result<Vec<AuditRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit WHERE (?1 IS NULL OR subject = ?1) ORDER BY id")?;
            st.query_map([subject], |r| {
                let detail: String = r.get(5)?;
                Ok(AuditRow {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    subject: r.get(4)?,
                    // A detail that is not JSON is kept as text: verify
                    // still sees it byte for byte.
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
                    prev_hash: r.get(6)?,
                    hash: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    /// Walks the chain and names the first row that does not hold.
    pub fn verify_audit(&self) -> Result<AuditCheck, StoreError> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, at, actor, action, subject, detail, prev_hash, hash FROM audit ORDER BY id")?;
            let mut rows = st.query([])?;
            let (mut prev, mut expected_id, mut n) = (GENESIS.to_string(), 1i64, 0i64);
            while let Some(r) = rows.next()? {
                let id: i64 = r.get(0)?;
                let (at, actor, action): (String, String, String) = (r.get(1)?, r.get(2)?, r.get(3)?);
                let subject: Option<String> = r.get(4)?;
                let (detail, prev_hash, hash): (String, String, String) = (r.get(5)?, r.get(6)?, r.get(7)?);
                if id != expected_id {
                    return Ok(AuditCheck::Broken {
                        row: id,
                        reason: format!("rows {expected_id} to {} are missing (deleted)", id - 1),
                    });
                }
                if prev_hash != prev {
                    return Ok(AuditCheck::Broken {
                        row: id,
                        reason: "it does not follow the row before it (a row before it was changed or removed)".into(),
                    });
                }
                if row_hash(&prev_hash, id, &at, &actor, &action, subject.as_deref(), &detail) != hash {
                    return Ok(AuditCheck::Broken {
                        row: id,
                        reason: "its content does not match its hash (it was edited)".into(),
                    });
                }
                prev = hash;
                expected_id += 1;
                n += 1;
            }
            Ok(AuditCheck::Intact { rows: n })
        })
    }
}
