//! Boards through a noisy jig cable: simulated boards behind
//! `station::sim::cable::NoisyCable` (two pseudo-terminals joined at
//! 115200 baud, 10 bits a byte) whose bytes are damaged at a given rate,
//! nine in ten by one flipped bit and one in ten lost, provisioned by a
//! station with the product's `[jig]` defaults.
//!
//! For each byte error rate it reports the pass rate, the seconds per
//! board over the whole run (events, polls, removal and the next board's
//! test included), and the cycle time (a board record's start to its
//! end) p50, p95 and p99, each against the clean line's; beside the clean
//! cycle, the line minimum: the bytes a board's cycle puts on the line
//! × 10 / baud, plus the board's own time (key generation and the flash
//! write).
//!
//! `cargo bench --bench noisy` (200 boards on 4 slots at 0, 1e-5, 1e-4
//! and 1e-3); `-- --boards N --slots S --rates 0,1e-3 --v1` for other
//! runs (`--v1`: boards without the line capabilities, as before them).
//! Under `cargo test` it runs 6 boards at 0 and 1e-3, as a smoke test.
//! Figures in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use station::config::Config;
use station::sim::cable::{CableOptions, NoisyCable};
use station::sim::{LineCycle, PtySim, SimOptions};
use station::store::UnitFilter;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

const BAUD: u32 = 115_200;
const KEYGEN: Duration = Duration::from_millis(50);
const FLASH_BYTES_PER_SEC: u32 = 20_000;

/// What one run measured.
struct Run {
    rate: f64,
    boards: usize,
    passed: usize,
    secs_per_board: f64,
    /// Cycle times in ms, sorted.
    cycles: Vec<i64>,
    bytes_per_board: f64,
    resends_per_board: f64,
    damaged: u64,
}

fn quantile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The station's configuration: the product's `[jig]` defaults, one
/// serial slot per device.
fn config(dir: &std::path::Path, devices: &[String]) -> Config {
    let mut text = "[station]\nid = \"bench\"\nline = \"bench\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:0\"\n\n[ca]\nkey = \"file\"\ncertificate_file = \"ca/ca.pem\"\nkey_file = \"ca/ca.key\"\nleaf_validity_days = 365\n".to_string();
    for (i, d) in devices.iter().enumerate() {
        text.push_str(&format!(
            "\n[[slot]]\nid = {}\nlink = \"serial\"\ndevice = \"{d}\"\n",
            i + 1
        ));
    }
    let path = dir.join("station.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(&path).unwrap();
    common::init_ca(&cfg);
    cfg
}

async fn run(rate: f64, boards: usize, slots: usize, v1: bool) -> Run {
    let per_slot = boards / slots;
    let sims: Vec<PtySim> = (0..slots)
        .map(|_| {
            PtySim::spawn(SimOptions {
                keygen_time: KEYGEN,
                flash_bytes_per_sec: FLASH_BYTES_PER_SEC,
                test_time: Duration::from_millis(50),
                first_insert_after: Duration::from_millis(300),
                line: Some(LineCycle {
                    dwell: Duration::from_millis(100),
                    pause: Duration::from_millis(100),
                }),
                boards: Some(per_slot as u32),
                line_caps: !v1,
                ..SimOptions::default()
            })
            .unwrap()
        })
        .collect();
    let cables: Vec<NoisyCable> = sims
        .iter()
        .enumerate()
        .map(|(i, s)| {
            NoisyCable::connect(
                &s.device,
                CableOptions {
                    baud: BAUD,
                    corrupt: rate * 0.9,
                    drop: rate * 0.1,
                    seed: 1000 + i as u64,
                    ..CableOptions::default()
                },
            )
            .unwrap()
        })
        .collect();
    let devices: Vec<String> = cables.iter().map(|c| c.device.clone()).collect();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &devices);
    let started = Instant::now();
    let app = station::app::start(&cfg, false).await.unwrap();
    let filter = UnitFilter {
        from: "2000-01-01T00:00:00.000Z".into(),
        to: "3000-01-01T00:00:00.000Z".into(),
        lot: None,
        slot: None,
    };
    let total = per_slot * slots;
    let (units, steps) = loop {
        let (units, steps) = app.store.report_data(&filter).unwrap();
        if units.iter().filter(|u| u.status != "in_progress").count() >= total {
            break (units, steps);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60 * 30),
            "the run did not end in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The run ends with the last board's record; the first board's test
    // starts `first_insert_after` + test time in.
    let secs = started.elapsed().as_secs_f64() - 0.35;
    app.stop();
    let bytes: u64 = cables.iter().map(|c| c.counts().bytes).sum();
    let mut cycles: Vec<i64> = units
        .iter()
        .filter_map(|u| {
            let f = u.finished_at.as_deref()?;
            let parse = |t: &str| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            Some((parse(f) - parse(&u.started_at)).whole_milliseconds() as i64)
        })
        .collect();
    cycles.sort_unstable();
    if std::env::var_os("NOISY_DEBUG").is_some() {
        for s in steps.iter().filter(|s| s.duration_ms.unwrap_or(0) > 500) {
            eprintln!(
                "slow step: {} {:?} {:?} resends {:?} damaged {:?}",
                s.step, s.duration_ms, s.outcome, s.resends, s.damaged
            );
        }
    }
    Run {
        rate,
        boards: total,
        passed: units.iter().filter(|u| u.status == "provisioned").count(),
        secs_per_board: secs / per_slot as f64,
        cycles,
        bytes_per_board: bytes as f64 / total as f64,
        resends_per_board: steps.iter().filter_map(|s| s.resends).sum::<i64>() as f64
            / total as f64,
        damaged: steps.iter().filter_map(|s| s.damaged).sum::<i64>() as u64,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let boards: usize = arg("--boards")
        .map(|v| v.parse().unwrap())
        .unwrap_or(if full { 200 } else { 6 });
    let slots: usize = arg("--slots")
        .map(|v| v.parse().unwrap())
        .unwrap_or(if full { 4 } else { 2 });
    let rates: Vec<f64> = arg("--rates")
        .unwrap_or_else(|| if full { "0,1e-5,1e-4,1e-3" } else { "0,1e-3" }.into())
        .split(',')
        .map(|r| r.parse().unwrap())
        .collect();
    let v1 = std::env::args().any(|a| a == "--v1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runs: Vec<Run> = rates
        .iter()
        .map(|&r| {
            let run = rt.block_on(run(r, boards, slots, v1));
            eprintln!(
                "noisy: rate {r:e}: {}/{} passed, {:.2} s per board",
                run.passed, run.boards, run.secs_per_board
            );
            run
        })
        .collect();
    let clean = runs.iter().find(|r| r.rate == 0.0).unwrap_or(&runs[0]);
    let (c50, c95) = (quantile(&clean.cycles, 0.5), quantile(&clean.cycles, 0.95));
    println!(
        "noisy: {} boards on {slots} slots at {BAUD} baud, boards {}",
        clean.boards,
        if v1 {
            "without the line capabilities (v1)"
        } else {
            "with notices and pieces"
        }
    );
    println!(
        "| byte error rate | passed | s per board | × clean | cycle p50 | p95 | × clean | p99 | resends per board | damaged frames |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let (p50, p95, p99) = (
            quantile(&r.cycles, 0.5),
            quantile(&r.cycles, 0.95),
            quantile(&r.cycles, 0.99),
        );
        println!(
            "| {:e} | {}/{} ({:.1} %) | {:.2} | {:.2} | {} ms | {} ms | {:.2} | {} ms | {:.2} | {} |",
            r.rate,
            r.passed,
            r.boards,
            100.0 * r.passed as f64 / r.boards as f64,
            r.secs_per_board,
            r.secs_per_board / clean.secs_per_board,
            p50,
            p95,
            p95 as f64 / c95.max(1) as f64,
            p99,
            r.resends_per_board,
            r.damaged,
        );
    }
    // The line minimum of one clean cycle: its bytes at 10 bits a byte,
    // and the board's own work (key generation, the chain's flash write).
    let chain_bytes = 1000.0;
    let own = KEYGEN.as_secs_f64() + chain_bytes / f64::from(FLASH_BYTES_PER_SEC);
    let on_line = clean.bytes_per_board * 10.0 / f64::from(BAUD);
    println!(
        "noisy: clean cycle p50 {c50} ms; line minimum {:.0} ms ({:.0} bytes a board on the line, events and polls included: {:.0} ms; the board's own time {:.0} ms)",
        (on_line + own) * 1000.0,
        clean.bytes_per_board,
        on_line * 1000.0,
        own * 1000.0
    );
    if !full {
        // The smoke test: the clean line passes everything.
        assert_eq!(clean.passed, clean.boards, "the clean line failed boards");
    }
}
