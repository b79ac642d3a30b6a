use super::*;
use crate::core::{Failure, IssuedCert, Review, Step};
use crate::ids::BoardIdentity;
use crate::ids::{Guid, Serial, SlotId};
use crate::store::{AuditCheck, GENESIS, NewUser};

pub(crate) fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("station.db")).unwrap();
    (dir, s)
}

pub(crate) fn ident(guid: &str) -> BoardIdentity {
    BoardIdentity {
        guid: guid.parse().unwrap(),
        hw_revision: "B2".into(),
        fw_version: "1.0".into(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
    }
}

pub(crate) const G1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const G2: &str = "0a1b2c3d-0000-4000-8000-000000000002";

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub(crate) fn commit(s: &Store, b: BoardId, guid: &str, serial: &str, override_used: bool) {
    let guid: Guid = guid.parse().unwrap();
    let serial = Serial(serial.into());
    let pem = crate::ca::pem_encode("CERTIFICATE", &[1, 2, 3]);
    s.commit_certificate(
        b,
        &NewCertificate {
            serial: &serial,
            guid: &guid,
            fingerprint: &format!("fp-{}", serial.0),
            pem: &pem,
            not_before: now(),
            not_after: now() + time::Duration::days(10),
            override_used,
        },
        now(),
    )
    .unwrap();
}

#[test]
fn migrations_are_recorded_and_reopening_is_harmless() {
    let (dir, s) = store();
    assert_eq!(
        s.schema_version().unwrap(),
        migrations::MIGRATIONS.len() as i64
    );
    drop(s);
    let s = Store::open(&dir.path().join("station.db")).unwrap();
    assert_eq!(
        s.schema_version().unwrap(),
        migrations::MIGRATIONS.len() as i64
    );
    let mode: String = s
        .with(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_newer_database_is_refused() {
    let (dir, s) = store();
    s.with(|c| c.pragma_update(None, "user_version", 99))
        .unwrap();
    drop(s);
    let e = Store::open(&dir.path().join("station.db")).err().unwrap();
    assert!(e.to_string().contains("upgrade the station"), "{e}");
}

#[test]
fn unfinished_records_are_adopted_once_per_slot() {
    let (_d, s) = store();
    let a = s.open_board("st", SlotId(1), now()).unwrap();
    let step = s.begin_step(a, Step::KeyGen, now()).unwrap();
    assert!(s.has_interrupted(SlotId(1)).unwrap());
    assert!(!s.has_interrupted(SlotId(2)).unwrap());
    let again = s.open_board("st", SlotId(1), now()).unwrap();
    assert_eq!(a, again);
    let steps = s.steps(a.0).unwrap();
    assert_eq!(steps[0].outcome.as_deref(), Some("interrupted"));
    let _ = step;
    let other = s.open_board("st", SlotId(2), now()).unwrap();
    assert_ne!(a, other);
}

#[test]
fn review_resume_already_and_override() {
    let (_d, s) = store();
    let g1: Guid = G1.parse().unwrap();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    assert_eq!(
        s.review(b, &g1, now()).unwrap(),
        Review::Fresh {
            override_granted: false
        }
    );
    commit(&s, b, G1, "aa", false);
    match s.review(b, &g1, now()).unwrap() {
        Review::Resume(IssuedCert { serial, chain }) => {
            assert_eq!(serial.0, "aa");
            assert_eq!(chain, vec![vec![1, 2, 3]]);
        }
        other => panic!("{other:?}"),
    }
    s.complete_without_jobs(b, Some(&Serial("aa".into())), now())
        .unwrap();

    // A later visit of the same GUID: already provisioned.
    let b2 = s.open_board("st", SlotId(2), now()).unwrap();
    let b2 = s.record_identity(b2, &ident(G1), now()).unwrap();
    assert!(matches!(
        s.review(b2, &g1, now()).unwrap(),
        Review::AlreadyProvisioned { .. }
    ));
    // Expired certificates do not count.
    let later = now() + time::Duration::days(11);
    assert_eq!(
        s.review(b2, &g1, later).unwrap(),
        Review::Fresh {
            override_granted: false
        }
    );
    // An override allows one more, and is used up by it.
    s.grant_override(&g1, "sup", "rework", false, now())
        .unwrap();
    assert_eq!(
        s.review(b2, &g1, now()).unwrap(),
        Review::Fresh {
            override_granted: true
        }
    );
    commit(&s, b2, G1, "bb", true);
    s.complete_without_jobs(b2, Some(&Serial("bb".into())), now())
        .unwrap();
    let b3 = s.open_board("st", SlotId(2), now()).unwrap();
    assert!(matches!(
        s.review(b3, &g1, now()).unwrap(),
        Review::AlreadyProvisioned { .. }
    ));
}

#[test]
fn failing_abandons_an_unproven_certificate() {
    let (_d, s) = store();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    commit(&s, b, G1, "aa", false);
    s.fail(b, &Failure::new("readback_mismatch", "x"), now())
        .unwrap();
    let certs = s.certificates(&G1.parse().unwrap()).unwrap();
    assert_eq!(certs[0].state, "abandoned");
    let row = s.board(&G1.parse().unwrap()).unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert_eq!(row.certificate_serial.as_deref(), Some("aa"));
    assert!(!s.has_interrupted(SlotId(1)).unwrap());
}

#[test]
fn a_swapped_board_gets_its_own_record() {
    let (_d, s) = store();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    // Station restarts; another board is in the jig.
    let adopted = s.open_board("st", SlotId(1), now()).unwrap();
    assert_eq!(adopted, b);
    let facts = s.record_facts(adopted).unwrap();
    assert_eq!(facts.guid, Some(G1.parse().unwrap()));
    assert!(!facts.provisioned);
    let b2 = s
        .replace_record(adopted, Some(&Failure::swapped()), now())
        .unwrap();
    let b2 = s.record_identity(b2, &ident(G2), now()).unwrap();
    assert_ne!(b2, b);
    assert_eq!(
        s.board(&G1.parse().unwrap())
            .unwrap()
            .unwrap()
            .error_code
            .as_deref(),
        Some("interrupted")
    );
    assert_eq!(
        s.board(&G2.parse().unwrap()).unwrap().unwrap().status,
        "in_progress"
    );
}

/// A provisioned record whose jig never acknowledged FINISH is the slot's
/// to adopt, and says so to the review; once FINISH ends well, or another
/// record follows it, it is not.
#[test]
fn a_record_whose_jig_was_not_told_is_adopted_and_reviewed_as_untold() {
    let (_d, s) = store();
    let g1: Guid = G1.parse().unwrap();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    let settings = s.begin_step(b, Step::Settings, now()).unwrap();
    s.end_step(settings, now(), None, Default::default())
        .unwrap();
    commit(&s, b, G1, "aa", false);
    s.complete(b, Some(&Serial("aa".into())), now(), Enroll::Group)
        .unwrap();
    assert_eq!(
        s.review(b, &g1, now()).unwrap(),
        Review::Untold {
            serial: Some(Serial("aa".into()))
        }
    );
    let adopted = s.open_board("st", SlotId(1), now()).unwrap();
    assert_eq!(adopted, b, "the untold record is adopted");
    assert!(s.record_facts(adopted).unwrap().provisioned);
    // FINISH fails: still untold. It ends well: told.
    let finish = s.begin_step(b, Step::Finish, now()).unwrap();
    s.end_step(
        finish,
        now(),
        Some(&Failure::new("no_answer", "x")),
        Default::default(),
    )
    .unwrap();
    assert!(matches!(
        s.review(b, &g1, now()).unwrap(),
        Review::Untold { .. }
    ));
    let row = s.board(&g1).unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.step.as_str()),
        ("provisioned", "finish")
    );
    let finish = s.begin_step(b, Step::Finish, now()).unwrap();
    s.end_step(finish, now(), None, Default::default()).unwrap();
    assert!(matches!(
        s.review(b, &g1, now()).unwrap(),
        Review::AlreadyProvisioned { .. }
    ));
    let fresh = s.open_board("st", SlotId(1), now()).unwrap();
    assert_ne!(fresh, b, "a told record is not adopted");
    // A visit that adopted a provisioned record and then failed (before
    // the board said who it is) does not fail that record.
    s.fail(b, &Failure::new("no_answer", "x"), now()).unwrap();
    let row = s.board(&g1).unwrap().unwrap();
    assert_eq!(row.status, "provisioned");
    assert_eq!(s.certificates(&g1).unwrap()[0].state, "installed");
    // A record made without steps (seeded, imported) is not untold.
    let (_d2, s2) = store();
    let b = s2.open_board("st", SlotId(1), now()).unwrap();
    let b = s2.record_identity(b, &ident(G1), now()).unwrap();
    commit(&s2, b, G1, "aa", false);
    s2.complete_without_jobs(b, Some(&Serial("aa".into())), now())
        .unwrap();
    assert_ne!(s2.open_board("st", SlotId(1), now()).unwrap(), b);
}

#[test]
fn a_serial_cannot_enter_the_ledger_twice() {
    let (_d, s) = store();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    commit(&s, b, G1, "aa", false);
    let guid: Guid = G1.parse().unwrap();
    let serial = Serial("aa".into());
    let e = s.commit_certificate(
        b,
        &NewCertificate {
            serial: &serial,
            guid: &guid,
            fingerprint: "other",
            pem: "x",
            not_before: now(),
            not_after: now(),
            override_used: false,
        },
        now(),
    );
    assert!(e.is_err());
}

#[test]
fn times_are_fixed_width_utc_with_milliseconds() {
    let t = time::macros::datetime!(2026-11-22 21:45:05 +02:00);
    assert_eq!(ts(t), "2026-11-22T19:45:05.000Z");
    let t = time::macros::datetime!(2026-11-22 21:45:05.63 UTC);
    assert_eq!(ts(t), "2026-11-22T21:45:05.630Z");
}

#[test]
fn step_timings_are_kept() {
    let (_d, s) = store();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let t0 = now();
    let id = s.begin_step(b, Step::Store, t0).unwrap();
    s.end_step(
        id,
        t0 + time::Duration::milliseconds(250),
        None,
        StepLine {
            resends: 2,
            damaged: 3,
        },
    )
    .unwrap();
    let steps = s.steps(b.0).unwrap();
    assert_eq!(steps[0].duration_ms, Some(250));
    assert_eq!(steps[0].outcome.as_deref(), Some("ok"));
    assert_eq!(s.boards(10).unwrap()[0].step, "store");
    // The line's figures of the step go to the reports.
    let (_, steps) = s
        .report_data(&UnitFilter {
            from: "2000-01-01T00:00:00.000Z".into(),
            to: "3000-01-01T00:00:00.000Z".into(),
            lot: None,
            slot: None,
        })
        .unwrap();
    assert_eq!((steps[0].resends, steps[0].damaged), (Some(2), Some(3)));
}

fn audit_three(s: &Store) {
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    commit(s, b, G1, "aa", false);
    s.grant_override(&G1.parse().unwrap(), "sup", "rework", false, now())
        .unwrap();
    s.retry_parked(None, "cli:qa", now()).unwrap();
}

#[test]
fn the_audit_trail_records_and_chains_events() {
    let (_d, s) = store();
    assert_eq!(s.verify_audit().unwrap(), AuditCheck::Intact { rows: 0 });
    audit_three(&s);
    let rows = s.audit_rows().unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["certificate_issued", "override_granted", "outbox_retry"]
    );
    assert_eq!(rows[0].actor, "station");
    assert_eq!(rows[0].detail["serial"], "aa");
    assert_eq!(rows[1].actor, "sup");
    assert_eq!(rows[2].actor, "cli:qa");
    assert_eq!(rows[0].prev_hash, GENESIS);
    assert_eq!(rows[1].prev_hash, rows[0].hash);
    assert_eq!(s.verify_audit().unwrap(), AuditCheck::Intact { rows: 3 });
}

#[test]
fn the_audit_trail_refuses_changes_and_detects_tampering() {
    let (_d, s) = store();
    audit_three(&s);
    // Through SQL, rows can be neither changed nor removed.
    let e = s
        .with(|c| c.execute("UPDATE audit SET actor = 'x' WHERE id = 2", []))
        .unwrap_err();
    assert!(e.to_string().contains("append-only"), "{e}");
    assert!(
        s.with(|c| c.execute("DELETE FROM audit WHERE id = 2", []))
            .is_err()
    );

    // Someone who drops the guards and edits a row is caught at that row.
    s.with(|c| {
        c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")?;
        c.execute(
            "UPDATE audit SET detail = '{\"reason\":\"none\"}' WHERE id = 2",
            [],
        )
    })
    .unwrap();
    match s.verify_audit().unwrap() {
        AuditCheck::Broken { row: 2, reason } => assert!(reason.contains("edited"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_deleted_audit_row_is_named() {
    let (_d, s) = store();
    audit_three(&s);
    s.with(|c| {
        c.execute_batch("DROP TRIGGER audit_no_delete;")?;
        c.execute("DELETE FROM audit WHERE id = 2", [])
    })
    .unwrap();
    match s.verify_audit().unwrap() {
        AuditCheck::Broken { row: 3, reason } => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Deleted and renumbered: the chain no longer follows.
    s.with(|c| {
        c.execute_batch("DROP TRIGGER IF EXISTS audit_no_update;")?;
        c.execute("UPDATE audit SET id = 2 WHERE id = 3", [])
    })
    .unwrap();
    match s.verify_audit().unwrap() {
        AuditCheck::Broken { row: 2, reason } => {
            assert!(reason.contains("does not follow"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn users_sign_in_with_badge_and_pin_or_password() {
    use crate::store::Role;
    let (_d, s) = store();
    s.add_user(
        &NewUser {
            name: "ana",
            role: Role::Operator,
            badge: Some("BADGE-0042"),
            pin: Some("4711"),
            password: None,
        },
        "cli:root",
        now(),
    )
    .unwrap();
    s.add_user(
        &NewUser {
            name: "sam",
            role: Role::Supervisor,
            badge: None,
            pin: None,
            password: Some("correct horse battery"),
        },
        "cli:root",
        now(),
    )
    .unwrap();
    assert_eq!(
        s.sign_in_badge("BADGE-0042", "4711").unwrap().unwrap().name,
        "ana"
    );
    assert!(s.sign_in_badge("BADGE-0042", "4712").unwrap().is_none());
    assert!(s.sign_in_badge("BADGE-9999", "4711").unwrap().is_none());
    assert_eq!(
        s.sign_in_password("sam", "correct horse battery")
            .unwrap()
            .unwrap()
            .role,
        Role::Supervisor
    );
    assert!(
        s.sign_in_password("sam", "wrong horse battery")
            .unwrap()
            .is_none()
    );
    assert!(
        s.sign_in_password("ana", "4711").unwrap().is_none(),
        "no password set"
    );

    // Only hashes are stored.
    let stored: String = s
        .with(|c| {
            c.query_row("SELECT pin_hash FROM users WHERE name = 'ana'", [], |r| {
                r.get(0)
            })
        })
        .unwrap();
    assert!(stored.starts_with("$argon2") && !stored.contains("4711"));

    assert!(s.set_pin("ana", "1234", "cli:root", now()).unwrap());
    assert!(s.sign_in_badge("BADGE-0042", "1234").unwrap().is_some());
    assert!(s.disable_user("ana", "cli:root", now()).unwrap());
    assert!(
        s.sign_in_badge("BADGE-0042", "1234").unwrap().is_none(),
        "disabled users cannot sign in"
    );
    assert!(!s.disable_user("ana", "cli:root", now()).unwrap());

    let actions: Vec<String> = s
        .audit_rows()
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(
        actions,
        ["user_added", "user_added", "pin_changed", "user_disabled"]
    );
}

#[test]
fn bad_users_are_refused_with_reasons() {
    use crate::store::Role;
    let (_d, s) = store();
    let add = |name: &str, badge: Option<&str>, pin: Option<&str>, pw: Option<&str>| {
        s.add_user(
            &NewUser {
                name,
                role: Role::Operator,
                badge,
                pin,
                password: pw,
            },
            "t",
            now(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    assert!(
        add("ana", Some("B1"), Some("12"), None)
            .unwrap_err()
            .contains("4 to 12 digits")
    );
    assert!(
        add("ana", Some("B1"), Some("12ab"), None)
            .unwrap_err()
            .contains("digits")
    );
    assert!(
        add("ana", None, None, Some("short"))
            .unwrap_err()
            .contains("10 characters")
    );
    assert!(
        add("ana", Some("B1"), None, None)
            .unwrap_err()
            .contains("badge goes with a PIN")
    );
    assert!(
        add("ana", None, None, None)
            .unwrap_err()
            .contains("give a badge and PIN")
    );
    assert!(
        add("a na", None, None, Some("long enough pw"))
            .unwrap_err()
            .contains("user name")
    );
    add("ana", Some("B1"), Some("1234"), None).unwrap();
    assert!(
        add("ana", None, None, Some("long enough pw"))
            .unwrap_err()
            .contains("exists")
    );
    assert!(
        add("bob", Some("B1"), Some("1234"), None)
            .unwrap_err()
            .contains("exists"),
        "badges are unique"
    );
}

#[test]
fn tokens_are_stored_hashed_and_carry_a_role() {
    use crate::store::Role;
    let (_d, s) = store();
    let t = s
        .create_token("mes-import", Role::Supervisor, "cli:root", now())
        .unwrap();
    assert!(t.starts_with("st_") && t.len() > 40);
    assert_eq!(
        s.token_role(&t).unwrap(),
        Some(("mes-import".into(), Role::Supervisor))
    );
    assert_eq!(s.token_role("st_not-a-token").unwrap(), None);
    let stored: String = s
        .with(|c| c.query_row("SELECT token_hash FROM api_tokens", [], |r| r.get(0)))
        .unwrap();
    assert!(!stored.contains(&t[3..]));
    assert!(Role::Admin > Role::Supervisor && Role::Supervisor > Role::Operator);
}

#[test]
fn sessions_expire_when_idle_and_with_their_user() {
    use crate::store::Role;
    let (_d, s) = store();
    let u = s
        .add_user(
            &NewUser {
                name: "ana",
                role: Role::Operator,
                badge: None,
                pin: None,
                password: Some("a long password"),
            },
            "t",
            now(),
        )
        .unwrap();
    let (cookie, session) = s.open_session(&u, now()).unwrap();
    let idle = time::Duration::minutes(30);
    assert_eq!(
        s.session(&cookie, idle, now()).unwrap().unwrap().csrf,
        session.csrf
    );
    assert!(s.session("not-a-cookie", idle, now()).unwrap().is_none());
    let later = now() + time::Duration::minutes(31);
    assert!(
        s.session(&cookie, idle, later).unwrap().is_none(),
        "idle too long"
    );
    let (cookie, _) = s.open_session(&u, now()).unwrap();
    s.disable_user("ana", "t", now()).unwrap();
    assert!(
        s.session(&cookie, idle, now()).unwrap().is_none(),
        "a disabled user's session ends"
    );
}

#[test]
fn watching_does_not_keep_a_session_alive() {
    use crate::store::Role;
    let (_d, s) = store();
    let u = s
        .add_user(
            &NewUser {
                name: "ana",
                role: Role::Operator,
                badge: None,
                pin: None,
                password: Some("a long password"),
            },
            "t",
            now(),
        )
        .unwrap();
    let (cookie, _) = s.open_session(&u, now()).unwrap();
    let idle = time::Duration::minutes(30);
    assert!(
        s.session_peek(&cookie, idle, now() + time::Duration::minutes(20))
            .unwrap()
            .is_some()
    );
    // Peeking did not count as activity: 31 minutes after sign-in it is over.
    assert!(
        s.session(&cookie, idle, now() + time::Duration::minutes(31))
            .unwrap()
            .is_none()
    );
}

#[test]
fn failed_sign_ins_keep_no_typed_secrets_and_tokens_can_be_revoked() {
    use crate::store::Role;
    let (_d, s) = store();
    s.add_user(
        &NewUser {
            name: "ana",
            role: Role::Operator,
            badge: Some("B-1"),
            pin: Some("1111"),
            password: None,
        },
        "t",
        now(),
    )
    .unwrap();
    s.failed_login("B-1", true, "wrong PIN", now()).unwrap();
    s.failed_login("4711", true, "unknown", now()).unwrap();
    let subjects: Vec<Option<String>> = s
        .audit_rows()
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "failed_login")
        .map(|r| r.subject)
        .collect();
    assert_eq!(
        subjects,
        [
            Some("ana".to_string()),
            Some("(an unknown badge)".to_string())
        ]
    );

    let t = s.create_token("mes", Role::Supervisor, "t", now()).unwrap();
    assert_eq!(s.revoke_token("mes", "t", now()).unwrap(), 1);
    assert_eq!(
        s.token_role(&t).unwrap(),
        None,
        "a revoked token opens nothing"
    );
    assert_eq!(s.revoke_token("mes", "t", now()).unwrap(), 0);
    assert!(s.tokens().unwrap()[0].revoked_at.is_some());
}

#[test]
fn a_revoked_device_is_refused_unless_an_admin_overrides() {
    let (_d, s) = store();
    let g1: Guid = G1.parse().unwrap();
    let b = s.open_board("st", SlotId(1), now()).unwrap();
    let b = s.record_identity(b, &ident(G1), now()).unwrap();
    commit(&s, b, G1, "aa", false);
    s.complete_without_jobs(b, Some(&Serial("aa".into())), now())
        .unwrap();

    // An action for a device the station never made is refused.
    let stranger: Guid = G2.parse().unwrap();
    assert_eq!(
        s.queue_device_action(
            &stranger,
            "disable",
            &serde_json::json!({}),
            Some("x"),
            "sue",
            now()
        )
        .unwrap(),
        crate::store::Queued::Unknown
    );
    let queued = s
        .queue_device_action(
            &g1,
            "revoke",
            &serde_json::json!({}),
            Some("stolen"),
            "sue",
            now(),
        )
        .unwrap();
    assert!(
        matches!(queued, crate::store::Queued::Queued(_)),
        "{queued:?}"
    );
    assert_eq!(s.revoked().unwrap().len(), 1, "on the CRL at once");
    // Further actions are refused; the revocation stays as it was.
    assert!(matches!(
        s.queue_device_action(
            &g1,
            "enable",
            &serde_json::json!({}),
            Some("oops"),
            "sue",
            now()
        )
        .unwrap(),
        crate::store::Queued::Revoked(_)
    ));
    assert!(
        s.with(|c| c.execute("DELETE FROM device_revocations", []))
            .is_err(),
        "a device revocation is never removed"
    );

    let b2 = s.open_board("st", SlotId(2), now()).unwrap();
    let b2 = s.record_identity(b2, &ident(G1), now()).unwrap();
    assert!(matches!(
        s.review(b2, &g1, now()).unwrap(),
        Review::Revoked { .. }
    ));
    // A supervisor's override is not enough; an admin's is.
    s.grant_override(&g1, "sup", "rework", false, now())
        .unwrap();
    assert!(matches!(
        s.review(b2, &g1, now()).unwrap(),
        Review::Revoked { .. }
    ));
    s.grant_override(&g1, "adm", "new certificate after repair", true, now())
        .unwrap();
    assert_eq!(
        s.review(b2, &g1, now()).unwrap(),
        Review::Fresh {
            override_granted: true
        }
    );
    let actions = s.device_actions(G1).unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action, "revoke");
    assert_eq!(actions[0].reason.as_deref(), Some("stolen"));

    // With the admin's override the device gets a new certificate, which is
    // not revoked: the device can be managed again, and revoked again.
    commit(&s, b2, G1, "bb", true);
    s.complete_without_jobs(b2, Some(&Serial("bb".into())), now())
        .unwrap();
    assert_eq!(s.device_revocation(G1).unwrap(), None);
    assert!(matches!(
        s.queue_device_action(
            &g1,
            "enable",
            &serde_json::json!({}),
            Some("repaired"),
            "sue",
            now()
        )
        .unwrap(),
        crate::store::Queued::Queued(_)
    ));
    s.queue_device_action(
        &g1,
        "revoke",
        &serde_json::json!({}),
        Some("stolen again"),
        "sue",
        now(),
    )
    .unwrap();
    let serials: Vec<String> = s.revoked().unwrap().into_iter().map(|r| r.serial).collect();
    assert_eq!(serials, vec!["aa".to_string(), "bb".to_string()]);
    assert_eq!(
        s.device_revocation(G1).unwrap().unwrap().reason,
        "stolen again"
    );
}

#[test]
fn the_role_migration_keeps_people_tokens_and_sessions() {
    // A database as version 10 left it, with a signed-in person.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station.db");
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        let tx = c.transaction().unwrap();
        for sql in &super::migrations::MIGRATIONS[..10] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 10).unwrap();
        tx.execute_batch(
            "INSERT INTO users (id, name, role, created_at) VALUES (7, 'ana', 'supervisor', '2026-11-01T00:00:00Z');
             INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES ('mes', 'operator', 'h1', '2026-11-01T00:00:00Z');
             INSERT INTO sessions (token_hash, user_id, csrf, created_at, last_seen) VALUES ('s1', 7, 'c', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z');
             INSERT INTO overrides (guid, granted_by, reason, granted_at) VALUES ('g', 'ana', 'r', '2026-11-01T00:00:00Z');",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(
        s.schema_version().unwrap(),
        super::migrations::MIGRATIONS.len() as i64
    );
    let (users, sessions, fk_on, by_admin): (i64, i64, i64, i64) = s
        .with(|c| {
            c.query_row(
                "SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM sessions), (SELECT foreign_keys FROM pragma_foreign_keys), (SELECT by_admin FROM overrides)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
        })
        .unwrap();
    assert_eq!((users, sessions, fk_on, by_admin), (1, 1, 1, 0));
    // The new role is accepted, and references still hold.
    s.with(|c| {
        c.execute(
            "INSERT INTO users (name, role, created_at) VALUES ('bob', 'activator', '2026-11-23T00:00:00Z')",
            [],
        )
    })
    .unwrap();
    assert!(
        s.with(|c| c.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf, created_at, last_seen) VALUES ('s2', 999, 'c', 'x', 'x')",
            []
        ))
        .is_err(),
        "foreign keys are enforced again after migrating"
    );
    assert_eq!(
        s.token_role("nonexistent").unwrap(),
        None,
        "tokens table readable"
    );
}

#[test]
fn a_transaction_holds_the_write_lock_from_its_start() {
    // Another process that wrote between this transaction's read and its
    // write would make the write fail at once with "database is locked".
    // Begun IMMEDIATE, no one else can start writing meanwhile: they wait.
    let (dir, s) = store();
    let other = Connection::open(dir.path().join("station.db")).unwrap();
    other.busy_timeout(std::time::Duration::ZERO).unwrap();
    s.with(|c| {
        let tx = c.transaction()?;
        let _: i64 = tx.query_row("SELECT COUNT(*) FROM boards", [], |r| r.get(0))?;
        let e = other.execute_batch("BEGIN IMMEDIATE").unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        tx.commit()
    })
    .unwrap();
    other.execute_batch("BEGIN IMMEDIATE; COMMIT").unwrap();
}
