//! Signing in (badge and PIN, or user name and password) and out.

use std::net::SocketAddr;

use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::{Caller, LOGIN_CSRF_COOKIE, SESSION_COOKIE, SameSite, cookie, same, set_cookie};
use super::{ApiError, AppState, query};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    station: String,
    csrf: String,
    error: Option<String>,
    /// Plain HTTP beyond loopback: say that secrets cross in clear.
    plain_http: bool,
    /// Organisational sign-in is set up (`[ui.oidc]`).
    oidc: bool,
    /// Why the person was sent here: their session ended.
    notice: Option<String>,
}

/// `/login?why=…`: why the person is asked to sign in again.
#[derive(Deserialize, Default)]
pub struct Why {
    why: Option<String>,
}

fn page(s: &AppState, status: StatusCode, error: Option<String>) -> Response {
    page_with(s, status, error, None)
}

fn page_with(
    s: &AppState,
    status: StatusCode,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    use base64::Engine;
    let csrf =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<32>());
    let body = LoginPage {
        station: s.station_id.to_string(),
        csrf: csrf.clone(),
        error,
        plain_http: s.plain_http_exposed,
        oidc: s.oidc.is_some(),
        notice,
    }
    .render();
    match body {
        Ok(html) => {
            let mut r = (status, axum::response::Html(html)).into_response();
            if let Some(v) = set_cookie(
                s,
                LOGIN_CSRF_COOKIE,
                &csrf,
                "/login",
                SameSite::Strict,
                None,
            ) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            ApiError::Internal(format!("the sign-in page could not be drawn: {e}")).into_response()
        }
    }
}

pub async fn show(
    State(s): State<AppState>,
    axum::extract::Query(w): axum::extract::Query<Why>,
) -> Response {
    let minutes = s.session_idle.whole_minutes();
    let notice = match w.why.as_deref() {
        Some("idle") => Some(format!(
            "You were signed out because the station was not used for {minutes} minutes. Sign in again to go on."
        )),
        Some("ended") => Some(format!(
            "Your session ended: you were signed out, or the station was not used for {minutes} minutes. Sign in again to go on."
        )),
        _ => None,
    };
    page_with(&s, StatusCode::OK, None, notice)
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf: String,
    badge: Option<String>,
    pin: Option<String>,
    name: Option<String>,
    password: Option<String>,
}

pub async fn submit(
    State(s): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if !cookie(&headers, LOGIN_CSRF_COOKIE).is_some_and(|c| same(c, &f.csrf)) {
        return page(
            &s,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired. Please try again.".into()),
        );
    }
    let nonempty = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
    };
    let (who, secret, by_badge) = match (
        nonempty(&f.badge),
        nonempty(&f.pin),
        nonempty(&f.name),
        f.password.clone(),
    ) {
        (Some(b), Some(p), _, _) => (b, p, true),
        (_, _, Some(n), Some(p)) if !p.is_empty() => (n, p, false),
        _ => {
            return page(
                &s,
                StatusCode::BAD_REQUEST,
                Some(
                    "Scan your badge and type your PIN, or give your user name and password."
                        .into(),
                ),
            );
        }
    };
    let keys = vec![
        format!("who:{}", who.to_lowercase()),
        format!("ip:{}", addr.ip()),
    ];
    if let Err(wait) = s.throttle.check(&keys) {
        return page(
            &s,
            StatusCode::TOO_MANY_REQUESTS,
            Some(format!(
                "Too many failed sign-ins. Wait {} seconds, then try again.",
                wait.as_secs().max(1)
            )),
        );
    }
    let (w, sec) = (who.clone(), secret);
    let user = query(&s.store, move |st| {
        if by_badge {
            st.sign_in_badge(&w, &sec)
        } else {
            st.sign_in_password(&w, &sec)
        }
    })
    .await;
    let now = time::OffsetDateTime::now_utc();
    match user {
        Ok(Some(user)) => {
            s.throttle.succeeded(&keys);
            match query(&s.store, move |st| st.open_session(&user, now)).await {
                Ok((value, _)) => {
                    let mut r = Redirect::to("/").into_response();
                    if let Some(v) =
                        set_cookie(&s, SESSION_COOKIE, &value, "/", SameSite::Strict, None)
                    {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                    r
                }
                Err(e) => e.into_response(),
            }
        }
        Ok(None) => {
            s.throttle.failed(&keys);
            let reason = if by_badge {
                "badge or PIN not recognised"
            } else {
                "user name or password not recognised"
            };
            let _ = query(&s.store, move |st| {
                st.failed_login(&who, by_badge, reason, now)
            })
            .await;
            let msg = if by_badge {
                "That badge and PIN were not recognised. Try again, or ask a supervisor."
            } else {
                "That user name and password were not recognised."
            };
            page(&s, StatusCode::UNAUTHORIZED, Some(msg.into()))
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(f.csrf.as_deref())?;
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        let c = c.to_string();
        let now = time::OffsetDateTime::now_utc();
        query(&s.store, move |st| st.close_session(&c, now)).await?;
    }
    // Whoever signs out is no longer at any slot.
    for v in s.slots.all() {
        if v.operator.as_deref() == Some(caller.name.as_str()) {
            s.slots
                .update(crate::ids::SlotId(v.slot), |x| x.operator = None);
        }
    }
    let mut r = Redirect::to("/login").into_response();
    if let Some(v) = set_cookie(&s, SESSION_COOKIE, "", "/", SameSite::Strict, Some(0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_page_snapshot() {
        let html = LoginPage {
            station: "station-01".into(),
            csrf: "CSRF".into(),
            error: Some(
                "That badge and PIN were not recognised. Try again, or ask a supervisor.".into(),
            ),
            plain_http: false,
            oidc: false,
            notice: None,
        }
        .render()
        .unwrap();
        insta::assert_snapshot!("sign_in", html);
    }

    #[test]
    fn plain_http_beyond_loopback_is_said_on_the_page() {
        let page = |plain_http| {
            LoginPage {
                station: "station-01".into(),
                csrf: "CSRF".into(),
                error: None,
                plain_http,
                oidc: false,
                notice: None,
            }
            .render()
            .unwrap()
        };
        assert!(page(true).contains("without HTTPS"));
        assert!(!page(false).contains("without HTTPS"));
    }
}
