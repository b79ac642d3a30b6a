//! The HTTP side: the JSON API under `/api/v1` (see `docs/api.md`) and a
//! plain HTML page of slots and boards. Handlers stay thin: they parse the
//! request, ask the store or the slot board, and shape the answer.

mod admin;
mod api;
pub mod auth;
mod devices;
mod errors;
pub mod headers;
mod labels;
mod login;
mod oidc;
mod outbox;
pub mod page;
mod plant;
mod registry;
mod reports;
mod strip;
mod supervisor;
pub mod tls;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::store::{Store, StoreError};
use crate::workflow::SlotBoard;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub slots: SlotBoard,
    pub ca_pem: Arc<str>,
    pub station_id: Arc<str>,
    pub line: Arc<str>,
    pub outbox: crate::dps::SharedStatus,
    /// Wakes the uploader after a retry.
    pub uploads: Arc<tokio::sync::Notify>,
    /// A session idle this long is over.
    pub session_idle: time::Duration,
    pub throttle: Arc<auth::Throttle>,
    /// Operator actions to each slot's task.
    pub slot_commands: Arc<
        std::collections::BTreeMap<u16, tokio::sync::mpsc::Sender<crate::workflow::SlotCommand>>,
    >,
    /// The work order in production, shared with the slot tasks.
    pub work_order: Arc<std::sync::RwLock<Option<String>>>,
    /// The configuration as admins may see it (no secrets).
    pub config_view: Arc<serde_json::Value>,
    pub labels: Labels,
    /// The plant's local time and shifts, for report ranges.
    pub reports: Arc<crate::config::ReportsConfig>,
    /// Signs the revocation list.
    pub ca: Arc<dyn crate::ca::CaSigner>,
    /// The IoT hubs an activator may choose (`[dps] activation_hubs`).
    pub activation_hubs: Arc<Vec<String>>,
    /// The plant tier, with `[plant]`: the forwarder's status and a pool
    /// for look-ups across stations.
    pub plant: Option<crate::plant::PlantHandle>,
    /// The station serves HTTPS (`[ui] tls_cert_file`): cookies are
    /// `Secure` and responses carry HSTS.
    pub https: bool,
    /// Plain HTTP on an address beyond loopback: the sign-in page warns.
    pub plain_http_exposed: bool,
    /// The Content-Security-Policy of every response ([`headers::policy`]).
    pub csp: Arc<str>,
    /// Organisational sign-in, with `[ui.oidc]`.
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// `[ui] sound_alerts`: the line view sounds a FAIL or a slot that
    /// needs attention.
    pub sound_alerts: bool,
    /// When the factory CA's chain stops issuing (its earliest
    /// `notAfter`), for the line view's status strip.
    pub ca_not_after: Option<time::OffsetDateTime>,
}

/// What the web layer needs for labels.
#[derive(Clone)]
pub struct Labels {
    /// Fills in the template, for previews.
    pub labeler: Arc<crate::label::Labeler>,
    pub printer: crate::printer::SharedPrinterState,
    /// Wakes the label worker after a reprint or test label.
    pub wake: Arc<tokio::sync::Notify>,
    /// Operators scan each printed label back at the slot.
    pub scan_back: bool,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", axum::routing::post(login::logout))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/api/v1/health", get(api::health))
        .route("/crl", get(api::crl))
        .route("/api/v1/slots", get(api::slots))
        .route("/api/v1/boards", get(api::boards))
        .route("/api/v1/boards/{guid}", get(api::board))
        .route("/api/v1/ca", get(api::ca))
        .route(
            "/api/v1/boards/{guid}/override",
            axum::routing::post(admin::grant_override),
        )
        .route("/api/v1/boards/{guid}/label.svg", get(labels::preview))
        .route(
            "/api/v1/boards/{guid}/label/reprint",
            axum::routing::post(labels::reprint),
        )
        .route("/api/v1/printer", get(labels::printer))
        .route(
            "/api/v1/printer/test",
            axum::routing::post(labels::test_label),
        )
        .route(
            "/api/v1/slots/{slot}/scan",
            axum::routing::post(labels::scan),
        )
        .route(
            "/slots/{slot}/reprint",
            axum::routing::post(labels::reprint_form),
        )
        .route("/slots/{slot}/scan", axum::routing::post(labels::scan_form))
        .route(
            "/supervisor/test-label",
            axum::routing::post(labels::test_label_form),
        )
        .route("/reports", get(reports::page))
        .route("/api/v1/reports", get(reports::api))
        .route("/api/v1/users", get(admin::users))
        .route("/api/v1/config", get(admin::config))
        .route("/static/station.css", get(page::stylesheet))
        .route("/static/line.js", get(page::script))
        .route("/static/login.js", get(page::login_script))
        .route("/events", get(page::events))
        .route(
            "/slots/{slot}/action",
            axum::routing::post(page::slot_action),
        )
        .route("/work-order", axum::routing::post(page::set_work_order))
        .route("/supervisor", get(supervisor::page))
        .route("/supervisor/retry", axum::routing::post(supervisor::retry))
        .route("/api/v1/outbox", get(outbox::status))
        .route("/api/v1/outbox/retry", axum::routing::post(outbox::retry))
        .route("/metrics", get(outbox::metrics))
        .route("/api/v1/plant", get(plant::status))
        .route("/devices", get(devices::lookup))
        .route("/devices/{guid}", get(devices::page))
        .route(
            "/devices/{guid}/location",
            axum::routing::post(registry::location_form),
        )
        .route(
            "/devices/{guid}/notes",
            axum::routing::post(registry::note_form),
        )
        .route(
            "/devices/{guid}/{action}",
            axum::routing::post(devices::act_form),
        )
        .route("/api/v1/devices", get(registry::search))
        .route("/api/v1/devices/{guid}", get(devices::record))
        .route(
            "/api/v1/devices/{guid}/location",
            axum::routing::put(registry::put_location),
        )
        .route(
            "/api/v1/devices/{guid}/notes",
            axum::routing::post(registry::post_note),
        )
        .route(
            "/api/v1/devices/{guid}/{action}",
            axum::routing::post(devices::act),
        )
        .route("/static/device.js", get(page::device_script))
        .route("/static/report.css", get(page::report_stylesheet))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn(errors::html_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            headers::protect,
        ))
        .with_state(state)
}

/// An API error: logged in full, answered with a safe JSON message.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// No valid session or token.
    Unauthorized,
    /// Signed in, but not allowed (role, CSRF).
    Forbidden(String),
    NotFound(String),
    /// The request does not fit the current state (a slot without a board).
    Conflict(String),
    Store(StoreError),
    /// A fault of the station itself; the detail goes to the log only.
    Internal(String),
}

/// A GUID in a path that is not one is the caller's mistake.
impl From<crate::ids::IdError> for ApiError {
    fn from(e: crate::ids::IdError) -> ApiError {
        ApiError::BadRequest(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => {
                let body = serde_json::json!({ "error": "sign in, or send a bearer token (station token create)" });
                return (
                    StatusCode::UNAUTHORIZED,
                    [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                    axum::Json(body),
                )
                    .into_response();
            }
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Internal(e) => {
                tracing::error!("API request failed: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the station could not answer; see the station log".to_string(),
                )
            }
            ApiError::Store(e) => {
                tracing::error!("API request failed: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the station database is not available; see the station log".to_string(),
                )
            }
        };
        (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    }
}

/// Runs a store query on the blocking pool.
pub async fn query<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = store.clone();
    crate::store::blocking(move || f(&store))
        .await
        .map_err(ApiError::Store)
}
