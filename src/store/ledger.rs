//! The certificate ledger: what stands between a GUID and a new
//! certificate, each certificate committed before it goes to the board and
//! installed when the board is provisioned (with its enrollment and label
//! jobs in the same transaction), overrides, and the entries as listed.
//! The review refuses a revoked or retired GUID without an admin's
//! override.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{BoardId, Store, StoreError, audit, labels, outbox, ts};
use crate::core::ReviewFacts;
use crate::ids::{Guid, Serial};

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
    /// A symmetric-key device: the id of the master key its key was
    /// derived under.
    pub master_key_id: Option<String>,
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

const CERT_COLUMNS: &str = "serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, state";

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

/// The DPS enrollment a completed board gets.
#[derive(Clone, Copy)]
pub enum Enroll<'a> {
    /// Its own: the body built from the board's recorded facts.
    Individual(&'a dyn Fn(&EnrollmentFacts) -> String),
    /// Its line's enrollment group covers it: no job of its own.
    Group,
}

impl Store {
    /// What the store knows about this GUID and this record, for the
    /// core's verdict ([`crate::core::review`]). An interrupted attempt's
    /// chain holds the leaf only; the caller appends the CA.
    pub fn review_facts(
        &self,
        board: BoardId,
        guid: &Guid,
        now: OffsetDateTime,
    ) -> Result<ReviewFacts, StoreError> {
        self.with(|c| {
            let untold: bool = c.query_row(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM boards b WHERE b.id = ?1 AND b.guid = ?2 AND {})",
                    super::boards::UNTOLD
                ),
                params![board.0, guid.as_str()],
                |r| r.get(0),
            )?;
            let untold = if untold {
                let serial: Option<String> = c
                    .query_row(
                        "SELECT serial FROM certificates WHERE board_id = ?1 AND state = 'installed' ORDER BY issued_at DESC LIMIT 1",
                        [board.0],
                        |r| r.get(0),
                    )
                    .optional()?;
                Some(serial.map(Serial))
            } else {
                None
            };
            let interrupted = c
                .query_row(
                    "SELECT serial, pem FROM certificates WHERE board_id = ?1 AND guid = ?2 AND state = 'issued' ORDER BY issued_at DESC LIMIT 1",
                    params![board.0, guid.as_str()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?
                .map(|(serial, pem)| crate::core::IssuedCert {
                    serial: Serial(serial),
                    chain: vec![crate::ca::pem_to_der(&pem).unwrap_or_default()],
                });
            let revoked_at = super::devices::revocation(c, guid.as_str())?.map(|r| r.revoked_at);
            let retired_at =
                super::registry::retirement(c, guid.as_str())?.map(|r| r.retired_at);
            let held: Option<(String, String)> = c
                .query_row(
                    "SELECT serial, issued_at FROM certificates WHERE guid = ?1 AND state = 'installed' AND not_after > ?2 ORDER BY issued_at DESC LIMIT 1",
                    params![guid.as_str(), ts(now)],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (override_granted, override_by_admin): (bool, bool) = c
                .query_row(
                    "SELECT 1, by_admin FROM overrides WHERE guid = ?1",
                    [guid.as_str()],
                    |r| Ok((true, r.get(1)?)),
                )
                .optional()?
                .unwrap_or((false, false));
            let keyed_at: Option<String> = c
                .query_row(
                    "SELECT b.finished_at FROM device_keys k JOIN boards b ON b.id = k.board_id
                     WHERE k.guid = ?1 AND b.status = 'provisioned' ORDER BY b.id DESC LIMIT 1",
                    [guid.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(ReviewFacts {
                untold,
                interrupted,
                revoked_at,
                retired_at,
                held: held.map(|(s, at)| (Serial(s), at)),
                keyed_at,
                override_granted,
                override_by_admin,
            })
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

    /// The board is provisioned: its certificate is installed, and its DPS
    /// enrollment job (for an individual enrollment: [`Enroll`]) and its
    /// label job are queued, all in one transaction: a provisioned board
    /// always has its jobs, and a job always belongs to a provisioned
    /// board. Comes before the jig is told the board passed.
    pub fn complete(
        &self,
        board: BoardId,
        serial: Option<&Serial>,
        now: OffsetDateTime,
        enroll: Enroll<'_>,
    ) -> Result<(), StoreError> {
        let build = match enroll {
            Enroll::Individual(b) => Some(b),
            Enroll::Group => None,
        };
        self.complete_with(board, serial, now, build, true)
    }

    /// The core's verdict on [`Store::review_facts`], for the store's own
    /// tests.
    #[cfg(test)]
    pub fn review(
        &self,
        board: BoardId,
        guid: &Guid,
        now: OffsetDateTime,
    ) -> Result<crate::core::Review, StoreError> {
        self.review_facts(board, guid, now)
            .map(|f| crate::core::review(&f))
    }

    /// As [`Store::complete`], but queuing neither job: for unit tests of
    /// other parts of the store, never for a board on the line.
    #[cfg(test)]
    pub fn complete_without_jobs(
        &self,
        board: BoardId,
        serial: Option<&Serial>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.complete_with(board, serial, now, None, false)
    }

    fn complete_with(
        &self,
        board: BoardId,
        serial: Option<&Serial>,
        now: OffsetDateTime,
        enroll: Option<&dyn Fn(&EnrollmentFacts) -> String>,
        label: bool,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            if label && crate::failpoint::fails("complete") {
                // As a full disk answers the transaction.
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                    Some("database or disk is full (failpoint fail:complete)".into()),
                ));
            }
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE boards SET status = 'provisioned', step = 'finish', error_code = NULL, error = NULL, finished_at = ?2 WHERE id = ?1",
                params![board.0, ts(now)],
            )?;
            tx.execute(
                "UPDATE certificates SET state = 'installed' WHERE serial = ?1 AND board_id = ?2",
                params![serial.map(|s| &s.0), board.0],
            )?;
            if serial.is_none() {
                // A symmetric-key device: a supervisor's permission to
                // provision the GUID again is used up by the board it let
                // through, as by a certificate.
                tx.execute(
                    "DELETE FROM overrides WHERE guid = (SELECT guid FROM boards WHERE id = ?1)",
                    [board.0],
                )?;
            }
            if let Some(build) = enroll {
                let facts = tx.query_row(
                    "SELECT b.guid, b.hw_revision, b.fw_version, b.mac, b.station, b.slot, b.operator, c.pem, b.work_order, b.tpm_ek,
                        (SELECT k.master_key_id FROM device_keys k WHERE k.board_id = b.id)
                     FROM boards b LEFT JOIN certificates c ON c.board_id = b.id AND c.serial = ?2 WHERE b.id = ?1",
                    params![board.0, serial.map(|s| &s.0)],
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
                            certificate_pem: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                            provisioned_at: ts(now),
                            tpm_ek: r
                                .get::<_, Option<String>>(9)?
                                .and_then(|e| hex::decode(e).ok()),
                            master_key_id: r.get(10)?,
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

    /// Lets one more certificate be issued for a GUID that holds one.
    pub fn grant_override(
        &self,
        guid: &Guid,
        by: &str,
        reason: &str,
        by_admin: bool,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO overrides (guid, granted_by, reason, granted_at, by_admin) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (guid) DO UPDATE SET granted_by = excluded.granted_by, reason = excluded.reason, granted_at = excluded.granted_at, by_admin = excluded.by_admin",
                params![guid.as_str(), by, reason, ts(now), by_admin],
            )?;
            audit::append(&tx, by, "override_granted", Some(guid.as_str()), &serde_json::json!({ "reason": reason, "by_admin": by_admin }), now)?;
            tx.commit()
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
