//! `[jig]`, `[[slot]]` and `[demo]`: the link timing, each slot's link
//! (a serial device or a simulated board) and key generation, and the
//! simulated boards' pace. It checks the settings; it opens no port.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::keygen::{self, Keygen};
use crate::ids::SlotId;
use crate::jig::LinkTiming;
use crate::sim::{Fault, LineCycle, SimOptions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawJig {
    baud: u32,
    timeout_ms: u64,
    slow_timeout_ms: u64,
    attempts: u32,
    poll_ms: u64,
    reconnect_ms: u64,
    piece_bytes: usize,
}

impl Default for RawJig {
    fn default() -> Self {
        RawJig {
            baud: 115_200,
            timeout_ms: 2000,
            slow_timeout_ms: 15_000,
            attempts: 8,
            poll_ms: 1000,
            reconnect_ms: 2000,
            piece_bytes: 256,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlot {
    id: u16,
    #[serde(default = "default_link")]
    link: String,
    device: Option<String>,
    baud: Option<u32>,
    #[serde(default = "default_keygen")]
    keygen: String,
    fault: Option<String>,
    fault_times: Option<u32>,
    tcti: Option<String>,
    key_handle: Option<u32>,
    cert_nv_index: Option<u32>,
    #[serde(default)]
    settings_nv_index: Option<u32>,
}

fn default_link() -> String {
    "serial".into()
}
fn default_keygen() -> String {
    "board".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawDemo {
    keygen_ms: u64,
    flash_bytes_per_sec: u32,
    test_ms: u64,
    dwell_ms: u64,
    pause_ms: u64,
    keygen: String,
}

impl Default for RawDemo {
    fn default() -> Self {
        RawDemo {
            keygen_ms: 400,
            flash_bytes_per_sec: 20_000,
            test_ms: 800,
            dwell_ms: 1500,
            pause_ms: 1500,
            keygen: "board".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SlotConfig {
    pub id: SlotId,
    pub link: SlotLink,
    pub keygen: Keygen,
}

#[derive(Debug, Clone)]
pub enum SlotLink {
    Serial {
        device: String,
        baud: u32,
    },
    /// A simulated board on a pseudo-terminal inside the station.
    Simulated(Box<SimOptions>),
}

/// `[jig]`, `[demo]` and the `[[slot]]`s, validated.
pub(super) struct Slots {
    pub timing: LinkTiming,
    pub piece_bytes: usize,
    pub poll: Duration,
    pub reconnect: Duration,
    pub demo: SimOptions,
    pub slots: Vec<SlotConfig>,
}

type Invalid = (String, String);

/// The range of `[jig] piece_bytes`.
pub const PIECE_BYTES: (usize, usize) = (32, 3072);

pub(super) fn slots_config(j: &RawJig, d: &RawDemo, raw: &[RawSlot]) -> Result<Slots, Invalid> {
    let timing = jig_timing(j)?;
    let demo = demo_options(d);

    let mut slots = Vec::new();
    let mut ids = HashSet::new();
    let mut devices = HashSet::new();
    for (i, rs) in raw.iter().enumerate() {
        let key = |k: &str| format!("slot[{i}].{k}");
        if rs.id == 0 || !ids.insert(rs.id) {
            return Err((
                key("id"),
                format!(
                    "{} must be a number from 1 up, used by one slot only",
                    rs.id
                ),
            ));
        }
        let keygen = keygen::keygen(&keygen::RawKeygen {
            keygen: &rs.keygen,
            tcti: rs.tcti.as_deref(),
            key_handle: rs.key_handle,
            cert_nv_index: rs.cert_nv_index,
            settings_nv_index: rs.settings_nv_index,
            simulated: rs.link == "simulated",
        })
        .map_err(|(k, r)| (key(k), r))?;
        let link = slot_link(rs, j.baud, &demo, &mut devices).map_err(|(k, r)| (key(k), r))?;
        slots.push(SlotConfig {
            id: SlotId(rs.id),
            link,
            keygen,
        });
    }

    if !(PIECE_BYTES.0..=PIECE_BYTES.1).contains(&j.piece_bytes) {
        return Err((
            "jig.piece_bytes".to_string(),
            format!(
                "{} must be between {} and {} bytes (a piece and its frame must fit in one line of 4096 bytes)",
                j.piece_bytes, PIECE_BYTES.0, PIECE_BYTES.1
            ),
        ));
    }
    Ok(Slots {
        timing,
        piece_bytes: j.piece_bytes,
        poll: Duration::from_millis(j.poll_ms),
        reconnect: Duration::from_millis(j.reconnect_ms),
        demo,
        slots,
    })
}

/// `[jig]`'s timing; its baud rate is checked here too.
fn jig_timing(j: &RawJig) -> Result<LinkTiming, Invalid> {
    for (k, v) in [
        ("jig.timeout_ms", j.timeout_ms),
        ("jig.slow_timeout_ms", j.slow_timeout_ms),
        ("jig.poll_ms", j.poll_ms),
        ("jig.reconnect_ms", j.reconnect_ms),
    ] {
        if !(10..=600_000).contains(&v) {
            return Err((
                k.to_string(),
                format!("{v} must be between 10 and 600000 milliseconds"),
            ));
        }
    }
    if !(1..=10).contains(&j.attempts) {
        return Err((
            "jig.attempts".to_string(),
            format!("{} must be between 1 and 10", j.attempts),
        ));
    }
    check_baud(j.baud).map_err(|r| ("jig.baud".to_string(), r))?;
    Ok(LinkTiming {
        timeout: Duration::from_millis(j.timeout_ms),
        slow_timeout: Duration::from_millis(j.slow_timeout_ms),
        attempts: j.attempts,
        ..LinkTiming::default()
    })
}

/// `[demo]`: the pace of simulated boards.
fn demo_options(d: &RawDemo) -> SimOptions {
    SimOptions {
        keygen_time: Duration::from_millis(d.keygen_ms),
        flash_bytes_per_sec: d.flash_bytes_per_sec,
        test_time: Duration::from_millis(d.test_ms),
        first_insert_after: Duration::from_millis(d.pause_ms),
        line: Some(LineCycle {
            dwell: Duration::from_millis(d.dwell_ms),
            pause: Duration::from_millis(d.pause_ms),
        }),
        ..SimOptions::default()
    }
}

/// One slot's link; the key in an error is relative to the slot.
fn slot_link(
    rs: &RawSlot,
    jig_baud: u32,
    demo: &SimOptions,
    devices: &mut HashSet<String>,
) -> Result<SlotLink, (&'static str, String)> {
    match rs.link.as_str() {
        "serial" => {
            let device = rs.device.clone().filter(|d| !d.is_empty()).ok_or_else(|| {
                (
                    "device",
                    "a serial slot needs a device, like \"/dev/ttyUSB0\"".to_string(),
                )
            })?;
            if !devices.insert(device.clone()) {
                return Err(("device", format!("{device} is used by another slot")));
            }
            if rs.fault.is_some() || rs.fault_times.is_some() {
                return Err(("fault", "faults are for simulated slots only".into()));
            }
            let baud = rs.baud.unwrap_or(jig_baud);
            check_baud(baud).map_err(|r| ("baud", r))?;
            Ok(SlotLink::Serial { device, baud })
        }
        "simulated" => {
            if rs.device.is_some() {
                return Err((
                    "device",
                    "a simulated slot makes its own pseudo-terminal; remove device".into(),
                ));
            }
            let fault = match &rs.fault {
                Some(f) => Some(f.parse::<Fault>().map_err(|r| ("fault", r))?),
                None => None,
            };
            Ok(SlotLink::Simulated(Box::new(SimOptions {
                fault,
                fault_times: rs.fault_times,
                ..demo.clone()
            })))
        }
        other => Err((
            "link",
            format!("{other:?} is not \"serial\" or \"simulated\""),
        )),
    }
}

/// `[demo] keygen`: how `--demo N`'s simulated boards get their keys.
pub(super) fn demo_keygen(d: &RawDemo) -> Result<Keygen, Invalid> {
    keygen::keygen(&keygen::RawKeygen {
        keygen: &d.keygen,
        tcti: None,
        key_handle: None,
        cert_nv_index: None,
        settings_nv_index: None,
        simulated: true,
    })
    .map_err(|(_, r)| ("demo.keygen".to_string(), r))
}

fn check_baud(baud: u32) -> Result<(), String> {
    const RATES: [u32; 12] = [
        1200, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
        1_000_000,
    ];
    if RATES.contains(&baud) {
        Ok(())
    } else {
        Err(format!(
            "{baud} is not a standard baud rate (such as 9600 or 115200)"
        ))
    }
}
