//! The checkpoint watermark: which of a shard's delivered records are processed.
//!
//! A shard thread numbers the records it delivers 0, 1, 2, … . The caller marks them
//! processed in any order; the checkpoint may only cover the contiguous prefix of
//! processed records, so a crash never skips a record that was handed out but not
//! finished. [`Watermark`] is that bookkeeping, free of I/O; [`ShardProgress`] shares it
//! between the shard thread (which commits) and the caller's threads (which mark).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Contiguous-prefix tracker of processed record indices.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Lowest index not yet processed; everything below is.
    next: u64,
    /// Sequence number of record `next - 1`, if any record was processed.
    processed_seq: Option<String>,
    /// Processed out of order, waiting for the gap below them to close.
    ahead: BTreeMap<u64, String>,
}

impl Watermark {
    /// Marks record `index` (with sequence number `seq`) processed. Marking twice, or
    /// marking a record below the watermark, changes nothing.
    pub(crate) fn mark(&mut self, index: u64, seq: &str) {
        if index < self.next {
            return;
        }
        if index > self.next {
            self.ahead.entry(index).or_insert_with(|| seq.to_owned());
            return;
        }
        // In order: reuse the buffer rather than allocate per record.
        let buf = self.processed_seq.get_or_insert_with(String::new);
        buf.clear();
        buf.push_str(seq);
        self.next += 1;
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            self.processed_seq = Some(entry.remove());
            self.next += 1;
        }
    }

    /// How many records, from index 0, are processed.
    pub(crate) fn processed_count(&self) -> u64 {
        self.next
    }

    /// Sequence number of the last record of the processed prefix.
    pub(crate) fn processed_seq(&self) -> Option<&str> {
        self.processed_seq.as_deref()
    }
}

/// One lease's delivery state, shared by its shard thread and the caller's threads.
///
/// A new `ShardProgress` is made each time a shard's lease is captured, so marks for
/// records of an earlier lease never count toward a later one.
#[derive(Debug)]
pub(crate) struct ShardProgress {
    shard_id: Arc<str>,
    /// Cleared when the lease ends: records of this shard still in the channel are then
    /// dropped instead of delivered, and marks are ignored.
    active: AtomicBool,
    watermark: Mutex<Watermark>,
}

impl ShardProgress {
    pub(crate) fn new(shard_id: Arc<str>) -> Self {
        ShardProgress {
            shard_id,
            active: AtomicBool::new(true),
            watermark: Mutex::new(Watermark::default()),
        }
    }

    pub(crate) fn shard_id(&self) -> &Arc<str> {
        &self.shard_id
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Ends delivery. Takes the watermark lock so that no mark is half-applied when the
    /// shard thread reads the final checkpoint after this returns.
    pub(crate) fn deactivate(&self) {
        let _guard = self.watermark.lock();
        self.active.store(false, Ordering::Release);
    }

    pub(crate) fn mark(&self, index: u64, seq: &str) {
        let mut wm = self.watermark.lock();
        if self.active.load(Ordering::Acquire) {
            wm.mark(index, seq);
        }
    }

    /// The processed prefix length and, if it moved past `since`, its last sequence
    /// number.
    pub(crate) fn processed_since(&self, since: u64) -> (u64, Option<String>) {
        let wm = self.watermark.lock();
        let count = wm.processed_count();
        if count > since {
            (count, wm.processed_seq().map(str::to_owned))
        } else {
            (count, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_marks_advance() {
        let mut wm = Watermark::default();
        assert_eq!(wm.processed_seq(), None);
        wm.mark(0, "a");
        wm.mark(1, "b");
        assert_eq!(wm.processed_count(), 2);
        assert_eq!(wm.processed_seq(), Some("b"));
    }

    #[test]
    fn out_of_order_marks_wait_for_the_gap() {
        let mut wm = Watermark::default();
        wm.mark(2, "c");
        wm.mark(1, "b");
        assert_eq!(wm.processed_count(), 0);
        assert_eq!(wm.processed_seq(), None);
        wm.mark(0, "a");
        assert_eq!(wm.processed_count(), 3);
        assert_eq!(wm.processed_seq(), Some("c"));
        wm.mark(4, "e");
        assert_eq!(wm.processed_seq(), Some("c"));
        wm.mark(3, "d");
        assert_eq!(wm.processed_seq(), Some("e"));
        assert_eq!(wm.processed_count(), 5);
    }

    #[test]
    fn repeated_and_stale_marks_are_ignored() {
        let mut wm = Watermark::default();
        wm.mark(0, "a");
        wm.mark(0, "a");
        wm.mark(2, "c");
        wm.mark(2, "X");
        wm.mark(1, "b");
        assert_eq!(wm.processed_count(), 3);
        assert_eq!(wm.processed_seq(), Some("c"));
    }

    #[test]
    fn shuffled_marks_reach_the_full_prefix() {
        // A fixed permutation of 0..100 (multiplication by a unit mod 101, minus one).
        let mut wm = Watermark::default();
        for i in 1..=100u64 {
            let idx = (i * 37) % 101 - 1;
            wm.mark(idx, &idx.to_string());
        }
        assert_eq!(wm.processed_count(), 100);
        assert_eq!(wm.processed_seq(), Some("99"));
        assert!(wm.ahead.is_empty());
    }

    #[test]
    fn inactive_progress_ignores_marks() {
        let p = ShardProgress::new(Arc::from("shard-1"));
        p.mark(0, "a");
        assert_eq!(p.processed_since(0), (1, Some("a".to_owned())));
        assert_eq!(p.processed_since(1), (1, None));
        p.deactivate();
        p.mark(1, "b");
        assert_eq!(p.processed_since(0), (1, Some("a".to_owned())));
        assert!(!p.is_active());
    }
}
