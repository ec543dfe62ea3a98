//! Work items: 6.12's `kernel::workqueue` queues them but cannot cancel
//! one, which a driver must do before the code a queued item runs is
//! unloaded. `cancel_sync` fills that gap.

use kernel::workqueue::Work;

use super::ffi;

/// Cancels `work` if it is queued and waits for it if it runs.
///
/// Must not be called from the work item itself.
pub(crate) fn cancel_sync<T: ?Sized, const ID: u64>(work: &Work<T, ID>) {
    // SAFETY: `work` is a live, initialised `Work`, so its raw pointer is a
    // valid `struct work_struct`; cancelling is allowed in process context.
    unsafe { ffi::dia_shim_cancel_work_sync(Work::raw_get(work).cast()) };
}
