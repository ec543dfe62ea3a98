//! A mapped PCI BAR with bounds-checked 32/64-bit register access, in the
//! shape of upstream's later `kernel::io::Io` (runtime-checked `try_*` form).

use core::ffi::c_void;
use core::ptr::NonNull;

use kernel::error::{code::EINVAL, code::ENOMEM, Result};

use super::ffi;
use super::pci::Device;

/// An iomapped BAR.
///
/// # Invariants
///
/// `addr` is the `pci_iomap` mapping of `len` bytes of BAR `bar` of `dev`,
/// unmapped only in `drop`.
pub(crate) struct Bar {
    dev: Device,
    addr: NonNull<c_void>,
    len: usize,
}

// SAFETY: MMIO accessors may be used from any thread; the mapping is fixed.
unsafe impl Send for Bar {}
// SAFETY: all accessors take `&self` and are single MMIO accesses.
unsafe impl Sync for Bar {}

impl Bar {
    /// Maps BAR `bar` of `dev` (regions must be requested).
    pub(crate) fn map(dev: Device, bar: i32) -> Result<Self> {
        let len = usize::try_from(dev.bar_len(bar)).map_err(|_| EINVAL)?;
        if len == 0 {
            return Err(EINVAL);
        }
        // SAFETY: `dev` is valid (its invariant); the mapping is released in `drop`.
        let addr = unsafe { ffi::dia_shim_pci_iomap(dev.as_raw(), bar) };
        // INVARIANT: non-NULL mapping of `len` bytes of the BAR.
        Ok(Self {
            dev,
            addr: NonNull::new(addr).ok_or(ENOMEM)?,
            len,
        })
    }

    /// Size of the BAR in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn at(&self, offset: usize, size: usize) -> Result<*mut c_void> {
        let end = offset.checked_add(size).ok_or(EINVAL)?;
        if end > self.len || offset % size != 0 {
            return Err(EINVAL);
        }
        // SAFETY: `offset + size <= len`, so the result stays inside the mapping.
        Ok(unsafe { self.addr.as_ptr().cast::<u8>().add(offset) }.cast())
    }

    /// Reads a 32-bit register.
    pub(crate) fn read32(&self, offset: usize) -> Result<u32> {
        let p = self.at(offset, 4)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        Ok(unsafe { ffi::dia_shim_readl(p) })
    }

    /// Writes a 32-bit register.
    pub(crate) fn write32(&self, offset: usize, value: u32) -> Result {
        let p = self.at(offset, 4)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        unsafe { ffi::dia_shim_writel(value, p) };
        Ok(())
    }

    /// Reads a 64-bit register.
    pub(crate) fn read64(&self, offset: usize) -> Result<u64> {
        let p = self.at(offset, 8)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        Ok(unsafe { ffi::dia_shim_readq(p) })
    }

    /// Writes a 64-bit register.
    pub(crate) fn write64(&self, offset: usize, value: u64) -> Result {
        let p = self.at(offset, 8)?;
        // SAFETY: `p` is an aligned address inside the mapping.
        unsafe { ffi::dia_shim_writeq(value, p) };
        Ok(())
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map` for this device (type invariant).
        unsafe { ffi::dia_shim_pci_iounmap(self.dev.as_raw(), self.addr.as_ptr()) }
    }
}
