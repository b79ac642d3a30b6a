//! One task per jig slot: it feeds jig events to the [`crate::core`] state
//! machine and carries out the commands it returns, persisting each
//! transition in the [`crate::store`] before acting on it, so that a crash
//! resumes from the database.
//!
//! Owns the order of side effects: a certificate is committed to the ledger
//! before any byte of it goes to the board; a step is recorded as begun
//! before its request is sent.

mod slot;
mod view;

pub use slot::{
    KeySource, LinkOpener, Registration, SlotCommand, SlotDriver, SlotSettings, TpmOpener,
};
pub use view::{LabelScan, LastResult, SlotBoard, SlotView};
