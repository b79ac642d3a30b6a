//! The driver against scripted fakes: a scripted jig that panics on any
//! request it did not expect, and a CA that fails on demand.

use super::*;
use crate::ca::{FileCa, ScriptedCa};
use crate::jig::fake::{Scripted, ScriptedLink};
use crate::jig::protocol::b64;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

const GUID: &str = "0a1b2c3d-0000-4000-8000-0000000000cc";

fn ok(args: &[(&str, &str)]) -> Result<Vec<(String, String)>, LinkError> {
    Ok(args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn answer(verb: &'static str, reply: Result<Vec<(String, String)>, LinkError>) -> Scripted {
    Scripted::Answer { verb, reply }
}

fn ident() -> Scripted {
    answer(
        "IDENT",
        ok(&[
            ("guid", GUID),
            ("hw", "B2"),
            ("fw", "1.0"),
            ("mac", "02:00:00:00:00:01"),
        ]),
    )
}

fn link_down() -> Scripted {
    answer(
        "STATUS",
        Err(LinkError::Io {
            device: "scripted".into(),
            reason: "end of script".into(),
        }),
    )
}

fn csr() -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, GUID);
    b64(p.serialize_request(&key).unwrap().der())
}

fn driver(dir: &std::path::Path, ca_failures: Vec<String>) -> SlotDriver {
    let ca = FileCa::init(&dir.join("ca.pem"), &dir.join("ca.key"), "T", 10, false).unwrap();
    let view = SlotBoard::default();
    view.add(SlotId(1), "scripted", false);
    SlotDriver {
        settings: SlotSettings {
            station_id: "st".into(),
            slot: SlotId(1),
            leaf_validity_days: 10,
            poll: Duration::from_millis(10),
            reconnect: Duration::from_millis(10),
        },
        store: Store::open(&dir.join("station.db")).unwrap(),
        ca: Arc::new(ScriptedCa::new(ca, ca_failures)),
        view,
        enrollment: Arc::new(EnrollmentTemplate {
            line: "l".into(),
            desired_properties: Default::default(),
            allocation_policy: None,
            iot_hubs: vec![],
        }),
        uploads: Default::default(),
        labels: Default::default(),
        work_order: Default::default(),
    }
}

#[tokio::test]
async fn a_ca_failure_fails_the_board_and_records_no_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path(), vec!["the HSM did not answer".into()]);
    let mut link = ScriptedLink::new(vec![
        answer(
            "STATUS",
            ok(&[("present", "1"), ("test", "pass"), ("done", "none")]),
        ),
        answer("HELLO", ok(&[("v", "1")])),
        ident(),
        answer("KEYGEN", ok(&[("csr", &csr())])),
        answer("FINISH", ok(&[])),
        link_down(),
    ]);
    let e = d
        .drive(&mut link, &mut tokio::sync::mpsc::channel(1).1)
        .await;
    assert_eq!(e.code(), "serial_failed");
    assert!(link.finished(), "every scripted exchange happened");

    let guid: crate::ids::Guid = GUID.parse().unwrap();
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.status, "failed");
    assert_eq!(board.error_code.as_deref(), Some("ca_failed"));
    assert!(board.error.unwrap().contains("the HSM did not answer"));
    assert!(d.store.certificates(&guid).unwrap().is_empty());
    assert!(link.received.contains(&Request::Finish {
        pass: false,
        code: Some("ca_failed".into())
    }));
    let view = &d.view.all()[0];
    assert_eq!(
        (view.state, view.error_code.as_deref()),
        ("failed", Some("ca_failed"))
    );
}

#[tokio::test]
async fn a_board_pulled_between_steps_is_failed_as_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = driver(dir.path(), vec![]);
    let mut link = ScriptedLink::new(vec![
        answer(
            "STATUS",
            ok(&[("present", "1"), ("test", "pass"), ("done", "none")]),
        ),
        answer("HELLO", ok(&[("v", "1")])),
        ident(),
        Scripted::Event(JigEvent::Removed),
        // No FINISH: there is no board left to show a verdict.
        link_down(),
    ]);
    d.drive(&mut link, &mut tokio::sync::mpsc::channel(1).1)
        .await;
    assert!(link.finished());
    let guid: crate::ids::Guid = GUID.parse().unwrap();
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.error_code.as_deref(), Some("board_removed"));
    let steps = d.store.steps(board.id).unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        names,
        ["hello", "identify"],
        "no step begun after the removal"
    );
    assert!(steps.iter().all(|s| s.outcome.as_deref() == Some("ok")));
}
