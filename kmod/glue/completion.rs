//! A kernel `struct completion`: one side waits with a timeout, the other
//! (possibly a hard-IRQ handler) signals.

use core::ptr::NonNull;

use kernel::error::{code::ENOMEM, Result};

use super::ffi;

/// An owned completion.
///
/// # Invariants
///
/// `raw` was returned by `dia_shim_completion_new` and is freed only in `drop`.
pub(crate) struct Completion {
    raw: NonNull<ffi::dia_shim_completion>,
}

// SAFETY: the kernel's completion API is safe to use from any thread
// (it has its own wait-queue lock).
unsafe impl Send for Completion {}
// SAFETY: as above; all methods take `&self` and the C side synchronises.
unsafe impl Sync for Completion {}

impl Completion {
    /// Allocates an initialised completion.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: no preconditions; returns NULL on allocation failure.
        let raw = unsafe { ffi::dia_shim_completion_new() };
        // INVARIANT: non-NULL result of `dia_shim_completion_new`.
        Ok(Self {
            raw: NonNull::new(raw).ok_or(ENOMEM)?,
        })
    }

    /// Marks the completion as not done.
    pub(crate) fn reinit(&self) {
        // SAFETY: `raw` is valid by the type invariant.
        unsafe { ffi::dia_shim_completion_reinit(self.raw.as_ptr()) }
    }

    /// Signals the completion; callable from hard-IRQ context.
    pub(crate) fn complete(&self) {
        // SAFETY: `raw` is valid by the type invariant.
        unsafe { ffi::dia_shim_complete(self.raw.as_ptr()) }
    }

    /// Waits up to `ms` milliseconds; returns whether it was signalled.
    pub(crate) fn wait_timeout(&self, ms: u32) -> bool {
        // SAFETY: `raw` is valid by the type invariant; callers are in process context.
        unsafe { ffi::dia_shim_wait_timeout(self.raw.as_ptr(), ms) != 0 }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // SAFETY: `raw` is valid and nobody else can use it after drop.
        unsafe { ffi::dia_shim_completion_free(self.raw.as_ptr()) }
    }
}
