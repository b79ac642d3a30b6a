//! The label worker: one background task that prints queued label jobs in
//! order. A printer problem never reaches the line: the job stays queued,
//! the problem is shown, and the worker tries again (sooner when a new
//! label arrives) until the printer is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{PrintError, PrintJob, Printer};
use crate::label::{LabelFacts, Labeler};
use crate::store::{LabelJob, LabelRecord, Store, StoreError, blocking, ts};

/// What the printer is doing, for the API and the line view.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrinterState {
    /// The backend, as `tcp 10.0.0.7:9100`.
    pub printer: String,
    /// `ready`, `problem` or `unknown` (not asked yet).
    pub state: &'static str,
    /// The problem's code (`paper_out`, `head_open`, `unreachable`, ...).
    pub code: Option<&'static str>,
    /// The problem, in words for the operator.
    pub message: Option<String>,
    pub since: String,
    /// Labels printed since the station started.
    pub printed: u64,
}

pub type SharedPrinterState = Arc<Mutex<PrinterState>>;

impl PrinterState {
    pub fn new(printer: String) -> SharedPrinterState {
        Arc::new(Mutex::new(PrinterState {
            printer,
            state: "unknown",
            code: None,
            message: None,
            since: ts(OffsetDateTime::now_utc()),
            printed: 0,
        }))
    }
}

/// The facts a board's label shows, from its record.
pub fn facts_of(r: &LabelRecord) -> LabelFacts {
    LabelFacts {
        guid: r.guid.clone(),
        product: String::new(),
        hw_revision: r.hw_revision.clone().unwrap_or_default(),
        fw_version: r.fw_version.clone().unwrap_or_default(),
        mac: r.mac.clone().unwrap_or_default(),
        lot: r.work_order.clone().unwrap_or_default(),
        date: r
            .finished_at
            .as_deref()
            .and_then(|t| t.get(..10))
            .unwrap_or_default()
            .to_string(),
        serial: r.serial.clone(),
        station: r.station.clone(),
        slot: r.slot.to_string(),
    }
}

pub struct LabelWorker {
    pub store: Store,
    pub printer: Arc<dyn Printer>,
    pub labeler: Arc<Labeler>,
    pub state: SharedPrinterState,
    /// Woken when a label is queued.
    pub wake: Arc<Notify>,
    pub station: String,
    /// Longest wait between tries while the printer has a problem, and
    /// between status checks while idle.
    pub max_wait: Duration,
    /// Called when the printer's state or the queue changes (the line view
    /// redraws).
    pub on_change: Arc<dyn Fn() + Send + Sync>,
}

/// What became of one job.
enum Outcome {
    Printed,
    Cancelled,
    Failed(PrintError),
}

impl LabelWorker {
    /// Runs until the task is aborted.
    pub async fn run(self) {
        let mut wait = Duration::from_millis(250).min(self.max_wait);
        loop {
            let store = self.store.clone();
            let jobs = match blocking(move || store.pending_labels(16)).await {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the label queue");
                    tokio::time::sleep(self.max_wait).await;
                    continue;
                }
            };
            if jobs.is_empty() {
                // Idle: keep the shown printer state true.
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.max_wait) => {
                        let checked = self.printer.check().await;
                        self.show(checked.err().as_ref(), false);
                    }
                }
                continue;
            }
            let mut failed = false;
            for job in jobs {
                match self.print(&job).await {
                    Ok(Outcome::Printed) | Ok(Outcome::Cancelled) => {}
                    Ok(Outcome::Failed(e)) => {
                        failed = true;
                        tracing::warn!(label = job.id, board.guid = %job.guid, code = e.code(), "label not printed: {e}");
                        self.show(Some(&e), false);
                        break;
                    }
                    Err(e) => {
                        failed = true;
                        tracing::error!(label = job.id, error = %e, "cannot record the label job");
                        break;
                    }
                }
            }
            if failed {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(self.max_wait);
            } else {
                wait = Duration::from_millis(250).min(self.max_wait);
            }
        }
    }

    async fn print(&self, job: &LabelJob) -> Result<Outcome, StoreError> {
        let facts = if job.kind == "test" {
            Some(Labeler::test_facts(
                &self.station,
                OffsetDateTime::now_utc(),
            ))
        } else {
            let (store, guid) = (self.store.clone(), job.guid.clone());
            blocking(move || store.label_record(&guid))
                .await?
                .map(|r| facts_of(&r))
        };
        let (store, id) = (self.store.clone(), job.id);
        let Some(facts) = facts else {
            tracing::error!(label = id, board.guid = %job.guid, "label job without a provisioned board: dropped");
            blocking(move || {
                store.label_cancelled(
                    id,
                    "no provisioned board with this GUID",
                    OffsetDateTime::now_utc(),
                )
            })
            .await?;
            return Ok(Outcome::Cancelled);
        };
        let print = PrintJob {
            id,
            name: if job.kind == "test" {
                "test".into()
            } else {
                job.guid.clone()
            },
            zpl: self.labeler.zpl(&facts),
        };
        let started = std::time::Instant::now();
        match self.printer.print(&print).await {
            Ok(()) => {
                blocking(move || store.label_printed(id, OffsetDateTime::now_utc())).await?;
                tracing::info!(label = id, board.guid = %job.guid, kind = %job.kind, duration_ms = started.elapsed().as_millis() as u64, "label printed");
                self.show(None, true);
                Ok(Outcome::Printed)
            }
            Err(e) => {
                let msg = e.to_string();
                blocking(move || store.label_failed(id, &msg, OffsetDateTime::now_utc())).await?;
                Ok(Outcome::Failed(e))
            }
        }
    }

    fn show(&self, problem: Option<&PrintError>, printed: bool) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let state = if problem.is_some() {
            "problem"
        } else {
            "ready"
        };
        let code = problem.map(PrintError::code);
        if s.state != state || s.code != code {
            s.since = ts(OffsetDateTime::now_utc());
            if problem.is_none() && s.state == "problem" {
                tracing::info!(printer = %s.printer, "printer is ready again");
            }
        }
        let message = problem.map(ToString::to_string);
        let changed = printed || s.state != state || s.message != message;
        s.state = state;
        s.code = code;
        s.message = message;
        if printed {
            s.printed += 1;
        }
        drop(s);
        if changed {
            (self.on_change)();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::label::{LabelSize, LabelTemplate, REFERENCE_TEMPLATE};
    use crate::printer::ScriptedPrinter;

    fn labeler() -> Arc<Labeler> {
        let size = LabelSize {
            width_mm: 60.0,
            height_mm: 30.0,
            dpmm: 8,
        };
        Arc::new(Labeler {
            template: LabelTemplate::parse(REFERENCE_TEMPLATE, "ref", size, Default::default())
                .unwrap(),
            product: "Widget".into(),
        })
    }

    #[tokio::test]
    async fn a_printer_problem_keeps_jobs_queued_until_they_print_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("station.db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let ids: Vec<i64> = (0..3)
            .map(|_| store.test_label("sup", now).unwrap())
            .collect();
        let paper = || {
            Err(PrintError::PaperOut {
                address: "p".into(),
            })
        };
        let printer = Arc::new(ScriptedPrinter::with_script([paper(), paper()]));
        let state = PrinterState::new(printer.describe());
        let changes = Arc::new(AtomicUsize::new(0));
        let counted = changes.clone();
        let worker = LabelWorker {
            store: store.clone(),
            printer: printer.clone(),
            labeler: labeler(),
            state: state.clone(),
            wake: Arc::default(),
            station: "st".into(),
            max_wait: Duration::from_millis(40),
            on_change: Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        };
        let task = tokio::spawn(worker.run());
        // Done once the worker has recorded the third print, not merely
        // once the printer took it.
        for _ in 0..200 {
            if state.lock().unwrap().printed == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let printed: Vec<i64> = printer.printed().iter().map(|j| j.id).collect();
        assert_eq!(printed, ids, "each once, in order");
        assert!(printer.printed()[0].zpl.contains("^FDTEST LABEL^FS"));
        assert_eq!(store.label_counts().unwrap().pending, 0);
        let s = state.lock().unwrap().clone();
        assert_eq!((s.state, s.code, s.printed), ("ready", None, 3));
        // problem, then three prints
        assert!(changes.load(Ordering::SeqCst) >= 4);
        let first = store
            .label_state(crate::store::TEST_LABEL_GUID)
            .unwrap()
            .unwrap();
        assert_eq!(first.state, "printed");
    }
}
