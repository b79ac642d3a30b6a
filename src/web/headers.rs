//! The browser protections every response carries: a Content-Security-
//! Policy that allows only the station's own scripts and stylesheets (no
//! inline script, no inline style), no framing, no content sniffing, a
//! referrer only within the station (so an error page can link back to
//! the page a person came from; never to another site), no caching of anything but the static files and the CRL, and
//! HSTS when the station serves HTTPS.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;

/// The policy: everything from the station itself, nothing inline, no
/// plug-ins, no framing, forms only to the station (and to the sign-in
/// provider, whose origin [`policy`] adds).
pub fn policy(form_targets: &[String]) -> String {
    let mut form_action = String::from("'self'");
    for t in form_targets {
        form_action.push(' ');
        form_action.push_str(t);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    )
}

/// HSTS for a station on HTTPS: a year; browsers that saw it refuse plain
/// HTTP to the station's name (and offer no click-through on a bad
/// certificate).
const HSTS: &str = "max-age=31536000";

/// Adds the headers to every response, whatever answered it (pages, the
/// API, errors, the fallback).
pub async fn protect(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let cacheable = {
        let p = req.uri().path();
        p.starts_with("/static/") || p == "/crl"
    };
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&s.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if cacheable {
        // Revalidated each time: a new station version's files are seen.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        // Pages and answers show people and devices: kept nowhere.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if s.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_nothing_inline_and_forms_only_where_named() {
        let p = policy(&[]);
        assert!(!p.contains("unsafe-inline") && !p.contains("unsafe-eval"));
        assert!(p.contains("script-src 'self';") && p.contains("style-src 'self';"));
        assert!(p.contains("frame-ancestors 'none'"));
        assert!(p.contains("form-action 'self';"));
        let p = policy(&["https://login.example.com".into()]);
        assert!(p.contains("form-action 'self' https://login.example.com;"));
    }
}
