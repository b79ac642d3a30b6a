//! Drains a backlog of queued enrollments against the fake DPS with an
//! operation quota, and reports enrollments per minute against what the
//! quota allows (quota × 10 with bulk calls).
//!
//! `cargo bench --bench drain` (10,000 enrollments, quota 3,000 operations
//! a minute); `cargo bench --bench drain -- --enrollments N --quota Q`.
//! Under `cargo test` it drains 100 with a high quota, as a smoke test.
//! Figures in docs/PERFORMANCE.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::fake_dps::FakeDps;

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = arg("--enrollments", if full { 10_000 } else { 100 });
    let quota = arg("--quota", if full { 3_000 } else { 60_000 });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let fake = FakeDps::start().await;
        // The service's budget: `quota` operations a minute, bursts of 10.
        fake.with(|s| s.quota = Some((quota, 10.0)));
        let section = format!(
            "\n[dps]\nconnection_string = \"{}\"\nendpoint = \"{}\"\nops_per_minute = {quota}\nrequest_timeout_ms = 10000\nmax_backoff_ms = 2000\n",
            fake.connection_string(),
            fake.endpoint()
        );
        let (_dir, cfg) = common::prepare_with(&[], 300, &section);
        let seeding = Instant::now();
        common::seed_provisioned(&cfg, n as usize, |_, _| ());
        eprintln!("seeded {n} provisioned boards in {:.1} s", seeding.elapsed().as_secs_f64());

        let start = Instant::now();
        let app = station::app::start(&cfg, false).await.unwrap();
        loop {
            let c = app.store.outbox_counts().unwrap();
            if c.enrolled == i64::from(n) {
                break;
            }
            assert_eq!(c.parked, 0, "jobs parked during the drain");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let secs = start.elapsed().as_secs_f64();
        app.stop();
        let (calls, throttled) = fake.with(|s| (s.log.len(), s.log.iter().filter(|l| l.status == 429).count()));
        assert_eq!(fake.with(|s| s.enrollments.len()), n as usize);
        let per_minute = f64::from(n) / secs * 60.0;
        let allowed = f64::from(quota) * 10.0;
        println!("drain: {n} enrollments in {secs:.1} s over {calls} calls ({throttled} answered 429)");
        println!(
            "drain: {per_minute:.0} enrollments/min; the quota of {quota} operations/min allows {allowed:.0} with bulk calls of 10: {:.1} %",
            per_minute / allowed * 100.0
        );
    });
}
