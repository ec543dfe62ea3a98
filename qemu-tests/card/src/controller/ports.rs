//! Network port admin commands: Create Port, Delete Port, Set Port and the
//! port statistics log page. Everything the driver passes is validated here
//! (statuses, never panics); the port itself and its frames live in `net`.

use dia_abi::card::{self as abi, PortConfig, PortCreate, PortStats, SubmissionEntry};
use tracing::info;

use super::{Controller, State};
use crate::guest_memory::{pod_bytes, pod_from_bytes};
use crate::net::{self, Port, Rings};
use crate::queue::check_placement;

impl Controller {
    /// Most ports this card offers.
    pub(super) fn max_ports(&self) -> u16 {
        self.cfg.max_ports.clamp(1, net::MAX_PORTS)
    }

    /// Whether a live port uses `vector`.
    pub(super) fn vector_used_by_port(&self, vector: u16) -> bool {
        match &self.state {
            State::Running(q) => q.net.lock().ports().any(|p| p.vector == vector),
            _ => false,
        }
    }

    /// `port` if it is one this card can have.
    fn port_id(&self, port: u16) -> Result<u16, u16> {
        Some(port)
            .filter(|id| (1..=self.max_ports()).contains(id))
            .ok_or(abi::STATUS_INVALID_PORT)
    }

    /// The port CDW10 of a port command names (0 for Create Port's "any").
    fn port_target(sqe: &SubmissionEntry) -> Result<u16, u16> {
        abi::PortTarget::from_cdw10(sqe.cdw10)
            .map(|t| t.port)
            .map_err(|e| e.status())
    }

    fn read_config(&self, sqe: &SubmissionEntry) -> Result<PortConfig, u16> {
        let mut raw = [0u8; std::mem::size_of::<PortConfig>()];
        self.read_prp(sqe, &mut raw)?;
        let cfg: PortConfig = pod_from_bytes(&raw);
        cfg.validate().map_err(|_| abi::STATUS_INVALID_FIELD)?;
        Ok(cfg)
    }

    pub(super) fn create_port(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let wanted = match Self::port_target(sqe)? {
            0 => None,
            port => Some(self.port_id(port)?),
        };
        let mut raw = [0u8; std::mem::size_of::<PortCreate>()];
        self.read_prp(sqe, &mut raw)?;
        let mut create: PortCreate = pod_from_bytes(&raw);
        create.validate().map_err(|_| abi::STATUS_INVALID_FIELD)?;
        let mem = &self.board.mem;
        let (tx_n, rx_n) = (create.tx_entries, create.rx_entries);
        if !check_placement(mem, create.tx_ring, tx_n, abi::PORT_DESC_SIZE)
            || !check_placement(mem, create.rx_ring, rx_n, abi::PORT_DESC_SIZE)
        {
            return Err(abi::STATUS_INVALID_FIELD);
        }
        let vector = create.vector;
        if vector == 0 || vector >= self.cfg.vectors {
            return Err(abi::STATUS_INVALID_VECTOR);
        }
        let max_ports = self.max_ports();
        let serial = abi::serial_field(&self.cfg.serial);
        let board = self.board.clone();
        let q = self.queues()?;
        // The vector's doorbell and interrupt must be the port's alone: no
        // I/O CQ interrupts on it and no I/O SQ is woken by it.
        let cq_uses = q.cqs.values().any(|cq| {
            cq.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .vector
                == vector
        });
        if cq_uses || q.workers.contains_key(&vector) {
            return Err(abi::STATUS_INVALID_VECTOR);
        }
        let now = q.net.now();
        let st = q.net.lock();
        if st.ports().any(|p| p.vector == vector) {
            return Err(abi::STATUS_INVALID_VECTOR);
        }
        let id = match wanted {
            Some(id) if st.port(id).is_some() => return Err(abi::STATUS_INVALID_PORT),
            Some(id) => id,
            None => (1..=max_ports)
                .find(|id| st.port(*id).is_none())
                .ok_or(abi::STATUS_PORT_LIMIT)?,
        };
        create.mac = net::port_mac(&serial, id);
        let rings = Rings {
            tx_ring: create.tx_ring,
            tx_entries: tx_n,
            rx_ring: create.rx_ring,
            rx_entries: rx_n,
        };
        // The MAC goes back to the driver before the port exists.
        drop(st);
        self.write_prp(sqe, pod_bytes(&create))?;
        let q = self.queues()?;
        q.net.lock().add(Port::new(
            &board,
            id,
            create.mac,
            create.config,
            rings,
            vector,
            now,
        ));
        q.net.kick();
        let c = create.config;
        info!(
            port = id,
            vlan = c.vlan,
            mtu = c.mtu,
            vector,
            tx_entries = tx_n,
            rx_entries = rx_n,
            max_bps = c.limits.max_bits_per_s,
            max_pps = c.limits.max_pps,
            "port created"
        );
        Ok(u32::from(id))
    }

    pub(super) fn delete_port(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let id = self.port_id(Self::port_target(sqe)?)?;
        let board = self.board.clone();
        let q = self.queues()?;
        // Taking the lock waits for a pass in progress: once removed, the
        // engine never touches the port's rings again.
        if !q.net.lock().remove(&board, id) {
            return Err(abi::STATUS_INVALID_PORT);
        }
        q.net.kick();
        info!(port = id, "port deleted");
        Ok(0)
    }

    pub(super) fn set_port(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let id = self.port_id(Self::port_target(sqe)?)?;
        if self.queues()?.net.lock().port(id).is_none() {
            return Err(abi::STATUS_INVALID_PORT);
        }
        let cfg = self.read_config(sqe)?;
        let q = self.queues()?;
        let now = q.net.now();
        if !q.net.lock().reconfigure(id, cfg, now) {
            return Err(abi::STATUS_INVALID_PORT);
        }
        info!(
            port = id,
            vlan = cfg.vlan,
            mtu = cfg.mtu,
            max_bps = cfg.limits.max_bits_per_s,
            max_pps = cfg.limits.max_pps,
            burst_ms = cfg.limits.burst_ms,
            "port set"
        );
        Ok(0)
    }

    /// The counters for Get Log Page LOG_PORT_STATS.
    pub(super) fn port_stats(&mut self, sqe: &SubmissionEntry) -> Result<PortStats, u16> {
        if sqe.nsid != 0 {
            return Err(abi::STATUS_INVALID_FIELD);
        }
        let id = self.port_id(abi::PortStatsLog::from_cdw11(sqe.cdw11).port)?;
        let q = self.queues()?;
        let now = q.net.now();
        let st = q.net.lock();
        st.stats(id, now).ok_or(abi::STATUS_INVALID_PORT)
    }
}
