//! Symmetric-key devices end to end (`[dps] attestation =
//! "symmetric_key"`): 50 boards on two simulated lines while DPS is
//! offline, then each enrolled exactly once with its own key derived from
//! the master key; the key the board holds registers at the fake DPS's
//! device endpoint: disabled, then assigned after activation; and no
//! board's key is found in the database, the data folder or a trace log
//! (the search is shown to find a planted key).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::device_client::{Sas, register_symmetric_key};
use common::fake_dps::{FakeDps, ID_SCOPE, stored_keys};
use common::secrets::{files, holders};
use common::*;
use serde_json::json;
use station::sim::{LineCycle, SimOptions};
use station::store::Store;
use station::symkey::MasterKey;

const HUB: &str = "hub-a.azure-devices.net";

fn symkey_section(fake: &FakeDps) -> String {
    dps_section(fake, 6000)
        + &format!(
            "attestation = \"symmetric_key\"\nid_scope = \"{ID_SCOPE}\"\nactivation_hubs = [\"{HUB}\"]\n\n[symmetric_key]\nkey = \"file\"\n"
        )
}

fn line_of(boards: u32) -> SimOptions {
    SimOptions {
        line: Some(LineCycle {
            dwell: Duration::from_millis(20),
            pause: Duration::from_millis(20),
        }),
        boards: Some(boards),
        ..quick_board()
    }
}

async fn wait_for(within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "not in {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_boards_offline_then_each_enrolled_once_with_its_own_key() {
    let mut fake = FakeDps::start().await;
    fake.stop();
    let st = TestStation::start_with(
        vec![line_of(25), line_of(25)],
        300,
        &symkey_section(&fake),
        |cfg| {
            MasterKey::create(cfg.symmetric_key.as_ref().unwrap()).unwrap();
        },
    )
    .await;
    let boards = st.wait_finished(50, Duration::from_secs(120)).await;
    assert_eq!(boards.len(), 50);
    for b in &boards {
        assert_eq!(b["status"], "provisioned", "{b:#}");
        assert!(b["certificate_serial"].is_null(), "no certificate: {b:#}");
        assert_eq!(b["settings"]["attestation"], "symmetric_key");
    }
    assert_eq!(fake.with(|s| s.enrollments.len()), 0, "DPS was offline");

    fake.restart().await;
    wait_for(Duration::from_secs(60), || {
        fake.with(|s| s.enrollments.len()) == 50
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Each enrollment was written once, with the board's own key: the one
    // the board holds, derived from the master key over its GUID.
    let cfg = station::config::Config::load(&st.dir.path().join("station.toml")).unwrap();
    let master = MasterKey::open(cfg.symmetric_key.as_ref().unwrap(), false).unwrap();
    let mut primaries = BTreeSet::new();
    let sims: Vec<_> = st.sims.iter().flat_map(|s| s.boards()).collect();
    for b in &boards {
        let guid = b["guid"].as_str().unwrap();
        let (primary, secondary) = fake.with(|s| stored_keys(s, guid)).unwrap();
        let writes = fake.with(|s| s.enrollments[&guid.to_ascii_lowercase()].writes);
        assert_eq!(writes, 1, "{guid} written once");
        assert_eq!(*master.derive(guid).unwrap().to_base64(), primary);
        assert_eq!(
            *master.derive_secondary(guid).unwrap().to_base64(),
            secondary
        );
        let held = sims
            .iter()
            .find(|x| x.guid.as_str() == guid)
            .and_then(|x| x.symmetric_key)
            .unwrap();
        assert_eq!(
            B64.encode(held),
            primary,
            "the board holds its enrollment's key"
        );
        let body = fake.with(|s| s.enrollments[&guid.to_ascii_lowercase()].body.clone());
        assert_eq!(body["provisioningStatus"], "disabled");
        assert_eq!(body["attestation"]["type"], "symmetricKey");
        primaries.insert(primary);
        let audit = st.store().audit_about(guid).unwrap();
        assert!(
            audit.iter().any(|a| a.action == "device_key_given"
                && a.detail["master_key_id"] == master.id().unwrap()),
            "the key given is audited, with its master key: {audit:#?}"
        );
    }
    assert_eq!(primaries.len(), 50, "no two devices share a key");
    let outbox = st.store().outbox_jobs(None, 1000).unwrap();
    assert_eq!(outbox.len(), 50);
    assert!(outbox.iter().all(|j| j.state == "enrolled"), "{outbox:#?}");

    // A device registers with the key it holds: disabled until activated,
    // then assigned to the hub; activation keeps its key in DPS.
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    let key = B64.encode(
        sims.iter()
            .find(|x| x.guid.as_str() == guid)
            .and_then(|x| x.symmetric_key)
            .unwrap(),
    );
    let (device, device_ca) = (fake.device_endpoint(), fake.device_server_ca());
    let sas = Sas::default();
    let register = || register_symmetric_key(device, &device_ca, ID_SCOPE, &guid, &key, &sas);
    let before = register().await.unwrap();
    assert_eq!(before["status"], "disabled", "{before:#}");
    let r = st
        .client
        .post(format!("{}/api/v1/devices/{guid}/activate", st.base))
        .json(&json!({ "hub": HUB }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    wait_for(Duration::from_secs(20), || {
        fake.with(|s| {
            s.enrollments[&guid.to_ascii_lowercase()].body["provisioningStatus"] == "enabled"
        })
    })
    .await;
    let after = register().await.unwrap();
    assert_eq!(after["status"], "assigned", "{after:#}");
    assert_eq!(after["registrationState"]["assignedHub"], HUB);

    // There is no certificate to revoke: the refusal says what to do.
    let r = st
        .client
        .post(format!("{}/api/v1/devices/{guid}/revoke", st.base))
        .json(&json!({ "reason": "stolen", "confirm": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let said = r.text().await.unwrap();
    assert!(
        said.contains("nothing to revoke") && said.contains("retire"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_device_key_is_stored_logged_or_written_to_a_file() {
    let fake = FakeDps::start().await;
    let sim = station::sim::PtySim::spawn(line_of(3)).unwrap();
    let (dir, cfg) = prepare_with(
        std::slice::from_ref(&sim.device),
        500,
        &symkey_section(&fake),
    );
    MasterKey::create(cfg.symmetric_key.as_ref().unwrap()).unwrap();
    let config = dir.path().join("station.toml");
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
    wait_for(Duration::from_secs(60), || {
        read(&log).matches("board provisioned").count() >= 3
    })
    .await;
    wait_for(Duration::from_secs(30), || {
        fake.with(|s| s.enrollments.len()) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = Store::open(&cfg.database_path()).unwrap();
    let keys: Vec<[u8; 32]> = sim
        .boards()
        .iter()
        .filter_map(|b| b.symmetric_key)
        .collect();
    assert_eq!(keys.len(), 3);
    for b in sim.boards() {
        assert_eq!(store.board(&b.guid).unwrap().unwrap().status, "provisioned");
    }
    drop(store);
    let logged = read(&log);
    assert!(
        logged.contains("TRACE") && logged.contains("device key written"),
        "the log is at trace level and covers the key step"
    );
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(all.iter().any(|p| p.ends_with("station.db")));
    assert!(all.iter().any(|p| p.ends_with("device-master.key")));
    for key in &keys {
        let found = holders(&all, key);
        assert!(found.is_empty(), "a device key is in: {found:?}");
    }
    common::secrets::assert_search_finds_a_planted(&keys[0]);
}

/// `[dps] enrollment = "group"`: one enrollment group for the line (made
/// once, disabled, the master key as its group key) and no individual
/// enrollments; each board's key is the one DPS derives from the group
/// key, so the device registers through the group: disabled while the
/// group is, assigned once the group is enabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_enrollment_is_made_once_and_its_devices_register_through_it() {
    use common::fake_dps::device_key_from_group;
    use station::dps::{ConnectionString, DpsClient, HttpDps};
    let fake = FakeDps::start().await;
    let st = TestStation::start_with(
        vec![line_of(2), line_of(2)],
        300,
        &(symkey_section(&fake).replace(
            "attestation = \"symmetric_key\"\n",
            "attestation = \"symmetric_key\"\nenrollment = \"group\"\niot_hubs = [\"hub-a.azure-devices.net\"]\nallocation_policy = \"static\"\n",
        )),
        |cfg| {
            MasterKey::create(cfg.symmetric_key.as_ref().unwrap()).unwrap();
        },
    )
    .await;
    let boards = st.wait_finished(4, Duration::from_secs(60)).await;
    assert!(
        boards.iter().all(|b| b["status"] == "provisioned"),
        "{boards:#?}"
    );
    wait_for(Duration::from_secs(20), || {
        fake.with(|s| s.groups.len()) == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let group = fake.with(|s| s.groups["line-test-line"].clone());
    assert_eq!(group.writes, 1, "made once");
    assert_eq!(group.body["provisioningStatus"], "disabled");
    assert_eq!(
        fake.with(|s| s.enrollments.len()),
        0,
        "no individual enrollments"
    );
    assert!(st.store().outbox_jobs(None, 100).unwrap().is_empty());
    let cfg = station::config::Config::load(&st.dir.path().join("station.toml")).unwrap();
    let master = MasterKey::open(cfg.symmetric_key.as_ref().unwrap(), false).unwrap();
    let (primary, secondary) = master.group_keys().unwrap();
    assert_eq!(
        group.body["attestation"]["symmetricKey"]["primaryKey"],
        *primary
    );

    // Each board holds the key DPS derives for it from the group key.
    let sims: Vec<_> = st.sims.iter().flat_map(|s| s.boards()).collect();
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    let held = B64.encode(
        sims.iter()
            .find(|x| x.guid.as_str() == guid)
            .and_then(|x| x.symmetric_key)
            .unwrap(),
    );
    assert_eq!(held, device_key_from_group(&primary, &guid));
    let (device, device_ca) = (fake.device_endpoint(), fake.device_server_ca());
    let sas = Sas::default();
    let register = || register_symmetric_key(device, &device_ca, ID_SCOPE, &guid, &held, &sas);
    assert_eq!(register().await.unwrap()["status"], "disabled");

    // Enabling the group (one switch for the whole line) lets it in.
    let dps = HttpDps::new(
        &fake.endpoint(),
        ConnectionString::parse(&fake.connection_string()).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut read = dps
        .get_enrollment_group("line-test-line")
        .await
        .unwrap()
        .unwrap();
    let etag = read["etag"].as_str().unwrap().to_string();
    read["provisioningStatus"] = json!("enabled");
    read["attestation"]["symmetricKey"] =
        json!({"primaryKey": primary.as_str(), "secondaryKey": secondary.as_str()});
    dps.put_enrollment_group("line-test-line", &read, Some(&etag))
        .await
        .unwrap();
    let after = register().await.unwrap();
    assert_eq!(after["status"], "assigned", "{after:#}");

    // A device of the group has no enrollment of its own to activate.
    let r = st
        .client
        .post(format!("{}/api/v1/devices/{guid}/activate", st.base))
        .json(&json!({ "hub": HUB }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let said = r.text().await.unwrap();
    assert!(said.contains("enrollment group"), "{said}");
}

/// A board whose firmware does not announce `caps=symkey` is not sent a
/// key: it fails with what to do, and no key is recorded for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_that_cannot_take_a_key_fails_before_any_key_is_made() {
    let fake = FakeDps::start().await;
    let st = TestStation::start_with(
        vec![with_fault("old_firmware")],
        300,
        &symkey_section(&fake),
        |cfg| {
            MasterKey::create(cfg.symmetric_key.as_ref().unwrap()).unwrap();
        },
    )
    .await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(boards[0]["status"], "failed", "{:#}", boards[0]);
    assert_eq!(boards[0]["error_code"], "symkey_unsupported");
    assert!(boards[0]["error"].as_str().unwrap().contains("caps=symkey"));
    let requests = st.sims[0].seen.lock().unwrap().requests.clone();
    assert!(!requests.iter().any(|r| r.1 == "KEYSET"), "{requests:?}");
    let guid = boards[0]["guid"].as_str().unwrap();
    let audit = st.store().audit_about(guid).unwrap();
    assert!(
        !audit.iter().any(|a| a.action == "device_key_given"),
        "{audit:#?}"
    );
}
