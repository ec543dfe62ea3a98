//! The NVM I/O command path (`nvm::execute`: Read, Write with FUA, Flush,
//! Write Zeroes, Dataset Management, and anything else a guest can put in
//! a submission entry) on a fresh thin pool, with PRPs the fuzzer lays out
//! (contiguous, scattered, or raw), and firmware crashes in between.
//!
//! A model of every namespace's blocks checks what reads return: a block
//! reads what was last written to it, zeroes if it never was or was
//! deallocated, and after a crash anything written since the last flush
//! may read old or new (those become unknown until written again); every
//! other block, in particular the never-written blocks of every namespace,
//! must read exactly as the model says. After every write the whole chunk
//! around it is read back and checked, so space a crash freed and a write
//! got again is checked at once. No command may fail with Internal Error
//! (the pool itself failing) or succeed outside its namespace.

#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use dia_abi::card::{self as abi, SubmissionEntry};
use dia_card_model::fuzz::{self, ScratchDir};
use dia_card_model::{GuestMemory, Pool};
use libfuzzer_sys::fuzz_target;

mod shared;

const PAGE: u64 = 4096;
const RAM: usize = 12 << 20;
/// The chunk read back after a write goes here (1 MiB), its PRP list there.
const VERIFY: u64 = 9 << 20;
const VERIFY_LIST: u64 = 11 << 20;
/// Data buffers the structured layouts use: 6 MiB.
const DATA: u64 = 1 << 20;
const DATA_PAGES: u64 = 1536;
/// PRP list pages.
const LISTS: u64 = 7 << 20;

#[derive(Arbitrary, Debug)]
struct NsSpec {
    /// 9 + shift % 4 mostly; sometimes out of range.
    shift: u8,
    blocks: u32,
}

/// Where a command's data lives, and how PRP1/PRP2 describe it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Layout {
    /// Consecutive pages from a data page, starting `dwords` * 4 into it.
    Contiguous { page: u16, dwords: u16 },
    /// Whole pages picked from the data area by a seed (pages may repeat).
    Scattered { seed: u64 },
    /// PRP1 and PRP2 as given (the model stops checking what they touch).
    Raw { prp1: u64, prp2: u64 },
}

#[derive(Arbitrary, Debug)]
enum Cmd {
    Read {
        ns: u8,
        slba: u32,
        nlb: u8,
        layout: Layout,
    },
    Write {
        ns: u8,
        slba: u32,
        nlb: u8,
        fua: bool,
        layout: Layout,
        fill: u8,
    },
    Flush {
        ns: u8,
    },
    WriteZeroes {
        ns: u8,
        slba: u32,
        nlb: u16,
        deallocate: bool,
    },
    Deallocate {
        ns: u8,
        ranges: Vec<(u32, u16)>,
        layout: Layout,
    },
    Attach {
        ns: u8,
        attach: bool,
    },
    Crash,
    Raw {
        opcode: u8,
        nsid: u32,
        flags: u8,
        cdw10: u32,
        cdw11: u32,
        cdw12: u32,
        prp1: u64,
        prp2: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Pool size: 4 to 19 MiB (small enough to fill).
    pool_mib: u8,
    namespaces: Vec<NsSpec>,
    cmds: Vec<Cmd>,
}

/// What the model knows of one namespace.
#[derive(Debug)]
struct Model {
    nsid: u32,
    shift: u8,
    blocks: u64,
    /// Blocks whose content is known and not zero.
    data: HashMap<u64, Vec<u8>>,
    /// Blocks that may hold anything (a failed write, a crash, a raw command).
    unknown: HashSet<u64>,
    /// Blocks changed since the last flush.
    dirty: HashSet<u64>,
    /// Nothing of this namespace is checked any more.
    tainted: bool,
}

impl Model {
    fn block_bytes(&self) -> usize {
        1 << self.shift
    }

    fn set(&mut self, lba: u64, bytes: Option<Vec<u8>>) {
        self.unknown.remove(&lba);
        self.dirty.insert(lba);
        match bytes {
            Some(b) if b.iter().any(|&x| x != 0) => {
                self.data.insert(lba, b);
            }
            _ => {
                self.data.remove(&lba);
            }
        }
    }

    fn forget(&mut self, slba: u64, n: u64) {
        for lba in slba..slba.saturating_add(n).min(self.blocks) {
            self.data.remove(&lba);
            self.unknown.insert(lba);
            self.dirty.insert(lba);
        }
    }

    fn crash(&mut self) {
        for lba in std::mem::take(&mut self.dirty) {
            self.data.remove(&lba);
            self.unknown.insert(lba);
        }
    }

    fn check(&self, slba: u64, got: &[u8]) {
        if self.tainted {
            return;
        }
        for (i, block) in got.chunks(self.block_bytes()).enumerate() {
            let lba = slba + i as u64;
            if self.unknown.contains(&lba) {
                continue;
            }
            match self.data.get(&lba) {
                Some(want) => assert!(
                    block == &want[..],
                    "namespace {} block {lba}: read differs from the last write",
                    self.nsid
                ),
                None => assert!(
                    block.iter().all(|&x| x == 0),
                    "namespace {} block {lba}: never written (or deallocated) but not zero",
                    self.nsid
                ),
            }
        }
    }
}

/// Writes PRP list entries from `LISTS + list_slot * 16 pages`, chaining.
fn write_list(mem: &GuestMemory, list_slot: u64, entries: &[u64]) -> u64 {
    let first = LISTS + list_slot * 16 * PAGE;
    let mut at = first;
    let mut rest = entries;
    loop {
        if rest.len() <= 512 {
            for (i, e) in rest.iter().enumerate() {
                mem.write(at + i as u64 * 8, &e.to_le_bytes()).unwrap();
            }
            return first;
        }
        for (i, e) in rest[..511].iter().enumerate() {
            mem.write(at + i as u64 * 8, &e.to_le_bytes()).unwrap();
        }
        let next = at + PAGE;
        mem.write(at + 511 * 8, &next.to_le_bytes()).unwrap();
        rest = &rest[511..];
        at = next;
    }
}

/// PRP1/PRP2 for `len` bytes laid out as `layout`; `true` when the model
/// can follow the data (not raw).
fn prps(mem: &GuestMemory, layout: Layout, len: u64, list_slot: u64) -> (u64, u64, bool) {
    let pages_after = |first: u64| len.saturating_sub(first).div_ceil(PAGE);
    match layout {
        Layout::Raw { prp1, prp2 } => (prp1, prp2, false),
        Layout::Contiguous { page, dwords } => {
            let need = len.div_ceil(PAGE) + 1;
            let page = u64::from(page) % (DATA_PAGES - need);
            let buf = DATA + page * PAGE + (u64::from(dwords) * 4) % PAGE;
            let first = PAGE - buf % PAGE;
            let next: Vec<u64> = (0..pages_after(first))
                .map(|i| (buf / PAGE + 1 + i) * PAGE)
                .collect();
            (buf, second(mem, &next, list_slot), true)
        }
        Layout::Scattered { seed } => {
            let mut x = seed | 1;
            let mut pick = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                DATA + (x % DATA_PAGES) * PAGE
            };
            let buf = pick();
            let next: Vec<u64> = (0..pages_after(PAGE)).map(|_| pick()).collect();
            (buf, second(mem, &next, list_slot), true)
        }
    }
}

fn second(mem: &GuestMemory, next: &[u64], list_slot: u64) -> u64 {
    match next {
        [] => 0,
        [one] => *one,
        many => write_list(mem, list_slot, many),
    }
}

/// Whether segments overlap (then a read's result depends on the order
/// the card writes them; the model does not check it).
fn overlapping(segs: &[(u64, usize)]) -> bool {
    let mut s: Vec<(u64, u64)> = segs
        .iter()
        .map(|&(a, n)| (a, a.saturating_add(n as u64)))
        .collect();
    s.sort_unstable();
    s.windows(2).any(|w| w[1].0 < w[0].1)
}

fn gather(mem: &GuestMemory, segs: &[(u64, usize)]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for &(addr, n) in segs {
        let mut b = vec![0u8; n];
        mem.read(addr, &mut b).ok()?;
        out.extend_from_slice(&b);
    }
    Some(out)
}

fn rw_entry(
    opcode: u8,
    nsid: u32,
    slba: u64,
    blocks: abi::IoBlocks,
    prp1: u64,
    prp2: u64,
) -> SubmissionEntry {
    let start = abi::StartLba { lba: slba };
    SubmissionEntry {
        opcode,
        nsid,
        prp1,
        prp2,
        cdw10: start.cdw10(),
        cdw11: start.cdw11(),
        cdw12: blocks.cdw12(),
        ..Default::default()
    }
}

/// `blocks` blocks (1..=65536), nothing else set.
fn io_blocks(blocks: u64) -> abi::IoBlocks {
    abi::IoBlocks {
        blocks: blocks as u32,
        ..Default::default()
    }
}

/// A Read or Write as the fuzzer asked for it, placed: the namespace's
/// model (None for a namespace that does not exist) and id, the first
/// block (within the namespace's size + 8), its block shift, the bytes,
/// the PRPs, whether the model can follow them, and the segments they
/// describe.
struct Placed {
    i: Option<usize>,
    nsid: u32,
    slba: u64,
    shift: u8,
    len: u64,
    p1: u64,
    p2: u64,
    follow: bool,
    segs: Result<Vec<(u64, usize)>, u16>,
}

impl Placed {
    /// The command: `opcode` on these blocks, PRPs and namespace.
    fn entry(&self, opcode: u8, blocks: abi::IoBlocks) -> SubmissionEntry {
        rw_entry(opcode, self.nsid, self.slba, blocks, self.p1, self.p2)
    }
}

struct Card {
    dir: ScratchDir,
    pool: Option<Pool>,
    mem: GuestMemory,
    models: Vec<Model>,
}

impl Card {
    fn pool(&self) -> &Pool {
        self.pool.as_ref().expect("a pool")
    }

    fn run(&mut self, sqe: &SubmissionEntry) -> u16 {
        let status = fuzz::nvm_execute(Some(self.pool()), &self.mem, sqe);
        assert_ne!(
            status,
            abi::STATUS_INTERNAL_ERROR,
            "the pool failed on {sqe:?}"
        );
        status
    }

    /// Reads back the chunks of namespace `i` around blocks
    /// `slba..=slba + nlb` and checks them against the model.
    fn verify_chunks(&mut self, i: usize, slba: u64, nlb: u64) {
        let m = &self.models[i];
        let (nsid, blocks, shift) = (m.nsid, m.blocks, m.shift);
        let per_chunk = fuzz::CHUNK_BYTES >> shift;
        for c in slba / per_chunk..=(slba + nlb) / per_chunk {
            let first = c * per_chunk;
            let n = per_chunk.min(blocks - first);
            let len = n << shift;
            let pages = len.div_ceil(PAGE);
            for p in 1..pages {
                self.mem
                    .write(
                        VERIFY_LIST + (p - 1) * 8,
                        &(VERIFY + p * PAGE).to_le_bytes(),
                    )
                    .unwrap();
            }
            let prp2 = match pages {
                1 => 0,
                2 => VERIFY + PAGE,
                _ => VERIFY_LIST,
            };
            let sqe = rw_entry(abi::IO_READ, nsid, first, io_blocks(n), VERIFY, prp2);
            if self.run(&sqe) != abi::STATUS_SUCCESS {
                continue;
            }
            let mut got = vec![0u8; len as usize];
            self.mem.read(VERIFY, &mut got).unwrap();
            self.models[i].check(first, &got);
        }
    }

    fn flushed(&mut self) {
        for m in &mut self.models {
            m.dirty.clear();
        }
    }

    /// Places a Read or Write of `nlb` + 1 blocks at `slba` of `ns`, its
    /// data laid out as `layout` says (PRP lists in slot `list_slot`).
    fn place(&self, ns: u8, slba: u32, nlb: u8, layout: Layout, list_slot: u64) -> Placed {
        let (i, nsid) = self.pick(ns);
        let shift = i.map_or(12, |i| self.models[i].shift);
        let slba = u64::from(slba) % (i.map_or(1 << 20, |i| self.models[i].blocks) + 8);
        let len = (u64::from(nlb) + 1) << shift;
        let (p1, p2, follow) = prps(&self.mem, layout, len, list_slot);
        let segs = fuzz::prp_segments(&self.mem, p1, p2, len as usize);
        Placed {
            i,
            nsid,
            slba,
            shift,
            len,
            p1,
            p2,
            follow,
            segs,
        }
    }

    /// The model of `ns` (an index into the namespaces) and its id, or a
    /// namespace id that does not exist.
    fn pick(&self, ns: u8) -> (Option<usize>, u32) {
        if self.models.is_empty() || ns >= 250 {
            return (None, u32::from(ns));
        }
        let i = usize::from(ns) % self.models.len();
        (Some(i), self.models[i].nsid)
    }
}

fuzz_target!(|input: Input| {
    let dir = ScratchDir::new();
    let pool = dir.pool((4 + u64::from(input.pool_mib % 16)) << 20);
    let mut card = Card {
        mem: fuzz::guest_memory(RAM),
        pool: None,
        models: Vec::new(),
        dir,
    };
    for spec in input.namespaces.iter().take(3) {
        let shift = if spec.shift >= 240 {
            spec.shift
        } else {
            9 + spec.shift % 4
        };
        let blocks = u64::from(spec.blocks % (1 << 16)) + 1;
        let Some(nsid) = shared::attached_namespace(&pool, blocks, shift, [0; abi::LABEL_LEN])
        else {
            continue;
        };
        card.models.push(Model {
            nsid,
            shift,
            blocks,
            data: HashMap::new(),
            unknown: HashSet::new(),
            dirty: HashSet::new(),
            tainted: false,
        });
    }
    card.pool = Some(pool);
    for (n, cmd) in input.cmds.iter().take(48).enumerate() {
        let list_slot = n as u64 % 16;
        match *cmd {
            Cmd::Read {
                ns,
                slba,
                nlb,
                layout,
            } => {
                let at = card.place(ns, slba, nlb, layout, list_slot);
                let slba = at.slba;
                let status = card.run(&at.entry(abi::IO_READ, io_blocks(u64::from(nlb) + 1)));
                if let (abi::STATUS_SUCCESS, Some(i), true, Ok(segs)) =
                    (status, at.i, at.follow, at.segs)
                {
                    let m = &card.models[i];
                    assert!(
                        slba + u64::from(nlb) < m.blocks,
                        "read past the end succeeded"
                    );
                    if !overlapping(&segs) {
                        let got =
                            gather(&card.mem, &segs).expect("a read succeeded into guest RAM");
                        m.check(slba, &got);
                    }
                }
            }
            Cmd::Write {
                ns,
                slba,
                nlb,
                fua,
                layout,
                fill,
            } => {
                let at = card.place(ns, slba, nlb, layout, list_slot);
                let (i, slba) = (at.i, at.slba);
                // The data: each block names itself, the write and the fill.
                let mut src = None;
                if let (true, Ok(segs)) = (at.follow, &at.segs) {
                    let bytes: Vec<u8> = (0..at.len)
                        .map(|k| {
                            let lba = slba + (k >> at.shift);
                            (lba.wrapping_mul(131) ^ (n as u64) << 3 ^ k) as u8 ^ fill
                        })
                        .collect();
                    let mut off = 0;
                    for &(addr, l) in segs {
                        let _ = card.mem.write(addr, &bytes[off..off + l]);
                        off += l;
                    }
                    src = gather(&card.mem, segs);
                }
                let n = abi::IoBlocks {
                    fua,
                    ..io_blocks(u64::from(nlb) + 1)
                };
                let status = card.run(&at.entry(abi::IO_WRITE, n));
                let Some(i) = i else { continue };
                let ok = status == abi::STATUS_SUCCESS;
                let m = &mut card.models[i];
                if ok {
                    assert!(
                        slba + u64::from(nlb) < m.blocks,
                        "write past the end succeeded"
                    );
                }
                match (ok, src) {
                    (true, Some(src)) => {
                        let bs = m.block_bytes();
                        for (k, block) in src.chunks(bs).enumerate() {
                            m.set(slba + k as u64, Some(block.to_vec()));
                        }
                    }
                    // Raw PRPs, or a write that failed part way: unknown.
                    (true, None) => m.forget(slba, u64::from(nlb) + 1),
                    (false, _) if status != abi::STATUS_LBA_OUT_OF_RANGE => {
                        m.forget(slba, u64::from(nlb) + 1)
                    }
                    (false, _) => {}
                }
                if ok && fua {
                    card.flushed();
                }
                if ok {
                    card.verify_chunks(i, slba, u64::from(nlb));
                }
            }
            Cmd::Flush { ns } => {
                let (_, nsid) = card.pick(ns);
                let nsid = if ns == 255 { u32::MAX } else { nsid };
                let sqe = SubmissionEntry {
                    opcode: abi::IO_FLUSH,
                    nsid,
                    ..Default::default()
                };
                if card.run(&sqe) == abi::STATUS_SUCCESS {
                    card.flushed();
                }
            }
            Cmd::WriteZeroes {
                ns,
                slba,
                nlb,
                deallocate,
            } => {
                let (i, nsid) = card.pick(ns);
                let slba = u64::from(slba) % (i.map_or(1 << 20, |i| card.models[i].blocks) + 8);
                let n = abi::IoBlocks {
                    deallocate,
                    ..io_blocks(u64::from(nlb) + 1)
                };
                let sqe = rw_entry(abi::IO_WRITE_ZEROES, nsid, slba, n, 0, 0);
                let status = card.run(&sqe);
                if let Some(i) = i {
                    let m = &mut card.models[i];
                    if status == abi::STATUS_SUCCESS {
                        assert!(slba + u64::from(nlb) < m.blocks, "zeroes past the end");
                        for lba in slba..=slba + u64::from(nlb) {
                            m.set(lba, None);
                        }
                    } else if status != abi::STATUS_LBA_OUT_OF_RANGE {
                        m.forget(slba, u64::from(nlb) + 1);
                    }
                }
            }
            Cmd::Deallocate {
                ns,
                ref ranges,
                layout,
            } => {
                let (i, nsid) = card.pick(ns);
                let blocks = i.map_or(1 << 20, |i| card.models[i].blocks);
                let ranges: Vec<(u64, u32)> = ranges
                    .iter()
                    .take(256)
                    .map(|&(s, n)| (u64::from(s) % (blocks + 8), u32::from(n)))
                    .collect();
                if ranges.is_empty() {
                    continue;
                }
                let bytes: Vec<u8> = ranges
                    .iter()
                    .flat_map(|&(slba, n)| {
                        let mut r = 0u32.to_le_bytes().to_vec();
                        r.extend_from_slice(&n.to_le_bytes());
                        r.extend_from_slice(&slba.to_le_bytes());
                        r
                    })
                    .collect();
                let (p1, p2, mut follow) = prps(&card.mem, layout, bytes.len() as u64, list_slot);
                if follow {
                    if let Ok(segs) = fuzz::prp_segments(&card.mem, p1, p2, bytes.len()) {
                        // Pages used twice: the card reads other ranges.
                        follow = !overlapping(&segs);
                        let mut off = 0;
                        for (addr, l) in segs {
                            let _ = card.mem.write(addr, &bytes[off..off + l]);
                            off += l;
                        }
                    }
                }
                let sqe = SubmissionEntry {
                    opcode: abi::IO_DATASET_MANAGEMENT,
                    nsid,
                    prp1: p1,
                    prp2: p2,
                    cdw10: abi::DsmRanges {
                        ranges: ranges.len() as u32,
                    }
                    .cdw10(),
                    cdw11: abi::DsmAttributes { deallocate: true }.cdw11(),
                    ..Default::default()
                };
                let status = card.run(&sqe);
                if let Some(i) = i {
                    let m = &mut card.models[i];
                    // Overlapping list pages may have changed the ranges.
                    if !follow {
                        m.tainted |= status == abi::STATUS_SUCCESS;
                    } else if status == abi::STATUS_SUCCESS {
                        for &(slba, n) in &ranges {
                            assert!(slba + u64::from(n) <= m.blocks, "deallocate past the end");
                            for lba in slba..slba + u64::from(n) {
                                m.set(lba, None);
                            }
                        }
                    } else if status != abi::STATUS_LBA_OUT_OF_RANGE {
                        for &(slba, n) in &ranges {
                            m.forget(slba, u64::from(n));
                        }
                    }
                }
            }
            Cmd::Attach { ns, attach } => {
                let (Some(_), nsid) = card.pick(ns) else {
                    continue;
                };
                // A namespace change commits: everything is flushed.
                if card.pool().set_attached(nsid, attach).is_ok() {
                    card.flushed();
                }
            }
            Cmd::Crash => {
                card.pool = None;
                card.pool = Some(card.dir.reopen_pool());
                for m in &mut card.models {
                    m.crash();
                }
            }
            Cmd::Raw {
                opcode,
                nsid,
                flags,
                cdw10,
                cdw11,
                cdw12,
                prp1,
                prp2,
            } => {
                let sqe = SubmissionEntry {
                    opcode,
                    flags,
                    nsid,
                    cdw10,
                    cdw11,
                    cdw12,
                    prp1,
                    prp2,
                    ..Default::default()
                };
                let status = card.run(&sqe);
                if status != abi::STATUS_SUCCESS {
                    continue;
                }
                if opcode == abi::IO_FLUSH {
                    card.flushed();
                }
                let write_like = [
                    abi::IO_WRITE,
                    abi::IO_WRITE_ZEROES,
                    abi::IO_DATASET_MANAGEMENT,
                ];
                if let Some(m) = card.models.iter_mut().find(|m| m.nsid == nsid) {
                    if write_like.contains(&opcode) {
                        let slba = u64::from(cdw10) | u64::from(cdw11) << 32;
                        if opcode == abi::IO_DATASET_MANAGEMENT {
                            m.tainted = true;
                        } else {
                            m.forget(slba, u64::from(cdw12 & 0xffff) + 1);
                        }
                        if opcode == abi::IO_WRITE && cdw12 & abi::RW_FUA != 0 {
                            for m in &mut card.models {
                                m.dirty.clear();
                            }
                        }
                    }
                }
            }
        }
    }
});
