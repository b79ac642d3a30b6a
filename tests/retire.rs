//! Retiring a device, against the strict fake DPS: recorded, every
//! certificate on the CRL and audited at once; then exactly one `DELETE`
//! of its enrollment with `If-Match` on the etag read, across a DPS outage,
//! a concurrent change (412, read again), a crash of the station
//! between the `DELETE` and recording it, and a SIGKILL mid-way through
//! twenty retirements after an outage. Afterwards the device is refused
//! every action, and the line refuses its GUID with `device_retired`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::fake_dps::{Deleted, FakeDps};
use common::*;
use serde_json::{Value, json};
use station::ids::Guid;
use station::store::Role;

struct Setup {
    st: TestStation,
    fake: FakeDps,
    guid: String,
}

/// A station with one provisioned device, enrolled in the fake DPS.
async fn enrolled() -> Setup {
    let fake = FakeDps::start().await;
    let g = Guid::from_bytes(station::random::bytes());
    let g2 = g.clone();
    let extra = dps_section(&fake, 6000) + "activation_hubs = [\"hub-a.azure-devices.net\"]\n";
    let st = TestStation::start_with(vec![], 300, &extra, move |cfg| {
        seed_guids(cfg, &[g2], |_, _| ());
    })
    .await;
    let guid = g.to_string();
    wait_for(Duration::from_secs(20), || {
        fake.with(|s| s.enrollments.contains_key(&guid))
    })
    .await;
    Setup { st, fake, guid }
}

impl Setup {
    fn client(&self, name: &str, role: Role) -> reqwest::Client {
        let t = self
            .st
            .store()
            .create_token(name, role, "tests", time::OffsetDateTime::now_utc())
            .unwrap();
        client_with_token(&t)
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

    fn etag(&self) -> String {
        self.fake.with(|s| s.enrollments[&self.guid].etag.clone())
    }

    fn deletes(&self) -> Vec<Deleted> {
        self.fake.with(|s| s.deletes_of(&self.guid))
    }

    /// Waits until the retire is done; the record then.
    async fn retired(&self) -> Value {
        for _ in 0..400 {
            let (_, r) = self.st.get(&format!("/api/v1/devices/{}", self.guid)).await;
            let actions = r["actions"].as_array().unwrap();
            assert!(
                !actions.iter().any(|a| a["state"] == "parked"),
                "parked: {r:#}"
            );
            if actions
                .last()
                .is_some_and(|a| a["action"] == "retire" && a["state"] == "done")
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the retire did not complete");
    }
}

async fn wait_for(within: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + within;
    while !f() {
        assert!(std::time::Instant::now() < end, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The serials `GET /crl` lists.
async fn crl_serials(st: &TestStation) -> Vec<String> {
    let der = bare_client()
        .get(format!("{}/crl", st.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| station::ca::serial_string(r.raw_serial()).0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retire_is_one_conditional_delete_the_crl_lists_the_device_and_nothing_more_is_queued() {
    let s = enrolled().await;
    let sup = s.client("sue", Role::Supervisor);
    let builder = s.client("bob", Role::Activator);

    // Refusals first: nothing is queued, nothing revoked.
    let (status, v) = s
        .act(&builder, "retire", json!({"reason": "x", "confirm": true}))
        .await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = s.act(&sup, "retire", json!({"reason": "scrapped"})).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("retiring cannot be undone"),
        "{v}"
    );
    let (status, v) = s.act(&sup, "retire", json!({"confirm": true})).await;
    assert_eq!(status, 400);
    assert!(
        v["error"].as_str().unwrap().contains("to be retired"),
        "{v}"
    );
    assert!(s.st.store().device_actions(&s.guid).unwrap().is_empty());
    assert!(crl_serials(&s.st).await.is_empty());

    let etag = s.etag();
    let (status, v) = s
        .act(
            &sup,
            "retire",
            json!({"reason": "scrapped after flood", "confirm": true}),
        )
        .await;
    assert_eq!(status, 202, "{v}");
    let serial = s.st.ledger(&s.guid)[0].serial.clone();
    assert_eq!(
        crl_serials(&s.st).await,
        vec![serial.clone()],
        "on the CRL at once"
    );

    let record = s.retired().await;
    assert_eq!(
        s.deletes(),
        vec![Deleted {
            id: s.guid.clone(),
            if_match: Some(etag),
            status: 204
        }],
        "exactly one DELETE, with If-Match on the etag read"
    );
    assert!(s.fake.with(|f| !f.enrollments.contains_key(&s.guid)));
    assert_eq!(record["retirement"]["reason"], "scrapped after flood");
    assert_eq!(record["retirement"]["retired_by"], "sue");
    assert_eq!(record["dps"]["provisioning_status"], "deleted");
    let audit = record["audit"].as_array().unwrap();
    let retire = audit
        .iter()
        .find(|a| a["action"] == "device_retire")
        .unwrap();
    assert_eq!(retire["actor"], "sue");
    assert_eq!(retire["detail"]["serials"], json!([serial]));
    assert!(
        audit
            .iter()
            .any(|a| a["action"] == "certificate_revoked"
                && a["detail"]["serial"] == serial.as_str())
    );

    // Nothing more is queued for it.
    for action in ["disable", "enable", "revoke", "retire"] {
        let (status, v) = s
            .act(&sup, action, json!({"reason": "again", "confirm": true}))
            .await;
        assert_eq!(status, 409, "{action}: {v}");
        assert!(v["error"].as_str().unwrap().contains("was retired"), "{v}");
    }
    let (status, v) = s
        .act(
            &builder,
            "activate",
            json!({"hub": "hub-a.azure-devices.net"}),
        )
        .await;
    assert_eq!(status, 409, "no activation either: {v}");
    assert_eq!(s.st.store().device_actions(&s.guid).unwrap().len(), 1);
    assert_eq!(s.deletes().len(), 1);

    // The page and `station device show` say so.
    let ses = session_of(&s.st, "sue-page", Role::Supervisor, "B-1").await;
    let page = bare_client()
        .get(format!("{}/devices/{}", s.st.base, s.guid))
        .header("cookie", format!("station_session={ses}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Retired ") && page.contains("scrapped after flood"));
    assert!(!page.contains("Retire for good") && !page.contains(">Activate</button>"));
    let token =
        s.st.store()
            .create_token(
                "cli",
                Role::Supervisor,
                "tests",
                time::OffsetDateTime::now_utc(),
            )
            .unwrap();
    let out = Command::new(station_bin())
        .args(["device", "show", &s.guid, "--config"])
        .arg(s.st.dir.path().join("station.toml"))
        .env("STATION_TOKEN", &token)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("RETIRED") && text.contains("scrapped after flood"),
        "{text}"
    );
    assert!(text.contains("DPS         deleted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retire_taken_while_dps_is_away_deletes_once_when_it_is_back() {
    let mut s = enrolled().await;
    let sup = s.client("sue", Role::Supervisor);
    let etag = s.etag();
    s.fake.stop();
    let (status, _) = s
        .act(
            &sup,
            "retire",
            json!({"reason": "scrapped", "confirm": true}),
        )
        .await;
    assert_eq!(status, 202);
    // The certificate is on the CRL while DPS is away.
    assert_eq!(crl_serials(&s.st).await.len(), 1);
    wait_for(Duration::from_secs(20), || {
        let a = s.st.store().device_actions(&s.guid).unwrap();
        a.len() == 1 && a[0].attempts >= 1
    })
    .await;
    // Tried once, then DPS is probed (no resend while it is away).
    s.st.wait_outbox(Duration::from_secs(20), |v| {
        v["calls"]["network"].as_u64().unwrap_or(0) >= 3
    })
    .await;
    assert!(s.deletes().is_empty());
    s.fake.restart().await;
    s.retired().await;
    assert_eq!(
        s.deletes(),
        vec![Deleted {
            id: s.guid.clone(),
            if_match: Some(etag),
            status: 204
        }]
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.deletes().len(), 1, "and no second one later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_changed_before_the_delete_is_read_again() {
    let s = enrolled().await;
    let sup = s.client("sue", Role::Supervisor);
    let first = s.etag();
    let guid = s.guid.clone();
    // Someone changes the enrollment between the station's read and its
    // DELETE.
    s.fake.with(|f| {
        f.after_get = Some((
            guid,
            Box::new(|e: &mut Value| e["initialTwin"]["tags"]["owner"] = "ops".into()),
        ))
    });
    let (status, _) = s
        .act(
            &sup,
            "retire",
            json!({"reason": "scrapped", "confirm": true}),
        )
        .await;
    assert_eq!(status, 202);
    s.retired().await;
    let deletes = s.deletes();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
    assert_eq!(
        (deletes[0].if_match.as_deref(), deletes[0].status),
        (Some(first.as_str()), 412)
    );
    assert_eq!(deletes[1].status, 204);
    assert_ne!(
        deletes[1].if_match, deletes[0].if_match,
        "the etag read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_that_dies_between_the_delete_and_recording_it_does_not_delete_again() {
    let fake = FakeDps::start().await;
    let section = format!(
        "\n[dps]\nendpoint = \"{}\"\nca_file = \"{}\"\nops_per_minute = 6000\nrequest_timeout_ms = 2000\nmax_backoff_ms = 500\n",
        fake.https_endpoint(),
        fake.ca_file().display()
    );
    let (dir, cfg) = prepare_with(&[], 300, &section);
    let guid = seed_provisioned(&cfg, 1, |_, _| ()).remove(0);
    let config = dir.path().join("station.toml");
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    let token = store
        .create_token(
            "sue",
            Role::Supervisor,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();

    // From the command line: refused without --yes, in words.
    let retire = |yes: bool| {
        let mut c = Command::new(station_bin());
        c.args([
            "device", "retire", &guid, "--reason", "scrapped", "--config",
        ])
        .arg(&config)
        .env("STATION_TOKEN", &token);
        if yes {
            c.arg("--yes");
        }
        c.output().unwrap()
    };
    let out = retire(false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retiring cannot be undone") && err.contains("--yes"),
        "{err}"
    );
    assert!(
        store.device_actions(&guid).unwrap().is_empty(),
        "nothing queued"
    );
    let out = retire(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The station enrolls the device, deletes the enrollment, and dies
    // before it records the retire as done.
    let run = |failpoint: Option<&str>, log: &str| {
        let mut c = Command::new(station_bin());
        c.args(["serve", "--config"])
            .arg(&config)
            .env("STATION_DPS_CONNECTION_STRING", fake.connection_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap());
        if let Some(f) = failpoint {
            c.env("STATION_FAILPOINT", f);
        }
        Child(c.spawn().unwrap())
    };
    let mut first = run(Some("after_retire_delete"), "run1.log");
    let mut exited = None;
    for _ in 0..300 {
        exited = first.0.try_wait().unwrap();
        if exited.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("the station stopped at the failpoint");
    assert!(!status.success());
    assert!(read(&dir.path().join("run1.log")).contains("failpoint after_retire_delete"));
    let deletes = fake.with(|s| s.deletes_of(&guid));
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].status, 204);
    assert!(deletes[0].if_match.is_some());
    assert_eq!(
        store.device_actions(&guid).unwrap()[0].state,
        "pending",
        "the station died before recording it"
    );

    // After the restart it reads the enrollment again, finds it gone, and
    // records the retire without a second DELETE.
    let gets_before = fake.with(|s| s.log.iter().filter(|l| l.method == "GET").count());
    let _second = run(None, "run2.log");
    wait_for(Duration::from_secs(30), || {
        store.device_actions(&guid).unwrap()[0].state == "done"
    })
    .await;
    assert_eq!(
        fake.with(|s| s.deletes_of(&guid)).len(),
        1,
        "still exactly one DELETE"
    );
    let gets_after = fake.with(|s| s.log.iter().filter(|l| l.method == "GET").count());
    assert!(gets_after > gets_before, "read again after the restart");
    let record = store.device_record(&guid.parse().unwrap()).unwrap();
    assert_eq!(
        record.dps.unwrap().provisioning_status.as_deref(),
        Some("deleted")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_refuses_a_retired_guid() {
    let g = Guid::from_bytes(station::random::bytes());
    let g2 = g.clone();
    let board = station::sim::SimOptions {
        guid: Some(g.clone()),
        ..quick_board()
    };
    let st = TestStation::start_with(vec![board], 300, "", move |cfg| {
        seed_guids(cfg, std::slice::from_ref(&g2), |_, _| ());
        let store = station::store::Store::open(&cfg.database_path()).unwrap();
        let req = station::lifecycle::Request {
            action: "retire".into(),
            reason: Some("scrapped".into()),
            confirmed: true,
            ..Default::default()
        };
        station::lifecycle::request(
            &store,
            &[],
            &g2,
            &req,
            "sue",
            Role::Supervisor,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    })
    .await;
    // The seeded record and the board in the jig.
    let boards = st.wait_finished(2, Duration::from_secs(30)).await;
    let failed = boards
        .iter()
        .find(|b| b["status"] == "failed")
        .unwrap_or_else(|| panic!("the board was not refused: {boards:#?}"));
    assert_eq!(failed["guid"], g.as_str());
    assert_eq!(failed["error_code"], "device_retired", "{failed:#}");
    let msg = failed["error"].as_str().unwrap();
    assert!(
        msg.contains("was retired on") && msg.contains("an admin"),
        "{msg}"
    );
    assert_eq!(st.ledger(g.as_str()).len(), 1, "no new certificate");
}

/// Twenty retirements asked for while DPS is away; the station is killed
/// with SIGKILL (no clean-up of any kind) while it carries them out once
/// DPS is back; after a restart every device's enrollment has been
/// deleted exactly once, each with `If-Match`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retirements_through_an_outage_and_a_sigkill_delete_each_enrollment_once() {
    let mut fake = FakeDps::start().await;
    let section = format!(
        "\n[dps]\nendpoint = \"{}\"\nca_file = \"{}\"\nops_per_minute = 600\nrequest_timeout_ms = 1000\nmax_backoff_ms = 500\n",
        fake.https_endpoint(),
        fake.ca_file().display()
    );
    let (dir, cfg) = prepare_with(&[], 300, &section);
    let guids = seed_provisioned(&cfg, 20, |_, _| ());
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    for g in &guids {
        let req = station::lifecycle::Request {
            action: "retire".into(),
            reason: Some("scrapped".into()),
            confirmed: true,
            ..Default::default()
        };
        station::lifecycle::request(
            &store,
            &[],
            &g.parse().unwrap(),
            &req,
            "sue",
            Role::Supervisor,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    }
    fake.stop();
    let config = dir.path().join("station.toml");
    let connection = fake.connection_string();
    let run = |log: &str| {
        Child(
            Command::new(station_bin())
                .args(["serve", "--config"])
                .arg(&config)
                .env("STATION_DPS_CONNECTION_STRING", &connection)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
                .spawn()
                .unwrap(),
        )
    };
    let mut first = run("run1.log");
    // DPS is away for a while, then back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.restart().await;
    let deleted = || fake.with(|s| s.deletes.len());
    wait_for(Duration::from_secs(60), || deleted() >= 3).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let at_kill = deleted();
    assert!(
        at_kill < 20,
        "killed mid-way, not after ({at_kill} deleted)"
    );

    let _second = run("run2.log");
    wait_for(Duration::from_secs(60), || {
        guids
            .iter()
            .all(|g| store.device_actions(g).unwrap()[0].state == "done")
    })
    .await;
    for g in &guids {
        let deletes = fake.with(|s| s.deletes_of(g));
        assert_eq!(deletes.len(), 1, "{g}: {deletes:?}");
        assert_eq!(deletes[0].status, 204);
        assert!(deletes[0].if_match.is_some());
    }
}
