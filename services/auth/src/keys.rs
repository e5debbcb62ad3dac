//! The key file: which secrets sign and verify tokens, each under a key id (`kid`).
//!
//! Rotation needs two keys at once: tokens signed with the old key must keep working while
//! new ones are signed with the new key, until the old ones have expired. So a key file
//! holds a key *set*, one `kid=secret` per line:
//!
//! ```text
//! # the first key signs new tokens; every key listed verifies
//! 2026-12=5f0c…(64 hex digits)
//! 2026-06=9a41…
//! legacy=0123…      # verifies tokens minted before key ids existed (no `kid`)
//! ```
//!
//! - The first key signs (`helpgrid-token mint --kid` picks another); its id goes into the
//!   token header. Every key listed verifies tokens that name its id.
//! - A token without a `kid` (minted before key ids existed) is verified with the key named
//!   [`LEGACY_KID`]. Remove that line and such tokens are refused like any retired key's.
//! - The old format, a file holding only one bare secret, still works: that secret is then
//!   the `legacy` key, and tokens are minted without a `kid`, as before.
//!
//! Blank lines and lines starting with `#` are ignored; a `#` after a secret starts a comment.
//! Key ids are 1–64 letters, digits, `.`, `_` or `-`; each secret has at least
//! [`MIN_KEY_BYTES`] bytes.

use crate::{KeyError, MIN_KEY_BYTES};

/// The key id that verifies tokens without a `kid` in their header.
pub const LEGACY_KID: &str = "legacy";
/// Longest key id accepted: it travels in every token header.
const MAX_KID_LEN: usize = 64;

/// One secret and its id, as read from the key file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyLine {
    /// `None` for the old single-secret format: tokens carry no `kid` then.
    pub kid: Option<String>,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for KeyLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyLine({:?}, ..)", self.kid)
    }
}

/// Parses a key file's contents (see the module documentation for the format).
pub fn parse_key_file(text: &[u8]) -> Result<Vec<KeyLine>, KeyError> {
    let trimmed = text.trim_ascii();
    // The old format: the whole file is one secret (any bytes, no `=`, one line).
    if !trimmed.contains(&b'=') && !trimmed.contains(&b'\n') && !trimmed.starts_with(b"#") {
        check_length(None, trimmed)?;
        return Ok(vec![KeyLine {
            kid: None,
            secret: trimmed.to_vec(),
        }]);
    }
    let text = std::str::from_utf8(text).map_err(|_| KeyError::Format {
        line: 0,
        problem: "a key file with key ids must be UTF-8 text".into(),
    })?;
    let mut keys: Vec<KeyLine> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if line.is_empty() {
            continue;
        }
        let format_error = |problem: String| KeyError::Format {
            line: line_no,
            problem,
        };
        let (kid, secret) = line
            .split_once('=')
            .ok_or_else(|| format_error("expected `kid=secret`".into()))?;
        let (kid, secret) = (kid.trim(), secret.trim());
        if !valid_kid(kid) {
            return Err(format_error(format!(
                "the key id {kid:?} must be 1–{MAX_KID_LEN} letters, digits, '.', '_' or '-'"
            )));
        }
        if keys.iter().any(|k| k.kid.as_deref() == Some(kid)) {
            return Err(format_error(format!("the key id {kid:?} appears twice")));
        }
        check_length(Some(kid), secret.as_bytes())?;
        keys.push(KeyLine {
            kid: Some(kid.to_owned()),
            secret: secret.as_bytes().to_vec(),
        });
    }
    if keys.is_empty() {
        return Err(KeyError::Format {
            line: 0,
            problem: "the file names no key".into(),
        });
    }
    Ok(keys)
}

pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= MAX_KID_LEN
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_length(kid: Option<&str>, secret: &[u8]) -> Result<(), KeyError> {
    if secret.len() < MIN_KEY_BYTES {
        return Err(KeyError::TooShort {
            kid: kid.map(str::to_owned),
            len: secret.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn a_bare_secret_is_the_legacy_format_without_a_key_id() {
        let keys = parse_key_file(format!("{A}\n").as_bytes()).expect("parse");
        assert_eq!(
            keys,
            vec![KeyLine {
                kid: None,
                secret: A.as_bytes().to_vec()
            }]
        );
    }

    #[test]
    fn key_lines_keep_their_order_and_ignore_comments_and_blank_lines() {
        let text = format!("# rotation of December\n\n2026-12={B}  # new\n{LEGACY_KID} = {A}\n");
        let keys = parse_key_file(text.as_bytes()).expect("parse");
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec![Some("2026-12"), Some(LEGACY_KID)]);
        assert_eq!(keys[0].secret, B.as_bytes());
        assert_eq!(keys[1].secret, A.as_bytes());
    }

    #[test]
    fn bad_key_files_are_refused_with_the_line() {
        let cases = [
            format!("k1={A}\nk1={B}\n"),
            format!("k1={A}\nno-equals-sign-here\n"),
            format!("bad kid={A}\n"),
            "# only a comment\n".to_owned(),
        ];
        for text in cases {
            assert!(
                matches!(
                    parse_key_file(text.as_bytes()),
                    Err(KeyError::Format { .. })
                ),
                "{text:?}"
            );
        }
        assert!(matches!(
            parse_key_file(b"k1=short"),
            Err(KeyError::TooShort { len: 5, .. })
        ));
        assert!(matches!(
            parse_key_file(b"short"),
            Err(KeyError::TooShort { kid: None, len: 5 })
        ));
    }
}
