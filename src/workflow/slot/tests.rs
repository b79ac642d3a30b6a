//! The driver against scripted fakes: a scripted jig that panics on any
//! request it did not expect, and a CA that fails on demand.

use super::*;
use crate::ca::{FactoryCa, ScriptedCa};
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
    let ca = FactoryCa::init(&dir.join("ca.pem"), &dir.join("ca.key"), "T", 10, false).unwrap();
    let view = SlotBoard::default();
    view.add(SlotId(1), "scripted", false);
    SlotDriver {
        settings: SlotSettings {
            station_id: "st".into(),
            slot: SlotId(1),
            leaf_validity_days: 10,
            poll: Duration::from_millis(10),
            reconnect: Duration::from_millis(10),
            piece_bytes: 256,
        },
        store: Store::open(&dir.join("station.db")).unwrap(),
        ca: Arc::new(ScriptedCa::new(ca, ca_failures)),
        view,
        enrollment: Arc::new(EnrollmentTemplate {
            line: "l".into(),
            desired_properties: Default::default(),
            allocation_policy: None,
            iot_hubs: vec![],
            attestation: crate::config::Attestation::X509,
            individual: true,
        }),
        uploads: Default::default(),
        labels: Default::default(),
        keys: super::KeySource::Board,
        work_order: Default::default(),
        registration: None,
        device_keys: None,
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
        .drive(
            &mut link,
            &mut tokio::sync::mpsc::channel(1).1,
            &mut Default::default(),
        )
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
    d.drive(
        &mut link,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
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

fn tpm_driver(dir: &std::path::Path, tpm: Arc<crate::tpm::SoftTpm>) -> SlotDriver {
    let mut d = driver(dir, vec![]);
    d.keys = super::KeySource::Tpm(Arc::new(move || {
        Ok(tpm.clone() as Arc<dyn crate::tpm::BoardTpm>)
    }));
    d.enrollment = Arc::new(EnrollmentTemplate {
        attestation: crate::config::Attestation::Tpm {
            dps_registration_id: false,
        },
        individual: true,
        ..(*d.enrollment).clone()
    });
    d
}

fn tpm_script(finish: Scripted) -> ScriptedLink {
    ScriptedLink::new(vec![
        answer(
            "STATUS",
            ok(&[("present", "1"), ("test", "pass"), ("done", "none")]),
        ),
        answer("HELLO", ok(&[("v", "1")])),
        ident(),
        finish,
        link_down(),
    ])
}

#[tokio::test]
async fn a_tpm_board_gets_its_key_proof_and_chain_through_the_tpm() {
    use crate::tpm::BoardTpm;
    let dir = tempfile::tempdir().unwrap();
    let tpm = Arc::new(crate::tpm::SoftTpm::default());
    let d = tpm_driver(dir.path(), tpm.clone());
    // The jig sees no KEYGEN, STORE, READCERT or SIGN: the TPM does those.
    let mut link = tpm_script(answer("FINISH", ok(&[])));
    d.drive(
        &mut link,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    assert!(link.finished(), "only the scripted requests were made");
    let guid: crate::ids::Guid = GUID.parse().unwrap();
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.status, "provisioned", "{board:?}");
    let ledger = d.store.certificates(&guid).unwrap();
    let der = crate::ca::pem_to_der(&ledger[0].pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        tpm.public_key().unwrap().as_slice(),
        "the certificate is for the TPM's key"
    );
    let nv = tpm.read_nv(crate::tpm::NvArea::Chain).unwrap();
    assert!(
        nv.starts_with(&der),
        "the NV index holds the chain, leaf first"
    );
    let job = &d.store.due_jobs(10).unwrap()[0];
    let body: serde_json::Value = serde_json::from_str(&job.body).unwrap();
    use base64::Engine;
    assert_eq!(
        body["attestation"]["tpm"]["endorsementKey"],
        base64::engine::general_purpose::STANDARD.encode(&tpm.ek)
    );
}

#[tokio::test]
async fn a_tpm_fault_after_issuing_fails_the_board_with_the_certificate_on_record() {
    for (fault, code, words) in [
        (
            crate::tpm::TpmError::Unreachable {
                tcti: "swtpm:host=127.0.0.1,port=1".into(),
                reason: "connection refused".into(),
            },
            "tpm_unreachable",
            "cannot be reached",
        ),
        (
            crate::tpm::TpmError::NvIndexDefined { index: 0x0150_0001 },
            "tpm_nv_defined",
            "tpm2_nvundefine 0x01500001",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Arc::new(crate::tpm::SoftTpm::default());
        tpm.fail_next("write_nv", fault);
        let d = tpm_driver(dir.path(), tpm);
        let mut link = tpm_script(answer("FINISH", ok(&[])));
        d.drive(
            &mut link,
            &mut tokio::sync::mpsc::channel(1).1,
            &mut Default::default(),
        )
        .await;
        let guid: crate::ids::Guid = GUID.parse().unwrap();
        let board = d.store.board(&guid).unwrap().unwrap();
        assert_eq!(board.error_code.as_deref(), Some(code));
        assert!(board.error.unwrap().contains(words));
        let ledger = d.store.certificates(&guid).unwrap();
        assert_eq!(ledger.len(), 1, "issued, so on record");
        assert_eq!(ledger[0].state, "abandoned");
        assert!(link.received.contains(&Request::Finish {
            pass: false,
            code: Some(code.into())
        }));
    }
}

#[tokio::test]
async fn a_tpm_that_cannot_make_a_key_fails_the_board_before_any_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = Arc::new(crate::tpm::SoftTpm::default());
    tpm.fail_next("create_key", crate::tpm::TpmError::Lockout);
    let d = tpm_driver(dir.path(), tpm);
    let mut link = tpm_script(answer("FINISH", ok(&[])));
    d.drive(
        &mut link,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    let guid: crate::ids::Guid = GUID.parse().unwrap();
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.error_code.as_deref(), Some("tpm_lockout"));
    assert!(board.error.unwrap().contains("dictionary-attack lockout"));
    assert!(d.store.certificates(&guid).unwrap().is_empty());
}

#[tokio::test]
async fn a_board_that_does_not_take_the_station_key_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = driver(dir.path(), vec![]);
    d.keys = super::KeySource::Station;
    let other = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let wrong = b64(other.verifying_key().to_encoded_point(false).as_bytes());
    let mut link = ScriptedLink::new(vec![
        answer(
            "STATUS",
            ok(&[("present", "1"), ("test", "pass"), ("done", "none")]),
        ),
        answer("HELLO", ok(&[("v", "1")])),
        ident(),
        answer("KEYLOAD", ok(&[("pub", &wrong)])),
        answer("FINISH", ok(&[])),
        link_down(),
    ]);
    d.drive(
        &mut link,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    assert!(link.finished());
    let guid: crate::ids::Guid = GUID.parse().unwrap();
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.error_code.as_deref(), Some("key_load_mismatch"));
    assert!(d.store.certificates(&guid).unwrap().is_empty());
    let sent = link
        .received
        .iter()
        .find(|r| matches!(r, Request::KeyLoad { .. }))
        .unwrap();
    assert_eq!(
        format!("{sent:?}"),
        "KeyLoad { key: SecretScalar([redacted]) }"
    );
}

#[tokio::test]
async fn a_retry_uses_again_the_tpm_key_left_by_its_failed_attempt_and_no_other() {
    use crate::tpm::BoardTpm;
    let dir = tempfile::tempdir().unwrap();
    let tpm = Arc::new(crate::tpm::SoftTpm::default());
    // Fails at the read-back: the key is made and the chain is in NV.
    tpm.fail_next("read_nv", crate::tpm::TpmError::Lockout);
    let d = tpm_driver(dir.path(), tpm.clone());
    let mut first = tpm_script(answer("FINISH", ok(&[])));
    d.drive(
        &mut first,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    let guid: crate::ids::Guid = GUID.parse().unwrap();
    assert_eq!(
        d.store.board(&guid).unwrap().unwrap().error_code.as_deref(),
        Some("tpm_lockout")
    );
    let key = tpm.public_key().unwrap();
    let old_chain = tpm.read_nv(crate::tpm::NvArea::Chain).unwrap();
    // The board is tried again: the key at the handle and the chain in NV
    // are the station's own, from the failed attempt.
    let mut again = tpm_script(answer("FINISH", ok(&[])));
    d.drive(
        &mut again,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.status, "provisioned", "{board:?}");
    let ledger = d.store.certificates(&guid).unwrap();
    let installed = ledger.iter().find(|c| c.state == "installed").unwrap();
    let der = crate::ca::pem_to_der(&installed.pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.as_slice()
    );
    let chain = tpm.read_nv(crate::tpm::NvArea::Chain).unwrap();
    assert!(
        chain.starts_with(&der) && chain != old_chain,
        "the new chain replaced the old"
    );

    // A key the station did not make is left alone.
    let dir = tempfile::tempdir().unwrap();
    let foreign = Arc::new(crate::tpm::SoftTpm::default());
    foreign.create_key().unwrap();
    let d = tpm_driver(dir.path(), foreign);
    let mut link = tpm_script(answer("FINISH", ok(&[])));
    d.drive(
        &mut link,
        &mut tokio::sync::mpsc::channel(1).1,
        &mut Default::default(),
    )
    .await;
    let board = d.store.board(&guid).unwrap().unwrap();
    assert_eq!(board.error_code.as_deref(), Some("tpm_handle_in_use"));
    assert!(board.error.unwrap().contains("tpm2_evictcontrol"));
    assert!(d.store.certificates(&guid).unwrap().is_empty());
}

/// A TPM slot's settings NV index: settings the station wrote for this
/// device before (here with another ID scope) are replaced; anything else
/// there is left alone and the board fails with the fix named.
#[tokio::test]
async fn a_tpm_slots_settings_replace_its_own_earlier_ones_and_nothing_else() {
    use crate::core::settings::ProvisioningSettings;
    use crate::tpm::{BoardTpm, NvArea};
    let reg = super::Registration {
        endpoint: "global.azure-devices-provisioning.net".into(),
        id_scope: "0ne00NEW001".into(),
    };
    let earlier = ProvisioningSettings {
        endpoint: reg.endpoint.clone(),
        id_scope: "0ne00OLD001".into(),
        registration_id: GUID.into(),
        attestation: "tpm".into(),
    };
    for (held, provisioned) in [
        (earlier.to_nv(), true),
        (b"somebody else's data".to_vec(), false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Arc::new(crate::tpm::SoftTpm::default());
        tpm.write_nv(NvArea::Settings, &held).unwrap();
        let mut d = tpm_driver(dir.path(), tpm.clone());
        d.registration = Some(reg.clone());
        let mut link = tpm_script(answer("FINISH", ok(&[])));
        d.drive(
            &mut link,
            &mut tokio::sync::mpsc::channel(1).1,
            &mut Default::default(),
        )
        .await;
        let guid: crate::ids::Guid = GUID.parse().unwrap();
        let board = d.store.board(&guid).unwrap().unwrap();
        let now_held = tpm.read_nv(NvArea::Settings).unwrap();
        if provisioned {
            assert_eq!(board.status, "provisioned", "{board:?}");
            let kept = ProvisioningSettings::from_nv(&now_held).unwrap();
            assert_eq!(kept.id_scope, "0ne00NEW001");
            assert_eq!(board.settings, Some(kept));
        } else {
            assert_eq!(board.status, "failed", "{board:?}");
            assert_eq!(board.error_code.as_deref(), Some("tpm_nv_defined"));
            assert_eq!(now_held, held, "left alone");
        }
    }
}
