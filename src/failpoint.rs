//! Crash points for tests. `STATION_FAILPOINT=name` makes the process abort
//! (no unwinding, no clean-up: like a power cut) when it reaches the point
//! `name`. Unset in production, it costs one cached environment read.
//!
//! Points: `after_ledger_commit` (a certificate is in the ledger, no byte of
//! it has gone to the board); `after_retire_delete` (DPS deleted a retired
//! device's enrollment, the station has not recorded the retire as done);
//! `before_finish` (a board is recorded as provisioned with its jobs, the
//! jig not yet told).
//!
//! `STATION_FAILPOINT=fail:name` makes the point `name` fail instead, as
//! a full disk would, where the code asks [`fails`]: `fail:complete`
//! (recording a board as provisioned).

use std::sync::OnceLock;

static ARMED: OnceLock<Option<String>> = OnceLock::new();

/// Whether the point `name` is armed to fail (`STATION_FAILPOINT=fail:name`).
pub fn fails(name: &str) -> bool {
    let armed = ARMED.get_or_init(|| std::env::var("STATION_FAILPOINT").ok());
    armed
        .as_deref()
        .and_then(|a| a.strip_prefix("fail:"))
        .is_some_and(|n| n == name)
}

pub fn hit(name: &str) {
    let armed = ARMED.get_or_init(|| std::env::var("STATION_FAILPOINT").ok());
    if armed.as_deref() == Some(name) {
        eprintln!("failpoint {name}: aborting as asked by STATION_FAILPOINT");
        std::process::abort();
    }
}
