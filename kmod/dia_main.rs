//! dia: the Linux driver for the dia converged container IO card.
//!
//! The card is both the storage and the network controller for the
//! containers on a host. This module binds it over PCI, brings up its
//! NVMe-shaped admin queue with MSI-X, presents each attached namespace
//! as a block device and each port as a net device, and exposes `/dev/dia`
//! for configuration. See `docs/architecture.md` for how the pieces fit.

use kernel::prelude::*;

mod abi;
mod card;
mod chardev;
mod controller;
mod glue;
mod io_path;
mod port;
mod port_ring;
mod ring;
mod slots;
mod write_cache;

module! {
    type: DiaModule,
    name: "dia",
    author: "dia developers",
    description: "Driver for the dia converged container IO card",
    license: "GPL v2",
}

struct DiaModule {
    _pci: glue::pci::Registration<card::CardDriver>,
}

impl kernel::Module for DiaModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        pr_info!(
            "loading (card interface {}.x, ioctl ABI {})\n",
            abi::card::INTERFACE_VERSION >> 16,
            abi::ioctl::DIA_ABI_VERSION
        );
        let pci = glue::pci::Registration::new(abi::card::PCI_VENDOR_ID, abi::card::PCI_DEVICE_ID)?;
        Ok(Self { _pci: pci })
    }
}

impl Drop for DiaModule {
    fn drop(&mut self) {
        pr_info!("unloading\n");
    }
}
