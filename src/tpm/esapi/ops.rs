//! One TPM's slot, checked ([`Target`]), and the operations on it given
//! an ESAPI context: connecting (flushing what an earlier client left),
//! giving handles back, creating and persisting the board's key, its
//! public key, signing a digest, and the endorsement key; the key
//! templates and the SEC1 and P-256 encodings. The NV index operations are
//! in `nv.rs`. Knows nothing of threads or channels.

use tss_esapi::Context;
use tss_esapi::abstraction::ek;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK, TPM2_TRANSIENT_FIRST};
use tss_esapi::constants::{CapabilityType, Tss2ResponseCodeKind};
use tss_esapi::handles::{
    KeyHandle, NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, PublicAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::structures::{
    CapabilityData, Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket, Public,
    PublicBuilder, PublicEccParametersBuilder, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::{TPM2B_DIGEST, TPMT_TK_HASHCHECK};

use super::errors::{kind, map_error, parse_tcti};
use crate::tpm::{TpmError, TpmSlot};

/// How a handle is given back when an operation is done with it.
#[derive(Clone, Copy)]
pub(super) enum Release {
    /// A transient object: free its slot in the TPM.
    Flush,
    /// A persistent object or NV index: forget the ESYS handle only.
    Close,
}

/// One TPM's slot, checked, and the operations on it given a context.
pub(super) struct Target {
    pub(super) slot: TpmSlot,
    conf: TctiNameConf,
    /// `slot.key_handle`, checked to be a persistent handle.
    key: PersistentTpmHandle,
    /// `slot.cert_nv_index`, checked to be an NV index.
    pub(super) nv: NvIndexTpmHandle,
    /// `slot.settings_nv_index`, checked to be an NV index.
    pub(super) settings_nv: NvIndexTpmHandle,
}

impl Target {
    pub(super) fn new(slot: &TpmSlot) -> Result<Target, TpmError> {
        let key = PersistentTpmHandle::new(slot.key_handle).map_err(|_| TpmError::Failed {
            what: "use the slot's key handle".into(),
            reason: format!(
                "{:#010x} is not a persistent handle (0x81000000 to 0x81ffffff): fix key_handle",
                slot.key_handle
            ),
        })?;
        let nv = NvIndexTpmHandle::new(slot.cert_nv_index).map_err(|_| TpmError::Failed {
            what: "use the slot's NV index".into(),
            reason: format!(
                "{:#010x} is not an NV index (0x01000000 to 0x01ffffff): fix cert_nv_index",
                slot.cert_nv_index
            ),
        })?;
        let settings_nv =
            NvIndexTpmHandle::new(slot.settings_nv_index).map_err(|_| TpmError::Failed {
                what: "use the slot's settings NV index".into(),
                reason: format!(
                    "{:#010x} is not an NV index (0x01000000 to 0x01ffffff): fix settings_nv_index",
                    slot.settings_nv_index
                ),
            })?;
        Ok(Target {
            slot: slot.clone(),
            conf: parse_tcti(&slot.tcti)?,
            key,
            nv,
            settings_nv,
        })
    }

    /// A new context, with transient objects left behind flushed.
    pub(super) fn connect(&self) -> Result<Context, TpmError> {
        let mut context = Context::new(self.conf.clone()).map_err(self.err("connect"))?;
        self.flush_stale(&mut context)?;
        Ok(context)
    }

    pub(super) fn error(&self, what: &str, e: tss_esapi::Error) -> TpmError {
        map_error(&self.slot.tcti, what, e)
    }

    pub(super) fn err<'a>(&'a self, what: &'a str) -> impl Fn(tss_esapi::Error) -> TpmError + 'a {
        move |e| self.error(what, e)
    }

    /// Flushes transient objects left by a client that died before
    /// flushing them (a TPM without a resource manager keeps them, and has
    /// room for only a few). The station is the TPM's only client; behind
    /// a resource manager (`/dev/tpmrm0`) the list is empty.
    fn flush_stale(&self, context: &mut Context) -> Result<(), TpmError> {
        let stale = present_handles(context, TPM2_TRANSIENT_FIRST, 16)
            .map_err(self.err("list its transient objects"))?;
        let stale: Vec<u32> = stale.into_iter().filter(|h| h >> 24 == 0x80).collect();
        for handle in &stale {
            let object = context
                .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::try_from(*handle)?))
                .map_err(self.err("look up a transient object left by an earlier client"))?;
            context
                .flush_context(object)
                .map_err(self.err("flush a transient object left by an earlier client"))?;
        }
        if !stale.is_empty() {
            tracing::info!(tpm = %self.slot.tcti, count = stale.len(), "flushed transient objects left in the board's TPM");
        }
        Ok(())
    }

    /// Runs `f`, then gives `handle` back whether `f` worked or not. The
    /// first error wins.
    pub(super) fn release_after<T>(
        &self,
        context: &mut Context,
        handle: ObjectHandle,
        how: Release,
        f: impl FnOnce(&mut Context) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let answer = f(context);
        let released = match how {
            Release::Flush => context.flush_context(handle),
            Release::Close => {
                let mut handle = handle;
                context.tr_close(&mut handle)
            }
        };
        let value = answer?;
        released.map_err(self.err("release a handle"))?;
        Ok(value)
    }

    pub(super) fn create_key(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
        if is_present(context, self.slot.key_handle)
            .map_err(self.err("list its persistent keys"))?
        {
            return Err(TpmError::HandleInUse {
                handle: self.slot.key_handle,
            });
        }
        let primary = context
            .execute_with_nullauth_session(|c| {
                c.create_primary(
                    Hierarchy::Owner,
                    storage_template()?,
                    None,
                    None,
                    None,
                    None,
                )
            })
            .map_err(self.err("create the storage primary key"))?
            .key_handle;
        self.release_after(context, primary.into(), Release::Flush, |context| {
            let created = context
                .execute_with_nullauth_session(|c| {
                    c.create(primary, signing_template()?, None, None, None, None)
                })
                .map_err(self.err("create the signing key"))?;
            let point = sec1(&created.out_public)?;
            let key = context
                .execute_with_nullauth_session(|c| {
                    c.load(primary, created.out_private, created.out_public)
                })
                .map_err(self.err("load the signing key"))?;
            self.release_after(context, key.into(), Release::Flush, |context| {
                let persisted = context.execute_with_nullauth_session(|c| {
                    c.evict_control(
                        Provision::Owner,
                        key.into(),
                        Persistent::Persistent(self.key),
                    )
                });
                let mut persisted = persisted.map_err(|e| match kind(e) {
                    Some(Tss2ResponseCodeKind::NvDefined) => TpmError::HandleInUse {
                        handle: self.slot.key_handle,
                    },
                    _ => self.error("persist the signing key", e),
                })?;
                context
                    .tr_close(&mut persisted)
                    .map_err(self.err("release a handle"))?;
                Ok(point)
            })
        })
    }

    /// The ESYS handle of the persisted key; close it after use.
    fn persisted_key(&self, context: &mut Context) -> Result<KeyHandle, TpmError> {
        let what = format!("use the key at handle {:#010x}", self.slot.key_handle);
        if !is_present(context, self.slot.key_handle).map_err(self.err(&what))? {
            return Err(TpmError::Failed {
                what,
                reason: "no key is persisted there: the board's key was never created".into(),
            });
        }
        context
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::Persistent(self.key)))
            .map(KeyHandle::from)
            .map_err(self.err(&what))
    }

    pub(super) fn public_key(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
        let key = self.persisted_key(context)?;
        self.release_after(context, key.into(), Release::Close, |context| {
            let (public, _, _) = context
                .execute_without_session(|c| c.read_public(key))
                .map_err(self.err("read the public key"))?;
            sec1(&public)
        })
    }

    pub(super) fn sign(
        &self,
        context: &mut Context,
        digest: &[u8; 32],
    ) -> Result<Vec<u8>, TpmError> {
        let key = self.persisted_key(context)?;
        self.release_after(context, key.into(), Release::Close, |context| {
            let signature = context
                .execute_with_nullauth_session(|c| {
                    // A non-restricted key signs any digest: the
                    // validation ticket is the null ticket.
                    let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
                        tag: TPM2_ST_HASHCHECK,
                        hierarchy: TPM2_RH_NULL,
                        digest: TPM2B_DIGEST {
                            size: 0,
                            buffer: [0; 64],
                        },
                    })?;
                    let scheme = SignatureScheme::EcDsa {
                        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                    };
                    c.sign(key, Digest::try_from(digest.to_vec())?, scheme, ticket)
                })
                .map_err(self.err("sign"))?;
            let Signature::EcDsa(signature) = signature else {
                return Err(TpmError::Failed {
                    what: "sign".into(),
                    reason: "the TPM answered with a signature that is not ECDSA".into(),
                });
            };
            let r = pad32(signature.signature_r().value(), "sign")?;
            let s = pad32(signature.signature_s().value(), "sign")?;
            let signature =
                p256::ecdsa::Signature::from_scalars(r, s).map_err(|e| TpmError::Failed {
                    what: "sign".into(),
                    reason: format!("the TPM's signature is not a valid P-256 signature: {e}"),
                })?;
            Ok(signature.to_der().as_bytes().to_vec())
        })
    }
    pub(super) fn ek_public(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
        let ek = ek::create_ek_object(context, AsymmetricAlgorithm::Rsa, None)
            .map_err(self.err("create the endorsement key"))?;
        self.release_after(context, ek.into(), Release::Flush, |context| {
            let (public, _, _) = context
                .execute_without_session(|c| c.read_public(ek))
                .map_err(self.err("read the endorsement key"))?;
            let body = public
                .marshall()
                .map_err(self.err("encode the endorsement key"))?;
            let size = u16::try_from(body.len()).map_err(|_| TpmError::Failed {
                what: "encode the endorsement key".into(),
                reason: format!("{} bytes is too long for a TPM2B_PUBLIC", body.len()),
            })?;
            let mut out = size.to_be_bytes().to_vec();
            out.extend(body);
            Ok(out)
        })
    }
}

/// The storage primary key: the TCG's ECC P-256 SRK template (restricted
/// decryption, AES-128-CFB, noDA, unique zeroed), so the same seed always
/// gives the same key and other tools find the same parent.
fn storage_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::new(
            EccParameter::try_from(vec![0u8; 32])?,
            EccParameter::try_from(vec![0u8; 32])?,
        ))
        .build()
}

/// The board's key: P-256 ECDSA with SHA-256, not restricted, fixedTPM,
/// fixedParent, sensitiveDataOrigin, userWithAuth (empty authorisation).
fn signing_template() -> tss_esapi::Result<Public> {
    tss_esapi::utils::create_unrestricted_signing_ecc_public(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
}

/// The handles from `first` on that the TPM lists (at most `count`).
fn present_handles(context: &mut Context, first: u32, count: u32) -> tss_esapi::Result<Vec<u32>> {
    let (data, _) = context
        .execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, count))?;
    match data {
        CapabilityData::Handles(list) => Ok(list.iter().map(|h| u32::from(*h)).collect()),
        _ => Ok(Vec::new()),
    }
}

/// Whether a persistent object or NV index exists, asked without an
/// error (which libtss2 would log) when it does not.
pub(super) fn is_present(context: &mut Context, handle: u32) -> tss_esapi::Result<bool> {
    Ok(present_handles(context, handle, 1)?.first() == Some(&handle))
}

/// An ECC public key as an uncompressed SEC1 point.
fn sec1(public: &Public) -> Result<Vec<u8>, TpmError> {
    let Public::Ecc { unique, .. } = public else {
        return Err(TpmError::Failed {
            what: "read the public key".into(),
            reason: "the key at the handle is not an ECC key".into(),
        });
    };
    let mut point = vec![0x04];
    point.extend(pad32(unique.x().value(), "read the public key")?);
    point.extend(pad32(unique.y().value(), "read the public key")?);
    Ok(point)
}

/// A big-endian P-256 integer, left-padded to 32 bytes (the TPM may drop
/// leading zeros).
fn pad32(value: &[u8], what: &str) -> Result<[u8; 32], TpmError> {
    let value = &value[value.iter().take_while(|b| **b == 0).count()..];
    let mut out = [0u8; 32];
    let start = out
        .len()
        .checked_sub(value.len())
        .ok_or_else(|| TpmError::Failed {
            what: what.into(),
            reason: format!(
                "the TPM answered a {}-byte value where P-256 has 32",
                value.len()
            ),
        })?;
    out[start..].copy_from_slice(value);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_outside_their_ranges_are_refused() {
        let slot = TpmSlot {
            tcti: "swtpm:host=127.0.0.1,port=2321".into(),
            key_handle: 0x8101_0001,
            cert_nv_index: 0x0150_0001,
            settings_nv_index: 0x0150_0002,
        };
        assert!(Target::new(&slot).is_ok());
        let swapped = TpmSlot {
            key_handle: 0x0150_0001,
            cert_nv_index: 0x8101_0001,
            ..slot
        };
        match Target::new(&swapped).err() {
            Some(TpmError::Failed { reason, .. }) => {
                assert!(reason.contains("fix key_handle"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_are_padded_to_32_bytes() {
        let short = pad32(&[1, 2], "x").ok();
        assert_eq!(short.map(|a| (a[29], a[30], a[31])), Some((0, 1, 2)));
        let mut long = vec![0u8];
        long.extend([7u8; 32]);
        assert_eq!(pad32(&long, "x").ok(), Some([7u8; 32]));
        assert!(pad32(&[1u8; 33], "x").is_err());
    }
}
