//! End to end over real pseudo-terminals: boards provisioned at once, each
//! certificate checked against the CA, the profile, the board's own key and
//! its signature over the station's nonce.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
use station::ca::CaSigner;
use station::jig::protocol::key_proof_message;
use station::sim::SimOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_boards_at_once() {
    let st = TestStation::start((0..8).map(|_| quick_board()).collect()).await;
    let boards = st.wait_finished(8, Duration::from_secs(60)).await;
    assert_eq!(boards.len(), 8);
    let ca = st.ca();
    for b in &boards {
        assert_eq!(b["status"], "provisioned", "{b:#}");
        assert!(b["error"].is_null());
        let guid = b["guid"].as_str().unwrap();
        let (status, detail) = st.get(&format!("/api/v1/boards/{guid}")).await;
        assert_eq!(status, 200);
        assert_eq!(detail["certificate_state"], "installed");
        let der = pem_der(detail["certificate_pem"].as_str().unwrap());
        let spki = check_leaf(&der, &ca, guid);

        // The board in the simulator: its own key, the chain it stored, and
        // its signature over the nonce the station sent.
        let slot = b["slot"].as_u64().unwrap() as usize;
        let sim = &st.sims[slot - 1];
        let board = sim
            .boards()
            .into_iter()
            .find(|x| x.guid.as_str() == guid)
            .unwrap();
        assert_eq!(
            board.public_key_spki.as_deref(),
            Some(spki.as_slice()),
            "certificate carries the board's key"
        );
        assert_eq!(
            board.stored,
            vec![der.clone(), ca.certificate_der().to_vec()]
        );
        assert_eq!(board.signatures.len(), 1);
        let (nonce, sig) = &board.signatures[0];
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        UnparsedPublicKey::new(
            &ECDSA_P256_SHA256_ASN1,
            cert.public_key().subject_public_key.data.as_ref(),
        )
        .verify(&key_proof_message(nonce), sig)
        .expect("the board's nonce signature verifies with its certificate");

        // One ledger entry, installed, matching what the API shows.
        let ledger = st.ledger(guid);
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger[0].state, "installed");
        assert_eq!(ledger[0].serial, b["certificate_serial"].as_str().unwrap());
        assert_eq!(ledger[0].fingerprint_sha256, station::ca::fingerprint(&der));
        assert_eq!(ledger[0].station, "test-station");

        // Every step recorded with a start, an end, a duration and an outcome.
        let steps = detail["steps"].as_array().unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "hello", "identify", "review", "keygen", "issue", "store", "readback", "prove",
                "settings", "finish"
            ]
        );
        for s in steps {
            assert_eq!(s["outcome"], "ok");
            assert!(
                s["ended_at"].is_string() && s["duration_ms"].is_i64(),
                "{s}"
            );
        }
    }
    // Distinct GUIDs and serials.
    let mut serials: Vec<&str> = boards
        .iter()
        .map(|b| b["certificate_serial"].as_str().unwrap())
        .collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 8);
    let (_, slots) = st.get("/api/v1/slots").await;
    assert!(
        slots
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "provisioned" && s["link"] == "connected")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_boards_keeps_going() {
    let line = SimOptions {
        line: Some(station::sim::LineCycle {
            dwell: Duration::from_millis(50),
            pause: Duration::from_millis(50),
        }),
        ..quick_board()
    };
    let st = TestStation::start(vec![line]).await;
    let boards = st.wait_finished(3, Duration::from_secs(30)).await;
    let mut guids: Vec<&str> = boards.iter().map(|b| b["guid"].as_str().unwrap()).collect();
    guids.dedup();
    assert!(guids.len() >= 3, "each board a new GUID");
    assert!(boards.iter().all(|b| b["status"] == "provisioned"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_provisioned_guid_gets_no_second_certificate_without_override() {
    let guid: station::ids::Guid = "0a1b2c3d-0000-4000-8000-0000000000aa".parse().unwrap();
    let fixed = || SimOptions {
        guid: Some(guid.clone()),
        ..quick_board()
    };
    let st = TestStation::start(vec![fixed()]).await;
    st.wait_finished(1, Duration::from_secs(20)).await;
    assert_eq!(st.ledger(guid.as_str()).len(), 1);

    // The same board turns up again in a new station run on the same data.
    let data = st.dir.path().join("station.toml");
    let cfg_text = std::fs::read_to_string(&data).unwrap();
    let sim2 = station::sim::PtySim::spawn(fixed()).unwrap();
    let cfg_text = cfg_text.replace(&st.sims[0].device, &sim2.device);
    std::fs::write(&data, cfg_text).unwrap();
    let cfg = station::config::Config::load(&data).unwrap();
    st.app.stop();
    let app2 = station::app::start(&cfg, false).await.unwrap();
    let (boards, detail) = wait_guid_status(&app2, guid.as_str(), "failed").await;
    assert_eq!(detail.error_code.as_deref(), Some("already_provisioned"));
    assert!(
        detail
            .error
            .as_deref()
            .unwrap()
            .contains("station board override")
    );
    assert_eq!(st.ledger(guid.as_str()).len(), 1, "no second certificate");
    assert!(boards >= 2);
    app2.stop();

    // A supervisor allows one more: the next visit gets a new certificate.
    app2.store
        .grant_override(
            &guid,
            "supervisor",
            "rework after RF fix",
            false,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let sim3 = station::sim::PtySim::spawn(fixed()).unwrap();
    let text = std::fs::read_to_string(&data)
        .unwrap()
        .replace(&sim2.device, &sim3.device);
    std::fs::write(&data, text).unwrap();
    let app3 = station::app::start(&station::config::Config::load(&data).unwrap(), false)
        .await
        .unwrap();
    wait_guid_status(&app3, guid.as_str(), "provisioned").await;
    let ledger = st.ledger(guid.as_str());
    assert_eq!(ledger.len(), 2);
    assert!(ledger.iter().all(|c| c.state == "installed"));
    app3.stop();
}

async fn wait_guid_status(
    app: &station::app::App,
    guid: &str,
    status: &str,
) -> (usize, station::store::BoardRow) {
    let g: station::ids::Guid = guid.parse().unwrap();
    for _ in 0..200 {
        if let Some(b) = app.store.board(&g).unwrap()
            && b.status == status
        {
            return (app.store.boards(100).unwrap().len(), b);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "board {guid} never became {status}: {:?}",
        app.store.board(&g)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_answers_bad_requests_clearly() {
    let st = TestStation::start(vec![quick_board()]).await;
    let (s, v) = st.get("/api/v1/boards/not-a-guid").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("8-4-4-4-12"));
    let (s, _) = st
        .get("/api/v1/boards/0a1b2c3d-0000-4000-8000-0000000000ff")
        .await;
    assert_eq!(s, 404);
    let (s, _) = st.get("/api/v1/boards?limit=0").await;
    assert_eq!(s, 400);
    let (s, v) = st.get("/api/v1/health").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let ca = st
        .client
        .get(format!("{}/api/v1/ca", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let page = st
        .client
        .get(&st.base)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("test-station") && page.contains("id=\"slots\""),
        "{page}"
    );
    let css = st
        .client
        .get(format!("{}/static/station.css", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains(".failed"));
    let (s, _) = st.get("/nope").await;
    assert_eq!(s, 404);
}
