//! The supervisor's page: DPS uploads that need attention, and retrying
//! them. Operators are refused.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::store::{JobRow, Role};

#[derive(Template)]
#[template(path = "supervisor.html")]
struct Supervisor {
    user: String,
    csrf: String,
    connectivity: &'static str,
    /// Since when the connectivity is what it is.
    since: String,
    /// Why, while DPS cannot be reached or fails.
    last_error: Option<String>,
    /// When the uploader calls DPS next, while it waits.
    next_try: Option<String>,
    /// When the oldest pending enrollment was queued.
    oldest_pending: Option<String>,
    /// What is wrong with the TLS connection to DPS, in `tls_error`.
    tls_problem: Option<String>,
    paused: Option<String>,
    pending: i64,
    enrolled: i64,
    parked: Vec<JobRow>,
    printer: String,
    printer_problem: Option<String>,
    labels_pending: i64,
    labels_printed: i64,
    /// With `[plant]`: the forwarder's line, and the conflicts.
    plant: Option<PlantSection>,
    /// The factory CA: until when it issues, as the strip says it.
    ca: super::strip::StripItem,
}

struct PlantSection {
    ok: bool,
    summary: String,
    conflicts: Vec<crate::plant::views::Conflict>,
    conflicts_error: Option<String>,
}

/// A page saying who may open it, for people whose role is too low.
pub(super) fn refused(caller: &Caller, need: Role) -> Response {
    not_allowed(
        &format!(
            "This page is for the {} role. You are signed in as {} ({}).",
            need.as_str(),
            caller.name,
            caller.role.as_str()
        ),
        "/",
        "Back to the line",
    )
}

/// The "not allowed" page: `message` (escaped here) and a way back.
pub(super) fn not_allowed(message: &str, back: &str, back_text: &str) -> Response {
    let esc = |t: &str| {
        askama::filters::escape(t, askama::filters::Html)
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Not allowed</title><link rel=\"stylesheet\" href=\"/static/station.css\"></head><body><h1>Not allowed</h1><p role=\"alert\">{}</p><p><a href=\"{}\">{}</a></p></body></html>",
        esc(message),
        esc(back),
        esc(back_text)
    );
    (StatusCode::FORBIDDEN, Html(body)).into_response()
}

pub async fn page(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(super::auth::to_login(&headers).into_response());
    };
    if caller.require(Role::Supervisor).is_err() {
        return Ok(refused(&caller, Role::Supervisor));
    }
    let (counts, parked, labels) = query(&s.store, |st| {
        Ok((
            st.outbox_counts()?,
            st.outbox_jobs(Some("parked"), 1000)?,
            st.label_counts()?,
        ))
    })
    .await?;
    let (printer, printer_problem) = s
        .labels
        .printer
        .lock()
        .map(|p| (format!("{} ({})", p.printer, p.state), p.message.clone()))
        .unwrap_or_default();
    let status = s
        .outbox
        .lock()
        .map(|g| {
            let tls = (g.connectivity == "tls_error")
                .then(|| g.last_error.clone())
                .flatten();
            (
                g.connectivity,
                g.paused.clone(),
                tls,
                (g.since.clone(), g.last_error.clone(), g.next_try.clone()),
            )
        })
        .unwrap_or(("unknown", None, None, Default::default()));
    let page = Supervisor {
        user: caller.name.clone(),
        csrf: caller.csrf.clone().unwrap_or_default(),
        connectivity: status.0,
        paused: status.1,
        tls_problem: status.2,
        since: status.3.0,
        last_error: status.3.1.filter(|_| status.0 != "online"),
        next_try: status.3.2,
        oldest_pending: counts.oldest_pending.clone(),
        pending: counts.pending,
        enrolled: counts.enrolled,
        parked,
        printer,
        printer_problem,
        labels_pending: labels.pending,
        labels_printed: labels.printed,
        ca: super::strip::ca(s.ca_not_after, time::OffsetDateTime::now_utc()).unwrap_or_else(
            || {
                super::strip::StripItem::new(
                    true,
                    "The CA certificate gives no end date".into(),
                    "/supervisor#ca",
                )
            },
        ),
        plant: match super::plant::snapshot(&s) {
            None => None,
            Some(p) => {
                let (conflicts, conflicts_error) = match super::plant::conflicts(&s).await {
                    Some(Ok(c)) => (c, None),
                    Some(Err(e)) => (Vec::new(), Some(e)),
                    None => (Vec::new(), None),
                };
                Some(PlantSection {
                    ok: p.connected && !p.lag_warning,
                    summary: p.summary(),
                    conflicts,
                    conflicts_error,
                })
            }
        },
    };
    page.render()
        .map(|h| Html(h).into_response())
        .map_err(|e| ApiError::Internal(format!("the supervisor page could not be drawn: {e}")))
}

#[derive(Deserialize)]
pub struct RetryForm {
    csrf: String,
}

pub async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    Form(f): Form<RetryForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Supervisor)?;
    caller.check_csrf(Some(&f.csrf))?;
    let (by, now) = (caller.name.clone(), time::OffsetDateTime::now_utc());
    query(&s.store, move |st| st.retry_parked(None, &by, now)).await?;
    s.uploads.notify_one();
    Ok(Redirect::to("/supervisor").into_response())
}
