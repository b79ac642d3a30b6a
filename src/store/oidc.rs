//! People who sign in through their organisation's identity provider
//! (OpenID Connect): the user row that stands for an identity (issuer and
//! subject), its role set again at every sign-in, the session opened for
//! it, and the audit rows of sign-ins and refusals, which name the
//! identity. No ID token, access token or authorization code is ever
//! stored: the web layer hands over only the verified claims.

use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use super::people::{USER_COLUMNS, insert_session, user_row};
use super::{Role, Session, Store, StoreError, audit, ts};

/// An organisational identity, from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgIdentity {
    /// The provider's issuer URL.
    pub issuer: String,
    /// The provider's stable id for the person (`sub`).
    pub subject: String,
    /// What people read: the e-mail, user name or name claim.
    pub display: String,
}

impl OrgIdentity {
    fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "oidc",
            "issuer": self.issuer,
            "subject": self.subject,
            "display": self.display,
        })
    }
}

/// How an organisational sign-in ended in the store.
#[derive(Debug)]
pub enum OrgSignIn {
    /// A session: the cookie value (shown once) and the session.
    Opened(String, Session),
    /// The station's user for this identity was disabled (`station user
    /// disable`); refused and audited.
    Disabled,
}

impl Store {
    /// Signs in an organisational identity with the role its groups map
    /// to: makes its user on the first sign-in, sets the role again, opens
    /// a session and audits the sign-in, in one transaction.
    pub fn oidc_sign_in(
        &self,
        who: &OrgIdentity,
        role: Role,
        now: OffsetDateTime,
    ) -> Result<OrgSignIn, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let known: Option<i64> = tx
                .query_row(
                    "SELECT user_id FROM oidc_identities WHERE issuer = ?1 AND subject = ?2",
                    params![who.issuer, who.subject],
                    |r| r.get(0),
                )
                .optional()?;
            let id = match known {
                Some(id) => id,
                None => {
                    let name = free_name(&tx, who)?;
                    tx.execute(
                        "INSERT INTO users (name, role, created_at, source) VALUES (?1, ?2, ?3, 'oidc')",
                        params![name, role.as_str(), ts(now)],
                    )?;
                    let id = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO oidc_identities (user_id, issuer, subject, display, last_sign_in) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, who.issuer, who.subject, who.display, ts(now)],
                    )?;
                    let mut detail = who.detail();
                    detail["role"] = role.as_str().into();
                    audit::append(&tx, &name, "user_added", Some(&name), &detail, now)?;
                    id
                }
            };
            let user = tx.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )?;
            if user.disabled_at.is_some() {
                let mut detail = who.detail();
                detail["reason"] = "the station's user for this identity is disabled".into();
                audit::append(&tx, &user.name, "failed_login", Some(&user.name), &detail, now)?;
                tx.commit()?;
                return Ok(OrgSignIn::Disabled);
            }
            tx.execute(
                "UPDATE users SET role = ?2 WHERE id = ?1",
                params![id, role.as_str()],
            )?;
            tx.execute(
                "UPDATE oidc_identities SET display = ?2, last_sign_in = ?3 WHERE user_id = ?1",
                params![id, who.display, ts(now)],
            )?;
            let user = super::User { role, ..user };
            let mut detail = who.detail();
            detail["role"] = role.as_str().into();
            let (cookie, session) = insert_session(&tx, &user, &detail, now)?;
            tx.commit()?;
            Ok(OrgSignIn::Opened(cookie, session))
        })
    }

    /// Records a refused organisational sign-in: under the identity when
    /// the ID token was verified (no mapped group), else under "unknown"
    /// (a token that failed its checks names nobody one can trust).
    pub fn oidc_refused(
        &self,
        who: Option<&OrgIdentity>,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (actor, detail) = match who {
            Some(w) => (w.display.as_str(), w.detail()),
            None => ("unknown", serde_json::json!({ "source": "oidc" })),
        };
        let mut detail = detail;
        detail["reason"] = reason.into();
        let subject = who.map_or("(organisational sign-in)", |w| w.display.as_str());
        self.audit(actor, "failed_login", Some(subject), &detail, now)
    }
}

/// A user name for a new identity: what people read (control characters
/// dropped, at most 128 characters), with a short tag from the identity
/// when a user of that name exists already.
fn free_name(tx: &rusqlite::Transaction<'_>, who: &OrgIdentity) -> rusqlite::Result<String> {
    let base: String = who
        .display
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let base = if base.trim().is_empty() {
        "organisational user".to_string()
    } else {
        base
    };
    let taken = |name: &str| {
        tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
            [name],
            |r| r.get::<_, bool>(0),
        )
    };
    if !taken(&base)? {
        return Ok(base);
    }
    let tag = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        format!("{}\n{}", who.issuer, who.subject).as_bytes(),
    ));
    Ok(format!("{base}~{}", &tag[..8]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ana() -> OrgIdentity {
        OrgIdentity {
            issuer: "https://login.example.com".into(),
            subject: "0a1b".into(),
            display: "ana@example.com".into(),
        }
    }

    #[test]
    fn an_identity_gets_one_user_whose_role_follows_its_groups() {
        let (_dir, s) = super::super::tests::store();
        let now = OffsetDateTime::now_utc();
        let OrgSignIn::Opened(cookie, first) =
            s.oidc_sign_in(&ana(), Role::Supervisor, now).unwrap()
        else {
            panic!("refused")
        };
        assert_eq!(first.user.name, "ana@example.com");
        let live = s
            .session(&cookie, time::Duration::minutes(5), now)
            .unwrap()
            .unwrap();
        assert_eq!(live.user.role, Role::Supervisor);
        let OrgSignIn::Opened(_, again) = s.oidc_sign_in(&ana(), Role::Activator, now).unwrap()
        else {
            panic!("refused")
        };
        assert_eq!(again.user.id, first.user.id);
        assert_eq!(again.user.role, Role::Activator);
        assert_eq!(s.users().unwrap().len(), 1);
        // The audit trail names the identity; no cookie is in it.
        let rows = s.audit_rows().unwrap();
        let login = rows.iter().find(|r| r.action == "login").unwrap();
        assert_eq!(login.actor, "ana@example.com");
        assert_eq!(login.detail["subject"], "0a1b");
        assert_eq!(login.detail["issuer"], "https://login.example.com");
        assert!(rows.iter().all(|r| !r.detail.to_string().contains(&cookie)));
        s.close_session(&cookie, now).unwrap();
        let out = s.audit_rows().unwrap().pop().unwrap();
        assert_eq!(
            (out.action.as_str(), out.actor.as_str()),
            ("logout", "ana@example.com")
        );
        assert_eq!(out.detail["subject"], "0a1b");
    }

    #[test]
    fn a_local_name_is_not_taken_over_and_a_disabled_user_is_refused() {
        let (_dir, s) = super::super::tests::store();
        let now = OffsetDateTime::now_utc();
        let local = super::super::NewUser {
            name: "ana",
            role: Role::Admin,
            badge: None,
            pin: None,
            password: Some("a long enough password"),
        };
        s.add_user(&local, "tests", now).unwrap();
        let who = OrgIdentity {
            display: "ana".into(),
            ..ana()
        };
        let OrgSignIn::Opened(_, sess) = s.oidc_sign_in(&who, Role::Activator, now).unwrap() else {
            panic!("refused")
        };
        assert!(sess.user.name.starts_with("ana~"), "{}", sess.user.name);
        assert!(s.disable_user(&sess.user.name, "tests", now).unwrap());
        assert!(matches!(
            s.oidc_sign_in(&who, Role::Activator, now).unwrap(),
            OrgSignIn::Disabled
        ));
        let last = s.audit_rows().unwrap().pop().unwrap();
        assert_eq!(last.action, "failed_login");
    }
}
