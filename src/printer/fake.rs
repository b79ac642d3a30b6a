//! A scripted printer for tests: answers each call with the next scripted
//! outcome (ready once the script runs out) and keeps what it printed.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::{PrintError, PrintJob, Printer};

#[derive(Default)]
pub struct ScriptedPrinter {
    script: Mutex<VecDeque<Result<(), PrintError>>>,
    printed: Mutex<Vec<PrintJob>>,
}

impl ScriptedPrinter {
    /// A printer whose next calls (checks and prints alike) end as given.
    pub fn with_script(outcomes: impl IntoIterator<Item = Result<(), PrintError>>) -> Self {
        ScriptedPrinter {
            script: Mutex::new(outcomes.into_iter().collect()),
            printed: Mutex::default(),
        }
    }

    fn next(&self) -> Result<(), PrintError> {
        match self.script.lock() {
            Ok(mut s) => s.pop_front().unwrap_or(Ok(())),
            Err(_) => Ok(()),
        }
    }

    /// The jobs printed so far, in order.
    pub fn printed(&self) -> Vec<PrintJob> {
        self.printed.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl Printer for ScriptedPrinter {
    fn describe(&self) -> String {
        "scripted (a fake printer for tests)".into()
    }

    async fn check(&self) -> Result<(), PrintError> {
        self.next()
    }

    async fn print(&self, job: &PrintJob) -> Result<(), PrintError> {
        self.next()?;
        if let Ok(mut p) = self.printed.lock() {
            p.push(job.clone());
        }
        Ok(())
    }
}
