//! The provisioning station: gives every circuit board in a test jig its
//! cloud identity.
//!
//! # Layout
//! - [`ids`]: GUIDs, MACs, slot ids and serials, parsed once.
//! - [`jig`]: protocol v1 to the jigs: frames, messages, the link with
//!   retries, and a scripted fake link.
//! - [`sim`]: a board simulator on a real pseudo-terminal.
//! - [`random`]: OS randomness for serials, nonces and ids.
//! - [`files`]: writing a file whole (temporary file, then rename).
//! - [`ca`]: CSR intake, the leaf profile, the CA signer, its key backends
//!   (key file, PKCS#11, TPM) and its chain to the factory root.
//! - [`custody`]: opening the CA that `[ca]` describes, with its secrets.
//! - [`symkey`]: the master key for symmetric-key devices (key file or
//!   PKCS#11 token) and the device keys derived from it.
//! - [`core`]: the per-board state machine. No I/O.
//! - [`tpm`]: a board's TPM 2.0 (tss-esapi with the `tpm` feature) and a
//!   software fake.
//! - [`report`]: QA reports: figures, charts, CSV and MES exports. No I/O.
//! - [`store`]: SQLite; the only module with SQL.
//! - [`workflow`]: one task per jig slot driving [`core`], persisting each
//!   transition before acting on it.
//! - [`xml`]: escaping text in the SVG and HTML the station draws.
//! - [`config`]: `station.toml`, parsed into a validated configuration.
//! - [`label`]: label content: the ZPL template and the SVG preview.
//! - [`printer`]: label printers (raw TCP with Zebra host status, spool
//!   folder, CUPS, a scripted fake) and the worker printing queued labels.
//! - [`dps`]: DPS enrollments: body, SAS, client, outbox uploader, and
//!   what the device lifecycle actions change in an enrollment.
//! - [`lifecycle`]: asking for a device action (activate, disable, enable,
//!   revoke, retire): roles, checks, the queue.
//! - [`registry`]: the device record after the line: its location and
//!   service notes, what they may hold and who may change them. No I/O.
//! - [`plant`]: the plant tier: the forwarder to PostgreSQL, the shared
//!   DPS budget, plant-wide reports, conflicts and audit checks.
//! - [`web`]: the JSON API, metrics and a plain HTML page.
//! - [`app`]: wiring it all together for `station serve`.
//!
//! `ARCHITECTURE.md` states the invariants between these modules.

pub mod app;
pub mod ca;
pub mod cli;
pub mod config;
pub mod core;
pub mod custody;
pub mod dps;
pub mod failpoint;
pub mod files;
pub mod ids;
pub mod jig;
pub mod label;
pub mod lifecycle;
pub mod oidc;
pub mod plant;
pub mod printer;
pub mod random;
pub mod registry;
pub mod report;
pub mod sim;
pub mod store;
pub mod symkey;
pub mod tpm;
pub mod web;
pub mod workflow;
pub mod xml;
