//! `station simulate`: one simulated board and its jig on a serial device,
//! for a station running in another process.

use std::time::Duration;

use anyhow::Context;

use super::SimulateArgs;
use crate::ids::Guid;
use crate::sim::{Fault, LineCycle, SimOptions};

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
