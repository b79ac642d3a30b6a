//! `station plant`: the plant database from the command line: its schema
//! (`migrate`), the plant-wide QA report and MES export, the GUIDs in
//! conflict, and every station's audit chain (`verify`). Each needs the
//! configuration's `[plant]`; the reading is in [`crate::plant::views`],
//! the rendering the station's own.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use time::OffsetDateTime;

use super::ConfigArgs;
use super::report_cmd::{
    EXPORT_FORMATS, EXPORT_PAGE, ExportWriter, REPORT_FORMATS, RangeArgs, check_format, emit,
    render_report,
};
use crate::config::{Config, PlantConfig};
use crate::plant::views::{self, PlantFilter};
use crate::report::{Report, ReportQuery};
use crate::store::{AuditCheck, UnitFilter, ts};

/// Which stations a plant report or export covers.
#[derive(Args, Clone, Debug, Default)]
pub struct PlantScope {
    /// Only this station's records (its `[station] id`).
    #[arg(long)]
    pub station: Option<String>,
    /// Only records made on this line (its `[station] line`).
    #[arg(long)]
    pub line: Option<String>,
}

impl PlantScope {
    /// The plant filter of a report query.
    fn filter(&self, query: &ReportQuery) -> PlantFilter {
        PlantFilter {
            unit: UnitFilter::of(query),
            station: self.station.clone(),
            line: self.line.clone(),
        }
    }

    /// A query over this scope, the line named in its title.
    fn query(&self, range: &RangeArgs, cfg: &Config) -> anyhow::Result<ReportQuery> {
        let mut query = range.query(&range.range(cfg)?);
        if let Some(l) = &self.line {
            query.title.push_str(&format!(", line {l}"));
        }
        Ok(query)
    }
}

/// The configuration and its `[plant]`, or a refusal that says what to add.
fn load(config: &ConfigArgs) -> anyhow::Result<(Config, PlantConfig)> {
    let cfg = config.load()?;
    let Some(plant) = cfg.plant.clone() else {
        anyhow::bail!(
            "no [plant] section in {}: add [plant] database_url = \"postgres://USER@HOST:PORT/DATABASE\" \
             (or set STATION_PLANT_DATABASE_URL with an empty [plant]) (README: The plant database)",
            config.config.display()
        );
    };
    Ok((cfg, plant))
}

/// A connection to a plant database whose schema is this station's.
async fn connect(plant: &PlantConfig) -> anyhow::Result<crate::plant::PlantClient> {
    Ok(crate::plant::connect_checked(plant).await?)
}

fn reading(plant: &PlantConfig) -> String {
    format!("reading the plant database {}", plant.shown_url())
}

/// `station plant migrate`: creates or upgrades the plant schema.
pub async fn plant_migrate(config: &ConfigArgs) -> anyhow::Result<()> {
    let (_, plant) = load(config)?;
    let (applied, version) = crate::plant::migrate(&plant).await?;
    if applied.is_empty() {
        println!("the plant schema is up to date (version {version})");
    } else {
        let list: Vec<String> = applied.iter().map(i64::to_string).collect();
        println!(
            "applied plant schema version{} {} to {}: now at version {version}",
            if list.len() == 1 { "" } else { "s" },
            list.join(", "),
            plant.shown_url()
        );
    }
    Ok(())
}

/// `station plant report`: the QA report over every station (or the one
/// of `--station`).
pub async fn plant_report(
    config: &ConfigArgs,
    range: &RangeArgs,
    scope: &PlantScope,
    format: &str,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    check_format(format, REPORT_FORMATS)?;
    let (cfg, plant) = load(config)?;
    let query = scope.query(range, &cfg)?;
    let client = connect(&plant).await?;
    let (units, steps) = views::report_data(&client, &scope.filter(&query))
        .await
        .with_context(|| reading(&plant))?;
    let report = Report::build(
        scope.station.as_deref().unwrap_or("plant"),
        query,
        ts(OffsetDateTime::now_utc()),
        units,
        &steps,
    );
    let text = render_report(&report, format)?;
    emit(out.map(PathBuf::as_path), &mut |w| {
        w.write_all(text.as_bytes())?;
        Ok(())
    })
}

/// `station plant export units`: one record per unit across the plant, a
/// page at a time.
pub async fn plant_export_units(
    config: &ConfigArgs,
    range: &RangeArgs,
    scope: &PlantScope,
    format: &str,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    check_format(format, EXPORT_FORMATS)?;
    let (cfg, plant) = load(config)?;
    let filter = scope.filter(&scope.query(range, &cfg)?);
    let client = connect(&plant).await?;
    // The file is written by a blocking closure (whole, through a
    // temporary file); the pages are read inside it. `block_in_place`
    // needs the multi-threaded runtime, which `main` runs.
    tokio::task::block_in_place(|| {
        let rt = tokio::runtime::Handle::current();
        emit(out.map(PathBuf::as_path), &mut |w| {
            rt.block_on(export(&client, &filter, format, EXPORT_PAGE, w))
                .with_context(|| reading(&plant))
        })
    })
}

/// Writes the plant's units of `filter` as JSON lines or CSV, reading
/// `page` records at a time.
pub async fn export(
    client: &crate::plant::PlantClient,
    filter: &PlantFilter,
    format: &str,
    page: u32,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut out = ExportWriter::new(format, w);
    let with_steps = out.with_steps();
    views::each_unit_page(client, filter, page, with_steps, &mut |units, steps| {
        out.page(&units, &steps)
    })
    .await?;
    out.finish()
}

/// `station plant conflicts`: the GUIDs that hold live certificates from
/// two or more stations. Finding some is not an error.
pub async fn plant_conflicts(config: &ConfigArgs, format: &str) -> anyhow::Result<()> {
    check_format(format, &["text", "json"])?;
    let (_, plant) = load(config)?;
    let client = connect(&plant).await?;
    let list = views::conflicts(&client)
        .await
        .with_context(|| reading(&plant))?;
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no conflicts: no GUID holds live certificates from two stations");
        return Ok(());
    }
    println!(
        "{} GUID{} with live certificates from two or more stations:",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    for c in &list {
        println!("{} (seen {})", c.guid, c.detected_at);
        for cert in &c.certificates {
            println!(
                "  {} line {}: serial {} {}, issued {}",
                cert.station_id, cert.line, cert.serial, cert.state, cert.issued_at
            );
        }
    }
    Ok(())
}

/// `station plant verify`: every station's audit chain as the plant holds
/// it, one line each; false when any is broken.
pub async fn plant_verify(config: &ConfigArgs) -> anyhow::Result<bool> {
    let (_, plant) = load(config)?;
    let client = connect(&plant).await?;
    let stations = views::verify_audit(&client)
        .await
        .with_context(|| reading(&plant))?;
    if stations.is_empty() {
        println!("no station has forwarded to the plant database yet");
    }
    let mut intact = true;
    for s in &stations {
        match &s.check {
            AuditCheck::Intact { rows } => println!("ok {}: {rows} audit rows", s.station_id),
            AuditCheck::Broken { row, reason } => {
                intact = false;
                println!("BROKEN {}: row {row}: {reason}", s.station_id);
            }
        }
    }
    Ok(intact)
}
