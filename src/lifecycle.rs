//! Asking for a device lifecycle action: who may ask for what, what the
//! request must carry, and queuing it (with its audit row) for the
//! uploader, which carries it out in DPS when DPS can be reached. The web
//! handlers and `station device` both come through here, so the rules and
//! the words are the same.
//!
//! - activate: activators, supervisors and admins; a hub from
//!   `[dps] activation_hubs`, initial-twin tags and desired properties.
//! - disable, enable: supervisors and admins, with a reason.
//! - revoke: supervisors and admins, with a reason and a confirmation; the
//!   certificate goes on the CRL and the GUID is refused from then on.
//! - retire: supervisors and admins, with a reason and a confirmation;
//!   every certificate of the device goes on the CRL, its enrollment is
//!   deleted from DPS, and the GUID is refused from then on.
//!
//! An activation of a device whose location is recorded
//! ([`crate::registry`]) carries it as the twin tag `location`, unless the
//! activator gave that tag.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::dps::lifecycle::{Activation, check_activation};
use crate::ids::Guid;
use crate::store::{Queued, Role, Store, StoreError};

/// What was asked, before it is checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// `activate`, `disable`, `enable`, `revoke` or `retire`.
    pub action: String,
    pub reason: Option<String>,
    /// Activate: the IoT hub.
    pub hub: Option<String>,
    pub tags: Map<String, Value>,
    pub desired: Map<String, Value>,
    /// Revoke, retire: the caller confirmed it cannot be undone.
    pub confirmed: bool,
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the station has no provisioned device {0}: check the GUID on the label")]
    Unknown(String),
    #[error(
        "device {guid} was revoked ({at}, by {by}: {reason}): a revoked device cannot be activated, disabled or enabled again"
    )]
    Revoked {
        guid: String,
        at: String,
        by: String,
        reason: String,
    },
    #[error(
        "device {guid} was retired ({at}, by {by}: {reason}): a retired device cannot be activated, disabled, enabled, revoked or retired again"
    )]
    Retired {
        guid: String,
        at: String,
        by: String,
        reason: String,
    },
    #[error("the station's records cannot be written: {0}")]
    Store(String),
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Refused {
        Refused::Store(e.to_string())
    }
}

/// Whether `role` may ask for `action`.
pub fn allowed(role: Role, action: &str) -> Result<(), Refused> {
    let ok = match action {
        "activate" => role.may_activate(),
        "disable" | "enable" | "revoke" | "retire" => role >= Role::Supervisor,
        other => {
            return Err(Refused::Invalid(format!(
                "{other:?} is not a device action: activate, disable, enable, revoke or retire"
            )));
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Refused::Forbidden(format!(
            "{action} needs the {} role; this is {}",
            if action == "activate" {
                "activator or supervisor"
            } else {
                "supervisor"
            },
            role.as_str()
        )))
    }
}

/// Checks a request and queues it; the action's id.
pub fn request(
    store: &Store,
    hubs: &[String],
    guid: &Guid,
    req: &Request,
    actor: &str,
    role: Role,
    now: OffsetDateTime,
) -> Result<i64, Refused> {
    allowed(role, &req.action)?;
    let reason = req
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(Refused::Invalid(
            "the reason is longer than 500 characters".into(),
        ));
    }
    let params = match req.action.as_str() {
        "activate" => {
            let mut tags = req.tags.clone();
            if !tags.contains_key("location")
                && let Some(loc) = store.device_location(guid.as_str())?
            {
                tags.insert("location".into(), loc.as_tag());
            }
            let a = Activation {
                hub: req.hub.clone().unwrap_or_default(),
                tags,
                desired: req.desired.clone(),
            };
            check_activation(&a, hubs).map_err(Refused::Invalid)?;
            serde_json::to_value(&a).map_err(|e| Refused::Invalid(e.to_string()))?
        }
        action => {
            if reason.is_none() {
                return Err(Refused::Invalid(format!(
                    "say why the device is to be {}: the reason goes in the audit trail",
                    past(action)
                )));
            }
            if action == "revoke" && !req.confirmed {
                return Err(Refused::Invalid(
                    "revoking cannot be undone: confirm it (`--yes` on the command line, \"confirm\": true over the API, the checkbox on the page); the device's certificates go on the revocation list and the device is never enabled or provisioned again without an admin".into(),
                ));
            }
            if action == "retire" && !req.confirmed {
                return Err(Refused::Invalid(
                    "retiring cannot be undone: confirm it (`--yes` on the command line, \"confirm\": true over the API, the checkbox on the page); the device's enrollment is deleted from DPS, its certificates go on the revocation list, and it is never provisioned again without an admin".into(),
                ));
            }
            Value::Object(Map::new())
        }
    };
    match store.queue_device_action(guid, &req.action, &params, reason, actor, now)? {
        Queued::Queued(id) => Ok(id),
        Queued::Unknown => Err(Refused::Unknown(guid.to_string())),
        Queued::InGroup => Err(Refused::Invalid(format!(
            "device {guid} is enrolled through the line's enrollment group ([dps] enrollment = \"group\") and has no enrollment of its own to {}: enable or disable the group in DPS, which acts on every device of the line",
            req.action
        ))),
        Queued::NoCertificate => Err(Refused::Invalid(format!(
            "device {guid} has a symmetric key, not a certificate: there is nothing to revoke; disable it to stop it registering, or retire it to delete its enrollment"
        ))),
        Queued::Revoked(r) => Err(Refused::Revoked {
            guid: guid.to_string(),
            at: r.revoked_at,
            by: r.revoked_by,
            reason: r.reason,
        }),
        Queued::Retired(r) => Err(Refused::Retired {
            guid: guid.to_string(),
            at: r.retired_at,
            by: r.retired_by,
            reason: r.reason,
        }),
    }
}

fn past(action: &str) -> &'static str {
    match action {
        "disable" => "disabled",
        "enable" => "enabled",
        "retire" => "retired",
        _ => "revoked",
    }
}
