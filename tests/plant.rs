//! The plant tier against a real PostgreSQL server (a private cluster per
//! test, `common/pg.rs`): stations forward every record exactly once,
//! through outages, crashes and a lost commit answer; conflicts across
//! stations; the audit chains checked in the plant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/pg_proxy.rs"]
mod pg_proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use pg::Pg;
use station::store::Store;

/// A plant database with the schema.
async fn plant_db(pg: &Pg) -> String {
    pg.create_db("plant");
    let url = pg.url("plant");
    let cfg = station::config::parse_plant_url(&url).unwrap();
    let mut client = station::plant::connect(&cfg).await.unwrap();
    station::plant::schema::migrate(&mut client).await.unwrap();
    url
}

/// A station configuration with fast simulated boards (for `--demo N`)
/// and `[plant]`.
fn write_config(dir: &Path, id: &str, line: &str, url: &str, extra: &str) -> PathBuf {
    let path = dir.join("station.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[station]
id = "{id}"
line = "{line}"
data_dir = "data"
listen = "127.0.0.1:0"

[ca]
key = "file"
certificate_file = "ca/ca.pem"
key_file = "ca/ca.key"
leaf_validity_days = 365

[jig]
timeout_ms = 1000
slow_timeout_ms = 4000
poll_ms = 100
reconnect_ms = 200

[demo]
keygen_ms = 20
flash_bytes_per_sec = 0
test_ms = 50
dwell_ms = 50
pause_ms = 100

[printer]
backend = "spool"

[plant]
database_url = "{url}"
batch = 200
{extra}
"#
        ),
    )
    .unwrap();
    path
}

/// A `station serve` process, killed when dropped.
fn serve(config: &Path, demo: Option<u16>, failpoint: Option<&str>, log: &Path) -> Child {
    let mut cmd = Command::new(station_bin());
    cmd.args(["serve", "--config"]).arg(config);
    if let Some(n) = demo {
        cmd.args(["--demo", &n.to_string()]);
    }
    cmd.env("RUST_LOG", "info,station::plant=debug")
        .env_remove("STATION_PLANT_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match failpoint {
        Some(f) => cmd.env("STATION_FAILPOINT", f),
        None => cmd.env_remove("STATION_FAILPOINT"),
    };
    Child(cmd.spawn().unwrap())
}

fn db_path(config: &Path) -> PathBuf {
    config.parent().unwrap().join("data/station.db")
}

/// Waits until the station database exists and holds `n` finished boards.
async fn wait_boards(config: &Path, n: usize, within: Duration, log: &Path) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let db = db_path(config);
        if db.exists()
            && let Ok(store) = Store::open(&db)
            && finished(&store) >= n
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} boards finished in {within:?}; log:\n{}",
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn finished(store: &Store) -> usize {
    store
        .boards(100_000)
        .unwrap()
        .iter()
        .filter(|b| b.status != "in_progress")
        .count()
}

/// Restarts the station with no slots (nothing new is made) and waits
/// until it has forwarded its whole feed.
async fn drain(config: &Path, log: &Path) {
    let _station = serve(config, None, None, log);
    let store = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = Store::open(&db_path(config)) {
                break s;
            }
            assert!(tokio::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let feed = store.plant_feed().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        if feed.lag().unwrap().entries == 0
            && read(log).contains("forwarding to the plant database")
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feed did not drain: {:?}; log:\n{}",
            feed.lag().unwrap(),
            read(log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every board record of a station, with its step count, its steps' jig
/// line figures and certificates, as one line each: from the station's
/// own database.
fn station_records(config: &Path) -> BTreeMap<i64, String> {
    let c = rusqlite::Connection::open(db_path(config)).unwrap();
    let mut st = c
        .prepare(
            "SELECT b.id, COALESCE(b.guid, ''), b.status, b.step, b.started_at, COALESCE(b.finished_at, ''),
                    (SELECT COUNT(*) FROM steps s WHERE s.board_id = b.id),
                    COALESCE((SELECT group_concat(resends || '/' || damaged, ',') FROM
                        (SELECT resends, damaged FROM steps s WHERE s.board_id = b.id ORDER BY s.id)), ''),
                    COALESCE((SELECT group_concat(serial || '/' || state, ',') FROM
                        (SELECT serial, state FROM certificates c WHERE c.board_id = b.id ORDER BY serial)), '')
             FROM boards b ORDER BY b.id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            format!(
                "{}|{}|{}|{}|{}|{}|{}|{}",
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?
            ),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

const TS: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

/// The same, from the plant database.
fn plant_records(pg: &Pg, station: &str) -> BTreeMap<i64, String> {
    let out = pg.psql(
        "plant",
        &format!(
            "SELECT b.board_id || '=' || COALESCE(b.guid, '') || '|' || b.status || '|' || b.step || '|'
                    || to_char(b.started_at AT TIME ZONE 'UTC', {TS}) || '|'
                    || COALESCE(to_char(b.finished_at AT TIME ZONE 'UTC', {TS}), '') || '|'
                    || (SELECT COUNT(*) FROM steps s WHERE s.station_id = b.station_id AND s.board_id = b.board_id) || '|'
                    || COALESCE((SELECT string_agg(COALESCE(resends::text, '?') || '/' || COALESCE(damaged::text, '?'), ',' ORDER BY step_id)
                                 FROM steps s WHERE s.station_id = b.station_id AND s.board_id = b.board_id), '') || '|'
                    || COALESCE((SELECT string_agg(serial || '/' || state, ',' ORDER BY serial) FROM certificates c
                                 WHERE c.station_id = b.station_id AND c.board_id = b.board_id), '')
             FROM boards b WHERE b.station_id = '{station}' ORDER BY b.board_id"
        ),
    );
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (id, rest) = l.split_once('=').unwrap();
            (id.parse().unwrap(), rest.to_string())
        })
        .collect()
}

/// Rows of a table per station in the station database and in the plant.
fn assert_same_counts(pg: &Pg, station: &str, config: &Path) {
    let c = rusqlite::Connection::open(db_path(config)).unwrap();
    for (local, plant) in [
        ("steps", "steps"),
        ("certificates", "certificates"),
        ("outbox", "enrollments"),
        ("labels", "labels"),
        ("audit", "audit"),
    ] {
        let n: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {local}"), [], |r| r.get(0))
            .unwrap();
        let m: i64 = pg
            .psql(
                "plant",
                &format!("SELECT COUNT(*) FROM {plant} WHERE station_id = '{station}'"),
            )
            .parse()
            .unwrap();
        assert_eq!(
            n, m,
            "{station}: {local} in the station, {plant} in the plant"
        );
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(station_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "station {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stations_feed_one_plant_exactly_once() {
    let pg = Pg::start();
    let url = plant_db(&pg).await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<PathBuf> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            write_config(
                d.path(),
                &format!("st-{i}"),
                &format!("line-{}", i % 2),
                &url,
                "",
            )
        })
        .collect();
    let logs: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("serve.log")).collect();
    {
        let _stations: Vec<Child> = configs
            .iter()
            .zip(&logs)
            .map(|(c, l)| serve(c, Some(3), None, l))
            .collect();
        for (c, l) in configs.iter().zip(&logs) {
            wait_boards(c, 12, Duration::from_secs(90), l).await;
        }
        // Killed mid-line: the feed holds what was not sent yet.
    }
    for (c, l) in configs.iter().zip(&logs) {
        drain(c, &l.with_extension("drain.log")).await;
    }
    // `station check` finds the plant database and this station's feed.
    let out = Command::new(station_bin())
        .args(["check", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("plant database")
            && l.contains("station st-0 forwards to it")),
        "{text}"
    );
    for (i, c) in configs.iter().enumerate() {
        let station = format!("st-{i}");
        let local = station_records(c);
        assert!(local.len() >= 12);
        assert_eq!(plant_records(&pg, &station), local, "{station}");
        assert_same_counts(&pg, &station, c);
    }
    // The plant report over every station adds up the stations' own.
    let from = "2000-01-01";
    let to = "2100-01-01";
    let mut sum = [0u64; 3];
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for c in &configs {
        let r: serde_json::Value = serde_json::from_str(&run_ok(&[
            "report",
            "--from",
            from,
            "--to",
            to,
            "--format",
            "json",
            "--config",
            c.to_str().unwrap(),
        ]))
        .unwrap();
        for (k, key) in ["attempted", "passed", "failed"].iter().enumerate() {
            sum[k] += r[key].as_u64().unwrap();
        }
        lines.extend(r["line_by_slot"].as_array().unwrap().iter().cloned());
    }
    let plant: serde_json::Value = serde_json::from_str(&run_ok(&[
        "plant",
        "report",
        "--from",
        from,
        "--to",
        to,
        "--format",
        "json",
        "--config",
        configs[0].to_str().unwrap(),
    ]))
    .unwrap();
    for (k, key) in ["attempted", "passed", "failed"].iter().enumerate() {
        assert_eq!(plant[key].as_u64().unwrap(), sum[k], "{key}");
    }
    // Its jig lines are the stations' own, each slot under its station.
    let key = |l: &serde_json::Value| (l["station"].to_string(), l["slot"].as_u64());
    lines.sort_by_key(key);
    let mut plant_lines = plant["line_by_slot"].as_array().unwrap().clone();
    plant_lines.sort_by_key(key);
    assert!(lines.len() >= configs.len(), "{lines:#?}");
    assert_eq!(plant_lines, lines, "the plant's jig lines");
    assert!(sum[1] >= 36);
    // One line's stations only.
    let line1: serde_json::Value = serde_json::from_str(&run_ok(&[
        "plant",
        "report",
        "--from",
        from,
        "--to",
        to,
        "--line",
        "line-1",
        "--format",
        "json",
        "--config",
        configs[0].to_str().unwrap(),
    ]))
    .unwrap();
    let st1: serde_json::Value = serde_json::from_str(&run_ok(&[
        "report",
        "--from",
        from,
        "--to",
        to,
        "--format",
        "json",
        "--config",
        configs[1].to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(line1["attempted"], st1["attempted"]);

    // An audit row edited in the plant is named by `station plant verify`.
    let ok = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    pg.psql(
        "plant",
        "UPDATE audit SET detail = '{\"edited\":true}' WHERE station_id = 'st-1' AND audit_id = 2",
    );
    let bad = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(!bad.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("st-1") && l.contains("row 2")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("st-0") && l.starts_with("ok")),
        "{text}"
    );
}

/// A station in this process with one serial slot per simulated board,
/// under its own id, forwarding to `url`.
async fn station_with(
    id: &str,
    url: &str,
    boards: Vec<station::sim::SimOptions>,
) -> (
    tempfile::TempDir,
    station::app::App,
    Vec<station::sim::PtySim>,
) {
    let sims: Vec<station::sim::PtySim> = boards
        .into_iter()
        .map(|o| station::sim::PtySim::spawn(o).unwrap())
        .collect();
    let devices: Vec<String> = sims.iter().map(|s| s.device.clone()).collect();
    let (dir, _) = prepare_with(
        &devices,
        500,
        &format!("\n[plant]\ndatabase_url = \"{url}\"\nbatch = 20\n"),
    );
    let path = dir.path().join("station.toml");
    let text = read(&path).replace("id = \"test-station\"", &format!("id = \"{id}\""));
    std::fs::write(&path, text).unwrap();
    let cfg = station::config::Config::load(&path).unwrap();
    let app = station::app::start(&cfg, false).await.unwrap();
    (dir, app, sims)
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_provisioned_on_two_stations_is_a_conflict() {
    let pg = Pg::start();
    let url = plant_db(&pg).await;
    let guid = "7d3c1f2e-1b2a-4c5d-8e9f-0a1b2c3d4e5f";
    let board = || station::sim::SimOptions {
        guid: Some(guid.parse().unwrap()),
        ..quick_board()
    };
    let (_d1, a, _s1) = station_with("line2-station", &url, vec![board()]).await;
    let (_d2, b, _s2) = station_with("line5-station", &url, vec![board()]).await;
    let g: station::ids::Guid = guid.parse().unwrap();
    wait_until(
        "both stations provisioned the board",
        Duration::from_secs(30),
        || {
            [&a, &b].iter().all(|app| {
                app.store
                    .certificates(&g)
                    .unwrap()
                    .iter()
                    .any(|c| c.state == "installed")
            })
        },
    )
    .await;
    wait_until("the plant has both certificates", Duration::from_secs(30), || {
        pg.psql(
            "plant",
            &format!("SELECT COUNT(*) FROM certificates WHERE guid = '{guid}' AND state = 'installed'"),
        ) == "2"
    })
    .await;
    // Counted by the forwarders (status, metrics) after a certificate.
    wait_until(
        "a forwarder counted the conflict",
        Duration::from_secs(40),
        || {
            [&a, &b]
                .iter()
                .any(|app| app.plant.as_ref().unwrap().status.lock().unwrap().conflicts == Some(1))
        },
    )
    .await;
    for app in [&a, &b] {
        let token = app
            .store
            .create_token(
                "sup",
                station::store::Role::Supervisor,
                "tests",
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
        let c = client_with_token(&token);
        let base = format!("http://{}", app.addr);
        let page = text(&c, format!("{base}/supervisor")).await;
        assert!(
            page.contains("live certificates from two or more stations"),
            "{page}"
        );
        assert!(
            page.contains(guid) && page.contains("line5-station"),
            "{page}"
        );
        let plant: serde_json::Value = c
            .get(format!("{base}/api/v1/plant"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(plant["configured"], true);
        assert_eq!(plant["connected"], true, "{plant}");
    }
    let metrics: Vec<String> =
        futures_util::future::join_all([&a, &b].iter().map(|app| async move {
            client_with_token("none")
                .get(format!("http://{}/metrics", app.addr))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }))
        .await;
    assert!(
        metrics
            .iter()
            .any(|m| m.contains("station_plant_conflicts 1")),
        "{metrics:?}"
    );
    assert!(
        metrics
            .iter()
            .all(|m| m.contains("station_plant_connected 1")),
        "{metrics:?}"
    );

    // A GUID made on another station: this one has no record, the plant
    // says where.
    let (_d3, c, _s3) = station_with("line7-station", &url, vec![]).await;
    let token = c
        .store
        .create_token(
            "act",
            station::store::Role::Activator,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let r = client_with_token(&token)
        .get(format!("http://{}/api/v1/devices/{guid}", c.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("line2-station") && text.contains("line5-station"),
        "{text}"
    );
    let page = client_with_token(&token)
        .get(format!("http://{}/devices/{guid}", c.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("the plant knows it from station line2-station"),
        "{page}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "qa", "line-0", &url, "");
    let text = run_ok(&["plant", "conflicts", "--config", cfg.to_str().unwrap()]);
    assert!(text.contains(guid), "{text}");
    assert!(
        text.contains("line2-station") && text.contains("line5-station"),
        "{text}"
    );
    let json = run_ok(&[
        "plant",
        "conflicts",
        "--format",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
}

/// An API client for a station process, with a token of `role` made in
/// its database.
fn api_for(config: &Path, name: &str, role: station::store::Role) -> reqwest::Client {
    let token = Store::open(&db_path(config))
        .unwrap()
        .create_token(name, role, "tests", time::OffsetDateTime::now_utc())
        .unwrap();
    client_with_token(&token)
}

/// The body of a GET.
async fn text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The station's address, from its log.
async fn address(log: &Path) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = read(log);
        if let Some(line) = text.lines().find(|l| l.contains("station running")) {
            let at = line.find("addr=").unwrap() + 5;
            return line[at..].split_whitespace().next().unwrap().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no address in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finished boards after `wait`, and how many finished during it.
async fn count_during(config: &Path, wait: Duration) -> (usize, f64) {
    let store = Store::open(&db_path(config)).unwrap();
    let before = finished(&store);
    let t = tokio::time::Instant::now();
    tokio::time::sleep(wait).await;
    let after = finished(&store);
    (after, (after - before) as f64 / t.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_doubled_through_an_outage_crashes_and_a_lost_commit() {
    let pg = Pg::start();
    plant_db(&pg).await;
    // The station reaches PostgreSQL through a proxy that can lose the
    // answer to a COMMIT.
    let proxy = pg_proxy::LostCommitProxy::start(pg.port()).await;
    let url = format!("postgres://plant@127.0.0.1:{}/plant", proxy.port());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "st-f", "line-f", &url, "");
    let log = dir.path().join("serve.log");
    let station = serve(&config, Some(4), None, &log);
    wait_boards(&config, 8, Duration::from_secs(60), &log).await;
    let base = address(&log).await;
    let api = api_for(&config, "qa", station::store::Role::Operator);
    let plant_status = async || -> serde_json::Value {
        api.get(format!("http://{base}/api/v1/plant"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };

    // The line's pace with the plant database up, then down for a minute.
    let (_, with_plant) = count_during(&config, Duration::from_secs(20)).await;
    pg.stop();
    let waits_before = read(&log).matches("plant forwarding").count();
    let (_, during_outage) = count_during(&config, Duration::from_secs(60)).await;
    // No hot loop: a wait that doubles up to 30 s, so a handful of
    // attempts in the minute.
    let attempts = read(&log).matches("plant forwarding").count() - waits_before;
    assert!(
        (1..=15).contains(&attempts),
        "{attempts} attempts in a minute:\n{}",
        read(&log)
    );
    let down = plant_status().await;
    assert_eq!(down["connected"], false, "{down}");
    assert!(down["lag_records"].as_i64().unwrap() > 0, "{down}");
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("plant database"),
        "{down}"
    );
    assert!(!down.to_string().contains("password"), "{down}");
    // The line view says so, in words.
    let page = text(&api, format!("http://{base}/")).await;
    assert!(
        page.contains("Plant database not reached since") && page.contains("the line goes on"),
        "{page}"
    );
    let metrics = text(&api, format!("http://{base}/metrics")).await;
    assert!(metrics.contains("station_plant_connected 0"), "{metrics}");
    println!(
        "line throughput: {with_plant:.2} boards/s with the plant database, {during_outage:.2} boards/s while it was stopped"
    );
    // The line never waits for the plant: the same pace (the boards' own
    // timing sets it), give or take a loaded machine.
    assert!(
        during_outage >= 0.8 * with_plant,
        "{during_outage:.2} boards/s during the outage against {with_plant:.2} without"
    );
    pg.start_again();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while plant_status().await["connected"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reconnected:\n{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A commit whose answer never arrives.
    proxy.arm();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while proxy.fired() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no commit went through the proxy"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(station);

    // Three crashes in the middle of a batch: upserts sent, no commit.
    for i in 0..3 {
        let crash_log = dir.path().join(format!("crash-{i}.log"));
        let mut c = serve(&config, Some(4), Some("plant_before_commit"), &crash_log);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = c.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no crash:\n{}",
                read(&crash_log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(!status.success());
        assert!(read(&crash_log).contains("failpoint plant_before_commit"));
    }
    // And a SIGKILL wherever it lands, with a backlog to send.
    {
        let kill_log = dir.path().join("kill.log");
        let _c = serve(&config, Some(4), None, &kill_log);
        address(&kill_log).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    drain(&config, &dir.path().join("drain.log")).await;
    let local = station_records(&config);
    assert_eq!(plant_records(&pg, "st-f"), local);
    assert_same_counts(&pg, "st-f", &config);
    // Every change is in: nothing waits in the feed.
    let lag = Store::open(&db_path(&config))
        .unwrap()
        .plant_feed()
        .unwrap()
        .lag()
        .unwrap();
    assert_eq!(lag.entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stations_share_one_dps_budget() {
    let pg = Pg::start();
    let url = plant_db(&pg).await;
    let fake = common::fake_dps::FakeDps::start().await;
    const BUDGET: u32 = 60;
    // Each station alone would use 1,000 a minute: only the shared budget
    // holds them to 60 together.
    let extra = format!(
        "{}\n[plant]\ndatabase_url = \"{url}\"\ndps_ops_per_minute = {BUDGET}\n",
        dps_section(&fake, 1000)
    );
    let mut stations = Vec::new();
    for i in 0..3 {
        let (dir, _) = prepare_with(&[], 500, &extra);
        let path = dir.path().join("station.toml");
        let text = read(&path).replace("id = \"test-station\"", &format!("id = \"budget-{i}\""));
        std::fs::write(&path, text).unwrap();
        let cfg = station::config::Config::load(&path).unwrap();
        // A backlog of 200 enrollments each: 20 bulk calls.
        seed_provisioned(&cfg, 200, |_, _| ());
        stations.push((dir, cfg));
    }
    let mut apps = Vec::new();
    for (_, cfg) in &stations {
        apps.push(station::app::start(cfg, false).await.unwrap());
    }
    // Measured at the fake, over 30 s from its first call.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fake.with(|s| s.log.is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "no DPS call");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = fake.with(|s| s.log[0].at);
    let window = Duration::from_secs(30);
    tokio::time::sleep_until((first + window).into()).await;
    let calls = fake.with(|s| s.log.iter().filter(|l| l.at < first + window).count());
    let allowed = f64::from(BUDGET) * window.as_secs_f64() / 60.0;
    println!("{calls} DPS calls in {window:?} from three stations sharing {BUDGET} a minute");
    // Within the budget (plus the bucket's burst of one), and using at
    // least 90 % of it.
    assert!(
        calls as f64 <= allowed + 1.0,
        "{calls} calls, allowed {allowed}"
    );
    assert!(
        calls as f64 >= 0.9 * allowed,
        "{calls} calls, at least {}",
        0.9 * allowed
    );
    // Every station took its share: none was starved.
    let by_station: Vec<usize> = apps
        .iter()
        .map(|a| a.outbox.lock().unwrap().calls.values().sum::<u64>() as usize)
        .collect();
    assert!(by_station.iter().all(|n| *n >= 3), "{by_station:?}");
    for a in &apps {
        assert_eq!(a.outbox.lock().unwrap().budget, "shared");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_never_shown() {
    let pg = Pg::start();
    plant_db(&pg).await;
    const SECRET: &str = "pw-Secret-42";
    pg.add_password_role("station", SECRET);
    let good = format!("postgres://station:{SECRET}@127.0.0.1:{}/plant", pg.port());
    let bad = format!(
        "postgres://station:wrong-{SECRET}@127.0.0.1:{}/plant",
        pg.port()
    );
    let dir = tempfile::tempdir().unwrap();
    // The file names a database without a password; the environment's
    // URL (with the password) wins.
    let config = write_config(
        dir.path(),
        "st-pw",
        "line-pw",
        "postgres://nobody@127.0.0.1:1/none",
        "",
    );
    let log = dir.path().join("serve.log");
    let run = |url: &str, log: &Path| {
        Child(
            Command::new(station_bin())
                .args(["serve", "--demo", "1", "--config"])
                .arg(&config)
                .env("STATION_PLANT_DATABASE_URL", url)
                .env("RUST_LOG", "debug")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    {
        let _s = run(&good, &log);
        let base = address(&log).await;
        let api = api_for(&config, "admin", station::store::Role::Admin);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v: serde_json::Value = api
                .get(format!("http://{base}/api/v1/plant"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["connected"] == true {
                assert!(!v.to_string().contains(SECRET));
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{v}\n{}",
                read(&log)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let cfg = text(&api, format!("http://{base}/api/v1/config")).await;
        assert!(
            cfg.contains(&format!("postgres://station@127.0.0.1:{}/plant", pg.port())),
            "{cfg}"
        );
        assert!(!cfg.contains(SECRET), "{cfg}");
    }
    assert!(!read(&log).contains(SECRET), "the log shows the password");

    // A wrong password: the station runs, says what is wrong, never what
    // it tried.
    let bad_log = dir.path().join("bad.log");
    {
        let _s = run(&bad, &bad_log);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !read(&bad_log).contains("refused the user or password") {
            assert!(tokio::time::Instant::now() < deadline, "{}", read(&bad_log));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(!read(&bad_log).contains(SECRET), "{}", read(&bad_log));
    let out = Command::new(station_bin())
        .args(["check", "--config"])
        .arg(&config)
        .env("STATION_PLANT_DATABASE_URL", &bad)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("refused the user or password")),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    let out = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&config)
        .env("STATION_PLANT_DATABASE_URL", &bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && text.contains("refused the user or password"),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
}

/// A CA and a certificate it signed for 127.0.0.1 (PEM): the CA, the
/// server's certificate and its key.
fn tls_files() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Plant database CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let server =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
    (ca.pem(), server.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plant_database_over_tls() {
    let pg = Pg::start();
    let url = plant_db(&pg).await;
    let (ca, cert, key) = tls_files();
    pg.require_ssl(&cert, &key);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("plant-ca.pem"), &ca).unwrap();
    let (other_ca, _, _) = tls_files();
    std::fs::write(dir.path().join("other-ca.pem"), &other_ca).unwrap();

    // Without the CA: the database takes no plain connection, and says so.
    let plain = write_config(dir.path(), "st-tls", "line-t", &url, "");
    let out = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&plain)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("accepts only TLS") && text.contains("[plant] ca_file"),
        "{text}"
    );

    // Another CA's certificate is not trusted.
    let wrong = write_config(
        dir.path(),
        "st-tls",
        "line-t",
        &url,
        "ca_file = \"other-ca.pem\"",
    );
    let out = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&wrong)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(text.contains("failed the TLS check"), "{text}");

    // With the plant's CA: the station forwards over TLS.
    let config = write_config(
        dir.path(),
        "st-tls",
        "line-t",
        &url,
        "ca_file = \"plant-ca.pem\"",
    );
    let log = dir.path().join("serve.log");
    {
        let _s = serve(&config, Some(1), None, &log);
        wait_until("boards in the plant over TLS", Duration::from_secs(60), || {
            pg.psql("plant", "SELECT count(*) FROM boards WHERE station_id = 'st-tls' AND status = 'provisioned'")
                .parse::<i64>()
                .unwrap()
                >= 2
        })
        .await;
    }
    // The server saw TLS from the station.
    assert!(
        read(&log).contains("forwarding to the plant database"),
        "{}",
        read(&log)
    );
    let out = Command::new(station_bin())
        .args(["plant", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plant_database_restored_from_an_older_copy_gets_everything_back() {
    let pg = Pg::start();
    let url = plant_db(&pg).await;
    let (_d, a, _s) = station_with("st-r", &url, vec![quick_board(), quick_board()]).await;
    let in_plant = || {
        pg.psql(
            "plant",
            "SELECT (SELECT count(*) FROM boards WHERE station_id = 'st-r' AND status = 'provisioned')
                 || '/' || (SELECT count(*) FROM certificates WHERE station_id = 'st-r' AND state = 'installed')",
        )
    };
    wait_until("two boards in the plant", Duration::from_secs(30), || {
        in_plant() == "2/2"
    })
    .await;
    // The plant database goes back to a copy from before this station's
    // records (a restore): they and its cursor are gone.
    pg.psql(
        "plant",
        "DELETE FROM boards WHERE station_id = 'st-r'; DELETE FROM steps WHERE station_id = 'st-r';
         DELETE FROM certificates WHERE station_id = 'st-r'; DELETE FROM audit WHERE station_id = 'st-r';
         UPDATE plant_stations SET last_seq = 0 WHERE station_id = 'st-r'",
    );
    pg.stop();
    pg.start_again();
    wait_until(
        "the station sent everything again",
        Duration::from_secs(60),
        || in_plant() == "2/2",
    )
    .await;
    assert_eq!(a.store.plant_feed().unwrap().lag().unwrap().entries, 0);
    let audit: i64 = pg
        .psql(
            "plant",
            "SELECT count(*) FROM audit WHERE station_id = 'st-r'",
        )
        .parse()
        .unwrap();
    assert!(audit >= 2);
}
