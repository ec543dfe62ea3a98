//! A misc character device (`/dev/<name>`) whose open files each hold a
//! reference to the device's shared data, in the shape of upstream's later
//! `MiscDevice`: open/release/ioctl run in process context.

use core::ptr::NonNull;

use kernel::error::{Error, Result};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::{Arc, ArcBorrow};

use super::ffi;

/// Operations of a misc device whose shared state is `Self`.
pub(crate) trait MiscDevice: Send + Sync + Sized {
    /// Handles an ioctl on an open file; returns the value for userspace.
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;
}

/// A registered misc device.
///
/// # Invariants
///
/// `raw` is a live `dia_shim_misc_register` registration whose data pointer is
/// `data`, which came from `Arc::into_raw` and owns one reference released in
/// `drop` after deregistration. Open files hold their own references (taken
/// in `open_callback`).
pub(crate) struct Registration<T: MiscDevice> {
    raw: NonNull<ffi::dia_shim_misc>,
    data: *const T,
}

// SAFETY: owned kernel object; `T: Send + Sync`.
unsafe impl<T: MiscDevice> Send for Registration<T> {}
// SAFETY: no `&self` method mutates anything.
unsafe impl<T: MiscDevice> Sync for Registration<T> {}

impl<T: MiscDevice> Registration<T> {
    /// Creates `/dev/<name>` (mode 0600) backed by `data`.
    pub(crate) fn new(name: &CStr, data: Arc<T>) -> Result<Self> {
        let mut err = 0;
        let data = Arc::into_raw(data);
        // SAFETY: `name` is NUL-terminated (copied by C); the data pointer owns
        // a reference released only after deregistration in `drop`.
        let raw = unsafe {
            ffi::dia_shim_misc_register(
                name.as_char_ptr().cast(),
                data.cast_mut().cast(),
                Some(open_callback::<T>),
                Some(release_callback::<T>),
                Some(ioctl_callback::<T>),
                &mut err,
            )
        };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: the reference from `into_raw` above, unused by C.
            drop(unsafe { Arc::from_raw(data) });
            return Err(Error::from_errno(err));
        };
        // INVARIANT: live registration for `data`.
        Ok(Self { raw, data })
    }
}

impl<T: MiscDevice> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live (type invariant); no new open can start after this.
        unsafe { ffi::dia_shim_misc_deregister(self.raw.as_ptr()) };
        // SAFETY: the registration's reference from `new`, released once.
        drop(unsafe { Arc::from_raw(self.data) });
    }
}

/// Called by the C shim on open.
///
/// # Safety
///
/// `misc_data` must be the data pointer of a live [`Registration<T>`] and
/// `file_data` a valid out pointer.
unsafe extern "C" fn open_callback<T: MiscDevice>(
    misc_data: *mut core::ffi::c_void,
    file_data: *mut *mut core::ffi::c_void,
) -> core::ffi::c_int {
    // SAFETY: `misc_data` is the registration's reference, live while open can run.
    let borrowed = unsafe { ArcBorrow::from_raw(misc_data.cast::<T>().cast_const()) };
    let file_ref = Arc::into_raw(Arc::from(borrowed));
    // SAFETY: `file_data` is a valid out pointer provided by the C side.
    unsafe { *file_data = file_ref.cast_mut().cast() };
    0
}

/// Called by the C shim on the last close of a file.
///
/// # Safety
///
/// `file_data` must be what `open_callback` stored for that file, passed once.
unsafe extern "C" fn release_callback<T: MiscDevice>(file_data: *mut core::ffi::c_void) {
    // SAFETY: the file's reference was taken in `open_callback`; released once here.
    drop(unsafe { Arc::from_raw(file_data.cast::<T>().cast_const()) });
}

/// Called by the C shim for an ioctl on an open file.
///
/// # Safety
///
/// `file_data` must be what `open_callback` stored for a file still open.
unsafe extern "C" fn ioctl_callback<T: MiscDevice>(
    file_data: *mut core::ffi::c_void,
    cmd: core::ffi::c_uint,
    arg: core::ffi::c_ulong,
) -> core::ffi::c_long {
    // SAFETY: the file holds a reference (from `open_callback`) until release,
    // and ioctl cannot run concurrently with release of the same file.
    let this = unsafe { ArcBorrow::from_raw(file_data.cast::<T>().cast_const()) };
    let Ok(arg) = usize::try_from(arg) else {
        return EINVAL.to_errno() as core::ffi::c_long;
    };
    match T::ioctl(this, cmd, arg) {
        Ok(v) => v as core::ffi::c_long,
        Err(e) => e.to_errno() as core::ffi::c_long,
    }
}
