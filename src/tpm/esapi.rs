//! The real board TPM, through tss-esapi (cargo feature `tpm`). Owns the
//! ESAPI context of each TPM, held by one thread per TPM that serves the
//! [`BoardTpm`] calls one at a time (a TPM serves one client at a time),
//! the key and NV templates, the handle bookkeeping, and the mapping of
//! TSS response codes to [`TpmError`]. Must not know jigs, certificates,
//! the store, or why a key is made.
//!
//! libtss2 writes its own ERROR lines to stderr, also for failures that
//! are handled here (a connection refused, say). They are controlled by
//! the `TSS2_LOG` environment variable of the station's process:
//! `TSS2_LOG=all+NONE` silences them, `TSS2_LOG=all+debug` traces every
//! command. This module never sets it.

use std::str::FromStr;
use std::sync::mpsc;
use std::thread;

use tss_esapi::Context;
use tss_esapi::abstraction::ek;
use tss_esapi::attributes::{NvIndexAttributesBuilder, ObjectAttributesBuilder};
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK, TPM2_TRANSIENT_FIRST};
use tss_esapi::constants::{
    CapabilityType, NvIndexType, PropertyTag, Tss2ResponseCode, Tss2ResponseCodeKind,
};
use tss_esapi::handles::{
    KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, PersistentTpmHandle, TpmHandle,
};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, PublicAlgorithm,
};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::structures::{
    CapabilityData, Digest, EccParameter, EccPoint, EccScheme, HashScheme, HashcheckTicket,
    MaxNvBuffer, NvPublic, NvPublicBuilder, Public, PublicBuilder, PublicEccParametersBuilder,
    Signature, SignatureScheme, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::{TPM2B_DIGEST, TPMT_TK_HASHCHECK};

use super::{BoardTpm, TpmError, TpmSlot};

/// The NV chunk size used when the TPM does not report
/// TPM2_PT_NV_BUFFER_MAX (every TPM 2.0 takes at least this much).
const FALLBACK_NV_BUFFER: usize = 512;

/// The TSS layer of TCTI response codes (bits 16..23 of a TSS2_RC).
const TCTI_LAYER: u32 = 10;

/// A board's TPM, reached through a TCTI (`device:/dev/tpmrm0`,
/// `swtpm:host=127.0.0.1,port=2321`). Calls are passed to the TPM's own
/// thread and answered in order; the thread ends when this is dropped.
pub struct EsapiTpm {
    /// The slot's TCTI string, for messages.
    tcti: String,
    /// Requests to the TPM's thread; `None` only while dropping.
    requests: Option<mpsc::Sender<Request>>,
    /// The TPM's thread, joined on drop so that the TPM is free for the
    /// next client (tpm2-tools, a new station) once this is gone.
    worker: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for EsapiTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsapiTpm")
            .field("tcti", &self.tcti)
            .finish_non_exhaustive()
    }
}

/// What the TPM's thread is asked to do: one per [`BoardTpm`] call.
enum Op {
    CreateKey,
    PublicKey,
    Sign([u8; 32]),
    WriteNv(Vec<u8>),
    ReadNv,
    ClearNv,
    EkPublic,
}

struct Request {
    op: Op,
    /// Where the answer goes (`write_nv` answers an empty vector).
    reply: mpsc::SyncSender<Result<Vec<u8>, TpmError>>,
}

impl EsapiTpm {
    /// Opens the slot's TPM: starts its thread and connects. A TCTI that
    /// cannot be parsed or reached is [`TpmError::Unreachable`] now, so a
    /// misconfigured slot is reported at start-up. A connection lost later
    /// is reopened by the next call.
    pub fn open(slot: &TpmSlot) -> Result<EsapiTpm, TpmError> {
        let target = Target::new(slot)?;
        let (requests, inbox) = mpsc::channel::<Request>();
        let (opened_tx, opened_rx) = mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name("board-tpm".into())
            .spawn(move || match target.connect() {
                Ok(context) => {
                    let _ = opened_tx.send(Ok(()));
                    let mut worker = Worker {
                        target,
                        context: Some(context),
                    };
                    worker.run(inbox);
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                }
            })
            .map_err(|e| TpmError::Failed {
                what: "start the thread that talks to it".into(),
                reason: e.to_string(),
            })?;
        let tpm = EsapiTpm {
            tcti: slot.tcti.clone(),
            requests: Some(requests),
            worker: Some(handle),
        };
        match opened_rx.recv() {
            Ok(Ok(())) => Ok(tpm),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(tpm.thread_gone()),
        }
    }

    fn call(&self, op: Op) -> Result<Vec<u8>, TpmError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = match &self.requests {
            Some(requests) => requests.send(Request { op, reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.thread_gone());
        }
        answer.recv().map_err(|_| self.thread_gone())?
    }

    fn thread_gone(&self) -> TpmError {
        TpmError::Failed {
            what: "answer".into(),
            reason: format!(
                "the station's thread for {} has stopped (see the log above): restart the station",
                self.tcti
            ),
        }
    }
}

impl Drop for EsapiTpm {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; it then drops the
        // context, which closes the connection to the TPM.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl BoardTpm for EsapiTpm {
    fn describe(&self) -> String {
        self.tcti.clone()
    }

    fn create_key(&self) -> Result<Vec<u8>, TpmError> {
        self.call(Op::CreateKey)
    }

    fn public_key(&self) -> Result<Vec<u8>, TpmError> {
        self.call(Op::PublicKey)
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        self.call(Op::Sign(*digest))
    }

    fn write_nv(&self, data: &[u8]) -> Result<(), TpmError> {
        self.call(Op::WriteNv(data.to_vec())).map(|_| ())
    }

    fn read_nv(&self) -> Result<Vec<u8>, TpmError> {
        self.call(Op::ReadNv)
    }

    fn clear_nv(&self) -> Result<(), TpmError> {
        self.call(Op::ClearNv).map(|_| ())
    }

    fn ek_public(&self) -> Result<Vec<u8>, TpmError> {
        self.call(Op::EkPublic)
    }
}

/// Checks a TCTI string before tss-esapi reads it: tss-esapi and libtss2
/// silently ignore keys they do not know and fall back to
/// `localhost:2321`, which would quietly reach some other board's TPM.
fn parse_tcti(tcti: &str) -> Result<TctiNameConf, TpmError> {
    let unreachable = |reason: String| TpmError::Unreachable {
        tcti: tcti.to_string(),
        reason,
    };
    let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    if kind == "swtpm" || kind == "mssim" {
        let keys: Vec<&str> = conf
            .split(',')
            .map(|kv| kv.split('=').next().unwrap_or(""))
            .collect();
        if !keys.contains(&"host") || !keys.contains(&"port") || keys.len() != 2 {
            return Err(unreachable(format!(
                "a {kind} TCTI needs exactly host= and port= (`{kind}:host=127.0.0.1,port=2321`)"
            )));
        }
    }
    TctiNameConf::from_str(tcti).map_err(|_| {
        unreachable(
            "the TCTI is not understood: use `device:/dev/tpmrm0` or `swtpm:host=127.0.0.1,port=2321`"
                .into(),
        )
    })
}

/// The TPM's thread: holds the context, opened again after a lost
/// connection.
struct Worker {
    target: Target,
    /// `None` after the connection was lost, until the next call.
    context: Option<Context>,
}

impl Worker {
    fn run(&mut self, inbox: mpsc::Receiver<Request>) {
        for request in inbox {
            let answer = self.serve(request.op);
            let _ = request.reply.send(answer);
        }
    }

    fn serve(&mut self, op: Op) -> Result<Vec<u8>, TpmError> {
        let context = match self.context.take() {
            Some(context) => context,
            None => {
                tracing::info!(tpm = %self.target.slot.tcti, "reconnecting to the board's TPM");
                self.target.connect()?
            }
        };
        let context = self.context.insert(context);
        let t = &self.target;
        let answer = match op {
            Op::CreateKey => t.create_key(context),
            Op::PublicKey => t.public_key(context),
            Op::Sign(digest) => t.sign(context, &digest),
            Op::WriteNv(data) => t.write_nv(context, &data).map(|()| Vec::new()),
            Op::ReadNv => t.read_nv(context),
            Op::ClearNv => t.clear_nv(context).map(|()| Vec::new()),
            Op::EkPublic => t.ek_public(context),
        };
        if let Err(TpmError::Unreachable { .. }) = &answer {
            // A board swapped or a simulator restarted: start afresh.
            self.context = None;
        }
        answer
    }
}

/// How a handle is given back when an operation is done with it.
#[derive(Clone, Copy)]
enum Release {
    /// A transient object: free its slot in the TPM.
    Flush,
    /// A persistent object or NV index: forget the ESYS handle only.
    Close,
}

/// One TPM's slot, checked, and the operations on it given a context.
struct Target {
    slot: TpmSlot,
    conf: TctiNameConf,
    /// `slot.key_handle`, checked to be a persistent handle.
    key: PersistentTpmHandle,
    /// `slot.cert_nv_index`, checked to be an NV index.
    nv: NvIndexTpmHandle,
}

impl Target {
    fn new(slot: &TpmSlot) -> Result<Target, TpmError> {
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
        Ok(Target {
            slot: slot.clone(),
            conf: parse_tcti(&slot.tcti)?,
            key,
            nv,
        })
    }

    /// A new context, with transient objects left behind flushed.
    fn connect(&self) -> Result<Context, TpmError> {
        let mut context = Context::new(self.conf.clone()).map_err(self.err("connect"))?;
        self.flush_stale(&mut context)?;
        Ok(context)
    }

    fn error(&self, what: &str, e: tss_esapi::Error) -> TpmError {
        map_error(&self.slot.tcti, what, e)
    }

    fn err<'a>(&'a self, what: &'a str) -> impl Fn(tss_esapi::Error) -> TpmError + 'a {
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
    fn release_after<T>(
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

    fn create_key(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
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

    fn public_key(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
        let key = self.persisted_key(context)?;
        self.release_after(context, key.into(), Release::Close, |context| {
            let (public, _, _) = context
                .execute_without_session(|c| c.read_public(key))
                .map_err(self.err("read the public key"))?;
            sec1(&public)
        })
    }

    fn sign(&self, context: &mut Context, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
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

    fn write_nv(&self, context: &mut Context, data: &[u8]) -> Result<(), TpmError> {
        let what = format!(
            "store the certificate chain in NV index {:#010x}",
            self.slot.cert_nv_index
        );
        if is_present(context, self.slot.cert_nv_index).map_err(self.err(&what))? {
            let nv = self.open_nv(context)?;
            return self.release_after(context, nv.into(), Release::Close, |context| {
                let (public, _) = context
                    .execute_without_session(|c| c.nv_read_public(nv))
                    .map_err(self.err(&what))?;
                if public.attributes().written() {
                    if self.read_chunks(context, nv, public.data_size())? == data {
                        return Ok(());
                    }
                } else if public.data_size() == data.len() {
                    // Defined by an earlier attempt that stopped before
                    // writing: finish it.
                    return self.write_chunks(context, nv, data);
                }
                Err(TpmError::NvIndexDefined {
                    index: self.slot.cert_nv_index,
                })
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
                c.nv_define_space(Provision::Owner, None, nv_template(self.nv, data.len())?)
            })
            .map_err(|e| match kind(e) {
                Some(Tss2ResponseCodeKind::NvDefined) => TpmError::NvIndexDefined {
                    index: self.slot.cert_nv_index,
                },
                _ => self.error(&what, e),
            })?;
        self.release_after(context, nv.into(), Release::Close, |context| {
            self.write_chunks(context, nv, data)
        })
    }

    fn read_nv(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
        let what = format!("read NV index {:#010x}", self.slot.cert_nv_index);
        if !is_present(context, self.slot.cert_nv_index).map_err(self.err(&what))? {
            return Err(TpmError::Failed {
                what,
                reason: "the index is not defined: nothing was stored there".into(),
            });
        }
        let nv = self.open_nv(context)?;
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
            self.read_chunks(context, nv, public.data_size())
        })
    }

    /// Undefines the certificate NV index, if it is defined (owner
    /// authorisation). The ESYS handle is gone with the index.
    fn clear_nv(&self, context: &mut Context) -> Result<(), TpmError> {
        let what = format!("clear NV index {:#010x}", self.slot.cert_nv_index);
        if !is_present(context, self.slot.cert_nv_index).map_err(self.err(&what))? {
            return Ok(());
        }
        let nv = self.open_nv(context)?;
        context
            .execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, nv))
            .map_err(self.err(&what))
    }

    /// The ESYS handle of an existing NV index; close it after use.
    fn open_nv(&self, context: &mut Context) -> Result<NvIndexHandle, TpmError> {
        context
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(self.nv)))
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
        data: &[u8],
    ) -> Result<(), TpmError> {
        let chunk = self.chunk_size(context)?;
        let what = format!("write NV index {:#010x}", self.slot.cert_nv_index);
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
        size: usize,
    ) -> Result<Vec<u8>, TpmError> {
        let chunk = self.chunk_size(context)?;
        let what = format!("read NV index {:#010x}", self.slot.cert_nv_index);
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

    fn ek_public(&self, context: &mut Context) -> Result<Vec<u8>, TpmError> {
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
fn is_present(context: &mut Context, handle: u32) -> tss_esapi::Result<bool> {
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

fn offset16(n: usize, what: &str) -> Result<u16, TpmError> {
    u16::try_from(n).map_err(|_| TpmError::Failed {
        what: what.into(),
        reason: format!("offset {n} is beyond what an NV index can hold"),
    })
}

/// The raw TSS2_RC of an error. tss-esapi 7 does not expose it, only its
/// display ("Response code value: 0xa000a"); a unit test pins that.
fn raw_code(rc: Tss2ResponseCode) -> Option<u32> {
    let text = match rc {
        Tss2ResponseCode::Success => return None,
        Tss2ResponseCode::FormatZero(c) => c.to_string(),
        Tss2ResponseCode::FormatOne(c) => c.to_string(),
    };
    let hex = text.rsplit("0x").next()?;
    u32::from_str_radix(hex.trim(), 16).ok()
}

/// The TPM's own response code kind (layer 0 only: tss-esapi 7 ignores
/// the layer when it names a code).
fn kind(e: tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
    match e {
        tss_esapi::Error::Tss2Error(rc) if raw_code(rc).is_some_and(|c| c >> 16 == 0) => rc.kind(),
        _ => None,
    }
}

/// Words for the base code of a TSS software layer (TSS2_BASE_RC_*).
fn base_text(code: u32) -> &'static str {
    match code & 0xffff {
        1 => "general failure",
        2 => "not implemented",
        3 => "bad context",
        4 => "ABI mismatch",
        5 => "bad reference",
        6 => "insufficient buffer",
        7 => "bad sequence",
        8 => "no connection",
        9 => "try again",
        10 => "I/O error",
        11 => "bad value",
        12 => "not permitted",
        16 => "bad size",
        17 => "malformed response",
        20 => "incompatible TCTI",
        21 => "not supported",
        23 => "out of memory",
        24 => "bad ESYS handle",
        27 => "the TPM's answer failed its authorisation check",
        _ => "unknown error",
    }
}

fn layer_name(layer: u32) -> &'static str {
    match layer {
        6 => "FAPI",
        7 => "ESAPI",
        8 => "SAPI",
        9 => "marshalling",
        TCTI_LAYER => "TCTI",
        11 | 12 => "resource manager",
        _ => "TSS",
    }
}

/// A TSS error in words for the operator: a lost or refused connection is
/// [`TpmError::Unreachable`], lockout is [`TpmError::Lockout`], anything
/// else is [`TpmError::Failed`] with the TSS's description and code.
fn map_error(tcti: &str, what: &str, e: tss_esapi::Error) -> TpmError {
    let failed = |reason: String| TpmError::Failed {
        what: what.to_string(),
        reason,
    };
    let rc = match e {
        tss_esapi::Error::WrapperError(k) => return failed(format!("tss-esapi: {k}")),
        tss_esapi::Error::Tss2Error(rc) => rc,
    };
    let Some(code) = raw_code(rc) else {
        return failed(format!("unexpected answer: {rc}"));
    };
    match code >> 16 {
        0 => match rc.kind() {
            Some(Tss2ResponseCodeKind::Lockout) => TpmError::Lockout,
            _ => failed(format!("{rc} (TPM response code {code:#x})")),
        },
        TCTI_LAYER => TpmError::Unreachable {
            tcti: tcti.to_string(),
            reason: format!("failed to {what}: {} (TSS code {code:#x})", base_text(code)),
        },
        layer => failed(format!(
            "{} in the {} layer (TSS code {code:#x})",
            base_text(code),
            layer_name(layer)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tss(code: u32) -> tss_esapi::Error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(code))
    }

    #[test]
    fn raw_codes_are_recovered() {
        assert_eq!(
            raw_code(Tss2ResponseCode::from(0x000a_000a)),
            Some(0x000a_000a)
        );
        assert_eq!(raw_code(Tss2ResponseCode::from(0x0000_014c)), Some(0x14c));
        assert_eq!(raw_code(Tss2ResponseCode::from(0x0000_018b)), Some(0x18b));
        assert_eq!(raw_code(Tss2ResponseCode::from(0)), None);
    }

    #[test]
    fn errors_are_mapped_for_the_operator() {
        let t = "swtpm:host=127.0.0.1,port=1";
        match map_error(t, "sign", tss(0x000a_000a)) {
            TpmError::Unreachable { tcti, reason } => {
                assert_eq!(tcti, t);
                assert!(reason.contains("I/O error"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(map_error(t, "sign", tss(0x921)), TpmError::Lockout);
        assert_eq!(kind(tss(0x14c)), Some(Tss2ResponseCodeKind::NvDefined));
        // The same number in the TCTI layer is not NV_DEFINED.
        assert_eq!(kind(tss(0x000a_014c)), None);
        match map_error(t, "define the index", tss(0x14b)) {
            TpmError::Failed { what, reason } => {
                assert_eq!(what, "define the index");
                assert!(reason.contains("0x14b"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcti_strings_are_checked() {
        assert!(parse_tcti("swtpm:host=127.0.0.1,port=2321").is_ok());
        assert!(parse_tcti("device:/dev/tpmrm0").is_ok());
        for bad in [
            "swtpm:path=/run/tpm.sock",
            "swtpm:host=127.0.0.1",
            "swtpm",
            "tpm0",
        ] {
            assert!(
                matches!(parse_tcti(bad), Err(TpmError::Unreachable { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn handles_outside_their_ranges_are_refused() {
        let slot = TpmSlot {
            tcti: "swtpm:host=127.0.0.1,port=2321".into(),
            key_handle: 0x8101_0001,
            cert_nv_index: 0x0150_0001,
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
