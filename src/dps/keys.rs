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
    fn key_id(&self) -> Result<String, String>;
    /// The keys of an enrollment group whose devices' keys these are
    /// (base64): the master key itself, which only a key file can give.
    fn group_keys(&self) -> Result<(Zeroizing<String>, Zeroizing<String>), String>;
}

/// What a queued symmetric-key enrollment carries instead of its keys,
/// filled in just before it is sent: not base64, so DPS refuses it rather
/// than making keys of its own if it were ever sent unfilled.
pub const KEY_PLACEHOLDER: &str = "(derived when sent)";

/// The placeholder, naming the master key the board's key came from, so
/// that an enrollment is never sent with keys of another master key.
pub fn placeholder(master_key_id: Option<&str>) -> String {
    match master_key_id {
        Some(id) => format!("{KEY_PLACEHOLDER} master key {id}"),
        None => KEY_PLACEHOLDER.to_string(),
    }
}

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
    if let Some(was) = body["attestation"]["symmetricKey"]["primaryKey"]
        .as_str()
        .and_then(|p| p.strip_prefix(KEY_PLACEHOLDER))
        .and_then(|p| p.strip_prefix(" master key "))
    {
        let now = keys.key_id()?;
        if was != now {
            return Err(format!(
                "the board was given its key under master key {was}, and the station's master key is now {now}: an enrollment with the new key's keys would not match the board; put the old master key back ([symmetric_key]) and retry"
            ));
        }
    }
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
    fn key_id(&self) -> Result<String, String> {
        Ok(hex::encode(&hmac(&self.0, b"station master key id")[..8]))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(id: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "registrationId": "0a1b2c3d-0000-4000-8000-000000000001",
            "attestation": {"type": "symmetricKey", "symmetricKey": {
                "primaryKey": placeholder(id), "secondaryKey": placeholder(id)}}
        })
    }

    #[test]
    fn keys_are_put_in_only_under_the_master_key_the_board_got_its_key_from() {
        let keys = FixedKeys(Zeroizing::new(vec![7; 32]));
        let id = keys.key_id().unwrap();
        let mut body = queued(Some(&id));
        fill_keys(&mut body, &keys).unwrap();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let primary = b64.encode(
            keys.derive("0a1b2c3d-0000-4000-8000-000000000001")
                .unwrap()
                .as_slice(),
        );
        assert_eq!(body["attestation"]["symmetricKey"]["primaryKey"], primary);
        assert_ne!(body["attestation"]["symmetricKey"]["secondaryKey"], primary);

        let other = FixedKeys(Zeroizing::new(vec![8; 32]));
        let mut body = queued(Some(&id));
        let e = fill_keys(&mut body, &other).unwrap_err();
        assert!(
            e.contains(&id) && e.contains("put the old master key back"),
            "{e}"
        );
        assert!(
            body.to_string().contains(KEY_PLACEHOLDER),
            "nothing was filled"
        );

        // Bodies of other attestations are left alone.
        let mut x509 = serde_json::json!({"attestation": {"type": "x509"}});
        fill_keys(&mut x509, &other).unwrap();
        assert_eq!(x509, serde_json::json!({"attestation": {"type": "x509"}}));
    }
}
