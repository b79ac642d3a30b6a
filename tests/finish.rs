//! The end of a board's visit, persisted before it is acted on: a station
//! process whose record of a passed board fails (`fail:complete`, as a
//! full disk) shows no PASS, tells the jig FAIL, and after a restart
//! finishes the board with the same certificate; one killed between the
//! record and FINISH (`before_finish`) tells the jig after a restart, and
//! the board is provisioned exactly once, with one enrollment and one
//! label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use station::ids::Guid;
use station::store::Store;

fn spawn_station(
    config: &std::path::Path,
    failpoint: Option<&str>,
    log: &std::path::Path,
    out: &std::path::Path,
) -> Child {
    let mut cmd = Command::new(station_bin());
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .stdin(Stdio::null());
    match failpoint {
        Some(f) => cmd.env("STATION_FAILPOINT", f),
        None => cmd.env_remove("STATION_FAILPOINT"),
    };
    Child(cmd.spawn().unwrap())
}

/// The station's address, once it prints it.
async fn address(out: &std::path::Path, log: &std::path::Path) -> String {
    for _ in 0..300 {
        if let Some(a) = read(out)
            .lines()
            .find_map(|l| l.split(" listening on ").nth(1).map(str::to_string))
        {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the station did not start: {}", read(log));
}

/// Waits for the store's record of `guid` to leave `in_progress`, or for
/// `until` to hold of it.
async fn wait_record(
    store: &Store,
    guid: &Guid,
    until: impl Fn(&station::store::BoardRow) -> bool,
    log: &std::path::Path,
) -> station::store::BoardRow {
    for _ in 0..300 {
        if let Some(b) = store.board(guid).unwrap()
            && until(&b)
        {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the record never got there: {:?}\n{}",
        store.board(guid).unwrap(),
        read(log)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_fails_shows_no_pass_and_nothing_is_lost_after_a_restart() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let (dir, cfg) = prepare(std::slice::from_ref(&sim.device), 500);
    let config = dir.path().join("station.toml");
    let token = Store::open(&cfg.database_path())
        .unwrap()
        .create_token(
            "tests",
            station::store::Role::Admin,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let api = client_with_token(&token);
    let (log1, out1) = (dir.path().join("run1.log"), dir.path().join("run1.out"));
    let first = spawn_station(&config, Some("fail:complete"), &log1, &out1);
    let base = address(&out1, &log1).await;

    // The slot shows the failure, never PASS.
    let mut tile = serde_json::Value::Null;
    for _ in 0..300 {
        let slots: serde_json::Value = api
            .get(format!("{base}/api/v1/slots"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tile = slots[0].clone();
        if tile["state"] != "provisioning" && tile["state"] != "empty" && tile["state"] != "testing"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tile["state"], "failed", "{tile:#}\n{}", read(&log1));
    assert_eq!(tile["error_code"], "not_recorded", "{tile:#}");
    assert!(
        tile["error"].as_str().unwrap().contains("nothing was lost"),
        "{tile:#}"
    );
    let guid: Guid = sim.boards()[0].guid.clone();
    assert_eq!(
        sim.boards()[0].finishes,
        vec![false],
        "the jig was told FAIL, never PASS"
    );
    let store = Store::open(&cfg.database_path()).unwrap();
    let record = store.board(&guid).unwrap().unwrap();
    assert_eq!(record.status, "in_progress", "the attempt stays open");
    let ledger = store.certificates(&guid).unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, "issued", "not abandoned");
    assert_eq!(store.outbox_counts().unwrap().pending, 0);
    let labels = store.label_counts().unwrap();
    assert_eq!(labels.pending + labels.printed, 0);
    drop(first);

    // Restarted with a working disk: the same certificate, one record,
    // one enrollment, one label, and the jig told PASS.
    let (log2, out2) = (dir.path().join("run2.log"), dir.path().join("run2.out"));
    let _second = spawn_station(&config, None, &log2, &out2);
    let record = wait_record(&store, &guid, |b| b.status != "in_progress", &log2).await;
    assert_eq!(record.status, "provisioned", "{}", read(&log2));
    let again = store.certificates(&guid).unwrap();
    assert_eq!(again.len(), 1, "no second certificate: {again:?}");
    assert_eq!(again[0].serial, ledger[0].serial);
    assert_eq!(again[0].state, "installed");
    assert_eq!(store.boards(10).unwrap().len(), 1, "one record");
    assert_eq!(store.outbox_counts().unwrap().pending, 1, "one enrollment");
    let labels = store.label_counts().unwrap();
    assert_eq!(labels.pending + labels.printed, 1, "one label");
    for _ in 0..50 {
        if sim.boards()[0].finishes.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.boards()[0].finishes, vec![false, true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_record_and_finish_the_board_is_provisioned_once() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let (dir, cfg) = prepare(std::slice::from_ref(&sim.device), 500);
    let config = dir.path().join("station.toml");
    let (log1, out1) = (dir.path().join("run1.log"), dir.path().join("run1.out"));
    let mut first = spawn_station(&config, Some("before_finish"), &log1, &out1);
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = first.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the station did not reach the failpoint"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(!status.success(), "aborted, not a clean exit");
    assert!(read(&log1).contains("failpoint before_finish"));

    // Recorded with its jobs; the jig heard nothing.
    let store = Store::open(&cfg.database_path()).unwrap();
    let guid: Guid = sim.boards()[0].guid.clone();
    let record = store.board(&guid).unwrap().unwrap();
    assert_eq!(record.status, "provisioned");
    assert!(sim.boards()[0].finishes.is_empty());
    assert_eq!(store.outbox_counts().unwrap().pending, 1);
    let labels = store.label_counts().unwrap();
    assert_eq!(labels.pending + labels.printed, 1);

    // Restarted: the same record is told, nothing is made twice.
    let (log2, out2) = (dir.path().join("run2.log"), dir.path().join("run2.out"));
    let _second = spawn_station(&config, None, &log2, &out2);
    for _ in 0..300 {
        if !sim.boards()[0].finishes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sim.boards()[0].finishes, vec![true], "{}", read(&log2));
    let steps = wait_record(
        &store,
        &guid,
        |b| {
            store
                .steps(b.id)
                .unwrap()
                .iter()
                .any(|s| s.step == "finish" && s.outcome.as_deref() == Some("ok"))
        },
        &log2,
    )
    .await;
    assert_eq!(steps.status, "provisioned");
    assert_eq!(store.boards(10).unwrap().len(), 1, "one record");
    assert_eq!(store.certificates(&guid).unwrap().len(), 1);
    assert_eq!(store.outbox_counts().unwrap().pending, 1, "one enrollment");
    let labels = store.label_counts().unwrap();
    assert_eq!(labels.pending + labels.printed, 1, "one label");
    assert!(
        !store
            .steps(steps.id)
            .unwrap()
            .iter()
            .any(|s| s.step == "keygen" && s.started_at > record.finished_at.clone().unwrap()),
        "no key made again"
    );
}
