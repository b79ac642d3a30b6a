//! The plant tier over HTTP: the forwarder's state (`GET /api/v1/plant`),
//! and look-ups across stations for the supervisor and device pages, each
//! bounded in time (the plant database may be down; a page never hangs on
//! it).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::plant::{PlantError, PlantHandle, PlantStatus};
use crate::store::Role;

/// Longest a page waits for the plant database.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// The forwarder's state, if the station has `[plant]`.
pub fn snapshot(s: &AppState) -> Option<PlantStatus> {
    s.plant
        .as_ref()
        .and_then(|p| p.status.lock().ok().map(|g| g.clone()))
}

/// `GET /api/v1/plant`: operators and up.
pub async fn status(State(s): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    Ok(Json(match snapshot(&s) {
        Some(p) => {
            let mut v = serde_json::to_value(&p)
                .map_err(|e| ApiError::Internal(format!("the plant status: {e}")))?;
            v["configured"] = true.into();
            v["summary"] = p.summary().into();
            v
        }
        None => json!({ "configured": false }),
    }))
}

/// Runs `f` with a connection from the plant's pool, within
/// [`LOOKUP_TIMEOUT`]; `None` without `[plant]`.
async fn lookup<T, F>(s: &AppState, f: F) -> Option<Result<T, PlantError>>
where
    F: AsyncFnOnce(&crate::plant::PooledClient) -> Result<T, PlantError>,
{
    let p: &PlantHandle = s.plant.as_ref()?;
    Some(p.lookup(LOOKUP_TIMEOUT, f).await)
}

/// Prometheus lines for the plant tier (none without `[plant]`).
pub fn metrics(s: &AppState, out: &mut String) {
    let Some(p) = snapshot(s) else {
        return;
    };
    out.push_str("# HELP station_plant_connected 1 while the plant database is reached.\n# TYPE station_plant_connected gauge\n");
    out.push_str(&format!(
        "station_plant_connected {}\n",
        u8::from(p.connected)
    ));
    out.push_str("# HELP station_plant_lag_records Changes to records the plant database does not have yet.\n# TYPE station_plant_lag_records gauge\n");
    out.push_str(&format!("station_plant_lag_records {}\n", p.lag_records));
    out.push_str("# HELP station_plant_lag_seconds Age of the oldest change not yet in the plant database.\n# TYPE station_plant_lag_seconds gauge\n");
    out.push_str(&format!("station_plant_lag_seconds {:.3}\n", p.lag_seconds));
    out.push_str("# HELP station_plant_forwarded_rows_total Rows committed to the plant database.\n# TYPE station_plant_forwarded_rows_total counter\n");
    out.push_str(&format!("station_plant_forwarded_rows_total {}\n", p.rows));
    if let Some(n) = p.conflicts {
        out.push_str("# HELP station_plant_conflicts GUIDs with live certificates from two or more stations.\n# TYPE station_plant_conflicts gauge\n");
        out.push_str(&format!("station_plant_conflicts {n}\n"));
    }
}

/// Where the plant has seen a GUID this station does not know, in words:
/// `None` without `[plant]`.
pub async fn elsewhere(s: &AppState, guid: &str) -> Option<String> {
    let g = guid.to_string();
    let found = lookup(s, async move |c| {
        crate::plant::views::whereabouts(c, &g).await
    })
    .await?;
    Some(match found {
        Ok(w) if w.is_empty() => "the plant has no record of it either".to_string(),
        Ok(w) => {
            let places: Vec<String> = w
                .iter()
                .map(|p| {
                    let mut t = format!("station {} ({})", p.station_id, p.line);
                    if let (Some(st), Some(at)) = (&p.last_status, &p.last_seen) {
                        t.push_str(&format!(": {st} {at}"));
                    }
                    let live: Vec<&str> = p
                        .certificates
                        .iter()
                        .filter(|c| !c.revoked && c.state != "abandoned")
                        .map(|c| c.serial.as_str())
                        .collect();
                    if !live.is_empty() {
                        t.push_str(&format!(", certificate {}", live.join(", ")));
                    }
                    t
                })
                .collect();
            format!("the plant knows it from {}", places.join("; "))
        }
        Err(e) => format!("the plant could not be asked: {e}"),
    })
}

/// The conflicts the plant lists, for the supervisor page: `None` without
/// `[plant]`.
pub async fn conflicts(s: &AppState) -> Option<Result<Vec<crate::plant::views::Conflict>, String>> {
    lookup(s, async |c| crate::plant::views::conflicts(c).await)
        .await
        .map(|r| r.map_err(|e| e.to_string()))
}
