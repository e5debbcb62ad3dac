//! Signing in to the responder app, and keeping the session safe. Pure, apart from the
//! clock passed in.
//!
//! - **Token sign-in**: a responder or supervisor pastes their token; the cookie holds it.
//! - **Sign-in links** (`/app/signin?link=<token>`, also as a QR code): opening one shows a
//!   "sign in" button (a GET uses nothing up: chat apps fetch links for previews); the tap
//!   POSTs the link, which redeems it. The admin mints a
//!   short-lived token with `helpgrid-token mint … --ttl-s 600`. A link is accepted only if
//!   it expires within [`LINK_MAX_TTL_S`] of being minted (a long-lived token in a link is
//!   refused: a link travels by SMS or paper and must not stay useful), and only once: the
//!   link's signature is its nonce, remembered in [`RedeemedLinks`] until the link expires.
//!   The session it opens is a new token the status service mints (same subject, role and
//!   grids, [`SESSION_TTL`]), so the link itself never becomes the session.
//!   The redeemed set here is this instance's memory; across instances (behind a load
//!   balancer) the `app-links` topic is the ledger every instance follows ([`super::links`]):
//!   the first use of a link recorded there counts, anywhere.
//! - **Cookie**: `HttpOnly; SameSite=Strict; Path=/app`, and `Secure` when served over TLS.
//! - **CSRF**: every POST carries `x-csrf-token`, the SHA-256 of the session token (the page
//!   learns it from `/app/api/me`, which another site cannot read), and an `Origin` (when
//!   the browser sends one) naming this host.

use helpgrid_auth::{Identity, Role};
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

/// The cookie holding the app's session token.
pub const COOKIE: &str = "helpgrid_app";
/// A sign-in link must expire within this many seconds of being minted.
pub const LINK_MAX_TTL_S: u64 = 15 * 60;
/// How long a session opened by a link lasts (a long shift).
pub const SESSION_TTL: Duration = Duration::from_secs(14 * 3600);
/// Bound on remembered links, so a flood of (valid) links cannot grow memory without end.
const MAX_REMEMBERED_LINKS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("this sign-in link has already been used; ask your administrator for a new one")]
    LinkUsed,
    #[error(
        "this is not a sign-in link: it stays valid for {valid_s} s, links must expire within {LINK_MAX_TTL_S} s (mint one with helpgrid-token mint … --ttl-s 600), or sign in with the token itself"
    )]
    NotALink { valid_s: u64 },
    #[error("the {role} role has no responder app; sign in with a responder or supervisor token")]
    WrongRole { role: Role },
    #[error("too many sign-in links are in use at once; try again in a few minutes")]
    TooManyLinks,
}

/// The roles the app serves.
pub fn check_role(identity: &Identity) -> Result<(), SignInError> {
    match identity.role {
        Role::Responder | Role::Supervisor => Ok(()),
        role => Err(SignInError::WrongRole { role }),
    }
}

/// What a link token says about its lifetime (from its claims, already verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLifetime {
    pub issued_at_s: u64,
    pub expires_at_s: u64,
}

/// Links redeemed here, by nonce, until they expire.
#[derive(Debug, Default)]
pub struct RedeemedLinks {
    expires_by_nonce: HashMap<String, u64>,
}

impl RedeemedLinks {
    /// Whether the link could be redeemed now, without redeeming it (the page that asks the
    /// person to tap "sign in": link previews in chat apps fetch it and must not use it up).
    pub fn check(
        &mut self,
        nonce: &str,
        lifetime: LinkLifetime,
        now_s: u64,
    ) -> Result<(), SignInError> {
        let valid_s = lifetime.expires_at_s.saturating_sub(lifetime.issued_at_s);
        if valid_s > LINK_MAX_TTL_S {
            return Err(SignInError::NotALink { valid_s });
        }
        self.expires_by_nonce.retain(|_, expires| *expires >= now_s);
        if self.expires_by_nonce.contains_key(nonce) {
            return Err(SignInError::LinkUsed);
        }
        Ok(())
    }

    /// Accepts the link with `nonce` once, if it is short-lived; `now_s` in Unix seconds.
    pub fn redeem(
        &mut self,
        nonce: &str,
        lifetime: LinkLifetime,
        now_s: u64,
    ) -> Result<(), SignInError> {
        let valid_s = lifetime.expires_at_s.saturating_sub(lifetime.issued_at_s);
        if valid_s > LINK_MAX_TTL_S {
            return Err(SignInError::NotALink { valid_s });
        }
        self.check(nonce, lifetime, now_s)?;
        if self.expires_by_nonce.len() >= MAX_REMEMBERED_LINKS {
            return Err(SignInError::TooManyLinks);
        }
        // Kept a little past expiry: the token check allows clock skew.
        self.expires_by_nonce
            .insert(nonce.to_owned(), lifetime.expires_at_s.saturating_add(60));
        Ok(())
    }
}

/// The nonce of a link: its signature (unique per minted token, and not guessable).
pub fn link_nonce(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// The `Set-Cookie` value that keeps `token` for `max_age`.
pub fn session_cookie(token: &str, max_age: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/app; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session.
pub fn cleared_cookie(secure: bool) -> String {
    session_cookie("", Duration::ZERO, secure)
}

/// The session's CSRF token: SHA-256 of the session token, hex.
pub fn csrf_token(session: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, session.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("missing or wrong x-csrf-token header; reload the app")]
    Token,
    #[error("request from another site ({origin}) refused")]
    Origin { origin: String },
}

/// Checks a POST: the CSRF header matches the session, and the browser's `Origin` (if it
/// sent one) is this host.
pub fn check_post(
    session: &str,
    csrf_header: Option<&str>,
    origin: Option<&str>,
    host: Option<&str>,
) -> Result<(), CsrfError> {
    check_origin(origin, host)?;
    let expected = csrf_token(session);
    match csrf_header {
        Some(given) if constant_time_eq(given.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(CsrfError::Token),
    }
}

/// The `Origin` header, when present, must name `host` (any scheme: TLS may end in front).
pub fn check_origin(origin: Option<&str>, host: Option<&str>) -> Result<(), CsrfError> {
    let Some(origin) = origin else {
        return Ok(());
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    match host {
        Some(host) if authority.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(CsrfError::Origin {
            origin: origin.chars().take(200).collect(),
        }),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use helpgrid_auth::Scope;

    const LINK: LinkLifetime = LinkLifetime {
        issued_at_s: 1_000,
        expires_at_s: 1_600,
    };

    #[test]
    fn a_link_is_accepted_once_then_refused_and_forgotten_after_it_expires() {
        let mut redeemed = RedeemedLinks::default();
        assert_eq!(redeemed.check("sig-1", LINK, 1_099), Ok(()));
        assert_eq!(
            redeemed.check("sig-1", LINK, 1_099),
            Ok(()),
            "checking uses nothing"
        );
        assert_eq!(redeemed.redeem("sig-1", LINK, 1_100), Ok(()));
        assert_eq!(
            redeemed.check("sig-1", LINK, 1_101),
            Err(SignInError::LinkUsed)
        );
        assert_eq!(
            redeemed.redeem("sig-1", LINK, 1_101),
            Err(SignInError::LinkUsed)
        );
        assert_eq!(redeemed.redeem("sig-2", LINK, 1_102), Ok(()));
        redeemed.redeem("sig-3", LINK, 1_700).ok();
        assert!(
            !redeemed.expires_by_nonce.contains_key("sig-1"),
            "expired links are forgotten"
        );
    }

    #[test]
    fn a_long_lived_token_is_not_a_link() {
        let mut redeemed = RedeemedLinks::default();
        let shift = LinkLifetime {
            issued_at_s: 0,
            expires_at_s: 12 * 3600,
        };
        assert_eq!(
            redeemed.redeem("sig", shift, 10),
            Err(SignInError::NotALink { valid_s: 43_200 })
        );
    }

    #[test]
    fn only_responders_and_supervisors_use_the_app() {
        let identity = |role| Identity {
            subject: "x".into(),
            role,
            scope: Scope::AllGrids,
            issued_at: 0,
        };
        assert!(check_role(&identity(Role::Responder)).is_ok());
        assert!(check_role(&identity(Role::Supervisor)).is_ok());
        assert!(check_role(&identity(Role::Console)).is_err());
        assert!(check_role(&identity(Role::Admin)).is_err());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_under_tls() {
        let plain = session_cookie("t", SESSION_TTL, false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        assert!(session_cookie("t", SESSION_TTL, true).ends_with("; Secure"));
        assert!(cleared_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn a_post_needs_the_sessions_csrf_token_and_this_sites_origin() {
        let csrf = csrf_token("session-jwt");
        assert_eq!(csrf.len(), 64);
        let host = Some("10.0.0.5:8080");
        assert_eq!(check_post("session-jwt", Some(&csrf), None, host), Ok(()));
        assert_eq!(
            check_post(
                "session-jwt",
                Some(&csrf),
                Some("https://10.0.0.5:8080"),
                host
            ),
            Ok(())
        );
        assert_eq!(
            check_post("session-jwt", None, None, host),
            Err(CsrfError::Token)
        );
        assert_eq!(
            check_post("other-session", Some(&csrf), None, host),
            Err(CsrfError::Token)
        );
        assert!(matches!(
            check_post(
                "session-jwt",
                Some(&csrf),
                Some("https://evil.example"),
                host
            ),
            Err(CsrfError::Origin { .. })
        ));
    }

    #[test]
    fn the_nonce_is_the_signature() {
        assert_eq!(link_nonce("head.claims.sig"), "sig");
    }
}
