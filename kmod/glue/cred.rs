//! The caller's credentials, for privileged ioctls.

use super::ffi;

/// Whether the current task has `CAP_SYS_ADMIN` in the initial user
/// namespace (a container's root without it is refused).
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: `capable` only reads the current task's credentials.
    unsafe { ffi::dia_shim_capable_sys_admin() != 0 }
}
