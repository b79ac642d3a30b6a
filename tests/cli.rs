//! The `station` binary as an operator uses it: the demo, `check`, `ca`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn station(args: &[&str]) -> std::process::Output {
    Command::new(station_bin()).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_provisions_boards_with_the_reference_config() {
    let dir = tempfile::tempdir().unwrap();
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("station.toml");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let log = dir.path().join("demo.log");
    let out = dir.path().join("demo.out");
    let _child = Child(
        Command::new(station_bin())
            .args(["serve", "--demo", "2", "--listen", &listen, "--config"])
            .arg(&reference)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // The demo prints a sign-in and an API token of its own.
    let token = output_line(&out, &log, "no demo token", |l| {
        l.strip_prefix("demo API token: ").map(str::to_string)
    })
    .await;
    assert!(read(&out).contains("demo sign-in: user name demo, password "));
    let client = client_with_token(&token);
    let mut provisioned = 0;
    for _ in 0..300 {
        if let Ok(r) = client
            .get(format!("http://{listen}/api/v1/boards"))
            .send()
            .await
        {
            let boards: Vec<serde_json::Value> = r.json().await.unwrap();
            provisioned = boards
                .iter()
                .filter(|b| b["status"] == "provisioned")
                .count();
            if provisioned >= 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        provisioned >= 3,
        "only {provisioned} provisioned; log:\n{}",
        read(&log)
    );
    let text = read(&log);
    assert!(
        text.contains("SIMULATED"),
        "a station with simulated boards says so"
    );
    assert!(text.contains("creating a new one for the demo"));
    // The CA made for the demo is owner-only.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("data/ca/factory-ca.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn check_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, config_text(&["/dev/no-such-jig".to_string()], 200)).unwrap();
    let out = station(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("ok       configuration"), "{text}");
    assert!(
        text.contains("PROBLEM  factory CA") && text.contains("station ca init"),
        "{text}"
    );
    assert!(
        text.contains("PROBLEM  slot 1 on /dev/no-such-jig"),
        "{text}"
    );
    assert!(
        text.contains("WARNING  [dps] id_scope is not set"),
        "{text}"
    );
    std::fs::write(
        &cfg,
        config_text(&["/dev/no-such-jig".to_string()], 200)
            + "\n[dps]\nid_scope = \"0ne00A1B2C3\"\n",
    )
    .unwrap();
    let out = station(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ok       provisioning settings for the boards: global.azure-devices-provisioning.net with ID scope 0ne00A1B2C3")
            && !text.contains("id_scope is not set"),
        "{text}"
    );
    std::fs::write(&cfg, config_text(&["/dev/no-such-jig".to_string()], 200)).unwrap();

    let out = station(&["ca", "init", "--config", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = station(&["ca", "init", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = station(&["ca", "show", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("subject:") && text.contains("-----BEGIN CERTIFICATE-----"),
        "{text}"
    );

    // A key readable by others is refused, with the fix.
    let key = dir.path().join("data/ca/ca.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = station(&["check", "--config", cfg.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("chmod 600"));

    // A bad configuration names the file and key.
    std::fs::write(
        &cfg,
        config_text(&[], 200).replace("attempts = 8", "attempts = 99"),
    )
    .unwrap();
    let out = station(&["check", "--config", cfg.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("station.toml: jig.attempts: 99 must be between 1 and 10"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_preflights_a_live_jig() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let (dir, _cfg) = prepare(std::slice::from_ref(&sim.device), 500);
    let cfg = dir.path().join("station.toml");
    let out =
        tokio::task::spawn_blocking(move || station(&["check", "--config", cfg.to_str().unwrap()]))
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("jig answers"), "{text}");
    assert!(
        text.contains("ok       label template built-in reference (60 x 30 mm at 8 dots/mm)"),
        "{text}"
    );
    assert!(text.contains("ok       printer spool "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_printer_with_a_problem() {
    use common::fake_zebra::{FakeZebra, Status};
    let zebra = FakeZebra::start(Status::HeadOpen).await;
    let (dir, _cfg) = prepare_with(&[], 500, &zebra.section());
    let cfg = dir.path().join("station.toml");
    let out =
        tokio::task::spawn_blocking(move || station(&["check", "--config", cfg.to_str().unwrap()]))
            .await
            .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "PROBLEM  printer: printer {} has its head open",
            zebra.addr
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_runs_a_board_for_another_process() {
    // A pseudo-terminal pair: the station side here, the board side given
    // to `station simulate` by path.
    use tokio_serial::SerialPort;
    let (jig_end, board_end) = tokio_serial::SerialStream::pair().unwrap();
    let board_path = board_end.name().unwrap();
    let mut child = Child(
        Command::new(station_bin())
            .args([
                "simulate",
                "--device",
                &board_path,
                "--guid",
                "0a1b2c3d-0000-4000-8000-0000000000bb",
                "--test-ms",
                "10",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut link =
        station::jig::FramedLink::new(jig_end, "test", station::jig::LinkTiming::default(), 9);
    use station::jig::JigLink;
    let mut id = None;
    for _ in 0..50 {
        if let Ok(a) = link.call(&station::jig::Request::Ident).await {
            id = Some(station::jig::protocol::parse_identity(&a).unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        id.unwrap().guid.as_str(),
        "0a1b2c3d-0000-4000-8000-0000000000bb"
    );
    drop(board_end);
    let _ = child.0.kill();
}

#[test]
fn audit_verify_and_export() {
    let (dir, cfg) = prepare(&[], 300);
    seed_provisioned(&cfg, 2, |_, _| ());
    let config = dir.path().join("station.toml");
    let c = config.to_str().unwrap();
    let out = station(&["audit", "verify", "--config", c]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 2 rows"));

    let export = dir.path().join("audit.jsonl");
    let out = station(&[
        "audit",
        "export",
        "--config",
        c,
        "--out",
        export.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = read(&export)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["action"], "certificate_issued");
    assert_eq!(lines[1]["prev_hash"], lines[0]["hash"]);

    // Someone edits the first row behind the station's back.
    let db = rusqlite::Connection::open(cfg.database_path()).unwrap();
    db.execute_batch(
        "DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'nobody' WHERE id = 1;",
    )
    .unwrap();
    drop(db);
    let out = station(&["audit", "verify", "--config", c]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BROKEN at row 1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn station_with_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(station_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn users_and_tokens_from_the_command_line() {
    let (dir, _cfg) = prepare(&[], 300);
    let c = dir.path().join("station.toml");
    let c = c.to_str().unwrap();
    let out = station_with_stdin(
        &[
            "user", "add", "ana", "--role", "operator", "--badge", "B-42", "--pin", "--config", c,
        ],
        "4711\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = station_with_stdin(
        &[
            "user",
            "add",
            "sam",
            "--role",
            "supervisor",
            "--password",
            "--config",
            c,
        ],
        "a long password\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = station_with_stdin(
        &[
            "user",
            "add",
            "eve",
            "--role",
            "root",
            "--password",
            "--config",
            c,
        ],
        "a long password\n",
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("operator, supervisor or admin"));

    let out = station(&["user", "list", "--config", c]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ana") && text.contains("sam") && !text.contains("4711"),
        "{text}"
    );
    assert!(
        station(&["user", "disable", "ana", "--config", c])
            .status
            .success()
    );
    assert!(
        String::from_utf8_lossy(&station(&["user", "list", "--config", c]).stdout)
            .contains("disabled")
    );
    assert!(
        station_with_stdin(&["user", "set-pin", "ana", "--config", c], "9876\n")
            .status
            .success()
    );

    let out = station(&[
        "token",
        "create",
        "--role",
        "supervisor",
        "--name",
        "mes",
        "--config",
        c,
    ]);
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("st_"));
    let db = rusqlite::Connection::open(dir.path().join("data/station.db")).unwrap();
    let stored: String = db
        .query_row("SELECT token_hash FROM api_tokens", [], |r| r.get(0))
        .unwrap();
    assert_ne!(stored, token);

    let list =
        String::from_utf8_lossy(&station(&["token", "list", "--config", c]).stdout).to_string();
    assert!(
        list.contains("mes") && list.contains("live") && !list.contains(&token),
        "{list}"
    );
    assert!(
        station(&["token", "revoke", "mes", "--config", c])
            .status
            .success()
    );
    assert!(
        String::from_utf8_lossy(&station(&["token", "list", "--config", c]).stdout)
            .contains("revoked")
    );
    assert!(
        !station(&["token", "revoke", "mes", "--config", c])
            .status
            .success(),
        "nothing left to revoke"
    );

    let out = station(&["audit", "verify", "--config", c]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("intact: 6 rows"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn audit_verify_names_a_deleted_row() {
    let (dir, cfg) = prepare(&[], 300);
    seed_provisioned(&cfg, 3, |_, _| ());
    let c = dir.path().join("station.toml");
    let db = rusqlite::Connection::open(cfg.database_path()).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE id = 2;")
        .unwrap();
    drop(db);
    let out = station(&["audit", "verify", "--config", c.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("BROKEN at row 3") && text.contains("missing (deleted)"),
        "{text}"
    );
}

#[test]
fn outbox_list_and_retry_from_the_command_line() {
    let (dir, cfg) = prepare(&[], 300);
    let guids = seed_provisioned(&cfg, 2, |_, _| ());
    let c = dir.path().join("station.toml");
    let c = c.to_str().unwrap();
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    let job = store.due_jobs(1).unwrap()[0].id;
    store
        .park(
            &[job],
            "DPS refused the enrollment (400: bad)",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();

    let out = station(&["outbox", "list", "--config", c]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with("pending 1  enrolled 0  parked 1"),
        "{text}"
    );
    assert!(
        text.contains("parked") && text.contains(&guids[0]) && text.contains("400: bad"),
        "{text}"
    );
    let out = station(&["outbox", "list", "--state", "lost", "--config", c]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("choose pending, enrolled or parked"));

    let retries = store.retry_count().unwrap();
    let out = station(&["outbox", "retry", "--config", c]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 parked job(s) queued again"));
    assert_eq!(store.outbox_counts().unwrap().pending, 2);
    assert_eq!(
        store.retry_count().unwrap(),
        retries + 1,
        "a paused uploader in another process sees it"
    );
    let row = store
        .audit_rows()
        .unwrap()
        .into_iter()
        .find(|r| r.action == "outbox_retry")
        .unwrap();
    assert!(row.actor.starts_with("cli:"), "{}", row.actor);
    assert!(
        !station(&["outbox", "retry", "not-a-guid", "--config", c])
            .status
            .success()
    );
}

#[test]
fn the_ca_key_file_is_encrypted_with_the_passphrase_given() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("station.toml");
    std::fs::write(&cfg, config_text(&[], 200)).unwrap();
    let conf = cfg.to_str().unwrap();
    let run = |args: &[&str], pass: Option<&str>| {
        let mut c = Command::new(station_bin());
        c.args(args).env_remove("STATION_CA_PASSPHRASE");
        if let Some(p) = pass {
            c.env("STATION_CA_PASSPHRASE", p);
        }
        c.output().unwrap()
    };
    let out = run(&["ca", "init", "--config", conf], Some("line 4 key"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("encrypted with the passphrase"));
    let key = std::fs::read_to_string(dir.path().join("data/ca/ca.key")).unwrap();
    assert!(key.contains("ENCRYPTED PRIVATE KEY"));

    let out = run(&["ca", "show", "--config", conf], Some("line 4 key"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["ca", "show", "--config", conf], None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is encrypted: give its passphrase"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["ca", "show", "--config", conf], Some("wrong"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("passphrase does not open it"));

    // From a file only the station's user can read.
    let pass = dir.path().join("ca.pass");
    std::fs::write(&pass, "line 4 key\n").unwrap();
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "leaf_validity_days = 365",
        "leaf_validity_days = 365\nkey_passphrase_file = \"ca.pass\"",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let out = run(&["ca", "show", "--config", conf], None);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chmod 600"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(&["ca", "show", "--config", conf], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
