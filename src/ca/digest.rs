//! The digest a CA key held in a token or a TPM signs: below the key
//! backends, so that `key.rs` (which holds them) and the backends do not
//! import each other.

/// SHA-256 of a message, as the token and the TPM sign a digest.
pub(crate) fn sha256(msg: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, msg);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
