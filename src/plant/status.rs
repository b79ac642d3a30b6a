//! What the forwarder is doing, for `GET /api/v1/plant`, `/metrics`,
//! `station check` and the line view's status line.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::ts;

#[derive(Debug, Clone, Serialize)]
pub struct PlantStatus {
    /// The plant database, without its password.
    pub database: String,
    /// The last attempt to reach it succeeded.
    pub connected: bool,
    /// When `connected` last changed.
    pub since: String,
    /// Feed entries (changes to records) the plant does not have yet.
    pub lag_records: i64,
    /// Age of the oldest of them, in seconds (0 when there are none).
    pub lag_seconds: f64,
    /// The lag is beyond `[plant] max_lag_warning_s`.
    pub lag_warning: bool,
    /// The last failure in plain words, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last batch was committed.
    pub last_forward_at: Option<String>,
    pub batches: u64,
    pub rows: u64,
    /// GUIDs with live certificates from two or more stations, as last
    /// counted (`None` before the first count).
    pub conflicts: Option<i64>,
}

pub type SharedPlantStatus = Arc<Mutex<PlantStatus>>;

impl PlantStatus {
    pub fn new(database: String) -> SharedPlantStatus {
        Arc::new(Mutex::new(PlantStatus {
            database,
            connected: false,
            since: ts(OffsetDateTime::now_utc()),
            lag_records: 0,
            lag_seconds: 0.0,
            lag_warning: false,
            last_error: None,
            last_forward_at: None,
            batches: 0,
            rows: 0,
            conflicts: None,
        }))
    }

    /// One line for people: connected or not, since when, the lag, the
    /// error.
    pub fn summary(&self) -> String {
        let mut s = if self.connected {
            format!("plant database connected since {}", self.since)
        } else {
            format!("plant database not reached since {}", self.since)
        };
        if self.lag_records > 0 {
            s.push_str(&format!(
                "; {} change(s) waiting, oldest {:.0} s",
                self.lag_records, self.lag_seconds
            ));
        }
        if let Some(e) = &self.last_error {
            s.push_str(&format!("; {e}"));
        }
        s
    }
}

/// Changes the shared status; `since` moves when `connected` changes.
/// True when what the line view shows changed: reached or not, the lag
/// warning, the error.
pub fn update_shown(status: &SharedPlantStatus, f: impl FnOnce(&mut PlantStatus)) -> bool {
    let Ok(mut s) = status.lock() else {
        return false;
    };
    let before = (s.connected, s.lag_warning, s.last_error.clone());
    f(&mut s);
    if s.connected != before.0 {
        s.since = ts(OffsetDateTime::now_utc());
    }
    (s.connected, s.lag_warning, s.last_error.clone()) != before
}
