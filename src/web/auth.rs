//! Who is calling: a bearer token (scripts, MES) or a signed-in session
//! (people at the web UI), and what they may do. Also the sign-in
//! throttle and CSRF checks.
//!
//! Every `/api/v1` route but health takes a [`Caller`]; a state-changing
//! request made with a session must carry the session's CSRF token (the
//! `csrf` form field or the `X-CSRF-Token` header). Tokens need none: they
//! are not sent by browsers on their own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::{ApiError, AppState, query};
use crate::store::Role;

/// The session cookie.
pub const SESSION_COOKIE: &str = "station_session";
/// The double-submit cookie of the sign-in form.
pub const LOGIN_CSRF_COOKIE: &str = "station_login_csrf";

/// A `Set-Cookie` value for a station cookie: always `HttpOnly`, with
/// `Secure` when the station serves HTTPS (`AppState::https`). `max_age`
/// `Some(0)` deletes the cookie. Every cookie the station sets goes
/// through here, so none is ever sent in clear by a browser that was
/// given it over TLS.
pub fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    path: &str,
    same_site: SameSite,
    max_age: Option<u32>,
) -> Option<axum::http::HeaderValue> {
    let mut v = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={}",
        same_site.as_str()
    );
    if state.https {
        v.push_str("; Secure");
    }
    if let Some(age) = max_age {
        v.push_str(&format!("; Max-Age={age}"));
    }
    axum::http::HeaderValue::from_str(&v).ok()
}

/// A cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent only with requests the station's own pages make.
    Strict,
    /// Also sent on a top-level navigation from another site (the
    /// sign-in provider's redirect back).
    Lax,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token; `None` for a bearer token.
    pub csrf: Option<String>,
}

impl Caller {
    /// 403 unless the caller's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {} role; {} is {}",
                role.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }

    /// For a session, the request must carry its CSRF token.
    pub fn check_csrf(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match &self.csrf {
            None => Ok(()),
            Some(expected) if presented.is_some_and(|p| same(p, expected)) => Ok(()),
            Some(_) => Err(ApiError::Forbidden(
                "the form is missing its CSRF token or it is stale: reload the page and try again"
                    .into(),
            )),
        }
    }

    /// As [`Caller::check_csrf`], with the token from the `x-csrf-token`
    /// header (API calls from the page's scripts).
    pub fn check_csrf_header(&self, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
        self.check_csrf(headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
    }
}

/// Compares secrets without an early exit: the SHA-256 digests (fixed
/// length) are compared with an XOR fold.
pub fn same(a: &str, b: &str) -> bool {
    let d = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (x, y) = (d(a), d(b));
    x.as_ref()
        .iter()
        .zip(y.as_ref())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The value of a cookie in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A caller whose request is the page's doing, not the person's (the line
/// view's label previews, redrawn with every slot change): a session is
/// checked but not kept alive by it.
pub struct Watcher(pub Caller);

impl FromRequestParts<AppState> for Watcher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Watcher, ApiError> {
        caller(parts, state, false).await.map(Watcher)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        caller(parts, state, true).await
    }
}

/// Who is asking: a bearer token, or a session (kept alive by the request
/// when `activity`).
async fn caller(parts: &Parts, state: &AppState, activity: bool) -> Result<Caller, ApiError> {
    if let Some(auth) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?
            .trim()
            .to_string();
        let found = query(&state.store, move |s| s.token_role(&token)).await?;
        let (name, role) = found.ok_or(ApiError::Unauthorized)?;
        return Ok(Caller {
            name,
            role,
            csrf: None,
        });
    }
    if let Some(c) = cookie(&parts.headers, SESSION_COOKIE) {
        let c = c.to_string();
        let idle = state.session_idle;
        let now = time::OffsetDateTime::now_utc();
        let found = query(&state.store, move |st| {
            if activity {
                st.session(&c, idle, now)
            } else {
                st.session_peek(&c, idle, now)
            }
        })
        .await?;
        if let Some(s) = found {
            return Ok(Caller {
                name: s.user.name,
                role: s.user.role,
                csrf: Some(s.csrf),
            });
        }
    }
    Err(ApiError::Unauthorized)
}

/// Where a page sends someone without a session: to sign in, saying
/// their session ended when they still held one (the station was not used
/// for `[ui] session_idle_minutes`, or they were signed out).
pub fn to_login(headers: &axum::http::HeaderMap) -> axum::response::Redirect {
    if cookie(headers, SESSION_COOKIE).is_some() {
        axum::response::Redirect::to("/login?why=idle")
    } else {
        axum::response::Redirect::to("/login")
    }
}

/// Failed sign-ins per key (the badge or user name tried, and the client
/// address): after `FREE` failures within `WINDOW`, each further attempt
/// waits, doubling from 30 s up to 15 min. A success clears the key.
#[derive(Default)]
pub struct Throttle {
    keys: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

const FREE: u32 = 5;
const WINDOW: Duration = Duration::from_secs(15 * 60);

impl Throttle {
    /// `Err(wait)` while any of `keys` is locked.
    pub fn check(&self, keys: &[String]) -> Result<(), Duration> {
        let map = self.keys.lock().map_err(|_| Duration::from_secs(60))?;
        let now = Instant::now();
        let wait = keys
            .iter()
            .filter_map(|k| map.get(k)?.locked_until)
            .filter(|t| *t > now)
            .map(|t| t - now)
            .max();
        match wait {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }

    pub fn failed(&self, keys: &[String]) {
        if let Ok(mut map) = self.keys.lock() {
            let now = Instant::now();
            for k in keys {
                let f = map.entry(k.clone()).or_insert(Failures {
                    count: 0,
                    first: now,
                    locked_until: None,
                });
                if now - f.first > WINDOW {
                    *f = Failures {
                        count: 0,
                        first: now,
                        locked_until: None,
                    };
                }
                f.count += 1;
                if f.count >= FREE {
                    let secs = (30u64 << (f.count - FREE).min(5)).min(15 * 60);
                    f.locked_until = Some(now + Duration::from_secs(secs));
                }
            }
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        if let Ok(mut map) = self.keys.lock() {
            for k in keys {
                map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_lock_the_key_and_a_success_clears_it() {
        let t = Throttle::default();
        let k = vec!["name:ana".to_string()];
        for _ in 0..4 {
            t.failed(&k);
        }
        assert!(t.check(&k).is_ok());
        t.failed(&k);
        let wait = t.check(&k).unwrap_err();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(
            t.check(&["name:bob".to_string()]).is_ok(),
            "other keys are free"
        );
        t.succeeded(&k);
        assert!(t.check(&k).is_ok());
    }

    #[test]
    fn roles_and_csrf() {
        let op = Caller {
            name: "ana".into(),
            role: Role::Operator,
            csrf: Some("abc".into()),
        };
        assert!(op.require(Role::Operator).is_ok());
        assert!(matches!(
            op.require(Role::Supervisor),
            Err(ApiError::Forbidden(_))
        ));
        assert!(op.check_csrf(Some("abc")).is_ok());
        assert!(op.check_csrf(Some("abd")).is_err());
        assert!(op.check_csrf(None).is_err());
        let token = Caller { csrf: None, ..op };
        assert!(token.check_csrf(None).is_ok());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; station_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
