//! Organisational sign-in against a real OpenID Connect provider (node's
//! oidc-provider, `tests/oidc/provider.mjs`): a supervisor signs in and
//! out, both audited under their identity; a person in no mapped group is
//! refused; a tampered ID token, one for another audience, an expired
//! one, one with another nonce, a replayed callback and a callback in
//! another browser are each refused with a page that says so, and no
//! session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::oidc::{Browser, Provider, free_port};
use common::{bare_client, hidden_csrf, set_cookie};
use station::config::Config;

const SECRET: &str = "station-client-secret-for-tests";
const SECRET_VAR: &str = "TEST_STATION_OIDC_SECRET";

struct Setup {
    provider: Provider,
    dir: tempfile::TempDir,
    app: station::app::App,
    base: String,
    redirect: String,
}

async fn setup(attack: Option<&str>) -> Setup {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let redirect = format!("{base}/login/oidc/callback");
    let provider = Provider::start(SECRET, &redirect, attack);
    let text = common::config_text(&[], 300).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &format!(
            r#"
[ui.oidc]
issuer = "{issuer}"
client_id = "station"
client_secret_env = "{SECRET_VAR}"
redirect_url = "{redirect}"
scopes = ["openid", "profile", "email", "groups"]
roles_claim = "groups"
[ui.oidc.roles]
supervisor = ["line-supervisors"]
admin = ["station-admins"]
"#,
            issuer = provider.issuer
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("station.toml");
    std::fs::write(&path, &text).unwrap();
    let env = station::config::Environment {
        vars: [(SECRET_VAR.to_string(), SECRET.to_string())].into(),
        ..Default::default()
    };
    let cfg = Config::parse_in(&text, &path, &env).unwrap();
    common::init_ca(&cfg);
    let app = station::app::start(&cfg, false).await.unwrap();
    assert_eq!(app.addr.port(), port);
    Setup {
        provider,
        dir,
        app,
        base,
        redirect,
    }
}

/// What the station answered at the callback.
struct Back {
    status: u16,
    html: String,
    session: Option<String>,
    /// The callback URL the provider sent the browser to.
    url: String,
    /// The sign-in's browser cookie.
    binding: String,
}

impl Setup {
    /// Starts a sign-in at the station, lets `login` sign in at the
    /// provider (the provider URL changed by `tweak` first), and comes
    /// back to the station with the browser's cookie.
    async fn sign_in(&self, login: &str, tweak: impl Fn(String) -> String) -> Back {
        let station = bare_client();
        let start = station
            .get(format!("{}/login/oidc", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status().as_u16(), 303);
        let binding = set_cookie(&start, "station_oidc").unwrap();
        let cookie = start
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("station_oidc="))
            .unwrap();
        assert!(
            cookie.contains("SameSite=Lax") && cookie.contains("HttpOnly"),
            "{cookie}"
        );
        let to = start.headers()["location"].to_str().unwrap().to_string();
        assert!(to.starts_with(&self.provider.issuer), "{to}");
        assert!(
            to.contains("code_challenge_method=S256") && to.contains("nonce="),
            "{to}"
        );
        let url = Browser::default()
            .sign_in_at_provider(&tweak(to), login, &self.redirect)
            .await;
        self.back(&url, Some(&binding)).await
    }

    /// Calls the callback `url` with the sign-in's browser cookie.
    async fn back(&self, url: &str, binding: Option<&str>) -> Back {
        let mut req = bare_client().get(url);
        if let Some(b) = binding {
            req = req.header("cookie", format!("station_oidc={b}"));
        }
        let r = req.send().await.unwrap();
        Back {
            status: r.status().as_u16(),
            session: set_cookie(&r, "station_session"),
            html: r.text().await.unwrap(),
            url: url.to_string(),
            binding: binding.unwrap_or_default().to_string(),
        }
    }

    fn audit(&self) -> Vec<station::store::AuditRow> {
        self.app.store.audit_rows().unwrap()
    }

    /// The refusal: its status, the page's words, no session, and an
    /// audit row with `reason`.
    fn refused(&self, b: &Back, status: u16, words: &str, reason: &str) {
        assert_eq!(b.status, status, "{}", b.html);
        assert!(b.html.contains(words), "{words:?} not in {}", b.html);
        assert!(b.html.contains("href=\"/login\""), "{}", b.html);
        assert!(b.session.is_none(), "a refusal sets no session");
        let last = self.audit().pop().unwrap();
        assert_eq!(last.action, "failed_login", "{last:?}");
        assert!(
            last.detail["reason"].as_str().unwrap().contains(reason),
            "{last:?}"
        );
        assert_eq!(last.detail["source"], "oidc");
    }
}

#[tokio::test]
async fn a_supervisor_signs_in_and_out_and_a_replayed_callback_is_refused() {
    let s = setup(None).await;
    let login = s.sign_in("sam", |u| u).await;
    assert_eq!(login.status, 200, "{}", login.html);
    assert!(
        login
            .html
            .contains("Signed in as sam@plant.example (supervisor)")
    );
    // The page moves on to / by itself (same-site, so the Strict session
    // cookie goes with it); no script, no inline style.
    assert!(
        login
            .html
            .contains(r#"<meta http-equiv="refresh" content="0; url=/">"#)
    );
    assert!(!login.html.contains("<script") && !login.html.contains("style="));
    let session = login.session.clone().unwrap();
    let with_session = |path: &str| {
        bare_client()
            .get(format!("{}{path}", s.base))
            .header("cookie", format!("station_session={session}"))
    };
    let sup = with_session("/supervisor").send().await.unwrap();
    assert_eq!(sup.status().as_u16(), 200);
    let csrf = hidden_csrf(&sup.text().await.unwrap());
    let admin_only = with_session("/api/v1/config").send().await.unwrap();
    assert_eq!(
        admin_only.status().as_u16(),
        403,
        "a supervisor is not an admin"
    );

    let rows = s.audit();
    let signed_in = rows.iter().rev().find(|r| r.action == "login").unwrap();
    assert_eq!(signed_in.actor, "sam@plant.example");
    assert_eq!(signed_in.detail["issuer"], s.provider.issuer.as_str());
    assert_eq!(signed_in.detail["subject"], "sam");
    assert_eq!(signed_in.detail["role"], "supervisor");
    // Nothing secret is kept in the trail.
    let trail = serde_json::to_string(&rows).unwrap();
    assert!(!trail.contains(&session) && !trail.contains(SECRET));

    // The same callback again: its state is used up.
    let again = s.back(&login.url, Some(&login.binding)).await;
    s.refused(
        &again,
        400,
        "already used. Start the sign-in again",
        "already used",
    );

    let out = bare_client()
        .post(format!("{}/logout", s.base))
        .header("cookie", format!("station_session={session}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    let last = s.audit().pop().unwrap();
    assert_eq!(
        (last.action.as_str(), last.actor.as_str()),
        ("logout", "sam@plant.example")
    );
    assert_eq!(last.detail["subject"], "sam");
    assert_eq!(
        with_session("/supervisor")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        303
    );
}

#[tokio::test]
async fn a_person_in_no_mapped_group_is_refused_by_name() {
    let s = setup(None).await;
    let b = s.sign_in("nora", |u| u).await;
    s.refused(
        &b,
        403,
        "Ask your administrator to add you to one of: station-admins, line-supervisors.",
        "in no mapped group",
    );
    let last = s.audit().pop().unwrap();
    assert_eq!(last.actor, "nora@plant.example");
    assert_eq!(last.detail["subject"], "nora");
}

/// The provider rewrites its ID tokens (`attack`, see provider.mjs): the
/// station refuses each with `words`.
async fn refused_token(attack: &str, words: &str) {
    let s = setup(Some(attack)).await;
    let b = s.sign_in("sam", |u| u).await;
    s.refused(&b, 401, words, "ID token refused");
}

#[tokio::test]
async fn a_tampered_id_token_is_refused() {
    refused_token("tampered", "its signature does not verify").await;
}

#[tokio::test]
async fn an_id_token_for_another_application_is_refused() {
    refused_token("audience", "it was issued to another application").await;
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    refused_token("expired", "it has expired").await;
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let s = setup(None).await;
    let b = s
        .sign_in("sam", |u| {
            let at = u.find("nonce=").unwrap() + "nonce=".len();
            let end = u[at..].find('&').map_or(u.len(), |e| at + e);
            format!("{}someone-elses-nonce{}", &u[..at], &u[end..])
        })
        .await;
    s.refused(
        &b,
        401,
        "it belongs to another sign-in (nonce)",
        "ID token refused",
    );
}

#[tokio::test]
async fn a_callback_in_another_browser_is_refused() {
    let s = setup(None).await;
    let b = s.sign_in("sam", |u| u).await;
    assert_eq!(b.status, 200);
    // A second sign-in, brought back without the browser's cookie.
    let station = bare_client();
    let start = station
        .get(format!("{}/login/oidc", s.base))
        .send()
        .await
        .unwrap();
    let to = start.headers()["location"].to_str().unwrap().to_string();
    let url = Browser::default()
        .sign_in_at_provider(&to, "sam", &s.redirect)
        .await;
    let other = s.back(&url, Some("another-browsers-cookie")).await;
    s.refused(&other, 400, "started in another browser", "another browser");
}

#[tokio::test]
async fn the_sign_in_page_offers_the_organisation() {
    let s = setup(None).await;
    let page = bare_client()
        .get(format!("{}/login", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<a href="/login/oidc">Sign in with your organisation</a>"#));
}

#[tokio::test]
async fn the_config_view_hides_the_secret_and_station_check_reaches_the_provider() {
    let s = setup(None).await;
    let token = s
        .app
        .store
        .create_token(
            "admin",
            station::store::Role::Admin,
            "tests",
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let view = common::client_with_token(&token)
        .get(format!("{}/api/v1/config", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!view.contains(SECRET), "{view}");
    let v: serde_json::Value = serde_json::from_str(&view).unwrap();
    let o = &v["ui"]["oidc"];
    assert_eq!(o["issuer"], s.provider.issuer.as_str());
    assert_eq!(o["client_secret_present"], true);
    assert_eq!(o["client_secret_env"], SECRET_VAR);
    assert_eq!(o["roles"]["supervisor"][0], "line-supervisors");

    let config = s.dir.path().join("station.toml");
    let check = |secret: Option<&str>| {
        let mut c = std::process::Command::new(common::station_bin());
        c.args(["check", "--config", config.to_str().unwrap()]);
        c.env_remove(SECRET_VAR);
        if let Some(v) = secret {
            c.env(SECRET_VAR, v);
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let out = check(Some(SECRET));
    assert!(
        out.contains(&format!(
            "ok       organisational sign-in: {} answers",
            s.provider.issuer
        )),
        "{out}"
    );
    let out = check(None);
    assert!(
        out.contains("ui.oidc.client_secret_env") && out.contains(SECRET_VAR),
        "{out}"
    );
    drop(s.provider);
    let out = check(Some(SECRET));
    assert!(out.contains("WARNING  organisational sign-in:"), "{out}");
}
