//! Registration of a hard-IRQ handler on one MSI-X vector, in the shape of
//! upstream's later `irq::Registration<Handler>`: the handler is shared data
//! kept alive by the registration, and `Drop` waits for a running handler.

use core::ptr::NonNull;

use kernel::error::{Error, Result};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

use super::ffi;
use super::pci::{Device, IrqVectors};

/// Code run in hard-IRQ context when the vector fires.
pub(crate) trait Handler: Send + Sync {
    /// Handles one interrupt; returns whether it was ours.
    fn handle(&self) -> bool;
}

/// A requested IRQ.
///
/// # Invariants
///
/// `raw` is a live `dia_shim_request_irq` registration whose data pointer is
/// `handler`, which came from `Arc::into_raw` and owns one reference; both are
/// released only in `drop`, the registration first.
pub(crate) struct Registration<T: Handler> {
    raw: NonNull<ffi::dia_shim_irq>,
    handler: *const T,
}

// SAFETY: the registration is an owned kernel object; `T: Send + Sync`.
unsafe impl<T: Handler> Send for Registration<T> {}
// SAFETY: no `&self` method mutates anything.
unsafe impl<T: Handler> Sync for Registration<T> {}

impl<T: Handler> Registration<T> {
    /// Requests MSI-X `vector` of `dev` (allocated in `vectors`) for `handler`.
    /// `name` shows in /proc/interrupts.
    pub(crate) fn new(
        dev: Device,
        vectors: &IrqVectors,
        vector: u32,
        name: &'static CStr,
        handler: Arc<T>,
    ) -> Result<Self> {
        if vector >= vectors.count() {
            return Err(EINVAL);
        }
        let mut err = 0;
        let handler = Arc::into_raw(handler);
        let data = handler.cast_mut().cast::<core::ffi::c_void>();
        // SAFETY: `dev` is valid; `data` owns a reference that is released
        // only after the registration is freed; `name` is static.
        let raw = unsafe {
            ffi::dia_shim_request_irq(
                dev.as_raw(),
                vector,
                Some(trampoline::<T>),
                data,
                name.as_char_ptr().cast(),
                &mut err,
            )
        };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: the reference taken by `into_raw` above is not used by C.
            drop(unsafe { Arc::from_raw(handler) });
            return Err(Error::from_errno(err));
        };
        // INVARIANT: live registration whose data is `handler`.
        Ok(Self { raw, handler })
    }
}

impl<T: Handler> Registration<T> {
    /// The handler this registration runs.
    pub(crate) fn handler(&self) -> &T {
        // SAFETY: `handler` is kept alive by this registration (type invariant).
        unsafe { &*self.handler }
    }

    /// Masks the IRQ until the guard is dropped, after waiting for a
    /// handler running on another CPU: while the guard lives, the caller
    /// is the only one running [`Handler::handle`] code for this vector.
    pub(crate) fn mask(&self) -> Masked<'_, T> {
        // SAFETY: `raw` is live (type invariant); process context (callers
        // hold sleeping locks).
        unsafe { ffi::dia_shim_irq_disable(self.raw.as_ptr()) };
        Masked { reg: self }
    }
}

/// A masked IRQ; unmasked on drop.
pub(crate) struct Masked<'a, T: Handler> {
    reg: &'a Registration<T>,
}

impl<T: Handler> Drop for Masked<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live; pairs with the disable in `mask`.
        unsafe { ffi::dia_shim_irq_enable(self.reg.raw.as_ptr()) };
    }
}

impl<T: Handler> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live (type invariant); after this no handler runs,
        // so `handler` may be released afterwards.
        unsafe { ffi::dia_shim_free_irq(self.raw.as_ptr()) };
        // SAFETY: the reference from `Arc::into_raw` in `new`, released once.
        drop(unsafe { Arc::from_raw(self.handler) });
    }
}

/// Called by the C shim in hard-IRQ context.
///
/// # Safety
///
/// `data` must be the handler pointer of a live [`Registration<T>`].
unsafe extern "C" fn trampoline<T: Handler>(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: `data` is a handler reference owned by the live registration.
    let handler = unsafe { &*data.cast::<T>() };
    core::ffi::c_int::from(handler.handle())
}
