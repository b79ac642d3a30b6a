use super::*;
use crate::ca::{CaSigner, FactoryCa, issue_leaf};
use crate::ids::Guid;
use crate::jig::protocol::key_proof_message;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SigningKey,
};

struct Bench {
    _dir: tempfile::TempDir,
    ca: FactoryCa,
    key: KeyPair,
    id: BoardIdentity,
}

fn bench() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let ca = FactoryCa::init(
        &dir.path().join("ca.pem"),
        &dir.path().join("ca.key"),
        "T",
        10,
        false,
    )
    .unwrap();
    let id = BoardIdentity {
        guid: "0a1b2c3d-0000-4000-8000-00000000abcd".parse().unwrap(),
        hw_revision: "B2".into(),
        fw_version: "1.0".into(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
    };
    Bench {
        _dir: dir,
        ca,
        key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
        id,
    }
}

impl Bench {
    fn csr(&self, cn: &str) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&self.key).unwrap().der().to_vec()
    }
    fn issued(&self, csr: &CheckedCsr) -> IssuedCert {
        let leaf = issue_leaf(&self.ca, csr, time::OffsetDateTime::now_utc(), 10).unwrap();
        IssuedCert {
            serial: leaf.serial,
            chain: vec![leaf.der, self.ca.certificate_der().to_vec()],
        }
    }
}

fn run_action(cmds: &[Command]) -> Option<&Action> {
    cmds.iter().find_map(|c| match c {
        Command::Run(a) => Some(a),
        _ => None,
    })
}

/// Drives a fresh board to the KeyGen step.
fn to_keygen(b: &Bench) -> SlotState {
    let (s, c) = step(SlotState::Empty, Event::Inserted);
    assert!(c.is_empty());
    let (s, c) = step(s, Event::TestPassed);
    assert_eq!(c, vec![Command::OpenBoard, Command::Run(Action::Hello)]);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, c) = step(s, Event::Done(Output::Identified(b.id.clone())));
    assert!(c.contains(&Command::RecordIdentity(b.id.clone())));
    assert_eq!(run_action(&c), Some(&Action::Review(b.id.clone())));
    let (s, c) = step(
        s,
        Event::Done(Output::Reviewed(Review::Fresh {
            override_granted: false,
        })),
    );
    assert_eq!(run_action(&c), Some(&Action::KeyGen(b.id.clone())));
    s
}

#[test]
fn a_good_board_goes_all_the_way() {
    let b = bench();
    let s = to_keygen(&b);
    let (s, c) = step(s, Event::Done(Output::Csr(b.csr(b.id.guid.as_str()))));
    let Some(Action::Issue {
        csr,
        override_used: false,
    }) = run_action(&c)
    else {
        panic!("{c:?}")
    };
    let cert = b.issued(csr);
    let (s, c) = step(s, Event::Done(Output::Issued(cert.clone())));
    assert_eq!(run_action(&c), Some(&Action::Store(cert.chain.clone())));
    let (s, c) = step(s, Event::Done(Output::Stored));
    assert_eq!(run_action(&c), Some(&Action::ReadBack));
    let (s, c) = step(s, Event::Done(Output::ReadBack(cert.chain.clone())));
    assert_eq!(run_action(&c), Some(&Action::Prove));
    let nonce = [7u8; 32];
    let signature = b.key.sign(&key_proof_message(&nonce)).unwrap();
    let (s, c) = step(s, Event::Done(Output::Signed { nonce, signature }));
    assert_eq!(run_action(&c), Some(&Action::Settings));
    // Recorded before the jig hears a word: Complete, then FINISH.
    let (s, c) = step(s, Event::Done(Output::SettingsDone));
    assert_eq!(
        c,
        vec![
            Command::EndStep {
                step: Step::Settings,
                error: None
            },
            Command::Complete {
                serial: Some(cert.serial.clone())
            }
        ]
    );
    assert_eq!(run_action(&c), None, "no FINISH before the record");
    let (s, c) = step(s, Event::Done(Output::Completed));
    assert_eq!(c, vec![Command::Run(Action::Finish)]);
    let (s, c) = step(s, Event::Done(Output::Finished));
    assert_eq!(
        c,
        vec![Command::EndStep {
            step: Step::Finish,
            error: None
        }]
    );
    assert_eq!(
        s,
        SlotState::Done(Outcome::Provisioned {
            serial: Some(cert.serial)
        })
    );
    let (s, c) = step(s, Event::Removed);
    assert_eq!((s, c), (SlotState::Empty, vec![]));
}

/// A symmetric-key device: its key is written and proven (the driver
/// checks the HMAC), then the settings, and it completes without a
/// certificate; a proof before any key was written is not taken.
#[test]
fn a_symmetric_key_device_completes_without_a_certificate() {
    let b = bench();
    let s = to_keygen(&b);
    let (s, c) = step(s, Event::Done(Output::KeyWritten));
    assert_eq!(run_action(&c), Some(&Action::Prove));
    let (s, c) = step(s, Event::Done(Output::KeyProven));
    assert_eq!(run_action(&c), Some(&Action::Settings));
    let (s, c) = step(s, Event::Done(Output::SettingsDone));
    assert_eq!(c.last(), Some(&Command::Complete { serial: None }));
    let (s, c) = step(s, Event::Done(Output::Completed));
    assert_eq!(run_action(&c), Some(&Action::Finish));
    let (s, _) = step(s, Event::Done(Output::Finished));
    assert_eq!(s, SlotState::Done(Outcome::Provisioned { serial: None }));

    // A proof of a key that was never written fails the board.
    let s = to_keygen(&b);
    let (s, c) = step(s, Event::Done(Output::Csr(b.csr(b.id.guid.as_str()))));
    assert!(matches!(run_action(&c), Some(Action::Issue { .. })));
    let SlotState::Busy { board, .. } = &s else {
        panic!("{s:?}")
    };
    let s = SlotState::Busy {
        step: Step::Prove,
        board: board.clone(),
    };
    let (s, _) = step(s, Event::Done(Output::KeyProven));
    assert_eq!(failed_code(&s), "internal");
}

fn failed_code(s: &SlotState) -> &str {
    match s {
        SlotState::Done(Outcome::Failed(f)) => &f.code,
        other => panic!("not failed: {other:?}"),
    }
}

#[test]
fn refused_csrs_never_reach_the_signer() {
    let b = bench();
    let other: Guid = "0a1b2c3d-0000-4000-8000-000000000000".parse().unwrap();
    for (csr, code) in [
        (b.csr(other.as_str()), "csr_wrong_guid"),
        (b"junk".to_vec(), "csr_unreadable"),
    ] {
        let (s, c) = step(to_keygen(&b), Event::Done(Output::Csr(csr)));
        assert_eq!(failed_code(&s), code);
        assert!(
            !c.iter()
                .any(|c| matches!(c, Command::Run(Action::Issue { .. }))),
            "{c:?}"
        );
        assert!(c.iter().any(|c| matches!(c, Command::Fail(_))));
        assert!(c.contains(&Command::NotifyFailed { code: code.into() }));
    }
}

#[test]
fn a_wrong_signature_or_readback_fails_the_board() {
    let b = bench();
    let s = to_keygen(&b);
    let (s, c) = step(s, Event::Done(Output::Csr(b.csr(b.id.guid.as_str()))));
    let Some(Action::Issue { csr, .. }) = run_action(&c) else {
        panic!()
    };
    let cert = b.issued(csr);
    let (s, _) = step(s, Event::Done(Output::Issued(cert.clone())));
    let (at_readback, _) = step(s, Event::Done(Output::Stored));

    let (s, _) = step(
        at_readback.clone(),
        Event::Done(Output::ReadBack(vec![cert.chain[1].clone()])),
    );
    assert_eq!(failed_code(&s), "readback_mismatch");

    let (s, _) = step(
        at_readback,
        Event::Done(Output::ReadBack(cert.chain.clone())),
    );
    let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let nonce = [1u8; 32];
    let signature = other.sign(&key_proof_message(&nonce)).unwrap();
    let (s2, _) = step(s.clone(), Event::Done(Output::Signed { nonce, signature }));
    assert_eq!(failed_code(&s2), "key_proof_failed");
    // A genuine signature over another nonce does not pass either.
    let signature = b.key.sign(&key_proof_message(&[2u8; 32])).unwrap();
    let (s3, _) = step(s, Event::Done(Output::Signed { nonce, signature }));
    assert_eq!(failed_code(&s3), "key_proof_failed");
}

#[test]
fn resume_stores_the_certificate_already_issued() {
    let b = bench();
    let (s, _) = step(SlotState::Empty, Event::TestPassed);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, _) = step(s, Event::Done(Output::Identified(b.id.clone())));
    let csr = check_csr(&b.csr(b.id.guid.as_str()), &b.id.guid).unwrap();
    let cert = b.issued(&csr);
    let (_, c) = step(
        s,
        Event::Done(Output::Reviewed(Review::Resume(cert.clone()))),
    );
    assert_eq!(run_action(&c), Some(&Action::Store(cert.chain)));
    assert!(
        !c.iter()
            .any(|c| matches!(c, Command::Run(Action::KeyGen(_))))
    );
}

#[test]
fn already_provisioned_and_override() {
    let b = bench();
    let (s, _) = step(SlotState::Empty, Event::TestPassed);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, _) = step(s, Event::Done(Output::Identified(b.id.clone())));
    let (f, _) = step(
        s.clone(),
        Event::Done(Output::Reviewed(Review::AlreadyProvisioned {
            serial: crate::ids::Serial("ab".into()),
            issued_at: "2026-11-01".into(),
        })),
    );
    assert_eq!(failed_code(&f), "already_provisioned");
    if let SlotState::Done(Outcome::Failed(f)) = f {
        assert!(
            f.message.contains("station board override"),
            "{}",
            f.message
        );
    }
    let (s, _) = step(
        s,
        Event::Done(Output::Reviewed(Review::Fresh {
            override_granted: true,
        })),
    );
    let (_, c) = step(s, Event::Done(Output::Csr(b.csr(b.id.guid.as_str()))));
    assert!(matches!(
        run_action(&c),
        Some(Action::Issue {
            override_used: true,
            ..
        })
    ));
}

#[test]
fn a_revoked_device_fails_at_review() {
    let b = bench();
    let (s, _) = step(SlotState::Empty, Event::TestPassed);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, _) = step(s, Event::Done(Output::Identified(b.id.clone())));
    let (f, c) = step(
        s,
        Event::Done(Output::Reviewed(Review::Revoked {
            revoked_at: "2026-11-20T10:00:00Z".into(),
        })),
    );
    assert_eq!(failed_code(&f), "device_revoked");
    assert!(!matches!(run_action(&c), Some(Action::KeyGen(_))));
    if let SlotState::Done(Outcome::Failed(f)) = f {
        assert!(f.message.contains("admin"), "{}", f.message);
        assert!(f.message.contains("2026-11-20"), "{}", f.message);
    }
}

#[test]
fn removal_mid_step_fails_with_the_step_named() {
    let b = bench();
    let s = to_keygen(&b);
    let (s, c) = step(s, Event::Removed);
    assert_eq!(failed_code(&s), "board_removed");
    assert!(matches!(
        &c[0],
        Command::EndStep {
            step: Step::KeyGen,
            error: Some(_)
        }
    ));
    // An answer arriving afterwards changes nothing.
    let (s2, c) = step(s.clone(), Event::Done(Output::Stored));
    assert_eq!((s2, c), (s, vec![]));
}

#[test]
fn link_failures_and_versions() {
    let (s, _) = step(SlotState::Testing, Event::TestPassed);
    let (f, c) = step(
        s.clone(),
        Event::Failed(Failure::new("no_answer", "no answer")),
    );
    assert_eq!(failed_code(&f), "no_answer");
    assert!(matches!(
        &c[0],
        Command::EndStep {
            step: Step::Hello,
            error: Some(_)
        }
    ));
    let (f, _) = step(s, Event::Done(Output::Hello { version: 2 }));
    assert_eq!(failed_code(&f), "protocol_version");
}

#[test]
fn a_failed_functional_test_is_identified_then_failed() {
    let b = bench();
    let (s, c) = step(
        SlotState::Testing,
        Event::TestFailed {
            code: "rf_power_low".into(),
            message: "RF low".into(),
        },
    );
    assert_eq!(c, vec![Command::OpenBoard, Command::Run(Action::Identify)]);
    let (s2, c) = step(s.clone(), Event::Done(Output::Identified(b.id.clone())));
    assert_eq!(failed_code(&s2), "test_failed");
    assert_eq!(c[0], Command::RecordIdentity(b.id.clone()));
    assert!(!c.iter().any(|c| matches!(c, Command::Run(_))));
    // Without an identity, still failed for the test.
    let (s3, _) = step(s, Event::Failed(Failure::new("no_answer", "x")));
    assert_eq!(failed_code(&s3), "no_answer");
}

#[test]
fn sync_after_restart() {
    let synced = |present, test, done, interrupted| {
        step(
            SlotState::Empty,
            Event::Synced {
                present,
                test,
                done,
                interrupted,
            },
        )
    };
    assert_eq!(
        synced(false, TestState::Passed, None, true).0,
        SlotState::Empty
    );
    assert_eq!(
        synced(true, TestState::Running, None, false).0,
        SlotState::Testing
    );
    let (s, c) = synced(true, TestState::Passed, None, false);
    assert!(matches!(
        s,
        SlotState::Busy {
            step: Step::Hello,
            ..
        }
    ));
    assert_eq!(c[0], Command::OpenBoard);
    // Finished before the restart and nothing interrupted: wait for removal.
    assert_eq!(
        synced(true, TestState::Passed, Some(true), false).0,
        SlotState::Done(Outcome::Unknown)
    );
    // Finished on the jig but the store says unfinished: provision (resume).
    assert!(matches!(
        synced(true, TestState::Passed, Some(true), true).0,
        SlotState::Busy { .. }
    ));
}

#[test]
fn a_poll_keeps_the_last_result_until_the_board_is_gone() {
    let failed = SlotState::Done(Outcome::Failed(Failure::new("no_answer", "x")));
    let poll = |done| Event::Synced {
        present: true,
        test: TestState::Passed,
        done,
        interrupted: false,
    };
    // Whether or not the jig got the verdict, the board in it is not
    // provisioned again: no second record for the same visit.
    for done in [Some(false), None] {
        let (s, c) = step(failed.clone(), poll(done));
        assert_eq!((s, c), (failed.clone(), vec![]));
    }
    // Removed while nobody listened: the slot is free again.
    let (s, _) = step(
        failed,
        Event::Synced {
            present: false,
            test: TestState::None,
            done: None,
            interrupted: false,
        },
    );
    assert_eq!(s, SlotState::Empty);
    let (s, _) = step(s, Event::Inserted);
    assert_eq!(s, SlotState::Testing);
}

#[test]
fn operators_retry_failures_and_abort_runs() {
    let failed = SlotState::Done(Outcome::Failed(Failure::new("no_answer", "x")));
    let (s, c) = step(failed, Event::Retry);
    assert!(matches!(
        s,
        SlotState::Busy {
            step: Step::Hello,
            ..
        }
    ));
    assert_eq!(c, vec![Command::OpenBoard, Command::Run(Action::Hello)]);
    // A provisioned board is not provisioned again by a retry.
    let done = SlotState::Done(Outcome::Provisioned {
        serial: Some(crate::ids::Serial("ab".into())),
    });
    assert_eq!(step(done.clone(), Event::Retry), (done, vec![]));
    assert_eq!(
        step(SlotState::Empty, Event::Retry),
        (SlotState::Empty, vec![])
    );
    let (busy, _) = step(SlotState::Testing, Event::TestPassed);
    let (s, c) = step(busy, Event::Abort);
    assert_eq!(failed_code(&s), "aborted");
    assert!(c.contains(&Command::NotifyFailed {
        code: "aborted".into()
    }));
}

/// The core must stay free of I/O: no runtime, web, database, serial or
/// file-system code in its sources.
#[test]
fn core_does_no_io() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core");
    let forbidden = [
        "tokio::",
        "axum::",
        "rusqlite::",
        "serialport::",
        "tokio_serial::",
        "std::fs",
        "std::net",
        "SystemTime",
        "tss_esapi::",
        "reqwest::",
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for word in forbidden {
            assert!(!text.contains(word), "{} mentions {word}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 2);
}

/// A board through its checks, up to the record (Complete sent).
fn to_complete(b: &Bench) -> (SlotState, IssuedCert) {
    let s = to_keygen(b);
    let (s, c) = step(s, Event::Done(Output::Csr(b.csr(b.id.guid.as_str()))));
    let Some(Action::Issue { csr, .. }) = run_action(&c) else {
        panic!("{c:?}")
    };
    let cert = b.issued(csr);
    let (s, _) = step(s, Event::Done(Output::Issued(cert.clone())));
    let (s, _) = step(s, Event::Done(Output::Stored));
    let (s, _) = step(s, Event::Done(Output::ReadBack(cert.chain.clone())));
    let nonce = [9u8; 32];
    let signature = b.key.sign(&key_proof_message(&nonce)).unwrap();
    let (s, _) = step(s, Event::Done(Output::Signed { nonce, signature }));
    let (s, c) = step(s, Event::Done(Output::SettingsDone));
    assert_eq!(
        c.last(),
        Some(&Command::Complete {
            serial: Some(cert.serial.clone())
        })
    );
    (s, cert)
}

/// The first crash window: before Complete is recorded. The record does
/// not exist, so nothing may be undone and the jig is told FAIL: the
/// attempt stays open with its certificate (no Fail, which would abandon
/// it), and a Retry resumes it.
#[test]
fn a_failed_complete_is_a_failure_the_jig_hears_and_a_retry_resumes() {
    let b = bench();
    let (s, cert) = to_complete(&b);
    let f = Failure::not_recorded("disk full");
    let (s, c) = step(s, Event::Failed(f.clone()));
    assert_eq!(
        c,
        vec![Command::NotifyFailed {
            code: "not_recorded".into()
        }],
        "no FINISH pass, no Fail that would abandon the certificate"
    );
    assert_eq!(s, SlotState::Done(Outcome::Failed(f)));
    // Retry: a new visit that the store's review sends to resume with the
    // same certificate.
    let (s, c) = step(s, Event::Retry);
    assert_eq!(c, vec![Command::OpenBoard, Command::Run(Action::Hello)]);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, _) = step(s, Event::Done(Output::Identified(b.id.clone())));
    let (_, c) = step(
        s,
        Event::Done(Output::Reviewed(Review::Resume(cert.clone()))),
    );
    assert_eq!(run_action(&c), Some(&Action::Store(cert.chain)));
}

/// The second window: recorded, FINISH not acknowledged. Nothing is
/// failed or abandoned, the jig is not told FAIL; the slot says so, and a
/// Retry sends FINISH alone. A pulled board keeps its record; Abort
/// before FINISH leaves it provisioned.
#[test]
fn between_complete_and_finish_the_record_stands_and_retry_sends_only_finish() {
    let b = bench();
    let (s, cert) = to_complete(&b);
    let serial = Some(cert.serial.clone());
    let (s, c) = step(s, Event::Done(Output::Completed));
    assert_eq!(c, vec![Command::Run(Action::Finish)]);
    let why = Failure::new("no_answer", "the jig did not answer FINISH");
    let (s, c) = step(s.clone(), Event::Failed(why.clone()));
    assert_eq!(
        c,
        vec![Command::EndStep {
            step: Step::Finish,
            error: Some(why.clone())
        }],
        "no Fail, no FINISH fail"
    );
    assert_eq!(
        s,
        SlotState::Done(Outcome::Untold {
            serial: serial.clone(),
            why
        })
    );
    let (s, c) = step(s, Event::Retry);
    assert_eq!(c, vec![Command::Run(Action::Finish)], "FINISH alone");
    let (done, c) = step(s.clone(), Event::Done(Output::Finished));
    assert_eq!(
        c,
        vec![Command::EndStep {
            step: Step::Finish,
            error: None
        }]
    );
    assert_eq!(
        done,
        SlotState::Done(Outcome::Provisioned {
            serial: serial.clone()
        })
    );
    // Pulled before FINISH: the record stands, nothing is failed.
    let (gone, c) = step(s.clone(), Event::Removed);
    assert_eq!((gone, c), (SlotState::Empty, vec![]));
    // Stopped before FINISH: provisioned, the jig not told.
    let (stopped, c) = step(s, Event::Abort);
    assert!(c.is_empty(), "{c:?}");
    assert!(matches!(stopped, SlotState::Done(Outcome::Untold { .. })));
}

/// After a restart in that window: the store reviews the record as untold,
/// and the visit goes straight to FINISH; no key, no certificate, no
/// second Complete.
#[test]
fn an_untold_record_found_at_review_goes_straight_to_finish() {
    let b = bench();
    let (s, _) = step(SlotState::Empty, Event::TestPassed);
    let (s, _) = step(s, Event::Done(Output::Hello { version: 1 }));
    let (s, _) = step(s, Event::Done(Output::Identified(b.id.clone())));
    let serial = Some(Serial("aa".into()));
    let (s, c) = step(
        s,
        Event::Done(Output::Reviewed(Review::Untold {
            serial: serial.clone(),
        })),
    );
    assert_eq!(run_action(&c), Some(&Action::Finish));
    assert!(!c.iter().any(|c| matches!(c, Command::Complete { .. })));
    let (s, c) = step(s, Event::Done(Output::Finished));
    assert!(!c.iter().any(|c| matches!(c, Command::Complete { .. })));
    assert_eq!(s, SlotState::Done(Outcome::Provisioned { serial }));
}
