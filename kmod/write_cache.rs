// SPDX-License-Identifier: GPL-2.0

//! What the card's volatile write cache may hold of one namespace, as the
//! driver counts it: which completed writes a sync on the card has made
//! durable. Two decisions rest on it: a flush with nothing to cover
//! completes without a round trip to the card, and a namespace with writes
//! the card's cache held when its firmware died is fenced.
//!
//! Depends on `core` only, so the host builds it too (`kmod/host-tests`).
//!
//! # The card's side of the contract
//!
//! A successful Flush makes every write the card completed before it
//! durable. A successful FUA write whose completion carries
//! `WRITE_RESULT_FLUSHED` does the same (the card flushed its whole cache
//! for it). A write's completion is posted only after its data is in the
//! cache, so a write whose completion the driver counted before it submitted
//! a sync is covered by that sync.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// One namespace's account of the card's cache.
///
/// # Invariants
///
/// `flushed <= writes` at every moment: a sync's mark is a value `writes`
/// had, and `writes` only grows.
#[derive(Debug)]
pub(crate) struct WriteCache {
    /// Writes (not FUA), write-zeroes and discards completed so far,
    /// successfully or not. Counted before the block layer hears of the
    /// completion, so a flush submitted after it sees it.
    writes: AtomicU64,
    /// The highest `writes` a sync on the card covered.
    flushed: AtomicU64,
    /// Whether a sync completed since this account was made. Until one has,
    /// the card's cache may hold writes an earlier disk of the namespace
    /// completed (the driver reloaded, the namespace attached again), and
    /// every flush goes to the card.
    synced: AtomicBool,
}

impl WriteCache {
    /// An account with nothing counted and no sync seen.
    pub(crate) const fn new() -> Self {
        Self {
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            synced: AtomicBool::new(false),
        }
    }

    /// A write that may have left data in the card's cache completed.
    pub(crate) fn write_completed(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// What a sync submitted now covers when it succeeds: pass it to
    /// [`WriteCache::synced`] then.
    pub(crate) fn mark(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// A sync submitted at `mark` succeeded.
    pub(crate) fn synced(&self, mark: u64) {
        self.flushed.fetch_max(mark, Ordering::SeqCst);
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Whether a flush submitted now has nothing to make durable: a sync
    /// covered every write that completed before it. (An `O_DSYNC` write is
    /// a FUA write and then a flush; the FUA write's sync covers what the
    /// flush would.)
    pub(crate) fn flush_covered(&self) -> bool {
        // `writes` first: a sync that completes between the two loads
        // covers at least what it had counted, which is no less.
        let writes = self.writes.load(Ordering::SeqCst);
        self.synced.load(Ordering::SeqCst) && self.flushed.load(Ordering::SeqCst) >= writes
    }

    /// Whether writes may sit in the card's cache: completed since the last
    /// sync that covered them. A disk nobody synced is not counted as
    /// holding anything of an earlier disk's (the fence is for writes this
    /// disk's users were told about).
    pub(crate) fn unflushed(&self) -> bool {
        self.writes.load(Ordering::SeqCst) > self.flushed.load(Ordering::SeqCst)
    }
}
