//! Revoked sign-ins: for each revoked subject, the time before which its tokens no longer count.
//!
//! A lost phone holds a token that stays valid until it expires. Revoking the responder's
//! subject refuses every token issued to it *before* the revocation (its `iat` is earlier),
//! while a token minted afterwards (the new phone) works. The list is the compacted
//! `<prefix>revocations` topic, key = subject, as a table: the latest record per subject is
//! the admin's word (a tombstone lifts the revocation), so compaction never changes what
//! the table says and every verifier that reads it ends with the same list.
//!
//! This module is the table only (no Kafka): [`crate::follower`] keeps it current.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

/// Subject → the first second (Unix) a token must be issued in to count again.
#[derive(Debug)]
pub struct Revocations {
    by_subject: RwLock<HashMap<String, u64>>,
    /// Bumped on every change, so open streams can check their caller again at once.
    changes: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self {
            by_subject: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Revocations {
    /// Records that tokens of `subject` issued before `not_before_s` are refused (the latest
    /// record wins, even if it names an earlier time: it is what the table says).
    pub fn revoke(&self, subject: &str, not_before_s: u64) {
        self.write().insert(subject.to_owned(), not_before_s);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A tombstone: the subject's tokens count again.
    pub fn lift(&self, subject: &str) {
        self.write().remove(subject);
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Watches one sign-in (a token of `subject` issued at `issued_at_s`) for its revocation:
    /// for streams admitted before it, which must end when it comes.
    pub fn watch(self: &Arc<Self>, subject: &str, issued_at_s: u64) -> RevocationWatch {
        RevocationWatch {
            revocations: Arc::clone(self),
            changes: self.changes.subscribe(),
            subject: subject.to_owned(),
            issued_at_s,
        }
    }

    /// Whether a token of `subject` issued at `issued_at_s` was revoked. A token issued in
    /// the second of the revocation or later counts: `iat` has one-second resolution, and a
    /// replacement minted right after the revocation must work.
    pub fn is_revoked(&self, subject: &str, issued_at_s: u64) -> bool {
        self.read()
            .get(subject)
            .is_some_and(|not_before| issued_at_s < *not_before)
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // A panic while holding the lock cannot leave the map half-written (each operation is
    // one insert or remove), so a poisoned lock is still a consistent table.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, u64>> {
        self.by_subject
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, u64>> {
        self.by_subject
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One sign-in's revocation, awaited by a stream that was admitted with it.
#[derive(Debug, Clone)]
pub struct RevocationWatch {
    revocations: Arc<Revocations>,
    changes: watch::Receiver<u64>,
    subject: String,
    issued_at_s: u64,
}

impl RevocationWatch {
    /// Resolves once the sign-in is revoked (at once if it already is). Cancel-safe: a
    /// `select!` loop may drop and re-create it.
    pub async fn revoked(&mut self) {
        loop {
            if self.revocations.is_revoked(&self.subject, self.issued_at_s) {
                return;
            }
            if self.changes.changed().await.is_err() {
                // The table is gone (shutting down): nothing will revoke this sign-in now.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_before_the_revocation_are_refused_and_later_ones_count() {
        let list = Revocations::default();
        list.revoke("w-42", 1_000);
        assert!(list.is_revoked("w-42", 999));
        assert!(!list.is_revoked("w-42", 1_000));
        assert!(!list.is_revoked("w-42", 1_001));
        assert!(!list.is_revoked("w-43", 1), "other subjects are untouched");
    }

    #[tokio::test]
    async fn an_open_sign_in_learns_of_its_revocation_and_others_do_not() {
        let list = Arc::new(Revocations::default());
        let mut lost = list.watch("w-42", 900);
        let mut colleague = list.watch("w-43", 900);
        let mut new_phone = list.watch("w-42", 1_000);
        let waiting = tokio::spawn(async move { lost.revoked().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        list.revoke("w-42", 1_000);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the revoked sign-in is told")
            .expect("task");
        let untouched = tokio::time::timeout(std::time::Duration::from_millis(50), async {
            tokio::join!(colleague.revoked(), new_phone.revoked())
        })
        .await;
        assert!(untouched.is_err(), "no other sign-in ends");
    }

    #[test]
    fn the_latest_record_wins_and_a_tombstone_lifts_the_revocation() {
        let list = Revocations::default();
        list.revoke("w-42", 2_000);
        list.revoke("w-42", 1_500);
        assert!(!list.is_revoked("w-42", 1_600));
        assert!(list.is_revoked("w-42", 1_400));
        list.lift("w-42");
        assert!(!list.is_revoked("w-42", 1));
        assert!(list.is_empty());
    }
}
