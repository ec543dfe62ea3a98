//! The controller's admin command handling: sequences of admin commands
//! (Identify, queue and namespace management, log pages, QoS, ports,
//! Abort, Create Remote and Mirror Namespace, Set Mirror Plexes, Set Plex
//! Record, unknown opcodes) with their data
//! (namespace, QoS, port and remote namespace structures, or raw bytes)
//! anywhere in guest memory, on a card with or without a pool.
//!
//! Every command must complete with a status, and none may make the
//! controller fatal or panic: what a command says is never the card's
//! reason to stop (`AdminBench::run` checks both).

#![no_main]

use arbitrary::Arbitrary;
use dia_abi::card::{self as abi, SubmissionEntry};
use dia_card_model::fuzz::AdminBench;
use libfuzzer_sys::fuzz_target;

const RAM: usize = 2 << 20;
/// Pages the commands point at start here (below: the admin queues).
const DATA: u64 = 0x1_0000;
const VECTORS: u16 = 8;

const OPCODES: [u8; 17] = [
    abi::ADMIN_IDENTIFY,
    abi::ADMIN_CREATE_IO_CQ,
    abi::ADMIN_CREATE_IO_SQ,
    abi::ADMIN_DELETE_IO_SQ,
    abi::ADMIN_DELETE_IO_CQ,
    abi::ADMIN_GET_LOG_PAGE,
    abi::ADMIN_NS_MANAGEMENT,
    abi::ADMIN_NS_ATTACHMENT,
    abi::ADMIN_SET_QOS,
    abi::ADMIN_CREATE_PORT,
    abi::ADMIN_DELETE_PORT,
    abi::ADMIN_SET_PORT,
    abi::ADMIN_ABORT,
    abi::ADMIN_CREATE_REMOTE_NS,
    abi::ADMIN_CREATE_MIRROR_NS,
    abi::ADMIN_SET_MIRROR_PLEXES,
    abi::ADMIN_SET_PLEX_RECORD,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Page(u8),
    Offset(u8, u16),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Self::Page(p) => DATA + u64::from(p) * 4096,
            Self::Offset(p, o) => DATA + u64::from(p) * 4096 + u64::from(o),
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dword {
    Small(u8),
    /// Queue id and entries - 1 (Create I/O CQ/SQ CDW10), or log page id
    /// and dwords - 1 (Get Log Page).
    Pair(u8, u8),
    Raw(u32),
}

impl Dword {
    fn get(self) -> u32 {
        match self {
            Self::Small(v) => u32::from(v),
            Self::Pair(lo, hi) => u32::from(lo) | u32::from(hi) << 16,
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct PortCfg {
    vlan: u16,
    mtu: u16,
    reserved: bool,
    max_bits_per_s: u64,
    max_pps: u64,
    burst_ms: u16,
}

impl PortCfg {
    fn get(self) -> abi::PortConfig {
        abi::PortConfig {
            vlan: self.vlan % 4200,
            mtu: self.mtu % 9100,
            reserved: u32::from(self.reserved),
            limits: abi::PortLimits {
                max_bits_per_s: self.max_bits_per_s,
                max_pps: self.max_pps,
                burst_ms: u32::from(self.burst_ms),
                reserved: 0,
            },
        }
    }
}

/// What the command's PRP1 points at.
#[derive(Arbitrary, Debug)]
enum Data {
    Nothing,
    Raw(Vec<u8>),
    NamespaceCreate {
        size_blocks: u64,
        small: bool,
        lba_shift: u8,
        reserved: bool,
    },
    Qos {
        min_iops: u64,
        max_iops: u64,
        min_bytes_per_s: u64,
        max_bytes_per_s: u64,
        weight: u16,
        burst_ms: u16,
    },
    PortCreate {
        config: PortCfg,
        tx_ring: Addr,
        rx_ring: Addr,
        tx_entries: u16,
        rx_entries: u16,
        vector: u8,
        reserved: bool,
    },
    PortConfig(PortCfg),
    /// Dataset-style ranges or PRP list entries: u64s.
    Words(Vec<u64>),
    /// Create Remote Namespace data: a valid request, then one byte
    /// changed (the fuzz build's card connects nowhere: a valid one is
    /// Remote Unreachable).
    RemoteCreate {
        addr: [u8; 4],
        port: u16,
        nsid: u32,
        digests: u8,
        damage: Option<(u16, u8)>,
    },
}

fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: the ABI structures are repr(C) plain data without padding
    // (their sizes are asserted in dia-abi); reading their bytes is sound.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Nothing => Vec::new(),
            Self::Raw(b) => b.iter().copied().take(8192).collect(),
            Self::NamespaceCreate {
                size_blocks,
                small,
                lba_shift,
                reserved,
            } => {
                let mut c = abi::NamespaceCreate {
                    size_blocks: if *small {
                        size_blocks % 100_000
                    } else {
                        *size_blocks
                    },
                    lba_shift: *lba_shift,
                    ..Default::default()
                };
                c.reserved[0] = u8::from(*reserved);
                c.label[..4].copy_from_slice(b"fuzz");
                bytes_of(&c)
            }
            Self::Qos {
                min_iops,
                max_iops,
                min_bytes_per_s,
                max_bytes_per_s,
                weight,
                burst_ms,
            } => bytes_of(&abi::QosSettings {
                min_iops: *min_iops,
                max_iops: *max_iops,
                min_bytes_per_s: *min_bytes_per_s,
                max_bytes_per_s: *max_bytes_per_s,
                weight: u32::from(*weight),
                burst_ms: u32::from(*burst_ms),
            }),
            Self::PortCreate {
                config,
                tx_ring,
                rx_ring,
                tx_entries,
                rx_entries,
                vector,
                reserved,
            } => bytes_of(&abi::PortCreate {
                config: config.get(),
                tx_ring: tx_ring.get(),
                rx_ring: rx_ring.get(),
                tx_entries: *tx_entries,
                rx_entries: *rx_entries,
                vector: u16::from(*vector),
                reserved: u16::from(*reserved),
                ..Default::default()
            }),
            Self::PortConfig(c) => bytes_of(&c.get()),
            Self::Words(w) => w.iter().take(1024).flat_map(|v| v.to_le_bytes()).collect(),
            Self::RemoteCreate {
                addr,
                port,
                nsid,
                digests,
                damage,
            } => {
                let mut c = abi::RemoteNamespaceCreate::default();
                if let Ok(t) = abi::RemoteTarget::new(
                    &std::net::Ipv4Addr::from(*addr).to_string(),
                    *port,
                    *nsid,
                    "nqn.2026-12.io.dia:FUZZ:ns1",
                    *digests,
                ) {
                    c.target = t;
                }
                let mut b = bytes_of(&c);
                if let Some((at, byte)) = damage {
                    let at = usize::from(*at) % b.len();
                    b[at] = *byte;
                }
                b
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Cmd {
    /// An opcode the card knows (by index), or any byte.
    known: Option<u8>,
    raw_opcode: u8,
    /// Non-zero flags are refused; mostly none.
    flags: Option<u8>,
    nsid: Dword,
    prp1: Addr,
    prp2: Addr,
    cdw10: Dword,
    cdw11: Dword,
    cdw12: u32,
    data: Data,
}

#[derive(Arbitrary, Debug)]
struct Input {
    with_pool: bool,
    cmds: Vec<Cmd>,
}

fuzz_target!(|input: Input| {
    let mut bench = AdminBench::new(RAM, VECTORS, input.with_pool);
    for cmd in input.cmds.iter().take(48) {
        let opcode = cmd
            .known
            .map_or(cmd.raw_opcode, |k| OPCODES[usize::from(k) % OPCODES.len()]);
        let prp1 = cmd.prp1.get();
        let data = cmd.data.bytes();
        if !data.is_empty() {
            let end = (prp1.saturating_add(data.len() as u64)).min(RAM as u64);
            if prp1 < end {
                let _ = bench.mem().write(prp1, &data[..(end - prp1) as usize]);
            }
        }
        let sqe = SubmissionEntry {
            opcode,
            flags: cmd.flags.unwrap_or(0),
            nsid: cmd.nsid.get(),
            prp1,
            prp2: cmd.prp2.get(),
            cdw10: cmd.cdw10.get(),
            cdw11: cmd.cdw11.get(),
            cdw12: cmd.cdw12,
            ..Default::default()
        };
        bench.run(sqe);
    }
});
