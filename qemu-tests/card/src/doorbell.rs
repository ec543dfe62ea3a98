//! Eventfds: the card's doorbells (the guest's ivshmem doorbell writes land
//! on them) and the guest's interrupt lines (writing one raises that MSI-X
//! vector in the guest).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::eventfd::{EfdFlags, EventFd as NixEventFd};

/// A non-blocking eventfd.
#[derive(Debug)]
pub struct EventFd(NixEventFd);

impl EventFd {
    /// A new eventfd with counter 0.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self(NixEventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?))
    }

    /// Wraps an eventfd descriptor handed over by the board process.
    ///
    /// # Safety
    ///
    /// `fd` must be an eventfd (non-blocking, as [`Self::new`] makes them).
    pub unsafe fn from_owned_fd(fd: OwnedFd) -> Self {
        // SAFETY: the caller guarantees `fd` is an eventfd.
        Self(unsafe { NixEventFd::from_owned_fd(fd) })
    }

    /// Adds one to the counter (wakes the reader).
    pub fn signal(&self) {
        // A full counter (2^64-2 pending) cannot happen with a live reader;
        // a failed write would only drop a wake-up.
        let _ = self.0.write(1);
    }

    /// Reads and clears the counter; returns whether it was non-zero.
    pub fn drain(&self) -> bool {
        self.0.read().map(|n| n > 0).unwrap_or(false)
    }

    /// Another handle on the same eventfd (for a test driver).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        let fd = self.try_clone_fd()?;
        // SAFETY: `fd` is a fresh duplicate of an eventfd descriptor.
        Ok(Self(unsafe { NixEventFd::from_owned_fd(fd) }))
    }

    /// A duplicate of the descriptor, to hand to QEMU.
    pub fn try_clone_fd(&self) -> std::io::Result<OwnedFd> {
        self.0.as_fd().try_clone_to_owned()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// The guest's interrupt vectors.
#[derive(Debug)]
pub struct Interrupts {
    vectors: Vec<EventFd>,
}

impl Interrupts {
    /// Wraps one eventfd per vector.
    pub fn new(vectors: Vec<EventFd>) -> Self {
        Self { vectors }
    }

    /// Raises `vector` (ignored if out of range: the driver asked for a
    /// vector the card does not have, which Create I/O CQ already refuses).
    pub fn raise(&self, vector: u16) {
        if let Some(v) = self.vectors.get(usize::from(vector)) {
            v.signal();
        }
    }
}
