//! The individual enrollment sent for each provisioned board.

use serde_json::{Value, json};

use crate::config::{Attestation, Config};
use crate::store::EnrollmentFacts;

/// What every enrollment from this station carries besides the board's own
/// facts.
#[derive(Debug, Clone)]
pub struct EnrollmentTemplate {
    pub line: String,
    pub desired_properties: serde_json::Map<String, Value>,
    pub allocation_policy: Option<String>,
    pub iot_hubs: Vec<String>,
    pub attestation: Attestation,
    /// One individual enrollment per device; false for `enrollment =
    /// "group"`, where the line's group covers every device.
    pub individual: bool,
}

impl EnrollmentTemplate {
    /// The line's enrollment group (`enrollment = "group"`): disabled,
    /// symmetric keys put in when it is sent, tagged with the station and
    /// line like each device's enrollment.
    pub fn group_body(&self, id: &str, station: &str) -> Value {
        let mut body = json!({
            "enrollmentGroupId": id,
            "provisioningStatus": "disabled",
            "attestation": {
                "type": "symmetricKey",
                "symmetricKey": {
                    "primaryKey": super::KEY_PLACEHOLDER,
                    "secondaryKey": super::KEY_PLACEHOLDER,
                }
            },
            "initialTwin": {
                "tags": { "station": station, "line": self.line },
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

impl EnrollmentTemplate {
    pub fn from_config(cfg: &Config) -> EnrollmentTemplate {
        EnrollmentTemplate {
            line: cfg.line.clone(),
            desired_properties: cfg.dps.desired_properties.clone(),
            allocation_policy: cfg.dps.allocation_policy.clone(),
            iot_hubs: cfg.dps.iot_hubs.clone(),
            attestation: cfg.dps.attestation,
            individual: cfg.dps.enrollment == crate::config::Enrollment::Individual,
        }
    }

    /// The enrollment: deviceId = GUID, disabled, tagged with where and how
    /// the device was made. X.509 attestation with the leaf as primary
    /// certificate and registrationId = GUID; or TPM attestation with the
    /// endorsement key, registrationId the GUID or DPS's convention.
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
        let (registration_id, attestation) = match (self.attestation, &f.tpm_ek) {
            (
                Attestation::Tpm {
                    dps_registration_id,
                },
                Some(ek),
            ) => {
                use base64::Engine;
                let id = if dps_registration_id {
                    tpm_registration_id(ek)
                } else {
                    f.guid.clone()
                };
                let ek = base64::engine::general_purpose::STANDARD.encode(ek);
                (
                    id,
                    json!({ "type": "tpm", "tpm": { "endorsementKey": ek } }),
                )
            }
            (Attestation::SymmetricKey, _) => (
                f.guid.clone(),
                // The keys are derived and put in just before it is sent
                // (`dps::fill_keys`): never stored.
                json!({
                    "type": "symmetricKey",
                    "symmetricKey": {
                        "primaryKey": super::keys::placeholder(f.master_key_id.as_deref()),
                        "secondaryKey": super::keys::placeholder(f.master_key_id.as_deref()),
                    }
                }),
            ),
            _ => (
                f.guid.clone(),
                json!({
                    "type": "x509",
                    "x509": { "clientCertificates": { "primary": { "certificate": f.certificate_pem } } }
                }),
            ),
        };
        let mut body = json!({
            "registrationId": registration_id,
            "deviceId": f.guid,
            "provisioningStatus": "disabled",
            "attestation": attestation,
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

/// DPS's registration id for a TPM: SHA-256 over the endorsement key
/// (TPM2B_PUBLIC), base32 (RFC 4648), lower case, without padding.
pub fn tpm_registration_id(ek: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, ek);
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in digest.as_ref() {
        buffer = (buffer << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
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
            attestation: Attestation::X509,
            individual: true,
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
            tpm_ek: Some(b"\x00\x03abc".to_vec()),
            master_key_id: None,
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

    #[test]
    fn tpm_attestation_carries_the_endorsement_key() {
        let mut t = EnrollmentTemplate {
            line: "l".into(),
            desired_properties: Default::default(),
            allocation_policy: None,
            iot_hubs: vec![],
            attestation: Attestation::Tpm {
                dps_registration_id: false,
            },
            individual: true,
        };
        let f = EnrollmentFacts {
            guid: "0a1b2c3d-0000-4000-8000-0000000000aa".into(),
            hw_revision: None,
            fw_version: None,
            mac: None,
            station: "st".into(),
            slot: 1,
            operator: None,
            work_order: None,
            certificate_pem: String::new(),
            provisioned_at: "2026-11-22T10:00:00.000Z".into(),
            tpm_ek: Some(b"\x00\x03abc".to_vec()),
            master_key_id: None,
        };
        let b = t.body(&f);
        assert_eq!(b["attestation"]["type"], "tpm");
        assert_eq!(b["attestation"]["tpm"]["endorsementKey"], "AANhYmM=");
        assert!(b["attestation"].get("x509").is_none());
        assert_eq!(b["registrationId"], f.guid);
        t.attestation = Attestation::Tpm {
            dps_registration_id: true,
        };
        // Known answer from Python: base32(sha256(ek)).lower(), no padding.
        assert_eq!(
            t.body(&f)["registrationId"],
            "ov7q32u2uda7rxk2wwwjwmhhu4qsxmi3oaumaii6xvislsvco76q"
        );
        assert_eq!(t.body(&f)["deviceId"], f.guid);
    }
}
