//! A board's TPM 2.0, for slots with `keygen = "tpm"`: the [`BoardTpm`]
//! trait, the error an operator reads, and a software fake. The real
//! backend (`esapi/`, tss-esapi) is built with the cargo feature `tpm`;
//! it owns each TPM from one thread, since a TPM serves one client at a
//! time. Knows nothing of jigs, certificates or the store.

pub mod soft;

#[cfg(feature = "tpm")]
pub mod esapi;

pub use soft::SoftTpm;

/// Where a slot's TPM is and where the station keeps what it makes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmSlot {
    /// A TCTI string: `device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`.
    pub tcti: String,
    /// The persistent handle of the board's signing key (0x81xxxxxx).
    pub key_handle: u32,
    /// The NV index that holds the certificate chain (0x01xxxxxx).
    pub cert_nv_index: u32,
    /// The NV index that holds the provisioning settings (0x01xxxxxx).
    pub settings_nv_index: u32,
}

impl TpmSlot {
    /// The NV index of `area`.
    pub fn nv_index(&self, area: NvArea) -> u32 {
        match area {
            NvArea::Chain => self.cert_nv_index,
            NvArea::Settings => self.settings_nv_index,
        }
    }
}

/// What an NV index of the board's TPM holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvArea {
    /// The certificate chain (`cert_nv_index`).
    Chain,
    /// The provisioning settings (`settings_nv_index`).
    Settings,
}

impl NvArea {
    pub fn describe(self) -> &'static str {
        match self {
            NvArea::Chain => "the certificate chain",
            NvArea::Settings => "the provisioning settings",
        }
    }
}

/// What went wrong with a TPM, in words for the operator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TpmError {
    #[error(
        "the board's TPM ({tcti}) cannot be reached: {reason}: check the board is seated and its TPM bridge is connected"
    )]
    Unreachable { tcti: String, reason: String },
    #[error(
        "the board's TPM already holds a key at handle {handle:#010x}: the board was provisioned before; clear it (tpm2_evictcontrol -c {handle:#010x}) or set another key_handle"
    )]
    HandleInUse { handle: u32 },
    #[error(
        "the board's TPM already has NV index {index:#010x} defined with other data: clear it (tpm2_nvundefine {index:#010x}) or set another cert_nv_index or settings_nv_index"
    )]
    NvIndexDefined { index: u32 },
    #[error(
        "the board's TPM is in dictionary-attack lockout and refuses to work: wait for the lockout to end or reset it with the lockout authorisation, then retry"
    )]
    Lockout,
    #[error("this station was built without TPM support: rebuild it with `--features tpm`")]
    NotBuilt,
    #[error("the board's TPM failed to {what}: {reason}")]
    Failed { what: String, reason: String },
}

impl TpmError {
    /// A stable name for the board record.
    pub fn code(&self) -> &'static str {
        match self {
            TpmError::Unreachable { .. } => "tpm_unreachable",
            TpmError::HandleInUse { .. } => "tpm_handle_in_use",
            TpmError::NvIndexDefined { .. } => "tpm_nv_defined",
            TpmError::Lockout => "tpm_lockout",
            TpmError::NotBuilt => "tpm_not_built",
            TpmError::Failed { .. } => "tpm_failed",
        }
    }
}

/// A board's TPM. Every call blocks (run it on a blocking thread); calls
/// to one TPM are served one at a time.
pub trait BoardTpm: Send + Sync {
    /// What it is, for logs (`swtpm:host=127.0.0.1,port=2321`).
    fn describe(&self) -> String;

    /// Creates a P-256 ECDSA signing key under the storage primary key and
    /// persists it at the slot's `key_handle`; returns its public key as an
    /// uncompressed SEC1 point (65 bytes). A key already at the handle is
    /// [`TpmError::HandleInUse`].
    fn create_key(&self) -> Result<Vec<u8>, TpmError>;

    /// The public key of the key at `key_handle` (uncompressed SEC1).
    fn public_key(&self) -> Result<Vec<u8>, TpmError>;

    /// Signs a SHA-256 digest with the key at `key_handle`; returns the
    /// ECDSA signature DER-encoded.
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError>;

    /// Defines the NV index of `area` (owner authorisation, exactly
    /// `data.len()` bytes) and writes `data` into it. An index already
    /// defined that holds exactly `data` is fine (a resumed board); one
    /// holding anything else is [`TpmError::NvIndexDefined`].
    fn write_nv(&self, area: NvArea, data: &[u8]) -> Result<(), TpmError>;

    /// Reads all of the NV index of `area`.
    fn read_nv(&self, area: NvArea) -> Result<Vec<u8>, TpmError>;

    /// Undefines the NV index of `area` if it is defined. The station does
    /// this only to replace what it wrote itself in an attempt that failed.
    fn clear_nv(&self, area: NvArea) -> Result<(), TpmError>;

    /// The endorsement key's public part (the standard RSA 2048 EK
    /// template) as a TPM2B_PUBLIC: the 2-byte big-endian size, then the
    /// marshalled TPMT_PUBLIC.
    fn ek_public(&self) -> Result<Vec<u8>, TpmError>;
}

/// Opens the TPM of a slot with the backend this station was built with.
pub fn open(slot: &TpmSlot) -> Result<std::sync::Arc<dyn BoardTpm>, TpmError> {
    #[cfg(feature = "tpm")]
    {
        Ok(std::sync::Arc::new(esapi::EsapiTpm::open(slot)?))
    }
    #[cfg(not(feature = "tpm"))]
    {
        let _ = slot;
        Err(TpmError::NotBuilt)
    }
}

/// True when this station was built with the `tpm` feature.
pub const BUILT: bool = cfg!(feature = "tpm");
