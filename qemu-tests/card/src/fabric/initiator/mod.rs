//! The card's storage fabric, host side: an NVMe/TCP initiator (NVMe/TCP
//! transport 1.0, NVMe-oF 1.1) that connects to a remote subsystem — another
//! card's target or Linux's nvmet — so the card can serve a namespace whose
//! data lives elsewhere. See docs/fabric-initiator.md.
//!
//! `receive` is the receive path without I/O (every PDU from the target
//! checked against the commands in flight; what the fuzz target drives),
//! `transport` one connection (ICReq/ICResp, a reader and a writer thread,
//! command ids, per-command timeouts), `admin` the admin queue's steps
//! (Connect, properties, enable, Identify, features, keep-alive),
//! `identify` the Identify pages as the host reads them, `session` the
//! public [`Session`] and [`RemoteNamespace`], `error` the errors.
//!
//! The wire layouts are the target's: `pdu` (PDUs, digests), `command`
//! (the 64-byte command, Connect data, status codes).

mod admin;
mod error;
mod identify;
pub(crate) mod receive;
mod session;
#[cfg(test)]
mod tests;
mod transport;

use std::time::Duration;

pub use error::{Error, Status, TransportError};
pub use identify::{ControllerInfo, NamespaceInfo, ONCS_DSM, ONCS_WRITE_ZEROES};
pub use session::{host_id, Config, RemoteNamespace, Session};

/// Entries of the admin queue the initiator asks for (Connect SQSIZE + 1).
pub const ADMIN_QUEUE_ENTRIES: u16 = 32;
/// In-capsule data the admin queue takes (NVMe/TCP: 8 KiB, whatever IOCCSZ
/// says); Connect's 1024 bytes go in the capsule.
pub const ADMIN_IN_CAPSULE_BYTES: usize = 8192;
/// Most in-capsule data on an I/O queue, whatever IOCCSZ allows.
pub const MAX_IN_CAPSULE_BYTES: usize = 64 << 10;
/// Most data one command moves (and one C2HData PDU may carry): reads and
/// writes larger than this, or than the target's MDTS, are split.
pub const MAX_COMMAND_BYTES: usize = 1 << 20;
/// Largest queue (entries) the initiator asks for.
pub const MAX_QUEUE_ENTRIES: u16 = 1024;
/// Most I/O queues the initiator asks for.
pub const MAX_IO_QUEUES: u16 = 64;
/// Smallest MAXH2CDATA a target may announce (NVMe/TCP 1.0).
pub const MIN_MAXH2CDATA: u32 = 4096;
/// Blocks one Read, Write or Write Zeroes may cover (NLB is 16 bits).
pub const MAX_BLOCKS_PER_COMMAND: u64 = 1 << 16;
/// Ranges one Dataset Management command may carry (NR is 8 bits).
pub const MAX_DSM_RANGES: usize = 256;
/// Smallest and largest logical block size (log2) the initiator uses.
pub const LBA_SHIFT_RANGE: std::ops::RangeInclusive<u8> = 9..=16;
/// How often enabling polls CSTS.RDY.
pub const ENABLE_POLL: Duration = Duration::from_millis(10);
/// Default time a command may take before the connection is given up.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time to open a TCP connection and exchange ICReq/ICResp.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default longest wait for CSTS.RDY after CC.EN.
pub const DEFAULT_ENABLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default Keep Alive Timeout asked for in the admin Connect.
pub const DEFAULT_KATO: Duration = Duration::from_secs(10);
/// How often the keep-alive thread looks whether its session still lives.
pub const KEEP_ALIVE_TICK: Duration = Duration::from_millis(50);
/// Default host NQN.
pub const DEFAULT_HOST_NQN: &str = "nqn.2026-12.io.dia:initiator";
