//! `station check`: the configuration, the CA, the store, the label
//! template, the printer, DPS (the TLS connection, then the key), and a
//! pre-flight of every jig slot and its TPM. Reports each as a line;
//! changes nothing.

use super::ConfigArgs;
use super::ca::ca_summary;
use crate::config::SlotLink;
use crate::jig::link::open_serial;
use crate::jig::protocol::{JigStatus, Request, TestState};
use crate::jig::{JigLink, LinkTiming};
use crate::store::Store;

/// `station check`: every line says ok or what is wrong; the result is
/// false if anything is wrong.
pub async fn check(args: &ConfigArgs) -> bool {
    let cfg = match args.load() {
        Ok(c) => {
            println!("ok       configuration {}", args.config.display());
            c
        }
        Err(e) => {
            println!("PROBLEM  configuration: {e}");
            return false;
        }
    };
    let mut good = true;
    let mut report = |ok: bool, what: String| {
        println!("{}  {what}", if ok { "ok     " } else { "PROBLEM" });
        good &= ok;
    };
    match crate::custody::load_ca(&cfg, false).and_then(|ca| Ok((ca_summary(&ca)?, ca))) {
        Ok((summary, ca)) => {
            report(
                true,
                format!(
                    "factory CA ({}), valid until {}",
                    summary.key, summary.not_after
                ),
            );
            // A warning, not a problem: the station still provisions.
            if let Some(w) =
                crate::custody::expiry_warning(&cfg, &ca, time::OffsetDateTime::now_utc())
            {
                println!("WARNING  {w}");
            }
        }
        Err(e) => report(false, format!("factory CA: {e:#}")),
    }
    ui_check(&cfg, &mut report);
    // A warning: boards are provisioned, but learn no registration scope.
    match &cfg.dps.id_scope {
        Some(scope) => report(
            true,
            format!(
                "provisioning settings for the boards: {} with ID scope {scope}",
                cfg.dps.global_endpoint
            ),
        ),
        None => println!(
            "WARNING  [dps] id_scope is not set: boards get no provisioning settings (where to register at first boot); copy the ID scope from the DPS instance's overview into station.toml"
        ),
    }
    for (level, line) in dps_check(&cfg.dps).await {
        match level {
            Level::Ok => report(true, line),
            Level::Problem => report(false, line),
            Level::Warning => println!("WARNING  {line}"),
            Level::Skipped => println!("skipped  {line}"),
        }
    }
    // A warning: badges and passwords still work without the provider.
    if let Some(o) = &cfg.oidc {
        match crate::oidc::check_discovery(o).await {
            Ok(line) => report(true, line),
            Err(e) => println!(
                "WARNING  organisational sign-in: {}/.well-known/openid-configuration could not be read: {e}",
                o.issuer.trim_end_matches('/')
            ),
        }
    }
    if cfg.data_dir.exists() {
        match Store::open(&cfg.database_path()) {
            Ok(s) => report(
                true,
                format!(
                    "database {} (schema {})",
                    cfg.database_path().display(),
                    s.schema_version().unwrap_or(0)
                ),
            ),
            Err(e) => report(false, format!("database: {e}")),
        }
    } else {
        report(
            false,
            format!(
                "data folder {} does not exist: `station ca init` or `station serve` creates it",
                cfg.data_dir.display()
            ),
        );
    }
    let size = cfg.label.labeler.template.size();
    report(
        true,
        format!(
            "label template {} ({} x {} mm at {} dots/mm)",
            cfg.label.template_origin, size.width_mm, size.height_mm, size.dpmm
        ),
    );
    let printer = crate::printer::from_config(&cfg.printer);
    match printer.check().await {
        Ok(()) => report(true, format!("printer {}: ready", printer.describe())),
        Err(e) => report(
            false,
            format!("printer: {e} (labels wait in the queue until it is ready)"),
        ),
    }
    if let Some(p) = &cfg.plant {
        match plant_check(&cfg, p).await {
            Ok((line, warning)) => {
                report(true, line);
                if let Some(w) = warning {
                    println!("WARNING  {w}");
                }
            }
            Err(e) => report(
                false,
                format!(
                    "{e} (the line runs without it; records wait and are sent when it is back)"
                ),
            ),
        }
    }
    let timing = LinkTiming {
        attempts: 1,
        ..cfg.timing
    };
    for s in &cfg.slots {
        match &s.link {
            SlotLink::Simulated(_) => report(
                true,
                format!("slot {}: simulated board (no hardware)", s.id),
            ),
            SlotLink::Serial { device, baud } => match preflight(device, *baud, timing).await {
                Ok(what) => report(true, format!("slot {} on {device}: {what}", s.id)),
                Err(e) => report(false, format!("slot {} on {device}: {e}", s.id)),
            },
        }
        if let crate::config::Keygen::Tpm(k) = &s.keygen {
            match (crate::tpm::BUILT, &k.tcti) {
                (false, _) => report(
                    false,
                    format!(
                        "slot {}: keygen = \"tpm\" needs a station built with TPM support: `cargo build --release --features tpm` (needs libtss2-dev)",
                        s.id
                    ),
                ),
                (true, None) => report(
                    true,
                    format!("slot {}: simulated TPM (a swtpm per board)", s.id),
                ),
                (true, Some(tcti)) => {
                    let slot = crate::tpm::TpmSlot {
                        tcti: tcti.clone(),
                        key_handle: k.key_handle,
                        cert_nv_index: k.cert_nv_index,
                        settings_nv_index: k.settings_nv_index,
                    };
                    let opened =
                        tokio::task::spawn_blocking(move || crate::tpm::open(&slot).map(|_| ()))
                            .await;
                    match opened {
                        Ok(Ok(())) => report(true, format!("slot {}: TPM {tcti} answers", s.id)),
                        Ok(Err(e)) => report(false, format!("slot {}: {e}", s.id)),
                        Err(e) => report(false, format!("slot {}: {e}", s.id)),
                    }
                }
            }
        }
    }
    good
}

/// The web UI's HTTPS: the pair fits and is in its dates (a warning 30
/// days before the end); or, without it, a warning when the station
/// listens beyond loopback.
fn ui_check(cfg: &crate::config::Config, report: &mut impl FnMut(bool, String)) {
    use crate::web::tls;
    let Some(files) = &cfg.ui_tls else {
        if !cfg.listen.ip().is_loopback() {
            println!(
                "WARNING  the web UI listens on {} in plain HTTP: badge PINs, passwords, session cookies and API tokens cross the network in clear; set [ui] tls_cert_file and tls_key_file (`station tls request`)",
                cfg.listen
            );
        }
        return;
    };
    let now = time::OffsetDateTime::now_utc();
    match tls::load(files, now) {
        Ok((_, summary)) => {
            report(
                true,
                format!(
                    "web UI HTTPS certificate {} for {}, valid until {}",
                    files.cert_file.display(),
                    if summary.names.is_empty() {
                        summary.subject.clone()
                    } else {
                        summary.names.join(", ")
                    },
                    summary.not_after.date()
                ),
            );
            for w in summary.warnings(now) {
                println!("WARNING  {w}");
            }
        }
        Err(e) => report(false, format!("web UI HTTPS: {e}")),
    }
    key_file_mode(&files.key_file);
}

/// A warning when the UI's key can be read by others than its owner.
fn key_file_mode(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        println!(
            "WARNING  {} can be read by others than its owner (mode {:o}): `chmod 600 {}`",
            path.display(),
            m.permissions().mode() & 0o777,
            path.display()
        );
    }
}

/// How a line of `station check` counts.
#[derive(Debug, PartialEq, Eq)]
enum Level {
    Ok,
    /// Will not fix itself: the check fails.
    Problem,
    /// The line runs on (the outbox waits), but someone should look.
    Warning,
    Skipped,
}

/// Most `station check` waits for DPS.
const DPS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// DPS in two steps, from one call: the connection (TLS, through the
/// proxy if any) to the service endpoint, then the key: a GET of an
/// enrollment that cannot exist, answered 404, proves the connection
/// string's policy is accepted. An unreachable DPS is a warning (the
/// outbox keeps the line running); a TLS failure, a refusing proxy and
/// refused credentials are problems, which do not go away by waiting.
async fn dps_check(dps: &crate::config::DpsConfig) -> Vec<(Level, String)> {
    use crate::dps::{DpsClient, DpsError, HttpDps};
    let (Some(conn), Some(endpoint)) = (&dps.connection, &dps.endpoint) else {
        return vec![(
            Level::Skipped,
            "DPS: no connection string ([dps] connection_string or STATION_DPS_CONNECTION_STRING): enrollments are queued, not sent".into(),
        )];
    };
    let via = match &dps.net.proxy {
        Some(p) => format!(" through the proxy at {}", p.shown()),
        None => String::new(),
    };
    let timeout = dps.request_timeout.min(DPS_CHECK_TIMEOUT);
    let client = match HttpDps::with_network(endpoint, conn.clone(), timeout, &dps.net) {
        Ok(c) => c,
        Err(e) => return vec![(Level::Problem, format!("DPS {endpoint}: {e}"))],
    };
    let id = format!("station-check-{}", hex::encode(crate::random::bytes::<8>()));
    let connected = (
        Level::Ok,
        if endpoint.starts_with("https://") {
            format!("DPS {endpoint}: TLS connection{via}, certificate trusted")
        } else {
            format!("DPS {endpoint}: connected{via} (plain http, loopback only)")
        },
    );
    let key_not_tried = (
        Level::Skipped,
        "DPS key: not tried before the connection works".to_string(),
    );
    match client.get(&id).await {
        Ok(_) => vec![
            connected,
            (
                Level::Ok,
                format!(
                    "DPS key: policy {} accepted (a read of an enrollment that cannot exist was answered)",
                    conn.key_name
                ),
            ),
        ],
        Err(e @ (DpsError::Tls(_) | DpsError::Proxy(_))) => vec![
            (
                Level::Problem,
                format!("DPS {endpoint}: the TLS connection step failed: {e}"),
            ),
            key_not_tried,
        ],
        Err(e @ DpsError::Network(_)) => vec![
            (
                Level::Warning,
                format!(
                    "DPS {endpoint} is unreachable, the connection step failed: {e} (the line runs on; enrollments wait in the outbox)"
                ),
            ),
            key_not_tried,
        ],
        Err(e @ DpsError::Unauthorized { .. }) => {
            vec![
                connected,
                (Level::Problem, format!("DPS key: the key step failed: {e}")),
            ]
        }
        Err(e @ (DpsError::Throttled { .. } | DpsError::Server { .. })) => vec![
            connected,
            (
                Level::Warning,
                format!("DPS key: not proven, DPS is busy: {e}"),
            ),
        ],
        Err(e @ DpsError::Rejected { .. }) => vec![
            connected,
            (
                Level::Problem,
                format!("DPS key: the key step got an unexpected answer: {e}"),
            ),
        ],
    }
}

/// The plant database: reached, with this station's schema; how far
/// behind it is (a warning past `[plant] max_lag_warning_s`).
async fn plant_check(
    cfg: &crate::config::Config,
    p: &crate::config::PlantConfig,
) -> Result<(String, Option<String>), crate::plant::PlantError> {
    let shown = p.shown_url();
    let client = crate::plant::connect_checked(p).await?;
    let last = crate::plant::views::station_cursor(&client, &cfg.station_id)
        .await
        .map_err(|e| crate::plant::PlantError::new(format!("{shown}: {e}")))?;
    let mut line = format!(
        "plant database {shown}: reached, plant schema {}",
        crate::plant::schema::known()
    );
    match last {
        Some(_) => line.push_str(&format!("; station {} forwards to it", cfg.station_id)),
        None => line.push_str(&format!(
            "; station {} has not forwarded yet",
            cfg.station_id
        )),
    }
    let lag = Store::open(&cfg.database_path())
        .and_then(|s| s.plant_lag())
        .ok();
    let mut warning = None;
    if let Some(lag) = lag.filter(|l| l.entries > 0) {
        let age = lag.age(time::OffsetDateTime::now_utc()).as_secs();
        line.push_str(&format!(
            "; {} change(s) to send, oldest {age} s",
            lag.entries
        ));
        if age > p.max_lag_warning.as_secs() {
            warning = Some(format!(
                "the plant database is {age} s behind this station ([plant] max_lag_warning_s = {}): is the station running and the database reachable from it?",
                p.max_lag_warning.as_secs()
            ));
        }
    }
    Ok((line, warning))
}

async fn preflight(device: &str, baud: u32, timing: LinkTiming) -> anyhow::Result<String> {
    let mut link = open_serial(device, baud, timing, 1)?;
    let a = link.call(&Request::Status).await?;
    let st = JigStatus::from_answer(&a)?;
    Ok(match (st.present, st.test) {
        (false, _) => "jig answers; no board in it".to_string(),
        (true, TestState::Failed { code, .. }) => {
            format!("jig answers; the board in it failed its test ({code})")
        }
        (true, _) => "jig answers; a board is in it".to_string(),
    })
}
