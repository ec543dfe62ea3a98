//! The card's controller: the register handshake (CC.EN/CSTS.RDY, shutdown,
//! fatal status), the queues, and the commands. One `service` pass reads
//! the registers and doorbells and executes whatever is pending; `run` calls
//! it whenever a doorbell eventfd fires and at least every `CARD_POLL_MS`.
//! Whatever the guest writes, the controller answers with a status or a
//! fatal controller status, never a crash.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dia_abi::card::{self as abi, CompletionEntry, IdentifyController, SubmissionEntry};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, error, info, warn};

use crate::bar::Bar;
use crate::doorbell::{EventFd, Interrupts};
use crate::fault::{Fault, FAULT_EXIT_CODE};
use crate::guest_memory::GuestMemory;
use crate::queue::{check_placement, CompletionQueue, SubmissionQueue};

const PAGE: u64 = 4096;

/// Static facts about the card.
#[derive(Debug, Clone)]
pub struct CardConfig {
    /// Serial number reported by Identify.
    pub serial: String,
    /// Doorbell/interrupt vectors (admin + I/O queues).
    pub vectors: u16,
    /// Largest queue the card accepts (entries).
    pub max_queue_entries: u16,
    /// Injected fault, if any.
    pub fault: Option<Fault>,
}

impl CardConfig {
    fn max_io_queues(&self) -> u16 {
        self.vectors.saturating_sub(1)
    }
}

#[derive(Debug)]
enum State {
    /// CC.EN = 0.
    Disabled,
    /// CC.EN = 1 and CSTS.RDY = 1.
    Running {
        sqs: BTreeMap<u16, SubmissionQueue>,
        cqs: BTreeMap<u16, CompletionQueue>,
    },
    /// CSTS.CFS = 1 until the driver clears CC.EN.
    Failed,
}

/// Outcome of one command: status and result dword.
type Outcome = (u16, u32);

/// The controller.
#[derive(Debug)]
pub struct Controller {
    bar: Bar,
    mem: GuestMemory,
    irq: Interrupts,
    cfg: CardConfig,
    state: State,
    admin_seen: HashMap<u8, u32>,
    heartbeat_at: Instant,
}

impl Controller {
    /// Lays out the registers and reports the firmware running (unless the
    /// `never-ready` fault is injected).
    pub fn new(bar: Bar, mem: GuestMemory, irq: Interrupts, cfg: CardConfig) -> Self {
        bar.write64(abi::REG_MAGIC, abi::CARD_MAGIC);
        bar.write32(abi::REG_VS, abi::INTERFACE_VERSION);
        bar.write64(
            abi::REG_CAP,
            abi::make_cap(cfg.max_queue_entries - 1, cfg.max_io_queues(), 2),
        );
        bar.write32(abi::REG_CC, 0);
        bar.write32(abi::REG_CSTS, 0);
        bar.write32(abi::REG_CARD_PEER, 0);
        bar.write32(abi::REG_VECTORS, u32::from(cfg.vectors));
        bar.write64(abi::REG_HEARTBEAT, 0);
        let status = if cfg.fault == Some(Fault::NeverReady) {
            warn!("fault: never-ready; firmware status stays OFF");
            abi::FW_STATUS_OFF
        } else {
            abi::FW_STATUS_RUNNING
        };
        bar.write32(abi::REG_FW_STATUS, status);
        Self {
            bar,
            mem,
            irq,
            cfg,
            state: State::Disabled,
            admin_seen: HashMap::new(),
            heartbeat_at: Instant::now(),
        }
    }

    /// The register BAR.
    pub fn bar(&self) -> &Bar {
        &self.bar
    }

    /// Serves doorbells until `stop` is set.
    pub fn run(&mut self, doorbells: &[EventFd], stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            let mut fds: Vec<PollFd<'_>> = doorbells
                .iter()
                .map(|d| PollFd::new(d.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout =
                PollTimeout::try_from(abi::CARD_POLL_MS as i32).unwrap_or(PollTimeout::ZERO);
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    error!("poll on doorbells failed: {e}");
                    std::thread::sleep(Duration::from_millis(u64::from(abi::CARD_POLL_MS)));
                }
            }
            for d in doorbells {
                d.drain();
            }
            self.service();
        }
    }

    /// One pass: heartbeat, register handshake, pending commands.
    pub fn service(&mut self) {
        if self.bar.read32(abi::REG_FW_STATUS) != abi::FW_STATUS_RUNNING {
            return;
        }
        if self.heartbeat_at.elapsed() >= Duration::from_millis(u64::from(abi::HEARTBEAT_MS / 2)) {
            let hb = self.bar.read64(abi::REG_HEARTBEAT);
            self.bar.write64(abi::REG_HEARTBEAT, hb.wrapping_add(1));
            self.heartbeat_at = Instant::now();
        }
        let cc = self.bar.read32(abi::REG_CC);
        let enabled = cc & abi::CC_EN != 0;
        match (&self.state, enabled) {
            (State::Disabled, true) => self.enable(),
            (State::Running { .. } | State::Failed, false) => {
                info!("controller reset (CC.EN cleared)");
                self.state = State::Disabled;
                self.bar.write32(abi::REG_CSTS, 0);
            }
            _ => {}
        }
        if matches!(self.state, State::Running { .. }) {
            if cc & abi::CC_SHN_NORMAL != 0 {
                let csts = self.bar.read32(abi::REG_CSTS);
                if csts & abi::CSTS_SHST_COMPLETE == 0 {
                    info!("shutdown notification: nothing volatile to flush");
                    self.bar
                        .write32(abi::REG_CSTS, csts | abi::CSTS_SHST_COMPLETE);
                }
            }
            self.process_queues();
        }
    }

    fn fatal(&mut self, why: &str) {
        error!("controller fatal status: {why}");
        self.state = State::Failed;
        let csts = self.bar.read32(abi::REG_CSTS);
        self.bar
            .write32(abi::REG_CSTS, (csts | abi::CSTS_CFS) & !abi::CSTS_RDY);
    }

    fn enable(&mut self) {
        let aqa = self.bar.read32(abi::REG_AQA);
        let sq_entries = (aqa & 0xfff) + 1;
        let cq_entries = ((aqa >> 16) & 0xfff) + 1;
        let asq = self.bar.read64(abi::REG_ASQ);
        let acq = self.bar.read64(abi::REG_ACQ);
        let sizes_ok = (2..=abi::ADMIN_QUEUE_MAX_ENTRIES).contains(&sq_entries)
            && (2..=abi::ADMIN_QUEUE_MAX_ENTRIES).contains(&cq_entries);
        // Sizes are at most 4096 here, so they fit u16.
        let (sqn, cqn) = (sq_entries as u16, cq_entries as u16);
        if !sizes_ok {
            return self.fatal(&format!("bad AQA {aqa:#x}"));
        }
        if !check_placement(&self.mem, asq, sqn, abi::SQE_SIZE)
            || !check_placement(&self.mem, acq, cqn, abi::CQE_SIZE)
        {
            return self.fatal(&format!(
                "admin queues ASQ {asq:#x} / ACQ {acq:#x} not aligned or outside guest memory"
            ));
        }
        let mut sqs = BTreeMap::new();
        let mut cqs = BTreeMap::new();
        sqs.insert(0, SubmissionQueue::new(0, asq, sqn));
        cqs.insert(
            0,
            CompletionQueue::new(acq, cqn, abi::DOORBELL_VECTOR_ADMIN, true),
        );
        self.state = State::Running { sqs, cqs };
        self.bar.write32(abi::REG_CSTS, abi::CSTS_RDY);
        info!(
            "controller enabled: admin SQ {sqn} entries at {asq:#x}, CQ {cqn} entries at {acq:#x}"
        );
    }

    fn process_queues(&mut self) {
        let State::Running { sqs, .. } = &self.state else {
            return;
        };
        let qids: Vec<u16> = sqs.keys().copied().collect();
        let mut raise: Vec<u16> = Vec::new();
        for qid in qids {
            if let Err(why) = self.process_sq(qid, &mut raise) {
                return self.fatal(&why);
            }
        }
        raise.sort_unstable();
        raise.dedup();
        for v in raise {
            self.irq.raise(v);
        }
    }

    fn process_sq(&mut self, qid: u16, raise: &mut Vec<u16>) -> Result<(), String> {
        loop {
            let tail_raw = self.bar.read32(abi::sq_tail_doorbell(qid));
            let State::Running { sqs, cqs } = &mut self.state else {
                return Ok(());
            };
            let Some(sq) = sqs.get_mut(&qid) else {
                return Ok(());
            };
            if !sq.valid_tail(tail_raw) {
                return Err(format!(
                    "SQ {qid} tail doorbell {tail_raw} beyond the queue"
                ));
            }
            // Checked just above: the tail fits the queue size (u16).
            if !sq.pending(tail_raw as u16) {
                return Ok(());
            }
            let cqid = sq.cqid;
            let head_raw = self.bar.read32(abi::cq_head_doorbell(cqid));
            let Some(cq) = cqs.get(&cqid) else {
                return Err(format!("SQ {qid} completes on missing CQ {cqid}"));
            };
            if !cq.valid_head(head_raw) {
                return Err(format!(
                    "CQ {cqid} head doorbell {head_raw} beyond the queue"
                ));
            }
            if cq.is_full(head_raw) {
                debug!("CQ {cqid} full; SQ {qid} waits");
                return Ok(());
            }
            let sqe = sq.pop(&self.mem).map_err(|e| format!("SQ {qid}: {e}"))?;
            let sq_head = sq.head();
            let (status, result) = if qid == 0 {
                self.admin(&sqe)
            } else {
                self.io(qid, &sqe)
            };
            if status != abi::STATUS_SUCCESS {
                debug!(
                    qid,
                    opcode = sqe.opcode,
                    cid = sqe.cid,
                    "status {status:#x}"
                );
            }
            let State::Running { cqs, .. } = &mut self.state else {
                return Ok(());
            };
            let Some(cq) = cqs.get_mut(&cqid) else {
                // The command deleted its own CQ: nowhere to complete.
                return Ok(());
            };
            let cqe = CompletionEntry {
                result,
                rsvd: 0,
                sq_head,
                sq_id: qid,
                cid: sqe.cid,
                status: 0,
            };
            cq.post(&self.mem, cqe, status)
                .map_err(|e| format!("CQ {cqid}: {e}"))?;
            if cq.interrupts {
                raise.push(cq.vector);
            }
        }
    }

    fn admin(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let seen = self.admin_seen.entry(sqe.opcode).or_insert(0);
        *seen += 1;
        if let Some(Fault::ExitOnAdmin { opcode, nth }) = self.cfg.fault {
            if opcode == sqe.opcode && nth == *seen {
                error!(
                    "fault: firmware dies on admin opcode {opcode:#04x} #{nth} (cid {})",
                    sqe.cid
                );
                std::process::exit(FAULT_EXIT_CODE);
            }
        }
        if sqe.flags != 0 {
            return (abi::STATUS_INVALID_FIELD, 0);
        }
        match sqe.opcode {
            abi::ADMIN_IDENTIFY => self.identify(sqe),
            abi::ADMIN_CREATE_IO_CQ => self.create_cq(sqe),
            abi::ADMIN_CREATE_IO_SQ => self.create_sq(sqe),
            abi::ADMIN_DELETE_IO_SQ => self.delete_sq(sqe),
            abi::ADMIN_DELETE_IO_CQ => self.delete_cq(sqe),
            other => {
                warn!("unknown admin opcode {other:#04x}");
                (abi::STATUS_INVALID_OPCODE, 0)
            }
        }
    }

    fn io(&mut self, _qid: u16, _sqe: &SubmissionEntry) -> Outcome {
        // No I/O command set yet (storage lands with namespaces).
        (abi::STATUS_INVALID_OPCODE, 0)
    }

    fn identify(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let cns = (sqe.cdw10 & 0xff) as u8;
        if cns != abi::CNS_CONTROLLER {
            return (abi::STATUS_INVALID_FIELD, 0);
        }
        let mut id = IdentifyController {
            vid: abi::PCI_VENDOR_ID,
            ssvid: abi::PCI_VENDOR_ID,
            interface_version: abi::INTERFACE_VERSION,
            max_io_queues: self.cfg.max_io_queues(),
            max_queue_entries: self.cfg.max_queue_entries,
            ..IdentifyController::default()
        };
        abi::fill_ascii(&mut id.serial, &self.cfg.serial);
        abi::fill_ascii(&mut id.model, "dia emulated container IO card");
        abi::fill_ascii(&mut id.firmware, env!("CARGO_PKG_VERSION"));
        // SAFETY: IdentifyController is repr(C) plain data without padding
        // (size asserted in dia-abi); viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&id as *const IdentifyController).cast::<u8>(),
                abi::IDENTIFY_SIZE,
            )
        };
        match self.write_prp(sqe.prp1, sqe.prp2, bytes) {
            Ok(()) => (abi::STATUS_SUCCESS, 0),
            Err(status) => (status, 0),
        }
    }

    /// Copies `data` to the guest buffer described by PRP1/PRP2.
    fn write_prp(&self, prp1: u64, prp2: u64, data: &[u8]) -> Result<(), u16> {
        let mut off = 0usize;
        for (addr, len) in prp_segments(&self.mem, prp1, prp2, data.len())? {
            self.mem
                .write(addr, &data[off..off + len])
                .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
            off += len;
        }
        Ok(())
    }

    fn queue_args(&self, sqe: &SubmissionEntry) -> Result<(u16, u16), u16> {
        let qid = (sqe.cdw10 & 0xffff) as u16;
        let entries = (sqe.cdw10 >> 16) + 1;
        if qid == 0 || qid > self.cfg.max_io_queues() {
            return Err(abi::STATUS_INVALID_QID);
        }
        if !(2..=u32::from(self.cfg.max_queue_entries)).contains(&entries) {
            return Err(abi::STATUS_INVALID_QUEUE_SIZE);
        }
        if sqe.cdw11 & 1 == 0 {
            // Only physically contiguous queues.
            return Err(abi::STATUS_INVALID_FIELD);
        }
        // In range of max_queue_entries (u16) per the check above.
        Ok((qid, entries as u16))
    }

    fn create_cq(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let (qid, entries) = match self.queue_args(sqe) {
            Ok(v) => v,
            Err(s) => return (s, 0),
        };
        let vector = (sqe.cdw11 >> 16) as u16;
        let interrupts = sqe.cdw11 & 2 != 0;
        if vector >= self.cfg.vectors {
            return (abi::STATUS_INVALID_VECTOR, 0);
        }
        if !check_placement(&self.mem, sqe.prp1, entries, abi::CQE_SIZE) {
            return (abi::STATUS_INVALID_FIELD, 0);
        }
        let State::Running { cqs, .. } = &mut self.state else {
            return (abi::STATUS_INTERNAL_ERROR, 0);
        };
        if cqs.contains_key(&qid) {
            return (abi::STATUS_INVALID_QID, 0);
        }
        cqs.insert(
            qid,
            CompletionQueue::new(sqe.prp1, entries, vector, interrupts),
        );
        info!(qid, entries, vector, "I/O completion queue created");
        (abi::STATUS_SUCCESS, 0)
    }

    fn create_sq(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let (qid, entries) = match self.queue_args(sqe) {
            Ok(v) => v,
            Err(s) => return (s, 0),
        };
        let cqid = (sqe.cdw11 >> 16) as u16;
        if !check_placement(&self.mem, sqe.prp1, entries, abi::SQE_SIZE) {
            return (abi::STATUS_INVALID_FIELD, 0);
        }
        let State::Running { sqs, cqs } = &mut self.state else {
            return (abi::STATUS_INTERNAL_ERROR, 0);
        };
        if cqid == 0 || !cqs.contains_key(&cqid) {
            return (abi::STATUS_INVALID_CQ, 0);
        }
        if sqs.contains_key(&qid) {
            return (abi::STATUS_INVALID_QID, 0);
        }
        self.bar.write32(abi::sq_tail_doorbell(qid), 0);
        sqs.insert(qid, SubmissionQueue::new(cqid, sqe.prp1, entries));
        info!(qid, entries, cqid, "I/O submission queue created");
        (abi::STATUS_SUCCESS, 0)
    }

    fn delete_sq(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let qid = (sqe.cdw10 & 0xffff) as u16;
        let State::Running { sqs, .. } = &mut self.state else {
            return (abi::STATUS_INTERNAL_ERROR, 0);
        };
        if qid == 0 || sqs.remove(&qid).is_none() {
            return (abi::STATUS_INVALID_QID, 0);
        }
        info!(qid, "I/O submission queue deleted");
        (abi::STATUS_SUCCESS, 0)
    }

    fn delete_cq(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let qid = (sqe.cdw10 & 0xffff) as u16;
        let State::Running { sqs, cqs } = &mut self.state else {
            return (abi::STATUS_INTERNAL_ERROR, 0);
        };
        if qid == 0 || !cqs.contains_key(&qid) {
            return (abi::STATUS_INVALID_QID, 0);
        }
        if sqs.values().any(|sq| sq.cqid == qid) {
            return (abi::STATUS_INVALID_QUEUE_DELETION, 0);
        }
        cqs.remove(&qid);
        info!(qid, "I/O completion queue deleted");
        (abi::STATUS_SUCCESS, 0)
    }
}

/// Splits a transfer of `len` bytes described by PRP1/PRP2 into guest
/// (address, length) segments, following PRP lists as NVMe defines them:
/// PRP1 may start at any dword offset; every later entry is page aligned;
/// when more than two pages are needed PRP2 points at a list whose last
/// entry chains to the next list page.
pub(crate) fn prp_segments(
    mem: &GuestMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Vec<(u64, usize)>, u16> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if prp1 & 3 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    let first = len.min((PAGE - prp1 % PAGE) as usize);
    let mut segs = vec![(prp1, first)];
    let mut left = len - first;
    if left == 0 {
        return Ok(segs);
    }
    if left <= PAGE as usize {
        if !prp2.is_multiple_of(PAGE) {
            return Err(abi::STATUS_INVALID_PRP_OFFSET);
        }
        segs.push((prp2, left));
        return Ok(segs);
    }
    // PRP2 is a list pointer (may have a dword-aligned offset).
    if prp2 & 7 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    let mut list = prp2;
    let max_pages = len.div_ceil(PAGE as usize) + 1;
    while left > 0 {
        let mut entry = [0u8; 8];
        mem.read(list, &mut entry)
            .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
        let addr = u64::from_le_bytes(entry);
        let last_in_page = (list + 8).is_multiple_of(PAGE);
        if last_in_page && left > PAGE as usize {
            // Chain to the next list page.
            if addr % PAGE != 0 {
                return Err(abi::STATUS_INVALID_PRP_OFFSET);
            }
            list = addr;
            continue;
        }
        if addr % PAGE != 0 {
            return Err(abi::STATUS_INVALID_PRP_OFFSET);
        }
        let n = left.min(PAGE as usize);
        segs.push((addr, n));
        left -= n;
        list += 8;
        if segs.len() > max_pages {
            return Err(abi::STATUS_INVALID_FIELD);
        }
    }
    Ok(segs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::SharedMemory;

    fn mem() -> GuestMemory {
        GuestMemory::new(SharedMemory::anonymous("prp", 1 << 20).unwrap())
    }

    #[test]
    fn prp_single_and_two_pages() {
        let m = mem();
        assert_eq!(prp_segments(&m, 0x1000, 0, 4096), Ok(vec![(0x1000, 4096)]));
        assert_eq!(
            prp_segments(&m, 0x1800, 0x5000, 4096),
            Ok(vec![(0x1800, 2048), (0x5000, 2048)])
        );
        assert_eq!(
            prp_segments(&m, 0x1802, 0, 8),
            Err(abi::STATUS_INVALID_PRP_OFFSET)
        );
        assert_eq!(
            prp_segments(&m, 0x1800, 0x5001, 4096),
            Err(abi::STATUS_INVALID_PRP_OFFSET)
        );
    }

    #[test]
    fn prp_list_with_chain() {
        let m = mem();
        // A list page at 0x10000 whose last entry chains to 0x11000.
        for i in 0..511u64 {
            m.write(0x10000 + i * 8, &(0x20000 + i * PAGE).to_le_bytes())
                .unwrap();
        }
        m.write(0x10000 + 511 * 8, &0x11000u64.to_le_bytes())
            .unwrap();
        m.write(0x11000, &0x90000u64.to_le_bytes()).unwrap();
        m.write(0x11008, &0x91000u64.to_le_bytes()).unwrap();
        // 1 page at PRP1, 511 from the first list page, 2 from the chained one.
        let len = 4096 * 514;
        let segs = prp_segments(&m, 0x3000, 0x10000, len).unwrap();
        assert_eq!(segs.len(), 514);
        assert_eq!(segs[1], (0x20000, 4096));
        assert_eq!(segs[511], (0x20000 + 510 * PAGE, 4096));
        assert_eq!(segs[512], (0x90000, 4096));
        assert_eq!(segs[513], (0x91000, 4096));
        assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), len);
    }

    #[test]
    fn prp_list_exactly_full_page_does_not_chain() {
        let m = mem();
        for i in 0..512u64 {
            m.write(0x10000 + i * 8, &(0x20000 + i * PAGE).to_le_bytes())
                .unwrap();
        }
        let segs = prp_segments(&m, 0x3000, 0x10000, 4096 * 513).unwrap();
        assert_eq!(segs.len(), 513);
        assert_eq!(segs[512], (0x20000 + 511 * PAGE, 4096));
    }

    #[test]
    fn prp_list_outside_memory() {
        let m = mem();
        assert_eq!(
            prp_segments(&m, 0x3000, 1 << 40, 3 * 4096),
            Err(abi::STATUS_DATA_TRANSFER_ERROR)
        );
    }
}
