//! What the TSS's answers and the slot's TCTI string mean for the
//! operator: the raw TSS2_RC recovered from a tss-esapi error, its layer
//! and base code in words, the mapping to [`TpmError`], and the check of a
//! TCTI string before libtss2 reads it. Knows no context and no TPM
//! operation.

use std::str::FromStr;

use tss_esapi::constants::{Tss2ResponseCode, Tss2ResponseCodeKind};
use tss_esapi::tcti_ldr::TctiNameConf;

use crate::tpm::TpmError;

/// The TSS layer of TCTI response codes (bits 16..23 of a TSS2_RC).
const TCTI_LAYER: u32 = 10;

/// Checks a TCTI string before tss-esapi reads it: tss-esapi and libtss2
/// silently ignore keys they do not know and fall back to
/// `localhost:2321`, which would quietly reach some other board's TPM.
pub(super) fn parse_tcti(tcti: &str) -> Result<TctiNameConf, TpmError> {
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
pub(super) fn kind(e: tss_esapi::Error) -> Option<Tss2ResponseCodeKind> {
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
pub(super) fn map_error(tcti: &str, what: &str, e: tss_esapi::Error) -> TpmError {
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
}
