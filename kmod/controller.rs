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
use crate::glue::blk::{Disk, DiskParams, Op, TagSet};
use crate::glue::completion::Completion;
use crate::glue::dma::CoherentAllocation;
use crate::glue::errno;
use crate::glue::irq::{self, Handler};
use crate::glue::mmio::Bar;
use crate::glue::pci::{Device, Enabled, IrqVectors, Regions};
use crate::glue::time::{self, ETIMEDOUT};
use crate::io_path::{self, IoIrq, IoPath, IoQueue, NsData, IO_QUEUE_ENTRIES, IO_TIMEOUT_MS};
use crate::ring::RingState;
use kernel::str::CString;

mod namespace;
mod ports;

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
    card_peer: u32,
    _regions: Regions,
    _enabled: Enabled,
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
            matches!(
                bar2.read32(regs::REG_FW_STATUS),
                Ok(regs::FW_STATUS_RUNNING)
            )
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
            card_peer: bar2.read32(regs::REG_CARD_PEER)?,
            bar0,
            bar2,
            _regions: regions,
            _enabled: enabled,
        })
    }

    /// Signals the card on `vector` through the ivshmem doorbell.
    pub(crate) fn ring_doorbell(&self, vector: u16) -> Result {
        self.bar0
            .write32(IVSHMEM_DOORBELL, self.card_peer << 16 | u32::from(vector))
    }
}

/// A running controller with its admin queue.
///
/// # Invariants
///
/// While `enabled` is true the card may DMA into `asq`, `acq` and `buf`;
/// `drop` disables the controller before those allocations are freed.
pub(crate) struct Controller {
    // Field order is drop order: disks, then IRQs, then queues, the PCI
    // function last (`drop` removes disks and stops the card first).
    /// Slots of attached namespaces' disks (`None`: free slot).
    disks: KVec<Option<NsDisk>>,
    /// Attaches and detaches whose block device is being added or removed
    /// with the gate open.
    outside: u32,
    /// The card is being removed: no new block devices.
    closing: bool,
    /// Slots of network ports (`None`: free slot); before `vectors`, as
    /// each holds an interrupt.
    ports: KVec<Option<ports::PortEntry>>,
    /// Rings of ports whose Delete Port the card did not confirm (or whose
    /// Create Port it never answered): it may still use them, so they are
    /// kept until a reset confirms the card forgot every port.
    parked: KVec<Arc<crate::port::PortPath>>,
    io_irqs: KVec<irq::Registration<IoIrq>>,
    io: Option<IoState>,
    _admin_irq: irq::Registration<AdminIrq>,
    admin: Arc<AdminIrq>,
    asq: CoherentAllocation,
    acq: CoherentAllocation,
    buf: CoherentAllocation,
    vectors: IrqVectors,
    hw: Arc<Hardware>,
    ring: RingState,
    next_cid: u16,
    /// Result dword of the last admin command the card failed (some
    /// statuses carry detail there, e.g. Set QoS's excess).
    last_error_result: u32,
    cap: u64,
    enabled: bool,
    failed: bool,
    /// When I/O last made the recovery work look for a dead card's return.
    last_revival_ms: u64,
    /// The firmware was seen dead (stopped, or its heartbeat): the card
    /// that comes back lost its volatile write cache.
    firmware_died: bool,
    /// `REG_FW_BOOT_ID` when the card last became ready: a different value
    /// after a reset means the firmware restarted (perhaps unseen).
    boot_id: u64,
    /// Card number, for disk names.
    index: u32,
    /// From Identify: the card has a volatile write cache.
    vwc: bool,
    /// From Identify: largest transfer (0: no limit).
    max_transfer: u32,
    /// From Identify: the card has network ports.
    network: bool,
    /// From Identify: the card has mirrored namespaces (interface 1.5 or
    /// later); a 1.4 card would take the mirror status page for a bad field.
    mirrors: bool,
    /// From Identify: the card cuts `TX_TSO` frames (interface 1.7 or
    /// later), so new ports offer TSO to the stack.
    tso: bool,
    /// From Identify: most ports.
    max_ports: u32,
}

/// The I/O side once set up.
struct IoState {
    set: Arc<TagSet<IoPath>>,
    path: Arc<IoPath>,
}

/// An attached namespace's block device slot.
struct NsDisk {
    nsid: u32,
    name: CString,
    /// `None` while the device is being added or removed outside the gate.
    disk: Option<Disk<IoPath>>,
}

/// A block device to add for a just attached namespace: everything
/// [`Disk::new`] needs, so it can run without the controller.
pub(crate) struct PlannedDisk {
    name: CString,
    params: DiskParams,
    data: Arc<NsData>,
    set: Arc<TagSet<IoPath>>,
}

impl PlannedDisk {
    /// Adds the block device (reads its partition table).
    pub(crate) fn add(self) -> Result<Disk<IoPath>> {
        Disk::new(&self.set, &self.name, &self.params, self.data)
    }
}

/// A block device on its way out of a detach.
pub(crate) struct DetachingDisk {
    nsid: u32,
    /// Its slot is reserved (and counted in `outside`) until the detach ends.
    reserved: bool,
    disk: Option<Disk<IoPath>>,
}

impl DetachingDisk {
    /// Removes the block device; waits for its I/O, so never called
    /// behind the card's gate.
    pub(crate) fn remove(&mut self) {
        drop(self.disk.take());
    }
}

impl Controller {
    /// Sets up MSI-X and the admin queue on a probed card and enables it.
    pub(crate) fn new(hw: Hardware, index: u32) -> Result<Self> {
        let hw = Arc::new(hw, GFP_KERNEL)?;
        let dev = hw.dev;
        dev.set_dma_mask(64)?;
        let card_vectors = hw.bar2.read32(regs::REG_VECTORS)?.max(1);
        // Every vector the card has: admin, one per I/O queue, one per port.
        let want = card_vectors;
        let vectors = dev.alloc_msix(1, want)?;
        let admin = Arc::new(
            AdminIrq {
                done: Completion::new()?,
            },
            GFP_KERNEL,
        )?;
        let admin_irq =
            irq::Registration::new(dev, &vectors, 0, kernel::c_str!("dia-admin"), admin.clone())?;
        let depth = usize::from(ADMIN_QUEUE_DEPTH);
        let mut ctrl = Self {
            disks: KVec::new(),
            outside: 0,
            closing: false,
            ports: KVec::new(),
            parked: KVec::new(),
            io_irqs: KVec::new(),
            io: None,
            _admin_irq: admin_irq,
            admin,
            asq: CoherentAllocation::new(dev, depth * regs::SQE_SIZE)?,
            acq: CoherentAllocation::new(dev, depth * regs::CQE_SIZE)?,
            buf: CoherentAllocation::new(dev, regs::IDENTIFY_SIZE)?,
            vectors,
            cap: hw.bar2.read64(regs::REG_CAP)?,
            hw,
            ring: RingState::new(ADMIN_QUEUE_DEPTH).ok_or(EINVAL)?,
            next_cid: 0,
            last_error_result: 0,
            enabled: false,
            failed: false,
            last_revival_ms: 0,
            firmware_died: false,
            boot_id: 0,
            index,
            vwc: false,
            max_transfer: 0,
            network: false,
            mirrors: false,
            tso: false,
            max_ports: 0,
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
        time::poll_until(
            2 * regs::HEARTBEAT_MS + 50,
            10,
            || matches!(bar2.read64(regs::REG_HEARTBEAT), Ok(now) if now != first),
        )
    }

    fn ring_doorbell(&self, vector: u16) -> Result {
        self.hw.ring_doorbell(vector)
    }

    fn write_cc(&self, cc: u32) -> Result {
        self.hw.bar2.write32(regs::REG_CC, cc)?;
        self.ring_doorbell(regs::DOORBELL_VECTOR_ADMIN)
    }

    fn wait_csts(&self, mask: u32, want: u32) -> Result {
        let bar2 = &self.hw.bar2;
        let ok = time::poll_until(
            self.ready_timeout_ms(),
            2,
            || matches!(bar2.read32(regs::REG_CSTS), Ok(v) if v & mask == want),
        );
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
                pr_err!(
                    "{}: card does not leave the ready state; reset failed\n",
                    self.name()
                );
            })?;
        }
        self.asq.zero();
        self.acq.zero();
        self.ring = RingState::new(ADMIN_QUEUE_DEPTH).ok_or(EINVAL)?;
        let aqa = regs::AdminQueueAttributes {
            sq_entries: ADMIN_QUEUE_DEPTH,
            cq_entries: ADMIN_QUEUE_DEPTH,
        };
        let bar2 = &self.hw.bar2;
        bar2.write32(regs::REG_AQA, aqa.reg())?;
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
                self.boot_id = self.hw.bar2.read64(regs::REG_FW_BOOT_ID)?;
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

    /// Resets a controller that timed out or reported a fatal status. A
    /// card that cannot be brought back takes its ports' links down with it
    /// (the card no longer forwards their frames, and the link register it
    /// left in BAR2 would still say up).
    fn recover(&mut self) -> Result {
        let result = self.try_recover();
        if result.is_err() {
            self.ports_link_down();
        }
        result
    }

    fn try_recover(&mut self) -> Result {
        pr_warn!(
            "{}: resetting the card after an earlier failure\n",
            self.name()
        );
        if self.hw.bar2.read32(regs::REG_FW_STATUS)? != regs::FW_STATUS_RUNNING {
            pr_err!("{}: card firmware is not running\n", self.name());
            self.firmware_died = true;
            // Stopped firmware touches no memory: what it held fails now
            // (a restarted firmware starts from a reset, with new queues).
            self.fail_in_flight();
            return Err(EIO);
        }
        if !self.heartbeat_alive() {
            pr_err!(
                "{}: card firmware heartbeat stopped; the card is dead\n",
                self.name()
            );
            self.firmware_died = true;
            self.fail_in_flight();
            return Err(EIO);
        }
        if let Some(io) = &self.io {
            io.set.quiesce();
        }
        let boot_before = self.boot_id;
        let result = self.reset_and_restart();
        if result.is_ok() {
            let restarted = self.boot_id != boot_before;
            // Before the queues run again: a flush that was in flight when
            // the firmware died is requeued, and must report the lost cache
            // rather than succeed on the new firmware (found by
            // card-kill-cycles: an fsync succeeded for data the crash took).
            if core::mem::take(&mut self.firmware_died) || restarted {
                self.report_lost_cache();
            }
        }
        if let Some(io) = &self.io {
            io.set.unquiesce();
            io.set.kick_requeue();
        }
        result?;
        pr_info!("{}: card reset complete\n", self.name());
        Ok(())
    }

    /// After the card confirmed the reset (it no longer touches any I/O
    /// queue or data buffer): ends what it completed before, then puts
    /// every request still in flight back on its queue, to run again once
    /// the queues are recreated. Nothing is failed, nothing ends twice.
    fn requeue_in_flight(&self) {
        let Some(io) = &self.io else {
            return;
        };
        for reg in self.io_irqs.iter() {
            // With the vector masked, this is the only handler run: the
            // completions the card posted before the reset end normally.
            let _masked = reg.mask();
            reg.handler().handle();
        }
        let mut requeued = 0u32;
        let cache_lost = self.firmware_died
            || !matches!(self.hw.bar2.read64(regs::REG_FW_BOOT_ID), Ok(b) if b == self.boot_id);
        io.set.for_each_busy(|rq| {
            requeued += 1;
            if cache_lost && matches!(rq.op(), Op::Flush) {
                // Every flush in flight lost its cache, not only the next.
                rq.data()
                    .flush_lost
                    .store(true, core::sync::atomic::Ordering::Relaxed);
            }
            rq.requeue();
        });
        if requeued > 0 {
            pr_info!(
                "{}: {} I/O request(s) the card dropped in the reset requeued\n",
                self.name(),
                requeued
            );
        }
    }

    /// The firmware died and came back: whatever its volatile cache held is
    /// gone. Each namespace with writes since its last flush is fenced (see
    /// `NsData::fenced`): its writes and flushes fail until its users close
    /// it, so the loss reaches fsync and file systems instead of passing
    /// silently. A disk nobody has open is not fenced: whoever wrote
    /// closed it without asking for durability.
    fn report_lost_cache(&self) {
        for d in self.disks.iter().flatten() {
            let Some(disk) = &d.disk else { continue };
            let ns = disk.data();
            if !ns.cache.unflushed() {
                continue;
            }
            if disk.openers() == 0 {
                pr_warn!(
                    "{}: {}: the card restarted with writes not yet flushed; they may be lost (the disk is not open)\n",
                    self.name(),
                    &*d.name
                );
                continue;
            }
            ns.fenced.store(true, core::sync::atomic::Ordering::Relaxed);
            pr_err!(
                "{}: {}: the card restarted with writes not yet flushed; they may be lost: writes and flushes fail until the disk is closed by all its users\n",
                self.name(),
                &*d.name
            );
        }
    }

    /// The card did not confirm a reset: it is dead. Fails what is in
    /// flight (the card stopped answering, so nothing would end it) and
    /// every later request.
    fn fail_in_flight(&self) {
        let Some(io) = &self.io else {
            return;
        };
        io.path
            .dead
            .store(true, core::sync::atomic::Ordering::Relaxed);
        io.set.for_each_busy(|rq| {
            rq.unmap();
            rq.end(crate::glue::blk::Status::IoErr);
        });
    }

    fn reset_and_restart(&mut self) -> Result {
        if let Err(e) = self.disable() {
            pr_err!(
                "{}: card does not answer a reset; it may have died\n",
                self.name()
            );
            self.fail_in_flight();
            return Err(e);
        }
        self.requeue_in_flight();
        // The card confirmed the reset: it forgot every port, parked ones too.
        drop(core::mem::take(&mut self.parked));
        self.enable()?;
        // Cleared before the queues are recreated (their admin commands must
        // not trigger another reset); I/O stays quiesced until we return.
        if let Some(io) = &self.io {
            io.path
                .failed
                .store(false, core::sync::atomic::Ordering::Relaxed);
            io.path
                .dead
                .store(false, core::sync::atomic::Ordering::Relaxed);
        }
        if let Err(e) = self.create_io_queues() {
            self.failed = true;
            if let Some(io) = &self.io {
                io.path
                    .failed
                    .store(true, core::sync::atomic::Ordering::Relaxed);
            }
            return Err(e);
        }
        // The reset deleted the ports on the card; their net devices stay.
        if let Err(e) = self.recreate_ports() {
            pr_err!(
                "{}: ports not recreated after the reset ({:?})\n",
                self.name(),
                e
            );
        }
        Ok(())
    }

    /// Sets up the I/O queues (one per CPU, up to the card's and the MSI-X
    /// vectors' limits), their interrupts and the blk-mq tag set.
    pub(crate) fn setup_io(&mut self) -> Result {
        let dev = self.hw.dev;
        let n = (self.vectors.count() - 1)
            .min(u32::from(regs::cap_max_io_queues(self.cap)))
            .min(time::online_cpus());
        if n == 0 {
            pr_warn!(
                "{}: no MSI-X vector left for I/O queues; storage disabled\n",
                self.name()
            );
            return Ok(());
        }
        let mut queues = KVec::new();
        for qid in 1..=n {
            // `n` is at most the card's u16 queue count.
            queues.push(IoQueue::new(dev, qid as u16)?, GFP_KERNEL)?;
        }
        let mut list = KVec::new();
        for q in queues.iter() {
            list.push(q.clone(), GFP_KERNEL)?;
        }
        let path = IoPath::new(self.hw.clone(), list)?;
        let set = Arc::new(
            TagSet::new(
                dev,
                n,
                u32::from(IO_QUEUE_ENTRIES) - 1,
                IO_TIMEOUT_MS,
                path.clone(),
            )?,
            GFP_KERNEL,
        )?;
        for q in queues.iter() {
            let handler = Arc::new(
                IoIrq {
                    queue: q.clone(),
                    set: set.clone(),
                    hw: self.hw.clone(),
                    strays: core::sync::atomic::AtomicU32::new(0),
                },
                GFP_KERNEL,
            )?;
            let reg = irq::Registration::new(
                dev,
                &self.vectors,
                u32::from(q.qid),
                kernel::c_str!("dia-io"),
                handler,
            )?;
            self.io_irqs.push(reg, GFP_KERNEL)?;
            // Completions on the CPUs that submitted: without this the
            // vectors land wherever the IRQ core put them, and every batch
            // of completions costs an IPI to the submitting CPU. Best
            // effort: I/O works either way.
            if let Err(e) = set.steer_irq(u32::from(q.qid) - 1, u32::from(q.qid)) {
                pr_warn!(
                    "{}: I/O queue {} interrupt not steered to its CPUs ({:?})\n",
                    self.name(),
                    q.qid,
                    e
                );
            }
        }
        self.io = Some(IoState { set, path });
        self.create_io_queues()?;
        pr_info!(
            "{}: {} I/O queue pairs of {} entries\n",
            self.name(),
            n,
            IO_QUEUE_ENTRIES
        );
        Ok(())
    }

    /// (Re)creates every I/O queue pair on the card.
    fn create_io_queues(&mut self) -> Result {
        let Some(io) = &self.io else {
            return Ok(());
        };
        let mut queues = KVec::new();
        for q in io.path.queues() {
            queues.push(q.clone(), GFP_KERNEL)?;
        }
        let entries = u32::from(IO_QUEUE_ENTRIES);
        for q in queues.iter() {
            q.reset();
            let new = regs::NewQueue {
                qid: q.qid,
                entries,
            };
            self.hw.bar2.write32(regs::cq_head_doorbell(q.qid), 0)?;
            self.admin_command(SubmissionEntry {
                opcode: regs::ADMIN_CREATE_IO_CQ,
                prp1: q.cq_dma(),
                cdw10: new.cdw10(),
                cdw11: regs::CqOptions {
                    interrupts: true,
                    vector: q.qid,
                }
                .cdw11(),
                ..SubmissionEntry::default()
            })?;
            self.admin_command(SubmissionEntry {
                opcode: regs::ADMIN_CREATE_IO_SQ,
                prp1: q.sq_dma(),
                cdw10: new.cdw10(),
                cdw11: regs::SqOptions { cqid: q.qid }.cdw11(),
                ..SubmissionEntry::default()
            })?;
        }
        Ok(())
    }

    /// Number of I/O queue pairs in use.
    pub(crate) fn io_queues(&self) -> u32 {
        self.io
            .as_ref()
            .map_or(0, |io| io.path.queues().len() as u32)
    }

    /// Takes the next completion off the admin CQ, if the card posted one.
    fn next_admin_completion(&mut self) -> Result<Option<CompletionEntry>> {
        let (head, phase) = self.ring.cq_expect();
        let Some(cqe) = io_path::read_completion(&self.acq, head, phase)? else {
            return Ok(None);
        };
        self.ring.cq_advance();
        self.hw
            .bar2
            .write32(regs::cq_head_doorbell(0), u32::from(self.ring.cq_head()))?;
        if !self.ring.set_sq_head(cqe.sq_head) {
            pr_warn!(
                "{}: card reported SQ head {} out of range\n",
                self.name(),
                cqe.sq_head
            );
        }
        Ok(Some(cqe))
    }

    /// Submits one admin command and waits for its completion (bounded by
    /// [`ADMIN_TIMEOUT_MS`]). A non-success status becomes its errno
    /// ([`status_errno`]).
    fn admin_command(&mut self, sqe: SubmissionEntry) -> Result<CompletionEntry> {
        self.admin_command_with(sqe, status_errno)
    }

    /// As [`Self::admin_command`], with `to_errno` choosing the errno of a
    /// non-success status (for commands where a status means something of
    /// their own).
    fn admin_command_with(
        &mut self,
        mut sqe: SubmissionEntry,
        to_errno: fn(u16) -> kernel::error::Error,
    ) -> Result<CompletionEntry> {
        let io_failed = self
            .io
            .as_ref()
            .is_some_and(|io| io.path.failed.load(core::sync::atomic::Ordering::Relaxed));
        if self.failed || io_failed {
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
                    pr_info!(
                        "{}: admin opcode {:#04x} nsid {} failed with status {:#05x}\n",
                        self.name(),
                        sqe.opcode,
                        sqe.nsid,
                        cqe.status_code()
                    );
                    self.last_error_result = cqe.result;
                    return Err(to_errno(cqe.status_code()));
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

    /// Lets the I/O path's timeouts reach `card`'s recovery work (`None`
    /// before the card goes away).
    pub(crate) fn attach_card(&self, card: Option<Arc<crate::card::Card>>) {
        if let Some(io) = &self.io {
            io.path.set_card(card);
        }
    }

    /// Asks the card whether command `cid` of submission queue `sqid` waits
    /// in its QoS scheduler (an Abort that keeps queued commands).
    fn command_queued(&mut self, sqid: u16, cid: u16) -> Result<bool> {
        let cqe = self.admin_command(SubmissionEntry {
            opcode: regs::ADMIN_ABORT,
            cdw10: regs::AbortTarget { sqid, cid }.cdw10(),
            cdw11: regs::AbortOptions { keep_queued: true }.cdw11(),
            ..SubmissionEntry::default()
        })?;
        Ok(regs::AbortResult::from_dw0(cqe.result).queued)
    }

    /// Whether the request submitted as `cid` on `sqid` is still in flight.
    fn still_in_flight(&self, sqid: u16, cid: u16) -> bool {
        let Some(io) = &self.io else {
            return false;
        };
        io.set
            .request(u32::from(sqid) - 1, io_path::tag_of(cid))
            .is_some_and(|rq| io_path::current_command_id(&rq) == cid)
    }

    /// Run by the card's recovery work when I/O timers fired: every request
    /// whose timer fired is checked with the card. One the card holds on
    /// purpose (a ceiling, the media's rate) keeps waiting; one it does not
    /// have means a lost command or a hung card: the card is reset, which
    /// requeues everything in flight. A card already marked failed is reset.
    pub(crate) fn check_timeouts(&mut self) {
        let Some(io) = &self.io else {
            return;
        };
        let path = io.path.clone();
        if path.dead.load(core::sync::atomic::Ordering::Relaxed) {
            // I/O arrived for a dead card: see whether it came back (at most
            // once a second; each try samples the heartbeat).
            let now = time::now_ms();
            if now >= self.last_revival_ms + 1000 {
                self.last_revival_ms = now;
                let _ = self.recover();
            }
            return;
        }
        let mut suspects = KVec::new();
        io.set.for_each_busy(|rq| {
            if rq
                .data()
                .suspect
                .swap(false, core::sync::atomic::Ordering::Relaxed)
            {
                let cid = io_path::current_command_id(&rq);
                // Out of memory only delays the check to the next timeout.
                let _ = suspects.push((rq.hctx() as u16 + 1, cid), GFP_KERNEL);
            }
        });
        let mut reset = self.failed || path.failed.load(core::sync::atomic::Ordering::Relaxed);
        let mut held = 0u32;
        for &(sqid, cid) in suspects.iter() {
            if reset {
                break;
            }
            match self.command_queued(sqid, cid) {
                Ok(true) => held += 1,
                Ok(false) => {
                    // It may have just left the scheduler and be running:
                    // a command the card runs completes within moments.
                    let gone = time::poll_until(200, 10, || !self.still_in_flight(sqid, cid));
                    if !gone {
                        pr_err!(
                            "{}: I/O queue {} command {:#06x} not done after {} ms and not held by the card; resetting the card\n",
                            self.name(),
                            sqid,
                            cid,
                            IO_TIMEOUT_MS
                        );
                        reset = true;
                    }
                }
                Err(e) => {
                    pr_err!(
                        "{}: the card did not answer about a timed-out command ({:?}); resetting it\n",
                        self.name(),
                        e
                    );
                    reset = true;
                }
            }
        }
        if held > 0 {
            pr_info!(
                "{}: {} I/O command(s) past {} ms are held on purpose by the card (QoS); timers re-armed\n",
                self.name(),
                held,
                IO_TIMEOUT_MS
            );
        }
        if reset {
            path.failed
                .store(true, core::sync::atomic::Ordering::Relaxed);
            if self.recover().is_err() {
                pr_err!("{}: card not recovered; its I/O fails\n", self.name());
            }
        }
    }

    /// Asks the card for its Identify Controller data.
    pub(crate) fn identify(&mut self) -> Result<DiaIdentity> {
        self.buf.zero();
        let sqe = SubmissionEntry {
            opcode: regs::ADMIN_IDENTIFY,
            prp1: self.buf.dma_handle(),
            cdw10: regs::IdentifyCns::Controller.cdw10(),
            ..SubmissionEntry::default()
        };
        self.admin_command(sqe)?;
        let b = &self.buf;
        self.vwc = b.read::<u8>(offset_of!(IdentifyController, vwc))? & 1 != 0;
        self.max_transfer = b.read(offset_of!(IdentifyController, max_transfer_bytes))?;
        let caps: u64 = b.read(offset_of!(IdentifyController, capabilities))?;
        self.network = caps & regs::CARD_CAP_NETWORK != 0;
        let vs: u32 = b.read(offset_of!(IdentifyController, interface_version))?;
        // The driver binds to major 1 only (probe), so the minor says it.
        self.mirrors = (vs & 0xffff) >= regs::INTERFACE_MINOR_MIRROR;
        self.tso = (vs & 0xffff) >= regs::INTERFACE_MINOR_PORT_TSO;
        self.max_ports = b
            .read::<u32>(offset_of!(IdentifyController, max_ports))?
            .min(crate::abi::ioctl::DIA_PORT_LIST_MAX as u32);
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
            io_queues: self.io_queues(),
            serial: b.read(offset_of!(IdentifyController, serial))?,
            model: b.read(offset_of!(IdentifyController, model))?,
            firmware: b.read(offset_of!(IdentifyController, firmware))?,
            reserved0: [0; 4],
            qos_capacity_iops: b.read(offset_of!(IdentifyController, qos_capacity_iops))?,
            qos_capacity_bytes_per_s: b
                .read(offset_of!(IdentifyController, qos_capacity_bytes_per_s))?,
            reserved: [0; 24],
        })
    }

    /// Normal shutdown (CC.SHN), then disable; every wait is bounded.
    fn shutdown(&mut self) {
        if !self.enabled {
            return;
        }
        if !self.failed {
            let shn = self
                .write_cc(regs::CC_EN | regs::CC_SHN_NORMAL)
                .and_then(|()| self.wait_csts(regs::CSTS_SHST_COMPLETE, regs::CSTS_SHST_COMPLETE));
            if shn.is_err() {
                pr_warn!("{}: card did not confirm shutdown\n", self.name());
            }
        }
        if self.disable().is_err() {
            pr_warn!(
                "{}: card did not confirm reset; bus mastering cleared before its memory is freed\n",
                self.name()
            );
            // As the nvme driver does with a controller that will not
            // disable: with bus mastering off the function cannot reach the
            // queues and rings that are freed next.
            self.hw.dev.clear_master();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Disks first, while the card can still complete their last flushes.
        drop(core::mem::take(&mut self.disks));
        self.shutdown();
    }
}

/// The errno for a card status, so callers see what went wrong.
fn status_errno(status: u16) -> kernel::error::Error {
    use kernel::error::code::{EBUSY, EEXIST, ENOENT, ENOSPC};
    match status {
        regs::STATUS_INVALID_NAMESPACE => ENOENT,
        regs::STATUS_NS_ATTACHED_DELETE => EBUSY,
        regs::STATUS_NS_ALREADY_ATTACHED => EEXIST,
        regs::STATUS_NS_ID_UNAVAILABLE
        | regs::STATUS_NS_INSUFFICIENT_CAPACITY
        | regs::STATUS_CAPACITY_EXCEEDED => ENOSPC,
        regs::STATUS_INVALID_FORMAT | regs::STATUS_INVALID_FIELD | regs::STATUS_NS_NOT_ATTACHED => {
            EINVAL
        }
        regs::STATUS_INVALID_OPCODE => errno::EOPNOTSUPP(),
        regs::STATUS_QOS_ADMISSION => errno::EDQUOT(),
        regs::STATUS_REMOTE_UNREACHABLE => errno::EHOSTUNREACH(),
        regs::STATUS_REMOTE_REFUSED => errno::ECONNREFUSED(),
        _ => EIO,
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
