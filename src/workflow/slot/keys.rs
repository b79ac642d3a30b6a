//! The key steps of a slot, by where its boards' keys are made: the board
//! (jig `KEYGEN`, `STORE`, `READCERT`, `SIGN`), the board's TPM (the TPM
//! makes and keeps the key, signs the CSR and the key proof, and holds the
//! certificate chain in an NV index), or the station (it makes the key,
//! sends it with `KEYLOAD`, signs the CSR and forgets the key).

use crate::ca::digest::sha256;
use std::sync::Arc;

use p256::ecdsa::signature::Signer;
use zeroize::Zeroizing;

use super::{SlotDriver, Visit, answer_failure, link_failure};
use crate::ca::{ExternalKey, build_csr};
use crate::core::{Failure, Output};
use crate::jig::JigLink;
use crate::jig::protocol::{self, AnswerError, BoardIdentity, NONCE_LEN, Request, SecretScalar};
use crate::store::{BoardId, blocking};
use crate::tpm::{BoardTpm, NvArea, TpmError};

/// Opens the TPM of the board in a TPM slot.
pub type TpmOpener = Arc<dyn Fn() -> Result<Arc<dyn BoardTpm>, TpmError> + Send + Sync>;

/// Where a slot's boards get their keys.
#[derive(Clone)]
pub enum KeySource {
    Board,
    Tpm(TpmOpener),
    Station,
}

fn tpm_failure(e: &TpmError) -> Failure {
    Failure::new(e.code(), e.to_string())
}

/// Runs a TPM call on a blocking thread.
pub(super) async fn with_tpm<T: Send + 'static>(
    tpm: &Arc<dyn BoardTpm>,
    f: impl FnOnce(&dyn BoardTpm) -> Result<T, TpmError> + Send + 'static,
) -> Result<T, Failure> {
    let tpm = tpm.clone();
    tokio::task::spawn_blocking(move || f(tpm.as_ref()))
        .await
        .map_err(|e| Failure::internal(&e.to_string()))?
        .map_err(|e| tpm_failure(&e))
}

/// Splits concatenated DER values (a certificate chain read from NV).
pub(super) fn split_der(mut data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 || data[0] != 0x30 {
            return Err("it does not hold DER certificates".into());
        }
        let (len, header) = match data[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n @ 0x81..=0x84 => {
                let k = usize::from(n & 0x7f);
                let bytes = data.get(2..2 + k).ok_or("a DER length is cut short")?;
                (
                    bytes.iter().fold(0usize, |a, b| (a << 8) | usize::from(*b)),
                    2 + k,
                )
            }
            _ => return Err("a DER length is malformed".into()),
        };
        let end = header
            .checked_add(len)
            .filter(|e| *e <= data.len())
            .ok_or("a certificate is cut short")?;
        out.push(data[..end].to_vec());
        data = &data[end..];
    }
    Ok(out)
}

impl SlotDriver {
    /// The board's TPM for this visit, opened on first use.
    pub(super) async fn tpm(
        &self,
        opener: &TpmOpener,
        visit: &mut Visit,
    ) -> Result<Arc<dyn BoardTpm>, Failure> {
        if let Some(t) = &visit.tpm {
            return Ok(t.clone());
        }
        let opener = opener.clone();
        let tpm = tokio::task::spawn_blocking(move || opener())
            .await
            .map_err(|e| Failure::internal(&e.to_string()))?
            .map_err(|e| tpm_failure(&e))?;
        visit.tpm = Some(tpm.clone());
        Ok(tpm)
    }

    /// Has a key pair made and returns its CSR.
    pub(super) async fn keygen(
        &self,
        link: &mut dyn JigLink,
        id: BoardIdentity,
        board: BoardId,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        match &self.keys {
            KeySource::Board => {
                let a = link
                    .call(&Request::KeyGen { cn: id.guid })
                    .await
                    .map_err(|e| link_failure(&e))?;
                Ok(Output::Csr(
                    protocol::parse_csr(&a).map_err(|e| answer_failure("KEYGEN", &e))?,
                ))
            }
            KeySource::Tpm(opener) => {
                let tpm = self.tpm(opener, visit).await?;
                // The endorsement key is made by the TPM on each read (an
                // RSA key: seconds on a real chip); only TPM attestation
                // needs it.
                if self.enrollment.attestation != crate::config::Attestation::X509 {
                    let ek = with_tpm(&tpm, |t| t.ek_public()).await?;
                    let store = self.store.clone();
                    blocking(move || store.record_tpm_ek(board, &ek))
                        .await
                        .map_err(|e| super::store_failure(&e))?;
                }
                let public = self.tpm_key(&tpm, &id, board).await?;
                let guid = id.guid.clone();
                let t = tpm.clone();
                let csr = tokio::task::spawn_blocking(move || {
                    // The TPM's own error, if it is what failed.
                    let fault = std::sync::Mutex::new(None::<TpmError>);
                    let sign = |m: &[u8]| {
                        t.sign_digest(&sha256(m)).map_err(|e| {
                            let text = e.to_string();
                            if let Ok(mut f) = fault.lock() {
                                *f = Some(e);
                            }
                            text
                        })
                    };
                    let built = build_csr(
                        &guid,
                        &ExternalKey {
                            public: &public,
                            sign: &sign,
                        },
                    );
                    built.map_err(|e| match fault.lock().ok().and_then(|mut f| f.take()) {
                        Some(tpm) => tpm_failure(&tpm),
                        None => Failure::new(
                            "tpm_failed",
                            format!("the board's TPM could not sign its certificate request: {e}"),
                        ),
                    })
                })
                .await
                .map_err(|e| Failure::internal(&e.to_string()))??;
                tracing::info!(tpm = %tpm.describe(), "key made in the board's TPM");
                Ok(Output::Csr(csr))
            }
            KeySource::Station => self.station_key(link, &id).await,
        }
    }

    /// Has the TPM make the board's key and records its public part. A key
    /// already at the handle is used again only if this station made it
    /// for this board in an attempt that failed (a Retry); any other is
    /// left alone and the board fails with `tpm_handle_in_use`.
    async fn tpm_key(
        &self,
        tpm: &Arc<dyn BoardTpm>,
        id: &BoardIdentity,
        board: BoardId,
    ) -> Result<Vec<u8>, Failure> {
        let public = match with_tpm(tpm, |t| t.create_key()).await {
            Ok(p) => p,
            Err(f) if f.code == "tpm_handle_in_use" => {
                let held = with_tpm(tpm, |t| t.public_key()).await?;
                let (store, guid, h) = (self.store.clone(), id.guid.clone(), held.clone());
                let ours = blocking(move || store.tpm_key_left_by_failure(&guid, &h))
                    .await
                    .map_err(|e| super::store_failure(&e))?;
                if !ours {
                    return Err(f);
                }
                tracing::info!(
                    "using again the key this station made in the board's TPM in a failed attempt"
                );
                held
            }
            Err(f) => return Err(f),
        };
        let (store, p) = (self.store.clone(), public.clone());
        blocking(move || store.record_tpm_key(board, &p))
            .await
            .map_err(|e| super::store_failure(&e))?;
        Ok(public)
    }

    /// Makes a key, hands it to the board, signs the CSR with it, and
    /// forgets it: the key is wiped when this returns, and is never
    /// stored, logged or written.
    async fn station_key(
        &self,
        link: &mut dyn JigLink,
        id: &BoardIdentity,
    ) -> Result<Output, Failure> {
        let key = loop {
            let bytes = Zeroizing::new(crate::random::bytes::<32>());
            if let Ok(k) = p256::ecdsa::SigningKey::from_slice(bytes.as_slice()) {
                break k;
            }
        };
        let public = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let answer = {
            let req = Request::KeyLoad {
                key: SecretScalar(Zeroizing::new(key.to_bytes().into())),
            };
            link.call(&req).await.map_err(|e| link_failure(&e))?
        };
        let loaded =
            protocol::parse_public_key(&answer).map_err(|e| answer_failure("KEYLOAD", &e))?;
        if loaded != public {
            return Err(Failure::new(
                "key_load_mismatch",
                "the board answered KEYLOAD with another public key: its firmware did not take the key; set the board aside",
            ));
        }
        let sign = |m: &[u8]| {
            let s: p256::ecdsa::Signature = key.sign(m);
            Ok(s.to_der().as_bytes().to_vec())
        };
        let csr = build_csr(
            &id.guid,
            &ExternalKey {
                public: &public,
                sign: &sign,
            },
        )
        .map_err(|e| Failure::internal(&e))?;
        drop(key);
        tracing::info!("key made by the station, loaded into the board and forgotten");
        Ok(Output::Csr(csr))
    }

    /// Puts the certificate chain where the board keeps it.
    pub(super) async fn store_chain(
        &self,
        link: &mut dyn JigLink,
        chain: Vec<Vec<u8>>,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        if let KeySource::Tpm(opener) = &self.keys {
            let tpm = self.tpm(opener, visit).await?;
            let data = chain.concat();
            let d = data.clone();
            match with_tpm(&tpm, move |t| t.write_nv(NvArea::Chain, &d)).await {
                Err(f)
                    if f.code == "tpm_nv_defined"
                        && self.nv_left_by_failure(&tpm, visit).await? =>
                {
                    tracing::info!(
                        "replacing the certificate chain this station wrote in a failed attempt"
                    );
                    with_tpm(&tpm, move |t| {
                        t.clear_nv(NvArea::Chain)?;
                        t.write_nv(NvArea::Chain, &data)
                    })
                    .await?;
                }
                other => other?,
            }
            return Ok(Output::Stored);
        }
        if visit.takes(protocol::CAP_PIECES) {
            // Each piece its own request: a damaged one is sent again
            // alone, and the board keeps the chain only at the last.
            for piece in protocol::store_pieces(&chain, self.settings.piece_bytes) {
                link.call(&piece).await.map_err(|e| link_failure(&e))?;
            }
            return Ok(Output::Stored);
        }
        link.call(&Request::Store { chain })
            .await
            .map_err(|e| link_failure(&e))?;
        Ok(Output::Stored)
    }

    /// Whether the NV index holds a chain whose leaf this station issued for
    /// this board and abandoned when an attempt failed: safe to replace.
    async fn nv_left_by_failure(
        &self,
        tpm: &Arc<dyn BoardTpm>,
        visit: &Visit,
    ) -> Result<bool, Failure> {
        let Some(guid) = visit
            .guid
            .as_deref()
            .and_then(|g| g.parse::<crate::ids::Guid>().ok())
        else {
            return Ok(false);
        };
        // Unreadable: not known to be ours; the index stays as it is.
        let Ok(held) = with_tpm(tpm, |t| t.read_nv(NvArea::Chain)).await else {
            return Ok(false);
        };
        let Some(leaf) = split_der(&held).ok().and_then(|c| c.into_iter().next()) else {
            return Ok(false);
        };
        let (store, fp) = (self.store.clone(), crate::ca::fingerprint(&leaf));
        blocking(move || store.is_abandoned(&guid, &fp))
            .await
            .map_err(|e| super::store_failure(&e))
    }

    /// Reads the stored chain back.
    pub(super) async fn read_back(
        &self,
        link: &mut dyn JigLink,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        if let KeySource::Tpm(opener) = &self.keys {
            let tpm = self.tpm(opener, visit).await?;
            let data = with_tpm(&tpm, |t| t.read_nv(NvArea::Chain)).await?;
            let chain = split_der(&data).map_err(|e| {
                Failure::new(
                    "readback_mismatch",
                    format!("the TPM's certificate NV index {e}"),
                )
            })?;
            return Ok(Output::ReadBack(chain));
        }
        if visit.takes(protocol::CAP_PIECES) {
            return self.read_back_pieces(link).await;
        }
        let a = link
            .call(&Request::ReadCert)
            .await
            .map_err(|e| link_failure(&e))?;
        Ok(Output::ReadBack(
            protocol::parse_chain(&a).map_err(|e| answer_failure("READCERT", &e))?,
        ))
    }

    /// Reads the stored chain back a piece at a time. Every piece but the
    /// last must be `piece_bytes` long and all must agree on the size, so
    /// a faulty board cannot keep the station asking.
    async fn read_back_pieces(&self, link: &mut dyn JigLink) -> Result<Output, Failure> {
        let max = self.settings.piece_bytes;
        let mut text = String::new();
        let mut size = None;
        loop {
            let offset = text.len();
            let a = link
                .call(&Request::ReadCertPiece { offset, max })
                .await
                .map_err(|e| link_failure(&e))?;
            let (said, data) =
                protocol::parse_piece(&a).map_err(|e| answer_failure("READCERT", &e))?;
            let size = *size.get_or_insert(said);
            let want = max.min(size.saturating_sub(offset));
            if said != size || data.len() != want {
                return Err(answer_failure(
                    "READCERT",
                    &AnswerError::new(
                        "READCERT",
                        format!(
                            "the piece at offset {offset} has {} bytes of a {said}-byte chain, where {want} bytes of a {size}-byte chain were due",
                            data.len()
                        ),
                    ),
                ));
            }
            text.push_str(&data);
            if text.len() >= size {
                break;
            }
        }
        Ok(Output::ReadBack(protocol::decode_chain(&text).map_err(
            |e| {
                answer_failure(
                    "READCERT",
                    &AnswerError::new("READCERT", format!("the chain is not base64: {e}")),
                )
            },
        )?))
    }

    /// Has the board's key sign a fresh station nonce.
    pub(super) async fn prove(
        &self,
        link: &mut dyn JigLink,
        visit: &mut Visit,
    ) -> Result<Output, Failure> {
        let nonce: [u8; NONCE_LEN] = crate::random::bytes();
        if let KeySource::Tpm(opener) = &self.keys {
            let tpm = self.tpm(opener, visit).await?;
            let digest = sha256(&protocol::key_proof_message(&nonce));
            let signature = with_tpm(&tpm, move |t| t.sign_digest(&digest)).await?;
            return Ok(Output::Signed { nonce, signature });
        }
        let a = link
            .call(&Request::Sign { nonce })
            .await
            .map_err(|e| link_failure(&e))?;
        let signature = protocol::parse_signature(&a).map_err(|e| answer_failure("SIGN", &e))?;
        Ok(Output::Signed { nonce, signature })
    }
}

#[cfg(test)]
mod tests {
    use super::split_der;

    #[test]
    fn der_values_are_split_and_damage_is_named() {
        let short = vec![0x30, 0x02, 1, 2];
        let long = [vec![0x30, 0x81, 0x80], vec![7u8; 0x80]].concat();
        let both = [short.clone(), long.clone()].concat();
        assert_eq!(split_der(&both).unwrap(), vec![short.clone(), long]);
        assert!(
            split_der(&[0x30, 0x05, 1])
                .unwrap_err()
                .contains("cut short")
        );
        assert!(split_der(&[0xff, 0xff]).unwrap_err().contains("DER"));
        assert!(split_der(&[]).unwrap().is_empty());
    }
}
