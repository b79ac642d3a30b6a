//! Labels at the UI and in the API: the preview, reprints (audited), test
//! labels (supervisors), the printer's state, and the scan-back check.
//! Thin: the store queues and records, the label worker prints.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};

use super::auth::{Caller, Watcher};
use super::{ApiError, AppState, query};
use crate::ids::{Guid, SlotId};
use crate::printer::PrinterState;
use crate::printer::worker::facts_of;
use crate::store::{LabelCounts, Role};
use crate::workflow::LabelScan;

/// `GET /api/v1/boards/{guid}/label.svg`: the label as it prints.
pub async fn preview(
    State(s): State<AppState>,
    Watcher(caller): Watcher,
    Path(guid): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    let guid: Guid = guid.parse()?;
    let g = guid.as_str().to_string();
    let Some(record) = query(&s.store, move |st| st.label_record(&g)).await? else {
        return Err(ApiError::NotFound(format!(
            "no provisioned board {guid} on this station, so no label"
        )));
    };
    let svg = s.labels.labeler.svg(&facts_of(&record));
    // Not cached: it shows a device (the security headers say no-store).
    Ok((
        [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
        svg,
    )
        .into_response())
}

#[derive(Deserialize, Default)]
pub struct ReprintBody {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Serialize)]
pub struct Queued {
    job: i64,
    guid: String,
    state: &'static str,
}

async fn queue_reprint(
    s: &AppState,
    caller: &Caller,
    guid: &Guid,
    reason: Option<String>,
) -> Result<i64, ApiError> {
    let reason = reason.map(|r| r.trim().to_string()).unwrap_or_default();
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "a reprint reason is up to 500 printable characters".into(),
        ));
    }
    let (by, now, g) = (
        caller.name.clone(),
        time::OffsetDateTime::now_utc(),
        guid.as_str().to_string(),
    );
    let job = query(&s.store, move |st| st.reprint_label(&g, &by, &reason, now)).await?;
    let Some(job) = job else {
        return Err(ApiError::NotFound(format!(
            "no provisioned board {guid} on this station: only a provisioned board gets a label"
        )));
    };
    s.labels.wake.notify_one();
    Ok(job)
}

/// `POST /api/v1/boards/{guid}/label/reprint`: one more label, on record.
pub async fn reprint(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(guid): Path<String>,
    body: Option<Json<ReprintBody>>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf_header(&headers)?;
    let guid: Guid = guid.parse()?;
    let reason = body.and_then(|Json(b)| b.reason);
    let job = queue_reprint(&s, &caller, &guid, reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            job,
            guid: guid.as_str().to_string(),
            state: "pending",
        }),
    ))
}

async fn queue_test(s: &AppState, caller: &Caller) -> Result<i64, ApiError> {
    let (by, now) = (caller.name.clone(), time::OffsetDateTime::now_utc());
    let job = query(&s.store, move |st| st.test_label(&by, now)).await?;
    s.labels.wake.notify_one();
    Ok(job)
}

/// `POST /api/v1/printer/test`: a test label, for supervisors.
pub async fn test_label(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    caller.require(Role::Supervisor)?;
    caller.check_csrf_header(&headers)?;
    let job = queue_test(&s, &caller).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            job,
            guid: crate::store::TEST_LABEL_GUID.into(),
            state: "pending",
        }),
    ))
}

#[derive(Serialize)]
pub struct PrinterView {
    #[serde(flatten)]
    state: PrinterState,
    labels: LabelCounts,
    scan_back: bool,
}

/// `GET /api/v1/printer`: the printer's state and the label queue.
pub async fn printer(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<PrinterView>, ApiError> {
    caller.require(Role::Operator)?;
    let labels = query(&s.store, |st| st.label_counts()).await?;
    let state = s
        .labels
        .printer
        .lock()
        .map(|p| p.clone())
        .map_err(|_| ApiError::Internal("the printer state is unavailable".into()))?;
    Ok(Json(PrinterView {
        state,
        labels,
        scan_back: s.labels.scan_back,
    }))
}

/// What a scanner sent, without the AIM symbology identifier some scanners
/// put first (`]d1` for a DataMatrix) and without surrounding blanks.
fn scanned_text(raw: &str) -> String {
    let t = raw.trim();
    let t = match t.get(..3) {
        Some(p) if p.starts_with("]d") || p.starts_with("]D") => &t[3..],
        _ => t,
    };
    t.trim().to_string()
}

#[derive(Deserialize)]
pub struct ScanBody {
    scanned: String,
}

#[derive(Serialize)]
pub struct ScanResult {
    slot: u16,
    expected: String,
    scanned: String,
    matched: bool,
    message: String,
}

async fn check_scan(
    s: &AppState,
    caller: &Caller,
    slot: u16,
    raw: &str,
) -> Result<ScanResult, ApiError> {
    let view = s
        .slots
        .all()
        .into_iter()
        .find(|v| v.slot == slot)
        .ok_or_else(|| ApiError::NotFound(format!("there is no slot {slot}")))?;
    let expected = match (&view.guid, view.state) {
        (Some(g), "provisioned") => g.clone(),
        _ => {
            return Err(ApiError::Conflict(format!(
                "slot {slot} has no provisioned board to check a label against"
            )));
        }
    };
    let scanned = scanned_text(raw);
    if scanned.is_empty() || scanned.chars().count() > 200 {
        return Err(ApiError::BadRequest(
            "scan the label's DataMatrix (the scan was empty or too long)".into(),
        ));
    }
    let (by, now, e, sc) = (
        caller.name.clone(),
        time::OffsetDateTime::now_utc(),
        expected.clone(),
        scanned.clone(),
    );
    let matched = query(&s.store, move |st| st.record_scan(slot, &e, &sc, &by, now)).await?;
    let message = if matched {
        format!("Label checked: it matches the board in slot {slot}.")
    } else {
        tracing::warn!(slot, board.guid = %expected, scanned = %scanned, "scanned label does not match the board");
        format!(
            "LABEL DOES NOT MATCH: scanned {scanned}, but the board in slot {slot} is {expected}. Peel the label off, reprint it for this board and scan again."
        )
    };
    let shown = LabelScan {
        matched,
        scanned: scanned.clone(),
    };
    s.slots
        .update(SlotId(slot), |v| v.label_scan = Some(shown.clone()));
    Ok(ScanResult {
        slot,
        expected,
        scanned,
        matched,
        message,
    })
}

/// `POST /api/v1/slots/{slot}/scan`: the scan-back check.
pub async fn scan(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(slot): Path<u16>,
    Json(body): Json<ScanBody>,
) -> Result<Json<ScanResult>, ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf_header(&headers)?;
    Ok(Json(check_scan(&s, &caller, slot, &body.scanned).await?))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
pub struct ScanForm {
    csrf: String,
    scanned: String,
}

/// The tile's "Reprint label" button.
pub async fn reprint_form(
    State(s): State<AppState>,
    caller: Caller,
    Path(slot): Path<u16>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf(Some(&f.csrf))?;
    let view = s
        .slots
        .all()
        .into_iter()
        .find(|v| v.slot == slot)
        .ok_or_else(|| ApiError::NotFound(format!("there is no slot {slot}")))?;
    let guid = Some(view)
        .filter(|v| v.state == "provisioned")
        .and_then(|v| v.guid)
        .ok_or_else(|| {
            ApiError::Conflict(format!("slot {slot} has no provisioned board to label"))
        })?;
    queue_reprint(
        &s,
        &caller,
        &guid.parse::<Guid>()?,
        Some("reprint at the slot".into()),
    )
    .await?;
    Ok(Redirect::to("/").into_response())
}

/// The tile's scan field.
pub async fn scan_form(
    State(s): State<AppState>,
    caller: Caller,
    Path(slot): Path<u16>,
    Form(f): Form<ScanForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Operator)?;
    caller.check_csrf(Some(&f.csrf))?;
    check_scan(&s, &caller, slot, &f.scanned).await?;
    Ok(Redirect::to("/").into_response())
}

/// The supervisor page's "Print a test label" button.
pub async fn test_label_form(
    State(s): State<AppState>,
    caller: Caller,
    Form(f): Form<CsrfForm>,
) -> Result<Response, ApiError> {
    caller.require(Role::Supervisor)?;
    caller.check_csrf(Some(&f.csrf))?;
    queue_test(&s, &caller).await?;
    Ok(Redirect::to("/supervisor").into_response())
}

#[cfg(test)]
mod tests {
    use super::scanned_text;

    #[test]
    fn scanner_prefixes_and_blanks_are_dropped() {
        assert_eq!(scanned_text(" ]d1abc-1\r\n"), "abc-1");
        assert_eq!(scanned_text("abc"), "abc");
        assert_eq!(scanned_text("]d"), "]d");
    }
}
