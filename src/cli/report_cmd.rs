//! `station report` and `station export units`: QA reports and per-unit
//! exports for the MES, for a time range.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use time::OffsetDateTime;

use super::ConfigArgs;
use crate::report::range::{Asked, Range, resolve};
use crate::report::{Report, ReportQuery, StepRecord, Unit, render};
use crate::store::{Store, UnitFilter, ts};

/// The time range and filters of a report or export.
#[derive(Args, Clone, Debug, Default)]
pub struct RangeArgs {
    /// Start: a date (2026-11-23), a local date-time (2026-11-23T06:00) or
    /// an RFC 3339 time. Default: the start of today.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive); a date means the end of that day. Default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// A shift defined in station.toml (a `[[shift]]` table), on --date
    /// (default today).
    #[arg(long)]
    pub shift: Option<String>,
    /// A whole day, or the day of --shift.
    #[arg(long)]
    pub date: Option<String>,
    /// Only this lot (work order).
    #[arg(long)]
    pub lot: Option<String>,
    /// Only this slot.
    #[arg(long)]
    pub slot: Option<u16>,
}

impl RangeArgs {
    pub fn range(&self, cfg: &crate::config::Config) -> anyhow::Result<Range> {
        let asked = Asked {
            from: self.from.as_deref(),
            to: self.to.as_deref(),
            shift: self.shift.as_deref(),
            date: self.date.as_deref(),
        };
        resolve(
            &asked,
            &cfg.reports.shifts,
            cfg.reports.utc_offset,
            OffsetDateTime::now_utc(),
        )
        .map_err(anyhow::Error::msg)
    }

    pub(crate) fn query(&self, range: &Range) -> ReportQuery {
        ReportQuery::new(
            &range.title,
            ts(range.from),
            ts(range.to),
            self.lot.clone(),
            self.slot,
        )
    }
}

/// The formats of `report`.
pub(crate) const REPORT_FORMATS: &[&str] = &["html", "csv", "json"];
/// The formats of `export units`.
pub(crate) const EXPORT_FORMATS: &[&str] = &["jsonl", "csv"];

/// Refuses a `--format` that is not one of `choices`.
pub(crate) fn check_format(format: &str, choices: &[&str]) -> anyhow::Result<()> {
    if choices.contains(&format) {
        return Ok(());
    }
    let list = match choices.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    anyhow::bail!("--format {format:?}: choose {list}")
}

/// A report in one of [`REPORT_FORMATS`].
pub(crate) fn render_report(report: &Report, format: &str) -> anyhow::Result<String> {
    check_format(format, REPORT_FORMATS)?;
    Ok(match format {
        "html" => render::html(report, render::Styles::Embedded).map_err(anyhow::Error::msg)?,
        "csv" => render::csv(&report.units),
        _ => render::json(report),
    })
}

/// Writes to `out` (whole, through a temporary file) or to standard output.
pub(crate) fn emit(
    out: Option<&Path>,
    write: &mut dyn FnMut(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    match out {
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            write(&mut lock)?;
            lock.flush()?;
        }
        Some(path) => {
            // The target is either the whole new file or untouched.
            crate::files::write_replacing(path, |f| write(f))
                .with_context(|| format!("creating or writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn open_store(cfg: &crate::config::Config) -> anyhow::Result<Store> {
    let db = cfg.database_path();
    if !db.exists() {
        anyhow::bail!(
            "no station database at {}: nothing has been provisioned with this configuration",
            db.display()
        );
    }
    Ok(Store::open(&db)?)
}

/// `station report`.
pub fn report(
    config: &ConfigArgs,
    range: &RangeArgs,
    format: &str,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    check_format(format, REPORT_FORMATS)?;
    let cfg = config.load()?;
    let r = range.range(&cfg)?;
    let store = open_store(&cfg)?;
    let report = store.report(
        &cfg.station_id,
        range.query(&r),
        ts(OffsetDateTime::now_utc()),
    )?;
    let text = render_report(&report, format)?;
    emit(out.map(PathBuf::as_path), &mut |w| {
        w.write_all(text.as_bytes())?;
        Ok(())
    })
}

/// `station export units`: one record per unit, a page at a time.
pub fn export_units(
    config: &ConfigArgs,
    range: &RangeArgs,
    format: &str,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    check_format(format, EXPORT_FORMATS)?;
    let cfg = config.load()?;
    let r = range.range(&cfg)?;
    let store = open_store(&cfg)?;
    let filter = UnitFilter::of(&range.query(&r));
    emit(out.map(PathBuf::as_path), &mut |w| {
        export(&store, &filter, format, w)
    })
}

/// Records read from the store at a time by an export.
pub const EXPORT_PAGE: u32 = 5000;

/// Writes the units of `filter` as JSON lines or CSV.
pub fn export(
    store: &Store,
    filter: &UnitFilter,
    format: &str,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    export_paged(store, filter, format, EXPORT_PAGE, w)
}

/// As [`export`], reading `page` records at a time (tests use small pages
/// to cross page boundaries).
pub fn export_paged(
    store: &Store,
    filter: &UnitFilter,
    format: &str,
    page: u32,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut out = ExportWriter::new(format, w);
    let with_steps = out.with_steps();
    store.each_unit_page(filter, page, with_steps, &mut |units, steps| {
        out.page(&units, &steps)
    })?;
    out.finish()
}

/// Writes an export a page at a time: JSON lines, or CSV with its header
/// once (the station's export and the plant's share it).
pub(crate) struct ExportWriter<'a> {
    format: &'a str,
    w: &'a mut dyn Write,
    /// No page written yet.
    first: bool,
    /// Why writing stopped.
    failed: Option<std::io::Error>,
}

impl<'a> ExportWriter<'a> {
    pub(crate) fn new(format: &'a str, w: &'a mut dyn Write) -> ExportWriter<'a> {
        ExportWriter {
            format,
            w,
            first: true,
            failed: None,
        }
    }

    /// Whether the format carries the steps (JSON lines do, CSV does not).
    pub(crate) fn with_steps(&self) -> bool {
        self.format != "csv"
    }

    /// Writes one page; false (the error kept for [`Self::finish`]) when
    /// writing failed.
    pub(crate) fn page(&mut self, units: &[Unit], steps: &[StepRecord]) -> bool {
        let text = if self.format == "csv" {
            let all = render::csv(units);
            if self.first {
                all
            } else {
                // The header only once.
                all.split_once('\n')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            }
        } else {
            render::units_jsonl(units, steps)
        };
        self.first = false;
        match self.w.write_all(text.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    /// Ends the export: a CSV without records still has its header.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        if let Some(e) = self.failed {
            return Err(e.into());
        }
        if self.first && self.format == "csv" {
            self.w.write_all(render::csv(&[]).as_bytes())?;
        }
        Ok(())
    }
}
