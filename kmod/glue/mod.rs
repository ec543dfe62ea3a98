//! The glue layer: safe Rust wrappers over the kernel C APIs that Linux 6.12's
//! `kernel` crate lacks (PCI driver and BARs, MSI-X and IRQs, DMA coherent
//! memory, misc device, completions). Every `unsafe` use of the generated
//! bindings lives here; the rest of the driver is safe Rust. The shapes copy
//! later upstream abstractions (`pci::Driver`, `io::Io`, `dma::CoherentAllocation`,
//! `irq::Registration`, `MiscDevice`) so a newer kernel deletes glue, not driver code.

mod ffi;

pub(crate) mod blk;
pub(crate) mod completion;
pub(crate) mod cred;
pub(crate) mod dma;
pub(crate) mod errno;
pub(crate) mod irq;
pub(crate) mod miscdev;
pub(crate) mod mmio;
pub(crate) mod net;
pub(crate) mod pci;
pub(crate) mod time;
pub(crate) mod uaccess;
pub(crate) mod work;

use kernel::error::{Error, Result};

/// Converts a C return value (0 or a negative errno) into a `Result`.
fn check(ret: core::ffi::c_int) -> Result {
    if ret < 0 {
        Err(Error::from_errno(ret))
    } else {
        Ok(())
    }
}
