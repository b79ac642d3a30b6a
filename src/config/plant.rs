//! `[plant]`: the plant database this station forwards its records to, and
//! the DPS operation budget it shares with the plant's other stations. The
//! URL comes from the file or STATION_PLANT_DATABASE_URL; its password is
//! never shown (the `Debug` of [`PlantConfig`] and [`PlantConfig::shown_url`]
//! leave it out). It checks the settings; it does not connect.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The environment variable that carries the plant database URL; it wins
/// over `[plant] database_url`.
pub const PLANT_ENV: &str = "STATION_PLANT_DATABASE_URL";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPlant {
    database_url: Option<String>,
    ca_file: Option<String>,
    batch: u32,
    max_lag_warning_s: u64,
    dps_ops_per_minute: Option<u32>,
}

impl Default for RawPlant {
    fn default() -> Self {
        RawPlant {
            database_url: None,
            ca_file: None,
            batch: 500,
            max_lag_warning_s: 60,
            dps_ops_per_minute: None,
        }
    }
}

/// `[plant]`, validated.
#[derive(Clone)]
pub struct PlantConfig {
    /// The parsed connection settings (tokio-postgres hides the password in
    /// its `Debug`).
    pub database: tokio_postgres::Config,
    /// True when the URL came from STATION_PLANT_DATABASE_URL.
    pub url_from_env: bool,
    /// The CA that signed the plant database's certificate (PEM): with
    /// it the station speaks only TLS to the database, checking its
    /// certificate and name; without it, plain TCP.
    pub ca_file: Option<PathBuf>,
    /// Most feed entries forwarded in one transaction.
    pub batch: u32,
    /// Lag beyond this is a warning on the status line, in `station check`
    /// and in `/api/v1/plant`.
    pub max_lag_warning: Duration,
    /// The DPS operation budget shared by every station of the plant that
    /// talks to the same DPS instance; `None`: this station paces alone.
    pub dps_ops_per_minute: Option<u32>,
}

impl std::fmt::Debug for PlantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlantConfig")
            .field("database", &self.shown_url())
            .field("url_from_env", &self.url_from_env)
            .field("ca_file", &self.ca_file)
            .field("batch", &self.batch)
            .field("max_lag_warning", &self.max_lag_warning)
            .field("dps_ops_per_minute", &self.dps_ops_per_minute)
            .finish()
    }
}

impl PlantConfig {
    /// The database as people may see it: user, host, port and database
    /// name, never the password.
    pub fn shown_url(&self) -> String {
        shown(&self.database)
    }
}

/// `postgres://user@host:port/db`, without the password.
pub fn shown(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = c
        .get_ports()
        .first()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let db = c.get_dbname().unwrap_or("");
    format!("postgres://{user}{host}{port}/{db}")
}

type Invalid = (&'static str, String);

/// Parses and checks a PostgreSQL URL or key=value string; the error never
/// repeats the text (it may hold the password).
pub fn parse_url(text: &str) -> Result<tokio_postgres::Config, String> {
    // tokio-postgres's message can quote the text (a key=value string's
    // parts): say only what is expected.
    let c = tokio_postgres::Config::from_str(text.trim()).map_err(|_| {
        "is not a PostgreSQL URL like postgres://station@plant-db:5432/plant".to_string()
    })?;
    if c.get_hosts().is_empty() {
        return Err("names no host: write postgres://USER@HOST:PORT/DATABASE".into());
    }
    // An '@' or a space in what was taken for the host is the rest of a
    // password that was not percent-encoded: never shown, never used.
    if c.get_hosts().iter().any(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name.contains('@') || name.chars().any(char::is_whitespace)
        }
        tokio_postgres::config::Host::Unix(_) => false,
    }) {
        return Err(
            "has characters in the password that must be percent-encoded (@ as %40, : as %3A, / as %2F, a space as %20)"
                .into(),
        );
    }
    if c.get_dbname().is_none() {
        return Err("names no database: end it with /DATABASE".into());
    }
    if c.get_user().is_none() {
        return Err("names no user: write postgres://USER@HOST/DATABASE".into());
    }
    Ok(c)
}

pub(super) fn plant_config(
    p: Option<&RawPlant>,
    env: Option<String>,
    base: &Path,
) -> Result<Option<PlantConfig>, Invalid> {
    let Some(p) = p else {
        return Ok(None);
    };
    let from_env = env.as_deref().is_some_and(|e| !e.trim().is_empty());
    let (text, key) = if from_env {
        (env, PLANT_ENV)
    } else {
        (p.database_url.clone(), "plant.database_url")
    };
    let Some(text) = text.filter(|t| !t.trim().is_empty()) else {
        return Err((
            "plant.database_url",
            format!(
                "is missing: give the plant database's URL here or in {PLANT_ENV}, or remove [plant] for a station on its own"
            ),
        ));
    };
    let mut database = parse_url(&text).map_err(|r| (key, r))?;
    let ca_file = p
        .ca_file
        .as_deref()
        .filter(|f| !f.trim().is_empty())
        .map(|f| base.join(f));
    use tokio_postgres::config::SslMode;
    match (database.get_ssl_mode(), &ca_file) {
        (SslMode::Disable, Some(_)) => {
            return Err((
                key,
                "says sslmode=disable, but [plant] ca_file is given: remove one of them".into(),
            ));
        }
        // With the plant's CA, TLS or nothing: never quietly plain.
        (_, Some(_)) => {
            database.ssl_mode(SslMode::Require);
        }
        (SslMode::Require, None) => {
            return Err((
                "plant.ca_file",
                "is missing: sslmode=require needs the CA that signed the plant database's certificate (PEM)".into(),
            ));
        }
        (_, None) => {
            database.ssl_mode(SslMode::Disable);
        }
    }
    if !(1..=10_000).contains(&p.batch) {
        return Err((
            "plant.batch",
            format!("{} must be between 1 and 10000", p.batch),
        ));
    }
    if !(1..=86_400).contains(&p.max_lag_warning_s) {
        return Err((
            "plant.max_lag_warning_s",
            format!("{} must be between 1 and 86400", p.max_lag_warning_s),
        ));
    }
    if let Some(n) = p.dps_ops_per_minute
        && !(1..=100_000).contains(&n)
    {
        return Err((
            "plant.dps_ops_per_minute",
            format!("{n} must be between 1 and 100000"),
        ));
    }
    Ok(Some(PlantConfig {
        database,
        url_from_env: from_env,
        ca_file,
        batch: p.batch,
        max_lag_warning: Duration::from_secs(p.max_lag_warning_s),
        dps_ops_per_minute: p.dps_ops_per_minute,
    }))
}
