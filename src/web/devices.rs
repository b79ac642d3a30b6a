//! Devices after the line: the device page (history, DPS state as last
//! seen, location and service notes, and the lifecycle forms), the lookup
//! by GUID, location or work order, and the same actions over the API.
//! The rules live in [`crate::lifecycle`] and [`crate::registry`]; this
//! only parses and answers. The location and note handlers are in
//! `registry.rs`.

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
use crate::store::{DeviceHit, DeviceRecord, Role};

/// Most devices a lookup lists.
pub(super) const SEARCH_LIMIT: usize = 100;

fn refusal(e: Refused) -> ApiError {
    match e {
        Refused::Forbidden(m) => ApiError::Forbidden(m),
        Refused::Invalid(m) => ApiError::BadRequest(m),
        Refused::Unknown(_) => ApiError::NotFound(e.to_string()),
        Refused::Revoked { .. } | Refused::Retired { .. } => ApiError::Conflict(e.to_string()),
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
    /// Revoke, retire: true to confirm it cannot be undone.
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
    /// The line view is theirs (operators and above).
    may_line: bool,
    /// The device was provisioned: there is something to activate,
    /// disable, revoke or retire.
    provisioned: bool,
    error: Option<String>,
    done: Option<String>,
    /// The DPS enrollment as last seen, pretty-printed.
    dps_json: Option<String>,
    /// What was saved (`location`, `note`), for the banner.
    saved: Option<String>,
    /// The device's location in one line, if set.
    location_summary: Option<String>,
    /// The location form's fields as they are now: site, building, room,
    /// text.
    location_form: [String; 4],
    /// The lookup's text, and what it found (with whether there were
    /// more than [`SEARCH_LIMIT`]), when it searched.
    query: String,
    hits: Option<(Vec<HitLine>, bool)>,
}

/// A device the lookup found, as the page lists it.
pub(super) struct HitLine {
    guid: String,
    location: String,
    work_order: String,
    provisioned_at: String,
    retired: bool,
}

impl HitLine {
    fn of(h: DeviceHit) -> HitLine {
        HitLine {
            location: h.location.map(|l| l.summary()).unwrap_or_default(),
            work_order: h.work_order.unwrap_or_default(),
            provisioned_at: h.provisioned_at.unwrap_or_default(),
            retired: h.retired,
            guid: h.guid,
        }
    }
}

/// What a page shows besides the device.
#[derive(Default)]
pub(super) struct Extra {
    pub saved: Option<String>,
    pub query: String,
    pub hits: Option<(Vec<DeviceHit>, bool)>,
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    /// A GUID only (a scanned label): a malformed one is refused.
    #[serde(default)]
    guid: Option<String>,
    /// A GUID, a location text or a work order.
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    saved: Option<String>,
}

/// `GET /devices?guid=...` (a scanned GUID) or `GET /devices?q=...` (a
/// GUID, a location text or a work order): the lookup.
pub async fn lookup(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(super::auth::to_login(&headers).into_response());
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
                Extra::default(),
            ),
        };
    }
    let text = q.q.as_deref().unwrap_or("").trim().to_string();
    if text.is_empty() {
        return draw(
            &caller,
            String::new(),
            None,
            Vec::new(),
            None,
            None,
            Extra::default(),
        );
    }
    if let Ok(guid) = text.parse::<Guid>() {
        return Ok(Redirect::to(&format!("/devices/{guid}")).into_response());
    }
    if caller.require(Role::Activator).is_err() {
        return Ok(refused(&caller, Role::Activator));
    }
    let t = text.clone();
    let hits = query(&s.store, move |st| st.search_devices(&t, SEARCH_LIMIT)).await?;
    draw(
        &caller,
        String::new(),
        None,
        Vec::new(),
        None,
        None,
        Extra {
            query: text,
            hits: Some(hits),
            ..Extra::default()
        },
    )
}

/// `GET /devices/{guid}`: the device page.
pub async fn page(
    State(s): State<AppState>,
    caller: Result<Caller, ApiError>,
    headers: axum::http::HeaderMap,
    Path(guid): Path<String>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Result<Response, ApiError> {
    let Ok(caller) = caller else {
        return Ok(super::auth::to_login(&headers).into_response());
    };
    let extra = Extra {
        saved: q.saved,
        ..Extra::default()
    };
    show(&s, &caller, &guid, None, q.done, extra).await
}

pub(super) async fn show(
    s: &AppState,
    caller: &Caller,
    guid: &str,
    error: Option<String>,
    done: Option<String>,
    extra: Extra,
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
                extra,
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
        extra,
    )
}

fn draw(
    caller: &Caller,
    guid: String,
    record: Option<DeviceRecord>,
    hubs: Vec<String>,
    error: Option<String>,
    done: Option<String>,
    extra: Extra,
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
    let location = record.as_ref().and_then(|r| r.location.clone());
    let field = |f: fn(&crate::registry::Location) -> &Option<String>| {
        location
            .as_ref()
            .and_then(|l| f(l).clone())
            .unwrap_or_default()
    };
    let location_form = [
        field(|l| &l.site),
        field(|l| &l.building),
        field(|l| &l.room),
        field(|l| &l.text),
    ];
    let provisioned = record
        .as_ref()
        .is_some_and(|r| r.boards.iter().any(|(b, _)| b.status == "provisioned"));
    let page = DevicePage {
        user: caller.name.clone(),
        csrf: caller.csrf.clone().unwrap_or_default(),
        guid,
        record,
        hubs,
        may_activate: caller.role.may_activate(),
        may_supervise: caller.role >= Role::Supervisor,
        may_line: caller.role >= Role::Operator,
        provisioned,
        error,
        done,
        dps_json,
        saved: extra.saved,
        location_summary: location.map(|l| l.summary()),
        location_form,
        query: extra.query,
        hits: extra
            .hits
            .map(|(h, more)| (h.into_iter().map(HitLine::of).collect(), more)),
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
        (Err(e), _) | (_, Err(e)) => {
            return show(&s, &caller, &guid, Some(e), None, Extra::default()).await;
        }
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
            show(&s, &caller, &guid, Some(m), None, Extra::default()).await
        }
        Err(ApiError::Forbidden(m)) => Ok(not_allowed(
            &m,
            &format!("/devices/{g}"),
            "Back to the device",
        )),
        Err(e) => Err(e),
    }
}
