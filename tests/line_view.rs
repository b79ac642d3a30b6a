//! The line view fits the line, in headless Chromium (see
//! `common/browser.rs`): 16 simulated slots on a 1024x600 panel and 64 on
//! a 1920x1080 screen, every tile's whole box inside the viewport with no
//! scrolling, every tile's buttons inside it and Abort 24 px from the
//! rest, every tap target at least 44x44 CSS px, the header one line; the shift's figures move as boards pass and fail, a slot that
//! keeps failing says so, and the status strip says within 5 s that DPS
//! (a closed port on loopback) is offline, and why. axe-core finds no
//! serious or critical violation on the line view, sign-in, supervisor,
//! device and report pages, and does find one on a page made to have it.
//! Screenshots go to target/tmp/screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::browser::{axe_violations, browser, shot, sign_in, until, viewport};
use common::*;
use fantoccini::{Client, Locator};
use station::sim::{LineCycle, SimOptions};
use station::store::Role;

/// One browser and one station at a time: the machine is small.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A `[dps]` section for a DPS that is not there: a loopback port that
/// was free a moment ago.
fn dps_nowhere() -> String {
    let port = free_port();
    format!(
        "\n[dps]\nconnection_string = \"HostName=line-view-test.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nendpoint = \"http://127.0.0.1:{port}\"\nops_per_minute = 600\nrequest_timeout_ms = 1000\nmax_backoff_ms = 1000\n"
    )
}

/// `n` slots whose boards come and go; those of the slots at `fails`
/// (from 0) fail.
fn line_of(n: usize, fails: &[usize]) -> Vec<SimOptions> {
    (0..n)
        .map(|i| SimOptions {
            first_insert_after: Duration::from_millis(4000),
            line: Some(LineCycle {
                dwell: Duration::from_millis(500),
                pause: Duration::from_millis(1500),
            }),
            fault: fails.contains(&i).then(|| "wrong_guid".parse().unwrap()),
            ..quick_board()
        })
        .collect()
}

/// A station with `boards`, DPS out of reach, and a supervisor (badge
/// 0077, PIN 2468) signed in in a browser whose viewport is `size`.
/// The browser's profile folder goes with it.
async fn watch(
    boards: Vec<SimOptions>,
    size: (u32, u32),
) -> (TestStation, (Child, tempfile::TempDir), Client) {
    let st = TestStation::start_with(boards, 2000, &dps_nowhere(), |_| ()).await;
    add_badge_user(&st, "sam", Role::Supervisor, "0077", "2468");
    let profile = tempfile::tempdir().unwrap();
    let (driver, c) = browser(profile.path(), size).await;
    viewport(&c, size.0, size.1).await;
    sign_in(&c, &st.base, "0077", "2468").await;
    (st, (driver, profile), c)
}

/// Every tile's box is inside the viewport, and the page does not scroll.
/// Returns how many Abort buttons `buttons_in_reach` measured.
async fn tiles_fit(c: &Client, n: usize) -> u64 {
    let r = c
        .execute(
            r#"const w = window.innerWidth, h = window.innerHeight;
            const tiles = [...document.querySelectorAll('#slots .tile')];
            const out = tiles.filter((t) => { const r = t.getBoundingClientRect();
              return r.left < 0 || r.top < 0 || r.right > w + 0.5 || r.bottom > h + 0.5 || r.width < 100 || r.height < 90; })
              .map((t) => `${t.id} ${JSON.stringify(t.getBoundingClientRect())}`);
            const s = document.scrollingElement;
            return [tiles.length, out, s.scrollHeight <= h && s.scrollWidth <= w, [s.scrollWidth, s.scrollHeight, w, h]];"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r[0], n, "tiles drawn");
    assert_eq!(r[1], serde_json::json!([]), "tiles outside the viewport");
    assert_eq!(r[2], true, "the page does not scroll: {}", r[3]);
    buttons_in_reach(c).await
}

/// Every button a tile shows is wholly inside the tile (not cut off by a
/// small tile), and Abort stands 24 px or more from every other button.
/// Returns how many Abort buttons were measured.
async fn buttons_in_reach(c: &Client) -> u64 {
    let r = c
        .execute(
            r#"const bad = []; let aborts = 0;
            for (const t of document.querySelectorAll('#slots .tile')) {
              const b = t.getBoundingClientRect();
              const shown = [...t.querySelectorAll('button')].filter((e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden');
              for (const e of shown) {
                const r = e.getBoundingClientRect();
                if (r.top < b.top - 0.5 || r.bottom > b.bottom + 0.5 || r.left < b.left - 0.5 || r.right > b.right + 0.5)
                  bad.push(`${t.id}: "${e.textContent.trim()}" is cut off`);
              }
              const a = t.querySelector('.abort');
              if (!a) continue;
              aborts++;
              const ar = a.getBoundingClientRect();
              for (const e of shown) {
                if (e === a) continue;
                const r = e.getBoundingClientRect();
                const d = Math.hypot(Math.max(0, r.left - ar.right, ar.left - r.right), Math.max(0, r.top - ar.bottom, ar.top - r.bottom));
                if (d < 24) bad.push(`${t.id}: Abort is ${Math.round(d)} px from "${e.textContent.trim()}"`);
              }
            }
            return [bad, aborts];"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r[0], serde_json::json!([]), "tile buttons out of reach");
    r[1].as_u64().unwrap()
}

/// Everything one can tap that is shown measures at least 44x44 CSS px.
async fn tap_targets(c: &Client) -> usize {
    let r = c
        .execute(
            r#"const found = [], small = [];
            for (const e of document.querySelectorAll('a[href], button, input:not([type=hidden]), summary, select, textarea')) {
              const r = e.getBoundingClientRect();
              if (r.width === 0 || r.height === 0) continue;
              // Shown and reachable where it is: what a finger can hit.
              const x = Math.min(r.left + r.width / 2, window.innerWidth - 1), y = Math.min(r.top + r.height / 2, window.innerHeight - 1);
              const at = document.elementFromPoint(x, y);
              if (!at || !(e === at || e.contains(at))) continue;
              found.push(e);
              if (r.width < 44 || r.height < 44) small.push(`${e.tagName} "${e.textContent.trim().slice(0, 30)}" ${Math.round(r.width)}x${Math.round(r.height)}`);
            }
            return [found.length, small];"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(r[1], serde_json::json!([]), "tap targets under 44x44");
    r[0].as_u64().unwrap() as usize
}

/// The header is one line.
async fn header_one_line(c: &Client) {
    let r = c
        .execute(
            r#"const h = document.querySelector('header.bar');
            const rs = [...h.children].map((e) => e.getBoundingClientRect());
            // One line: every item overlaps every other vertically.
            return [h.getBoundingClientRect().height, Math.max(...rs.map((r) => r.top)) < Math.min(...rs.map((r) => r.bottom))];"#,
            vec![],
        )
        .await
        .unwrap();
    assert!(
        r[0].as_f64().unwrap() <= 60.0 && r[1] == true,
        "the header is one line: {r}"
    );
}

/// The element's text; found again if a redraw replaced it meanwhile.
async fn text_of(c: &Client, id: &str) -> String {
    for _ in 0..20 {
        if let Ok(e) = c.find(Locator::Id(id)).await
            && let Ok(t) = e.text().await
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    String::new()
}

async fn number(c: &Client, id: &str) -> u64 {
    text_of(c, id).await.trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_slots_fit_a_small_panel_and_the_numbers_move() {
    let _one = ONE.lock().await;
    // Slot 2 fails every board; slot 16's take 30 s to make a key, so it
    // shows Abort meanwhile.
    let mut line = line_of(16, &[1]);
    line[15].keygen_time = Duration::from_secs(30);
    let (st, _driver, c) = watch(line, (1024, 600)).await;
    until(&c, 30, "slot 16 is provisioning", || async {
        c.find(Locator::Css("#slot-16 .abort")).await.is_ok()
    })
    .await;
    assert!(tiles_fit(&c, 16).await >= 1, "an Abort was measured");
    header_one_line(&c).await;
    // Notes each tile that flashes (static/line.js adds `flash` once, when
    // a tile turns to FAIL or needs attention).
    c.execute(
        r#"window.flashed = new Set();
        new MutationObserver((ms) => ms.forEach((m) => {
          if (m.target.classList && m.target.classList.contains('flash')) window.flashed.add(m.target.id);
        })).observe(document.getElementById('slots'), { attributes: true, attributeFilter: ['class'], subtree: true });"#,
        vec![],
    )
    .await
    .unwrap();
    let (passed, failed) = (
        number(&c, "shift-passed").await,
        number(&c, "shift-failed").await,
    );
    until(&c, 40, "boards pass", || async {
        number(&c, "shift-passed").await > passed
    })
    .await;
    // The first board passed: its enrollment is queued, and the uploader
    // finds DPS gone.
    until(&c, 5, "the strip says DPS is offline, and why", || async {
        let s = text_of(&c, "strip").await;
        s.contains("DPS offline since") && s.contains("127.0.0.1")
    })
    .await;
    until(&c, 40, "boards fail", || async {
        number(&c, "shift-failed").await > failed
    })
    .await;
    let dps = c
        .execute(
            "return document.querySelector(\"#strip a[href='/supervisor#dps']\").className;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        dps, "bad",
        "DPS needs attention, and links to the supervisor page"
    );
    until(&c, 40, "slot 2 says it keeps failing", || async {
        text_of(&c, "slot-2").await.contains("keeps failing")
    })
    .await;
    let flashed = c
        .execute("return [...window.flashed];", vec![])
        .await
        .unwrap();
    assert_eq!(
        flashed,
        serde_json::json!(["slot-2"]),
        "only the failing slot flashed"
    );
    let yield_text = text_of(&c, "shift-yield").await;
    assert!(yield_text.ends_with('%'), "{yield_text}");
    tiles_fit(&c, 16).await;
    assert!(
        tap_targets(&c).await >= 16 + 3,
        "sign-in buttons, drawers, strip"
    );
    header_one_line(&c).await;
    shot(&c, "line-1024x600").await;
    // The same panel on its side.
    viewport(&c, 600, 1024).await;
    tiles_fit(&c, 16).await;
    tap_targets(&c).await;
    shot(&c, "line-600x1024").await;
    viewport(&c, 1024, 600).await;

    // The drawers hold the work order and the recent boards over the tiles.
    c.find(Locator::Css("details.drawer:nth-of-type(2) > summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let recent = c.find(Locator::Css("details.drawer[open] table")).await;
    assert!(recent.is_ok(), "the recent boards open in a drawer");
    shot(&c, "line-1024x600-drawer").await;
    tiles_fit(&c, 16).await;

    // Accessibility: the line view, sign-in, supervisor, device, report.
    c.goto(&format!("{}/", st.base)).await.unwrap();
    let mut found = Vec::new();
    let guid = st
        .boards()
        .await
        .into_iter()
        .find(|b| b["status"] == "provisioned")
        .map(|b| b["guid"].as_str().unwrap().to_string())
        .unwrap();
    for page in [
        "/".to_string(),
        "/supervisor".into(),
        format!("/devices/{guid}"),
        "/reports".into(),
    ] {
        c.goto(&format!("{}{page}", st.base)).await.unwrap();
        for v in axe_violations(&c).await {
            found.push(format!("{page}: {v}"));
        }
    }
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{}/login", st.base)).await.unwrap();
    for v in axe_violations(&c).await {
        found.push(format!("/login: {v}"));
    }
    assert_eq!(found, Vec::<String>::new(), "serious or critical");

    // The check can fail: an image without a text alternative, a button
    // without a name.
    c.goto("data:text/html,<!doctype html><html lang=en><title>t</title><img src=x.png><button></button></html>")
        .await
        .unwrap();
    let bad = axe_violations(&c).await;
    assert!(
        bad.iter().any(|v| v.contains("image-alt")),
        "axe finds what is wrong: {bad:?}"
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_slots_fit_a_large_screen() {
    let _one = ONE.lock().await;
    let boards = (0..64)
        .map(|i| SimOptions {
            first_insert_after: Duration::from_millis(3000 + 50 * i),
            fault: (i % 16 == 5).then(|| "wrong_guid".parse().unwrap()),
            ..quick_board()
        })
        .collect();
    let (st, _driver, c) = watch(boards, (1920, 1080)).await;
    tiles_fit(&c, 64).await;
    header_one_line(&c).await;
    until(&c, 60, "all 64 boards finish", || async {
        number(&c, "shift-passed").await + number(&c, "shift-failed").await == 64
    })
    .await;
    assert_eq!(number(&c, "shift-failed").await, 4);
    tiles_fit(&c, 64).await;
    assert!(tap_targets(&c).await >= 64 + 3);
    shot(&c, "line-1920x1080").await;
    drop(st);
    c.close().await.unwrap();
}
