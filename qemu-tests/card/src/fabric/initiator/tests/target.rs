//! The initiator against the card's own NVMe/TCP target, in-process on
//! 127.0.0.1 over a scratch pool: connect, identify, I/O read back
//! byte-equal (also through the pool directly) with and without digests,
//! R2T writes in several H2CData, transfers split at MDTS, many commands
//! from many threads, Flush/Write Zeroes/deallocate, NVMe statuses, keep-
//! alive, close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::super::command::status;
use super::super::super::controller::NQN_PREFIX;
use super::super::super::{serve, TargetConfig, MDTS_BYTES};
use super::super::{Config, Error, NamespaceInfo, Session, TransportError};
use crate::guest_memory::{GuestMemory, SharedMemory};
use crate::pool::{Direction, Pool};

const SERIAL: &str = "DIA-I";
/// Namespace 1: 16384 blocks of 4 KiB (64 MiB).
const NS_BLOCKS: u64 = 16384;

/// A target on 127.0.0.1 serving a pool with namespace 1 (attached, 4 KiB
/// blocks) and namespace 2 (detached).
struct Remote {
    _dir: super::super::super::tests::Scratch,
    pool: Arc<Pool>,
    addr: std::net::SocketAddr,
}

impl Remote {
    fn start(name: &str) -> Self {
        // The fabric tests' pool: namespace 1 is NS_BLOCKS blocks of 4 KiB.
        let (dir, pool) = super::super::super::tests::pool(&format!("initiator-{name}"));
        let p = pool.clone();
        let target = serve(
            TargetConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                serial: SERIAL.into(),
                advertise: None,
                max_connections: 32,
            },
            Arc::new(move || Some(p.clone())),
        )
        .unwrap();
        Self {
            _dir: dir,
            pool,
            addr: target.addr,
        }
    }

    fn config(&self, nsid: u32) -> Config {
        let mut c = Config::new(self.addr, format!("{NQN_PREFIX}{SERIAL}:ns{nsid}"));
        c.command_timeout = Duration::from_secs(20);
        c
    }

    /// What the pool holds, as the card's local I/O path reads it.
    fn read_local(&self, slba: u64, len: usize) -> Vec<u8> {
        let m = GuestMemory::new(SharedMemory::anonymous("initiator-test", len).unwrap());
        self.pool
            .transfer(Direction::Read, 1, slba, len as u64 / 4096, &m, &[(0, len)])
            .unwrap();
        let mut b = vec![0u8; len];
        m.read(0, &mut b).unwrap();
        b
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(97) ^ (i >> 12)) as u8)
        .collect()
}

fn round_trips(header_digest: bool, data_digest: bool, name: &str) {
    let r = Remote::start(name);
    let mut cfg = r.config(1);
    cfg.header_digest = header_digest;
    cfg.data_digest = data_digest;
    let s = Session::connect(&cfg).unwrap();
    assert_ne!(s.cntlid(), 0xffff);
    assert_eq!(s.controller().cntlid, s.cntlid());
    assert_eq!(
        s.controller().in_capsule,
        super::super::super::IN_CAPSULE_BYTES
    );
    assert_eq!(s.max_transfer(), MDTS_BYTES as usize);
    assert_eq!(s.io_queues(), 2);
    assert_eq!(s.kato(), cfg.kato);
    let ns = s.namespace(1).unwrap();
    assert_eq!((ns.blocks(), ns.block_size()), (NS_BLOCKS, 4096));
    assert!(ns.info().deallocated_reads_zeroes);
    // In-capsule (8 KiB), R2T in four H2CData (256 KiB), and one split
    // at MDTS into several R2T commands (1.5 MiB).
    for (lba, len, seed) in [(10, 8192, 1), (100, 256 << 10, 2), (1000, 3 << 19, 3)] {
        let data = pattern(len, seed);
        ns.write(lba, &data, seed == 2).unwrap();
        let mut back = vec![0u8; len];
        ns.read(lba, &mut back).unwrap();
        assert!(back == data, "{len} bytes at {lba} read back differently");
        assert!(r.read_local(lba, len) == data, "the pool holds other bytes");
    }
    ns.flush().unwrap();
    assert_eq!(s.failure(), None);
}

#[test]
fn write_and_read_back_without_digests() {
    round_trips(false, false, "plain");
}

#[test]
fn write_and_read_back_with_header_and_data_digests() {
    round_trips(true, true, "digests");
}

#[test]
fn write_and_read_back_with_header_digest_only() {
    round_trips(true, false, "hdgst");
}

#[test]
fn many_commands_from_many_threads() {
    let r = Remote::start("threads");
    let mut cfg = r.config(1);
    // Small queues, so commands wait for slots and complete out of order.
    cfg.queue_entries = 8;
    cfg.io_queues = 3;
    let s = Session::connect(&cfg).unwrap();
    let ns = s.namespace(1).unwrap();
    let threads: Vec<_> = (0..8u32)
        .map(|t| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                for i in 0..40u32 {
                    // Each thread its own 64-block region; sizes 1..=20 blocks.
                    let blocks = (i * 7 + t) % 20 + 1;
                    let lba = u64::from(t) * 1024 + u64::from(i % 3) * 64;
                    let data = pattern(blocks as usize * 4096, t << 8 | i);
                    ns.write(lba, &data, false).unwrap();
                    let mut back = vec![0u8; data.len()];
                    ns.read(lba, &mut back).unwrap();
                    assert!(back == data, "thread {t} round {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.failure(), None);
}

#[test]
fn flush_write_zeroes_and_deallocate() {
    let r = Remote::start("zeroes");
    let s = Session::connect(&r.config(1)).unwrap();
    let ns = s.namespace(1).unwrap();
    let data = pattern(64 * 4096, 9);
    ns.write(200, &data, false).unwrap();
    ns.flush().unwrap();
    ns.write_zeroes(210, 4).unwrap();
    ns.deallocate(&[(230, 8), (250, 2)]).unwrap();
    let mut back = vec![0u8; data.len()];
    ns.read(200, &mut back).unwrap();
    for (b, chunk) in back.chunks(4096).enumerate() {
        let zero = (10..14).contains(&b) || (30..38).contains(&b) || (50..52).contains(&b);
        if zero {
            assert!(chunk.iter().all(|&x| x == 0), "block {b} not zero");
        } else {
            assert!(
                chunk == &data[b * 4096..(b + 1) * 4096],
                "block {b} changed"
            );
        }
    }
    assert!(r.read_local(230, 8 * 4096).iter().all(|&x| x == 0));
    // More ranges than fit the capsule go through R2T (600 ranges: three
    // commands, the first two of 4 KiB each).
    let ranges: Vec<(u64, u32)> = (0..600).map(|i| (2000 + i * 2, 1)).collect();
    ns.write(2000, &pattern(1200 * 4096, 4), false).unwrap();
    ns.deallocate(&ranges).unwrap();
    let mut back = vec![0u8; 2 * 4096];
    ns.read(2000, &mut back).unwrap();
    assert!(back[..4096].iter().all(|&x| x == 0));
    assert!(back[4096..].iter().any(|&x| x != 0));
}

#[test]
fn errors_carry_the_targets_nvme_status() {
    let r = Remote::start("errors");
    let s = Session::connect(&r.config(1)).unwrap();
    // Namespace 2 of the subsystem does not exist.
    let e = s.namespace(2).unwrap_err();
    assert_eq!(
        e.status().map(|s| s.code()),
        Some(status::INVALID_NAMESPACE)
    );
    assert!(e.status().is_some_and(|s| s.dnr()));
    let bad = s.namespace_as(
        2,
        NamespaceInfo {
            blocks: 10,
            lba_shift: 12,
            deallocated_reads_zeroes: true,
            plex_record: Default::default(),
        },
    );
    let e = bad.read(0, &mut [0u8; 4096]).unwrap_err();
    assert_eq!(
        e.status().map(|s| s.code()),
        Some(status::INVALID_NAMESPACE)
    );
    assert_eq!(e.host_status(), status::INVALID_NAMESPACE | status::DNR);
    // Out of range: past the end, by a read, a write, Write Zeroes, DSM.
    let ns = s.namespace(1).unwrap();
    let oor = |e: Error| e.status().map(|s| s.code());
    let mut two = vec![0u8; 8192];
    assert_eq!(
        oor(ns.read(NS_BLOCKS - 1, &mut two).unwrap_err()),
        Some(status::LBA_OUT_OF_RANGE)
    );
    assert_eq!(
        oor(ns.write(NS_BLOCKS, &two, false).unwrap_err()),
        Some(status::LBA_OUT_OF_RANGE)
    );
    assert!(ns
        .write_zeroes(NS_BLOCKS, 1)
        .unwrap_err()
        .status()
        .is_some());
    assert_eq!(
        oor(ns.deallocate(&[(NS_BLOCKS - 1, 2)]).unwrap_err()),
        Some(status::LBA_OUT_OF_RANGE)
    );
    // Requests the initiator refuses itself.
    assert!(matches!(
        ns.read(0, &mut [0u8; 100]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        ns.write(u64::MAX, &two, false),
        Err(Error::Invalid(_))
    ));
    // None of it ended the session.
    assert_eq!(s.failure(), None);
    ns.read(0, &mut two).unwrap();
    // A subsystem the target does not export: Connect's own status.
    let e = Session::connect(&r.config(7)).unwrap_err();
    assert_eq!(
        e.status().map(|s| s.code()),
        Some(status::CONNECT_INVALID_PARAMETERS)
    );
}

#[test]
fn keep_alive_holds_an_idle_session() {
    let r = Remote::start("keepalive");
    let mut cfg = r.config(1);
    // The target gives up on an admin queue silent for 2 x KATO + 1 s.
    cfg.kato = Duration::from_millis(500);
    let s = Session::connect(&cfg).unwrap();
    assert_eq!(s.kato(), cfg.kato);
    let ns = s.namespace(1).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(s.failure(), None);
    ns.write(5, &pattern(4096, 5), false).unwrap();
    // KATO 0: no keep-alive at all (the target then sets no limit).
    cfg.kato = Duration::ZERO;
    let quiet = Session::connect(&cfg).unwrap();
    assert_eq!(quiet.kato(), Duration::ZERO);
}

#[test]
fn close_ends_the_session_for_every_handle() {
    let r = Remote::start("close");
    let s = Session::connect(&r.config(1)).unwrap();
    let ns = s.namespace(1).unwrap();
    ns.write(0, &pattern(4096, 1), false).unwrap();
    s.close().unwrap();
    let started = Instant::now();
    let e = ns.read(0, &mut [0u8; 4096]).unwrap_err();
    assert_eq!(e, Error::Transport(TransportError::Ended));
    assert!(started.elapsed() < Duration::from_secs(1));
    // The target took the shutdown: a new session works.
    let s = Session::connect(&r.config(1)).unwrap();
    let mut back = vec![0u8; 4096];
    s.namespace(1).unwrap().read(0, &mut back).unwrap();
    assert_eq!(back, pattern(4096, 1));
}
