//! The charts of the HTML report, drawn here as inline SVG: the Pareto of
//! failures, the cycle-time histogram and the hourly throughput, with their
//! axes, and the escaping of the text they carry (askama escapes the page,
//! not these strings). Pure functions from figures to SVG text: no figure is
//! computed here (that is [`Report::build`](super::Report::build)), and
//! nothing here knows the page around the charts.

use std::fmt::Write as _;

use super::{Bucket, Hour, ParetoRow};

/// The Pareto chart draws at most this many bars; the table lists all.
pub(crate) const PARETO_BARS: usize = 20;
/// Longer gaps between hours are not filled in on the throughput chart.
const MAX_HOURS: i64 = 24 * 62;

/// `12.5 %`.
pub(crate) fn percent(p: f64) -> String {
    format!("{p:.1} %")
}

/// At most `max` characters, with an ellipsis if cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A count axis with at most about five steps of 1, 2 or 5 × 10ⁿ:
/// `(step, top)`.
pub(crate) fn nice_axis(max: u64) -> (u64, u64) {
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
            crate::xml::escape(title),
            crate::xml::escape(desc)
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
            crate::xml::escape(label),
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
            crate::xml::escape(label)
        );
    }
}

/// Failures by step and reason, most frequent first, with the cumulative
/// share on a right-hand 0–100 % axis. Empty without failures.
pub(crate) fn pareto_svg(rows: &[ParetoRow]) -> String {
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
            crate::xml::escape(&name),
            r.count,
            percent(r.cumulative_pct),
            cx - bar / 2.0,
            f.base() - y,
            y - 4.0,
            r.count,
            f.base() + 14.0,
            crate::xml::escape(&clip(&name, 28))
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
pub(crate) fn histogram_svg(buckets: &[Bucket]) -> String {
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
pub(crate) fn continuous_hours(hours: &[Hour]) -> Vec<Hour> {
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
pub(crate) fn throughput_svg(hours: &[Hour]) -> String {
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
                crate::xml::escape(&h.hour),
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
                crate::xml::escape(time.trim_start_matches('T'))
            );
            if day != last_day {
                let _ = write!(
                    s,
                    r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    f.base() + 28.0,
                    crate::xml::escape(day)
                );
                last_day = day;
            }
        }
    }
    f.x_label(&mut s, "Hour finished (UTC)");
    s.push_str("</svg>");
    s
}
