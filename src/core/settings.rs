//! The provisioning settings a board keeps for its first boot: where to
//! register (the DPS global endpoint and the instance's ID scope), under
//! which registration id, and with which attestation. Plain data, no I/O:
//! the jig protocol carries them as `SETTINGS` arguments and a TPM slot
//! keeps them in an NV index as the same `key=value` lines.

use serde::{Deserialize, Serialize};

/// What a board is told about its registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningSettings {
    /// The registration host, like `global.azure-devices-provisioning.net`.
    pub endpoint: String,
    /// The DPS instance's ID scope, like `0ne00A1B2C3`.
    pub id_scope: String,
    /// The registration id the device registers under.
    pub registration_id: String,
    /// `x509`, `tpm` or `symmetric_key`.
    pub attestation: String,
}

/// The keys, in the order they are written: the jig protocol's argument
/// names and the NV index's line keys alike.
pub const SETTINGS_KEYS: [&str; 4] = ["endpoint", "scope", "regid", "att"];

impl ProvisioningSettings {
    /// The values in the order of [`SETTINGS_KEYS`].
    pub fn values(&self) -> [&str; 4] {
        [
            &self.endpoint,
            &self.id_scope,
            &self.registration_id,
            &self.attestation,
        ]
    }

    /// Builds the settings from values looked up by key; names the first
    /// key missing.
    pub fn from_lookup<'a>(
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<ProvisioningSettings, String> {
        let need = |k: &str| {
            get(k)
                .map(str::to_string)
                .ok_or_else(|| format!("it has no {k}="))
        };
        Ok(ProvisioningSettings {
            endpoint: need("endpoint")?,
            id_scope: need("scope")?,
            registration_id: need("regid")?,
            attestation: need("att")?,
        })
    }

    /// The bytes kept in a TPM's settings NV index: one `key=value` line
    /// per setting, each ended by LF, in the order of [`SETTINGS_KEYS`].
    /// Every value is printable ASCII without spaces (checked where the
    /// settings are made), so no escaping is needed.
    pub fn to_nv(&self) -> Vec<u8> {
        let mut out = String::new();
        for (k, v) in SETTINGS_KEYS.iter().zip(self.values()) {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Reads what [`Self::to_nv`] wrote.
    pub fn from_nv(data: &[u8]) -> Result<ProvisioningSettings, String> {
        let text = std::str::from_utf8(data).map_err(|_| "it is not UTF-8 text".to_string())?;
        let lines: Vec<(&str, &str)> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once('=')
                    .ok_or_else(|| format!("{l:?} is not key=value"))
            })
            .collect::<Result<_, _>>()?;
        Self::from_lookup(|k| lines.iter().find(|(key, _)| *key == k).map(|(_, v)| *v))
    }

    /// True when every value can travel in a frame and an NV line as is:
    /// printable ASCII, no spaces, not empty.
    pub fn is_plain(&self) -> bool {
        self.values()
            .iter()
            .all(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ProvisioningSettings {
        ProvisioningSettings {
            endpoint: "global.azure-devices-provisioning.net".into(),
            id_scope: "0ne00A1B2C3".into(),
            registration_id: "6f1c2a7e-93b4-4d0e-8a51-2c7d9e0b4f13".into(),
            attestation: "tpm".into(),
        }
    }

    #[test]
    fn nv_text_round_trips_and_reads_as_documented() {
        let s = sample();
        let nv = s.to_nv();
        assert_eq!(
            String::from_utf8(nv.clone()).unwrap(),
            "endpoint=global.azure-devices-provisioning.net\nscope=0ne00A1B2C3\nregid=6f1c2a7e-93b4-4d0e-8a51-2c7d9e0b4f13\natt=tpm\n"
        );
        assert_eq!(ProvisioningSettings::from_nv(&nv).unwrap(), s);
    }

    #[test]
    fn unreadable_nv_text_is_refused_with_a_reason() {
        assert!(
            ProvisioningSettings::from_nv(b"endpoint=x\nscope=y\n")
                .unwrap_err()
                .contains("regid=")
        );
        assert!(
            ProvisioningSettings::from_nv(b"garbage")
                .unwrap_err()
                .contains("key=value")
        );
        assert!(ProvisioningSettings::from_nv(&[0xff, 0xfe]).is_err());
        let mut s = sample();
        assert!(s.is_plain());
        s.id_scope = "has space".into();
        assert!(!s.is_plain());
    }
}
