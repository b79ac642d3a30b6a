//! How the DPS client gets through a corporate network: extra trust
//! anchors (`[dps] ca_file`, added to the built-in roots), an HTTP CONNECT
//! proxy (`[dps] proxy`, or HTTPS_PROXY with NO_PROXY), and what a failed
//! connection means, in words an operator can act on: a TLS failure named
//! by its certificate problem, a proxy that refuses or cannot be reached.
//!
//! Builds the `reqwest` client; knows nothing of the outbox or the store.

use std::error::Error as StdError;
use std::path::PathBuf;

use super::DpsError;

/// The network settings of the DPS client, validated (`[dps] ca_file`,
/// `[dps] proxy`, HTTPS_PROXY, NO_PROXY).
#[derive(Debug, Clone, Default)]
pub struct DpsNet {
    /// `[dps] ca_file`, as configured (for the config view).
    pub ca_file: Option<PathBuf>,
    /// Its certificates (DER), trusted besides the built-in roots, for
    /// DPS calls only.
    pub ca_certificates: Vec<Vec<u8>>,
    /// The CONNECT proxy for DPS calls, if any.
    pub proxy: Option<ProxyUrl>,
    /// Where the proxy came from: `dps.proxy`, `HTTPS_PROXY` or
    /// `https_proxy`.
    pub proxy_from: Option<&'static str>,
    /// NO_PROXY (or no_proxy): hosts reached without the proxy.
    pub no_proxy: Option<String>,
}

/// An `http://[user:password@]host:port` proxy. Its `Debug` and
/// [`ProxyUrl::shown`] leave out the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    url: String,
    shown: String,
    credentials: bool,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

impl ProxyUrl {
    /// Parses `http://[user[:password]@]host:port[/]`; with `lenient`
    /// (the environment variables, as curl reads them) the `http://` may
    /// be left out. The reason for a refusal never repeats a password.
    pub fn parse(text: &str, lenient: bool) -> Result<ProxyUrl, String> {
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "a proxy is reached over plain http (http://host:port), not {scheme:?}: the connection to DPS inside the tunnel is TLS all the same"
                ));
            }
            None if lenient => text,
            None => return Err("is not a URL like http://proxy.example.com:3128".into()),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let shown = format!("http://{hostport}");
        let bad = || {
            format!(
                "{shown:?} is not http://host:port (a host name or IP address and a port; no path)"
            )
        };
        if hostport.contains(['/', '?', '#', ' ']) {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once("]:").ok_or_else(bad)?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            (h, p)
        } else {
            hostport.rsplit_once(':').ok_or_else(bad)?
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
        if !host_ok || !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(bad());
        }
        if userinfo.is_some_and(|u| u.is_empty() || u.starts_with(':')) {
            return Err(format!("{shown:?}: the proxy's user name is empty"));
        }
        Ok(ProxyUrl {
            url: format!(
                "http://{}{hostport}",
                userinfo.map(|u| format!("{u}@")).unwrap_or_default()
            ),
            shown,
            credentials: userinfo.is_some(),
        })
    }

    /// `http://host:port`, without any user name or password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// True when the URL carries a user name (and password) for the proxy.
    pub fn has_credentials(&self) -> bool {
        self.credentials
    }
}

/// Reads `[dps] ca_file`: PEM with one or more certificates, each of which
/// must parse. The reason names what is wrong with the file.
pub fn read_ca_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = crate::ca::chain::pem_certificates(&text);
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate: it must be PEM (-----BEGIN CERTIFICATE-----), your proxy's or private CA's certificate",
            path.display()
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        if x509_parser::parse_x509_certificate(der).is_err() {
            return Err(format!(
                "certificate {} in {} is not a readable X.509 certificate",
                i + 1,
                path.display()
            ));
        }
    }
    Ok(certs)
}

/// A `reqwest` client builder for DPS: the built-in roots plus
/// `ca_file`'s, and exactly the proxy configured (reqwest's own reading of
/// the environment is turned off: the configuration has read it).
pub(super) fn client_builder(net: &DpsNet) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder().no_proxy();
    if !net.ca_certificates.is_empty() {
        let certs = net
            .ca_certificates
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a certificate of [dps] ca_file cannot be used: {e}"))?;
        builder = builder.tls_certs_merge(certs);
    }
    if let Some(p) = &net.proxy {
        let no_proxy = net
            .no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string);
        let proxy = reqwest::Proxy::https(&p.url)
            .map_err(|e| format!("the proxy {} cannot be used: {e}", p.shown))?
            .no_proxy(no_proxy);
        builder = builder.proxy(proxy);
    }
    Ok(builder)
}

/// Every error in `e`'s chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap, where rustls's hides).
fn chain<'a>(e: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = vec![e];
    let mut cur = e;
    while out.len() < 32 {
        let inner = cur
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn StdError + 'static));
        match inner.or_else(|| cur.source()) {
            Some(next) => {
                out.push(next);
                cur = next;
            }
            None => break,
        }
    }
    out
}

/// What a request that got no HTTP answer means, for an operator.
pub(super) fn explain(e: reqwest::Error, base: &str, proxy: Option<&ProxyUrl>) -> DpsError {
    let causes = chain(&e);
    if let Some(tls) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>())
    {
        return DpsError::Tls(format!("{} ({base})", tls_words(tls, base)));
    }
    // hyper-util's tunnel error is not exported: it is known by its words.
    let tunnel = causes
        .iter()
        .map(|c| c.to_string())
        .find(|t| t.starts_with("tunnel error"));
    if let (Some(tunnel), Some(p)) = (tunnel, proxy) {
        let p = p.shown();
        return if tunnel.contains("failed to create underlying connection") {
            let why = causes
                .last()
                .map(|c| c.to_string())
                .unwrap_or_else(|| tunnel.clone());
            DpsError::Network(format!(
                "the proxy at {p} cannot be reached ({why}): check `[dps] proxy` (or HTTPS_PROXY) and that the proxy is running ({base})"
            ))
        } else if tunnel.contains("authorization required") {
            DpsError::Proxy(format!(
                "the proxy at {p} refused the connection to DPS (407: it wants credentials): put them in `[dps] proxy` as http://user:password@host:port ({base})"
            ))
        } else if tunnel.contains("unsuccessful") {
            DpsError::Proxy(format!(
                "the proxy at {p} refused to open a tunnel to DPS (403 or similar): ask for CONNECT to the DPS host on port 443 to be allowed ({base})"
            ))
        } else {
            DpsError::Proxy(format!(
                "the proxy at {p} broke off the tunnel to DPS ({tunnel}) ({base})"
            ))
        };
    }
    let what = if e.is_timeout() {
        "no answer in time".to_string()
    } else if e.is_connect() {
        "the connection was refused or failed (is the factory network up?)".to_string()
    } else {
        // Without the URL: it is ours, and the message stays short.
        e.without_url().to_string()
    };
    DpsError::Network(format!("{what} ({base})"))
}

/// The certificate problem and its fix.
fn tls_words(e: &rustls::Error, base: &str) -> String {
    use rustls::CertificateError as C;
    let host = base
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(base);
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "DPS's certificate is issued by an unknown CA: set `[dps] ca_file` to your proxy's CA"
                    .to_string()
            }
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
                "DPS's certificate is expired or not yet valid by the station's clock: check the station's date and time (`timedatectl`); if the clock is right, the certificate (or your proxy's) must be renewed".to_string()
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => format!(
                "DPS's certificate is for another name than {host}: a proxy is intercepting the connection with a certificate of its own; check `[dps] endpoint`, and ask for DPS to be exempt from inspection or for the proxy's certificate to name the host"
            ),
            other => format!(
                "DPS's certificate is refused ({other:?}): check `[dps] ca_file` and what stands between the station and DPS"
            ),
        },
        other => format!(
            "the TLS connection to DPS failed ({other}): a proxy or firewall may be interfering; check `[dps] proxy` and `[dps] ca_file`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_are_http_host_port_and_hide_their_credentials() {
        let p = ProxyUrl::parse("http://proxy.corp:3128/", false).unwrap();
        assert_eq!(p.shown(), "http://proxy.corp:3128");
        assert!(!p.has_credentials());
        let p = ProxyUrl::parse("http://alice:s3cret@10.0.0.1:8080", false).unwrap();
        assert_eq!(p.shown(), "http://10.0.0.1:8080");
        assert!(p.has_credentials());
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(p.url, "http://alice:s3cret@10.0.0.1:8080");
        assert_eq!(
            ProxyUrl::parse("[::1]:3128", true).unwrap().shown(),
            "http://[::1]:3128"
        );
        for bad in [
            "proxy.corp:3128",
            "https://proxy.corp:3128",
            "socks5://proxy.corp:1080",
            "http://proxy.corp",
            "http://proxy.corp:0",
            "http://proxy.corp:99999",
            "http://proxy.corp:3128/path",
            "http://:3128",
            "http://:pw@proxy.corp:3128",
        ] {
            let e = ProxyUrl::parse(bad, false).unwrap_err();
            assert!(!e.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn certificate_problems_have_their_own_words() {
        use rustls::CertificateError as C;
        let words = |c: C| tls_words(&rustls::Error::InvalidCertificate(c), "https://dps:443");
        assert_eq!(
            words(C::UnknownIssuer),
            "DPS's certificate is issued by an unknown CA: set `[dps] ca_file` to your proxy's CA"
        );
        assert!(words(C::Expired).contains("station's clock"));
        assert!(words(C::NotValidYet).contains("station's clock"));
        assert!(words(C::NotValidForName).contains("another name than dps:443"));
        assert!(words(C::NotValidForName).contains("intercepting"));
        assert!(words(C::BadSignature).contains("refused"));
        let other = tls_words(
            &rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure),
            "https://dps",
        );
        assert!(
            other.starts_with("the TLS connection to DPS failed"),
            "{other}"
        );
    }

    #[test]
    fn the_chain_looks_inside_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, tls);
        let outer = std::io::Error::other(io);
        let found = chain(&outer)
            .into_iter()
            .any(|c| c.downcast_ref::<rustls::Error>().is_some());
        assert!(found);
    }
}
