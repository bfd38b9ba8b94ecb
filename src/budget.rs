//! The bound on records waiting for the caller: their count and their bytes.
//!
//! Records travel to the caller in batches (one channel message per batch), so the channel's
//! own bound counts batches; this bounds the records in them to `buffer_size` and their bytes
//! to `Config::with_buffer_bytes`, so a caller that falls behind on large records does not
//! hold hundreds of megabytes in the buffer. Shard threads reserve a batch's records and
//! bytes before handing it over and wait while the buffer is full; the caller's side gives
//! them back as it takes batches off the channel. A batch larger than the whole budget
//! still goes through when the buffer is empty, so nothing ever waits forever.
//!
//! The records of the one batch that [`Kinsumer::records`](crate::Kinsumer::records) is
//! handing out one by one are no longer counted: memory is the budget plus one batch.

use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// What the buffer holds now.
#[derive(Debug, Default)]
struct Used {
    records: usize,
    bytes: usize,
    /// Shard threads waiting for room.
    waiters: usize,
}

/// Shared by the caller's side and every shard thread of a consumer. Taken once per
/// batch on each side.
#[derive(Debug)]
pub(crate) struct Budget {
    records: usize,
    bytes: usize,
    used: Mutex<Used>,
    freed: Condvar,
}

impl Budget {
    pub(crate) fn new(records: usize, bytes: usize) -> Self {
        Budget {
            records,
            bytes,
            used: Mutex::new(Used::default()),
            freed: Condvar::new(),
        }
    }

    /// Takes room for `records` records of `bytes` bytes if they fit, or if nothing is
    /// buffered.
    pub(crate) fn try_reserve(&self, records: usize, bytes: usize) -> bool {
        let mut used = self.used.lock();
        let empty = used.records == 0 && used.bytes == 0;
        if !empty
            && (used.records.saturating_add(records) > self.records
                || used.bytes.saturating_add(bytes) > self.bytes)
        {
            return false;
        }
        used.records = used.records.saturating_add(records);
        used.bytes = used.bytes.saturating_add(bytes);
        true
    }

    /// The room left, as (records, bytes); `None` while nothing is buffered (then
    /// anything may go, alone).
    pub(crate) fn room(&self) -> Option<(usize, usize)> {
        let used = self.used.lock();
        if used.records == 0 && used.bytes == 0 {
            return None;
        }
        Some((
            self.records.saturating_sub(used.records),
            self.bytes.saturating_sub(used.bytes),
        ))
    }

    /// Gives room back (a batch was taken, or not sent after all).
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        let mut used = self.used.lock();
        // Never below zero, whatever the order of events.
        used.records = used.records.saturating_sub(records);
        used.bytes = used.bytes.saturating_sub(bytes);
        if used.waiters > 0 {
            self.freed.notify_all();
        }
    }

    /// Waits until some room is given back or `deadline` passes.
    pub(crate) fn wait(&self, deadline: Instant) {
        let mut used = self.used.lock();
        used.waiters += 1;
        let _ = self.freed.wait_until(&mut used, deadline);
        used.waiters -= 1;
    }

    /// Bytes of records waiting for the caller.
    pub(crate) fn used(&self) -> usize {
        self.used.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_except_for_one_oversized_batch() {
        let b = Budget::new(10, 100);
        assert!(b.try_reserve(1, 60));
        assert!(!b.try_reserve(1, 50));
        assert!(b.try_reserve(1, 40));
        assert_eq!(b.used(), 100);
        b.release(2, 100);
        // Larger than the budget: allowed alone.
        assert!(b.try_reserve(1, 500));
        assert!(!b.try_reserve(1, 1));
        b.release(1, 500);
        b.release(3, 7);
        assert_eq!(b.used(), 0);
        // The record count binds as well.
        assert!(b.try_reserve(8, 8));
        assert!(!b.try_reserve(3, 3));
        assert!(b.try_reserve(2, 2));
        b.release(10, 10);
        assert!(b.try_reserve(25, 1));
        assert!(!b.try_reserve(1, 1));
    }

    #[test]
    fn a_release_wakes_a_waiter() {
        let b = std::sync::Arc::new(Budget::new(100, 10));
        assert!(b.try_reserve(1, 10));
        let waiter = {
            let b = std::sync::Arc::clone(&b);
            std::thread::spawn(move || {
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                while !b.try_reserve(1, 5) {
                    assert!(Instant::now() < deadline, "never woken");
                    b.wait(deadline);
                }
            })
        };
        b.release(1, 10);
        assert!(waiter.join().is_ok());
        assert_eq!(b.used(), 5);
    }
}
