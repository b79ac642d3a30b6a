//! `station report` and `station export units`: QA reports and per-unit
//! exports for the MES, for a time range.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use time::OffsetDateTime;

use super::ConfigArgs;
use crate::report::range::{Asked, Range, resolve};
use crate::report::{ReportQuery, render};
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

    fn query(&self, range: &Range) -> ReportQuery {
        ReportQuery::new(
            &range.title,
            ts(range.from),
            ts(range.to),
            self.lot.clone(),
            self.slot,
        )
    }
}

/// Writes to `out` (whole, through a temporary file) or to standard output.
fn emit(
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
    if !["html", "csv", "json"].contains(&format) {
        anyhow::bail!("--format {format:?}: choose html, csv or json");
    }
    let cfg = config.load()?;
    let r = range.range(&cfg)?;
    let store = open_store(&cfg)?;
    let report = store.report(
        &cfg.station_id,
        range.query(&r),
        ts(OffsetDateTime::now_utc()),
    )?;
    let text = match format {
        "html" => render::html(&report).map_err(anyhow::Error::msg)?,
        "csv" => render::csv(&report.units),
        _ => render::json(&report),
    };
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
    if !["jsonl", "csv"].contains(&format) {
        anyhow::bail!("--format {format:?}: choose jsonl or csv");
    }
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
    let mut first = true;
    let mut failed: Option<std::io::Error> = None;
    store.each_unit_page(filter, page, format != "csv", &mut |units, steps| {
        let text = if format == "csv" {
            let all = render::csv(&units);
            if first {
                all
            } else {
                // The header only once.
                all.split_once('\n')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default()
            }
        } else {
            render::units_jsonl(&units, &steps)
        };
        first = false;
        match w.write_all(text.as_bytes()) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })?;
    if first && format == "csv" {
        w.write_all(render::csv(&[]).as_bytes())?;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
