//! Index and phase bookkeeping of one NVMe-shaped queue pair (SQ tail/head,
//! CQ head and expected phase), with no memory access, so it is plain logic
//! that also compiles and is tested on the host (kmod/host-tests).

/// State of a submission/completion queue pair of `size` entries each.
///
/// # Invariants
///
/// `size >= 2`; `sq_tail`, `sq_head` and `cq_head` are all `< size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RingState {
    size: u16,
    sq_tail: u16,
    sq_head: u16,
    cq_head: u16,
    phase: bool,
}

impl RingState {
    /// A fresh pair: empty SQ, CQ expecting phase 1 at entry 0.
    /// Returns `None` for sizes below 2.
    pub(crate) fn new(size: u16) -> Option<Self> {
        if size < 2 {
            return None;
        }
        // INVARIANT: size >= 2, all indices 0.
        Some(Self {
            size,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
        })
    }

    /// Current SQ tail (the value for the SQ tail doorbell).
    pub(crate) fn sq_tail(&self) -> u16 {
        self.sq_tail
    }

    /// Current CQ head (the value for the CQ head doorbell).
    pub(crate) fn cq_head(&self) -> u16 {
        self.cq_head
    }

    fn next(&self, i: u16) -> u16 {
        if i + 1 == self.size {
            0
        } else {
            i + 1
        }
    }

    /// Claims the next SQ slot and advances the tail; `None` when full
    /// (one slot always stays empty, as in NVMe).
    pub(crate) fn sq_push(&mut self) -> Option<u16> {
        let slot = self.sq_tail;
        let next = self.next(slot);
        if next == self.sq_head {
            return None;
        }
        self.sq_tail = next;
        Some(slot)
    }

    /// Records the SQ head the card reported in a completion.
    /// Returns `false` (and ignores it) if the value is out of range.
    pub(crate) fn set_sq_head(&mut self, head: u16) -> bool {
        if head >= self.size {
            return false;
        }
        self.sq_head = head;
        true
    }

    /// The CQ slot to look at next and the phase a new entry there carries.
    pub(crate) fn cq_expect(&self) -> (u16, bool) {
        (self.cq_head, self.phase)
    }

    /// Consumes the CQ entry at the head; flips the phase on wrap.
    pub(crate) fn cq_advance(&mut self) {
        self.cq_head = self.next(self.cq_head);
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
    }
}
