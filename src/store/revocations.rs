//! Revoked certificates: recorded for good (triggers refuse changes), with
//! an audit row, and read back for the CRL.

use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Store, StoreError, audit, ts};
use crate::ca::crl::Revoked;

/// What a revocation request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Recorded now.
    Revoked,
    /// It was revoked before (the first revocation stands).
    AlreadyRevoked,
    /// No certificate with this serial in the ledger.
    Unknown,
}

impl Store {
    /// Revokes a certificate of the ledger, with an audit row.
    pub fn revoke_certificate(
        &self,
        serial: &str,
        reason: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Revocation, StoreError> {
        let serial = serial.trim().to_ascii_lowercase();
        self.with(|c| {
            let tx = c.transaction()?;
            let guid: Option<String> = tx
                .query_row(
                    "SELECT guid FROM certificates WHERE serial = ?1",
                    [&serial],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(guid) = guid else {
                return Ok(Revocation::Unknown);
            };
            let added = tx.execute(
                "INSERT INTO revocations (serial, revoked_at, reason, revoked_by) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (serial) DO NOTHING",
                params![serial, ts(now), reason, by],
            )?;
            if added == 0 {
                return Ok(Revocation::AlreadyRevoked);
            }
            audit::append(
                &tx,
                by,
                "certificate_revoked",
                Some(&guid),
                &serde_json::json!({ "serial": serial, "reason": reason }),
                now,
            )?;
            tx.commit()?;
            Ok(Revocation::Revoked)
        })
    }

    /// Every revoked certificate, in the order revoked.
    pub fn revoked(&self) -> Result<Vec<Revoked>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT serial, revoked_at FROM revocations ORDER BY revoked_at, serial",
            )?;
            st.query_map([], |r| {
                let at: String = r.get(1)?;
                Ok(Revoked {
                    serial: r.get(0)?,
                    revoked_at: OffsetDateTime::parse(&at, &Rfc3339)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                })
            })?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{G1, commit, ident, now, store};
    use super::*;
    use crate::ids::SlotId;

    #[test]
    fn a_revocation_is_recorded_once_audited_and_never_undone() {
        let (_d, s) = store();
        let b = s.open_board("st", SlotId(1), now()).unwrap();
        let b = s.record_identity(b, &ident(G1), now()).unwrap();
        commit(&s, b, G1, "ab12", false);
        assert_eq!(
            s.revoke_certificate("AB12", "scrapped", "sup", now())
                .unwrap(),
            Revocation::Revoked
        );
        assert_eq!(
            s.revoke_certificate("ab12", "again", "sup", now()).unwrap(),
            Revocation::AlreadyRevoked
        );
        assert_eq!(
            s.revoke_certificate("ffff", "x", "sup", now()).unwrap(),
            Revocation::Unknown
        );
        let r = s.revoked().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].serial, "ab12");
        let rows = s.audit_rows().unwrap();
        assert_eq!(
            rows.iter()
                .filter(|r| r.action == "certificate_revoked")
                .count(),
            1
        );
        let e = s
            .with(|c| c.execute("DELETE FROM revocations", []))
            .unwrap_err();
        assert!(e.to_string().contains("never removed"), "{e}");
        let e = s
            .with(|c| c.execute("UPDATE revocations SET reason = 'x'", []))
            .unwrap_err();
        assert!(e.to_string().contains("never changed"), "{e}");
    }
}
