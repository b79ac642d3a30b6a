//! Label printers: the [`Printer`] trait, its backends (raw TCP port 9100
//! with Zebra host status, a spool folder, CUPS through `lp`, a scripted
//! fake), and the worker that prints queued label jobs without ever
//! holding up the line. Knows ZPL only as bytes to send.

pub mod cups;
pub mod fake;
pub mod spool;
pub mod status;
pub mod tcp;
pub mod worker;

pub use fake::ScriptedPrinter;
pub use spool::SpoolPrinter;
pub use status::HostStatus;
pub use tcp::TcpPrinter;
pub use worker::{LabelWorker, PrinterState, SharedPrinterState};

/// Why a label did not print, in words for the operator at the line.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PrintError {
    #[error("printer {address} is out of labels: load a new roll and close the head")]
    PaperOut { address: String },
    #[error("printer {address} has its head open: close the print head")]
    HeadOpen { address: String },
    #[error("printer {address} is paused: press PAUSE on the printer to resume")]
    Paused { address: String },
    #[error("printer {address} is out of ribbon: load a new ribbon")]
    RibbonOut { address: String },
    #[error(
        "printer {address} reports a fault ({what}): check the printer's display, then switch it off and on"
    )]
    Fault { address: String, what: String },
    #[error(
        "printer {address} cannot be reached ({reason}): check it is switched on and its network cable"
    )]
    Unreachable { address: String, reason: String },
    #[error(
        "printer {address} did not answer its status request: check the printer's display for media out, ribbon out, head open or overheating"
    )]
    NoStatus { address: String },
    #[error(
        "printer {address} sent a status the station cannot read ({reason}): is it a Zebra-compatible printer on its raw port?"
    )]
    BadStatus { address: String, reason: String },
    #[error("cannot write the label to the spool folder {dir}: {reason}")]
    Spool { dir: String, reason: String },
    #[error("printing through CUPS queue {queue} failed: {reason}")]
    Cups { queue: String, reason: String },
}

impl PrintError {
    /// A stable name for the API and the job record.
    pub fn code(&self) -> &'static str {
        match self {
            PrintError::PaperOut { .. } => "paper_out",
            PrintError::HeadOpen { .. } => "head_open",
            PrintError::Paused { .. } => "paused",
            PrintError::RibbonOut { .. } => "ribbon_out",
            PrintError::Fault { .. } => "printer_fault",
            PrintError::Unreachable { .. } => "unreachable",
            PrintError::NoStatus { .. } => "no_status",
            PrintError::BadStatus { .. } => "bad_status",
            PrintError::Spool { .. } => "spool_failed",
            PrintError::Cups { .. } => "cups_failed",
        }
    }
}

/// One label to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrintJob {
    /// The label job's id in the store.
    pub id: i64,
    /// What the label is for: a GUID, or `test`.
    pub name: String,
    pub zpl: String,
}

/// A label printer.
#[async_trait::async_trait]
pub trait Printer: Send + Sync {
    /// What it is, for logs and the API (`tcp 10.0.0.7:9100`).
    fn describe(&self) -> String;

    /// Whether it could print now. Backends that cannot tell say yes.
    async fn check(&self) -> Result<(), PrintError>;

    /// Prints one label. Returns once the printer (or spool, or CUPS) has
    /// taken all of it.
    async fn print(&self, job: &PrintJob) -> Result<(), PrintError>;
}

/// The printer `station.toml` names.
pub fn from_config(c: &crate::config::PrinterConfig) -> std::sync::Arc<dyn Printer> {
    use crate::config::PrinterBackend;
    match &c.backend {
        PrinterBackend::Tcp { address } => std::sync::Arc::new(TcpPrinter::new(address, c.timeout)),
        PrinterBackend::Spool { dir } => std::sync::Arc::new(SpoolPrinter { dir: dir.clone() }),
        PrinterBackend::Cups { queue } => {
            std::sync::Arc::new(cups::CupsPrinter::new(queue, c.timeout))
        }
    }
}
