//! PCI driver registration and the device-side resources a probe acquires
//! (enable, regions, MSI-X vectors, DMA mask), each released by a guard's
//! `Drop`. Mirrors the shape of upstream's later `kernel::pci`.

use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::error::{code::EINVAL, Error, Result};
use kernel::prelude::*;
use kernel::str::CStr;

use super::{check, ffi};

/// A PCI function this driver is bound to.
///
/// # Invariants
///
/// `raw` points at a `struct pci_dev` that stays valid from the driver's
/// `probe` until its `remove` returns; every `Device` (and every guard holding
/// one) is dropped before `remove` returns or `probe` fails.
#[derive(Clone, Copy)]
pub(crate) struct Device {
    raw: NonNull<ffi::pci_dev>,
}

// SAFETY: the PCI core functions used through `Device` may be called from any
// thread; the pointer itself is just an identifier of the bound function.
unsafe impl Send for Device {}
// SAFETY: as above, `&Device` exposes no unsynchronised mutation.
unsafe impl Sync for Device {}

impl Device {
    pub(super) fn as_raw(&self) -> *mut ffi::pci_dev {
        self.raw.as_ptr()
    }

    /// The function's PCI name, such as `0000:00:04.0`.
    pub(crate) fn name(&self) -> &CStr {
        // SAFETY: `raw` is valid (type invariant); `pci_name` returns the
        // NUL-terminated name of the embedded `struct device`, which lives
        // as long as the `pci_dev`.
        unsafe { CStr::from_char_ptr(ffi::dia_shim_pci_name(self.as_raw()).cast()) }
    }

    /// Vendor id from config space.
    pub(crate) fn vendor_id(&self) -> u16 {
        // SAFETY: `raw` is valid (type invariant).
        unsafe { ffi::dia_shim_pci_vendor(self.as_raw()) }
    }

    /// Device id from config space.
    pub(crate) fn device_id(&self) -> u16 {
        // SAFETY: `raw` is valid (type invariant).
        unsafe { ffi::dia_shim_pci_device(self.as_raw()) }
    }

    /// Length of BAR `bar` in bytes (0 if absent).
    pub(crate) fn bar_len(&self, bar: i32) -> u64 {
        // SAFETY: `raw` is valid (type invariant); out-of-range BARs read 0 in C.
        unsafe { ffi::dia_shim_pci_bar_len(self.as_raw(), bar) }
    }

    /// Enables memory decoding and bus mastering; undone when the guard drops.
    pub(crate) fn enable(&self) -> Result<Enabled> {
        // SAFETY: `raw` is valid (type invariant).
        check(unsafe { ffi::dia_shim_pci_enable(self.as_raw()) })?;
        Ok(Enabled { dev: *self })
    }

    /// Stops the function's bus mastering: it can no longer read or write
    /// memory (what the PCI core guarantees for a real device; the emulated
    /// card cannot see its command register, see docs/card-interface.md).
    pub(crate) fn clear_master(&self) {
        // SAFETY: `raw` is valid (type invariant).
        unsafe { ffi::dia_shim_pci_clear_master(self.as_raw()) }
    }

    /// Claims the function's BARs for this driver; released when the guard drops.
    pub(crate) fn request_regions(&self) -> Result<Regions> {
        // SAFETY: `raw` is valid (type invariant).
        check(unsafe { ffi::dia_shim_pci_request_regions(self.as_raw()) })?;
        Ok(Regions { dev: *self })
    }

    /// Sets the streaming and coherent DMA masks.
    pub(crate) fn set_dma_mask(&self, bits: u32) -> Result {
        // SAFETY: `raw` is valid (type invariant).
        check(unsafe { ffi::dia_shim_dma_set_mask(self.as_raw(), bits) })
    }

    /// Allocates between `min` and `max` MSI-X vectors; freed when the guard drops.
    pub(crate) fn alloc_msix(&self, min: u32, max: u32) -> Result<IrqVectors> {
        // SAFETY: `raw` is valid (type invariant).
        let n = unsafe { ffi::dia_shim_alloc_msix(self.as_raw(), min, max) };
        check(n)?;
        Ok(IrqVectors {
            dev: *self,
            count: u32::try_from(n).map_err(|_| EINVAL)?,
        })
    }
}

/// The function is enabled (memory decoding + bus master).
pub(crate) struct Enabled {
    dev: Device,
}

impl Drop for Enabled {
    fn drop(&mut self) {
        // SAFETY: the device is valid (invariant of `Device`) and was enabled by us.
        unsafe { ffi::dia_shim_pci_disable(self.dev.as_raw()) }
    }
}

/// The function's BARs are claimed.
pub(crate) struct Regions {
    dev: Device,
}

impl Drop for Regions {
    fn drop(&mut self) {
        // SAFETY: the device is valid and its regions were requested by us.
        unsafe { ffi::dia_shim_pci_release_regions(self.dev.as_raw()) }
    }
}

/// Allocated MSI-X vectors. Every `irq::Registration` on them must drop first.
pub(crate) struct IrqVectors {
    dev: Device,
    count: u32,
}

impl IrqVectors {
    /// How many vectors were allocated.
    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}

impl Drop for IrqVectors {
    fn drop(&mut self) {
        // SAFETY: the device is valid and the vectors were allocated by us.
        unsafe { ffi::dia_shim_free_vectors(self.dev.as_raw()) }
    }
}

/// A PCI driver: what to do when a matching function appears and goes.
pub(crate) trait Driver {
    /// Per-function state, owned by the PCI core between probe and remove.
    type Data: Send + Sync;
    /// Binds to `dev`; an error leaves the function unbound.
    fn probe(dev: Device) -> Result<KBox<Self::Data>>;
    /// Unbinds: called once, with what `probe` returned.
    fn remove(dev: Device, data: KBox<Self::Data>);
}

/// Registration of driver `T` with the PCI core; unregisters on drop.
pub(crate) struct Registration<T: Driver> {
    _driver: PhantomData<T>,
}

impl<T: Driver> Registration<T> {
    /// Registers `T` for functions with this vendor/device id.
    pub(crate) fn new(vendor: u16, device: u16) -> Result<Self> {
        // SAFETY: the callbacks are valid for the lifetime of the module; the
        // C side keeps one registration, which `Drop` removes.
        check(unsafe {
            ffi::dia_shim_pci_register(
                vendor,
                device,
                Some(probe_callback::<T>),
                Some(remove_callback::<T>),
            )
        })?;
        Ok(Self {
            _driver: PhantomData,
        })
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered in `new`; this calls `remove` for bound functions.
        unsafe { ffi::dia_shim_pci_unregister() }
    }
}

/// Called by the PCI core (through the shim) for a matching function.
///
/// # Safety
///
/// `pdev` must be a valid `pci_dev` that stays valid until `remove_callback`.
unsafe extern "C" fn probe_callback<T: Driver>(pdev: *mut ffi::pci_dev) -> core::ffi::c_int {
    let Some(raw) = NonNull::new(pdev) else {
        return EINVAL.to_errno();
    };
    // INVARIANT: the PCI core keeps `pdev` valid until `remove` returns.
    let dev = Device { raw };
    match T::probe(dev) {
        Ok(data) => {
            // SAFETY: `pdev` is valid; the pointer is reclaimed in `remove_callback`.
            unsafe { ffi::dia_shim_pci_set_drvdata(pdev, KBox::into_raw(data).cast()) };
            0
        }
        Err(e) => Error::to_errno(e),
    }
}

/// Called by the PCI core (through the shim) when the function goes away.
///
/// # Safety
///
/// `pdev` must be a function `probe_callback` bound successfully, passed once.
unsafe extern "C" fn remove_callback<T: Driver>(pdev: *mut ffi::pci_dev) {
    let Some(raw) = NonNull::new(pdev) else {
        return;
    };
    // SAFETY: `pdev` is valid during remove.
    let data = unsafe { ffi::dia_shim_pci_get_drvdata(pdev) }.cast::<T::Data>();
    if data.is_null() {
        return;
    }
    // SAFETY: `data` came from `KBox::into_raw` in `probe_callback` and is
    // reclaimed exactly once, here.
    let data = unsafe { KBox::from_raw(data) };
    // SAFETY: clear the stale pointer before the box is dropped.
    unsafe { ffi::dia_shim_pci_set_drvdata(pdev, core::ptr::null_mut()) };
    T::remove(Device { raw }, data);
}
