//! Which consumer offsets may be committed: at-least-once delivery means a partition's
//! committed offset never passes an incident event whose notifications are still queued,
//! being retried, or waiting for their re-notification time. After a crash everything from
//! the oldest unfinished event is read again; the idempotency keys make the repeats
//! harmless to receivers.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
struct PartitionWork {
    /// Unfinished pieces of work per offset (deliveries, re-notification holds).
    pending: BTreeMap<i64, usize>,
    /// One past the highest offset seen.
    next: i64,
    /// The offset last handed out for commit.
    committed: i64,
}

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionWork>,
}

impl OffsetTracker {
    /// An event was read with `work` pieces still to finish (0: nothing to do).
    pub fn begin(&mut self, partition: i32, offset: i64, work: usize) {
        let p = self.partitions.entry(partition).or_default();
        p.next = p.next.max(offset + 1);
        if work > 0 {
            *p.pending.entry(offset).or_default() += work;
        }
    }

    /// More work for an event still unfinished (a re-notification that fired).
    pub fn add(&mut self, partition: i32, offset: i64, work: usize) {
        if work == 0 {
            return;
        }
        if let Some(p) = self.partitions.get_mut(&partition) {
            *p.pending.entry(offset).or_default() += work;
        }
    }

    /// One piece of an event's work is done (delivered, dead-lettered, or dropped).
    pub fn finish(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.partitions.get_mut(&partition)
            && let Some(left) = p.pending.get_mut(&offset)
        {
            *left -= 1;
            if *left == 0 {
                p.pending.remove(&offset);
            }
        }
    }

    /// Offsets to commit now (the next offset to read, per partition) that moved since the
    /// last call.
    pub fn committable(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, p) in &mut self.partitions {
            let safe = p.pending.keys().next().copied().unwrap_or(p.next);
            if safe > p.committed {
                p.committed = safe;
                out.push((partition, safe));
            }
        }
        out.sort_unstable();
        out
    }

    /// A partition went to another instance: its unfinished work is no longer ours to
    /// commit (the new owner reads it again).
    pub fn forget(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Every partition went (a rebalance error drops the whole assignment).
    pub fn forget_all(&mut self) {
        self.partitions.clear();
    }

    /// Unfinished pieces of work, all partitions.
    pub fn pending(&self) -> usize {
        self.partitions
            .values()
            .flat_map(|p| p.pending.values())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_stops_before_the_oldest_unfinished_event() {
        let mut t = OffsetTracker::default();
        t.begin(0, 10, 1);
        t.begin(0, 11, 2);
        t.begin(0, 12, 0);
        assert_eq!(t.committable(), [(0, 10)]);
        t.finish(0, 11);
        t.finish(0, 11);
        assert_eq!(t.committable(), [], "10 still unfinished");
        t.finish(0, 10);
        assert_eq!(t.committable(), [(0, 13)]);
        assert_eq!(t.committable(), [], "nothing moved");
    }

    #[test]
    fn partitions_are_independent_and_added_work_holds_the_event() {
        let mut t = OffsetTracker::default();
        t.begin(0, 5, 1);
        t.begin(1, 7, 0);
        assert_eq!(t.committable(), [(0, 5), (1, 8)]);
        t.add(0, 5, 2);
        t.finish(0, 5);
        t.finish(0, 5);
        assert_eq!(t.committable(), []);
        assert_eq!(t.pending(), 1);
        t.finish(0, 5);
        assert_eq!(t.committable(), [(0, 6)]);
    }

    #[test]
    fn a_forgotten_partition_commits_nothing_more() {
        let mut t = OffsetTracker::default();
        t.begin(2, 1, 1);
        t.forget(2);
        t.finish(2, 1);
        assert_eq!(t.committable(), []);
        assert_eq!(t.pending(), 0);
    }
}
