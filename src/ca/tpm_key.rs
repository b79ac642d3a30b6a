//! The CA key in the station PC's own TPM 2.0 (`[ca] key = "tpm"`): a
//! P-256 signing key persisted at a handle, used through a TCTI with the
//! same backend as the boards' TPMs (cargo feature `tpm`). The TPM signs
//! each digest; the private key never leaves it.

use std::sync::Arc;

use crate::tpm::{BoardTpm, TpmError, TpmSlot};

use super::CaError;

/// Where the CA key is in the station's TPM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmCaSpec {
    pub tcti: String,
    /// Owner persistent handle (0x81xxxxxx).
    pub handle: u32,
}

pub struct TpmCaKey {
    tpm: Arc<dyn BoardTpm>,
    public: Vec<u8>,
    spec: TpmCaSpec,
}

fn tpm_error(spec: &TpmCaSpec, e: TpmError) -> CaError {
    let text = e
        .to_string()
        .replace("the board's TPM", "the station's TPM");
    CaError::Backend(format!("CA key in the TPM ({}): {text}", spec.tcti))
}

fn open_tpm(spec: &TpmCaSpec) -> Result<Arc<dyn BoardTpm>, CaError> {
    crate::tpm::open(&TpmSlot {
        tcti: spec.tcti.clone(),
        key_handle: spec.handle,
        // Never used: the CA keeps no certificate in the TPM, but the
        // backend wants a well-formed NV index.
        cert_nv_index: 0x0150_0100,
        settings_nv_index: 0x0150_0101,
    })
    .map_err(|e| tpm_error(spec, e))
}

impl TpmCaKey {
    /// The key already at the handle.
    pub fn open(spec: &TpmCaSpec) -> Result<TpmCaKey, CaError> {
        let tpm = open_tpm(spec)?;
        let public = tpm.public_key().map_err(|e| match e {
            TpmError::Failed { ref reason, .. } if reason.contains("no key is persisted") => CaError::Backend(format!(
                "there is no CA key at handle {:#010x} in the TPM ({}): make one with `station ca request`",
                spec.handle, spec.tcti
            )),
            e => tpm_error(spec, e),
        })?;
        Ok(TpmCaKey {
            tpm,
            public,
            spec: spec.clone(),
        })
    }

    /// The key at the handle, made there first if there is none; the bool
    /// says whether it was made now.
    pub fn open_or_create(spec: &TpmCaSpec) -> Result<(TpmCaKey, bool), CaError> {
        let tpm = open_tpm(spec)?;
        let (public, made) = match tpm.create_key() {
            Ok(p) => (p, true),
            Err(TpmError::HandleInUse { .. }) => {
                (tpm.public_key().map_err(|e| tpm_error(spec, e))?, false)
            }
            Err(e) => return Err(tpm_error(spec, e)),
        };
        Ok((
            TpmCaKey {
                tpm,
                public,
                spec: spec.clone(),
            },
            made,
        ))
    }

    pub fn public_point(&self) -> &[u8] {
        &self.public
    }

    pub fn describe(&self) -> String {
        format!(
            "TPM key {:#010x} through {}",
            self.spec.handle, self.spec.tcti
        )
    }

    /// ECDSA P-256 over SHA-256 of `msg`, DER.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        self.tpm
            .sign_digest(&super::digest::sha256(msg))
            .map_err(|e| tpm_error(&self.spec, e).to_string())
    }
}
