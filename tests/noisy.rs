//! Noisy jig lines, end to end over real pseudo-terminals: a board from
//! before the line capabilities still provisions; a damaged STORE piece
//! is sent again alone; a chain is never kept from a transfer cut short;
//! a board that answers every request with a damaged-line notice fails
//! as `line_garbled` with the advice to check or replace the cable; and
//! a slot behind a noisy cable (`station::sim::cable`) shows its figures
//! on the slot (the API and a mark on its tile), in `/metrics` and in the
//! QA report, beside a clean one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use station::sim::cable::{CableOptions, NoisyCable};
use station::sim::{PtySim, SimOptions};

fn by_slot(boards: &[Value], n: u64) -> Vec<Value> {
    boards
        .iter()
        .filter(|b| b["slot"].as_u64() == Some(n))
        .cloned()
        .collect()
}

/// The verbs a slot's board received, in order, repeats included.
fn requests(sim: &PtySim) -> Vec<(u16, String)> {
    sim.seen.lock().unwrap().requests.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_boards_provision_and_a_damaged_piece_is_sent_again_alone() {
    let v1 = SimOptions {
        line_caps: false,
        ..quick_board()
    };
    let nak_first_piece = SimOptions {
        fault: Some("nak@STORE".parse().unwrap()),
        fault_times: Some(1),
        ..quick_board()
    };
    let st = TestStation::start_with(
        vec![v1, nak_first_piece, with_fault("old_firmware")],
        300,
        "",
        |_| (),
    )
    .await;
    let boards = st.wait_finished(3, Duration::from_secs(60)).await;
    for n in 1..=3 {
        let b = &by_slot(&boards, n)[0];
        assert_eq!(b["status"], "provisioned", "slot {n}: {b:#}");
    }

    // A board without the line capabilities got the chain in one STORE
    // and read it back in one READCERT, as in protocol v1.
    let old = st.sims[0].boards().pop().unwrap();
    assert!(old.pieces.is_empty(), "{:?}", old.pieces);
    assert!(!old.stored.is_empty());
    let verbs: Vec<String> = requests(&st.sims[0]).into_iter().map(|(_, v)| v).collect();
    assert_eq!(verbs.iter().filter(|v| *v == "STORE").count(), 1);
    assert_eq!(verbs.iter().filter(|v| *v == "READCERT").count(), 1);
    // So did the firmware from before every capability.
    assert!(st.sims[2].boards().pop().unwrap().pieces.is_empty());

    // The board that took pieces took every piece once; the first was
    // sent twice (the notice), under the same id, and no other piece was
    // sent again.
    let board = st.sims[1].boards().pop().unwrap();
    let text_len: usize = board
        .stored
        .iter()
        .map(|c| 4 * c.len().div_ceil(3))
        .sum::<usize>()
        + board.stored.len()
        - 1;
    let expected: Vec<usize> = (0..text_len).step_by(256).collect();
    assert!(expected.len() >= 4, "a chain of {text_len} bytes");
    assert_eq!(board.pieces, expected);
    let stores: Vec<u16> = requests(&st.sims[1])
        .into_iter()
        .filter(|(_, v)| v == "STORE")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(stores.len(), expected.len() + 1);
    assert_eq!(stores[0], stores[1], "the repeat is the same request");
    let mut distinct = stores.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), expected.len());
    // The chain read back in pieces is the chain the ledger holds.
    let guid = by_slot(&boards, 2)[0]["guid"].as_str().unwrap().to_string();
    let cert = &st.ledger(&guid)[0];
    assert_eq!(board.stored[0], pem_der(&cert.pem));
    let readcerts = requests(&st.sims[1])
        .into_iter()
        .filter(|(_, v)| v == "READCERT")
        .count();
    assert_eq!(readcerts, expected.len(), "read back in pieces too");
    // The store step's record counts the resend and the damaged frame.
    let (_, detail) = st.get(&format!("/api/v1/boards/{guid}")).await;
    let store = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == "store")
        .unwrap()
        .clone();
    assert_eq!(store["resends"], 1, "{store:#}");
    assert_eq!(store["damaged"], 1, "{store:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_cut_short_is_never_kept_and_a_board_that_cannot_read_us_is_named() {
    let st = TestStation::start_with(
        vec![with_fault("cut_store"), with_fault("nak")],
        300,
        "",
        |_| (),
    )
    .await;
    let boards = st.wait_finished(2, Duration::from_secs(60)).await;

    // The first piece went in, every later one came back as damaged: the
    // board keeps nothing, and the station never read back.
    let cut = &by_slot(&boards, 1)[0];
    assert_eq!(cut["status"], "failed", "{cut:#}");
    assert_eq!(cut["step"], "store");
    assert_eq!(cut["error_code"], "line_garbled");
    let board = st.sims[0].boards().pop().unwrap();
    assert_eq!(board.pieces, [0], "the board took the first piece only");
    let stores = requests(&st.sims[0])
        .iter()
        .filter(|(_, v)| v == "STORE")
        .count();
    assert_eq!(
        stores,
        1 + 8,
        "the second piece was sent as often as attempts allow"
    );
    assert!(board.stored.is_empty(), "a partial chain was kept");
    assert!(
        !requests(&st.sims[0]).iter().any(|(_, v)| v == "READCERT"),
        "no read-back after a failed store"
    );

    // Every request answered with a notice: line_garbled at the first
    // request, saying what the board said and what to do.
    let deaf = &by_slot(&boards, 2)[0];
    assert_eq!(deaf["status"], "failed", "{deaf:#}");
    assert_eq!(deaf["step"], "hello");
    assert_eq!(deaf["error_code"], "line_garbled");
    let text = deaf["error"].as_str().unwrap();
    assert!(text.contains("arrived damaged"), "{text}");
    assert!(text.contains("check or replace the cable"), "{text}");
    // HELLO was sent as often as attempts allow, no more, and nothing
    // after it.
    let seen = requests(&st.sims[1]);
    let hellos: Vec<&(u16, String)> = seen.iter().filter(|(_, v)| v == "HELLO").collect();
    assert_eq!(hellos.len(), 8);
    assert!(hellos.iter().all(|(id, _)| *id == hellos[0].0));
    assert!(!seen.iter().any(|(_, v)| v == "IDENT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_cable_is_named_on_the_slot_in_metrics_and_in_the_report() {
    let line = |boards| SimOptions {
        line: Some(station::sim::LineCycle {
            dwell: Duration::from_millis(50),
            pause: Duration::from_millis(100),
        }),
        boards: Some(boards),
        ..quick_board()
    };
    let sims = vec![
        PtySim::spawn(line(6)).unwrap(),
        PtySim::spawn(line(6)).unwrap(),
    ];
    // Slot 1 behind a clean cable, slot 2 behind one that flips about one
    // byte in 2,000: both at 115200 baud.
    let clean = NoisyCable::connect(&sims[0].device, CableOptions::default()).unwrap();
    let noisy = NoisyCable::connect(
        &sims[1].device,
        CableOptions {
            corrupt: 5e-4,
            seed: 42,
            ..CableOptions::default()
        },
    )
    .unwrap();
    let devices = [clean.device.clone(), noisy.device.clone()];
    let st = TestStation::start_on(sims, &devices, 500, &|_| String::new(), "", |_| ()).await;
    let boards = st.wait_finished(12, Duration::from_secs(120)).await;
    assert_eq!(clean.counts().corrupted, 0);
    assert!(noisy.counts().corrupted > 3, "{:?}", noisy.counts());
    for n in 1..=2 {
        let passed = by_slot(&boards, n)
            .iter()
            .filter(|b| b["status"] == "provisioned")
            .count();
        assert_eq!(passed, 6, "slot {n}: {boards:#?}");
    }

    // The slots' figures.
    let (_, slots) = st.get("/api/v1/slots").await;
    let line_of = |n: u64| {
        slots
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["slot"].as_u64() == Some(n))
            .unwrap()["line"]
            .clone()
    };
    let (l1, l2) = (line_of(1), line_of(2));
    assert_eq!(l1["damaged_frames_per_hour"], 0, "{l1:#}");
    assert_eq!(l1["resends_per_board"], 0.0, "{l1:#}");
    assert_eq!(l1["noisy"], false);
    assert!(
        l2["damaged_frames_per_hour"].as_u64().unwrap() > 0,
        "{l2:#}"
    );
    assert!(l2["resends_per_board"].as_f64().unwrap() > 0.0, "{l2:#}");
    assert_eq!(l2["noisy"], true, "{l2:#}");
    assert!(l2["boards_last_hour"].as_u64().unwrap() >= 6, "{l2:#}");

    // On the line view, the noisy slot's tile carries the mark.
    let session = session_of(&st, "ana", station::store::Role::Operator, "0042").await;
    let page = st.page_as(&session, "/").await;
    let tile = |n: u32| {
        let start = page
            .find(&format!("id=\"slot-{n}\""))
            .unwrap_or_else(|| panic!("no tile {n} in\n{page}"));
        let end = page[start..].find("</section>").unwrap() + start;
        page[start..end].to_string()
    };
    assert!(!tile(1).contains("class=\"noisy\""), "{}", tile(1));
    assert!(tile(2).contains("class=\"noisy\""), "{}", tile(2));
    assert!(
        tile(2).contains("Check or replace the cable"),
        "{}",
        tile(2)
    );

    // In /metrics.
    let metrics = st.text("/metrics").await;
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("station_jig_resends_total{slot=\"1\"}"), 0.0);
    assert!(value("station_jig_resends_total{slot=\"2\"}") > 0.0);
    assert!(value("station_jig_damaged_frames_total{slot=\"2\"}") > 0.0);
    assert_eq!(value("station_jig_noisy{slot=\"2\"}"), 1.0);
    assert_eq!(value("station_jig_noisy{slot=\"1\"}"), 0.0);

    // In the QA report, resends per board by slot.
    let (status, report) = st.get("/api/v1/reports?format=json").await;
    assert_eq!(status, 200, "{report:#}");
    let lines = report["line_by_slot"].as_array().unwrap();
    let slot = |n: u64| {
        lines
            .iter()
            .find(|l| l["slot"].as_u64() == Some(n))
            .unwrap()
            .clone()
    };
    assert_eq!(slot(1)["resends"], 0);
    assert!(slot(2)["resends_per_board"].as_f64().unwrap() > 0.0);
    assert_eq!(slot(2)["boards"], 6);
    let html = st.text("/api/v1/reports?format=html").await;
    assert!(html.contains("Jig lines"), "{html}");
    assert!(html.contains("noisy: check or replace the cable"));
}

/// The cable itself: bytes take their time on the line (10 bits a byte),
/// and are flipped, lost and held up at the rates asked, from the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cable_paces_and_damages_bytes_as_asked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_serial::SerialPort;

    let send = |opts: CableOptions| async move {
        let (mut board, far) = tokio_serial::SerialStream::pair().unwrap();
        let cable = NoisyCable::connect(&far.name().unwrap(), opts).unwrap();
        let mut station = tokio_serial::new(&cable.device, 19_200)
            .open_native_async()
            .unwrap();
        // 4,800 bytes at 19200 baud: 2.5 s on the line.
        let data: Vec<u8> = (0..4800u32).map(|i| b'A' + (i % 26) as u8).collect();
        let started = std::time::Instant::now();
        board.write_all(&data).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while got.len() < data.len() - cable.counts().dropped as usize {
            let n = tokio::time::timeout(Duration::from_secs(20), station.read(&mut buf))
                .await
                .expect("the cable stopped carrying bytes")
                .unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        let took = started.elapsed();
        drop(far);
        (data, got, took, cable.counts())
    };
    use tokio_serial::SerialPortBuilderExt;

    // Clean: every byte, in order, no sooner than the line allows.
    let opts = CableOptions {
        baud: 19_200,
        ..CableOptions::default()
    };
    let (data, got, took, counts) = send(opts).await;
    assert_eq!(got, data);
    assert_eq!(counts.bytes, 4800);
    assert!(
        took >= Duration::from_millis(2450),
        "{took:?} for 2.5 s of line"
    );

    // Noisy: flips and losses at about the rates asked, stalls counted.
    let noisy = CableOptions {
        baud: 19_200,
        corrupt: 0.01,
        drop: 0.01,
        stall: 0.002,
        stall_time: Duration::from_millis(20),
        seed: 7,
    };
    let (data, got, _, counts) = send(noisy).await;
    assert!((20..=80).contains(&counts.corrupted), "{counts:?}");
    assert!((20..=80).contains(&counts.dropped), "{counts:?}");
    assert!(counts.stalled >= 1, "{counts:?}");
    assert_eq!(got.len(), data.len() - counts.dropped as usize);
    let flipped = got.iter().filter(|b| !b.is_ascii_uppercase()).count() as u64;
    assert!(
        flipped > 0 && flipped <= counts.corrupted,
        "{flipped} {counts:?}"
    );
}
