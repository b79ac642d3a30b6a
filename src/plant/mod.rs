//! The plant tier: every station's records in one PostgreSQL database.
//!
//! The only module that talks to PostgreSQL. The station's SQLite store
//! stays the line's record and the truth for its own boards; the plant
//! database is a copy fed from the store's durable feed (`forward.rs`), and
//! the line never waits for it: nothing on a slot's path calls in here.
//!
//! - `schema.rs`: the plant schema's versioned migrations
//!   (`station plant migrate`).
//! - `forward.rs`: the forwarder task: the feed, in order, in batches, each
//!   an idempotent upsert committed with the station's cursor.
//! - `budget.rs`: the DPS operation budget shared through the database.
//! - `views.rs`: what is read across stations: the plant report and
//!   export, a GUID's whereabouts, conflicts, the audit chains.
//! - `status.rs`: the forwarder's state for the API, metrics, `station
//!   check` and the line view.

pub mod budget;
pub mod forward;
pub mod schema;
pub mod status;
pub mod views;

use std::time::Duration;

/// A connection from the plant's pool (a [`PlantClient`] that also keeps
/// its prepared statements).
pub use deadpool_postgres::Client as PooledClient;
pub use forward::Forwarder;
pub use status::{PlantStatus, SharedPlantStatus};
/// A connection to the plant database, for the views' callers.
pub use tokio_postgres::Client as PlantClient;

/// A plant database failure, in words an operator can act on. Never holds
/// the password (tokio-postgres's messages do not carry it, and the
/// address is shown without it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PlantError(pub String);

impl PlantError {
    pub fn new(s: impl Into<String>) -> PlantError {
        PlantError(s.into())
    }
}

/// How long to wait for the plant database to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The plant database at `shown` gave no answer within `waited`.
pub fn too_slow(shown: &str, waited: Duration) -> PlantError {
    PlantError(format!(
        "the plant database {shown} did not answer in {:.1} s: is it overloaded, or is the plant network down?",
        waited.as_secs_f64()
    ))
}

/// Describes a PostgreSQL error for the operator: what happened at
/// `shown` (the address without the password) and what to check.
pub fn explain(shown: &str, e: &tokio_postgres::Error) -> PlantError {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let what = if *code == SqlState::INVALID_PASSWORD {
            "refused the user or password: check [plant] database_url or STATION_PLANT_DATABASE_URL"
                .to_string()
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().contains("no encryption")
        {
            format!(
                "accepts only TLS ({}): give the CA that signed its certificate in [plant] ca_file",
                db.message()
            )
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            format!(
                "refused the user or password ({}): check [plant] database_url or STATION_PLANT_DATABASE_URL, and the server's pg_hba.conf",
                db.message()
            )
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "has no such database: create it (README: The plant database)".to_string()
        } else if *code == SqlState::UNDEFINED_TABLE || *code == SqlState::UNDEFINED_FUNCTION {
            format!(
                "has no plant schema ({}): run `station plant migrate`",
                db.message()
            )
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            "has no free connection: raise max_connections or stop idle clients".to_string()
        } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            "is read-only (a replica?): point database_url at the primary".to_string()
        } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW {
            "is shutting down or starting: the station will try again".to_string()
        } else {
            format!("failed: {} ({})", db.message(), code.code())
        };
        return PlantError(format!("the plant database {shown} {what}"));
    }
    let text = e.to_string();
    let source = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let io = format!("{text} {source}").to_lowercase();
    let why = if io.contains("does not support tls") {
        "does not offer TLS: turn ssl on in its postgresql.conf, or remove [plant] ca_file"
    } else if io.contains("certificate") || io.contains("tls") {
        "failed the TLS check: its certificate must be signed by the CA in [plant] ca_file and name the host in database_url"
    } else if io.contains("refused") {
        "refused the connection: is PostgreSQL running there, on that port?"
    } else if io.contains("timed out") || io.contains("timeout") {
        "did not answer in time: is the plant network up?"
    } else if io.contains("failed to lookup") || io.contains("name or service") {
        "cannot be found by name: check the host in database_url"
    } else if e.is_closed() || io.contains("closed") || io.contains("reset") || io.contains("eof") {
        "closed the connection: the station will reconnect"
    } else {
        "cannot be reached"
    };
    let detail = if source.is_empty() {
        text
    } else {
        format!("{text}: {source}")
    };
    PlantError(format!("the plant database {shown} {why} ({detail})"))
}

/// The connection settings as the station uses them: a connect timeout
/// unless the URL sets one, the station's name in `pg_stat_activity`, and
/// no JIT compilation (the station's statements are short; compiling
/// them costs more than it saves, tens of milliseconds a report page).
fn tuned(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = config.clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("station");
    }
    // A peer gone without a word (a cable pulled) is noticed in seconds,
    // not after the system's TCP timeouts (minutes to hours).
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(Duration::from_secs(30));
    let options = match config.get_options() {
        Some(o) => format!("{o} -c jit=off"),
        None => "-c jit=off".to_string(),
    };
    config.options(&options);
    config
}

/// The TLS side of a connection: with the plant's CA, a rustls client that
/// trusts it alone (the settings already say `sslmode=require`); without,
/// one that is never used (`sslmode=disable`).
fn tls(
    ca: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PlantError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                PlantError(format!(
                    "cannot read [plant] ca_file {}: {e}: it must be the PEM certificate of the CA that signed the plant database's certificate",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(PlantError(format!(
                "[plant] ca_file {} holds no certificate: give the PEM certificate of the CA that signed the plant database's certificate",
                path.display()
            )));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| PlantError(format!("[plant] ca_file {}: {e}", path.display())))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PlantError(format!("TLS for the plant database: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Opens one connection without TLS, waiting at most [`CONNECT_TIMEOUT`].
pub async fn connect(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, PlantError> {
    let mut plain = config.clone();
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    connect_with(&plain, None).await
}

/// Opens one connection to the database `[plant]` names (TLS with its
/// `ca_file`), waiting at most [`CONNECT_TIMEOUT`].
pub async fn connect_plant(
    p: &crate::config::PlantConfig,
) -> Result<tokio_postgres::Client, PlantError> {
    connect_with(&p.database, p.ca_file.as_deref()).await
}

async fn connect_with(
    config: &tokio_postgres::Config,
    ca: Option<&std::path::Path>,
) -> Result<tokio_postgres::Client, PlantError> {
    let shown = crate::config::shown_plant_url(config);
    let config = tuned(config);
    let fut = config.connect(tls(ca)?);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| too_slow(&shown, CONNECT_TIMEOUT))?
        .map_err(|e| explain(&shown, &e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("plant database connection ended: {e}");
        }
    });
    Ok(client)
}

/// Connects to the database `[plant]` names and checks that the schema is
/// this station's.
pub async fn connect_checked(
    p: &crate::config::PlantConfig,
) -> Result<tokio_postgres::Client, PlantError> {
    let client = connect_plant(p).await?;
    check_schema(&p.shown_url(), &client).await?;
    Ok(client)
}

/// Refuses a database without the plant schema or with another version.
pub async fn check_schema(shown: &str, client: &tokio_postgres::Client) -> Result<(), PlantError> {
    match schema::state(client)
        .await
        .map_err(|e| explain(shown, &e))?
    {
        schema::SchemaState::Current => Ok(()),
        schema::SchemaState::Empty => Err(PlantError(format!(
            "the plant database {shown} has no plant schema: run `station plant migrate`"
        ))),
        schema::SchemaState::Behind { found } => Err(PlantError(format!(
            "the plant database {shown} has plant schema {found}, this station needs {}: run `station plant migrate`",
            schema::known()
        ))),
        schema::SchemaState::Ahead { found } => Err(PlantError(format!(
            "the plant database {shown} has plant schema {found}, newer than this station's {}: upgrade the station",
            schema::known()
        ))),
    }
}

/// A pool of connections to the plant database (the forwarder, the shared
/// DPS budget and the web's lookups share it). Connecting waits at most
/// [`CONNECT_TIMEOUT`], and so does waiting for a free connection.
pub fn pool(config: &tokio_postgres::Config) -> Result<deadpool_postgres::Pool, PlantError> {
    let mut plain = config.clone();
    plain.ssl_mode(tokio_postgres::config::SslMode::Disable);
    pool_with(&plain, None)
}

/// As [`pool`], to the database `[plant]` names (TLS with its `ca_file`).
pub fn pool_plant(p: &crate::config::PlantConfig) -> Result<deadpool_postgres::Pool, PlantError> {
    pool_with(&p.database, p.ca_file.as_deref())
}

fn pool_with(
    config: &tokio_postgres::Config,
    ca: Option<&std::path::Path>,
) -> Result<deadpool_postgres::Pool, PlantError> {
    let mut config = tuned(config);
    // The pool's users (the forwarder, the budget, the web's look-ups) do
    // short work: a lock waited for 10 s, or a transaction left open for a
    // minute by a station that froze, is given up rather than holding up
    // every other station.
    let options = format!(
        "{} -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s",
        config.get_options().unwrap_or_default()
    );
    config.options(options.trim());
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tls(ca)?,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT))
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| PlantError(format!("cannot set up the plant database pool: {e}")))
}

/// A connection from `pool`, with a failure in plain words.
pub async fn checkout(
    pool: &deadpool_postgres::Pool,
    shown: &str,
) -> Result<deadpool_postgres::Object, PlantError> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|e| match e {
        PoolError::Backend(e) => explain(shown, &e),
        PoolError::Timeout(_) => too_slow(shown, CONNECT_TIMEOUT),
        other => PlantError(format!(
            "the plant database {shown} cannot be reached ({other})"
        )),
    })
}

/// What the running station keeps of the plant tier: the forwarder's
/// status and a pool for the web's look-ups across stations.
#[derive(Clone)]
pub struct PlantHandle {
    pub status: SharedPlantStatus,
    pub pool: deadpool_postgres::Pool,
    /// The database without its password.
    pub shown: String,
}

/// Sets up the plant tier for `station serve`: turns the store's feed on
/// (or off, without `[plant]`) and makes the forwarder, which the caller
/// spawns. Nothing here connects: a plant database that is down does not
/// stop the station from starting.
pub fn start(
    cfg: &crate::config::Config,
    store: &crate::store::Store,
    on_change: std::sync::Arc<dyn Fn() + Send + Sync>,
) -> anyhow::Result<Option<(PlantHandle, Forwarder)>> {
    let Some(p) = &cfg.plant else {
        store.plant_enable(false)?;
        return Ok(None);
    };
    let instance = store.plant_enable(true)?;
    let shown = p.shown_url();
    let pool = pool_plant(p)?;
    let status = PlantStatus::new(shown.clone());
    let forwarder = Forwarder {
        feed: std::sync::Arc::new(store.plant_feed()?),
        pool: pool.clone(),
        shown: shown.clone(),
        station: cfg.station_id.clone(),
        line: cfg.line.clone(),
        instance,
        batch: p.batch,
        max_lag_warning: p.max_lag_warning,
        status: status.clone(),
        on_change,
    };
    tracing::info!(database = %shown, from_env = p.url_from_env, "forwarding records to the plant database");
    Ok(Some((
        PlantHandle {
            status,
            pool,
            shown,
        },
        forwarder,
    )))
}

impl PlantHandle {
    /// Runs `f` with a connection from the pool, within `within` (a page
    /// or a request never hangs on a plant database that is down).
    pub async fn lookup<T, F>(&self, within: Duration, f: F) -> Result<T, PlantError>
    where
        F: AsyncFnOnce(&PooledClient) -> Result<T, PlantError>,
    {
        with_client(&self.pool, &self.shown, within, f).await
    }
}

/// Runs `f` with a connection from `pool`, the wait for the connection
/// included, within `within`. A connection whose work timed out leaves the
/// pool (its query may still be running) rather than holding up the next
/// user.
pub async fn with_client<T, F>(
    pool: &deadpool_postgres::Pool,
    shown: &str,
    within: Duration,
    f: F,
) -> Result<T, PlantError>
where
    F: AsyncFnOnce(&PooledClient) -> Result<T, PlantError>,
{
    let deadline = tokio::time::Instant::now() + within;
    let client = tokio::time::timeout_at(deadline, checkout(pool, shown))
        .await
        .map_err(|_| too_slow(shown, within))??;
    match tokio::time::timeout_at(deadline, f(&client)).await {
        Ok(answer) => answer,
        Err(_) => {
            drop(deadpool_postgres::Object::take(client));
            Err(too_slow(shown, within))
        }
    }
}

/// `station plant migrate`: creates or upgrades the schema; the versions
/// applied and the version now. Refuses a schema newer than this station's.
pub async fn migrate(p: &crate::config::PlantConfig) -> Result<(Vec<i64>, i64), PlantError> {
    let shown = p.shown_url();
    let mut client = connect_plant(p).await?;
    let explain = |e: tokio_postgres::Error| explain(&shown, &e);
    let found = schema::version(&client).await.map_err(explain)?;
    if found > schema::known() {
        return Err(PlantError(format!(
            "the plant database {shown} has plant schema {found}, newer than this station's {}: upgrade the station",
            schema::known()
        )));
    }
    let applied = schema::migrate(&mut client).await.map_err(explain)?;
    let version = schema::version(&client).await.map_err(explain)?;
    Ok((applied, version))
}
