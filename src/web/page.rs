//! The plain HTML page: slots and recent boards. The operator UI proper is
//! a later piece of work; this page only shows what the API shows.

use askama::Template;
use axum::extract::State;
use axum::response::Html;

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::store::BoardRow;
use crate::workflow::SlotView;

#[derive(Template)]
#[template(path = "index.html")]
struct Index {
    user: String,
    role: &'static str,
    csrf: String,
    station: String,
    line: String,
    slots: Vec<SlotView>,
    boards: Vec<BoardRow>,
}

/// The stylesheet from `static/`, compiled into the binary so the station
/// runs from any folder.
pub async fn stylesheet() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/station.css"),
    )
}

/// The page for people signed in; others are sent to sign in.
pub async fn index(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Ok(caller) = caller else {
        return Ok(axum::response::Redirect::to("/login").into_response());
    };
    let boards = query(&s.store, |st| st.boards(50)).await?;
    let page = Index {
        user: caller.name.clone(),
        role: caller.role.as_str(),
        csrf: caller.csrf.clone().unwrap_or_default(),
        station: s.station_id.to_string(),
        line: s.line.to_string(),
        slots: s.slots.all(),
        boards,
    };
    page.render()
        .map(|h| Html(h).into_response())
        .map_err(|e| ApiError::Internal(format!("the page could not be drawn: {e}")))
}
