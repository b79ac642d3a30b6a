//! A real crash: the station process aborts right after a certificate is
//! committed to the ledger and before any byte of it reaches the board. The
//! restarted station finishes that board with the same certificate.

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
) -> Child {
    let mut cmd = Command::new(station_bin());
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match failpoint {
        Some(f) => cmd.env("STATION_FAILPOINT", f),
        None => cmd.env_remove("STATION_FAILPOINT"),
    };
    Child(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_ledger_commit_resumes_with_the_same_certificate() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let (dir, cfg) = prepare(std::slice::from_ref(&sim.device), 500);
    let config = dir.path().join("station.toml");

    // First run: dies at the failpoint.
    let log1 = dir.path().join("run1.log");
    let mut first = spawn_station(&config, Some("after_ledger_commit"), &log1);
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
    assert!(read(&log1).contains("failpoint after_ledger_commit"));

    // The ledger holds the certificate; the board holds nothing yet.
    let store = Store::open(&cfg.database_path()).unwrap();
    let guid: Guid = sim.boards()[0].guid.clone();
    let ledger = store.certificates(&guid).unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, "issued");
    assert!(
        sim.boards()[0].stored.is_empty(),
        "no byte of the certificate reached the board"
    );
    let serial = ledger[0].serial.clone();

    // Second run: resumes and finishes with the same certificate.
    let log2 = dir.path().join("run2.log");
    let _second = spawn_station(&config, None, &log2);
    let mut done = None;
    for _ in 0..300 {
        if let Some(b) = store.board(&guid).unwrap()
            && b.status != "in_progress"
        {
            done = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let board = done.unwrap_or_else(|| panic!("not finished; log:\n{}", read(&log2)));
    assert_eq!(board.status, "provisioned", "{board:?}\n{}", read(&log2));
    let ledger = store.certificates(&guid).unwrap();
    assert_eq!(ledger.len(), 1, "no second certificate: {ledger:?}");
    assert_eq!(ledger[0].serial, serial);
    assert_eq!(ledger[0].state, "installed");
    assert_eq!(
        store.boards(10).unwrap().len(),
        1,
        "the same board record was resumed"
    );

    // The board stored exactly the ledger's certificate.
    let b = &sim.boards()[0];
    assert_eq!(b.stored[0], pem_der(&ledger[0].pem));
    assert!(read(&log2).contains("resuming with the certificate already in the ledger"));
    // The interrupted issue step is on record as such.
    let steps = store.steps(board.id).unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s.step == "issue" && s.outcome.as_deref() == Some("interrupted")),
        "{steps:#?}"
    );
}
