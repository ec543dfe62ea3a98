//! Copying ioctl arguments too large for the kernel stack from userspace
//! straight into the heap.

use core::mem::MaybeUninit;

use kernel::prelude::*;
use kernel::types::FromBytes;
use kernel::uaccess::UserSlice;

/// Reads a `T` from userspace address `arg` into a new box (`EFAULT` if
/// unreadable), never holding it on the stack.
pub(crate) fn read_boxed<T: FromBytes>(arg: usize) -> Result<KBox<T>> {
    let size = core::mem::size_of::<T>();
    let mut boxed = KBox::<T>::new_uninit(GFP_KERNEL)?;
    // SAFETY: the box owns `size` bytes that this slice alone refers to
    // while it lives; `MaybeUninit<u8>` has alignment 1 and no validity
    // requirement, so uninitialised memory may be viewed as it.
    let bytes = unsafe {
        core::slice::from_raw_parts_mut(boxed.as_mut_ptr().cast::<MaybeUninit<u8>>(), size)
    };
    UserSlice::new(arg, size).reader().read_raw(bytes)?;
    // SAFETY: `read_raw` succeeded, which guarantees all `size` bytes are
    // initialised, and `T: FromBytes` makes every byte pattern a valid `T`.
    Ok(unsafe { boxed.assume_init() })
}
