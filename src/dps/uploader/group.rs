//! `[dps] enrollment = "group"`: the line's one symmetric-key enrollment
//! group, made in DPS (disabled, with the master key as its group key)
//! before anything else is sent, and left alone once it is there.

use serde_json::Value;

use super::{Next, Uploader};
use crate::dps::DpsError;
use crate::dps::uploader::pacer::Pacer;

/// The enrollment group of the line.
#[derive(Debug, Clone)]
pub struct GroupEnrollment {
    pub id: String,
    /// The group as created, without its keys (put in when it is sent).
    pub body: Value,
}

impl Uploader {
    /// Makes the line's enrollment group if DPS does not hold it.
    pub(super) async fn ensure_group(&self, pacer: &Pacer, group: &GroupEnrollment) -> Next {
        pacer.slot().await;
        match self.client.get_enrollment_group(&group.id).await {
            Ok(Some(held)) => {
                self.count("ok");
                if held["attestation"]["type"] != "symmetricKey" {
                    return Next::Pause(format!(
                        "DPS holds an enrollment group {:?} that is not a symmetric-key group: the station cannot enroll its devices in it; choose another [dps] enrollment_group_id or remove that group, then retry",
                        group.id
                    ));
                }
                tracing::info!(group = %group.id, "the line's enrollment group is in DPS");
                Next::Continue
            }
            Ok(None) => {
                self.count("ok");
                let Some(keys) = self.device_keys.as_ref() else {
                    return Next::Pause(
                        "an enrollment group needs the master key ([symmetric_key])".into(),
                    );
                };
                let (primary, secondary) = match keys.group_keys() {
                    Ok(k) => k,
                    Err(e) => return Next::Pause(format!("the enrollment group's keys: {e}")),
                };
                let mut body = group.body.clone();
                body["attestation"]["symmetricKey"] = serde_json::json!({
                    "primaryKey": primary.as_str(),
                    "secondaryKey": secondary.as_str(),
                });
                pacer.slot().await;
                let result = self
                    .client
                    .put_enrollment_group(&group.id, &body, None)
                    .await;
                drop(body);
                match result {
                    Ok(_) => {
                        self.count("ok");
                        tracing::info!(group = %group.id, "the line's enrollment group was made in DPS, disabled");
                        Next::Continue
                    }
                    Err(e) => self.group_failed(e),
                }
            }
            Err(e) => self.group_failed(e),
        }
    }

    fn group_failed(&self, e: DpsError) -> Next {
        let msg = format!("the line's enrollment group: {e}");
        self.set(|s| s.last_error = Some(msg.clone()));
        match self.verdict(&e) {
            super::Verdict::Retry(after) => Next::Wait(after),
            super::Verdict::Park { .. } => Next::Pause(msg),
        }
    }
}
