//! Every metric the token verifier records. Each service that verifies tokens exports them
//! with its own `/metrics`.

/// Tokens refused, by `reason`: expired, revoked, foreign, tampered, malformed.
pub const TOKENS_REFUSED: &str = "helpgrid_auth_tokens_refused_total";
/// Tokens accepted, by `kid` (`legacy` for tokens without one): during a key rotation, the
/// old key may be removed once its count stops growing.
pub const TOKENS_ACCEPTED: &str = "helpgrid_auth_tokens_accepted_total";
/// Subjects with a revocation in force, as the follower last read them.
pub const REVOKED_SUBJECTS: &str = "helpgrid_auth_revoked_subjects";
/// Revocation records that could not be read (bad payload, key and subject differ), skipped.
pub const REVOCATION_RECORDS_SKIPPED: &str = "helpgrid_auth_revocation_records_skipped_total";
/// Key file re-reads that failed; the keys read before stay in force.
pub const KEY_RELOAD_FAILURES: &str = "helpgrid_auth_key_reload_failures_total";

pub fn describe() {
    metrics::describe_counter!(TOKENS_REFUSED, "Bearer tokens refused, by reason");
    metrics::describe_counter!(TOKENS_ACCEPTED, "Bearer tokens accepted, by key id");
    metrics::describe_gauge!(
        REVOKED_SUBJECTS,
        "Token subjects with a revocation in force"
    );
    metrics::describe_counter!(
        REVOCATION_RECORDS_SKIPPED,
        "Revocation records that could not be read and were skipped"
    );
    metrics::describe_counter!(
        KEY_RELOAD_FAILURES,
        "Failed re-reads of the token key file (the previous keys stay in force)"
    );
}
