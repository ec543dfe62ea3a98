//! Submission and completion queues living in guest memory (NVMe-shaped):
//! the card consumes submission entries from its head up to the tail the
//! driver rang, and posts completions with a phase tag that flips on every
//! wrap, never overwriting an entry the driver has not consumed.

use std::sync::atomic::{fence, Ordering};

use dia_abi::card::{self as abi, CompletionEntry, SubmissionEntry};

use crate::guest_memory::{GuestMemory, MemoryError};

/// Validates a queue's placement: [`abi::QUEUE_ALIGN_BYTES`] aligned, whole
/// queue in guest memory.
pub(crate) fn check_placement(
    mem: &GuestMemory,
    base: u64,
    entries: u16,
    entry_size: usize,
) -> bool {
    let bytes = usize::from(entries) * entry_size;
    base.is_multiple_of(abi::QUEUE_ALIGN_BYTES)
        && base
            .checked_add(bytes as u64)
            .is_some_and(|end| end <= mem.size() as u64)
}

/// A submission queue.
#[derive(Debug)]
pub(crate) struct SubmissionQueue {
    /// Completion queue its commands complete on.
    pub(crate) cqid: u16,
    base: u64,
    size: u16,
    head: u16,
}

impl SubmissionQueue {
    /// A queue of `size` entries at `base` (placement already validated).
    pub(crate) fn new(cqid: u16, base: u64, size: u16) -> Self {
        Self {
            cqid,
            base,
            size,
            head: 0,
        }
    }

    /// The card's head (reported in completions).
    pub(crate) fn head(&self) -> u16 {
        self.head
    }

    /// Whether `tail` is a valid doorbell value for this queue.
    pub(crate) fn valid_tail(&self, tail: u32) -> bool {
        tail < u32::from(self.size)
    }

    /// Whether entries are waiting up to `tail`.
    pub(crate) fn pending(&self, tail: u16) -> bool {
        self.head != tail
    }

    /// Takes the entry at the head.
    pub(crate) fn pop(&mut self, mem: &GuestMemory) -> Result<SubmissionEntry, MemoryError> {
        let addr = self.base + u64::from(self.head) * abi::SQE_SIZE as u64;
        let sqe = mem.read_obj::<SubmissionEntry>(addr)?;
        self.head = (self.head + 1) % self.size;
        Ok(sqe)
    }
}

/// A completion queue.
#[derive(Debug)]
pub(crate) struct CompletionQueue {
    /// Interrupt vector raised after posting.
    pub(crate) vector: u16,
    /// Whether interrupts are enabled for this queue.
    pub(crate) interrupts: bool,
    base: u64,
    size: u16,
    tail: u16,
    phase: bool,
}

impl CompletionQueue {
    /// A queue of `size` entries at `base` (placement already validated).
    pub(crate) fn new(base: u64, size: u16, vector: u16, interrupts: bool) -> Self {
        Self {
            vector,
            interrupts,
            base,
            size,
            tail: 0,
            phase: true,
        }
    }

    /// Whether posting now would overwrite an entry the driver has not
    /// consumed, given the driver's CQ head doorbell.
    pub(crate) fn is_full(&self, head: u32) -> bool {
        u32::from((self.tail + 1) % self.size) == head
    }

    /// Whether `head` is a valid doorbell value for this queue.
    pub(crate) fn valid_head(&self, head: u32) -> bool {
        head < u32::from(self.size)
    }

    /// Posts a completion: everything but the status word first, then the
    /// status with the phase tag, so the driver never sees a half entry.
    pub(crate) fn post(
        &mut self,
        mem: &GuestMemory,
        mut cqe: CompletionEntry,
        status: u16,
    ) -> Result<(), MemoryError> {
        let addr = self.base + u64::from(self.tail) * abi::CQE_SIZE as u64;
        cqe.status = abi::make_status(status, !self.phase);
        // Keep the old phase in the entry while its body is written.
        mem.write_obj(addr, &cqe)?;
        fence(Ordering::Release);
        let status_word = abi::make_status(status, self.phase);
        mem.write(
            addr + abi::CQE_STATUS_OFFSET as u64,
            &status_word.to_le_bytes(),
        )?;
        self.tail = (self.tail + 1) % self.size;
        if self.tail == 0 {
            self.phase = !self.phase;
        }
        Ok(())
    }
}
