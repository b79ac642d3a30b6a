//! The real board TPM, through tss-esapi (cargo feature `tpm`): the
//! [`EsapiTpm`] handle, the thread that owns each TPM's ESAPI context and
//! serves the [`BoardTpm`] calls one at a time (a TPM serves one client at
//! a time), and the channel between them. The operations themselves are
//! in `ops.rs` (keys, signing, the EK) and `nv.rs` (the certificate NV
//! index); what TSS codes and TCTI strings mean is in `errors.rs`. Must not
//! know jigs, certificates, the store, or why a key is made.
//!
//! libtss2 writes its own ERROR lines to stderr, also for failures that
//! are handled here (a connection refused, say). They are controlled by
//! the `TSS2_LOG` environment variable of the station's process:
//! `TSS2_LOG=all+NONE` silences them, `TSS2_LOG=all+debug` traces every
//! command. This module never sets it.

mod errors;
mod nv;
mod ops;

use std::sync::mpsc;
use std::thread;

use tss_esapi::Context;

use super::{BoardTpm, NvArea, TpmError, TpmSlot};
use ops::Target;

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
    WriteNv(NvArea, Vec<u8>),
    ReadNv(NvArea),
    ClearNv(NvArea),
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

    fn write_nv(&self, area: NvArea, data: &[u8]) -> Result<(), TpmError> {
        self.call(Op::WriteNv(area, data.to_vec())).map(|_| ())
    }

    fn read_nv(&self, area: NvArea) -> Result<Vec<u8>, TpmError> {
        self.call(Op::ReadNv(area))
    }

    fn clear_nv(&self, area: NvArea) -> Result<(), TpmError> {
        self.call(Op::ClearNv(area)).map(|_| ())
    }

    fn ek_public(&self) -> Result<Vec<u8>, TpmError> {
        self.call(Op::EkPublic)
    }
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
            Op::WriteNv(area, data) => t.write_nv(context, area, &data).map(|()| Vec::new()),
            Op::ReadNv(area) => t.read_nv(context, area),
            Op::ClearNv(area) => t.clear_nv(context, area).map(|()| Vec::new()),
            Op::EkPublic => t.ek_public(context),
        };
        if let Err(TpmError::Unreachable { .. }) = &answer {
            // A board swapped or a simulator restarted: start afresh.
            self.context = None;
        }
        answer
    }
}
