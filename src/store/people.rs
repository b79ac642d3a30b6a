//! Users (activators, operators, supervisors, admins) and API tokens. PINs and
//! passwords are kept as argon2 hashes, tokens as SHA-256: none of them is
//! ever stored, logged or shown back.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, audit, ts};

/// What a person or a token may do. Operator, supervisor and admin each
/// include the ones below; an activator (the machine builder's staff)
/// may only look up and activate devices (see [`Role::may_activate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Activator,
    Operator,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Activator => "activator",
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl Role {
    /// Activators, supervisors and admins activate devices and read their
    /// history; operators do not.
    pub fn may_activate(self) -> bool {
        self == Role::Activator || self >= Role::Supervisor
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "activator" => Ok(Role::Activator),
            "operator" => Ok(Role::Operator),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "{s:?} is not a role: activator, operator, supervisor or admin"
            )),
        }
    }
}

/// A user to add.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    pub name: &'a str,
    pub role: Role,
    pub badge: Option<&'a str>,
    pub pin: Option<&'a str>,
    pub password: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub role: Role,
    /// Half of a badge sign-in: never sent out (see `has_badge`).
    #[serde(skip_serializing)]
    pub badge: Option<String>,
    pub has_badge: bool,
    pub has_pin: bool,
    pub has_password: bool,
    pub created_at: String,
    pub disabled_at: Option<String>,
}

/// Why a new user or credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash_secret(secret: &str) -> Result<String, PeopleError> {
    let salt = SaltString::encode_b64(&crate::random::bytes::<16>())
        .map_err(|e| PeopleError::Invalid(format!("cannot salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PeopleError::Invalid(format!("cannot hash: {e}")))
}

fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(secret.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A PIN is 4 to 12 digits.
pub fn check_pin(pin: &str) -> Result<(), PeopleError> {
    if (4..=12).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(PeopleError::Invalid("a PIN is 4 to 12 digits".into()))
    }
}

/// A password is at least 10 characters.
pub fn check_password(pw: &str) -> Result<(), PeopleError> {
    if pw.chars().count() >= 10 {
        Ok(())
    } else {
        Err(PeopleError::Invalid(
            "a password has at least 10 characters".into(),
        ))
    }
}

fn check_name(name: &str) -> Result<(), PeopleError> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        Ok(())
    } else {
        Err(PeopleError::Invalid(format!(
            "{name:?}: a user name is 1 to 64 letters, digits, '.', '_' or '-'"
        )))
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_secret("no such user").unwrap_or_default())
}

fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

pub(super) fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: role.parse().unwrap_or(Role::Operator),
        has_badge: r.get::<_, Option<String>>(3)?.is_some(),
        badge: r.get(3)?,
        has_pin: r.get::<_, Option<String>>(4)?.is_some(),
        has_password: r.get::<_, Option<String>>(5)?.is_some(),
        created_at: r.get(6)?,
        disabled_at: r.get(7)?,
    })
}

pub(super) const USER_COLUMNS: &str =
    "id, name, role, badge, pin_hash, password_hash, created_at, disabled_at";

impl Store {
    /// Adds a user; at least one way to sign in (badge + PIN, or password).
    pub fn add_user(
        &self,
        new: &NewUser<'_>,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<User, PeopleError> {
        let NewUser {
            name,
            role,
            badge,
            pin,
            password,
        } = *new;
        check_name(name)?;
        if badge.is_some() != pin.is_some() {
            return Err(PeopleError::Invalid(
                "a badge goes with a PIN: give both or neither".into(),
            ));
        }
        if pin.is_none() && password.is_none() {
            return Err(PeopleError::Invalid(
                "give a badge and PIN, or a password, or both".into(),
            ));
        }
        if let Some(b) = badge
            && (b.trim().is_empty() || b.len() > 128)
        {
            return Err(PeopleError::Invalid(
                "a badge is 1 to 128 characters".into(),
            ));
        }
        let pin_hash = pin
            .map(|p| check_pin(p).and_then(|_| hash_secret(p)))
            .transpose()?;
        let password_hash = password
            .map(|p| check_password(p).and_then(|_| hash_secret(p)))
            .transpose()?;
        let exists = self.with(|c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1 OR (badge IS NOT NULL AND badge = ?2))",
                params![name, badge],
                |r| r.get::<_, bool>(0),
            )
        })?;
        if exists {
            return Err(PeopleError::Invalid(format!(
                "a user named {name:?} or with that badge exists already"
            )));
        }
        let user = self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO users (name, role, badge, pin_hash, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, role.as_str(), badge, pin_hash, password_hash, ts(now)],
            )?;
            audit::append(
                &tx,
                by,
                "user_added",
                Some(name),
                &serde_json::json!({ "role": role.as_str(), "badge": badge.is_some(), "password": password.is_some() }),
                now,
            )?;
            let u = tx.query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"), [name], user_row)?;
            tx.commit()?;
            Ok(u)
        })?;
        Ok(user)
    }

    pub fn users(&self) -> Result<Vec<User>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            st.query_map([], user_row)?.collect()
        })
    }

    /// Disables a user: no more sign-ins. Returns false if there is no such
    /// enabled user.
    pub fn disable_user(
        &self,
        name: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let n = self.change_audited(
            "UPDATE users SET disabled_at = ?2 WHERE name = ?1 AND disabled_at IS NULL",
            params![name, ts(now)],
            (by, "user_disabled", name, &|_| serde_json::json!({})),
            now,
        )?;
        Ok(n > 0)
    }

    /// Sets a user's PIN. Returns false if there is no such user.
    pub fn set_pin(
        &self,
        name: &str,
        pin: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<bool, PeopleError> {
        check_pin(pin)?;
        let h = hash_secret(pin)?;
        let n = self.change_audited(
            "UPDATE users SET pin_hash = ?2 WHERE name = ?1",
            params![name, h],
            (by, "pin_changed", name, &|_| serde_json::json!({})),
            now,
        )?;
        Ok(n > 0)
    }

    /// The enabled user with this badge, if the PIN is right.
    pub fn sign_in_badge(&self, badge: &str, pin: &str) -> Result<Option<User>, StoreError> {
        self.sign_in("badge", badge, pin, 4)
    }

    /// The enabled user with this name, if the password is right.
    pub fn sign_in_password(&self, name: &str, password: &str) -> Result<Option<User>, StoreError> {
        self.sign_in("name", name, password, 5)
    }

    fn sign_in(
        &self,
        key: &str,
        value: &str,
        secret: &str,
        hash_column: usize,
    ) -> Result<Option<User>, StoreError> {
        let found = self.with(|c| {
            c.query_row(
                &format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE {key} = ?1 AND disabled_at IS NULL"
                ),
                [value],
                |r| Ok((user_row(r)?, r.get::<_, Option<String>>(hash_column)?)),
            )
            .optional()
        })?;
        Ok(match found {
            Some((user, Some(phc))) if verify_secret(secret, &phc) => Some(user),
            Some((_, Some(_))) => None,
            // No such user (or no such credential): spend the same time as
            // a wrong secret, so that timing does not tell which exist.
            _ => {
                verify_secret(secret, dummy_hash());
                None
            }
        })
    }

    /// Makes an API token; returns the token, which is shown once only.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<String, PeopleError> {
        check_name(name)?;
        use base64::Engine;
        let token = format!(
            "st_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<32>())
        );
        let h = token_hash(&token);
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, role.as_str(), h, ts(now)],
            )?;
            audit::append(&tx, by, "token_created", Some(name), &serde_json::json!({ "role": role.as_str() }), now)?;
            tx.commit()
        })?;
        Ok(token)
    }

    /// The role of a valid (not revoked) token.
    pub fn token_role(&self, token: &str) -> Result<Option<(String, Role)>, StoreError> {
        let h = token_hash(token);
        self.with(|c| {
            c.query_row(
                "SELECT name, role FROM api_tokens WHERE token_hash = ?1 AND revoked_at IS NULL",
                [h],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
        })
        .map(|o| o.map(|(n, r)| (n, r.parse().unwrap_or(Role::Operator))))
    }
}

/// An API token as listed: never its value.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenRow {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// Opens a session for `user` inside the caller's transaction and audits
/// the sign-in with `detail`; returns the cookie value (stored as a hash)
/// and the session.
pub(super) fn insert_session(
    tx: &rusqlite::Transaction<'_>,
    user: &User,
    detail: &serde_json::Value,
    now: OffsetDateTime,
) -> rusqlite::Result<(String, Session)> {
    use base64::Engine;
    let b64 = |b: [u8; 32]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let cookie = b64(crate::random::bytes());
    let csrf = b64(crate::random::bytes());
    tx.execute(
        "INSERT INTO sessions (token_hash, user_id, csrf, created_at, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
        params![token_hash(&cookie), user.id, csrf, ts(now)],
    )?;
    audit::append(tx, &user.name, "login", None, detail, now)?;
    Ok((
        cookie,
        Session {
            user: user.clone(),
            csrf,
        },
    ))
}

/// A signed-in user's session, as the web layer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: User,
    pub csrf: String,
}

impl Store {
    /// Opens a session for a user; returns the cookie value (shown once,
    /// stored as a hash) and the session.
    pub fn open_session(
        &self,
        user: &User,
        now: OffsetDateTime,
    ) -> Result<(String, Session), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let opened = insert_session(&tx, user, &serde_json::json!({}), now)?;
            tx.commit()?;
            Ok(opened)
        })
    }

    /// The live session for a cookie: its user enabled, idle for less than
    /// `idle`. Touches it (a person acted); an expired one is removed.
    pub fn session(
        &self,
        cookie: &str,
        idle: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.session_check(cookie, idle, now, true)
    }

    /// As [`Store::session`], without counting as activity: for what the
    /// browser does by itself (the live event stream), which must not keep
    /// an unattended session alive.
    pub fn session_peek(
        &self,
        cookie: &str,
        idle: time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.session_check(cookie, idle, now, false)
    }

    fn session_check(
        &self,
        cookie: &str,
        idle: time::Duration,
        now: OffsetDateTime,
        touch: bool,
    ) -> Result<Option<Session>, StoreError> {
        let h = token_hash(cookie);
        self.with(|c| {
            let found = c
                .query_row(
                    &format!(
                        "SELECT {cols}, s.csrf, s.last_seen FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?1",
                        cols = USER_COLUMNS.split(", ").map(|x| format!("u.{x}")).collect::<Vec<_>>().join(", ")
                    ),
                    [&h],
                    |r| Ok((user_row(r)?, r.get::<_, String>(8)?, r.get::<_, String>(9)?)),
                )
                .optional()?;
            let Some((user, csrf, last_seen)) = found else {
                return Ok(None);
            };
            let fresh = OffsetDateTime::parse(&last_seen, &time::format_description::well_known::Rfc3339)
                .map(|t| now - t < idle)
                .unwrap_or(false);
            if !fresh || user.disabled_at.is_some() {
                c.execute("DELETE FROM sessions WHERE token_hash = ?1", [&h])?;
                return Ok(None);
            }
            if touch {
                c.execute("UPDATE sessions SET last_seen = ?2 WHERE token_hash = ?1", params![h, ts(now)])?;
            }
            Ok(Some(Session { user, csrf }))
        })
    }

    /// Ends a session (sign-out).
    pub fn close_session(&self, cookie: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let h = token_hash(cookie);
        self.with(|c| {
            let tx = c.transaction()?;
            // An organisational identity's sign-out names it.
            let found: Option<(String, String)> = tx
                .query_row(
                    "SELECT u.name, CASE WHEN i.user_id IS NULL THEN '{}' ELSE json_object('source', 'oidc', 'issuer', i.issuer, 'subject', i.subject, 'display', i.display) END FROM sessions s JOIN users u ON u.id = s.user_id LEFT JOIN oidc_identities i ON i.user_id = u.id WHERE s.token_hash = ?1",
                    [&h],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [&h])?;
            if let Some((name, detail)) = found {
                let detail = serde_json::from_str(&detail).unwrap_or_default();
                audit::append(&tx, &name, "logout", None, &detail, now)?;
            }
            tx.commit()
        })
    }

    /// Records a refused sign-in. The subject is the user whose badge or
    /// name was given, if there is one; what was typed is not kept (it may
    /// be a PIN typed into the wrong field).
    pub fn failed_login(
        &self,
        typed: &str,
        by_badge: bool,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let column = if by_badge { "badge" } else { "name" };
        let known: Option<String> = self.with(|c| {
            c.query_row(
                &format!("SELECT name FROM users WHERE {column} = ?1"),
                [typed],
                |r| r.get(0),
            )
            .optional()
        })?;
        let subject = known.unwrap_or_else(|| format!("(an unknown {column})"));
        self.audit(
            "unknown",
            "failed_login",
            Some(&subject),
            &serde_json::json!({ "reason": reason }),
            now,
        )
    }

    /// Tokens, without their values.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT name, role, created_at, revoked_at FROM api_tokens ORDER BY id")?;
            st.query_map([], |r| {
                Ok(TokenRow {
                    name: r.get(0)?,
                    role: r.get::<_, String>(1)?.parse().unwrap_or(Role::Operator),
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                })
            })?
            .collect()
        })
    }

    /// Revokes every live token of this name; returns how many.
    pub fn revoke_token(
        &self,
        name: &str,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.change_audited(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
            params![name, ts(now)],
            (
                by,
                "token_revoked",
                name,
                &|n| serde_json::json!({ "tokens": n }),
            ),
            now,
        )
    }

    /// Runs one change and, if it changed any row, records it in the audit
    /// trail in the same transaction (`detail` sees the row count). Returns
    /// the rows changed.
    fn change_audited(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        (by, action, subject, detail): (&str, &str, &str, &dyn Fn(usize) -> serde_json::Value),
        now: OffsetDateTime,
    ) -> Result<usize, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(sql, args)?;
            if n > 0 {
                audit::append(&tx, by, action, Some(subject), &detail(n), now)?;
            }
            tx.commit()?;
            Ok(n)
        })
    }
}
