//! Start-up: turns a validated configuration into a running station (CA,
//! store, one task per slot, simulated boards if asked for, the web server)
//! and hands back its address and handles.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::ca::CaSigner;
use crate::config::{Config, DPS_ENV, Keygen, SlotLink, TpmKeys};
use crate::custody::load_ca;
use crate::dps::{EnrollmentTemplate, HttpDps, OutboxStatus, Uploader};
use crate::jig::link::open_serial;
use crate::jig::{JigLink, LinkTiming};
use crate::printer::{LabelWorker, PrinterState, SharedPrinterState};
use crate::sim::swtpm::SimTpm;
use crate::sim::{InsertHook, PtySim};
use crate::store::Store;
use crate::tpm::TpmSlot;
use crate::web::{AppState, router};
use crate::workflow::{KeySource, LinkOpener, Registration, SlotBoard, SlotDriver, SlotSettings};

/// A running station.
pub struct App {
    pub addr: SocketAddr,
    pub store: Store,
    pub slots: SlotBoard,
    pub outbox: crate::dps::SharedStatus,
    pub printer: SharedPrinterState,
    /// In demo mode with nobody registered: the sign-in (user name,
    /// password) and API token made for the demo, to show once.
    pub demo_access: Option<(String, String, String)>,
    /// Simulated jigs inside the station, by slot (for tests and the demo).
    pub sims: Vec<(u16, PtySim)>,
    /// The swtpm of each simulated TPM slot.
    pub sim_tpms: Vec<Arc<SimTpm>>,
    /// The plant tier, with `[plant]`.
    pub plant: Option<crate::plant::PlantHandle>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The web UI and API are served over HTTPS.
    pub https: bool,
}

fn random_id() -> u16 {
    u16::from_be_bytes(crate::random::bytes())
}

fn serial_opener(device: String, baud: u32, timing: LinkTiming) -> LinkOpener {
    Box::new(move || {
        open_serial(&device, baud, timing, random_id()).map(|l| Box::new(l) as Box<dyn JigLink>)
    })
}

/// A station nobody can sign in to is said so; a demo gets a sign-in and a
/// token of its own.
fn people_check(store: &Store, demo: bool) -> anyhow::Result<Option<(String, String, String)>> {
    if !store.users()?.is_empty() {
        return Ok(None);
    }
    if !demo {
        tracing::warn!("nobody can sign in to the web UI yet: add people with `station user add`");
        return Ok(None);
    }
    use base64::Engine;
    let password =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::random::bytes::<12>());
    let now = time::OffsetDateTime::now_utc();
    let new = crate::store::NewUser {
        name: "demo",
        role: crate::store::Role::Admin,
        badge: None,
        pin: None,
        password: Some(&password),
    };
    store.add_user(&new, "station (demo set-up)", now)?;
    let token = store.create_token(
        "demo",
        crate::store::Role::Admin,
        "station (demo set-up)",
        now,
    )?;
    tracing::warn!(
        "demo: made the admin user \"demo\" and an API token (shown on standard output once)"
    );
    Ok(Some(("demo".into(), password, token)))
}

/// The DPS budget shared through the plant database, with `[plant]
/// dps_ops_per_minute`: one bucket per DPS instance (its host name).
fn shared_budget(
    cfg: &Config,
    plant: Option<&crate::plant::PlantHandle>,
    dps_host: &str,
) -> Option<Arc<dyn crate::dps::SharedBudget>> {
    let n = cfg.plant.as_ref()?.dps_ops_per_minute?;
    let p = plant?;
    tracing::info!(
        dps = dps_host,
        ops_per_minute = n,
        "the DPS operation budget is shared through the plant database ([dps] ops_per_minute while it cannot be reached)"
    );
    Some(Arc::new(crate::plant::budget::PgBudget::new(
        p.pool.clone(),
        p.shown.clone(),
        dps_host.to_string(),
        n,
    )))
}

/// Starts the station described by `cfg`.
pub async fn start(cfg: &Config, demo_ca: bool) -> anyhow::Result<App> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating the data folder {}", cfg.data_dir.display()))?;
    let ca: Arc<dyn CaSigner> = Arc::new(load_ca(cfg, demo_ca)?);
    tracing::info!(ca = %ca.describe(), "factory CA loaded");
    let store = Store::open(&cfg.database_path())?;
    let demo_access = people_check(&store, demo_ca)?;
    let slots = SlotBoard::default();
    let enrollment = Arc::new(EnrollmentTemplate::from_config(cfg));
    let registration = cfg.dps.id_scope.clone().map(|id_scope| Registration {
        endpoint: cfg.dps.global_endpoint.clone(),
        id_scope,
    });
    let device_keys = open_device_keys(cfg)?;
    let uploads = Arc::new(tokio::sync::Notify::new());
    let outbox = OutboxStatus::new(
        cfg.dps
            .endpoint
            .clone()
            .filter(|_| cfg.dps.connection.is_some()),
    );
    let mut tasks = Vec::new();
    // The plant tier: its own task, which the line never waits for.
    let plant = match crate::plant::start(cfg, &store, {
        let slots = slots.clone();
        Arc::new(move || slots.touch())
    })? {
        Some((handle, forwarder)) => {
            tasks.push(tokio::spawn(forwarder.run()));
            Some(handle)
        }
        None => None,
    };
    match (&cfg.dps.connection, &cfg.dps.endpoint) {
        (Some(conn), Some(endpoint)) => {
            let client = HttpDps::with_network(
                endpoint,
                conn.clone(),
                cfg.dps.request_timeout,
                &cfg.dps.net,
            )
            .map_err(anyhow::Error::msg)?;
            tracing::info!(
                endpoint,
                policy = %conn.key_name,
                proxy = cfg.dps.net.proxy.as_ref().map(|p| p.shown()),
                proxy_from = cfg.dps.net.proxy_from,
                ca_file = cfg.dps.net.ca_file.as_ref().map(|f| f.display().to_string()),
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
                probe: cfg.dps.probe,
                budget: shared_budget(cfg, plant.as_ref(), &conn.host),
                device_keys: device_keys.clone(),
                group: (cfg.dps.enrollment == crate::config::Enrollment::Group).then(|| {
                    let id = cfg
                        .dps
                        .enrollment_group_id
                        .clone()
                        .unwrap_or_else(|| crate::config::group_id_for_line(&cfg.line));
                    crate::dps::GroupEnrollment {
                        body: enrollment.group_body(&id, &cfg.station_id),
                        id,
                    }
                }),
            };
            tasks.push(tokio::spawn(uploader.run()));
        }
        _ => tracing::warn!(
            "no DPS connection string ([dps] connection_string or {DPS_ENV}): enrollments are queued and sent once one is configured"
        ),
    }
    let printer = crate::printer::from_config(&cfg.printer);
    let printer_state = PrinterState::new(printer.describe());
    let label_wake = Arc::new(tokio::sync::Notify::new());
    let labeler = Arc::new(cfg.label.labeler.clone());
    tracing::info!(printer = %printer.describe(), template = %cfg.label.template_origin, "labels print to {}", printer.describe());
    tasks.push(tokio::spawn(
        LabelWorker {
            store: store.clone(),
            printer,
            labeler: labeler.clone(),
            state: printer_state.clone(),
            wake: label_wake.clone(),
            station: cfg.station_id.clone(),
            max_wait: cfg.printer.retry_max,
            on_change: {
                let slots = slots.clone();
                Arc::new(move || slots.touch())
            },
        }
        .run(),
    ));
    let mut sims = Vec::new();
    let mut slot_commands = std::collections::BTreeMap::new();
    // The work order in production: the one set at the UI (kept across
    // restarts), else the configured one.
    let current = match store.setting("work_order")? {
        Some(set) => (!set.is_empty()).then_some(set),
        None => cfg.work_order.clone(),
    };
    let work_order = Arc::new(std::sync::RwLock::new(current));
    if !crate::tpm::BUILT
        && let Some(sc) = cfg
            .slots
            .iter()
            .find(|s| matches!(s.keygen, Keygen::Tpm(_)))
    {
        anyhow::bail!(
            "slot {} uses keygen = \"tpm\", but this station was built without TPM support: build it with `cargo build --release --features tpm` (needs libtss2-dev)",
            sc.id
        );
    }
    // `--demo N` replaces the slots after the file was checked: check again.
    if matches!(cfg.dps.attestation, crate::config::Attestation::Tpm { .. })
        && let Some(sc) = cfg
            .slots
            .iter()
            .find(|s| !matches!(s.keygen, Keygen::Tpm(_)))
    {
        anyhow::bail!(
            "[dps] attestation = \"tpm\" needs every slot to use keygen = \"tpm\", but slot {} uses {:?} (with --demo, set [demo] keygen = \"tpm\")",
            sc.id,
            sc.keygen.as_str()
        );
    }
    let mut sim_tpms = Vec::new();
    for sc in &cfg.slots {
        // A simulated TPM slot: each board brings a fresh swtpm.
        let mut sim_tcti = None;
        let mut link = sc.link.clone();
        if let (SlotLink::Simulated(opts), Keygen::Tpm(TpmKeys { tcti: None, .. })) =
            (&mut link, &sc.keygen)
        {
            let state = cfg.data_dir.join("swtpm").join(format!("slot-{}", sc.id));
            let tpm = Arc::new(SimTpm::start(state).map_err(anyhow::Error::msg)?);
            sim_tcti = Some(tpm.tcti());
            let t = tpm.clone();
            opts.on_insert = Some(InsertHook(Arc::new(move || {
                if let Err(e) = t.fresh() {
                    tracing::error!("the simulated board's TPM did not start: {e}");
                }
            })));
            tracing::warn!(slot = sc.id.0, tcti = %tpm.tcti(), "slot {} has a SIMULATED TPM (swtpm)", sc.id);
            sim_tpms.push(tpm);
        }
        let keys = match &sc.keygen {
            Keygen::Board => KeySource::Board,
            Keygen::Station => KeySource::Station,
            Keygen::Tpm(k) => {
                let slot = TpmSlot {
                    tcti: k.tcti.clone().or(sim_tcti).unwrap_or_default(),
                    key_handle: k.key_handle,
                    cert_nv_index: k.cert_nv_index,
                    settings_nv_index: k.settings_nv_index,
                };
                KeySource::Tpm(Arc::new(move || crate::tpm::open(&slot)))
            }
        };
        let (opener, device, simulated) = match &link {
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
                piece_bytes: cfg.piece_bytes,
            },
            store: store.clone(),
            ca: ca.clone(),
            view: slots.clone(),
            enrollment: enrollment.clone(),
            uploads: uploads.clone(),
            labels: label_wake.clone(),
            work_order: work_order.clone(),
            keys,
            registration: registration.clone(),
            device_keys: device_keys.clone(),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        slot_commands.insert(sc.id.0, tx);
        tasks.push(tokio::spawn(driver.run(opener, rx)));
    }
    let tls = match &cfg.ui_tls {
        Some(files) => Some(ui_tls(files)?),
        None => None,
    };
    let state = AppState {
        store: store.clone(),
        slots: slots.clone(),
        ca_pem: ca.certificate_pem().into(),
        station_id: cfg.station_id.as_str().into(),
        line: cfg.line.as_str().into(),
        outbox: outbox.clone(),
        uploads: uploads.clone(),
        session_idle: time::Duration::try_from(cfg.session_idle)
            .unwrap_or(time::Duration::minutes(30)),
        throttle: Default::default(),
        slot_commands: Arc::new(slot_commands),
        work_order,
        config_view: Arc::new(cfg.public_view()),
        labels: crate::web::Labels {
            labeler,
            printer: printer_state.clone(),
            wake: label_wake,
            scan_back: cfg.label.scan_back,
        },
        reports: Arc::new(cfg.reports.clone()),
        ca: ca.clone(),
        activation_hubs: Arc::new(cfg.dps.activation_hubs.clone()),
        plant: plant.clone(),
        https: tls.is_some(),
        plain_http_exposed: tls.is_none() && !cfg.listen.ip().is_loopback(),
        csp: crate::web::headers::policy(&[]).into(),
        oidc: match &cfg.oidc {
            Some(o) => Some(Arc::new(
                crate::oidc::Oidc::new(o.clone()).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        },
        sound_alerts: cfg.sound_alerts,
        ca_not_after: crate::ca::chain::check_chain(
            &crate::ca::chain::pem_certificates(ca.certificate_pem()),
            "the factory CA",
            time::OffsetDateTime::now_utc(),
        )
        .ok()
        .map(|f| f.not_after),
    };
    if state.plain_http_exposed {
        tracing::warn!(
            listen = %cfg.listen,
            "the web UI and API are served in plain HTTP beyond this machine: badge PINs, passwords, session cookies and API tokens cross the network in clear; set [ui] tls_cert_file and tls_key_file (`station tls request` makes the key and a request for the plant's CA)"
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}: is another station running there? Use --listen to choose",
                cfg.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let server = match tls {
        Some(tls) => {
            let listener = listener.into_std()?;
            let config = axum_server::tls_rustls::RustlsConfig::from_config(tls);
            tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, config)?
                    .serve(app)
                    .await
            })
        }
        None => tokio::spawn(async move { axum::serve(listener, app).await }),
    };
    tracing::info!(%addr, station = %cfg.station_id, slots = cfg.slots.len(), "station running");
    Ok(App {
        addr,
        store,
        slots,
        outbox,
        printer: printer_state,
        demo_access,
        sims,
        sim_tpms,
        plant,
        tasks,
        server,
        https: cfg.ui_tls.is_some(),
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

/// The web UI's HTTPS configuration. A pair that does not fit stops the
/// start; a certificate out of its dates is served with an error in the
/// log (browsers refuse it, but the line runs on).
fn ui_tls(files: &crate::config::TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use crate::web::tls;
    let (key, summary) = tls::load_pair(files).context("the web UI's HTTPS ([ui])")?;
    let now = time::OffsetDateTime::now_utc();
    if let Err(e) = tls::check_validity(files, &summary, now) {
        tracing::error!("{e}");
    }
    for w in summary.warnings(now) {
        tracing::warn!("{w}");
    }
    tracing::info!(
        certificate = %files.cert_file.display(),
        names = %summary.names.join(", "),
        not_after = %summary.not_after.date(),
        "serving HTTPS"
    );
    tls::server_config(key).context("the web UI's HTTPS ([ui])")
}

/// The master key of symmetric-key devices, with `[dps] attestation =
/// "symmetric_key"`.
fn open_device_keys(cfg: &Config) -> anyhow::Result<Option<Arc<dyn crate::dps::DeviceKeys>>> {
    if cfg.dps.attestation != crate::config::Attestation::SymmetricKey {
        return Ok(None);
    }
    let Some(sk) = &cfg.symmetric_key else {
        anyhow::bail!(
            "[dps] attestation = \"symmetric_key\" needs the master key the devices' keys are derived from: add [symmetric_key] to station.toml and make the key with `station symkey init`"
        );
    };
    let key = crate::symkey::MasterKey::open(sk, false)
        .context("opening the master key of symmetric-key devices ([symmetric_key])")?;
    tracing::info!(master_key = %key.describe(), "symmetric-key devices: keys derived from the master key");
    if cfg.dps.enrollment == crate::config::Enrollment::Group
        && let Err(e) = key.group_keys()
    {
        anyhow::bail!("[dps] enrollment = \"group\": {e}");
    }
    Ok(Some(Arc::new(key)))
}
