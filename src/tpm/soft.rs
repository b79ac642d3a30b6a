//! A software stand-in for a board's TPM, for tests of everything around
//! the TPM: the key lives in memory, NV in a map, and faults are scripted.

use std::collections::VecDeque;
use std::sync::Mutex;

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};

use super::{BoardTpm, NvArea, TpmError};

pub struct SoftTpm {
    key: Mutex<Option<SigningKey>>,
    nv: Mutex<Option<Vec<u8>>>,
    settings: Mutex<Option<Vec<u8>>>,
    /// Faults for the next calls, by call name (`create_key`, `write_nv`,
    /// ...): each is returned once, in order.
    faults: Mutex<VecDeque<(&'static str, TpmError)>>,
    /// A made-up TPM2B_PUBLIC.
    pub ek: Vec<u8>,
}

impl Default for SoftTpm {
    fn default() -> Self {
        let body: Vec<u8> = (0..58u8).collect();
        let mut ek = (body.len() as u16).to_be_bytes().to_vec();
        ek.extend(body);
        SoftTpm {
            key: Mutex::new(None),
            nv: Mutex::new(None),
            settings: Mutex::new(None),
            faults: Mutex::new(VecDeque::new()),
            ek,
        }
    }
}

impl SoftTpm {
    /// The next call named `call` fails with `e`.
    pub fn fail_next(&self, call: &'static str, e: TpmError) {
        if let Ok(mut f) = self.faults.lock() {
            f.push_back((call, e));
        }
    }

    fn fault(&self, call: &'static str) -> Result<(), TpmError> {
        let Ok(mut f) = self.faults.lock() else {
            return Ok(());
        };
        match f.iter().position(|(c, _)| *c == call) {
            Some(i) => Err(f.remove(i).map(|(_, e)| e).unwrap_or(TpmError::Lockout)),
            None => Ok(()),
        }
    }

    fn area(&self, area: NvArea) -> &Mutex<Option<Vec<u8>>> {
        match area {
            NvArea::Chain => &self.nv,
            NvArea::Settings => &self.settings,
        }
    }

    fn poisoned() -> TpmError {
        TpmError::Failed {
            what: "keep its state".into(),
            reason: "a lock was poisoned".into(),
        }
    }
}

fn public_of(k: &SigningKey) -> Vec<u8> {
    k.verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

impl BoardTpm for SoftTpm {
    fn describe(&self) -> String {
        "software TPM (a fake for tests)".into()
    }

    fn create_key(&self) -> Result<Vec<u8>, TpmError> {
        self.fault("create_key")?;
        let mut slot = self.key.lock().map_err(|_| Self::poisoned())?;
        if slot.is_some() {
            return Err(TpmError::HandleInUse {
                handle: 0x8101_0001,
            });
        }
        let key = loop {
            let bytes = zeroize::Zeroizing::new(crate::random::bytes::<32>());
            if let Ok(k) = SigningKey::from_slice(bytes.as_slice()) {
                break k;
            }
        };
        let public = public_of(&key);
        *slot = Some(key);
        Ok(public)
    }

    fn public_key(&self) -> Result<Vec<u8>, TpmError> {
        self.fault("public_key")?;
        let slot = self.key.lock().map_err(|_| Self::poisoned())?;
        slot.as_ref().map(public_of).ok_or(TpmError::Failed {
            what: "read the key".into(),
            reason: "no key at the handle".into(),
        })
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        self.fault("sign_digest")?;
        let slot = self.key.lock().map_err(|_| Self::poisoned())?;
        let key = slot.as_ref().ok_or(TpmError::Failed {
            what: "sign".into(),
            reason: "no key at the handle".into(),
        })?;
        let sig: Signature = key.sign_prehash(digest).map_err(|e| TpmError::Failed {
            what: "sign".into(),
            reason: e.to_string(),
        })?;
        Ok(sig.to_der().as_bytes().to_vec())
    }

    fn write_nv(&self, area: NvArea, data: &[u8]) -> Result<(), TpmError> {
        self.fault("write_nv")?;
        let mut nv = self.area(area).lock().map_err(|_| Self::poisoned())?;
        match nv.as_deref() {
            Some(held) if held != data => Err(TpmError::NvIndexDefined {
                index: match area {
                    NvArea::Chain => 0x0150_0001,
                    NvArea::Settings => 0x0150_0002,
                },
            }),
            _ => {
                *nv = Some(data.to_vec());
                Ok(())
            }
        }
    }

    fn read_nv(&self, area: NvArea) -> Result<Vec<u8>, TpmError> {
        self.fault("read_nv")?;
        let nv = self.area(area).lock().map_err(|_| Self::poisoned())?;
        nv.clone().ok_or(TpmError::Failed {
            what: "read the NV index".into(),
            reason: "it is not defined".into(),
        })
    }

    fn clear_nv(&self, area: NvArea) -> Result<(), TpmError> {
        self.fault("clear_nv")?;
        *self.area(area).lock().map_err(|_| Self::poisoned())? = None;
        Ok(())
    }

    fn ek_public(&self) -> Result<Vec<u8>, TpmError> {
        self.fault("ek_public")?;
        Ok(self.ek.clone())
    }
}
