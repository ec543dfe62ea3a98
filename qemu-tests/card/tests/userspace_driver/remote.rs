//! Remote namespaces: one card (A) exports a namespace with its NVMe/TCP
//! target on 127.0.0.1, behind a TCP proxy the tests can cut; another
//! card (B) makes a remote namespace of it (Create Remote Namespace) and
//! serves it to its own driver like a local one. What B's driver writes is
//! read back through A's own I/O queues byte for byte and the other way;
//! Flush, FUA, Write Zeroes, deallocate, QoS, counters, a target that goes
//! away and comes back, an exporting card whose firmware is down, a
//! firmware restart of B, and every way Create Remote Namespace refuses.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dia_abi::card::{self as abi, SubmissionEntry};
use dia_card_model::{serve_fabric, FabricConfig, Pool};

use crate::driver::*;
use crate::io::*;

/// The exporting card's target serial (in its subsystems' NQNs).
const TARGET_SERIAL: &str = "DIA-A";
/// A's namespace B uses: 4096 blocks of 4 KiB.
const BLOCKS: u64 = 4096;

fn volume_nqn(nsid: u32) -> String {
    format!("nqn.2026-12.io.dia:{TARGET_SERIAL}:ns{nsid}")
}

/// A TCP proxy in front of a target: the network between the cards, which
/// `cut` takes down (listener closed, every connection shut) and
/// `restore` brings back on the same port.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    upstream: SocketAddr,
    /// Set while up; the accept loop ends when it clears.
    up: Arc<AtomicBool>,
    /// The accept loop (it owns the listener).
    accept: Option<std::thread::JoinHandle<()>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub(crate) fn start(upstream: SocketAddr) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut p = Self {
            addr: l.local_addr().unwrap(),
            upstream,
            up: Arc::new(AtomicBool::new(false)),
            accept: None,
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        p.serve(l);
        p
    }

    fn serve(&mut self, l: TcpListener) {
        l.set_nonblocking(true).unwrap();
        self.up = Arc::new(AtomicBool::new(true));
        let (up, conns, upstream) = (self.up.clone(), self.conns.clone(), self.upstream);
        self.accept = Some(std::thread::spawn(move || {
            while up.load(Ordering::Acquire) {
                match l.accept() {
                    Ok((down, _)) => {
                        down.set_nonblocking(false).unwrap();
                        let Ok(up_conn) = TcpStream::connect(upstream) else {
                            continue;
                        };
                        let mut all = conns.lock().unwrap();
                        all.push(down.try_clone().unwrap());
                        all.push(up_conn.try_clone().unwrap());
                        pump(down.try_clone().unwrap(), up_conn.try_clone().unwrap());
                        pump(up_conn, down);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => return,
                }
            }
        }));
    }

    /// The network fails: nothing gets through, new connections are refused.
    pub(crate) fn cut(&mut self) {
        self.up.store(false, Ordering::Release);
        // The accept loop ends and drops the listener.
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// The network is back, on the same address.
    pub(crate) fn restore(&mut self) {
        let l = TcpListener::bind(self.addr).unwrap();
        self.serve(l);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Card A with namespace 1 (attached, [`BLOCKS`] blocks of 4 KiB) exported
/// by its target; `pool` is what the target serves (set it to `None`
/// while A's firmware is dead, as the firmware process's target would).
pub(crate) struct Exporter {
    pub(crate) card: PooledCard,
    pub(crate) pool: Arc<Mutex<Option<Arc<Pool>>>>,
    pub(crate) target: SocketAddr,
}

impl Exporter {
    fn start(name: &str) -> Self {
        Self::start_as(name, TARGET_SERIAL)
    }

    /// As `start`, the target's subsystems named after `serial`.
    pub(crate) fn start_as(name: &str, serial: &str) -> Self {
        let mut card = PooledCard::start(name);
        assert_eq!(create_attached_ns(&mut card, BLOCKS, 12, "exported"), 1);
        let pool = Arc::new(Mutex::new(card.fw.pool()));
        let source = pool.clone();
        let target = serve_fabric(
            FabricConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                serial: serial.into(),
                advertise: None,
                max_connections: 32,
            },
            Arc::new(move || source.lock().unwrap().clone()),
        )
        .unwrap();
        Self {
            card,
            pool,
            target: target.addr,
        }
    }
}

fn remote_create(
    addr: SocketAddr,
    nsid: u32,
    subnqn: &str,
    label: &str,
) -> abi::RemoteNamespaceCreate {
    let target =
        abi::RemoteTarget::new(&addr.ip().to_string(), addr.port(), nsid, subnqn, 0).unwrap();
    let mut c = abi::RemoteNamespaceCreate {
        target,
        ..Default::default()
    };
    c.label[..label.len()].copy_from_slice(label.as_bytes());
    c
}

/// Sends Create Remote Namespace with `create` in a page at `BUF`.
fn create_remote(d: &mut TestDriver, create: &abi::RemoteNamespaceCreate) -> abi::CompletionEntry {
    let bytes: [u8; 512] = pod(create);
    d.mem.write(BUF, &[0u8; 4096]).unwrap();
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_CREATE_REMOTE_NS,
        prp1: BUF,
        ..Default::default()
    })
}

/// Writes `data` (whole 4 KiB blocks, at most 64 KiB) at `slba` of `nsid`
/// through `q`; the status.
pub(crate) fn write_blocks(
    d: &TestDriver,
    q: &mut IoQ,
    nsid: u32,
    slba: u64,
    data: &[u8],
    fua: bool,
) -> u16 {
    let blocks = (data.len() / 4096) as u32;
    d.mem.write(WBUF, data).unwrap();
    let (p1, p2) = prps(d, WBUF, u64::from(blocks), PRP_LIST);
    let mut sqe = rw(abi::IO_WRITE, nsid, slba, blocks, p1, p2);
    sqe.cdw12 = abi::IoBlocks {
        blocks,
        fua,
        deallocate: false,
    }
    .cdw12();
    q.run(d, sqe)
}

/// Reads through `q`, returning the status and the bytes.
pub(crate) fn try_read(
    d: &TestDriver,
    q: &mut IoQ,
    nsid: u32,
    slba: u64,
    blocks: u32,
) -> (u16, Vec<u8>) {
    let len = 4096 * blocks as usize;
    d.mem.write(RBUF, &vec![0xee; len]).unwrap();
    let (p1, p2) = prps(d, RBUF, u64::from(blocks), PRP_LIST + 0x3000);
    let status = q.run(d, rw(abi::IO_READ, nsid, slba, blocks, p1, p2));
    let mut back = vec![0u8; len];
    d.mem.read(RBUF, &mut back).unwrap();
    (status, back)
}

pub(crate) fn flush(d: &TestDriver, q: &mut IoQ, nsid: u32) -> u16 {
    q.run(d, rw(abi::IO_FLUSH, nsid, 0, 1, 0, 0))
}

fn pool_used_bytes(d: &mut TestDriver) -> u64 {
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_GET_LOG_PAGE,
        prp1: BUF,
        cdw10: abi::LogPage::of_bytes(abi::LogId::PoolStatus, 32).cdw10(),
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), 0);
    let mut raw = [0u8; 8];
    d.mem.read(BUF + 8, &mut raw).unwrap();
    u64::from_le_bytes(raw)
}

/// Reads until the read succeeds (the path reconnects after its backoff);
/// every failed try must fail fast with Transient Transport Error.
fn read_until_back(d: &TestDriver, q: &mut IoQ, nsid: u32, slba: u64) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let started = Instant::now();
        let (status, back) = try_read(d, q, nsid, slba, 1);
        if status == 0 {
            return back;
        }
        assert_eq!(status, abi::STATUS_TRANSIENT_TRANSPORT);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a failed read took {:?}",
            started.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "the remote path did not come back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_remote_namespace_serves_the_exporting_cards_blocks() {
    let mut a = Exporter::start("remote-a");
    let mut proxy = Proxy::start(a.target);
    let mut b = PooledCard::start("remote-b");

    // Create: the size and block size come from the target.
    let cqe = create_remote(&mut b, &remote_create(proxy.addr, 1, &volume_nqn(1), "far"));
    assert_eq!(cqe.status_code(), 0);
    let nsid = cqe.result;
    assert_eq!(nsid, 1);
    let (st, id) = identify_ns(&mut b, nsid);
    assert_eq!(st, 0);
    assert_eq!(
        (id.nsze, id.ncap, id.lba_shift(), id.attached),
        (BLOCKS, BLOCKS, 12, 0)
    );
    assert_eq!(
        (id.remote, id.remote_path, id.nuse),
        (1, abi::REMOTE_PATH_IDLE, 0)
    );
    assert_eq!(id.remote_target.ip(), Some(proxy.addr.ip()));
    assert_eq!(id.remote_target.port, proxy.addr.port());
    assert_eq!(id.remote_target.subnqn_str(), Some(volume_nqn(1).as_str()));
    assert_eq!(&id.label[..3], b"far");
    // Deallocated blocks read as zeroes on the card's target.
    assert_eq!(id.nsfeat & 1 << 2, 1 << 2);
    // Listed like a local namespace; a local one beside it.
    let local = create_attached_ns(&mut b, 256, 12, "near");
    assert_eq!(local, 2);

    let mut qb = IoQ::create(&mut b, 1);
    assert_eq!(
        try_read(&b, &mut qb, nsid, 0, 1).0,
        abi::STATUS_NAMESPACE_NOT_READY,
        "I/O before attach"
    );
    attach_ns(&mut b, nsid);
    let mut qa = IoQ::create(&mut a.card, 1);

    // B writes 64 KiB (a PRP list); B and A read the same bytes.
    let data = pattern(7, 64 << 10);
    assert_eq!(write_blocks(&b, &mut qb, nsid, 8, &data, false), 0);
    assert_eq!(
        identify_ns(&mut b, nsid).1.remote_path,
        abi::REMOTE_PATH_LIVE
    );
    assert!(try_read(&b, &mut qb, nsid, 8, 16).1 == data, "B reads back");
    assert!(
        read_blocks(&a.card, &mut qa, 1, 8, 16) == data,
        "A holds B's write"
    );
    // A writes; B reads it.
    let theirs = pattern(9, 8192);
    assert_eq!(write_blocks(&a.card, &mut qa, 1, 100, &theirs, false), 0);
    assert!(
        try_read(&b, &mut qb, nsid, 100, 2).1 == theirs,
        "B reads A's write"
    );
    // Never-written blocks read as zeroes.
    assert!(all_zero(&try_read(&b, &mut qb, nsid, 3000, 4).1));
    // The last block, FUA and Flush.
    let last = pattern(1, 4096);
    assert_eq!(write_blocks(&b, &mut qb, nsid, BLOCKS - 1, &last, true), 0);
    // A remote namespace's FUA write does not vouch for earlier writes
    // (its Flush may have a lost session to report).
    let mut fua = rw(abi::IO_WRITE, nsid, BLOCKS - 1, 1, WBUF, 0);
    fua.cdw12 |= abi::RW_FUA;
    let cqe = qb.run_cqe(&b, fua);
    assert_eq!((cqe.status_code(), cqe.result), (0, 0));
    assert!(read_blocks(&a.card, &mut qa, 1, BLOCKS - 1, 1) == last);
    assert_eq!(q_flush_all(&b, &mut qb), 0, "a broadcast Flush covers it");
    assert_eq!(flush(&b, &mut qb, nsid), 0);
    // Write Zeroes over B's first write, deallocate A's.
    let mut wz = rw(abi::IO_WRITE_ZEROES, nsid, 8, 8, 0, 0);
    wz.cdw12 = abi::IoBlocks {
        blocks: 8,
        ..Default::default()
    }
    .cdw12();
    assert_eq!(qb.run(&b, wz), 0);
    let back = read_blocks(&a.card, &mut qa, 1, 8, 16);
    assert!(all_zero(&back[..8 * 4096]) && back[8 * 4096..] == data[8 * 4096..]);
    let range = abi::DsmRange {
        attributes: 0,
        blocks: 2,
        slba: 100,
    };
    let raw: [u8; 16] = pod(&range);
    b.mem.write(PRP_LIST + 0x2000, &raw).unwrap();
    let dsm = SubmissionEntry {
        opcode: abi::IO_DATASET_MANAGEMENT,
        nsid,
        prp1: PRP_LIST + 0x2000,
        cdw11: abi::DSM_DEALLOCATE,
        ..Default::default()
    };
    assert_eq!(qb.run(&b, dsm), 0);
    assert!(all_zero(&read_blocks(&a.card, &mut qa, 1, 100, 2)));
    // Checked on B before anything goes out.
    assert_eq!(
        try_read(&b, &mut qb, nsid, BLOCKS - 1, 2).0,
        abi::STATUS_LBA_OUT_OF_RANGE
    );
    let range = abi::DsmRange {
        attributes: 0,
        blocks: 2,
        slba: BLOCKS - 1,
    };
    let raw: [u8; 16] = pod(&range);
    b.mem.write(PRP_LIST + 0x2000, &raw).unwrap();
    assert_eq!(qb.run(&b, dsm), abi::STATUS_LBA_OUT_OF_RANGE);
    assert_eq!(
        qb.run(&b, rw(0x7f, nsid, 0, 1, RBUF, 0)),
        abi::STATUS_INVALID_OPCODE
    );
    assert_eq!(
        qb.run(&b, rw(abi::IO_READ, nsid, 0, 2, RBUF, RBUF + 5)),
        abi::STATUS_INVALID_PRP_OFFSET
    );
    // The pool's space is not B's remote namespace's.
    assert_eq!(pool_used_bytes(&mut b), 0);
    // The local namespace beside it works as ever.
    assert_eq!(write_blocks(&b, &mut qb, local, 3, &theirs, false), 0);
    assert!(read_blocks(&b, &mut qb, local, 3, 2) == theirs);

    // Counters, and a ceiling that holds the remote namespace back.
    let st = b.ns_stats(nsid);
    assert!(st.writes >= 2 && st.reads >= 4, "{st:?}");
    // Two writes of B's last block, with FUA.
    assert_eq!(st.write_bytes, (64 << 10) + 2 * 4096);
    assert!(st.errors >= 3, "{st:?}");
    let slow = abi::QosSettings {
        max_iops: 10,
        burst_ms: 1,
        ..Default::default()
    };
    assert_eq!(set_qos(&mut b, nsid, slow).status_code(), 0);
    let started = Instant::now();
    for i in 0..6 {
        qb.push(&b, rw(abi::IO_READ, nsid, i, 1, RBUF, 0));
    }
    qb.ring(&b);
    assert!(qb.reap(&b, 6).iter().all(|c| c.status_code() == 0));
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "6 reads at 10 IOPS took {:?}",
        started.elapsed()
    );
    assert!(b.ns_stats(nsid).throttled > 0);
    assert_eq!(
        set_qos(&mut b, nsid, abi::QosSettings::default()).status_code(),
        0
    );

    // The network between the cards fails with a write not yet flushed.
    let unflushed = pattern(3, 4096);
    assert_eq!(write_blocks(&b, &mut qb, nsid, 50, &unflushed, false), 0);
    proxy.cut();
    let started = Instant::now();
    assert_eq!(
        try_read(&b, &mut qb, nsid, 50, 1).0,
        abi::STATUS_TRANSIENT_TRANSPORT
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        identify_ns(&mut b, nsid).1.remote_path,
        abi::REMOTE_PATH_DOWN
    );
    // While it is down commands fail at once, and B serves its other
    // namespace meanwhile.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            try_read(&b, &mut qb, nsid, 0, 1).0,
            abi::STATUS_TRANSIENT_TRANSPORT
        );
        assert!(read_blocks(&b, &mut qb, local, 3, 2) == theirs);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    assert!(read_until_back(&b, &mut qb, nsid, 50) == unflushed);
    // The target may have lost what it had not flushed: the next Flush
    // says so, once.
    assert_eq!(flush(&b, &mut qb, nsid), abi::STATUS_WRITE_FAULT);
    assert_eq!(flush(&b, &mut qb, nsid), 0);
    assert_eq!(
        identify_ns(&mut b, nsid).1.remote_path,
        abi::REMOTE_PATH_LIVE
    );

    // A's firmware dies: its target answers Namespace Not Ready, which B
    // hands on; A comes back and B's I/O works again.
    a.card.fw.kill().unwrap();
    *a.pool.lock().unwrap() = None;
    assert_eq!(
        try_read(&b, &mut qb, nsid, 8, 1).0,
        abi::STATUS_NAMESPACE_NOT_READY
    );
    a.card.fw.start().unwrap();
    assert!(a.card.enable(AQA));
    *a.pool.lock().unwrap() = a.card.fw.pool();
    assert!(read_until_back(&b, &mut qb, nsid, 50) == unflushed);
    let mut qa = IoQ::create(&mut a.card, 1);
    assert!(
        read_blocks(&a.card, &mut qa, 1, BLOCKS - 1, 1) == last,
        "FUA write kept"
    );

    // B's firmware restarts: the remote namespace is still there,
    // attached, and connects at its first I/O.
    b.fw.kill().unwrap();
    b.fw.start().unwrap();
    assert!(b.enable(AQA));
    let (st, id) = identify_ns(&mut b, nsid);
    assert_eq!(st, 0);
    assert_eq!(
        (id.remote, id.attached, id.remote_path),
        (1, 1, abi::REMOTE_PATH_IDLE)
    );
    assert_eq!(id.nsze, BLOCKS);
    let mut qb = IoQ::create(&mut b, 1);
    assert!(try_read(&b, &mut qb, nsid, BLOCKS - 1, 1).1 == last);
    assert_eq!(
        identify_ns(&mut b, nsid).1.remote_path,
        abi::REMOTE_PATH_LIVE
    );

    // Detach, then delete, as a local namespace.
    assert_eq!(
        ns_admin(&mut b, abi::ADMIN_NS_MANAGEMENT, nsid, abi::NS_MGMT_DELETE),
        abi::STATUS_NS_ATTACHED_DELETE
    );
    assert_eq!(
        ns_admin(&mut b, abi::ADMIN_NS_ATTACHMENT, nsid, abi::NS_DETACH),
        0
    );
    assert_eq!(
        try_read(&b, &mut qb, nsid, 0, 1).0,
        abi::STATUS_NAMESPACE_NOT_READY
    );
    assert_eq!(
        identify_ns(&mut b, nsid).1.remote_path,
        abi::REMOTE_PATH_IDLE
    );
    assert_eq!(
        ns_admin(&mut b, abi::ADMIN_NS_MANAGEMENT, nsid, abi::NS_MGMT_DELETE),
        0
    );
    assert_eq!(identify_ns(&mut b, nsid).0, abi::STATUS_INVALID_NAMESPACE);
    // A's namespace keeps its data.
    assert!(read_blocks(&a.card, &mut qa, 1, 50, 1) == unflushed);
}

/// A Flush with namespace id 0xffffffff (every namespace) through `q`.
fn q_flush_all(d: &TestDriver, q: &mut IoQ) -> u16 {
    q.run(d, rw(abi::IO_FLUSH, u32::MAX, 0, 1, 0, 0))
}

#[test]
fn create_remote_namespace_refuses_what_it_cannot_use() {
    let a = Exporter::start("remote-refuse-a");
    let mut b = PooledCard::start("remote-refuse-b");
    let good = remote_create(a.target, 1, &volume_nqn(1), "x");

    // What the card checks before it connects: Invalid Field.
    let bad = |f: &dyn Fn(&mut abi::RemoteNamespaceCreate)| {
        let mut c = good;
        f(&mut c);
        c
    };
    let refused = [
        bad(&|c| c.target.port = 0),
        bad(&|c| c.target.nsid = 0),
        bad(&|c| c.target.nsid = u32::MAX),
        bad(&|c| c.target.digests = 0x80),
        bad(&|c| c.target.reserved = 1),
        bad(&|c| c.reserved[7] = 1),
        bad(&|c| c.target.addr = [b'x'; abi::REMOTE_ADDR_LEN]),
        bad(&|c| {
            c.target.addr = [0; abi::REMOTE_ADDR_LEN];
            c.target.addr[..9].copy_from_slice(b"localhost");
        }),
        bad(&|c| c.target.subnqn = [b'n'; abi::NQN_FIELD_LEN]),
        bad(&|c| c.target.subnqn = [0; abi::NQN_FIELD_LEN]),
    ];
    for (i, c) in refused.iter().enumerate() {
        let cqe = create_remote(&mut b, c);
        assert_eq!(
            (cqe.status_code(), cqe.result),
            (abi::STATUS_INVALID_FIELD, 0),
            "case {i}"
        );
    }

    // Nobody listens there: unreachable, quickly.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let started = Instant::now();
    let cqe = create_remote(&mut b, &remote_create(closed, 1, &volume_nqn(1), "x"));
    assert_eq!(cqe.status_code(), abi::STATUS_REMOTE_UNREACHABLE);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The target has no such subsystem: Connect's status in DW0.
    let cqe = create_remote(&mut b, &remote_create(a.target, 1, &volume_nqn(9), "x"));
    assert_eq!(
        (cqe.status_code(), cqe.result),
        (abi::STATUS_REMOTE_REFUSED, 0x182),
        "Connect Invalid Parameters"
    );
    // The subsystem has no namespace 2: Invalid Namespace in DW0.
    let cqe = create_remote(&mut b, &remote_create(a.target, 2, &volume_nqn(1), "x"));
    assert_eq!(
        (cqe.status_code(), cqe.result),
        (
            abi::STATUS_REMOTE_REFUSED,
            u32::from(abi::STATUS_INVALID_NAMESPACE)
        )
    );
    // Nothing was created by any of them.
    let cqe = b.submit(SubmissionEntry {
        opcode: abi::ADMIN_IDENTIFY,
        prp1: BUF,
        cdw10: u32::from(abi::CNS_ALLOCATED_NS_LIST),
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), 0);
    let mut first = [0u8; 4];
    b.mem.read(BUF, &mut first).unwrap();
    assert_eq!(u32::from_le_bytes(first), 0, "no namespace");
    // The good one works, and with digests too.
    assert_eq!(create_remote(&mut b, &good).status_code(), 0);
    let mut digests = good;
    digests.target.digests = abi::REMOTE_HEADER_DIGEST | abi::REMOTE_DATA_DIGEST;
    let cqe = create_remote(&mut b, &digests);
    assert_eq!(cqe.status_code(), 0);
    attach_ns(&mut b, cqe.result);
    let mut q = IoQ::create(&mut b, 1);
    let data = pattern(5, 8192);
    assert_eq!(write_blocks(&b, &mut q, cqe.result, 10, &data, false), 0);
    assert!(try_read(&b, &mut q, cqe.result, 10, 2).1 == data);

    // A card without a pool has no namespace table to put it in.
    let mut bare = TestDriver::start();
    assert!(bare.enable(AQA));
    assert_eq!(
        create_remote(&mut bare, &good).status_code(),
        abi::STATUS_INVALID_OPCODE
    );
}
