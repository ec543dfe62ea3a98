//! A userspace test driver that plays the guest's dia driver against the real
//! card controller, in-process: BAR2 and guest RAM are memfds mapped twice
//! (once for the card, once for the driver), doorbells and interrupts are
//! real eventfds. Checks the register handshake, Identify, queue wrap-around,
//! I/O queue management, and that malformed commands get an error status
//! while the card keeps serving.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use dia_abi::card::{self as abi, CompletionEntry, IdentifyController, SubmissionEntry};
use dia_card::{Bar, CardConfig, Controller, EventFd, GuestMemory, Interrupts, SharedMemory};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

const RAM: usize = 4 << 20;
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
    stop: Arc<AtomicBool>,
    card: Option<JoinHandle<()>>,
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
        let bar_mem = SharedMemory::anonymous("bar", 1 << 20).unwrap();
        let ram = SharedMemory::anonymous("ram", RAM).unwrap();
        let doorbells: Vec<EventFd> = (0..VECTORS).map(|_| EventFd::new().unwrap()).collect();
        let irqs: Vec<EventFd> = (0..VECTORS).map(|_| EventFd::new().unwrap()).collect();
        let bar = Bar::new(view(&bar_mem)).unwrap();
        let mem = GuestMemory::new(view(&ram));
        let card_doorbells: Vec<EventFd> =
            doorbells.iter().map(|d| d.try_clone().unwrap()).collect();
        let card_irqs = Interrupts::new(irqs.iter().map(|d| d.try_clone().unwrap()).collect());
        let cfg = CardConfig {
            serial: "TEST-SERIAL-7".into(),
            vectors: VECTORS,
            max_queue_entries: 64,
            fault: None,
        };
        let mut ctrl = Controller::new(
            Bar::new(bar_mem).unwrap(),
            GuestMemory::new(ram),
            card_irqs,
            cfg,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let card = std::thread::spawn(move || ctrl.run(&card_doorbells, &s));
        Self {
            bar,
            mem,
            doorbells,
            irqs,
            stop,
            card: Some(card),
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
        self.stop.store(true, Ordering::Relaxed);
        self.ring(0);
        if let Some(t) = self.card.take() {
            t.join().unwrap();
        }
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
