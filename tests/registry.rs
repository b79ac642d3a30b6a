//! The device record after the line, through a running station: a
//! device's location and service notes set by role over the API and the
//! device page's forms (CSRF checked), shown on the page, in the API's
//! record and in the exports, audited; the lookup by GUID, location and
//! work order; and an activation that carries the location into the twin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fake_dps::FakeDps;
use common::*;
use serde_json::{Value, json};
use station::ids::Guid;
use station::store::Role;

const HUB: &str = "hub-a.azure-devices.net";

fn token(st: &TestStation, name: &str, role: Role) -> reqwest::Client {
    let t = st
        .store()
        .create_token(name, role, "tests", time::OffsetDateTime::now_utc())
        .unwrap();
    client_with_token(&t)
}

/// A station without slots holding `n` provisioned devices (as if a line
/// had made them), the first ones under the work orders given.
async fn station(n: usize, work_orders: &[&str], extra: &str) -> (TestStation, Vec<String>) {
    let guids: Vec<Guid> = (0..n)
        .map(|_| Guid::from_bytes(station::random::bytes()))
        .collect();
    let orders: Vec<String> = work_orders.iter().map(|s| s.to_string()).collect();
    let g2 = guids.clone();
    let st = TestStation::start_with(vec![], 300, extra, move |cfg| {
        seed_guids(cfg, &g2, |_, _| ());
        // The line stamps each record with the work order in production.
        let c = rusqlite::Connection::open(cfg.database_path()).unwrap();
        for (g, wo) in g2.iter().zip(&orders) {
            c.execute(
                "UPDATE boards SET work_order = ?2 WHERE guid = ?1",
                [g.as_str(), wo.as_str()],
            )
            .unwrap();
        }
    })
    .await;
    (st, guids.iter().map(|g| g.to_string()).collect())
}

async fn put_location(
    who: &reqwest::Client,
    st: &TestStation,
    guid: &str,
    body: Value,
) -> (u16, Value) {
    let r = who
        .put(format!("{}/api/v1/devices/{guid}/location", st.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn post_note(
    who: &reqwest::Client,
    st: &TestStation,
    guid: &str,
    text: &str,
) -> (u16, Value) {
    let r = who
        .post(format!("{}/api/v1/devices/{guid}/notes", st.base))
        .json(&json!({ "text": text }))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn get_page(st: &TestStation, cookie: &str, path: &str) -> reqwest::RequestBuilder {
    bare_client()
        .get(format!("{}{path}", st.base))
        .header("cookie", format!("station_session={cookie}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_and_notes_by_role_over_the_api_and_the_page_shown_exported_and_audited() {
    let (st, guids) = station(2, &[], "").await;
    let g = &guids[0];
    let operator = token(&st, "otto", Role::Operator);
    let builder = token(&st, "bob", Role::Activator);
    let place =
        json!({"site": " Plant 2 ", "building": "B", "room": "R-114", "text": "rack 4, shelf 2"});

    // Operators may not; nothing is written.
    let (s, v) = put_location(&operator, &st, g, place.clone()).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("this is operator"),
        "{v}"
    );
    let (s, _) = post_note(&operator, &st, g, "looked at it").await;
    assert_eq!(s, 403);
    // What is wrong is named.
    let (s, v) = put_location(&builder, &st, g, json!({"room": "x".repeat(101)})).await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("the room is 101 characters long; at most 100"),
        "{v}"
    );
    let (s, v) = post_note(&builder, &st, g, "   ").await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().unwrap().contains("the note is empty"),
        "{v}"
    );
    let stranger = "0a1b2c3d-0000-4000-8000-0000000000ff";
    let (s, v) = put_location(&builder, &st, stranger, place.clone()).await;
    assert_eq!(s, 404, "{v}");
    let (s, _) = post_note(&builder, &st, stranger, "x").await;
    assert_eq!(s, 404);
    let (_, record) = st.get(&format!("/api/v1/devices/{g}")).await;
    assert!(
        record["location"].is_null() && record["notes"] == json!([]),
        "{record:#}"
    );

    // An activator sets them.
    let (s, v) = put_location(&builder, &st, g, place).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["location"]["site"], "Plant 2", "trimmed");
    let (s, v) = post_note(&builder, &st, g, "fan replaced").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["note"]["author"], "bob");

    // The page, with a session: shows both, and its forms save.
    let sup = session_of(&st, "sue", Role::Supervisor, "B-1").await;
    let page = get_page(&st, &sup, &format!("/devices/{g}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for part in [
        "Plant 2 / B / R-114 — rack 4, shelf 2",
        "fan replaced",
        "bob",
        "Save the location",
        "Add the note",
    ] {
        assert!(page.contains(part), "{part:?} on the device page");
    }
    let csrf = hidden_csrf(&page);
    let form = |path: &str, fields: Vec<(&str, String)>| {
        bare_client()
            .post(format!("{}/devices/{g}/{path}", st.base))
            .header("cookie", format!("station_session={sup}"))
            .form(&fields)
            .send()
    };
    let r = form(
        "notes",
        vec![
            ("csrf", csrf.clone()),
            ("text", "firmware 1.5\nchecked".into()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(
        r.headers()["location"],
        format!("/devices/{g}?saved=note").as_str()
    );
    let r = form(
        "location",
        vec![
            ("csrf", csrf.clone()),
            ("site", "Plant 3".into()),
            ("building", String::new()),
            ("room", "Lab".into()),
            ("text", String::new()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    // Without the CSRF token, or with a wrong one: refused, nothing saved.
    for fields in [
        vec![("text", "sneaky".to_string())],
        vec![
            ("csrf", "wrong".to_string()),
            ("text", "sneaky".to_string()),
        ],
    ] {
        let r = form("notes", fields.clone()).await.unwrap();
        assert_eq!(r.status(), 403);
        let r = form("location", fields).await.unwrap();
        assert_eq!(r.status(), 403);
    }
    // The API with a session needs the session's CSRF token in a header.
    let api_put = |csrf: Option<&str>| {
        let mut rb = bare_client()
            .put(format!("{}/api/v1/devices/{g}/location", st.base))
            .header("cookie", format!("station_session={sup}"))
            .json(&json!({"site": "Plant 9"}));
        if let Some(t) = csrf {
            rb = rb.header("x-csrf-token", t);
        }
        rb.send()
    };
    assert_eq!(api_put(None).await.unwrap().status(), 403);
    assert_eq!(api_put(Some("wrong")).await.unwrap().status(), 403);
    // A form with a mistake: the page again, with the words.
    let r = form(
        "location",
        vec![("csrf", csrf.clone()), ("site", "a\u{7}b".into())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("control character"));
    // An operator's session gets the not-allowed page.
    let op = session_of(&st, "ola", Role::Operator, "B-2").await;
    let op_page = get_page(&st, &op, "/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = bare_client()
        .post(format!("{}/devices/{g}/notes", st.base))
        .header("cookie", format!("station_session={op}"))
        .form(&[("csrf", hidden_csrf(&op_page)), ("text", "x".into())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("activator, supervisor or admin")
    );

    let page = get_page(&st, &sup, &format!("/devices/{g}?saved=location"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Saved: the location."));
    assert!(page.contains("Plant 3 / Lab"), "{page}");
    assert!(!page.contains("sneaky"));

    // The API's record.
    let (_, record) = st.get(&format!("/api/v1/devices/{g}")).await;
    assert_eq!(
        record["location"],
        json!({"site": "Plant 3", "building": null, "room": "Lab", "text": null})
    );
    let notes: Vec<(&str, &str)> = record["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["author"].as_str().unwrap(), n["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        notes,
        [("bob", "fan replaced"), ("sue", "firmware 1.5\nchecked")]
    );
    // Audited, naming who.
    let audit = record["audit"].as_array().unwrap();
    let rows =
        |action: &str| -> Vec<&Value> { audit.iter().filter(|a| a["action"] == action).collect() };
    let locs = rows("device_location");
    assert_eq!(locs.len(), 2);
    assert_eq!(
        (locs[0]["actor"].as_str(), locs[1]["actor"].as_str()),
        (Some("bob"), Some("sue"))
    );
    assert_eq!(locs[1]["detail"]["before"]["site"], "Plant 2");
    let notes = rows("device_note");
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0]["actor"], "bob");
    assert_eq!(notes[0]["detail"]["text"], "fan replaced");

    // The exports: the device-list CSV and the MES's JSON lines.
    let r = st
        .client
        .get(format!(
            "{}/api/v1/reports?format=csv&from=2000-01-01",
            st.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    assert_eq!(
        &headers[..11],
        &station::report::render::CSV_COLUMNS[..11],
        "the old columns first, unchanged"
    );
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let ours = rows.iter().find(|r| &r[0] == g.as_str()).unwrap();
    assert_eq!(&ours[col("location_site")], "Plant 3");
    assert_eq!(&ours[col("location_room")], "Lab");
    assert_eq!(&ours[col("location_building")], "");
    assert_eq!(&ours[col("notes")], "2");
    let other = rows.iter().find(|r| &r[0] == guids[1].as_str()).unwrap();
    assert_eq!(&other[col("notes")], "0");

    let out = std::process::Command::new(station_bin())
        .args([
            "export",
            "units",
            "--format",
            "jsonl",
            "--from",
            "2000-01-01",
            "--config",
        ])
        .arg(st.dir.path().join("station.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ours = lines.iter().find(|l| l["guid"] == g.as_str()).unwrap();
    assert_eq!(ours["location"]["site"], "Plant 3");
    assert_eq!(ours["notes"], 2);
    assert!(
        lines
            .iter()
            .find(|l| l["guid"] == guids[1].as_str())
            .unwrap()["location"]
            .is_null()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_finds_devices_by_guid_location_and_work_order() {
    // 103 devices: one under WO-77, one under WO-770, 101 in hall 9.
    let (st, guids) = station(103, &["WO-77", "WO-770"], "").await;
    let builder = token(&st, "bob", Role::Activator);
    let (s, _) = put_location(
        &builder,
        &st,
        &guids[0],
        json!({"site": "North", "room": "Dock"}),
    )
    .await;
    assert_eq!(s, 200);
    let now = time::OffsetDateTime::now_utc();
    for g in &guids[2..] {
        let loc = station::registry::Location {
            building: Some("Hall 9".into()),
            ..Default::default()
        };
        assert!(
            st.store()
                .set_device_location(&g.parse().unwrap(), &loc, "bob", now)
                .unwrap()
        );
    }
    let ses = session_of(&st, "bob-page", Role::Activator, "B-9").await;
    let page = |q: &str| {
        let q = q.to_string();
        let ses = ses.clone();
        let base = st.base.clone();
        async move {
            let r = bare_client()
                .get(format!("{base}/devices?q={}", q.replace(' ', "%20")))
                .header("cookie", format!("station_session={ses}"))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.headers()
                    .get("location")
                    .map(|v| v.to_str().unwrap().to_string()),
                r.text().await.unwrap(),
            )
        }
    };
    // A GUID opens the device (in any case).
    let (s, to, _) = page(&guids[1].to_uppercase()).await;
    assert_eq!(
        (s, to.as_deref()),
        (303, Some(format!("/devices/{}", guids[1]).as_str()))
    );
    // A location text, in any case.
    let (s, _, html) = page("dOcK").await;
    assert_eq!(s, 200);
    assert!(html.contains(&guids[0]) && html.contains("North / Dock"));
    assert!(!html.contains(&guids[1]));
    // A work order, whole.
    let (_, _, html) = page("wo-77").await;
    assert!(html.contains(&guids[0]) && html.contains("WO-77"));
    assert!(!html.contains(&guids[1]), "WO-770 is another work order");
    let (_, _, html) = page("WO-770").await;
    assert!(html.contains(&guids[1]) && !html.contains(&guids[0]));
    // Nothing, said so.
    let (s, _, html) = page("atlantis").await;
    assert_eq!(s, 200);
    assert!(html.contains("No device has this text"));
    // Bounded at 100, with word of more.
    let (_, _, html) = page("hall 9").await;
    assert_eq!(html.matches("<tr><td><a href=\"/devices/").count(), 100);
    assert!(html.contains("More than 100 devices match"), "{html}");

    // The same over the API.
    let api = |q: &str| {
        let c = builder.clone();
        let url = format!("{}/api/v1/devices?q={}", st.base, q.replace(' ', "%20"));
        async move {
            let r = c.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, v) = api("north").await;
    assert_eq!(s, 200);
    assert_eq!(v["devices"].as_array().unwrap().len(), 1);
    assert_eq!(v["devices"][0]["guid"], guids[0].as_str());
    assert_eq!(v["devices"][0]["work_order"], "WO-77");
    assert_eq!(v["devices"][0]["location"]["room"], "Dock");
    let (_, v) = api(&guids[1]).await;
    assert_eq!(v["devices"][0]["work_order"], "WO-770");
    let (_, v) = api("Hall 9").await;
    assert_eq!(
        (v["devices"].as_array().unwrap().len(), v["more"].as_bool()),
        (100, Some(true))
    );
    let (s, v) = api(" ").await;
    assert_eq!(s, 400, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_carries_the_location_into_the_twin_unless_it_names_one() {
    let fake = FakeDps::start().await;
    let extra = dps_section(&fake, 6000) + &format!("activation_hubs = [\"{HUB}\"]\n");
    let (st, guids) = station(2, &[], &extra).await;
    for g in &guids {
        let g = g.clone();
        wait_for(Duration::from_secs(20), || {
            fake.with(|s| s.enrollments.contains_key(&g))
        })
        .await;
    }
    let builder = token(&st, "bob", Role::Activator);
    for g in &guids {
        let (s, _) = put_location(
            &builder,
            &st,
            g,
            json!({"site": "Plant 2", "room": "R-114"}),
        )
        .await;
        assert_eq!(s, 200);
    }
    // The first names no location tag: the record's goes in.
    let act = |g: &str, tags: Value| {
        builder
            .post(format!("{}/api/v1/devices/{g}/activate", st.base))
            .json(&json!({"hub": HUB, "tags": tags}))
            .send()
    };
    assert_eq!(
        act(&guids[0], json!({"chassis": "C-1"}))
            .await
            .unwrap()
            .status(),
        202
    );
    // The second names its own: it is kept.
    assert_eq!(
        act(&guids[1], json!({"location": "hall 3"}))
            .await
            .unwrap()
            .status(),
        202
    );
    for g in &guids {
        let g = g.clone();
        wait_for(Duration::from_secs(20), || {
            fake.with(|s| s.enrollments[&g].body["provisioningStatus"] == "enabled")
        })
        .await;
    }
    let tags = |g: &str| fake.with(|s| s.enrollments[g].body["initialTwin"]["tags"].clone());
    assert_eq!(
        tags(&guids[0])["location"],
        json!({"site": "Plant 2", "room": "R-114"})
    );
    assert_eq!(tags(&guids[0])["chassis"], "C-1");
    assert_eq!(tags(&guids[1])["location"], "hall 3");
    // The activation as queued says so too.
    let (_, record) = st.get(&format!("/api/v1/devices/{}", guids[0])).await;
    assert_eq!(
        record["actions"][0]["params"]["tags"]["location"]["site"],
        "Plant 2"
    );
}

async fn wait_for(within: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + within;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
