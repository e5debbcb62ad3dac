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
//! - [`TokenKey`]: the key set and the revoked sign-ins; mints and verifies tokens.
//! - [`keys`]: the key file: `kid=secret` lines, so the key can be rotated without downtime.
//! - [`revocation`]: which subjects' earlier tokens are withdrawn (a lost phone); pure.
//! - [`follower`]: keeps the revocations current from Kafka, and the keys from their file.
//! - [`telemetry`]: tokens accepted (by key id) and refused (by reason).
//! - [`Identity`]: a verified caller: subject, role, [`Scope`].
//! - [`Bearer`]: for clients: attaches a token to every gRPC call.
//!
//! A refused token is one of five things, each with its own answer ([`TokenError`]):
//! expired, revoked, foreign (an unknown key id, a retired key, another issuer), tampered
//! (the signature does not match under a key we hold: altered, or another deployment's
//! secret under the same key id) or malformed.

/// Tokens scoped by area level (city … grid) and the area registry they refer to.
pub mod areas;
pub mod follower;
pub mod keys;
pub mod revocation;
pub mod telemetry;

use crate::keys::{KeyLine, LEGACY_KID, parse_key_file};
use crate::revocation::{RevocationWatch, Revocations};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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
    /// When the token was issued (`iat`, Unix seconds): what a revocation is compared with.
    pub issued_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the token key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the token key{} has {len} bytes; use at least {MIN_KEY_BYTES} (helpgrid-token new-key writes one)",
        kid.as_ref().map(|k| format!(" {k:?}")).unwrap_or_default()
    )]
    TooShort { kid: Option<String>, len: usize },
    #[error(
        "the token key file is not valid (line {line}): {problem}; expected one `kid=secret` per line"
    )]
    Format { line: usize, problem: String },
    #[error("the token key file has no key with the id {0:?}")]
    UnknownKid(String),
}

/// Why a token was refused. The messages say what the caller can do about it, and no more
/// than is safe: never which claim or byte failed to check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token has expired; sign in again or ask for a new token")]
    Expired,
    #[error(
        "token revoked: an administrator withdrew this sign-in; sign in again with a new token"
    )]
    Revoked,
    #[error(
        "the bearer token was not issued by this deployment, or its signing key has been retired; ask an administrator for a new token"
    )]
    Foreign,
    #[error(
        "the bearer token's signature does not match its contents; send the token exactly as it was issued"
    )]
    Tampered,
    #[error(
        "the bearer token is not a HelpGrid token ({0}); send `authorization: Bearer <token>` with the token as it was issued"
    )]
    Malformed(String),
    #[error("cannot sign the token: {0}")]
    Mint(String),
}

impl TokenError {
    /// The `reason` label of [`telemetry::TOKENS_REFUSED`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Foreign => "foreign",
            Self::Tampered => "tampered",
            Self::Malformed(_) => "malformed",
            Self::Mint(_) => "mint",
        }
    }
}

/// One secret of the key set, ready to sign and verify.
struct SigningKey {
    /// `None`: the old single-secret format, whose tokens carry no `kid`.
    kid: Option<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    /// Whether this key verifies a token whose header names `kid` (none: the legacy key).
    fn verifies(&self, kid: Option<&str>) -> bool {
        self.kid.as_deref().unwrap_or(LEGACY_KID) == kid.unwrap_or(LEGACY_KID)
    }

    fn label(&self) -> String {
        self.kid.clone().unwrap_or_else(|| LEGACY_KID.to_owned())
    }
}

/// The key set: the first key signs, every key verifies the tokens that name it.
struct KeyRing {
    keys: Vec<SigningKey>,
}

impl KeyRing {
    fn new(lines: Vec<KeyLine>) -> Self {
        Self {
            keys: lines
                .into_iter()
                .map(|line| SigningKey {
                    kid: line.kid,
                    encoding: EncodingKey::from_secret(&line.secret),
                    decoding: DecodingKey::from_secret(&line.secret),
                })
                .collect(),
        }
    }

    fn kids(&self) -> Vec<String> {
        self.keys.iter().map(SigningKey::label).collect()
    }
}

/// Signs and verifies tokens: the key set of the key file (see [`keys`] for rotation), and
/// the revoked sign-ins that [`follower`] keeps current. Share it (`Arc`) between every path
/// that verifies tokens, so they all see the same revocations and keys.
pub struct TokenKey {
    ring: RwLock<Arc<KeyRing>>,
    revocations: Arc<Revocations>,
    validation: Validation,
    /// The key file, re-read by [`TokenKey::reload`] so a rotation needs no restart.
    file: Option<PathBuf>,
    /// The key file's contents as last taken, so an unchanged file is not parsed again.
    file_bytes: Mutex<Vec<u8>>,
    /// The key `mint` signs with when not the file's first.
    signing_kid: Option<String>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey(kids={:?}, ..)", self.ring().kids())
    }
}

impl TokenKey {
    /// One key without a key id: tokens carry no `kid` (the format before rotation).
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                kid: None,
                len: secret.len(),
            });
        }
        Ok(Self::from_lines(vec![KeyLine {
            kid: None,
            secret: secret.to_vec(),
        }]))
    }

    /// A key set from a key file's text (see [`keys`] for the format).
    pub fn from_key_file_text(text: &[u8]) -> Result<Self, KeyError> {
        Ok(Self::from_lines(parse_key_file(text)?))
    }

    /// Reads the key set from `path` (see [`keys`]; a file with one bare secret is the old
    /// format and still works).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = read_key_file(path)?;
        let lines = parse_key_file(&bytes)?;
        let mut key = Self::from_lines(lines);
        key.file = Some(path.to_owned());
        key.file_bytes = Mutex::new(bytes);
        Ok(key)
    }

    fn from_lines(lines: Vec<KeyLine>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = LEEWAY_S;
        Self {
            ring: RwLock::new(Arc::new(KeyRing::new(lines))),
            revocations: Arc::default(),
            validation,
            file: None,
            file_bytes: Mutex::new(Vec::new()),
            signing_kid: None,
        }
    }

    /// Signs with the key `kid` rather than the file's first (`helpgrid-token mint --kid`).
    pub fn signing_with(mut self, kid: &str) -> Result<Self, KeyError> {
        if !self.ring().keys.iter().any(|k| k.verifies(Some(kid))) {
            return Err(KeyError::UnknownKid(kid.to_owned()));
        }
        self.signing_kid = Some(kid.to_owned());
        Ok(self)
    }

    /// The key ids this key set verifies (`legacy` for tokens without one).
    pub fn kids(&self) -> Vec<String> {
        self.ring().kids()
    }

    /// The revoked sign-ins every `verify` checks; [`follower`] keeps them current.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// For a stream admitted with `identity` (a Watch, an event stream): resolves when that
    /// sign-in is revoked, so the stream can end rather than outlive the revocation.
    pub fn revocation_watch(&self, identity: &Identity) -> RevocationWatch {
        self.revocations
            .watch(&identity.subject, identity.issued_at)
    }

    /// Re-reads the key file if it changed (a rotation step, or a Kubernetes Secret update):
    /// `Ok(true)` if the key set is new. A file that does not parse leaves the keys as they
    /// were. Keys made from a secret (no file) never change.
    pub fn reload(&self) -> Result<bool, KeyError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let bytes = read_key_file(path)?;
        let mut last = self
            .file_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if *last == bytes {
            return Ok(false);
        }
        let ring = KeyRing::new(parse_key_file(&bytes)?);
        *self.ring.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        *last = bytes;
        Ok(true)
    }

    fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.ring.read().unwrap_or_else(PoisonError::into_inner))
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

    /// Signs `claims` as they are (tests use it for expired or odd tokens), with the signing
    /// key; its id goes into the header.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let ring = self.ring();
        let key = match &self.signing_kid {
            Some(kid) => ring.keys.iter().find(|k| k.verifies(Some(kid))),
            None => ring.keys.first(),
        }
        .ok_or_else(|| TokenError::Mint("the key set has no signing key".into()))?;
        let mut header = Header::new(Algorithm::HS256);
        header.kid.clone_from(&key.kid);
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| TokenError::Mint(e.to_string()))
    }

    /// Who `token` belongs to, or why it is refused; counted either way (see [`telemetry`]).
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        match self.check(token) {
            Ok((identity, kid)) => {
                metrics::counter!(telemetry::TOKENS_ACCEPTED, "kid" => kid).increment(1);
                Ok(identity)
            }
            Err(error) => {
                metrics::counter!(telemetry::TOKENS_REFUSED, "reason" => error.reason())
                    .increment(1);
                Err(error)
            }
        }
    }

    fn check(&self, token: &str) -> Result<(Identity, String), TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token).map_err(|e| malformed(e.kind()))?;
        if header.alg != Algorithm::HS256 {
            // HelpGrid signs HS256 only: another algorithm in the header is an altered token.
            return Err(TokenError::Tampered);
        }
        let ring = self.ring();
        let key = ring
            .keys
            .iter()
            .find(|k| k.verifies(header.kid.as_deref()))
            .ok_or(TokenError::Foreign)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::Tampered,
                ErrorKind::InvalidIssuer => TokenError::Foreign,
                other => malformed(other),
            })?
            .claims;
        if claims.sub.trim().is_empty() {
            return Err(TokenError::Malformed("its subject is empty".into()));
        }
        if self.revocations.is_revoked(&claims.sub, claims.iat) {
            return Err(TokenError::Revoked);
        }
        Ok((
            Identity {
                scope: Scope::from_claim(&claims.grids),
                subject: claims.sub,
                role: claims.role,
                issued_at: claims.iat,
            },
            key.label(),
        ))
    }
}

/// What is wrong with a token that does not parse, in words that reveal nothing of a key.
fn malformed(kind: &jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind;
    let what = match kind {
        ErrorKind::InvalidToken => "it is not three dot-separated parts".to_owned(),
        ErrorKind::Base64(_) => "a part is not base64url".to_owned(),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => {
            "its contents are not the expected JSON".to_owned()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("the claim {claim} is missing"),
        _ => "it cannot be read".to_owned(),
    };
    TokenError::Malformed(what)
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
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
            .map_err(|_| TokenError::Malformed("it has characters a header cannot carry".into()))
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

    fn claims(sub: &str, iat: u64, exp: u64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            role: Role::Responder,
            grids: vec!["g1".into()],
            iat,
            exp,
        }
    }

    const OLD: &str = "0123456789abcdef0123456789abcdef";
    const NEW: &str = "new-key-new-key-new-key-new-key-";
    const ELSEWHERE: &str = "another-deployments-key-0123456789";

    fn ring(text: &str) -> TokenKey {
        TokenKey::from_key_file_text(text.as_bytes()).expect("key file")
    }

    fn kid_of(token: &str) -> Option<String> {
        jsonwebtoken::decode_header(token).expect("header").kid
    }

    fn mint(key: &TokenKey, sub: &str) -> String {
        key.mint(sub, Role::Responder, &[], Duration::from_secs(60))
            .expect("mint")
    }

    #[test]
    fn each_bad_token_has_its_own_reason() {
        let key = key();
        let now = unix_now();
        let expired = key.sign(&claims("w", 1, 2)).expect("sign");
        assert_eq!(key.verify(&expired), Err(TokenError::Expired));

        // Another deployment's token under a key id this one does not hold.
        let elsewhere = ring(&format!("ankang-2026={ELSEWHERE}\n"));
        assert_eq!(key.verify(&mint(&elsewhere, "w")), Err(TokenError::Foreign));
        let other_issuer = key
            .sign(&Claims {
                iss: "someone-else".into(),
                ..claims("w", now, now + 60)
            })
            .expect("sign");
        assert_eq!(key.verify(&other_issuer), Err(TokenError::Foreign));

        // A valid token with its payload changed (a responder making itself admin).
        let token = mint(&key, "w");
        let parts: Vec<&str> = token.split('.').collect();
        let admin_payload = base64_url(
            &serde_json::to_vec(&Claims {
                role: Role::Admin,
                ..claims("w", now, now + 60)
            })
            .expect("json"),
        );
        let tampered = format!("{}.{admin_payload}.{}", parts[0], parts[2]);
        assert_eq!(key.verify(&tampered), Err(TokenError::Tampered));
        // The same secret's signature cannot be told from another deployment's under the
        // same (or no) key id: both are "tampered", and the message covers both.
        let same_kid_elsewhere = TokenKey::from_secret(ELSEWHERE.as_bytes()).expect("key");
        assert_eq!(
            key.verify(&mint(&same_kid_elsewhere, "w")),
            Err(TokenError::Tampered)
        );

        for garbled in ["not-a-token", "a.b", "a.b.c", "", "...."] {
            assert!(
                matches!(key.verify(garbled), Err(TokenError::Malformed(_))),
                "{garbled:?}"
            );
        }
        let empty_subject = key.sign(&claims(" ", now, now + 60)).expect("sign");
        assert!(matches!(
            key.verify(&empty_subject),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn every_refusal_is_counted_by_its_reason_and_every_acceptance_by_its_key_id() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let key = ring(&format!("k1={NEW}\n"));
        let now = unix_now();
        metrics::with_local_recorder(&recorder, || {
            key.revocations().revoke("gone", now);
            let _ = key.verify(&mint(&key, "w"));
            let _ = key.verify(&key.sign(&claims("w", 1, 2)).expect("sign"));
            let _ = key.verify(&key.sign(&claims("gone", now - 5, now + 60)).expect("sign"));
            let _ = key.verify(&mint(&ring(&format!("k9={OLD}\n")), "w"));
            let _ = key.verify(&mint(&ring(&format!("k1={OLD}\n")), "w"));
            let _ = key.verify("garbage");
            let _ = key.verify("more.garbage");
        });
        let text = handle.render();
        for line in [
            "helpgrid_auth_tokens_accepted_total{kid=\"k1\"} 1",
            "helpgrid_auth_tokens_refused_total{reason=\"expired\"} 1",
            "helpgrid_auth_tokens_refused_total{reason=\"revoked\"} 1",
            "helpgrid_auth_tokens_refused_total{reason=\"foreign\"} 1",
            "helpgrid_auth_tokens_refused_total{reason=\"tampered\"} 1",
            "helpgrid_auth_tokens_refused_total{reason=\"malformed\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn refusal_messages_say_what_to_do_and_reveal_no_key_material() {
        let messages = [
            TokenError::Expired,
            TokenError::Revoked,
            TokenError::Foreign,
            TokenError::Tampered,
            TokenError::Malformed("it is not three dot-separated parts".into()),
        ]
        .map(|e| e.to_string());
        assert!(messages[1].starts_with("token revoked"));
        for message in &messages {
            assert!(
                message.contains("new token") || message.contains("as it was issued"),
                "{message}"
            );
            assert!(
                !message.contains(OLD) && !message.contains("kid="),
                "{message}"
            );
        }
    }

    #[test]
    fn a_revoked_subjects_earlier_tokens_are_refused_and_a_new_one_works() {
        let key = key();
        let now = unix_now();
        let before = key.sign(&claims("w-42", now - 10, now + 60)).expect("sign");
        let colleague = key.sign(&claims("w-43", now - 10, now + 60)).expect("sign");
        key.revocations().revoke("w-42", now);
        assert_eq!(key.verify(&before), Err(TokenError::Revoked));
        assert!(key.verify(&colleague).is_ok());
        let replacement = mint(&key, "w-42");
        assert_eq!(
            key.verify(&replacement).map(|i| i.subject),
            Ok("w-42".into())
        );
    }

    #[test]
    fn rotation_accepts_old_and_new_during_the_overlap_and_refuses_the_retired_key_after() {
        // Before: the old single-secret file; tokens carry no kid.
        let before = TokenKey::from_key_file_text(OLD.as_bytes()).expect("key");
        let legacy_token = mint(&before, "w");
        assert_eq!(kid_of(&legacy_token), None);

        // Overlap: the old secret becomes the legacy key, a new key is listed; the minting
        // side signs with the first key.
        let overlap_text = format!("2026-12={NEW}\nlegacy={OLD}\n");
        let overlap = ring(&overlap_text);
        let new_token = mint(&overlap, "w");
        assert_eq!(kid_of(&new_token).as_deref(), Some("2026-12"));
        assert!(overlap.verify(&legacy_token).is_ok());
        assert!(overlap.verify(&new_token).is_ok());
        // A verifier that has not taken the new key yet refuses the new token as foreign:
        // that is why the key goes to every verifier before anyone signs with it.
        assert_eq!(before.verify(&new_token), Err(TokenError::Foreign));

        // After: the old key is removed; its tokens are refused with a clear answer.
        let after = ring(&format!("2026-12={NEW}\n"));
        assert!(after.verify(&new_token).is_ok());
        assert_eq!(after.verify(&legacy_token), Err(TokenError::Foreign));
    }

    #[test]
    fn mint_can_sign_with_a_key_that_is_not_first() {
        let key = ring(&format!("2026-12={NEW}\nlegacy={OLD}\n"))
            .signing_with("legacy")
            .expect("kid");
        assert_eq!(kid_of(&mint(&key, "w")).as_deref(), Some("legacy"));
        assert!(matches!(
            ring(&format!("k={NEW}\n")).signing_with("nope"),
            Err(KeyError::UnknownKid(_))
        ));
    }

    #[test]
    fn a_changed_key_file_is_taken_on_reload_and_a_broken_one_is_not() {
        let dir = std::env::temp_dir().join(format!(
            "helpgrid-auth-reload-{}-{}",
            std::process::id(),
            unix_now()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("auth.key");
        std::fs::write(&path, format!("k1={OLD}\n")).expect("write");
        let key = TokenKey::from_file(&path).expect("key");
        assert_eq!(key.reload().ok(), Some(false), "unchanged");
        std::fs::write(&path, format!("k2={NEW}\nk1={OLD}\n")).expect("write");
        assert_eq!(key.reload().ok(), Some(true));
        assert_eq!(key.kids(), vec!["k2".to_owned(), "k1".to_owned()]);
        std::fs::write(&path, "k3=short\n").expect("write");
        assert!(key.reload().is_err());
        assert_eq!(key.kids(), vec!["k2".to_owned(), "k1".to_owned()]);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(matches!(
            TokenKey::from_secret(b"short"),
            Err(KeyError::TooShort { len: 5, .. })
        ));
    }
}
