//! Organisational sign-in routes (`[ui.oidc]`): `GET /login/oidc` sends
//! the browser to the provider, `GET /login/oidc/callback` is where it
//! comes back. The flow itself is `crate::oidc`; this parses the request,
//! sets the cookies, asks the store and draws the page.
//!
//! The sign-in under way is bound to the browser by a cookie that is
//! `SameSite=Lax` (the provider's redirect back is a cross-site
//! navigation, which a `Strict` cookie would not ride on). The session
//! cookie stays `Strict`, so the callback answers with a page that moves
//! on to `/` by itself (a same-site navigation, which carries it) rather
//! than a redirect, which would still count as part of the cross-site
//! chain.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::auth::{SESSION_COOKIE, SameSite, cookie, set_cookie};
use super::{ApiError, AppState, query};
use crate::oidc::{Callback, NotPending, PENDING_TTL, Refusal, Refused, SignedIn};
use crate::store::OrgSignIn;

/// The cookie that binds a sign-in under way to its browser.
pub const OIDC_COOKIE: &str = "station_oidc";

#[derive(Template)]
#[template(path = "oidc.html")]
struct OidcPage<'a> {
    station: &'a str,
    title: &'a str,
    message: &'a str,
    /// Signed in: the page moves on to `/`.
    signed_in: bool,
}

fn page(s: &AppState, status: StatusCode, title: &str, message: &str, signed_in: bool) -> Response {
    let html = OidcPage {
        station: &s.station_id,
        title,
        message,
        signed_in,
    }
    .render();
    match html {
        Ok(h) => (status, Html(h)).into_response(),
        Err(e) => {
            ApiError::Internal(format!("the sign-in page could not be drawn: {e}")).into_response()
        }
    }
}

fn refused_page(s: &AppState, r: &Refusal) -> Response {
    let status = match r {
        Refusal::NotPending(_) | Refusal::Provider(_) => StatusCode::BAD_REQUEST,
        Refusal::Unreachable(_) => StatusCode::BAD_GATEWAY,
        Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Refusal::BadToken(_) => StatusCode::UNAUTHORIZED,
        Refusal::NoRole(_) | Refusal::Disabled => StatusCode::FORBIDDEN,
    };
    page(s, status, "Not signed in", &r.message(), false)
}

fn not_set_up(s: &AppState) -> Response {
    page(
        s,
        StatusCode::NOT_FOUND,
        "Not signed in",
        "Organisational sign-in is not set up on this station: sign in with your badge or password.",
        false,
    )
}

/// `GET /login/oidc`: off to the provider.
pub async fn start(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let Some(oidc) = s.oidc.clone() else {
        return not_set_up(&s);
    };
    match oidc.begin(cookie(&headers, OIDC_COOKIE)).await {
        Ok((url, browser)) => {
            let mut r = Redirect::to(&url).into_response();
            let age = u32::try_from(PENDING_TTL.as_secs()).unwrap_or(600);
            if let Some(v) = set_cookie(
                &s,
                OIDC_COOKIE,
                &browser,
                "/login/oidc",
                SameSite::Lax,
                Some(age),
            ) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(refusal) => {
            tracing::warn!(reason = %refusal.reason(), "organisational sign-in could not start");
            refused_page(&s, &refusal)
        }
    }
}

/// `GET /login/oidc/callback`: back from the provider.
pub async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(back): Query<Callback>,
) -> Response {
    let Some(oidc) = s.oidc.clone() else {
        return not_set_up(&s);
    };
    let now = time::OffsetDateTime::now_utc();
    let refused = match oidc.finish(&back, cookie(&headers, OIDC_COOKIE)).await {
        Ok(SignedIn { who, role }) => {
            let w = who.clone();
            match query(&s.store, move |st| st.oidc_sign_in(&w, role, now)).await {
                Ok(OrgSignIn::Opened(value, _)) => {
                    tracing::info!(issuer = %who.issuer, subject = %who.subject, who = %who.display, role = role.as_str(), "signed in through the organisation");
                    let words = format!("Signed in as {} ({}).", who.display, role.as_str());
                    let mut r = page(&s, StatusCode::OK, "Signed in", &words, true);
                    if let Some(v) =
                        set_cookie(&s, SESSION_COOKIE, &value, "/", SameSite::Strict, None)
                    {
                        r.headers_mut().append(header::SET_COOKIE, v);
                    }
                    return r;
                }
                // The store audited it.
                Ok(OrgSignIn::Disabled) => return refused_page(&s, &Refusal::Disabled),
                Err(e) => return e.into_response(),
            }
        }
        Err(r) => r,
    };
    let Refused { refusal, who } = refused;
    let reason = refusal.reason();
    tracing::warn!(reason = %reason, who = who.as_ref().map(|w| w.display.as_str()), "organisational sign-in refused");
    // A stray hit with no state at all is nobody's sign-in: not audited.
    let stray = back.state.is_none() && refusal == Refusal::NotPending(NotPending::Unknown);
    if !stray
        && let Err(e) = query(&s.store, move |st| {
            st.oidc_refused(who.as_ref(), &reason, now)
        })
        .await
    {
        return e.into_response();
    }
    refused_page(&s, &refusal)
}
