//! QA reports: the figures of a time range (yield, failures by step, cycle
//! times, throughput, upload and label state, the device list), computed
//! from board records the store hands over, and their renderings (HTML
//! with SVG charts, CSV, JSON, JSON lines for the MES). No I/O, no SQL.

mod charts;
pub mod range;
pub mod render;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// What a report covers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReportQuery {
    /// Board records started at or after `from` and before `to` (RFC 3339,
    /// UTC, as the store keeps times).
    pub from: String,
    pub to: String,
    pub lot: Option<String>,
    pub slot: Option<u16>,
    /// How the range was asked for (`2026-11-23`, `shift early on
    /// 2026-11-23`), for the title.
    pub title: String,
}

impl ReportQuery {
    /// A query from `from` to `to` (store time format), titled as the
    /// range was asked for, with the lot and slot named.
    pub fn new(
        range_title: &str,
        from: String,
        to: String,
        lot: Option<String>,
        slot: Option<u16>,
    ) -> ReportQuery {
        let mut title = range_title.to_string();
        if let Some(l) = &lot {
            title.push_str(&format!(", lot {l}"));
        }
        if let Some(n) = slot {
            title.push_str(&format!(", slot {n}"));
        }
        ReportQuery {
            from,
            to,
            lot,
            slot,
            title,
        }
    }
}

/// One board record (one visit of a board to a jig), as reports show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unit {
    pub board_id: i64,
    pub station: String,
    pub slot: u16,
    pub operator: Option<String>,
    /// The work order (lot).
    pub lot: Option<String>,
    pub guid: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `provisioned`, `failed` or `in_progress`.
    pub status: String,
    /// The step it reached (for a failure: the step that failed).
    pub step: String,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub serial: Option<String>,
    pub fingerprint: Option<String>,
    /// DPS upload: `pending`, `enrolled`, `parked`; `None` without a job.
    pub enrollment: Option<String>,
    /// Newest label job: `pending`, `printed`, `cancelled`; `None` without.
    pub label: Option<String>,
    /// The device's location (by GUID) as recorded now, if any.
    pub location: Option<crate::registry::Location>,
    /// How many service notes the device (by GUID) has.
    pub notes: i64,
    /// The provisioning settings the board read back.
    pub settings: Option<crate::core::settings::ProvisioningSettings>,
    /// Why the board got no provisioning settings.
    pub settings_note: Option<String>,
}

/// One step of one board record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRecord {
    pub board_id: i64,
    pub step: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_ms: Option<i64>,
    /// `ok`, `failed`, `interrupted`; `None` while running.
    pub outcome: Option<String>,
    pub error_code: Option<String>,
    /// Requests sent again to the jig in this step (`None`: not known, as
    /// for a step a station sent the plant before plant schema 2).
    pub resends: Option<i64>,
    /// Damaged frames on the jig line (either way) in this step.
    pub damaged: Option<i64>,
}

/// How one slot's jig line fared over a report's board records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotLine {
    /// The slot's station: a plant report holds many stations' slots.
    pub station: String,
    pub slot: u16,
    /// Board records with at least one step.
    pub boards: u64,
    pub resends: u64,
    pub damaged: u64,
    pub resends_per_board: f64,
    pub damaged_per_board: f64,
}

/// Failures with one reason at one step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParetoRow {
    pub step: String,
    pub code: String,
    pub count: u64,
    /// Share of all failures up to and including this row, in percent.
    pub cumulative_pct: f64,
}

/// Durations of one step (or of whole cycles), in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Timing {
    pub step: String,
    pub count: u64,
    pub median_ms: i64,
    pub p95_ms: i64,
    pub max_ms: i64,
}

/// A histogram bar: cycles that took `from_s` up to (not including) `to_s`
/// seconds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Bucket {
    pub from_s: u64,
    pub to_s: u64,
    pub count: u64,
}

/// Boards finished in one hour (UTC), by outcome.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Hour {
    /// `2026-11-23T06`.
    pub hour: String,
    pub passed: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct UploadState {
    pub enrolled: u64,
    pub pending: u64,
    pub parked: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LabelState {
    pub printed: u64,
    pub pending: u64,
    pub cancelled: u64,
}

/// Every figure of a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub station: String,
    pub query: ReportQuery,
    pub generated_at: String,
    /// Board records in the range.
    pub attempted: u64,
    pub passed: u64,
    pub failed: u64,
    pub in_progress: u64,
    /// Distinct boards with a finished record (by GUID; a record without
    /// one counts on its own).
    pub boards: u64,
    /// Boards whose first finished record in the range passed.
    pub first_pass: u64,
    /// `first_pass / boards`, a fraction from 0 to 1; `None` without
    /// boards.
    pub first_pass_yield: Option<f64>,
    /// Finished records beyond each board's first: attempts that were
    /// retries.
    pub retries: u64,
    pub pareto: Vec<ParetoRow>,
    /// Per step, in provisioning order, over the steps that ended `ok`.
    pub step_times: Vec<Timing>,
    /// Whole cycles (start to finish) of passed boards.
    pub cycle: Option<Timing>,
    pub cycle_histogram: Vec<Bucket>,
    pub throughput: Vec<Hour>,
    /// Of the passed records.
    pub uploads: UploadState,
    pub labels: LabelState,
    /// Per slot with board records: resends and damaged frames on its
    /// jig line, per board (a noisy cable shows here).
    pub line_by_slot: Vec<SlotLine>,
    pub units: Vec<Unit>,
}

/// The provisioning steps in order.
pub const STEPS: [&str; 10] = [
    "hello", "identify", "review", "keygen", "issue", "store", "readback", "prove", "settings",
    "finish",
];

/// The value at quantile `q` of sorted values (nearest rank).
fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn timing(step: &str, mut values: Vec<i64>) -> Option<Timing> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(Timing {
        step: step.to_string(),
        count: values.len() as u64,
        median_ms: quantile(&values, 0.5),
        p95_ms: quantile(&values, 0.95),
        max_ms: values[values.len() - 1],
    })
}

/// Milliseconds between two stored times.
fn millis(from: &str, to: &str) -> Option<i64> {
    use time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(from, &Rfc3339).ok()?;
    let b = time::OffsetDateTime::parse(to, &Rfc3339).ok()?;
    Some((b - a).whole_milliseconds() as i64)
}

/// Histogram bars of cycle times: 10 equal bars of whole seconds from 0 to
/// the slowest cycle.
fn histogram(cycles_ms: &[i64]) -> Vec<Bucket> {
    let Some(max) = cycles_ms.iter().max() else {
        return Vec::new();
    };
    let top_s = (*max as u64 / 1000) + 1;
    let width = top_s.div_ceil(10).max(1);
    let bars = top_s.div_ceil(width);
    let mut out: Vec<Bucket> = (0..bars)
        .map(|i| Bucket {
            from_s: i * width,
            to_s: (i + 1) * width,
            count: 0,
        })
        .collect();
    let last = out.len().saturating_sub(1);
    for c in cycles_ms {
        let i = ((*c).max(0) as u64 / 1000 / width) as usize;
        if let Some(b) = out.get_mut(i.min(last)) {
            b.count += 1;
        }
    }
    out
}

impl Report {
    /// The figures of `units` (in the order the device list shows them:
    /// by start time) and their `steps`.
    pub fn build(
        station: &str,
        query: ReportQuery,
        generated_at: String,
        units: Vec<Unit>,
        steps: &[StepRecord],
    ) -> Report {
        let count = |s: &str| units.iter().filter(|u| u.status == s).count() as u64;
        let (passed, failed, in_progress) =
            (count("provisioned"), count("failed"), count("in_progress"));
        // First record of each board, by start time.
        let mut first: HashMap<&str, &Unit> = HashMap::new();
        let mut anonymous = 0u64;
        let mut anonymous_passed = 0u64;
        // Yield and retries count finished records: a board still on the
        // jig has not had its first pass yet.
        for u in units.iter().filter(|u| u.status != "in_progress") {
            match &u.guid {
                Some(g) => {
                    let e = first.entry(g.as_str()).or_insert(u);
                    if (u.started_at.as_str(), u.board_id) < (e.started_at.as_str(), e.board_id) {
                        *e = u;
                    }
                }
                None => {
                    anonymous += 1;
                    anonymous_passed += u64::from(u.status == "provisioned");
                }
            }
        }
        let boards = first.len() as u64 + anonymous;
        let first_pass =
            first.values().filter(|u| u.status == "provisioned").count() as u64 + anonymous_passed;
        let mut reasons: BTreeMap<(String, String), u64> = BTreeMap::new();
        for u in units.iter().filter(|u| u.status == "failed") {
            let code = u.error_code.clone().unwrap_or_else(|| "unknown".into());
            *reasons.entry((u.step.clone(), code)).or_default() += 1;
        }
        let mut pareto: Vec<ParetoRow> = reasons
            .into_iter()
            .map(|((step, code), count)| ParetoRow {
                step,
                code,
                count,
                cumulative_pct: 0.0,
            })
            .collect();
        pareto.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.step.cmp(&b.step))
                .then(a.code.cmp(&b.code))
        });
        let mut running = 0u64;
        for r in &mut pareto {
            running += r.count;
            r.cumulative_pct = 100.0 * running as f64 / failed.max(1) as f64;
        }
        let mut by_step: HashMap<&str, Vec<i64>> = HashMap::new();
        for s in steps.iter().filter(|s| s.outcome.as_deref() == Some("ok")) {
            if let Some(d) = s.duration_ms {
                by_step.entry(s.step.as_str()).or_default().push(d);
            }
        }
        let step_times = STEPS
            .iter()
            .filter_map(|s| timing(s, by_step.remove(s).unwrap_or_default()))
            .collect();
        let cycles: Vec<i64> = units
            .iter()
            .filter(|u| u.status == "provisioned")
            .filter_map(|u| millis(&u.started_at, u.finished_at.as_deref()?))
            .filter(|ms| *ms >= 0)
            .collect();
        let mut hours: BTreeMap<String, Hour> = BTreeMap::new();
        for u in units.iter().filter(|u| u.status != "in_progress") {
            let Some(hour) = u.finished_at.as_deref().and_then(|t| t.get(..13)) else {
                continue;
            };
            let h = hours.entry(hour.to_string()).or_insert_with(|| Hour {
                hour: hour.to_string(),
                passed: 0,
                failed: 0,
            });
            if u.status == "provisioned" {
                h.passed += 1;
            } else {
                h.failed += 1;
            }
        }
        let mut uploads = UploadState::default();
        let mut labels = LabelState::default();
        for u in units.iter().filter(|u| u.status == "provisioned") {
            match u.enrollment.as_deref() {
                Some("enrolled") => uploads.enrolled += 1,
                Some("pending") => uploads.pending += 1,
                Some("parked") => uploads.parked += 1,
                _ => {}
            }
            match u.label.as_deref() {
                Some("printed") => labels.printed += 1,
                Some("pending") => labels.pending += 1,
                Some("cancelled") => labels.cancelled += 1,
                _ => {}
            }
        }
        let line_by_slot = line_by_slot(&units, steps);
        Report {
            station: station.to_string(),
            query,
            generated_at,
            attempted: units.len() as u64,
            passed,
            failed,
            in_progress,
            boards,
            first_pass,
            first_pass_yield: (boards > 0).then(|| first_pass as f64 / boards as f64),
            retries: (passed + failed).saturating_sub(boards),
            pareto,
            step_times,
            cycle: timing("cycle", cycles.clone()),
            cycle_histogram: histogram(&cycles),
            throughput: hours.into_values().collect(),
            uploads,
            labels,
            line_by_slot,
            units,
        }
    }
}

/// Resends and damaged frames per board, by station and slot, over the
/// board records whose steps have the figures.
fn line_by_slot(units: &[Unit], steps: &[StepRecord]) -> Vec<SlotLine> {
    let slot_of: HashMap<i64, (&str, u16)> = units
        .iter()
        .map(|u| (u.board_id, (u.station.as_str(), u.slot)))
        .collect();
    // (station, slot) -> (boards seen, resends, damaged)
    type Seen = (std::collections::HashSet<i64>, u64, u64);
    let mut by: BTreeMap<(&str, u16), Seen> = BTreeMap::new();
    for s in steps {
        let (Some(jig), Some(resends), Some(damaged)) =
            (slot_of.get(&s.board_id), s.resends, s.damaged)
        else {
            continue;
        };
        let e = by.entry(*jig).or_default();
        e.0.insert(s.board_id);
        e.1 += resends.max(0) as u64;
        e.2 += damaged.max(0) as u64;
    }
    by.into_iter()
        .map(|((station, slot), (boards, resends, damaged))| {
            let n = boards.len() as u64;
            SlotLine {
                station: station.to_string(),
                slot,
                boards: n,
                resends,
                damaged,
                resends_per_board: resends as f64 / n.max(1) as f64,
                damaged_per_board: damaged as f64 / n.max(1) as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.95), 95);
        assert_eq!(quantile(&[7], 0.95), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn histogram_bars_cover_every_cycle() {
        let h = histogram(&[500, 1500, 29_999, 30_000]);
        assert_eq!(h.iter().map(|b| b.count).sum::<u64>(), 4);
        assert_eq!(h.first().unwrap().from_s, 0);
        assert!(h.last().unwrap().to_s > 30);
        assert!(histogram(&[]).is_empty());
    }
}
