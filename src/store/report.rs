//! What QA reports and MES exports read: board records of a time range
//! with their certificate, upload and label state, the device's location
//! and how many service notes it has, and their steps.

use rusqlite::{Connection, params};

use super::{Store, StoreError};
use crate::report::{StepRecord, Unit};

/// The board records a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFilter {
    /// Started at or after `from`, before `to` (store time format).
    pub from: String,
    pub to: String,
    pub lot: Option<String>,
    pub slot: Option<u16>,
}

impl UnitFilter {
    /// The board records a report query covers.
    pub fn of(q: &crate::report::ReportQuery) -> UnitFilter {
        UnitFilter {
            from: q.from.clone(),
            to: q.to.clone(),
            lot: q.lot.clone(),
            slot: q.slot,
        }
    }
}

const UNIT_SELECT: &str = "SELECT b.id, b.station, b.slot, b.operator, b.work_order, b.guid, b.started_at, b.finished_at,
        b.status, b.step, b.error_code, b.error,
        (SELECT c.serial FROM certificates c WHERE c.board_id = b.id ORDER BY c.rowid DESC LIMIT 1),
        (SELECT c.fingerprint_sha256 FROM certificates c WHERE c.board_id = b.id ORDER BY c.rowid DESC LIMIT 1),
        (SELECT o.state FROM outbox o WHERE o.board_id = b.id ORDER BY o.id DESC LIMIT 1),
        (SELECT l.state FROM labels l WHERE l.board_id = b.id ORDER BY l.id DESC LIMIT 1),
        dl.guid IS NOT NULL, dl.site, dl.building, dl.room, dl.text,
        (SELECT COUNT(*) FROM device_notes n WHERE n.guid = b.guid),
        b.settings, b.settings_note
    FROM boards b LEFT JOIN device_locations dl ON dl.guid = b.guid";

const FILTER: &str = "b.started_at >= ?1 AND b.started_at < ?2
    AND (?3 IS NULL OR b.work_order = ?3) AND (?4 IS NULL OR b.slot = ?4)";

fn unit(r: &rusqlite::Row<'_>) -> rusqlite::Result<Unit> {
    Ok(Unit {
        board_id: r.get(0)?,
        station: r.get(1)?,
        slot: r.get(2)?,
        operator: r.get(3)?,
        lot: r.get(4)?,
        guid: r.get(5)?,
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
        status: r.get(8)?,
        step: r.get(9)?,
        error_code: r.get(10)?,
        error: r.get(11)?,
        serial: r.get(12)?,
        fingerprint: r.get(13)?,
        enrollment: r.get(14)?,
        label: r.get(15)?,
        location: if r.get::<_, bool>(16)? {
            Some(crate::registry::Location {
                site: r.get(17)?,
                building: r.get(18)?,
                room: r.get(19)?,
                text: r.get(20)?,
            })
        } else {
            None
        },
        notes: r.get(21)?,
        settings: r
            .get::<_, Option<String>>(22)?
            .and_then(|t| serde_json::from_str(&t).ok()),
        settings_note: r.get(23)?,
    })
}

fn step(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        board_id: r.get(0)?,
        step: r.get(1)?,
        started_at: r.get(2)?,
        ended_at: r.get(3)?,
        duration_ms: r.get(4)?,
        outcome: r.get(5)?,
        error_code: r.get(6)?,
        resends: r.get(7)?,
        damaged: r.get(8)?,
    })
}

/// The board ids that can be in the range: records are numbered in the
/// order they start, so the range is a span of ids (found through the
/// start-time index), read in pages of the primary key.
fn id_span(c: &Connection, f: &UnitFilter) -> rusqlite::Result<Option<(i64, i64)>> {
    c.query_row(
        "SELECT MIN(id), MAX(id) FROM boards WHERE started_at >= ?1 AND started_at < ?2",
        params![f.from, f.to],
        |r| Ok(r.get::<_, Option<i64>>(0)?.zip(r.get::<_, Option<i64>>(1)?)),
    )
}

impl Store {
    /// The board records of a range, by start time, and their steps (by
    /// board, in the order they ran).
    pub fn report_data(&self, f: &UnitFilter) -> Result<(Vec<Unit>, Vec<StepRecord>), StoreError> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "{UNIT_SELECT} WHERE {FILTER} ORDER BY b.started_at, b.id"
            ))?;
            let units = st
                .query_map(params![f.from, f.to, f.lot, f.slot], unit)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut st = c.prepare(&format!(
                "SELECT s.board_id, s.step, s.started_at, s.ended_at, s.duration_ms, s.outcome, s.error_code, s.resends, s.damaged
                 FROM steps s JOIN boards b ON b.id = s.board_id WHERE {FILTER} ORDER BY s.board_id, s.id"
            ))?;
            let steps = st
                .query_map(params![f.from, f.to, f.lot, f.slot], step)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((units, steps))
        })
    }

    /// Every board record of a range, `page` at a time (with its steps if
    /// `with_steps`), in the order they started, without holding them all
    /// in memory (an export of months). `each` returns false to stop.
    pub fn each_unit_page(
        &self,
        f: &UnitFilter,
        page: u32,
        with_steps: bool,
        each: &mut dyn FnMut(Vec<Unit>, Vec<StepRecord>) -> bool,
    ) -> Result<(), StoreError> {
        let Some((first, last)) = self.with(|c| id_span(c, f))? else {
            return Ok(());
        };
        let mut after = first - 1;
        while after < last {
            let (units, steps) = self.with(|c| {
                let mut st = c.prepare_cached(&format!(
                    "{UNIT_SELECT} WHERE b.id > ?5 AND b.id <= ?6 AND {FILTER} ORDER BY b.id LIMIT ?7"
                ))?;
                let units = st
                    .query_map(params![f.from, f.to, f.lot, f.slot, after, last, page], unit)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let (lo, hi) = match (units.first(), units.last()) {
                    (Some(a), Some(b)) if with_steps => (a.board_id, b.board_id),
                    _ => return Ok((units, Vec::new())),
                };
                let mut st = c.prepare_cached(&format!(
                    "SELECT s.board_id, s.step, s.started_at, s.ended_at, s.duration_ms, s.outcome, s.error_code, s.resends, s.damaged
                     FROM steps s JOIN boards b ON b.id = s.board_id
                     WHERE s.board_id BETWEEN ?5 AND ?6 AND {FILTER} ORDER BY s.board_id, s.id"
                ))?;
                let steps = st
                    .query_map(params![f.from, f.to, f.lot, f.slot, lo, hi], step)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok((units, steps))
            })?;
            let Some(last_seen) = units.last().map(|u| u.board_id) else {
                break;
            };
            after = last_seen;
            if !each(units, steps) {
                break;
            }
        }
        Ok(())
    }
}

impl Store {
    /// How many board records a range holds.
    pub fn count_units(&self, f: &UnitFilter) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM boards b WHERE {FILTER}"),
                params![f.from, f.to, f.lot, f.slot],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
        })
    }

    /// The report of a range: its records, read in one go, and their
    /// figures.
    pub fn report(
        &self,
        station: &str,
        query: crate::report::ReportQuery,
        generated_at: String,
    ) -> Result<crate::report::Report, StoreError> {
        let filter = UnitFilter::of(&query);
        let (units, steps) = self.report_data(&filter)?;
        Ok(crate::report::Report::build(
            station,
            query,
            generated_at,
            units,
            &steps,
        ))
    }
}
