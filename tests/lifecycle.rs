//! The device lifecycle after the line, against the strict fake DPS: a
//! board provisioned on the line (its key made by the station, so the test
//! holds the key the board holds) is activated, disabled, enabled and
//! revoked through the API and the command line. Each action reads the
//! enrollment and writes it back with `If-Match`; a concurrent change is
//! read again and kept; actions taken while DPS is offline reach it once
//! each when it is back. The device itself registers over mutual TLS with
//! its certificate: `disabled` before activation, `assigned` to the chosen
//! hub after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fake_dps::{FakeDps, ID_SCOPE};
use common::*;
use serde_json::{Value, json};
use station::store::Role;

const HUB_A: &str = "hub-a.azure-devices.net";
const HUB_B: &str = "hub-b.azure-devices.net";

struct Line {
    st: TestStation,
    fake: FakeDps,
    guid: String,
    /// The device's certificate chain (PEM) and key (PKCS#8 PEM), as the
    /// board holds them.
    chain: String,
    key: String,
}

/// A station with one slot whose board gets a station-made key, DPS on
/// the fake, two hubs to activate on; one board provisioned and enrolled.
async fn line() -> Line {
    let fake = FakeDps::start().await;
    let extra =
        dps_section(&fake, 6000) + &format!("activation_hubs = [\"{HUB_A}\", \"{HUB_B}\"]\n");
    let st = TestStation::start_slots(
        vec![quick_board()],
        300,
        &|_| "keygen = \"station\"\n".into(),
        &extra,
        |_| (),
    )
    .await;
    let boards = st.wait_finished(1, Duration::from_secs(30)).await;
    assert_eq!(boards[0]["status"], "provisioned", "{:#}", boards[0]);
    let guid = boards[0]["guid"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(20), || {
        fake.with(|s| s.enrollments.contains_key(&guid))
    })
    .await;
    let board = st.sims[0]
        .boards()
        .into_iter()
        .find(|b| b.guid.as_str() == guid)
        .unwrap();
    let chain: String = board
        .stored
        .iter()
        .map(|d| station::ca::pem_encode("CERTIFICATE", d))
        .collect();
    let secret = board
        .loaded_key
        .expect("the station sent the board its key");
    let key = {
        use p256::pkcs8::EncodePrivateKey;
        let k = p256::SecretKey::from_slice(&secret).unwrap();
        station::ca::pem_encode("PRIVATE KEY", k.to_pkcs8_der().unwrap().as_bytes())
    };
    Line {
        st,
        fake,
        guid,
        chain,
        key,
    }
}

async fn wait_for(within: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + within;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Line {
    fn client(&self, name: &str, role: Role) -> reqwest::Client {
        let token = self
            .st
            .store()
            .create_token(name, role, "tests", time::OffsetDateTime::now_utc())
            .unwrap();
        client_with_token(&token)
    }

    async fn act(&self, who: &reqwest::Client, action: &str, body: Value) -> (u16, Value) {
        let r = who
            .post(format!(
                "{}/api/v1/devices/{}/{action}",
                self.st.base, self.guid
            ))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn record(&self) -> Value {
        let (status, v) = self.st.get(&format!("/api/v1/devices/{}", self.guid)).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Waits until every action is done; the record then.
    async fn settled(&self, n: usize) -> Value {
        for _ in 0..400 {
            let r = self.record().await;
            let actions = r["actions"].as_array().unwrap();
            if actions.len() == n && actions.iter().all(|a| a["state"] == "done") {
                return r;
            }
            assert!(
                !actions.iter().any(|a| a["state"] == "parked"),
                "an action was parked: {r:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the actions did not complete: {:#}", self.record().await);
    }

    fn stored(&self) -> Value {
        self.fake
            .with(|s| s.enrollments.get(&self.guid).unwrap().body.clone())
    }

    /// What the device gets when it registers with its certificate.
    async fn register(&self) -> Value {
        common::device_client::register(
            self.fake.device_endpoint(),
            &self.fake.device_server_ca(),
            ID_SCOPE,
            &self.guid,
            &self.chain,
            &self.key,
        )
        .await
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_changes_exactly_its_fields_with_if_match_and_the_device_gets_its_hub() {
    let l = line().await;
    // Before activation the device is refused its hub.
    let before_dps = l.register().await;
    assert_eq!(before_dps["status"], "disabled", "{before_dps:#}");
    let before = l.stored();
    assert_eq!(before["provisioningStatus"], "disabled");

    let builder = l.client("builder", Role::Activator);
    let operator = l.client("op", Role::Operator);
    let good = json!({
        "hub": HUB_B,
        "tags": {"location": "hall 3", "chassis": "C-1042"},
        "desired": {"mode": "eco"},
        "reason": "installed at the customer's",
    });

    // Refusals first: nothing is queued.
    let (status, v) = l.act(&operator, "activate", good.clone()).await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = l.act(&builder, "disable", json!({"reason": "x"})).await;
    assert_eq!(status, 403, "an activator does not disable: {v}");
    let mut other_hub = good.clone();
    other_hub["hub"] = "hub-z.azure-devices.net".into();
    let (status, v) = l.act(&builder, "activate", other_hub).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains(HUB_A), "{v}");
    let mut not_object = good.clone();
    not_object["tags"] = json!(["a"]);
    let (status, v) = l.act(&builder, "activate", not_object).await;
    assert_eq!(status, 400, "{v}");
    let mut too_big = good.clone();
    too_big["tags"] = json!({"blob": "x".repeat(9000)});
    let (status, v) = l.act(&builder, "activate", too_big).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("at most 8192"), "{v}");
    // A bare activation (a hub, no twin) is fine; the one below then moves
    // the device to the other hub with its twin.
    let (status, _) = l.act(&builder, "activate", json!({"hub": HUB_A})).await;
    assert_eq!(status, 202);
    l.settled(1).await;
    assert_eq!(l.record().await["actions"].as_array().unwrap().len(), 1);

    let (status, v) = l.act(&builder, "activate", good).await;
    assert_eq!(status, 202, "{v}");
    let record = l.settled(2).await;
    assert_eq!(record["dps"]["provisioning_status"], "enabled");

    // Exactly the intended fields changed.
    let after = l.stored();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    for k in keys(&before).union(&keys(&after)) {
        if [
            "provisioningStatus",
            "allocationPolicy",
            "iotHubs",
            "initialTwin",
            "etag",
            "attestation",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        assert_eq!(before.get(k), after.get(k), "{k} changed");
    }
    assert_eq!(after["provisioningStatus"], "enabled");
    assert_eq!(after["allocationPolicy"], "static");
    assert_eq!(after["iotHubs"], json!([HUB_B]));
    let tags = &after["initialTwin"]["tags"];
    for (k, v) in before["initialTwin"]["tags"].as_object().unwrap() {
        assert_eq!(&tags[k], v, "the line's tag {k} is kept");
    }
    assert_eq!(tags["location"], "hall 3");
    assert_eq!(tags["chassis"], "C-1042");
    assert_eq!(after["initialTwin"]["properties"]["desired"]["mode"], "eco");
    assert_eq!(
        after["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"],
        l.st.ledger(&l.guid)[0].pem.as_str(),
        "the same certificate"
    );
    // The enrollment's upload, then one write per activation, each with
    // If-Match on the etag read.
    let puts: Vec<_> = l
        .fake
        .with(|s| s.puts.clone())
        .into_iter()
        .filter(|(id, _)| *id == l.guid)
        .collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    assert_eq!(puts[0].1, None, "the first upload creates");
    assert!(puts[1..].iter().all(|(_, m)| m.is_some()), "{puts:?}");

    // The device now gets its hub and its twin.
    let got = l.register().await;
    assert_eq!(got["status"], "assigned", "{got:#}");
    assert_eq!(got["registrationState"]["assignedHub"], HUB_B);
    assert_eq!(
        got["registrationState"]["fakeInitialTwin"]["tags"]["location"],
        "hall 3"
    );

    // Who did it and why is in the audit trail, and on the device page.
    let audit = record["audit"].as_array().unwrap();
    let activation = audit
        .iter()
        .rfind(|a| a["action"] == "device_activate")
        .unwrap();
    assert_eq!(activation["actor"], "builder");
    assert_eq!(
        activation["detail"]["reason"],
        "installed at the customer's"
    );
    assert_eq!(activation["detail"]["params"]["hub"], HUB_B);
    let page =
        l.st.client
            .get(format!("{}/devices/{}", l.st.base, l.guid))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    for part in [
        "enabled",
        "device_activate",
        "builder",
        "Certificates",
        "Uploads to DPS",
        "hall 3",
    ] {
        assert!(page.contains(part), "{part:?} on the device page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_change_fails_the_first_write_with_412_and_both_changes_are_kept() {
    let l = line().await;
    let guid = l.guid.clone();
    // Someone changes the enrollment between the station's read and write.
    l.fake.with(|s| {
        s.after_get = Some((
            guid.clone(),
            Box::new(|e: &mut Value| {
                e["initialTwin"]["tags"]["owner"] = "ops team".into();
                e["capabilities"] = json!({"iotEdge": true});
            }),
        ))
    });
    let builder = l.client("builder", Role::Activator);
    let (status, v) = l
        .act(
            &builder,
            "activate",
            json!({"hub": HUB_A, "tags": {"location": "hall 3"}}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    l.settled(1).await;
    let after = l.stored();
    assert_eq!(
        after["initialTwin"]["tags"]["owner"], "ops team",
        "theirs kept"
    );
    assert_eq!(after["capabilities"]["iotEdge"], true, "theirs kept");
    assert_eq!(
        after["initialTwin"]["tags"]["location"], "hall 3",
        "ours applied"
    );
    assert_eq!(after["provisioningStatus"], "enabled");
    let log = l.fake.with(|s| {
        s.log
            .iter()
            .filter(|x| x.path == format!("/enrollments/{guid}"))
            .map(|x| (x.method.clone(), x.status))
            .collect::<Vec<_>>()
    });
    // After the enrollment's upload: one write refused (412), one taken.
    let puts = l.fake.with(|s| s.puts[1..].to_vec());
    assert_eq!(puts.len(), 2, "one refused, one taken: {puts:?}");
    assert!(puts[0].1.is_some() && puts[1].1.is_some());
    assert_ne!(
        puts[0].1, puts[1].1,
        "the second write carries the new etag"
    );
    assert!(
        log.iter().any(|(m, st)| m == "PUT" && *st == 200),
        "{log:?}"
    );
    let gets = log.iter().filter(|(m, _)| m == "GET").count();
    assert_eq!(gets, 2, "read again after the 412: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_and_revoke_taken_offline_reach_dps_once_each() {
    let mut l = line().await;
    let supervisor = l.client("sue", Role::Supervisor);
    let builder = l.client("builder", Role::Activator);
    let (status, _) = l.act(&builder, "activate", json!({"hub": HUB_A})).await;
    assert_eq!(status, 202);
    l.settled(1).await;

    // DPS goes away; the actions are taken anyway.
    l.fake.stop();
    let (status, v) = l.act(&supervisor, "disable", json!({})).await;
    assert_eq!(status, 400, "a reason is needed: {v}");
    let (status, _) = l
        .act(
            &supervisor,
            "disable",
            json!({"reason": "returned for repair"}),
        )
        .await;
    assert_eq!(status, 202);
    // Enable from the command line, with a supervisor's token.
    let token =
        l.st.store()
            .create_token(
                "sue-cli",
                Role::Supervisor,
                "tests",
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
    let cfg = l.st.dir.path().join("station.toml");
    let out = std::process::Command::new(station_bin())
        .args([
            "device", "enable", &l.guid, "--reason", "repaired", "--config",
        ])
        .arg(&cfg)
        .env("STATION_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, v) = l
        .act(&supervisor, "revoke", json!({"reason": "stolen"}))
        .await;
    assert_eq!(status, 400, "revoking needs a confirmation: {v}");
    assert!(v["error"].as_str().unwrap().contains("cannot be undone"));
    let (status, _) = l
        .act(
            &supervisor,
            "revoke",
            json!({"reason": "stolen", "confirm": true}),
        )
        .await;
    assert_eq!(status, 202);

    // The revocation is local and immediate: the serial is on the CRL.
    let serial = l.st.ledger(&l.guid)[0].serial.clone();
    let crl = bare_client()
        .get(format!("{}/crl", l.st.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| station::ca::serial_string(r.raw_serial()).0)
        .collect();
    assert_eq!(listed, vec![serial.clone()]);

    // While DPS is away the actions wait, tried and counted.
    wait_for(Duration::from_secs(20), || {
        let r = l.st.store().device_actions(&l.guid).unwrap();
        r.len() == 4 && r[1].attempts > 0
    })
    .await;
    let before = l.fake.with(|s| s.puts.len());
    l.fake.restart().await;
    let record = l.settled(4).await;
    let puts = l.fake.with(|s| s.puts[before..].to_vec());
    assert_eq!(
        puts.len(),
        3,
        "disable, enable, revoke: once each: {puts:?}"
    );
    assert_eq!(l.stored()["provisioningStatus"], "disabled");
    assert_eq!(record["dps"]["provisioning_status"], "disabled");
    assert_eq!(record["revocation"]["serial"], serial.as_str());

    // Every action is in the audit trail with who and why.
    let audit = record["audit"].as_array().unwrap();
    for (action, actor, reason) in [
        ("device_disable", "sue", "returned for repair"),
        ("device_enable", "sue-cli", "repaired"),
        ("device_revoke", "sue", "stolen"),
        ("certificate_revoked", "sue", "stolen"),
    ] {
        assert!(
            audit.iter().any(|a| a["action"] == action
                && a["actor"] == actor
                && a["detail"]["reason"] == reason),
            "{action} by {actor}: {audit:#?}"
        );
    }

    // A revoked device stays revoked: no more actions, and the device is
    // refused its hub.
    let (status, v) = l
        .act(&supervisor, "enable", json!({"reason": "oops"}))
        .await;
    assert_eq!(status, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("revoked"));
    assert_eq!(l.register().await["status"], "disabled");

    // `station device show` tells the same story.
    let out = std::process::Command::new(station_bin())
        .args(["device", "show", &l.guid, "--config"])
        .arg(&cfg)
        .env("STATION_TOKEN", &token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("REVOKED"), "{text}");
    assert!(text.contains("DPS         disabled"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_page_forms_check_what_they_are_given_and_who_sends_it() {
    let l = line().await;
    let sup = session_of(&l.st, "sue", Role::Supervisor, "B-1").await;
    let builder = session_of(&l.st, "bob", Role::Activator, "B-2").await;
    let get = |cookie: &str, path: &str| {
        bare_client()
            .get(format!("{}{path}", l.st.base))
            .header("cookie", format!("station_session={cookie}"))
            .send()
    };
    // An activator lands on the device lookup, and a scanned GUID opens
    // the device's page with the activation form only.
    let r = get(&builder, "/").await.unwrap();
    assert_eq!(r.headers()["location"], "/devices");
    let r = get(&builder, &format!("/devices?guid={}", l.guid))
        .await
        .unwrap();
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, format!("/devices/{}", l.guid));
    let page = get(&builder, &to).await.unwrap().text().await.unwrap();
    assert!(page.contains(&l.guid) && page.contains(">Activate</button>"));
    assert!(!page.contains("Revoke for good"), "not for an activator");
    let bad = get(&builder, "/devices?guid=not-a-guid").await.unwrap();
    assert_eq!(bad.status(), 400);

    let page = get(&sup, &format!("/devices/{}", l.guid))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Revoke for good") && page.contains("cannot be undone"));
    let csrf = hidden_csrf(&page);
    let post = |action: &str, form: Vec<(&str, String)>| {
        let mut form = form;
        form.push(("csrf", csrf.clone()));
        bare_client()
            .post(format!("{}/devices/{}/{action}", l.st.base, l.guid))
            .header("cookie", format!("station_session={sup}"))
            .form(&form)
            .send()
    };
    // Malformed twin JSON, a hub not in the list, a revoke unconfirmed:
    // the page again, saying what to fix; nothing queued.
    let r = post(
        "activate",
        vec![("hub", HUB_A.into()), ("tags", "{location: hall}".into())],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("not valid JSON"));
    let r = post("activate", vec![("hub", "elsewhere".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("choose one of"));
    let r = post("revoke", vec![("reason", "stolen".into())])
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("cannot be undone"));
    assert!(l.st.store().device_actions(&l.guid).unwrap().is_empty());

    // A good form is queued and shown.
    let r = post(
        "activate",
        vec![
            ("hub", HUB_A.into()),
            ("tags", r#"{"location": "hall 3"}"#.into()),
            ("desired", String::new()),
            ("reason", String::new()),
        ],
    )
    .await
    .unwrap();
    let to = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(to, format!("/devices/{}?done=activate", l.guid));
    let page = get(&sup, &to).await.unwrap().text().await.unwrap();
    assert!(page.contains("Queued: activate"));
    l.settled(1).await;
    // Without the CSRF token a form is refused.
    let r = bare_client()
        .post(format!("{}/devices/{}/disable", l.st.base, l.guid))
        .header("cookie", format!("station_session={sup}"))
        .form(&[("reason", "x"), ("csrf", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
