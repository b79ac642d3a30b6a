//! QA reports for supervisors: `GET /reports` (the HTML report, printable)
//! and `GET /api/v1/reports` (JSON or CSV), for a range given as in the
//! command line. Thin: the store reads, the report module computes.

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::report::range::{Asked, resolve};
use crate::report::{ReportQuery, render};
use crate::store::{Role, ts};

#[derive(Deserialize, Default)]
pub struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    shift: Option<String>,
    date: Option<String>,
    lot: Option<String>,
    /// Text, as an empty form field sends "".
    slot: Option<String>,
    format: Option<String>,
}

fn blank(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn answer(
    s: AppState,
    caller: Caller,
    p: ReportParams,
    default: &str,
) -> Result<Response, ApiError> {
    caller.require(Role::Supervisor)?;
    let format = blank(&p.format).unwrap_or(default).to_string();
    if !["html", "csv", "json"].contains(&format.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "format {format:?}: choose html, csv or json"
        )));
    }
    let asked = Asked {
        from: blank(&p.from),
        to: blank(&p.to),
        shift: blank(&p.shift),
        date: blank(&p.date),
    };
    let now = time::OffsetDateTime::now_utc();
    let range = resolve(&asked, &s.reports.shifts, s.reports.utc_offset, now)
        .map_err(ApiError::BadRequest)?;
    let lot = blank(&p.lot).map(str::to_string);
    let slot = match blank(&p.slot) {
        Some(n) => Some(
            n.parse::<u16>()
                .map_err(|_| ApiError::BadRequest(format!("slot {n:?} is not a slot number")))?,
        ),
        None => None,
    };
    let q = ReportQuery::new(&range.title, ts(range.from), ts(range.to), lot, slot);
    let filter = crate::store::UnitFilter::of(&q);
    let records = query(&s.store, move |st| st.count_units(&filter)).await?;
    // A page is built in memory: larger ranges are for `station export
    // units`, which streams.
    let limit = s.reports.page_limit;
    if records > limit {
        return Err(ApiError::BadRequest(format!(
            "the range holds {records} board records, more than a report page shows ({limit}, [reports] page_limit): choose a shorter range, or export it with `station export units`"
        )));
    }
    let station = s.station_id.to_string();
    let report = query(&s.store, move |st| st.report(&station, q, ts(now))).await?;
    Ok(match format.as_str() {
        "html" => Html(render::html(&report, render::Styles::Linked).map_err(ApiError::Internal)?)
            .into_response(),
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"devices.csv\"",
                ),
            ],
            render::csv(&report.units),
        )
            .into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/json")],
            render::json(&report),
        )
            .into_response(),
    })
}

/// `GET /reports`: the report as a page (or CSV/JSON with `format=`).
/// Like the other pages: signed-out people are sent to sign in, and a
/// role too low gets the "not allowed" page.
pub async fn page(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(super::auth::to_login(&headers).into_response());
    };
    if caller.require(Role::Supervisor).is_err() {
        return Ok(super::supervisor::refused(&caller, Role::Supervisor));
    }
    answer(s, caller, p, "html").await
}

/// `GET /api/v1/reports`: JSON by default.
pub async fn api(
    State(s): State<AppState>,
    caller: Caller,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    answer(s, caller, p, "json").await
}
