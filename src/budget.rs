//! The byte bound on records waiting for the caller.
//!
//! The records channel holds at most `buffer_size` records; this bounds their bytes too
//! (`Config::with_buffer_bytes`), so a caller that falls behind on large records does not
//! hold hundreds of megabytes in the buffer. Shard threads reserve a record's bytes before
//! handing it over and wait while the buffer is full; the caller's side gives them back
//! as it takes records. A record larger than the whole budget still goes through when the
//! buffer is empty, so nothing ever waits forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Shared by the caller's side and every shard thread of a consumer.
#[derive(Debug)]
pub(crate) struct Budget {
    limit: usize,
    used: AtomicUsize,
    /// Shard threads waiting for room.
    waiters: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            limit,
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
        }
    }

    /// Takes `size` bytes if they fit, or if nothing is buffered.
    pub(crate) fn try_reserve(&self, size: usize) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used > 0 && used.saturating_add(size) > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used.saturating_add(size),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Gives `size` bytes back (a record was taken, or not sent after all).
    pub(crate) fn release(&self, size: usize) {
        // Never below zero, whatever the order of events.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(size))
            });
        if self.waiters.load(Ordering::Acquire) > 0 {
            let _guard = self.lock.lock();
            self.freed.notify_all();
        }
    }

    /// Waits until some bytes are given back or `deadline` passes.
    pub(crate) fn wait(&self, deadline: Instant) {
        let mut guard = self.lock.lock();
        self.waiters.fetch_add(1, Ordering::AcqRel);
        // A release between the failed reservation and here has notified nobody: the
        // deadline (a commit interval at most) bounds that wait.
        let _ = self.freed.wait_until(&mut guard, deadline);
        self.waiters.fetch_sub(1, Ordering::AcqRel);
    }

    /// Bytes of records waiting for the caller.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_limit_except_for_one_oversized_record() {
        let b = Budget::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(50));
        assert!(b.try_reserve(40));
        assert_eq!(b.used(), 100);
        b.release(100);
        // Larger than the budget: allowed alone.
        assert!(b.try_reserve(500));
        assert!(!b.try_reserve(1));
        b.release(500);
        b.release(7);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_release_wakes_a_waiter() {
        let b = std::sync::Arc::new(Budget::new(10));
        assert!(b.try_reserve(10));
        let waiter = {
            let b = std::sync::Arc::clone(&b);
            std::thread::spawn(move || {
                let deadline = Instant::now() + std::time::Duration::from_secs(30);
                while !b.try_reserve(5) {
                    assert!(Instant::now() < deadline, "never woken");
                    b.wait(deadline);
                }
            })
        };
        b.release(10);
        assert!(waiter.join().is_ok());
        assert_eq!(b.used(), 5);
    }
}
