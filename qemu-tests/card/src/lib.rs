//! The dia card's firmware as a library: shared-memory registers (`bar`),
//! guest memory for DMA (`guest_memory`), queues (`queue`), the controller
//! that executes commands (`controller`), fault injection (`fault`) and the
//! ivshmem server QEMU connects to (`ivshmem`). The `dia-card` binary wires
//! them together; tests drive the controller directly as a userspace driver.

mod bar;
mod controller;
mod doorbell;
mod fault;
mod guest_memory;
mod ivshmem;
mod queue;

pub use bar::Bar;
pub use controller::{CardConfig, Controller};
pub use doorbell::{EventFd, Interrupts};
pub use fault::{Fault, FaultError};
pub use guest_memory::{GuestMemory, MemoryError, SharedMemory};
pub use ivshmem::Server;
