//! The provider over HTTP: `openidconnect` takes any async function from
//! an `http::Request` to an `http::Response`; this is one over the
//! station's reqwest client (rustls with ring), so the build holds one
//! reqwest. Redirects are not followed (the OAuth 2.0 security advice),
//! every call has a time limit, and nothing of a request or answer is
//! logged (they carry the code, the client secret and tokens).

use std::time::Duration;

use openidconnect::{HttpRequest, HttpResponse};

/// How long one call to the provider may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A call to the provider that failed, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// The client for the provider.
pub(super) fn client() -> Result<reqwest::Client, String> {
    // ring is the only TLS crypto provider built in; installing it twice
    // is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("provisioning-station/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up HTTPS for the OpenID provider: {e}"))
}

/// Sends one request for `openidconnect`.
pub(super) async fn send(
    http: reqwest::Client,
    request: HttpRequest,
) -> Result<HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let answer = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(error_words(&e)))?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer
        .bytes()
        .await
        .map_err(|e| HttpError(error_words(&e)))?;
    let mut out = HttpResponse::new(body.to_vec());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// An error with its causes (connection refused, TLS, timeout).
pub(super) fn error_words(e: &dyn std::error::Error) -> String {
    let mut words = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        words.push_str(&format!(": {s}"));
        source = s.source();
    }
    words
}

/// For `station check`: fetches the provider's discovery document and
/// keys; `Ok` with what it found, or the problem in words.
pub async fn check_discovery(cfg: &crate::config::OidcConfig) -> Result<String, String> {
    let oidc = super::Oidc::new(cfg.clone())?;
    let metadata = oidc.discover().await?;
    Ok(format!(
        "organisational sign-in: {} answers, {} signing key(s)",
        metadata.issuer().as_str(),
        metadata.jwks().keys().len()
    ))
}
