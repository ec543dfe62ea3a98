//! The card's hardware as the firmware sees it: the register BAR, the
//! guest's memory (for DMA), the doorbell eventfds the guest rings and the
//! interrupt eventfds the card raises. It outlives any one run of the
//! firmware, so a firmware restart finds the same device.

use crate::bar::Bar;
use crate::doorbell::{EventFd, Interrupts};
use crate::guest_memory::GuestMemory;

/// The card's hardware.
#[derive(Debug)]
pub struct Board {
    /// BAR2 registers and doorbell values.
    pub bar: Bar,
    /// Guest RAM (guest-physical address = offset).
    pub mem: GuestMemory,
    /// The guest's MSI-X vectors.
    pub irq: Interrupts,
    /// Doorbells: index 0 for the admin queue and register changes, index
    /// `qid` for I/O submission queue `qid`.
    pub doorbells: Vec<EventFd>,
}
