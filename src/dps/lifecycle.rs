//! A device's life after the line, as DPS sees it: what activate, disable,
//! enable and revoke change in its individual enrollment, and the checks on
//! what an activator types. No I/O: the uploader reads the enrollment,
//! applies the action here, and writes it back with `If-Match`. A retire
//! changes nothing in the enrollment: the uploader deletes it, with
//! `If-Match` too.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The lifecycle actions, as the store, the API and the CLI name them.
pub const ACTIONS: [&str; 5] = ["activate", "disable", "enable", "revoke", "retire"];

/// Most bytes of initial-twin tags, as IoT Hub allows for a twin's tags.
pub const TAGS_LIMIT: usize = 8 * 1024;
/// Most bytes of initial desired properties (IoT Hub's limit).
pub const DESIRED_LIMIT: usize = 32 * 1024;
/// Deepest nesting of twin JSON objects IoT Hub allows.
pub const DEPTH_LIMIT: usize = 10;

/// What an activator asks for: the hub, initial-twin tags and desired
/// properties. Both are JSON objects; they are merged into the
/// enrollment's initial twin, key by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Activation {
    pub hub: String,
    #[serde(default)]
    pub tags: Map<String, Value>,
    #[serde(default)]
    pub desired: Map<String, Value>,
}

/// A lifecycle action with what it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Activate(Activation),
    Disable,
    Enable,
    /// Disables the enrollment for good (the station also revokes the
    /// certificate and refuses the GUID).
    Revoke,
    /// Deletes the enrollment (the station also revokes every certificate
    /// of the device and refuses the GUID).
    Retire,
}

impl Action {
    /// The action from its stored name and parameters.
    pub fn from_stored(name: &str, params: &Value) -> Result<Action, String> {
        match name {
            "activate" => serde_json::from_value(params.clone())
                .map(Action::Activate)
                .map_err(|e| format!("the stored activation is unreadable: {e}")),
            "disable" => Ok(Action::Disable),
            "enable" => Ok(Action::Enable),
            "revoke" => Ok(Action::Revoke),
            "retire" => Ok(Action::Retire),
            other => Err(format!("{other:?} is not a device action")),
        }
    }
}

/// Checks an activation against the configured hubs and IoT Hub's twin
/// rules; the message says what to fix.
pub fn check_activation(a: &Activation, hubs: &[String]) -> Result<(), String> {
    if hubs.is_empty() {
        return Err(
            "no IoT hubs are configured for activation: add them to [dps] activation_hubs in station.toml"
                .into(),
        );
    }
    if !hubs.iter().any(|h| h == &a.hub) {
        return Err(format!(
            "{:?} is not one of the IoT hubs this station may assign: choose one of {}",
            a.hub,
            hubs.join(", ")
        ));
    }
    check_twin("tags", &a.tags, TAGS_LIMIT)?;
    check_twin("desired properties", &a.desired, DESIRED_LIMIT)?;
    Ok(())
}

/// Reads twin JSON typed into a form: empty means none; otherwise it must
/// be a JSON object.
pub fn parse_twin(what: &str, text: &str) -> Result<Map<String, Value>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(format!(
            "the {what} must be a JSON object, like {{\"location\": \"hall 3\"}}"
        )),
        Err(e) => Err(format!(
            "the {what} are not valid JSON ({e}): write a JSON object, like {{\"location\": \"hall 3\"}}"
        )),
    }
}

fn check_twin(what: &str, m: &Map<String, Value>, limit: usize) -> Result<(), String> {
    let size = Value::Object(m.clone()).to_string().len();
    if size > limit {
        return Err(format!(
            "the {what} are {size} bytes of JSON; IoT Hub takes at most {limit}: leave some out"
        ));
    }
    check_keys(what, m, 1)
}

fn check_keys(what: &str, m: &Map<String, Value>, depth: usize) -> Result<(), String> {
    if depth > DEPTH_LIMIT {
        return Err(format!(
            "the {what} nest deeper than {DEPTH_LIMIT} levels, which IoT Hub refuses"
        ));
    }
    for (k, v) in m {
        if k.is_empty()
            || k.len() > 1024
            || k.chars()
                .any(|c| c.is_control() || c == '.' || c == '$' || c == ' ')
        {
            return Err(format!(
                "the {what} have the key {k:?}: twin keys may not be empty, longer than 1 KB, or hold '.', '$', spaces or control characters"
            ));
        }
        match v {
            Value::Object(inner) => check_keys(what, inner, depth + 1)?,
            Value::Array(items) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        check_keys(what, inner, depth + 1)?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies an action to the enrollment as DPS returned it. `None` when DPS
/// already holds what the action asks (nothing to write: a write whose
/// answer was lost, or someone did the same). Otherwise the body to write
/// back: the enrollment as read, without the fields DPS fills in, with the
/// device's certificate put back (DPS returns only its `info`), and the
/// action's changes. Fields the action does not touch are kept as read,
/// so a concurrent change to them survives.
pub fn apply(action: &Action, current: &Value, certificate_pem: Option<&str>) -> Option<Value> {
    let mut body = current.clone();
    let status = match action {
        Action::Activate(_) | Action::Enable => "enabled",
        Action::Disable | Action::Revoke => "disabled",
        // Nothing to write: a retire deletes the enrollment instead.
        Action::Retire => return None,
    };
    body["provisioningStatus"] = status.into();
    if let Action::Activate(a) = action {
        body["allocationPolicy"] = "static".into();
        body["iotHubs"] = serde_json::json!([a.hub]);
        if !body["initialTwin"].is_object() {
            body["initialTwin"] = serde_json::json!({});
        }
        let twin = &mut body["initialTwin"];
        merge(&mut twin["tags"], &a.tags);
        if !twin["properties"].is_object() {
            twin["properties"] = serde_json::json!({});
        }
        merge(&mut twin["properties"]["desired"], &a.desired);
    }
    if changed_fields(current, &body) {
        for ro in [
            "registrationState",
            "createdDateTimeUtc",
            "lastUpdatedDateTimeUtc",
        ] {
            if let Some(o) = body.as_object_mut() {
                o.remove(ro);
            }
        }
        if let Some(pem) = certificate_pem
            && body["attestation"]["type"] == "x509"
        {
            body["attestation"]["x509"]["clientCertificates"]["primary"] =
                serde_json::json!({ "certificate": pem });
        }
        if let Some(o) = body.as_object_mut() {
            // The hub is pinned by `static` + `iotHubs`; the legacy single
            // hub field would contradict it.
            if o.get("iotHubHostName").is_some_and(|v| !v.is_null()) && action_pins_hub(action) {
                o.insert("iotHubHostName".into(), Value::Null);
            }
        }
        Some(body)
    } else {
        None
    }
}

fn action_pins_hub(action: &Action) -> bool {
    matches!(action, Action::Activate(_))
}

/// Merges `ours` into the object at `slot` (made an object if it is not).
fn merge(slot: &mut Value, ours: &Map<String, Value>) {
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Some(o) = slot.as_object_mut() {
        for (k, v) in ours {
            o.insert(k.clone(), v.clone());
        }
    }
}

/// Whether the fields an action sets differ between the two.
fn changed_fields(current: &Value, target: &Value) -> bool {
    [
        "provisioningStatus",
        "allocationPolicy",
        "iotHubs",
        "initialTwin",
    ]
    .iter()
    .any(|f| normalise(&current[f]) != normalise(&target[f]))
}

/// An absent field and an empty object mean the same in a twin.
fn normalise(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null() && *v != &Value::Object(Map::new()))
                .map(|(k, v)| (k.clone(), normalise(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The SHA-256 thumbprint DPS reports for the enrollment's certificate, if
/// it reports one.
pub fn held_thumbprint(enrollment: &Value) -> Option<String> {
    enrollment["attestation"]["x509"]["clientCertificates"]["primary"]["info"]["sha256Thumbprint"]
        .as_str()
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enrollment() -> Value {
        json!({
            "registrationId": "g1",
            "deviceId": "g1",
            "provisioningStatus": "disabled",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"info": {"sha256Thumbprint": "AB12"}}}}},
            "initialTwin": {"tags": {"line": "A", "lot": "L1"}, "properties": {"desired": {"interval": 5}}},
            "etag": "e1",
            "createdDateTimeUtc": "2026-11-22T00:00:00Z",
            "lastUpdatedDateTimeUtc": "2026-11-22T00:00:00Z",
        })
    }

    fn activation() -> Activation {
        Activation {
            hub: "hub-a.azure-devices.net".into(),
            tags: json!({"location": "hall 3", "lot": "L2"})
                .as_object()
                .unwrap()
                .clone(),
            desired: json!({"mode": "eco"}).as_object().unwrap().clone(),
        }
    }

    #[test]
    fn activate_changes_exactly_its_fields_and_keeps_the_rest() {
        let body = apply(&Action::Activate(activation()), &enrollment(), Some("PEM")).unwrap();
        assert_eq!(body["provisioningStatus"], "enabled");
        assert_eq!(body["allocationPolicy"], "static");
        assert_eq!(body["iotHubs"], json!(["hub-a.azure-devices.net"]));
        assert_eq!(
            body["initialTwin"],
            json!({"tags": {"line": "A", "lot": "L2", "location": "hall 3"}, "properties": {"desired": {"interval": 5, "mode": "eco"}}})
        );
        assert_eq!(body["deviceId"], "g1");
        assert_eq!(body["etag"], "e1");
        assert_eq!(
            body["attestation"]["x509"]["clientCertificates"]["primary"],
            json!({"certificate": "PEM"})
        );
        assert!(body.get("createdDateTimeUtc").is_none());
        // Applied to what it wrote, nothing is left to do.
        assert_eq!(
            apply(&Action::Activate(activation()), &body, Some("PEM")),
            None
        );
    }

    #[test]
    fn disable_enable_and_revoke_set_the_status_only_when_it_differs() {
        let e = enrollment();
        assert_eq!(apply(&Action::Disable, &e, None), None);
        assert_eq!(apply(&Action::Revoke, &e, None), None);
        let on = apply(&Action::Enable, &e, None).unwrap();
        assert_eq!(on["provisioningStatus"], "enabled");
        assert_eq!(on["initialTwin"], e["initialTwin"]);
        let off = apply(&Action::Revoke, &on, None).unwrap();
        assert_eq!(off["provisioningStatus"], "disabled");
    }

    #[test]
    fn activation_input_is_checked() {
        let hubs = vec!["hub-a.azure-devices.net".to_string()];
        assert_eq!(check_activation(&activation(), &hubs), Ok(()));
        let mut other = activation();
        other.hub = "hub-z.azure-devices.net".into();
        assert!(
            check_activation(&other, &hubs)
                .unwrap_err()
                .contains("choose one of hub-a")
        );
        assert!(
            check_activation(&activation(), &[])
                .unwrap_err()
                .contains("activation_hubs")
        );

        assert!(
            parse_twin("tags", "{oops")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(
            parse_twin("tags", "[1]")
                .unwrap_err()
                .contains("JSON object")
        );
        assert_eq!(parse_twin("tags", "  ").unwrap(), Map::new());

        let mut big = activation();
        big.tags
            .insert("blob".into(), "x".repeat(TAGS_LIMIT).into());
        assert!(
            check_activation(&big, &hubs)
                .unwrap_err()
                .contains("at most 8192")
        );
        let mut dotted = activation();
        dotted.desired.insert("a.b".into(), 1.into());
        assert!(
            check_activation(&dotted, &hubs)
                .unwrap_err()
                .contains("\"a.b\"")
        );
        let mut deep = json!(1);
        for _ in 0..11 {
            deep = json!({ "k": deep });
        }
        let mut nested = activation();
        nested.tags = deep.as_object().unwrap().clone();
        assert!(
            check_activation(&nested, &hubs)
                .unwrap_err()
                .contains("deeper than 10")
        );
    }

    #[test]
    fn stored_actions_read_back() {
        let a = activation();
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(Action::from_stored("activate", &v), Ok(Action::Activate(a)));
        assert_eq!(
            Action::from_stored("revoke", &Value::Null),
            Ok(Action::Revoke)
        );
        assert!(Action::from_stored("explode", &Value::Null).is_err());
    }
}
