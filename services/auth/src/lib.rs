//! Who is calling HelpGrid: bearer tokens, minted and verified in this one place.
//!
//! A token is a JWT signed with HS256 under a shared secret (the key file). It names the
//! caller (`sub`: a responder id, a console, a dispatch system), their [`Role`], the grids
//! they may see or act in (`grids`, `["*"]` for all) and when it expires (`exp`).
//!
//! Why HS256: the status service is the only verifier and the operator (or `helpgrid-token`)
//! the only issuer, so one secret is the simplest thing that is safe; an external identity
//! provider would bring RS256/ES256 with published keys, which `jsonwebtoken` also verifies.
//!
//! - [`TokenKey`]: the secret; mints and verifies tokens.
//! - [`Identity`]: a verified caller: subject, role, [`Scope`].
//! - [`Bearer`]: for clients: attaches a token to every gRPC call.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `iss` of every HelpGrid token; tokens from another issuer are refused.
pub const ISSUER: &str = "helpgrid";
/// The `grids` entry that means every grid.
pub const ALL_GRIDS: &str = "*";
/// Shortest secret accepted: HS256 is only as strong as its key (RFC 7518 §3.2).
pub const MIN_KEY_BYTES: usize = 32;
/// Clock difference tolerated between the minting and the verifying machine.
const LEEWAY_S: u64 = 30;

/// What a caller is allowed to be. The status service's policy table says what each may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A grid worker or patrol officer: their own assignments, duty and location.
    Responder,
    /// A grid supervisor (community secretary): acts for the responders of their grids.
    Supervisor,
    /// A big-screen console: reads the incidents of its grids.
    Console,
    /// A police dispatch system: police-bound incidents.
    Dispatch,
    /// Roster administration.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Responder => "responder",
            Self::Supervisor => "supervisor",
            Self::Console => "console",
            Self::Dispatch => "dispatch",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The grids a caller may see or act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    AllGrids,
    Grids(BTreeSet<String>),
}

impl Scope {
    pub fn from_claim(grids: &[String]) -> Self {
        if grids.iter().any(|g| g == ALL_GRIDS) {
            Self::AllGrids
        } else {
            Self::Grids(grids.iter().cloned().collect())
        }
    }

    pub fn covers(&self, grid_id: &str) -> bool {
        match self {
            Self::AllGrids => true,
            Self::Grids(grids) => grids.contains(grid_id),
        }
    }

    /// Whether any of `grid_ids` is in scope (a responder covering several grids).
    pub fn covers_any<'a>(&self, grid_ids: impl IntoIterator<Item = &'a String>) -> bool {
        match self {
            Self::AllGrids => true,
            Self::Grids(grids) => grid_ids.into_iter().any(|g| grids.contains(g)),
        }
    }
}

/// The claims of a HelpGrid token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub role: Role,
    #[serde(default)]
    pub grids: Vec<String>,
    /// Seconds since the Unix epoch.
    pub iat: u64,
    pub exp: u64,
}

/// A caller whose token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
    pub scope: Scope,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the token key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token key has {len} bytes; use at least {MIN_KEY_BYTES} (helpgrid-token new-key writes one)"
    )]
    TooShort { len: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token has expired; ask for a new one")]
    Expired,
    #[error("the bearer token is not valid here ({0})")]
    Invalid(String),
    #[error("cannot sign the token: {0}")]
    Mint(String),
}

/// The shared secret: signs and verifies tokens.
pub struct TokenKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_S;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Reads the secret from `path`; surrounding whitespace (a trailing newline) is ignored.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_secret(bytes.trim_ascii())
    }

    /// A token for `subject` valid for `ttl` from now.
    pub fn mint(
        &self,
        subject: &str,
        role: Role,
        grids: &[String],
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let now = unix_now();
        self.sign(&Claims {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            role,
            grids: grids.to_vec(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs()),
        })
    }

    /// Signs `claims` as they are (tests use it for expired or odd tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| TokenError::Mint(e.to_string()))
    }

    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => {
                    TokenError::Invalid("signed with another key".into())
                }
                _ => TokenError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.sub.trim().is_empty() {
            return Err(TokenError::Invalid("the subject is empty".into()));
        }
        Ok(Identity {
            scope: Scope::from_claim(&claims.grids),
            subject: claims.sub,
            role: claims.role,
        })
    }
}

/// A gRPC client interceptor that sends `authorization: Bearer <token>` with every call:
/// `IncidentServiceClient::with_interceptor(channel, Bearer::new(&token)?)`.
/// [`Bearer::anonymous`] sends nothing (for a server running without authentication).
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(..)")
    }
}

impl Bearer {
    pub fn new(token: &str) -> Result<Self, TokenError> {
        format!("Bearer {}", token.trim())
            .parse()
            .map(|value| Self(Some(value)))
            .map_err(|_| {
                TokenError::Invalid("the token has characters a header cannot carry".into())
            })
    }

    pub fn anonymous() -> Self {
        Self(None)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> TokenKey {
        TokenKey::from_secret(SECRET).expect("a 32-byte key")
    }

    #[test]
    fn a_minted_token_verifies_to_its_subject_role_and_grids() {
        let key = key();
        let token = key
            .mint(
                "w-42",
                Role::Responder,
                &["grid-1".to_owned()],
                Duration::from_secs(60),
            )
            .expect("mint");
        let identity = key.verify(&token).expect("verify");
        assert_eq!(identity.subject, "w-42");
        assert_eq!(identity.role, Role::Responder);
        assert!(identity.scope.covers("grid-1"));
        assert!(!identity.scope.covers("grid-2"));
    }

    #[test]
    fn a_star_grants_every_grid() {
        assert!(Scope::from_claim(&["*".to_owned()]).covers("anything"));
        assert!(!Scope::from_claim(&[]).covers("anything"));
    }

    #[test]
    fn expired_foreign_and_garbled_tokens_are_refused() {
        let key = key();
        let expired = key
            .sign(&Claims {
                iss: ISSUER.into(),
                sub: "w".into(),
                role: Role::Admin,
                grids: vec![],
                iat: 1,
                exp: 2,
            })
            .expect("sign");
        assert_eq!(key.verify(&expired), Err(TokenError::Expired));
        let other = TokenKey::from_secret(b"another-key-another-key-another-key").expect("key");
        let foreign = other
            .mint("w", Role::Admin, &[], Duration::from_secs(60))
            .expect("mint");
        assert!(matches!(key.verify(&foreign), Err(TokenError::Invalid(_))));
        assert!(matches!(
            key.verify("not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
        let wrong_issuer = key
            .sign(&Claims {
                iss: "someone-else".into(),
                sub: "w".into(),
                role: Role::Admin,
                grids: vec![],
                iat: unix_now(),
                exp: unix_now() + 60,
            })
            .expect("sign");
        assert!(matches!(
            key.verify(&wrong_issuer),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            TokenKey::from_secret(b"short"),
            Err(KeyError::TooShort { len: 5 })
        ));
    }
}
