//! `[dps]`: where and how enrollments are uploaded, with the connection
//! string (from the file or STATION_DPS_CONNECTION_STRING), the endpoint,
//! and how DPS is reached (`ca_file`, `proxy` or HTTPS_PROXY, NO_PROXY).
//! It checks the settings and reads `ca_file`; it does not talk to DPS.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::keygen::{self, Attestation};
use crate::dps::{ConnectionString, DpsNet, ProxyUrl, read_ca_file};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDps {
    connection_string: Option<String>,
    endpoint: Option<String>,
    ops_per_minute: u32,
    request_timeout_ms: u64,
    max_backoff_ms: u64,
    probe_ms: u64,
    allocation_policy: Option<String>,
    iot_hubs: Vec<String>,
    activation_hubs: Vec<String>,
    desired_properties: toml::Table,
    attestation: String,
    tpm_registration_id: String,
    enrollment: String,
    id_scope: Option<String>,
    global_endpoint: String,
    enrollment_group_id: Option<String>,
    ca_file: Option<String>,
    proxy: Option<String>,
}

impl Default for RawDps {
    fn default() -> Self {
        RawDps {
            connection_string: None,
            endpoint: None,
            ops_per_minute: 1000,
            request_timeout_ms: 10_000,
            max_backoff_ms: 300_000,
            probe_ms: 15_000,
            allocation_policy: None,
            iot_hubs: Vec::new(),
            activation_hubs: Vec::new(),
            desired_properties: toml::Table::new(),
            attestation: "x509".into(),
            tpm_registration_id: "guid".into(),
            enrollment: "individual".into(),
            id_scope: None,
            global_endpoint: DEFAULT_GLOBAL_ENDPOINT.into(),
            enrollment_group_id: None,
            ca_file: None,
            proxy: None,
        }
    }
}

/// `[dps]`: where and how enrollments are uploaded.
#[derive(Debug, Clone)]
pub struct DpsConfig {
    /// `None`: the station queues enrollments and says it cannot send them.
    pub connection: Option<ConnectionString>,
    /// True when the connection string came from STATION_DPS_CONNECTION_STRING.
    pub connection_from_env: bool,
    /// Base URL of the service API, without a trailing slash.
    pub endpoint: Option<String>,
    pub ops_per_minute: u32,
    pub request_timeout: Duration,
    pub max_backoff: Duration,
    /// While DPS cannot be reached, one cheap call at most this often.
    pub probe: Duration,
    pub allocation_policy: Option<String>,
    pub iot_hubs: Vec<String>,
    /// The IoT hubs an activator may assign a device to.
    pub activation_hubs: Vec<String>,
    pub desired_properties: serde_json::Map<String, serde_json::Value>,
    pub attestation: Attestation,
    /// `individual` (one enrollment per device) or, for symmetric keys
    /// only, `group` (one enrollment group for the line).
    pub enrollment: Enrollment,
    /// The DPS instance's ID scope, written to each board; `None`: the
    /// boards get no provisioning settings (`station check` warns).
    pub id_scope: Option<String>,
    /// The host a device registers with at first boot.
    pub global_endpoint: String,
    /// `enrollment = "group"`: the group's id (`None`: made from the line).
    pub enrollment_group_id: Option<String>,
    /// How DPS is reached: `ca_file`, `proxy` (or HTTPS_PROXY), NO_PROXY.
    pub net: DpsNet,
}

/// The environment variables the configuration reads; passed in, so that
/// tests do not depend on the process's environment.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// STATION_DPS_CONNECTION_STRING.
    pub dps_connection_string: Option<String>,
    /// STATION_PLANT_DATABASE_URL.
    pub plant_database_url: Option<String>,
    /// HTTPS_PROXY, or https_proxy: (name, value).
    pub https_proxy: Option<(&'static str, String)>,
    /// NO_PROXY, or no_proxy.
    pub no_proxy: Option<String>,
    /// Where the variables the configuration names itself are read (the
    /// OIDC client secret's, `[ui.oidc] client_secret_env`): the process's
    /// environment, or only `vars`.
    pub from_process: bool,
    /// Such variables, when not `from_process` (tests).
    pub vars: std::collections::BTreeMap<String, String>,
}

impl Environment {
    /// The process's environment.
    pub fn read() -> Environment {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        };
        Environment {
            dps_connection_string: std::env::var(DPS_ENV).ok(),
            plant_database_url: std::env::var(super::PLANT_ENV).ok(),
            https_proxy: var("HTTPS_PROXY").or_else(|| var("https_proxy")),
            no_proxy: var("NO_PROXY").or_else(|| var("no_proxy")).map(|v| v.1),
            from_process: true,
            vars: Default::default(),
        }
    }

    /// A variable the configuration names.
    pub fn var(&self, name: &str) -> Option<String> {
        if self.from_process {
            std::env::var(name).ok()
        } else {
            self.vars.get(name).cloned()
        }
    }
}

/// How the station enrolls its devices in DPS (`[dps] enrollment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrollment {
    /// One individual enrollment per device, made disabled.
    Individual,
    /// One symmetric-key enrollment group for the line; devices get keys
    /// derived from the group key and no enrollment of their own.
    Group,
}

/// The device registration endpoint every public-cloud DPS instance shares.
pub const DEFAULT_GLOBAL_ENDPOINT: &str = "global.azure-devices-provisioning.net";

/// The environment variable that carries the DPS connection string; it
/// wins over `[dps] connection_string`.
pub const DPS_ENV: &str = "STATION_DPS_CONNECTION_STRING";

type Invalid = (&'static str, String);

pub(super) fn dps_config(d: &RawDps, env: &Environment, base: &Path) -> Result<DpsConfig, Invalid> {
    let from_env = env
        .dps_connection_string
        .as_deref()
        .is_some_and(|e| !e.trim().is_empty());
    let text = if from_env {
        env.dps_connection_string.clone()
    } else {
        d.connection_string.clone()
    };
    let key = if from_env {
        "STATION_DPS_CONNECTION_STRING"
    } else {
        "dps.connection_string"
    };
    let connection = match text.filter(|t| !t.trim().is_empty()) {
        Some(t) => Some(ConnectionString::parse(&t).map_err(|r| (key, r))?),
        None => None,
    };
    let endpoint = match (&d.endpoint, &connection) {
        (Some(e), _) => Some(check_endpoint(e).map_err(|r| ("dps.endpoint", r))?),
        (None, Some(c)) => Some(format!("https://{}", c.host)),
        (None, None) => None,
    };
    if !(1..=100_000).contains(&d.ops_per_minute) {
        return Err((
            "dps.ops_per_minute",
            format!("{} must be between 1 and 100000", d.ops_per_minute),
        ));
    }
    if !(100..=600_000).contains(&d.request_timeout_ms) {
        return Err((
            "dps.request_timeout_ms",
            format!("{} must be between 100 and 600000", d.request_timeout_ms),
        ));
    }
    if !(100..=600_000).contains(&d.probe_ms) {
        return Err((
            "dps.probe_ms",
            format!(
                "{} must be between 100 and 600000: while DPS cannot be reached, the station checks it this often",
                d.probe_ms
            ),
        ));
    }
    if !(100..=86_400_000).contains(&d.max_backoff_ms) {
        return Err((
            "dps.max_backoff_ms",
            format!("{} must be between 100 and 86400000", d.max_backoff_ms),
        ));
    }
    if let Some(p) = &d.allocation_policy {
        if !["hashed", "geoLatency", "static", "custom"].contains(&p.as_str()) {
            return Err((
                "dps.allocation_policy",
                format!("{p:?} is not hashed, geoLatency, static or custom"),
            ));
        }
        if p == "static" && d.iot_hubs.len() != 1 {
            return Err((
                "dps.iot_hubs",
                "a static allocation names exactly one hub".into(),
            ));
        }
    }
    for (key, hubs) in [
        ("dps.iot_hubs", &d.iot_hubs),
        ("dps.activation_hubs", &d.activation_hubs),
    ] {
        if hubs
            .iter()
            .any(|h| h.is_empty() || h.contains('/') || h.contains(' '))
        {
            return Err((
                key,
                "each hub is a host name like \"myhub.azure-devices.net\"".into(),
            ));
        }
    }
    let id_scope = match d.id_scope.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(check_id_scope(s).map_err(|r| ("dps.id_scope", r))?),
    };
    let global_endpoint =
        check_global_endpoint(&d.global_endpoint).map_err(|r| ("dps.global_endpoint", r))?;
    let attestation = keygen::attestation(&d.attestation, &d.tpm_registration_id)?;
    let enrollment = match d.enrollment.as_str() {
        "individual" => Enrollment::Individual,
        "group" if attestation == Attestation::SymmetricKey => Enrollment::Group,
        "group" => {
            return Err((
                "dps.enrollment",
                "\"group\" is for attestation = \"symmetric_key\"; X.509 and TPM devices get individual enrollments".into(),
            ));
        }
        other => {
            return Err((
                "dps.enrollment",
                format!("{other:?} is not \"individual\" or \"group\""),
            ));
        }
    };
    let enrollment_group_id = match &d.enrollment_group_id {
        Some(_) if enrollment != Enrollment::Group => {
            return Err((
                "dps.enrollment_group_id",
                "is for enrollment = \"group\"".into(),
            ));
        }
        Some(id) if !is_registration_id(id) => {
            return Err((
                "dps.enrollment_group_id",
                format!(
                    "{id:?} is not an enrollment group id: 1 to 128 letters, digits and - . _ :, starting and ending with a letter or digit"
                ),
            ));
        }
        other => other.clone(),
    };
    let desired_properties = match serde_json::to_value(&d.desired_properties) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(("dps.desired_properties", "must be a table of values".into())),
    };
    let net = dps_net(d, env, base)?;
    Ok(DpsConfig {
        net,
        connection,
        connection_from_env: from_env,
        endpoint,
        ops_per_minute: d.ops_per_minute,
        request_timeout: Duration::from_millis(d.request_timeout_ms),
        max_backoff: Duration::from_millis(d.max_backoff_ms),
        probe: Duration::from_millis(d.probe_ms),
        allocation_policy: d.allocation_policy.clone(),
        iot_hubs: d.iot_hubs.clone(),
        activation_hubs: d.activation_hubs.clone(),
        desired_properties,
        attestation,
        enrollment,
        id_scope,
        global_endpoint,
        enrollment_group_id,
    })
}

/// `ca_file` (relative to the configuration's folder), `proxy` (which
/// wins over HTTPS_PROXY) and NO_PROXY.
fn dps_net(d: &RawDps, env: &Environment, base: &Path) -> Result<DpsNet, Invalid> {
    let ca_file = d
        .ca_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| base.join(f));
    let ca_certificates = match &ca_file {
        Some(f) => read_ca_file(f).map_err(|r| ("dps.ca_file", r))?,
        None => Vec::new(),
    };
    let configured = d.proxy.as_deref().filter(|p| !p.trim().is_empty());
    let (proxy, proxy_from) = match (configured, &env.https_proxy) {
        (Some(p), _) => (
            Some(ProxyUrl::parse(p, false).map_err(|r| ("dps.proxy", r))?),
            Some("dps.proxy"),
        ),
        (None, Some((name, p))) => (
            Some(ProxyUrl::parse(p, true).map_err(|r| (*name, r))?),
            Some(*name),
        ),
        (None, None) => (None, None),
    };
    Ok(DpsNet {
        ca_file,
        ca_certificates,
        proxy,
        proxy_from,
        no_proxy: env.no_proxy.clone(),
    })
}

/// DPS's rule for registration and enrollment group ids.
pub fn is_registration_id(id: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric();
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| ok(b) || matches!(b, b'-' | b'.' | b'_' | b':'))
        && id.bytes().next().is_some_and(ok)
        && id.bytes().last().is_some_and(ok)
}

/// The enrollment group id made from a line's name: lower case, each run
/// of other characters a `-`.
pub fn group_id_for_line(line: &str) -> String {
    let mut id = String::from("line-");
    for c in line.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let id = id.trim_end_matches('-');
    id.chars().take(128).collect()
}

/// An ID scope as DPS shows it, like `0ne00A1B2C3`: letters and digits.
fn check_id_scope(s: &str) -> Result<String, String> {
    if (4..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an ID scope like \"0ne00A1B2C3\" (the portal shows it on the DPS instance's overview)"
        ))
    }
}

/// The registration host, a bare host name with an optional port (the
/// device builds `https://{host}/{idScope}/registrations/...` itself).
fn check_global_endpoint(e: &str) -> Result<String, String> {
    let e = e.trim();
    let host = e.split(':').next().unwrap_or("");
    let port_ok = e
        .split_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_ok_and(|p| p > 0));
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if host_ok && port_ok {
        Ok(e.to_string())
    } else {
        Err(format!(
            "{e:?} is not a host name like \"{DEFAULT_GLOBAL_ENDPOINT}\" (no https://, no path)"
        ))
    }
}

/// `https://host[:port]`, or `http://` to a loopback address only (a test
/// double on this machine); returned without a trailing slash.
fn check_endpoint(e: &str) -> Result<String, String> {
    let e = e.trim().trim_end_matches('/');
    let (scheme, rest) = e.split_once("://").ok_or_else(|| {
        format!("{e:?} is not a URL like https://mydps.azure-devices-provisioning.net")
    })?;
    let host = if let Some(v6) = rest.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        rest.split([':', '/']).next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(format!("{e:?} has no host"));
    }
    match scheme {
        "https" => Ok(e.to_string()),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(e.to_string())
            } else {
                Err(format!(
                    "{e:?}: plain http is allowed only to a loopback address; use https"
                ))
            }
        }
        other => Err(format!("{other:?} is not https")),
    }
}
