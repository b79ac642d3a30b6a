//! The NV indices on one TPM (the certificate chain's and the provisioning
//! settings'), given an ESAPI context: defining one, writing, reading and
//! undefining it in chunks the TPM accepts, and finishing a write an
//! earlier attempt left half done. Knows nothing of what they hold.

use tss_esapi::Context;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::{NvIndexType, PropertyTag, Tss2ResponseCodeKind};
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::structures::{MaxNvBuffer, NvPublic, NvPublicBuilder};

use super::errors::kind;
use super::ops::{Release, Target, is_present};
use crate::tpm::{NvArea, TpmError};

/// The NV chunk size used when the TPM does not report
/// TPM2_PT_NV_BUFFER_MAX (every TPM 2.0 takes at least this much).
const FALLBACK_NV_BUFFER: usize = 512;

impl Target {
    fn handle(&self, area: NvArea) -> NvIndexTpmHandle {
        match area {
            NvArea::Chain => self.nv,
            NvArea::Settings => self.settings_nv,
        }
    }

    pub(super) fn write_nv(
        &self,
        context: &mut Context,
        area: NvArea,
        data: &[u8],
    ) -> Result<(), TpmError> {
        let index = self.slot.nv_index(area);
        let what = format!("store {} in NV index {index:#010x}", area.describe());
        if is_present(context, index).map_err(self.err(&what))? {
            let nv = self.open_nv(context, area)?;
            return self.release_after(context, nv.into(), Release::Close, |context| {
                let (public, _) = context
                    .execute_without_session(|c| c.nv_read_public(nv))
                    .map_err(self.err(&what))?;
                if public.attributes().written() {
                    if self.read_chunks(context, nv, index, public.data_size())? == data {
                        return Ok(());
                    }
                } else if public.data_size() == data.len() {
                    // Defined by an earlier attempt that stopped before
                    // writing: finish it.
                    return self.write_chunks(context, nv, index, data);
                }
                Err(TpmError::NvIndexDefined { index })
            });
        }
        let max = context
            .get_tpm_property(PropertyTag::NvIndexMax)
            .map_err(self.err(&what))?
            .map_or(u16::MAX.into(), |m| m as usize);
        if data.is_empty() || data.len() > max {
            return Err(TpmError::Failed {
                what,
                reason: format!(
                    "{} bytes do not fit: this TPM's NV indices hold 1 to {max} bytes (TPM2_PT_NV_INDEX_MAX); shorten the certificate chain",
                    data.len()
                ),
            });
        }
        let nv = context
            .execute_with_nullauth_session(|c| {
                c.nv_define_space(
                    Provision::Owner,
                    None,
                    nv_template(self.handle(area), data.len())?,
                )
            })
            .map_err(|e| match kind(e) {
                Some(Tss2ResponseCodeKind::NvDefined) => TpmError::NvIndexDefined { index },
                _ => self.error(&what, e),
            })?;
        self.release_after(context, nv.into(), Release::Close, |context| {
            self.write_chunks(context, nv, index, data)
        })
    }

    pub(super) fn read_nv(&self, context: &mut Context, area: NvArea) -> Result<Vec<u8>, TpmError> {
        let index = self.slot.nv_index(area);
        let what = format!("read NV index {index:#010x}");
        if !is_present(context, index).map_err(self.err(&what))? {
            return Err(TpmError::Failed {
                what,
                reason: "the index is not defined: nothing was stored there".into(),
            });
        }
        let nv = self.open_nv(context, area)?;
        self.release_after(context, nv.into(), Release::Close, |context| {
            let (public, _) = context
                .execute_without_session(|c| c.nv_read_public(nv))
                .map_err(self.err(&what))?;
            if !public.attributes().written() {
                return Err(TpmError::Failed {
                    what,
                    reason: "the index is defined but was never written".into(),
                });
            }
            self.read_chunks(context, nv, index, public.data_size())
        })
    }

    /// Undefines the NV index of `area`, if it is defined (owner
    /// authorisation). The ESYS handle is gone with the index.
    pub(super) fn clear_nv(&self, context: &mut Context, area: NvArea) -> Result<(), TpmError> {
        let index = self.slot.nv_index(area);
        let what = format!("clear NV index {index:#010x}");
        if !is_present(context, index).map_err(self.err(&what))? {
            return Ok(());
        }
        let nv = self.open_nv(context, area)?;
        context
            .execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, nv))
            .map_err(self.err(&what))
    }

    /// The ESYS handle of an existing NV index; close it after use.
    fn open_nv(&self, context: &mut Context, area: NvArea) -> Result<NvIndexHandle, TpmError> {
        context
            .execute_without_session(|c| {
                c.tr_from_tpm_public(TpmHandle::NvIndex(self.handle(area)))
            })
            .map(NvIndexHandle::from)
            .map_err(self.err("open the NV index"))
    }

    fn chunk_size(&self, context: &mut Context) -> Result<usize, TpmError> {
        let max = context
            .get_tpm_property(PropertyTag::NvBufferMax)
            .map_err(self.err("tell its NV buffer size"))?
            .map_or(FALLBACK_NV_BUFFER, |m| m as usize);
        Ok(max.clamp(1, MaxNvBuffer::MAX_SIZE))
    }

    fn write_chunks(
        &self,
        context: &mut Context,
        nv: NvIndexHandle,
        index: u32,
        data: &[u8],
    ) -> Result<(), TpmError> {
        let chunk = self.chunk_size(context)?;
        let what = format!("write NV index {index:#010x}");
        for (i, part) in data.chunks(chunk).enumerate() {
            let offset = offset16(i * chunk, &what)?;
            context
                .execute_with_nullauth_session(|c| {
                    c.nv_write(
                        NvAuth::Owner,
                        nv,
                        MaxNvBuffer::try_from(part.to_vec())?,
                        offset,
                    )
                })
                .map_err(self.err(&what))?;
        }
        Ok(())
    }

    fn read_chunks(
        &self,
        context: &mut Context,
        nv: NvIndexHandle,
        index: u32,
        size: usize,
    ) -> Result<Vec<u8>, TpmError> {
        let chunk = self.chunk_size(context)?;
        let what = format!("read NV index {index:#010x}");
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let offset = offset16(data.len(), &what)?;
            let want = offset16(chunk.min(size - data.len()), &what)?;
            let part = context
                .execute_with_nullauth_session(|c| c.nv_read(NvAuth::Owner, nv, want, offset))
                .map_err(self.err(&what))?;
            if part.is_empty() {
                return Err(TpmError::Failed {
                    what,
                    reason: "the TPM answered an empty chunk".into(),
                });
            }
            data.extend_from_slice(&part);
        }
        Ok(data)
    }
}

/// The certificate chain's NV index: ordinary, owner writes, owner or
/// anyone (empty index authorisation) reads.
fn nv_template(index: NvIndexTpmHandle, size: usize) -> tss_esapi::Result<NvPublic> {
    let attributes = NvIndexAttributesBuilder::new()
        .with_nv_index_type(NvIndexType::Ordinary)
        .with_owner_write(true)
        .with_owner_read(true)
        .with_auth_read(true)
        .build()?;
    NvPublicBuilder::new()
        .with_nv_index(index)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attributes)
        .with_data_area_size(size)
        .build()
}

fn offset16(n: usize, what: &str) -> Result<u16, TpmError> {
    u16::try_from(n).map_err(|_| TpmError::Failed {
        what: what.into(),
        reason: format!("offset {n} is beyond what an NV index can hold"),
    })
}
