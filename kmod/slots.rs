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

/// Like [`insert`], but hands `item` back when there is no room for it, for
/// items that must not simply be dropped (a port the card still has).
pub(crate) fn insert_or_return<T>(slots: &mut KVec<Option<T>>, item: T) -> Result<(), T> {
    if let Some(free) = slots.iter_mut().find(|s| s.is_none()) {
        *free = Some(item);
        return Ok(());
    }
    if slots.reserve(1, GFP_KERNEL).is_err() {
        return Err(item);
    }
    // Room for one more was just reserved: this push does not allocate.
    let _ = slots.push(Some(item), GFP_KERNEL);
    Ok(())
}
