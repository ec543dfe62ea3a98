//! The storage path: namespaces, I/O on several queues at once, data
//! surviving a firmware crash, isolation between tenants, QoS, and Abort.

use dia_abi::card::{self as abi, SubmissionEntry};

use crate::driver::*;
use crate::io::*;

#[test]
fn namespaces_and_io_on_two_queues() {
    let mut d = PooledCard::start("io");
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
    attach_ns(&mut d, nsid);
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
}

#[test]
fn flushed_data_survives_a_firmware_crash() {
    let mut d = PooledCard::start("crash");
    let nsid = create_attached_ns(&mut d, 1 << 14, 12, "keep");
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
}

/// A local namespace's FUA write flushes the card's whole cache and says
/// so in its completion (`WRITE_RESULT_FLUSHED`): a write another queue
/// completed before it survives a crash without a Flush of its own. Other
/// commands leave DW0 zero.
#[test]
fn a_fua_write_reports_that_it_flushed_every_earlier_write() {
    let mut d = PooledCard::start("fua");
    let nsid = create_attached_ns(&mut d, 1 << 14, 12, "fua");
    let other = create_attached_ns(&mut d, 1 << 14, 12, "other");
    let mut q1 = IoQ::create(&mut d, 1);
    let mut q2 = IoQ::create(&mut d, 2);
    let early = pattern(4, 8192);
    d.mem.write(WBUF, &early).unwrap();
    let plain = q1.run_cqe(&d, rw(abi::IO_WRITE, other, 700, 2, WBUF, WBUF + 4096));
    assert_eq!((plain.status_code(), plain.result), (0, 0));
    let read = q1.run_cqe(&d, rw(abi::IO_READ, other, 700, 2, RBUF, RBUF + 4096));
    assert_eq!((read.status_code(), read.result), (0, 0));
    let mut fua = rw(abi::IO_WRITE, nsid, 9, 1, WBUF, 0);
    fua.cdw12 |= abi::RW_FUA;
    let cqe = q2.run_cqe(&d, fua);
    assert_eq!(
        (cqe.status_code(), cqe.result),
        (0, abi::WRITE_RESULT_FLUSHED)
    );
    let fl = q2.run_cqe(&d, rw(abi::IO_FLUSH, nsid, 0, 1, 0, 0));
    assert_eq!((fl.status_code(), fl.result), (0, 0));

    d.fw.kill().unwrap();
    d.fw.start().unwrap();
    assert!(d.enable(AQA), "the driver resets the restarted card");
    let mut q = IoQ::create(&mut d, 1);
    assert_eq!(
        q.run(&d, rw(abi::IO_READ, other, 700, 2, RBUF, RBUF + 4096)),
        0
    );
    let mut back = vec![0u8; early.len()];
    d.mem.read(RBUF, &mut back).unwrap();
    assert!(
        back == early,
        "a write completed before the FUA write was lost in the crash"
    );
}

/// Unwritten blocks read as zeroes for every tenant: space a crash gave
/// back (allocated and written, never flushed) and space a deleted
/// namespace gave back never shows its old bytes in the next namespace.
#[test]
fn no_namespace_reads_another_ones_data_after_a_crash_or_delete() {
    let mut d = PooledCard::start("leak");
    let a = create_attached_ns(&mut d, 1 << 14, 12, "a");
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
    let b = create_attached_ns(&mut d, 1 << 14, 12, "b");
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
    let c = create_attached_ns(&mut d, 1 << 14, 12, "c");
    assert_eq!(q.run(&d, rw(abi::IO_WRITE, c, 9, 1, WBUF, 0)), 0);
    let back = read_blocks(&d, &mut q, c, 0, 16);
    assert!(
        all_zero(&back[..9 * 4096]) && all_zero(&back[10 * 4096..]),
        "namespace {c} reads deleted namespace {b}'s data"
    );
}

#[test]
fn qos_is_validated_admitted_and_counted() {
    let mut d = PooledCard::start("qos");
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
    attach_ns(&mut d, a);
    let mut q = IoQ::create(&mut d, 1);
    for slba in [0, 1] {
        assert_eq!(q.run(&d, rw(abi::IO_WRITE, a, slba, 1, WBUF, 0)), 0);
    }
    assert_eq!(q.run(&d, rw(abi::IO_READ, a, 0, 1, RBUF, 0)), 0);
    let st = d.ns_stats(a);
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
}

#[test]
fn abort_tells_a_held_command_from_a_lost_one_and_aborts_on_request() {
    let mut d = PooledCard::start("abort");
    let nsid = create_attached_ns(&mut d, 1024, 12, "slow");
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
