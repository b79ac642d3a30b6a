//! What admins may see of the configuration ([`Config::public_view`]):
//! everything but secrets. It reads a validated [`Config`]; it knows
//! nothing of the file.

use super::{CaBackend, Config, Enrollment, Keygen, SlotLink};

impl Config {
    /// What admins may see of the configuration: everything but secrets
    /// (the DPS connection string shows only its host and policy).
    pub fn public_view(&self) -> serde_json::Value {
        let slots: Vec<serde_json::Value> = self
            .slots
            .iter()
            .map(|s| {
                let mut v = match &s.link {
                    SlotLink::Serial { device, baud } => {
                        serde_json::json!({ "id": s.id.0, "link": "serial", "device": device, "baud": baud })
                    }
                    SlotLink::Simulated(o) => serde_json::json!({
                        "id": s.id.0, "link": "simulated",
                        "fault": o.fault.as_ref().map(|f| f.to_string()),
                    }),
                };
                v["keygen"] = s.keygen.as_str().into();
                if let Keygen::Tpm(t) = &s.keygen {
                    v["tcti"] = t.tcti.clone().into();
                    v["key_handle"] = format!("{:#010x}", t.key_handle).into();
                    v["cert_nv_index"] = format!("{:#010x}", t.cert_nv_index).into();
                }
                v
            })
            .collect();
        serde_json::json!({
            "file": self.file.display().to_string(),
            "station": { "id": self.station_id, "line": self.line, "data_dir": self.data_dir.display().to_string(), "listen": self.listen.to_string(), "work_order": self.work_order },
            "ca": {
                "key": self.ca.backend.as_str(),
                "certificate_file": self.ca_certificate_path().display().to_string(),
                "key_file": matches!(self.ca.backend, CaBackend::File).then(|| self.ca_key_path().display().to_string()),
                "pkcs11": match &self.ca.backend {
                    CaBackend::Pkcs11(p) => serde_json::json!({ "module": p.module.display().to_string(), "token_label": p.token_label, "key_label": p.key_label, "pin_from_file": p.pin_file.is_some() }),
                    _ => serde_json::Value::Null,
                },
                "tpm": match &self.ca.backend {
                    CaBackend::Tpm(t) => serde_json::json!({ "tcti": t.tcti, "handle": format!("{:#010x}", t.handle) }),
                    _ => serde_json::Value::Null,
                },
                "expiry_warning_days": self.ca.expiry_warning_days,
                "leaf_validity_days": self.ca.leaf_validity_days,
            },
            "jig": {
                "timeout_ms": self.timing.timeout.as_millis() as u64,
                "slow_timeout_ms": self.timing.slow_timeout.as_millis() as u64,
                "attempts": self.timing.attempts,
                "piece_bytes": self.piece_bytes,
                "poll_ms": self.poll.as_millis() as u64,
                "reconnect_ms": self.reconnect.as_millis() as u64,
            },
            "slots": slots,
            "dps": {
                "configured": self.dps.connection.is_some(),
                "host": self.dps.connection.as_ref().map(|c| c.host.clone()),
                "policy": self.dps.connection.as_ref().map(|c| c.key_name.clone()),
                "connection_string_from_environment": self.dps.connection_from_env,
                "endpoint": self.dps.endpoint,
                "ops_per_minute": self.dps.ops_per_minute,
                "allocation_policy": self.dps.allocation_policy,
                "iot_hubs": self.dps.iot_hubs,
                "activation_hubs": self.dps.activation_hubs,
                "attestation": self.dps.attestation.as_str(),
                "enrollment": match self.dps.enrollment {
                    Enrollment::Individual => "individual",
                    Enrollment::Group => "group",
                },
                "enrollment_group_id": self.dps.enrollment_group_id,
                "id_scope": self.dps.id_scope,
                "global_endpoint": self.dps.global_endpoint,
                "ca_file": self.dps.net.ca_file.as_ref().map(|f| f.display().to_string()),
                "ca_certificates": self.dps.net.ca_certificates.len(),
                // Never the proxy's user name or password.
                "proxy": self.dps.net.proxy.as_ref().map(|p| p.shown()),
                "proxy_credentials": self.dps.net.proxy.as_ref().is_some_and(|p| p.has_credentials()),
                "proxy_from": self.dps.net.proxy_from,
                "no_proxy": self.dps.net.no_proxy,
            },
            "ui": {
                "session_idle_minutes": self.session_idle.as_secs() / 60,
                "https": self.ui_tls.is_some(),
                "tls_cert_file": self.ui_tls.as_ref().map(|t| t.cert_file.display().to_string()),
                "oidc": self.oidc.as_ref().map(|o| serde_json::json!({
                    "issuer": o.issuer,
                    "client_id": o.client_id,
                    "client_secret_env": o.client_secret_env,
                    "client_secret_present": !o.client_secret.secret().is_empty(),
                    "redirect_url": o.redirect_url,
                    "scopes": o.scopes,
                    "roles_claim": o.roles_claim,
                    "roles": o.mapping(),
                })),
            },
            "label": self.label.public_view(),
            "printer": self.printer.public_view(),
            "plant": self.plant.as_ref().map(|p| serde_json::json!({
                "database": p.shown_url(),
                "database_url_from_environment": p.url_from_env,
                "tls": p.ca_file.is_some(),
                "ca_file": p.ca_file.as_ref().map(|f| f.display().to_string()),
                "batch": p.batch,
                "max_lag_warning_s": p.max_lag_warning.as_secs(),
                "dps_ops_per_minute": p.dps_ops_per_minute,
            })),
        })
    }
}
