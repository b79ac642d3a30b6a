//! Every simulator fault and every kind of line garbage, on slots running
//! side by side with healthy ones: each ends in its own specific error on
//! that board's record and in the log; the healthy slots are unaffected; no
//! certificate is recorded for a refused CSR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use station::sim::SimOptions;

/// Captures the station's log for this test binary.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_log() -> Log {
    let log = Log::default();
    let w = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || w.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .init();
    log
}

struct Case {
    fault: &'static str,
    code: &'static str,
    /// Words the operator's message must contain.
    says: &'static [&'static str],
    /// The ledger for this board: None (nothing issued) or the state of the
    /// one certificate issued.
    ledger: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case {
        fault: "corrupt@IDENT",
        code: "line_garbled",
        says: &["IDENT", "checksum is wrong", "check the cable"],
        ledger: None,
    },
    Case {
        fault: "drop@KEYGEN",
        code: "no_answer",
        says: &["no answer", "KEYGEN", "powered"],
        ledger: None,
    },
    Case {
        fault: "silence@IDENT",
        code: "no_answer",
        says: &["no answer", "IDENT"],
        ledger: None,
    },
    Case {
        fault: "wrong_guid",
        code: "csr_wrong_guid",
        says: &["names", "reported GUID", "set it aside"],
        ledger: None,
    },
    Case {
        fault: "wrong_key",
        code: "csr_bad_signature",
        says: &["not signed by the key it carries"],
        ledger: None,
    },
    Case {
        fault: "not_p256",
        code: "csr_not_p256",
        says: &["P-384", "not P-256"],
        ledger: None,
    },
    Case {
        fault: "refuse_store",
        code: "board_refused",
        says: &["refused STORE", "flash_write_failed", "did not erase"],
        ledger: Some("abandoned"),
    },
    Case {
        fault: "fail_test",
        code: "test_failed",
        says: &["functional test failed", "rf_power_low", "rework"],
        ledger: None,
    },
    Case {
        fault: "garbage@IDENT",
        code: "line_garbled",
        says: &["IDENT", "no usable answer", "not printable"],
        ledger: None,
    },
    Case {
        fault: "oversized@HELLO",
        code: "line_garbled",
        says: &["HELLO", "longer than 4096 bytes"],
        ledger: None,
    },
    Case {
        fault: "bad_crc@READCERT",
        code: "line_garbled",
        says: &["READCERT", "checksum is wrong"],
        ledger: Some("abandoned"),
    },
    Case {
        fault: "truncated@SIGN",
        code: "line_garbled",
        says: &["SIGN", "cut short"],
        ledger: Some("abandoned"),
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_fails_only_its_own_board_with_its_own_error() {
    let log = capture_log();
    let mut boards: Vec<SimOptions> = CASES.iter().map(|c| with_fault(c.fault)).collect();
    boards.push(quick_board());
    boards.push(quick_board());
    let healthy = [CASES.len() + 1, CASES.len() + 2];
    let st = TestStation::start(boards).await;
    let finished = st
        .wait_finished(CASES.len() + 2, Duration::from_secs(60))
        .await;

    for (i, case) in CASES.iter().enumerate() {
        let slot = i as u64 + 1;
        let b = finished
            .iter()
            .find(|b| b["slot"].as_u64() == Some(slot))
            .unwrap_or_else(|| panic!("no record for {}", case.fault));
        assert_eq!(b["status"], "failed", "{}: {b:#}", case.fault);
        assert_eq!(b["error_code"], case.code, "{}: {b:#}", case.fault);
        let msg = b["error"].as_str().unwrap();
        for word in case.says {
            assert!(
                msg.contains(word),
                "{}: {word:?} missing from {msg:?}",
                case.fault
            );
        }
        // What the simulator's board was, and what the ledger holds for it.
        let guid = st.sims[i].boards()[0].guid.to_string();
        let ledger = st.ledger(&guid);
        match case.ledger {
            None => assert!(
                ledger.is_empty(),
                "{}: certificate recorded: {ledger:?}",
                case.fault
            ),
            Some(state) => {
                assert_eq!(ledger.len(), 1, "{}", case.fault);
                assert_eq!(ledger[0].state, state, "{}", case.fault);
            }
        }
        // The slot's view shows the failure until the board is removed.
        let (_, slots) = st.get("/api/v1/slots").await;
        let view = &slots[i];
        assert_eq!(view["state"], "failed", "{}: {view:#}", case.fault);
        assert_eq!(view["error_code"], case.code);
    }
    for slot in healthy {
        let b = finished
            .iter()
            .find(|b| b["slot"].as_u64() == Some(slot as u64))
            .unwrap();
        assert_eq!(b["status"], "provisioned", "healthy slot {slot}: {b:#}");
    }

    // Idle polls do not start a failed board over: one record per visit,
    // whether or not the jig took the verdict.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = st.boards().await;
    for slot in 1..=CASES.len() as u64 + 2 {
        let n = all
            .iter()
            .filter(|b| b["slot"].as_u64() == Some(slot))
            .count();
        assert_eq!(n, 1, "slot {slot} has {n} records: {all:#?}");
    }

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for case in CASES {
        assert!(
            text.lines()
                .any(|l| l.contains("board failed") && l.contains(&format!("code={}", case.code))),
            "log has no failure line for {} ({})",
            case.fault,
            case.code
        );
    }
}

/// A damaged answer is retried with the same request id; the board answers
/// the repeat from memory, so it makes one key, and the board passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_garbage_is_retried_and_the_board_acts_once() {
    let mut boards = Vec::new();
    for fault in [
        "corrupt@KEYGEN",
        "truncated@STORE",
        "drop@SIGN",
        "bad_crc@IDENT",
        "garbage@FINISH",
    ] {
        boards.push(SimOptions {
            fault_times: Some(1),
            ..with_fault(fault)
        });
    }
    let st = TestStation::start(boards).await;
    let finished = st.wait_finished(5, Duration::from_secs(30)).await;
    for b in &finished {
        assert_eq!(b["status"], "provisioned", "{b:#}");
    }
    let sim = &st.sims[0];
    let requests = sim.seen.lock().unwrap().requests.clone();
    let keygens: Vec<u16> = requests
        .iter()
        .filter(|(_, v)| v == "KEYGEN")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(keygens.len(), 2, "sent twice: {requests:?}");
    assert_eq!(keygens[0], keygens[1], "with the same id");
    // One key: the certificate carries the key of the only CSR.
    let board = &sim.boards()[0];
    let guid = board.guid.to_string();
    let pem = st.ledger(&guid)[0].pem.clone();
    let der = pem_der(&pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(Some(cert.public_key().raw.to_vec()), board.public_key_spki);
}

/// `fault_times` limits board faults too: in line mode the first board
/// fails its functional test, the next one is provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_that_strikes_once_spoils_one_board() {
    let opts = SimOptions {
        fault_times: Some(1),
        line: Some(station::sim::LineCycle {
            dwell: Duration::from_millis(50),
            pause: Duration::from_millis(50),
        }),
        ..with_fault("fail_test")
    };
    let st = TestStation::start(vec![opts]).await;
    let mut finished = st.wait_finished(2, Duration::from_secs(30)).await;
    finished.sort_by_key(|b| b["id"].as_i64());
    assert_eq!(finished[0]["error_code"], "test_failed", "{finished:#?}");
    assert!(
        finished[0]["guid"].is_string(),
        "a board failing its test is still identified"
    );
    assert_eq!(finished[1]["status"], "provisioned", "{finished:#?}");
    assert!(st.ledger(finished[0]["guid"].as_str().unwrap()).is_empty());
}

/// A jig whose device cannot be opened is reported on its slot and retried;
/// the other slots run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_jig_is_reported_and_others_run() {
    let sim = station::sim::PtySim::spawn(quick_board()).unwrap();
    let devices = vec!["/dev/this-jig-is-unplugged".to_string(), sim.device.clone()];
    let (_dir, cfg) = prepare(&devices, 300);
    let app = station::app::start(&cfg, false).await.unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let slots = app.slots.all();
        if slots[1].state == "provisioned" && slots[0].link_error.is_some() {
            let e = slots[0].link_error.clone().unwrap();
            assert!(
                e.contains("/dev/this-jig-is-unplugged") && e.contains("still connected"),
                "{e}"
            );
            assert_eq!(slots[0].link, "disconnected");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop();
    assert!(ok, "slots: {:#?}", app.slots.all());
}
