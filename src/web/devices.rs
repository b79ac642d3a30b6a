//! Devices after the line: the device page (history, DPS state as last
//! seen, and the lifecycle forms), a GUID lookup, and the same actions
//! over the API. The rules live in [`crate::lifecycle`]; this only parses
//! and answers.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Caller;
use super::supervisor::{not_allowed, refused};
use super::{ApiError, AppState, query};
use crate::ids::Guid;
use crate::lifecycle::{Refused, Request};
use crate::store::{DeviceRecord, Role};

fn refusal(e: Refused) -> ApiError {
    match e {
        Refused::Forbidden(m) => ApiError::Forbidden(m),
        Refused::Invalid(m) => ApiError::BadRequest(m),
        Refused::Unknown(_) => ApiError::NotFound(e.to_string()),
        Refused::Revoked { .. } => ApiError::Conflict(e.to_string()),
        Refused::Store(m) => ApiError::Internal(m),
    }
}

/// Queues a request; wakes the uploader.
async fn submit(s: &AppState, caller: &Caller, guid: Guid, req: Request) -> Result<i64, ApiError> {
    let (hubs, actor, role) = (s.activation_hubs.clone(), caller.name.clone(), caller.role);
    let store = s.store.clone();
    let id = tokio::task::spawn_blocking(move || {
        crate::lifecycle::request(
            &store,
            &hubs,
            &guid,
            &req,
            &actor,
            role,
            time::OffsetDateTime::now_utc(),
        )
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(refusal)?;
    s.uploads.notify_one();
    Ok(id)
}

/// `GET /api/v1/devices/{guid}`: the device's whole record.
pub async fn record(
    State(s): State<AppState>,
    caller: Caller,
    Path(guid): Path<String>,
) -> Result<Json<DeviceRecord>, ApiError> {
    caller.require(Role::Activator)?;
    let guid = guid.trim().parse::<Guid>()?;
    let g = guid.clone();
    let record = query(&s.store, move |st| st.device_record(&g)).await?;
    if !record.is_known() {
        return Err(ApiError::NotFound(
            match super::plant::elsewhere(&s, guid.as_str()).await {
                Some(w) => format!("the station has no record of device {guid}: {w}"),
                None => format!("the station has no record of device {guid}"),
            },
        ));
    }
    Ok(Json(record))
}

#[derive(Deserialize, Default)]
pub struct ActionBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    hub: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    desired: Option<Value>,
    /// Revoke: true to confirm it cannot be undone.
    #[serde(default)]
    confirm: bool,
}

fn object(what: &str, v: Option<Value>) -> Result<Map<String, Value>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(ApiError::BadRequest(format!(
            "{what} must be a JSON object"
        ))),
    }
}

/// `POST /api/v1/devices/{guid}/{action}`: queued, done in DPS when it
/// can be reached.
pub async fn act(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path((guid, action)): Path<(String, String)>,
    body: Option<Json<ActionBody>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check_csrf_header(&headers)?;
    let guid = guid.trim().parse::<Guid>()?;
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let req = Request {
        action: action.clone(),
        reason: b.reason,
        hub: b.hub,
        tags: object("tags", b.tags)?,
        desired: object("desired", b.desired)?,
        confirmed: b.confirm,
    };
    let id = submit(&s, &caller, guid.clone(), req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "guid": guid, "action": action, "id": id, "state": "pending" })),
    ))
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    user: String,
    csrf: String,
    guid: String,
    record: Option<DeviceRecord>,
    hubs: Vec<String>,
    may_activate: bool,
    may_supervise: bool,
    error: Option<String>,
    done: Option<String>,
    /// The DPS enrollment as last seen, pretty-printed.
    dps_json: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    #[serde(default)]
    guid: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

/// `GET /devices?guid=...`: the lookup (a scan or typed GUID).
pub async fn lookup(
    caller: Result<Caller, ApiError>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(Redirect::to("/login").into_response());
    };
    if let Some(g) = q.guid.as_deref().filter(|g| !g.trim().is_empty()) {
        return match g.trim().parse::<Guid>() {
            Ok(guid) => Ok(Redirect::to(&format!("/devices/{guid}")).into_response()),
            Err(e) => draw(
                &caller,
                String::new(),
                None,
                Vec::new(),
                Some(e.to_string()),
                None,
            ),
        };
    }
    draw(&caller, String::new(), None, Vec::new(), None, None)
}

/// `GET /devices/{guid}`: the device page.
pub async fn page(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    Path(guid): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(Redirect::to("/login").into_response());
    };
    show(&s, &caller, &guid, None, q.done).await
}

async fn show(
    s: &AppState,
    caller: &Caller,
    guid: &str,
    error: Option<String>,
    done: Option<String>,
) -> Result<Response, ApiError> {
    if caller.require(Role::Activator).is_err() {
        return Ok(refused(caller, Role::Activator));
    }
    let guid = match guid.trim().parse::<Guid>() {
        Ok(g) => g,
        Err(e) => {
            return draw(
                caller,
                guid.to_string(),
                None,
                Vec::new(),
                Some(e.to_string()),
                None,
            );
        }
    };
    let g = guid.clone();
    let record = query(&s.store, move |st| st.device_record(&g)).await?;
    let known = record.is_known();
    let error = match error {
        Some(e) => Some(e),
        None if known => None,
        // Made on another station of the plant? Say where.
        None => Some(match super::plant::elsewhere(s, guid.as_str()).await {
            Some(w) => format!("the station has no record of device {guid}: {w}"),
            None => {
                format!("the station has no record of device {guid}: check the GUID on the label")
            }
        }),
    };
    draw(
        caller,
        guid.to_string(),
        known.then_some(record),
        s.activation_hubs.as_ref().clone(),
        error,
        done,
    )
}

fn draw(
    caller: &Caller,
    guid: String,
    record: Option<DeviceRecord>,
    hubs: Vec<String>,
    error: Option<String>,
    done: Option<String>,
) -> Result<Response, ApiError> {
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let dps_json = record
        .as_ref()
        .and_then(|r| r.dps.as_ref())
        .and_then(|d| serde_json::to_string_pretty(&d.enrollment).ok());
    let page = DevicePage {
        user: caller.name.clone(),
        csrf: caller.csrf.clone().unwrap_or_default(),
        guid,
        record,
        hubs,
        may_activate: caller.role.may_activate(),
        may_supervise: caller.role >= Role::Supervisor,
        error,
        done,
        dps_json,
    };
    page.render()
        .map(|h| (status, Html(h)).into_response())
        .map_err(|e| ApiError::Internal(format!("the device page could not be drawn: {e}")))
}

#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    hub: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    desired: String,
    #[serde(default)]
    confirm: Option<String>,
}

/// `POST /devices/{guid}/{action}`: the page's forms.
pub async fn act_form(
    State(s): State<AppState>,
    caller: Caller,
    Path((guid, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(Some(&f.csrf))?;
    let g = guid.trim().parse::<Guid>()?;
    let twin = |what: &str, text: &str| crate::dps::lifecycle::parse_twin(what, text);
    let (tags, desired) = match (
        twin("tags", &f.tags),
        twin("desired properties", &f.desired),
    ) {
        (Ok(t), Ok(d)) => (t, d),
        (Err(e), _) | (_, Err(e)) => return show(&s, &caller, &guid, Some(e), None).await,
    };
    let req = Request {
        action: action.clone(),
        reason: Some(f.reason),
        hub: Some(f.hub),
        tags,
        desired,
        confirmed: f.confirm.is_some(),
    };
    match submit(&s, &caller, g.clone(), req).await {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{g}?done={action}")).into_response()),
        Err(ApiError::BadRequest(m) | ApiError::Conflict(m) | ApiError::NotFound(m)) => {
            show(&s, &caller, &guid, Some(m), None).await
        }
        Err(ApiError::Forbidden(m)) => Ok(not_allowed(
            &m,
            &format!("/devices/{g}"),
            "Back to the device",
        )),
        Err(e) => Err(e),
    }
}
