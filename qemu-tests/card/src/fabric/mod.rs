//! The card's storage fabric, target side: an NVMe over Fabrics TCP target
//! (NVMe/TCP transport 1.0, NVMe-oF 1.1) serving the card's own namespaces
//! to remote hosts, one subsystem per namespace, from a TCP endpoint of the
//! card process (`dia-card --fabric-listen`). `pdu` is the wire codec,
//! `command`/`identify` the NVMe structures, `controller` the subsystems and
//! controllers, `admin`/`io` the commands, `queue` one connection's state
//! machine and `target` its sockets and threads. See docs/fabric.md.
//! `initiator` is the host side, the card connecting to a remote target
//! (docs/fabric-initiator.md).

mod admin;
mod command;
mod controller;
mod digest;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod identify;
pub mod initiator;
mod io;
mod pdu;
mod queue;
mod target;
#[cfg(test)]
mod tests;

pub(crate) use controller::NQN_PREFIX;
pub use controller::{PoolSource, TargetConfig};
pub use target::{serve, Target};

/// Entries per queue (CAP.MQES + 1, MAXCMD).
pub const QUEUE_ENTRIES: u16 = 128;
/// I/O queues per controller.
pub const MAX_IO_QUEUES: u16 = 8;
/// In-capsule data a command capsule may carry (IOCCSZ is 64 bytes more;
/// the Linux host uses 8 KiB on the admin queue whatever IOCCSZ says).
pub const IN_CAPSULE_BYTES: usize = 8192;
/// MDTS as a power of two of 4 KiB pages: 512 KiB per command.
pub const MDTS_SHIFT: u8 = 7;
/// Largest data transfer of one command.
pub const MDTS_BYTES: u32 = 4096 << MDTS_SHIFT;
/// Largest H2CData payload (MAXH2CDATA in ICResp).
pub const MAXH2CDATA: u32 = 64 << 10;
/// Data bytes in one C2HData PDU the target sends.
pub const C2H_DATA_BYTES: usize = 64 << 10;
/// R2Ts outstanding per connection; later writes wait for a slot (bounds
/// a connection's buffered write data to this many times MDTS).
pub const MAX_TRANSFERS: usize = 16;
/// Default most connections at once (all hosts, all queues).
pub const MAX_CONNECTIONS: u16 = 64;
