//! Who may do what: bearer tokens and sign-in sessions, roles, CSRF,
//! throttling of failed sign-ins, and their audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use station::store::{NewUser, Role};

async fn add_people(st: &TestStation) {
    let now = time::OffsetDateTime::now_utc();
    let s = st.store();
    s.add_user(
        &NewUser {
            name: "ana",
            role: Role::Operator,
            badge: Some("B-1"),
            pin: Some("1111"),
            password: None,
        },
        "t",
        now,
    )
    .unwrap();
    s.add_user(
        &NewUser {
            name: "sam",
            role: Role::Supervisor,
            badge: Some("B-2"),
            pin: Some("2222"),
            password: None,
        },
        "t",
        now,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_session_or_token_are_refused() {
    let st = TestStation::start(vec![]).await;
    let c = bare_client();
    for path in [
        "/api/v1/boards",
        "/api/v1/slots",
        "/api/v1/outbox",
        "/api/v1/ca",
        "/api/v1/boards/0a1b2c3d-0000-4000-8000-0000000000aa",
        "/api/v1/devices/0a1b2c3d-0000-4000-8000-0000000000aa",
        "/api/v1/devices?q=hall",
    ] {
        let r = c.get(format!("{}{path}", st.base)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    let r = c
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "state-changing call without credentials");
    let r = c
        .post(format!(
            "{}/api/v1/devices/0a1b2c3d-0000-4000-8000-0000000000aa/revoke",
            st.base
        ))
        .json(&serde_json::json!({"reason": "x", "confirm": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a device action without credentials");
    let r = c
        .put(format!(
            "{}/api/v1/devices/0a1b2c3d-0000-4000-8000-0000000000aa/location",
            st.base
        ))
        .json(&serde_json::json!({"site": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a location without credentials");
    let r = c
        .post(format!(
            "{}/api/v1/devices/0a1b2c3d-0000-4000-8000-0000000000aa/notes",
            st.base
        ))
        .json(&serde_json::json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a note without credentials");
    let r = c
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .bearer_auth("st_forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "an unknown token");
    assert_eq!(
        c.get(format!("{}/api/v1/health", st.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.get(&st.base).send().await.unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()["location"].to_str().unwrap()
        ),
        (303, "/login")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_enforced_for_tokens() {
    let st = TestStation::start(vec![]).await;
    let now = time::OffsetDateTime::now_utc();
    let op = st
        .store()
        .create_token("line-script", Role::Operator, "t", now)
        .unwrap();
    let c = client_with_token(&op);
    assert_eq!(
        c.get(format!("{}/api/v1/boards", st.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "an operator may not retry uploads");
    assert!(r.text().await.unwrap().contains("supervisor"));
    let sup = st
        .store()
        .create_token("mes", Role::Supervisor, "t", now)
        .unwrap();
    let r = client_with_token(&sup)
        .post(format!("{}/api/v1/outbox/retry", st.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "tokens need no CSRF token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_sign_in_need_csrf_and_sign_out() {
    let st = TestStation::start(vec![]).await;
    add_people(&st).await;
    let c = bare_client();

    // A sign-in without the form's CSRF cookie is refused.
    let r = c
        .post(format!("{}/login", st.base))
        .form(&[("csrf", "x"), ("badge", "B-2"), ("pin", "2222")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let r = sign_in_badge(&st, "B-2", "2222").await;
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let cookie_header = format!(
        "station_session={}",
        set_cookie(&r, "station_session").unwrap()
    );
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly; SameSite=Strict")
    );
    let page = c
        .get(&st.base)
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("sam (supervisor)"), "{page}");
    let csrf = hidden_csrf(&page);

    let retry = format!("{}/api/v1/outbox/retry", st.base);
    let r = c
        .post(&retry)
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a session's state change without its CSRF token"
    );
    assert!(r.text().await.unwrap().contains("CSRF"));
    let r = c
        .post(&retry)
        .header("cookie", &cookie_header)
        .header("x-csrf-token", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(&retry)
        .header("cookie", &cookie_header)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // An operator's session cannot do a supervisor's action.
    let r = sign_in_badge(&st, "B-1", "1111").await;
    let ana = format!(
        "station_session={}",
        set_cookie(&r, "station_session").unwrap()
    );
    let page = c
        .get(&st.base)
        .header("cookie", &ana)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = c
        .post(&retry)
        .header("cookie", &ana)
        .header("x-csrf-token", hidden_csrf(&page))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Sign-out needs the CSRF token too, and ends the session.
    let r = c
        .post(format!("{}/logout", st.base))
        .header("cookie", &cookie_header)
        .form(&[("csrf", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(format!("{}/logout", st.base))
        .header("cookie", &cookie_header)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = c
        .get(format!("{}/api/v1/boards", st.base))
        .header("cookie", &cookie_header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the session is over");

    let actions: Vec<String> = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect();
    for a in ["login", "outbox_retry", "logout"] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
    let retry_row = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .find(|r| r.action == "outbox_retry")
        .unwrap();
    assert_eq!(retry_row.actor, "sam", "the signed-in person is on record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_and_audited() {
    let st = TestStation::start(vec![]).await;
    add_people(&st).await;
    for _ in 0..5 {
        let r = sign_in_badge(&st, "B-1", "0000").await;
        assert_eq!(r.status(), 401);
        assert!(r.text().await.unwrap().contains("not recognised"));
    }
    // Even the right PIN waits now.
    let r = sign_in_badge(&st, "B-1", "1111").await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.unwrap().contains("Too many failed sign-ins"));
    let failed = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "failed_login")
        .count();
    assert_eq!(failed, 5);
    assert!(matches!(
        st.store().verify_audit().unwrap(),
        station::store::AuditCheck::Intact { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisors_override_and_admins_see_people_and_configuration() {
    let fake = common::fake_dps::FakeDps::start().await;
    let st = TestStation::start_with(vec![], 300, &dps_section(&fake, 1000), |_| ()).await;
    let now = time::OffsetDateTime::now_utc();
    let op = client_with_token(
        &st.store()
            .create_token("op", Role::Operator, "t", now)
            .unwrap(),
    );
    let sup = client_with_token(
        &st.store()
            .create_token("sup", Role::Supervisor, "t", now)
            .unwrap(),
    );
    let url = |p: &str| format!("{}{p}", st.base);

    for path in ["/api/v1/ca", "/api/v1/users", "/api/v1/config"] {
        assert_eq!(
            op.get(url(path)).send().await.unwrap().status(),
            403,
            "{path} is for admins"
        );
        assert_eq!(
            sup.get(url(path)).send().await.unwrap().status(),
            403,
            "{path} is for admins"
        );
        assert_eq!(
            st.client.get(url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    let config = st
        .client
        .get(url("/api/v1/config"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = fake
        .connection_string()
        .rsplit_once("SharedAccessKey=")
        .unwrap()
        .1
        .to_string();
    assert!(
        config.contains("\"configured\":true") && !config.contains(&key),
        "no secret in the view: {config}"
    );

    let guid = "0a1b2c3d-0000-4000-8000-0000000000ab";
    let path = url(&format!("/api/v1/boards/{guid}/override"));
    let body = serde_json::json!({"reason": "rework after RF fix"});
    assert_eq!(
        op.post(&path).json(&body).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        sup.post(&path)
            .json(&serde_json::json!({"reason": " "}))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        sup.post(url("/api/v1/boards/nope/override"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        sup.post(&path).json(&body).send().await.unwrap().status(),
        200
    );
    let row = st
        .store()
        .audit_rows()
        .unwrap()
        .into_iter()
        .find(|r| r.action == "override_granted")
        .unwrap();
    assert_eq!(
        (row.actor.as_str(), row.subject.as_deref()),
        ("sup", Some(guid))
    );
}
