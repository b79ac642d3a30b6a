//! The `station` command line: argument parsing and the small commands
//! (`ca`, `check`, `simulate`, `board`). `serve` hands over to [`crate::app`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::ca::{CaSigner, FileCa, fingerprint};
use crate::config::{Config, SlotLink};
use crate::ids::Guid;
use crate::jig::link::open_serial;
use crate::jig::protocol::{JigStatus, Request, TestState};
use crate::jig::{JigLink, LinkTiming};
use crate::sim::{Fault, LineCycle, SimOptions};
use crate::store::Store;

pub mod report_cmd;

/// What `station export` exports.
#[derive(Subcommand)]
pub enum ExportCommand {
    /// One record per unit (board record): station, slot, operator, lot,
    /// GUID, certificate, and the timestamps and outcome of each step.
    Units {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        range: report_cmd::RangeArgs,
        /// jsonl (one JSON object a line, with the steps) or csv (the
        /// device list).
        #[arg(long, default_value = "jsonl")]
        format: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Parser)]
#[command(
    name = "station",
    version,
    about = "Factory provisioning station: gives every board in a test jig its cloud identity"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// The configuration file.
    #[arg(long, default_value = "station.toml")]
    pub config: PathBuf,
    /// Use this data folder instead of the configured one.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut cfg = Config::load(&self.config)?;
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the station: the jig slots, the web page and the JSON API.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen on this address instead of the configured one.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Replace the configured slots with N simulated boards on
        /// pseudo-terminals, each simulating a line (creates a CA if none).
        #[arg(long, value_name = "N")]
        demo: Option<u16>,
    },
    /// A QA report of a time range: yield, failures by step, cycle times,
    /// throughput, uploads, labels and the device list.
    Report {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        range: report_cmd::RangeArgs,
        /// html (with charts, prints on A4), csv (the device list) or json.
        #[arg(long, default_value = "html")]
        format: String,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Exports for the plant's MES.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Manage the factory CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Run one simulated board (and its jig) on a serial device, for use
    /// with a station in another process (for example over a socat pair).
    Simulate(SimulateArgs),
    /// Check the configuration and pre-flight the CA, the store and the jigs.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Supervisor actions on a board's record.
    Board {
        #[command(subcommand)]
        command: BoardCommand,
    },
    /// The queue of DPS enrollments.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// The tamper-evident audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The people who may use the station.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Bearer tokens for scripts and the MES.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user. Secrets are read from standard input, one per line (the
    /// PIN first, then the password), never from the command line.
    Add {
        name: String,
        /// operator, supervisor or admin.
        #[arg(long)]
        role: String,
        /// What the badge scanner types for this person (needs --pin).
        #[arg(long)]
        badge: Option<String>,
        /// Read a PIN (4 to 12 digits) from standard input.
        #[arg(long)]
        pin: bool,
        /// Read a password (at least 10 characters) from standard input.
        #[arg(long)]
        password: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List users (no secrets are shown).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Stop a user from signing in.
    Disable {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Set a user's PIN, read from standard input.
    SetPin {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// List tokens (names, roles, dates; never the tokens).
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke every token of this name.
    Revoke {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Make a bearer token; it is printed once and stored only as a hash.
    Create {
        /// operator, supervisor or admin.
        #[arg(long)]
        role: String,
        /// What the token is for (e.g. mes-import).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; names the first broken row and exits non-zero.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write the trail as JSON lines (to standard output, or --out FILE).
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Show the queue: counts, then the jobs (parked and pending by default).
    List {
        /// Only jobs in this state: pending, enrolled or parked.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Queue parked jobs again (all, or one GUID's) and resume uploads.
    Retry {
        /// Only this board's jobs.
        guid: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum CaCommand {
    /// Make a new P-256 factory root CA (key file mode 0600).
    Init {
        #[command(flatten)]
        config: ConfigArgs,
        /// Replace an existing CA (its certificates stop verifying).
        #[arg(long)]
        force: bool,
    },
    /// Print the factory CA certificate and where its key is.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
pub enum BoardCommand {
    /// Allow one more certificate for a GUID that already holds one.
    Override {
        /// The board's GUID.
        guid: String,
        /// Why (kept with the permission).
        #[arg(long)]
        reason: String,
        /// Who allows it.
        #[arg(long)]
        by: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Args)]
pub struct SimulateArgs {
    /// The serial device the board is on.
    #[arg(long)]
    pub device: String,
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// Make the board misbehave: corrupt, drop, silence, bad_crc, truncated,
    /// oversized, garbage (each optionally @VERB), wrong_guid, wrong_key,
    /// not_p256, refuse_store, fail_test.
    #[arg(long)]
    pub fault: Option<String>,
    /// How many times the fault strikes (default: every time).
    #[arg(long)]
    pub fault_times: Option<u32>,
    /// The first board's GUID (default: random).
    #[arg(long)]
    pub guid: Option<String>,
    /// Simulate a line: remove each finished board and insert a new one.
    #[arg(long)]
    pub line: bool,
    #[arg(long, default_value_t = 400)]
    pub keygen_ms: u64,
    #[arg(long, default_value_t = 800)]
    pub test_ms: u64,
    #[arg(long, default_value_t = 1500)]
    pub dwell_ms: u64,
    #[arg(long, default_value_t = 1500)]
    pub pause_ms: u64,
}

pub async fn ca_init(args: &ConfigArgs, force: bool) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = FileCa::init(
        &cfg.ca_certificate_path(),
        &cfg.ca_key_path(),
        &cfg.ca.common_name,
        cfg.ca.ca_validity_days,
        force,
    )?;
    println!("created the factory CA {:?}", cfg.ca.common_name);
    println!("certificate: {}", cfg.ca_certificate_path().display());
    println!(
        "key:         {} (mode 0600; keep it secret and backed up)",
        cfg.ca_key_path().display()
    );
    println!("SHA-256:     {}", fingerprint(ca.certificate_der()));
    Ok(())
}

pub fn ca_show(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = args.load()?;
    let ca = crate::app::load_ca(&cfg, false)?;
    print!("{}", ca_summary(&ca)?);
    print!("{}", ca.certificate_pem());
    Ok(())
}

/// What `ca show` and `check` say about the CA.
struct CaSummary {
    subject: String,
    serial: String,
    not_before: String,
    not_after: String,
    fingerprint: String,
    key: String,
}

fn ca_summary(ca: &dyn CaSigner) -> anyhow::Result<CaSummary> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(ca.certificate_der()).context("reading the CA certificate")?;
    Ok(CaSummary {
        subject: cert.subject().to_string(),
        serial: crate::ca::serial_string(cert.raw_serial()).0,
        not_before: cert.validity().not_before.to_string(),
        not_after: cert.validity().not_after.to_string(),
        fingerprint: fingerprint(ca.certificate_der()),
        key: ca.describe(),
    })
}

impl std::fmt::Display for CaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "subject:     {}", self.subject)?;
        writeln!(f, "serial:      {}", self.serial)?;
        writeln!(f, "valid from:  {}", self.not_before)?;
        writeln!(f, "valid until: {}", self.not_after)?;
        writeln!(f, "SHA-256:     {}", self.fingerprint)?;
        writeln!(f, "key:         {}", self.key)
    }
}

pub async fn board_override(
    guid: &str,
    reason: &str,
    by: &str,
    args: &ConfigArgs,
) -> anyhow::Result<()> {
    let guid: Guid = guid.parse()?;
    if reason.trim().is_empty() || by.trim().is_empty() {
        anyhow::bail!("--reason and --by must say why and who");
    }
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    store.grant_override(&guid, by, reason, time::OffsetDateTime::now_utc())?;
    println!("board {guid} may receive one more certificate; the next provisioning uses this up");
    Ok(())
}

pub fn outbox_list(state: Option<&str>, limit: u32, args: &ConfigArgs) -> anyhow::Result<()> {
    if let Some(s) = state {
        if !["pending", "enrolled", "parked"].contains(&s) {
            anyhow::bail!("--state {s:?}: choose pending, enrolled or parked");
        }
    }
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let c = store.outbox_counts()?;
    println!(
        "pending {}  enrolled {}  parked {}{}",
        c.pending,
        c.enrolled,
        c.parked,
        c.oldest_pending
            .map(|t| format!("  (oldest pending since {t})"))
            .unwrap_or_default()
    );
    let mut jobs = Vec::new();
    match state {
        Some(s) => jobs.extend(store.outbox_jobs(Some(s), limit)?),
        None => {
            jobs.extend(store.outbox_jobs(Some("parked"), limit)?);
            jobs.extend(store.outbox_jobs(Some("pending"), limit)?);
        }
    }
    for j in jobs {
        println!(
            "{:<8} {}  attempts {}  queued {}{}",
            j.state,
            j.guid,
            j.attempts,
            j.created_at,
            j.last_error
                .map(|e| format!("\n         {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn outbox_retry(guid: Option<&str>, args: &ConfigArgs) -> anyhow::Result<()> {
    let guid = guid
        .map(str::parse::<Guid>)
        .transpose()?
        .map(|g| g.to_string());
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let n = store.retry_parked(
        guid.as_deref(),
        &cli_actor(),
        time::OffsetDateTime::now_utc(),
    )?;
    println!(
        "{n} parked job(s) queued again; a running station resumes uploading within a few seconds"
    );
    Ok(())
}

/// Reads one secret line from standard input (prompting on the terminal).
fn read_secret(what: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_string();
    if line.is_empty() {
        anyhow::bail!("no {what} on standard input");
    }
    Ok(line)
}

fn store_of(args: &ConfigArgs) -> anyhow::Result<Store> {
    let cfg = args.load()?;
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    Ok(Store::open(&cfg.database_path())?)
}

pub fn user_command(cmd: &UserCommand) -> anyhow::Result<()> {
    let now = time::OffsetDateTime::now_utc();
    match cmd {
        UserCommand::Add {
            name,
            role,
            badge,
            pin,
            password,
            config,
        } => {
            let role: crate::store::Role = role.parse().map_err(anyhow::Error::msg)?;
            let pin = pin.then(|| read_secret("PIN")).transpose()?;
            let password = password.then(|| read_secret("password")).transpose()?;
            let new = crate::store::NewUser {
                name,
                role,
                badge: badge.as_deref(),
                pin: pin.as_deref(),
                password: password.as_deref(),
            };
            let u = store_of(config)?.add_user(&new, &cli_actor(), now)?;
            println!("added {} ({})", u.name, u.role.as_str());
        }
        UserCommand::List { config } => {
            for u in store_of(config)?.users()? {
                println!(
                    "{:<20} {:<10} badge {:<5} pin {:<5} password {:<5} {}",
                    u.name,
                    u.role.as_str(),
                    if u.badge.is_some() { "yes" } else { "no" },
                    if u.has_pin { "yes" } else { "no" },
                    if u.has_password { "yes" } else { "no" },
                    u.disabled_at
                        .map(|t| format!("disabled {t}"))
                        .unwrap_or_else(|| "enabled".into())
                );
            }
        }
        UserCommand::Disable { name, config } => {
            if !store_of(config)?.disable_user(name, &cli_actor(), now)? {
                anyhow::bail!("no enabled user named {name:?}");
            }
            println!("{name} can no longer sign in");
        }
        UserCommand::SetPin { name, config } => {
            let pin = read_secret("new PIN")?;
            if !store_of(config)?.set_pin(name, &pin, &cli_actor(), now)? {
                anyhow::bail!("no user named {name:?}");
            }
            println!("PIN changed for {name}");
        }
    }
    Ok(())
}

pub fn token_command(cmd: &TokenCommand) -> anyhow::Result<()> {
    let (role, name, config) = match cmd {
        TokenCommand::List { config } => {
            for t in store_of(config)?.tokens()? {
                let state = t
                    .revoked_at
                    .map(|r| format!("revoked {r}"))
                    .unwrap_or_else(|| "live".into());
                println!(
                    "{:<24} {:<10} created {}  {state}",
                    t.name,
                    t.role.as_str(),
                    t.created_at
                );
            }
            return Ok(());
        }
        TokenCommand::Revoke { name, config } => {
            let n = store_of(config)?.revoke_token(
                name,
                &cli_actor(),
                time::OffsetDateTime::now_utc(),
            )?;
            if n == 0 {
                anyhow::bail!("no live token named {name:?}");
            }
            println!("revoked {n} token(s) named {name}");
            return Ok(());
        }
        TokenCommand::Create { role, name, config } => (role, name, config),
    };
    let role: crate::store::Role = role.parse().map_err(anyhow::Error::msg)?;
    let token = store_of(config)?.create_token(
        name,
        role,
        &cli_actor(),
        time::OffsetDateTime::now_utc(),
    )?;
    eprintln!(
        "token {name:?} ({}): shown this once; the station keeps only its hash",
        role.as_str()
    );
    println!("{token}");
    Ok(())
}

/// Who runs a CLI command, for the audit trail.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// `station audit verify`: true if the chain holds.
pub fn audit_verify(args: &ConfigArgs) -> anyhow::Result<bool> {
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    Ok(match store.verify_audit()? {
        crate::store::AuditCheck::Intact { rows } => {
            println!("audit trail intact: {rows} rows");
            true
        }
        crate::store::AuditCheck::Broken { row, reason } => {
            println!("audit trail BROKEN at row {row}: {reason}");
            false
        }
    })
}

pub fn audit_export(out: Option<&std::path::Path>, args: &ConfigArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let cfg = args.load()?;
    let store = Store::open(&cfg.database_path())?;
    let mut text = String::new();
    for row in store.audit_rows()? {
        text.push_str(&serde_json::to_string(&row)?);
        text.push('\n');
    }
    match out {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(text.as_bytes())?,
    }
    Ok(())
}

pub async fn simulate(a: &SimulateArgs) -> anyhow::Result<()> {
    use tokio_serial::SerialPortBuilderExt;
    let fault = a
        .fault
        .as_deref()
        .map(str::parse::<Fault>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--fault: {e}"))?;
    let guid = a.guid.as_deref().map(str::parse::<Guid>).transpose()?;
    let opts = SimOptions {
        keygen_time: Duration::from_millis(a.keygen_ms),
        test_time: Duration::from_millis(a.test_ms),
        first_insert_after: Duration::from_millis(200),
        line: a.line.then_some(LineCycle {
            dwell: Duration::from_millis(a.dwell_ms),
            pause: Duration::from_millis(a.pause_ms),
        }),
        guid,
        fault,
        fault_times: a.fault_times,
        ..SimOptions::default()
    };
    let port = tokio_serial::new(&a.device, a.baud)
        .open_native_async()
        .with_context(|| format!("opening {}", a.device))?;
    eprintln!(
        "simulating a jig with a board on {}{}",
        a.device,
        a.fault
            .as_ref()
            .map(|f| format!(" (fault: {f})"))
            .unwrap_or_default()
    );
    crate::sim::run(port, opts, Default::default()).await?;
    Ok(())
}

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
    match crate::app::load_ca(&cfg, false).and_then(|ca| ca_summary(&ca)) {
        Ok(ca) => report(
            true,
            format!("factory CA ({}), valid until {}", ca.key, ca.not_after),
        ),
        Err(e) => report(false, format!("factory CA: {e:#}")),
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
