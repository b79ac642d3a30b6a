//! Station-made keys (`keygen = "station"`): the station makes the board's
//! key, sends it with KEYLOAD and forgets it. The board's certificate is
//! for that key, and the key appears nowhere the station writes: not in
//! the database, not in its log (at trace level), not in any file of its
//! data folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::secrets::{files, holders};
use common::*;
use station::store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_made_key_reaches_the_board_and_nothing_else() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let (dir, cfg) = prepare(std::slice::from_ref(&sim.device), 500);
    let config = dir.path().join("station.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + "keygen = \"station\"\n").unwrap();
    let log = dir.path().join("station.log");
    let _station = Child(
        Command::new(station_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "trace")
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The station's log says when; the database is opened only then (two
    // processes creating it at once would race on its schema).
    let mut done = None;
    for _ in 0..300 {
        if read(&log).contains("board provisioned") {
            let store = Store::open(&cfg.database_path()).unwrap();
            let guid = sim.boards()[0].guid.clone();
            done = store.board(&guid).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = done.unwrap_or_else(|| panic!("the board was not provisioned:\n{}", read(&log)));
    assert_eq!(row.status, "provisioned", "{row:?}\n{}", read(&log));
    let board = &sim.boards()[0];
    let key = board
        .loaded_key
        .expect("the board received a key with KEYLOAD");

    // The certificate is for the key the board holds.
    let store = Store::open(&cfg.database_path()).unwrap();
    let ledger = store.certificates(&board.guid).unwrap();
    let der = station::ca::pem_to_der(&ledger[0].pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let held = p256::ecdsa::SigningKey::from_slice(&key).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        held.verifying_key().to_encoded_point(false).as_bytes()
    );
    drop(store);

    // Let the station write its last words, then look everywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logged = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    assert!(
        logged.contains("TRACE")
            && (logged.contains("KEYLOAD") || logged.contains("loaded into the board")),
        "the log is at trace level and covers the key step"
    );
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    let data = dir.path().join("data");
    assert!(
        all.iter()
            .any(|p| p.starts_with(&data) && p.ends_with("station.db"))
    );
    let found = holders(&all, &key);
    assert!(found.is_empty(), "the key is in: {found:?}");
    common::secrets::assert_search_finds_a_planted(&key);
}
