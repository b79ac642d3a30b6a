//! The DPS operation budget shared through the plant database: one token
//! bucket per DPS instance (`dps_budget`, keyed by the DPS host name) that
//! every station draws from in one atomic statement, on the database's
//! clock, so the stations' clocks never matter.
//!
//! A take is a reservation: the token is taken at once, even when the
//! bucket is empty; the answer says how long to wait before the call. The
//! row lock of the upsert puts concurrent takes in a line, so every station
//! gets its own later slot and together they keep exactly the budget's
//! rate. A station that books a slot and then dies just leaves it unused.
//!
//! Knows nothing of DPS beyond its name: `crate::dps::Pacer` decides what
//! to do when the plant database cannot be reached.

use std::time::Duration;

use async_trait::async_trait;

use super::{explain, with_client};
use crate::dps::SharedBudget;

/// Longest a take waits for the plant database; under the pacer's own
/// timeout (`crate::dps::uploader::pacer::TAKE_TIMEOUT`), so the reason it
/// gives is this one, in plain words.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(1_500);

/// At most one operation saved up. A bucket that holds `burst` lets that
/// many calls go at once after an idle spell, so any window of `t` seconds
/// sees at most `burst + t × rate` calls: with 1, a 60-second window at DPS
/// sees at most the minute's budget and one more (the least that lets an
/// idle station call at once), and a busy plant is paced evenly rather
/// than in bursts DPS would throttle.
const BURST: f64 = 1.0;

/// Reservations reach at most this far ahead. Each station books one slot
/// at a time, so this is only reached with more stations waiting than a
/// minute's budget (or a row edited by hand): bookings beyond it are
/// forgotten rather than making every station wait longer and longer.
const MAX_AHEAD: Duration = Duration::from_secs(60);

/// Takes one token: refills the bucket for the time since its last take
/// (`$3` tokens a second, up to `$2`), never lets it stand below `$4`,
/// takes one, and returns what is left. A new DPS starts with a full
/// bucket. `updated_at` never goes back when a take that read the clock
/// before waiting for the row lock follows one that read it after; a clock
/// stepped back by more than a minute is followed.
const TAKE: &str = "
INSERT INTO dps_budget AS b (dps, tokens, updated_at)
VALUES ($1, $2::float8 - 1, clock_timestamp())
ON CONFLICT (dps) DO UPDATE SET
    tokens = GREATEST($4::float8, LEAST($2::float8,
        b.tokens + $3::float8 * GREATEST(0,
            EXTRACT(EPOCH FROM EXCLUDED.updated_at - b.updated_at)::float8))) - 1,
    updated_at = CASE
        WHEN EXCLUDED.updated_at < b.updated_at - interval '1 minute'
            THEN EXCLUDED.updated_at
        ELSE GREATEST(b.updated_at, EXCLUDED.updated_at)
    END
RETURNING tokens";

/// The budget `[plant] dps_ops_per_minute` of one DPS instance, in the
/// plant database.
pub struct PgBudget {
    pool: deadpool_postgres::Pool,
    /// The database as people may see it (no password).
    shown: String,
    /// The DPS host name: the bucket's key.
    dps: String,
    ops_per_minute: u32,
}

impl PgBudget {
    /// `shown`: the database's URL without the password (for messages);
    /// `dps`: the DPS host name, shared by every station that talks to it.
    pub fn new(
        pool: deadpool_postgres::Pool,
        shown: String,
        dps: String,
        ops_per_minute: u32,
    ) -> PgBudget {
        PgBudget {
            pool,
            shown,
            dps,
            ops_per_minute: ops_per_minute.max(1),
        }
    }

    fn per_second(&self) -> f64 {
        f64::from(self.ops_per_minute) / 60.0
    }
}

#[async_trait]
impl SharedBudget for PgBudget {
    async fn take(&self) -> Result<Duration, String> {
        let rate = self.per_second();
        let floor = -MAX_AHEAD.as_secs_f64() * rate;
        let tokens: f64 = with_client(&self.pool, &self.shown, ANSWER_TIMEOUT, async |client| {
            let answer = async {
                let statement = client.prepare_cached(TAKE).await?;
                client
                    .query_one(&statement, &[&self.dps, &BURST, &rate, &floor])
                    .await
            };
            answer
                .await
                .map(|row| row.get(0))
                .map_err(|e| explain(&self.shown, &e))
        })
        .await
        .map_err(|e| e.to_string())?;
        if tokens >= 0.0 {
            return Ok(Duration::ZERO);
        }
        // A debt of one token is one pace; the cap keeps it finite even if
        // the row says otherwise.
        let wait = (-tokens / rate).min(MAX_AHEAD.as_secs_f64() + 60.0 / rate);
        Ok(Duration::from_secs_f64(wait))
    }

    fn describe(&self) -> String {
        format!(
            "{} a minute for {} in the plant database {}",
            self.ops_per_minute, self.dps, self.shown
        )
    }
}
