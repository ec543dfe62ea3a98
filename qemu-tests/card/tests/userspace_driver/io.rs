//! Storage as the test driver does it: a pool for the card, I/O queue
//! pairs, read/write commands with their PRPs, and the namespace and QoS
//! admin commands.

use std::path::PathBuf;

use dia_abi::card::{self as abi, CompletionEntry, SubmissionEntry};
use dia_card_model::PoolSpec;

use crate::driver::{create_cq, create_sq, TestDriver, AQA, BUF};
use crate::ring::RingState;

pub(crate) const IO_DEPTH: u16 = 32;
pub(crate) const PRP_LIST: u64 = 0x80000;
pub(crate) const WBUF: u64 = 0x100000;
pub(crate) const RBUF: u64 = 0x300000;

pub(crate) fn pool_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dia-card-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub(crate) fn pool_spec(dir: &std::path::Path) -> PoolSpec {
    PoolSpec {
        paths: vec![dir.join("pool.img")],
        create_bytes: Some(64 << 20),
    }
}

/// A started and enabled card on a fresh pool in a scratch directory of
/// its own (`pool_dir(name)`), which goes away after the card when this is
/// dropped. Derefs to the driver.
pub(crate) struct PooledCard {
    d: TestDriver,
    dir: PathBuf,
}

impl PooledCard {
    pub(crate) fn start(name: &str) -> Self {
        let dir = pool_dir(name);
        let mut d = TestDriver::start_with(Some(pool_spec(&dir)));
        assert!(d.enable(AQA));
        Self { d, dir }
    }
}

impl std::ops::Deref for PooledCard {
    type Target = TestDriver;
    fn deref(&self) -> &TestDriver {
        &self.d
    }
}

impl std::ops::DerefMut for PooledCard {
    fn deref_mut(&mut self) -> &mut TestDriver {
        &mut self.d
    }
}

impl Drop for PooledCard {
    fn drop(&mut self) {
        // The card's pool files are closed when `d` drops, after this; the
        // directory entries can go first.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An I/O queue pair as the test driver keeps it.
pub(crate) struct IoQ {
    pub(crate) qid: u16,
    pub(crate) sq: u64,
    pub(crate) cq: u64,
    /// The pair's positions, kept as dia.ko keeps them.
    pub(crate) ring: RingState,
    pub(crate) cid: u16,
}

impl IoQ {
    pub(crate) fn create(d: &mut TestDriver, qid: u16) -> Self {
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
            ring: RingState::new(IO_DEPTH).expect("I/O queues of at least 2 entries"),
            cid: 0,
        }
    }

    pub(crate) fn push(&mut self, d: &TestDriver, mut sqe: SubmissionEntry) -> u16 {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        // SAFETY: SubmissionEntry is repr(C) plain data of 64 bytes.
        let bytes: [u8; 64] = unsafe { std::mem::transmute(sqe) };
        let slot = self.ring.sq_push().expect("I/O submission queue full");
        d.mem.write(self.sq + u64::from(slot) * 64, &bytes).unwrap();
        sqe.cid
    }

    pub(crate) fn ring(&self, d: &TestDriver) {
        d.bar.write32(
            abi::sq_tail_doorbell(self.qid),
            u32::from(self.ring.sq_tail()),
        );
        d.ring(usize::from(self.qid));
    }

    /// Waits for `n` completions; returns them in arrival order.
    pub(crate) fn reap(&mut self, d: &TestDriver, n: usize) -> Vec<CompletionEntry> {
        let mut out = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while out.len() < n {
            let (head, phase) = self.ring.cq_expect();
            let mut raw = [0u8; 16];
            d.mem
                .read(self.cq + u64::from(head) * 16, &mut raw)
                .unwrap();
            // SAFETY: CompletionEntry is repr(C) plain data of 16 bytes.
            let cqe: CompletionEntry = unsafe { std::mem::transmute(raw) };
            if cqe.phase() != phase {
                assert!(
                    std::time::Instant::now() < deadline,
                    "I/O completions missing"
                );
                std::thread::sleep(std::time::Duration::from_micros(200));
                continue;
            }
            assert_eq!(cqe.sq_id, self.qid);
            assert!(self.ring.set_sq_head(cqe.sq_head), "SQ head out of range");
            out.push(cqe);
            self.ring.cq_advance();
            d.bar.write32(
                abi::cq_head_doorbell(self.qid),
                u32::from(self.ring.cq_head()),
            );
        }
        d.irqs[usize::from(self.qid)].drain();
        out
    }

    pub(crate) fn run(&mut self, d: &TestDriver, sqe: SubmissionEntry) -> u16 {
        self.run_cqe(d, sqe).status_code()
    }

    /// Runs one command; its whole completion.
    pub(crate) fn run_cqe(&mut self, d: &TestDriver, sqe: SubmissionEntry) -> CompletionEntry {
        self.push(d, sqe);
        self.ring(d);
        self.reap(d, 1)[0]
    }
}

pub(crate) fn rw(
    opcode: u8,
    nsid: u32,
    slba: u64,
    blocks: u32,
    prp1: u64,
    prp2: u64,
) -> SubmissionEntry {
    SubmissionEntry {
        opcode,
        nsid,
        prp1,
        prp2,
        cdw10: abi::StartLba { lba: slba }.cdw10(),
        cdw11: abi::StartLba { lba: slba }.cdw11(),
        cdw12: abi::IoBlocks {
            blocks,
            ..Default::default()
        }
        .cdw12(),
        ..Default::default()
    }
}

/// PRP1/PRP2 for `pages` contiguous pages at `buf` (a list at `list` when
/// more than two pages).
pub(crate) fn prps(d: &TestDriver, buf: u64, pages: u64, list: u64) -> (u64, u64) {
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

pub(crate) fn create_ns(
    d: &mut TestDriver,
    blocks: u64,
    shift: u8,
    label: &str,
) -> CompletionEntry {
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

/// Creates a namespace and attaches it (the attach must succeed); its id.
pub(crate) fn create_attached_ns(d: &mut TestDriver, blocks: u64, shift: u8, label: &str) -> u32 {
    let nsid = create_ns(d, blocks, shift, label).result;
    attach_ns(d, nsid);
    nsid
}

/// Attaches namespace `nsid`, which must succeed.
pub(crate) fn attach_ns(d: &mut TestDriver, nsid: u32) {
    assert_eq!(
        ns_admin(d, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_ATTACH),
        0,
        "attach namespace {nsid}"
    );
}

pub(crate) fn ns_admin(d: &mut TestDriver, opcode: u8, nsid: u32, select: u32) -> u16 {
    d.submit(SubmissionEntry {
        opcode,
        nsid,
        cdw10: select,
        ..Default::default()
    })
    .status_code()
}

pub(crate) fn identify_ns(d: &mut TestDriver, nsid: u32) -> (u16, abi::IdentifyNamespace) {
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

pub(crate) fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Reads `blocks` 4 KiB blocks of `nsid` from `slba` through `q`.
pub(crate) fn read_blocks(
    d: &TestDriver,
    q: &mut IoQ,
    nsid: u32,
    slba: u64,
    blocks: u32,
) -> Vec<u8> {
    let len = 4096 * blocks as usize;
    d.mem.write(RBUF, &vec![0xee; len]).unwrap();
    let (p1, p2) = prps(d, RBUF, u64::from(blocks), PRP_LIST + 0x3000);
    assert_eq!(q.run(d, rw(abi::IO_READ, nsid, slba, blocks, p1, p2)), 0);
    let mut back = vec![0u8; len];
    d.mem.read(RBUF, &mut back).unwrap();
    back
}

pub(crate) fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

pub(crate) fn set_qos(d: &mut TestDriver, nsid: u32, q: abi::QosSettings) -> CompletionEntry {
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
