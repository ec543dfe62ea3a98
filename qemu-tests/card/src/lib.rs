//! The dia card's firmware as a library: shared-memory registers (`bar`),
//! guest memory for DMA (`guest_memory`), doorbell and interrupt eventfds
//! (`doorbell`), the hardware they make up (`board`), queues (`queue`,
//! `prp`), the controller that executes admin commands (`controller`), the
//! I/O queue engines (`io_queue`), which pass every I/O command through the
//! storage QoS scheduler (`qos`, ceilings on `token_bucket`) and execute it
//! (`nvm`) on the flash pool (`pool`) or, for a remote namespace, on its
//! NVMe/TCP target (`remote`, over `fabric::initiator`), a firmware that can be killed and
//! restarted (`firmware`; in the binary, a process of its own under the
//! board process: `supervisor`), the network function (`net`: ports, embedded
//! switch, uplink, rate limits, checksum offload), fault injection (`fault`)
//! and the ivshmem server QEMU connects to (`ivshmem`). The `dia-card` binary
//! wires them together; tests drive the controller directly as a userspace
//! driver. With the `fuzzing` feature, `fuzz` gives the cargo-fuzz targets
//! in `fuzz/` their way in (not an API); `bench` does the same for the
//! benchmarks in `benches/` and `examples/card_costs.rs` (not an API either).

mod attached;
mod bar;
#[doc(hidden)]
pub mod bench;
mod board;
mod controller;
mod doorbell;
mod fabric;
mod fault;
mod firmware;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
mod guest_memory;
mod inline_vec;
mod io_queue;
mod ivshmem;
mod mirror;
mod net;
mod nvm;
mod pool;
mod prp;
pub mod qos;
mod queue;
mod remote;
mod scratch;
mod supervisor;
mod token_bucket;

pub use bar::Bar;
pub use board::Board;
pub use controller::{CardConfig, Controller};
pub use doorbell::{EventFd, Interrupts};
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use fabric::fuzz as fabric_fuzz;
pub use fabric::initiator as fabric_initiator;
pub use fabric::{
    serve as serve_fabric, PoolSource, Target as FabricTarget, TargetConfig as FabricConfig,
    MAX_CONNECTIONS as FABRIC_MAX_CONNECTIONS,
};
pub use fault::{Fault, FaultError};
pub use firmware::{serve_control, Firmware, FirmwareControl};
pub use guest_memory::{GuestMemory, MemoryError, SharedMemory};
pub use ivshmem::Server;
pub use net::MAX_PORTS;
pub use pool::{Pool, PoolSpec, CHUNK_BYTES, MAX_NAMESPACES};
pub use supervisor::{FirmwareFds, FirmwareProcess, InheritedFds};
