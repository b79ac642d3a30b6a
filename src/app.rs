//! Start-up: turns a validated configuration into a running station (CA,
//! store, one task per slot, simulated boards if asked for, the web server)
//! and hands back its address and handles.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::ca::{CaSigner, FileCa};
use crate::config::{Config, DPS_ENV, SlotLink};
use crate::dps::{EnrollmentTemplate, HttpDps, OutboxStatus, Uploader};
use crate::jig::link::open_serial;
use crate::jig::{JigLink, LinkTiming};
use crate::sim::PtySim;
use crate::store::Store;
use crate::web::{AppState, router};
use crate::workflow::{LinkOpener, SlotBoard, SlotDriver, SlotSettings};

/// A running station.
pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub slots: SlotBoard,
    pub outbox: crate::dps::SharedStatus,
    /// Simulated jigs inside the station, by slot (for tests and the demo).
    pub sims: Vec<(u16, PtySim)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Loads the factory CA; with `create_if_missing` (demo mode) makes one when
/// neither file exists.
pub fn load_ca(cfg: &Config, create_if_missing: bool) -> anyhow::Result<FileCa> {
    let (cert, key) = (cfg.ca_certificate_path(), cfg.ca_key_path());
    if create_if_missing && !cert.exists() && !key.exists() {
        tracing::warn!(certificate = %cert.display(), "no factory CA yet: creating a new one for the demo");
        return FileCa::init(
            &cert,
            &key,
            &cfg.ca.common_name,
            cfg.ca.ca_validity_days,
            false,
        )
        .context("creating a demo factory CA");
    }
    if !cert.exists() && !key.exists() {
        anyhow::bail!(
            "the factory CA is missing ({} and {}): create it with `station ca init --config {}` or name existing files in [ca]",
            cert.display(),
            key.display(),
            cfg.file.display()
        );
    }
    Ok(FileCa::load(&cert, &key)?)
}

fn random_id() -> u16 {
    u16::from_be_bytes(crate::random::bytes())
}

fn serial_opener(device: String, baud: u32, timing: LinkTiming) -> LinkOpener {
    Box::new(move || {
        open_serial(&device, baud, timing, random_id()).map(|l| Box::new(l) as Box<dyn JigLink>)
    })
}

/// Starts the station described by `cfg`.
pub async fn start(cfg: &Config, demo_ca: bool) -> anyhow::Result<App> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data folder {}", cfg.data_dir.display()))?;
    let ca: Arc<dyn CaSigner> = Arc::new(load_ca(cfg, demo_ca)?);
    tracing::info!(ca = %ca.describe(), "factory CA loaded");
    let store = Store::open(&cfg.database_path())?;
    let slots = SlotBoard::default();
    let enrollment = Arc::new(EnrollmentTemplate::from_config(cfg));
    let uploads = Arc::new(tokio::sync::Notify::new());
    let outbox = OutboxStatus::new(
        cfg.dps
            .endpoint
            .clone()
            .filter(|_| cfg.dps.connection.is_some()),
    );
    let mut tasks = Vec::new();
    match (&cfg.dps.connection, &cfg.dps.endpoint) {
        (Some(conn), Some(endpoint)) => {
            let client = HttpDps::new(endpoint, conn.clone(), cfg.dps.request_timeout)
                .map_err(anyhow::Error::msg)?;
            tracing::info!(
                endpoint,
                policy = %conn.key_name,
                from_env = cfg.dps.connection_from_env,
                ops_per_minute = cfg.dps.ops_per_minute,
                "DPS uploads enabled"
            );
            let uploader = Uploader {
                store: store.clone(),
                client: Arc::new(client),
                status: outbox.clone(),
                wake: uploads.clone(),
                ops_per_minute: cfg.dps.ops_per_minute,
                max_backoff: cfg.dps.max_backoff,
            };
            tasks.push(tokio::spawn(uploader.run()));
        }
        _ => tracing::warn!(
            "no DPS connection string ([dps] connection_string or {DPS_ENV}): enrollments are queued and sent once one is configured"
        ),
    }
    let mut sims = Vec::new();
    for sc in &cfg.slots {
        let (opener, device, simulated) = match &sc.link {
            SlotLink::Serial { device, baud } => (
                serial_opener(device.clone(), *baud, cfg.timing),
                device.clone(),
                false,
            ),
            SlotLink::Simulated(opts) => {
                let sim = PtySim::spawn((**opts).clone()).context("starting a simulated board")?;
                let device = sim.device.clone();
                tracing::warn!(
                    slot = sc.id.0,
                    device,
                    "slot {} is SIMULATED: a board simulator, not real hardware",
                    sc.id
                );
                sims.push((sc.id.0, sim));
                (
                    serial_opener(device.clone(), 115_200, cfg.timing),
                    device,
                    true,
                )
            }
        };
        slots.add(sc.id, &device, simulated);
        let driver = SlotDriver {
            settings: SlotSettings {
                station_id: cfg.station_id.clone(),
                slot: sc.id,
                leaf_validity_days: cfg.ca.leaf_validity_days,
                poll: cfg.poll,
                reconnect: cfg.reconnect,
            },
            store: store.clone(),
            ca: ca.clone(),
            view: slots.clone(),
            enrollment: enrollment.clone(),
            uploads: uploads.clone(),
        };
        tasks.push(tokio::spawn(driver.run(opener)));
    }
    let state = AppState {
        store: store.clone(),
        slots: slots.clone(),
        ca_pem: ca.certificate_pem().into(),
        station_id: cfg.station_id.as_str().into(),
        line: cfg.line.as_str().into(),
        outbox: outbox.clone(),
        uploads: uploads.clone(),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}: is another station running there? Use --listen to choose",
                cfg.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
    tracing::info!(%addr, station = %cfg.station_id, slots = cfg.slots.len(), "station running");
    Ok(App {
        addr,
        store,
        slots,
        outbox,
        sims,
        tasks,
        server,
    })
}

impl App {
    /// Waits until the web server stops (it does not, short of an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.server).await??;
        Ok(())
    }

    /// Stops the slot tasks and the web server. Every transition is already
    /// persisted, so stopping at any point is safe.
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.server.abort();
    }
}
