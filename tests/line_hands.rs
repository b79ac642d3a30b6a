//! The line view under real hands, in headless Chromium (see
//! `common/browser.rs`) and over plain HTTP: a badge scanner's
//! `badge + Enter` then `PIN + Enter` signs in; every tile's button,
//! tapped 20 times while boards pass, registers 20 times (the tiles are
//! patched in place, never replaced); keyboard focus survives 10 s of
//! updates; a FAIL's reason is still on its tile 10 s after the board is
//! pulled; the slot asks for an operator; Abort stands apart and asks
//! again; stopping the station, or killing its process outright, shows
//! "connection lost" within 3 s; and
//! every dead end (a 404, the reprint race, a bad report form, the device
//! page) is an HTML page with a way back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::browser::{browser, line_view_opens, shot, sign_in_password, until, viewport};
use common::*;
use fantoccini::{Client, Locator};
use station::sim::{LineCycle, SimOptions};
use station::store::Role;

/// One browser and one station at a time: the machine is small.
static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Boards that come and go every couple of seconds.
fn passing() -> SimOptions {
    SimOptions {
        first_insert_after: Duration::from_millis(3000),
        line: Some(LineCycle {
            dwell: Duration::from_millis(400),
            pause: Duration::from_millis(800),
        }),
        ..quick_board()
    }
}

/// Signs in as a badge scanner does: the badge and Enter, then the PIN
/// and Enter.
async fn scanner_sign_in(c: &Client, base: &str, badge: &str, pin: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    let badge_field = c
        .wait()
        .for_element(Locator::Css("input[name=badge]"))
        .await
        .unwrap();
    badge_field.click().await.unwrap();
    badge_field
        .send_keys(&format!("{badge}\u{E007}"))
        .await
        .unwrap();
    // Enter after the badge moved to the PIN and sent nothing.
    until(
        c,
        10,
        "the PIN field has the focus after the badge",
        || async {
            c.execute(
                "return document.activeElement && document.activeElement.id",
                vec![],
            )
            .await
            .unwrap()
                == "pin"
        },
    )
    .await;
    assert!(
        c.current_url().await.unwrap().path().starts_with("/login"),
        "the badge alone was sent"
    );
    // The PIN typed as the active element receives keys, then Enter.
    c.active_element()
        .await
        .unwrap()
        .send_keys(&format!("{pin}\u{E007}"))
        .await
        .unwrap();
    line_view_opens(c).await;
}

async fn js(c: &Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taps_land_focus_stays_results_stay_and_a_lost_station_is_said() {
    let _one = ONE.lock().await;
    let failing = SimOptions {
        fault: Some("wrong_guid".parse().unwrap()),
        // Pulled soon after it failed; the next board only much later.
        line: Some(LineCycle {
            dwell: Duration::from_millis(500),
            pause: Duration::from_secs(60),
        }),
        ..passing()
    };
    let slow = SimOptions {
        keygen_time: Duration::from_secs(120),
        ..passing()
    };
    let st = TestStation::start_with(
        vec![passing(), passing(), passing(), failing, slow],
        2000,
        "",
        |_| (),
    )
    .await;
    add_badge_user(&st, "sam", Role::Supervisor, "0077", "2468");
    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path(), (1280, 800)).await;
    viewport(&c, 1280, 800).await;

    // A scanner's badge + Enter, then PIN + Enter.
    scanner_sign_in(&c, &st.base, "0077", "2468").await;

    // Count the page's updates, to show that they happen meanwhile.
    js(
        &c,
        "window.__updates = 0; new MutationObserver(() => window.__updates++).observe(document.getElementById('slots'), {subtree: true, childList: true, characterData: true, attributes: true}); return true;",
    )
    .await;

    // The slow slot asks for an operator, and its Abort stands apart.
    until(&c, 30, "slot 5 is provisioning", || async {
        c.find(Locator::Css("#slot-5 .abort")).await.is_ok()
    })
    .await;
    let ask = c
        .find(Locator::Css("#slot-5 .ask-operator"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ask.contains("Nobody is signed in at slot 5"), "{ask}");
    let gap = js(
        &c,
        "const a = document.querySelector('#slot-5 .abort').getBoundingClientRect();
         let min = 1e9;
         document.querySelectorAll('#slot-5 button:not(.abort)').forEach((b) => {
           const r = b.getBoundingClientRect();
           const dx = Math.max(0, Math.max(r.left - a.right, a.left - r.right));
           const dy = Math.max(0, Math.max(r.top - a.bottom, a.top - r.bottom));
           min = Math.min(min, Math.hypot(dx, dy));
         });
         return min;",
    )
    .await;
    assert!(
        gap.as_f64().unwrap() >= 24.0,
        "Abort is {gap} px from another button"
    );
    // The first tap on Abort only arms it.
    c.find(Locator::Css("#slot-5 .abort"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let armed = c
        .find(Locator::Css("#slot-5 .abort"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(armed.contains("Tap again"), "{armed}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        st.get("/api/v1/slots").await.1[4]["state"],
        "provisioning",
        "one tap did not abort"
    );

    // Focus survives 10 s of updates.
    js(
        &c,
        "document.querySelector('#slot-3 button[value=claim]').focus(); return true;",
    )
    .await;
    let before = js(&c, "return window.__updates;").await.as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = js(&c, "return window.__updates;").await.as_u64().unwrap();
    assert!(
        after > before,
        "no updates in 10 s: the test proves nothing"
    );
    let focused = js(
        &c,
        "const a = document.activeElement; return a && a.closest('.tile') ? a.closest('.tile').id + ' ' + a.value : String(a && a.tagName);",
    )
    .await;
    assert_eq!(focused, "slot-3 claim", "focus after 10 s of updates");

    // Every tile's Sign in button, tapped 20 times while boards pass:
    // the same button each time (a replaced one would be stale), and the
    // station records every tap.
    // Meanwhile, where each Sign in button stands after every update, and
    // what the station answered each tap.
    js(
        &c,
        "window.__moved = {}; window.__why = []; window.__answers = [];
         const at = {};
         const look = () => document.querySelectorAll('#slots .tile').forEach((t) => {
           const r = t.querySelector('button[value=claim]').getBoundingClientRect();
           const was = at[t.id];
           if (!was) { at[t.id] = r; return; }
           const d = Math.max(Math.abs(r.top - was.top), Math.abs(r.left - was.left));
           if (d > (window.__moved[t.id] || 0)) {
             // What moved it: the tile itself (the rows above the grid), or
             // the button within the tile.
             const tile = t.getBoundingClientRect();
             window.__why.push({ tile: t.id, px: d, state: t.className, tileTop: tile.top, tileHeight: tile.height, buttonTop: r.top });
           }
           window.__moved[t.id] = Math.max(window.__moved[t.id] || 0, d);
         });
         look();
         new MutationObserver(() => requestAnimationFrame(look)).observe(document.getElementById('slots'), {subtree: true, childList: true, characterData: true, attributes: true});
         const f = window.fetch;
         window.fetch = async (...a) => {
           try { const r = await f(...a); window.__answers.push(r.status); return r; }
           catch (e) { window.__answers.push(String(e)); throw e; }
         };
         return true;",
    )
    .await;
    let taps_before = st.store().audit_rows().unwrap().len();
    for slot in 1..=5 {
        let button = c
            .find(Locator::Css(&format!("#slot-{slot} button[value=claim]")))
            .await
            .unwrap();
        for tap in 0..20 {
            button
                .click()
                .await
                .unwrap_or_else(|e| panic!("slot {slot}, tap {}: {e}", tap + 1));
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let per_slot = loop {
        let rows = st.store().audit_rows().unwrap();
        let per_slot: Vec<usize> = (1..=5)
            .map(|n| {
                rows[taps_before..]
                    .iter()
                    .filter(|r| {
                        r.action == "slot_signed_in" && r.subject.as_deref() == Some(&n.to_string())
                    })
                    .count()
            })
            .collect();
        if per_slot.iter().all(|n| *n >= 20) || std::time::Instant::now() > deadline {
            break per_slot;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let answers = js(&c, "return window.__answers;").await;
    let moved = js(&c, "return window.__moved;").await;
    assert_eq!(
        per_slot, [20; 5],
        "taps registered per slot; the station answered {answers}; the buttons moved by up to {moved} px"
    );
    // A button that moves under a finger loses taps: none moves.
    for (tile, px) in moved.as_object().unwrap() {
        assert!(
            px.as_f64().unwrap() < 1.0,
            "{tile}'s Sign in button moved by {px} px while boards passed: {}",
            js(&c, "return window.__why;").await
        );
    }
    // No tap reloaded the page: the counter set up above is still there.
    assert!(js(&c, "return typeof window.__updates;").await == "number");
    let passed = st
        .boards()
        .await
        .iter()
        .filter(|b| b["status"] == "provisioned")
        .count();
    assert!(passed >= 5, "boards passed meanwhile: {passed}");

    // The failed board's reason stays on its tile after it is pulled.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while st.get("/api/v1/slots").await.1[3]["state"] != "empty" {
        assert!(
            std::time::Instant::now() < deadline,
            "slot 4's board was not pulled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failure = st
        .boards()
        .await
        .into_iter()
        .find(|b| b["slot"] == 4 && b["status"] == "failed")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tile = c
        .find(Locator::Id("slot-4"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(tile.contains("Last board: FAIL"), "{tile}");
    let guid = failure["guid"].as_str().unwrap();
    assert!(tile.contains(guid), "{tile}");
    let reason = failure["error"].as_str().unwrap();
    let start: String = reason.chars().take(30).collect();
    assert!(
        tile.to_lowercase().contains(&start.to_lowercase()),
        "{reason} not in {tile}"
    );
    // The recent boards list follows, without a reload.
    let rows = js(
        &c,
        "return document.querySelectorAll('#recent-rows tr').length;",
    )
    .await;
    let now_boards = st.boards().await.len() as u64;
    assert!(
        rows.as_u64().unwrap() >= now_boards.min(50) - 2,
        "recent boards: {rows} rows for {now_boards} boards"
    );
    shot(&c, "line-hands-1280").await;

    // Stopping the station: the banner within 3 s.
    assert!(banner_hidden(&c).await, "the banner shows while connected");
    st.app.stop();
    banner_within_3_s(&c, "the station stopped").await;
    shot(&c, "line-hands-lost").await;
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_station_process_shows_the_banner_within_3_s() {
    let _one = ONE.lock().await;
    // A real `station serve`, killed outright: no goodbye on the stream.
    let dir = tempfile::tempdir().unwrap();
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("station.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    let (out, log) = (dir.path().join("serve.out"), dir.path().join("serve.log"));
    let mut child = Child(
        std::process::Command::new(station_bin())
            .args(["serve", "--demo", "2", "--listen", &listen, "--config"])
            .arg(&reference)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let password = output_line(&out, &log, "no demo sign-in", |l| {
        l.strip_prefix("demo sign-in: user name demo, password ")
            .map(str::to_string)
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let (_driver, c) = browser(profile.path(), (1280, 800)).await;
    sign_in_password(&c, &format!("http://{listen}"), "demo", &password).await;
    // Heard from the station: no banner.
    until(&c, 10, "the line view hears the station", || {
        banner_hidden(&c)
    })
    .await;

    child.0.kill().unwrap();
    child.0.wait().unwrap();
    banner_within_3_s(&c, "the station was killed").await;
    let text = c
        .find(Locator::Id("conn-lost"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("Connection to the station lost"), "{text}");
    shot(&c, "line-hands-killed").await;
    c.close().await.unwrap();
}

/// Whether the "connection lost" banner is hidden.
async fn banner_hidden(c: &Client) -> bool {
    js(c, "return document.getElementById('conn-lost').hidden;").await == true
}

/// The "connection lost" banner shows within 3 s of `what` happening.
async fn banner_within_3_s(c: &Client, what: &str) {
    let since = std::time::Instant::now();
    while banner_hidden(c).await {
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "no 'connection lost' banner 3 s after {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session cookie and the page's CSRF token for a new operator.
async fn operator(st: &TestStation, name: &str, badge: &str, role: Role) -> (String, String) {
    let session = session_of(st, name, role, badge).await;
    let page = st.page_as(&session, "/").await;
    let csrf = if role >= Role::Operator {
        hidden_csrf(&page)
    } else {
        String::new()
    };
    (session, csrf)
}

/// A request as a browser makes it: with the session, accepting HTML,
/// coming from `from`.
fn browser_request(
    st: &TestStation,
    method: reqwest::Method,
    path: &str,
    session: &str,
    from: &str,
) -> reqwest::RequestBuilder {
    let host = st.base.trim_start_matches("http://");
    bare_client()
        .request(method, format!("{}{path}", st.base))
        .header("cookie", format!("station_session={session}"))
        .header("accept", "text/html,application/xhtml+xml")
        .header("referer", format!("http://{host}{from}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dead_end_has_a_way_back() {
    let st = TestStation::start_with(
        vec![quick_board(), with_fault("fail_test")],
        300,
        "",
        |_| (),
    )
    .await;
    let (session, csrf) = operator(&st, "ana", "0042", Role::Supervisor).await;

    let way_back = |html: &str| html.contains(r#"<a href="/">Back to the line</a>"#);

    // A page that does not exist: HTML, with the way back; the API keeps
    // its JSON.
    let r = browser_request(&st, reqwest::Method::GET, "/no/such/page", &session, "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(way_back(&html), "{html}");
    assert!(html.contains("There is no page at /no/such/page"), "{html}");
    let r = browser_request(&st, reqwest::Method::GET, "/api/v1/nothing", &session, "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("json")
    );

    // The reprint race: a reprint for a slot whose board is no longer a
    // provisioned one (here: its board failed its test).
    let r = browser_request(
        &st,
        reqwest::Method::POST,
        "/slots/2/reprint",
        &session,
        "/",
    )
    .form(&[("csrf", csrf.as_str())])
    .send()
    .await
    .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let html = r.text().await.unwrap();
    assert!(way_back(&html), "{html}");
    assert!(!html.trim_start().starts_with('{'), "{html}");

    // A bad report form: what is wrong, and back to the form.
    let r = browser_request(
        &st,
        reqwest::Method::GET,
        "/reports?date=yesterday-ish&format=html",
        &session,
        "/reports",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(way_back(&html), "{html}");
    assert!(
        html.contains(r#"<a href="/reports">Back to the page you came from</a>"#),
        "{html}"
    );

    // Abort without the second tap: a page that asks, with the way back.
    let r = browser_request(&st, reqwest::Method::POST, "/slots/1/action", &session, "/")
        .form(&[("csrf", csrf.as_str()), ("action", "abort")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("Abort the board in slot 1?"), "{html}");
    assert!(
        html.contains(r#"<a href="/">No, back to the line</a>"#),
        "{html}"
    );
    assert!(html.contains(r#"name="confirm" value="yes""#), "{html}");

    // The device page: sign-out, back to the line, an empty lookup field;
    // a device never provisioned offers no actions; a revoked
    // certificate reads as revoked.
    let seeded = seed_provisioned(
        &station::config::Config::load(&st.dir.path().join("station.toml")).unwrap(),
        1,
        |_, _| (),
    );
    let guid = &seeded[0];
    let page = st.page_as(&session, &format!("/devices/{guid}")).await;
    assert!(page.contains(r#"action="/logout""#), "{page}");
    assert!(
        page.contains(r#"<a href="/" id="to-line">Back to the line</a>"#),
        "{page}"
    );
    assert!(page.contains(r#"id="lookup" value="""#), "{page}");
    assert!(
        page.contains(&format!("/devices/{guid}/activate")),
        "{page}"
    );
    let r = st
        .client
        .post(format!("{}/api/v1/devices/{guid}/revoke", st.base))
        .json(&serde_json::json!({ "reason": "stolen from the line", "confirm": true }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let page = st.page_as(&session, &format!("/devices/{guid}")).await;
    let certs = &page[page.find("<h3>Certificates</h3>").unwrap()..];
    let certs = &certs[..certs.find("</table>").unwrap()];
    assert!(certs.contains("<td>revoked</td>"), "{certs}");
    assert!(!certs.contains("<td>installed</td>"), "{certs}");
    assert!(
        !page.contains(&format!("/devices/{guid}/activate")),
        "{page}"
    );

    // A board that failed on the line was never provisioned.
    let never = "0a1b2c3d-0000-4000-8000-00000000abcd";
    {
        let store = st.store();
        let now = time::OffsetDateTime::now_utc();
        let b = store
            .open_board("test-station", station::ids::SlotId(1), now)
            .unwrap();
        let id = station::jig::BoardIdentity {
            guid: never.parse().unwrap(),
            hw_revision: "B2".into(),
            fw_version: "1.4.2".into(),
            mac: "02:00:00:00:00:09".parse().unwrap(),
        };
        let b = store.record_identity(b, &id, now).unwrap();
        store
            .fail(b, &station::core::Failure::new("csr_rejected", "test"), now)
            .unwrap();
    }
    let page = st.page_as(&session, &format!("/devices/{never}")).await;
    assert!(page.contains(r#"id="never-provisioned""#), "{page}");
    assert!(
        !page.contains(&format!("/devices/{never}/activate")),
        "{page}"
    );
    assert!(!page.contains("Revoke for good"), "{page}");

    // The supervisor page has sign-out and the way back, and the strip's
    // items lead to its sections, not to raw data.
    let sup = st.page_as(&session, "/supervisor").await;
    assert!(sup.contains(r#"action="/logout""#), "{sup}");
    assert!(way_back(&sup), "{sup}");
    let line = st.page_as(&session, "/").await;
    let strip = &line[line.find(r#"id="strip""#).unwrap()..];
    let strip = &strip[..strip.find("</ul>").unwrap()];
    let hrefs: Vec<&str> = strip
        .split(r#"href=""#)
        .skip(1)
        .map(|h| &h[..h.find('"').unwrap()])
        .collect();
    assert!(hrefs.len() >= 2, "the printer and the CA at least: {strip}");
    for h in hrefs {
        assert!(
            !h.starts_with("/api/"),
            "a strip item leads to raw data: {h}"
        );
        // A jig's item points at its tile, on the line view itself.
        let (page, section) = match h.strip_prefix("/supervisor#") {
            Some(section) => (&sup, section),
            None => (&line, h.strip_prefix('#').unwrap_or_else(|| panic!("{h}"))),
        };
        assert!(
            page.contains(&format!(r#"id="{section}""#)),
            "the strip links to {h}, which is not there"
        );
    }

    // A session that ended for idleness: the sign-in page says so.
    let r = bare_client()
        .get(format!("{}/", st.base))
        .header("cookie", "station_session=ended-long-ago")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?why=idle");
    let login = bare_client()
        .get(format!("{}/login?why=idle", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login.contains("You were signed out because the station was not used for"),
        "{login}"
    );
}
