//! Where each slot's boards get their key pair (`[[slot]] keygen`, with the
//! TPM keys), and how DPS attests them (`[dps] attestation`).

/// How a slot's boards get their key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keygen {
    /// The board makes it and sends a CSR (jig `KEYGEN`).
    Board,
    /// The board's TPM makes it; the station builds the CSR with the TPM
    /// signing.
    Tpm(TpmKeys),
    /// The station makes it, sends it to the board (jig `KEYLOAD`) and
    /// forgets it.
    Station,
}

impl Keygen {
    pub fn as_str(&self) -> &'static str {
        match self {
            Keygen::Board => "board",
            Keygen::Tpm(_) => "tpm",
            Keygen::Station => "station",
        }
    }
}

/// A TPM slot's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmKeys {
    /// The TCTI of the board's TPM; `None` for a simulated slot, which gets
    /// a swtpm of its own.
    pub tcti: Option<String>,
    pub key_handle: u32,
    pub cert_nv_index: u32,
    /// Where the provisioning settings go (endpoint, ID scope,
    /// registration id, attestation).
    pub settings_nv_index: u32,
}

pub const DEFAULT_KEY_HANDLE: u32 = 0x8101_0001;
pub const DEFAULT_CERT_NV_INDEX: u32 = 0x0150_0001;
pub const DEFAULT_SETTINGS_NV_INDEX: u32 = 0x0150_0002;

/// The slot keys that concern key generation, as written.
pub(super) struct RawKeygen<'a> {
    pub keygen: &'a str,
    pub tcti: Option<&'a str>,
    pub key_handle: Option<u32>,
    pub cert_nv_index: Option<u32>,
    pub settings_nv_index: Option<u32>,
    pub simulated: bool,
}

type Invalid = (&'static str, String);

pub(super) fn keygen(r: &RawKeygen<'_>) -> Result<Keygen, Invalid> {
    let tpm_keys = r.tcti.is_some()
        || r.key_handle.is_some()
        || r.cert_nv_index.is_some()
        || r.settings_nv_index.is_some();
    match r.keygen {
        "board" | "station" if tpm_keys => Err((
            "tcti",
            format!(
                "tcti, key_handle, cert_nv_index and settings_nv_index are for keygen = \"tpm\", not {:?}",
                r.keygen
            ),
        )),
        "board" => Ok(Keygen::Board),
        "station" => Ok(Keygen::Station),
        "tpm" => {
            let tcti = match r.tcti {
                Some(t) => Some(check_tcti(t).map_err(|e| ("tcti", e))?),
                None if r.simulated => None,
                None => {
                    return Err((
                        "tcti",
                        "a TPM slot needs the TCTI of the board's TPM, like \"device:/dev/tpmrm0\" or \"swtpm:host=127.0.0.1,port=2321\"".into(),
                    ));
                }
            };
            let key_handle = r.key_handle.unwrap_or(DEFAULT_KEY_HANDLE);
            if !(0x8100_0000..=0x817F_FFFF).contains(&key_handle) {
                return Err((
                    "key_handle",
                    format!(
                        "{key_handle:#010x} is not an owner persistent handle (0x81000000 to 0x817fffff)"
                    ),
                ));
            }
            let cert_nv_index = r.cert_nv_index.unwrap_or(DEFAULT_CERT_NV_INDEX);
            if !(0x0100_0000..=0x01FF_FFFF).contains(&cert_nv_index) {
                return Err((
                    "cert_nv_index",
                    format!("{cert_nv_index:#010x} is not an NV index (0x01000000 to 0x01ffffff)"),
                ));
            }
            let settings_nv_index = r.settings_nv_index.unwrap_or(DEFAULT_SETTINGS_NV_INDEX);
            if !(0x0100_0000..=0x01FF_FFFF).contains(&settings_nv_index) {
                return Err((
                    "settings_nv_index",
                    format!(
                        "{settings_nv_index:#010x} is not an NV index (0x01000000 to 0x01ffffff)"
                    ),
                ));
            }
            if settings_nv_index == cert_nv_index {
                return Err((
                    "settings_nv_index",
                    format!(
                        "{settings_nv_index:#010x} is also cert_nv_index: the settings need an NV index of their own"
                    ),
                ));
            }
            Ok(Keygen::Tpm(TpmKeys {
                tcti,
                key_handle,
                cert_nv_index,
                settings_nv_index,
            }))
        }
        other => Err((
            "keygen",
            format!("{other:?} is not one of \"board\", \"tpm\", \"station\""),
        )),
    }
}

pub(super) fn check_tcti(t: &str) -> Result<String, String> {
    let t = t.trim();
    let name = t.split(':').next().unwrap_or("");
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || t.chars().any(char::is_whitespace)
    {
        return Err(format!(
            "{t:?} is not a TCTI string like \"device:/dev/tpmrm0\" or \"swtpm:host=127.0.0.1,port=2321\""
        ));
    }
    Ok(t.to_string())
}

/// How DPS attests the devices (`[dps] attestation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attestation {
    /// The station's leaf certificate (individual X.509 enrollment).
    X509,
    /// The TPM's endorsement key; the registration id is the GUID, or
    /// DPS's convention (base32 of SHA-256 over the EK).
    Tpm { dps_registration_id: bool },
    /// A key derived for each device from the station's master key
    /// (`[symmetric_key]`); no certificate.
    SymmetricKey,
}

impl Attestation {
    pub fn as_str(self) -> &'static str {
        match self {
            Attestation::X509 => "x509",
            Attestation::Tpm { .. } => "tpm",
            Attestation::SymmetricKey => "symmetric_key",
        }
    }
}

pub(super) fn attestation(
    kind: &str,
    registration_id: &str,
) -> Result<Attestation, (&'static str, String)> {
    let dps_registration_id = match registration_id {
        "guid" => false,
        "dps" => true,
        other => {
            return Err((
                "dps.tpm_registration_id",
                format!("{other:?} is not \"guid\" or \"dps\""),
            ));
        }
    };
    match kind {
        "x509" if dps_registration_id => Err((
            "dps.tpm_registration_id",
            "is for attestation = \"tpm\"; an X.509 enrollment's id is the GUID".into(),
        )),
        "x509" => Ok(Attestation::X509),
        "tpm" => Ok(Attestation::Tpm {
            dps_registration_id,
        }),
        "symmetric_key" if dps_registration_id => Err((
            "dps.tpm_registration_id",
            "is for attestation = \"tpm\"; a symmetric-key device's registration id is the GUID"
                .into(),
        )),
        "symmetric_key" => Ok(Attestation::SymmetricKey),
        other => Err((
            "dps.attestation",
            format!("{other:?} is not \"x509\", \"tpm\" or \"symmetric_key\""),
        )),
    }
}
