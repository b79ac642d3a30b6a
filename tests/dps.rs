//! Enrollment in DPS through the outbox, against the strict fake DPS:
//! offline and back, credentials refused, throttling, failures, conflicts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::fake_dps::{FakeDps, Misbehave};
use common::*;
use serde_json::Value;
use station::sim::{LineCycle, SimOptions};

fn assert_enrolled_as_sent(fake: &FakeDps, st: &TestStation, guid: &str) {
    fake.with(|s| {
        let e = s
            .enrollments
            .get(guid)
            .unwrap_or_else(|| panic!("{guid} not in DPS"));
        assert_eq!(e.writes, 1, "{guid} written {} times", e.writes);
        assert_eq!(e.body["registrationId"], guid);
        assert_eq!(e.body["deviceId"], guid);
        assert_eq!(e.body["provisioningStatus"], "disabled");
        let ledger = st.ledger(guid);
        assert_eq!(ledger.len(), 1);
        assert_eq!(
            e.certificate_pem, ledger[0].pem,
            "{guid} enrolled with its own certificate"
        );
        let tags = &e.body["initialTwin"]["tags"];
        assert_eq!(tags["station"], "test-station");
        assert_eq!(tags["line"], "test-line");
        assert!(tags["provisionedAt"].is_string());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_boards_offline_then_all_enrolled_once() {
    let mut fake = FakeDps::start().await;
    fake.stop(); // DPS unreachable: connections refused.
    let line = SimOptions {
        line: Some(LineCycle {
            dwell: Duration::from_millis(5),
            pause: Duration::from_millis(5),
        }),
        boards: Some(25),
        ..quick_board()
    };
    let st = TestStation::start_with(vec![line; 8], 2000, &dps_section(&fake, 6000), |_| ()).await;
    let boards = st.wait_finished(200, Duration::from_secs(120)).await;
    assert_eq!(boards.len(), 200);
    assert!(
        boards.iter().all(|b| b["status"] == "provisioned"),
        "the line runs while DPS is away"
    );
    let v = st
        .wait_outbox(Duration::from_secs(10), |v| v["queue_depth"] == 200)
        .await;
    assert_eq!(v["connectivity"], "offline", "{v:#}");
    assert!(v["oldest_pending_age_s"].is_i64());
    let guid = boards[0]["guid"].as_str().unwrap();
    assert_eq!(
        st.get(&format!("/api/v1/boards/{guid}")).await.1["enrollment"],
        "pending"
    );

    fake.restart().await;
    let v = st
        .wait_outbox(Duration::from_secs(60), |v| v["enrolled"] == 200)
        .await;
    assert_eq!(
        (v["queue_depth"].as_i64(), v["connectivity"].as_str()),
        (Some(0), Some("online"))
    );
    assert_eq!(fake.with(|s| s.enrollments.len()), 200);
    for b in &boards {
        assert_enrolled_as_sent(&fake, &st, b["guid"].as_str().unwrap());
    }
    assert!(fake.with(|s| s.log.iter().all(|l| l.items <= 10)));
    assert!(
        fake.with(|s| s.log.iter().any(|l| l.items == 10)),
        "a backlog goes in bulk"
    );
    assert_eq!(
        st.get(&format!("/api/v1/boards/{guid}")).await.1["enrollment"],
        "enrolled"
    );
    let metrics = st
        .client
        .get(format!("{}/metrics", st.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("station_outbox_jobs{state=\"enrolled\"} 200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("station_dps_connectivity{state=\"online\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_park_jobs_and_stop_sending() {
    let fake = FakeDps::start().await;
    // The station holds a key DPS does not know.
    let wrong = format!(
        "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
        fake.addr,
        common::fake_dps::POLICY,
        base64_of(b"not the key")
    );
    let section = dps_section(&fake, 6000).replace(&fake.connection_string(), &wrong);
    let st = TestStation::start_with(vec![], 2000, &section, |cfg| {
        seed_provisioned(cfg, 3, |_, _| ());
    })
    .await;
    let v = st
        .wait_outbox(Duration::from_secs(10), |v| {
            v["parked"].as_array().is_some_and(|p| p.len() == 3)
        })
        .await;
    let reason = v["paused"].as_str().unwrap();
    assert!(
        reason.contains("401") && reason.contains("check the connection string"),
        "{reason}"
    );
    assert!(
        v["parked"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("Unauthorized"),
        "DPS's own words: {v:#}"
    );
    let calls = fake.with(|s| s.requests());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.with(|s| s.requests()),
        calls,
        "no hot loop: nothing sent while parked"
    );

    // The supervisor fixes the key in DPS's place (here: the fake learns the
    // station's key) and retries.
    fake.with(|s| s.key = b"not the key".to_vec());
    let r = st
        .client
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v = st
        .wait_outbox(Duration::from_secs(15), |v| v["enrolled"] == 3)
        .await;
    assert!(v["paused"].is_null());
    assert_eq!(fake.with(|s| s.enrollments.len()), 3);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let fake = FakeDps::start().await;
    fake.with(|s| s.script.push_back(Misbehave::Status(429, Some(2))));
    let st = TestStation::start_with(vec![], 2000, &dps_section(&fake, 6000), |cfg| {
        seed_provisioned(cfg, 1, |_, _| ());
    })
    .await;
    st.wait_outbox(Duration::from_secs(15), |v| v["enrolled"] == 1)
        .await;
    let log = fake.with(|s| s.log.clone());
    // PUT answered 429; then, after the wait, the job (tried once already)
    // is read back before it is written: GET 404, PUT 200.
    let methods: Vec<&str> = log.iter().map(|l| l.method.as_str()).collect();
    assert_eq!(methods, ["PUT", "GET", "PUT"], "{log:?}");
    assert_eq!(log[0].status, 429);
    let gap = log[1].at - log[0].at;
    assert!(
        gap >= Duration::from_millis(1950),
        "sent again after {gap:?}, not the 2 s DPS asked for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_timeouts_and_slowness_are_retried_until_enrolled() {
    let fake = FakeDps::start().await;
    fake.with(|s| {
        s.script.extend([
            Misbehave::Status(503, None),
            Misbehave::Status(500, None),
            Misbehave::Hang,
            Misbehave::Slow(Duration::from_millis(300)),
        ])
    });
    let st = TestStation::start_with(vec![], 2000, &dps_section(&fake, 6000), |cfg| {
        seed_provisioned(cfg, 1, |_, _| ());
    })
    .await;
    let v = st
        .wait_outbox(Duration::from_secs(20), |v| v["enrolled"] == 1)
        .await;
    assert_eq!(v["connectivity"], "online");
    assert_eq!(v["calls"]["server"], 2, "{v:#}");
    assert_eq!(
        v["calls"]["network"], 1,
        "the hang ends in a timeout: {v:#}"
    );
    assert_eq!(fake.with(|s| s.enrollments.len()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_enrollment_is_parked_alone() {
    let fake = FakeDps::start().await;
    let st = TestStation::start_with(vec![], 2000, &dps_section(&fake, 6000), |cfg| {
        // The second body names another device than its certificate.
        seed_provisioned(cfg, 3, |i, body| {
            if i == 1 {
                body["registrationId"] = "0a1b2c3d-0000-4000-8000-00000000dead".into();
            }
        });
    })
    .await;
    let v = st
        .wait_outbox(Duration::from_secs(15), |v| v["enrolled"] == 2)
        .await;
    let parked = v["parked"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{v:#}");
    assert!(
        parked[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("is not the registrationId"),
        "{v:#}"
    );
    assert!(
        v["paused"].is_null(),
        "one bad job does not stop the others"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_enrollments_are_reconciled_not_doubled() {
    let fake = FakeDps::start().await;
    let mut guids = Vec::new();
    let st = TestStation::start_with(vec![], 2000, &dps_section(&fake, 6000), |cfg| {
        guids = seed_provisioned(cfg, 4, |_, _| ());
        let store = station::store::Store::open(&cfg.database_path()).unwrap();
        // DPS already holds the first one exactly (an upload whose answer
        // was lost), the second with an older certificate, and the fourth
        // with a newer one (provisioned again elsewhere since).
        let mine = store.certificates(&guids[0].parse().unwrap()).unwrap()[0].pem.clone();
        let older = seed_other_certificate(&guids[1], -3650);
        let newer = seed_other_certificate(&guids[3], 1);
        fake.with(|s| {
            for (g, pem) in [(&guids[0], mine), (&guids[1], older), (&guids[3], newer)] {
                let body = serde_json::json!({"registrationId": g, "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": pem}}}}, "provisioningStatus": "enabled"});
                s.enrollments.insert(g.clone(), common::fake_dps::Stored { body, certificate_pem: pem.clone(), etag: "e1".into(), writes: 1 });
            }
        });
    })
    .await;
    let v = st
        .wait_outbox(Duration::from_secs(15), |v| {
            v["enrolled"] == 3 && v["parked_count"] == 1
        })
        .await;
    assert_eq!(v["parked"][0]["guid"], guids[3].as_str());
    assert!(
        v["parked"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("newer"),
        "{v:#}"
    );
    fake.with(|s| {
        let first = &s.enrollments[&guids[0]];
        assert_eq!(first.writes, 1, "the same enrollment is not written again");
        assert_eq!(
            first.body["provisioningStatus"], "enabled",
            "an activation is not undone"
        );
        let second = &s.enrollments[&guids[1]];
        assert_eq!(second.writes, 2, "an older certificate is replaced");
        assert_eq!(second.certificate_pem, st.ledger(&guids[1])[0].pem);
        assert_eq!(s.enrollments[&guids[2]].writes, 1);
        assert_eq!(
            s.enrollments[&guids[3]].writes, 1,
            "a newer enrollment is not overwritten"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_item_refused_for_now_is_retried_and_the_rest_recorded() {
    let fake = FakeDps::start().await;
    fake.with(|s| s.item_errors.push_back(503_001));
    let st = TestStation::start_with(vec![], 2000, &dps_section(&fake, 6000), |cfg| {
        seed_provisioned(cfg, 3, |_, _| ());
    })
    .await;
    st.wait_outbox(Duration::from_secs(15), |v| v["enrolled"] == 3)
        .await;
    let calls: Vec<(String, usize)> =
        fake.with(|s| s.log.iter().map(|l| (l.method.clone(), l.items)).collect());
    // One bulk call took two; the third, tried once, is read back and written.
    assert_eq!(
        calls,
        [
            ("POST".to_string(), 3),
            ("GET".to_string(), 0),
            ("PUT".to_string(), 1)
        ]
    );
    fake.with(|s| assert!(s.enrollments.values().all(|e| e.writes == 1)));
}

/// A certificate for `guid` from some other CA, valid from `days` from now.
fn seed_other_certificate(guid: &str, days: i64) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.not_before = time::OffsetDateTime::now_utc() + time::Duration::days(days);
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, guid);
    p.self_signed(&key).unwrap().pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connection_string_the_station_queues_and_says_so() {
    let st = TestStation::start(vec![quick_board()]).await;
    let boards = st.wait_finished(1, Duration::from_secs(20)).await;
    assert_eq!(boards[0]["status"], "provisioned");
    let v = st
        .wait_outbox(Duration::from_secs(5), |v| v["queue_depth"] == 1)
        .await;
    assert_eq!(v["connectivity"], "not_configured");
    assert_eq!(v["configured"], false);
}

/// The fake refuses what the real service refuses, so that the tests above
/// could fail: bad or expired signatures, a missing api-version, a body
/// that does not match its path or certificate, more than 10 or duplicate
/// ids in a bulk call. And the station's own client passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_dps_is_strict() {
    use station::dps::{ConnectionString, DpsClient, HttpDps};
    let fake = FakeDps::start().await;
    let conn = ConnectionString::parse(&fake.connection_string()).unwrap();
    let client = HttpDps::new(&fake.endpoint(), conn.clone(), Duration::from_secs(5)).unwrap();
    let (dir, cfg) = prepare(&[], 300);
    let _keep = dir;
    let guids = seed_provisioned(&cfg, 1, |_, _| ());
    let store = station::store::Store::open(&cfg.database_path()).unwrap();
    let body: Value = serde_json::from_str(&store.due_jobs(1).unwrap()[0].body).unwrap();

    // The station's client: PUT, GET.
    let etag = client.put(&body).await.unwrap();
    assert!(etag.is_some());
    let got = client.get(&guids[0]).await.unwrap().unwrap();
    assert_eq!(got["registrationId"], guids[0].as_str());
    assert!(
        client
            .get("0a1b2c3d-0000-4000-8000-00000000ffff")
            .await
            .unwrap()
            .is_none()
    );

    let http = http_client();
    let url = |q: &str| format!("{}/enrollments/{}{q}", fake.endpoint(), guids[0]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let put = |q: String, auth: String, b: Value| {
        http.put(q).header("Authorization", auth).json(&b).send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();

    assert_eq!(
        status(
            put(
                url("?api-version=2021-10-01"),
                conn.sas_token(now + 60),
                body.clone()
            )
            .await
            .unwrap()
        ),
        200
    );
    assert_eq!(
        status(
            put(url(""), conn.sas_token(now + 60), body.clone())
                .await
                .unwrap()
        ),
        400,
        "no api-version"
    );
    assert_eq!(
        status(
            put(
                url("?api-version=2019-03-31"),
                conn.sas_token(now + 60),
                body.clone()
            )
            .await
            .unwrap()
        ),
        400
    );
    assert_eq!(
        status(
            put(
                url("?api-version=2021-10-01"),
                conn.sas_token(now - 1),
                body.clone()
            )
            .await
            .unwrap()
        ),
        401,
        "expired"
    );
    let forged = station::dps::sas_token(&conn.host, b"some other key", &conn.key_name, now + 60);
    assert_eq!(
        status(
            put(url("?api-version=2021-10-01"), forged, body.clone())
                .await
                .unwrap()
        ),
        401,
        "wrong key"
    );
    let wrong_policy = station::dps::sas_token(&conn.host, b"x", "registration", now + 60);
    assert_eq!(
        status(
            put(url("?api-version=2021-10-01"), wrong_policy, body.clone())
                .await
                .unwrap()
        ),
        401
    );
    let other_path = format!(
        "{}/enrollments/0a1b2c3d-0000-4000-8000-00000000ffff?api-version=2021-10-01",
        fake.endpoint()
    );
    assert_eq!(
        status(
            put(other_path, conn.sas_token(now + 60), body.clone())
                .await
                .unwrap()
        ),
        400,
        "id differs from path"
    );
    let mut not_cn = body.clone();
    not_cn["registrationId"] = "0a1b2c3d-0000-4000-8000-00000000ffff".into();
    let p = format!(
        "{}/enrollments/0a1b2c3d-0000-4000-8000-00000000ffff?api-version=2021-10-01",
        fake.endpoint()
    );
    let r = put(p, conn.sas_token(now + 60), not_cn).await.unwrap();
    assert_eq!(r.status().as_u16(), 400, "certificate CN is not the id");
    assert!(r.text().await.unwrap().contains("CN"));
    let r = http
        .put(url("?api-version=2021-10-01"))
        .header("Authorization", conn.sas_token(now + 60))
        .header("If-Match", "stale")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 412, "a stale etag");

    let bulk = |items: Vec<Value>| {
        http.post(format!(
            "{}/enrollments?api-version=2021-10-01",
            fake.endpoint()
        ))
        .header("Authorization", conn.sas_token(now + 60))
        .json(&serde_json::json!({"mode": "create", "enrollments": items}))
        .send()
    };
    assert_eq!(
        status(bulk(vec![body.clone(); 11]).await.unwrap()),
        400,
        "over 10"
    );
    assert_eq!(
        status(bulk(vec![body.clone(), body.clone()]).await.unwrap()),
        400,
        "duplicate ids"
    );
    let r: Value = bulk(vec![body.clone()])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["isSuccessful"], false,
        "create of an existing id is a per-item error"
    );
    assert_eq!(r["errors"][0]["errorCode"], 409201);
}
