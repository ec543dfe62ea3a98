//! The I/O path: one submission/completion queue pair per CPU (up to what
//! the card offers), each with its own MSI-X vector, shared by every
//! namespace's disk through one blk-mq tag set. A request becomes one NVM
//! command with PRPs pointing at the request's own pages (no bounce copy);
//! the interrupt handler walks the CQ and hands requests back to blk-mq.
//!
//! Timeouts follow the nvme driver's rule: a request's memory is never given
//! back while the card may still use it. When a request's timer fires the
//! driver asks the card (an Abort that keeps queued commands) whether the
//! command waits in its QoS scheduler, which a ceiling does on purpose: then
//! the timer is re-armed and nobody sees an error. Otherwise the card is
//! reset (by the card's recovery work, not by whoever comes next), the
//! commands it dropped are requeued, and they run again on the new queues.
//! A command id carries a generation besides the tag, so a late completion
//! of an earlier submission of the same tag is recognised and dropped.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};

use kernel::error::code::EINVAL;
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

use crate::abi::card::{self as regs, CompletionEntry, DsmRange, SubmissionEntry};
use crate::card::Card;
use crate::controller::Hardware;
use crate::glue::blk::{
    self, Op, Operations, Request, Status, TagSet, TimeoutAction, MAX_SEGMENTS,
};
use crate::glue::dma::{self, CoherentAllocation};
use crate::glue::irq::Handler;
use crate::glue::pci::Device;
use crate::write_cache::WriteCache;

/// Entries per I/O queue (the tag depth is one less: an SQ never overflows).
pub(crate) const IO_QUEUE_ENTRIES: u16 = 256;
/// A request not completed within this time makes the driver ask the card
/// about it (see the module documentation).
pub(crate) const IO_TIMEOUT_MS: u32 = 10_000;
/// Bits of a command id that hold the request's tag; the rest hold the
/// generation of the submission.
const CID_TAG_BITS: u32 = 8;
const _: () = assert!((IO_QUEUE_ENTRIES as u32) <= 1 << CID_TAG_BITS);

/// The command id of a request's submission: tag and generation.
fn command_id(tag: u32, generation: u32) -> u16 {
    let tag_mask = (1u32 << CID_TAG_BITS) - 1;
    ((tag & tag_mask) | (generation << CID_TAG_BITS)) as u16
}

/// The tag a command id names.
pub(crate) fn tag_of(cid: u16) -> u32 {
    u32::from(cid) & ((1 << CID_TAG_BITS) - 1)
}

/// The command id of a started request's current submission.
pub(crate) fn current_command_id(rq: &Request<'_>) -> u16 {
    command_id(
        rq.tag(),
        generation_bits(rq.data().generation.load(Ordering::Relaxed)),
    )
}

/// The generation part of a request's counter, as it appears in a command id.
fn generation_bits(counter: u32) -> u32 {
    counter & (u32::from(u16::MAX) >> CID_TAG_BITS)
}

/// The page every PRP entry after the first starts on (the card's rule).
const PAGE: u64 = regs::PRP_PAGE_BYTES;

/// One I/O queue pair in DMA memory.
///
/// # Invariants
///
/// `cq_head`/`cq_phase` are only changed by this queue's interrupt handler,
/// or by a reset while the card is disabled.
#[pin_data]
pub(crate) struct IoQueue {
    /// Queue id on the card (1-based; blk-mq hardware queue `qid - 1`).
    pub(crate) qid: u16,
    sq: CoherentAllocation,
    cq: CoherentAllocation,
    /// SQ tail; submitters of this hardware queue serialise on it.
    #[pin]
    sq_tail: SpinLock<u16>,
    cq_head: AtomicU16,
    cq_phase: AtomicBool,
}

impl IoQueue {
    /// Allocates the queue memory for `qid`.
    pub(crate) fn new(dev: Device, qid: u16) -> Result<Arc<Self>> {
        let n = usize::from(IO_QUEUE_ENTRIES);
        let sq = CoherentAllocation::new(dev, n * regs::SQE_SIZE)?;
        let cq = CoherentAllocation::new(dev, n * regs::CQE_SIZE)?;
        Arc::pin_init(
            pin_init!(IoQueue {
                qid,
                sq,
                cq,
                sq_tail <- kernel::new_spinlock!(0, "dia:sq"),
                cq_head: AtomicU16::new(0),
                cq_phase: AtomicBool::new(true),
            }),
            GFP_KERNEL,
        )
    }

    /// Bus address of the SQ.
    pub(crate) fn sq_dma(&self) -> u64 {
        self.sq.dma_handle()
    }

    /// Bus address of the CQ.
    pub(crate) fn cq_dma(&self) -> u64 {
        self.cq.dma_handle()
    }

    /// Forgets all entries (the card is disabled; the queues get re-created).
    pub(crate) fn reset(&self) {
        self.sq.zero();
        self.cq.zero();
        *self.sq_tail.lock() = 0;
        self.cq_head.store(0, Ordering::Relaxed);
        self.cq_phase.store(true, Ordering::Relaxed);
    }
}

/// The I/O side of a card: its queues and doorbells, and whether it works.
#[pin_data]
pub(crate) struct IoPath {
    hw: Arc<Hardware>,
    queues: KVec<Arc<IoQueue>>,
    /// Set when the card must be reset; new I/O waits (is requeued) or, if
    /// the card cannot be brought back, fails fast.
    pub(crate) failed: AtomicBool,
    /// Set once a reset failed: the card is dead and I/O fails.
    pub(crate) dead: AtomicBool,
    /// The card, for its recovery work; `None` before probe finished and
    /// after remove started (which breaks the card -> path -> card cycle).
    #[pin]
    card: SpinLock<Option<Arc<Card>>>,
}

impl IoPath {
    /// The I/O path over `queues` (index i is hardware queue i, qid i+1).
    pub(crate) fn new(hw: Arc<Hardware>, queues: KVec<Arc<IoQueue>>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(IoPath {
                hw,
                queues,
                failed: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                card <- kernel::new_spinlock!(None, "dia:io-card"),
            }),
            GFP_KERNEL,
        )
    }

    /// Lets timeouts reach the card's recovery work (`None` to stop).
    pub(crate) fn set_card(&self, card: Option<Arc<Card>>) {
        let old = core::mem::replace(&mut *self.card.lock(), card);
        // The old reference is dropped outside the spinlock.
        drop(old);
    }

    fn card(&self) -> Option<Arc<Card>> {
        self.card.lock().clone()
    }

    /// The queues.
    pub(crate) fn queues(&self) -> &[Arc<IoQueue>] {
        &self.queues
    }

    fn ring(&self, q: &IoQueue, tail: u16) {
        // Doorbell offsets are inside BAR2 (qid <= card vectors, checked at setup).
        let _ = self
            .hw
            .bar2
            .write32(regs::sq_tail_doorbell(q.qid), u32::from(tail));
        let _ = self.hw.ring_doorbell(q.qid);
    }

    fn submit(&self, q: &IoQueue, sqe: &SubmissionEntry, ring: bool) -> Result {
        let mut tail = q.sq_tail.lock();
        let slot = *tail;
        q.sq.write(usize::from(slot) * regs::SQE_SIZE, sqe)?;
        *tail = (slot + 1) % IO_QUEUE_ENTRIES;
        if ring {
            self.ring(q, *tail);
        }
        Ok(())
    }

    /// Builds the PRPs of a request whose `segments` segments are mapped;
    /// returns (prp1, prp2).
    fn prps(rq: &mut Request<'_>, segments: usize) -> Result<(u64, u64)> {
        // Page entries: the first may start anywhere; the block layer's
        // virt boundary makes every later one page aligned.
        let mut entries = [0u64; MAX_SEGMENTS + 2];
        let mut n = 0usize;
        for i in 0..segments {
            let (addr, len) = rq.segment(i).ok_or(EINVAL)?;
            let end = addr + u64::from(len);
            let mut a = addr;
            while a < end {
                *entries.get_mut(n).ok_or(EINVAL)? = a;
                n += 1;
                a = (a & !(PAGE - 1)) + PAGE;
            }
        }
        match n {
            0 => Err(EINVAL),
            1 => Ok((entries[0], 0)),
            2 => Ok((entries[0], entries[1])),
            _ => {
                let (list, dma) = rq.prp_list().ok_or(ENOMEM)?;
                for (slot, &e) in list.iter_mut().zip(&entries[1..n]) {
                    *slot = e;
                }
                Ok((entries[0], dma))
            }
        }
    }

    fn build(ns: &NsData, rq: &mut Request<'_>) -> Result<SubmissionEntry, Status> {
        let shift = u32::from(ns.lba_shift);
        let slba = rq.sector() >> (shift - 9);
        let blocks = rq.bytes() >> shift;
        let generation = rq.data().generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut sqe = SubmissionEntry {
            nsid: ns.nsid,
            cid: command_id(rq.tag(), generation_bits(generation)),
            ..SubmissionEntry::default()
        };
        match rq.op() {
            Op::Flush => sqe.opcode = regs::IO_FLUSH,
            Op::Read | Op::Write => {
                if blocks == 0 || blocks > 0x1_0000 {
                    return Err(Status::IoErr);
                }
                let n = rq.map().map_err(|_| Status::Busy)?;
                let (prp1, prp2) = Self::prps(rq, n).map_err(|_| {
                    rq.unmap();
                    Status::Busy
                })?;
                sqe.opcode = if rq.op() == Op::Read {
                    regs::IO_READ
                } else {
                    regs::IO_WRITE
                };
                sqe.prp1 = prp1;
                sqe.prp2 = prp2;
                let start = regs::StartLba { lba: slba };
                sqe.cdw10 = start.cdw10();
                sqe.cdw11 = start.cdw11();
                sqe.cdw12 = regs::IoBlocks {
                    blocks,
                    fua: rq.fua(),
                    deallocate: false,
                }
                .cdw12();
            }
            Op::WriteZeroes => {
                if blocks == 0 || blocks > 0x1_0000 {
                    return Err(Status::IoErr);
                }
                sqe.opcode = regs::IO_WRITE_ZEROES;
                let start = regs::StartLba { lba: slba };
                sqe.cdw10 = start.cdw10();
                sqe.cdw11 = start.cdw11();
                sqe.cdw12 = regs::IoBlocks {
                    blocks,
                    fua: false,
                    deallocate: true,
                }
                .cdw12();
            }
            Op::Discard => {
                let (list, dma) = rq.prp_list().ok_or(Status::Busy)?;
                let range = DsmRange {
                    attributes: 0,
                    blocks,
                    slba,
                };
                // A DsmRange is two u64 words: blocks<<32|attributes, then slba.
                list[0] = u64::from(range.attributes) | u64::from(range.blocks) << 32;
                list[1] = range.slba;
                sqe.opcode = regs::IO_DATASET_MANAGEMENT;
                sqe.prp1 = dma;
                sqe.cdw10 = regs::DsmRanges { ranges: 1 }.cdw10();
                sqe.cdw11 = regs::DsmAttributes { deallocate: true }.cdw11();
            }
            Op::Unsupported => return Err(Status::NotSupp),
        }
        Ok(sqe)
    }
}

/// What a namespace's disk needs on the I/O path.
pub(crate) struct NsData {
    /// Namespace id.
    pub(crate) nsid: u32,
    /// log2 of the block size.
    pub(crate) lba_shift: u8,
    /// What the card's volatile write cache may hold of it.
    pub(crate) cache: WriteCache,
    /// The card's firmware died with writes of this namespace unflushed
    /// (acknowledged, but only in its volatile cache): every write and
    /// flush fails until the last opener closes the disk. Failing only the
    /// next flush is not enough: its issuer may ignore the error (jbd2's
    /// checkpoint does, then moves the journal tail past metadata the crash
    /// took; found by card-kill-cycles), and a later flush or FUA write
    /// would then succeed on a damaged volume. Reads still work.
    pub(crate) fenced: AtomicBool,
}

impl NsData {
    /// A namespace's I/O data.
    pub(crate) fn new(nsid: u32, lba_shift: u8) -> Self {
        Self {
            nsid,
            lba_shift,
            cache: WriteCache::new(),
            fenced: AtomicBool::new(false),
        }
    }
}

fn status_of(code: u16) -> Status {
    match code {
        regs::STATUS_SUCCESS => Status::Ok,
        regs::STATUS_CAPACITY_EXCEEDED => Status::NoSpace,
        regs::STATUS_LBA_OUT_OF_RANGE => Status::Target,
        regs::STATUS_INVALID_OPCODE => Status::NotSupp,
        _ => Status::IoErr,
    }
}

impl Operations for IoPath {
    type Disk = NsData;

    fn queue_rq(&self, ns: &NsData, hctx: u32, rq: Request<'_>, last: bool) -> Status {
        if self.dead.load(Ordering::Relaxed) {
            // Let the recovery work see whether the card came back.
            if let Some(card) = self.card() {
                card.check_timeouts();
            }
            return Status::IoErr;
        }
        if self.failed.load(Ordering::Relaxed) {
            // A reset is under way (it quiesces the queues): try again later.
            return Status::Busy;
        }
        let Some(q) = self.queues.get(hctx as usize) else {
            return Status::IoErr;
        };
        let mut rq = rq;
        let op = rq.op();
        if ns.fenced.load(Ordering::Relaxed) && !matches!(op, Op::Read) {
            // Reported when the fence went up (`report_lost_cache`).
            return Status::IoErr;
        }
        match op {
            Op::Flush => {
                // A flush in flight when the firmware died (requeued by the
                // reset) covered writes the crash may have taken.
                if rq.data().flush_lost.swap(false, Ordering::Relaxed) {
                    pr_err!(
                        "namespace {}: a flush was in flight when the card's firmware died; failing it so the loss is reported\n",
                        ns.nsid
                    );
                    return Status::IoErr;
                }
                if ns.cache.flush_covered() {
                    rq.start();
                    rq.end(Status::Ok);
                    return Status::Ok;
                }
                rq.data()
                    .flush_mark
                    .store(ns.cache.mark(), Ordering::Relaxed);
            }
            Op::Write if rq.fua() => {
                rq.data()
                    .flush_mark
                    .store(ns.cache.mark(), Ordering::Relaxed);
            }
            _ => {}
        }
        let sqe = match Self::build(ns, &mut rq) {
            Ok(sqe) => sqe,
            Err(s) => return s,
        };
        rq.data().status.store(u32::MAX, Ordering::Relaxed);
        rq.data().result.store(0, Ordering::Relaxed);
        rq.data().suspect.store(false, Ordering::Relaxed);
        rq.start();
        if self.submit(q, &sqe, last).is_err() {
            rq.unmap();
            return Status::IoErr;
        }
        Status::Ok
    }

    fn commit_rqs(&self, hctx: u32) {
        if let Some(q) = self.queues.get(hctx as usize) {
            // Ring under the lock, as `submit` does: rung outside it, an
            // older tail could overwrite a newer one another CPU just rang.
            let tail = q.sq_tail.lock();
            self.ring(q, *tail);
        }
    }

    fn complete(&self, ns: &NsData, rq: Request<'_>) {
        rq.unmap();
        let code = rq.data().status.load(Ordering::Relaxed);
        let status = u16::try_from(code).map_or(Status::IoErr, status_of);
        let mark = rq.data().flush_mark.load(Ordering::Relaxed);
        match rq.op() {
            Op::Write if rq.fua() => {
                let result = rq.data().result.load(Ordering::Relaxed);
                if status == Status::Ok && result & regs::WRITE_RESULT_FLUSHED != 0 {
                    ns.cache.synced(mark);
                }
            }
            Op::Write | Op::WriteZeroes | Op::Discard => ns.cache.write_completed(),
            Op::Flush if status == Status::Ok => ns.cache.synced(mark),
            _ => {}
        }
        rq.end(status);
    }

    fn last_close(&self, ns: &NsData) {
        if ns.fenced.swap(false, Ordering::Relaxed) {
            pr_info!(
                "namespace {}: closed by its last user after the card lost its cache; writes and flushes accepted again\n",
                ns.nsid
            );
        }
    }

    fn timeout(&self, rq: Request<'_>) -> TimeoutAction {
        if self.dead.load(Ordering::Relaxed) {
            // The card is gone for good and was disabled or stopped
            // answering; nothing will complete this request.
            rq.unmap();
            rq.end(Status::IoErr);
            return TimeoutAction::Done;
        }
        // Whether the card holds it on purpose is asked by the card's
        // recovery work (an admin command sleeps; this callback must not
        // wait on the controller lock, which a reset holds).
        rq.data().suspect.store(true, Ordering::Relaxed);
        match self.card() {
            Some(card) => card.check_timeouts(),
            None => {
                // Probe has not finished or remove has started: remove fails
                // what is left once the card is stopped.
            }
        }
        TimeoutAction::ResetTimer
    }
}

/// Reads the completion in `slot` of `cq` if the card has posted it (its
/// phase tag is `phase`). The status word, which the card writes last, is
/// read first and the rest only after a read barrier: read field by field in
/// any other order, a new phase could pair with the previous lap's command
/// identifier and complete the wrong request.
pub(crate) fn read_completion(
    cq: &CoherentAllocation,
    slot: u16,
    phase: bool,
) -> Result<Option<CompletionEntry>> {
    let at = usize::from(slot) * regs::CQE_SIZE;
    let status: u16 = cq.read(at + regs::CQE_STATUS_OFFSET)?;
    if (status & 1 != 0) != phase {
        return Ok(None);
    }
    dma::read_barrier();
    let mut cqe: CompletionEntry = cq.read(at)?;
    // The status word of this lap, as checked (the re-read is the same).
    cqe.status = status;
    Ok(Some(cqe))
}

/// Interrupt handler of one I/O queue.
pub(crate) struct IoIrq {
    pub(crate) queue: Arc<IoQueue>,
    pub(crate) set: Arc<TagSet<IoPath>>,
    pub(crate) hw: Arc<Hardware>,
    /// Completions whose tag matched no request in flight.
    pub(crate) strays: AtomicU32,
}

impl Handler for IoIrq {
    fn handle(&self) -> bool {
        let q = &self.queue;
        let mut head = q.cq_head.load(Ordering::Relaxed);
        let mut phase = q.cq_phase.load(Ordering::Relaxed);
        let mut seen = false;
        while let Ok(Some(cqe)) = read_completion(&q.cq, head, phase) {
            seen = true;
            head += 1;
            if head == IO_QUEUE_ENTRIES {
                head = 0;
                phase = !phase;
            }
            match self
                .set
                .request(u32::from(q.qid) - 1, tag_of(cqe.cid))
                .filter(|rq| current_command_id(rq) == cqe.cid)
            {
                Some(rq) => {
                    rq.data().result.store(cqe.result, Ordering::Relaxed);
                    rq.data()
                        .status
                        .store(u32::from(cqe.status_code()), Ordering::Relaxed);
                    rq.complete();
                }
                None => {
                    // No request in flight with this tag, or one of a later
                    // submission: a stale or bogus completion.
                    if self.strays.fetch_add(1, Ordering::Relaxed) < 8 {
                        pr_warn!(
                            "I/O queue {}: dropped a completion for cid {:#06x} that matches no request in flight\n",
                            q.qid,
                            cqe.cid
                        );
                    }
                }
            }
        }
        if seen {
            // INVARIANT: only this handler moves the CQ head.
            q.cq_head.store(head, Ordering::Relaxed);
            q.cq_phase.store(phase, Ordering::Relaxed);
            let _ = self
                .hw
                .bar2
                .write32(regs::cq_head_doorbell(q.qid), u32::from(head));
        }
        true
    }
}

/// Disk limits of a namespace.
pub(crate) fn disk_params(
    lba_shift: u8,
    size_blocks: u64,
    max_transfer_bytes: u32,
    vwc: bool,
) -> blk::DiskParams {
    let max_pages = MAX_SEGMENTS as u32;
    let card_max = if max_transfer_bytes == 0 {
        u32::MAX
    } else {
        max_transfer_bytes
    };
    let max_bytes = (max_pages * PAGE as u32).min(card_max);
    blk::DiskParams {
        lba_size: 1 << lba_shift,
        capacity_sectors: size_blocks << (lba_shift - 9),
        max_hw_sectors: max_bytes >> 9,
        max_discard_sectors: 0x1_0000 << (lba_shift - 9),
        max_write_zeroes_sectors: 0x1_0000 << (lba_shift - 9),
        volatile_write_cache: vwc,
        fua: vwc,
    }
}
