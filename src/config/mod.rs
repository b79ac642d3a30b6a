//! `station.toml`: read once into a raw form (serde, unknown keys refused),
//! then turned into a validated [`Config`] whose errors name the file, the
//! key and the reason. Nothing else in the station reads the file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::dps::ConnectionString;
use crate::ids::SlotId;
use crate::jig::LinkTiming;
use crate::sim::{Fault, LineCycle, SimOptions};

mod keygen;
mod label;
mod reports;

pub use keygen::{Attestation, Keygen, TpmKeys};
pub use label::{LabelConfig, PrinterBackend, PrinterConfig};
pub use reports::ReportsConfig;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

// ---- raw form, as written in the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    station: RawStation,
    ca: RawCa,
    #[serde(default)]
    jig: RawJig,
    #[serde(default)]
    slot: Vec<RawSlot>,
    #[serde(default)]
    demo: RawDemo,
    #[serde(default)]
    dps: RawDps,
    #[serde(default)]
    ui: RawUi,
    #[serde(default)]
    label: label::RawLabel,
    #[serde(default)]
    printer: label::RawPrinter,
    #[serde(default)]
    reports: reports::RawReports,
    #[serde(default)]
    shift: Vec<reports::RawShift>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUi {
    session_idle_minutes: u32,
}

impl Default for RawUi {
    fn default() -> Self {
        RawUi {
            session_idle_minutes: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDps {
    connection_string: Option<String>,
    endpoint: Option<String>,
    ops_per_minute: u32,
    request_timeout_ms: u64,
    max_backoff_ms: u64,
    allocation_policy: Option<String>,
    iot_hubs: Vec<String>,
    desired_properties: toml::Table,
    attestation: String,
    tpm_registration_id: String,
}

impl Default for RawDps {
    fn default() -> Self {
        RawDps {
            connection_string: None,
            endpoint: None,
            ops_per_minute: 1000,
            request_timeout_ms: 10_000,
            max_backoff_ms: 300_000,
            allocation_policy: None,
            iot_hubs: Vec::new(),
            desired_properties: toml::Table::new(),
            attestation: "x509".into(),
            tpm_registration_id: "guid".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    id: String,
    line: String,
    #[serde(default)]
    work_order: Option<String>,
    data_dir: String,
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    key: String,
    certificate_file: String,
    key_file: String,
    leaf_validity_days: u32,
    #[serde(default = "default_cn")]
    common_name: String,
    #[serde(default = "default_ca_days")]
    ca_validity_days: u32,
}

fn default_cn() -> String {
    "Factory Device CA".into()
}
fn default_ca_days() -> u32 {
    9125
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawJig {
    baud: u32,
    timeout_ms: u64,
    slow_timeout_ms: u64,
    attempts: u32,
    poll_ms: u64,
    reconnect_ms: u64,
}

impl Default for RawJig {
    fn default() -> Self {
        RawJig {
            baud: 115_200,
            timeout_ms: 2000,
            slow_timeout_ms: 15_000,
            attempts: 3,
            poll_ms: 1000,
            reconnect_ms: 2000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    id: u16,
    #[serde(default = "default_link")]
    link: String,
    device: Option<String>,
    baud: Option<u32>,
    #[serde(default = "default_keygen")]
    keygen: String,
    fault: Option<String>,
    fault_times: Option<u32>,
    tcti: Option<String>,
    key_handle: Option<u32>,
    cert_nv_index: Option<u32>,
}

fn default_link() -> String {
    "serial".into()
}
fn default_keygen() -> String {
    "board".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDemo {
    keygen_ms: u64,
    flash_bytes_per_sec: u32,
    test_ms: u64,
    dwell_ms: u64,
    pause_ms: u64,
    keygen: String,
}

impl Default for RawDemo {
    fn default() -> Self {
        RawDemo {
            keygen_ms: 400,
            flash_bytes_per_sec: 20_000,
            test_ms: 800,
            dwell_ms: 1500,
            pause_ms: 1500,
            keygen: "board".into(),
        }
    }
}

// ---- validated form ----

#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub file: PathBuf,
    pub station_id: String,
    pub line: String,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub ca: CaConfig,
    pub timing: LinkTiming,
    pub poll: Duration,
    pub reconnect: Duration,
    pub slots: Vec<SlotConfig>,
    pub demo: SimOptions,
    /// The lot or work order stamped on each board's enrollment, if set.
    pub work_order: Option<String>,
    pub dps: DpsConfig,
    /// A web session idle this long ends.
    pub session_idle: Duration,
    pub label: LabelConfig,
    pub printer: PrinterConfig,
    /// How `--demo N`'s simulated boards get their keys (`[demo] keygen`).
    pub demo_keygen: Keygen,
    pub reports: ReportsConfig,
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
    pub allocation_policy: Option<String>,
    pub iot_hubs: Vec<String>,
    pub desired_properties: serde_json::Map<String, serde_json::Value>,
    pub attestation: Attestation,
}

/// The environment variable that carries the DPS connection string; it
/// wins over `[dps] connection_string`.
pub const DPS_ENV: &str = "STATION_DPS_CONNECTION_STRING";

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub certificate_file: PathBuf,
    pub key_file: PathBuf,
    pub leaf_validity_days: u32,
    pub common_name: String,
    pub ca_validity_days: u32,
}

#[derive(Debug, Clone)]
pub struct SlotConfig {
    pub id: SlotId,
    pub link: SlotLink,
    pub keygen: Keygen,
}

#[derive(Debug, Clone)]
pub enum SlotLink {
    Serial {
        device: String,
        baud: u32,
    },
    /// A simulated board on a pseudo-terminal inside the station.
    Simulated(Box<SimOptions>),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read it: {e}"),
        })?;
        Config::parse_with_env(&text, path, std::env::var(DPS_ENV).ok())
    }

    /// Parses configuration text; relative `data_dir` is taken from the
    /// folder of `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, path, None)
    }

    /// As [`Config::parse`], with the value of STATION_DPS_CONNECTION_STRING.
    pub fn parse_with_env(
        text: &str,
        path: &Path,
        dps_env: Option<String>,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            key: e
                .span()
                .map(|s| {
                    format!(
                        "line {}",
                        text[..s.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_else(|| "(file)".into()),
            reason: e.message().to_string(),
        })?;
        let err = |key: &str, reason: String| ConfigError {
            file: file.clone(),
            key: key.to_string(),
            reason,
        };

        let s = &raw.station;
        if s.id.is_empty()
            || s.id.len() > 64
            || !s
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(err(
                "station.id",
                format!(
                    "{:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
                    s.id
                ),
            ));
        }
        if s.line.trim().is_empty() {
            return Err(err("station.line", "must not be empty".into()));
        }
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            err(
                "station.listen",
                format!("{:?} is not an address like 127.0.0.1:8080", s.listen),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let data_dir = base.join(&s.data_dir);

        let c = &raw.ca;
        if c.key != "file" {
            return Err(err(
                "ca.key",
                format!(
                    "{:?} is not a CA key backend this station has; use \"file\"",
                    c.key
                ),
            ));
        }
        if !(1..=36_500).contains(&c.leaf_validity_days) {
            return Err(err(
                "ca.leaf_validity_days",
                format!("{} must be between 1 and 36500", c.leaf_validity_days),
            ));
        }
        if !(1..=36_500).contains(&c.ca_validity_days) {
            return Err(err(
                "ca.ca_validity_days",
                format!("{} must be between 1 and 36500", c.ca_validity_days),
            ));
        }
        let ca = CaConfig {
            certificate_file: PathBuf::from(&c.certificate_file),
            key_file: PathBuf::from(&c.key_file),
            leaf_validity_days: c.leaf_validity_days,
            common_name: c.common_name.clone(),
            ca_validity_days: c.ca_validity_days,
        };

        let j = &raw.jig;
        for (k, v) in [
            ("jig.timeout_ms", j.timeout_ms),
            ("jig.slow_timeout_ms", j.slow_timeout_ms),
            ("jig.poll_ms", j.poll_ms),
            ("jig.reconnect_ms", j.reconnect_ms),
        ] {
            if !(10..=600_000).contains(&v) {
                return Err(err(
                    k,
                    format!("{v} must be between 10 and 600000 milliseconds"),
                ));
            }
        }
        if !(1..=10).contains(&j.attempts) {
            return Err(err(
                "jig.attempts",
                format!("{} must be between 1 and 10", j.attempts),
            ));
        }
        check_baud(j.baud).map_err(|r| err("jig.baud", r))?;
        let timing = LinkTiming {
            timeout: Duration::from_millis(j.timeout_ms),
            slow_timeout: Duration::from_millis(j.slow_timeout_ms),
            attempts: j.attempts,
            ..LinkTiming::default()
        };

        let d = &raw.demo;
        let demo = SimOptions {
            keygen_time: Duration::from_millis(d.keygen_ms),
            flash_bytes_per_sec: d.flash_bytes_per_sec,
            test_time: Duration::from_millis(d.test_ms),
            first_insert_after: Duration::from_millis(d.pause_ms),
            line: Some(LineCycle {
                dwell: Duration::from_millis(d.dwell_ms),
                pause: Duration::from_millis(d.pause_ms),
            }),
            ..SimOptions::default()
        };

        let mut slots = Vec::new();
        let mut ids = HashSet::new();
        let mut devices = HashSet::new();
        for (i, rs) in raw.slot.iter().enumerate() {
            let key = |k: &str| format!("slot[{i}].{k}");
            if rs.id == 0 || !ids.insert(rs.id) {
                return Err(err(
                    &key("id"),
                    format!(
                        "{} must be a number from 1 up, used by one slot only",
                        rs.id
                    ),
                ));
            }
            let keygen = keygen::keygen(&keygen::RawKeygen {
                keygen: &rs.keygen,
                tcti: rs.tcti.as_deref(),
                key_handle: rs.key_handle,
                cert_nv_index: rs.cert_nv_index,
                simulated: rs.link == "simulated",
            })
            .map_err(|(k, r)| err(&key(k), r))?;
            let link = match rs.link.as_str() {
                "serial" => {
                    let device = rs.device.clone().filter(|d| !d.is_empty()).ok_or_else(|| {
                        err(
                            &key("device"),
                            "a serial slot needs a device, like \"/dev/ttyUSB0\"".into(),
                        )
                    })?;
                    if !devices.insert(device.clone()) {
                        return Err(err(
                            &key("device"),
                            format!("{device} is used by another slot"),
                        ));
                    }
                    if rs.fault.is_some() || rs.fault_times.is_some() {
                        return Err(err(
                            &key("fault"),
                            "faults are for simulated slots only".into(),
                        ));
                    }
                    let baud = rs.baud.unwrap_or(j.baud);
                    check_baud(baud).map_err(|r| err(&key("baud"), r))?;
                    SlotLink::Serial { device, baud }
                }
                "simulated" => {
                    if rs.device.is_some() {
                        return Err(err(
                            &key("device"),
                            "a simulated slot makes its own pseudo-terminal; remove device".into(),
                        ));
                    }
                    let fault = match &rs.fault {
                        Some(f) => Some(f.parse::<Fault>().map_err(|r| err(&key("fault"), r))?),
                        None => None,
                    };
                    SlotLink::Simulated(Box::new(SimOptions {
                        fault,
                        fault_times: rs.fault_times,
                        ..demo.clone()
                    }))
                }
                other => {
                    return Err(err(
                        &key("link"),
                        format!("{other:?} is not \"serial\" or \"simulated\""),
                    ));
                }
            };
            slots.push(SlotConfig {
                id: SlotId(rs.id),
                link,
                keygen,
            });
        }

        let dps = dps_config(&raw.dps, dps_env).map_err(|(k, r)| err(k, r))?;
        let demo_keygen = keygen::keygen(&keygen::RawKeygen {
            keygen: &raw.demo.keygen,
            tcti: None,
            key_handle: None,
            cert_nv_index: None,
            simulated: true,
        })
        .map_err(|(_, r)| err("demo.keygen", r))?;
        if matches!(dps.attestation, Attestation::Tpm { .. })
            && let Some(s) = slots.iter().find(|s| !matches!(s.keygen, Keygen::Tpm(_)))
        {
            return Err(err(
                "dps.attestation",
                format!(
                    "\"tpm\" needs every slot to use keygen = \"tpm\" (slot {} uses {:?})",
                    s.id,
                    s.keygen.as_str()
                ),
            ));
        }
        let work_order = s.work_order.clone().filter(|w| !w.trim().is_empty());

        if !(1..=24 * 60).contains(&raw.ui.session_idle_minutes) {
            return Err(err(
                "ui.session_idle_minutes",
                format!("{} must be between 1 and 1440", raw.ui.session_idle_minutes),
            ));
        }

        let label = label::label_config(&raw.label, base).map_err(|(k, r)| err(&k, r))?;
        let printer =
            label::printer_config(&raw.printer, base, &data_dir).map_err(|(k, r)| err(&k, r))?;

        let reports =
            reports::reports_config(&raw.reports, &raw.shift).map_err(|(k, r)| err(&k, r))?;

        Ok(Config {
            reports,
            demo_keygen,
            label,
            printer,
            work_order,
            dps,
            session_idle: Duration::from_secs(u64::from(raw.ui.session_idle_minutes) * 60),
            file: path.to_path_buf(),
            station_id: s.id.clone(),
            line: s.line.clone(),
            data_dir,
            listen,
            ca,
            timing,
            poll: Duration::from_millis(j.poll_ms),
            reconnect: Duration::from_millis(j.reconnect_ms),
            slots,
            demo,
        })
    }

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
                "key": "file",
                "certificate_file": self.ca_certificate_path().display().to_string(),
                "key_file": self.ca_key_path().display().to_string(),
                "leaf_validity_days": self.ca.leaf_validity_days,
            },
            "jig": {
                "timeout_ms": self.timing.timeout.as_millis() as u64,
                "slow_timeout_ms": self.timing.slow_timeout.as_millis() as u64,
                "attempts": self.timing.attempts,
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
                "attestation": match self.dps.attestation {
                    Attestation::X509 => "x509",
                    Attestation::Tpm { .. } => "tpm",
                },
            },
            "ui": { "session_idle_minutes": self.session_idle.as_secs() / 60 },
            "label": self.label.public_view(),
            "printer": self.printer.public_view(),
        })
    }

    /// Replaces the configured slots with `n` simulated boards (`--demo N`).
    pub fn use_demo_slots(&mut self, n: u16) {
        self.slots = (1..=n)
            .map(|i| SlotConfig {
                id: SlotId(i),
                link: SlotLink::Simulated(Box::new(self.demo.clone())),
                keygen: self.demo_keygen.clone(),
            })
            .collect();
    }

    /// The CA certificate path (relative paths are inside the data folder).
    pub fn ca_certificate_path(&self) -> PathBuf {
        self.data_dir.join(&self.ca.certificate_file)
    }

    pub fn ca_key_path(&self) -> PathBuf {
        self.data_dir.join(&self.ca.key_file)
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("station.db")
    }
}

fn dps_config(d: &RawDps, env: Option<String>) -> Result<DpsConfig, (&'static str, String)> {
    let from_env = env.as_deref().is_some_and(|e| !e.trim().is_empty());
    let text = if from_env {
        env
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
    if d.iot_hubs
        .iter()
        .any(|h| h.is_empty() || h.contains('/') || h.contains(' '))
    {
        return Err((
            "dps.iot_hubs",
            "each hub is a host name like \"myhub.azure-devices.net\"".into(),
        ));
    }
    let desired_properties = match serde_json::to_value(&d.desired_properties) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(("dps.desired_properties", "must be a table of values".into())),
    };
    Ok(DpsConfig {
        connection,
        connection_from_env: from_env,
        endpoint,
        ops_per_minute: d.ops_per_minute,
        request_timeout: Duration::from_millis(d.request_timeout_ms),
        max_backoff: Duration::from_millis(d.max_backoff_ms),
        allocation_policy: d.allocation_policy.clone(),
        iot_hubs: d.iot_hubs.clone(),
        desired_properties,
        attestation: keygen::attestation(&d.attestation, &d.tpm_registration_id)?,
    })
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

fn check_baud(baud: u32) -> Result<(), String> {
    const RATES: [u32; 12] = [
        1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
        1_000_000,
    ];
    if RATES.contains(&baud) {
        Ok(())
    } else {
        Err(format!(
            "{baud} is not a standard baud rate (such as 9600 or 115200)"
        ))
    }
}

#[cfg(test)]
mod tests;
