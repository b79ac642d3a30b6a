//! Organisational sign-in (OpenID Connect, `[ui.oidc]`): the
//! authorization-code flow with PKCE, `state` and `nonce`, through the
//! `openidconnect` crate. [`Oidc::begin`] makes the provider's
//! authorization URL and remembers the sign-in (`pending.rs`);
//! [`Oidc::finish`] takes it back once, exchanges the code, verifies the
//! ID token (signature against the provider's published keys, issuer,
//! audience, expiry, nonce) and maps the groups claim to a station role.
//! A refusal is a [`Refusal`], in words a person can act on.
//!
//! The provider is the outside thing: it is reached over HTTP with the
//! station's reqwest client (`http.rs`). Its discovery document and keys
//! are kept for [`DISCOVERY_TTL`] and fetched again when an ID token names
//! a key the station does not know (the provider rotated its keys).
//!
//! It knows nothing of the web, the store or cookies; it never logs or
//! keeps a token, the code, or the client secret.

mod http;
mod pending;

use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, PkceCodeChallenge, RedirectUrl, RequestTokenError, Scope, SignatureVerificationError,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::OidcConfig;
use crate::store::{OrgIdentity, Role};

pub use http::check_discovery;
pub use pending::{NotPending, PENDING_MAX, PENDING_TTL, Pending, PendingLogins};

/// How long the provider's discovery document and keys are used before
/// they are fetched again.
pub const DISCOVERY_TTL: Duration = Duration::from_secs(10 * 60);

/// The ID token's claims besides the standard ones; the groups or roles
/// claim is read from here by the name `[ui.oidc] roles_claim` gives.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for OtherClaims {}

type Fields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type Client = openidconnect::Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Why a sign-in was refused. [`Refusal::message`] is what the person
/// reads; [`Refusal::reason`] what the audit trail keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The `state` is unknown, used already, expired or from another
    /// browser.
    NotPending(NotPending),
    /// The provider answered with an error (e.g. the person cancelled).
    Provider(String),
    /// The provider could not be reached or answered nonsense.
    Unreachable(String),
    /// The ID token failed a check (signature, audience, issuer, expiry,
    /// nonce); which one, in words.
    BadToken(&'static str),
    /// A verified person in no mapped group; the groups that would do.
    NoRole(Vec<String>),
    /// The station's user for this identity is disabled.
    Disabled,
    /// Too many sign-ins under way.
    Busy,
}

impl Refusal {
    /// What the person reads, with what to do.
    pub fn message(&self) -> String {
        const AGAIN: &str = "Start the sign-in again from the sign-in page.";
        match self {
            Refusal::NotPending(NotPending::Unknown) => format!(
                "This sign-in is unknown to the station or was already used. {AGAIN}"
            ),
            Refusal::NotPending(NotPending::Expired) => format!(
                "This sign-in took more than {} minutes and has expired. {AGAIN}",
                PENDING_TTL.as_secs() / 60
            ),
            Refusal::NotPending(NotPending::OtherBrowser) => format!(
                "This sign-in was started in another browser, or this browser does not keep the station's cookies. {AGAIN}"
            ),
            Refusal::Provider(e) => format!(
                "Your organisation's sign-in service did not sign you in ({e}). {AGAIN}"
            ),
            Refusal::Unreachable(_) => "The station could not reach your organisation's sign-in service. Try again in a few minutes; if it keeps happening, tell your administrator, or sign in with your badge or password.".into(),
            Refusal::BadToken(what) => format!(
                "The sign-in answer failed the station's checks ({what}), so nobody was signed in. {AGAIN} If this happens again, tell your administrator."
            ),
            Refusal::NoRole(groups) => format!(
                "Your organisation signed you in, but you are in none of the groups that give access to this station. Ask your administrator to add you to one of: {}.",
                groups.join(", ")
            ),
            Refusal::Disabled => "Your account on this station is disabled. Ask an administrator of the station.".into(),
            Refusal::Busy => format!(
                "Too many sign-ins are under way. Wait a few minutes, then {}",
                AGAIN.to_lowercase()
            ),
        }
    }

    /// The words the audit trail keeps.
    pub fn reason(&self) -> String {
        match self {
            Refusal::NotPending(NotPending::Unknown) => "state unknown or already used".into(),
            Refusal::NotPending(NotPending::Expired) => "sign-in expired".into(),
            Refusal::NotPending(NotPending::OtherBrowser) => "state from another browser".into(),
            Refusal::Provider(e) => format!("the provider answered: {e}"),
            Refusal::Unreachable(e) => format!("provider unreachable: {e}"),
            Refusal::BadToken(what) => format!("ID token refused: {what}"),
            Refusal::NoRole(_) => "in no mapped group".into(),
            Refusal::Disabled => "user disabled".into(),
            Refusal::Busy => "too many sign-ins under way".into(),
        }
    }
}

/// A verified person and the role their groups give.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub who: OrgIdentity,
    pub role: Role,
}

/// A refusal after the ID token was verified names the person.
#[derive(Debug, Clone)]
pub struct Refused {
    pub refusal: Refusal,
    pub who: Option<OrgIdentity>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused { refusal, who: None }
    }
}

/// What the provider sent back to the callback.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Organisational sign-in for one station.
pub struct Oidc {
    cfg: OidcConfig,
    http: reqwest::Client,
    pending: PendingLogins,
    provider: tokio::sync::Mutex<Option<(Instant, Arc<Client>)>>,
}

impl Oidc {
    pub fn new(cfg: OidcConfig) -> Result<Oidc, String> {
        Ok(Oidc {
            http: http::client()?,
            cfg,
            pending: PendingLogins::default(),
            provider: tokio::sync::Mutex::new(None),
        })
    }

    /// Starts a sign-in for the browser whose binding cookie is `browser`
    /// (a new value when it has none): the provider URL to send it to, and
    /// the cookie value to bind it with.
    pub async fn begin(&self, browser: Option<&str>) -> Result<(String, String), Refusal> {
        let client = self.client(false).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.cfg.scopes.iter().map(|s| Scope::new(s.clone())))
            .set_pkce_challenge(challenge)
            .url();
        let browser = browser
            .filter(|b| b.len() == 43)
            .map(str::to_string)
            .unwrap_or_else(|| {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(crate::random::bytes::<32>())
            });
        let now = Instant::now();
        let pending = Pending {
            browser: browser.clone(),
            nonce,
            verifier,
            started: now,
        };
        if !self.pending.insert(state.secret().clone(), pending, now) {
            return Err(Refusal::Busy);
        }
        Ok((url.to_string(), browser))
    }

    /// Finishes a sign-in: the pending one is used up whatever happens.
    pub async fn finish(
        &self,
        back: &Callback,
        browser: Option<&str>,
    ) -> Result<SignedIn, Refused> {
        let state = back
            .state
            .as_deref()
            .ok_or(Refusal::NotPending(NotPending::Unknown))?;
        let pending = self
            .pending
            .take(state, browser, Instant::now())
            .map_err(Refusal::NotPending)?;
        if let Some(e) = &back.error {
            let words = back.error_description.as_deref().unwrap_or(e);
            return Err(Refusal::Provider(words.chars().take(200).collect()).into());
        }
        let code = back
            .code
            .clone()
            .ok_or_else(|| Refusal::Provider("no authorization code".into()))?;
        let client = self.client(false).await?;
        let http = |req| http::send(self.http.clone(), req);
        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| Refusal::Unreachable(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&http)
            .await
            .map_err(token_error)?;
        let id_token = tokens
            .id_token()
            .ok_or(Refusal::BadToken("the provider sent no ID token"))?;
        let claims = match id_token.claims(&client.id_token_verifier(), &pending.nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // The provider may have rotated its keys: fetch them again
                // once.
                let fresh = self.client(true).await?;
                id_token
                    .claims(&fresh.id_token_verifier(), &pending.nonce)
                    .map_err(claims_error)?
                    .clone()
            }
            other => other.map_err(claims_error)?.clone(),
        };
        let who = OrgIdentity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            display: claims
                .email()
                .map(|e| e.to_string())
                .or_else(|| claims.preferred_username().map(|u| u.to_string()))
                .or_else(|| {
                    claims
                        .name()
                        .and_then(|n| n.get(None))
                        .map(|n| n.to_string())
                })
                .unwrap_or_else(|| claims.subject().to_string()),
        };
        let groups = groups(claims.additional_claims(), &self.cfg.roles_claim);
        match self.cfg.role_for(groups.iter().map(String::as_str)) {
            Some(role) => Ok(SignedIn { who, role }),
            None => Err(Refused {
                refusal: Refusal::NoRole(self.cfg.mapped_groups()),
                who: Some(who),
            }),
        }
    }

    /// The client made from the provider's discovery document, fetched
    /// again after [`DISCOVERY_TTL`] or when `refresh`.
    async fn client(&self, refresh: bool) -> Result<Arc<Client>, Refusal> {
        let mut kept = self.provider.lock().await;
        if let Some((at, c)) = kept.as_ref()
            && !refresh
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(c.clone());
        }
        let metadata = self.discover().await.map_err(Refusal::Unreachable)?;
        let redirect = RedirectUrl::new(self.cfg.redirect_url.clone())
            .map_err(|e| Refusal::Unreachable(format!("redirect_url: {e}")))?;
        let client = Arc::new(
            Client::from_provider_metadata(
                metadata,
                ClientId::new(self.cfg.client_id.clone()),
                Some(self.cfg.client_secret.clone()),
            )
            .set_redirect_uri(redirect),
        );
        *kept = Some((Instant::now(), client.clone()));
        Ok(client)
    }

    async fn discover(&self) -> Result<CoreProviderMetadata, String> {
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(|e| e.to_string())?;
        let http = |req| http::send(self.http.clone(), req);
        CoreProviderMetadata::discover_async(issuer, &http)
            .await
            .map_err(|e| {
                let words = http::error_words(&e);
                tracing::warn!(issuer = %self.cfg.issuer, error = %words, "the OpenID provider's discovery document could not be read");
                words
            })
    }
}

/// The groups (or roles) in the claim named `claim`: a list of strings,
/// or one string.
fn groups(claims: &OtherClaims, claim: &str) -> Vec<String> {
    match claims.claims.get(claim) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// A failed token request in words; never the response body (it may hold
/// tokens).
fn token_error<E: std::error::Error + 'static>(
    e: RequestTokenError<E, StandardErrorResponse<CoreErrorResponseType>>,
) -> Refused {
    let refusal = match e {
        RequestTokenError::ServerResponse(r) => Refusal::Provider(format!(
            "{}{}",
            r.error().as_ref(),
            r.error_description()
                .map(|d| format!(": {}", d.chars().take(200).collect::<String>()))
                .unwrap_or_default()
        )),
        RequestTokenError::Request(e) => Refusal::Unreachable(e.to_string()),
        RequestTokenError::Parse(_, _) => {
            Refusal::BadToken("the provider's token answer could not be read")
        }
        RequestTokenError::Other(o) => Refusal::Unreachable(o),
    };
    refusal.into()
}

fn claims_error(e: ClaimsVerificationError) -> Refusal {
    Refusal::BadToken(match e {
        ClaimsVerificationError::SignatureVerification(_) => "its signature does not verify",
        ClaimsVerificationError::InvalidAudience(_) => "it was issued to another application",
        ClaimsVerificationError::InvalidIssuer(_) => "it was issued by another provider",
        ClaimsVerificationError::Expired(_) => "it has expired",
        ClaimsVerificationError::InvalidNonce(_) => "it belongs to another sign-in (nonce)",
        _ => "it is not valid",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn groups_are_read_from_a_list_or_one_string() {
        let c: OtherClaims =
            serde_json::from_value(serde_json::json!({ "groups": ["a", 3, "b"], "roles": "x" }))
                .unwrap();
        assert_eq!(groups(&c, "groups"), ["a", "b"]);
        assert_eq!(groups(&c, "roles"), ["x"]);
        assert!(groups(&c, "other").is_empty());
    }

    #[test]
    fn refusals_say_what_to_do() {
        let no_role = Refusal::NoRole(vec!["sup".into(), "adm".into()]);
        assert!(
            no_role
                .message()
                .contains("Ask your administrator to add you to one of: sup, adm.")
        );
        for r in [
            Refusal::NotPending(NotPending::Unknown),
            Refusal::NotPending(NotPending::Expired),
            Refusal::NotPending(NotPending::OtherBrowser),
            Refusal::BadToken("it has expired"),
        ] {
            assert!(r.message().contains("Start the sign-in again"), "{r:?}");
        }
    }
}
