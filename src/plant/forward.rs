//! The forwarder: one task per station that sends the store's feed to the
//! plant database, in order, in batches.
//!
//! Each batch is one transaction: the rows the feed entries name, as they
//! are now, upserted by (station id, the station's own id), and the
//! station's cursor (`plant_stations.last_seq`) moved to the batch's last
//! entry, guarded by the value it had. Only after the commit are the
//! entries deleted from the station's feed. So:
//!
//! - a crash (SIGKILL) before the commit sends the batch again: the upserts
//!   change nothing that was already there;
//! - a commit whose answer is lost is found out at the next connection,
//!   which starts from the cursor the database holds, not the station's;
//! - two processes forwarding for one station cannot both move the cursor
//!   (the guard), and a second database under a known station id is
//!   refused (the instance name).
//!
//! While the database cannot be reached the task waits, doubling from
//! 0.5 s to 30 s, and keeps the lag on the status current; the line never
//! waits for any of it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use time::OffsetDateTime;

use super::status::{SharedPlantStatus, update_shown};
use super::{PlantError, checkout, explain};
use crate::store::{FeedBatch, FeedLag, PlantFeed, Resume, ts};

/// How often an idle forwarder looks for new entries.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait between attempts to reach the database.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the conflicts are counted for the status.
const CONFLICT_EVERY: Duration = Duration::from_secs(30);
/// How often an idle forwarder makes sure the database still answers, so
/// that its status says so within seconds of an outage even with nothing
/// to send.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How often a connected forwarder makes sure this month's and next
/// month's partitions exist (a station connected across a month's end
/// must not fill the DEFAULT partition).
const PARTITIONS_EVERY: Duration = Duration::from_secs(3600);
/// Advisory lock class for the per-GUID locks of conflict detection.
const GUID_LOCK_CLASS: i32 = 0x504c;

pub struct Forwarder {
    pub feed: Arc<PlantFeed>,
    pub pool: Pool,
    /// The database as shown to people (no password).
    pub shown: String,
    pub station: String,
    pub line: String,
    /// The station database's instance name (`Store::plant_enable`).
    pub instance: String,
    pub batch: u32,
    pub max_lag_warning: Duration,
    pub status: SharedPlantStatus,
    /// Called when what the line view shows changes (reached or not, lag
    /// beyond the warning).
    pub on_change: Arc<dyn Fn() + Send + Sync>,
}

/// A connection to the plant database, checked and registered, with the
/// station's cursor there.
pub struct Session {
    client: deadpool_postgres::Object,
    /// The last feed entry the plant database has committed.
    pub cursor: i64,
}

/// What one forward carried.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    pub entries: usize,
    pub rows: usize,
    /// Certificates among the rows (the conflicts are counted again).
    pub certificates: usize,
    /// When each entry's change was made, and when the plant committed it
    /// (ms since 1970): the lag of each.
    pub at_ms: Vec<i64>,
    pub committed_at_ms: i64,
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, PlantError> {
    crate::store::blocking(f)
        .await
        .map_err(|e| PlantError::new(format!("the plant feed in the station database: {e}")))
}

impl Forwarder {
    /// Changes the status; tells the line view when what it shows changed.
    fn update(&self, f: impl FnOnce(&mut super::PlantStatus)) {
        if update_shown(&self.status, f) {
            (self.on_change)();
        }
    }

    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut failures: u32 = 0;
        loop {
            let e = match within(self.open(), &self.shown).await {
                Ok(mut session) => {
                    tracing::info!(database = %self.shown, cursor = session.cursor, "forwarding to the plant database");
                    self.update(|s| {
                        s.connected = true;
                        s.last_error = None;
                    });
                    let (e, progressed) = self.serve(&mut session).await;
                    // Only a committed batch or an answered check resets
                    // the wait: a batch that fails the same way every time
                    // is tried at the longest wait, not twice a second.
                    if progressed {
                        failures = 0;
                    }
                    e
                }
                Err(e) => e,
            };
            failures = failures.saturating_add(1);
            let was_connected = self.status.lock().map(|s| s.connected).unwrap_or(false);
            if was_connected || failures == 1 {
                tracing::warn!("plant forwarding waits: {e}");
            } else {
                tracing::debug!("plant forwarding still waits: {e}");
            }
            self.update(|s| {
                s.connected = false;
                s.last_error = Some(e.to_string());
            });
            // No hot loop: wait, keeping the lag on the status current.
            let until = tokio::time::Instant::now() + backoff(failures);
            loop {
                self.note_lag().await;
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::time::sleep(left.min(Duration::from_secs(1))).await;
            }
        }
    }

    /// Forwards until the connection fails; whether anything was
    /// committed or answered before it did.
    async fn serve(&self, session: &mut Session) -> (PlantError, bool) {
        let mut progressed = false;
        let e = self.serve_until_error(session, &mut progressed).await;
        (e, progressed)
    }

    async fn serve_until_error(&self, session: &mut Session, progressed: &mut bool) -> PlantError {
        let mut counted: Option<tokio::time::Instant> = None;
        let mut partitioned = tokio::time::Instant::now();
        let mut heard = tokio::time::Instant::now();
        loop {
            if partitioned.elapsed() >= PARTITIONS_EVERY {
                if let Err(e) = within(partitions(&session.client, &self.shown), &self.shown).await
                {
                    return e;
                }
                partitioned = tokio::time::Instant::now();
            }
            if counted.is_none_or(|t| t.elapsed() >= CONFLICT_EVERY) {
                match within(super::views::conflict_count(&session.client), &self.shown).await {
                    Ok(n) => self.update(|s| s.conflicts = Some(n)),
                    Err(e) => return e,
                }
                counted = Some(tokio::time::Instant::now());
            }
            match within(self.forward_once(session), &self.shown).await {
                Ok(Some(f)) => {
                    heard = tokio::time::Instant::now();
                    *progressed = true;
                    // New certificates may make (or end) a conflict: count
                    // again (at most once a second) before the next batch.
                    if f.certificates > 0
                        && counted.is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        counted = None;
                    }
                    self.update(|s| {
                        s.batches += 1;
                        s.rows += f.rows as u64;
                        s.last_forward_at = Some(ts(OffsetDateTime::now_utc()));
                    });
                    // A full batch: more are waiting, go on at once.
                    if f.entries < self.batch as usize {
                        self.note_lag().await;
                    }
                }
                Ok(None) => {
                    if heard.elapsed() >= PING_EVERY {
                        if let Err(e) = within(
                            async {
                                session
                                    .client
                                    .simple_query("SELECT 1")
                                    .await
                                    .map_err(|e| explain(&self.shown, &e))
                            },
                            &self.shown,
                        )
                        .await
                        {
                            return e;
                        }
                        heard = tokio::time::Instant::now();
                        *progressed = true;
                    }
                    // Nothing after the cursor: nothing waits.
                    self.show_lag(FeedLag::default());
                    tokio::time::sleep(POLL).await;
                }
                Err(e) => return e,
            }
        }
    }

    /// Puts the feed's lag on the status.
    async fn note_lag(&self) {
        let feed = self.feed.clone();
        if let Ok(lag) = blocking(move || feed.lag()).await {
            self.show_lag(lag);
        }
    }

    fn show_lag(&self, lag: FeedLag) {
        let age = lag.age(OffsetDateTime::now_utc());
        self.update(|s| {
            s.lag_records = lag.entries;
            s.lag_seconds = age.as_secs_f64();
            s.lag_warning = age > self.max_lag_warning;
        });
    }

    /// Connects, checks the schema, registers the station (refusing a
    /// second database under its id), makes this month's and next month's
    /// partitions, and reads the cursor; entries the database already has
    /// are deleted from the feed.
    pub async fn open(&self) -> Result<Session, PlantError> {
        let client = checkout(&self.pool, &self.shown).await?;
        super::check_schema(&self.shown, &client).await?;
        let err = |e: tokio_postgres::Error| explain(&self.shown, &e);
        let row = client
            .query_opt(
                "INSERT INTO plant_stations (station_id, line, instance) VALUES ($1, $2, $3)
                 ON CONFLICT (station_id) DO UPDATE SET line = EXCLUDED.line
                     WHERE plant_stations.instance = EXCLUDED.instance
                 RETURNING last_seq",
                &[&self.station, &self.line, &self.instance],
            )
            .await
            .map_err(err)?;
        let Some(row) = row else {
            return Err(PlantError::new(format!(
                "the plant database {} already has station {:?} from another station database: give this station an [station] id of its own (records of two databases under one id would overwrite each other)",
                self.shown, self.station
            )));
        };
        let cursor: i64 = row.get(0);
        partitions(&client, &self.shown).await?;
        let feed = self.feed.clone();
        match blocking(move || feed.resume(cursor)).await? {
            Resume::Resumed => {}
            Resume::SentAgain => tracing::warn!(
                database = %self.shown,
                cursor,
                "the plant database has less of this station's feed than it had committed before (restored from an older copy?): sending every record again"
            ),
            Resume::DatabaseBehind { plant, made } => {
                return Err(PlantError::new(format!(
                    "the plant database {} has more of station {:?}'s records (up to change {plant}) than this station database ever made (up to {made}): this database is older than the plant's copy of it (restored from a backup?). Its new records would overwrite others there, so nothing is sent: give this station a new [station] id",
                    self.shown, self.station
                )));
            }
        }
        Ok(Session { client, cursor })
    }

    /// Sends the next batch, if there is one.
    pub async fn forward_once(
        &self,
        session: &mut Session,
    ) -> Result<Option<Forwarded>, PlantError> {
        let feed = self.feed.clone();
        let (after, limit) = (session.cursor, self.batch);
        let batch = blocking(move || feed.batch(after, limit)).await?;
        if batch.is_empty() {
            return Ok(None);
        }
        let err = |e: tokio_postgres::Error| explain(&self.shown, &e);
        let tx = session.client.transaction().await.map_err(err)?;
        upsert(&tx, &self.station, &self.line, &batch)
            .await
            .map_err(err)?;
        let moved = tx
            .execute(
                "UPDATE plant_stations SET last_seq = $2, last_forward_at = now()
                 WHERE station_id = $1 AND last_seq = $3",
                &[&self.station, &batch.last_seq, &session.cursor],
            )
            .await
            .map_err(err)?;
        if moved != 1 {
            return Err(PlantError::new(format!(
                "the plant database {} moved station {:?}'s cursor under this station's feet: is a second process forwarding for it?",
                self.shown, self.station
            )));
        }
        crate::failpoint::hit("plant_before_commit");
        tx.commit().await.map_err(err)?;
        let committed_at_ms = now_ms();
        session.cursor = batch.last_seq;
        let feed = self.feed.clone();
        let upto = batch.last_seq;
        blocking(move || feed.ack(upto)).await?;
        Ok(Some(Forwarded {
            entries: batch.at_ms.len(),
            rows: batch.rows(),
            certificates: batch.certificates.len(),
            at_ms: batch.at_ms,
            committed_at_ms,
        }))
    }
}

/// This month's and next month's partitions of boards and steps.
async fn partitions(c: &tokio_postgres::Client, shown: &str) -> Result<(), PlantError> {
    c.execute("SELECT plant_partitions(now()::date, 2)", &[])
        .await
        .map(|_| ())
        .map_err(|e| explain(shown, &e))
}

/// Longest one step of the forwarder (a connection, a batch, a check) may
/// take: past it the connection is taken for lost (a cable pulled, a
/// database stuck), so the status says so and the forwarder starts again.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// `f` within [`STEP_TIMEOUT`].
async fn within<T>(
    f: impl std::future::Future<Output = Result<T, PlantError>>,
    shown: &str,
) -> Result<T, PlantError> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(super::too_slow(shown, STEP_TIMEOUT)))
}

/// Doubling from 0.5 s, capped, with up to a quarter of jitter so that a
/// plant's stations do not all knock at once after an outage.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << failures.saturating_sub(1).min(10));
    let base = base.min(MAX_BACKOFF);
    let jitter = u64::from(u16::from_be_bytes(crate::random::bytes())) % 250;
    base.mul_f64(0.75) + base.mul_f64(jitter as f64 / 1000.0)
}

/// Upserts every row of `b`, keyed by the station and its own ids.
async fn upsert(
    tx: &deadpool_postgres::Transaction<'_>,
    station: &str,
    line: &str,
    b: &FeedBatch,
) -> Result<(), tokio_postgres::Error> {
    if !b.boards.is_empty() {
        let v = &b.boards;
        let col = |f: fn(&crate::store::FeedBoard) -> Option<String>| -> Vec<Option<String>> {
            v.iter().map(f).collect()
        };
        tx.execute(
            "INSERT INTO boards (station_id, board_id, line, slot, guid, hw_revision, fw_version, mac,
                                 operator, work_order, status, step, error_code, error, started_at, finished_at)
             SELECT $1, u.id, $2, u.slot, u.guid, u.hw, u.fw, u.mac, u.op, u.wo, u.status, u.step,
                    u.ec, u.err, u.started::timestamptz, u.finished::timestamptz
             FROM unnest($3::int8[], $4::int4[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::text[], $16::text[])
                  AS u(id, slot, guid, hw, fw, mac, op, wo, status, step, ec, err, started, finished)
             ON CONFLICT (station_id, board_id, started_at) DO UPDATE SET
                 slot = EXCLUDED.slot, guid = EXCLUDED.guid, hw_revision = EXCLUDED.hw_revision,
                 fw_version = EXCLUDED.fw_version, mac = EXCLUDED.mac, operator = EXCLUDED.operator,
                 work_order = EXCLUDED.work_order, status = EXCLUDED.status, step = EXCLUDED.step,
                 error_code = EXCLUDED.error_code, error = EXCLUDED.error,
                 finished_at = EXCLUDED.finished_at",
            &[
                &station,
                &line,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.slot as i32).collect::<Vec<i32>>(),
                &col(|r| r.guid.clone()),
                &col(|r| r.hw_revision.clone()),
                &col(|r| r.fw_version.clone()),
                &col(|r| r.mac.clone()),
                &col(|r| r.operator.clone()),
                &col(|r| r.work_order.clone()),
                &col(|r| Some(r.status.clone())),
                &col(|r| Some(r.step.clone())),
                &col(|r| r.error_code.clone()),
                &col(|r| r.error.clone()),
                &col(|r| Some(r.started_at.clone())),
                &col(|r| r.finished_at.clone()),
            ],
        )
        .await?;
    }
    if !b.steps.is_empty() {
        let v = &b.steps;
        let col = |f: fn(&crate::store::FeedStep) -> Option<String>| -> Vec<Option<String>> {
            v.iter().map(f).collect()
        };
        tx.execute(
            "INSERT INTO steps (station_id, step_id, board_id, board_started, step, started_at, ended_at,
                                duration_ms, outcome, error_code, error, resends, damaged)
             SELECT $1, u.id, u.board, u.board_started::timestamptz, u.step, u.started::timestamptz,
                    u.ended::timestamptz, u.ms, u.outcome, u.ec, u.err, u.resends, u.damaged
             FROM unnest($2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::int8[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::int8[], $13::int8[])
                  AS u(id, board, step, started, ended, ms, outcome, ec, err, board_started, resends, damaged)
             ON CONFLICT (station_id, step_id, board_started) DO UPDATE SET
                 ended_at = EXCLUDED.ended_at, duration_ms = EXCLUDED.duration_ms,
                 outcome = EXCLUDED.outcome, error_code = EXCLUDED.error_code, error = EXCLUDED.error,
                 resends = EXCLUDED.resends, damaged = EXCLUDED.damaged",
            &[
                &station,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.board_id).collect::<Vec<i64>>(),
                &col(|r| Some(r.step.clone())),
                &col(|r| Some(r.started_at.clone())),
                &col(|r| r.ended_at.clone()),
                &v.iter().map(|r| r.duration_ms).collect::<Vec<Option<i64>>>(),
                &col(|r| r.outcome.clone()),
                &col(|r| r.error_code.clone()),
                &col(|r| r.error.clone()),
                &col(|r| Some(r.board_started_at.clone())),
                &v.iter().map(|r| r.resends).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.damaged).collect::<Vec<i64>>(),
            ],
        )
        .await?;
    }
    // Revocations before certificates: a conflict check sees them.
    if !b.revocations.is_empty() {
        let v = &b.revocations;
        tx.execute(
            "INSERT INTO revocations (station_id, serial, revoked_at, reason, revoked_by)
             SELECT $1, u.serial, u.at::timestamptz, u.reason, u.by
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS u(serial, at, reason, by)
             ON CONFLICT (station_id, serial) DO NOTHING",
            &[
                &station,
                &v.iter().map(|r| r.serial.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.revoked_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.reason.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.revoked_by.clone()).collect::<Vec<String>>(),
            ],
        )
        .await?;
    }
    if !b.device_revocations.is_empty() {
        let v = &b.device_revocations;
        tx.execute(
            "INSERT INTO device_revocations (station_id, serial, guid, revoked_at, reason, revoked_by)
             SELECT $1, u.serial, u.guid, u.at::timestamptz, u.reason, u.by
             FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS u(serial, guid, at, reason, by)
             ON CONFLICT (station_id, serial) DO NOTHING",
            &[
                &station,
                &v.iter().map(|r| r.serial.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.guid.clone().unwrap_or_default()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.revoked_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.reason.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.revoked_by.clone()).collect::<Vec<String>>(),
            ],
        )
        .await?;
    }
    if !b.certificates.is_empty() {
        let v = &b.certificates;
        let mut guids: Vec<String> = v.iter().map(|c| c.guid.clone()).collect();
        guids.sort();
        guids.dedup();
        // One lock per GUID (in one order, so two stations cannot deadlock),
        // held to the commit: a station that inserts a certificate for a
        // GUID another station is inserting at the same moment sees the
        // other's row once it gets the lock.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, h)
             FROM (SELECT DISTINCT hashtext(g) AS h FROM unnest($2::text[]) AS g ORDER BY 1) AS locks",
            &[&GUID_LOCK_CLASS, &guids],
        )
        .await?;
        let text = |f: fn(&crate::store::FeedCertificate) -> String| -> Vec<String> {
            v.iter().map(f).collect()
        };
        tx.execute(
            "INSERT INTO certificates (station_id, serial, guid, board_id, fingerprint, pem, not_before,
                                       not_after, slot, operator, issued_at, override_used, state)
             SELECT $1, u.serial, u.guid, u.board, u.fp, u.pem, u.nb::timestamptz, u.na::timestamptz,
                    u.slot, u.op, u.issued::timestamptz, u.ovr, u.state
             FROM unnest($2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::int4[], $10::text[], $11::text[], $12::bool[], $13::text[])
                  AS u(serial, guid, board, fp, pem, nb, na, slot, op, issued, ovr, state)
             ON CONFLICT (station_id, serial) DO UPDATE SET state = EXCLUDED.state,
                 operator = EXCLUDED.operator",
            &[
                &station,
                &text(|c| c.serial.clone()),
                &text(|c| c.guid.clone()),
                &v.iter().map(|c| c.board_id).collect::<Vec<i64>>(),
                &text(|c| c.fingerprint.clone()),
                &text(|c| c.pem.clone()),
                &text(|c| c.not_before.clone()),
                &text(|c| c.not_after.clone()),
                &v.iter().map(|c| c.slot as i32).collect::<Vec<i32>>(),
                &v.iter().map(|c| c.operator.clone()).collect::<Vec<Option<String>>>(),
                &text(|c| c.issued_at.clone()),
                &v.iter().map(|c| c.override_used).collect::<Vec<bool>>(),
                &text(|c| c.state.clone()),
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO conflicts (guid)
             SELECT c.guid FROM certificates c
             WHERE c.guid = ANY($1) AND c.state IN ('issued', 'installed') AND c.not_after > now()
               AND NOT EXISTS (SELECT 1 FROM revocations r
                               WHERE r.station_id = c.station_id AND r.serial = c.serial)
             GROUP BY c.guid HAVING count(DISTINCT c.station_id) > 1
             ON CONFLICT (guid) DO NOTHING",
            &[&guids],
        )
        .await?;
    }
    if !b.enrollments.is_empty() {
        let v = &b.enrollments;
        tx.execute(
            "INSERT INTO enrollments (station_id, job_id, guid, board_id, state, attempts, last_error,
                                      created_at, updated_at)
             SELECT $1, u.id, u.guid, u.board, u.state, u.attempts, u.err, u.created::timestamptz,
                    u.updated::timestamptz
             FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[], $6::int8[], $7::text[],
                         $8::text[], $9::text[])
                  AS u(id, guid, board, state, attempts, err, created, updated)
             ON CONFLICT (station_id, job_id) DO UPDATE SET state = EXCLUDED.state,
                 attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                 updated_at = EXCLUDED.updated_at",
            &[
                &station,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.guid.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.board_id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.state.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.attempts).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.last_error.clone()).collect::<Vec<Option<String>>>(),
                &v.iter().map(|r| r.created_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.updated_at.clone()).collect::<Vec<String>>(),
            ],
        )
        .await?;
    }
    if !b.device_actions.is_empty() {
        let v = &b.device_actions;
        tx.execute(
            "INSERT INTO device_actions (station_id, action_id, guid, action, params, reason, actor, state,
                                         attempts, last_error, created_at, updated_at)
             SELECT $1, u.id, u.guid, u.action, u.params, u.reason, u.actor, u.state, u.attempts,
                    u.err, u.created::timestamptz, u.updated::timestamptz
             FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::int8[], $10::text[], $11::text[], $12::text[])
                  AS u(id, guid, action, params, reason, actor, state, attempts, err, created, updated)
             ON CONFLICT (station_id, action_id) DO UPDATE SET state = EXCLUDED.state,
                 attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                 updated_at = EXCLUDED.updated_at",
            &[
                &station,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.guid.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.action.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.params.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.reason.clone()).collect::<Vec<Option<String>>>(),
                &v.iter().map(|r| r.actor.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.state.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.attempts).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.last_error.clone()).collect::<Vec<Option<String>>>(),
                &v.iter().map(|r| r.created_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.updated_at.clone()).collect::<Vec<String>>(),
            ],
        )
        .await?;
    }
    if !b.labels.is_empty() {
        let v = &b.labels;
        tx.execute(
            "INSERT INTO labels (station_id, label_id, guid, board_id, kind, state, attempts, last_error,
                                 requested_by, created_at, updated_at, printed_at)
             SELECT $1, u.id, u.guid, u.board, u.kind, u.state, u.attempts, u.err, u.by,
                    u.created::timestamptz, u.updated::timestamptz, u.printed::timestamptz
             FROM unnest($2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], $7::int8[],
                         $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
                  AS u(id, guid, board, kind, state, attempts, err, by, created, updated, printed)
             ON CONFLICT (station_id, label_id) DO UPDATE SET state = EXCLUDED.state,
                 attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                 updated_at = EXCLUDED.updated_at, printed_at = EXCLUDED.printed_at",
            &[
                &station,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.guid.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.board_id).collect::<Vec<Option<i64>>>(),
                &v.iter().map(|r| r.kind.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.state.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.attempts).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.last_error.clone()).collect::<Vec<Option<String>>>(),
                &v.iter().map(|r| r.requested_by.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.created_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.updated_at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.printed_at.clone()).collect::<Vec<Option<String>>>(),
            ],
        )
        .await?;
    }
    if !b.audit.is_empty() {
        let v = &b.audit;
        // The trail is append-only: a row the plant has is never changed
        // by a resend (an edit made in the plant stays for `plant verify`
        // to find).
        tx.execute(
            "INSERT INTO audit (station_id, audit_id, at, actor, action, subject, detail, prev_hash, hash)
             SELECT $1, u.id, u.at, u.actor, u.action, u.subject, u.detail, u.prev, u.hash
             FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::text[])
                  AS u(id, at, actor, action, subject, detail, prev, hash)
             ON CONFLICT (station_id, audit_id) DO NOTHING",
            &[
                &station,
                &v.iter().map(|r| r.id).collect::<Vec<i64>>(),
                &v.iter().map(|r| r.at.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.actor.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.action.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.subject.clone()).collect::<Vec<Option<String>>>(),
                &v.iter().map(|r| r.detail.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.prev_hash.clone()).collect::<Vec<String>>(),
                &v.iter().map(|r| r.hash.clone()).collect::<Vec<String>>(),
            ],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(375) && first < Duration::from_millis(500));
        let later = backoff(20);
        assert!(later >= MAX_BACKOFF.mul_f64(0.75) && later <= MAX_BACKOFF);
        assert!(backoff(3) > backoff(1));
    }
}
