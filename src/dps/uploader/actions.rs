//! Device lifecycle actions through the uploader: read the enrollment,
//! apply the action (`super::super::lifecycle`), write it back with
//! `If-Match` on the etag read. A 412 (someone changed it in between) is
//! read and applied again, so neither change is lost; an action DPS
//! already reflects is not written again. A retire reads the enrollment
//! and deletes it with `If-Match`: an enrollment already gone (404 on the
//! read) is done without a `DELETE`, so a retire is deleted once even when
//! the station dies between the `DELETE` and recording it.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Next, Pacer, Uploader, Verdict};
use crate::dps::DpsError;
use crate::dps::lifecycle::{Action, apply, held_thumbprint};
use crate::store::{DeviceAction, blocking};

/// Reads after a 412 before the action is parked.
const CONFLICT_TRIES: u32 = 5;

impl Uploader {
    /// Carries out one device action.
    pub(super) async fn send_action(&self, pacer: &Pacer, action: &DeviceAction) -> Next {
        let act = match Action::from_stored(&action.action, &action.params) {
            Ok(a) => a,
            Err(e) => {
                self.park_action(action, &e).await;
                return Next::Continue;
            }
        };
        let store = self.store.clone();
        let guid = action.guid.clone();
        let (reg_id, pem) = match blocking(move || store.enrollment_facts_of(&guid)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot read the device's enrollment facts: {e}");
                return Next::Wait(None);
            }
        };
        let reg_id = reg_id.unwrap_or_else(|| action.guid.clone());
        let ours = pem
            .as_deref()
            .and_then(crate::ca::pem_to_der)
            .map(|d| crate::ca::fingerprint(&d).to_ascii_lowercase());
        if act == Action::Retire {
            return self
                .send_retire(pacer, action, &reg_id, ours.as_deref())
                .await;
        }
        for _ in 0..CONFLICT_TRIES {
            pacer.slot().await;
            let current = match self.client.get(&reg_id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    self.count("ok");
                    self.park_action(
                        action,
                        &format!("DPS has no enrollment {reg_id:?} for this device: check the outbox (`station outbox list`) and the DPS instance"),
                    )
                    .await;
                    return Next::Continue;
                }
                Err(e) => return self.action_failed(action, e).await,
            };
            self.count("ok");
            if let (Some(held), Some(ours)) = (held_thumbprint(&current), &ours)
                && &held != ours
            {
                self.park_action(
                    action,
                    "DPS holds another certificate for this device than the station's: it was enrolled elsewhere since; nothing was changed",
                )
                .await;
                return Next::Continue;
            }
            let Some(mut body) = apply(&act, &current, pem.as_deref()) else {
                tracing::info!(guid = %action.guid, action = %action.action, "DPS already reflects the device action");
                self.action_done(action, &current).await;
                return Next::Continue;
            };
            let Some(etag) = current["etag"].as_str().map(str::to_string) else {
                // Without an etag a write could not be conditional, and
                // could undo someone else's change.
                self.park_action(action, "DPS returned the enrollment without an etag: the station writes only with If-Match, so nothing was changed").await;
                return Next::Continue;
            };
            // A GET leaves out symmetric keys, and a PUT without them
            // would have DPS make new ones: the device's key would stop
            // working. Write back the keys DPS holds.
            if body["attestation"]["type"] == "symmetricKey" {
                pacer.slot().await;
                match self.client.attestation_mechanism(&reg_id).await {
                    Ok(held) => body["attestation"] = held,
                    Err(e) => return self.action_failed(action, e).await,
                }
            }
            pacer.slot().await;
            match self.client.replace(&body, &etag).await {
                Ok(stored) => {
                    self.count("ok");
                    tracing::info!(guid = %action.guid, action = %action.action, "device action applied in DPS");
                    let mut seen = if stored.is_object() { stored } else { body };
                    // The station keeps no device key, not even as DPS
                    // echoed it.
                    if let Some(k) = seen["attestation"]["symmetricKey"].as_object_mut() {
                        k.clear();
                    }
                    self.action_done(action, &seen).await;
                    return Next::Continue;
                }
                Err(DpsError::Rejected { status: 412, .. }) => {
                    self.count("rejected");
                    tracing::info!(guid = %action.guid, "the enrollment changed in DPS since it was read: reading it again");
                }
                Err(e) => return self.action_failed(action, e).await,
            }
        }
        self.park_action(
            action,
            &format!("DPS changed the enrollment between each read and write, {CONFLICT_TRIES} times: try the action again later"),
        )
        .await;
        Next::Continue
    }

    /// Carries out a retire: read the enrollment, delete it with `If-Match`
    /// on the etag read; gone already is done; a 412 is read again (up to
    /// [`CONFLICT_TRIES`] times, then parked).
    async fn send_retire(
        &self,
        pacer: &Pacer,
        action: &DeviceAction,
        reg_id: &str,
        ours: Option<&str>,
    ) -> Next {
        for _ in 0..CONFLICT_TRIES {
            pacer.slot().await;
            let current = match self.client.get(reg_id).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    self.count("ok");
                    tracing::info!(guid = %action.guid, "the retired device's enrollment is gone from DPS already");
                    self.action_gone(action).await;
                    return Next::Continue;
                }
                Err(e) => return self.action_failed(action, e).await,
            };
            self.count("ok");
            if let (Some(held), Some(ours)) = (held_thumbprint(&current), ours)
                && held != ours
            {
                self.park_action(
                    action,
                    "DPS holds another certificate for this device than the station's: it was enrolled elsewhere since; nothing was deleted",
                )
                .await;
                return Next::Continue;
            }
            let Some(etag) = current["etag"].as_str().map(str::to_string) else {
                self.park_action(action, "DPS returned the enrollment without an etag: the station deletes only with If-Match, so nothing was deleted").await;
                return Next::Continue;
            };
            pacer.slot().await;
            match self.client.delete(reg_id, &etag).await {
                Ok(()) | Err(DpsError::Rejected { status: 404, .. }) => {
                    self.count("ok");
                    crate::failpoint::hit("after_retire_delete");
                    tracing::info!(guid = %action.guid, "the retired device's enrollment was deleted from DPS");
                    self.action_gone(action).await;
                    return Next::Continue;
                }
                Err(DpsError::Rejected { status: 412, .. }) => {
                    self.count("rejected");
                    tracing::info!(guid = %action.guid, "the enrollment changed in DPS since it was read: reading it again before deleting");
                }
                Err(e) => return self.action_failed(action, e).await,
            }
        }
        self.park_action(
            action,
            &format!("DPS changed the enrollment between each read and delete, {CONFLICT_TRIES} times: try the retire again later"),
        )
        .await;
        Next::Continue
    }

    async fn action_gone(&self, action: &DeviceAction) {
        let store = self.store.clone();
        let (id, guid) = (action.id, action.guid.clone());
        let now = OffsetDateTime::now_utc();
        if let Err(err) = blocking(move || store.device_action_gone(id, &guid, now)).await {
            tracing::error!(
                "DPS deleted the retired device's enrollment but it could not be recorded: {err}"
            );
        }
    }

    async fn action_done(&self, action: &DeviceAction, enrollment: &Value) {
        let store = self.store.clone();
        let (id, guid, e) = (action.id, action.guid.clone(), enrollment.clone());
        let now = OffsetDateTime::now_utc();
        if let Err(err) = blocking(move || store.device_action_done(id, &guid, &e, now)).await {
            tracing::error!("DPS took the device action but it could not be recorded: {err}");
        }
    }

    async fn park_action(&self, action: &DeviceAction, reason: &str) {
        tracing::error!(guid = %action.guid, action = %action.action, "device action parked: {reason}");
        self.set(|s| s.last_error = Some(reason.to_string()));
        let store = self.store.clone();
        let (a, reason) = (action.clone(), reason.to_string());
        let now = OffsetDateTime::now_utc();
        if let Err(e) = blocking(move || store.park_device_action(&a, &reason, now)).await {
            tracing::error!("cannot record the parked device action: {e}");
        }
    }

    /// A call failed: wait and try again, or park.
    async fn action_failed(&self, action: &DeviceAction, e: DpsError) -> Next {
        let msg = e.to_string();
        let next = match self.verdict(&e) {
            Verdict::Retry(after) => Next::Wait(after),
            Verdict::Park { pause } => {
                self.park_action(action, &msg).await;
                return if pause {
                    Next::Pause(msg)
                } else {
                    Next::Continue
                };
            }
        };
        tracing::warn!(guid = %action.guid, "device action failed, will retry: {msg}");
        self.set(|s| s.last_error = Some(msg.clone()));
        let store = self.store.clone();
        let id = action.id;
        let now = OffsetDateTime::now_utc();
        if let Err(err) = blocking(move || store.device_action_failed(id, &msg, now)).await {
            tracing::error!("cannot record the failed device action: {err}");
        }
        next
    }
}
