//! The checkpoint watermark: which of a shard's delivered records are processed.
//!
//! A shard thread numbers the records it delivers 0, 1, 2, … . The caller marks them
//! processed in any order; the checkpoint may only cover the contiguous prefix of
//! processed records, so a crash never skips a record that was handed out but not
//! finished. [`Watermark`] is that bookkeeping, free of I/O; [`ShardProgress`] shares it
//! between the shard thread (which commits) and the caller's threads (which mark).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

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

/// Where a lease's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Records are handed to the caller and marks count.
    Delivering,
    /// The lease is ending: nothing more is handed out, but marks of records already
    /// handed out still count, so the final checkpoint can include them.
    Draining,
    /// The final checkpoint was taken: marks are ignored.
    Sealed,
}

#[derive(Debug)]
struct ProgressState {
    watermark: Watermark,
    /// One past the highest index handed to the caller.
    handed_out: u64,
    phase: Phase,
}

/// One lease's delivery state, shared by its shard thread and the caller's threads.
///
/// A new `ShardProgress` is made each time a shard's lease is captured, so marks for
/// records of an earlier lease never count toward a later one.
#[derive(Debug)]
pub(crate) struct ShardProgress {
    shard_id: Arc<str>,
    state: Mutex<ProgressState>,
    /// Signalled on every mark, for a draining shard thread.
    marked: Condvar,
}

impl ShardProgress {
    pub(crate) fn new(shard_id: Arc<str>) -> Self {
        ShardProgress {
            shard_id,
            state: Mutex::new(ProgressState {
                watermark: Watermark::default(),
                handed_out: 0,
                phase: Phase::Delivering,
            }),
            marked: Condvar::new(),
        }
    }

    pub(crate) fn shard_id(&self) -> &Arc<str> {
        &self.shard_id
    }

    /// Records that record `index` goes to the caller now; `false` if the lease is
    /// ending and the record must be dropped instead (the next owner delivers it).
    pub(crate) fn hand_out(&self, index: u64) -> bool {
        let mut st = self.state.lock();
        if st.phase != Phase::Delivering {
            return false;
        }
        st.handed_out = st.handed_out.max(index + 1);
        true
    }

    pub(crate) fn mark(&self, index: u64, seq: &str) {
        let mut st = self.state.lock();
        if st.phase != Phase::Sealed {
            st.watermark.mark(index, seq);
            drop(st);
            self.marked.notify_all();
        }
    }

    /// Stops hand-outs, waits until every handed-out record is processed or `deadline`
    /// passes, then seals: returns the processed prefix length and, if it moved past
    /// `since`, its last sequence number — the final checkpoint.
    pub(crate) fn drain_and_seal(&self, deadline: Instant, since: u64) -> (u64, Option<String>) {
        let mut st = self.state.lock();
        if st.phase == Phase::Delivering {
            st.phase = Phase::Draining;
        }
        while st.phase == Phase::Draining && st.watermark.processed_count() < st.handed_out {
            if self.marked.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.phase = Phase::Sealed;
        Self::since(&st.watermark, since)
    }

    #[cfg(test)]
    fn is_delivering(&self) -> bool {
        self.state.lock().phase == Phase::Delivering
    }

    /// Seals at once (the lease is lost or abandoned: nothing more will be written).
    pub(crate) fn seal(&self) {
        self.state.lock().phase = Phase::Sealed;
    }

    /// The processed prefix length and, if it moved past `since`, its last sequence
    /// number.
    pub(crate) fn processed_since(&self, since: u64) -> (u64, Option<String>) {
        Self::since(&self.state.lock().watermark, since)
    }

    fn since(wm: &Watermark, since: u64) -> (u64, Option<String>) {
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
    fn draining_waits_for_handed_out_records_then_seals() {
        let p = Arc::new(ShardProgress::new(Arc::from("shard-1")));
        assert!(p.hand_out(0));
        p.mark(0, "a");
        assert!(p.hand_out(1));
        assert_eq!(p.processed_since(0), (1, Some("a".to_owned())));
        // Record 1 is with the caller; it is marked while the shard thread drains.
        let marker = {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                while p.is_delivering() {
                    std::thread::yield_now();
                }
                p.mark(1, "b");
            })
        };
        let far = Instant::now() + std::time::Duration::from_secs(30);
        assert_eq!(p.drain_and_seal(far, 1), (2, Some("b".to_owned())));
        marker.join().unwrap();
        // Sealed: no hand-outs, marks ignored.
        assert!(!p.hand_out(3));
        p.mark(2, "c");
        assert_eq!(p.processed_since(0), (2, Some("b".to_owned())));
    }

    #[test]
    fn draining_gives_up_at_the_deadline() {
        let p = ShardProgress::new(Arc::from("shard-1"));
        assert!(p.hand_out(0));
        assert!(p.hand_out(1));
        p.mark(0, "a");
        assert_eq!(
            p.drain_and_seal(Instant::now(), 0),
            (1, Some("a".to_owned()))
        );
        p.mark(1, "b");
        assert_eq!(p.processed_since(1), (1, None));
    }
}
