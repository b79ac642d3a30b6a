//! A fast return after a DPS outage: DPS (the strict fake, over HTTPS)
//! is down for three minutes while a board is provisioned. The uploader
//! probes it with one cheap call at most every `[dps] probe_ms` (the
//! default, 15 s) instead of backing off to `max_backoff_ms` (the default,
//! 5 minutes), shows when it tries next, probes at once when a supervisor
//! retries, and sends the enrollment within `probe_ms` + 5 s of DPS coming
//! back. The calls made while DPS was down are counted: no hot loop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::fake_dps::FakeDps;
use common::*;

/// Calls that did not reach DPS, as the outbox counts them.
fn unreachable_calls(v: &serde_json::Value) -> u64 {
    ["network", "tls", "proxy"]
        .iter()
        .map(|k| v["calls"][k].as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dps_back_after_three_minutes_is_used_within_a_probe() {
    let mut fake = FakeDps::start().await;
    fake.stop();
    // The defaults of probe_ms (15 s) and max_backoff_ms (5 min).
    let dps = format!(
        "\n[dps]\nconnection_string = \"{}\"\nendpoint = \"{}\"\nca_file = \"{}\"\nrequest_timeout_ms = 1000\n",
        fake.connection_string(),
        fake.https_endpoint(),
        fake.ca_file().display()
    );
    let st = TestStation::start_with(vec![quick_board()], 2000, &dps, |_| ()).await;
    let down_since = Instant::now();
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(boards[0]["status"], "provisioned");
    let guid = boards[0]["guid"].as_str().unwrap().to_string();

    // Offline, with the reason and the next planned try.
    let v = st
        .wait_outbox(Duration::from_secs(20), |v| {
            v["connectivity"] == "offline" && v["next_try"].is_string()
        })
        .await;
    assert!(v["last_error"].as_str().unwrap().contains("reach"), "{v:#}");
    assert_eq!(v["queue_depth"], 1);

    // A supervisor's retry probes at once, not at the next planned try.
    tokio::time::sleep(Duration::from_secs(40)).await;
    let before = unreachable_calls(&st.get("/api/v1/outbox").await.1);
    let r = st
        .client
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let asked = Instant::now();
    let v = st
        .wait_outbox(Duration::from_secs(10), |v| unreachable_calls(v) > before)
        .await;
    let probed_after = asked.elapsed();
    assert!(
        probed_after < Duration::from_secs(5),
        "the retry probed after {probed_after:?}: {v:#}"
    );

    // Three minutes down, then back.
    let down = Duration::from_secs(180);
    tokio::time::sleep(down.saturating_sub(down_since.elapsed())).await;
    let while_down = st.get("/api/v1/outbox").await.1;
    let calls = unreachable_calls(&while_down);
    // One probe at most every probe_ms (12 s with the jitter's -20 %),
    // plus the first tries before the probing and the supervisor's.
    let most = 180 / 12 + 6;
    assert!(
        (3..=most).contains(&calls),
        "{calls} calls while DPS was down for 3 minutes (at most {most}): {while_down:#}"
    );
    fake.restart().await;
    let back = Instant::now();
    st.wait_outbox(Duration::from_secs(60), |v| v["enrolled"] == 1)
        .await;
    let took = back.elapsed();
    assert!(
        took <= Duration::from_secs(15 + 5),
        "the enrollment arrived {took:?} after DPS was back"
    );
    fake.with(|s| assert!(s.enrollments.contains_key(&guid), "in DPS"));
    let v = st.get("/api/v1/outbox").await.1;
    assert_eq!(v["connectivity"], "online", "{v:#}");
    assert!(v["next_try"].is_null(), "{v:#}");
}
