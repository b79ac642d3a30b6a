//! A real OpenID Connect provider for the sign-in tests: node's
//! oidc-provider running `tests/oidc/provider.mjs` on 127.0.0.1, killed
//! and waited for when dropped; and a person's browser at it (its
//! development login and consent pages, with the provider's cookies kept
//! by hand).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The folder scripts/test.sh installs oidc-provider in.
pub fn modules() -> PathBuf {
    let m = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/oidc-provider/node_modules");
    assert!(
        m.join("oidc-provider/package.json").exists(),
        "oidc-provider is not installed: run `npm install --prefix target/oidc-provider oidc-provider@9.13.3` (scripts/test.sh does)"
    );
    m
}

/// A free port on 127.0.0.1 (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The provider, running.
pub struct Provider {
    child: super::Child,
    pub issuer: String,
    /// Where it logs (node's warnings and errors).
    pub log: tempfile::NamedTempFile,
    /// Its stdout, kept open (a closed pipe would end it at its next line).
    _out: BufReader<std::process::ChildStdout>,
}

impl Provider {
    /// Starts a provider whose client `station` has `secret` and
    /// `redirect`; `attack` rewrites its ID tokens (see provider.mjs).
    pub fn start(secret: &str, redirect: &str, attack: Option<&str>) -> Provider {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs");
        let mut cmd = Command::new("node");
        cmd.arg(script)
            .env("OIDC_MODULES", modules())
            .env("OIDC_PORT", port.to_string())
            .env("OIDC_SECRET", secret)
            .env("OIDC_REDIRECT", redirect)
            .env("OIDC_ATTACK", attack.unwrap_or(""))
            .stdout(Stdio::piped())
            .stderr(log.reopen().unwrap());
        let mut child = super::Child(cmd.spawn().expect("node is not installed"));
        let out = child.0.stdout.take().unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(out);
        out.read_line(&mut line).unwrap();
        let issuer = line.trim().strip_prefix("ready ").map(str::to_string);
        let Some(issuer) = issuer else {
            panic!(
                "the OpenID provider did not start: {}",
                std::fs::read_to_string(log.path()).unwrap_or_default()
            );
        };
        Provider {
            child,
            issuer,
            log,
            _out: out,
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// A person's browser at the provider: its cookies, kept by hand.
#[derive(Default)]
pub struct Browser {
    jar: HashMap<String, String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap();
            if let Some((k, val)) = pair.split_once('=') {
                self.jar.insert(k.trim().to_string(), val.to_string());
            }
        }
    }

    /// Follows the provider from `url` as `login` would (the login and
    /// consent pages filled in) until it sends the browser to a URL
    /// starting with `back`; returns that URL.
    pub async fn sign_in_at_provider(&mut self, url: &str, login: &str, back: &str) -> String {
        let http = super::bare_client();
        let base = reqwest::Url::parse(url).unwrap();
        let mut next = (url.to_string(), None::<Vec<(String, String)>>);
        for _ in 0..12 {
            let req = match &next.1 {
                None => http.get(&next.0),
                Some(form) => http.post(&next.0).form(form),
            };
            let r = req
                .header("cookie", self.cookie_header())
                .send()
                .await
                .unwrap();
            self.keep(&r);
            if r.status().is_redirection() {
                let to = r.headers()["location"].to_str().unwrap();
                let to = base.join(to).unwrap().to_string();
                if to.starts_with(back) {
                    return to;
                }
                next = (to, None);
                continue;
            }
            let status = r.status();
            let html = r.text().await.unwrap();
            let action = between(&html, "action=\"", "\"")
                .unwrap_or_else(|| panic!("no form at the provider ({status}): {html}"));
            let action = base
                .join(&action.replace("&amp;", "&"))
                .unwrap()
                .to_string();
            let form = if html.contains("value=\"login\"") {
                vec![
                    ("prompt".into(), "login".into()),
                    ("login".into(), login.into()),
                    ("password".into(), "any password".into()),
                ]
            } else {
                vec![("prompt".into(), "consent".into())]
            };
            next = (action, Some(form));
        }
        panic!("the provider never sent the browser back to {back}");
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let at = text.find(start)? + start.len();
    text[at..].split(end).next()
}
