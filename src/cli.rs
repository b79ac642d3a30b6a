//! The `station` command line: the clap definitions of every command and
//! their arguments. `serve` hands over to [`crate::app`]; the other commands
//! live in the submodules, one topic each, re-exported here:
//! `ca` (`ca init/show`), `check` (`check` and the jig pre-flight),
//! `people` (`user`, `token`), `records` (`board`, `outbox`, `audit`),
//! `simulate`, `report_cmd` (`report`, `export`), `plant` (`plant
//! migrate/report/export/conflicts/verify`), `symkey` (`symkey
//! init/show`) and `tls` (`tls request`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

mod ca;
mod check;
mod device;
mod people;
pub mod plant;
mod records;
pub mod report_cmd;
mod simulate;
mod symkey;
mod tls;

pub use ca::{ca_crl, ca_init, ca_install, ca_request, ca_show};
pub use check::check;
pub use device::device;
pub use people::{token_command, user_command};
pub use plant::{plant_conflicts, plant_export_units, plant_migrate, plant_report, plant_verify};
pub use records::{audit_export, audit_verify, board_override, outbox_list, outbox_retry};
pub use simulate::simulate;
pub use symkey::{symkey_init, symkey_show};
pub use tls::tls_request;

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
            if let Some(s) = &mut cfg.symmetric_key {
                s.data_dir = d.clone();
            }
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
    /// The web UI's HTTPS certificate (`[ui] tls_cert_file`,
    /// `tls_key_file`).
    Tls {
        #[command(subcommand)]
        command: TlsCommand,
    },
    /// The master key for symmetric-key devices (`[symmetric_key]`).
    Symkey {
        #[command(subcommand)]
        command: SymkeyCommand,
    },
    /// Run one simulated board (and its jig) on a serial device, for use
    /// with a station in another process (for example over a socat pair).
    Simulate(SimulateArgs),
    /// Check the configuration and pre-flight the CA, the store and the jigs.
    Check {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Devices after the line: activate, disable, enable, revoke, retire,
    /// show.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
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
    /// The plant database every station forwards to (`[plant]`): its
    /// schema, reports and exports over every station, conflicts, audit
    /// chains.
    Plant {
        #[command(subcommand)]
        command: PlantCommand,
    },
}

#[derive(Subcommand)]
pub enum PlantCommand {
    /// Create or upgrade the plant schema (safe to run from every station
    /// at once).
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// A QA report over every station of the plant (or --station, --line):
    /// the options and formats of `station report`.
    Report {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        range: report_cmd::RangeArgs,
        #[command(flatten)]
        scope: plant::PlantScope,
        /// html (with charts, prints on A4), csv (the device list) or json.
        #[arg(long, default_value = "html")]
        format: String,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Exports for the plant's MES, over every station.
    Export {
        #[command(subcommand)]
        command: PlantExportCommand,
    },
    /// GUIDs that hold live certificates from two or more stations (exits
    /// 0 whether or not there are any).
    Conflicts {
        #[command(flatten)]
        config: ConfigArgs,
        /// text or json.
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Check every station's audit hash chain as the plant holds it; names
    /// the first bad row of each and exits non-zero if any is broken.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// What `station plant export` exports.
#[derive(Subcommand)]
pub enum PlantExportCommand {
    /// One record per unit (board record) of every station: as `station
    /// export units`, with the station's id in each.
    Units {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        range: report_cmd::RangeArgs,
        #[command(flatten)]
        scope: plant::PlantScope,
        /// jsonl (one JSON object a line, with the steps) or csv (the
        /// device list).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Write here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user. Secrets are read from standard input, one per line (the
    /// PIN first, then the password), never from the command line.
    Add {
        name: String,
        /// activator, operator, supervisor or admin.
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
        /// activator, operator, supervisor or admin.
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
    /// Make a new self-signed P-256 CA in files (development and demo;
    /// key file mode 0600). Production stations use `request` and
    /// `install`.
    Init {
        #[command(flatten)]
        config: ConfigArgs,
        /// Replace an existing CA (its certificates stop verifying).
        #[arg(long)]
        force: bool,
    },
    /// Make this station's CA key in the `[ca] key` backend (if it has
    /// none) and a CSR for the station's intermediate, for the factory
    /// root to sign.
    Request {
        #[command(flatten)]
        config: ConfigArgs,
        /// Write the CSR (PEM) here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Install the station's intermediate signed by the factory root:
    /// checked against the key and the root, then it replaces
    /// `[ca] certificate_file`.
    Install {
        #[command(flatten)]
        config: ConfigArgs,
        /// The signed intermediate (PEM), perhaps followed by the root.
        cert: PathBuf,
        /// The factory root certificate (PEM), if CERT does not end with
        /// it.
        #[arg(long)]
        root: Option<PathBuf>,
    },
    /// Print the CA's chain, key backend and expiry.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Write the certificate revocation list (DER), signed by the CA.
    Crl {
        #[command(flatten)]
        config: ConfigArgs,
        /// The file to write (DER; `openssl crl -inform DER` reads it).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Make the web UI's P-256 key in `[ui] tls_key_file` (mode 0600; an
    /// existing key is used, never replaced) and a CSR for the plant's CA
    /// naming the hosts people type to reach the station. Install the
    /// signed chain as `[ui] tls_cert_file`.
    Request {
        #[command(flatten)]
        config: ConfigArgs,
        /// A DNS name of the station (repeat for more).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// An IP address of the station (repeat for more).
        #[arg(long = "ip", value_name = "ADDRESS")]
        ips: Vec<std::net::IpAddr>,
        /// Write the CSR (PEM) here instead of to standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum SymkeyCommand {
    /// Make the master key in the `[symmetric_key] key` backend: an
    /// encrypted key file (mode 0600), or a key made in the PKCS#11 token
    /// that never leaves it. Never replaces an existing one.
    Init {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print where the master key is and its non-secret id.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Who is asking: an API token (`station token create`); its role decides
/// what it may do.
#[derive(Args, Clone)]
pub struct TokenArg {
    /// An API token; or set STATION_TOKEN.
    #[arg(long, env = "STATION_TOKEN", hide_env_values = true)]
    pub token: String,
}

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// Enable a device in DPS on an IoT hub with initial-twin tags and
    /// desired properties (activator or supervisor).
    Activate {
        guid: String,
        /// The IoT hub, one of `[dps] activation_hubs`.
        #[arg(long)]
        hub: String,
        /// Initial-twin tags, a JSON object.
        #[arg(long, default_value = "")]
        tags: String,
        /// Initial desired properties, a JSON object.
        #[arg(long, default_value = "")]
        desired: String,
        /// A note for the audit trail.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Disable a device's enrollment for a while (supervisor).
    Disable {
        guid: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Enable a disabled device again (supervisor).
    Enable {
        guid: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a device for good: disabled in DPS, its certificate on the
    /// CRL, never provisioned again without an admin (supervisor).
    Revoke {
        guid: String,
        #[arg(long)]
        reason: String,
        /// Confirms that this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Retire a device for good: its enrollment deleted from DPS, every
    /// certificate of it on the CRL, never provisioned again without an
    /// admin (supervisor).
    Retire {
        guid: String,
        #[arg(long)]
        reason: String,
        /// Confirms that this cannot be undone.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The device's history and its DPS state as last seen.
    Show {
        guid: String,
        /// The whole record as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        token: TokenArg,
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

/// Who runs a CLI command, for the audit trail.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}
