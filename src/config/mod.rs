//! `station.toml`: read once into a raw form (serde, unknown keys refused),
//! then turned into a validated [`Config`] whose errors name the file, the
//! key and the reason. Nothing else in the station reads the file.
//!
//! This module is the entry: the file as a whole, `[station]`, `[ca]` and
//! `[ui]`. Each other table is checked in a module of its own: `[dps]` in
//! `dps`, `[jig]`, `[[slot]]` and `[demo]` in `slots`, key generation in
//! `keygen`, `[label]` and `[printer]` in `label`, `[reports]` and
//! `[[shift]]` in `reports`, `[symmetric_key]` in `symkey`, `[ui.oidc]` in
//! `oidc`; `view` is what admins may see of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::ids::SlotId;
use crate::jig::LinkTiming;
use crate::sim::SimOptions;

mod ca;
mod dps;
mod keygen;
mod label;
mod oidc;
mod plant;
mod reports;
mod slots;
mod symkey;
mod view;

pub use ca::{CaBackend, CaConfig, CaTpmConfig, DEFAULT_CA_TPM_HANDLE, Pkcs11Config};
pub use dps::{
    DEFAULT_GLOBAL_ENDPOINT, DPS_ENV, DpsConfig, Enrollment, Environment, group_id_for_line,
    is_registration_id,
};
pub use keygen::{Attestation, Keygen, TpmKeys};
pub use label::{LabelConfig, PrinterBackend, PrinterConfig};
pub use oidc::{CALLBACK_PATH as OIDC_CALLBACK_PATH, OIDC_SECRET_ENV, OidcConfig};
pub use plant::{PLANT_ENV, PlantConfig, parse_url as parse_plant_url, shown as shown_plant_url};
pub use reports::ReportsConfig;
pub use slots::{SlotConfig, SlotLink};
pub use symkey::{SymKeyBackend, SymKeyConfig};

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
    ca: ca::RawCa,
    #[serde(default)]
    jig: slots::RawJig,
    #[serde(default)]
    slot: Vec<slots::RawSlot>,
    #[serde(default)]
    demo: slots::RawDemo,
    #[serde(default)]
    dps: dps::RawDps,
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
    plant: Option<plant::RawPlant>,
    symmetric_key: Option<symkey::RawSymKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUi {
    session_idle_minutes: u32,
    tls_cert_file: Option<String>,
    tls_key_file: Option<String>,
    oidc: Option<oidc::RawOidc>,
    sound_alerts: bool,
}

impl Default for RawUi {
    fn default() -> Self {
        RawUi {
            session_idle_minutes: 30,
            tls_cert_file: None,
            tls_key_file: None,
            oidc: None,
            sound_alerts: false,
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

// ---- validated form ----

/// The web UI's certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

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
    /// `[jig] piece_bytes`: the largest piece of a certificate chain on a
    /// line that takes pieces.
    pub piece_bytes: usize,
    pub poll: Duration,
    pub reconnect: Duration,
    pub slots: Vec<SlotConfig>,
    pub demo: SimOptions,
    /// The lot or work order stamped on each board's enrollment, if set.
    pub work_order: Option<String>,
    pub dps: DpsConfig,
    /// A web session idle this long ends.
    pub session_idle: Duration,
    /// `[ui] tls_cert_file` and `tls_key_file`: the web UI and API are
    /// served over HTTPS; `None`: plain HTTP.
    pub ui_tls: Option<TlsFiles>,
    /// `[ui] sound_alerts`: the line view sounds a FAIL or a slot that
    /// needs attention.
    pub sound_alerts: bool,
    pub label: LabelConfig,
    pub printer: PrinterConfig,
    /// How `--demo N`'s simulated boards get their keys (`[demo] keygen`).
    pub demo_keygen: Keygen,
    pub reports: ReportsConfig,
    /// `[plant]`: the plant database and the shared DPS budget; `None`: a
    /// station on its own.
    pub plant: Option<PlantConfig>,
    /// `[symmetric_key]`: the master key symmetric-key devices' keys are
    /// derived from; `None`: the station has none.
    pub symmetric_key: Option<SymKeyConfig>,
    /// `[ui.oidc]`: organisational sign-in; `None`: badges and passwords
    /// only.
    pub oidc: Option<OidcConfig>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: format!("cannot read it: {e}"),
        })?;
        Config::parse_in(&text, path, &Environment::read())
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
        Config::parse_with_envs(text, path, dps_env, None)
    }

    /// As [`Config::parse`], with the values of STATION_DPS_CONNECTION_STRING
    /// and STATION_PLANT_DATABASE_URL.
    pub fn parse_with_envs(
        text: &str,
        path: &Path,
        dps_env: Option<String>,
        plant_env: Option<String>,
    ) -> Result<Config, ConfigError> {
        let env = Environment {
            dps_connection_string: dps_env,
            plant_database_url: plant_env,
            ..Environment::default()
        };
        Config::parse_in(text, path, &env)
    }

    /// As [`Config::parse`], with these environment variables.
    pub fn parse_in(text: &str, path: &Path, env: &Environment) -> Result<Config, ConfigError> {
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
        let listen = check_station(s).map_err(|(k, r)| err(k, r))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let data_dir = base.join(&s.data_dir);
        let ca = ca::ca_config(&raw.ca).map_err(|(k, r)| err(k, r))?;

        let slots::Slots {
            timing,
            piece_bytes,
            poll,
            reconnect,
            demo,
            slots,
        } = slots::slots_config(&raw.jig, &raw.demo, &raw.slot).map_err(|(k, r)| err(&k, r))?;

        let dps = dps::dps_config(&raw.dps, env, base).map_err(|(k, r)| err(k, r))?;
        let demo_keygen = slots::demo_keygen(&raw.demo).map_err(|(k, r)| err(&k, r))?;
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
        if dps.attestation == Attestation::SymmetricKey
            && let Some(s) = slots.iter().find(|s| matches!(s.keygen, Keygen::Tpm(_)))
        {
            return Err(err(
                "dps.attestation",
                format!(
                    "\"symmetric_key\" gives each board a key derived by the station, not a TPM key: slot {} uses keygen = \"tpm\"; use attestation = \"tpm\" for TPM boards",
                    s.id
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

        let ui_tls = match (&raw.ui.tls_cert_file, &raw.ui.tls_key_file) {
            (None, None) => None,
            (Some(c), Some(k)) if !c.trim().is_empty() && !k.trim().is_empty() => Some(TlsFiles {
                cert_file: base.join(c),
                key_file: base.join(k),
            }),
            (Some(_), None) => {
                return Err(err(
                    "ui.tls_key_file",
                    "HTTPS needs both files: tls_cert_file is set, so set tls_key_file to the certificate's private key (PEM)".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "ui.tls_cert_file",
                    "HTTPS needs both files: tls_key_file is set, so set tls_cert_file to the station's certificate chain (PEM)".into(),
                ));
            }
            _ => {
                return Err(err(
                    "ui.tls_cert_file",
                    "tls_cert_file and tls_key_file must name files; remove both to serve plain HTTP".into(),
                ));
            }
        };

        let label = label::label_config(&raw.label, base).map_err(|(k, r)| err(&k, r))?;
        let printer =
            label::printer_config(&raw.printer, base, &data_dir).map_err(|(k, r)| err(&k, r))?;

        let reports =
            reports::reports_config(&raw.reports, &raw.shift).map_err(|(k, r)| err(&k, r))?;
        let plant = plant::plant_config(raw.plant.as_ref(), env.plant_database_url.clone(), base)
            .map_err(|(k, r)| err(k, r))?;
        let symmetric_key = symkey::symkey_config(raw.symmetric_key.as_ref(), &data_dir, base, &ca)
            .map_err(|(k, r)| err(k, r))?;
        let oidc =
            oidc::oidc_config(raw.ui.oidc.as_ref(), &|k| env.var(k)).map_err(|(k, r)| err(k, r))?;

        Ok(Config {
            oidc,
            symmetric_key,
            plant,
            reports,
            demo_keygen,
            label,
            printer,
            work_order,
            dps,
            session_idle: Duration::from_secs(u64::from(raw.ui.session_idle_minutes) * 60),
            ui_tls,
            sound_alerts: raw.ui.sound_alerts,
            file: path.to_path_buf(),
            station_id: s.id.clone(),
            line: s.line.clone(),
            data_dir,
            listen,
            ca,
            timing,
            piece_bytes,
            poll,
            reconnect,
            slots,
            demo,
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

type Invalid = (&'static str, String);

/// `[station]`: checks the id, line and listen address; returns the
/// address.
fn check_station(s: &RawStation) -> Result<SocketAddr, Invalid> {
    if s.id.is_empty()
        || s.id.len() > 64
        || !s
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err((
            "station.id",
            format!(
                "{:?} must be 1 to 64 letters, digits, '.', '_' or '-'",
                s.id
            ),
        ));
    }
    if s.line.trim().is_empty() {
        return Err(("station.line", "must not be empty".into()));
    }
    s.listen.parse().map_err(|_| {
        (
            "station.listen",
            format!("{:?} is not an address like 127.0.0.1:8080", s.listen),
        )
    })
}

#[cfg(test)]
mod tests;
