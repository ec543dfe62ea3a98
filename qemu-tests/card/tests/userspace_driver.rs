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
            serial: "TEST-SERIAL-7".into(),
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
