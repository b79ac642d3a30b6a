//! The symmetric keys of devices with `[dps] attestation =
//! "symmetric_key"`: each is derived from the station's master key when it
//! is needed (to write it to the board, to check the board's proof, to
//! put it in the device's enrollment) and dropped after; none is stored.

use zeroize::Zeroizing;

/// Derives each device's keys from the station's master key (in its
/// custody: a file, or a PKCS#11 token that never gives it out).
pub trait DeviceKeys: Send + Sync {
    /// The device's primary key: HMAC-SHA256 of the registration id under
    /// the master key (what DPS derives from a group key).
    fn derive(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String>;
    /// The device's secondary key, for its enrollment's `secondaryKey`.
    fn derive_secondary(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String>;
    /// A non-secret name of the master key, recorded with each device.
    fn key_id(&self) -> String;
    /// The keys of an enrollment group whose devices' keys these are
    /// (base64): the master key itself, which only a key file can give.
    fn group_keys(&self) -> Result<(Zeroizing<String>, Zeroizing<String>), String>;
}

/// What a queued symmetric-key enrollment carries instead of its keys,
/// filled in just before it is sent: not base64, so DPS refuses it rather
/// than making keys of its own if it were ever sent unfilled.
pub const KEY_PLACEHOLDER: &str = "(derived when sent)";

/// Puts the device's derived keys into a symmetric-key enrollment body in
/// place of the placeholders. Other bodies are left as they are.
pub fn fill_keys(body: &mut serde_json::Value, keys: &dyn DeviceKeys) -> Result<(), String> {
    use base64::Engine;
    if body["attestation"]["type"] != "symmetricKey" {
        return Ok(());
    }
    let id = body["registrationId"]
        .as_str()
        .ok_or("the enrollment has no registrationId")?
        .to_string();
    let b64 = base64::engine::general_purpose::STANDARD;
    let primary = Zeroizing::new(b64.encode(keys.derive(&id)?.as_slice()));
    let secondary = Zeroizing::new(b64.encode(keys.derive_secondary(&id)?.as_slice()));
    body["attestation"]["symmetricKey"] = serde_json::json!({
        "primaryKey": primary.as_str(),
        "secondaryKey": secondary.as_str(),
    });
    Ok(())
}

/// A fixed in-memory master key, for tests of everything around the
/// custody backends (which have their own tests).
pub struct FixedKeys(pub Zeroizing<Vec<u8>>);

fn hmac(key: &[u8], msg: &[u8]) -> Zeroizing<[u8; 32]> {
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), msg);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(tag.as_ref());
    out
}

impl DeviceKeys for FixedKeys {
    fn derive(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        Ok(hmac(&self.0, registration_id.as_bytes()))
    }
    fn derive_secondary(&self, registration_id: &str) -> Result<Zeroizing<[u8; 32]>, String> {
        let second = hmac(&self.0, b"secondary master key");
        Ok(hmac(second.as_slice(), registration_id.as_bytes()))
    }
    fn key_id(&self) -> String {
        hex::encode(&hmac(&self.0, b"station master key id")[..8])
    }
    fn group_keys(&self) -> Result<(Zeroizing<String>, Zeroizing<String>), String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let second = hmac(&self.0, b"secondary master key");
        Ok((
            Zeroizing::new(b64.encode(self.0.as_slice())),
            Zeroizing::new(b64.encode(second.as_slice())),
        ))
    }
}
