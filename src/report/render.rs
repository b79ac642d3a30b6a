//! The renderings of a QA [`Report`]: a standalone HTML page with charts
//! drawn here as inline SVG (for QA engineers, on screen and on A4 paper),
//! the device list as CSV, the whole report as JSON, and one JSON line per
//! board record for the MES. Pure functions from figures to text: no figure
//! is computed here (that is [`Report::build`]), nothing is read or written.

use std::fmt::Write as _;

use askama::Template;
use serde::Serialize;

use super::{Bucket, Hour, ParetoRow, Report, StepRecord, Timing, Unit};

/// The columns of [`csv()`], in order.
pub const CSV_COLUMNS: [&str; 11] = [
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
];

/// The Pareto chart draws at most this many bars; the table lists all.
const PARETO_BARS: usize = 20;
/// Longer gaps between hours are not filled in on the throughput chart.
const MAX_HOURS: i64 = 24 * 62;

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    r: &'a Report,
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
    units: Vec<UnitLine<'a>>,
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

/// The report as a standalone HTML page (no outside resources).
pub fn html(report: &Report) -> Result<String, String> {
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
/// reached, an absent value is an empty field.
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

/// `12.5 %`.
fn percent(p: f64) -> String {
    format!("{p:.1} %")
}

/// Milliseconds as seconds with three decimals: `1.250`.
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    format!("{sign}{}.{:03}", ms / 1000, ms % 1000)
}

/// Text for SVG built here (askama escapes the page, not these strings).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `max` characters, with an ellipsis if cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A count axis with at most about five steps of 1, 2 or 5 × 10ⁿ:
/// `(step, top)`.
fn nice_axis(max: u64) -> (u64, u64) {
    let raw = max.div_ceil(5).max(1);
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p *= 10;
    }
    let step = [1, 2, 5, 10]
        .iter()
        .map(|m| m * p)
        .find(|s| *s >= raw)
        .unwrap_or(10 * p);
    (step, max.max(1).div_ceil(step) * step)
}

/// The drawing area of a chart: a `w` × `h` view box less the margins.
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    fn inner_w(&self) -> f64 {
        self.w - self.left - self.right
    }
    fn base(&self) -> f64 {
        self.h - self.bottom
    }
    /// The y of `v` on an axis from 0 to `top`.
    fn y(&self, v: f64, top: f64) -> f64 {
        self.base() - v / top.max(1.0) * (self.base() - self.top)
    }

    /// `<svg …>` with its title and description.
    fn open(&self, s: &mut String, id: &str, title: &str, desc: &str) {
        let _ = write!(
            s,
            r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" aria-labelledby="{id}-title {id}-desc" font-family="sans-serif" font-size="11"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
            self.w,
            self.h,
            escape(title),
            escape(desc)
        );
    }

    /// The left count axis with grid lines, and the base line.
    fn count_axis(&self, s: &mut String, max: u64, label: &str) -> f64 {
        let (step, top) = nice_axis(max);
        let topf = top as f64;
        let mut v = 0;
        while v <= top {
            let y = self.y(v as f64, topf);
            let _ = write!(
                s,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#bbb" stroke-dasharray="2 3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}</text>"##,
                self.left,
                self.w - self.right,
                self.left - 6.0,
                y + 4.0
            );
            v += step;
        }
        let mid = (self.top + self.base()) / 2.0;
        let _ = write!(
            s,
            r##"<line x1="{l:.1}" y1="{t:.1}" x2="{l:.1}" y2="{b:.1}" stroke="#000"/><line x1="{l:.1}" y1="{b:.1}" x2="{r:.1}" y2="{b:.1}" stroke="#000"/><text transform="translate(14 {mid:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
            escape(label),
            l = self.left,
            t = self.top,
            b = self.base(),
            r = self.w - self.right,
        );
        topf
    }

    fn x_label(&self, s: &mut String, label: &str) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            self.left + self.inner_w() / 2.0,
            self.h - 6.0,
            escape(label)
        );
    }
}

/// Failures by step and reason, most frequent first, with the cumulative
/// share on a right-hand 0–100 % axis. Empty without failures.
fn pareto_svg(rows: &[ParetoRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let shown = &rows[..rows.len().min(PARETO_BARS)];
    let f = Frame {
        w: 720.0,
        h: 400.0,
        left: 56.0,
        right: 60.0,
        top: 24.0,
        bottom: 130.0,
    };
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let desc = shown
        .iter()
        .map(|r| {
            format!(
                "{}: {} {} ({} cumulative)",
                r.step,
                r.code,
                r.count,
                percent(r.cumulative_pct)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut s = String::new();
    f.open(
        &mut s,
        "pareto",
        &format!("Failures by step and reason (Pareto), {total} failures"),
        &desc,
    );
    let max = shown.iter().map(|r| r.count).max().unwrap_or(1);
    let top = f.count_axis(&mut s, max, "Failures");
    // The right-hand axis: cumulative share.
    let right = f.w - f.right;
    for p in (0..=100).step_by(25) {
        let y = f.y(p as f64, 100.0);
        let _ = write!(
            s,
            r##"<line x1="{right:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#000"/><text x="{:.1}" y="{:.1}">{p} %</text>"##,
            right + 4.0,
            right + 7.0,
            y + 4.0
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{right:.1}" y1="{:.1}" x2="{right:.1}" y2="{:.1}" stroke="#000"/><text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle">Cumulative share of failures (%)</text>"##,
        f.top,
        f.base(),
        f.w - 10.0,
        (f.top + f.base()) / 2.0
    );
    let slot = f.inner_w() / shown.len() as f64;
    let bar = slot * 0.7;
    let mut line = Vec::with_capacity(shown.len());
    for (i, r) in shown.iter().enumerate() {
        let cx = f.left + slot * (i as f64 + 0.5);
        let y = f.y(r.count as f64, top);
        let name = format!("{}: {}", r.step, r.code);
        let _ = write!(
            s,
            r##"<g><title>{}: {} failures, {} cumulative</title><rect x="{:.1}" y="{y:.1}" width="{bar:.1}" height="{:.1}" fill="#777" stroke="#000"/></g><text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate({cx:.1} {:.1}) rotate(-40)" text-anchor="end">{}</text>"##,
            escape(&name),
            r.count,
            percent(r.cumulative_pct),
            cx - bar / 2.0,
            f.base() - y,
            y - 4.0,
            r.count,
            f.base() + 14.0,
            escape(&clip(&name, 28))
        );
        line.push((
            cx,
            f.y(r.cumulative_pct.clamp(0.0, 100.0), 100.0),
            r.cumulative_pct,
        ));
    }
    let points: Vec<String> = line
        .iter()
        .map(|(x, y, _)| format!("{x:.1},{y:.1}"))
        .collect();
    let _ = write!(
        s,
        r##"<polyline points="{}" fill="none" stroke="#000" stroke-width="2"/>"##,
        points.join(" ")
    );
    for (x, y, p) in &line {
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="#fff" stroke="#000" stroke-width="2"/><text x="{:.1}" y="{:.1}" stroke="#fff" stroke-width="3" paint-order="stroke">{p:.0} %</text>"##,
            x + 5.0,
            y - 6.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Cycle times of passed boards, one bar per bucket. Empty without cycles.
fn histogram_svg(buckets: &[Bucket]) -> String {
    if buckets.is_empty() {
        return String::new();
    }
    let f = Frame {
        w: 720.0,
        h: 300.0,
        left: 56.0,
        right: 16.0,
        top: 20.0,
        bottom: 52.0,
    };
    let total: u64 = buckets.iter().map(|b| b.count).sum();
    let desc = buckets
        .iter()
        .map(|b| format!("{}–{} s: {}", b.from_s, b.to_s, b.count))
        .collect::<Vec<_>>()
        .join("; ");
    let mut s = String::new();
    f.open(
        &mut s,
        "cycle-histogram",
        &format!("Cycle time of {total} passed boards"),
        &desc,
    );
    let max = buckets.iter().map(|b| b.count).max().unwrap_or(1);
    let top = f.count_axis(&mut s, max, "Passed boards");
    let slot = f.inner_w() / buckets.len() as f64;
    for (i, b) in buckets.iter().enumerate() {
        let x = f.left + slot * i as f64;
        let y = f.y(b.count as f64, top);
        let _ = write!(
            s,
            r##"<g><title>{from}–{to} s: {n} boards</title><rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="#777" stroke="#000"/></g><text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">{from}–{to}</text>"##,
            x + 1.0,
            slot - 2.0,
            f.base() - y,
            x + slot / 2.0,
            y - 4.0,
            x + slot / 2.0,
            f.base() + 16.0,
            from = b.from_s,
            to = b.to_s,
            n = b.count,
        );
    }
    f.x_label(&mut s, "Cycle time (s), from start to finish");
    s.push_str("</svg>");
    s
}

/// The hours from the first to the last of `hours`, those without boards
/// as zero, so the chart's axis is time. As given if the hours do not
/// parse or span more than [`MAX_HOURS`].
fn continuous_hours(hours: &[Hour]) -> Vec<Hour> {
    use time::format_description::well_known::Rfc3339;
    let parse = |h: &Hour| time::OffsetDateTime::parse(&format!("{}:00:00Z", h.hour), &Rfc3339);
    let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
        return Vec::new();
    };
    let (Ok(mut t), Ok(end)) = (parse(first), parse(last)) else {
        return hours.to_vec();
    };
    if hours.iter().any(|h| parse(h).is_err()) || (end - t).whole_hours() > MAX_HOURS {
        return hours.to_vec();
    }
    let mut given = hours.iter().peekable();
    let mut out = Vec::new();
    while t <= end {
        let hour = format!(
            "{:04}-{:02}-{:02}T{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour()
        );
        match given.peek() {
            Some(h) if h.hour == hour => {
                out.push((*h).clone());
                given.next();
            }
            _ => out.push(Hour {
                hour,
                passed: 0,
                failed: 0,
            }),
        }
        t += time::Duration::HOUR;
    }
    // Hours out of order would have been skipped: keep the figures whole.
    if given.next().is_some() {
        return hours.to_vec();
    }
    out
}

/// Boards finished per hour: passed solid, failed hatched, side by side.
/// Empty without boards.
fn throughput_svg(hours: &[Hour]) -> String {
    if hours.is_empty() {
        return String::new();
    }
    let f = Frame {
        w: 720.0,
        h: 320.0,
        left: 56.0,
        right: 16.0,
        top: 40.0,
        bottom: 64.0,
    };
    let (passed, failed) = hours
        .iter()
        .fold((0, 0), |(p, x), h| (p + h.passed, x + h.failed));
    let desc = hours
        .iter()
        .filter(|h| h.passed + h.failed > 0)
        .map(|h| format!("{}h: {} passed, {} failed", h.hour, h.passed, h.failed))
        .collect::<Vec<_>>()
        .join("; ");
    let mut s = String::new();
    f.open(
        &mut s,
        "throughput",
        &format!("Boards finished per hour (UTC): {passed} passed, {failed} failed"),
        &desc,
    );
    s.push_str(r##"<defs><pattern id="throughput-hatch" patternUnits="userSpaceOnUse" width="6" height="6" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#000" stroke-width="2"/></pattern></defs>"##);
    // The legend, top right.
    let lx = f.w - f.right - 190.0;
    let _ = write!(
        s,
        r##"<rect x="{lx:.1}" y="8" width="14" height="14" fill="#333" stroke="#000"/><text x="{:.1}" y="19">Passed</text><rect x="{:.1}" y="8" width="14" height="14" fill="url(#throughput-hatch)" stroke="#000"/><text x="{:.1}" y="19">Failed</text>"##,
        lx + 19.0,
        lx + 90.0,
        lx + 109.0
    );
    let max = hours
        .iter()
        .map(|h| h.passed.max(h.failed))
        .max()
        .unwrap_or(1);
    let top = f.count_axis(&mut s, max, "Boards");
    let slot = f.inner_w() / hours.len() as f64;
    let bar = slot * 0.4;
    let numbers = hours.len() <= 24;
    let every = hours.len().div_ceil(16);
    let mut last_day = "";
    for (i, h) in hours.iter().enumerate() {
        let x = f.left + slot * i as f64 + slot * 0.1;
        for (j, (n, fill, what)) in [
            (h.passed, "#333", "passed"),
            (h.failed, "url(#throughput-hatch)", "failed"),
        ]
        .into_iter()
        .enumerate()
        {
            let bx = x + bar * j as f64;
            let y = f.y(n as f64, top);
            let _ = write!(
                s,
                r##"<g><title>{}h: {n} {what}</title><rect x="{bx:.1}" y="{y:.1}" width="{bar:.1}" height="{:.1}" fill="{fill}" stroke="#000"/></g>"##,
                escape(&h.hour),
                f.base() - y,
            );
            if numbers {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{n}</text>"#,
                    bx + bar / 2.0,
                    y - 3.0
                );
            }
        }
        if i % every == 0 {
            let cx = x + bar;
            let (day, time) = h.hour.split_at(h.hour.len().min(10));
            let _ = write!(
                s,
                r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}:00</text>"#,
                f.base() + 14.0,
                escape(time.trim_start_matches('T'))
            );
            if day != last_day {
                let _ = write!(
                    s,
                    r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    f.base() + 28.0,
                    escape(day)
                );
                last_day = day;
            }
        }
    }
    f.x_label(&mut s, "Hour finished (UTC)");
    s.push_str("</svg>");
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::report::ReportQuery;

    const LOT: &str = r#"Lot "7", Müller-Ω"#;

    fn query(lot: Option<&str>) -> ReportQuery {
        ReportQuery {
            from: "2026-11-23T06:00:00.000Z".into(),
            to: "2026-11-23T14:00:00.000Z".into(),
            lot: lot.map(str::to_string),
            slot: None,
            title: "shift early on 2026-11-23".into(),
        }
    }

    /// A board record: `times` is `start-finish` (no finish while in
    /// progress), `outcome` is `status/step[/error code]`; the GUID number
    /// also makes the serial and fingerprint of a passed record.
    fn unit(id: i64, guid: Option<u32>, slot: u16, times: &str, outcome: &str) -> Unit {
        let (started, finished) = times.split_once('-').unwrap();
        let mut outcome = outcome.split('/');
        let (status, step) = (outcome.next().unwrap(), outcome.next().unwrap());
        let code = outcome.next();
        let passed = status == "provisioned";
        Unit {
            board_id: id,
            station: "station-01".into(),
            slot,
            operator: Some(if slot % 2 == 0 { "ana" } else { "bo, \"b\"" }.into()),
            lot: Some(LOT.into()),
            guid: guid.map(|g| format!("0a1b2c3d-0000-4000-8000-{g:012x}")),
            started_at: format!("2026-11-23T{started}Z"),
            finished_at: (!finished.is_empty()).then(|| format!("2026-11-23T{finished}Z")),
            status: status.into(),
            step: step.into(),
            error_code: code.map(str::to_string),
            error: code.map(|c| format!("the board said {c}")),
            serial: guid.filter(|_| passed).map(|g| format!("5E{g:06X}")),
            fingerprint: guid
                .filter(|_| passed)
                .map(|g| format!("{g:02x}").repeat(32)),
            enrollment: None,
            label: None,
        }
    }

    /// In start order, as the store hands them over.
    fn units() -> Vec<Unit> {
        let pass = "provisioned/finish";
        let mut a = unit(1, Some(1), 1, "06:00:00.000-06:00:42.500", pass);
        a.enrollment = Some("enrolled".into());
        a.label = Some("printed".into());
        let b = unit(
            2,
            Some(2),
            2,
            "06:01:00.000-06:01:20.000",
            "failed/issue/ca_timeout",
        );
        // The same board again: a retry that passes.
        let mut c = unit(3, Some(2), 2, "06:05:00.000-06:05:51.250", pass);
        c.enrollment = Some("pending".into());
        c.label = Some("pending".into());
        let d = unit(
            4,
            Some(3),
            3,
            "07:10:00.000-07:10:33.000",
            "failed/readback/nv_mismatch",
        );
        let e = unit(
            5,
            Some(4),
            1,
            "07:20:00.000-07:20:09.000",
            "failed/issue/ca_timeout",
        );
        let mut f = unit(
            6,
            None,
            3,
            "09:02:00.000-09:02:05.000",
            "failed/hello/no_answer",
        );
        f.operator = None;
        let mut h = unit(8, Some(6), 1, "09:30:00.000-09:31:05.000", pass);
        h.enrollment = Some("parked".into());
        h.label = Some("cancelled".into());
        let mut g = unit(7, Some(5), 4, "09:40:00.000-", "in_progress/keygen");
        g.lot = None;
        vec![a, b, c, d, e, f, h, g]
    }

    /// Each unit's steps up to the one it reached, interleaved between
    /// boards (step by step) as a store might hand them over.
    fn steps(units: &[Unit]) -> Vec<StepRecord> {
        let mut out = Vec::new();
        for (i, name) in crate::report::STEPS.iter().enumerate() {
            for u in units {
                let reached = crate::report::STEPS
                    .iter()
                    .position(|s| *s == u.step)
                    .unwrap();
                if i > reached {
                    continue;
                }
                let last = i == reached;
                let (outcome, code) = match u.status.as_str() {
                    "failed" if last => (Some("failed"), u.error_code.clone()),
                    "in_progress" if last => (None, None),
                    _ => (Some("ok"), None),
                };
                let ms = 100 * (i as i64 + 1) + u.board_id;
                out.push(StepRecord {
                    board_id: u.board_id,
                    step: name.to_string(),
                    started_at: format!("{}+{i}", u.started_at),
                    ended_at: outcome.map(|_| format!("{}+{i}e", u.started_at)),
                    duration_ms: outcome.map(|_| ms),
                    outcome: outcome.map(str::to_string),
                    error_code: code,
                });
            }
        }
        out
    }

    fn report_of(units: Vec<Unit>, lot: Option<&str>) -> Report {
        let steps = steps(&units);
        Report::build(
            "station-01",
            query(lot),
            "2026-11-23T14:00:05.000Z".into(),
            units,
            &steps,
        )
    }

    fn report() -> Report {
        report_of(units(), Some(LOT))
    }

    /// The `<svg …>…</svg>` fragments of a page.
    fn svgs(page: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut rest = page;
        while let Some(start) = rest.find("<svg") {
            let len = rest[start..].find("</svg>").unwrap() + "</svg>".len();
            out.push(&rest[start..start + len]);
            rest = &rest[start + len..];
        }
        out
    }

    #[test]
    fn html_snapshot() {
        insta::assert_snapshot!("report_html", html(&report()).unwrap());
    }

    #[test]
    fn csv_snapshot() {
        insta::assert_snapshot!("devices_csv", csv(&units()));
    }

    #[test]
    fn csv_reads_back_field_for_field() {
        let units = units();
        let text = csv(&units);
        assert!(text.ends_with("\r\n"));
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(reader.headers().unwrap(), CSV_COLUMNS.as_slice());
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), units.len());
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        for (row, u) in rows.iter().zip(&units) {
            let expected = [
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
            ];
            assert_eq!(row.iter().collect::<Vec<_>>(), expected);
        }
        assert_eq!(&rows[0][5], LOT);
        assert_eq!(&rows[0][3], r#"bo, "b""#);
    }

    #[test]
    fn jsonl_lines_carry_their_own_steps() {
        let units = units();
        let steps = steps(&units);
        let text = units_jsonl(&units, &steps);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), units.len());
        for (line, u) in lines.iter().zip(&units) {
            assert_eq!(line["station"], "station-01");
            assert_eq!(line["slot"], u.slot);
            assert_eq!(line["lot"].as_str(), u.lot.as_deref());
            assert_eq!(line["guid"].as_str(), u.guid.as_deref());
            assert_eq!(line["certificate_serial"].as_str(), u.serial.as_deref());
            assert_eq!(line["outcome"], u.status.as_str());
            assert_eq!(line["error_code"].as_str(), u.error_code.as_deref());
            assert_eq!(line["enrollment"].as_str(), u.enrollment.as_deref());
            let got: Vec<&str> = line["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["step"].as_str().unwrap())
                .collect();
            let reached = crate::report::STEPS
                .iter()
                .position(|s| *s == u.step)
                .unwrap();
            assert_eq!(got, crate::report::STEPS[..=reached]);
            for s in line["steps"].as_array().unwrap() {
                let started = s["started_at"].as_str().unwrap();
                assert!(
                    started.starts_with(&u.started_at),
                    "{started} is not {}'s",
                    u.started_at
                );
            }
        }
        // The failed step carries the code; a running step has no outcome.
        let failed = &lines[1]["steps"][4];
        assert_eq!(failed["outcome"], "failed");
        assert_eq!(failed["error_code"], "ca_timeout");
        assert!(lines[7]["steps"][3]["outcome"].is_null());
        assert!(lines[0]["error"].is_null());
        assert_eq!(lines[1]["steps"][0]["duration_ms"], 102);
    }

    #[test]
    fn json_is_the_whole_report() {
        let r = report();
        let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["attempted"], 8);
        assert_eq!(v["units"].as_array().unwrap().len(), 8);
        assert_eq!(v["query"]["lot"], LOT);
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let page = html(&report()).unwrap();
        let charts = svgs(&page);
        assert_eq!(charts.len(), 3);
        assert_eq!(page.matches("<svg").count(), page.matches("</svg>").count());
        for svg in charts {
            assert!(svg.contains("viewBox=") && svg.contains("<title"), "{svg}");
            resvg::usvg::roxmltree::Document::parse(svg).unwrap();
        }
    }

    #[test]
    fn empty_range_says_so_instead_of_drawing() {
        let page = html(&report_of(Vec::new(), None)).unwrap();
        assert!(!page.contains("<svg"));
        for message in [
            "No failures in this range.",
            "No passed boards in this range.",
            "No boards finished in this range.",
            "No board records in this range.",
            "all lots",
        ] {
            assert!(page.contains(message), "{message}");
        }
        assert_eq!(csv(&[]), CSV_COLUMNS.join(",") + "\r\n");
        assert_eq!(units_jsonl(&[], &[]), "");
    }

    #[test]
    fn data_is_escaped_in_page_and_charts() {
        let evil = r#"<script>alert("x")</script>"#;
        let mut units = units();
        units[1].lot = Some(evil.into());
        units[1].error_code = Some("<b>&'".into());
        let page = html(&report_of(units, Some(evil))).unwrap();
        assert!(!page.contains("<script"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("&#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62;"));
        // In the Pareto chart, drawn here rather than by the template.
        assert!(page.contains("issue: &lt;b&gt;&amp;&#39;"));
        for svg in svgs(&page) {
            resvg::usvg::roxmltree::Document::parse(svg).unwrap();
        }
    }

    #[test]
    fn gaps_between_hours_are_drawn_as_empty_hours() {
        let hour = |h: &str, passed| Hour {
            hour: h.into(),
            passed,
            failed: 0,
        };
        let filled = continuous_hours(&[hour("2026-11-23T22", 1), hour("2026-11-24T01", 2)]);
        let names: Vec<&str> = filled.iter().map(|h| h.hour.as_str()).collect();
        assert_eq!(
            names,
            [
                "2026-11-23T22",
                "2026-11-23T23",
                "2026-11-24T00",
                "2026-11-24T01"
            ]
        );
        assert_eq!(filled.iter().map(|h| h.passed).sum::<u64>(), 3);
        let odd = [hour("late", 1)];
        assert_eq!(continuous_hours(&odd), odd);
    }

    #[test]
    fn numbers_read_the_same_everywhere() {
        assert_eq!(seconds(42_500), "42.500");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(-1_250), "-1.250");
        assert_eq!(percent(62.5), "62.5 %");
        assert_eq!(nice_axis(0), (1, 1));
        assert_eq!(nice_axis(7), (2, 8));
        assert_eq!(nice_axis(230), (50, 250));
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
