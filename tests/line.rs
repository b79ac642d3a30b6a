//! The line view's actions over HTTP: signing in at a slot, the work
//! order, retry and abort, and the pushed slot tiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use station::sim::SimOptions;
use station::store::{NewUser, Role};

/// An operator's session: (cookie header, csrf).
async fn operator_session(st: &TestStation) -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    let new = NewUser {
        name: "ana",
        role: Role::Operator,
        badge: Some("B-1"),
        pin: Some("1111"),
        password: None,
    };
    st.store().add_user(&new, "t", now).unwrap();
    let r = sign_in_badge(st, "B-1", "1111").await;
    let cookie = format!(
        "station_session={}",
        set_cookie(&r, "station_session").unwrap()
    );
    let page = bare_client()
        .get(&st.base)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (cookie, hidden_csrf(&page))
}

async fn post(
    st: &TestStation,
    session: &(String, String),
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut f = vec![("csrf", session.1.as_str())];
    f.extend_from_slice(form);
    bare_client()
        .post(format!("{}{path}", st.base))
        .header("cookie", &session.0)
        .form(&f)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_at_the_slot_and_the_work_order_are_stamped_on_boards() {
    let board = SimOptions {
        first_insert_after: Duration::from_millis(1500),
        ..quick_board()
    };
    let st = TestStation::start(vec![board]).await;
    let session = operator_session(&st).await;
    assert_eq!(
        post(&st, &session, "/slots/1/action", &[("action", "claim")])
            .await
            .status(),
        303
    );
    assert_eq!(
        post(
            &st,
            &session,
            "/work-order",
            &[("work_order", "WO-2026-77")]
        )
        .await
        .status(),
        303
    );
    let boards = st.wait_finished(1, Duration::from_secs(20)).await;
    assert_eq!(boards[0]["operator"], "ana");
    assert_eq!(boards[0]["work_order"], "WO-2026-77");
    let job: serde_json::Value =
        serde_json::from_str(&st.store().due_jobs(1).unwrap()[0].body).unwrap();
    assert_eq!(job["initialTwin"]["tags"]["workOrder"], "WO-2026-77");
    assert_eq!(job["initialTwin"]["tags"]["operator"], "ana");
    let actions: Vec<String> = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(
        actions.contains(&"slot_signed_in".into()) && actions.contains(&"setting_changed".into())
    );
    // The certificate is on record as issued while ana was at the slot.
    let issued = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .find(|r| r.action == "certificate_issued")
        .unwrap();
    assert_eq!(issued.actor, "ana");
    // Without the CSRF token the same requests are refused.
    let r = bare_client()
        .post(format!("{}/work-order", st.base))
        .header("cookie", &session.0)
        .form(&[("work_order", "WO-X")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_provisions_a_failed_board_and_abort_stops_one() {
    let flaky = SimOptions {
        fault: Some("wrong_key".parse().unwrap()),
        fault_times: Some(1),
        ..quick_board()
    };
    // Slow enough that slot 2 is still making its key when slot 1's
    // failure has been seen and retried, even on a loaded machine.
    let slow = SimOptions {
        keygen_time: Duration::from_millis(5000),
        ..quick_board()
    };
    let st = TestStation::start_with(vec![flaky, slow], 3000, "", |_| ()).await;
    let session = operator_session(&st).await;

    // Slot 1 failed once; Retry provisions the same board.
    let first = st.wait_finished(1, Duration::from_secs(20)).await;
    assert_eq!(first[0]["error_code"], "csr_bad_signature");
    assert_eq!(
        post(&st, &session, "/slots/1/action", &[("action", "retry")])
            .await
            .status(),
        303
    );

    // Slot 2 is making its key: Abort stops it before the next step.
    assert_eq!(
        post(
            &st,
            &session,
            "/slots/2/action",
            &[("action", "abort"), ("confirm", "yes")]
        )
        .await
        .status(),
        303
    );
    let all = st.wait_finished(3, Duration::from_secs(20)).await;
    let slot1: Vec<&serde_json::Value> = all.iter().filter(|b| b["slot"] == 1).collect();
    assert!(
        slot1.iter().any(|b| b["status"] == "provisioned"),
        "{all:#?}"
    );
    let slot2 = all.iter().find(|b| b["slot"] == 2).unwrap();
    assert_eq!(slot2["error_code"], "aborted", "{slot2:#}");
    assert!(
        st.ledger(slot2["guid"].as_str().unwrap()).is_empty(),
        "aborted before any certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_tiles_are_pushed_as_they_change() {
    // The board arrives once the operator is signed in and watching.
    let board = SimOptions {
        first_insert_after: Duration::from_millis(5000),
        ..quick_board()
    };
    let st = TestStation::start(vec![board]).await;
    let session = operator_session(&st).await;
    let mut r = bare_client()
        .get(format!("{}/events", st.base))
        .header("cookie", &session.0)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("PASS") {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("no PASS pushed")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("WAITING</strong><span class=\"label\">: for a board"),
        "the first push is the state at connection"
    );
    assert!(
        seen.contains("data: <section class=\"tile pass\""),
        "{seen}"
    );
}

/// FINISH does not get through after the board is recorded as provisioned
/// (the jig's answers are lost): the slot says so, not PASS and not FAIL;
/// the record, its certificate and its jobs stand; Retry sends FINISH
/// alone, and no second certificate is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_that_does_not_get_through_is_retried_alone() {
    let lost = SimOptions {
        fault: Some("drop@FINISH".parse().unwrap()),
        fault_times: Some(3),
        ..quick_board()
    };
    let st = TestStation::start_with(vec![lost], 300, "", |_| ()).await;
    let session = operator_session(&st).await;
    let mut tile = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, slots) = st.get("/api/v1/slots").await;
        tile = slots[0].clone();
        if tile["state"] == "provisioned_untold" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tile["state"], "provisioned_untold", "{tile:#}");
    assert_eq!(tile["error_code"], "no_answer", "{tile:#}");
    assert!(
        tile["error"].as_str().unwrap().contains("press Retry"),
        "{tile:#}"
    );
    let guid = tile["guid"].as_str().unwrap().to_string();
    let record = &st.boards().await[0];
    assert_eq!(record["status"], "provisioned", "the record stands");
    let ledger = st.ledger(&guid);
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].state, "installed");
    assert_eq!(st.store().outbox_counts().unwrap().pending, 1);

    let before = st.sims[0].seen.lock().unwrap().requests.len();
    assert_eq!(
        post(&st, &session, "/slots/1/action", &[("action", "retry")])
            .await
            .status(),
        303
    );
    for _ in 0..100 {
        let (_, slots) = st.get("/api/v1/slots").await;
        tile = slots[0].clone();
        if tile["state"] == "provisioned" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tile["state"], "provisioned", "{tile:#}");
    let after: Vec<String> = st.sims[0].seen.lock().unwrap().requests[before..]
        .iter()
        .map(|(_, verb)| verb.clone())
        .filter(|v| v != "STATUS")
        .collect();
    assert_eq!(after, vec!["FINISH".to_string()], "FINISH alone");
    assert_eq!(st.ledger(&guid).len(), 1, "no second certificate");
    assert_eq!(st.store().outbox_counts().unwrap().pending, 1);
    assert_eq!(st.boards().await.len(), 1, "one record");
}
