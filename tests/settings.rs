//! The provisioning settings on the board, end to end over real
//! pseudo-terminals: written with SETTINGS and read back with READSETTINGS
//! before FINISH, kept on the board record and in the export; a board on
//! older firmware (no `caps=settings` in its HELLO answer) still passes,
//! with a note saying what it did not get; one that reads back other
//! settings fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

const DPS: &str = "\n[dps]\nid_scope = \"0ne00TEST01\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_written_read_back_recorded_and_exported() {
    let st = TestStation::start_with(
        vec![
            quick_board(),
            with_fault("old_firmware"),
            with_fault("wrong_settings"),
        ],
        300,
        DPS,
        |_| (),
    )
    .await;
    let boards = st.wait_finished(3, Duration::from_secs(60)).await;
    let by_slot = |n: u64| {
        boards
            .iter()
            .find(|b| b["slot"].as_u64() == Some(n))
            .unwrap()
            .clone()
    };

    // A board that announces the settings gets them, reads them back, and
    // its record says what it keeps.
    let b = by_slot(1);
    assert_eq!(b["status"], "provisioned", "{b:#}");
    let guid = b["guid"].as_str().unwrap();
    let expected = serde_json::json!({
        "endpoint": "global.azure-devices-provisioning.net",
        "id_scope": "0ne00TEST01",
        "registration_id": guid,
        "attestation": "x509",
    });
    assert_eq!(b["settings"], expected, "{b:#}");
    assert!(b["settings_note"].is_null());
    let board = st.sims[0]
        .boards()
        .into_iter()
        .find(|x| x.guid.as_str() == guid)
        .unwrap();
    let kept = board.settings.expect("the board keeps its settings");
    assert_eq!(kept.id_scope, "0ne00TEST01");
    assert_eq!(kept.registration_id, guid);
    assert_eq!(kept.endpoint, "global.azure-devices-provisioning.net");
    assert_eq!(kept.attestation, "x509");
    let (_, detail) = st.get(&format!("/api/v1/boards/{guid}")).await;
    let steps: Vec<&str> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "hello", "identify", "review", "keygen", "issue", "store", "readback", "prove",
            "settings", "finish"
        ]
    );
    let requests: Vec<String> = st.sims[0]
        .seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| r.1.clone())
        .collect();
    let at = |v: &str| requests.iter().position(|r| r == v).unwrap();
    assert!(at("SETTINGS") < at("READSETTINGS") && at("READSETTINGS") < at("FINISH"));

    // Older firmware: provisioned all the same, with the note.
    let old = by_slot(2);
    assert_eq!(old["status"], "provisioned", "{old:#}");
    assert!(old["settings"].is_null());
    let note = old["settings_note"].as_str().unwrap();
    assert!(note.contains("caps=settings"), "{note}");
    let requests = st.sims[1].seen.lock().unwrap().requests.clone();
    assert!(
        !requests.iter().any(|r| r.1 == "SETTINGS"),
        "nothing is sent to a board that does not announce it"
    );

    // A board that keeps other settings than it was sent fails.
    let wrong = by_slot(3);
    assert_eq!(wrong["status"], "failed", "{wrong:#}");
    assert_eq!(wrong["error_code"], "settings_mismatch");
    let e = wrong["error"].as_str().unwrap();
    assert!(
        e.contains("scope=0ne00TEST01") && e.contains("0ne00WRONG0"),
        "{e}"
    );

    // The export (the device list, as CSV) carries them.
    let csv = st
        .client
        .get(format!("{}/api/v1/reports?format=csv", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row_of = |g: &str| -> Vec<String> {
        csv.lines()
            .find(|l| l.starts_with(g))
            .unwrap_or_else(|| panic!("{csv}"))
            .split(',')
            .map(str::to_string)
            .collect()
    };
    let row = row_of(guid);
    assert_eq!(row[col("id_scope")], "0ne00TEST01");
    assert_eq!(row[col("registration_id")], guid);
    let row = row_of(old["guid"].as_str().unwrap());
    assert_eq!(row[col("id_scope")], "");
    assert!(
        row[col("settings_note")].contains("caps=settings"),
        "{row:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_id_scope_the_board_passes_with_a_note() {
    let st = TestStation::start(vec![quick_board()]).await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(boards[0]["status"], "provisioned");
    assert!(boards[0]["settings"].is_null());
    let note = boards[0]["settings_note"].as_str().unwrap();
    assert!(note.contains("id_scope is not set"), "{note}");
    let requests = st.sims[0].seen.lock().unwrap().requests.clone();
    assert!(!requests.iter().any(|r| r.1 == "SETTINGS"));
}
