//! What each slot is doing now, shared between the slot tasks (writers)
//! and the web API (readers).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::core::{Outcome, SlotState};
use crate::ids::SlotId;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SlotView {
    pub slot: u16,
    pub device: String,
    /// True for a simulated board inside the station.
    pub simulated: bool,
    /// `connected` or `disconnected`.
    pub link: &'static str,
    pub link_error: Option<String>,
    /// `empty`, `testing`, `provisioning`, `provisioned`, `failed` or `done`.
    pub state: &'static str,
    pub step: Option<&'static str>,
    pub guid: Option<String>,
    pub certificate_serial: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    /// The person signed in at this slot; stamped on the boards it starts.
    pub operator: Option<String>,
    /// The scan-back check of the provisioned board's label, once done.
    pub label_scan: Option<LabelScan>,
    pub since: String,
    /// How the slot's jig line is faring: damaged frames in the last
    /// hour, resends per board, and whether that is noisy.
    pub line: crate::core::noise::LineHealth,
    /// The last board's result, kept after it is pulled until the next
    /// board arrives, so a worker who looks away still sees it.
    pub last: Option<LastResult>,
}

/// A finished board's result, as the slot keeps showing it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LastResult {
    /// `provisioned` or `failed`.
    pub result: &'static str,
    pub guid: Option<String>,
    pub error_code: Option<String>,
    pub error: Option<String>,
}

/// What the operator scanned from the printed label.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LabelScan {
    pub matched: bool,
    pub scanned: String,
}

/// The slots' views, by slot id, and a counter that moves with every
/// change (the web UI's server-sent events wait on it).
#[derive(Clone)]
pub struct SlotBoard {
    views: Arc<RwLock<BTreeMap<u16, SlotView>>>,
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for SlotBoard {
    fn default() -> Self {
        SlotBoard {
            views: Default::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

impl SlotBoard {
    pub fn all(&self) -> Vec<SlotView> {
        self.views
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn update(&self, slot: SlotId, f: impl FnOnce(&mut SlotView)) {
        let changed = match self.views.write() {
            Ok(mut m) => match m.get_mut(&slot.0) {
                Some(v) => {
                    let before = v.clone();
                    f(v);
                    // `since` is when the slot last changed, not when it
                    // was last looked at.
                    let changed = *v != before;
                    if changed {
                        v.since = crate::store::ts(time::OffsetDateTime::now_utc());
                    }
                    changed
                }
                None => false,
            },
            Err(_) => false,
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// Says that something else the line view shows has changed (the
    /// printer), so that the view is drawn again.
    pub fn touch(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits for the next change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The person signed in at a slot.
    pub fn operator(&self, slot: SlotId) -> Option<String> {
        self.views.read().ok()?.get(&slot.0)?.operator.clone()
    }

    pub fn add(&self, slot: SlotId, device: &str, simulated: bool) {
        if let Ok(mut m) = self.views.write() {
            m.insert(
                slot.0,
                SlotView {
                    slot: slot.0,
                    device: device.to_string(),
                    simulated,
                    link: "disconnected",
                    link_error: None,
                    state: "empty",
                    step: None,
                    guid: None,
                    certificate_serial: None,
                    error_code: None,
                    error: None,
                    operator: None,
                    label_scan: None,
                    since: crate::store::ts(time::OffsetDateTime::now_utc()),
                    line: Default::default(),
                    last: None,
                },
            );
        }
    }
}

/// Copies the core's state into a view.
pub fn show_state(v: &mut SlotView, s: &SlotState, guid: Option<&str>) {
    // A scan-back result belongs to the board that passed.
    if v.guid.as_deref() != guid || !matches!(s, SlotState::Done(Outcome::Provisioned { .. })) {
        v.label_scan = None;
    }
    v.guid = guid.map(str::to_string);
    v.step = None;
    match s {
        // The result stays on the slot until the next board arrives.
        SlotState::Empty => {}
        SlotState::Testing | SlotState::Busy { .. } => v.last = None,
        SlotState::Done(Outcome::Provisioned { .. } | Outcome::Untold { .. }) => {
            v.last = Some(LastResult {
                result: "provisioned",
                guid: v.guid.clone(),
                error_code: None,
                error: None,
            });
        }
        SlotState::Done(Outcome::Failed(f)) => {
            v.last = Some(LastResult {
                result: "failed",
                guid: v.guid.clone(),
                error_code: Some(f.code.clone()),
                error: Some(f.message.clone()),
            });
        }
        SlotState::Done(Outcome::Unknown) => {}
    }
    match s {
        SlotState::Empty => {
            v.state = "empty";
            v.guid = None;
            v.certificate_serial = None;
            v.error = None;
            v.error_code = None;
        }
        SlotState::Testing => {
            v.state = "testing";
            v.certificate_serial = None;
            v.error = None;
            v.error_code = None;
        }
        SlotState::Busy { step, board } => {
            v.state = "provisioning";
            v.step = Some(step.as_str());
            v.certificate_serial = board.cert.as_ref().map(|c| c.serial.0.clone());
            v.error = None;
            v.error_code = None;
        }
        SlotState::Done(Outcome::Provisioned { serial }) => {
            v.state = "provisioned";
            v.certificate_serial = serial.as_ref().map(|s| s.0.clone());
        }
        SlotState::Done(Outcome::Untold { serial, why }) => {
            v.state = "provisioned_untold";
            v.certificate_serial = serial.as_ref().map(|s| s.0.clone());
            v.error = Some(format!(
                "provisioned and recorded, but the jig was not told: {}; press Retry to tell it (no second certificate is made)",
                why.message
            ));
            v.error_code = Some(why.code.clone());
        }
        SlotState::Done(Outcome::Failed(f)) => {
            v.state = "failed";
            v.error = Some(f.message.clone());
            v.error_code = Some(f.code.clone());
        }
        SlotState::Done(Outcome::Unknown) => {
            v.state = "done";
            v.certificate_serial = None;
            v.error = None;
            v.error_code = None;
        }
    }
}
