//! Devices after the line: lifecycle actions (activate, disable, enable,
//! revoke, retire) queued as an outbox of their own and kept as the
//! device's history, the DPS enrollment as last seen, revoked and retired
//! devices, and the device's whole record for its page.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::boards::{BOARD_COLUMNS, board_row};
use super::registry::{CURRENT_BOARD, DeviceNote, DeviceRetirement, retirement};
use super::{AuditRow, BoardRow, CertificateRow, JobRow, Store, StoreError, audit, ts};
use crate::ids::Guid;
use crate::registry::Location;

/// A lifecycle action, queued or done.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceAction {
    pub id: i64,
    pub guid: String,
    /// `activate`, `disable`, `enable`, `revoke` or `retire`.
    pub action: String,
    /// For `activate`: `{"hub", "tags", "desired"}`.
    pub params: serde_json::Value,
    pub reason: Option<String>,
    pub actor: String,
    /// `pending`, `done` or `parked`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const ACTION_COLUMNS: &str =
    "id, guid, action, params, reason, actor, state, attempts, last_error, created_at, updated_at";

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceAction> {
    let params: String = r.get(3)?;
    Ok(DeviceAction {
        id: r.get(0)?,
        guid: r.get(1)?,
        action: r.get(2)?,
        params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
        reason: r.get(4)?,
        actor: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

/// The DPS enrollment as the station last saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DpsSeen {
    pub provisioning_status: Option<String>,
    pub etag: Option<String>,
    pub enrollment: serde_json::Value,
    pub seen_at: String,
}

/// A device revoked for good.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceRevocation {
    pub serial: String,
    pub revoked_at: String,
    pub reason: String,
    pub revoked_by: String,
}

/// What asking for an action came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Queued {
    /// Queued with this id (and, for revoke, the certificate revoked).
    Queued(i64),
    /// The station has no installed certificate for this GUID.
    Unknown,
    /// The device was revoked: nothing more is done with it.
    Revoked(DeviceRevocation),
    /// The device was retired: nothing more is done with it.
    Retired(DeviceRetirement),
    /// A revoke of a symmetric-key device: it has no certificate to
    /// revoke.
    NoCertificate,
    /// A device of the line's enrollment group (`enrollment = "group"`)
    /// has no enrollment of its own to activate, disable or enable.
    InGroup,
}

/// A label print job of a device.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabelPrint {
    /// `board` (the first) or `reprint`.
    pub kind: String,
    /// `pending`, `printed` or `cancelled`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub requested_by: String,
    pub created_at: String,
    pub printed_at: Option<String>,
}

/// Everything the station holds about a device.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceRecord {
    pub guid: String,
    /// Every board record with this GUID, newest first, with its steps.
    pub boards: Vec<(BoardRow, Vec<super::StepRow>)>,
    pub certificates: Vec<CertificateRow>,
    pub uploads: Vec<JobRow>,
    /// Label prints: the first, reprints.
    pub labels: Vec<LabelPrint>,
    pub actions: Vec<DeviceAction>,
    pub dps: Option<DpsSeen>,
    pub revocation: Option<DeviceRevocation>,
    /// Set when the device was retired (and not provisioned again since).
    pub retirement: Option<DeviceRetirement>,
    /// Where the device is, if anyone said.
    pub location: Option<Location>,
    /// Service notes, oldest first.
    pub notes: Vec<DeviceNote>,
    /// Audit rows about this device, oldest first.
    pub audit: Vec<AuditRow>,
}

/// The certificate a device holds now, its newest installed one, after
/// `SELECT <columns>`.
const CURRENT_CERT: &str = "FROM certificates WHERE guid = ?1 AND state = 'installed' ORDER BY issued_at DESC, rowid DESC LIMIT 1";

/// The revocation of the certificate the device holds now, if it is
/// revoked (a device given a new certificate by an admin's override after
/// a revocation is not revoked).
pub(super) fn revocation(
    c: &rusqlite::Connection,
    guid: &str,
) -> rusqlite::Result<Option<DeviceRevocation>> {
    c.query_row(
        &format!("SELECT serial, revoked_at, reason, revoked_by FROM device_revocations WHERE guid = ?1 AND serial = (SELECT serial {CURRENT_CERT})"),
        [guid],
        |r| {
            Ok(DeviceRevocation {
                serial: r.get(0)?,
                revoked_at: r.get(1)?,
                reason: r.get(2)?,
                revoked_by: r.get(3)?,
            })
        },
    )
    .optional()
}

impl Store {
    /// Queues a lifecycle action for a device the station provisioned, with
    /// an audit row naming who and why, in one transaction. A revoke also
    /// revokes the device's certificate (for the CRL) and records the
    /// device as revoked, before the DPS side is done; a retire puts every
    /// certificate of the device on the CRL and records the device as
    /// retired, likewise. A revoke and the other actions need the
    /// device's installed certificate; a retire needs only its provisioned
    /// board record.
    pub fn queue_device_action(
        &self,
        guid: &Guid,
        action: &str,
        params: &serde_json::Value,
        reason: Option<&str>,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<Queued, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(r) = retirement(&tx, guid.as_str())? {
                return Ok(Queued::Retired(r));
            }
            if let Some(r) = revocation(&tx, guid.as_str())? {
                return Ok(Queued::Revoked(r));
            }
            let serial: Option<String> = tx
                .query_row(&format!("SELECT serial {CURRENT_CERT}"), [guid.as_str()], |r| r.get(0))
                .optional()?;
            let board: Option<i64> = tx.query_row(&format!("SELECT {CURRENT_BOARD}"), [guid.as_str()], |r| r.get(0))?;
            // A symmetric-key device has no certificate: its key record
            // on the provisioned board makes it a device.
            let keyed: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM device_keys WHERE board_id = ?1)",
                [board],
                |r| r.get(0),
            )?;
            let own_enrollment: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE guid = ?1)",
                [guid.as_str()],
                |r| r.get(0),
            )?;
            let known = match action {
                "retire" => board.is_some(),
                _ if keyed && serial.is_none() && !own_enrollment && action != "revoke" => {
                    return Ok(Queued::InGroup);
                }
                "revoke" if serial.is_none() && keyed => return Ok(Queued::NoCertificate),
                _ => serial.is_some() || keyed,
            };
            if !known {
                return Ok(Queued::Unknown);
            }
            // A device of the line's enrollment group has no enrollment of
            // its own: its retirement is recorded and refused at the line,
            // and nothing is asked of DPS (a DELETE there could remove the
            // disabled individual enrollment that blocks it).
            let in_group = action == "retire" && keyed && serial.is_none() && !own_enrollment;
            let (state, note) = if in_group {
                (
                    "done",
                    Some("a device of the line's enrollment group: nothing to delete in DPS; to stop it registering, give it a disabled individual enrollment in DPS or rotate the group key"),
                )
            } else {
                ("pending", None)
            };
            tx.execute(
                "INSERT INTO device_actions (guid, action, params, reason, actor, state, last_error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                params![guid.as_str(), action, params.to_string(), reason, actor, state, note, ts(now)],
            )?;
            let id = tx.last_insert_rowid();
            let mut detail = serde_json::json!({ "action_id": id, "reason": reason });
            if in_group {
                detail["dps"] = note.into();
            }
            if action == "activate" {
                detail["params"] = params.clone();
            }
            if action == "revoke" {
                revoke_issued(&tx, guid.as_str(), reason, actor, now)?;
                tx.execute(
                    "INSERT INTO device_revocations (serial, guid, revoked_at, reason, revoked_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![serial, guid.as_str(), ts(now), reason.unwrap_or(""), actor],
                )?;
                detail["serial"] = serial.into();
            }
            if action == "retire" {
                let serials = revoke_issued(&tx, guid.as_str(), reason, actor, now)?;
                tx.execute(
                    "INSERT INTO device_retirements (board_id, guid, retired_at, reason, retired_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![board, guid.as_str(), ts(now), reason.unwrap_or(""), actor],
                )?;
                detail["board_id"] = board.into();
                detail["serials"] = serials.into();
            }
            audit::append(
                &tx,
                actor,
                &format!("device_{action}"),
                Some(guid.as_str()),
                &detail,
                now,
            )?;
            tx.commit()?;
            Ok(Queued::Queued(id))
        })
    }

    /// The oldest pending action that may go now: none of its device's
    /// earlier actions is pending, and its enrollment is not still waiting
    /// in the enrollment outbox.
    pub fn due_device_action(&self) -> Result<Option<DeviceAction>, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {ACTION_COLUMNS} FROM device_actions a
                     WHERE a.state = 'pending'
                       AND NOT EXISTS (SELECT 1 FROM device_actions e WHERE e.guid = a.guid AND e.state = 'pending' AND e.id < a.id)
                       AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.guid = a.guid AND o.state = 'pending')
                     ORDER BY a.id LIMIT 1"
                ),
                [],
                action_row,
            )
            .optional()
        })
    }

    /// The action reached DPS (or DPS already was as it asks): done, with
    /// the enrollment as DPS now holds it.
    pub fn device_action_done(
        &self,
        id: i64,
        guid: &str,
        enrollment: &serde_json::Value,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE device_actions SET state = 'done', last_error = NULL, updated_at = ?2 WHERE id = ?1",
                params![id, ts(now)],
            )?;
            upsert_dps(&tx, guid, enrollment, now)?;
            tx.commit()
        })
    }

    /// A retire reached DPS, or found the enrollment gone already: done,
    /// and the enrollment as last seen is recorded as deleted.
    pub fn device_action_gone(
        &self,
        id: i64,
        guid: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE device_actions SET state = 'done', last_error = NULL, updated_at = ?2 WHERE id = ?1",
                params![id, ts(now)],
            )?;
            tx.execute(
                "INSERT INTO device_dps (guid, provisioning_status, etag, enrollment, seen_at) VALUES (?1, 'deleted', NULL, 'null', ?2)
                 ON CONFLICT (guid) DO UPDATE SET provisioning_status = excluded.provisioning_status, etag = NULL,
                     enrollment = excluded.enrollment, seen_at = excluded.seen_at",
                params![guid, ts(now)],
            )?;
            tx.commit()
        })
    }

    /// A try that failed for now: counted, the action stays pending.
    pub fn device_action_failed(
        &self,
        id: i64,
        error: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE device_actions SET attempts = attempts + 1, last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, error, ts(now)],
            )
            .map(|_| ())
        })
    }

    /// An action DPS will not take as it is: parked, with the reason and
    /// an audit row, for a supervisor to look at.
    pub fn park_device_action(
        &self,
        action: &DeviceAction,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE device_actions SET state = 'parked', attempts = attempts + 1, last_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![action.id, reason, ts(now)],
            )?;
            audit::append(
                &tx,
                "station",
                "device_action_parked",
                Some(&action.guid),
                &serde_json::json!({ "action_id": action.id, "action": action.action, "reason": reason }),
                now,
            )?;
            tx.commit()
        })
    }

    /// The registration id the device's enrollment was sent with (the
    /// GUID, or a TPM's), and the certificate it holds now (PEM).
    pub fn enrollment_facts_of(
        &self,
        guid: &str,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        self.with(|c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM outbox WHERE guid = ?1 ORDER BY id DESC LIMIT 1",
                    [guid],
                    |r| r.get(0),
                )
                .optional()?;
            let id = body
                .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                .and_then(|v| v["registrationId"].as_str().map(str::to_string));
            let pem: Option<String> = c
                .query_row(&format!("SELECT pem {CURRENT_CERT}"), [guid], |r| r.get(0))
                .optional()?;
            Ok((id, pem))
        })
    }

    /// A device's actions, oldest first.
    pub fn device_actions(&self, guid: &str) -> Result<Vec<DeviceAction>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {ACTION_COLUMNS} FROM device_actions WHERE guid = ?1 ORDER BY id"
            ))?;
            st.query_map([guid], action_row)?.collect()
        })
    }

    /// Whether the certificate the device holds now is revoked, and how.
    pub fn device_revocation(&self, guid: &str) -> Result<Option<DeviceRevocation>, StoreError> {
        self.with(|c| revocation(c, guid))
    }

    /// Everything about one device, for its page and `station device show`.
    pub fn device_record(&self, guid: &Guid) -> Result<DeviceRecord, StoreError> {
        let g = guid.as_str();
        let boards: Vec<BoardRow> = self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {BOARD_COLUMNS} FROM boards b WHERE b.guid = ?1 ORDER BY b.id DESC"
            ))?;
            st.query_map([g], board_row)?.collect()
        })?;
        let mut with_steps = Vec::with_capacity(boards.len());
        for b in boards {
            let steps = self.steps(b.id)?;
            with_steps.push((b, steps));
        }
        let uploads = self.with(|c| {
            let mut st = c.prepare(
                "SELECT id, guid, state, attempts, last_error, created_at, updated_at FROM outbox WHERE guid = ?1 ORDER BY id",
            )?;
            st.query_map([g], super::outbox::job_row)?.collect()
        })?;
        let dps = self.with(|c| {
            c.query_row(
                "SELECT provisioning_status, etag, enrollment, seen_at FROM device_dps WHERE guid = ?1",
                [g],
                |r| {
                    let e: String = r.get(2)?;
                    Ok(DpsSeen {
                        provisioning_status: r.get(0)?,
                        etag: r.get(1)?,
                        enrollment: serde_json::from_str(&e).unwrap_or(serde_json::Value::Null),
                        seen_at: r.get(3)?,
                    })
                },
            )
            .optional()
        })?;
        let audit = self.audit_about(g)?;
        Ok(DeviceRecord {
            guid: g.to_string(),
            boards: with_steps,
            certificates: {
                // A certificate on the revocation list reads as revoked,
                // whatever the ledger's own state says.
                let revoked: std::collections::HashSet<String> = self.with(|c| {
                    let mut st = c.prepare(
                        "SELECT r.serial FROM revocations r JOIN certificates c ON c.serial = r.serial WHERE c.guid = ?1",
                    )?;
                    st.query_map([g], |r| r.get(0))?.collect()
                })?;
                let mut certs = self.certificates(guid)?;
                for c in &mut certs {
                    if revoked.contains(&c.serial) {
                        c.state = "revoked".into();
                    }
                }
                certs
            },
            uploads,
            labels: self.with(|c| {
                let mut st = c.prepare(
                    "SELECT kind, state, attempts, last_error, requested_by, created_at, printed_at FROM labels WHERE guid = ?1 ORDER BY id",
                )?;
                st.query_map([g], |r| {
                    Ok(LabelPrint {
                        kind: r.get(0)?,
                        state: r.get(1)?,
                        attempts: r.get(2)?,
                        last_error: r.get(3)?,
                        requested_by: r.get(4)?,
                        created_at: r.get(5)?,
                        printed_at: r.get(6)?,
                    })
                })?
                .collect()
            })?,
            actions: self.device_actions(g)?,
            dps,
            revocation: self.device_revocation(g)?,
            retirement: self.device_retirement(g)?,
            location: self.device_location(g)?,
            notes: self.device_notes(g)?,
            audit,
        })
    }
}

impl DeviceRecord {
    /// Whether the station has any record of the device.
    pub fn is_known(&self) -> bool {
        !(self.certificates.is_empty() && self.boards.is_empty())
    }
}

/// Puts every certificate the station issued for the device and that is
/// not revoked yet on the CRL (`revocations`), each with a
/// `certificate_revoked` audit row; the serials, oldest first. For a revoke
/// and a retire alike: not only the certificate the device holds now.
fn revoke_issued(
    tx: &rusqlite::Transaction<'_>,
    guid: &str,
    reason: Option<&str>,
    actor: &str,
    now: OffsetDateTime,
) -> rusqlite::Result<Vec<String>> {
    let serials: Vec<String> = {
        let mut st = tx.prepare(
            "SELECT serial FROM certificates c WHERE guid = ?1 AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial) ORDER BY issued_at",
        )?;
        st.query_map([guid], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for s in &serials {
        tx.execute(
            "INSERT INTO revocations (serial, revoked_at, reason, revoked_by) VALUES (?1, ?2, ?3, ?4)",
            params![s, ts(now), reason.unwrap_or(""), actor],
        )?;
        audit::append(
            tx,
            actor,
            "certificate_revoked",
            Some(guid),
            &serde_json::json!({ "serial": s, "reason": reason }),
            now,
        )?;
    }
    Ok(serials)
}

/// Records the enrollment as DPS last returned it, without any symmetric
/// key it may carry: the station keeps no device key.
fn upsert_dps(
    c: &rusqlite::Connection,
    guid: &str,
    enrollment: &serde_json::Value,
    now: OffsetDateTime,
) -> rusqlite::Result<usize> {
    let mut enrollment = enrollment.clone();
    if let Some(keys) = enrollment["attestation"]["symmetricKey"].as_object_mut() {
        keys.clear();
    }
    c.execute(
        "INSERT INTO device_dps (guid, provisioning_status, etag, enrollment, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (guid) DO UPDATE SET provisioning_status = excluded.provisioning_status, etag = excluded.etag,
             enrollment = excluded.enrollment, seen_at = excluded.seen_at",
        params![
            guid,
            enrollment["provisioningStatus"].as_str(),
            enrollment["etag"].as_str(),
            enrollment.to_string(),
            ts(now)
        ],
    )
}
