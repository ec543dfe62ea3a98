//! The card's controller as the driver sees it: the enable/disable/shutdown
//! handshake over BAR2 registers, the admin queue pair in DMA memory, and
//! admin commands with a timeout, so a dead card turns into errors, not hangs.
//! A timed-out controller is marked failed and reset before its next command.

use core::mem::offset_of;

use kernel::error::code::{EBUSY, EINVAL, EIO, ENODEV};
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::abi::card::{self as regs, CompletionEntry, IdentifyController, SubmissionEntry};
use crate::abi::ioctl::{DiaIdentity, DIA_ABI_VERSION};
use crate::glue::completion::Completion;
use crate::glue::dma::CoherentAllocation;
use crate::glue::io::Bar;
use crate::glue::irq::{self, Handler};
use crate::glue::pci::{Device, Enabled, IrqVectors, Regions};
use crate::glue::time::{self, ETIMEDOUT};
use crate::ring::RingState;

/// ivshmem BAR0 register: this guest's peer id.
const IVSHMEM_IVPOSITION: usize = 8;
/// ivshmem BAR0 register: write `(peer << 16) | vector` to signal a peer.
const IVSHMEM_DOORBELL: usize = 12;
/// Admin queue entries.
const ADMIN_QUEUE_DEPTH: u16 = 32;
/// How long an admin command may take before the card counts as dead.
pub(crate) const ADMIN_TIMEOUT_MS: u32 = 5000;
/// How long the firmware may take to report it runs after probe starts.
const FIRMWARE_READY_TIMEOUT_MS: u32 = 5000;
/// Poll step while waiting for the admin completion (interrupts may be lost).
const ADMIN_POLL_MS: u32 = 50;

/// The admin vector's interrupt handler: wakes the command waiter.
pub(crate) struct AdminIrq {
    done: Completion,
}

impl Handler for AdminIrq {
    fn handle(&self) -> bool {
        self.done.complete();
        true
    }
}

/// Hardware resources of the probed card, acquired in probe order.
pub(crate) struct Hardware {
    pub(crate) dev: Device,
    pub(crate) bar0: Bar,
    pub(crate) bar2: Bar,
    pub(crate) _regions: Regions,
    pub(crate) _enabled: Enabled,
}

impl Hardware {
    /// Enables `dev`, maps its BARs and checks the card's signature, version
    /// and firmware status. Fails with `ENODEV` for a function that is not a
    /// dia card and `ETIMEDOUT` for firmware that never reports running.
    pub(crate) fn probe(dev: Device) -> Result<Self> {
        let enabled = dev.enable()?;
        let regions = dev.request_regions()?;
        let bar0 = Bar::map(dev, 0)?;
        let bar2 = Bar::map(dev, 2).inspect_err(|_| {
            pr_err!("{}: no BAR2 (shared memory); not a dia card\n", dev.name());
        })?;
        if bar2.len() < regs::BAR2_MIN_SIZE {
            pr_err!(
                "{}: BAR2 is {} bytes, a dia card has at least {}; not binding\n",
                dev.name(),
                bar2.len(),
                regs::BAR2_MIN_SIZE
            );
            return Err(ENODEV);
        }
        let magic = bar2.read64(regs::REG_MAGIC)?;
        if magic != regs::CARD_MAGIC {
            pr_info!(
                "{}: no dia card signature in BAR2 (found {:#018x}); not binding\n",
                dev.name(),
                magic
            );
            return Err(ENODEV);
        }
        let vs = bar2.read32(regs::REG_VS)?;
        if regs::version_major(vs) != regs::version_major(regs::INTERFACE_VERSION) {
            pr_err!(
                "{}: card interface version {}.{} is not supported (driver speaks {}.x)\n",
                dev.name(),
                vs >> 16,
                vs & 0xffff,
                regs::INTERFACE_VERSION >> 16
            );
            return Err(ENODEV);
        }
        let running = time::poll_until(FIRMWARE_READY_TIMEOUT_MS, 10, || {
            matches!(bar2.read32(regs::REG_FW_STATUS), Ok(regs::FW_STATUS_RUNNING))
        });
        if !running {
            pr_err!(
                "{}: card firmware not running after {} ms; not binding\n",
                dev.name(),
                FIRMWARE_READY_TIMEOUT_MS
            );
            return Err(ETIMEDOUT());
        }
        Ok(Self {
            dev,
            bar0,
            bar2,
            _regions: regions,
            _enabled: enabled,
        })
    }
}

/// A running controller with its admin queue.
///
/// # Invariants
///
/// While `enabled` is true the card may DMA into `asq`, `acq` and `buf`;
/// `drop` disables the controller before those allocations are freed.
pub(crate) struct Controller {
    // Field order is drop order: the IRQ goes first, the PCI function last.
    _admin_irq: irq::Registration<AdminIrq>,
    admin: Arc<AdminIrq>,
    asq: CoherentAllocation,
    acq: CoherentAllocation,
    buf: CoherentAllocation,
    vectors: IrqVectors,
    hw: Hardware,
    ring: RingState,
    next_cid: u16,
    card_peer: u32,
    cap: u64,
    enabled: bool,
    failed: bool,
}

impl Controller {
    /// Sets up MSI-X and the admin queue on a probed card and enables it.
    pub(crate) fn new(hw: Hardware) -> Result<Self> {
        let dev = hw.dev;
        dev.set_dma_mask(64)?;
        let card_vectors = hw.bar2.read32(regs::REG_VECTORS)?.max(1);
        let want = card_vectors.min(1 + time::online_cpus());
        let vectors = dev.alloc_msix(1, want)?;
        let admin = Arc::new(
            AdminIrq {
                done: Completion::new()?,
            },
            GFP_KERNEL,
        )?;
        let admin_irq = irq::Registration::new(
            dev,
            &vectors,
            0,
            kernel::c_str!("dia-admin"),
            admin.clone(),
        )?;
        let depth = usize::from(ADMIN_QUEUE_DEPTH);
        let mut ctrl = Self {
            _admin_irq: admin_irq,
            admin,
            asq: CoherentAllocation::new(dev, depth * regs::SQE_SIZE)?,
            acq: CoherentAllocation::new(dev, depth * regs::CQE_SIZE)?,
            buf: CoherentAllocation::new(dev, regs::IDENTIFY_SIZE)?,
            vectors,
            card_peer: hw.bar2.read32(regs::REG_CARD_PEER)?,
            cap: hw.bar2.read64(regs::REG_CAP)?,
            hw,
            ring: RingState::new(ADMIN_QUEUE_DEPTH).ok_or(EINVAL)?,
            next_cid: 0,
            enabled: false,
            failed: false,
        };
        // From here on `drop` disables the controller on any error.
        ctrl.enable()?;
        Ok(ctrl)
    }

    /// The PCI function's name, for log lines.
    pub(crate) fn name(&self) -> &kernel::str::CStr {
        self.hw.dev.name()
    }

    /// Number of MSI-X vectors in use.
    pub(crate) fn msix_vectors(&self) -> u32 {
        self.vectors.count()
    }

    /// This guest's ivshmem peer id (from BAR0), for diagnostics.
    pub(crate) fn guest_peer(&self) -> u32 {
        self.hw.bar0.read32(IVSHMEM_IVPOSITION).unwrap_or(u32::MAX)
    }

    /// CSTS.RDY transition bound from CAP.TO, clamped to 0.5..10 s so a
    /// bogus CAP cannot stall probe or remove.
    fn ready_timeout_ms(&self) -> u32 {
        (u32::from(regs::cap_timeout_500ms(self.cap)) * 500).clamp(500, 10_000)
    }

    /// Whether the firmware's heartbeat moves (sampled over two periods).
    fn heartbeat_alive(&self) -> bool {
        let bar2 = &self.hw.bar2;
        let Ok(first) = bar2.read64(regs::REG_HEARTBEAT) else {
            return false;
        };
        time::poll_until(2 * regs::HEARTBEAT_MS + 50, 10, || {
            matches!(bar2.read64(regs::REG_HEARTBEAT), Ok(now) if now != first)
        })
    }

    /// Signals the card on `vector` through the ivshmem doorbell.
    fn ring_doorbell(&self, vector: u16) -> Result {
        self.hw
            .bar0
            .write32(IVSHMEM_DOORBELL, self.card_peer << 16 | u32::from(vector))
    }

    fn write_cc(&self, cc: u32) -> Result {
        self.hw.bar2.write32(regs::REG_CC, cc)?;
        self.ring_doorbell(regs::DOORBELL_VECTOR_ADMIN)
    }

    fn wait_csts(&self, mask: u32, want: u32) -> Result {
        let bar2 = &self.hw.bar2;
        let ok = time::poll_until(self.ready_timeout_ms(), 2, || {
            matches!(bar2.read32(regs::REG_CSTS), Ok(v) if v & mask == want)
        });
        if ok {
            Ok(())
        } else {
            Err(ETIMEDOUT())
        }
    }

    /// Resets the controller (CC.EN 1 -> 0), bounded by the card's timeout.
    fn disable(&mut self) -> Result {
        self.write_cc(0)?;
        let r = self.wait_csts(regs::CSTS_RDY, 0);
        if r.is_ok() {
            // INVARIANT: the card stopped using the admin queue memory.
            self.enabled = false;
        }
        r
    }

    /// Programs the admin queue and sets CC.EN, waiting for CSTS.RDY.
    fn enable(&mut self) -> Result {
        if self.hw.bar2.read32(regs::REG_CSTS)? & regs::CSTS_RDY != 0 {
            self.disable().inspect_err(|_| {
                pr_err!("{}: card does not leave the ready state; reset failed\n", self.name());
            })?;
        }
        self.asq.zero();
        self.acq.zero();
        self.ring = RingState::new(ADMIN_QUEUE_DEPTH).ok_or(EINVAL)?;
        let qsize = u32::from(ADMIN_QUEUE_DEPTH) - 1;
        let bar2 = &self.hw.bar2;
        bar2.write32(regs::REG_AQA, qsize | qsize << 16)?;
        bar2.write64(regs::REG_ASQ, self.asq.dma_handle())?;
        bar2.write64(regs::REG_ACQ, self.acq.dma_handle())?;
        bar2.write32(regs::sq_tail_doorbell(0), 0)?;
        bar2.write32(regs::cq_head_doorbell(0), 0)?;
        // INVARIANT: from the CC.EN write on, the card may use the queues.
        self.enabled = true;
        self.write_cc(regs::CC_EN)?;
        match self.wait_csts(regs::CSTS_RDY | regs::CSTS_CFS, regs::CSTS_RDY) {
            Ok(()) => {
                self.failed = false;
                Ok(())
            }
            Err(e) => {
                let csts = self.hw.bar2.read32(regs::REG_CSTS).unwrap_or(u32::MAX);
                pr_err!(
                    "{}: card did not become ready within {} ms (CSTS {:#x})\n",
                    self.name(),
                    self.ready_timeout_ms(),
                    csts
                );
                self.failed = true;
                Err(if csts & regs::CSTS_CFS != 0 { EIO } else { e })
            }
        }
    }

    /// Resets a controller that timed out or reported a fatal status.
    fn recover(&mut self) -> Result {
        pr_warn!("{}: resetting the card after an earlier failure\n", self.name());
        if self.hw.bar2.read32(regs::REG_FW_STATUS)? != regs::FW_STATUS_RUNNING {
            pr_err!("{}: card firmware is not running\n", self.name());
            return Err(EIO);
        }
        if !self.heartbeat_alive() {
            pr_err!("{}: card firmware heartbeat stopped; the card is dead\n", self.name());
            return Err(EIO);
        }
        if let Err(e) = self.disable() {
            pr_err!("{}: card does not answer a reset; it may have died\n", self.name());
            return Err(e);
        }
        self.enable()?;
        pr_info!("{}: card reset complete\n", self.name());
        Ok(())
    }

    /// Takes the next completion off the admin CQ, if the card posted one.
    fn next_admin_completion(&mut self) -> Result<Option<CompletionEntry>> {
        let (head, phase) = self.ring.cq_expect();
        let cqe: CompletionEntry = self.acq.read(usize::from(head) * regs::CQE_SIZE)?;
        if cqe.phase() != phase {
            return Ok(None);
        }
        self.ring.cq_advance();
        self.hw
            .bar2
            .write32(regs::cq_head_doorbell(0), u32::from(self.ring.cq_head()))?;
        if !self.ring.set_sq_head(cqe.sq_head) {
            pr_warn!("{}: card reported SQ head {} out of range\n", self.name(), cqe.sq_head);
        }
        Ok(Some(cqe))
    }

    /// Submits one admin command and waits for its completion (bounded by
    /// [`ADMIN_TIMEOUT_MS`]). A non-success status becomes `EIO`.
    fn admin_command(&mut self, mut sqe: SubmissionEntry) -> Result<CompletionEntry> {
        if self.failed {
            self.recover()?;
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        sqe.cid = cid;
        let slot = self.ring.sq_push().ok_or(EBUSY)?;
        self.asq.write(usize::from(slot) * regs::SQE_SIZE, &sqe)?;
        self.admin.done.reinit();
        self.hw
            .bar2
            .write32(regs::sq_tail_doorbell(0), u32::from(self.ring.sq_tail()))?;
        self.ring_doorbell(0)?;

        let deadline = time::now_ms() + u64::from(ADMIN_TIMEOUT_MS);
        loop {
            while let Some(cqe) = self.next_admin_completion()? {
                if cqe.cid != cid {
                    pr_warn!("{}: stray admin completion cid {}\n", self.name(), cqe.cid);
                    continue;
                }
                if cqe.status_code() != regs::STATUS_SUCCESS {
                    pr_warn!(
                        "{}: admin opcode {:#04x} failed with status {:#05x}\n",
                        self.name(),
                        sqe.opcode,
                        cqe.status_code()
                    );
                    return Err(EIO);
                }
                return Ok(cqe);
            }
            let now = time::now_ms();
            if now >= deadline {
                self.failed = true;
                pr_err!(
                    "{}: admin opcode {:#04x} (cid {}) timed out after {} ms; the card is not answering\n",
                    self.name(),
                    sqe.opcode,
                    cid,
                    ADMIN_TIMEOUT_MS
                );
                return Err(ETIMEDOUT());
            }
            let left = u32::try_from(deadline - now).unwrap_or(ADMIN_POLL_MS);
            self.admin.done.wait_timeout(left.min(ADMIN_POLL_MS));
        }
    }

    /// Asks the card for its Identify Controller data.
    pub(crate) fn identify(&mut self) -> Result<DiaIdentity> {
        self.buf.zero();
        let sqe = SubmissionEntry {
            opcode: regs::ADMIN_IDENTIFY,
            prp1: self.buf.dma_handle(),
            cdw10: u32::from(regs::CNS_CONTROLLER),
            ..SubmissionEntry::default()
        };
        self.admin_command(sqe)?;
        let b = &self.buf;
        Ok(DiaIdentity {
            abi_version: DIA_ABI_VERSION,
            interface_version: b.read(offset_of!(IdentifyController, interface_version))?,
            capabilities: b.read(offset_of!(IdentifyController, capabilities))?,
            pool_bytes: b.read(offset_of!(IdentifyController, pool_bytes))?,
            vendor_id: b.read(offset_of!(IdentifyController, vid))?,
            subsystem_vendor_id: b.read(offset_of!(IdentifyController, ssvid))?,
            max_io_queues: b.read(offset_of!(IdentifyController, max_io_queues))?,
            max_queue_entries: b.read(offset_of!(IdentifyController, max_queue_entries))?,
            max_namespaces: b.read(offset_of!(IdentifyController, max_namespaces))?,
            max_ports: b.read(offset_of!(IdentifyController, max_ports))?,
            msix_vectors: self.vectors.count(),
            io_queues: 0,
            serial: b.read(offset_of!(IdentifyController, serial))?,
            model: b.read(offset_of!(IdentifyController, model))?,
            firmware: b.read(offset_of!(IdentifyController, firmware))?,
            reserved: [0; 44],
        })
    }

    /// Normal shutdown (CC.SHN), then disable; every wait is bounded.
    fn shutdown(&mut self) {
        if !self.enabled {
            return;
        }
        if !self.failed {
            let shn = self.write_cc(regs::CC_EN | regs::CC_SHN_NORMAL).and_then(|()| {
                self.wait_csts(regs::CSTS_SHST_COMPLETE, regs::CSTS_SHST_COMPLETE)
            });
            if shn.is_err() {
                pr_warn!("{}: card did not confirm shutdown\n", self.name());
            }
        }
        if self.disable().is_err() {
            pr_warn!(
                "{}: card did not confirm reset; freeing its queues anyway\n",
                self.name()
            );
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Trims a space-padded ASCII field for log lines.
pub(crate) fn ascii(field: &[u8]) -> &str {
    let end = field
        .iter()
        .rposition(|&c| c != b' ' && c != 0)
        .map_or(0, |i| i + 1);
    core::str::from_utf8(&field[..end]).unwrap_or("?")
}
