//! The operator UI in a real browser: headless Chromium driven over
//! WebDriver (Debian's chromium and chromium-driver; `scripts/test.sh`
//! installs them), over HTTPS: the station's certificate is issued by a
//! test plant CA that the browser trusts through its NSS database
//! (certutil, from libnss3-tools), as a plant's managed browsers would.
//! Signs in keyboard-only with a badge and PIN, watches a simulated board
//! pass without reloading, sees a forced failure and its message, checks a
//! phone-sized screen, and that an operator is refused the supervisor
//! page; shows that the Content-Security-Policy refuses inline script and
//! style on a station page (and that the same script runs on a page
//! without it); a supervisor's retirement asks for confirmation first.
//! Screenshots go to target/tmp/screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::browser::{browser, home_trusting, shot, sign_in, until};
use common::*;
use fantoccini::{Client, Locator};
use station::sim::SimOptions;
use station::store::Role;

/// Waits until the slot tile has `class` in its classes; returns its text.
async fn tile(c: &Client, slot: u16, class: &str) -> String {
    let id = format!("slot-{slot}");
    until(c, 40, &format!("slot {slot} becomes {class}"), || async {
        match c.find(Locator::Id(&id)).await {
            Ok(e) => e
                .attr("class")
                .await
                .ok()
                .flatten()
                .is_some_and(|classes| classes.split(' ').any(|x| x == class)),
            Err(_) => false,
        }
    })
    .await;
    c.find(Locator::Id(&id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_the_line_in_a_browser() {
    // Boards arrive once the operator is signed in and watching.
    let later = |fault: Option<&str>| SimOptions {
        first_insert_after: Duration::from_millis(6000),
        fault: fault.map(|f| f.parse().unwrap()),
        ..quick_board()
    };
    let ca_dir = tempfile::tempdir().unwrap();
    let mut plant_ca = None;
    let mut st = TestStation::start_with(
        vec![later(None), later(Some("wrong_guid"))],
        2000,
        &format!("\n[label]\nscan_back = true\n{}", common::tls::UI_TLS),
        |cfg| {
            plant_ca = Some(common::tls::install_ui_certificate(
                cfg.ui_tls.as_ref().unwrap(),
                ca_dir.path(),
                90,
            ));
        },
    )
    .await;
    assert!(st.base.starts_with("https://"), "{}", st.base);
    let plant_ca = plant_ca.unwrap();
    st.client = common::tls::client_trusting(&plant_ca.cert, Some(&st.token));
    add_badge_user(&st, "ana", Role::Operator, "0042", "4711");
    add_badge_user(&st, "sam", Role::Supervisor, "0077", "2468");

    let profile = tempfile::tempdir().unwrap();
    home_trusting(profile.path(), &plant_ca.cert);
    let (_driver, c) = browser(profile.path(), (1280, 800)).await;

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

    csp_bites(&c, &st.base).await;

    // A supervisor's retirement asks first (static/device.js, not an
    // inline handler); dismissed, nothing is retired.
    // (A provisioned device: one never provisioned offers no actions.)
    let guid = st
        .boards()
        .await
        .into_iter()
        .find(|b| b["status"] == "provisioned")
        .expect("a provisioned board")["guid"]
        .as_str()
        .unwrap()
        .to_string();
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &st.base, "0077", "2468").await;
    c.goto(&format!("{}/devices/{guid}", st.base))
        .await
        .unwrap();
    let form = c
        .find(Locator::Css(&format!(
            "form[action='/devices/{guid}/retire']"
        )))
        .await
        .unwrap();
    form.find(Locator::Css("input[name=reason]"))
        .await
        .unwrap()
        .send_keys("browser test")
        .await
        .unwrap();
    form.find(Locator::Css("input[name=confirm]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    form.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let question = c.get_alert_text().await.unwrap();
    assert!(
        question.starts_with(&format!("Retire {guid}?")),
        "{question}"
    );
    c.dismiss_alert().await.unwrap();
    let (_, record) = st.get(&format!("/api/v1/devices/{guid}")).await;
    assert!(
        record["retirement"].is_null(),
        "dismissed, nothing was retired: {record}"
    );
    c.close().await.unwrap();
}

/// Runs, from WebDriver (which the page's CSP does not bind), a script
/// that adds an inline script and an inline style to the page, and
/// returns whether each took effect and which directives the browser
/// reported violated.
const INJECT: &str = r#"
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation',
        (e) => window.cspViolations.push(e.effectiveDirective));
    window.inlineRan = false;
    const s = document.createElement('script');
    s.textContent = 'window.inlineRan = true;';
    document.body.appendChild(s);
    const d = document.createElement('div');
    d.setAttribute('style', 'width: 123px; display: block');
    document.body.appendChild(d);
    return [window.inlineRan, Math.round(d.getBoundingClientRect().width) === 123];
"#;

/// The CSP bites: on a station page an injected inline script does not
/// run and an inline style does not apply, and the browser reports both;
/// the same injection on a page without the policy does both, so the
/// check can fail.
async fn csp_bites(c: &Client, base: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    let took = c.execute(INJECT, vec![]).await.unwrap();
    assert_eq!(
        took,
        serde_json::json!([false, false]),
        "inline script and style are refused on a station page"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let violated = c
        .execute("return window.cspViolations;", vec![])
        .await
        .unwrap();
    let violated = violated.to_string();
    assert!(
        violated.contains("script-src") && violated.contains("style-src"),
        "the browser reports what it refused: {violated}"
    );

    c.goto("data:text/html,<!doctype html><title>no policy</title><body></body>")
        .await
        .unwrap();
    let took = c.execute(INJECT, vec![]).await.unwrap();
    assert_eq!(
        took,
        serde_json::json!([true, true]),
        "without the policy the same injection takes effect"
    );
}
