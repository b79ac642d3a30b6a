//! Reading across stations: the plant report and the MES export (the
//! station's own report types, filled from every station's records), a
//! GUID's whereabouts, the GUIDs in conflict, and every station's audit
//! chain checked again.
//!
//! Times leave PostgreSQL as the station writes them ([`crate::store::ts`]:
//! UTC, milliseconds), converted in SQL, so a plant report reads the same
//! strings a station's own report does. A board record's `board_id` is the
//! station's own number and repeats across stations: reports get the
//! plant's `plant_id` in its place, and the station id in `station`.
//!
//! Knows the plant schema; not HTTP, the command line or the renderings.

use std::collections::BTreeMap;
use std::pin::pin;

use futures_util::TryStreamExt;
use serde::Serialize;
use tokio_postgres::{Client, Row};

use super::PlantError;
use crate::report::{StepRecord, Unit};
use crate::store::{AuditCheck, GENESIS, UnitFilter, row_hash};

/// `to_char` pattern for [`crate::store::ts`]'s format (applied to a time
/// `AT TIME ZONE 'UTC'`).
const TS: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'"#;

/// A time column as the station writes times.
fn ts(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', {TS})")
}

/// A time column read as a time (8 bytes on the wire, no formatting in
/// the database) and written as the station writes times; the busy
/// report and export queries read times this way.
fn time_text(r: &Row, i: usize) -> String {
    crate::store::ts(r.get::<_, time::OffsetDateTime>(i))
}

fn time_text_opt(r: &Row, i: usize) -> Option<String> {
    r.get::<_, Option<time::OffsetDateTime>>(i)
        .map(crate::store::ts)
}

/// Which board records a plant report or export covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlantFilter {
    /// The range, lot and slot, as for one station.
    pub unit: UnitFilter,
    /// Only this station's records.
    pub station: Option<String>,
    /// Only records made on this line.
    pub line: Option<String>,
}

/// `$1`..`$6`: from, to, lot, slot, station, line. The start-time range
/// comes first so the planner takes `boards_started` and prunes months.
const FILTER: &str =
    "b.started_at >= $1::text::timestamptz AND b.started_at < $2::text::timestamptz
    AND ($3::text IS NULL OR b.work_order = $3) AND ($4::int4 IS NULL OR b.slot = $4)
    AND ($5::text IS NULL OR b.station_id = $5) AND ($6::text IS NULL OR b.line = $6)";

/// A unit's columns (see [`unit`]) and, last, the keyset cursor: the exact
/// start time as text and the station's own board id.
fn unit_select() -> String {
    format!(
        "SELECT b.plant_id, b.station_id, b.slot, b.operator, b.work_order, b.guid,
            {}, {}, b.status, b.step, b.error_code, b.error,
            c.serial, c.fingerprint, e.state, l.state, b.started_at::text, b.board_id
         FROM boards b
         LEFT JOIN LATERAL (SELECT c.serial, c.fingerprint FROM certificates c
                            WHERE c.station_id = b.station_id AND c.board_id = b.board_id
                            ORDER BY c.issued_at DESC, c.serial DESC LIMIT 1) c ON true
         LEFT JOIN LATERAL (SELECT e.state FROM enrollments e
                            WHERE e.station_id = b.station_id AND e.board_id = b.board_id
                            ORDER BY e.job_id DESC LIMIT 1) e ON true
         LEFT JOIN LATERAL (SELECT l.state FROM labels l
                            WHERE l.station_id = b.station_id AND l.board_id = b.board_id
                            ORDER BY l.label_id DESC LIMIT 1) l ON true",
        "b.started_at", "b.finished_at"
    )
}

/// A failed read, in [`super::explain`]'s words (the caller knows and
/// names the address).
fn db(e: tokio_postgres::Error) -> PlantError {
    let PlantError(text) = super::explain("", &e);
    PlantError(text.replacen("database  ", "database ", 1))
}

/// One unit, the page cursor (start time as PostgreSQL's text) and the
/// station's board id.
fn unit(r: &Row) -> Result<(Unit, String, i64), PlantError> {
    let slot: i32 = r.get(2);
    let slot = u16::try_from(slot)
        .map_err(|_| PlantError::new(format!("a board record has slot {slot}, out of range")))?;
    Ok((
        Unit {
            board_id: r.get(0),
            station: r.get(1),
            slot,
            operator: r.get(3),
            lot: r.get(4),
            guid: r.get(5),
            started_at: time_text(r, 6),
            finished_at: time_text_opt(r, 7),
            status: r.get(8),
            step: r.get(9),
            error_code: r.get(10),
            error: r.get(11),
            serial: r.get(12),
            fingerprint: r.get(13),
            enrollment: r.get(14),
            label: r.get(15),
            // The plant database does not hold the device record (it
            // stays on the station that made the device).
            location: None,
            notes: 0,
            // The plant copy keeps the station's board columns it had
            // when the plant tier was made; settings are read per station.
            settings: None,
            settings_note: None,
        },
        r.get(16),
        r.get(17),
    ))
}

/// The first six parameters of [`FILTER`].
struct FilterParams {
    from: String,
    to: String,
    lot: Option<String>,
    slot: Option<i32>,
    station: Option<String>,
    line: Option<String>,
}

impl FilterParams {
    fn of(f: &PlantFilter) -> FilterParams {
        FilterParams {
            from: f.unit.from.clone(),
            to: f.unit.to.clone(),
            lot: f.unit.lot.clone(),
            slot: f.unit.slot.map(i32::from),
            station: f.station.clone(),
            line: f.line.clone(),
        }
    }

    fn list(&self) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.from,
            &self.to,
            &self.lot,
            &self.slot,
            &self.station,
            &self.line,
        ]
    }
}

/// Board records read at a time by [`report_data`].
const REPORT_PAGE: u32 = 10_000;

/// The board records of a range across the plant, by start time, and
/// their steps (by board, in the order they ran).
pub async fn report_data(
    client: &Client,
    f: &PlantFilter,
) -> Result<(Vec<Unit>, Vec<StepRecord>), PlantError> {
    let (mut units, mut steps) = (Vec::new(), Vec::new());
    each_unit_page(client, f, REPORT_PAGE, true, &mut |u, s| {
        units.extend(u);
        steps.extend(s);
        true
    })
    .await?;
    Ok((units, steps))
}

/// Every board record of a range, `page` at a time (with its steps if
/// `with_steps`), in the order they started, without holding them all in
/// memory. Pages follow the start time and `plant_id` (a keyset on the
/// start-time index, never an offset). `each` returns false to stop.
pub async fn each_unit_page(
    client: &Client,
    f: &PlantFilter,
    page: u32,
    with_steps: bool,
    each: &mut dyn FnMut(Vec<Unit>, Vec<StepRecord>) -> bool,
) -> Result<(), PlantError> {
    let units_sql = format!(
        "{} WHERE {FILTER}
           AND ($7::text IS NULL OR (b.started_at >= $7::timestamptz
                AND (b.started_at > $7::timestamptz OR b.plant_id > $8)))
         ORDER BY b.started_at, b.plant_id LIMIT $9",
        unit_select()
    );
    // The page's boards, by (station, board id, start), then their steps:
    // steps are partitioned by their board's start, so the page's first and
    // last start ($5, $6) leave only its months to search.
    let steps_sql = format!(
        "SELECT p.plant_id, s.step, {}, {}, s.duration_ms, s.outcome, s.error_code, s.resends,
                s.damaged
         FROM unnest($1::text[], $2::int8[], $3::int8[], $4::text[])
              AS p(station_id, board_id, plant_id, started)
         JOIN steps s ON s.station_id = p.station_id AND s.board_id = p.board_id
              AND s.board_started = p.started::timestamptz
         WHERE s.board_started >= $5::text::timestamptz AND s.board_started <= $6::text::timestamptz
         ORDER BY p.plant_id, s.step_id",
        "s.started_at", "s.ended_at"
    );
    let units_st = client.prepare(&units_sql).await.map_err(db)?;
    let steps_st = client.prepare(&steps_sql).await.map_err(db)?;
    let params = FilterParams::of(f);
    let limit = i64::from(page.max(1));
    let mut rows = units_page(client, &units_st, &params, None, limit).await?;
    loop {
        let mut units = Vec::with_capacity(rows.len());
        let (mut stations, mut boards, mut plant_ids) = (Vec::new(), Vec::new(), Vec::new());
        let mut starts = Vec::new();
        let mut after = None;
        for r in &rows {
            let (u, at, board) = unit(r)?;
            stations.push(u.station.clone());
            boards.push(board);
            plant_ids.push(u.board_id);
            starts.push(at.clone());
            after = Some((at, u.board_id));
            units.push(u);
        }
        if units.is_empty() {
            return Ok(());
        }
        let full = units.len() as i64 == limit;
        // In start order: the first and the last are the page's bounds.
        let (first_start, last_start) = (starts[0].clone(), starts[starts.len() - 1].clone());
        // This page's steps and the next page's records, asked for
        // together: the connection sends both at once (a pipeline), so
        // the server works on the next page while this one is read.
        let steps = async {
            if !with_steps {
                return Ok(Vec::new());
            }
            let p: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
                &stations,
                &boards,
                &plant_ids,
                &starts,
                &first_start,
                &last_start,
            ];
            Ok::<_, PlantError>(
                client
                    .query(&steps_st, &p)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(step)
                    .collect::<Vec<_>>(),
            )
        };
        let next = async {
            if full {
                units_page(client, &units_st, &params, after, limit).await
            } else {
                Ok(Vec::new())
            }
        };
        let (steps, next) = tokio::join!(steps, next);
        if !each(units, steps?) || !full {
            return Ok(());
        }
        rows = next?;
    }
}

/// One page of board records after `after` (start time as text, plant id).
async fn units_page(
    client: &Client,
    st: &tokio_postgres::Statement,
    params: &FilterParams,
    after: Option<(String, i64)>,
    limit: i64,
) -> Result<Vec<Row>, PlantError> {
    let (after_at, after_id) = match after {
        Some((at, id)) => (Some(at), id),
        None => (None, 0),
    };
    let mut p = params.list();
    p.extend([
        &after_at as &(dyn tokio_postgres::types::ToSql + Sync),
        &after_id,
        &limit,
    ]);
    client.query(st, &p).await.map_err(db)
}

fn step(r: &Row) -> StepRecord {
    StepRecord {
        board_id: r.get(0),
        step: r.get(1),
        started_at: time_text(r, 2),
        ended_at: time_text_opt(r, 3),
        duration_ms: r.get(4),
        outcome: r.get(5),
        error_code: r.get(6),
        // NULL for steps sent by a station from before the figures.
        resends: r.get(7),
        damaged: r.get(8),
    }
}

/// How many board records a range holds across the plant.
pub async fn count_units(client: &Client, f: &PlantFilter) -> Result<u64, PlantError> {
    let params = FilterParams::of(f);
    let n: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM boards b WHERE {FILTER}"),
            &params.list(),
        )
        .await
        .map_err(db)?
        .get(0);
    Ok(n.max(0) as u64)
}

/// Where a GUID has been: one station and line.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Whereabout {
    pub station_id: String,
    pub line: String,
    /// Board records of the GUID there.
    pub boards: i64,
    /// The newest record's status (`None`: certificates only, the board
    /// records not forwarded yet).
    pub last_status: Option<String>,
    /// The newest record's end, or its start while it runs.
    pub last_seen: Option<String>,
    pub certificates: Vec<PlantCertificate>,
}

/// A certificate a station issued for a GUID.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlantCertificate {
    pub serial: String,
    /// `issued`, `installed`, `abandoned`, ...
    pub state: String,
    pub issued_at: String,
    pub not_after: String,
    /// On the station's revocation list.
    pub revoked: bool,
}

/// The line a certificate was made on: its board record's, else the
/// station's.
const CERT_LINE: &str = "coalesce((SELECT bl.line FROM boards bl
                             WHERE bl.station_id = c.station_id AND bl.board_id = c.board_id
                             LIMIT 1),
                            (SELECT s.line FROM plant_stations s WHERE s.station_id = c.station_id),
                            '')";

/// Every station and line that has board records or certificates for
/// `guid`, by station and line.
pub async fn whereabouts(client: &Client, guid: &str) -> Result<Vec<Whereabout>, PlantError> {
    let mut found: BTreeMap<(String, String), Whereabout> = BTreeMap::new();
    let blank = |station: &str, line: &str| Whereabout {
        station_id: station.to_string(),
        line: line.to_string(),
        boards: 0,
        last_status: None,
        last_seen: None,
        certificates: Vec::new(),
    };
    let boards = client
        .query(
            &format!(
                "SELECT b.station_id, b.line, count(*),
                        (array_agg(b.status ORDER BY b.started_at DESC, b.plant_id DESC))[1],
                        (array_agg({} ORDER BY b.started_at DESC, b.plant_id DESC))[1]
                 FROM boards b WHERE b.guid = $1 GROUP BY b.station_id, b.line",
                ts("coalesce(b.finished_at, b.started_at)")
            ),
            &[&guid],
        )
        .await
        .map_err(db)?;
    for r in &boards {
        let (station, line): (String, String) = (r.get(0), r.get(1));
        let w = found
            .entry((station.clone(), line.clone()))
            .or_insert_with(|| blank(&station, &line));
        w.boards = r.get(2);
        w.last_status = r.get(3);
        w.last_seen = r.get(4);
    }
    let certs = client
        .query(
            &format!(
                "SELECT c.station_id, {CERT_LINE}, c.serial, c.state, {}, {},
                        EXISTS (SELECT 1 FROM revocations r
                                WHERE r.station_id = c.station_id AND r.serial = c.serial)
                 FROM certificates c WHERE c.guid = $1 ORDER BY c.issued_at, c.serial",
                ts("c.issued_at"),
                ts("c.not_after")
            ),
            &[&guid],
        )
        .await
        .map_err(db)?;
    for r in &certs {
        let (station, line): (String, String) = (r.get(0), r.get(1));
        found
            .entry((station.clone(), line.clone()))
            .or_insert_with(|| blank(&station, &line))
            .certificates
            .push(PlantCertificate {
                serial: r.get(2),
                state: r.get(3),
                issued_at: r.get(4),
                not_after: r.get(5),
                revoked: r.get(6),
            });
    }
    Ok(found.into_values().collect())
}

/// A GUID holding live certificates from two or more stations.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Conflict {
    pub guid: String,
    /// When the plant first saw it.
    pub detected_at: String,
    /// Its live certificates, oldest first.
    pub certificates: Vec<ConflictCertificate>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConflictCertificate {
    pub station_id: String,
    pub line: String,
    pub serial: String,
    pub state: String,
    pub issued_at: String,
}

/// A live certificate `c`: issued or installed, not revoked by its
/// station, not expired (the rule the forwarder notes conflicts by).
const LIVE: &str = "c.state IN ('issued', 'installed') AND c.not_after > now()
    AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.station_id = c.station_id AND r.serial = c.serial)";

/// The noted GUIDs that are still in conflict (`k` is the `conflicts` row).
fn still_in_conflict() -> String {
    format!(
        "(SELECT count(DISTINCT c.station_id) FROM certificates c WHERE c.guid = k.guid AND {LIVE}) > 1"
    )
}

/// The GUIDs that still hold live certificates from two or more stations,
/// by GUID.
pub async fn conflicts(client: &Client) -> Result<Vec<Conflict>, PlantError> {
    let rows = client
        .query(
            &format!(
                "SELECT k.guid, {}, c.station_id, {CERT_LINE}, c.serial, c.state, {}
                 FROM conflicts k JOIN certificates c ON c.guid = k.guid
                 WHERE {LIVE} AND {}
                 ORDER BY k.guid, c.issued_at, c.station_id, c.serial",
                ts("k.detected_at"),
                ts("c.issued_at"),
                still_in_conflict()
            ),
            &[],
        )
        .await
        .map_err(db)?;
    let mut out: Vec<Conflict> = Vec::new();
    for r in &rows {
        let guid: String = r.get(0);
        if out.last().is_none_or(|c| c.guid != guid) {
            out.push(Conflict {
                guid,
                detected_at: r.get(1),
                certificates: Vec::new(),
            });
        }
        if let Some(c) = out.last_mut() {
            c.certificates.push(ConflictCertificate {
                station_id: r.get(2),
                line: r.get(3),
                serial: r.get(4),
                state: r.get(5),
                issued_at: r.get(6),
            });
        }
    }
    Ok(out)
}

/// How many GUIDs [`conflicts`] lists.
pub async fn conflict_count(client: &Client) -> Result<i64, PlantError> {
    Ok(client
        .query_one(
            &format!(
                "SELECT count(*) FROM conflicts k WHERE {}",
                still_in_conflict()
            ),
            &[],
        )
        .await
        .map_err(db)?
        .get(0))
}

/// One station's audit chain as the plant holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationAudit {
    pub station_id: String,
    pub check: AuditCheck,
}

/// Checks every station's audit chain, row by row in `audit_id` order
/// (streamed, not held in memory): each row follows the one before
/// (the first follows [`GENESIS`]), its hash matches its fields, and no
/// row is missing before a later one. Rows after the last that arrived
/// are not missing: the station may still be forwarding them.
pub async fn verify_audit(client: &Client) -> Result<Vec<StationAudit>, PlantError> {
    let stations: Vec<String> = client
        .query(
            "SELECT station_id FROM plant_stations ORDER BY station_id",
            &[],
        )
        .await
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(stations.len());
    for station in stations {
        let check = verify_station(client, &station).await?;
        out.push(StationAudit {
            station_id: station,
            check,
        });
    }
    Ok(out)
}

async fn verify_station(client: &Client, station: &str) -> Result<AuditCheck, PlantError> {
    let rows = client
        .query_raw(
            "SELECT audit_id, at, actor, action, subject, detail, prev_hash, hash
             FROM audit WHERE station_id = $1 ORDER BY audit_id",
            [station],
        )
        .await
        .map_err(db)?;
    let mut rows = pin!(rows);
    let (mut prev, mut expected, mut n) = (GENESIS.to_string(), 1i64, 0i64);
    while let Some(r) = rows.try_next().await.map_err(db)? {
        let id: i64 = r.get(0);
        let (at, actor, action): (&str, &str, &str) = (r.get(1), r.get(2), r.get(3));
        let subject: Option<&str> = r.get(4);
        let (detail, prev_hash, hash): (&str, &str, &str) = (r.get(5), r.get(6), r.get(7));
        if id != expected {
            let missing = if id - 1 == expected {
                format!("row {expected} is missing (deleted)")
            } else {
                format!("rows {expected} to {} are missing (deleted)", id - 1)
            };
            return Ok(AuditCheck::Broken {
                row: id,
                reason: missing,
            });
        }
        if prev_hash != prev {
            return Ok(AuditCheck::Broken {
                row: id,
                reason:
                    "it does not follow the row before it (a row before it was changed or removed)"
                        .into(),
            });
        }
        if row_hash(prev_hash, id, at, actor, action, subject, detail) != hash {
            return Ok(AuditCheck::Broken {
                row: id,
                reason: "its content does not match its hash (it was edited)".into(),
            });
        }
        prev = hash.to_string();
        expected = id + 1;
        n += 1;
    }
    Ok(AuditCheck::Intact { rows: n })
}

/// Where a station's feed stands in the plant: the last entry committed,
/// `None` before its first forward.
pub async fn station_cursor(client: &Client, station: &str) -> Result<Option<i64>, PlantError> {
    Ok(client
        .query_opt(
            "SELECT last_seq FROM plant_stations WHERE station_id = $1",
            &[&station],
        )
        .await
        .map_err(db)?
        .map(|r| r.get(0)))
}
