//! The card's NVMe/TCP target (`fabric`): its PDU parser on raw bytes, and
//! its connection state machine driven by a host that opens and closes
//! connections, negotiates digests, connects to the discovery subsystem or
//! a volume's, enables controllers, sends commands with in-capsule or R2T
//! data and answers R2Ts with H2CData, any of it corrupted or cut short.
//!
//! The first input byte picks the mode: 0, the rest is a raw byte stream on
//! one connection (the seeds in corpus/fabric_pdu are real PDU sequences);
//! anything else, the rest is a structured sequence of host steps.
//!
//! What must hold whatever the host sends: no panic; everything the target
//! sends is a well-formed controller PDU (header, lengths, digests); every
//! response answers a command id the host used on that connection; an R2T
//! never asks for more than MDTS; a write that completed successfully over
//! the fabric reads back the same over the fabric; and once every
//! connection is closed no controller is left behind.

#![no_main]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use dia_abi::card as abi;
use dia_card_model::fabric_fuzz::{self as fabric, Capsule, Data, Digests, IcReq, Pdu, Target};
use dia_card_model::fuzz::ScratchDir;
use libfuzzer_sys::fuzz_target;

mod shared;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Sgl {
    /// In-capsule data of this many bytes (at this offset).
    InCapsule { len: u16, offset: u8 },
    /// Data through R2T/H2CData (or C2HData), this many bytes.
    Transport { len: u32 },
    /// A descriptor of any type.
    Raw { id: u8, len: u32 },
}

#[derive(Arbitrary, Debug)]
enum Step {
    Open,
    Close {
        conn: u8,
    },
    /// Raw bytes on a connection.
    Raw {
        conn: u8,
        bytes: Vec<u8>,
    },
    Ic {
        conn: u8,
        digests: u8,
        pfv: u16,
        hpda: u8,
    },
    Connect {
        conn: u8,
        qid: u8,
        /// Join the controller of this connection (else: a new one).
        join: Option<u8>,
        /// 0: discovery, 1..: a namespace, 255: a name nobody exports.
        subsystem: u8,
        sqsize: u16,
        kato: u16,
    },
    Enable {
        conn: u8,
        cc: Option<u32>,
    },
    Cmd {
        conn: u8,
        opcode: u8,
        flags: u8,
        nsid: u32,
        cdw10: u32,
        cdw11: u32,
        cdw12: u32,
        sgl: Sgl,
        fill: u8,
    },
    /// A write of `blocks` 4 KiB blocks at `slba` of namespace 1.
    Write {
        conn: u8,
        slba: u8,
        blocks: u8,
        in_capsule: bool,
        fill: u8,
    },
    Read {
        conn: u8,
        slba: u8,
        blocks: u8,
    },
    /// H2CData for an outstanding R2T (or a made-up one).
    H2c {
        conn: u8,
        r2t: u8,
        skew: i8,
        len: u16,
        last: Option<bool>,
        fill: u8,
    },
    /// The next PDU sent has a byte flipped and may be cut short.
    Corrupt {
        at: u16,
        xor: u8,
        cut: Option<u16>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    steps: Vec<Step>,
}

#[derive(Default)]
struct HostConn {
    /// Command ids sent, with what a Read expects back (slba, blocks).
    cids: HashSet<u16>,
    reads: HashMap<u16, (u64, u64)>,
    /// Writes by command id: (slba, data), recorded on success.
    writes: HashMap<u16, (u64, Vec<u8>)>,
    /// Outstanding R2Ts: (cid, ttag, length, sent so far, data).
    r2ts: Vec<(u16, u16, u32, u32)>,
    cntlid: Option<u16>,
    /// Connect commands sent: command id -> the card namespace asked for
    /// (0: none).
    connects: HashMap<u16, u32>,
    /// The card namespace this connection's controller serves, once
    /// connected.
    volume: Option<u32>,
    next_cid: u16,
}

struct Host {
    target: Target,
    conns: HashMap<usize, HostConn>,
    order: Vec<usize>,
    corrupt: Option<(u16, u8, Option<u16>)>,
    /// What namespace 1 holds where the model knows (4 KiB blocks).
    blocks: HashMap<u64, Vec<u8>>,
    /// Blocks whose content the model lost (an unchecked write).
    unknown: HashSet<u64>,
}

const BLOCK: usize = 4096;

fn sqe(opcode: u8, cid: u16) -> [u8; 64] {
    let mut s = [0u8; 64];
    s[0] = opcode;
    s[1] = 1 << 6;
    s[2..4].copy_from_slice(&cid.to_le_bytes());
    s
}

fn set_sgl(s: &mut [u8; 64], id: u8, addr: u64, len: u32) {
    s[24..32].copy_from_slice(&addr.to_le_bytes());
    s[32..36].copy_from_slice(&len.to_le_bytes());
    s[39] = id;
}

impl Host {
    fn conn(&self, i: u8) -> Option<usize> {
        let open = self.target.open();
        (!open.is_empty()).then(|| open[usize::from(i) % open.len()])
    }

    fn cid(&mut self, c: usize) -> u16 {
        let h = self.conns.entry(c).or_default();
        h.next_cid = h.next_cid.wrapping_add(1);
        h.cids.insert(h.next_cid);
        h.next_cid
    }

    /// Sends `p` on connection `c` (corrupted if asked) and checks the answer.
    fn send(&mut self, c: usize, p: &Pdu) {
        let mut bytes = fabric::encode(p, self.target.digests(c));
        let mut pristine = true;
        if let Some((at, xor, cut)) = self.corrupt.take() {
            if !bytes.is_empty() {
                let i = usize::from(at) % bytes.len();
                bytes[i] ^= xor;
                pristine = xor == 0;
            }
            if let Some(n) = cut {
                bytes.truncate(usize::from(n) % (bytes.len() + 1));
                pristine = false;
            }
        }
        if !pristine {
            // The model stops trusting namespace 1 for this write.
            if let Pdu::Cmd(cap) = p {
                if cap.sqe[0] == abi::IO_WRITE {
                    let cid = u16::from_le_bytes([cap.sqe[2], cap.sqe[3]]);
                    if let Some(h) = self.conns.get_mut(&c) {
                        h.writes.remove(&cid);
                    }
                    let slba = u64::from_le_bytes(cap.sqe[40..48].try_into().unwrap());
                    let n = u64::from(u16::from_le_bytes([cap.sqe[48], cap.sqe[49]])) + 1;
                    for b in slba.min(4096)..slba.saturating_add(n).min(4096) {
                        self.blocks.remove(&b);
                        self.unknown.insert(b);
                    }
                }
            }
            if let Pdu::H2cData(d) = p {
                self.forget_transfer(c, d.ttag);
            }
        }
        self.deliver(c, &bytes);
    }

    fn forget_transfer(&mut self, c: usize, ttag: u16) {
        let Some(h) = self.conns.get_mut(&c) else {
            return;
        };
        if let Some(&(cid, ..)) = h.r2ts.iter().find(|r| r.1 == ttag) {
            if let Some((slba, data)) = h.writes.remove(&cid) {
                for b in 0..(data.len() / BLOCK) as u64 {
                    self.blocks.remove(&(slba + b));
                    self.unknown.insert(slba + b);
                }
            }
        }
    }

    fn deliver(&mut self, c: usize, bytes: &[u8]) {
        let (out, stop, digests) = self.target.feed(c, bytes);
        let pdus = fabric::host_decode(&out, digests);
        let h = self.conns.entry(c).or_default();
        for p in pdus {
            match p {
                Pdu::Resp(r) => {
                    assert!(
                        h.cids.contains(&r.cid),
                        "a response for command id {} never sent",
                        r.cid
                    );
                    h.r2ts.retain(|x| x.0 != r.cid);
                    if let Some((slba, data)) = h.writes.remove(&r.cid) {
                        for (k, b) in data.chunks(BLOCK).enumerate() {
                            let lba = slba + k as u64;
                            if r.status == 0 {
                                self.unknown.remove(&lba);
                                self.blocks.insert(lba, b.to_vec());
                            } else {
                                self.blocks.remove(&lba);
                                self.unknown.insert(lba);
                            }
                        }
                    }
                    if let Some(nsid) = h.connects.remove(&r.cid) {
                        if r.status == 0 {
                            h.cntlid = Some(r.result as u16);
                            h.volume = Some(nsid);
                        }
                    }
                }
                Pdu::R2t(r) => {
                    assert!(r.length <= fabric::MDTS_BYTES, "R2T beyond MDTS");
                    assert!(h.cids.contains(&r.cid), "R2T for an unknown command");
                    h.r2ts.push((r.cid, r.ttag, r.length, 0));
                }
                Pdu::C2hData(d) => {
                    assert!(h.cids.contains(&d.cid), "data for an unknown command");
                    if let Some(&(slba, n)) = h.reads.get(&d.cid) {
                        assert!(d.offset as u64 + d.data.len() as u64 <= n * BLOCK as u64);
                        for (k, got) in d.data.chunks(BLOCK).enumerate() {
                            let lba = slba + u64::from(d.offset) / BLOCK as u64 + k as u64;
                            if self.unknown.contains(&lba) {
                                continue;
                            }
                            match self.blocks.get(&lba) {
                                Some(want) => assert_eq!(got, &want[..got.len()], "block {lba}"),
                                None => assert!(got.iter().all(|&x| x == 0), "block {lba}"),
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if stop.is_some() {
            self.drop_conn(c);
        }
    }

    fn drop_conn(&mut self, c: usize) {
        if let Some(h) = self.conns.remove(&c) {
            // Writes that never completed may or may not have happened.
            for (slba, data) in h.writes.into_values() {
                for b in 0..(data.len() / BLOCK) as u64 {
                    self.blocks.remove(&(slba + b));
                    self.unknown.insert(slba + b);
                }
            }
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    match bytes.split_first() {
        // Raw mode: the rest is one host's byte stream (the seeds are real
        // PDU sequences: ICReq, Connect, Property Get/Set, Identify, ...).
        Some((0, stream)) => raw(stream),
        Some((_, rest)) => {
            if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) {
                structured(&input);
            }
        }
        None => {}
    }
});

/// A target with namespace 1 (4096 blocks of 4 KiB) and 2 (1000 of 512 B).
fn target(dir: &ScratchDir) -> Target {
    let pool = dir.pool(64 << 20);
    for (blocks, shift, label) in [(4096, 12, b'a'), (1000, 9, b'b')] {
        shared::attached_namespace(&pool, blocks, shift, [label; abi::LABEL_LEN])
            .expect("a namespace");
    }
    Target::new(Some(Arc::new(pool)), "DIA-FUZZ")
}

fn raw(stream: &[u8]) {
    let dir = ScratchDir::new();
    let mut t = target(&dir);
    let c = t.connect();
    let (out, _, digests) = t.feed(c, stream);
    fabric::host_decode(&out, digests);
    t.close(c);
    assert_eq!(t.controllers(), 0, "a controller outlived its connection");
}

fn structured(input: &Input) {
    let dir = ScratchDir::new();
    let mut host = Host {
        target: target(&dir),
        conns: HashMap::new(),
        order: Vec::new(),
        corrupt: None,
        blocks: HashMap::new(),
        unknown: HashSet::new(),
    };
    for step in input.steps.iter().take(64) {
        match *step {
            Step::Open => {
                if host.target.open().len() < 6 {
                    let c = host.target.connect();
                    host.order.push(c);
                }
            }
            Step::Close { conn } => {
                if let Some(c) = host.conn(conn) {
                    host.target.close(c);
                    host.drop_conn(c);
                }
            }
            Step::Raw { conn, ref bytes } => {
                if let Some(c) = host.conn(conn) {
                    host.deliver(c, bytes);
                }
            }
            Step::Ic {
                conn,
                digests,
                pfv,
                hpda,
            } => {
                if let Some(c) = host.conn(conn) {
                    let pfv = if pfv < 0xf000 { 0 } else { pfv };
                    let ic = IcReq {
                        pfv,
                        hpda: hpda % 40,
                        digests: Digests::from_bits(digests & 3),
                        maxr2t: 0,
                    };
                    host.send(c, &Pdu::IcReq(ic));
                }
            }
            Step::Connect {
                conn,
                qid,
                join,
                subsystem,
                sqsize,
                kato,
            } => {
                let Some(c) = host.conn(conn) else { continue };
                let cntlid = match join.and_then(|j| host.conn(j)) {
                    Some(o) => host.conns.get(&o).and_then(|h| h.cntlid).unwrap_or(0xffff),
                    None => 0xffff,
                };
                let (subnqn, nsid) = match subsystem {
                    0 => ("nqn.2014-08.org.nvmexpress.discovery".to_string(), 0),
                    255 => ("nqn.2026-12.io.dia:DIA-FUZZ:ns99".to_string(), 0),
                    n => {
                        let nsid = u32::from(n % 3);
                        (host.target.volume_nqn(nsid), nsid)
                    }
                };
                let cid = host.cid(c);
                host.conns.entry(c).or_default().connects.insert(cid, nsid);
                let mut s = sqe(0x7f, cid);
                s[1] = 0;
                s[4] = 0x01;
                s[42..44].copy_from_slice(&u16::from(qid % 10).to_le_bytes());
                s[44..46].copy_from_slice(&(sqsize % 200).to_le_bytes());
                s[48..52].copy_from_slice(&u32::from(kato).to_le_bytes());
                let mut data = vec![0u8; 1024];
                data[16..18].copy_from_slice(&cntlid.to_le_bytes());
                data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
                data[512..522].copy_from_slice(b"nqn.fuzzer");
                set_sgl(&mut s, 0x01, 0, 1024);
                host.send(
                    c,
                    &Pdu::Cmd(Capsule {
                        sqe: s,
                        data,
                        data_ok: true,
                    }),
                );
            }
            Step::Enable { conn, cc } => {
                let Some(c) = host.conn(conn) else { continue };
                let cid = host.cid(c);
                let mut s = sqe(0x7f, cid);
                s[1] = 0;
                s[4] = 0x00;
                s[44..48].copy_from_slice(&0x14u32.to_le_bytes());
                let v = cc.unwrap_or(6 << 16 | 4 << 20 | 1);
                s[48..52].copy_from_slice(&v.to_le_bytes());
                host.send(
                    c,
                    &Pdu::Cmd(Capsule {
                        sqe: s,
                        data: Vec::new(),
                        data_ok: true,
                    }),
                );
            }
            Step::Cmd {
                conn,
                opcode,
                flags,
                nsid,
                cdw10,
                cdw11,
                cdw12,
                sgl,
                fill,
            } => {
                let Some(c) = host.conn(conn) else { continue };
                let cid = host.cid(c);
                let mut s = sqe(opcode, cid);
                s[1] = flags;
                s[4..8].copy_from_slice(&nsid.to_le_bytes());
                s[40..44].copy_from_slice(&cdw10.to_le_bytes());
                s[44..48].copy_from_slice(&cdw11.to_le_bytes());
                s[48..52].copy_from_slice(&cdw12.to_le_bytes());
                let mut data = Vec::new();
                match sgl {
                    Sgl::InCapsule { len, offset } => {
                        let len = usize::from(len) % (fabric::IN_CAPSULE_BYTES + 16);
                        data = vec![fill; len];
                        set_sgl(&mut s, 0x01, u64::from(offset % 8), len as u32);
                    }
                    Sgl::Transport { len } => set_sgl(&mut s, 0x5a, 0, len % (1 << 20)),
                    Sgl::Raw { id, len } => set_sgl(&mut s, id, 0, len),
                }
                // A raw command may write namespace 1 (or 2) anywhere.
                if [
                    abi::IO_WRITE,
                    abi::IO_WRITE_ZEROES,
                    abi::IO_DATASET_MANAGEMENT,
                ]
                .contains(&opcode)
                {
                    host.blocks.clear();
                    host.unknown.extend(0..4096);
                }
                host.send(
                    c,
                    &Pdu::Cmd(Capsule {
                        sqe: s,
                        data,
                        data_ok: true,
                    }),
                );
            }
            Step::Write {
                conn,
                slba,
                blocks,
                in_capsule,
                fill,
            } => {
                let Some(c) = host.conn(conn) else { continue };
                let cid = host.cid(c);
                let n = usize::from(blocks % 4) + 1;
                let n = if in_capsule { n.min(2) } else { n };
                let slba = u64::from(slba) * 16;
                let data: Vec<u8> = (0..n * BLOCK)
                    .map(|i| (i as u8).wrapping_mul(7) ^ fill ^ (i >> 12) as u8)
                    .collect();
                let mut s = sqe(abi::IO_WRITE, cid);
                s[4..8].copy_from_slice(&1u32.to_le_bytes());
                s[40..48].copy_from_slice(&slba.to_le_bytes());
                s[48..52].copy_from_slice(&(n as u32 - 1).to_le_bytes());
                let id = if in_capsule { 0x01 } else { 0x5a };
                set_sgl(&mut s, id, 0, (n * BLOCK) as u32);
                // The model follows namespace 1, where the data lands when
                // the write completes (the target runs it then).
                let h = host.conns.entry(c).or_default();
                if h.volume == Some(1) {
                    h.writes.insert(cid, (slba, data.clone()));
                } else {
                    host.blocks.clear();
                    host.unknown.extend(0..4096);
                }
                host.send(
                    c,
                    &Pdu::Cmd(Capsule {
                        sqe: s,
                        data: if in_capsule { data } else { Vec::new() },
                        data_ok: true,
                    }),
                );
            }
            Step::Read { conn, slba, blocks } => {
                let Some(c) = host.conn(conn) else { continue };
                let cid = host.cid(c);
                let n = u64::from(blocks % 8) + 1;
                let slba = u64::from(slba) * 16;
                let mut s = sqe(abi::IO_READ, cid);
                s[4..8].copy_from_slice(&1u32.to_le_bytes());
                s[40..48].copy_from_slice(&slba.to_le_bytes());
                s[48..52].copy_from_slice(&(n as u32 - 1).to_le_bytes());
                set_sgl(&mut s, 0x5a, 0, (n as usize * BLOCK) as u32);
                let h = host.conns.entry(c).or_default();
                if h.volume == Some(1) {
                    h.reads.insert(cid, (slba, n));
                }
                host.send(
                    c,
                    &Pdu::Cmd(Capsule {
                        sqe: s,
                        data: Vec::new(),
                        data_ok: true,
                    }),
                );
            }
            Step::H2c {
                conn,
                r2t,
                skew,
                len,
                last,
                fill,
            } => {
                let Some(c) = host.conn(conn) else { continue };
                let h = host.conns.entry(c).or_default();
                let (cid, ttag, length, sent) = if h.r2ts.is_empty() {
                    (1, u16::from(r2t), 4096, 0)
                } else {
                    let i = usize::from(r2t) % h.r2ts.len();
                    h.r2ts[i]
                };
                let left = length.saturating_sub(sent);
                let n = if len == 0 {
                    left.min(fabric::MAXH2CDATA)
                } else {
                    u32::from(len)
                };
                let offset = sent.wrapping_add_signed(i32::from(skew / 64));
                // The data the write recorded, where the offset lies in it.
                let (data, faithful) = match h.writes.get(&cid) {
                    Some((_, w))
                        if skew / 64 == 0
                            && (u64::from(offset) + u64::from(n)) as usize <= w.len() =>
                    {
                        (w[offset as usize..(offset + n) as usize].to_vec(), true)
                    }
                    _ => (vec![fill; n as usize], false),
                };
                if !faithful {
                    // Off-model data: the write's blocks become unknown.
                    host.forget_transfer(c, ttag);
                }
                let h = host.conns.entry(c).or_default();
                if let Some(x) = h.r2ts.iter_mut().find(|x| x.1 == ttag) {
                    x.3 = x.3.saturating_add(n);
                }
                let d = Data {
                    cid,
                    ttag,
                    offset,
                    last: last.unwrap_or(sent.saturating_add(n) >= length),
                    success: false,
                    data,
                    data_ok: true,
                };
                host.send(c, &Pdu::H2cData(d));
            }
            Step::Corrupt { at, xor, cut } => host.corrupt = Some((at, xor, cut)),
        }
    }
    for c in host.order.clone() {
        host.target.close(c);
    }
    assert_eq!(
        host.target.controllers(),
        0,
        "a controller outlived its connections"
    );
}
