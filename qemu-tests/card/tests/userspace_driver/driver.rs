//! The test driver's core: a card started in-process on memfd-backed BAR2
//! and guest RAM with real eventfds, the register handshake, the admin
//! queue, and the admin commands' builders the tests share.

use std::os::fd::AsFd;
use std::sync::Arc;

use dia_abi::card::{self as abi, CompletionEntry, IdentifyController, SubmissionEntry};
use dia_card_model::{
    Bar, Board, CardConfig, EventFd, Firmware, GuestMemory, Interrupts, PoolSpec, SharedMemory,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::ring::RingState;

pub(crate) const RAM: usize = 8 << 20;
pub(crate) const ASQ: u64 = 0x10000;
pub(crate) const ACQ: u64 = 0x20000;
pub(crate) const BUF: u64 = 0x30000;
pub(crate) const ADMIN_DEPTH: u16 = 8;
pub(crate) const VECTORS: u16 = 3;

pub(crate) struct TestDriver {
    pub(crate) bar: Bar,
    pub(crate) mem: GuestMemory,
    pub(crate) doorbells: Vec<EventFd>,
    pub(crate) irqs: Vec<EventFd>,
    pub(crate) fw: Firmware,
    /// The admin queue pair's positions, kept as dia.ko keeps them.
    pub(crate) admin: RingState,
    pub(crate) cid: u16,
}

/// A fresh admin queue pair's positions.
fn admin_ring() -> RingState {
    RingState::new(ADMIN_DEPTH).expect("admin queues of at least 2 entries")
}

fn view(m: &SharedMemory) -> SharedMemory {
    SharedMemory::map(m.fd().try_clone().unwrap(), m.len()).unwrap()
}

impl TestDriver {
    /// A namespace's counters (the card's NsStats log page).
    pub(crate) fn ns_stats(&mut self, nsid: u32) -> abi::NamespaceStats {
        let cqe = self.submit(SubmissionEntry {
            opcode: abi::ADMIN_GET_LOG_PAGE,
            nsid,
            prp1: BUF,
            cdw10: abi::LogPage::of_bytes(
                abi::LogId::NsStats,
                std::mem::size_of::<abi::NamespaceStats>(),
            )
            .cdw10(),
            ..Default::default()
        });
        assert_eq!(cqe.status_code(), 0);
        let mut raw = vec![0u8; std::mem::size_of::<abi::NamespaceStats>()];
        self.mem.read(BUF, &mut raw).unwrap();
        // SAFETY: NamespaceStats is repr(C) plain data; raw has its size.
        unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) }
    }

    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    pub(crate) fn start_with(pool: Option<PoolSpec>) -> Self {
        Self::start_full(pool, VECTORS, None, Vec::new())
    }

    pub(crate) fn start_full(
        pool: Option<PoolSpec>,
        vectors: u16,
        uplink_bind: Option<std::net::SocketAddr>,
        uplink_peers: Vec<std::net::SocketAddr>,
    ) -> Self {
        Self::start_card(pool, vectors, uplink_bind, uplink_peers, "TEST-SERIAL-7")
    }

    pub(crate) fn start_card(
        pool: Option<PoolSpec>,
        vectors: u16,
        uplink_bind: Option<std::net::SocketAddr>,
        uplink_peers: Vec<std::net::SocketAddr>,
        serial: &str,
    ) -> Self {
        let bar_mem = SharedMemory::anonymous("bar", 1 << 20).unwrap();
        let ram = SharedMemory::anonymous("ram", RAM).unwrap();
        let doorbells: Vec<EventFd> = (0..vectors).map(|_| EventFd::new().unwrap()).collect();
        let irqs: Vec<EventFd> = (0..vectors).map(|_| EventFd::new().unwrap()).collect();
        let bar = Bar::new(view(&bar_mem)).unwrap();
        let mem = GuestMemory::new(view(&ram));
        let board = Arc::new(Board {
            bar: Bar::new(bar_mem).unwrap(),
            mem: GuestMemory::new(ram),
            irq: Interrupts::new(irqs.iter().map(|d| d.try_clone().unwrap()).collect()),
            doorbells: doorbells.iter().map(|d| d.try_clone().unwrap()).collect(),
        });
        let cfg = CardConfig {
            serial: serial.into(),
            vectors,
            max_queue_entries: 64,
            fault: None,
            qos_capacity_iops: 10_000,
            qos_capacity_bps: 1 << 30,
            media_iops: 0,
            media_bps: 0,
            max_ports: dia_card_model::MAX_PORTS,
            uplink_bind,
            uplink_peers,
        };
        let mut fw = Firmware::new(board, cfg, pool);
        fw.start().unwrap();
        Self {
            bar,
            mem,
            doorbells,
            irqs,
            fw,
            admin: admin_ring(),
            cid: 0,
        }
    }

    pub(crate) fn ring(&self, vector: usize) {
        self.doorbells[vector].signal();
    }

    pub(crate) fn wait_csts(&self, mask: u32, want: u32) -> bool {
        for _ in 0..500 {
            if self.bar.read32(abi::REG_CSTS) & mask == want {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    pub(crate) fn enable(&mut self, aqa: u32) -> bool {
        self.mem.write(ASQ, &[0; 4096]).unwrap();
        self.mem.write(ACQ, &[0; 4096]).unwrap();
        self.bar.write32(abi::REG_AQA, aqa);
        self.bar.write64(abi::REG_ASQ, ASQ);
        self.bar.write64(abi::REG_ACQ, ACQ);
        self.bar.write32(abi::sq_tail_doorbell(0), 0);
        self.bar.write32(abi::cq_head_doorbell(0), 0);
        self.admin = admin_ring();
        self.bar.write32(abi::REG_CC, abi::CC_EN);
        self.ring(0);
        // Ready or fatal, whichever the card decides.
        for _ in 0..500 {
            let csts = self.bar.read32(abi::REG_CSTS);
            if csts & (abi::CSTS_RDY | abi::CSTS_CFS) != 0 {
                return csts & abi::CSTS_CFS == 0;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    pub(crate) fn disable(&mut self) {
        self.bar.write32(abi::REG_CC, 0);
        self.ring(0);
        assert!(
            self.wait_csts(abi::CSTS_RDY | abi::CSTS_CFS, 0),
            "card did not leave ready"
        );
    }

    pub(crate) fn wait_irq(&self, vector: usize) {
        let mut fds = [PollFd::new(self.irqs[vector].as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        assert_eq!(n, 1, "no interrupt on vector {vector} within 5 s");
        self.irqs[vector].drain();
    }

    /// Whether vector `vector` fires within `ms` (drained if it did).
    pub(crate) fn irq_within(&self, vector: usize, ms: u16) -> bool {
        let mut fds = [PollFd::new(self.irqs[vector].as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(ms)).unwrap();
        self.irqs[vector].drain();
        n == 1
    }

    pub(crate) fn submit(&mut self, mut sqe: SubmissionEntry) -> CompletionEntry {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        let slot = self.admin.sq_push().expect("admin queue full");
        let addr = ASQ + u64::from(slot) * 64;
        // SAFETY: SubmissionEntry is repr(C) plain data of 64 bytes.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
        self.mem.write(addr, &bytes).unwrap();
        self.bar
            .write32(abi::sq_tail_doorbell(0), u32::from(self.admin.sq_tail()));
        self.ring(0);
        self.wait_irq(0);
        let (cq_head, phase) = self.admin.cq_expect();
        let mut raw = [0u8; 16];
        self.mem
            .read(ACQ + u64::from(cq_head) * 16, &mut raw)
            .unwrap();
        // SAFETY: CompletionEntry is repr(C) plain data of 16 bytes.
        let cqe: CompletionEntry = unsafe { std::mem::transmute(raw) };
        assert_eq!(cqe.phase(), phase, "phase tag");
        assert_eq!(cqe.cid, sqe.cid, "completion for another command");
        assert_eq!(cqe.sq_head, self.admin.sq_tail(), "sq head");
        assert!(self.admin.set_sq_head(cqe.sq_head));
        self.admin.cq_advance();
        self.bar
            .write32(abi::cq_head_doorbell(0), u32::from(self.admin.cq_head()));
        cqe
    }

    pub(crate) fn identify(&mut self, prp1: u64, prp2: u64) -> CompletionEntry {
        self.submit(SubmissionEntry {
            opcode: abi::ADMIN_IDENTIFY,
            cdw10: u32::from(abi::CNS_CONTROLLER),
            prp1,
            prp2,
            ..Default::default()
        })
    }

    pub(crate) fn read_identify(&self, addr: u64) -> IdentifyController {
        let mut raw = vec![0u8; 4096];
        self.mem.read(addr, &mut raw).unwrap();
        // SAFETY: IdentifyController is repr(C) plain data of 4096 bytes.
        unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) }
    }
}

impl Drop for TestDriver {
    fn drop(&mut self) {
        let _ = self.fw.kill();
    }
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

pub(crate) const AQA: u32 = abi::AdminQueueAttributes {
    sq_entries: ADMIN_DEPTH,
    cq_entries: ADMIN_DEPTH,
}
.reg();

pub(crate) fn create_cq(qid: u16, entries: u16, base: u64, vector: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode: abi::ADMIN_CREATE_IO_CQ,
        prp1: base,
        cdw10: new_queue(qid, entries),
        cdw11: abi::CqOptions {
            interrupts: true,
            vector,
        }
        .cdw11(),
        ..Default::default()
    }
}

pub(crate) fn create_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode: abi::ADMIN_CREATE_IO_SQ,
        prp1: base,
        cdw10: new_queue(qid, entries),
        cdw11: abi::SqOptions { cqid }.cdw11(),
        ..Default::default()
    }
}

fn new_queue(qid: u16, entries: u16) -> u32 {
    abi::NewQueue {
        qid,
        entries: u32::from(entries),
    }
    .cdw10()
}

pub(crate) fn delete(opcode: u8, qid: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        cdw10: abi::DeleteQueue { qid }.cdw10(),
        ..Default::default()
    }
}

pub(crate) fn pod<T: Copy, const N: usize>(v: &T) -> [u8; N] {
    assert_eq!(std::mem::size_of::<T>(), N);
    // SAFETY: the ABI structs are repr(C) plain data of N bytes (asserted).
    unsafe { std::ptr::read_unaligned((v as *const T).cast()) }
}
