//! A userspace test driver that plays the guest's dia driver against the real
//! card controller, in-process: BAR2 and guest RAM are memfds mapped twice
//! (once for the card, once for the driver), doorbells and interrupts are
//! real eventfds. Checks the register handshake, Identify, queue wrap-around,
//! I/O queue management, that malformed commands get an error status while
//! the card keeps serving, and the storage path: namespaces, I/O on several
//! queues at once, data surviving a firmware crash and restart, and remote
//! namespaces served from another card's NVMe/TCP target, and mirrored
//! namespaces whose plexes are other cards' exports and the card's own pool.
//!
//! `driver` is the card and its admin queue, `io` and `port` what the
//! storage and network tests drive; the queue and port ring bookkeeping is
//! the kernel module's own (`kmod/ring.rs`, `kmod/port_ring.rs`, included
//! as kmod/host-tests includes them), so the tests drive the card with the
//! driver's logic, not a second copy of it.

mod admin;
mod driver;
mod io;
mod mirror;
mod network;
mod port;
mod remote;
mod storage;

#[path = "../../../../kmod/ring.rs"]
mod ring;

#[expect(dead_code, reason = "the driver uses every item, the tests only some")]
#[path = "../../../../kmod/port_ring.rs"]
mod port_ring;
