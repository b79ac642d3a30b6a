//! The operator UI in a real browser: headless Chromium driven over
//! WebDriver (Debian's chromium and chromium-driver; `scripts/test.sh`
//! installs them). Signs in keyboard-only with a badge and PIN, watches a
//! simulated board pass without reloading, sees a forced failure and its
//! message, checks a phone-sized screen, and that an operator is refused
//! the supervisor page. Screenshots go to target/tmp/screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use station::sim::SimOptions;
use station::store::{NewUser, Role};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

async fn browser(profile: &std::path::Path) -> (Child, Client) {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "this test needs Debian's chromium and chromium-driver: `apt-get install chromium chromium-driver` (scripts/test.sh does it)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Child(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start: {last:?}");
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.png")),
        c.screenshot().await.unwrap(),
    )
    .unwrap();
}

/// Waits until the slot tile has `class` in its classes; returns its text.
async fn tile(c: &Client, slot: u16, class: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(e) = c.find(Locator::Id(&format!("slot-{slot}"))).await {
            let classes = e.attr("class").await.ok().flatten().unwrap_or_default();
            if classes.split(' ').any(|x| x == class) {
                return e.text().await.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot {slot} never became {class}: {}",
            c.source().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_the_line_in_a_browser() {
    // Boards arrive once the operator is signed in and watching.
    let later = |fault: Option<&str>| SimOptions {
        first_insert_after: Duration::from_millis(6000),
        fault: fault.map(|f| f.parse().unwrap()),
        ..quick_board()
    };
    let st = TestStation::start_with(
        vec![later(None), later(Some("wrong_guid"))],
        2000,
        "\n[label]\nscan_back = true\n",
        |_| (),
    )
    .await;
    let now = time::OffsetDateTime::now_utc();
    let ana = NewUser {
        name: "ana",
        role: Role::Operator,
        badge: Some("0042"),
        pin: Some("4711"),
        password: None,
    };
    st.store().add_user(&ana, "test", now).unwrap();

    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path()).await;

    // Keyboard only: the badge field has focus; the scanner types the
    // badge and Tab, the operator types the PIN and Enter.
    c.goto(&format!("{}/", st.base)).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().ends_with("/login"),
        "signed-out people are sent to sign in"
    );
    let focused = c.active_element().await.unwrap();
    assert_eq!(
        focused.attr("name").await.unwrap().as_deref(),
        Some("badge")
    );
    focused.send_keys("0042\u{E004}4711\u{E007}").await.unwrap();
    c.wait().for_element(Locator::Id("slots")).await.unwrap();
    shot(&c, "line-signed-in").await;
    // Marks this page load: if the page reloads, the mark is gone.
    c.execute("window.stationMark = 42;", vec![]).await.unwrap();

    let pass = tile(&c, 1, "pass").await;
    assert!(pass.contains("PASS") && pass.contains("✔"), "{pass}");
    let fail = tile(&c, 2, "fail").await;
    assert!(fail.contains("FAIL") && fail.contains("✖"), "{fail}");
    assert!(
        fail.contains("reported GUID") && fail.contains("set it aside"),
        "the operator reads what to do: {fail}"
    );
    let mark = c
        .execute("return window.stationMark;", vec![])
        .await
        .unwrap();
    assert_eq!(
        mark,
        serde_json::json!(42),
        "updates arrived without a reload"
    );
    shot(&c, "line-1280x800").await;

    // The passed board's label preview is drawn in its tile.
    let mut width = serde_json::Value::Null;
    for _ in 0..50 {
        width = c
            .execute(
                "const i = document.querySelector('#slot-1 img.label-preview'); return i && i.complete ? i.naturalWidth : 0;",
                vec![],
            )
            .await
            .unwrap();
        if width.as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        width.as_i64().unwrap_or(0) > 0,
        "the label preview loads: {width}"
    );
    // Scan-back: the scanner types another board's GUID and Enter.
    c.find(Locator::Id("scan-1"))
        .await
        .unwrap()
        .send_keys("11111111-2222-4333-8444-555555555555\u{E007}")
        .await
        .unwrap();
    let mut pass = String::new();
    for _ in 0..50 {
        pass = tile(&c, 1, "pass").await;
        if pass.contains("LABEL DOES NOT MATCH THIS BOARD") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pass.contains("LABEL DOES NOT MATCH THIS BOARD"), "{pass}");
    shot(&c, "label-mismatch").await;

    c.set_window_size(390, 844).await.unwrap();
    let width = c
        .execute("return document.documentElement.scrollWidth;", vec![])
        .await
        .unwrap();
    assert!(
        width.as_i64().unwrap() <= 420,
        "no sideways scrolling on a phone: {width}"
    );
    shot(&c, "line-phone").await;
    c.set_window_size(1280, 800).await.unwrap();

    c.goto(&format!("{}/supervisor", st.base)).await.unwrap();
    let body = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("This page is for the supervisor role"),
        "{body}"
    );
    shot(&c, "supervisor-refused").await;
    c.close().await.unwrap();
}
