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
            // working. Write back the keys DPS holds, once they are found
            // to be the ones the station gave the device.
            if body["attestation"]["type"] == "symmetricKey" {
                match self.symmetric_keys_held(pacer, action, &reg_id).await {
                    Ok(Some(held)) => body["attestation"] = held,
                    Ok(None) => return Next::Continue,
                    Err(next) => return next,
                }
            }
            pacer.slot().await;
            match self.client.replace(&body, &etag).await {
                Ok(stored) => {
                    self.count("ok");
                    tracing::info!(guid = %action.guid, action = %action.action, "device action applied in DPS");
                    // The store keeps no device key DPS may echo here.
                    let seen = if stored.is_object() { stored } else { body };
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
            if current["attestation"]["type"] == "symmetricKey" {
                match self.symmetric_keys_held(pacer, action, reg_id).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return Next::Continue,
                    Err(next) => return next,
                }
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

    /// The attestation DPS holds for a symmetric-key enrollment (read with
    /// `/attestationmechanism`, as a GET leaves the keys out), if its
    /// primary key is the one the station derives for the device. Parks
    /// the action (`Ok(None)`) when it is not, or when the station cannot
    /// derive it: the enrollment was made elsewhere, or with another
    /// master key, and is not the station's to change.
    async fn symmetric_keys_held(
        &self,
        pacer: &Pacer,
        action: &DeviceAction,
        reg_id: &str,
    ) -> Result<Option<Value>, Next> {
        pacer.slot().await;
        let held = match self.client.attestation_mechanism(reg_id).await {
            Ok(held) => held,
            Err(e) => return Err(self.action_failed(action, e).await),
        };
        self.count("ok");
        let ours = self
            .device_keys
            .as_ref()
            .ok_or_else(|| {
                "the station has no master key ([symmetric_key]) to check the device's keys"
                    .to_string()
            })
            .and_then(|k| k.derive(reg_id))
            .map(|k| {
                use base64::Engine;
                zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(k.as_slice()),
                )
            });
        let reason = match (&ours, held["symmetricKey"]["primaryKey"].as_str()) {
            (Ok(ours), Some(theirs)) if ours.as_str() == theirs => return Ok(Some(held)),
            (Err(e), _) => format!("{e}: nothing was changed"),
            _ => "DPS holds other symmetric keys for this device than the station gave it (made elsewhere, or with another master key): nothing was changed; check the device's history".to_string(),
        };
        self.park_action(action, &reason).await;
        Ok(None)
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
