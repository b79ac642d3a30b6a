//! QA reports and MES exports over a seeded database with a known mix of
//! outcomes: every figure against a hand count or an independent SQL
//! query; the CSV through a CSV parser; the command line and the pages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;
use rusqlite::{Connection, params};
use station::report::{Report, ReportQuery};
use station::store::Store;

const LOT_A: &str = "Lot \"7\", Müller-Ω";
const LOT_B: &str = "B-12";

/// (guid, slot, operator, lot, started, seconds, status, step, error code,
/// enrollment, label)
type Seed = (
    Option<&'static str>,
    u16,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    i64,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

const G1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const G2: &str = "0a1b2c3d-0000-4000-8000-000000000002";
const G3: &str = "0a1b2c3d-0000-4000-8000-000000000003";
const G4: &str = "0a1b2c3d-0000-4000-8000-000000000004";
const G5: &str = "0a1b2c3d-0000-4000-8000-000000000005";
const G6: &str = "0a1b2c3d-0000-4000-8000-000000000006";

const SEEDS: [Seed; 10] = [
    (
        Some(G1),
        1,
        Some("ana"),
        Some(LOT_A),
        "2026-11-23T06:00:00.000Z",
        30,
        "provisioned",
        "finish",
        None,
        Some("enrolled"),
        Some("printed"),
    ),
    (
        Some(G2),
        2,
        Some("ben"),
        Some(LOT_A),
        "2026-11-23T06:10:00.000Z",
        45,
        "failed",
        "keygen",
        Some("csr_bad_signature"),
        None,
        None,
    ),
    (
        Some(G2),
        2,
        Some("ben"),
        Some(LOT_A),
        "2026-11-23T06:20:00.000Z",
        40,
        "provisioned",
        "finish",
        None,
        Some("pending"),
        Some("pending"),
    ),
    (
        Some(G3),
        1,
        Some("ana"),
        Some(LOT_B),
        "2026-11-23T07:05:00.000Z",
        20,
        "failed",
        "store",
        Some("board_refused"),
        None,
        None,
    ),
    (
        Some(G4),
        1,
        Some("ana"),
        Some(LOT_B),
        "2026-11-23T07:15:00.000Z",
        50,
        "failed",
        "keygen",
        Some("csr_bad_signature"),
        None,
        None,
    ),
    (
        None,
        2,
        None,
        None,
        "2026-11-23T08:00:00.000Z",
        5,
        "failed",
        "hello",
        Some("no_answer"),
        None,
        None,
    ),
    (
        Some(G5),
        2,
        Some("ben"),
        Some(LOT_B),
        "2026-11-23T08:30:00.000Z",
        70,
        "provisioned",
        "finish",
        None,
        Some("parked"),
        Some("printed"),
    ),
    (
        Some(G6),
        1,
        Some("ana"),
        Some(LOT_B),
        "2026-11-23T09:00:00.000Z",
        0,
        "in_progress",
        "store",
        None,
        None,
        None,
    ),
    // Outside the day.
    (
        Some("0a1b2c3d-0000-4000-8000-000000000007"),
        1,
        None,
        None,
        "2026-11-22T23:59:59.000Z",
        30,
        "provisioned",
        "finish",
        None,
        None,
        None,
    ),
    (
        Some("0a1b2c3d-0000-4000-8000-000000000008"),
        1,
        None,
        None,
        "2026-11-24T00:00:00.000Z",
        30,
        "provisioned",
        "finish",
        None,
        None,
        None,
    ),
];

fn at(t: &str, plus_ms: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    let t =
        time::OffsetDateTime::parse(t, &Rfc3339).unwrap() + time::Duration::milliseconds(plus_ms);
    station::store::ts(t)
}

/// Writes the seeds as the station would have: board records, their steps
/// (each step 1/10 of the cycle, the last ones absorbing the rest), the
/// certificates, uploads and labels.
fn seed(db: &std::path::Path) {
    drop(Store::open(db).unwrap());
    let mut c = Connection::open(db).unwrap();
    let tx = c.transaction().unwrap();
    for (i, s) in SEEDS.iter().enumerate() {
        let (guid, slot, op, lot, start, secs, status, step, code, enr, label) = *s;
        let finished = (status != "in_progress").then(|| at(start, secs * 1000));
        tx.execute(
            "INSERT INTO boards (station, slot, guid, hw_revision, fw_version, mac, operator, status, step, error_code, error, started_at, finished_at, work_order)
             VALUES ('st-1', ?1, ?2, 'B2', '1.4.2', '02:00:00:00:00:01', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![slot, guid, op, status, step, code, code.map(|c| format!("failed: {c}")), start, finished, lot],
        )
        .unwrap();
        let board = tx.last_insert_rowid();
        let steps = station::report::STEPS;
        let last = steps.iter().position(|s| *s == step).unwrap();
        let mut t = 0i64;
        for (k, name) in steps.iter().enumerate().take(last + 1) {
            let d = (secs * 1000 / 10) + k as i64 * 10;
            let failed_here = k == last && status == "failed";
            let running = k == last && status == "in_progress";
            tx.execute(
                "INSERT INTO steps (board_id, step, started_at, ended_at, duration_ms, outcome, error_code) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    board,
                    name,
                    at(start, t),
                    (!running).then(|| at(start, t + d)),
                    (!running).then_some(d),
                    if running { None } else if failed_here { Some("failed") } else { Some("ok") },
                    failed_here.then_some(code).flatten()
                ],
            )
            .unwrap();
            t += d;
        }
        if let Some(g) = guid
            && status == "provisioned"
        {
            tx.execute(
                "INSERT INTO certificates (serial, guid, board_id, fingerprint_sha256, pem, not_before, not_after, station, slot, operator, issued_at, state)
                 VALUES (?1, ?2, ?3, ?4, 'PEM', ?5, ?5, 'st-1', ?6, ?7, ?5, 'installed')",
                params![format!("5e{i:02}"), g, board, format!("fp{i:02}"), start, slot, op],
            )
            .unwrap();
        }
        if let (Some(g), Some(e)) = (guid, enr) {
            tx.execute(
                "INSERT INTO outbox (guid, board_id, body, state, created_at, updated_at) VALUES (?1, ?2, '{}', ?3, ?4, ?4)",
                params![g, board, e, start],
            )
            .unwrap();
        }
        if let (Some(g), Some(l)) = (guid, label) {
            tx.execute(
                "INSERT INTO labels (guid, board_id, kind, state, requested_by, created_at, updated_at) VALUES (?1, ?2, 'board', ?3, 'ana', ?4, ?4)",
                params![g, board, l, start],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn day() -> ReportQuery {
    ReportQuery {
        from: "2026-11-23T00:00:00.000Z".into(),
        to: "2026-11-24T00:00:00.000Z".into(),
        lot: None,
        slot: None,
        title: "2026-11-23".into(),
    }
}

fn report(store: &Store, q: ReportQuery) -> Report {
    store
        .report("st-1", q, "2026-11-24T08:00:00.000Z".into())
        .unwrap()
}

/// One number from SQL.
fn sql(c: &Connection, q: &str) -> i64 {
    c.query_row(q, [], |r| r.get(0)).unwrap()
}

const IN_DAY: &str =
    "started_at >= '2026-11-23T00:00:00.000Z' AND started_at < '2026-11-24T00:00:00.000Z'";

#[test]
fn every_figure_matches_a_hand_count_and_sql() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.db");
    seed(&db);
    let store = Store::open(&db).unwrap();
    let r = report(&store, day());
    let c = Connection::open(&db).unwrap();

    // Hand count of SEEDS, then the same from SQL.
    assert_eq!(
        (r.attempted, r.passed, r.failed, r.in_progress),
        (8, 3, 4, 1)
    );
    assert_eq!(
        r.attempted as i64,
        sql(&c, &format!("SELECT COUNT(*) FROM boards WHERE {IN_DAY}"))
    );
    assert_eq!(
        r.failed as i64,
        sql(
            &c,
            &format!("SELECT COUNT(*) FROM boards WHERE {IN_DAY} AND status = 'failed'")
        )
    );
    // Boards with a finished record: G1..G5 and the one that never said
    // its GUID (G6 is still on the jig).
    assert_eq!(r.boards, 6);
    assert_eq!(
        r.boards as i64,
        sql(
            &c,
            &format!(
                "SELECT COUNT(DISTINCT guid) + SUM(guid IS NULL) FROM boards WHERE {IN_DAY} AND status != 'in_progress'"
            )
        )
    );
    // First pass: G1 and G5 (G2 passed on its retry).
    assert_eq!(r.first_pass, 2);
    let first_pass = sql(
        &c,
        &format!(
            "SELECT COUNT(*) FROM boards b WHERE {IN_DAY} AND status = 'provisioned'
               AND (guid IS NULL OR NOT EXISTS (SELECT 1 FROM boards e WHERE e.guid = b.guid
                    AND e.started_at >= '2026-11-23T00:00:00.000Z' AND e.started_at < b.started_at))"
        ),
    );
    assert_eq!(r.first_pass as i64, first_pass);
    assert!((r.first_pass_yield.unwrap() - 2.0 / 6.0).abs() < 1e-12);
    assert_eq!(r.retries, 1);

    // Pareto: two CSR signatures at keygen, then one each, by step name.
    let pareto: Vec<(&str, &str, u64)> = r
        .pareto
        .iter()
        .map(|p| (p.step.as_str(), p.code.as_str(), p.count))
        .collect();
    assert_eq!(
        pareto,
        [
            ("keygen", "csr_bad_signature", 2),
            ("hello", "no_answer", 1),
            ("store", "board_refused", 1)
        ]
    );
    let cumulative: Vec<f64> = r.pareto.iter().map(|p| p.cumulative_pct).collect();
    assert_eq!(cumulative, [50.0, 75.0, 100.0]);

    // Cycle times of passed boards: 30 s, 40 s, 70 s.
    let cycle = r.cycle.clone().unwrap();
    assert_eq!(
        (cycle.count, cycle.median_ms, cycle.p95_ms, cycle.max_ms),
        (3, 40_000, 70_000, 70_000)
    );
    assert_eq!(r.cycle_histogram.iter().map(|b| b.count).sum::<u64>(), 3);
    // Per step, from SQL: count, max and the nearest-rank median.
    for t in &r.step_times {
        let ok = format!(
            "FROM steps s JOIN boards b ON b.id = s.board_id WHERE b.started_at >= '2026-11-23T00:00:00.000Z' AND b.started_at < '2026-11-24T00:00:00.000Z' AND s.step = '{}' AND s.outcome = 'ok'",
            t.step
        );
        let n = sql(&c, &format!("SELECT COUNT(*) {ok}"));
        assert_eq!(t.count as i64, n, "{}", t.step);
        assert_eq!(
            t.max_ms,
            sql(&c, &format!("SELECT MAX(duration_ms) {ok}")),
            "{}",
            t.step
        );
        let median_rank = (n + 1) / 2; // ceil(n / 2)
        assert_eq!(
            t.median_ms,
            sql(
                &c,
                &format!(
                    "SELECT duration_ms {ok} ORDER BY duration_ms LIMIT 1 OFFSET {}",
                    median_rank - 1
                )
            ),
            "{}",
            t.step
        );
    }
    assert_eq!(r.step_times[0].step, "hello", "in provisioning order");

    // Throughput by hour of finishing.
    let hours: Vec<(&str, u64, u64)> = r
        .throughput
        .iter()
        .map(|h| (h.hour.as_str(), h.passed, h.failed))
        .collect();
    assert_eq!(
        hours,
        [
            ("2026-11-23T06", 2, 1),
            ("2026-11-23T07", 0, 2),
            ("2026-11-23T08", 1, 1)
        ]
    );

    // Uploads and labels of the passed boards.
    assert_eq!(
        (r.uploads.enrolled, r.uploads.pending, r.uploads.parked),
        (1, 1, 1)
    );
    assert_eq!(
        (r.labels.printed, r.labels.pending, r.labels.cancelled),
        (2, 1, 0)
    );

    // The device list: every record of the day, by start, with its
    // certificate.
    assert_eq!(r.units.len(), 8);
    assert_eq!(r.units[0].guid.as_deref(), Some(G1));
    assert_eq!(r.units[0].serial.as_deref(), Some("5e00"));
    assert_eq!(r.units[0].fingerprint.as_deref(), Some("fp00"));
    assert_eq!(r.units[0].lot.as_deref(), Some(LOT_A));
    assert!(
        r.units
            .iter()
            .all(|u| u.started_at.starts_with("2026-11-23"))
    );
}

#[test]
fn lots_and_slots_narrow_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.db");
    seed(&db);
    let store = Store::open(&db).unwrap();
    let r = report(
        &store,
        ReportQuery {
            lot: Some(LOT_A.into()),
            ..day()
        },
    );
    assert_eq!(
        (r.attempted, r.passed, r.failed, r.boards, r.retries),
        (3, 2, 1, 2, 1)
    );
    assert_eq!(r.first_pass, 1);
    let r = report(
        &store,
        ReportQuery {
            slot: Some(1),
            ..day()
        },
    );
    assert_eq!(
        (r.attempted, r.passed, r.failed, r.in_progress),
        (4, 1, 2, 1)
    );
    let r = report(
        &store,
        ReportQuery {
            lot: Some("nothing".into()),
            ..day()
        },
    );
    assert_eq!(r.attempted, 0);
    assert_eq!(r.first_pass_yield, None);
    assert!(r.pareto.is_empty() && r.cycle.is_none());
    // The HTML of an empty report still renders.
    assert!(
        station::report::render::html(&r, station::report::render::Styles::Embedded)
            .unwrap()
            .contains("</html>")
    );
}

#[test]
fn the_device_list_csv_round_trips_through_a_csv_parser() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.db");
    seed(&db);
    let store = Store::open(&db).unwrap();
    let r = report(&store, day());
    let text = station::report::render::csv(&r.units);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), r.units.len());
    for (row, u) in rows.iter().zip(&r.units) {
        assert_eq!(&row[col("guid")], u.guid.as_deref().unwrap_or(""));
        assert_eq!(
            &row[col("lot")],
            u.lot.as_deref().unwrap_or(""),
            "quotes, commas and non-ASCII survive"
        );
        assert_eq!(&row[col("serial")], u.serial.as_deref().unwrap_or(""));
        assert_eq!(&row[col("operator")], u.operator.as_deref().unwrap_or(""));
        assert_eq!(row[col("slot")].parse::<u16>().unwrap(), u.slot);
        assert_eq!(&row[col("outcome")], u.status);
    }
    assert!(rows.iter().any(|r| &r[col("lot")] == LOT_A));
}

fn station(args: &[&str]) -> std::process::Output {
    Command::new(station_bin()).args(args).output().unwrap()
}

#[test]
fn the_command_line_reports_and_exports_ranges_and_shifts() {
    let (dir, cfg) = prepare_with(
        &[],
        500,
        "\n[[shift]]\nname = \"early\"\nstart = \"06:00\"\nend = \"08:00\"\n",
    );
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    seed(&cfg.database_path());
    let config = dir.path().join("station.toml");
    let conf = config.to_str().unwrap();

    let out = station(&[
        "report",
        "--config",
        conf,
        "--date",
        "2026-11-23",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["attempted"].as_u64(), v["passed"].as_u64()),
        (Some(8), Some(3))
    );

    // A shift on a date: 06:00 to 08:00 holds the first five records.
    let out = station(&[
        "report",
        "--config",
        conf,
        "--shift",
        "early",
        "--date",
        "2026-11-23",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempted"], 5);
    assert_eq!(v["query"]["title"], "shift early on 2026-11-23");

    let html = dir.path().join("day.html");
    let out = station(&[
        "report",
        "--config",
        conf,
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
        "--out",
        html.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        !dir.path().join(".day.html.partial").exists(),
        "written whole, then moved"
    );
    let nowhere = dir.path().join("no-such-folder/day.html");
    let out = station(&[
        "report",
        "--config",
        conf,
        "--date",
        "2026-11-23",
        "--out",
        nowhere.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("creating"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg") && page.contains("@media print"),
        "charts and a print stylesheet"
    );

    let out = station(&[
        "report",
        "--config",
        conf,
        "--date",
        "2026-11-23",
        "--lot",
        LOT_A,
        "--format",
        "csv",
    ]);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(reader.records().count(), 3);

    // The MES export: one JSON line per unit, with its steps.
    let out = station(&[
        "export",
        "units",
        "--config",
        conf,
        "--from",
        "2026-11-23",
        "--to",
        "2026-11-23",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["guid"], G1);
    assert_eq!(lines[0]["station"], "st-1", "the station on the record");
    assert_eq!(lines[0]["lot"], LOT_A);
    assert_eq!(lines[0]["certificate_serial"], "5e00");
    assert_eq!(lines[0]["steps"].as_array().unwrap().len(), 10);
    assert_eq!(
        lines[1]["steps"].as_array().unwrap().last().unwrap()["outcome"],
        "failed"
    );
    let out = station(&[
        "export",
        "units",
        "--config",
        conf,
        "--date",
        "2026-11-23",
        "--format",
        "csv",
    ]);
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    assert_eq!(reader.records().count(), 8);

    // Mistakes are named.
    let out = station(&["report", "--config", conf, "--shift", "late"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("station.toml defines early"));
    let out = station(&["report", "--config", conf, "--from", "23.11.2026"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a date"));
    let out = station(&["report", "--config", conf, "--format", "pdf"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose html, csv or json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_get_the_report_pages_and_operators_do_not() {
    let st = TestStation::start_with(vec![], 500, "", |cfg| seed(&cfg.database_path())).await;
    let (s, v) = st.get("/api/v1/reports?date=2026-11-23").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["attempted"], 8);
    let r = st
        .client
        .get(format!("{}/reports?date=2026-11-23&lot=B-12", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("B-12") && page.contains("<svg"));
    let r = st
        .client
        .get(format!(
            "{}/reports?date=2026-11-23&format=csv&slot=",
            st.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an empty slot field is no filter");
    assert_eq!(
        csv::Reader::from_reader(r.bytes().await.unwrap().as_ref())
            .records()
            .count(),
        8
    );
    let (s, v) = st.get("/api/v1/reports?date=2026-11-23&slot=x").await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = st.get("/api/v1/reports?shift=late").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("no shift"), "{v}");

    let operator = st
        .store()
        .create_token(
            "op",
            station::store::Role::Operator,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let r = client_with_token(&operator)
        .get(format!("{}/api/v1/reports?date=2026-11-23", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client_with_token(&operator)
        .get(format!("{}/reports?date=2026-11-23", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("This page is for the supervisor role")
    );
    let r = bare_client()
        .get(format!("{}/reports?date=2026-11-23", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed-out people are sent to sign in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_too_large_for_a_page_is_sent_to_the_export() {
    let st = TestStation::start_with(vec![], 500, "\n[reports]\npage_limit = 5\n", |cfg| {
        seed(&cfg.database_path())
    })
    .await;
    let (s, v) = st.get("/api/v1/reports?date=2026-11-23").await;
    assert_eq!(s, 400);
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("8 board records") && e.contains("station export units"),
        "{e}"
    );
    let (s, _) = st.get("/api/v1/reports?date=2026-11-23&lot=B-12").await;
    assert_eq!(s, 200, "a narrower range fits");
}

#[test]
fn exports_read_in_small_pages_are_the_same_as_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("station.db");
    seed(&db);
    let store = Store::open(&db).unwrap();
    let all = station::store::UnitFilter {
        from: "2000-01-01T00:00:00.000Z".into(),
        to: "2100-01-01T00:00:00.000Z".into(),
        lot: None,
        slot: None,
    };
    for format in ["csv", "jsonl"] {
        let mut whole = Vec::new();
        station::cli::report_cmd::export(&store, &all, format, &mut whole).unwrap();
        let mut paged = Vec::new();
        station::cli::report_cmd::export_paged(&store, &all, format, 3, &mut paged).unwrap();
        let text = String::from_utf8(paged.clone()).unwrap();
        let records = SEEDS.len();
        let lines = text.lines().count();
        if format == "csv" {
            assert_eq!(lines, records + 1, "one header, then every record:\n{text}");
        } else {
            assert_eq!(lines, records, "{text}");
        }
        assert_eq!(paged, whole, "{format}: pages of 3 give the same export");
    }
}
