//! Memory the card shares with others: a `SharedMemory` mapping (of a memfd
//! or a file), and `GuestMemory`, the guest's RAM seen through such a mapping
//! where a guest-physical address is an offset. Every access is bounds-checked:
//! a bad address from the guest becomes an error, never a crash.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use thiserror::Error;

/// An access outside guest memory.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("guest address {addr:#x}+{len} is outside guest memory ({size:#x} bytes)")]
pub struct MemoryError {
    /// Start of the access.
    pub addr: u64,
    /// Length of the access.
    pub len: usize,
    /// Size of guest memory.
    pub size: usize,
}

/// A shared mapping of `len` bytes.
///
/// # Invariants
///
/// `ptr` is a live `MAP_SHARED` read/write mapping of `len` bytes, unmapped
/// only in `drop`. Other processes may write it at any time, so it is only
/// accessed through raw pointers (copies or atomics), never as `&[u8]`.
#[derive(Debug)]
pub struct SharedMemory {
    ptr: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
}

// SAFETY: the mapping is process-wide memory; all access is via raw copies
// or atomics, which are sound to do from any thread.
unsafe impl Send for SharedMemory {}
// SAFETY: as above; `&self` methods never create references to the bytes.
unsafe impl Sync for SharedMemory {}

impl SharedMemory {
    /// Maps `fd` (already `len` bytes long).
    pub fn map(fd: OwnedFd, len: usize) -> std::io::Result<Self> {
        let size = std::num::NonZeroUsize::new(len).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty mapping")
        })?;
        // SAFETY: a fresh shared mapping of a descriptor we own; no existing
        // Rust memory is affected.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                0,
            )
        }?;
        // INVARIANT: live shared mapping of `len` bytes.
        Ok(Self {
            ptr: ptr.cast(),
            len,
            fd,
        })
    }

    /// An anonymous shared memory object (memfd) of `len` zero bytes.
    pub fn anonymous(name: &str, len: usize) -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, i64::try_from(len).map_err(std::io::Error::other)?)?;
        Self::map(fd, len)
    }

    /// Opens (creating and sizing if needed) and maps the file at `path`.
    pub fn file(path: &Path, len: usize) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let want = u64::try_from(len).map_err(std::io::Error::other)?;
        if file.metadata()?.len() != want {
            file.set_len(want)?;
        }
        Self::map(file.into(), len)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `map` refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor behind the mapping (to pass to QEMU).
    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize, MemoryError> {
        let err = MemoryError {
            addr: offset,
            len,
            size: self.len,
        };
        let start = usize::try_from(offset).map_err(|_| err.clone())?;
        match start.checked_add(len) {
            Some(end) if end <= self.len => Ok(start),
            _ => Err(err),
        }
    }

    /// Pointer to `offset` if `[offset, offset+len)` is inside the mapping.
    pub(crate) fn ptr_at(&self, offset: u64, len: usize) -> Result<*mut u8, MemoryError> {
        let start = self.check(offset, len)?;
        // SAFETY: `start + len <= self.len`, inside the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(start) })
    }

    /// Copies bytes out of the mapping.
    pub fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        let p = self.ptr_at(offset, out.len())?;
        // SAFETY: `p..p+len` is inside the live mapping; `out` is our own
        // buffer and cannot overlap a shared mapping.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies bytes into the mapping.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), MemoryError> {
        let p = self.ptr_at(offset, data.len())?;
        // SAFETY: as in `read`, in the other direction.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Fills a range with zeroes.
    pub fn zero(&self, offset: u64, len: usize) -> Result<(), MemoryError> {
        let p = self.ptr_at(offset, len)?;
        // SAFETY: the range is inside the live mapping.
        unsafe { std::ptr::write_bytes(p, 0, len) };
        Ok(())
    }
}

impl Clone for MemoryError {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map` (type invariant).
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// Plain-old-data types that may be copied to and from guest memory.
///
/// # Safety
///
/// Implementors must be `repr(C)` integers/arrays with no padding, valid for
/// every bit pattern.
pub unsafe trait Pod: Copy + Default {}
// SAFETY: repr(C), integer fields only, sizes asserted in dia-abi (no padding).
unsafe impl Pod for dia_abi::card::SubmissionEntry {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::CompletionEntry {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::IdentifyController {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::IdentifyNamespace {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::NamespaceCreate {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::RemoteNamespaceCreate {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::PoolStatus {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::MirrorNamespaceCreate {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::MirrorStatus {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::PlexRecord {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::DsmRange {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::QosSettings {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::NamespaceStats {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::PortCreate {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::PortConfig {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::PortStats {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::TxDescriptor {}
// SAFETY: as above.
unsafe impl Pod for dia_abi::card::RxDescriptor {}

/// The bytes of a plain-data value.
pub(crate) fn pod_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so every byte is initialised; the
    // slice borrows `v` for its lifetime.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A plain-data value from the start of `b` (zero-extended if `b` is short).
pub(crate) fn pod_from_bytes<T: Pod>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = b.len().min(std::mem::size_of::<T>());
    // SAFETY: copies at most size_of::<T>() bytes into `v`; any bit pattern
    // is a valid `T: Pod`.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), (&mut v as *mut T).cast::<u8>(), n) };
    v
}

/// Guest RAM: guest-physical address == offset into the shared RAM file.
#[derive(Debug)]
pub struct GuestMemory {
    mem: SharedMemory,
}

impl GuestMemory {
    /// Wraps the mapping of guest RAM.
    pub fn new(mem: SharedMemory) -> Self {
        Self { mem }
    }

    /// Size of guest RAM.
    pub fn size(&self) -> usize {
        self.mem.len()
    }

    /// Copies `out.len()` bytes from guest-physical `addr`.
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemoryError> {
        self.mem.read(addr, out)
    }

    /// Copies `data` to guest-physical `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.mem.write(addr, data)
    }

    /// A raw pointer to `len` bytes at guest-physical `addr`, for DMA by the
    /// kernel (preadv/pwritev). Bounds-checked; never turned into a reference.
    pub(crate) fn dma_ptr(&self, addr: u64, len: usize) -> Result<*mut u8, MemoryError> {
        self.mem.ptr_at(addr, len)
    }

    /// Reads a `T` from guest-physical `addr`.
    pub fn read_obj<T: Pod>(&self, addr: u64) -> Result<T, MemoryError> {
        let p = self.mem.ptr_at(addr, std::mem::size_of::<T>())?;
        // SAFETY: in bounds; `T: Pod` is valid for any bytes; unaligned read.
        Ok(unsafe { std::ptr::read_unaligned(p.cast::<T>()) })
    }

    /// Writes a `T` to guest-physical `addr`.
    pub fn write_obj<T: Pod>(&self, addr: u64, value: &T) -> Result<(), MemoryError> {
        let p = self.mem.ptr_at(addr, std::mem::size_of::<T>())?;
        // SAFETY: in bounds; unaligned write of plain data.
        unsafe { std::ptr::write_unaligned(p.cast::<T>(), *value) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = GuestMemory::new(SharedMemory::anonymous("t", 8192).unwrap());
        let mut b = [0u8; 16];
        assert!(m.read(8192 - 16, &mut b).is_ok());
        assert!(m.read(8192 - 15, &mut b).is_err());
        assert!(m.read(u64::MAX, &mut b).is_err());
        assert!(m.read(u64::MAX - 4, &mut b).is_err());
        m.write(100, b"hello").unwrap();
        let mut h = [0u8; 5];
        m.read(100, &mut h).unwrap();
        assert_eq!(&h, b"hello");
        let e = m.write(8190, b"xyz").unwrap_err();
        assert_eq!(e.addr, 8190);
    }
}
