//! BAR2 as the card sees it: the shared-memory register file. Registers are
//! read and written with atomics (the driver writes them from another
//! process); offsets come from `dia_abi::card`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::guest_memory::SharedMemory;

/// The card's register BAR.
#[derive(Debug)]
pub struct Bar {
    mem: SharedMemory,
}

impl Bar {
    /// Wraps a shared mapping of at least `BAR2_MIN_SIZE` bytes.
    pub fn new(mem: SharedMemory) -> std::io::Result<Self> {
        if mem.len() < dia_abi::card::BAR2_MIN_SIZE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "BAR2 smaller than BAR2_MIN_SIZE",
            ));
        }
        Ok(Self { mem })
    }

    /// The shared memory behind the BAR (to pass its fd to QEMU).
    pub fn memory(&self) -> &SharedMemory {
        &self.mem
    }

    fn atomic32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.mem.len(),
            "register offset {off:#x} is a card bug"
        );
        // PANIC: offsets are constants from dia_abi, all inside BAR2_MIN_SIZE.
        let p = self.mem.ptr_at(off as u64, 4).expect("checked above");
        // SAFETY: aligned, in bounds, lives as long as `self`; atomics are
        // the right way to share memory with another process.
        unsafe { &*p.cast::<AtomicU32>() }
    }

    fn atomic64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.mem.len(),
            "register offset {off:#x} is a card bug"
        );
        // PANIC: as in `atomic32`.
        let p = self.mem.ptr_at(off as u64, 8).expect("checked above");
        // SAFETY: as in `atomic32`.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// Reads a 32-bit register.
    pub fn read32(&self, off: usize) -> u32 {
        u32::from_le(self.atomic32(off).load(Ordering::Acquire))
    }

    /// Writes a 32-bit register.
    pub fn write32(&self, off: usize, v: u32) {
        self.atomic32(off).store(v.to_le(), Ordering::Release)
    }

    /// Reads a 64-bit register.
    pub fn read64(&self, off: usize) -> u64 {
        u64::from_le(self.atomic64(off).load(Ordering::Acquire))
    }

    /// Writes a 64-bit register.
    pub fn write64(&self, off: usize, v: u64) {
        self.atomic64(off).store(v.to_le(), Ordering::Release)
    }
}
