//! The DPS operation budget shared through a real PostgreSQL: stations
//! drawing from one bucket keep its rate together and use nearly all of
//! it; a take books a later slot when the bucket is empty; a stopped
//! database fails a take at once, the pacer paces alone meanwhile and
//! draws from the plant again once the database is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/pg.rs"]
mod pg;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pg::Pg;
use station::dps::{MODE_FALLBACK, MODE_SHARED, OutboxStatus, Pacer, SharedBudget};
use station::plant::budget::PgBudget;
use tokio::time::Instant;

const DPS: &str = "plant-test.azure-devices-provisioning.net";

/// A plant database with the schema, on `pg`.
async fn plant(pg: &Pg) -> tokio_postgres::Config {
    pg.create_db("plant");
    let cfg = station::config::parse_plant_url(&pg.url("plant")).unwrap();
    let mut client = station::plant::connect(&cfg).await.unwrap();
    station::plant::schema::migrate(&mut client).await.unwrap();
    cfg
}

/// One station's view of the budget: its own pool, as in production.
fn station_budget(cfg: &tokio_postgres::Config, ops_per_minute: u32) -> Arc<PgBudget> {
    let pool = station::plant::pool(cfg).unwrap();
    Arc::new(PgBudget::new(
        pool,
        station::config::shown_plant_url(cfg),
        DPS.to_string(),
        ops_per_minute,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stations_keep_the_budget_together_and_use_it() {
    let pg = Pg::start();
    let cfg = plant(&pg).await;
    const PER_MINUTE: u32 = 120;
    const RUN: Duration = Duration::from_secs(20);

    // Three stations, each with two callers at once (more than an uploader
    // makes: the row lock must line them up).
    let calls = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let end = start + RUN;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let budget = station_budget(&cfg, PER_MINUTE);
        for _ in 0..2 {
            let (budget, calls) = (budget.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < end {
                    let wait = budget.take().await.expect("the plant database answers");
                    tokio::time::sleep(wait).await;
                    let at = Instant::now();
                    if at < end {
                        calls.lock().unwrap().push(at);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();

    let rate = f64::from(PER_MINUTE) / 60.0;
    let expected = rate * RUN.as_secs_f64();
    assert!(
        calls.len() as f64 >= 0.9 * expected,
        "{} calls in {RUN:?}, budget {expected}",
        calls.len()
    );
    // Any 10 s holds at most its share, the one saved-up token (the
    // burst), and one more for a timer that woke late.
    let window = Duration::from_secs(10);
    let most = (rate * window.as_secs_f64()) as usize + 1 + 1;
    let (busiest, from) = calls
        .iter()
        .enumerate()
        .map(|(i, from)| {
            let n = calls[i..]
                .iter()
                .take_while(|&&t| t < *from + window)
                .count();
            (n, *from - start)
        })
        .max()
        .unwrap_or_default();
    eprintln!("{} calls in {RUN:?}; busiest 10 s: {busiest}", calls.len());
    assert!(
        busiest <= most,
        "{busiest} calls in the 10 s from {from:?} (at most {most})"
    );
    assert!(
        calls.len() <= expected as usize + 2,
        "{} calls",
        calls.len()
    );
    assert_eq!(pg.psql("plant", "SELECT count(*) FROM dps_budget"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_bucket_books_later_slots_within_a_minute() {
    let pg = Pg::start();
    let cfg = plant(&pg).await;
    // One a second.
    let budget = station_budget(&cfg, 60);
    let secs = |d: Duration| d.as_secs_f64();

    assert_eq!(budget.take().await.unwrap(), Duration::ZERO);
    let second = secs(budget.take().await.unwrap());
    assert!((0.5..=1.0).contains(&second), "{second}");
    let third = secs(budget.take().await.unwrap());
    assert!((1.5..=2.0).contains(&third), "{third}");

    // A bucket booked absurdly far ahead (a row edited by hand) is read as
    // booked a minute ahead: no station waits longer.
    pg.psql(
        "plant",
        &format!("UPDATE dps_budget SET tokens = -1e9 WHERE dps = '{DPS}'"),
    );
    let far = secs(budget.take().await.unwrap());
    assert!((59.0..=62.0).contains(&far), "{far}");
    assert!(budget.describe().contains(DPS));
    assert!(!budget.describe().contains("password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_fails_fast_and_the_pacer_paces_alone_until_it_is_back() {
    let pg = Pg::start();
    let cfg = plant(&pg).await;
    let budget = station_budget(&cfg, 600);
    let status = OutboxStatus::new(None);
    // Locally 600 a minute too: 100 ms a call.
    let pacer = Pacer::new(600, Some(budget.clone())).reporting_to(status.clone());
    for _ in 0..3 {
        pacer.slot().await;
    }
    assert_eq!(pacer.mode(), MODE_SHARED);
    assert_eq!(status.lock().unwrap().budget, MODE_SHARED);

    tokio::task::block_in_place(|| pg.stop());
    let asked = Instant::now();
    let err = budget.take().await.expect_err("the database is stopped");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    assert!(err.contains("plant database"), "{err}");

    // The first slot finds out; the rest are paced locally, without a
    // wait for the database each.
    let down = Instant::now();
    for _ in 0..30 {
        pacer.slot().await;
    }
    let took = down.elapsed();
    assert!(
        took >= Duration::from_millis(2_500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(pacer.mode(), MODE_FALLBACK);
    assert_eq!(status.lock().unwrap().budget, MODE_FALLBACK);

    tokio::task::block_in_place(|| pg.start_again());
    let up = Instant::now();
    while pacer.mode() != MODE_SHARED {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "still {} after the database came back",
            pacer.mode()
        );
        pacer.slot().await;
    }
    assert_eq!(status.lock().unwrap().budget, MODE_SHARED);
    budget.take().await.expect("the database is back");
}
