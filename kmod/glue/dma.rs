//! DMA-coherent memory shared with the card (queues, Identify buffers), in the
//! shape of upstream's later `dma::CoherentAllocation`: bounds-checked,
//! volatile element access, freed on drop.

use core::ptr::NonNull;

use kernel::error::{code::EINVAL, code::ENOMEM, Result};
use kernel::types::{AsBytes, FromBytes};

use super::ffi;
use super::pci::Device;

/// A coherent DMA buffer of `size` bytes.
///
/// # Invariants
///
/// `cpu` is the CPU address and `handle` the bus address of one
/// `dma_alloc_coherent` allocation of `size` bytes for `dev`, page aligned,
/// freed only in `drop`.
pub(crate) struct CoherentAllocation {
    dev: Device,
    cpu: NonNull<u8>,
    handle: u64,
    size: usize,
}

// SAFETY: the allocation is plain memory; access goes through volatile copies.
unsafe impl Send for CoherentAllocation {}
// SAFETY: shared access is volatile reads/writes of plain data; callers
// serialise writers (queue owners hold a lock).
unsafe impl Sync for CoherentAllocation {}

impl CoherentAllocation {
    /// Allocates `size` zeroed bytes.
    pub(crate) fn new(dev: Device, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(EINVAL);
        }
        let mut handle = 0u64;
        let len = core::ffi::c_ulong::try_from(size).map_err(|_| EINVAL)?;
        // SAFETY: `dev` is valid (its invariant); `handle` is a valid out pointer.
        let cpu = unsafe { ffi::dia_shim_dma_alloc(dev.as_raw(), len, &mut handle) };
        let cpu = NonNull::new(cpu.cast::<u8>()).ok_or(ENOMEM)?;
        // INVARIANT: fresh allocation of `size` bytes; dma_alloc_coherent zeroes it.
        Ok(Self {
            dev,
            cpu,
            handle,
            size,
        })
    }

    /// Bus (guest-physical) address of the first byte.
    pub(crate) fn dma_handle(&self) -> u64 {
        self.handle
    }

    fn at<T>(&self, offset: usize) -> Result<*mut T> {
        let end = offset
            .checked_add(core::mem::size_of::<T>())
            .ok_or(EINVAL)?;
        if end > self.size || offset % core::mem::align_of::<T>() != 0 {
            return Err(EINVAL);
        }
        // SAFETY: in bounds (checked above) of the allocation.
        Ok(unsafe { self.cpu.as_ptr().add(offset) }.cast())
    }

    /// Reads a `T` at byte `offset` (volatile: the card may write concurrently).
    ///
    /// The copy is done field by field in no promised order: for an entry
    /// the card fills while the CPU may look at it, read the field the card
    /// writes last first, then [`read_barrier`], then the rest.
    pub(crate) fn read<T: FromBytes>(&self, offset: usize) -> Result<T> {
        let p = self.at::<T>(offset)?;
        // SAFETY: `p` is aligned and in bounds; any bit pattern is a valid `T`.
        Ok(unsafe { core::ptr::read_volatile(p) })
    }

    /// Writes a `T` at byte `offset`.
    pub(crate) fn write<T: AsBytes>(&self, offset: usize, value: &T) -> Result {
        let p = self.at::<T>(offset)?;
        // SAFETY: `p` is aligned and in bounds; `T` is plain data.
        unsafe { core::ptr::write_volatile(p, core::ptr::read(value)) };
        Ok(())
    }

    /// Zeroes the whole buffer.
    pub(crate) fn zero(&self) {
        for i in 0..self.size {
            // SAFETY: `i < size`, inside the allocation.
            unsafe { core::ptr::write_volatile(self.cpu.as_ptr().add(i), 0) };
        }
    }
}

impl Drop for CoherentAllocation {
    fn drop(&mut self) {
        // `size` fitted a c_ulong when allocated.
        let len = self.size as core::ffi::c_ulong;
        // SAFETY: frees exactly the allocation made in `new` (type invariant).
        unsafe {
            ffi::dia_shim_dma_free(
                self.dev.as_raw(),
                len,
                self.cpu.as_ptr().cast(),
                self.handle,
            )
        }
    }
}

/// Orders reads of DMA memory (`dma_rmb`): reads after it see at least what
/// the device wrote before whatever the reads before it saw.
pub(crate) fn read_barrier() {
    // SAFETY: a barrier; no arguments, no state.
    unsafe { ffi::dia_shim_dma_rmb() };
}

/// A full barrier (`mb`): every access before it, register writes included,
/// is visible before any access after it (a store then a load of shared
/// memory, where the card does the opposite pair).
pub(crate) fn full_barrier() {
    // SAFETY: a barrier; no arguments, no state.
    unsafe { ffi::dia_shim_mb() };
}
