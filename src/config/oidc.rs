//! `[ui.oidc]`: organisational sign-in (OpenID Connect) for supervisors,
//! admins and activators. The provider's issuer, the station's client id
//! and the URL the provider sends people back to, the scopes, and which
//! groups (or roles) of the provider's claim make which station role. The
//! client secret is never in the file: it is read from the environment
//! variable `client_secret_env` names, and never shown (its `Debug` is
//! redacted). It checks the settings; it does not reach the provider.

use std::collections::BTreeMap;

use openidconnect::ClientSecret;
use openidconnect::url::Url;
use serde::Deserialize;

use crate::store::Role;

/// The variable the client secret is read from unless `client_secret_env`
/// names another.
pub const OIDC_SECRET_ENV: &str = "STATION_OIDC_CLIENT_SECRET";

/// The path the provider sends people back to; `redirect_url` must end
/// with it.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    issuer: String,
    client_id: String,
    #[serde(default = "default_secret_env")]
    client_secret_env: String,
    redirect_url: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
}

fn default_secret_env() -> String {
    OIDC_SECRET_ENV.into()
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}

fn default_roles_claim() -> String {
    "groups".into()
}

/// `[ui.oidc]`, validated.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The provider's issuer URL, as written (its discovery document must
    /// state exactly this).
    pub issuer: String,
    pub client_id: String,
    /// From the environment; its `Debug` shows `[redacted]`.
    pub client_secret: ClientSecret,
    /// The variable it came from, for messages and the config view.
    pub client_secret_env: String,
    /// Where the provider sends people back, as written (registered with
    /// it, character for character).
    pub redirect_url: String,
    /// Scopes asked for besides `openid` (which is always asked).
    pub scopes: Vec<String>,
    /// The ID token claim that lists the person's groups or roles.
    pub roles_claim: String,
    /// The station role each group gives, in the order the file lists
    /// them; a person in several gets the highest role.
    pub roles: Vec<(String, Role)>,
}

impl OidcConfig {
    /// The station role a person with these groups gets: the highest any
    /// of them maps to; `None` when none is mapped.
    pub fn role_for<'a>(&self, groups: impl IntoIterator<Item = &'a str>) -> Option<Role> {
        groups
            .into_iter()
            .filter_map(|g| {
                self.roles
                    .iter()
                    .find(|(name, _)| name == g)
                    .map(|(_, r)| *r)
            })
            .max()
    }

    /// The mapped groups, for people to read ("ask to be added to one of").
    pub fn mapped_groups(&self) -> Vec<String> {
        self.roles.iter().map(|(g, _)| g.clone()).collect()
    }

    /// The mapping as `role -> [groups]`, for the config view.
    pub fn mapping(&self) -> BTreeMap<&'static str, Vec<&str>> {
        let mut m: BTreeMap<&'static str, Vec<&str>> = BTreeMap::new();
        for (g, r) in &self.roles {
            m.entry(r.as_str()).or_default().push(g);
        }
        m
    }
}

type Invalid = (&'static str, String);

/// `[ui.oidc]` into [`OidcConfig`]; `env` looks up environment variables
/// (the client secret).
pub(super) fn oidc_config(
    raw: Option<&RawOidc>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OidcConfig>, Invalid> {
    let Some(raw) = raw else { return Ok(None) };
    let issuer = web_url(&raw.issuer).map_err(|r| ("ui.oidc.issuer", r))?;
    if issuer.query().is_some() || issuer.fragment().is_some() {
        return Err((
            "ui.oidc.issuer",
            format!("{:?}: an issuer URL has no query or fragment", raw.issuer),
        ));
    }
    if raw.client_id.trim().is_empty() {
        return Err(("ui.oidc.client_id", "must not be empty".into()));
    }
    let redirect_url = web_url(&raw.redirect_url).map_err(|r| ("ui.oidc.redirect_url", r))?;
    if !redirect_url.path().ends_with(CALLBACK_PATH) || redirect_url.query().is_some() {
        return Err((
            "ui.oidc.redirect_url",
            format!(
                "{:?} must be the station's public address followed by {CALLBACK_PATH}, e.g. \"https://station-01.plant.example{CALLBACK_PATH}\"",
                raw.redirect_url
            ),
        ));
    }
    let var = raw.client_secret_env.trim();
    if var.is_empty() {
        return Err((
            "ui.oidc.client_secret_env",
            "must name an environment variable".into(),
        ));
    }
    let secret = env(var).filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        (
            "ui.oidc.client_secret_env",
            format!(
                "the environment variable {var} is not set: put the client secret the provider gave the station there (never in the file)"
            ),
        )
    })?;
    if raw
        .scopes
        .iter()
        .any(|s| s.trim().is_empty() || s.contains(' '))
    {
        return Err((
            "ui.oidc.scopes",
            "each scope is one word, e.g. [\"openid\", \"profile\", \"email\"]".into(),
        ));
    }
    if raw.roles_claim.trim().is_empty() {
        return Err((
            "ui.oidc.roles_claim",
            "must name the ID token claim that lists groups or roles, e.g. \"groups\"".into(),
        ));
    }
    let mut roles = Vec::new();
    for (name, groups) in &raw.roles {
        let role: Role = name.parse().map_err(|e| ("ui.oidc.roles", e))?;
        if role == Role::Operator {
            return Err((
                "ui.oidc.roles",
                "operator cannot be given by organisational sign-in: operators sign in at the line with their badge and PIN".into(),
            ));
        }
        for g in groups {
            if g.trim().is_empty() {
                return Err(("ui.oidc.roles", format!("{name}: a group name is empty")));
            }
            if roles.iter().any(|(x, _): &(String, Role)| x == g) {
                return Err((
                    "ui.oidc.roles",
                    format!("the group {g:?} is mapped twice: give each group one role"),
                ));
            }
            roles.push((g.clone(), role));
        }
    }
    if roles.is_empty() {
        return Err((
            "ui.oidc.roles",
            "no group is mapped to a role, so nobody could sign in: add e.g. supervisor = [\"station-supervisors\"]".into(),
        ));
    }
    let scopes = raw
        .scopes
        .iter()
        .filter(|s| s.as_str() != "openid")
        .cloned()
        .collect();
    Ok(Some(OidcConfig {
        issuer: raw.issuer.trim().to_string(),
        client_id: raw.client_id.trim().to_string(),
        client_secret: ClientSecret::new(secret),
        client_secret_env: var.to_string(),
        redirect_url: raw.redirect_url.trim().to_string(),
        scopes,
        roles_claim: raw.roles_claim.trim().to_string(),
        roles,
    }))
}

/// An absolute `https` URL; plain `http` only to this machine (tests, a
/// provider on the same PC).
fn web_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| {
        format!("{text:?} is not an absolute URL ({e}), e.g. \"https://login.example.com/realm\"")
    })?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(format!(
            "{text:?} must be an https URL (plain http only on this machine)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const GOOD: &str = r#"
issuer = "https://login.example.com/realms/plant"
client_id = "station-01"
redirect_url = "https://station-01.plant.example/login/oidc/callback"
[roles]
supervisor = ["line-supervisors"]
admin = ["station-admins"]
activator = ["builders", "service"]
"#;

    fn parse(text: &str, secret: Option<&str>) -> Result<Option<OidcConfig>, Invalid> {
        let raw: RawOidc = toml::from_str(text).unwrap();
        let secret = secret.map(str::to_string);
        oidc_config(Some(&raw), &move |k| {
            (k == OIDC_SECRET_ENV).then(|| secret.clone()).flatten()
        })
    }

    fn refused(edit: impl Fn(&str) -> String) -> (&'static str, String) {
        parse(&edit(GOOD), Some("s3cret")).unwrap_err()
    }

    #[test]
    fn a_good_table_is_read_and_the_secret_is_not_shown() {
        let c = parse(GOOD, Some("s3cret")).unwrap().unwrap();
        assert_eq!(c.client_secret.secret(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.scopes, ["profile", "email"]);
        assert_eq!(c.roles_claim, "groups");
        assert_eq!(c.role_for(["builders"]), Some(Role::Activator));
        assert_eq!(
            c.role_for(["builders", "line-supervisors", "x"]),
            Some(Role::Supervisor)
        );
        assert_eq!(c.role_for(["x", "y"]), None);
        assert_eq!(c.mapping()["activator"], ["builders", "service"]);
        assert_eq!(
            parse(GOOD, Some("s")).unwrap().unwrap().client_secret_env,
            OIDC_SECRET_ENV
        );
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                GOOD.replace(
                    "https://login.example.com/realms/plant",
                    "login.example.com",
                ),
                "ui.oidc.issuer",
                "not an absolute URL",
            ),
            (
                GOOD.replace("https://login.example.com", "http://login.example.com"),
                "ui.oidc.issuer",
                "https",
            ),
            (
                GOOD.replace(
                    "https://station-01.plant.example/login/oidc/callback",
                    "/login/oidc/callback",
                ),
                "ui.oidc.redirect_url",
                "not an absolute URL",
            ),
            (
                GOOD.replace("/login/oidc/callback", "/callback"),
                "ui.oidc.redirect_url",
                CALLBACK_PATH,
            ),
            (
                GOOD.replace("admin = [", "boss = ["),
                "ui.oidc.roles",
                "is not a role",
            ),
            (
                GOOD.replace("admin = [", "operator = ["),
                "ui.oidc.roles",
                "badge and PIN",
            ),
            (
                GOOD.replace("[\"station-admins\"]", "[\"line-supervisors\"]"),
                "ui.oidc.roles",
                "mapped twice",
            ),
            (
                GOOD.replace("client_id = \"station-01\"", "client_id = \"\""),
                "ui.oidc.client_id",
                "empty",
            ),
            (
                format!("scopes = [\"openid email\"]\n{GOOD}"),
                "ui.oidc.scopes",
                "one word",
            ),
        ];
        for (text, key, words) in cases {
            let (k, reason) = refused(|_| text.clone());
            assert_eq!(k, key, "{reason}");
            assert!(reason.contains(words), "{key}: {reason}");
        }
        let no_roles = GOOD.split("[roles]").next().unwrap().to_string();
        assert_eq!(refused(|_| no_roles.clone()).0, "ui.oidc.roles");
    }

    #[test]
    fn the_secret_must_be_in_the_environment() {
        let (k, reason) = parse(GOOD, None).unwrap_err();
        assert_eq!(k, "ui.oidc.client_secret_env");
        assert!(reason.contains(OIDC_SECRET_ENV), "{reason}");
        let other = format!("client_secret_env = \"MY_SECRET\"\n{GOOD}");
        let (k, reason) = parse(&other, Some("s3cret")).unwrap_err();
        assert_eq!(k, "ui.oidc.client_secret_env");
        assert!(reason.contains("MY_SECRET"), "{reason}");
    }

    #[test]
    fn the_secret_cannot_be_written_in_the_file() {
        let text = format!("client_secret = \"s3cret\"\n{GOOD}");
        assert!(toml::from_str::<RawOidc>(&text).is_err());
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        let local = GOOD
            .replace("https://login.example.com", "http://127.0.0.1:9000")
            .replace("https://station-01.plant.example", "http://localhost:8080");
        assert!(parse(&local, Some("s")).unwrap().is_some());
    }
}
