//! JSON handlers for `/api/v1`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::ids::Guid;
use crate::store::Role;
use crate::store::{BoardRow, StepRow};
use crate::workflow::SlotView;

pub async fn health(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let schema = query(&s.store, |st| st.schema_version()).await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "station": &*s.station_id,
        "line": &*s.line,
        "version": env!("CARGO_PKG_VERSION"),
        "schema": schema,
    })))
}

pub async fn slots(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<SlotView>>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(Json(s.slots.all()))
}

#[derive(Deserialize)]
pub struct BoardsQuery {
    /// Newest first, at most this many (default 100, at most 1000).
    limit: Option<u32>,
}

pub async fn boards(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<BoardsQuery>,
) -> Result<Json<Vec<BoardRow>>, ApiError> {
    caller.require(Role::Operator)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit {limit} must be between 1 and 1000"
        )));
    }
    Ok(Json(query(&s.store, move |st| st.boards(limit)).await?))
}

#[derive(Serialize)]
pub struct BoardDetail {
    #[serde(flatten)]
    board: BoardRow,
    certificate_pem: Option<String>,
    certificate_fingerprint_sha256: Option<String>,
    /// `issued` (in the ledger, not yet proven on the board), `installed`
    /// or `abandoned` (the board failed after it was issued).
    certificate_state: Option<String>,
    /// DPS upload of this board's enrollment: `pending`, `enrolled` or
    /// `parked`; null when none was queued.
    enrollment: Option<String>,
    /// The newest label job of this GUID: `pending`, `printed` or
    /// `cancelled`, with the printer's last problem; null when none.
    label: Option<crate::store::LabelState>,
    steps: Vec<StepRow>,
}

pub async fn board(
    State(s): State<AppState>,
    caller: Caller,
    Path(guid): Path<String>,
) -> Result<Json<BoardDetail>, ApiError> {
    caller.require(Role::Operator)?;
    let guid: Guid = guid.parse()?;
    let g = guid.clone();
    let Some(board) = query(&s.store, move |st| st.board(&g)).await? else {
        return Err(ApiError::NotFound(format!(
            "no board {guid} on this station"
        )));
    };
    let (id, g) = (board.id, guid.as_str().to_string());
    let (steps, cert, enrollment, label) = query(&s.store, move |st| {
        Ok((
            st.steps(id)?,
            st.certificate_of_board(id)?,
            st.enrollment_state(id)?,
            st.label_state(&g)?,
        ))
    })
    .await?;
    Ok(Json(BoardDetail {
        board,
        certificate_pem: cert.as_ref().map(|c| c.pem.clone()),
        certificate_fingerprint_sha256: cert.as_ref().map(|c| c.fingerprint_sha256.clone()),
        certificate_state: cert.map(|c| c.state),
        enrollment,
        label,
        steps,
    }))
}

/// `GET /crl`: the certificate revocation list, DER, signed by the CA.
/// Public, as revocation lists are: relying parties fetch it unsigned-in.
pub async fn crl(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let revoked = query(&s.store, |st| st.revoked()).await?;
    let ca = s.ca.clone();
    let der = tokio::task::spawn_blocking(move || {
        crate::ca::crl::build_crl(ca.as_ref(), &revoked, time::OffsetDateTime::now_utc())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("the revocation list could not be signed: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pkix-crl"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        der,
    ))
}

/// The CA view is for admins (issue 4's roles).
pub async fn ca(State(s): State<AppState>, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    caller.require(Role::Admin)?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca_pem.to_string(),
    ))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such page or API path; the API is under /api/v1 (see docs/api.md)".into(),
    )
}
