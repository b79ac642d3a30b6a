//! Sign-ins under way: what the station must remember between sending a
//! person to the provider and their return (the PKCE verifier and the
//! nonce), keyed by the `state` it sent. Each is bound to the browser that
//! started it (the value of a short-lived cookie), used once (taken out
//! whatever the outcome, so a replayed `state` is unknown), over after
//! [`PENDING_TTL`], and there are at most [`PENDING_MAX`] at a time. No
//! I/O; time is passed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::{Nonce, PkceCodeVerifier};

/// How long a person has to come back from the provider.
pub const PENDING_TTL: Duration = Duration::from_secs(10 * 60);
/// Most sign-ins under way at once.
pub const PENDING_MAX: usize = 256;

/// One sign-in under way.
pub struct Pending {
    /// The browser cookie's value it is bound to.
    pub browser: String,
    pub nonce: Nonce,
    pub verifier: PkceCodeVerifier,
    pub started: Instant,
}

/// Why a returning `state` is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotPending {
    /// Never started here, already used, or forgotten (a restart).
    Unknown,
    /// Started more than [`PENDING_TTL`] ago.
    Expired,
    /// Started in another browser (or the cookie is gone).
    OtherBrowser,
}

/// The sign-ins under way.
#[derive(Default)]
pub struct PendingLogins {
    map: Mutex<HashMap<String, Pending>>,
}

impl PendingLogins {
    /// Remembers a sign-in under `state`; `false` when [`PENDING_MAX`]
    /// are under way (after forgetting the expired ones).
    pub fn insert(&self, state: String, pending: Pending, now: Instant) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        map.retain(|_, p| now.saturating_duration_since(p.started) < PENDING_TTL);
        if map.len() >= PENDING_MAX {
            return false;
        }
        map.insert(state, pending);
        true
    }

    /// Takes out the sign-in under `state` (it cannot be used again),
    /// if it was started by this `browser` and has not expired.
    pub fn take(
        &self,
        state: &str,
        browser: Option<&str>,
        now: Instant,
    ) -> Result<Pending, NotPending> {
        let taken = self
            .map
            .lock()
            .map_err(|_| NotPending::Unknown)?
            .remove(state)
            .ok_or(NotPending::Unknown)?;
        if now.saturating_duration_since(taken.started) >= PENDING_TTL {
            return Err(NotPending::Expired);
        }
        // Compared as digests, so the time taken tells nothing of the value.
        let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        if browser.is_none_or(|b| digest(b).as_ref() != digest(&taken.browser).as_ref()) {
            return Err(NotPending::OtherBrowser);
        }
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pending(browser: &str, started: Instant) -> Pending {
        Pending {
            browser: browser.into(),
            nonce: Nonce::new("n".into()),
            verifier: PkceCodeVerifier::new("v".into()),
            started,
        }
    }

    #[test]
    fn a_state_is_taken_once_by_its_browser_within_ten_minutes() {
        let p = PendingLogins::default();
        let t0 = Instant::now();
        assert!(p.insert("s1".into(), pending("b1", t0), t0));
        assert!(p.take("s1", Some("b1"), t0).is_ok());
        assert_eq!(
            p.take("s1", Some("b1"), t0).err(),
            Some(NotPending::Unknown)
        );
        assert!(p.insert("s2".into(), pending("b1", t0), t0));
        assert_eq!(
            p.take("s2", Some("b2"), t0).err(),
            Some(NotPending::OtherBrowser)
        );
        assert_eq!(
            p.take("s2", Some("b1"), t0).err(),
            Some(NotPending::Unknown),
            "a refused state is used up too"
        );
        assert!(p.insert("s3".into(), pending("b1", t0), t0));
        assert_eq!(p.take("s3", None, t0).err(), Some(NotPending::OtherBrowser));
        assert!(p.insert("s4".into(), pending("b1", t0), t0));
        let late = t0 + PENDING_TTL;
        assert_eq!(
            p.take("s4", Some("b1"), late).err(),
            Some(NotPending::Expired)
        );
    }

    #[test]
    fn at_most_so_many_are_under_way_and_expired_ones_make_room() {
        let p = PendingLogins::default();
        let t0 = Instant::now();
        for i in 0..PENDING_MAX {
            assert!(p.insert(format!("s{i}"), pending("b", t0), t0));
        }
        assert!(!p.insert("one more".into(), pending("b", t0), t0));
        let later = t0 + PENDING_TTL;
        assert!(p.insert("one more".into(), pending("b", later), later));
    }
}
