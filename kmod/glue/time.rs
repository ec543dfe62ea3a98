//! Sleeping and a monotonic millisecond clock, for bounded polls.

use kernel::error::Error;

use super::ffi;

/// `ETIMEDOUT`, which 6.12's `kernel::error::code` does not list.
#[expect(non_snake_case)]
pub(crate) fn ETIMEDOUT() -> Error {
    Error::from_errno(-(kernel::bindings::ETIMEDOUT as i32))
}

/// Sleeps for at least `ms` milliseconds (process context only).
pub(crate) fn msleep(ms: u32) {
    // SAFETY: `msleep` has no preconditions beyond process context, which all
    // callers in this driver are (probe, remove, ioctl).
    unsafe { ffi::dia_shim_msleep(ms) }
}

/// Monotonic time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    // SAFETY: `ktime_get_ns` may be called from any context.
    unsafe { ffi::dia_shim_ktime_ms() }
}

/// Number of online CPUs.
pub(crate) fn online_cpus() -> u32 {
    // SAFETY: reading the online CPU count has no preconditions.
    unsafe { ffi::dia_shim_num_online_cpus() }
}

/// Polls `cond` every `step_ms` until it holds or `timeout_ms` passes.
/// Returns whether it held.
pub(crate) fn poll_until(timeout_ms: u32, step_ms: u32, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = now_ms() + u64::from(timeout_ms);
    loop {
        if cond() {
            return true;
        }
        if now_ms() >= deadline {
            return cond();
        }
        msleep(step_ms);
    }
}
