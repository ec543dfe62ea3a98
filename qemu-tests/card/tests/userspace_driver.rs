//! A userspace test driver that plays the guest's dia driver against the real
//! card controller, in-process: BAR2 and guest RAM are memfds mapped twice
//! (once for the card, once for the driver), doorbells and interrupts are
//! real eventfds. Checks the register handshake, Identify, queue wrap-around,
//! I/O queue management, that malformed commands get an error status while
//! the card keeps serving, and the storage path: namespaces, I/O on several
//! queues at once, and data surviving a firmware crash and restart.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use dia_abi::card::{self as abi, CompletionEntry, IdentifyController, SubmissionEntry};
use dia_card::{
    Bar, Board, CardConfig, EventFd, Firmware, GuestMemory, Interrupts, PoolSpec, SharedMemory,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const RAM: usize = 8 << 20;
const ASQ: u64 = 0x10000;
const ACQ: u64 = 0x20000;
const BUF: u64 = 0x30000;
const ADMIN_DEPTH: u16 = 8;
const VECTORS: u16 = 3;

struct TestDriver {
    bar: Bar,
    mem: GuestMemory,
    doorbells: Vec<EventFd>,
    irqs: Vec<EventFd>,
    fw: Firmware,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
}

fn view(m: &SharedMemory) -> SharedMemory {
    SharedMemory::map(m.fd().try_clone().unwrap(), m.len()).unwrap()
}

impl TestDriver {
    fn start() -> Self {
        Self::start_with(None)
    }

    fn start_with(pool: Option<PoolSpec>) -> Self {
        Self::start_full(pool, VECTORS, None, Vec::new())
    }

    fn start_full(
        pool: Option<PoolSpec>,
        vectors: u16,
        uplink_bind: Option<std::net::SocketAddr>,
        uplink_peers: Vec<std::net::SocketAddr>,
    ) -> Self {
        Self::start_card(pool, vectors, uplink_bind, uplink_peers, "TEST-SERIAL-7")
    }

    fn start_card(
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
            max_ports: dia_card::MAX_PORTS,
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
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 0,
        }
    }

    fn ring(&self, vector: usize) {
        self.doorbells[vector].signal();
    }

    fn wait_csts(&self, mask: u32, want: u32) -> bool {
        for _ in 0..500 {
            if self.bar.read32(abi::REG_CSTS) & mask == want {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    fn enable(&mut self, aqa: u32) -> bool {
        self.mem.write(ASQ, &[0; 4096]).unwrap();
        self.mem.write(ACQ, &[0; 4096]).unwrap();
        self.bar.write32(abi::REG_AQA, aqa);
        self.bar.write64(abi::REG_ASQ, ASQ);
        self.bar.write64(abi::REG_ACQ, ACQ);
        self.bar.write32(abi::sq_tail_doorbell(0), 0);
        self.bar.write32(abi::cq_head_doorbell(0), 0);
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
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

    fn disable(&mut self) {
        self.bar.write32(abi::REG_CC, 0);
        self.ring(0);
        assert!(
            self.wait_csts(abi::CSTS_RDY | abi::CSTS_CFS, 0),
            "card did not leave ready"
        );
    }

    fn wait_irq(&self, vector: usize) {
        let mut fds = [PollFd::new(self.irqs[vector].as_fd(), PollFlags::POLLIN)];
        let n = poll(&mut fds, PollTimeout::from(5000u16)).unwrap();
        assert_eq!(n, 1, "no interrupt on vector {vector} within 5 s");
        self.irqs[vector].drain();
    }

    fn submit(&mut self, mut sqe: SubmissionEntry) -> CompletionEntry {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        let addr = ASQ + u64::from(self.sq_tail) * 64;
        // SAFETY: SubmissionEntry is repr(C) plain data of 64 bytes.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
        self.mem.write(addr, &bytes).unwrap();
        self.sq_tail = (self.sq_tail + 1) % ADMIN_DEPTH;
        self.bar
            .write32(abi::sq_tail_doorbell(0), u32::from(self.sq_tail));
        self.ring(0);
        self.wait_irq(0);
        let mut raw = [0u8; 16];
        self.mem
            .read(ACQ + u64::from(self.cq_head) * 16, &mut raw)
            .unwrap();
        // SAFETY: CompletionEntry is repr(C) plain data of 16 bytes.
        let cqe: CompletionEntry = unsafe { std::mem::transmute(raw) };
        assert_eq!(cqe.phase(), self.phase, "phase tag");
        assert_eq!(cqe.cid, sqe.cid, "completion for another command");
        assert_eq!(cqe.sq_head, self.sq_tail, "sq head");
        self.cq_head = (self.cq_head + 1) % ADMIN_DEPTH;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        self.bar
            .write32(abi::cq_head_doorbell(0), u32::from(self.cq_head));
        cqe
    }

    fn identify(&mut self, prp1: u64, prp2: u64) -> CompletionEntry {
        self.submit(SubmissionEntry {
            opcode: abi::ADMIN_IDENTIFY,
            cdw10: u32::from(abi::CNS_CONTROLLER),
            prp1,
            prp2,
            ..Default::default()
        })
    }

    fn read_identify(&self, addr: u64) -> IdentifyController {
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

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

const AQA: u32 = (ADMIN_DEPTH as u32 - 1) | (ADMIN_DEPTH as u32 - 1) << 16;

#[test]
fn registers_before_enable() {
    let d = TestDriver::start();
    assert_eq!(d.bar.read64(abi::REG_MAGIC), abi::CARD_MAGIC);
    assert_eq!(d.bar.read32(abi::REG_VS), abi::INTERFACE_VERSION);
    assert_eq!(d.bar.read32(abi::REG_FW_STATUS), abi::FW_STATUS_RUNNING);
    assert_eq!(d.bar.read32(abi::REG_VECTORS), u32::from(VECTORS));
    assert_eq!(
        abi::cap_max_io_queues(d.bar.read64(abi::REG_CAP)),
        VECTORS - 1
    );
    let hb = d.bar.read64(abi::REG_HEARTBEAT);
    std::thread::sleep(std::time::Duration::from_millis(
        3 * u64::from(abi::HEARTBEAT_MS),
    ));
    assert_ne!(d.bar.read64(abi::REG_HEARTBEAT), hb, "heartbeat must move");
}

#[test]
fn identify_reports_the_card() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    let cqe = d.identify(BUF, 0);
    assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS);
    let id = d.read_identify(BUF);
    assert_eq!(id.vid, abi::PCI_VENDOR_ID);
    assert_eq!(text(&id.serial), "TEST-SERIAL-7");
    assert_eq!(text(&id.model), "dia emulated container IO card");
    assert_eq!(id.interface_version, abi::INTERFACE_VERSION);
    assert_eq!(id.max_io_queues, VECTORS - 1);
    assert_eq!(id.max_queue_entries, 64);
}

#[test]
fn identify_split_across_two_pages() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    // First half at the end of one page, second half on another page.
    let cqe = d.identify(BUF + 2048, BUF + 0x10000);
    assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS);
    let mut raw = vec![0u8; 4096];
    d.mem.read(BUF + 2048, &mut raw[..2048]).unwrap();
    d.mem.read(BUF + 0x10000, &mut raw[2048..]).unwrap();
    // SAFETY: IdentifyController is repr(C) plain data of 4096 bytes.
    let id: IdentifyController = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    assert_eq!(text(&id.serial), "TEST-SERIAL-7");
}

#[test]
fn queues_wrap_many_times() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    for _ in 0..(5 * usize::from(ADMIN_DEPTH) + 3) {
        assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
    }
}

#[test]
fn malformed_commands_get_errors_and_the_card_keeps_serving() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    let bad = [
        (
            SubmissionEntry {
                opcode: 0x7f,
                ..Default::default()
            },
            abi::STATUS_INVALID_OPCODE,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                cdw10: 0x55,
                prp1: BUF,
                ..Default::default()
            },
            abi::STATUS_INVALID_FIELD,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                cdw10: 1,
                prp1: 1 << 40,
                ..Default::default()
            },
            abi::STATUS_DATA_TRANSFER_ERROR,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                cdw10: 1,
                prp1: BUF + 2,
                ..Default::default()
            },
            abi::STATUS_INVALID_PRP_OFFSET,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                cdw10: 1,
                prp1: RAM as u64 - 8,
                prp2: 0x100,
                ..Default::default()
            },
            abi::STATUS_INVALID_PRP_OFFSET,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                cdw10: 1,
                prp1: RAM as u64 - 8,
                prp2: RAM as u64,
                ..Default::default()
            },
            abi::STATUS_DATA_TRANSFER_ERROR,
        ),
        (
            SubmissionEntry {
                opcode: abi::ADMIN_IDENTIFY,
                flags: 0x40,
                cdw10: 1,
                prp1: BUF,
                ..Default::default()
            },
            abi::STATUS_INVALID_FIELD,
        ),
    ];
    for (sqe, want) in bad {
        let cqe = d.submit(sqe);
        assert_eq!(cqe.status_code(), want, "opcode {:#x}", sqe.opcode);
    }
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
}

fn create_cq(qid: u16, entries: u16, base: u64, vector: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode: abi::ADMIN_CREATE_IO_CQ,
        prp1: base,
        cdw10: u32::from(qid) | (u32::from(entries) - 1) << 16,
        cdw11: 1 | 2 | u32::from(vector) << 16,
        ..Default::default()
    }
}

fn create_sq(qid: u16, entries: u16, base: u64, cqid: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode: abi::ADMIN_CREATE_IO_SQ,
        prp1: base,
        cdw10: u32::from(qid) | (u32::from(entries) - 1) << 16,
        cdw11: 1 | u32::from(cqid) << 16,
        ..Default::default()
    }
}

fn delete(opcode: u8, qid: u16) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        cdw10: u32::from(qid),
        ..Default::default()
    }
}

#[test]
fn io_queue_management_is_validated() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    let s = |d: &mut TestDriver, e| d.submit(e).status_code();
    assert_eq!(
        s(&mut d, create_sq(1, 16, 0x50000, 1)),
        abi::STATUS_INVALID_CQ,
        "SQ before its CQ"
    );
    assert_eq!(
        s(&mut d, create_cq(0, 16, 0x40000, 1)),
        abi::STATUS_INVALID_QID
    );
    assert_eq!(
        s(&mut d, create_cq(VECTORS, 16, 0x40000, 1)),
        abi::STATUS_INVALID_QID
    );
    assert_eq!(
        s(&mut d, create_cq(1, 1, 0x40000, 1)),
        abi::STATUS_INVALID_QUEUE_SIZE
    );
    assert_eq!(
        s(&mut d, create_cq(1, 65, 0x40000, 1)),
        abi::STATUS_INVALID_QUEUE_SIZE
    );
    assert_eq!(
        s(&mut d, create_cq(1, 16, 0x40000, VECTORS)),
        abi::STATUS_INVALID_VECTOR
    );
    assert_eq!(
        s(&mut d, create_cq(1, 16, 0x40010, 1)),
        abi::STATUS_INVALID_FIELD,
        "misaligned"
    );
    assert_eq!(
        s(&mut d, create_cq(1, 16, RAM as u64, 1)),
        abi::STATUS_INVALID_FIELD,
        "outside RAM"
    );
    assert_eq!(s(&mut d, create_cq(1, 16, 0x40000, 1)), abi::STATUS_SUCCESS);
    assert_eq!(
        s(&mut d, create_cq(1, 16, 0x40000, 1)),
        abi::STATUS_INVALID_QID,
        "twice"
    );
    assert_eq!(s(&mut d, create_sq(1, 16, 0x50000, 1)), abi::STATUS_SUCCESS);
    assert_eq!(
        s(&mut d, delete(abi::ADMIN_DELETE_IO_CQ, 1)),
        abi::STATUS_INVALID_QUEUE_DELETION
    );
    assert_eq!(
        s(&mut d, delete(abi::ADMIN_DELETE_IO_SQ, 1)),
        abi::STATUS_SUCCESS
    );
    assert_eq!(
        s(&mut d, delete(abi::ADMIN_DELETE_IO_SQ, 1)),
        abi::STATUS_INVALID_QID
    );
    assert_eq!(
        s(&mut d, delete(abi::ADMIN_DELETE_IO_CQ, 1)),
        abi::STATUS_SUCCESS
    );
    assert_eq!(
        s(&mut d, delete(abi::ADMIN_DELETE_IO_CQ, 0)),
        abi::STATUS_INVALID_QID
    );
}

#[test]
fn bad_admin_queue_attributes_set_fatal_status_until_reset() {
    let mut d = TestDriver::start();
    assert!(!d.enable(0), "a 1-entry admin queue must be refused");
    assert_ne!(d.bar.read32(abi::REG_CSTS) & abi::CSTS_CFS, 0);
    d.disable();
    assert!(d.enable(AQA), "a reset clears the fatal status");
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
}

#[test]
fn tail_beyond_queue_is_fatal_and_recoverable() {
    let mut d = TestDriver::start();
    assert!(d.enable(AQA));
    d.bar
        .write32(abi::sq_tail_doorbell(0), u32::from(ADMIN_DEPTH) + 5);
    d.ring(0);
    assert!(
        d.wait_csts(abi::CSTS_CFS, abi::CSTS_CFS),
        "bad tail must set CFS"
    );
    d.disable();
    assert!(d.enable(AQA));
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
}

#[test]
fn shutdown_and_reenable_cycles() {
    let mut d = TestDriver::start();
    for _ in 0..3 {
        assert!(d.enable(AQA));
        assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
        d.bar.write32(abi::REG_CC, abi::CC_EN | abi::CC_SHN_NORMAL);
        d.ring(0);
        assert!(d.wait_csts(abi::CSTS_SHST_COMPLETE, abi::CSTS_SHST_COMPLETE));
        d.disable();
    }
}

// ---------------------------------------------------------------------------
// Storage: namespaces and the I/O command set.
// ---------------------------------------------------------------------------

const IO_DEPTH: u16 = 32;
const PRP_LIST: u64 = 0x80000;
const WBUF: u64 = 0x100000;
const RBUF: u64 = 0x300000;

fn pool_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dia-card-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn pool_spec(dir: &std::path::Path) -> PoolSpec {
    PoolSpec {
        paths: vec![dir.join("pool.img")],
        create_bytes: Some(64 << 20),
    }
}

/// An I/O queue pair as the test driver keeps it.
struct IoQ {
    qid: u16,
    sq: u64,
    cq: u64,
    tail: u16,
    head: u16,
    phase: bool,
    cid: u16,
}

impl IoQ {
    fn create(d: &mut TestDriver, qid: u16) -> Self {
        let sq = 0x40000 + u64::from(qid) * 0x4000;
        let cq = sq + 0x2000;
        d.mem.write(cq, &[0u8; 4096]).unwrap();
        // As dia.ko does: the head doorbell may hold a value from the
        // queue's previous life (before a reset or a firmware restart).
        d.bar.write32(abi::cq_head_doorbell(qid), 0);
        assert_eq!(d.submit(create_cq(qid, IO_DEPTH, cq, qid)).status_code(), 0);
        assert_eq!(d.submit(create_sq(qid, IO_DEPTH, sq, qid)).status_code(), 0);
        Self {
            qid,
            sq,
            cq,
            tail: 0,
            head: 0,
            phase: true,
            cid: 0,
        }
    }

    fn push(&mut self, d: &TestDriver, mut sqe: SubmissionEntry) -> u16 {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        // SAFETY: SubmissionEntry is repr(C) plain data of 64 bytes.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
        d.mem
            .write(self.sq + u64::from(self.tail) * 64, &bytes)
            .unwrap();
        self.tail = (self.tail + 1) % IO_DEPTH;
        sqe.cid
    }

    fn ring(&self, d: &TestDriver) {
        d.bar
            .write32(abi::sq_tail_doorbell(self.qid), u32::from(self.tail));
        d.ring(usize::from(self.qid));
    }

    /// Waits for `n` completions; returns them in arrival order.
    fn reap(&mut self, d: &TestDriver, n: usize) -> Vec<CompletionEntry> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.len() < n {
            let mut raw = [0u8; 16];
            d.mem
                .read(self.cq + u64::from(self.head) * 16, &mut raw)
                .unwrap();
            // SAFETY: CompletionEntry is repr(C) plain data of 16 bytes.
            let cqe: CompletionEntry = unsafe { std::mem::transmute(raw) };
            if cqe.phase() != self.phase {
                assert!(
                    std::time::Instant::now() < deadline,
                    "I/O completions missing"
                );
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            assert_eq!(cqe.sq_id, self.qid);
            out.push(cqe);
            self.head = (self.head + 1) % IO_DEPTH;
            if self.head == 0 {
                self.phase = !self.phase;
            }
            d.bar
                .write32(abi::cq_head_doorbell(self.qid), u32::from(self.head));
        }
        d.irqs[usize::from(self.qid)].drain();
        out
    }

    fn run(&mut self, d: &TestDriver, sqe: SubmissionEntry) -> u16 {
        self.push(d, sqe);
        self.ring(d);
        self.reap(d, 1)[0].status_code()
    }
}

fn rw(opcode: u8, nsid: u32, slba: u64, blocks: u32, prp1: u64, prp2: u64) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        nsid,
        prp1,
        prp2,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: blocks - 1,
        ..Default::default()
    }
}

/// PRP1/PRP2 for `pages` contiguous pages at `buf` (a list at `list` when
/// more than two pages).
fn prps(d: &TestDriver, buf: u64, pages: u64, list: u64) -> (u64, u64) {
    match pages {
        1 => (buf, 0),
        2 => (buf, buf + 4096),
        _ => {
            for i in 1..pages {
                d.mem
                    .write(list + (i - 1) * 8, &(buf + i * 4096).to_le_bytes())
                    .unwrap();
            }
            (buf, list)
        }
    }
}

fn create_ns(d: &mut TestDriver, blocks: u64, shift: u8, label: &str) -> CompletionEntry {
    let mut create = abi::NamespaceCreate {
        size_blocks: blocks,
        lba_shift: shift,
        ..Default::default()
    };
    create.label[..label.len()].copy_from_slice(label.as_bytes());
    // SAFETY: NamespaceCreate is repr(C) plain data of 80 bytes.
    let bytes: [u8; 80] = unsafe { std::mem::transmute(create) };
    d.mem.write(BUF, &[0u8; 4096]).unwrap();
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_NS_MANAGEMENT,
        prp1: BUF,
        cdw10: abi::NS_MGMT_CREATE,
        ..Default::default()
    })
}

fn ns_admin(d: &mut TestDriver, opcode: u8, nsid: u32, select: u32) -> u16 {
    d.submit(SubmissionEntry {
        opcode,
        nsid,
        cdw10: select,
        ..Default::default()
    })
    .status_code()
}

fn identify_ns(d: &mut TestDriver, nsid: u32) -> (u16, abi::IdentifyNamespace) {
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_IDENTIFY,
        nsid,
        prp1: BUF,
        cdw10: u32::from(abi::CNS_NAMESPACE),
        ..Default::default()
    });
    let mut raw = vec![0u8; 4096];
    d.mem.read(BUF, &mut raw).unwrap();
    // SAFETY: IdentifyNamespace is repr(C) plain data of 4096 bytes.
    (cqe.status_code(), unsafe {
        std::ptr::read_unaligned(raw.as_ptr().cast())
    })
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn namespaces_and_io_on_two_queues() {
    let dir = pool_dir("io");
    let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
    assert!(d.enable(AQA));
    assert_eq!(d.identify(BUF, 0).status_code(), 0);
    let id = d.read_identify(BUF);
    assert_ne!(id.capabilities & abi::CARD_CAP_STORAGE, 0);
    assert_eq!(id.vwc, 1);

    let cqe = create_ns(&mut d, 4096, 12, "data");
    assert_eq!(cqe.status_code(), 0);
    let nsid = cqe.result;
    assert_eq!(nsid, 1);
    assert_eq!(
        create_ns(&mut d, 0, 12, "zero").status_code(),
        abi::STATUS_NS_INSUFFICIENT_CAPACITY
    );
    assert_eq!(
        create_ns(&mut d, 8, 13, "big").status_code(),
        abi::STATUS_INVALID_FORMAT
    );
    let (st, ns) = identify_ns(&mut d, nsid);
    assert_eq!(st, 0);
    assert_eq!(
        (ns.nsze, ns.nuse, ns.lba_shift(), ns.attached),
        (4096, 0, 12, 0)
    );
    assert_eq!(&ns.label[..4], b"data");
    assert_eq!(identify_ns(&mut d, 9).0, abi::STATUS_INVALID_NAMESPACE);

    let mut q1 = IoQ::create(&mut d, 1);
    let mut q2 = IoQ::create(&mut d, 2);
    let data = pattern(3, 64 << 10);
    d.mem.write(WBUF, &data).unwrap();
    let (p1, p2) = prps(&d, WBUF, 16, PRP_LIST);
    assert_eq!(
        q1.run(&d, rw(abi::IO_WRITE, nsid, 8, 16, p1, p2)),
        abi::STATUS_NAMESPACE_NOT_READY,
        "I/O before attach"
    );
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_ATTACH),
        0
    );
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_ATTACH),
        abi::STATUS_NS_ALREADY_ATTACHED
    );
    assert_eq!(q1.run(&d, rw(abi::IO_WRITE, nsid, 8, 16, p1, p2)), 0);
    // Read back on the other queue through a two-page PRP pair and a list.
    let (r1, r2) = prps(&d, RBUF, 16, PRP_LIST + 0x1000);
    assert_eq!(q2.run(&d, rw(abi::IO_READ, nsid, 8, 16, r1, r2)), 0);
    let mut back = vec![0u8; data.len()];
    d.mem.read(RBUF, &mut back).unwrap();
    assert!(back == data, "read differs from write");
    // Never-written blocks read as zeroes.
    d.mem.write(RBUF, &[0xaa; 4096]).unwrap();
    assert_eq!(q2.run(&d, rw(abi::IO_READ, nsid, 3000, 1, RBUF, 0)), 0);
    let mut z = vec![1u8; 4096];
    d.mem.read(RBUF, &mut z).unwrap();
    assert!(z.iter().all(|&b| b == 0));
    // Out of range, bad opcode, bad PRP, unknown namespace: statuses.
    assert_eq!(
        q1.run(&d, rw(abi::IO_READ, nsid, 4095, 2, RBUF, RBUF + 4096)),
        abi::STATUS_LBA_OUT_OF_RANGE
    );
    assert_eq!(
        q1.run(&d, rw(0x7f, nsid, 0, 1, RBUF, 0)),
        abi::STATUS_INVALID_OPCODE
    );
    assert_eq!(
        q1.run(&d, rw(abi::IO_READ, nsid, 0, 2, RBUF, RBUF + 5)),
        abi::STATUS_INVALID_PRP_OFFSET
    );
    assert_eq!(
        q1.run(&d, rw(abi::IO_READ, nsid, 0, 1, RAM as u64, 0)),
        abi::STATUS_DATA_TRANSFER_ERROR
    );
    assert_eq!(
        q1.run(&d, rw(abi::IO_READ, 7, 0, 1, RBUF, 0)),
        abi::STATUS_INVALID_NAMESPACE
    );
    assert_eq!(q1.run(&d, rw(abi::IO_FLUSH, nsid, 0, 1, 0, 0)), 0);

    // Many commands in flight on both queues at once.
    for q in [&mut q1, &mut q2] {
        for i in 0..(IO_DEPTH - 1) {
            let slba = 100 + u64::from(q.qid) * 1000 + u64::from(i);
            d.mem
                .write(
                    WBUF + u64::from(i) * 4096 + u64::from(q.qid) * 0x80000,
                    &pattern(i as u8, 4096),
                )
                .unwrap();
            q.push(
                &d,
                rw(
                    abi::IO_WRITE,
                    nsid,
                    slba,
                    1,
                    WBUF + u64::from(i) * 4096 + u64::from(q.qid) * 0x80000,
                    0,
                ),
            );
        }
    }
    q1.ring(&d);
    q2.ring(&d);
    for q in [&mut q1, &mut q2] {
        let done = q.reap(&d, usize::from(IO_DEPTH - 1));
        assert!(done.iter().all(|c| c.status_code() == 0));
    }
    for qid in [1u64, 2] {
        for i in [0u64, 17, 30] {
            assert_eq!(
                q1.run(&d, rw(abi::IO_READ, nsid, 100 + qid * 1000 + i, 1, RBUF, 0)),
                0
            );
            let mut b = vec![0u8; 4096];
            d.mem.read(RBUF, &mut b).unwrap();
            assert!(b == pattern(i as u8, 4096), "queue {qid} write {i}");
        }
    }

    // Deallocate (DSM) then read zeroes; delete refused while attached.
    let range = [0u32, 16, 8, 0]; // attributes, blocks, slba lo, slba hi
    let bytes: Vec<u8> = range.iter().flat_map(|v| v.to_le_bytes()).collect();
    d.mem.write(PRP_LIST + 0x2000, &bytes).unwrap();
    let dsm = SubmissionEntry {
        opcode: abi::IO_DATASET_MANAGEMENT,
        nsid,
        prp1: PRP_LIST + 0x2000,
        cdw11: abi::DSM_DEALLOCATE,
        ..Default::default()
    };
    assert_eq!(q1.run(&d, dsm), 0);
    assert_eq!(q2.run(&d, rw(abi::IO_READ, nsid, 8, 1, RBUF, 0)), 0);
    d.mem.read(RBUF, &mut z).unwrap();
    assert!(z.iter().all(|&b| b == 0), "deallocated blocks read zero");
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_MANAGEMENT, nsid, abi::NS_MGMT_DELETE),
        abi::STATUS_NS_ATTACHED_DELETE
    );
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_DETACH),
        0
    );
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_MANAGEMENT, nsid, abi::NS_MGMT_DELETE),
        0
    );
    assert_eq!(identify_ns(&mut d, nsid).0, abi::STATUS_INVALID_NAMESPACE);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flushed_data_survives_a_firmware_crash() {
    let dir = pool_dir("crash");
    let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
    assert!(d.enable(AQA));
    let nsid = create_ns(&mut d, 1 << 14, 12, "keep").result;
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_ATTACH),
        0
    );
    let mut q = IoQ::create(&mut d, 1);
    let data = pattern(9, 8192);
    d.mem.write(WBUF, &data).unwrap();
    assert_eq!(
        q.run(&d, rw(abi::IO_WRITE, nsid, 5000, 2, WBUF, WBUF + 4096)),
        0
    );
    assert_eq!(q.run(&d, rw(abi::IO_FLUSH, nsid, 0, 1, 0, 0)), 0);

    d.fw.kill().unwrap();
    assert_eq!(d.bar.read32(abi::REG_FW_STATUS), abi::FW_STATUS_FAILED);
    d.fw.start().unwrap();
    assert_eq!(d.bar.read32(abi::REG_FW_STATUS), abi::FW_STATUS_RUNNING);
    assert!(d.enable(AQA), "the driver resets the restarted card");
    let (st, ns) = identify_ns(&mut d, nsid);
    assert_eq!((st, ns.attached), (0, 1), "attachment survives");
    let mut q = IoQ::create(&mut d, 1);
    assert_eq!(
        q.run(&d, rw(abi::IO_READ, nsid, 5000, 2, RBUF, RBUF + 4096)),
        0
    );
    let mut back = vec![0u8; 8192];
    d.mem.read(RBUF, &mut back).unwrap();
    assert!(back == data, "flushed data lost across the crash");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `blocks` 4 KiB blocks of `nsid` from `slba` through `q`.
fn read_blocks(d: &TestDriver, q: &mut IoQ, nsid: u32, slba: u64, blocks: u32) -> Vec<u8> {
    let len = 4096 * blocks as usize;
    d.mem.write(RBUF, &vec![0xee; len]).unwrap();
    let (p1, p2) = prps(d, RBUF, u64::from(blocks), PRP_LIST + 0x3000);
    assert_eq!(q.run(d, rw(abi::IO_READ, nsid, slba, blocks, p1, p2)), 0);
    let mut back = vec![0u8; len];
    d.mem.read(RBUF, &mut back).unwrap();
    back
}

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Unwritten blocks read as zeroes for every tenant: space a crash gave
/// back (allocated and written, never flushed) and space a deleted
/// namespace gave back never shows its old bytes in the next namespace.
#[test]
fn no_namespace_reads_another_ones_data_after_a_crash_or_delete() {
    let dir = pool_dir("leak");
    let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
    assert!(d.enable(AQA));
    let a = create_ns(&mut d, 1 << 14, 12, "a").result;
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, a, abi::NS_ATTACH),
        0
    );
    let mut q = IoQ::create(&mut d, 1);
    // Sixteen blocks of the pool's first chunk, never flushed.
    d.mem.write(WBUF, &[0xa5; 16 * 4096]).unwrap();
    let (p1, p2) = prps(&d, WBUF, 16, PRP_LIST);
    assert_eq!(q.run(&d, rw(abi::IO_WRITE, a, 0, 16, p1, p2)), 0);

    d.fw.kill().unwrap();
    d.fw.start().unwrap();
    assert!(d.enable(AQA));
    let mut q = IoQ::create(&mut d, 1);
    assert!(all_zero(&read_blocks(&d, &mut q, a, 0, 16)), "lost write");
    // A new namespace gets the chunk the crash freed (the lowest free).
    let b = create_ns(&mut d, 1 << 14, 12, "b").result;
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, b, abi::NS_ATTACH),
        0
    );
    d.mem.write(WBUF, &[0x5b; 4096]).unwrap();
    assert_eq!(q.run(&d, rw(abi::IO_WRITE, b, 3, 1, WBUF, 0)), 0);
    let back = read_blocks(&d, &mut q, b, 0, 16);
    assert!(back[3 * 4096..4 * 4096].iter().all(|&x| x == 0x5b));
    assert!(
        all_zero(&back[..3 * 4096]) && all_zero(&back[4 * 4096..]),
        "namespace {b} reads namespace {a}'s unflushed data after a crash"
    );
    // The old tenant writing again reads zeroes around its write too.
    assert_eq!(q.run(&d, rw(abi::IO_WRITE, a, 1, 1, WBUF, 0)), 0);
    assert!(all_zero(&read_blocks(&d, &mut q, a, 2, 14)));

    // B flushed, detached and deleted (committed): C, created next, gets
    // its chunk and reads zeroes where it has not written.
    assert_eq!(q.run(&d, rw(abi::IO_FLUSH, b, 0, 1, 0, 0)), 0);
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, b, abi::NS_DETACH),
        0
    );
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_MANAGEMENT, b, abi::NS_MGMT_DELETE),
        0
    );
    let c = create_ns(&mut d, 1 << 14, 12, "c").result;
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, c, abi::NS_ATTACH),
        0
    );
    assert_eq!(q.run(&d, rw(abi::IO_WRITE, c, 9, 1, WBUF, 0)), 0);
    let back = read_blocks(&d, &mut q, c, 0, 16);
    assert!(
        all_zero(&back[..9 * 4096]) && all_zero(&back[10 * 4096..]),
        "namespace {c} reads deleted namespace {b}'s data"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

fn set_qos(d: &mut TestDriver, nsid: u32, q: abi::QosSettings) -> CompletionEntry {
    // SAFETY: QosSettings is repr(C) plain data of 40 bytes.
    let bytes: [u8; 40] = unsafe { std::mem::transmute(q) };
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_SET_QOS,
        nsid,
        prp1: BUF,
        ..Default::default()
    })
}

#[test]
fn qos_is_validated_admitted_and_counted() {
    let dir = pool_dir("qos");
    let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
    assert!(d.enable(AQA));
    assert_eq!(d.identify(BUF, 0).status_code(), 0);
    let id = d.read_identify(BUF);
    assert_ne!(id.capabilities & abi::CARD_CAP_QOS, 0);
    assert_eq!(id.qos_capacity_iops, 10_000);
    let a = create_ns(&mut d, 1024, 12, "a").result;
    let b = create_ns(&mut d, 1024, 12, "b").result;
    let gold = abi::QosSettings {
        min_iops: 6000,
        max_iops: 8000,
        ..Default::default()
    };
    assert_eq!(set_qos(&mut d, a, gold).status_code(), 0);
    // b's floor would make 6000 + 5000 > 10000: refused, by 1000 IOPS.
    let cqe = set_qos(
        &mut d,
        b,
        abi::QosSettings {
            min_iops: 5000,
            ..Default::default()
        },
    );
    assert_eq!(
        (cqe.status_code(), cqe.result),
        (abi::STATUS_QOS_ADMISSION, 1000)
    );
    let bad = abi::QosSettings {
        min_iops: 10,
        max_iops: 5,
        ..Default::default()
    };
    assert_eq!(
        set_qos(&mut d, b, bad).status_code(),
        abi::STATUS_INVALID_FIELD
    );
    assert_eq!(
        set_qos(&mut d, 77, gold).status_code(),
        abi::STATUS_INVALID_NAMESPACE
    );
    // Changing a's own floor is admitted against the others only.
    assert_eq!(
        set_qos(
            &mut d,
            a,
            abi::QosSettings {
                min_iops: 9000,
                max_iops: 9500,
                ..gold
            }
        )
        .status_code(),
        0
    );

    // Counters: two writes and a read of 4 KiB.
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, a, abi::NS_ATTACH),
        0
    );
    let mut q = IoQ::create(&mut d, 1);
    for slba in [0, 1] {
        assert_eq!(q.run(&d, rw(abi::IO_WRITE, a, slba, 1, WBUF, 0)), 0);
    }
    assert_eq!(q.run(&d, rw(abi::IO_READ, a, 0, 1, RBUF, 0)), 0);
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_GET_LOG_PAGE,
        nsid: a,
        prp1: BUF,
        cdw10: u32::from(abi::LOG_NS_STATS)
            | ((std::mem::size_of::<abi::NamespaceStats>() / 4 - 1) as u32) << 16,
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), 0);
    let mut raw = vec![0u8; std::mem::size_of::<abi::NamespaceStats>()];
    d.mem.read(BUF, &mut raw).unwrap();
    // SAFETY: NamespaceStats is repr(C) plain data; raw has its size.
    let st: abi::NamespaceStats = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    assert_eq!(
        (st.reads, st.writes, st.read_bytes, st.write_bytes),
        (1, 2, 4096, 8192)
    );
    assert_eq!(st.latency_us_log2.iter().sum::<u64>(), 3);

    // The settings survive a firmware restart (stored with the namespace).
    d.fw.kill().unwrap();
    d.fw.start().unwrap();
    assert!(d.enable(AQA));
    let cqe = set_qos(
        &mut d,
        b,
        abi::QosSettings {
            min_iops: 1001,
            ..Default::default()
        },
    );
    assert_eq!(
        (cqe.status_code(), cqe.result),
        (abi::STATUS_QOS_ADMISSION, 1),
        "a's 9000 floor was kept"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------
// Network ports: the driver side of port rings, frames through the embedded
// switch, validation, limits and the uplink between two cards.
// ---------------------------------------------------------------------------

/// Vectors of a card in the network tests: admin, one I/O queue, ports.
const NET_VECTORS: u16 = 8;
const PORT_AREA: u64 = 0x40_0000;
const PORT_SLOT: u64 = 0x8_0000;
const RING_N: u16 = 16;
const BUF_SIZE: u64 = 0x2400;

/// The driver's view of one port.
struct TestPort {
    id: u16,
    mac: [u8; 6],
    vector: u16,
    base: u64,
    tx_tail: u16,
    rx_next: u16,
}

impl TestPort {
    fn tx_ring(&self) -> u64 {
        self.base
    }
    fn rx_ring(&self) -> u64 {
        self.base + 0x1000
    }
    fn tx_buf(&self, i: u16) -> u64 {
        self.base + 0x2000 + u64::from(i) * BUF_SIZE
    }
    fn rx_buf(&self, i: u16) -> u64 {
        self.base + 0x4_0000 + u64::from(i) * BUF_SIZE
    }
    fn reg(&self, r: usize) -> usize {
        abi::port_regs(self.id) + r
    }
}

fn port_create(slot: u64, vlan: u16, vector: u16) -> abi::PortCreate {
    let base = PORT_AREA + slot * PORT_SLOT;
    abi::PortCreate {
        config: abi::PortConfig {
            vlan,
            mtu: 1500,
            ..Default::default()
        },
        tx_ring: base,
        rx_ring: base + 0x1000,
        tx_entries: RING_N,
        rx_entries: RING_N,
        vector,
        ..Default::default()
    }
}

fn pod<T: Copy, const N: usize>(v: &T) -> [u8; N] {
    assert_eq!(std::mem::size_of::<T>(), N);
    // SAFETY: the ABI structs are repr(C) plain data of N bytes (asserted).
    unsafe { std::ptr::read_unaligned((v as *const T).cast()) }
}

impl TestDriver {
    fn create_port_raw(&mut self, wanted: u16, c: &abi::PortCreate) -> CompletionEntry {
        self.mem.write(BUF, &pod::<_, 64>(c)).unwrap();
        self.submit(SubmissionEntry {
            opcode: abi::ADMIN_CREATE_PORT,
            cdw10: u32::from(wanted),
            prp1: BUF,
            ..Default::default()
        })
    }

    /// Creates a port in ring slot `slot` and posts RX buffers.
    fn create_port(&mut self, wanted: u16, slot: u64, vlan: u16, vector: u16) -> TestPort {
        let c = port_create(slot, vlan, vector);
        let cqe = self.create_port_raw(wanted, &c);
        assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS, "create port");
        let mut back = [0u8; 64];
        self.mem.read(BUF, &mut back).unwrap();
        // SAFETY: PortCreate is repr(C) plain data of 64 bytes.
        let back: abi::PortCreate = unsafe { std::ptr::read_unaligned(back.as_ptr().cast()) };
        let p = TestPort {
            id: cqe.result as u16,
            mac: back.mac,
            vector,
            base: c.tx_ring,
            tx_tail: 0,
            rx_next: 0,
        };
        assert_eq!(self.bar.read32(p.reg(abi::PORT_LINK)), 1, "link up");
        assert_eq!(self.bar.read32(p.reg(abi::PORT_TX_HEAD)), 0);
        // Post every buffer but one (the tail may not catch up the head).
        for i in 0..RING_N {
            let d = abi::RxDescriptor {
                addr: p.rx_buf(i),
                len: BUF_SIZE as u16,
                reserved: 0,
                status: 0,
            };
            self.mem
                .write(p.rx_ring() + u64::from(i) * 16, &pod::<_, 16>(&d))
                .unwrap();
        }
        self.bar
            .write32(p.reg(abi::PORT_RX_TAIL), u32::from(RING_N - 1));
        p
    }

    fn port_cmd(&mut self, opcode: u8, id: u16, cfg: Option<abi::PortConfig>) -> u16 {
        if let Some(cfg) = cfg {
            self.mem.write(BUF, &pod::<_, 32>(&cfg)).unwrap();
        }
        self.submit(SubmissionEntry {
            opcode,
            cdw10: u32::from(id),
            prp1: BUF,
            ..Default::default()
        })
        .status_code()
    }

    fn port_stats(&mut self, id: u16) -> (u16, abi::PortStats) {
        let cqe = self.submit(SubmissionEntry {
            opcode: abi::ADMIN_GET_LOG_PAGE,
            cdw10: u32::from(abi::LOG_PORT_STATS) | (64 / 4 - 1) << 16,
            cdw11: u32::from(id),
            prp1: BUF,
            ..Default::default()
        });
        let mut raw = [0u8; 64];
        self.mem.read(BUF, &mut raw).unwrap();
        // SAFETY: PortStats is repr(C) plain data of 64 bytes.
        let s = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        (cqe.status_code(), s)
    }

    /// Queues one frame made of `segments` (one descriptor each) and rings.
    fn send(&self, p: &mut TestPort, segments: &[&[u8]], csum: Option<(u16, u16)>) {
        for (i, seg) in segments.iter().enumerate() {
            let slot = p.tx_tail;
            self.mem.write(p.tx_buf(slot), seg).unwrap();
            let mut flags = 0;
            if i + 1 == segments.len() {
                flags |= abi::TX_EOP;
            }
            let (mut start, mut offset) = (0, 0);
            if let (0, Some((s, o))) = (i, csum) {
                flags |= abi::TX_CSUM;
                (start, offset) = (s, o);
            }
            let d = abi::TxDescriptor {
                addr: p.tx_buf(slot),
                len: seg.len() as u16,
                flags,
                csum_start: start,
                csum_offset: offset,
            };
            self.mem
                .write(p.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&d))
                .unwrap();
            p.tx_tail = (p.tx_tail + 1) % RING_N;
        }
        self.bar
            .write32(p.reg(abi::PORT_TX_TAIL), u32::from(p.tx_tail));
        self.ring(usize::from(p.vector));
    }

    /// The next received frame of `p`, waiting up to `ms`.
    fn recv(&self, p: &mut TestPort, ms: u64) -> Option<Vec<u8>> {
        let at = p.rx_ring() + u64::from(p.rx_next) * 16;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        loop {
            let mut st = [0u8; 4];
            self.mem.read(at + 12, &mut st).unwrap();
            if u32::from_le_bytes(st) & abi::RX_DONE != 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut raw = [0u8; 16];
        self.mem.read(at, &mut raw).unwrap();
        // SAFETY: RxDescriptor is repr(C) plain data of 16 bytes.
        let d: abi::RxDescriptor = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        let mut frame = vec![0u8; usize::from(d.len)];
        self.mem.read(d.addr, &mut frame).unwrap();
        p.rx_next = (p.rx_next + 1) % RING_N;
        Some(frame)
    }

    /// Waits until the card has sent everything queued on `p`.
    fn wait_tx_done(&self, p: &TestPort) {
        for _ in 0..2000 {
            if self.bar.read32(p.reg(abi::PORT_TX_HEAD)) == u32::from(p.tx_tail) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("port {} TX head never reached {}", p.id, p.tx_tail);
    }
}

const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame `dst, src, type` + `payload`.
fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn csum_fold(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        sum += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An IPv4/UDP packet 10.0.0.1:1000 -> 10.0.0.2:2000 in an Ethernet frame,
/// with its UDP checksum field seeded with the pseudo-header sum (as Linux
/// leaves it for offload), and the pseudo header.
fn udp_frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let udp_len = 8 + payload.len() as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    let hc = !csum_fold(&ip, 0);
    ip[10..12].copy_from_slice(&hc.to_be_bytes());
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let mut pkt = ip;
    pkt.extend_from_slice(&1000u16.to_be_bytes());
    pkt.extend_from_slice(&2000u16.to_be_bytes());
    pkt.extend_from_slice(&udp_len.to_be_bytes());
    pkt.extend_from_slice(&csum_fold(&pseudo, 0).to_be_bytes());
    pkt.extend_from_slice(payload);
    (eth(dst, src, 0x0800, &pkt), pseudo)
}

fn net_card() -> TestDriver {
    let mut d = TestDriver::start_full(None, NET_VECTORS, None, Vec::new());
    assert!(d.enable(AQA));
    d
}

#[test]
fn ports_switch_frames_within_their_vlan() {
    let mut d = net_card();
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
    let id = d.read_identify(BUF);
    assert_eq!(id.max_ports, 64);
    assert_ne!(id.capabilities & abi::CARD_CAP_NETWORK, 0);

    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let mut c = d.create_port(7, 2, 200, 5);
    assert_eq!((a.id, b.id, c.id), (1, 2, 7));
    assert_eq!(&a.mac[..2], &[0x02, 0xd1]);
    assert_eq!(a.mac[5], 1);
    assert_eq!(&a.mac[..5], &b.mac[..5]);
    assert_eq!(b.mac[5], 2);

    // A UDP packet in two descriptors, checksum left to the card.
    let payload: Vec<u8> = (0..301u32).map(|i| (i * 7) as u8).collect();
    let (frame, pseudo) = udp_frame(b.mac, a.mac, &payload);
    d.send(&mut a, &[&frame[..20], &frame[20..]], Some((34, 6)));
    let got = d.recv(&mut b, 5000).expect("frame at port B");
    d.wait_irq(usize::from(b.vector));
    assert_eq!(got.len(), frame.len());
    assert_eq!(&got[..40], &frame[..40], "headers intact");
    assert_eq!(&got[42..], &frame[42..], "payload intact");
    let mut check = pseudo.clone();
    check.extend_from_slice(&got[34..]);
    assert_eq!(csum_fold(&check, 0), 0xffff, "UDP checksum right");
    assert_eq!(d.bar.read32(b.reg(abi::PORT_RX_HEAD)), 1);
    d.wait_tx_done(&a);
    assert_eq!(d.bar.read32(a.reg(abi::PORT_TX_HEAD)), 2);
    d.wait_irq(usize::from(a.vector));

    // A broadcast from A reaches B, never C on VLAN 200.
    let bcast = eth(BROADCAST, a.mac, 0x0806, &[0x11; 46]);
    d.send(&mut a, &[&bcast], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&bcast[..]));
    // B answers A by unicast (A's MAC is learned now).
    let reply = eth(a.mac, b.mac, 0x0806, &[0x22; 46]);
    d.send(&mut b, &[&reply], None);
    assert_eq!(d.recv(&mut a, 5000).as_deref(), Some(&reply[..]));
    // C's broadcast reaches neither A nor B.
    let cb = eth(BROADCAST, c.mac, 0x0806, &[0x33; 46]);
    d.send(&mut c, &[&cb], None);
    d.wait_tx_done(&c);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(d.recv(&mut c, 0).is_none(), "nothing comes back to C");
    assert!(d.recv(&mut a, 0).is_none(), "VLAN 200 leaked into A");
    assert!(d.recv(&mut b, 0).is_none(), "VLAN 200 leaked into B");
    assert_eq!(d.bar.read32(c.reg(abi::PORT_RX_HEAD)), 0);

    // Oversize (over MTU 1500 + 14) and tagged frames from the host drop.
    let big = eth(b.mac, a.mac, 0x0800, &vec![0u8; 1501]);
    d.send(&mut a, &[&big], None);
    let tagged = eth(b.mac, a.mac, 0x8100, &[0, 100, 8, 0, 1, 2, 3, 4]);
    d.send(&mut a, &[&tagged], None);
    // A bad descriptor (outside guest memory): dropped, not a crash.
    let slot = a.tx_tail;
    let bad = abi::TxDescriptor {
        addr: RAM as u64 - 10,
        len: 64,
        flags: abi::TX_EOP,
        ..Default::default()
    };
    d.mem
        .write(a.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&bad))
        .unwrap();
    a.tx_tail = (a.tx_tail + 1) % RING_N;
    d.bar
        .write32(a.reg(abi::PORT_TX_TAIL), u32::from(a.tx_tail));
    d.ring(usize::from(a.vector));
    d.wait_tx_done(&a);
    let (st, sa) = d.port_stats(a.id);
    assert_eq!(st, abi::STATUS_SUCCESS);
    assert_eq!((sa.tx_packets, sa.tx_dropped), (2, 3), "{sa:?}");
    assert_eq!(sa.tx_bytes, (frame.len() + bcast.len()) as u64);
    assert_eq!((sa.rx_packets, sa.rx_bytes), (1, reply.len() as u64));
    let (_, sb) = d.port_stats(b.id);
    assert_eq!((sb.rx_packets, sb.tx_packets, sb.rx_dropped), (2, 1, 0));
    let (_, sc) = d.port_stats(c.id);
    assert_eq!((sc.rx_packets, sc.tx_packets), (0, 0));
    assert!(d.recv(&mut b, 0).is_none());

    // Set Port: B's MTU down to 500; a 1000-byte frame for it is dropped
    // and counted at B.
    let small = abi::PortConfig {
        vlan: 100,
        mtu: 500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(small)),
        abi::STATUS_SUCCESS
    );
    let mid = eth(b.mac, a.mac, 0x0800, &[5u8; 986]);
    d.send(&mut a, &[&mid], None);
    d.wait_tx_done(&a);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(d.port_stats(b.id).1.rx_dropped, 1);
    assert!(d.recv(&mut b, 0).is_none());
    // Set Port moves B to VLAN 200: now A's broadcasts miss it, C's reach it.
    let moved = abi::PortConfig {
        vlan: 200,
        mtu: 1500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(moved)),
        abi::STATUS_SUCCESS
    );
    d.send(&mut a, &[&bcast], None);
    d.send(&mut c, &[&cb], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&cb[..]));
    assert!(d.recv(&mut b, 50).is_none());

    // Delete Port: link down, its ring untouched afterwards, gone for good.
    assert_eq!(
        d.port_cmd(abi::ADMIN_DELETE_PORT, b.id, None),
        abi::STATUS_SUCCESS
    );
    assert_eq!(d.bar.read32(b.reg(abi::PORT_LINK)), 0);
    d.send(&mut c, &[&cb], None);
    d.wait_tx_done(&c);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert!(d.recv(&mut b, 0).is_none());
    assert_eq!(
        d.port_cmd(abi::ADMIN_DELETE_PORT, b.id, None),
        abi::STATUS_INVALID_PORT
    );
    assert_eq!(d.port_stats(b.id).0, abi::STATUS_INVALID_PORT);
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(moved)),
        abi::STATUS_INVALID_PORT
    );
    // Its id and vector are free again.
    let b2 = d.create_port(b.id, 1, 100, 4);
    assert_eq!(b2.mac, b.mac, "same id, same MAC");
}

#[test]
fn create_port_arguments_are_validated() {
    let mut d = TestDriver::start_full(None, 70, None, Vec::new());
    assert!(d.enable(AQA));
    // I/O CQ 1 interrupts on vector 1.
    assert_eq!(
        d.submit(create_cq(1, 16, 0x20_0000, 1)).status_code(),
        abi::STATUS_SUCCESS
    );
    let p = d.create_port(5, 0, 100, 2);
    assert_eq!(p.id, 5);
    let good = port_create(1, 100, 3);
    type Edit = fn(&mut abi::PortCreate);
    let cases: [(&str, u16, Edit, u16); 18] = [
        (
            "vlan 0",
            0,
            |c| c.config.vlan = 0,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "vlan 4095",
            0,
            |c| c.config.vlan = 4095,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "mtu 67",
            0,
            |c| c.config.mtu = 67,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "mtu 9001",
            0,
            |c| c.config.mtu = 9001,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "burst",
            0,
            |c| c.config.limits.burst_ms = 10_001,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "reserved",
            0,
            |c| c.config.reserved = 1,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "reserved2",
            0,
            |c| c.reserved2 = [0, 1],
            abi::STATUS_INVALID_FIELD,
        ),
        ("tx align", 0, |c| c.tx_ring += 8, abi::STATUS_INVALID_FIELD),
        (
            "rx outside",
            0,
            |c| c.rx_ring = RAM as u64,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "entries 3",
            0,
            |c| c.tx_entries = 3,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "entries 1",
            0,
            |c| c.rx_entries = 1,
            abi::STATUS_INVALID_FIELD,
        ),
        (
            "entries 512",
            0,
            |c| c.rx_entries = 512,
            abi::STATUS_INVALID_FIELD,
        ),
        ("vector 0", 0, |c| c.vector = 0, abi::STATUS_INVALID_VECTOR),
        (
            "vector 70",
            0,
            |c| c.vector = 70,
            abi::STATUS_INVALID_VECTOR,
        ),
        (
            "vector of CQ 1",
            0,
            |c| c.vector = 1,
            abi::STATUS_INVALID_VECTOR,
        ),
        (
            "vector of port 5",
            0,
            |c| c.vector = 2,
            abi::STATUS_INVALID_VECTOR,
        ),
        ("id in use", 5, |_| {}, abi::STATUS_INVALID_PORT),
        ("id 65", 65, |_| {}, abi::STATUS_INVALID_PORT),
    ];
    for (what, wanted, edit, want) in cases {
        let mut c = good;
        edit(&mut c);
        let cqe = d.create_port_raw(wanted, &c);
        assert_eq!(cqe.status_code(), want, "{what}");
    }
    // CDW10 beyond u16.
    d.mem.write(BUF, &pod::<_, 64>(&good)).unwrap();
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_CREATE_PORT,
        cdw10: 0x1_0001,
        prp1: BUF,
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), abi::STATUS_INVALID_PORT);
    // An I/O CQ may not take a port's vector either.
    assert_eq!(
        d.submit(create_cq(2, 16, 0x21_0000, 2)).status_code(),
        abi::STATUS_INVALID_VECTOR
    );
    // Set Port validates like Create; stats want nsid 0.
    let bad_cfg = abi::PortConfig {
        vlan: 5000,
        mtu: 1500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, 5, Some(bad_cfg)),
        abi::STATUS_INVALID_FIELD
    );
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_GET_LOG_PAGE,
        nsid: 1,
        cdw10: u32::from(abi::LOG_PORT_STATS) | (64 / 4 - 1) << 16,
        cdw11: 5,
        prp1: BUF,
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), abi::STATUS_INVALID_FIELD);
    // Fill every id: 63 more (lowest free each), then the limit.
    for i in 0..63u16 {
        let cqe = d.create_port_raw(0, &port_create(1, 100, 3 + i));
        assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS, "port #{i}");
        let want = if i < 4 { i + 1 } else { i + 2 };
        assert_eq!(cqe.result, u32::from(want));
    }
    let cqe = d.create_port_raw(0, &port_create(1, 100, 66));
    assert_eq!(cqe.status_code(), abi::STATUS_PORT_LIMIT);
    // The card keeps serving.
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
    assert_eq!(d.port_stats(5).0, abi::STATUS_SUCCESS);
    // A controller reset deletes every port; the same ids come back.
    d.disable();
    assert_eq!(d.bar.read32(abi::port_regs(5) + abi::PORT_LINK), 0);
    assert!(d.enable(AQA));
    assert_eq!(d.port_stats(5).0, abi::STATUS_INVALID_PORT);
    let again = d.create_port(5, 0, 100, 2);
    assert_eq!((again.id, again.mac), (5, p.mac));
}

#[test]
fn rate_limited_port_keeps_its_rate() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let limits = abi::PortConfig {
        vlan: 100,
        mtu: 1500,
        reserved: 0,
        limits: abi::PortLimits {
            max_bits_per_s: 8_000_000,
            ..Default::default()
        },
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, a.id, Some(limits)),
        abi::STATUS_SUCCESS
    );
    let frame = eth(b.mac, a.mac, 0x0800, &[9u8; 1500]);
    let start = std::time::Instant::now();
    // Keep A's ring full for 0.5 s.
    while start.elapsed() < std::time::Duration::from_millis(500) {
        let head = d.bar.read32(a.reg(abi::PORT_TX_HEAD)) as u16;
        while (a.tx_tail + 1) % RING_N != head {
            d.send(&mut a, &[&frame], None);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (_, s) = d.port_stats(a.id);
    let t = start.elapsed().as_secs_f64();
    let rate = 1_000_000.0; // bytes per second
    let burst = 10_000.0f64.max(1514.0);
    assert!(
        (s.tx_bytes as f64) <= rate * t + burst + 1514.0,
        "{} bytes in {t} s",
        s.tx_bytes
    );
    assert!(
        (s.tx_bytes as f64) >= 0.5 * rate * 0.5,
        "{} bytes in {t} s: far below the limit",
        s.tx_bytes
    );
    assert!(s.throttled_ns > 100_000_000, "{s:?}");
    // A keeps sending what is left in its ring: let it drain, then both
    // ports' counters hold still (read one after the other, they raced).
    d.wait_tx_done(&a);
    let (_, s) = d.port_stats(a.id);
    assert_eq!(s.tx_dropped, 0, "throttled frames wait, never drop");
    // B had 15 buffers; the rest of what arrived was dropped there.
    let (_, sb) = d.port_stats(b.id);
    assert_eq!(sb.rx_packets, 15);
    assert_eq!(sb.rx_packets + sb.rx_dropped, s.tx_packets);
    let _ = d.recv(&mut b, 0);
}

/// The switch binds each port to its MAC: a frame with another source MAC
/// is dropped and counted (and cannot take the MAC over from its owner),
/// and a frame the host tagged itself never reaches another VLAN.
#[test]
fn a_port_sends_only_with_its_own_mac_and_only_on_its_vlan() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let mut c = d.create_port(0, 2, 200, 5);
    let mut e = d.create_port(0, 3, 100, 6);
    // A claims B's MAC, then a made-up one.
    let steal = eth(BROADCAST, b.mac, 0x0806, &[1u8; 46]);
    d.send(&mut a, &[&steal], None);
    let made_up = eth(
        BROADCAST,
        [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a],
        0x0806,
        &[2u8; 46],
    );
    d.send(&mut a, &[&made_up], None);
    // A's guest tags frames for VLAN 200 itself (802.1Q and 802.1ad).
    for tpid in [0x8100u16, 0x88a8] {
        let mut inner = vec![0x00, 200, 0x08, 0x06];
        inner.extend_from_slice(&[3u8; 46]);
        let tagged = eth(BROADCAST, a.mac, tpid, &inner);
        d.send(&mut a, &[&tagged], None);
    }
    d.wait_tx_done(&a);
    // E's unicast to B's MAC still reaches B, and only B.
    let to_b = eth(b.mac, e.mac, 0x0800, &[4u8; 60]);
    d.send(&mut e, &[&to_b], None);
    assert_eq!(
        d.recv(&mut b, 5000).as_deref(),
        Some(&to_b[..]),
        "B's MAC was taken over"
    );
    // The counters are read under the engine's lock: every frame above
    // has been switched (or dropped) by now.
    let (st, sa) = d.port_stats(a.id);
    assert_eq!(st, abi::STATUS_SUCCESS);
    assert_eq!(
        (sa.tx_packets, sa.tx_dropped, sa.tx_spoofed),
        (0, 4, 2),
        "{sa:?}"
    );
    assert!(d.recv(&mut b, 0).is_none(), "a spoofed frame reached B");
    assert!(d.recv(&mut e, 0).is_none(), "a spoofed frame reached E");
    assert!(d.recv(&mut a, 0).is_none(), "B's unicast went to A");
    assert!(
        d.recv(&mut c, 0).is_none(),
        "a host-tagged frame reached VLAN 200"
    );
    // With its own MAC, A reaches its VLAN.
    let ok = eth(BROADCAST, a.mac, 0x0806, &[5u8; 46]);
    d.send(&mut a, &[&ok], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&ok[..]));
    assert_eq!(d.recv(&mut e, 5000).as_deref(), Some(&ok[..]));
    assert!(d.recv(&mut c, 0).is_none());
    let (_, sa) = d.port_stats(a.id);
    assert_eq!((sa.tx_packets, sa.tx_spoofed), (1, 2));
}

/// The checksum the card computes for TX_CSUM may land anywhere in the
/// frame; it must not turn an untagged frame into a tagged one behind the
/// card's tag check (found while writing the port_tx fuzz target's checks).
#[test]
fn a_checksum_offload_cannot_forge_a_vlan_tag() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    // EtherType 0x7eff over zeroes: the complemented sum from byte 12 is
    // 0x8100, stored over the EtherType itself.
    let f = eth(b.mac, a.mac, 0x7eff, &[0u8; 46]);
    d.send(&mut a, &[&f], Some((12, 0)));
    d.wait_tx_done(&a);
    let (_, sa) = d.port_stats(a.id);
    assert_eq!((sa.tx_packets, sa.tx_dropped), (0, 1), "{sa:?}");
    assert!(
        d.recv(&mut b, 0).is_none(),
        "a tagged frame left a host's port"
    );
}

/// What the switch learns is bounded per VLAN: a peer that floods one VLAN
/// with source MACs (more than the whole card used to learn) does not stop
/// another VLAN from learning, so unicast there still goes to one place.
#[test]
fn a_mac_flood_on_one_vlan_leaves_other_vlans_learning() {
    const FLOOD: u64 = 16 * 1024 + 64;
    let card_addr = free_udp_addr();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut d = TestDriver::start_full(
        None,
        NET_VECTORS,
        Some(card_addr),
        vec![peer.local_addr().unwrap()],
    );
    assert!(d.enable(AQA));
    let flooded = d.create_port(0, 0, 100, 3);
    let mut c1 = d.create_port(0, 1, 200, 4);
    let mut c2 = d.create_port(0, 2, 200, 5);
    let tagged = |vlan: u16, dst: [u8; 6], src: [u8; 6]| {
        let mut t = Vec::new();
        t.extend_from_slice(&dst);
        t.extend_from_slice(&src);
        t.extend_from_slice(&[0x81, 0x00]);
        t.extend_from_slice(&vlan.to_be_bytes());
        t.extend_from_slice(&[0x08, 0x06]);
        t.extend_from_slice(&[6u8; 46]);
        t
    };
    // Distinct source MACs on VLAN 100, a batch at a time; each one the
    // card takes reaches the flooded port (delivered or, its ring full,
    // dropped). A datagram the host's socket lost is made up for by the
    // next batch; the deadline only turns a stall into a failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut next = 0u32;
    let mut seen = 0;
    while seen < FLOOD {
        assert!(std::time::Instant::now() < deadline, "{seen} frames taken");
        for _ in 0..64 {
            let [_, x, y, z] = next.to_be_bytes();
            next += 1;
            let f = tagged(100, BROADCAST, [0x02, 0xee, 0, x, y, z]);
            peer.send_to(&f, card_addr).unwrap();
        }
        let mut idle = 0;
        while idle < 20 {
            let (_, s) = d.port_stats(flooded.id);
            let now_seen = s.rx_packets + s.rx_dropped;
            if now_seen == u64::from(next) {
                break;
            }
            idle = if now_seen == seen { idle + 1 } else { 0 };
            seen = now_seen;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (_, s) = d.port_stats(flooded.id);
        seen = s.rx_packets + s.rx_dropped;
    }
    // A station behind the uplink on VLAN 200 speaks: both ports hear it,
    // and the card learns where it is.
    let x = [0x02, 0xdd, 0, 0, 0, 1];
    peer.send_to(&tagged(200, BROADCAST, x), card_addr).unwrap();
    assert!(d.recv(&mut c1, 5000).is_some());
    assert!(d.recv(&mut c2, 5000).is_some());
    // C1's unicast to it goes out the uplink only, not flooded to C2.
    let to_x = eth(x, c1.mac, 0x0800, &[7u8; 60]);
    d.send(&mut c1, &[&to_x], None);
    let mut buf = [0u8; 2048];
    let (n, _) = peer.recv_from(&mut buf).expect("frame on the uplink");
    assert_eq!(&buf[..n], &tagged_frame(&to_x, 200)[..]);
    // The uplink got it in the same pass that would have flooded it.
    assert!(d.recv(&mut c2, 0).is_none(), "VLAN 200 forgot how to learn");
}

/// `frame` with an 802.1Q tag for `vlan`, as the uplink carries it.
fn tagged_frame(frame: &[u8], vlan: u16) -> Vec<u8> {
    let mut t = frame[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vlan.to_be_bytes());
    t.extend_from_slice(&frame[12..]);
    t
}

fn free_udp_addr() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn two_cards_linked_by_uplinks_share_a_vlan_only() {
    let (a1, a2) = (free_udp_addr(), free_udp_addr());
    let mut c1 = TestDriver::start_full(None, NET_VECTORS, Some(a1), vec![a2]);
    // Another serial: other port MACs (each card's ports send only theirs).
    let mut c2 = TestDriver::start_card(None, NET_VECTORS, Some(a2), vec![a1], "TEST-SERIAL-8");
    assert!(c1.enable(AQA));
    assert!(c2.enable(AQA));
    let mut p1 = c1.create_port(0, 0, 100, 3);
    let mut q1 = c1.create_port(0, 1, 200, 4);
    let mut p2 = c2.create_port(0, 0, 100, 3);
    let mut q2 = c2.create_port(0, 1, 300, 4);
    assert_ne!(p1.mac, p2.mac);
    let b1 = eth(BROADCAST, p1.mac, 0x0806, &[1u8; 46]);
    c1.send(&mut p1, &[&b1], None);
    assert_eq!(c2.recv(&mut p2, 5000).as_deref(), Some(&b1[..]));
    // Unicast back to p1's (learned) MAC across the uplink.
    let u2 = eth(p1.mac, p2.mac, 0x0800, &[2u8; 100]);
    c2.send(&mut p2, &[&u2], None);
    assert_eq!(c1.recv(&mut p1, 5000).as_deref(), Some(&u2[..]));
    // VLAN 200 on card 1 does not reach VLAN 300 (or 100) on card 2.
    let b3 = eth(BROADCAST, q1.mac, 0x0806, &[3u8; 46]);
    c1.send(&mut q1, &[&b3], None);
    c1.wait_tx_done(&q1);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(c2.recv(&mut q2, 0).is_none());
    assert!(c2.recv(&mut p2, 0).is_none());
    assert!(c1.recv(&mut p1, 0).is_none());
    assert_eq!(c2.port_stats(p2.id).1.rx_packets, 1);
    assert_eq!(c1.port_stats(q1.id).1.tx_packets, 1, "sent to the uplink");
}

/// The network engine keeps moving frames while both rings wrap many times
/// over: a driver that refills TX and RX as fast as it can gets every frame
/// either delivered whole or counted as an RX drop (a NIC drops what finds
/// no posted buffer), and the counters agree. (A correctness test; how
/// fast the engine is belongs in a benchmark, not here. The deadline only
/// turns a stall into a failure instead of a hang.)
#[test]
fn engine_keeps_moving_frames_across_ring_wraps() {
    const FRAMES: u64 = 2000;
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let frame = eth(b.mac, a.mac, 0x0800, &[7u8; 50]);
    // Learn B's MAC so A's frames go to B only.
    let hello = eth(a.mac, b.mac, 0x0800, &[0u8; 50]);
    d.send(&mut b, &[&hello], None);
    assert!(d.recv(&mut a, 5000).is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut sent, mut received, mut dropped) = (0u64, 0u64, 0u64);
    let mut rx_tail = RING_N - 1;
    while received + dropped < FRAMES {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled: {sent} frames sent, {received} received, {dropped} dropped"
        );
        let head = d.bar.read32(a.reg(abi::PORT_TX_HEAD)) as u16;
        let mut queued = false;
        while sent < FRAMES && (a.tx_tail + 1) % RING_N != head {
            // Descriptors of earlier rounds are still right: just move the tail.
            let slot = a.tx_tail;
            let desc = abi::TxDescriptor {
                addr: a.tx_buf(slot),
                len: frame.len() as u16,
                flags: abi::TX_EOP,
                ..Default::default()
            };
            d.mem.write(a.tx_buf(slot), &frame).unwrap();
            d.mem
                .write(a.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&desc))
                .unwrap();
            a.tx_tail = (a.tx_tail + 1) % RING_N;
            sent += 1;
            queued = true;
        }
        if queued {
            d.bar
                .write32(a.reg(abi::PORT_TX_TAIL), u32::from(a.tx_tail));
            d.ring(usize::from(a.vector));
        }
        // Reap B's RX ring, check each frame, and give the buffers back.
        let mut reaped = false;
        loop {
            let at = b.rx_ring() + u64::from(b.rx_next) * 16;
            let mut raw = [0u8; 16];
            d.mem.read(at, &mut raw).unwrap();
            if u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]) & abi::RX_DONE == 0 {
                break;
            }
            let len = usize::from(u16::from_le_bytes([raw[8], raw[9]]));
            let mut got = vec![0u8; len];
            d.mem.read(b.rx_buf(b.rx_next), &mut got).unwrap();
            assert_eq!(got, frame, "frame {received} damaged");
            let desc = abi::RxDescriptor {
                addr: b.rx_buf(b.rx_next),
                len: BUF_SIZE as u16,
                reserved: 0,
                status: 0,
            };
            d.mem.write(at, &pod::<_, 16>(&desc)).unwrap();
            b.rx_next = (b.rx_next + 1) % RING_N;
            rx_tail = (rx_tail + 1) % RING_N;
            received += 1;
            reaped = true;
        }
        if reaped {
            d.bar.write32(b.reg(abi::PORT_RX_TAIL), u32::from(rx_tail));
            d.ring(usize::from(b.vector));
        } else if sent == FRAMES {
            // Everything is sent and nothing came this pass: count drops.
            dropped = d.port_stats(b.id).1.rx_dropped;
        }
        std::thread::yield_now();
    }
    assert!(received > 0, "no frame delivered");
    assert_eq!(received + dropped, FRAMES);
    assert_eq!(d.port_stats(a.id).1.tx_packets, FRAMES);
    let rx = d.port_stats(b.id).1;
    assert_eq!((rx.rx_packets, rx.rx_dropped), (received, dropped));
}

#[test]
fn abort_tells_a_held_command_from_a_lost_one_and_aborts_on_request() {
    let dir = pool_dir("abort");
    let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
    assert!(d.enable(AQA));
    let nsid = create_ns(&mut d, 1024, 12, "slow").result;
    assert_eq!(
        ns_admin(&mut d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_ATTACH),
        0
    );
    // 2 IOPS with the shortest burst: the card holds all but the first
    // read or two for seconds, on purpose.
    let slow = abi::QosSettings {
        max_iops: 2,
        burst_ms: 1,
        ..Default::default()
    };
    assert_eq!(set_qos(&mut d, nsid, slow).status_code(), 0);
    let mut q = IoQ::create(&mut d, 1);
    let cids: Vec<u16> = (0..6)
        .map(|i| q.push(&d, rw(abi::IO_READ, nsid, i, 1, BUF + 0x1000, 0)))
        .collect();
    q.ring(&d);
    let abort = |d: &mut TestDriver, cid: u16, cdw11: u32| {
        d.submit(SubmissionEntry {
            opcode: abi::ADMIN_ABORT,
            cdw10: abi::AbortTarget { sqid: 1, cid }.cdw10(),
            cdw11,
            ..Default::default()
        })
    };
    // Let the engine fetch them into the scheduler.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let last = *cids.last().unwrap();
    let held = abort(&mut d, last, abi::ABORT_KEEP_QUEUED);
    assert_eq!(held.status_code(), 0);
    assert_eq!(
        held.result,
        abi::ABORT_RESULT_NOT_ABORTED | abi::ABORT_RESULT_QUEUED,
        "a command held by a ceiling is reported as waiting, not aborted"
    );
    // A command the card never saw is not found.
    let unknown = abort(&mut d, 999, abi::ABORT_KEEP_QUEUED);
    assert_eq!(unknown.result, abi::ABORT_RESULT_NOT_ABORTED);
    // Undefined CDW11 bits are refused.
    assert_eq!(
        abort(&mut d, last, 1 << 5).status_code(),
        abi::STATUS_INVALID_FIELD
    );
    // A plain Abort takes it out and completes it with "abort requested".
    let aborted = abort(&mut d, last, 0);
    assert_eq!((aborted.status_code(), aborted.result), (0, 0));
    let done = q.reap(&d, cids.len());
    let of = |cid: u16| done.iter().find(|c| c.cid == cid).unwrap().status_code();
    assert_eq!(of(last), abi::STATUS_ABORT_REQUESTED);
    for &cid in &cids[..cids.len() - 1] {
        assert_eq!(of(cid), 0, "the other reads complete normally");
    }
    // Completed: nothing left to abort.
    assert_eq!(
        abort(&mut d, cids[0], 0).result,
        abi::ABORT_RESULT_NOT_ABORTED
    );
}
