//! The device record and retirement in the store: each change with its
//! audit row, the lookup, and a retired device refused everything and
//! refused at review unless an admin overrides.

use super::super::tests::{G1, commit, ident, now, store};
use super::*;
use crate::core::Review;
use crate::ids::{Serial, SlotId};
use crate::store::{Queued, Stamp};

const G3: &str = "0a1b2c3d-0000-4000-8000-000000000003";
const STRANGER: &str = "0a1b2c3d-0000-4000-8000-0000000000ff";

/// A provisioned board record for `guid`, with its certificate `serial`,
/// stamped with `work_order`.
fn provision(s: &Store, slot: u16, guid: &str, serial: &str, work_order: Option<&str>) -> i64 {
    let stamp = Stamp {
        operator: Some("ana".into()),
        work_order: work_order.map(str::to_string),
    };
    let b = s.open_board_by("st", SlotId(slot), &stamp, now()).unwrap();
    let b = s.record_identity(b, &ident(guid), now()).unwrap();
    commit(s, b, guid, serial, false);
    s.complete_without_jobs(b, Some(&Serial(serial.into())), now())
        .unwrap();
    b.0
}

fn audit_of(s: &Store, guid: &str, action: &str) -> Vec<crate::store::AuditRow> {
    s.audit_about(guid)
        .unwrap()
        .into_iter()
        .filter(|a| a.action == action)
        .collect()
}

#[test]
fn location_and_notes_are_kept_with_their_audit_rows() {
    let (_d, s) = store();
    let g: Guid = G1.parse().unwrap();
    let stranger: Guid = STRANGER.parse().unwrap();
    let loc = Location {
        site: Some("Plant 2".into()),
        room: Some("R-114".into()),
        ..Location::default()
    };
    // Nothing is written for a device the station never provisioned.
    assert!(
        !s.set_device_location(&stranger, &loc, "bob", now())
            .unwrap()
    );
    assert_eq!(
        s.add_device_note(&stranger, "x", "bob", now()).unwrap(),
        None
    );
    assert!(s.audit_about(STRANGER).unwrap().is_empty());

    provision(&s, 1, G1, "aa", None);
    assert!(s.set_device_location(&g, &loc, "bob", now()).unwrap());
    assert_eq!(s.device_location(G1).unwrap(), Some(loc.clone()));
    let moved = Location {
        building: Some("B".into()),
        ..loc.clone()
    };
    assert!(s.set_device_location(&g, &moved, "sue", now()).unwrap());
    let note = s
        .add_device_note(&g, "fan replaced", "sue", now())
        .unwrap()
        .unwrap();
    s.add_device_note(&g, "firmware 1.5", "bob", now()).unwrap();

    let record = s.device_record(&g).unwrap();
    assert_eq!(record.location, Some(moved.clone()));
    let notes: Vec<(&str, &str)> = record
        .notes
        .iter()
        .map(|n| (n.author.as_str(), n.text.as_str()))
        .collect();
    assert_eq!(notes, [("sue", "fan replaced"), ("bob", "firmware 1.5")]);

    let changes = audit_of(&s, G1, "device_location");
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].actor, "bob");
    assert_eq!(changes[1].actor, "sue");
    assert_eq!(changes[1].detail["before"]["site"], "Plant 2");
    assert_eq!(changes[1].detail["location"]["building"], "B");
    let notes = audit_of(&s, G1, "device_note");
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].detail["note_id"], note.id);
    assert_eq!(notes[0].detail["text"], "fan replaced");
    assert!(matches!(
        s.verify_audit().unwrap(),
        crate::store::AuditCheck::Intact { .. }
    ));

    // An empty location clears it, and says so in the trail.
    assert!(
        s.set_device_location(&g, &Location::default(), "sue", now())
            .unwrap()
    );
    assert_eq!(s.device_location(G1).unwrap(), None);
    let last = audit_of(&s, G1, "device_location").pop().unwrap();
    assert!(last.detail["location"].is_null());
    assert_eq!(last.detail["before"]["building"], "B");
}

#[test]
fn the_lookup_finds_locations_and_work_orders_and_says_when_there_are_more() {
    let (_d, s) = store();
    provision(&s, 1, G1, "aa", Some("WO-7"));
    provision(&s, 2, G3, "cc", Some("WO-70"));
    let set = |g: &str, loc: Location| {
        s.set_device_location(&g.parse().unwrap(), &loc, "bob", now())
            .unwrap()
    };
    set(
        G1,
        Location {
            site: Some("Plant North".into()),
            text: Some("Rack 4".into()),
            ..Location::default()
        },
    );
    set(
        G3,
        Location {
            room: Some("north lab".into()),
            ..Location::default()
        },
    );
    let guids = |text: &str, limit: usize| {
        let (hits, more) = s.search_devices(text, limit).unwrap();
        (hits.into_iter().map(|h| h.guid).collect::<Vec<_>>(), more)
    };
    // A substring of any field, in any case.
    assert_eq!(
        guids("NORTH", 100),
        (vec![G1.to_string(), G3.to_string()], false)
    );
    assert_eq!(guids("rack", 100), (vec![G1.to_string()], false));
    // A work order matches whole, in any case.
    assert_eq!(guids("wo-7", 100), (vec![G1.to_string()], false));
    assert_eq!(guids("WO-70", 100), (vec![G3.to_string()], false));
    assert_eq!(guids("nowhere", 100), (vec![], false));
    assert_eq!(guids("  ", 100), (vec![], false));
    // Bounded, with word of more.
    assert_eq!(guids("north", 1), (vec![G1.to_string()], true));
    let (hits, _) = s.search_devices("wo-7", 10).unwrap();
    assert_eq!(hits[0].work_order.as_deref(), Some("WO-7"));
    assert_eq!(
        hits[0].location.as_ref().unwrap().text.as_deref(),
        Some("Rack 4")
    );
    assert!(!hits[0].retired);
}

#[test]
fn a_retired_device_is_on_the_crl_refused_everything_and_refused_at_review_unless_an_admin_overrides()
 {
    let (_d, s) = store();
    let g: Guid = G1.parse().unwrap();
    // Two certificates: the first abandoned, the second installed.
    let b0 = s.open_board("st", SlotId(1), now()).unwrap();
    let b0 = s.record_identity(b0, &ident(G1), now()).unwrap();
    commit(&s, b0, G1, "a0", false);
    s.fail(b0, &crate::core::Failure::internal("test"), now())
        .unwrap();
    let board = provision(&s, 2, G1, "aa", None);
    assert_eq!(
        s.queue_device_action(
            &STRANGER.parse().unwrap(),
            "retire",
            &serde_json::json!({}),
            Some("x"),
            "sue",
            now()
        )
        .unwrap(),
        Queued::Unknown
    );
    let queued = s
        .queue_device_action(
            &g,
            "retire",
            &serde_json::json!({}),
            Some("scrapped"),
            "sue",
            now(),
        )
        .unwrap();
    assert!(matches!(queued, Queued::Queued(_)), "{queued:?}");

    // Every certificate of the device is on the CRL at once.
    let mut serials: Vec<String> = s.revoked().unwrap().into_iter().map(|r| r.serial).collect();
    serials.sort();
    assert_eq!(serials, ["a0", "aa"]);
    let retired = s.device_retirement(G1).unwrap().unwrap();
    assert_eq!(
        (
            retired.board_id,
            retired.reason.as_str(),
            retired.retired_by.as_str()
        ),
        (board, "scrapped", "sue")
    );
    let row = audit_of(&s, G1, "device_retire").pop().unwrap();
    assert_eq!(row.actor, "sue");
    assert_eq!(row.detail["reason"], "scrapped");
    assert_eq!(row.detail["serials"], serde_json::json!(["a0", "aa"]));
    assert_eq!(audit_of(&s, G1, "certificate_revoked").len(), 2);
    assert!(
        s.with(|c| c.execute("DELETE FROM device_retirements", []))
            .is_err(),
        "a retirement is never removed"
    );

    // No further action, a second retire included.
    for action in ["activate", "disable", "enable", "revoke", "retire"] {
        let q = s
            .queue_device_action(
                &g,
                action,
                &serde_json::json!({}),
                Some("again"),
                "sue",
                now(),
            )
            .unwrap();
        assert!(matches!(q, Queued::Retired(_)), "{action}: {q:?}");
    }
    assert_eq!(s.device_actions(G1).unwrap().len(), 1);

    // The line refuses the GUID; a supervisor's override is not enough.
    let b2 = s.open_board("st", SlotId(3), now()).unwrap();
    let b2 = s.record_identity(b2, &ident(G1), now()).unwrap();
    assert_eq!(
        s.review(b2, &g, now()).unwrap(),
        Review::Retired {
            retired_at: retired.retired_at.clone()
        }
    );
    s.grant_override(&g, "sup", "rework", false, now()).unwrap();
    assert!(matches!(
        s.review(b2, &g, now()).unwrap(),
        Review::Retired { .. }
    ));
    s.grant_override(&g, "adm", "refurbished", true, now())
        .unwrap();
    assert_eq!(
        s.review(b2, &g, now()).unwrap(),
        Review::Fresh {
            override_granted: true
        }
    );
    // Provisioned again under the admin's override, the device is not
    // retired: it can be managed, and retired again.
    commit(&s, b2, G1, "bb", true);
    s.complete_without_jobs(b2, Some(&Serial("bb".into())), now())
        .unwrap();
    assert_eq!(s.device_retirement(G1).unwrap(), None);
    assert!(matches!(
        s.queue_device_action(
            &g,
            "retire",
            &serde_json::json!({}),
            Some("again"),
            "sue",
            now()
        )
        .unwrap(),
        Queued::Queued(_)
    ));
}

#[test]
fn a_retire_done_records_the_enrollment_as_deleted() {
    let (_d, s) = store();
    let g: Guid = G1.parse().unwrap();
    provision(&s, 1, G1, "aa", None);
    let Queued::Queued(id) = s
        .queue_device_action(
            &g,
            "retire",
            &serde_json::json!({}),
            Some("scrapped"),
            "sue",
            now(),
        )
        .unwrap()
    else {
        panic!("not queued")
    };
    assert_eq!(s.due_device_action().unwrap().unwrap().id, id);
    s.device_action_gone(id, G1, now()).unwrap();
    assert_eq!(s.due_device_action().unwrap(), None);
    let r = s.device_record(&g).unwrap();
    assert_eq!(r.actions[0].state, "done");
    let dps = r.dps.unwrap();
    assert_eq!(dps.provisioning_status.as_deref(), Some("deleted"));
    assert_eq!(dps.etag, None);
}

#[test]
fn migration_13_keeps_device_actions_and_their_plant_triggers() {
    // A database as version 12 left it, with an action and the plant feed
    // on.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station.db");
    {
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        for sql in &super::super::migrations::MIGRATIONS[..12] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 12).unwrap();
        tx.execute_batch(
            "INSERT INTO device_actions (id, guid, action, params, reason, actor, state, attempts, created_at, updated_at)
                 VALUES (41, 'g', 'disable', '{}', 'r', 'sue', 'done', 2, '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z');
             UPDATE plant_control SET enabled = 1;",
        )
        .unwrap();
        tx.commit().unwrap();
    }
    let s = Store::open(&path).unwrap();
    let kept = s.device_actions("g").unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].id, kept[0].attempts), (41, 2));
    let feed_before: i64 = s
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM plant_feed WHERE kind = 'device_action'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    s.with(|c| {
        c.execute(
            "INSERT INTO device_actions (guid, action, params, actor, state, created_at, updated_at)
             VALUES ('g', 'retire', '{}', 'sue', 'pending', 'x', 'x')",
            [],
        )
    })
    .unwrap();
    let feed_after: i64 = s
        .with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM plant_feed WHERE kind = 'device_action'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(
        feed_after,
        feed_before + 1,
        "the plant feed still notes device actions"
    );
    assert!(
        s.with(|c| {
            c.execute(
            "INSERT INTO device_actions (guid, action, params, actor, state, created_at, updated_at)
             VALUES ('g', 'explode', '{}', 'sue', 'pending', 'x', 'x')",
            [],
        )
        })
        .is_err(),
        "the action is still checked"
    );
}

/// A symmetric-key device: its key record makes it a device for the
/// actions without a certificate, a revoke is refused (nothing to revoke),
/// a device of a group (no enrollment of its own) is refused the actions
/// that need one, and no key DPS echoes is kept.
#[test]
fn a_symmetric_key_device_is_acted_on_without_a_certificate_and_keeps_no_key() {
    let (_d, s) = store();
    let g: Guid = G3.parse().unwrap();
    let b = s
        .open_board_by("st", SlotId(1), &Stamp::default(), now())
        .unwrap();
    let b = s.record_identity(b, &ident(G3), now()).unwrap();
    s.record_device_key(b, G3, "00aa", now()).unwrap();
    s.complete_without_jobs(b, None, now()).unwrap();
    let q = |action: &str| {
        s.queue_device_action(
            &g,
            action,
            &serde_json::json!({}),
            Some("why"),
            "sam",
            now(),
        )
        .unwrap()
    };
    // No enrollment of its own: a device of the line's group.
    assert_eq!(q("disable"), Queued::InGroup);
    assert_eq!(q("revoke"), Queued::NoCertificate);
    // Its retirement asks nothing of DPS (a DELETE there could remove the
    // disabled enrollment that blocks it), and the line refuses it.
    let g_other: Guid = "0a1b2c3d-0000-4000-8000-000000000004".parse().unwrap();
    let b0 = s
        .open_board_by("st", SlotId(3), &Stamp::default(), now())
        .unwrap();
    let b0 = s
        .record_identity(b0, &ident("0a1b2c3d-0000-4000-8000-000000000004"), now())
        .unwrap();
    s.record_device_key(b0, g_other.as_str(), "00aa", now())
        .unwrap();
    s.complete_without_jobs(b0, None, now()).unwrap();
    let Queued::Queued(_) = s
        .queue_device_action(
            &g_other,
            "retire",
            &serde_json::json!({}),
            Some("scrapped"),
            "sam",
            now(),
        )
        .unwrap()
    else {
        panic!()
    };
    assert!(
        s.due_device_action().unwrap().is_none(),
        "nothing for the uploader"
    );
    let b9 = s
        .open_board_by("st", SlotId(4), &Stamp::default(), now())
        .unwrap();
    assert!(matches!(
        s.review(b9, &g_other, now()).unwrap(),
        Review::Retired { .. }
    ));
    // With its own enrollment job, the actions are taken.
    let b2 = s
        .open_board_by("st", SlotId(2), &Stamp::default(), now())
        .unwrap();
    let b2 = s.record_identity(b2, &ident(G3), now()).unwrap();
    s.record_device_key(b2, G3, "00aa", now()).unwrap();
    let body = |_: &crate::store::EnrollmentFacts| "{}".to_string();
    s.complete(b2, None, now(), crate::store::Enroll::Individual(&body))
        .unwrap();
    let Queued::Queued(id) = q("disable") else {
        panic!()
    };
    let echoed = serde_json::json!({
        "provisioningStatus": "disabled",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "c2VjcmV0", "secondaryKey": "c2VjcmV0Mg=="}}
    });
    s.device_action_done(id, G3, &echoed, now()).unwrap();
    let kept = s.device_record(&g).unwrap().dps.unwrap().enrollment;
    assert!(!kept.to_string().contains("c2VjcmV0"), "{kept}");
    assert_eq!(kept["attestation"]["type"], "symmetricKey");
}
