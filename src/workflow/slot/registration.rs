//! The steps that give a board what it needs to register with DPS at its
//! first boot: the provisioning settings (`SETTINGS`, read back with
//! `READSETTINGS`; a TPM slot keeps them in its settings NV index), and,
//! for symmetric-key devices, the device key (`KEYSET`, proven with
//! `HMAC`). The key is derived when needed, sent and dropped: it is never
//! stored, logged or kept in the driver's state.

use std::sync::Arc;

use super::{SlotDriver, Visit, answer_failure, link_failure, store_failure};
use crate::config::Attestation;
use crate::core::settings::ProvisioningSettings;
use crate::core::{Failure, Output};
use crate::dps::DeviceKeys;
use crate::jig::JigLink;
use crate::jig::protocol::{self, CAP_SETTINGS, CAP_SYMKEY, NONCE_LEN, Request, SecretKey};
use crate::store::{BoardId, blocking};
use crate::tpm::NvArea;

/// Where the boards register: `[dps] global_endpoint` and `id_scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub endpoint: String,
    pub id_scope: String,
}

/// What the board's key proof is computed over (the same context as SIGN).
fn proof_message(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    protocol::key_proof_message(nonce)
}

/// True when `mac` is HMAC-SHA256 of `msg` under `key` (compared in
/// constant time).
fn proof_holds(key: &[u8], msg: &[u8], mac: &[u8]) -> bool {
    ring::hmac::verify(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        msg,
        mac,
    )
    .is_ok()
}

impl SlotDriver {
    fn device_keys(&self) -> Result<&Arc<dyn DeviceKeys>, Failure> {
        self.device_keys.as_ref().ok_or_else(|| {
            Failure::internal("symmetric-key attestation without a master key ([symmetric_key])")
        })
    }

    /// Derives the board's key, records that it was given one (before any
    /// byte of it leaves), and writes it to the board.
    pub(super) async fn key_set(
        &self,
        link: &mut dyn JigLink,
        board: BoardId,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        let keys = self.device_keys()?.clone();
        let guid = visit
            .guid
            .clone()
            .ok_or_else(|| Failure::internal("a key without an identity"))?;
        if !visit.caps.iter().any(|c| c == CAP_SYMKEY) {
            return Err(Failure::new(
                "symkey_unsupported",
                "the board did not announce caps=symkey in its HELLO answer: its firmware cannot take a symmetric key (KEYSET); update the board firmware, or set the board aside",
            ));
        }
        let key_id = keys.key_id().map_err(|e| master_key_failure(&e))?;
        let store = self.store.clone();
        let now = time::OffsetDateTime::now_utc();
        let (g, k) = (guid.clone(), key_id.clone());
        blocking(move || store.record_device_key(board, &g, &k, now))
            .await
            .map_err(|e| store_failure(&e))?;
        let key = derive(&keys, &guid)?;
        let request = Request::KeySet { key };
        let answer = link.call(&request).await;
        drop(request);
        answer.map_err(|e| link_failure(&e))?;
        tracing::info!(master_key = %key_id, "device key written");
        Ok(Output::KeyWritten)
    }

    /// Has the board prove its symmetric key over a fresh station nonce.
    pub(super) async fn key_proof(
        &self,
        link: &mut dyn JigLink,
        visit: &Visit,
    ) -> Result<Output, Failure> {
        let keys = self.device_keys()?.clone();
        let guid = visit
            .guid
            .clone()
            .ok_or_else(|| Failure::internal("a key proof without an identity"))?;
        let nonce: [u8; NONCE_LEN] = crate::random::bytes();
        let a = link
            .call(&Request::Hmac { nonce })
            .await
            .map_err(|e| link_failure(&e))?;
        let mac = protocol::parse_mac(&a).map_err(|e| answer_failure("HMAC", &e))?;
        let key = derive(&keys, &guid)?;
        let holds = proof_holds(key.0.as_slice(), &proof_message(&nonce), &mac);
        drop(key);
        if holds {
            Ok(Output::KeyProven)
        } else {
            Err(Failure::key_proof())
        }
    }

    /// Writes the provisioning settings and reads them back; records them
    /// on the board, or records why they were not written.
    pub(super) async fn settings(
        &self,
        link: &mut dyn JigLink,
        board: BoardId,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        let Some(reg) = self.registration.clone() else {
            return self
                .settings_skipped(
                    board,
                    "no provisioning settings written: [dps] id_scope is not set",
                )
                .await;
        };
        let settings = self.settings_for(&reg, board, visit).await?;
        if !settings.is_plain() {
            return Err(Failure::new(
                "settings_invalid",
                format!(
                    "the provisioning settings cannot be written: {settings:?} has an empty value or one with spaces: check [dps] id_scope and global_endpoint"
                ),
            ));
        }
        let read = if let super::KeySource::Tpm(opener) = &self.keys {
            let tpm = self.tpm(opener, visit).await?;
            let data = settings.to_nv();
            let d = data.clone();
            let written =
                super::keys::with_tpm(&tpm, move |t| t.write_nv(NvArea::Settings, &d)).await;
            if let Err(f) = written {
                // Settings this station wrote for this device before (an
                // override, a corrected ID scope) are replaced; anything
                // else at the index is left alone.
                let held = super::keys::with_tpm(&tpm, |t| t.read_nv(NvArea::Settings)).await;
                let ours = held
                    .ok()
                    .and_then(|h| ProvisioningSettings::from_nv(&h).ok())
                    .is_some_and(|h| h.registration_id == settings.registration_id);
                if f.code != "tpm_nv_defined" || !ours {
                    return Err(f);
                }
                super::keys::with_tpm(&tpm, move |t| {
                    t.clear_nv(NvArea::Settings)?;
                    t.write_nv(NvArea::Settings, &data)
                })
                .await?;
            }
            let held = super::keys::with_tpm(&tpm, |t| t.read_nv(NvArea::Settings)).await?;
            ProvisioningSettings::from_nv(&held).map_err(|e| {
                Failure::new(
                    "settings_mismatch",
                    format!("the TPM's settings NV index cannot be read back: {e}"),
                )
            })?
        } else {
            if !visit.caps.iter().any(|c| c == CAP_SETTINGS) {
                return self
                    .settings_skipped(
                        board,
                        "no provisioning settings written: the board did not announce caps=settings in its HELLO answer (older firmware): it must get its ID scope and endpoint another way",
                    )
                    .await;
            }
            link.call(&Request::Settings(settings.clone()))
                .await
                .map_err(|e| link_failure(&e))?;
            let a = link
                .call(&Request::ReadSettings)
                .await
                .map_err(|e| link_failure(&e))?;
            protocol::parse_settings(&a).map_err(|e| answer_failure("READSETTINGS", &e))?
        };
        if read != settings {
            return Err(Failure::new(
                "settings_mismatch",
                format!(
                    "the board keeps other provisioning settings than it was sent (sent {}, read back {}): the board firmware may be faulty",
                    show(&settings),
                    show(&read)
                ),
            ));
        }
        let store = self.store.clone();
        blocking(move || store.record_settings(board, Some(&settings), None))
            .await
            .map_err(|e| store_failure(&e))?;
        Ok(Output::SettingsDone)
    }

    async fn settings_skipped(
        &self,
        board: BoardId,
        note: &'static str,
    ) -> Result<Output, Failure> {
        tracing::warn!("{note}");
        let store = self.store.clone();
        blocking(move || store.record_settings(board, None, Some(note)))
            .await
            .map_err(|e| store_failure(&e))?;
        Ok(Output::SettingsDone)
    }

    /// The settings of this board: its registration id is the GUID, or
    /// for TPM attestation with `tpm_registration_id = "dps"` DPS's id from
    /// the endorsement key recorded at keygen.
    async fn settings_for(
        &self,
        reg: &Registration,
        board: BoardId,
        visit: &Visit,
    ) -> Result<ProvisioningSettings, Failure> {
        let guid = visit
            .guid
            .clone()
            .ok_or_else(|| Failure::internal("settings without an identity"))?;
        let attestation = self.enrollment.attestation;
        let registration_id = match attestation {
            Attestation::Tpm {
                dps_registration_id: true,
            } => {
                let store = self.store.clone();
                let ek = blocking(move || store.tpm_ek(board))
                    .await
                    .map_err(|e| store_failure(&e))?
                    .ok_or_else(|| {
                        Failure::internal("no endorsement key recorded for the board")
                    })?;
                crate::dps::tpm_registration_id(&ek)
            }
            _ => guid,
        };
        Ok(ProvisioningSettings {
            endpoint: reg.endpoint.clone(),
            id_scope: reg.id_scope.clone(),
            registration_id,
            attestation: attestation.as_str().to_string(),
        })
    }
}

fn derive(keys: &Arc<dyn DeviceKeys>, registration_id: &str) -> Result<SecretKey, Failure> {
    keys.derive(registration_id)
        .map(SecretKey)
        .map_err(|e| master_key_failure(&e))
}

fn master_key_failure(e: &str) -> Failure {
    Failure::new(
        "master_key_failed",
        format!(
            "the device key cannot be derived: {e}: check the master key with `station symkey show`"
        ),
    )
}

fn show(s: &ProvisioningSettings) -> String {
    format!(
        "endpoint={} scope={} regid={} att={}",
        s.endpoint, s.id_scope, s.registration_id, s.attestation
    )
}
