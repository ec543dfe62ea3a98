//! The target driven by a small NVMe/TCP host written here from the spec:
//! discovery, Connect, enable, Identify, I/O with in-capsule data and with
//! R2T/H2CData, digests, and the malformed input that must end in a status
//! or a C2HTermReq. The same data path as the card's local queues: bytes
//! written over the fabric are read back through the pool directly.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dia_abi::card as abi;

use super::command::{opcode, sgl_id, status};
use super::controller::{Shared, TargetConfig, DISCOVERY_NQN};
use super::pdu::{
    self, fes, Capsule, Completion, Data, Digests, Header, IcReq, Limits, Pdu, HEADER_BYTES,
};
use super::queue::{feed, Connection, Stop};
use crate::guest_memory::{GuestMemory, SharedMemory};
use crate::pool::{Direction, Pool, PoolSpec};

/// A scratch directory removed when dropped (also the initiator's tests).
pub(super) struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pool with one attached 4 KiB-block namespace of 64 MiB (id 1) and
/// one detached one (id 2). Also the initiator's tests' target pool.
pub(super) fn pool(name: &str) -> (Scratch, Arc<Pool>) {
    let dir = std::env::temp_dir().join(format!("dia-fabric-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = Pool::open(&PoolSpec {
        paths: vec![dir.join("pool.img")],
        create_bytes: Some(256 << 20),
    })
    .unwrap();
    let a = pool
        .create_namespace(16384, 12, [b'a'; abi::LABEL_LEN])
        .unwrap();
    pool.set_attached(a, true).unwrap();
    pool.create_namespace(100, 9, [b'b'; abi::LABEL_LEN])
        .unwrap();
    (Scratch(dir), Arc::new(pool))
}

fn shared(pool: Option<Arc<Pool>>) -> Arc<Shared> {
    Arc::new(Shared::new(
        TargetConfig {
            listen: "127.0.0.1:4420".parse().unwrap(),
            serial: "DIA-T".into(),
            advertise: None,
            max_connections: 8,
        },
        Arc::new(move || pool.clone()),
    ))
}

/// Splits what the target sent into PDUs, checking each.
fn parse_out(mut out: &[u8], d: Digests) -> Vec<Pdu> {
    let limits = Limits {
        capsule_data: 0,
        data_pdu: usize::MAX,
    };
    let mut v = Vec::new();
    while !out.is_empty() {
        let h = Header::parse(out.first_chunk::<HEADER_BYTES>().unwrap());
        let dg = match h.kind {
            pdu::kind::IC_RESP | pdu::kind::C2H_TERM => None,
            _ => Some(d),
        };
        let l = pdu::check(&h, dg, limits).unwrap();
        v.push(pdu::decode(&out[..l.plen], dg, limits).unwrap());
        out = &out[l.plen..];
    }
    v
}

struct Host {
    conn: Connection,
    d: Digests,
    cid: u16,
}

/// A command's outcome as the host sees it.
#[derive(Debug)]
struct Done {
    cqe: Completion,
    data: Vec<u8>,
}

impl Host {
    fn new(shared: &Arc<Shared>, d: Digests) -> Self {
        let mut conn = Connection::new(shared.clone(), None);
        let mut out = Vec::new();
        let ic = pdu::encode(
            &Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 0,
                digests: d,
                maxr2t: 0,
            }),
            Digests::default(),
        );
        assert_eq!(feed(&mut conn, &ic, &mut out), None);
        match &parse_out(&out, d)[..] {
            [Pdu::IcResp(r)] => {
                assert_eq!(r.digests, d);
                assert_eq!(r.cpda, 0);
            }
            other => panic!("{other:?}"),
        }
        Self { conn, d, cid: 0 }
    }

    fn send(&mut self, p: &Pdu) -> (Vec<Pdu>, Option<Stop>) {
        let mut out = Vec::new();
        let stop = feed(&mut self.conn, &pdu::encode(p, self.d), &mut out);
        (parse_out(&out, self.d), stop)
    }

    /// Runs a command: `data` goes in the capsule if `in_capsule`, else
    /// through R2T; `c2h` bytes are expected back.
    fn run(&mut self, mut sqe: [u8; 64], data: &[u8], in_capsule: bool, c2h: u32) -> Done {
        self.cid = self.cid.wrapping_add(1);
        sqe[2..4].copy_from_slice(&self.cid.to_le_bytes());
        if sqe[0] != opcode::FABRICS {
            sqe[1] = 1 << 6;
        }
        let (len, id) = if !data.is_empty() {
            let id = if in_capsule {
                sgl_id::IN_CAPSULE
            } else {
                sgl_id::TRANSPORT
            };
            (data.len() as u32, id)
        } else {
            (c2h, sgl_id::TRANSPORT)
        };
        sqe[32..36].copy_from_slice(&len.to_le_bytes());
        sqe[39] = id;
        let capsule = Capsule {
            sqe,
            data: if in_capsule {
                data.to_vec()
            } else {
                Vec::new()
            },
            data_ok: true,
        };
        let (mut pdus, stop) = self.send(&Pdu::Cmd(capsule));
        assert_eq!(stop, None);
        if let [Pdu::R2t(r)] = pdus[..] {
            assert_eq!(r.length as usize, data.len());
            let mut sent = 0;
            pdus = Vec::new();
            for chunk in data.chunks(super::MAXH2CDATA as usize) {
                let (p, stop) = self.send(&Pdu::H2cData(Data {
                    cid: r.cid,
                    ttag: r.ttag,
                    offset: sent as u32,
                    last: sent + chunk.len() == data.len(),
                    success: false,
                    data: chunk.to_vec(),
                    data_ok: true,
                }));
                assert_eq!(stop, None);
                sent += chunk.len();
                pdus.extend(p);
            }
        }
        let mut got = Vec::new();
        let mut cqe = None;
        for p in pdus {
            match p {
                Pdu::C2hData(d) => {
                    assert_eq!(d.cid, self.cid);
                    assert_eq!(d.offset as usize, got.len());
                    got.extend(d.data);
                }
                Pdu::Resp(c) => cqe = Some(c),
                other => panic!("unexpected {other:?}"),
            }
        }
        let cqe = cqe.expect("a response capsule");
        assert_eq!(cqe.cid, self.cid);
        Done { cqe, data: got }
    }

    fn connect(&mut self, qid: u16, cntlid: u16, subnqn: &str) -> Done {
        let mut sqe = [0u8; 64];
        sqe[0] = opcode::FABRICS;
        sqe[4] = 0x01;
        sqe[42..44].copy_from_slice(&qid.to_le_bytes());
        sqe[44..46].copy_from_slice(&31u16.to_le_bytes());
        sqe[48..52].copy_from_slice(&5000u32.to_le_bytes());
        let mut data = vec![0u8; 1024];
        data[16..18].copy_from_slice(&cntlid.to_le_bytes());
        data[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        data[512..520].copy_from_slice(b"nqn.host");
        self.run(sqe, &data, true, 0)
    }

    fn property(&mut self, fct: u8, offset: u32, eight: bool, value: u64) -> Done {
        let mut sqe = [0u8; 64];
        sqe[0] = opcode::FABRICS;
        sqe[4] = fct;
        sqe[40] = u8::from(eight);
        sqe[44..48].copy_from_slice(&offset.to_le_bytes());
        sqe[48..56].copy_from_slice(&value.to_le_bytes());
        self.run(sqe, &[], true, 0)
    }

    fn enable(&mut self) {
        let cap = self.property(0x04, 0, true, 0);
        assert_eq!(cap.cqe.status, 0);
        assert_eq!(cap.cqe.result & 0xffff, 127);
        let cc = 6 << 16 | 4 << 20 | 1;
        assert_eq!(self.property(0x00, 0x14, false, cc).cqe.status, 0);
        assert_eq!(self.property(0x04, 0x1c, false, 0).cqe.result & 1, 1);
    }

    fn admin(&mut self, op: u8, nsid: u32, cdw10: u32, cdw11: u32, c2h: u32) -> Done {
        let mut sqe = [0u8; 64];
        sqe[0] = op;
        sqe[4..8].copy_from_slice(&nsid.to_le_bytes());
        sqe[40..44].copy_from_slice(&cdw10.to_le_bytes());
        sqe[44..48].copy_from_slice(&cdw11.to_le_bytes());
        self.run(sqe, &[], true, c2h)
    }

    fn rw(&mut self, op: u8, slba: u64, blocks: u32, data: &[u8], in_capsule: bool) -> Done {
        let mut sqe = [0u8; 64];
        sqe[0] = op;
        sqe[4..8].copy_from_slice(&1u32.to_le_bytes());
        sqe[40..48].copy_from_slice(&slba.to_le_bytes());
        sqe[48..52].copy_from_slice(&(blocks - 1).to_le_bytes());
        let c2h = if op == opcode::READ { blocks * 4096 } else { 0 };
        self.run(sqe, data, in_capsule, c2h)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed ^ (i >> 12) as u8)
        .collect()
}

fn read_local(pool: &Pool, nsid: u32, slba: u64, len: usize) -> Vec<u8> {
    let m = GuestMemory::new(SharedMemory::anonymous("fabric-test", len).unwrap());
    pool.transfer(
        Direction::Read,
        nsid,
        slba,
        len as u64 / 4096,
        &m,
        &[(0, len)],
    )
    .unwrap();
    let mut b = vec![0u8; len];
    m.read(0, &mut b).unwrap();
    b
}

#[test]
fn discovery_lists_attached_namespaces() {
    let (_d, pool) = pool("discovery");
    let s = shared(Some(pool.clone()));
    let mut h = Host::new(&s, Digests::default());
    let c = h.connect(0, 0xffff, DISCOVERY_NQN);
    assert_eq!(c.cqe.status, 0);
    h.enable();
    let id = h.admin(opcode::IDENTIFY, 0, 1, 0, 4096);
    assert_eq!(id.data.len(), 4096);
    assert_eq!(id.data[111], 2, "a discovery controller");
    // The header first, then the whole page, as nvme-cli reads it.
    let head = h.admin(opcode::GET_LOG_PAGE, 0, 0x70 | 255 << 16, 0, 1024);
    assert_eq!(u64::from_le_bytes(head.data[8..16].try_into().unwrap()), 2);
    let all = h.admin(opcode::GET_LOG_PAGE, 0, 0x70 | 767 << 16, 0, 3072);
    let nqn = &all.data[1024 + 256..1024 + 256 + 28];
    assert_eq!(nqn, b"nqn.2026-12.io.dia:DIA-T:ns1");
    assert_eq!(all.data[2048 + 2], 3, "the discovery subsystem itself");
    // A namespace detached locally leaves the log.
    pool.set_attached(1, false).unwrap();
    let head = h.admin(opcode::GET_LOG_PAGE, 0, 0x70 | 255 << 16, 0, 1024);
    assert_eq!(u64::from_le_bytes(head.data[8..16].try_into().unwrap()), 1);
    // No I/O queues and no namespaces on a discovery controller.
    assert_ne!(h.admin(opcode::IDENTIFY, 1, 0, 0, 4096).cqe.status, 0);
    let mut io = Host::new(&s, Digests::default());
    let cntlid = c.cqe.result as u16;
    assert_eq!(io.connect(1, cntlid, DISCOVERY_NQN).cqe.status & 0xff, 0x82);
}

fn io_session(digests: Digests, name: &str) {
    let (_d, pool) = pool(name);
    let s = shared(Some(pool.clone()));
    let nqn = s.volume_nqn(1);
    let mut admin = Host::new(&s, digests);
    let c = admin.connect(0, 0xffff, &nqn);
    assert_eq!(c.cqe.status, 0);
    let cntlid = c.cqe.result as u16;
    admin.enable();
    let id = admin.admin(opcode::IDENTIFY, 0, 1, 0, 4096);
    assert_eq!(u16::from_le_bytes([id.data[78], id.data[79]]), cntlid);
    assert_eq!(&id.data[768..768 + nqn.len()], nqn.as_bytes());
    let ns = admin.admin(opcode::IDENTIFY, 1, 0, 0, 4096);
    assert_eq!(u64::from_le_bytes(ns.data[..8].try_into().unwrap()), 16384);
    assert_eq!(ns.data[130], 12);
    let list = admin.admin(opcode::IDENTIFY, 0, 2, 0, 4096);
    assert_eq!(&list.data[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let desc = admin.admin(opcode::IDENTIFY, 1, 3, 0, 4096);
    assert_eq!(desc.data[0], 2);
    let q = admin.admin(opcode::SET_FEATURES, 0, 7, 3 << 16 | 3, 0);
    assert_eq!(q.cqe.result, 3 << 16 | 3);
    // A held Asynchronous Event Request gets no answer.
    let mut aer = [0u8; 64];
    aer[0] = opcode::ASYNC_EVENT;
    let (p, stop) = admin.send(&Pdu::Cmd(Capsule {
        sqe: aer,
        data: Vec::new(),
        data_ok: true,
    }));
    assert!(p.is_empty() && stop.is_none());
    assert_eq!(admin.admin(opcode::KEEP_ALIVE, 0, 0, 0, 0).cqe.status, 0);

    let mut io = Host::new(&s, digests);
    assert_eq!(io.connect(1, cntlid, &nqn).cqe.status, 0);
    // In-capsule write (8 KiB), R2T write (256 KiB), reads of both.
    let small = pattern(8192, 1);
    assert_eq!(io.rw(opcode::WRITE, 10, 2, &small, true).cqe.status, 0);
    let big = pattern(256 << 10, 2);
    assert_eq!(io.rw(opcode::WRITE, 100, 64, &big, false).cqe.status, 0);
    assert_eq!(io.rw(opcode::READ, 10, 2, &[], false).data, small);
    assert_eq!(io.rw(opcode::READ, 100, 64, &[], false).data, big);
    // The same bytes through the pool, as the local driver reads them.
    assert_eq!(read_local(&pool, 1, 100, 256 << 10), big);
    let mut flush = [0u8; 64];
    flush[0] = opcode::FLUSH;
    flush[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(io.run(flush, &[], true, 0).cqe.status, 0);
    // Out of range, wrong namespace, SGL length not matching the blocks.
    let st = io.rw(opcode::READ, 16383, 2, &[], false).cqe.status;
    assert_eq!(st & 0xff, 0x80);
    let mut bad_ns = [0u8; 64];
    bad_ns[0] = opcode::READ;
    bad_ns[4] = 2;
    assert_eq!(io.run(bad_ns, &[], false, 4096).cqe.status & 0xff, 0x0b);
    assert_eq!(
        io.rw(opcode::WRITE, 0, 2, &small[..4096], true).cqe.status & 0xff,
        (status::SGL_LENGTH_INVALID & 0xff)
    );
    // Write Zeroes.
    let mut wz = [0u8; 64];
    wz[0] = opcode::WRITE_ZEROES;
    wz[4] = 1;
    wz[40] = 10;
    wz[48] = 1;
    assert_eq!(io.run(wz, &[], true, 0).cqe.status, 0);
    assert!(io
        .rw(opcode::READ, 10, 2, &[], false)
        .data
        .iter()
        .all(|&b| b == 0));
    // Dataset Management as Linux sends it: one range in a whole page.
    let mut dsm = [0u8; 64];
    dsm[0] = opcode::DATASET_MANAGEMENT;
    dsm[4] = 1;
    dsm[44] = 1 << 2;
    let mut ranges = vec![0u8; 4096];
    ranges[4..8].copy_from_slice(&64u32.to_le_bytes());
    ranges[8..16].copy_from_slice(&100u64.to_le_bytes());
    assert_eq!(io.run(dsm, &ranges, true, 0).cqe.status, 0);
    assert!(read_local(&pool, 1, 100, 256 << 10).iter().all(|&b| b == 0));
    // The namespace deleted locally: I/O fails, the queue stays usable.
    pool.set_attached(1, false).unwrap();
    pool.delete_namespace(1).unwrap();
    assert_ne!(io.rw(opcode::READ, 0, 1, &[], false).cqe.status, 0);
    // Closing the admin queue ends the controller; its I/O queue follows.
    assert!(io.conn.alive());
    drop(admin);
    assert!(!io.conn.alive());
}

#[test]
fn io_without_digests() {
    io_session(Digests::default(), "io-plain");
}

#[test]
fn io_with_header_and_data_digests() {
    io_session(
        Digests {
            header: true,
            data: true,
        },
        "io-digests",
    );
}

#[test]
fn protocol_errors_end_in_a_termination() {
    let s = shared(None);
    // A capsule before ICReq.
    let mut conn = Connection::new(s.clone(), None);
    let mut out = Vec::new();
    let cmd = pdu::encode(
        &Pdu::Cmd(Capsule {
            sqe: [0; 64],
            data: Vec::new(),
            data_ok: true,
        }),
        Digests::default(),
    );
    let stop = feed(&mut conn, &cmd, &mut out);
    assert!(matches!(stop, Some(Stop::Fatal(f)) if f.fes == fes::SEQUENCE));
    assert!(
        matches!(&parse_out(&out, Digests::default())[..], [Pdu::C2hTerm(t)] if t.fes == fes::SEQUENCE)
    );
    // Unknown PDU type, bad HLEN, a controller's PDU from the host.
    for bytes in [
        vec![0x0e, 0, 8, 0, 8, 0, 0, 0],
        vec![0x04, 0, 24, 0, 72, 0, 0, 0],
    ] {
        let mut h = Host::new(&s, Digests::default());
        let mut out = Vec::new();
        assert!(matches!(
            feed(&mut h.conn, &bytes, &mut out),
            Some(Stop::Fatal(f)) if f.fes == fes::INVALID_HEADER
        ));
    }
    let mut h = Host::new(&s, Digests::default());
    let (p, stop) = h.send(&Pdu::Resp(Completion::default()));
    assert!(matches!(stop, Some(Stop::Fatal(_))));
    assert!(matches!(&p[..], [Pdu::C2hTerm(_)]));
    // H2CData nobody asked for.
    let mut h = Host::new(&s, Digests::default());
    let (_, stop) = h.send(&Pdu::H2cData(Data {
        cid: 1,
        ttag: 9,
        offset: 0,
        last: true,
        success: false,
        data: vec![0; 16],
        data_ok: true,
    }));
    assert!(matches!(stop, Some(Stop::Fatal(f)) if f.fes == fes::INVALID_HEADER));
    // Commands before Connect get a status, not a crash.
    let mut h = Host::new(&s, Digests::default());
    let st = h.admin(opcode::IDENTIFY, 0, 1, 0, 4096).cqe.status;
    assert_eq!(st & 0xff, status::COMMAND_SEQUENCE & 0xff);
}

#[test]
fn write_data_beyond_the_r2t_is_fatal() {
    let (_d, pool) = pool("r2t");
    let s = shared(Some(pool));
    let nqn = s.volume_nqn(1);
    let mut admin = Host::new(&s, Digests::default());
    let cntlid = admin.connect(0, 0xffff, &nqn).cqe.result as u16;
    admin.enable();
    let mut io = Host::new(&s, Digests::default());
    assert_eq!(io.connect(1, cntlid, &nqn).cqe.status, 0);
    let mut sqe = [0u8; 64];
    sqe[0] = opcode::WRITE;
    sqe[1] = 1 << 6;
    sqe[2] = 77;
    sqe[4] = 1;
    sqe[32..36].copy_from_slice(&4096u32.to_le_bytes());
    sqe[39] = sgl_id::TRANSPORT;
    let (p, _) = io.send(&Pdu::Cmd(Capsule {
        sqe,
        data: Vec::new(),
        data_ok: true,
    }));
    let [Pdu::R2t(r)] = &p[..] else {
        panic!("{p:?}")
    };
    let (p, stop) = io.send(&Pdu::H2cData(Data {
        cid: 77,
        ttag: r.ttag,
        offset: 0,
        last: true,
        success: false,
        data: vec![0; 8192],
        data_ok: true,
    }));
    assert!(matches!(stop, Some(Stop::Fatal(f)) if f.fes == fes::OUT_OF_RANGE));
    assert!(matches!(&p[..], [Pdu::C2hTerm(_)]));
}

#[test]
fn sockets_survive_garbage_and_serve_again() {
    let (_d, pool) = pool("socket");
    let target = super::serve(
        TargetConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            serial: "DIA-T".into(),
            advertise: None,
            max_connections: 4,
        },
        Arc::new(move || Some(pool.clone())),
    )
    .unwrap();
    let mut bad = TcpStream::connect(target.addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = bad.read_to_end(&mut got);
    match &parse_out(&got, Digests::default())[..] {
        [Pdu::C2hTerm(t)] => assert_eq!(t.fes, fes::SEQUENCE),
        other => panic!("{other:?}"),
    }
    // A truncated ICReq and a hang-up, then a real ICReq is still answered.
    let mut cut = TcpStream::connect(target.addr).unwrap();
    cut.write_all(&[0, 0, 128, 0, 128, 0, 0, 0, 0]).unwrap();
    drop(cut);
    let mut ok = TcpStream::connect(target.addr).unwrap();
    ok.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ic = pdu::encode(
        &Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digests: Digests::default(),
            maxr2t: 0,
        }),
        Digests::default(),
    );
    ok.write_all(&ic).unwrap();
    let mut resp = [0u8; 128];
    ok.read_exact(&mut resp).unwrap();
    assert_eq!(resp[0], pdu::kind::IC_RESP);
    assert_eq!(
        u32::from_le_bytes(resp[12..16].try_into().unwrap()),
        super::MAXH2CDATA
    );
}
