//! dia's two contracts, each written once: the card interface (registers,
//! queue entries, commands) and the `/dev/dia` ioctl ABI. Both files are
//! `core`-only so the kernel module includes them verbatim.
#![no_std]

pub mod card;
pub mod ioctl;
