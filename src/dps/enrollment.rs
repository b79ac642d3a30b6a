//! The individual enrollment sent for each provisioned board.

use serde_json::{Value, json};

use crate::config::Config;
use crate::store::EnrollmentFacts;

/// What every enrollment from this station carries besides the board's own
/// facts.
#[derive(Debug, Clone)]
pub struct EnrollmentTemplate {
    pub line: String,
    pub desired_properties: serde_json::Map<String, Value>,
    pub allocation_policy: Option<String>,
    pub iot_hubs: Vec<String>,
}

impl EnrollmentTemplate {
    pub fn from_config(cfg: &Config) -> EnrollmentTemplate {
        EnrollmentTemplate {
            line: cfg.line.clone(),
            desired_properties: cfg.dps.desired_properties.clone(),
            allocation_policy: cfg.dps.allocation_policy.clone(),
            iot_hubs: cfg.dps.iot_hubs.clone(),
        }
    }

    /// The enrollment: registrationId = deviceId = GUID, X.509 attestation
    /// with the leaf as primary certificate, disabled, tagged with where and
    /// how the device was made.
    pub fn body(&self, f: &EnrollmentFacts) -> Value {
        let mut tags = json!({
            "station": f.station,
            "line": self.line,
            "slot": f.slot,
            "provisionedAt": f.provisioned_at,
        });
        for (k, v) in [
            ("workOrder", &f.work_order),
            ("hardwareRevision", &f.hw_revision),
            ("firmwareVersion", &f.fw_version),
            ("mac", &f.mac),
            ("operator", &f.operator),
        ] {
            if let Some(v) = v {
                tags[k] = json!(v);
            }
        }
        let mut body = json!({
            "registrationId": f.guid,
            "deviceId": f.guid,
            "provisioningStatus": "disabled",
            "attestation": {
                "type": "x509",
                "x509": { "clientCertificates": { "primary": { "certificate": f.certificate_pem } } }
            },
            "initialTwin": {
                "tags": tags,
                "properties": { "desired": self.desired_properties }
            },
            "capabilities": { "iotEdge": false }
        });
        if let Some(p) = &self.allocation_policy {
            body["allocationPolicy"] = json!(p);
        }
        if !self.iot_hubs.is_empty() {
            body["iotHubs"] = json!(self.iot_hubs);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_contract_fields() {
        let t = EnrollmentTemplate {
            line: "line-1".into(),
            desired_properties: json!({"telemetryInterval": 60})
                .as_object()
                .unwrap()
                .clone(),
            allocation_policy: Some("static".into()),
            iot_hubs: vec!["hub.azure-devices.net".into()],
        };
        let f = EnrollmentFacts {
            guid: "0a1b2c3d-0000-4000-8000-0000000000aa".into(),
            hw_revision: Some("B2".into()),
            fw_version: Some("1.4.2".into()),
            mac: None,
            station: "st-1".into(),
            slot: 3,
            operator: None,
            work_order: Some("WO-7".into()),
            certificate_pem: "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
                .into(),
            provisioned_at: "2026-11-22T10:00:00.000Z".into(),
        };
        let b = t.body(&f);
        assert_eq!(b["registrationId"], f.guid);
        assert_eq!(b["deviceId"], f.guid);
        assert_eq!(b["provisioningStatus"], "disabled");
        assert_eq!(b["attestation"]["type"], "x509");
        assert_eq!(
            b["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"],
            f.certificate_pem
        );
        let tags = &b["initialTwin"]["tags"];
        assert_eq!(
            (tags["station"].as_str(), tags["line"].as_str()),
            (Some("st-1"), Some("line-1"))
        );
        assert_eq!(tags["workOrder"], "WO-7");
        assert_eq!(tags["hardwareRevision"], "B2");
        assert_eq!(tags["firmwareVersion"], "1.4.2");
        assert_eq!(tags["provisionedAt"], f.provisioned_at);
        assert!(tags.get("mac").is_none());
        assert_eq!(
            b["initialTwin"]["properties"]["desired"]["telemetryInterval"],
            60
        );
        assert_eq!(b["allocationPolicy"], "static");
        assert_eq!(b["iotHubs"][0], "hub.azure-devices.net");
    }
}
