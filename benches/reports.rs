//! Builds QA reports over a large station database: one day's HTML report
//! and the full device-list CSV export, over 1,000,000 board records (each
//! with its 9 steps, a certificate, an upload and a label for the passed
//! ones), spread over 50 days (20,000 a day).
//!
//! `cargo bench --bench reports` (1,000,000 boards; the database is built
//! once in target/tmp and reused); `-- --boards N` for another size. Under
//! `cargo test` it builds 2,000, as a smoke test. Figures in
//! docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use rusqlite::{Connection, params};
use station::report::{ReportQuery, STEPS, render};
use station::store::{Store, UnitFilter, ts};

const DAYS: i64 = 50;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Fills the database as a station running 50 days would have.
fn seed(db: &std::path::Path, boards: u64) {
    drop(Store::open(db).unwrap());
    let mut c = Connection::open(db).unwrap();
    c.pragma_update(None, "synchronous", "OFF").unwrap();
    let start = time::macros::datetime!(2026-10-01 00:00 UTC);
    let spacing_ms = (DAYS * 86_400_000) / boards as i64;
    // In transactions of 50,000 boards, the log folded back into the
    // database after each: one transaction would grow the log to the size
    // of the database.
    for chunk in (0..boards as i64).collect::<Vec<_>>().chunks(50_000) {
        let tx = c.transaction().unwrap();
        {
            let mut board = tx.prepare("INSERT INTO boards (id, station, slot, guid, hw_revision, fw_version, mac, operator, status, step, error_code, error, started_at, finished_at, work_order) VALUES (?1, 'st-1', ?2, ?3, 'B2', '1.4.2', '02:00:00:00:00:01', 'ana', ?4, ?5, ?6, ?7, ?8, ?9, ?10)").unwrap();
            let mut step = tx.prepare("INSERT INTO steps (board_id, step, started_at, ended_at, duration_ms, outcome, error_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)").unwrap();
            let mut cert = tx.prepare("INSERT INTO certificates (serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, state) VALUES (?1, ?2, ?3, ?4, 'PEM', ?5, ?5, 'st-1', ?6, 'ana', ?5, 'installed')").unwrap();
            let mut outbox = tx.prepare("INSERT INTO outbox (guid, board_id, body, state, created_at, updated_at) VALUES (?1, ?2, '{}', 'enrolled', ?3, ?3)").unwrap();
            let mut label = tx.prepare("INSERT INTO labels (guid, board_id, kind, state, requested_by, created_at, updated_at) VALUES (?1, ?2, 'board', 'printed', 'ana', ?3, ?3)").unwrap();
            for &i in chunk {
                let t0 = start + time::Duration::milliseconds(i * spacing_ms);
                let guid = format!("0a1b2c3d-0000-4000-8000-{i:012x}");
                // One in 20 fails, at keygen or store.
                let failed = i % 20 == 7;
                let last = if failed {
                    if i % 40 == 7 { 3 } else { 5 }
                } else {
                    8
                };
                let mut t = 0i64;
                let mut times = Vec::with_capacity(9);
                for (k, name) in STEPS.iter().enumerate().take(last + 1) {
                    let d = 800 + ((i * 7 + k as i64 * 13) % 400);
                    times.push((
                        name,
                        ts(t0 + time::Duration::milliseconds(t)),
                        ts(t0 + time::Duration::milliseconds(t + d)),
                        d,
                        k == last && failed,
                    ));
                    t += d;
                }
                let started = ts(t0);
                let finished = ts(t0 + time::Duration::milliseconds(t));
                let (status, code) = if failed {
                    (
                        "failed",
                        Some(if last == 3 {
                            "csr_bad_signature"
                        } else {
                            "board_refused"
                        }),
                    )
                } else {
                    ("provisioned", None)
                };
                board
                    .execute(params![
                        i + 1,
                        (i % 8) + 1,
                        guid,
                        status,
                        STEPS[last],
                        code,
                        code,
                        started,
                        finished,
                        format!("WO-{}", i / 5000)
                    ])
                    .unwrap();
                for (name, s, e, d, f) in times {
                    step.execute(params![
                        i + 1,
                        name,
                        s,
                        e,
                        d,
                        if f { "failed" } else { "ok" },
                        if f { code } else { None }
                    ])
                    .unwrap();
                }
                if !failed {
                    cert.execute(params![
                        format!("{i:032x}"),
                        guid,
                        i + 1,
                        format!("{i:064x}"),
                        started,
                        (i % 8) + 1
                    ])
                    .unwrap();
                    outbox.execute(params![guid, i + 1, finished]).unwrap();
                    label.execute(params![guid, i + 1, finished]).unwrap();
                }
            }
        }
        tx.commit().unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    }
    c.execute_batch("ANALYZE").unwrap();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let boards = arg("--boards", if full { 1_000_000 } else { 2_000 });
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-reports");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join(format!("station-{boards}.db"));
    if !db.exists() || !full {
        let _ = std::fs::remove_file(&db);
        let t = Instant::now();
        seed(&db, boards);
        println!(
            "seeded {boards} boards in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    let store = Store::open(&db).unwrap();
    // One day in the middle.
    let q = ReportQuery {
        from: "2026-10-20T00:00:00.000Z".into(),
        to: "2026-10-21T00:00:00.000Z".into(),
        lot: None,
        slot: None,
        title: "2026-10-20".into(),
    };
    let runs = if full { 5 } else { 1 };
    let mut best = f64::MAX;
    let mut size = 0;
    let mut day = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let r = store.report("st-1", q.clone(), "now".into()).unwrap();
        let html = render::html(&r, render::Styles::Embedded).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        size = html.len();
        day = r.attempted;
    }
    assert!(day > 0, "the day has boards");
    println!(
        "one day's HTML report: {day} boards, {size} bytes, best of {runs}: {:.3} s",
        best
    );

    let all = UnitFilter {
        from: "2000-01-01T00:00:00.000Z".into(),
        to: "2100-01-01T00:00:00.000Z".into(),
        lot: None,
        slot: None,
    };
    // Exports are counted, not kept: the JSON lines of a million boards
    // are gigabytes.
    let t = Instant::now();
    let mut out = Lines::default();
    station::cli::report_cmd::export(&store, &all, "csv", &mut out).unwrap();
    let csv_s = t.elapsed().as_secs_f64();
    assert_eq!(out.lines, boards + 1, "every board and the header");
    println!(
        "full device-list CSV: {boards} boards, {} MB in {csv_s:.2} s",
        out.bytes / 1_000_000
    );

    let t = Instant::now();
    let mut out = Lines::default();
    station::cli::report_cmd::export(&store, &all, "jsonl", &mut out).unwrap();
    assert_eq!(out.lines, boards);
    println!(
        "full per-unit JSON lines export: {boards} boards, {} MB in {:.2} s",
        out.bytes / 1_000_000,
        t.elapsed().as_secs_f64()
    );
}

/// Counts what an export writes.
#[derive(Default)]
struct Lines {
    bytes: u64,
    lines: u64,
}

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
