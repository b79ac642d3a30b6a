//! Why a board failed: a stable code for records and reports, and a message
//! an operator can act on.

use std::fmt;

use super::Step;
use crate::ids::{Guid, Serial};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Short and stable (`csr_wrong_guid`, `no_answer`…): reports group by it.
    pub code: String,
    /// What happened and what to do, for the operator.
    pub message: String,
}

impl Failure {
    pub fn new(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn removed(step: Step) -> Failure {
        Failure::new(
            "board_removed",
            format!(
                "the board was removed during the {} step: put it back to provision it",
                step.as_str()
            ),
        )
    }

    pub fn aborted(step: Step) -> Failure {
        Failure::new(
            "aborted",
            format!(
                "stopped by the operator during the {} step: press Retry to provision it again",
                step.as_str()
            ),
        )
    }

    pub fn version(v: u32) -> Failure {
        Failure::new(
            "protocol_version",
            format!(
                "the board speaks jig protocol v{v}, this station v{}: update the board firmware or the station",
                crate::jig::protocol::PROTOCOL_VERSION
            ),
        )
    }

    pub fn test_failed(code: &str, message: &str) -> Failure {
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        Failure::new(
            "test_failed",
            format!(
                "the jig's functional test failed: {code}{detail}; no certificate is issued: send the board to rework"
            ),
        )
    }

    pub fn already_provisioned(guid: &Guid, serial: &Serial, issued_at: &str) -> Failure {
        Failure::new(
            "already_provisioned",
            format!(
                "board {guid} is already provisioned (certificate {serial}, issued {issued_at}); no second certificate is issued. A supervisor can allow one with `station board override {guid}`"
            ),
        )
    }

    pub fn already_keyed(guid: &Guid, keyed_at: &str) -> Failure {
        Failure::new(
            "already_provisioned",
            format!(
                "board {guid} is already provisioned (its symmetric key was given {keyed_at}); it is not provisioned twice. A supervisor can allow it again with `station board override {guid}`"
            ),
        )
    }

    pub fn device_revoked(guid: &Guid, revoked_at: &str) -> Failure {
        Failure::new(
            "device_revoked",
            format!(
                "device {guid} was revoked ({revoked_at}): it is not provisioned again unless an admin allows a new certificate (`station board override {guid}`, or an admin's POST /api/v1/boards/{guid}/override); set the board aside"
            ),
        )
    }

    pub fn device_retired(guid: &Guid, retired_at: &str) -> Failure {
        let on = retired_at.split('T').next().unwrap_or(retired_at);
        Failure::new(
            "device_retired",
            format!(
                "device {guid} was retired on {on}: it is not provisioned again unless an admin allows a new certificate (`station board override {guid}`, or an admin's POST /api/v1/boards/{guid}/override); set the board aside"
            ),
        )
    }

    /// The station stopped with a board in the jig, and another board was
    /// there when it came back.
    pub fn swapped() -> Failure {
        Failure::new(
            "interrupted",
            "the station stopped while this board was in the jig, and another board was there when it came back: put this board back to provision it",
        )
    }

    /// The board passed every check, but recording it as provisioned
    /// failed: the jig is told FAIL, and the attempt stays open with its
    /// certificate.
    pub fn not_recorded(reason: &str) -> Failure {
        Failure::new(
            "not_recorded",
            format!(
                "the board passed every check, but the station could not record it as provisioned ({reason}); nothing was lost: fix the station's disk or database (see the station log), then press Retry with the board in the jig to finish it with the same certificate"
            ),
        )
    }

    pub fn readback_mismatch() -> Failure {
        Failure::new(
            "readback_mismatch",
            "the board read back a different certificate than it was sent: its certificate storage may be faulty; set the board aside",
        )
    }

    pub fn key_proof() -> Failure {
        Failure::new(
            "key_proof_failed",
            "the board's signature does not match its new certificate: it no longer holds the key it asked a certificate for (was it reset?); set the board aside",
        )
    }

    pub fn internal(what: &str) -> Failure {
        Failure::new(
            "internal",
            format!("internal error ({what}): please report this"),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.code)
    }
}
