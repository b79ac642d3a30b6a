//! `[reports]` and `[[shift]]`: the plant's local time and its shifts, for
//! report ranges.

use serde::Deserialize;
use time::UtcOffset;
use time::macros::format_description;

use crate::report::range::{Shift, parse_clock};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawReports {
    utc_offset: String,
    page_limit: u64,
}

impl Default for RawReports {
    fn default() -> Self {
        RawReports {
            utc_offset: "+00:00".into(),
            page_limit: 200_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShift {
    name: String,
    start: String,
    end: String,
}

/// Report settings, validated.
#[derive(Debug, Clone)]
pub struct ReportsConfig {
    /// The plant's local time, for dates, date-times and shifts given
    /// without an offset.
    pub utc_offset: UtcOffset,
    pub shifts: Vec<Shift>,
    /// Most board records a report served by the web UI covers.
    pub page_limit: u64,
}

type Invalid = (String, String);

pub(super) fn reports_config(
    r: &RawReports,
    shifts: &[RawShift],
) -> Result<ReportsConfig, Invalid> {
    let utc_offset = UtcOffset::parse(
        r.utc_offset.trim(),
        format_description!("[offset_hour sign:mandatory]:[offset_minute]"),
    )
    .map_err(|_| {
        (
            "reports.utc_offset".to_string(),
            format!("{:?} is not an offset like \"+01:00\"", r.utc_offset),
        )
    })?;
    if !(1..=10_000_000).contains(&r.page_limit) {
        return Err((
            "reports.page_limit".to_string(),
            format!("{} must be between 1 and 10000000", r.page_limit),
        ));
    }
    let mut out: Vec<Shift> = Vec::new();
    for (i, s) in shifts.iter().enumerate() {
        let key = |k: &str| format!("shift[{i}].{k}");
        let name = s.name.trim();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                key("name"),
                format!("{name:?}: a shift name is letters, digits, '-' or '_'"),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err((key("name"), format!("{name:?} is defined twice")));
        }
        let start = parse_clock(&s.start).map_err(|e| (key("start"), e))?;
        let end = parse_clock(&s.end).map_err(|e| (key("end"), e))?;
        out.push(Shift {
            name: name.to_string(),
            start,
            end,
        });
    }
    Ok(ReportsConfig {
        utc_offset,
        shifts: out,
        page_limit: r.page_limit,
    })
}
