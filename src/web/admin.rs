//! Supervisor and admin actions over the API: allowing one more
//! certificate for a board (supervisor), and viewing people and the
//! configuration (admin). The DPS secret is never shown.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::ids::Guid;
use crate::store::{Role, User};

#[derive(Deserialize)]
pub struct OverrideBody {
    /// Why one more certificate is allowed; kept with the permission and in
    /// the audit trail.
    reason: String,
}

/// `POST /api/v1/boards/{guid}/override`: the next provisioning of this
/// GUID may issue a certificate although one is held.
pub async fn grant_override(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Json(body): Json<OverrideBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Supervisor)?;
    caller.check_csrf_header(&headers)?;
    let guid: Guid = guid.parse()?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::BadRequest(
            "give a reason of 1 to 500 characters".into(),
        ));
    }
    let (by, now, g) = (
        caller.name.clone(),
        time::OffsetDateTime::now_utc(),
        guid.clone(),
    );
    // Only an admin's override lets a revoked device be provisioned again.
    let by_admin = caller.role >= Role::Admin;
    query(&s.store, move |st| {
        st.grant_override(&g, &by, &reason, by_admin, now)
    })
    .await?;
    Ok(Json(
        serde_json::json!({ "guid": guid, "override": "granted" }),
    ))
}

/// `GET /api/v1/users`: people, without secrets.
pub async fn users(State(s): State<AppState>, caller: Caller) -> Result<Json<Vec<User>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(query(&s.store, |st| st.users()).await?))
}

/// `GET /api/v1/config`: what the station runs with.
pub async fn config(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(s.config_view.as_ref().clone()))
}
