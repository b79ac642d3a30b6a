//! Azure IoT Hub Device Provisioning Service: the enrollment body, the
//! service API client, the outbox uploader, and the device lifecycle
//! (activate, disable, enable, revoke) it also carries out.
//!
//! Owns what goes to DPS and when. The contract followed is
//! `../shared/docs/dps-service-api.md` (api-version 2021-10-01, SAS from the
//! connection string, individual X.509 enrollments, bulk create of at most
//! 10). Knows nothing of jigs; reads and writes jobs through the store.

mod client;
mod enrollment;
mod keys;
pub mod lifecycle;
mod net;
mod sas;
mod uploader;

pub use client::{BulkResult, DpsClient, DpsError, HttpDps, ItemError};
pub use enrollment::{EnrollmentTemplate, tpm_registration_id};
pub use keys::{DeviceKeys, FixedKeys, KEY_PLACEHOLDER, fill_keys};
pub use net::{DpsNet, ProxyUrl, read_ca_file};
pub use sas::{ConnectionString, sas_token, url_encode};
pub use uploader::pacer::{MODE_FALLBACK, MODE_LOCAL, MODE_SHARED};
pub use uploader::{GroupEnrollment, OutboxStatus, Pacer, SharedBudget, SharedStatus, Uploader};

/// The service API version used on every call.
pub const API_VERSION: &str = "2021-10-01";

/// Most enrollments DPS takes in one bulk call.
pub const BULK_LIMIT: usize = 10;
