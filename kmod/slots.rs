//! Slot lists: Linux 6.12's `KVec` has no `remove`, so the driver keeps what
//! comes and goes at run time (disks, ports, their net devices) in a
//! `KVec<Option<T>>`, where a removed entry leaves a free slot (`None`) that
//! the next insert reuses.

use kernel::alloc::AllocError;
use kernel::prelude::*;

/// Puts `item` into the first free slot, or appends one. On allocation
/// failure `item` is dropped.
pub(crate) fn insert<T>(slots: &mut KVec<Option<T>>, item: T) -> Result<(), AllocError> {
    match slots.iter_mut().find(|s| s.is_none()) {
        Some(free) => {
            *free = Some(item);
            Ok(())
        }
        None => slots.push(Some(item), GFP_KERNEL),
    }
}
