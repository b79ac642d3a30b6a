//! GUID labels: the printer's host status turned into operator messages, a
//! print that never holds up the line, recovery with every waiting label
//! printed once, reprints and test labels on record, the preview decoded
//! back to the GUID, and the scan-back check.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fake_zebra::{FakeZebra, Status};
use common::*;
use serde_json::Value;
use station::printer::{PrintJob, Printer, TcpPrinter};
use station::sim::{LineCycle, SimOptions};

const GUID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn job(guid: &str) -> PrintJob {
    PrintJob {
        id: 1,
        name: guid.into(),
        zpl: format!(
            "^XA^FO10,10^BXN,4,200^FH^FD{guid}^FS^FO100,10^A0N,20,20^FH^FDLot A_5F1^FS^XZ"
        ),
    }
}

#[tokio::test]
async fn each_printer_status_becomes_an_operator_message() {
    let zebra = FakeZebra::start(Status::Ready).await;
    let p = TcpPrinter::new(&zebra.addr.to_string(), Duration::from_millis(400));
    let cases = [
        (
            Status::PaperOut,
            "paper_out",
            "out of labels: load a new roll",
        ),
        (Status::HeadOpen, "head_open", "close the print head"),
        (Status::Paused, "paused", "press PAUSE"),
        (Status::RibbonOut, "ribbon_out", "load a new ribbon"),
        (
            Status::Silent,
            "no_status",
            "did not answer its status request",
        ),
    ];
    for (status, code, words) in cases {
        zebra.set(status);
        let e = p.print(&job(GUID)).await.unwrap_err();
        assert_eq!(e.code(), code, "{status:?}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(words), "{status:?}: {msg}");
        assert!(
            msg.contains(&zebra.addr.to_string()),
            "the printer is named: {msg}"
        );
        assert_eq!(p.check().await.unwrap_err().code(), code);
    }
    assert!(zebra.printed().is_empty(), "nothing printed with a problem");
    // (The fake takes a label only when ready; one sent during a problem
    // would be a fault.)
    assert!(zebra.faults().is_empty(), "nothing sent with a problem");
    assert_eq!(zebra.with(|s| s.status_requests), 10, "asked before each");

    zebra.set(Status::Ready);
    p.check().await.unwrap();
    p.print(&job(GUID)).await.unwrap();
    let printed = wait_printed(&zebra, 1).await;
    assert_eq!(printed[0].datamatrix, vec![GUID.to_string()]);
    assert_eq!(printed[0].text, vec!["Lot A_1".to_string()]);
    assert!(zebra.faults().is_empty(), "{:?}", zebra.faults());
}

#[tokio::test]
async fn an_unreachable_printer_is_named_with_what_to_check() {
    let mut zebra = FakeZebra::start(Status::Ready).await;
    zebra.stop();
    let p = TcpPrinter::new(&zebra.addr.to_string(), Duration::from_millis(400));
    let e = p.print(&job(GUID)).await.unwrap_err();
    assert_eq!(e.code(), "unreachable");
    let msg = e.to_string();
    assert!(
        msg.contains(&zebra.addr.to_string()) && msg.contains("switched on"),
        "{msg}"
    );
}

async fn wait_printed(zebra: &FakeZebra, n: usize) -> Vec<common::fake_zebra::Printed> {
    for _ in 0..200 {
        let p = zebra.printed();
        if p.len() >= n {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("only {} of {n} labels printed", zebra.printed().len());
}

async fn printer(st: &TestStation) -> Value {
    let (s, v) = st.get("/api/v1/printer").await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn wait_printer(st: &TestStation, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let v = printer(st).await;
        if cond(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the printer never got to {what}: {:#}", printer(st).await);
}

async fn line_view(st: &TestStation) -> String {
    st.client
        .get(format!("{}/", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_wait_for_the_printer_and_print_once_each() {
    let mut zebra = FakeZebra::start(Status::Ready).await;
    zebra.stop(); // switched off
    let line = SimOptions {
        line: Some(LineCycle {
            dwell: Duration::from_millis(5),
            pause: Duration::from_millis(5),
        }),
        boards: Some(3),
        ..quick_board()
    };
    let st = TestStation::start_with(vec![line; 2], 2000, &zebra.section(), |_| ()).await;
    let boards = st.wait_finished(6, Duration::from_secs(60)).await;
    assert!(
        boards.iter().all(|b| b["status"] == "provisioned"),
        "the line runs without a printer: {boards:#?}"
    );
    let v = wait_printer(&st, "unreachable with 6 waiting", |v| {
        v["code"] == "unreachable" && v["labels"]["pending"] == 6
    })
    .await;
    assert_eq!(v["state"], "problem");
    assert!(v["message"].as_str().unwrap().contains("cannot be reached"));
    let html = line_view(&st).await;
    assert!(html.contains("6 labels waiting"), "{html}");
    assert!(html.contains("Printer problem"), "{html}");

    // Back, but out of paper: still nothing printed, and the UI says why.
    zebra.restart().await;
    zebra.set(Status::PaperOut);
    wait_printer(&st, "paper out", |v| v["code"] == "paper_out").await;
    assert!(
        line_view(&st)
            .await
            .contains("out of labels: load a new roll")
    );
    assert!(zebra.printed().is_empty());
    assert!(zebra.faults().is_empty(), "nothing sent while out of paper");

    zebra.set(Status::Ready);
    let v = wait_printer(&st, "all printed", |v| v["labels"]["pending"] == 0).await;
    assert_eq!(v["state"], "ready");
    assert_eq!(v["labels"]["printed"], 6);
    let printed = zebra.printed();
    assert_eq!(printed.len(), 6, "each label once: {:?}", zebra.faults());
    let mut on_labels: Vec<String> = printed.iter().map(|p| p.datamatrix[0].clone()).collect();
    on_labels.sort();
    let mut guids: Vec<String> = boards
        .iter()
        .map(|b| b["guid"].as_str().unwrap().to_string())
        .collect();
    guids.sort();
    assert_eq!(
        on_labels, guids,
        "one DataMatrix per board, carrying its GUID"
    );
    for p in &printed {
        let guid = &p.datamatrix[0];
        assert!(p.text.contains(guid), "the GUID as text too: {:?}", p.text);
        assert!(p.text.iter().any(|t| t.starts_with("MAC ")), "{:?}", p.text);
    }
    assert!(zebra.faults().is_empty(), "{:?}", zebra.faults());
    let metrics = st
        .client
        .get(format!("{}/metrics", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "station_labels{state=\"pending\"} 0",
        "station_labels{state=\"printed\"} 6",
        "station_printer_state{state=\"ready\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let guid = &guids[0];
    let (_, b) = st.get(&format!("/api/v1/boards/{guid}")).await;
    assert_eq!(b["label"]["state"], "printed", "{b:#}");
    assert!(
        line_view(&st).await.contains("no labels waiting"),
        "the UI no longer says labels are waiting"
    );
}

async fn post(st: &TestStation, client: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
    let r = client
        .post(format!("{}{path}", st.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprints_and_test_labels_are_on_record_and_role_checked() {
    let zebra = FakeZebra::start(Status::Ready).await;
    let st = TestStation::start_with(vec![quick_board()], 2000, &zebra.section(), |_| ()).await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    wait_printed(&zebra, 1).await;

    let operator = st
        .store()
        .create_token(
            "op",
            station::store::Role::Operator,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let operator = client_with_token(&operator);
    let (s, v) = post(
        &st,
        &operator,
        &format!("/api/v1/boards/{guid}/label/reprint"),
        serde_json::json!({ "reason": "label torn" }),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["state"], "pending");
    let printed = wait_printed(&zebra, 2).await;
    assert_eq!(
        printed[1].datamatrix,
        vec![guid.clone()],
        "the same board's label"
    );

    let (s, v) = post(&st, &operator, "/api/v1/printer/test", Value::Null).await;
    assert_eq!(s, 403, "operators do not print test labels: {v}");
    let (s, _) = post(&st, &st.client, "/api/v1/printer/test", Value::Null).await;
    assert_eq!(s, 202);
    let printed = wait_printed(&zebra, 3).await;
    assert_eq!(
        printed[2].datamatrix,
        vec!["00000000-0000-0000-0000-000000000000".to_string()]
    );
    assert!(
        printed[2].text.iter().any(|t| t == "TEST LABEL"),
        "{:?}",
        printed[2].text
    );

    let unknown = "11111111-2222-4333-8444-555555555555";
    let (s, v) = post(
        &st,
        &operator,
        &format!("/api/v1/boards/{unknown}/label/reprint"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("only a provisioned board")
    );
    let (s, _) = post(
        &st,
        &operator,
        "/api/v1/boards/not-a-guid/label/reprint",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = post(
        &st,
        &bare_client(),
        &format!("/api/v1/boards/{guid}/label/reprint"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(s, 401);

    let rows = st.store().audit_rows().unwrap();
    let reprint = rows
        .iter()
        .find(|r| r.action == "label_reprint")
        .expect("reprint audited");
    assert_eq!(reprint.actor, "op");
    assert_eq!(reprint.subject.as_deref(), Some(guid.as_str()));
    assert_eq!(reprint.detail["reason"], "label torn");
    let test = rows
        .iter()
        .find(|r| r.action == "label_test")
        .expect("test label audited");
    assert_eq!(test.actor, "tests");
    assert_eq!(
        rows.iter()
            .filter(|r| r.action.starts_with("label_"))
            .count(),
        2
    );
    assert!(zebra.faults().is_empty(), "{:?}", zebra.faults());
}

/// Rasterises an SVG (one unit a dot) at `scale` into grey levels.
fn raster(svg: &str, scale: f32) -> (Vec<u8>, u32, u32) {
    use resvg::{tiny_skia, usvg};
    let tree = usvg::Tree::from_str(svg, &usvg::Options::default()).unwrap();
    let size = tree.size().to_int_size().scale_by(scale).unwrap();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).unwrap();
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let luma = pixmap
        .pixels()
        .iter()
        .map(|p| ((u32::from(p.red()) + u32::from(p.green()) + u32::from(p.blue())) / 3) as u8)
        .collect();
    (luma, size.width(), size.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_decodes_back_to_the_guid_and_the_spool_holds_the_zpl() {
    let st = TestStation::start(vec![quick_board()]).await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    let guid = boards[0]["guid"].as_str().unwrap().to_string();

    let r = st
        .client
        .get(format!("{}/api/v1/boards/{guid}/label.svg", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("image/svg+xml")
    );
    let svg = r.text().await.unwrap();
    assert!(svg.contains(&format!(">{guid}</text>")), "the GUID as text");
    let (luma, w, h) = raster(&svg, 2.0);
    let read = rxing::helpers::detect_in_luma(luma, w, h, Some(rxing::BarcodeFormat::DATA_MATRIX))
        .expect("a DataMatrix in the preview");
    assert_eq!(read.getText(), guid);

    // The spool backend (the default) wrote the same label as ZPL.
    let spool = st.dir.path().join("data/labels");
    let v = wait_for(|| std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) == 1).await;
    assert!(v, "one label in {}", spool.display());
    let file = std::fs::read_dir(&spool)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        file.to_string_lossy().ends_with(&format!("-{guid}.zpl")),
        "{}",
        file.display()
    );
    let zpl = std::fs::read_to_string(&file).unwrap();
    assert!(zpl.contains(&format!("^BXN,4,200^FH^FD{guid}^FS")), "{zpl}");

    let (s, _) = st
        .get("/api/v1/boards/11111111-2222-4333-8444-555555555555/label.svg")
        .await;
    assert_eq!(s, 404);
    let (s, _) = st.get("/api/v1/boards/nope/label.svg").await;
    assert_eq!(s, 400);
    let r = bare_client()
        .get(format!("{}/api/v1/boards/{guid}/label.svg", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn wait_for(cond: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_back_confirms_the_label_or_says_loudly_it_does_not_match() {
    let st = TestStation::start_with(
        vec![quick_board(), with_fault("fail_test")],
        2000,
        "\n[label]\nscan_back = true\n",
        |_| (),
    )
    .await;
    let boards = st.wait_finished(2, Duration::from_secs(30)).await;
    let guid = boards.iter().find(|b| b["slot"] == 1).unwrap()["guid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        line_view(&st).await.contains("Scan the label"),
        "the scan field is offered"
    );

    let other = "11111111-2222-4333-8444-555555555555";
    let (s, v) = post(
        &st,
        &st.client,
        "/api/v1/slots/1/scan",
        serde_json::json!({ "scanned": other }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["matched"], false);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("LABEL DOES NOT MATCH"),
        "{v}"
    );
    let html = line_view(&st).await;
    assert!(html.contains("LABEL DOES NOT MATCH THIS BOARD"), "{html}");
    let rows = st.store().audit_rows().unwrap();
    let row = rows
        .iter()
        .find(|r| r.action == "label_scan_mismatch")
        .expect("a mismatch is audited");
    assert_eq!(row.subject.as_deref(), Some(guid.as_str()));
    assert_eq!(row.detail["scanned"], other);

    // A scanner that sends the symbology identifier and a line end.
    let (s, v) = post(
        &st,
        &st.client,
        "/api/v1/slots/1/scan",
        serde_json::json!({ "scanned": format!("]d1{}\r\n", guid.to_uppercase()) }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["matched"], true, "{v}");
    let html = line_view(&st).await;
    assert!(
        html.contains("Label checked: it matches this board"),
        "{html}"
    );
    assert!(!html.contains("LABEL DOES NOT MATCH"), "{html}");

    let (s, v) = post(
        &st,
        &st.client,
        "/api/v1/slots/2/scan",
        serde_json::json!({ "scanned": guid }),
    )
    .await;
    assert_eq!(s, 409, "a failed board has no label to check: {v}");
    let (s, _) = post(
        &st,
        &st.client,
        "/api/v1/slots/9/scan",
        serde_json::json!({ "scanned": guid }),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = post(
        &st,
        &st.client,
        "/api/v1/slots/1/scan",
        serde_json::json!({ "scanned": "  " }),
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_redrawn_by_the_line_view_do_not_keep_a_session_alive() {
    let st = TestStation::start(vec![quick_board()]).await;
    let guid = st.wait_finished(1, Duration::from_secs(30)).await[0]["guid"]
        .as_str()
        .unwrap()
        .to_string();
    let watching = session_of(&st, "ana", station::store::Role::Operator, "B-1").await;
    let working = session_of(&st, "ben", station::store::Role::Operator, "B-2").await;
    let signed_in = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (cookie, path) in [
        (&watching, format!("/api/v1/boards/{guid}/label.svg")),
        (&working, "/api/v1/printer".to_string()),
    ] {
        let r = bare_client()
            .get(format!("{}{path}", st.base))
            .header("cookie", format!("station_session={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // With a 1 s idle limit, 1.2 s after signing in: a session last seen
    // at sign-in is over, one seen since is not.
    let at = signed_in + time::Duration::milliseconds(1200);
    let idle = time::Duration::seconds(1);
    assert!(
        st.store()
            .session_peek(&working, idle, at)
            .unwrap()
            .is_some(),
        "an API call is activity"
    );
    assert!(
        st.store()
            .session_peek(&watching, idle, at)
            .unwrap()
            .is_none(),
        "a preview is not"
    );
}
