//! Network ports on the controller: Create/Delete/Set Port and the port
//! stats log page, the vector each port interrupts on, and recreating the
//! ports after a card reset (same ids, so MACs stay). The net device of a
//! port is registered by the caller outside the controller lock (see
//! `card.rs`): the RTNL is never taken while the controller is locked.

use core::mem::offset_of;

use kernel::error::code::{EINVAL, ENODEV, ENOENT, ENOSPC};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::Arc;

use super::Controller;
use crate::abi::card::{self as regs, PortConfig, PortCreate, PortStats, SubmissionEntry};
use crate::abi::ioctl::{DiaPortInfo, DIA_IFNAME_LEN};
use crate::glue::irq;
use crate::glue::net::NetDev;
use crate::port::{PortIrq, PortPath, RX_ENTRIES, TX_ENTRIES};

/// A port the controller has created on the card.
pub(crate) struct PortEntry {
    // Field order is drop order: the interrupt goes before the rings.
    _irq: irq::Registration<PortIrq>,
    pub(crate) path: Arc<PortPath>,
    config: PortConfig,
    mac: [u8; 6],
    ifname: [u8; DIA_IFNAME_LEN],
}

impl PortEntry {
    /// Frees the interrupt and hands back the rings.
    pub(crate) fn into_path(self) -> Arc<PortPath> {
        drop(self._irq);
        self.path
    }
}

/// What the caller needs to register a new port's net device.
pub(crate) struct NewPort {
    pub(crate) id: u16,
    pub(crate) mac: [u8; 6],
    pub(crate) ifname: [u8; DIA_IFNAME_LEN],
    pub(crate) path: Arc<PortPath>,
}

/// Checks a configuration before the card sees it (the ABI's rule, the one
/// the card applies).
fn check_config(c: &PortConfig) -> Result {
    c.validate().map_err(|_| EINVAL)
}

impl Controller {
    /// The slot of port `id`.
    fn port_slot(&self, id: u32) -> Result<usize> {
        self.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| u32::from(p.path.id) == id))
            .ok_or(ENOENT)
    }

    /// The port in slot `i` (from [`Self::port_slot`]).
    fn port_at(&self, i: usize) -> Result<&PortEntry> {
        self.ports.get(i).and_then(Option::as_ref).ok_or(ENOENT)
    }

    fn port(&self, id: u32) -> Result<&PortEntry> {
        self.port_at(self.port_slot(id)?)
    }

    /// The lowest MSI-X vector no I/O queue and no port uses.
    fn free_port_vector(&self) -> Option<u16> {
        let first = self.io_queues() + 1;
        (first..self.vectors.count())
            .filter_map(|v| u16::try_from(v).ok())
            .find(|v| !self.ports.iter().flatten().any(|p| p.path.vector == *v))
    }

    /// Create Port on the card for `path`'s rings; returns (id, MAC).
    fn create_port_on_card(
        &mut self,
        want: u16,
        config: &PortConfig,
        path: &PortPath,
    ) -> Result<(u16, [u8; 6])> {
        let create = PortCreate {
            config: *config,
            tx_ring: path.tx_ring_dma(),
            rx_ring: path.rx_ring_dma(),
            tx_entries: TX_ENTRIES,
            rx_entries: RX_ENTRIES,
            vector: path.vector,
            ..PortCreate::default()
        };
        self.buf.zero();
        self.buf.write(0, &create)?;
        let cqe = self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_CREATE_PORT,
            prp1: self.buf.dma_handle(),
            cdw10: regs::PortTarget { port: want }.cdw10(),
            ..SubmissionEntry::default()
        })?;
        let id = u16::try_from(cqe.result).map_err(|_| EIO)?;
        let mac: [u8; 6] = self.buf.read(offset_of!(PortCreate, mac))?;
        Ok((id, mac))
    }

    /// Creates a port: rings, interrupt and (unregistered) net device, then
    /// the port on the card. The caller registers the net device.
    ///
    /// The driver owns every port of the card (a reset or reload deletes
    /// them all), so it picks the lowest free id itself: the device name
    /// (`dia<card>p<port>`) is then known before the card is asked.
    pub(crate) fn port_create(&mut self, config: &PortConfig) -> Result<NewPort> {
        check_config(config)?;
        if !self.network {
            return Err(ENODEV);
        }
        let vector = self.free_port_vector().ok_or(ENOSPC)?;
        let id = (1..=self.max_ports)
            .filter_map(|i| u16::try_from(i).ok())
            .find(|i| !self.ports.iter().flatten().any(|p| p.path.id == *i))
            .ok_or(ENOSPC)?;
        let dev = self.hw.dev;
        let name = CString::try_from_fmt(kernel::fmt!("dia{}p{}", self.index, id))?;
        let tso_max = self.tso.then_some(regs::PORT_TSO_FRAME_MAX);
        let nd = NetDev::new(dev, &name, config.mtu, tso_max)?;
        let path = PortPath::new(dev, self.hw.clone(), nd.clone(), id, vector)?;
        let (got, mac) = match self.create_port_on_card(id, config, &path) {
            Ok(made) => made,
            Err(e) => {
                // Not answered (the controller is failed now): the card may
                // have made the port on these rings.
                let answered = !self.failed;
                self.release_rings(path, answered);
                return Err(e);
            }
        };
        if got != id {
            pr_err!(
                "{}: asked for port {}, the card made {}\n",
                self.name(),
                id,
                got
            );
            // The card's port is not ours to keep.
            let confirmed = self.port_delete_on_card(u32::from(got)).is_ok();
            self.release_rings(path, confirmed);
            return Err(EIO);
        }
        nd.set_mac(&mac);
        path.start_on_card();
        let handler = Arc::new(PortIrq { path: path.clone() }, GFP_KERNEL)?;
        let irq = match irq::Registration::new(
            dev,
            &self.vectors,
            u32::from(vector),
            kernel::c_str!("dia-port"),
            handler,
        ) {
            Ok(irq) => irq,
            Err(e) => {
                let confirmed = self.port_delete_on_card(u32::from(id)).is_ok();
                self.release_rings(path, confirmed);
                return Err(e);
            }
        };
        let ifname = ifname_bytes(&name);
        let entry = PortEntry {
            _irq: irq,
            path: path.clone(),
            config: *config,
            mac,
            ifname,
        };
        if let Err(entry) = crate::slots::insert_or_return(&mut self.ports, entry) {
            // No room: the port exists on the card; delete it there first.
            let path = entry.into_path();
            let confirmed = self.port_delete_on_card(u32::from(id)).is_ok();
            self.release_rings(path, confirmed);
            return Err(ENOMEM);
        }
        pr_info!(
            "{}: port {} ({}) created: VLAN {}, MTU {}, vector {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\n",
            self.name(),
            id,
            &*name,
            config.vlan,
            config.mtu,
            vector,
            mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
        );
        Ok(NewPort {
            id,
            mac,
            ifname,
            path,
        })
    }

    fn port_delete_on_card(&mut self, id: u32) -> Result {
        let port = u16::try_from(id).map_err(|_| EINVAL)?;
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_DELETE_PORT,
            cdw10: regs::PortTarget { port }.cdw10(),
            ..SubmissionEntry::default()
        })
        .map(drop)
    }

    /// Deletes port `id` on the card and frees its rings, or keeps them
    /// until the next reset when the card did not confirm.
    pub(crate) fn port_delete(&mut self, id: u32) -> Result {
        let i = self.port_slot(id)?;
        let confirmed = match self.port_delete_on_card(id) {
            Ok(()) => true,
            Err(e) => {
                pr_warn!(
                    "{}: port {}: the card did not confirm Delete Port ({:?}); its rings are kept until the card is reset\n",
                    self.name(),
                    id,
                    e
                );
                false
            }
        };
        // Frees the interrupt; the rings go or wait for a reset.
        if let Some(entry) = self.ports.get_mut(i).and_then(Option::take) {
            let path = entry.into_path();
            self.release_rings(path, confirmed);
        }
        pr_info!("{}: port {} deleted\n", self.name(), id);
        Ok(())
    }

    /// Gives a port's rings back once the card confirmed it no longer uses
    /// them; otherwise parks them until a reset confirms it (leaked if even
    /// parking fails: never freed under the card).
    fn release_rings(&mut self, path: Arc<PortPath>, confirmed: bool) {
        if confirmed {
            drop(path);
        } else if self.parked.reserve(1, GFP_KERNEL).is_err() {
            core::mem::forget(path);
        } else {
            // Room was just reserved: this push does not allocate.
            let _ = self.parked.push(path, GFP_KERNEL);
        }
    }

    /// Changes a live port's VLAN, MTU and limits; returns its net device
    /// (whose MTU the caller sets outside the controller lock).
    pub(crate) fn port_set(&mut self, id: u32, config: &PortConfig) -> Result<Arc<NetDev>> {
        check_config(config)?;
        let i = self.port_slot(id)?;
        let nd = self.port_at(i)?.path.nd.clone();
        self.buf.zero();
        self.buf.write(0, config)?;
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_SET_PORT,
            prp1: self.buf.dma_handle(),
            cdw10: regs::PortTarget {
                port: u16::try_from(id).map_err(|_| EINVAL)?,
            }
            .cdw10(),
            ..SubmissionEntry::default()
        })?;
        if let Some(p) = self.ports.get_mut(i).and_then(Option::as_mut) {
            p.config = *config;
        }
        Ok(nd)
    }

    /// One port, with the card's counters.
    pub(crate) fn port_info(&mut self, id: u32) -> Result<DiaPortInfo> {
        let (config, mac, ifname, ifindex, link) = {
            let p = self.port(id)?;
            (
                p.config,
                p.mac,
                p.ifname,
                p.path.nd.ifindex(),
                p.path.link_up(),
            )
        };
        self.buf.zero();
        self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_GET_LOG_PAGE,
            prp1: self.buf.dma_handle(),
            cdw10: regs::LogPage::of_bytes(
                regs::LogId::PortStats,
                core::mem::size_of::<PortStats>(),
            )
            .cdw10(),
            cdw11: regs::PortStatsLog {
                port: u16::try_from(id).map_err(|_| EINVAL)?,
            }
            .cdw11(),
            ..SubmissionEntry::default()
        })?;
        let stats: PortStats = self.buf.read(0)?;
        Ok(DiaPortInfo {
            port: id,
            link: u32::from(link),
            ifname,
            ifindex,
            reserved: 0,
            mac,
            reserved2: [0; 2],
            config,
            stats,
        })
    }

    /// Ids of every port.
    pub(crate) fn port_ids(&self, out: &mut [u32]) -> usize {
        let mut n = 0;
        for (slot, p) in out.iter_mut().zip(self.ports.iter().flatten()) {
            *slot = u32::from(p.path.id);
            n += 1;
        }
        n
    }

    /// Turns every port's carrier off (the card is gone).
    pub(crate) fn ports_link_down(&self) {
        for p in self.ports.iter().flatten() {
            p.path.link_down();
        }
    }

    /// After a card reset: every port again, with the same id and rings.
    pub(crate) fn recreate_ports(&mut self) -> Result {
        let mut list = KVec::new();
        for p in self.ports.iter().flatten() {
            list.push((p.path.clone(), p.config), GFP_KERNEL)?;
        }
        for (path, config) in list.iter() {
            path.reset_rings();
            let (id, _) = self.create_port_on_card(path.id, config, path)?;
            if id != path.id {
                pr_err!(
                    "{}: port {} came back as port {}\n",
                    self.name(),
                    path.id,
                    id
                );
                return Err(EIO);
            }
            path.start_on_card();
            // A failed recovery before this one took the carrier down.
            path.update_link();
        }
        Ok(())
    }
}

/// NUL-padded copy of a device name.
pub(crate) fn ifname_bytes(name: &kernel::str::CStr) -> [u8; DIA_IFNAME_LEN] {
    let mut out = [0u8; DIA_IFNAME_LEN];
    for (o, b) in out
        .iter_mut()
        .zip(name.as_bytes().iter().take(DIA_IFNAME_LEN - 1))
    {
        *o = *b;
    }
    out
}
