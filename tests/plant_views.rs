//! The plant views against a real PostgreSQL server: three stations'
//! records written straight into the plant schema, then the plant report
//! and export (filters, a day boundary, pages), a GUID's whereabouts,
//! conflicts, and the audit chains; and `station plant` on the command
//! line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/pg.rs"]
mod pg;

use std::collections::HashMap;
use std::process::{Command, Output};

use pg::Pg;
use station::plant::views::{self, PlantFilter, Whereabout};
use station::report::{StepRecord, Unit};
use station::store::{AuditCheck, GENESIS, UnitFilter, row_hash};
use tokio_postgres::Client;

const G1: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const G2: &str = "0a1b2c3d-0000-4000-8000-000000000002";
const G3: &str = "0a1b2c3d-0000-4000-8000-000000000003";
const G4: &str = "0a1b2c3d-0000-4000-8000-000000000004";
const G5: &str = "0a1b2c3d-0000-4000-8000-000000000005";
const G6: &str = "0a1b2c3d-0000-4000-8000-000000000006";
const LOT_A: &str = "Lot \"7\", Müller-Ω";
const LOT_B: &str = "B-12";

/// The day the report covers, and the next.
const DAY: (&str, &str) = ("2026-11-23T00:00:00.000Z", "2026-11-24T00:00:00.000Z");
const NEXT_DAY: (&str, &str) = ("2026-11-24T00:00:00.000Z", "2026-11-25T00:00:00.000Z");
const FAR: &str = "2036-01-01T00:00:00.000Z";

/// (step, started, ended, duration, outcome)
type Step = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<i64>,
    Option<&'static str>,
);

/// One board record as a station forwards it.
struct Board {
    station: &'static str,
    line: &'static str,
    id: i64,
    slot: u16,
    lot: Option<&'static str>,
    guid: Option<&'static str>,
    started: &'static str,
    finished: Option<&'static str>,
    status: &'static str,
    step: &'static str,
    error: Option<(&'static str, &'static str)>,
    /// (step, started, ended, duration, outcome)
    steps: &'static [Step],
    /// (serial, issued_at, state)
    certs: &'static [(&'static str, &'static str, &'static str)],
    /// (job id, state), in any order
    jobs: &'static [(i64, &'static str)],
    /// (label id, state)
    labels: &'static [(i64, &'static str)],
}

const S: Board = Board {
    station: "",
    line: "",
    id: 0,
    slot: 1,
    lot: None,
    guid: None,
    started: "",
    finished: None,
    status: "provisioned",
    step: "finish",
    error: None,
    steps: &[],
    certs: &[],
    jobs: &[],
    labels: &[],
};

fn boards() -> Vec<Board> {
    vec![
        Board {
            station: "station-1",
            line: "line-1",
            id: 1,
            lot: Some(LOT_A),
            guid: Some(G1),
            started: "2026-11-23T06:00:00.101Z",
            finished: Some("2026-11-23T06:00:09.202Z"),
            steps: &[
                (
                    "identify",
                    "2026-11-23T06:00:00.105Z",
                    Some("2026-11-23T06:00:00.207Z"),
                    Some(102),
                    Some("ok"),
                ),
                (
                    "issue",
                    "2026-11-23T06:00:01.001Z",
                    Some("2026-11-23T06:00:01.999Z"),
                    Some(998),
                    Some("ok"),
                ),
            ],
            certs: &[("S1-1", "2026-11-23T06:00:01.500Z", "installed")],
            jobs: &[(2, "enrolled"), (1, "parked")],
            labels: &[(1, "printed")],
            ..S
        },
        // Starts at the same moment as the one before: ordered by plant id.
        Board {
            station: "station-1",
            line: "line-1",
            id: 2,
            slot: 2,
            lot: Some(LOT_A),
            guid: Some(G2),
            started: "2026-11-23T06:00:00.101Z",
            finished: Some("2026-11-23T06:00:05.000Z"),
            status: "failed",
            step: "prove",
            error: Some(("E_PROOF", "the proof did not verify")),
            steps: &[
                (
                    "identify",
                    "2026-11-23T06:00:00.110Z",
                    Some("2026-11-23T06:00:00.300Z"),
                    Some(190),
                    Some("ok"),
                ),
                (
                    "prove",
                    "2026-11-23T06:00:04.000Z",
                    Some("2026-11-23T06:00:05.000Z"),
                    Some(1000),
                    Some("failed"),
                ),
            ],
            certs: &[("S1-2", "2026-11-23T06:00:03.000Z", "abandoned")],
            ..S
        },
        // The day's last millisecond.
        Board {
            station: "station-1",
            line: "line-1",
            id: 3,
            lot: Some(LOT_B),
            guid: Some(G3),
            started: "2026-11-23T23:59:59.999Z",
            status: "in_progress",
            step: "keygen",
            steps: &[("identify", "2026-11-24T00:00:00.050Z", None, None, None)],
            ..S
        },
        Board {
            station: "station-2",
            line: "line-2",
            id: 1,
            lot: Some(LOT_A),
            guid: Some(G1),
            started: "2026-11-23T12:00:00.500Z",
            finished: Some("2026-11-23T12:00:08.000Z"),
            steps: &[(
                "identify",
                "2026-11-23T12:00:00.600Z",
                Some("2026-11-23T12:00:00.700Z"),
                Some(100),
                Some("ok"),
            )],
            certs: &[("S2-1", "2026-11-23T12:00:02.000Z", "installed")],
            jobs: &[(1, "pending")],
            labels: &[(1, "pending"), (2, "cancelled")],
            ..S
        },
        // The next day's first millisecond: not in the day.
        Board {
            station: "station-2",
            line: "line-2",
            id: 2,
            slot: 3,
            lot: Some(LOT_B),
            guid: Some(G4),
            started: "2026-11-24T00:00:00.000Z",
            finished: Some("2026-11-24T00:00:09.000Z"),
            steps: &[(
                "identify",
                "2026-11-24T00:00:00.001Z",
                Some("2026-11-24T00:00:00.101Z"),
                Some(100),
                Some("ok"),
            )],
            // Two certificates: the newer (by issue time) is the record's.
            certs: &[
                ("S2-3", "2026-11-24T00:00:05.000Z", "installed"),
                ("S2-2", "2026-11-24T00:00:02.000Z", "abandoned"),
            ],
            ..S
        },
        // The day before's last millisecond.
        Board {
            station: "station-3",
            line: "line-2",
            id: 1,
            guid: Some(G5),
            started: "2026-11-22T23:59:59.999Z",
            finished: Some("2026-11-23T00:00:07.000Z"),
            ..S
        },
        Board {
            station: "station-3",
            line: "line-2",
            id: 2,
            slot: 2,
            lot: Some(LOT_A),
            started: "2026-11-23T08:00:00.000Z",
            finished: Some("2026-11-23T08:00:01.000Z"),
            status: "failed",
            step: "identify",
            error: Some(("E_NO_ANSWER", "no answer from the jig")),
            steps: &[(
                "identify",
                "2026-11-23T08:00:00.010Z",
                Some("2026-11-23T08:00:01.000Z"),
                Some(990),
                Some("failed"),
            )],
            ..S
        },
    ]
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// A fresh plant database with the schema, and its client.
async fn plant() -> (Pg, Client) {
    let pg = tokio::task::spawn_blocking(|| {
        let pg = Pg::start();
        pg.create_db("plant");
        pg
    })
    .await
    .unwrap();
    let mut client = connect(&pg.url("plant")).await;
    station::plant::schema::migrate(&mut client).await.unwrap();
    (pg, client)
}

async fn insert_station(c: &Client, station: &str, line: &str) {
    c.execute(
        "INSERT INTO plant_stations (station_id, line, instance) VALUES ($1, $2, $1)",
        &[&station, &line],
    )
    .await
    .unwrap();
}

/// Writes the records; returns each record's plant id by (station, id).
async fn seed(c: &Client) -> HashMap<(&'static str, i64), i64> {
    insert_station(c, "station-1", "line-1").await;
    insert_station(c, "station-2", "line-2").await;
    insert_station(c, "station-3", "line-2").await;
    let mut step_id: HashMap<&str, i64> = HashMap::new();
    let mut plant_ids = HashMap::new();
    for b in boards() {
        let row = c
            .query_one(
                "INSERT INTO boards (station_id, board_id, line, slot, guid, operator, work_order, status,
                                     step, error_code, error, started_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, 'ann', $6, $7, $8, $9, $10, $11::text::timestamptz,
                         $12::text::timestamptz)
                 RETURNING plant_id",
                &[
                    &b.station,
                    &b.id,
                    &b.line,
                    &i32::from(b.slot),
                    &b.guid,
                    &b.lot,
                    &b.status,
                    &b.step,
                    &b.error.map(|e| e.0),
                    &b.error.map(|e| e.1),
                    &b.started,
                    &b.finished,
                ],
            )
            .await
            .unwrap();
        plant_ids.insert((b.station, b.id), row.get::<_, i64>(0));
        for (step, started, ended, ms, outcome) in b.steps {
            // Step ids are each station's own: they repeat across stations.
            let id = step_id.entry(b.station).or_insert(0);
            *id += 1;
            c.execute(
                "INSERT INTO steps (station_id, step_id, board_id, step, started_at, ended_at, duration_ms,
                                    outcome, error_code, board_started)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::timestamptz, $7, $8, $9,
                         $10::text::timestamptz)",
                &[
                    &b.station,
                    &*id,
                    &b.id,
                    step,
                    started,
                    ended,
                    ms,
                    outcome,
                    &outcome.filter(|o| *o == "failed").and(b.error.map(|e| e.0)),
                    &b.started,
                ],
            )
            .await
            .unwrap();
        }
        for (serial, issued, state) in b.certs {
            insert_cert(c, b.station, serial, b.guid.unwrap(), b.id, issued, state).await;
        }
        for (job, state) in b.jobs {
            c.execute(
                "INSERT INTO enrollments (station_id, job_id, guid, board_id, state, attempts, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 0, now(), now())",
                &[&b.station, job, &b.guid.unwrap(), &b.id, state],
            )
            .await
            .unwrap();
        }
        for (label, state) in b.labels {
            c.execute(
                "INSERT INTO labels (station_id, label_id, guid, board_id, kind, state, attempts, requested_by,
                                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'board', $5, 0, 'line', now(), now())",
                &[&b.station, label, &b.guid.unwrap(), &b.id, state],
            )
            .await
            .unwrap();
        }
    }
    plant_ids
}

async fn insert_cert(
    c: &Client,
    station: &str,
    serial: &str,
    guid: &str,
    board: i64,
    issued: &str,
    state: &str,
) {
    c.execute(
        "INSERT INTO certificates (station_id, serial, guid, board_id, fingerprint, pem, not_before, not_after,
                                   slot, issued_at, override_used, state)
         VALUES ($1, $2, $3, $4, 'fp-' || $2, 'PEM', $5::text::timestamptz, $6::text::timestamptz, 1,
                 $5::text::timestamptz, false, $7)",
        &[&station, &serial, &guid, &board, &issued, &FAR, &state],
    )
    .await
    .unwrap();
}

/// What the plant report must show of a record: the station's own
/// strings, the plant id for the board id.
fn expected_unit(b: &Board, plant_id: i64) -> Unit {
    let newest_cert = b.certs.iter().max_by_key(|c| c.1);
    Unit {
        board_id: plant_id,
        station: b.station.to_string(),
        slot: b.slot,
        operator: Some("ann".into()),
        lot: b.lot.map(String::from),
        guid: b.guid.map(String::from),
        started_at: b.started.to_string(),
        finished_at: b.finished.map(String::from),
        status: b.status.to_string(),
        step: b.step.to_string(),
        error_code: b.error.map(|e| e.0.to_string()),
        error: b.error.map(|e| e.1.to_string()),
        serial: newest_cert.map(|c| c.0.to_string()),
        fingerprint: newest_cert.map(|c| format!("fp-{}", c.0)),
        enrollment: b.jobs.iter().max_by_key(|j| j.0).map(|j| j.1.to_string()),
        label: b.labels.iter().max_by_key(|l| l.0).map(|l| l.1.to_string()),
        location: None,
        notes: 0,
        settings: None,
        settings_note: None,
    }
}

fn expected_steps(b: &Board, plant_id: i64) -> Vec<StepRecord> {
    b.steps
        .iter()
        .map(|(step, started, ended, ms, outcome)| StepRecord {
            board_id: plant_id,
            step: step.to_string(),
            started_at: started.to_string(),
            ended_at: ended.map(String::from),
            duration_ms: *ms,
            outcome: outcome.map(String::from),
            error_code: outcome
                .filter(|o| *o == "failed")
                .and(b.error.map(|e| e.0.to_string())),
            resends: None,
            damaged: None,
        })
        .collect()
}

/// The records `keep` selects from the seed, in report order.
fn expected(
    ids: &HashMap<(&'static str, i64), i64>,
    range: (&str, &str),
    keep: &dyn Fn(&Board) -> bool,
) -> (Vec<Unit>, Vec<StepRecord>) {
    let mut chosen: Vec<(i64, Board)> = boards()
        .into_iter()
        .filter(|b| b.started >= range.0 && b.started < range.1 && keep(b))
        .map(|b| (ids[&(b.station, b.id)], b))
        .collect();
    chosen.sort_by(|a, b| (a.1.started, a.0).cmp(&(b.1.started, b.0)));
    let units = chosen.iter().map(|(id, b)| expected_unit(b, *id)).collect();
    let steps = chosen
        .iter()
        .flat_map(|(id, b)| expected_steps(b, *id))
        .collect();
    (units, sorted(steps))
}

fn sorted(mut steps: Vec<StepRecord>) -> Vec<StepRecord> {
    steps.sort_by(|a, b| (a.board_id, &a.started_at).cmp(&(b.board_id, &b.started_at)));
    steps
}

fn filter(range: (&str, &str)) -> PlantFilter {
    PlantFilter {
        unit: UnitFilter {
            from: range.0.into(),
            to: range.1.into(),
            lot: None,
            slot: None,
        },
        station: None,
        line: None,
    }
}

/// Every record of `f`, `page` at a time.
async fn paged(c: &Client, f: &PlantFilter, page: u32) -> (Vec<Unit>, Vec<StepRecord>, usize) {
    let (mut units, mut steps, mut pages) = (Vec::new(), Vec::new(), 0);
    views::each_unit_page(c, f, page, true, &mut |u, s| {
        assert!(u.len() <= page as usize);
        pages += 1;
        units.extend(u);
        steps.extend(s);
        true
    })
    .await
    .unwrap();
    (units, sorted(steps), pages)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plant_report_reads_every_station_with_the_stations_own_strings() {
    let (_pg, c) = plant().await;
    let ids = seed(&c).await;

    // The whole day: the record at the day's last millisecond is in, the
    // ones at the next day's first and the day before's last are not.
    let (units, steps) = views::report_data(&c, &filter(DAY)).await.unwrap();
    let (want_units, want_steps) = expected(&ids, DAY, &|_| true);
    assert_eq!(units.len(), 5);
    assert_eq!(units, want_units);
    assert_eq!(sorted(steps), want_steps);
    assert_eq!(
        units.iter().map(|u| u.station.as_str()).collect::<Vec<_>>(),
        [
            "station-1",
            "station-1",
            "station-3",
            "station-2",
            "station-1"
        ]
    );
    // The station's newest job and label, the newer of two certificates.
    assert_eq!(units[0].enrollment.as_deref(), Some("enrolled"));
    assert_eq!(units[3].label.as_deref(), Some("cancelled"));
    let (next, _) = views::report_data(&c, &filter(NEXT_DAY)).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].serial.as_deref(), Some("S2-3"));
    assert_eq!(next, expected(&ids, NEXT_DAY, &|_| true).0);
    assert_eq!(views::count_units(&c, &filter(DAY)).await.unwrap(), 5);

    // Each filter alone, against the seed.
    type Keep = Box<dyn Fn(&Board) -> bool>;
    let cases: Vec<(PlantFilter, Keep)> = vec![
        (
            PlantFilter {
                station: Some("station-1".into()),
                ..filter(DAY)
            },
            Box::new(|b| b.station == "station-1"),
        ),
        (
            PlantFilter {
                line: Some("line-2".into()),
                ..filter(DAY)
            },
            Box::new(|b| b.line == "line-2"),
        ),
        (
            PlantFilter {
                unit: UnitFilter {
                    lot: Some(LOT_A.into()),
                    ..filter(DAY).unit
                },
                ..filter(DAY)
            },
            Box::new(|b| b.lot == Some(LOT_A)),
        ),
        (
            PlantFilter {
                unit: UnitFilter {
                    slot: Some(2),
                    ..filter(DAY).unit
                },
                ..filter(DAY)
            },
            Box::new(|b| b.slot == 2),
        ),
        (
            PlantFilter {
                station: Some("station-3".into()),
                line: Some("line-2".into()),
                ..filter(("2026-11-23T07:59:59.999Z", "2026-11-23T08:00:00.001Z"))
            },
            Box::new(|b| b.station == "station-3"),
        ),
        (
            PlantFilter {
                station: Some("station-9".into()),
                ..filter(DAY)
            },
            Box::new(|_| false),
        ),
    ];
    for (f, keep) in &cases {
        let range = (f.unit.from.as_str(), f.unit.to.as_str());
        let (want_units, want_steps) = expected(&ids, range, keep.as_ref());
        let (units, steps) = views::report_data(&c, f).await.unwrap();
        assert_eq!(units, want_units, "{f:?}");
        assert_eq!(sorted(steps), want_steps, "{f:?}");
        assert_eq!(
            views::count_units(&c, f).await.unwrap(),
            want_units.len() as u64,
            "{f:?}"
        );
    }
    assert_eq!(
        expected(&ids, DAY, &|b| b.lot == Some(LOT_A)).0.len(),
        4,
        "the lot case selects something"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_two_give_the_records_of_one_page() {
    let (_pg, c) = plant().await;
    let ids = seed(&c).await;
    let all = filter(("2026-11-01T00:00:00.000Z", "2026-12-01T00:00:00.000Z"));
    let (units, steps) = views::report_data(&c, &all).await.unwrap();
    assert_eq!(units.len(), 7);
    assert_eq!((units.clone(), sorted(steps.clone())), {
        let (u, s) = expected(&ids, (&all.unit.from, &all.unit.to), &|_| true);
        (u, s)
    });
    // Two records start at the same millisecond, across a page boundary
    // (records 2 and 3 of the month).
    assert_eq!(units[1].started_at, units[2].started_at);
    for page in [1, 2, 3, 7, 100] {
        let (u, s, pages) = paged(&c, &all, page).await;
        assert_eq!(u, units, "page {page}");
        assert_eq!(s, sorted(steps.clone()), "page {page}");
        assert_eq!(pages, 7usize.div_ceil(page as usize), "page {page}");
    }
    // Without steps; and stopped after the first page.
    let mut seen = Vec::new();
    views::each_unit_page(&c, &all, 2, false, &mut |u, s| {
        assert!(s.is_empty());
        seen.extend(u);
        false
    })
    .await
    .unwrap();
    assert_eq!(seen, units[..2]);
    // An empty range calls nothing.
    views::each_unit_page(
        &c,
        &filter(("2020-01-01T00:00:00.000Z", "2020-01-02T00:00:00.000Z")),
        2,
        true,
        &mut |_, _| panic!("no page"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guid_is_found_on_every_station_it_visited() {
    let (_pg, c) = plant().await;
    seed(&c).await;
    // A certificate whose board record has not arrived yet.
    insert_cert(
        &c,
        "station-3",
        "S3-9",
        G6,
        99,
        "2026-11-23T09:00:00.000Z",
        "issued",
    )
    .await;
    c.execute(
        "INSERT INTO revocations (station_id, serial, revoked_at, reason, revoked_by)
         VALUES ('station-2', 'S2-1', now(), 'returned', 'sue')",
        &[],
    )
    .await
    .unwrap();

    let w = views::whereabouts(&c, G1).await.unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(
        (w[0].station_id.as_str(), w[0].line.as_str(), w[0].boards),
        ("station-1", "line-1", 1)
    );
    assert_eq!(w[0].last_status.as_deref(), Some("provisioned"));
    assert_eq!(w[0].last_seen.as_deref(), Some("2026-11-23T06:00:09.202Z"));
    assert_eq!(w[0].certificates.len(), 1);
    assert_eq!(w[0].certificates[0].serial, "S1-1");
    assert_eq!(w[0].certificates[0].state, "installed");
    assert_eq!(w[0].certificates[0].issued_at, "2026-11-23T06:00:01.500Z");
    assert!(!w[0].certificates[0].revoked);
    assert_eq!(
        (w[1].station_id.as_str(), w[1].line.as_str()),
        ("station-2", "line-2")
    );
    assert!(w[1].certificates[0].revoked);

    // An unfinished record: seen when it started.
    let w = views::whereabouts(&c, G3).await.unwrap();
    assert_eq!(w[0].last_seen.as_deref(), Some("2026-11-23T23:59:59.999Z"));
    assert!(w[0].certificates.is_empty());

    // Certificates only: the station's line.
    let w = views::whereabouts(&c, G6).await.unwrap();
    assert_eq!(
        w,
        vec![Whereabout {
            station_id: "station-3".into(),
            line: "line-2".into(),
            boards: 0,
            last_status: None,
            last_seen: None,
            certificates: vec![station::plant::views::PlantCertificate {
                serial: "S3-9".into(),
                state: "issued".into(),
                issued_at: "2026-11-23T09:00:00.000Z".into(),
                not_after: FAR.into(),
                revoked: false,
            }],
        }]
    );
    let json = serde_json::to_value(&w).unwrap();
    assert_eq!(json[0]["certificates"][0]["serial"], "S3-9");
    assert!(
        views::whereabouts(&c, "no-such-guid")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conflict_lasts_while_two_stations_hold_live_certificates() {
    let (_pg, c) = plant().await;
    seed(&c).await;
    assert!(views::conflicts(&c).await.unwrap().is_empty());
    // G1: installed on station-1 and station-2. G2: noted, but its only
    // certificate was abandoned. G4: two of one station's.
    c.batch_execute(&format!(
        "INSERT INTO conflicts (guid) VALUES ('{G1}'), ('{G2}'), ('{G4}')"
    ))
    .await
    .unwrap();
    insert_cert(
        &c,
        "station-2",
        "S2-7",
        G4,
        7,
        "2026-11-25T00:00:00.000Z",
        "installed",
    )
    .await;

    let list = views::conflicts(&c).await.unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].guid, G1);
    let seen: Vec<(&str, &str, &str, &str, &str)> = list[0]
        .certificates
        .iter()
        .map(|x| {
            (
                x.station_id.as_str(),
                x.line.as_str(),
                x.serial.as_str(),
                x.state.as_str(),
                x.issued_at.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "station-1",
                "line-1",
                "S1-1",
                "installed",
                "2026-11-23T06:00:01.500Z"
            ),
            (
                "station-2",
                "line-2",
                "S2-1",
                "installed",
                "2026-11-23T12:00:02.000Z"
            ),
        ]
    );
    assert_eq!(views::conflict_count(&c).await.unwrap(), 1);

    // A third station's issued certificate for G4 puts it in conflict.
    insert_cert(
        &c,
        "station-3",
        "S3-4",
        G4,
        8,
        "2026-11-25T00:00:00.000Z",
        "issued",
    )
    .await;
    assert_eq!(views::conflict_count(&c).await.unwrap(), 2);
    // An expired one does not count.
    c.execute(
        "UPDATE certificates SET not_after = now() - interval '1 day' WHERE serial = 'S3-4'",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(views::conflict_count(&c).await.unwrap(), 1);

    // Station 2 revokes its certificate: no conflict any more.
    c.execute(
        "INSERT INTO revocations (station_id, serial, revoked_at, reason, revoked_by)
         VALUES ('station-2', 'S2-1', now(), 'made twice', 'sue')",
        &[],
    )
    .await
    .unwrap();
    assert!(views::conflicts(&c).await.unwrap().is_empty());
    assert_eq!(views::conflict_count(&c).await.unwrap(), 0);
}

/// Appends `n` chained audit rows for `station`, numbered from 1.
async fn audit_chain(c: &Client, station: &str, n: i64) {
    let mut prev = GENESIS.to_string();
    for id in 1..=n {
        let at = format!("2026-11-23T06:00:{:02}.{:03}Z", id % 60, id % 1000);
        let subject = (id % 2 == 0).then(|| G1.to_string());
        let detail = format!("{{\"n\":{id},\"note\":\"Müller\"}}");
        let hash = row_hash(
            &prev,
            id,
            &at,
            "sue",
            "override",
            subject.as_deref(),
            &detail,
        );
        c.execute(
            "INSERT INTO audit (station_id, audit_id, at, actor, action, subject, detail, prev_hash, hash)
             VALUES ($1, $2, $3, 'sue', 'override', $4, $5, $6, $7)",
            &[&station, &id, &at, &subject, &detail, &prev, &hash],
        )
        .await
        .unwrap();
        prev = hash;
    }
}

async fn audit_of(c: &Client) -> Vec<(String, AuditCheck)> {
    views::verify_audit(c)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.station_id, s.check))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_names_the_first_bad_row_of_each_station() {
    let (_pg, c) = plant().await;
    assert!(views::verify_audit(&c).await.unwrap().is_empty());
    insert_station(&c, "station-1", "line-1").await;
    insert_station(&c, "station-2", "line-2").await;
    insert_station(&c, "station-3", "line-2").await;
    audit_chain(&c, "station-1", 6).await;
    audit_chain(&c, "station-2", 4).await;
    let intact = |rows| AuditCheck::Intact { rows };
    assert_eq!(
        audit_of(&c).await,
        [
            ("station-1".to_string(), intact(6)),
            ("station-2".to_string(), intact(4)),
            ("station-3".to_string(), intact(0)),
        ]
    );

    // Rows not arrived yet are not missing.
    c.execute(
        "DELETE FROM audit WHERE station_id = 'station-2' AND audit_id = 4",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(audit_of(&c).await[1].1, intact(3));

    // Edited in PostgreSQL: that row is named; a row removed from the
    // middle: the next one; the other stations are unaffected.
    c.execute(
        "UPDATE audit SET detail = '{\"n\":3}' WHERE station_id = 'station-1' AND audit_id = 3",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "DELETE FROM audit WHERE station_id = 'station-2' AND audit_id = 2",
        &[],
    )
    .await
    .unwrap();
    let found = audit_of(&c).await;
    match &found[0].1 {
        AuditCheck::Broken { row: 3, reason } => assert!(reason.contains("edited"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match &found[1].1 {
        AuditCheck::Broken { row: 3, reason } => {
            assert!(reason.contains("row 2 is missing"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(found[2].1, intact(0));

    // A row rehashed after an edit still breaks the chain at the next row;
    // the first row must follow GENESIS.
    c.batch_execute(
        "UPDATE audit SET hash = 'x' || hash WHERE station_id = 'station-1' AND audit_id = 1;
         DELETE FROM audit WHERE station_id = 'station-2'",
    )
    .await
    .unwrap();
    audit_chain(&c, "station-3", 2).await;
    c.execute(
        "UPDATE audit SET prev_hash = 'feed' WHERE station_id = 'station-3' AND audit_id = 1",
        &[],
    )
    .await
    .unwrap();
    let found = audit_of(&c).await;
    assert!(
        matches!(found[0].1, AuditCheck::Broken { row: 1, .. }),
        "{found:?}"
    );
    assert_eq!(found[1].1, intact(0));
    match &found[2].1 {
        AuditCheck::Broken { row: 1, reason } => {
            assert!(reason.contains("does not follow"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

// The command line.

fn station(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_station"))
        .args(args)
        .env_remove("STATION_PLANT_DATABASE_URL")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A station.toml in `dir`, with `extra` appended.
fn write_config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("station.toml");
    std::fs::write(
        &path,
        format!(
            "[station]\nid = \"station-1\"\nline = \"line-1\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n\
             [ca]\nkey = \"file\"\ncertificate_file = \"ca/ca.pem\"\nkey_file = \"ca/ca.key\"\nleaf_validity_days = 365\n{extra}"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_migrates_reports_and_verifies() {
    let pg = tokio::task::spawn_blocking(|| {
        let pg = Pg::start();
        pg.create_db("plant");
        pg
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Without [plant]: refused, saying what to add.
    let conf = write_config(dir.path(), "");
    for args in [
        vec!["plant", "migrate"],
        vec!["plant", "verify"],
        vec!["plant", "conflicts"],
        vec!["plant", "report", "--date", "2026-11-23"],
        vec!["plant", "export", "units", "--date", "2026-11-23"],
    ] {
        let out = station(&[&args[..], &["--config", &conf]].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains("no [plant] section in") && err.contains("README: The plant database"),
            "{err}"
        );
    }

    // Before the schema: told to migrate.
    let conf = write_config(
        dir.path(),
        &format!("\n[plant]\ndatabase_url = \"{}\"\n", pg.url("plant")),
    );
    let out = station(&["plant", "verify", "--config", &conf]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("station plant migrate"),
        "{}",
        stderr(&out)
    );

    let out = station(&["plant", "migrate", "--config", &conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let all: Vec<String> = (1..=station::plant::schema::known())
        .map(|v| v.to_string())
        .collect();
    assert!(
        stdout(&out).contains(&format!("applied plant schema versions {}", all.join(", "))),
        "{}",
        stdout(&out)
    );
    let out = station(&["plant", "migrate", "--config", &conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!(
            "the plant schema is up to date (version {})",
            station::plant::schema::known()
        )
    );

    let c = connect(&pg.url("plant")).await;
    let out = station(&["plant", "verify", "--config", &conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = station(&["plant", "conflicts", "--config", &conf]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("no conflicts"), "{}", stdout(&out));

    seed(&c).await;
    audit_chain(&c, "station-1", 3).await;
    audit_chain(&c, "station-2", 2).await;
    let out = station(&["plant", "verify", "--config", &conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ok station-1: 3 audit rows\nok station-2: 2 audit rows\nok station-3: 0 audit rows\n"
    );
    c.execute(
        "UPDATE audit SET actor = 'mallory' WHERE station_id = 'station-2' AND audit_id = 2",
        &[],
    )
    .await
    .unwrap();
    let out = station(&["plant", "verify", "--config", &conf]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains(
            "BROKEN station-2: row 2: its content does not match its hash (it was edited)"
        ),
        "{}",
        stdout(&out)
    );

    // A conflict is listed, and is not an error.
    c.batch_execute(&format!("INSERT INTO conflicts (guid) VALUES ('{G1}')"))
        .await
        .unwrap();
    let out = station(&["plant", "conflicts", "--config", &conf]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(G1) && text.contains("S1-1") && text.contains("S2-1"),
        "{text}"
    );
    let out = station(&["plant", "conflicts", "--config", &conf, "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["guid"], G1);

    // The report and the export, over every station or one line.
    let out = station(&[
        "plant",
        "report",
        "--config",
        &conf,
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["station"].as_str(), v["attempted"].as_u64()),
        (Some("plant"), Some(5))
    );
    let out = station(&[
        "plant",
        "report",
        "--config",
        &conf,
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--format",
        "json",
        "--station",
        "station-2",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["station"].as_str(), v["attempted"].as_u64()),
        (Some("station-2"), Some(1))
    );
    let file = dir.path().join("units.jsonl");
    let out = station(&[
        "plant",
        "export",
        "units",
        "--config",
        &conf,
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--line",
        "line-2",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    let out = station(&[
        "plant",
        "export",
        "units",
        "--config",
        &conf,
        "--from",
        "2026-11-23T00:00:00Z",
        "--to",
        "2026-11-24T00:00:00Z",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 6, "{}", stdout(&out));
    let out = station(&["plant", "report", "--config", &conf, "--format", "pdf"]);
    assert!(
        stderr(&out).contains("choose html, csv or json"),
        "{}",
        stderr(&out)
    );

    // An unreachable database: plain words, never the password.
    let conf = write_config(
        dir.path(),
        "\n[plant]\ndatabase_url = \"postgres://plant:s3cret-pw@127.0.0.1:1/plant\"\n",
    );
    let out = station(&["plant", "verify", "--config", &conf]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("postgres://plant@127.0.0.1:1/plant"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plant_schema_from_before_the_line_figures_is_brought_up_to_date_with_its_steps() {
    let pg = tokio::task::spawn_blocking(|| {
        let pg = Pg::start();
        pg.create_db("plant");
        pg
    })
    .await
    .unwrap();
    let mut c = connect(&pg.url("plant")).await;
    // The plant as the first schema left it, with a step in it.
    c.batch_execute(
        "CREATE TABLE plant_schema (version integer PRIMARY KEY,
                                    applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    c.batch_execute(station::plant::schema::MIGRATIONS[0])
        .await
        .unwrap();
    c.execute("INSERT INTO plant_schema (version) VALUES (1)", &[])
        .await
        .unwrap();
    insert_station(&c, "st-old", "line-1").await;
    c.execute(
        "INSERT INTO steps (station_id, step_id, board_id, step, started_at, board_started)
         VALUES ('st-old', 1, 1, 'identify', now(), now())",
        &[],
    )
    .await
    .unwrap();

    let applied = station::plant::schema::migrate(&mut c).await.unwrap();
    assert_eq!(applied, [2], "only what was missing");
    assert_eq!(
        station::plant::schema::version(&c).await.unwrap(),
        station::plant::schema::known()
    );
    // The step sent before the figures is kept, its figures not known.
    let row = c
        .query_one(
            "SELECT step, resends, damaged FROM steps WHERE station_id = 'st-old'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "identify");
    assert_eq!(row.get::<_, Option<i64>>(1), None);
    assert_eq!(row.get::<_, Option<i64>>(2), None);
}
