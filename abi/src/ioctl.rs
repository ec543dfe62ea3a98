//! The `/dev/dia` ioctl ABI, version 1: request numbers and argument structs.
//! This file is the single definition; it is dependency-free (`core` only) so
//! the kernel module includes it with `#[path]` and libdia uses it through the
//! `dia-abi` crate. Fixed-size `#[repr(C)]` types only. See `docs/ioctl-abi.md`.

/// ioctl "type" byte of every dia request.
pub const DIA_IOC_MAGIC: u8 = b'D';
/// Version of this ABI; reported in [`DiaIdentity::abi_version`].
pub const DIA_ABI_VERSION: u32 = 7;

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
    pub reserved0: [u8; 4],
    /// Storage QoS capacity floors are admitted against, I/Os per second.
    pub qos_capacity_iops: u64,
    /// Storage QoS capacity, bytes per second.
    pub qos_capacity_bytes_per_s: u64,
    /// Reserved, zero.
    pub reserved: [u8; 24],
}
const _: () = assert!(core::mem::size_of::<DiaIdentity>() == 160);
const _: () = assert!(core::mem::offset_of!(DiaIdentity, qos_capacity_iops) == 120);

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
            reserved0: [0; 4],
            qos_capacity_iops: 0,
            qos_capacity_bytes_per_s: 0,
            reserved: [0; 24],
        }
    }
}

/// `DIA_IOC_IDENTIFY`: read the card's identity (asks the card afresh).
pub const DIA_IOC_IDENTIFY: u32 = ioc(IOC_READ, 0x01, core::mem::size_of::<DiaIdentity>());

/// Longest label of a namespace.
pub const DIA_LABEL_LEN: usize = 64;
/// Longest block device name (e.g. `dia0n12`), NUL padded.
pub const DIA_DISK_NAME_LEN: usize = 32;
/// Most namespaces one [`DiaNsList`] reports.
pub const DIA_NS_LIST_MAX: usize = 256;

/// Argument of `DIA_IOC_NS_CREATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsCreate {
    /// In: size in bytes (a multiple of the block size, > 0).
    pub size_bytes: u64,
    /// In: log2 of the block size, 9..=12.
    pub lba_shift: u32,
    /// Out: the new namespace id.
    pub nsid: u32,
    /// In: label, NUL padded.
    pub label: [u8; DIA_LABEL_LEN],
}
const _: () = assert!(core::mem::size_of::<DiaNsCreate>() == 80);

impl Default for DiaNsCreate {
    fn default() -> Self {
        Self {
            size_bytes: 0,
            lba_shift: 12,
            nsid: 0,
            label: [0; DIA_LABEL_LEN],
        }
    }
}

/// Argument of `DIA_IOC_NS_DELETE`, `DIA_IOC_NS_ATTACH`, `DIA_IOC_NS_DETACH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaNsId {
    /// Namespace id.
    pub nsid: u32,
    /// Reserved, must be zero.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DiaNsId>() == 8);

/// Argument of `DIA_IOC_NS_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsInfo {
    /// In: namespace id.
    pub nsid: u32,
    /// Out: log2 of the block size.
    pub lba_shift: u32,
    /// Out: size in blocks.
    pub size_blocks: u64,
    /// Out: blocks allocated in the pool.
    pub used_blocks: u64,
    /// Out: 1 when attached (and a block device exists).
    pub attached: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: label, NUL padded.
    pub label: [u8; DIA_LABEL_LEN],
    /// Out: block device name when attached (e.g. `dia0n1`), NUL padded.
    pub disk_name: [u8; DIA_DISK_NAME_LEN],
}
const _: () = assert!(core::mem::size_of::<DiaNsInfo>() == 128);

impl Default for DiaNsInfo {
    fn default() -> Self {
        Self {
            nsid: 0,
            lba_shift: 0,
            size_blocks: 0,
            used_blocks: 0,
            attached: 0,
            reserved: 0,
            label: [0; DIA_LABEL_LEN],
            disk_name: [0; DIA_DISK_NAME_LEN],
        }
    }
}

/// Argument of `DIA_IOC_NS_LIST`: every namespace on the card.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsList {
    /// Out: number of valid entries in `nsids`.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: namespace ids, ascending.
    pub nsids: [u32; DIA_NS_LIST_MAX],
}
const _: () = assert!(core::mem::size_of::<DiaNsList>() == 8 + 4 * DIA_NS_LIST_MAX);

impl Default for DiaNsList {
    fn default() -> Self {
        Self {
            count: 0,
            reserved: 0,
            nsids: [0; DIA_NS_LIST_MAX],
        }
    }
}

/// Argument of `DIA_IOC_POOL_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaPoolInfo {
    /// Capacity for namespace data in bytes.
    pub total_bytes: u64,
    /// Bytes allocated.
    pub used_bytes: u64,
    /// Namespaces on the card.
    pub namespaces: u32,
    /// Most namespaces the card holds.
    pub max_namespaces: u32,
    /// Thin allocation unit in bytes.
    pub chunk_bytes: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<DiaPoolInfo>() == 32);

/// `DIA_IOC_NS_CREATE`: create a thin namespace (not attached).
pub const DIA_IOC_NS_CREATE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x10,
    core::mem::size_of::<DiaNsCreate>(),
);
/// `DIA_IOC_NS_DELETE`: delete a detached namespace (`EBUSY` while attached).
pub const DIA_IOC_NS_DELETE: u32 = ioc(IOC_WRITE, 0x11, core::mem::size_of::<DiaNsId>());
/// `DIA_IOC_NS_ATTACH`: attach; the block device `/dev/dia<card>n<nsid>` appears.
pub const DIA_IOC_NS_ATTACH: u32 = ioc(IOC_WRITE, 0x12, core::mem::size_of::<DiaNsId>());
/// `DIA_IOC_NS_DETACH`: remove the block device, then detach (`EBUSY` while open).
pub const DIA_IOC_NS_DETACH: u32 = ioc(IOC_WRITE, 0x13, core::mem::size_of::<DiaNsId>());
/// `DIA_IOC_NS_INFO`: one namespace.
pub const DIA_IOC_NS_INFO: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x14,
    core::mem::size_of::<DiaNsInfo>(),
);
/// `DIA_IOC_NS_LIST`: every namespace id.
pub const DIA_IOC_NS_LIST: u32 = ioc(IOC_READ, 0x15, core::mem::size_of::<DiaNsList>());
/// `DIA_IOC_POOL_INFO`: the flash pool.
pub const DIA_IOC_POOL_INFO: u32 = ioc(IOC_READ, 0x16, core::mem::size_of::<DiaPoolInfo>());

/// Argument of `DIA_IOC_NS_SET_QOS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaNsQos {
    /// In: namespace id.
    pub nsid: u32,
    /// Out: on `EDQUOT`, the I/Os per second the floors exceed the card by
    /// (in: zero).
    pub excess_iops: u32,
    /// In: the service level, as the card takes it.
    pub qos: super::card::QosSettings,
}
const _: () = assert!(core::mem::size_of::<DiaNsQos>() == 48);

/// Argument of `DIA_IOC_NS_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaNsStats {
    /// In: namespace id.
    pub nsid: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: the card's counters (`super::card::NamespaceStats` layout).
    pub stats: super::card::NamespaceStats,
}
const _: () =
    assert!(core::mem::size_of::<DiaNsStats>() == 8 + 64 + 8 * super::card::LATENCY_BUCKETS);

/// `DIA_IOC_NS_SET_QOS`: set a namespace's floors, ceilings and weight
/// (`EDQUOT` when the card cannot guarantee the floors, `EINVAL` for a floor
/// above its ceiling).
pub const DIA_IOC_NS_SET_QOS: u32 =
    ioc(IOC_READ | IOC_WRITE, 0x17, core::mem::size_of::<DiaNsQos>());
/// `DIA_IOC_NS_STATS`: a namespace's counters.
pub const DIA_IOC_NS_STATS: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x18,
    core::mem::size_of::<DiaNsStats>(),
);

/// Argument of `DIA_IOC_NS_CREATE_REMOTE` (ABI 5): a namespace whose data
/// lives in a namespace of an NVMe/TCP target, reached by the card.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsCreateRemote {
    /// Out: the new namespace id (zero on input).
    pub nsid: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// In: the card's Create Remote Namespace data (target, label; its
    /// reserved bytes zero), checked with
    /// [`super::card::RemoteNamespaceCreate::validate`].
    pub create: super::card::RemoteNamespaceCreate,
}
const _: () = assert!(core::mem::size_of::<DiaNsCreateRemote>() == 520);

/// `DIA_IOC_NS_CREATE_REMOTE`: create a (detached) namespace whose data is
/// on an NVMe/TCP target; the card connects once to size it. `EINVAL` for a
/// malformed target, `EHOSTUNREACH` when no NVMe/TCP association could be
/// made, `ECONNREFUSED` when the target refused (no such subsystem or
/// namespace, host not allowed), `EOPNOTSUPP` on a card without a pool.
pub const DIA_IOC_NS_CREATE_REMOTE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x19,
    core::mem::size_of::<DiaNsCreateRemote>(),
);

/// Argument of `DIA_IOC_NS_CREATE_MIRROR` (ABI 6): a namespace whose data
/// is kept in several plexes, each behind an NVMe/TCP target.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsCreateMirror {
    /// Out: the new namespace id (zero on input).
    pub nsid: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// In: the card's Create Mirror Namespace data (label, generation,
    /// plexes), checked with
    /// [`super::card::MirrorNamespaceCreate::validate`].
    pub create: super::card::MirrorNamespaceCreate,
}
const _: () = assert!(core::mem::size_of::<DiaNsCreateMirror>() == 1544);

/// `DIA_IOC_NS_CREATE_MIRROR`: create a (detached) mirrored namespace.
/// `EINVAL` for a malformed table, `EHOSTUNREACH` when no in-sync plex
/// could be reached, `ECONNREFUSED` when a target refused, `EMEDIUMTYPE`
/// when the plexes differ in size or block size, `ESTALE` when the plexes'
/// records say a newer copy exists than any reachable one (the card's
/// `STATUS_MIRROR_STALE`), `ENOSPC` when the card has no free namespace
/// id, `EOPNOTSUPP` on a card without mirrors.
pub const DIA_IOC_NS_CREATE_MIRROR: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x1a,
    core::mem::size_of::<DiaNsCreateMirror>(),
);

/// Argument of `DIA_IOC_NS_SET_MIRROR` (ABI 6): a mirrored namespace's
/// new plex table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaNsSetMirror {
    /// In: the mirrored namespace.
    pub nsid: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// In: the new plex table (label and generation ignored), checked
    /// with [`super::card::MirrorNamespaceCreate::validate`].
    pub plexes: super::card::MirrorNamespaceCreate,
}
const _: () = assert!(core::mem::size_of::<DiaNsSetMirror>() == 1544);

/// `DIA_IOC_NS_SET_MIRROR`: add, drop or replace plexes of a mirrored
/// namespace, live (card command Set Mirror Plexes). `EINVAL` for a
/// malformed table, a new plex not given as new, or a namespace that is
/// not mirrored; `ENOENT` for no such namespace; `EBUSY` when no in-sync
/// plex would be left; `EOPNOTSUPP` on a card without it.
pub const DIA_IOC_NS_SET_MIRROR: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x1c,
    core::mem::size_of::<DiaNsSetMirror>(),
);

/// Argument of `DIA_IOC_NS_MIRROR_STATUS` (ABI 6).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaNsMirrorStatus {
    /// In: namespace id.
    pub nsid: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: the card's log page ([`super::card::MirrorStatus`]).
    pub status: super::card::MirrorStatus,
}
const _: () = assert!(core::mem::size_of::<DiaNsMirrorStatus>() == 328);

/// `DIA_IOC_NS_MIRROR_STATUS`: a mirrored namespace's plexes (state, path,
/// regions behind, resync progress). `ENOENT` for no such namespace,
/// `EINVAL` for one that is not mirrored.
pub const DIA_IOC_NS_MIRROR_STATUS: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x1b,
    core::mem::size_of::<DiaNsMirrorStatus>(),
);

// ---------------------------------------------------------------------------
// Network ports (ABI 4).
// ---------------------------------------------------------------------------

/// Longest network interface name (Linux's IFNAMSIZ), NUL padded.
pub const DIA_IFNAME_LEN: usize = 16;
/// Most ports one [`DiaPortList`] reports.
pub const DIA_PORT_LIST_MAX: usize = 256;

/// Argument of `DIA_IOC_PORT_CREATE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaPortCreate {
    /// In: VLAN, MTU and limits (`super::card::PortConfig`).
    pub config: super::card::PortConfig,
    /// Out: the card's port id.
    pub port: u32,
    /// Out: the MAC the card gave the port.
    pub mac: [u8; 6],
    /// Reserved, zero.
    pub reserved: [u8; 2],
    /// Out: the net device, `dia<card>p<port>`, in the initial network
    /// namespace, down.
    pub ifname: [u8; DIA_IFNAME_LEN],
}
const _: () = assert!(core::mem::size_of::<DiaPortCreate>() == 64);

/// Argument of `DIA_IOC_PORT_DELETE`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaPortId {
    /// In: port id.
    pub port: u32,
    /// In: reserved, zero.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<DiaPortId>() == 8);

/// Argument of `DIA_IOC_PORT_SET`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaPortSet {
    /// In: port id.
    pub port: u32,
    /// In: reserved, zero.
    pub flags: u32,
    /// In: the new VLAN, MTU (also set on the net device) and limits.
    pub config: super::card::PortConfig,
}
const _: () = assert!(core::mem::size_of::<DiaPortSet>() == 40);

/// Argument of `DIA_IOC_PORT_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiaPortInfo {
    /// In: port id.
    pub port: u32,
    /// Out: bit 0 link up (as the card reports it).
    pub link: u32,
    /// Out: the net device's name when the port was created (it may have
    /// been renamed and moved to another network namespace since).
    pub ifname: [u8; DIA_IFNAME_LEN],
    /// Out: the net device's ifindex in its namespace.
    pub ifindex: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: the MAC.
    pub mac: [u8; 6],
    /// Reserved, zero.
    pub reserved2: [u8; 2],
    /// Out: the current configuration.
    pub config: super::card::PortConfig,
    /// Out: the card's counters.
    pub stats: super::card::PortStats,
}
const _: () = assert!(core::mem::size_of::<DiaPortInfo>() == 152);

/// Argument of `DIA_IOC_PORT_LIST`: every port on the card.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiaPortList {
    /// Out: entries of `ports` used.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Out: port ids.
    pub ports: [u32; DIA_PORT_LIST_MAX],
}
const _: () = assert!(core::mem::size_of::<DiaPortList>() == 8 + 4 * DIA_PORT_LIST_MAX);

impl Default for DiaPortList {
    fn default() -> Self {
        Self {
            count: 0,
            reserved: 0,
            ports: [0; DIA_PORT_LIST_MAX],
        }
    }
}

/// `DIA_IOC_PORT_CREATE`: create a port and its net device (`EINVAL`: bad
/// VLAN/MTU/limits; `ENOSPC`: every port id or vector in use; `ENODEV`:
/// the card has no network capability).
pub const DIA_IOC_PORT_CREATE: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x20,
    core::mem::size_of::<DiaPortCreate>(),
);
/// `DIA_IOC_PORT_DELETE`: unregister the net device (wherever it is) and
/// delete the port.
pub const DIA_IOC_PORT_DELETE: u32 = ioc(IOC_WRITE, 0x21, core::mem::size_of::<DiaPortId>());
/// `DIA_IOC_PORT_SET`: change a live port's VLAN, MTU and limits.
pub const DIA_IOC_PORT_SET: u32 = ioc(IOC_WRITE, 0x22, core::mem::size_of::<DiaPortSet>());
/// `DIA_IOC_PORT_INFO`: one port, with its counters.
pub const DIA_IOC_PORT_INFO: u32 = ioc(
    IOC_READ | IOC_WRITE,
    0x23,
    core::mem::size_of::<DiaPortInfo>(),
);
/// `DIA_IOC_PORT_LIST`: every port id.
pub const DIA_IOC_PORT_LIST: u32 = ioc(IOC_READ, 0x24, core::mem::size_of::<DiaPortList>());
