//! Station-made keys (`keygen = "station"`): the station makes the board's
//! key, sends it with KEYLOAD and forgets it. The board's certificate is
//! for that key, and the key appears nowhere the station writes: not in
//! the database, not in its log (at trace level), not in any file of its
//! data folder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use station::store::Store;

/// Every way the key could be written down: raw, hex (either case),
/// base64 (standard and URL-safe) and PKCS#8-free DER.
fn spellings(key: &[u8; 32]) -> Vec<(String, Vec<u8>)> {
    let std = base64::engine::general_purpose::STANDARD.encode(key);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    vec![
        ("raw".into(), key.to_vec()),
        ("hex".into(), hex::encode(key).into_bytes()),
        ("HEX".into(), hex::encode_upper(key).into_bytes()),
        (
            "base64".into(),
            std.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("base64url".into(), url.into_bytes()),
    ]
}

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

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
    // The test can find what it looks for: a folder with the key written
    // in each spelling is found by the same search, in every spelling.
    let probe = tempfile::tempdir().unwrap();
    for (how, needle) in spellings(&key) {
        let mut bytes = b"x".to_vec();
        bytes.extend(&needle);
        bytes.extend(b"y");
        std::fs::write(probe.path().join(how), bytes).unwrap();
    }
    let mut probes = Vec::new();
    files(probe.path(), &mut probes);
    // Each file is found by its own spelling. (Two spellings can be the
    // same text: base64 without '+' or '/' is also base64url, a quarter
    // of random keys; so count the files found, not the matches.)
    let found = holders(&probes, &key);
    for (how, _) in spellings(&key) {
        assert!(
            found.iter().any(|(h, p)| *h == how && p.ends_with(&how)),
            "{how} not found: {found:?}"
        );
    }
}

/// Which files hold the key, and in which spelling.
fn holders(paths: &[std::path::PathBuf], key: &[u8; 32]) -> Vec<(String, std::path::PathBuf)> {
    let mut found = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).unwrap();
        for (how, needle) in spellings(key) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_slice()) {
                found.push((how, path.clone()));
            }
        }
    }
    found
}
