//! The renderings of a QA [`Report`]: a standalone HTML page (for QA
//! engineers, on screen and on A4 paper) with the charts of `charts`, the
//! device list as CSV, the whole report as JSON, and one JSON line per board
//! record for the MES. Pure functions from figures to text: no figure is
//! computed here (that is [`Report::build`]), nothing is read or written.

use askama::Template;
use serde::Serialize;

use super::charts::{
    PARETO_BARS, continuous_hours, histogram_svg, pareto_svg, percent, throughput_svg,
};
use super::{Report, StepRecord, Timing, Unit};

/// The columns of [`csv()`], in order.
pub const CSV_COLUMNS: [&str; 19] = [
    "guid",
    "serial",
    "fingerprint_sha256",
    "operator",
    "slot",
    "lot",
    "started_at",
    "finished_at",
    "outcome",
    "step",
    "error_code",
    "location_site",
    "location_building",
    "location_room",
    "location_text",
    "notes",
    "id_scope",
    "registration_id",
    "settings_note",
];

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Report,
    /// The stylesheet, in a report saved as a file.
    embedded_css: Option<&'static str>,
    yield_text: String,
    pareto_svg: String,
    /// Reasons in the table but not drawn.
    pareto_not_drawn: usize,
    pareto: Vec<ParetoLine<'a>>,
    timings: Vec<TimingLine<'a>>,
    cycle: Option<TimingLine<'a>>,
    histogram_svg: String,
    throughput_svg: String,
    /// Passed records without an upload job or a label job.
    no_upload: u64,
    no_label: u64,
    lines: Vec<LineRow>,
    units: Vec<UnitLine<'a>>,
}

/// A slot's jig line in the report.
struct LineRow {
    station: String,
    slot: u16,
    boards: u64,
    resends: String,
    damaged: String,
    noisy: bool,
}

struct ParetoLine<'a> {
    step: &'a str,
    code: &'a str,
    count: u64,
    share: String,
    cumulative: String,
}

struct TimingLine<'a> {
    step: &'a str,
    count: u64,
    median: String,
    p95: String,
    max: String,
}

impl<'a> TimingLine<'a> {
    fn of(t: &'a Timing) -> Self {
        TimingLine {
            step: &t.step,
            count: t.count,
            median: seconds(t.median_ms),
            p95: seconds(t.p95_ms),
            max: seconds(t.max_ms),
        }
    }
}

struct UnitLine<'a> {
    u: &'a Unit,
    /// Times with a space for `T`, so a narrow column breaks there.
    started: String,
    finished: String,
    outcome: String,
}

/// The report's stylesheet.
pub const REPORT_CSS: &str = include_str!("../../static/report.css");

/// Where the report page's styles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Styles {
    /// In the page: a file that stands alone (`station report`).
    Embedded,
    /// `/static/report.css`: a page the station serves, under a
    /// Content-Security-Policy that allows no inline style.
    Linked,
}

/// The report as an HTML page: with [`Styles::Embedded`], standalone (no
/// outside resources).
pub fn html(report: &Report, styles: Styles) -> Result<String, String> {
    let r = report;
    let total: u64 = r.pareto.iter().map(|p| p.count).sum();
    let pareto = r
        .pareto
        .iter()
        .map(|p| ParetoLine {
            step: &p.step,
            code: &p.code,
            count: p.count,
            share: percent(100.0 * p.count as f64 / total.max(1) as f64),
            cumulative: percent(p.cumulative_pct),
        })
        .collect();
    let sum_uploads = r.uploads.enrolled + r.uploads.pending + r.uploads.parked;
    let sum_labels = r.labels.printed + r.labels.pending + r.labels.cancelled;
    let page = Page {
        r,
        embedded_css: (styles == Styles::Embedded).then_some(REPORT_CSS),
        yield_text: r
            .first_pass_yield
            .map_or_else(|| "–".to_string(), |y| percent(100.0 * y)),
        pareto_svg: pareto_svg(&r.pareto),
        pareto_not_drawn: r.pareto.len().saturating_sub(PARETO_BARS),
        pareto,
        timings: r.step_times.iter().map(TimingLine::of).collect(),
        cycle: r.cycle.as_ref().map(TimingLine::of),
        histogram_svg: histogram_svg(&r.cycle_histogram),
        throughput_svg: throughput_svg(&continuous_hours(&r.throughput)),
        no_upload: r.passed.saturating_sub(sum_uploads),
        no_label: r.passed.saturating_sub(sum_labels),
        lines: r
            .line_by_slot
            .iter()
            .map(|l| LineRow {
                station: l.station.clone(),
                slot: l.slot,
                boards: l.boards,
                resends: format!("{:.2}", l.resends_per_board),
                damaged: format!("{:.2}", l.damaged_per_board),
                noisy: crate::core::noise::is_noisy(l.resends_per_board, None),
            })
            .collect(),
        units: r
            .units
            .iter()
            .map(|u| UnitLine {
                u,
                started: u.started_at.replacen('T', " ", 1),
                finished: u
                    .finished_at
                    .as_deref()
                    .map(|t| t.replacen('T', " ", 1))
                    .unwrap_or_default(),
                outcome: match u.status.as_str() {
                    "failed" => format!("failed at {}", u.step),
                    "in_progress" => format!("in progress at {}", u.step),
                    other => other.to_string(),
                },
            })
            .collect(),
    };
    page.render()
        .map_err(|e| format!("the report page could not be drawn: {e}"))
}

/// The device list as CSV (RFC 4180: header row, commas, CRLF), columns
/// [`CSV_COLUMNS`]; `outcome` is the record's status, `step` the step it
/// reached, the `location_` fields the device's location as recorded now,
/// `notes` how many service notes it has; an absent value is an empty
/// field.
pub fn csv(units: &[Unit]) -> String {
    // Writing to memory has no I/O error to report, and every field is a
    // `str`, so the bytes are UTF-8: the fallbacks below are never taken.
    write_csv(units).map(utf8).unwrap_or_default()
}

fn write_csv(units: &[Unit]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for u in units {
        let opt = |v: &Option<String>| v.as_deref().unwrap_or_default().to_string();
        let loc = |f: fn(&crate::registry::Location) -> &Option<String>| {
            u.location.as_ref().map(|l| opt(f(l))).unwrap_or_default()
        };
        w.write_record([
            opt(&u.guid),
            opt(&u.serial),
            opt(&u.fingerprint),
            opt(&u.operator),
            u.slot.to_string(),
            opt(&u.lot),
            u.started_at.clone(),
            opt(&u.finished_at),
            u.status.clone(),
            u.step.clone(),
            opt(&u.error_code),
            loc(|l| &l.site),
            loc(|l| &l.building),
            loc(|l| &l.room),
            loc(|l| &l.text),
            u.notes.to_string(),
            opt(&u.settings.as_ref().map(|s| s.id_scope.clone())),
            opt(&u.settings.as_ref().map(|s| s.registration_id.clone())),
            opt(&u.settings_note),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The whole report as pretty-printed JSON.
pub fn json(report: &Report) -> String {
    // Plain structs of strings, integers and floats (a non-finite float is
    // written as null): serialising them cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default()
}

/// One board record of the MES feed.
#[derive(Serialize)]
struct MesUnit<'a> {
    station: &'a str,
    slot: u16,
    operator: Option<&'a str>,
    lot: Option<&'a str>,
    guid: Option<&'a str>,
    certificate_serial: Option<&'a str>,
    certificate_fingerprint_sha256: Option<&'a str>,
    started_at: &'a str,
    finished_at: Option<&'a str>,
    outcome: &'a str,
    error_code: Option<&'a str>,
    error: Option<&'a str>,
    enrollment: Option<&'a str>,
    label: Option<&'a str>,
    /// The device's location as recorded now (`site`, `building`, `room`,
    /// `text`, each a string or null); null without one.
    location: Option<&'a crate::registry::Location>,
    /// How many service notes the device has.
    notes: i64,
    provisioning_settings: Option<&'a crate::core::settings::ProvisioningSettings>,
    settings_note: Option<&'a str>,
    steps: Vec<MesStep<'a>>,
}

#[derive(Serialize)]
struct MesStep<'a> {
    step: &'a str,
    started_at: &'a str,
    ended_at: Option<&'a str>,
    duration_ms: Option<i64>,
    outcome: Option<&'a str>,
    error_code: Option<&'a str>,
}

/// JSON lines for the MES: one line per unit, in the order given, each with
/// the station that made it and its steps (those of `steps` with its
/// `board_id`, in their order there).
pub fn units_jsonl(units: &[Unit], steps: &[StepRecord]) -> String {
    // A stable sort keeps each board's steps in their given order; on steps
    // already grouped by board it is a single linear pass.
    let mut by_board: Vec<&StepRecord> = steps.iter().collect();
    by_board.sort_by_key(|s| s.board_id);
    let mut out = Vec::new();
    for u in units {
        let from = by_board.partition_point(|s| s.board_id < u.board_id);
        let to = by_board.partition_point(|s| s.board_id <= u.board_id);
        let line = MesUnit {
            station: &u.station,
            slot: u.slot,
            operator: u.operator.as_deref(),
            lot: u.lot.as_deref(),
            guid: u.guid.as_deref(),
            certificate_serial: u.serial.as_deref(),
            certificate_fingerprint_sha256: u.fingerprint.as_deref(),
            started_at: &u.started_at,
            finished_at: u.finished_at.as_deref(),
            outcome: &u.status,
            error_code: u.error_code.as_deref(),
            error: u.error.as_deref(),
            enrollment: u.enrollment.as_deref(),
            label: u.label.as_deref(),
            location: u.location.as_ref(),
            notes: u.notes,
            provisioning_settings: u.settings.as_ref(),
            settings_note: u.settings_note.as_deref(),
            steps: by_board[from..to]
                .iter()
                .map(|s| MesStep {
                    step: &s.step,
                    started_at: &s.started_at,
                    ended_at: s.ended_at.as_deref(),
                    duration_ms: s.duration_ms,
                    outcome: s.outcome.as_deref(),
                    error_code: s.error_code.as_deref(),
                })
                .collect(),
        };
        // Strings, integers and options into memory: this cannot fail.
        if serde_json::to_writer(&mut out, &line).is_ok() {
            out.push(b'\n');
        }
    }
    utf8(out)
}

/// Bytes written from `str`s, as a `String` without copying them.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Milliseconds as seconds with three decimals: `1.250`.
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
