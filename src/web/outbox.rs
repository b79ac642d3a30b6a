//! The DPS outbox over HTTP: its state, a supervisor's retry, and
//! Prometheus metrics.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, AppState, query};
use crate::dps::OutboxStatus;
use crate::store::JobRow;
use crate::store::Role;

#[derive(Serialize)]
pub struct OutboxView {
    #[serde(flatten)]
    status: OutboxStatus,
    queue_depth: i64,
    enrolled: i64,
    /// All parked jobs; `parked` lists at most 1000 of them.
    parked_count: i64,
    oldest_pending: Option<String>,
    oldest_pending_age_s: Option<i64>,
    parked: Vec<JobRow>,
}

fn age_s(t: &Option<String>) -> Option<i64> {
    let t = time::OffsetDateTime::parse(
        t.as_deref()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    Some((time::OffsetDateTime::now_utc() - t).whole_seconds().max(0))
}

fn snapshot(s: &AppState) -> Result<OutboxStatus, ApiError> {
    s.outbox
        .lock()
        .map(|g| g.clone())
        .map_err(|_| ApiError::Internal("the outbox status lock is poisoned".into()))
}

pub async fn status(
    State(s): State<AppState>,
    caller: Caller,
) -> Result<Json<OutboxView>, ApiError> {
    caller.require(Role::Operator)?;
    let (counts, parked) = query(&s.store, |st| {
        Ok((st.outbox_counts()?, st.outbox_jobs(Some("parked"), 1000)?))
    })
    .await?;
    Ok(Json(OutboxView {
        status: snapshot(&s)?,
        queue_depth: counts.pending,
        enrolled: counts.enrolled,
        parked_count: counts.parked,
        oldest_pending_age_s: age_s(&counts.oldest_pending),
        oldest_pending: counts.oldest_pending,
        parked,
    }))
}

#[derive(Deserialize)]
pub struct RetryQuery {
    /// Only this GUID's parked jobs (all when absent).
    guid: Option<String>,
}

/// Supervisors only; a session must send its CSRF token in `X-CSRF-Token`.
pub async fn retry(
    State(s): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Query(q): Query<RetryQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Supervisor)?;
    caller.check_csrf_header(&headers)?;
    let guid = match q.guid {
        Some(g) => Some(
            g.parse::<crate::ids::Guid>()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?
                .to_string(),
        ),
        None => None,
    };
    let now = time::OffsetDateTime::now_utc();
    let by = caller.name.clone();
    let n = query(&s.store, move |st| {
        st.retry_parked(guid.as_deref(), &by, now)
    })
    .await?;
    tracing::info!(jobs = n, "parked DPS uploads queued again by request");
    s.uploads.notify_one();
    Ok(Json(serde_json::json!({ "requeued": n })))
}

/// Prometheus text exposition.
pub async fn metrics(State(s): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (counts, boards, labels) = query(&s.store, |st| {
        Ok((st.outbox_counts()?, st.board_counts()?, st.label_counts()?))
    })
    .await?;
    let status = snapshot(&s)?;
    let mut out = String::new();
    out.push_str("# HELP station_boards Board records by status.\n# TYPE station_boards gauge\n");
    for (status, n) in &boards {
        out.push_str(&format!("station_boards{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str("# HELP station_outbox_jobs DPS enrollment jobs by state.\n# TYPE station_outbox_jobs gauge\n");
    for (state, n) in [
        ("pending", counts.pending),
        ("enrolled", counts.enrolled),
        ("parked", counts.parked),
    ] {
        out.push_str(&format!("station_outbox_jobs{{state=\"{state}\"}} {n}\n"));
    }
    out.push_str("# HELP station_outbox_oldest_pending_seconds Age of the oldest pending job.\n# TYPE station_outbox_oldest_pending_seconds gauge\n");
    out.push_str(&format!(
        "station_outbox_oldest_pending_seconds {}\n",
        age_s(&counts.oldest_pending).unwrap_or(0)
    ));
    out.push_str("# HELP station_dps_calls_total DPS calls by outcome.\n# TYPE station_dps_calls_total counter\n");
    for (outcome, n) in &status.calls {
        out.push_str(&format!(
            "station_dps_calls_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP station_dps_connectivity 1 for the current DPS connectivity state.\n# TYPE station_dps_connectivity gauge\n");
    for state in [
        "online",
        "offline",
        "tls_error",
        "degraded",
        "unknown",
        "not_configured",
    ] {
        out.push_str(&format!(
            "station_dps_connectivity{{state=\"{state}\"}} {}\n",
            u8::from(status.connectivity == state)
        ));
    }
    out.push_str("# HELP station_dps_paused 1 while uploads are stopped until a supervisor retries.\n# TYPE station_dps_paused gauge\n");
    out.push_str(&format!(
        "station_dps_paused {}\n",
        u8::from(status.paused.is_some())
    ));
    out.push_str("# HELP station_labels Label jobs by state.\n# TYPE station_labels gauge\n");
    for (state, n) in [("pending", labels.pending), ("printed", labels.printed)] {
        out.push_str(&format!("station_labels{{state=\"{state}\"}} {n}\n"));
    }
    out.push_str("# HELP station_labels_oldest_pending_seconds Age of the oldest label waiting for the printer.\n# TYPE station_labels_oldest_pending_seconds gauge\n");
    out.push_str(&format!(
        "station_labels_oldest_pending_seconds {}\n",
        age_s(&labels.oldest_pending).unwrap_or(0)
    ));
    let printer = s
        .labels
        .printer
        .lock()
        .map(|p| p.state)
        .unwrap_or("unknown");
    out.push_str("# HELP station_printer_state 1 for the current label printer state.\n# TYPE station_printer_state gauge\n");
    for state in ["ready", "problem", "unknown"] {
        out.push_str(&format!(
            "station_printer_state{{state=\"{state}\"}} {}\n",
            u8::from(printer == state)
        ));
    }
    jig_metrics(&s.slots.all(), &mut out);
    super::plant::metrics(&s, &mut out);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

/// A metric family of the jig lines: name, type, help, and the value.
type JigFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::core::noise::LineHealth) -> String,
);

/// Each slot's jig line: what went wrong on it since the station started,
/// and the last hour's figures.
fn jig_metrics(slots: &[crate::workflow::SlotView], out: &mut String) {
    let families: [JigFamily; 5] = [
        (
            "station_jig_damaged_frames_total",
            "counter",
            "Damaged frames on the slot's jig line, either way, since the station started.",
            |l| l.damaged_total.to_string(),
        ),
        (
            "station_jig_resends_total",
            "counter",
            "Requests sent to the jig again, since the station started.",
            |l| l.resends_total.to_string(),
        ),
        (
            "station_jig_damaged_frames_per_hour",
            "gauge",
            "Damaged frames on the slot's jig line in the last hour.",
            |l| l.damaged_last_hour.to_string(),
        ),
        (
            "station_jig_resends_per_board",
            "gauge",
            "Resends per board over the boards of the last hour.",
            |l| format!("{:.3}", l.resends_per_board()),
        ),
        (
            "station_jig_noisy",
            "gauge",
            "1 while the slot's jig line is noisy (check or replace the cable).",
            |l| u8::from(l.noisy).to_string(),
        ),
    ];
    for (name, kind, help, value) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for v in slots {
            out.push_str(&format!(
                "{name}{{slot=\"{}\"}} {}\n",
                v.slot,
                value(&v.line)
            ));
        }
    }
}
