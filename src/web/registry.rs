//! The device record over HTTP: a device's location and service notes
//! (set from the device page's forms and the API), and the device lookup
//! over the API. The rules are [`crate::registry`]'s; the store writes each
//! change with its audit row.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::devices::{Extra, SEARCH_LIMIT, show};
use super::supervisor::not_allowed;
use super::{ApiError, AppState, query};
use crate::ids::Guid;
use crate::registry::{Location, checked_note, may_edit};
use crate::store::{DeviceHit, DeviceNote};

fn unknown(guid: &Guid) -> ApiError {
    ApiError::NotFound(format!(
        "the station has no provisioned device {guid}: check the GUID on the label"
    ))
}

/// Checks and saves a location; the location as saved (`None`: cleared).
async fn save_location(
    s: &AppState,
    caller: &Caller,
    guid: &Guid,
    loc: Location,
) -> Result<Option<Location>, ApiError> {
    may_edit(caller.role).map_err(ApiError::Forbidden)?;
    let loc = loc.checked().map_err(ApiError::BadRequest)?;
    let (g, l, actor) = (guid.clone(), loc.clone(), caller.name.clone());
    let now = time::OffsetDateTime::now_utc();
    if !query(&s.store, move |st| {
        st.set_device_location(&g, &l, &actor, now)
    })
    .await?
    {
        return Err(unknown(guid));
    }
    Ok((!loc.is_empty()).then_some(loc))
}

/// Checks and adds a note by the caller.
async fn save_note(
    s: &AppState,
    caller: &Caller,
    guid: &Guid,
    text: &str,
) -> Result<DeviceNote, ApiError> {
    may_edit(caller.role).map_err(ApiError::Forbidden)?;
    let text = checked_note(text).map_err(ApiError::BadRequest)?;
    let (g, author) = (guid.clone(), caller.name.clone());
    let now = time::OffsetDateTime::now_utc();
    query(&s.store, move |st| {
        st.add_device_note(&g, &text, &author, now)
    })
    .await?
    .ok_or_else(|| unknown(guid))
}

/// `PUT /api/v1/devices/{guid}/location`: sets (or, with every field
/// empty, clears) the device's location.
pub async fn put_location(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Json(loc): Json<Location>,
) -> Result<Json<Value>, ApiError> {
    caller.check_csrf_header(&headers)?;
    let guid = guid.trim().parse::<Guid>()?;
    let saved = save_location(&s, &caller, &guid, loc).await?;
    Ok(Json(json!({ "guid": guid, "location": saved })))
}

#[derive(Deserialize)]
pub struct NoteBody {
    text: String,
}

/// `POST /api/v1/devices/{guid}/notes`: adds a service note.
pub async fn post_note(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(guid): Path<String>,
    Json(b): Json<NoteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.check_csrf_header(&headers)?;
    let guid = guid.trim().parse::<Guid>()?;
    let note = save_note(&s, &caller, &guid, &b.text).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "guid": guid, "note": note })),
    ))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /api/v1/devices?q=TEXT`: devices whose location holds the text or
/// whose work order it is (a GUID gives that device, if the station has
/// it).
pub async fn search(
    State(s): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(crate::store::Role::Activator)?;
    let text = q.q.trim().to_string();
    if text.is_empty() {
        return Err(ApiError::BadRequest(
            "say what to look for: ?q= a GUID, a location text or a work order".into(),
        ));
    }
    let (devices, more) = match text.parse::<Guid>() {
        Ok(g) => {
            let record = query(&s.store, move |st| st.device_record(&g)).await?;
            let newest = record
                .boards
                .iter()
                .map(|(b, _)| b)
                .find(|b| b.status == "provisioned");
            let hit = newest.map(|b| DeviceHit {
                guid: record.guid.clone(),
                location: record.location.clone(),
                work_order: b.work_order.clone(),
                provisioned_at: b.finished_at.clone(),
                retired: record.retirement.is_some(),
            });
            (hit.into_iter().collect::<Vec<_>>(), false)
        }
        Err(_) => query(&s.store, move |st| st.search_devices(&text, SEARCH_LIMIT)).await?,
    };
    Ok(Json(
        json!({ "devices": devices, "more": more, "limit": SEARCH_LIMIT }),
    ))
}

#[derive(Deserialize)]
pub struct LocationForm {
    /// Optional here so that a form without it is refused as a missing
    /// CSRF token (403), not as a malformed form.
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    site: String,
    #[serde(default)]
    building: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
pub struct NoteForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    text: String,
}

/// What a form's refusal becomes: the page again with the words, or the
/// not-allowed page for a role.
async fn form_refused(
    s: &AppState,
    caller: &Caller,
    guid: &str,
    e: ApiError,
) -> Result<Response, ApiError> {
    match e {
        ApiError::BadRequest(m) | ApiError::NotFound(m) => {
            show(s, caller, guid, Some(m), None, Extra::default()).await
        }
        ApiError::Forbidden(m) => Ok(not_allowed(
            &m,
            &format!("/devices/{}", guid.trim()),
            "Back to the device",
        )),
        e => Err(e),
    }
}

/// `POST /devices/{guid}/location`: the page's location form.
pub async fn location_form(
    State(s): State<AppState>,
    caller: Caller,
    Path(guid): Path<String>,
    Form(f): Form<LocationForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(f.csrf.as_deref())?;
    let g = guid.trim().parse::<Guid>()?;
    let loc = Location {
        site: Some(f.site),
        building: Some(f.building),
        room: Some(f.room),
        text: Some(f.text),
    };
    match save_location(&s, &caller, &g, loc).await {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{g}?saved=location")).into_response()),
        Err(e) => form_refused(&s, &caller, &guid, e).await,
    }
}

/// `POST /devices/{guid}/notes`: the page's note form.
pub async fn note_form(
    State(s): State<AppState>,
    caller: Caller,
    Path(guid): Path<String>,
    Form(f): Form<NoteForm>,
) -> Result<Response, ApiError> {
    caller.check_csrf(f.csrf.as_deref())?;
    let g = guid.trim().parse::<Guid>()?;
    match save_note(&s, &caller, &g, &f.text).await {
        Ok(_) => Ok(Redirect::to(&format!("/devices/{g}?saved=note")).into_response()),
        Err(e) => form_refused(&s, &caller, &guid, e).await,
    }
}
