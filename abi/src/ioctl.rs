//! The `/dev/dia` ioctl ABI, version 1: request numbers and argument structs.
//! This file is the single definition; it is dependency-free (`core` only) so
//! the kernel module includes it with `#[path]` and libdia uses it through the
//! `dia-abi` crate. Fixed-size `#[repr(C)]` types only. See `docs/ioctl-abi.md`.

/// ioctl "type" byte of every dia request.
pub const DIA_IOC_MAGIC: u8 = b'D';
/// Version of this ABI; reported in [`DiaIdentity::abi_version`].
pub const DIA_ABI_VERSION: u32 = 1;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
/// Direction bit: userspace writes (the kernel reads the argument).
pub const IOC_WRITE: u32 = 1;
/// Direction bit: userspace reads (the kernel writes the argument).
pub const IOC_READ: u32 = 2;

/// Encodes a request number as Linux's `_IOC(dir, type, nr, size)` does (x86, arm, riscv).
pub const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    dir << IOC_DIRSHIFT
        | (DIA_IOC_MAGIC as u32) << IOC_TYPESHIFT
        | (nr as u32) << IOC_NRSHIFT
        | (size as u32) << IOC_SIZESHIFT
}

/// Size encoded in a request number.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// The card's identity as the driver reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaIdentity {
    /// [`DIA_ABI_VERSION`] of the driver.
    pub abi_version: u32,
    /// Card interface version (major << 16 | minor).
    pub interface_version: u32,
    /// Capability bits (`CARD_CAP_*` in the card interface).
    pub capabilities: u64,
    /// Pool capacity in bytes.
    pub pool_bytes: u64,
    /// PCI vendor id reported by the card.
    pub vendor_id: u16,
    /// PCI subsystem vendor id reported by the card.
    pub subsystem_vendor_id: u16,
    /// Maximum I/O queue pairs the card offers.
    pub max_io_queues: u16,
    /// Maximum entries per queue.
    pub max_queue_entries: u16,
    /// Maximum namespaces.
    pub max_namespaces: u32,
    /// Maximum network ports.
    pub max_ports: u32,
    /// MSI-X vectors the driver enabled.
    pub msix_vectors: u32,
    /// I/O queue pairs the driver created.
    pub io_queues: u32,
    /// Serial number, ASCII, space padded.
    pub serial: [u8; 20],
    /// Model, ASCII, space padded.
    pub model: [u8; 40],
    /// Firmware revision, ASCII, space padded.
    pub firmware: [u8; 8],
    /// Reserved, zero.
    pub reserved: [u8; 44],
}
const _: () = assert!(core::mem::size_of::<DiaIdentity>() == 160);

impl Default for DiaIdentity {
    fn default() -> Self {
        Self {
            abi_version: 0,
            interface_version: 0,
            vendor_id: 0,
            subsystem_vendor_id: 0,
            max_io_queues: 0,
            max_queue_entries: 0,
            serial: [0; 20],
            model: [0; 40],
            firmware: [0; 8],
            capabilities: 0,
            max_namespaces: 0,
            max_ports: 0,
            pool_bytes: 0,
            msix_vectors: 0,
            io_queues: 0,
            reserved: [0; 44],
        }
    }
}

/// `DIA_IOC_IDENTIFY`: read the card's identity (asks the card afresh).
pub const DIA_IOC_IDENTIFY: u32 = ioc(IOC_READ, 0x01, core::mem::size_of::<DiaIdentity>());
