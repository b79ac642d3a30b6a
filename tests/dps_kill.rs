//! A station killed with SIGKILL while draining its outbox loses and
//! doubles nothing after a restart. The connection string comes from the
//! environment, and never reaches the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::fake_dps::{FakeDps, Misbehave};
use common::*;

fn spawn(config: &std::path::Path, connection: &str, log: &std::path::Path) -> Child {
    Child(
        Command::new(station_bin())
            .args(["serve", "--config"])
            .arg(config)
            .env("STATION_DPS_CONNECTION_STRING", connection)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_draining_loses_and_doubles_nothing() {
    let fake = FakeDps::start().await;
    // Slow answers, so that the kill lands in the middle of the drain.
    fake.with(|s| s.always = Some(Misbehave::Slow(Duration::from_millis(400))));
    let section = format!(
        "\n[dps]\nendpoint = \"{}\"\nca_file = \"{}\"\nops_per_minute = 6000\nrequest_timeout_ms = 5000\nmax_backoff_ms = 1000\n",
        fake.https_endpoint(),
        fake.ca_file().display()
    );
    let (dir, cfg) = prepare_with(&[], 300, &section);
    let guids = seed_provisioned(&cfg, 60, |_, _| ());
    let config = dir.path().join("station.toml");
    let connection = fake.connection_string();

    let log1 = dir.path().join("run1.log");
    let mut first = spawn(&config, &connection, &log1);
    let mut seen = 0;
    for _ in 0..200 {
        seen = fake.with(|s| s.enrollments.len());
        if seen >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        (10..60).contains(&seen),
        "kill mid-drain, not before or after ({seen} enrolled)"
    );
    // SIGKILL: no clean-up of any kind.
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    fake.with(|s| s.always = None);
    let log2 = dir.path().join("run2.log");
    let _second = spawn(&config, &connection, &log2);
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    let mut counts = store.outbox_counts().unwrap();
    for _ in 0..300 {
        counts = store.outbox_counts().unwrap();
        if counts.enrolled == 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (counts.enrolled, counts.pending, counts.parked),
        (60, 0, 0),
        "{}",
        read(&log2)
    );
    fake.with(|s| {
        assert_eq!(s.enrollments.len(), 60);
        for g in &guids {
            let e = &s.enrollments[g];
            assert_eq!(e.writes, 1, "{g} written {} times", e.writes);
            let ledger = store.certificates(&g.parse().unwrap()).unwrap();
            assert_eq!(e.certificate_pem, ledger[0].pem);
            assert_eq!(e.body["provisioningStatus"], "disabled");
        }
    });

    // The secret key is in neither log.
    let key = connection.rsplit_once("SharedAccessKey=").unwrap().1;
    for log in [&log1, &log2] {
        let text = read(log);
        assert!(text.contains("DPS uploads enabled"), "{text}");
        assert!(
            !text.contains(key),
            "the DPS key leaked into {}",
            log.display()
        );
    }
}
