//! The DPS service connection string and its shared access signatures.
//!
//! The key never appears in `Debug`, logs or errors.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// `HostName=…;SharedAccessKeyName=…;SharedAccessKey=…`, parsed.
#[derive(Clone)]
pub struct ConnectionString {
    pub host: String,
    pub key_name: String,
    key: Vec<u8>,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ConnectionString {{ host: {:?}, key_name: {:?}, key: <hidden> }}",
            self.host, self.key_name
        )
    }
}

impl ConnectionString {
    /// Parses a connection string; errors name what is missing, never the key.
    pub fn parse(s: &str) -> Result<ConnectionString, String> {
        let (mut host, mut key_name, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("a part {:?} is not Name=value", k_only(part)))?;
            match k.trim() {
                "HostName" => host = Some(v.trim().to_string()),
                "SharedAccessKeyName" => key_name = Some(v.trim().to_string()),
                "SharedAccessKey" => key = Some(v.trim().to_string()),
                _ => {}
            }
        }
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or("it has no HostName=")?;
        let key_name = key_name
            .filter(|n| !n.is_empty())
            .ok_or("it has no SharedAccessKeyName=")?;
        let key = key.ok_or("it has no SharedAccessKey=")?;
        let key = B64
            .decode(key)
            .map_err(|_| "its SharedAccessKey is not base64 (copy it again from the DPS shared access policy)")?;
        Ok(ConnectionString {
            host: host.to_ascii_lowercase(),
            key_name,
            key,
        })
    }

    /// A SAS token for the service API, valid until `expiry` (Unix seconds).
    pub fn sas_token(&self, expiry: u64) -> String {
        sas_token(&self.host, &self.key, &self.key_name, expiry)
    }
}

fn k_only(part: &str) -> &str {
    part.split('=').next().unwrap_or("")
}

/// `SharedAccessSignature sr=…&sig=…&se=…&skn=…`: HMAC-SHA256 with the
/// decoded key over the URL-encoded resource, a newline and the expiry.
pub fn sas_token(resource: &str, key: &[u8], key_name: &str, expiry: u64) -> String {
    let sr = url_encode(resource);
    let to_sign = format!("{sr}\n{expiry}");
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key),
        to_sign.as_bytes(),
    );
    let sig = url_encode(&B64.encode(mac.as_ref()));
    format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={}",
        url_encode(key_name)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters, with
/// upper-case hex.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer computed outside this code, with Python's standard
    /// library:
    /// ```text
    /// python3 -c 'import hmac,hashlib,base64,urllib.parse as u
    /// k=base64.b64decode(base64.b64encode(b"0123456789abcdef0123456789abcdef"))
    /// s=u.quote("mydps.azure-devices-provisioning.net",safe="")+"\n1795384833"
    /// print(u.quote(base64.b64encode(hmac.new(k,s.encode(),hashlib.sha256).digest()),safe=""))'
    /// ```
    #[test]
    fn token_matches_an_independent_computation() {
        let key = B64.encode(b"0123456789abcdef0123456789abcdef");
        let cs = ConnectionString::parse(&format!(
            "HostName=MyDps.azure-devices-provisioning.net;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey={key}"
        ))
        .unwrap();
        assert_eq!(
            cs.sas_token(1_795_384_833),
            format!(
                "SharedAccessSignature sr=mydps.azure-devices-provisioning.net&sig={}&se=1795384833&skn=provisioningserviceowner",
                KNOWN_SIG
            )
        );
    }

    const KNOWN_SIG: &str = "W380XZtcKTaSXYapk9BReXNc97DFgL0oi6PZjG0wbVs%3D";

    /// The same token from a second HMAC written here from the definition
    /// (RFC 2104 over SHA-256), not from ring::hmac.
    #[test]
    fn token_matches_a_second_hmac() {
        fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
            let mut k = [0u8; 64];
            k[..key.len()].copy_from_slice(key);
            let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
            let mut inner = pad(0x36);
            inner.extend_from_slice(msg);
            let ih = ring::digest::digest(&ring::digest::SHA256, &inner);
            let mut outer = pad(0x5c);
            outer.extend_from_slice(ih.as_ref());
            ring::digest::digest(&ring::digest::SHA256, &outer)
                .as_ref()
                .to_vec()
        }
        let key = b"another key, 31 bytes long.....";
        let resource = "127.0.0.1:4321";
        let token = sas_token(resource, key, "policy name", 1_800_000_000);
        let mac = hmac_sha256(key, b"127.0.0.1%3A4321\n1800000000");
        let sig = B64
            .encode(mac)
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(
            token,
            format!(
                "SharedAccessSignature sr=127.0.0.1%3A4321&sig={sig}&se=1800000000&skn=policy%20name"
            )
        );
    }

    #[test]
    fn connection_string_errors_never_show_the_key() {
        let e = ConnectionString::parse("HostName=x;SharedAccessKey=c2VjcmV0").unwrap_err();
        assert!(e.contains("SharedAccessKeyName"));
        let e =
            ConnectionString::parse("HostName=x;SharedAccessKeyName=p;SharedAccessKey=not*base64")
                .unwrap_err();
        assert!(!e.contains("not*base64"), "{e}");
        let cs =
            ConnectionString::parse("HostName=x;SharedAccessKeyName=p;SharedAccessKey=c2VjcmV0")
                .unwrap();
        assert!(!format!("{cs:?}").contains("c2VjcmV0"));
    }
}
