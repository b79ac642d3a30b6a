//! Error pages for people: a request from a browser (it accepts HTML) for
//! a page, not the JSON API, that fails gets an HTML page saying what went
//! wrong in the station's words, with a way back (to the page it came
//! from, to the line, or to sign in) instead of raw JSON. The API keeps
//! its JSON errors; so does the line view's script, which asks for JSON.

use askama::Template;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use super::page::sentence;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
    /// The page the request came from, on this station, if any.
    back: Option<String>,
    sign_in: bool,
}

/// The largest error body read to find its message.
const MAX_BODY: usize = 64 * 1024;

pub async fn html_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let full = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_string());
    let wants_html = !path.starts_with("/api/")
        && path != "/events"
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    let back = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(same_station_path(req.headers().get(header::HOST)));
    let resp = next.run(req).await;
    let status = resp.status();
    if !wants_html || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/html"));
    if is_html {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .unwrap_or_default();
    let said = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string));
    let (title, message) = match status {
        StatusCode::NOT_FOUND => (
            "Not found".to_string(),
            // The router's own answer to an unknown path speaks of the API.
            said.filter(|m| !m.to_lowercase().starts_with("no such page or api path"))
                .unwrap_or_else(|| format!("There is no page at {path} on this station.")),
        ),
        StatusCode::UNAUTHORIZED => (
            "Please sign in".to_string(),
            "Your session has ended, or you are not signed in.".to_string(),
        ),
        StatusCode::FORBIDDEN => (
            "Not allowed".to_string(),
            said.unwrap_or_else(|| "Your role does not allow this.".to_string()),
        ),
        s if s.is_server_error() => (
            "The station could not do this".to_string(),
            said.unwrap_or_else(|| "See the station log.".to_string()),
        ),
        _ => (
            "That did not work".to_string(),
            said.unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string()),
        ),
    };
    let page = ErrorPage {
        title,
        message: sentence(&message),
        // Not back to the very request that failed.
        back: back.filter(|b| *b != full),
        sign_in: status == StatusCode::UNAUTHORIZED,
    };
    let Ok(html) = page.render() else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let mut r = (status, Html(html)).into_response();
    for name in [header::WWW_AUTHENTICATE, header::SET_COOKIE] {
        for v in parts.headers.get_all(&name) {
            r.headers_mut().append(name.clone(), v.clone());
        }
    }
    r
}

/// The path of a `Referer` on this station (same host), else nothing.
fn same_station_path(host: Option<&HeaderValue>) -> impl Fn(&str) -> Option<String> + '_ {
    move |referer: &str| {
        let host = host?.to_str().ok()?;
        let rest = referer
            .strip_prefix("http://")
            .or_else(|| referer.strip_prefix("https://"))?;
        let (h, path) = rest.split_at(rest.find('/')?);
        (h == host && path.starts_with('/') && !path.starts_with("//")).then(|| path.to_string())
    }
}
