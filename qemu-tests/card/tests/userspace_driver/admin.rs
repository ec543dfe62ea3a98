//! The register handshake, Identify, admin queue wrap-around, I/O queue
//! management, malformed commands, fatal status and its recovery.

use dia_abi::card::{self as abi, IdentifyController, SubmissionEntry};

use crate::driver::*;

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
