//! The command words' builders and decoders: every typed value survives
//! encoding and decoding, every word decodes to a value that encodes back
//! to its defined bits, the bit positions are the documented ones, and the
//! values the card refuses are refused with the status it answers.

use dia_abi::card::*;
use proptest::prelude::*;

#[test]
fn queue_words_sit_where_the_interface_says() {
    let q = NewQueue {
        qid: 3,
        entries: 1024,
    };
    assert_eq!(q.cdw10(), 3 | 1023 << 16);
    assert_eq!(NewQueue::from_cdw10(3 | 1023 << 16), q);
    // 0's based: the extremes.
    let one = NewQueue { qid: 0, entries: 1 };
    assert_eq!(one.cdw10(), 0);
    let most = NewQueue {
        qid: u16::MAX,
        entries: 65536,
    };
    assert_eq!(most.cdw10(), u32::MAX);
    assert_eq!(NewQueue::from_cdw10(u32::MAX), most);
    assert_eq!(NewQueue::from_cdw10(0), one);

    let cq = CqOptions {
        interrupts: true,
        vector: 7,
    };
    assert_eq!(cq.cdw11(), 1 | 2 | 7 << 16);
    assert_eq!(CqOptions::from_cdw11(1 | 2 | 7 << 16), Ok(cq));
    let quiet = CqOptions {
        interrupts: false,
        vector: 0,
    };
    assert_eq!(quiet.cdw11(), 1, "contiguous is always set");
    assert_eq!(
        CqOptions::from_cdw11(2 | 7 << 16),
        Err(CommandWordError::NotContiguous)
    );
    let sq = SqOptions { cqid: 9 };
    assert_eq!(sq.cdw11(), 1 | 9 << 16);
    assert_eq!(SqOptions::from_cdw11(1 | 9 << 16), Ok(sq));
    assert_eq!(
        SqOptions::from_cdw11(9 << 16),
        Err(CommandWordError::NotContiguous)
    );
    assert_eq!(
        CommandWordError::NotContiguous.status(),
        STATUS_INVALID_FIELD
    );

    assert_eq!(DeleteQueue { qid: 5 }.cdw10(), 5);
    assert_eq!(DeleteQueue::from_cdw10(0xabcd_0005), DeleteQueue { qid: 5 });
}

#[test]
fn identify_and_namespace_selects() {
    for (cns, raw) in [
        (IdentifyCns::Namespace, CNS_NAMESPACE),
        (IdentifyCns::Controller, CNS_CONTROLLER),
        (IdentifyCns::ActiveNsList, CNS_ACTIVE_NS_LIST),
        (IdentifyCns::AllocatedNsList, CNS_ALLOCATED_NS_LIST),
    ] {
        assert_eq!(cns.cdw10(), u32::from(raw));
        assert_eq!(IdentifyCns::from_cdw10(u32::from(raw)), Ok(cns));
    }
    assert_eq!(
        IdentifyCns::from_cdw10(0x55),
        Err(CommandWordError::Cns(0x55))
    );
    assert_eq!(CommandWordError::Cns(0x55).status(), STATUS_INVALID_FIELD);

    assert_eq!(NsManagement::Create.cdw10(), NS_MGMT_CREATE);
    assert_eq!(NsManagement::Delete.cdw10(), NS_MGMT_DELETE);
    assert_eq!(
        NsManagement::from_cdw10(NS_MGMT_DELETE),
        Ok(NsManagement::Delete)
    );
    assert_eq!(
        NsManagement::from_cdw10(2),
        Err(CommandWordError::Select(2))
    );
    assert_eq!(NsAttachment::Attach.cdw10(), NS_ATTACH);
    assert_eq!(NsAttachment::Detach.cdw10(), NS_DETACH);
    assert_eq!(
        NsAttachment::from_cdw10(NS_ATTACH),
        Ok(NsAttachment::Attach)
    );
    assert_eq!(
        NsAttachment::from_cdw10(0xf),
        Err(CommandWordError::Select(0xf))
    );
    // Only bits 3:0 select.
    assert_eq!(NsAttachment::from_cdw10(0x10), Ok(NsAttachment::Attach));
}

#[test]
fn log_pages() {
    for (log, id) in [
        (LogId::PoolStatus, LOG_POOL_STATUS),
        (LogId::NsStats, LOG_NS_STATS),
        (LogId::PortStats, LOG_PORT_STATS),
    ] {
        assert_eq!(log.id(), id);
        assert_eq!(LogId::from_id(id), Some(log));
    }
    assert_eq!(LogId::from_id(0x01), None);
    let page = LogPage::of_bytes(LogId::PortStats, core::mem::size_of::<PortStats>());
    assert_eq!(page.dwords, 20);
    assert_eq!(page.bytes(), 80);
    assert_eq!(page.cdw10(), u32::from(LOG_PORT_STATS) | 19 << 16);
    assert_eq!(LogPage::from_cdw10(page.cdw10()), Ok(page));
    assert_eq!(
        LogPage::from_cdw10(0x01 | 15 << 16),
        Err(CommandWordError::LogId(0x01))
    );
    // The largest transfer the word can ask for.
    let most = LogPage::from_cdw10(u32::from(LOG_POOL_STATUS) | 0xffff << 16).unwrap();
    assert_eq!(most.bytes(), 256 << 10);
    assert_eq!(PortStatsLog { port: 4 }.cdw11(), 4);
    assert_eq!(
        PortStatsLog::from_cdw11(0xffff_0004),
        PortStatsLog { port: 4 }
    );
}

#[test]
fn port_targets() {
    assert_eq!(PortTarget { port: 12 }.cdw10(), 12);
    assert_eq!(PortTarget::from_cdw10(0), Ok(PortTarget { port: 0 }));
    assert_eq!(
        PortTarget::from_cdw10(0xffff),
        Ok(PortTarget { port: 0xffff })
    );
    assert_eq!(
        PortTarget::from_cdw10(0x1_0001),
        Err(CommandWordError::PortId(0x1_0001))
    );
    assert_eq!(
        CommandWordError::PortId(0x1_0001).status(),
        STATUS_INVALID_PORT
    );
}

#[test]
fn io_words() {
    let lba = StartLba {
        lba: 0x1234_5678_9abc_def0,
    };
    assert_eq!((lba.cdw10(), lba.cdw11()), (0x9abc_def0, 0x1234_5678));
    assert_eq!(StartLba::from_cdw10_cdw11(0x9abc_def0, 0x1234_5678), lba);

    let write = IoBlocks {
        blocks: 8,
        fua: true,
        deallocate: false,
    };
    assert_eq!(write.cdw12(), 7 | RW_FUA);
    assert_eq!(IoBlocks::from_cdw12(7 | RW_FUA), write);
    let zeroes = IoBlocks {
        blocks: 65536,
        fua: false,
        deallocate: true,
    };
    assert_eq!(zeroes.cdw12(), 0xffff | WZ_DEALLOCATE);
    assert_eq!(IoBlocks::from_cdw12(0).blocks, 1);

    assert_eq!(DsmRanges { ranges: 1 }.cdw10(), 0);
    assert_eq!(DsmRanges { ranges: 256 }.cdw10(), 0xff);
    assert_eq!(DsmRanges::from_cdw10(0xff), DsmRanges { ranges: 256 });
    assert_eq!(DsmAttributes { deallocate: true }.cdw11(), DSM_DEALLOCATE);
    assert_eq!(DsmAttributes::default().cdw11(), 0);
    // Hints (bits 1:0) are not deallocation.
    assert_eq!(DsmAttributes::from_cdw11(0b11), DsmAttributes::default());
}

/// The bits each decoder reads: a decoded word encodes back to exactly these.
const NEW_QUEUE_BITS: u32 = u32::MAX;
const CQ_OPTIONS_BITS: u32 = 0xffff_0003;
const SQ_OPTIONS_BITS: u32 = 0xffff_0001;
const LOG_PAGE_BITS: u32 = 0xffff_00ff;
const IO_BLOCKS_BITS: u32 = 0xffff | RW_FUA | WZ_DEALLOCATE;

proptest! {
    #[test]
    fn typed_values_round_trip(
        qid in any::<u16>(),
        entries in 1u32..=65536,
        interrupts in any::<bool>(),
        vector in any::<u16>(),
        lba in any::<u64>(),
        blocks in 1u32..=65536,
        fua in any::<bool>(),
        deallocate in any::<bool>(),
        ranges in 1u32..=256,
        sid in any::<u16>(),
        cid in any::<u16>(),
    ) {
        let q = NewQueue { qid, entries };
        prop_assert_eq!(NewQueue::from_cdw10(q.cdw10()), q);
        let cq = CqOptions { interrupts, vector };
        prop_assert_eq!(CqOptions::from_cdw11(cq.cdw11()), Ok(cq));
        let sq = SqOptions { cqid: qid };
        prop_assert_eq!(SqOptions::from_cdw11(sq.cdw11()), Ok(sq));
        prop_assert_eq!(DeleteQueue::from_cdw10(DeleteQueue { qid }.cdw10()), DeleteQueue { qid });
        for log in [LogId::PoolStatus, LogId::NsStats, LogId::PortStats] {
            let page = LogPage { log, dwords: entries };
            prop_assert_eq!(LogPage::from_cdw10(page.cdw10()), Ok(page));
        }
        let p = PortTarget { port: qid };
        prop_assert_eq!(PortTarget::from_cdw10(p.cdw10()), Ok(p));
        let s = PortStatsLog { port: qid };
        prop_assert_eq!(PortStatsLog::from_cdw11(s.cdw11()), s);
        let start = StartLba { lba };
        prop_assert_eq!(StartLba::from_cdw10_cdw11(start.cdw10(), start.cdw11()), start);
        let io = IoBlocks { blocks, fua, deallocate };
        prop_assert_eq!(IoBlocks::from_cdw12(io.cdw12()), io);
        let r = DsmRanges { ranges };
        prop_assert_eq!(DsmRanges::from_cdw10(r.cdw10()), r);
        let a = DsmAttributes { deallocate };
        prop_assert_eq!(DsmAttributes::from_cdw11(a.cdw11()), a);
        let t = AbortTarget { sqid: sid, cid };
        prop_assert_eq!(AbortTarget::from_cdw10(t.cdw10()), t);
    }

    #[test]
    fn words_decode_to_their_defined_bits(w in any::<u32>(), hi in any::<u32>()) {
        prop_assert_eq!(NewQueue::from_cdw10(w).cdw10(), w & NEW_QUEUE_BITS);
        match CqOptions::from_cdw11(w) {
            Ok(cq) => prop_assert_eq!(cq.cdw11(), w & CQ_OPTIONS_BITS),
            Err(e) => prop_assert!(w & 1 == 0 && e == CommandWordError::NotContiguous),
        }
        match SqOptions::from_cdw11(w) {
            Ok(sq) => prop_assert_eq!(sq.cdw11(), w & SQ_OPTIONS_BITS),
            Err(e) => prop_assert!(w & 1 == 0 && e == CommandWordError::NotContiguous),
        }
        prop_assert_eq!(DeleteQueue::from_cdw10(w).cdw10(), w & 0xffff);
        match IdentifyCns::from_cdw10(w) {
            Ok(cns) => prop_assert_eq!(cns.cdw10(), w & 0xff),
            Err(e) => prop_assert_eq!(e, CommandWordError::Cns(w as u8)),
        }
        match LogPage::from_cdw10(w) {
            Ok(page) => prop_assert_eq!(page.cdw10(), w & LOG_PAGE_BITS),
            Err(e) => prop_assert_eq!(e, CommandWordError::LogId(w as u8)),
        }
        match NsManagement::from_cdw10(w) {
            Ok(sel) => prop_assert_eq!(sel.cdw10(), w & 0xf),
            Err(e) => prop_assert_eq!(e, CommandWordError::Select((w & 0xf) as u8)),
        }
        match NsAttachment::from_cdw10(w) {
            Ok(sel) => prop_assert_eq!(sel.cdw10(), w & 0xf),
            Err(e) => prop_assert_eq!(e, CommandWordError::Select((w & 0xf) as u8)),
        }
        match PortTarget::from_cdw10(w) {
            Ok(p) => prop_assert_eq!(p.cdw10(), w),
            Err(e) => prop_assert!(w > 0xffff && e == CommandWordError::PortId(w)),
        }
        prop_assert_eq!(PortStatsLog::from_cdw11(w).cdw11(), w & 0xffff);
        let start = StartLba::from_cdw10_cdw11(w, hi);
        prop_assert_eq!((start.cdw10(), start.cdw11()), (w, hi));
        prop_assert_eq!(IoBlocks::from_cdw12(w).cdw12(), w & IO_BLOCKS_BITS);
        prop_assert_eq!(DsmRanges::from_cdw10(w).cdw10(), w & 0xff);
        prop_assert_eq!(DsmAttributes::from_cdw11(w).cdw11(), w & DSM_DEALLOCATE);
        prop_assert_eq!(AbortTarget::from_cdw10(w).cdw10(), w);
    }
}
