//! The plant tier on this machine: one PostgreSQL server (a private
//! cluster, started here as the tests start theirs) fed by many station
//! databases.
//!
//! 1. Throughput: `--stations` station databases (default 50), each with
//!    `--boards` board records (default 400) written as the line writes
//!    them (the board, nine steps started and ended, a certificate issued
//!    then installed, its enrollment, its label and its audit row: 38 feed
//!    entries, 14 rows), forwarded all at once by one forwarder each.
//! 2. Lag: the same stations making `--rate` boards a second together
//!    (default 100) for `--seconds` (default 30) while their forwarders
//!    run; the lag of every feed entry, from the change to the plant's
//!    commit.
//! 3. The plant report of one day over `--report-boards` board records
//!    (default 10,000,000) from 50 stations over a year, each with its
//!    steps, certificate, enrollment and label, made with SQL in the
//!    cluster the bench starts (about 15 minutes for 10 million).
//!
//! `cargo bench --bench plant` runs all three; under `cargo test` it runs
//! each small, as a smoke test. Figures in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/pg.rs"]
mod pg;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use station::plant::forward::Forwarder;
use station::plant::{PlantStatus, schema};
use station::report::STEPS;
use station::store::{Store, ts};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `n` boards into a station database as the line does, one
/// transaction per change (the triggers note each in the feed).
fn make_boards(c: &mut Connection, station: &str, first: i64, n: i64) {
    let now = time::OffsetDateTime::now_utc();
    for i in first..first + n {
        let guid = format!("{:08x}-0000-4000-8000-{i:012x}", fxhash(station));
        let t = ts(now);
        let tx = c.transaction().unwrap();
        tx.execute(
            "INSERT INTO boards (station, slot, guid, hw_revision, fw_version, mac, operator, status, step, started_at, work_order)
             VALUES (?1, ?2, ?3, 'B2', '1.4.2', '02:00:00:00:00:01', 'ana', 'in_progress', 'hello', ?4, 'WO-1')",
            params![station, i % 8 + 1, guid, t],
        )
        .unwrap();
        let board = tx.last_insert_rowid();
        for step in STEPS {
            tx.execute(
                "INSERT INTO steps (board_id, step, started_at) VALUES (?1, ?2, ?3)",
                params![board, step, t],
            )
            .unwrap();
            let s = tx.last_insert_rowid();
            tx.execute(
                "UPDATE steps SET ended_at = ?2, duration_ms = 40, outcome = 'ok' WHERE id = ?1",
                params![s, t],
            )
            .unwrap();
            tx.execute(
                "UPDATE boards SET step = ?2 WHERE id = ?1",
                params![board, step],
            )
            .unwrap();
            if step == "issue" {
                tx.execute(
                    "INSERT INTO certificates (serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, state)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, '2046-01-01T00:00:00.000Z', ?7, 1, 'ana', ?6, 'issued')",
                    params![format!("{station}-{i:x}"), guid, board, format!("{station}{i:060x}"), PEM, t, station],
                )
                .unwrap();
                tx.execute(
                    "INSERT INTO audit (at, actor, action, subject, detail, prev_hash, hash) VALUES (?1, 'ana', 'certificate_issued', ?2, '{}', 'x', 'x')",
                    params![t, guid],
                )
                .unwrap();
            }
        }
        tx.execute(
            "UPDATE certificates SET state = 'installed' WHERE board_id = ?1",
            [board],
        )
        .unwrap();
        tx.execute(
            "UPDATE boards SET status = 'provisioned', step = 'finish', finished_at = ?2 WHERE id = ?1",
            params![board, t],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO outbox (guid, board_id, body, state, created_at, updated_at) VALUES (?1, ?2, '{}', 'pending', ?3, ?3)",
            params![guid, board, t],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO labels (guid, board_id, kind, requested_by, created_at, updated_at) VALUES (?1, ?2, 'board', 'ana', ?3, ?3)",
            params![guid, board, t],
        )
        .unwrap();
        tx.commit().unwrap();
    }
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB (a device certificate of about 700 bytes in production)\n-----END CERTIFICATE-----\n";

fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A station database with its feed on, and its forwarder.
fn station(dir: &Path, i: usize, url: &tokio_postgres::Config) -> (Connection, Forwarder) {
    let db = dir.join(format!("station-{i}.db"));
    let store = Store::open(&db).unwrap();
    let instance = store.plant_enable(true).unwrap();
    let mut c = Connection::open(&db).unwrap();
    // The line's own durability is not what is measured here.
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let _ = &mut c;
    let shown = station::config::shown_plant_url(url);
    let f = Forwarder {
        feed: Arc::new(store.plant_feed().unwrap()),
        pool: station::plant::pool(url).unwrap(),
        shown: shown.clone(),
        station: format!("st-{i:02}"),
        line: format!("line-{}", i % 10),
        instance,
        batch: 500,
        max_lag_warning: Duration::from_secs(60),
        status: PlantStatus::new(shown),
        on_change: Arc::new(|| ()),
    };
    (c, f)
}

fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn throughput(pg: &pg::Pg, stations: usize, boards: i64) {
    pg.create_db("throughput");
    let url = station::config::parse_plant_url(&pg.url("throughput")).unwrap();
    let mut client = station::plant::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut forwarders = Vec::new();
    for i in 0..stations {
        let (mut c, f) = station(dir.path(), i, &url);
        make_boards(&mut c, &format!("st-{i:02}"), 0, boards);
        forwarders.push(f);
    }
    let entries: i64 = forwarders
        .iter()
        .map(|f| f.feed.lag().unwrap().entries)
        .sum();
    eprintln!(
        "made {} boards on {stations} stations ({entries} feed entries) in {:.1} s",
        boards * stations as i64,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for f in forwarders {
        tasks.push(tokio::spawn(async move {
            let mut s = f.open().await.unwrap();
            let mut rows = 0usize;
            while let Some(done) = f.forward_once(&mut s).await.unwrap() {
                rows += done.rows;
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let total = boards * stations as i64;
    println!(
        "forwarding: {total} boards ({rows} rows, {entries} feed entries) from {stations} stations in {secs:.2} s: {:.0} boards/s, {:.0} rows/s",
        total as f64 / secs,
        rows as f64 / secs
    );
    let n = pg.psql("throughput", "SELECT count(*) FROM boards");
    assert_eq!(n, total.to_string());
}

async fn lag(pg: &pg::Pg, stations: usize, rate: u64, seconds: u64) {
    pg.create_db("lag");
    let url = station::config::parse_plant_url(&pg.url("lag")).unwrap();
    let mut client = station::plant::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    let mut forwarders = Vec::new();
    // Each station makes its share of boards, evenly spaced.
    let every = Duration::from_secs_f64(stations as f64 / rate as f64);
    for i in 0..stations {
        let (mut c, f) = station(dir.path(), i, &url);
        let halt = stop.clone();
        producers.push(std::thread::spawn(move || {
            let start = Instant::now() + every.mul_f64(i as f64 / stations as f64);
            let mut k = 0i64;
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                let at = start + every.mul_f64(k as f64);
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                make_boards(&mut c, &format!("st-{i:02}"), k, 1);
                k += 1;
            }
            k
        }));
        let stop = stop.clone();
        forwarders.push(tokio::spawn(async move {
            let mut s = f.open().await.unwrap();
            let mut lags = Vec::new();
            loop {
                match f.forward_once(&mut s).await.unwrap() {
                    Some(done) => lags.extend(done.at_ms.iter().map(|a| done.committed_at_ms - a)),
                    None if stop.load(std::sync::atomic::Ordering::Relaxed) => break,
                    // The forwarder's own idle poll.
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
            lags
        }));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made: i64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
    let mut lags = Vec::new();
    for f in forwarders {
        lags.extend(f.await.unwrap());
    }
    lags.sort_unstable();
    println!(
        "lag at {:.0} boards/s from {stations} stations ({made} boards, {} feed entries): p50 {} ms, p99 {} ms, max {} ms",
        made as f64 / seconds as f64,
        lags.len(),
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        lags.last().copied().unwrap_or(0)
    );
}

/// 50 stations over a year, `boards` records in all, straight into the
/// plant database with SQL.
fn build_report_db(pg: &pg::Pg, db: &str, boards: u64, days: u64) {
    let per_day = boards / days;
    pg.psql(
        db,
        &format!(
            "INSERT INTO boards (station_id, board_id, line, slot, guid, hw_revision, fw_version, mac, operator,
                                 work_order, status, step, error_code, error, started_at, finished_at)
             SELECT 'st-' || lpad((g % 50)::text, 2, '0'), g / 50 + 1, 'line-' || (g % 10), (g / 50) % 8 + 1,
                    md5(g::text)::uuid::text, 'B2', '1.4.2', '02:00:00:00:00:01', 'ana', 'WO-' || (g / 5000),
                    CASE WHEN g % 20 = 7 THEN 'failed' ELSE 'provisioned' END,
                    CASE WHEN g % 20 = 7 THEN 'keygen' ELSE 'finish' END,
                    CASE WHEN g % 20 = 7 THEN 'csr_bad_signature' END,
                    CASE WHEN g % 20 = 7 THEN 'csr_bad_signature' END,
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day},
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day} + interval '9 seconds'
             FROM generate_series(0, {boards} - 1) AS g"
        ),
    );
    pg.psql(
        db,
        &format!(
            "INSERT INTO steps (station_id, step_id, board_id, board_started, step, started_at, ended_at, duration_ms, outcome)
             SELECT 'st-' || lpad((g % 50)::text, 2, '0'), (g / 50) * 9 + k, g / 50 + 1,
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day},
                    (ARRAY['hello','identify','review','keygen','issue','store','readback','prove','finish'])[k + 1],
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day} + k * interval '1 second',
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day} + (k + 1) * interval '1 second',
                    800 + (g + k) % 400, 'ok'
             FROM generate_series(0, {boards} - 1) AS g, generate_series(0, 8) AS k"
        ),
    );
    pg.psql(
        db,
        &format!(
            "INSERT INTO certificates (station_id, serial, guid, board_id, fingerprint, pem, not_before, not_after,
                                       slot, operator, issued_at, override_used, state)
             SELECT 'st-' || lpad((g % 50)::text, 2, '0'), to_hex(g), md5(g::text)::uuid::text, g / 50 + 1,
                    md5(g::text) || md5(g::text), 'PEM', now(), now() + interval '20 years', 1, 'ana',
                    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 day' / {per_day}, false, 'installed'
             FROM generate_series(0, {boards} - 1) AS g WHERE g % 20 <> 7"
        ),
    );
    for (table, cols, vals) in [
        (
            "enrollments",
            "(station_id, job_id, guid, board_id, state, attempts, created_at, updated_at)",
            "'enrolled', 1, now(), now()",
        ),
        (
            "labels",
            "(station_id, label_id, guid, board_id, kind, state, attempts, requested_by, created_at, updated_at)",
            "'board', 'printed', 1, 'ana', now(), now()",
        ),
    ] {
        pg.psql(
            db,
            &format!(
                "INSERT INTO {table} {cols}
                 SELECT 'st-' || lpad((g % 50)::text, 2, '0'), g / 50 + 1, md5(g::text)::uuid::text, g / 50 + 1, {vals}
                 FROM generate_series(0, {boards} - 1) AS g WHERE g % 20 <> 7"
            ),
        );
    }
    pg.psql(db, "VACUUM ANALYZE");
}

async fn report(pg: &pg::Pg, boards: u64, days: u64) {
    pg.create_db("report");
    let url = station::config::parse_plant_url(&pg.url("report")).unwrap();
    let mut client = station::plant::connect(&url).await.unwrap();
    schema::migrate(&mut client).await.unwrap();
    // A year of months: 2026.
    client
        .execute("SELECT plant_partitions('2026-01-01', 13)", &[])
        .await
        .unwrap();
    let t = Instant::now();
    build_report_db(pg, "report", boards, days);
    eprintln!(
        "built {boards} board records in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    // A day in the middle of the range.
    let middle =
        time::macros::datetime!(2026-01-01 00:00 UTC) + time::Duration::days(days as i64 / 2);
    let day = ts(middle);
    let next_day = ts(middle + time::Duration::days(1));
    let filter = station::plant::views::PlantFilter {
        unit: station::store::UnitFilter {
            from: day.clone(),
            to: next_day,
            lot: None,
            slot: None,
        },
        station: None,
        line: None,
    };
    let (mut best, mut best_read) = (f64::MAX, f64::MAX);
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let (units, steps) = station::plant::views::report_data(&client, &filter)
            .await
            .unwrap();
        best_read = best_read.min(t.elapsed().as_secs_f64());
        n = units.len();
        let q = station::report::ReportQuery::new(
            "one day",
            filter.unit.from.clone(),
            filter.unit.to.clone(),
            None,
            None,
        );
        let r = station::report::Report::build(
            "plant",
            q,
            ts(time::OffsetDateTime::now_utc()),
            units,
            &steps,
        );
        let html =
            station::report::render::html(&r, station::report::render::Styles::Embedded).unwrap();
        assert!(html.len() > 1000);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "plant report: one day ({n} board records) of {boards} from 50 stations over {days} days: read in {:.0} ms, read and drawn as HTML in {:.0} ms (best of 3)",
        best_read * 1000.0,
        best * 1000.0
    );
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let stations = arg("--stations", if full { 50 } else { 3 }) as usize;
    let boards = arg("--boards", if full { 400 } else { 20 }) as i64;
    let rate = arg("--rate", if full { 100 } else { 10 });
    let seconds = arg("--seconds", if full { 30 } else { 2 });
    let report_boards = arg("--report-boards", if full { 10_000_000 } else { 20_000 });
    let days = arg("--days", 365);
    let only_report = std::env::args().any(|a| a == "--only-report");
    let pg = pg::Pg::start();
    if !only_report {
        throughput(&pg, stations, boards).await;
        lag(&pg, stations, rate, seconds).await;
    }
    report(&pg, report_boards, days).await;
}
