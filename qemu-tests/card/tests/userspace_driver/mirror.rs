//! Mirrored namespaces: a card (M, serial `TEST-SERIAL-7`) mirrors a
//! volume over plexes that other cards export through TCP proxies the
//! tests cut, and one plex in its own pool (served through the pool, not
//! over TCP). What M's driver writes is read back through every plex's own
//! card; a cut plex goes out of sync without an error reaching the driver,
//! comes back and gets only what it missed; a new plex gets everything; M
//! crashes with a plex out of sync and resyncs it after its restart; with
//! no in-sync plex left, commands fail.

use std::time::{Duration, Instant};

use dia_abi::card::{self as abi, SubmissionEntry};

use crate::driver::*;
use crate::io::*;
use crate::remote::{flush, try_read, write_blocks, Exporter, Proxy};

/// Blocks (4 KiB) of every plex: 16 MiB, 16 regions.
const BLOCKS: u64 = 4096;
/// M's serial (the test driver's).
const M_SERIAL: &str = "TEST-SERIAL-7";
/// Blocks in a region.
const REGION_BLOCKS: u64 = (1 << abi::MIRROR_REGION_SHIFT) / 4096;

fn nqn(serial: &str, nsid: u32) -> String {
    format!("{}{serial}:ns{nsid}", abi::VOLUME_NQN_PREFIX)
}

fn plex(addr: std::net::SocketAddr, serial: &str, state: u8) -> abi::MirrorPlex {
    abi::MirrorPlex {
        target: abi::RemoteTarget::new(&addr.ip().to_string(), addr.port(), 1, &nqn(serial, 1), 0)
            .unwrap(),
        state,
        reserved: [0; 7],
    }
}

/// M's own namespace 1 as a plex: its export's NQN (the address is not
/// used).
fn local_plex(state: u8) -> abi::MirrorPlex {
    plex("127.0.0.1:4420".parse().unwrap(), M_SERIAL, state)
}

fn mirror_create(plexes: &[abi::MirrorPlex]) -> abi::MirrorNamespaceCreate {
    let mut c = abi::MirrorNamespaceCreate {
        plex_count: plexes.len() as u8,
        ..Default::default()
    };
    c.plexes[..plexes.len()].copy_from_slice(plexes);
    c.label[..6].copy_from_slice(b"mirror");
    c
}

fn create_mirror(d: &mut TestDriver, create: &abi::MirrorNamespaceCreate) -> abi::CompletionEntry {
    let bytes: [u8; 1536] = pod(create);
    d.mem.write(BUF, &[0u8; 4096]).unwrap();
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_CREATE_MIRROR_NS,
        prp1: BUF,
        ..Default::default()
    })
}

/// Set Plex Record on `nsid` of card `d` (from its host admin queue).
fn set_plex_record(d: &mut TestDriver, nsid: u32, rec: &abi::PlexRecord) -> u16 {
    let bytes: [u8; 48] = pod(rec);
    d.mem.write(BUF, &[0u8; 4096]).unwrap();
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_SET_PLEX_RECORD,
        nsid,
        prp1: BUF,
        ..Default::default()
    })
    .status_code()
}

/// Set Mirror Plexes on mirror `nsid` of card `d`: the status.
fn set_plexes(d: &mut TestDriver, nsid: u32, plexes: &[abi::MirrorPlex]) -> u16 {
    let bytes: [u8; 1536] = pod(&mirror_create(plexes));
    d.mem.write(BUF, &[0u8; 4096]).unwrap();
    d.mem.write(BUF, &bytes).unwrap();
    d.submit(SubmissionEntry {
        opcode: abi::ADMIN_SET_MIRROR_PLEXES,
        nsid,
        prp1: BUF,
        ..Default::default()
    })
    .status_code()
}

fn mirror_status(d: &mut TestDriver, nsid: u32) -> (u16, abi::MirrorStatus) {
    let size = std::mem::size_of::<abi::MirrorStatus>();
    d.mem.write(BUF, &vec![0xaa; size]).unwrap();
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_GET_LOG_PAGE,
        nsid,
        prp1: BUF,
        cdw10: abi::LogPage::of_bytes(abi::LogId::MirrorStatus, size).cdw10(),
        ..Default::default()
    });
    let mut raw = vec![0u8; size];
    d.mem.read(BUF, &mut raw).unwrap();
    // SAFETY: MirrorStatus is repr(C) plain data; raw has its size.
    let s = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    (cqe.status_code(), s)
}

fn status(d: &mut TestDriver, nsid: u32) -> abi::MirrorStatus {
    let (st, s) = mirror_status(d, nsid);
    assert_eq!(st, 0);
    s
}

/// Waits until plex `i` of mirror `nsid` is in sync again.
fn wait_in_sync(d: &mut TestDriver, nsid: u32, i: usize) -> abi::MirrorStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(d, nsid);
        if s.plexes[i].state == abi::PLEX_IN_SYNC {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "plex {i} not back in sync: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every block of `nsid` on card `d`, read through its own queue `q`.
fn whole(d: &TestDriver, q: &mut IoQ, nsid: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((BLOCKS * 4096) as usize);
    for at in (0..BLOCKS).step_by(16) {
        out.extend(read_blocks(d, q, nsid, at, 16));
    }
    out
}

/// Writes `bytes` of pattern `seed` at `slba` through the mirror, 64 KiB
/// at a time; every write must succeed.
fn write_span(d: &TestDriver, q: &mut IoQ, nsid: u32, slba: u64, bytes: usize, seed: u8) {
    for (k, at) in (0..bytes / 65536).map(|k| (k, slba + 16 * k as u64)) {
        let data = pattern(seed.wrapping_add(k as u8), 65536);
        assert_eq!(
            write_blocks(d, q, nsid, at, &data, false),
            0,
            "write at {at}"
        );
    }
}

#[test]
fn a_mirror_writes_every_plex_and_resyncs_only_what_a_cut_plex_missed() {
    let a = Exporter::start_as("mirror-a", "DIA-A");
    let c = Exporter::start_as("mirror-c", "DIA-C");
    let pa = Proxy::start(a.target);
    let mut pc = Proxy::start(c.target);
    let (mut a, mut c) = (a, c);
    let mut m = PooledCard::start("mirror-m");
    assert_eq!(create_attached_ns(&mut m, BLOCKS, 12, "local"), 1);

    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            local_plex(abi::PLEX_IN_SYNC),
            plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC),
            plex(pc.addr, "DIA-C", abi::PLEX_IN_SYNC),
        ]),
    );
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    assert_eq!(ns, 2);
    let (st, id) = identify_ns(&mut m, ns);
    assert_eq!(st, 0);
    assert_eq!((id.nsze, id.lba_shift(), id.attached), (BLOCKS, 12, 0));
    assert_eq!((id.mirrored, id.remote, id.nuse), (1, 0, 0));
    assert_eq!(identify_ns(&mut m, 1).1.mirrored, 0);
    let s = status(&mut m, ns);
    assert_eq!((s.plex_count, s.regions, s.generation), (3, 16, 1));
    assert_eq!(s.plexes[0].local, 1);
    assert_eq!(s.plexes[1].local, 0);
    assert!(s.plexes[..3].iter().all(|p| p.state == abi::PLEX_IN_SYNC));
    // Not a mirror: no page.
    assert_eq!(mirror_status(&mut m, 1).0, abi::STATUS_INVALID_FIELD);

    attach_ns(&mut m, ns);
    let mut q = IoQ::create(&mut m, 1);
    let first = pattern(1, 65536);
    assert_eq!(write_blocks(&m, &mut q, ns, 0, &first, false), 0);
    assert!(try_read(&m, &mut q, ns, 0, 16).1 == first);
    assert_eq!(flush(&m, &mut q, ns), 0);
    let mut qa = IoQ::create(&mut a.card, 1);
    let mut qc = IoQ::create(&mut c.card, 1);
    assert!(
        read_blocks(&a.card, &mut qa, 1, 0, 16) == first,
        "A holds it"
    );
    assert!(
        read_blocks(&c.card, &mut qc, 1, 0, 16) == first,
        "C holds it"
    );
    assert!(
        read_blocks(&m, &mut q, 1, 0, 16) == first,
        "the local plex holds it"
    );
    let s = status(&mut m, ns);
    assert!(
        s.plexes[0].reads >= 1 && s.plexes[1].reads == 0,
        "reads go local"
    );

    // C's network fails under writes: none fails, C goes out of sync with
    // the regions written since (3 and 4, then 0 by Write Zeroes).
    pc.cut();
    write_span(&m, &mut q, ns, 3 * REGION_BLOCKS, 2 << 20, 10);
    let mut wz = rw(abi::IO_WRITE_ZEROES, ns, 0, 8, 0, 0);
    wz.cdw12 = abi::IoBlocks {
        blocks: 8,
        ..Default::default()
    }
    .cdw12();
    assert_eq!(q.run(&m, wz), 0);
    let s = status(&mut m, ns);
    assert_eq!(s.plexes[2].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!((s.plexes[2].faults, s.plexes[2].dirty_regions), (1, 3));
    assert_eq!(s.plexes[1].state, abi::PLEX_IN_SYNC);
    assert_eq!(s.generation, 2);
    assert_eq!(flush(&m, &mut q, ns), 0, "Flush goes to the in-sync plexes");
    assert!(all_zero(&try_read(&m, &mut q, ns, 0, 8).1));

    // Back: the resync copies those three regions, not the volume.
    pc.restore();
    let s = wait_in_sync(&mut m, ns, 2);
    assert_eq!(s.plexes[2].dirty_regions, 0);
    assert!(
        (3 << 20..=4 << 20).contains(&s.plexes[2].resync_bytes),
        "resync copied {} bytes",
        s.plexes[2].resync_bytes
    );
    assert_eq!(s.generation, 3);
    assert_eq!(s.plexes[1].resync_bytes, 0);
    // Every plex, read through its own card, holds the same bytes.
    let local = whole(&m, &mut q, 1);
    assert!(whole(&a.card, &mut qa, 1) == local, "A differs");
    assert!(whole(&c.card, &mut qc, 1) == local, "C differs");
    assert!(all_zero(&local[..8 * 4096]) && local[8 * 4096..65536] == first[8 * 4096..]);
    assert!(all_zero(&local[5 << 20..]), "never written: zeroes");
    assert!(local[3 << 20..(3 << 20) + 65536] == pattern(10, 65536)[..]);

    // In sync again, C gets writes again.
    let again = pattern(77, 65536);
    assert_eq!(
        write_blocks(&m, &mut q, ns, 9 * REGION_BLOCKS, &again, true),
        0
    );
    assert!(read_blocks(&c.card, &mut qc, 1, 9 * REGION_BLOCKS, 16) == again);

    // Detach, then delete, as any namespace; the plexes keep their data.
    assert_eq!(
        ns_admin(&mut m, abi::ADMIN_NS_ATTACHMENT, ns, abi::NS_DETACH),
        0
    );
    assert_eq!(
        try_read(&m, &mut q, ns, 0, 1).0,
        abi::STATUS_NAMESPACE_NOT_READY
    );
    assert_eq!(status(&mut m, ns).plexes[2].state, abi::PLEX_IN_SYNC);
    assert_eq!(
        ns_admin(&mut m, abi::ADMIN_NS_MANAGEMENT, ns, abi::NS_MGMT_DELETE),
        0
    );
    assert_eq!(identify_ns(&mut m, ns).0, abi::STATUS_INVALID_NAMESPACE);
    assert!(read_blocks(&a.card, &mut qa, 1, 9 * REGION_BLOCKS, 16) == again);
}

/// A volume in use while a plex resyncs: the writes keep hitting the
/// regions being copied and those copied already, and the resync still
/// copies each region the plex missed about once (the resyncing plex takes
/// the writes to regions it holds), then every plex compares equal.
#[test]
fn a_resync_under_writes_copies_what_was_missed_once_and_converges() {
    let a = Exporter::start_as("mirror-busy-a", "DIA-A");
    let mut pa = Proxy::start(a.target);
    let mut a = a;
    let mut m = PooledCard::start("mirror-busy-m");
    assert_eq!(create_attached_ns(&mut m, BLOCKS, 12, "local"), 1);
    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            local_plex(abi::PLEX_IN_SYNC),
            plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC),
        ]),
    );
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    attach_ns(&mut m, ns);
    let mut q = IoQ::create(&mut m, 1);

    // A misses six regions (0..6).
    pa.cut();
    write_span(&m, &mut q, ns, 0, 6 << 20, 1);
    let s = status(&mut m, ns);
    assert_eq!(
        (s.plexes[1].state, s.plexes[1].dirty_regions),
        (abi::PLEX_OUT_OF_SYNC, 6)
    );

    // Back: while it resyncs, 4 KiB writes go round those six regions.
    pa.restore();
    let mut k: u64 = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let region = k % 6;
        let at = region * REGION_BLOCKS + (k * 7) % REGION_BLOCKS;
        let data = pattern((k % 251) as u8, 4096);
        assert_eq!(
            write_blocks(&m, &mut q, ns, at, &data, false),
            0,
            "write {k}"
        );
        k += 1;
        if k.is_multiple_of(16) && status(&mut m, ns).plexes[1].state == abi::PLEX_IN_SYNC {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no end to the resync after {k} writes"
        );
    }
    let s = status(&mut m, ns);
    assert!(k > 16, "the resync ended before any write ran beside it");
    assert!(
        (6 << 20..=7 << 20).contains(&s.plexes[1].resync_bytes),
        "resync copied {} bytes for 6 MiB missed, with {k} writes beside it",
        s.plexes[1].resync_bytes
    );
    assert_eq!(flush(&m, &mut q, ns), 0);
    let mut qa = IoQ::create(&mut a.card, 1);
    let local = whole(&m, &mut q, 1);
    assert!(
        whole(&a.card, &mut qa, 1) == local,
        "A differs after the resync"
    );
}

#[test]
fn a_new_plex_gets_everything_and_a_crashed_mirror_card_keeps_its_dirty_regions() {
    let mut a = Exporter::start_as("mirror-new-a", "DIA-A");
    let mut pa = Proxy::start(a.target);
    let mut m = PooledCard::start("mirror-new-m");
    assert_eq!(create_attached_ns(&mut m, BLOCKS, 12, "local"), 1);
    let mut q = IoQ::create(&mut m, 1);
    // The volume had data before it was mirrored.
    let old = pattern(5, 65536);
    assert_eq!(write_blocks(&m, &mut q, 1, 100, &old, false), 0);

    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            local_plex(abi::PLEX_IN_SYNC),
            plex(pa.addr, "DIA-A", abi::PLEX_NEW),
        ]),
    );
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    let s = status(&mut m, ns);
    assert_eq!(s.plexes[1].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!(
        s.plexes[1].dirty_regions, 16,
        "a new plex misses everything"
    );
    attach_ns(&mut m, ns);
    let s = wait_in_sync(&mut m, ns, 1);
    assert_eq!(s.plexes[1].resync_bytes, BLOCKS * 4096, "a full copy");
    let mut qa = IoQ::create(&mut a.card, 1);
    assert!(read_blocks(&a.card, &mut qa, 1, 100, 16) == old);

    // A is cut away, a region is written, and M's firmware crashes.
    pa.cut();
    write_span(&m, &mut q, ns, 7 * REGION_BLOCKS, 1 << 20, 40);
    let before = status(&mut m, ns);
    assert_eq!(before.plexes[1].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!(before.plexes[1].dirty_regions, 1);
    m.fw.kill().unwrap();
    m.fw.start().unwrap();
    assert!(m.enable(AQA));
    // The plex states, dirty regions and counters survived.
    let after = status(&mut m, ns);
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.plexes[1].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!(after.plexes[1].dirty_regions, 1);
    assert_eq!(after.plexes[1].resync_bytes, BLOCKS * 4096);
    assert_eq!(after.plexes[1].faults, 1);
    let mut q = IoQ::create(&mut m, 1);
    assert!(read_blocks(&m, &mut q, ns, 7 * REGION_BLOCKS, 16) == pattern(40, 65536));

    // A is back: the resync goes on after the restart, copying one region.
    pa.restore();
    let s = wait_in_sync(&mut m, ns, 1);
    assert_eq!(s.plexes[1].resync_bytes, BLOCKS * 4096 + (1 << 20));
    assert!(
        whole(&a.card, &mut qa, 1) == whole(&m, &mut q, 1),
        "A differs"
    );
}

#[test]
fn without_an_in_sync_plex_commands_fail_and_create_refuses_what_it_cannot_use() {
    let mut a = Exporter::start_as("mirror-last-a", "DIA-A");
    let mut c = Exporter::start_as("mirror-last-c", "DIA-C");
    let mut pa = Proxy::start(a.target);
    let mut pc = Proxy::start(c.target);
    let mut m = PooledCard::start("mirror-last-m");

    // Refusals: a bad table, plexes of different sizes, nothing reachable.
    let mut bad = mirror_create(&[plex(pa.addr, "DIA-A", abi::PLEX_NEW)]);
    assert_eq!(
        create_mirror(&mut m, &bad).status_code(),
        abi::STATUS_INVALID_FIELD
    );
    bad.plexes[0].state = abi::PLEX_IN_SYNC;
    bad.reserved[0] = 1;
    assert_eq!(
        create_mirror(&mut m, &bad).status_code(),
        abi::STATUS_INVALID_FIELD
    );
    assert_eq!(
        create_ns(&mut a.card, BLOCKS / 2, 12, "small").status_code(),
        0
    );
    let mut small = plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC);
    small.target =
        abi::RemoteTarget::new("127.0.0.1", pa.addr.port(), 1, &nqn("DIA-A", 2), 0).unwrap();
    ns_admin(&mut a.card, abi::ADMIN_NS_ATTACHMENT, 2, abi::NS_ATTACH);
    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC), small]),
    );
    assert_eq!(cqe.status_code(), abi::STATUS_INVALID_FORMAT);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            plex(closed, "DIA-A", abi::PLEX_IN_SYNC),
            plex(pc.addr, "DIA-C", abi::PLEX_NEW),
        ]),
    );
    assert_eq!(cqe.status_code(), abi::STATUS_REMOTE_UNREACHABLE);
    // An in-sync plex that cannot be reached is recorded out of sync.
    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            plex(closed, "DIA-X", abi::PLEX_IN_SYNC),
            plex(pc.addr, "DIA-C", abi::PLEX_IN_SYNC),
        ]),
    );
    assert_eq!(cqe.status_code(), 0);
    let s = status(&mut m, cqe.result);
    assert_eq!(s.plexes[0].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!((s.plexes[0].dirty_regions, s.generation), (0, 1));
    assert_eq!(
        ns_admin(
            &mut m,
            abi::ADMIN_NS_MANAGEMENT,
            cqe.result,
            abi::NS_MGMT_DELETE
        ),
        0
    );

    // That mirror told C (its only in-sync plex) so: C's record says C
    // alone is in sync, and A, given in sync beside it, would be copied in
    // full. The owner clears C's record (Set Plex Record from the host).
    let (st, id) = identify_ns(&mut c.card, 1);
    assert_eq!(st, 0);
    assert_eq!(id.plex_record.generation, 1);
    assert_eq!(
        id.plex_record.in_sync,
        [abi::plex_key(&plex(pc.addr, "DIA-C", 0).target), 0, 0, 0]
    );
    assert_eq!(
        set_plex_record(&mut c.card, 1, &abi::PlexRecord::default()),
        0
    );
    assert_eq!(identify_ns(&mut c.card, 1).1.plex_record.generation, 0);

    // A and C, no local plex.
    let cqe = create_mirror(
        &mut m,
        &mirror_create(&[
            plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC),
            plex(pc.addr, "DIA-C", abi::PLEX_IN_SYNC),
        ]),
    );
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    attach_ns(&mut m, ns);
    let mut q = IoQ::create(&mut m, 1);
    let data = pattern(3, 65536);
    assert_eq!(write_blocks(&m, &mut q, ns, 0, &data, false), 0);
    pa.cut();
    assert_eq!(
        write_blocks(&m, &mut q, ns, 16, &data, false),
        0,
        "C takes it"
    );
    assert!(try_read(&m, &mut q, ns, 16, 16).1 == data);
    assert_eq!(status(&mut m, ns).plexes[0].state, abi::PLEX_OUT_OF_SYNC);
    // C goes too: the last in-sync plex is not given up, commands fail.
    pc.cut();
    assert_ne!(write_blocks(&m, &mut q, ns, 32, &data, false), 0);
    assert_ne!(try_read(&m, &mut q, ns, 0, 1).0, 0);
    assert_ne!(flush(&m, &mut q, ns), 0);
    let s = status(&mut m, ns);
    assert_eq!(s.plexes[1].state, abi::PLEX_IN_SYNC);
    assert_eq!(s.plexes[0].state, abi::PLEX_OUT_OF_SYNC);
    // C is back: commands work; then A resyncs.
    pc.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while try_read(&m, &mut q, ns, 16, 16).0 != 0 {
        assert!(Instant::now() < deadline, "C did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    pa.restore();
    let s = wait_in_sync(&mut m, ns, 0);
    assert!(s.plexes[0].resync_bytes >= 1 << 20 && s.plexes[0].resync_bytes <= 2 << 20);
    let mut qa = IoQ::create(&mut a.card, 1);
    assert!(
        read_blocks(&a.card, &mut qa, 1, 16, 16) == data,
        "A got what it missed"
    );
}

/// The key of `p` in a plex record.
fn key(p: &abi::MirrorPlex) -> u64 {
    abi::plex_key(&p.target)
}

/// The record's keys, sorted, zeroes left out.
fn keys(r: &abi::PlexRecord) -> Vec<u64> {
    let mut k: Vec<u64> = r.in_sync.iter().copied().filter(|&k| k != 0).collect();
    k.sort_unstable();
    k
}

fn sorted(mut k: Vec<u64>) -> Vec<u64> {
    k.sort_unstable();
    k
}

#[test]
fn set_mirror_plexes_adds_drops_and_replaces_plexes_of_a_live_mirror() {
    let mut a = Exporter::start_as("mirror-set-a", "DIA-A");
    let mut b = Exporter::start_as("mirror-set-b", "DIA-B");
    let mut c = Exporter::start_as("mirror-set-c", "DIA-C");
    let pa = Proxy::start(a.target);
    let mut pb = Proxy::start(b.target);
    let pc = Proxy::start(c.target);
    let mut m = PooledCard::start("mirror-set-m");
    assert_eq!(create_attached_ns(&mut m, BLOCKS, 12, "local"), 1);
    let (l, pa_, pb_, pc_) = (
        local_plex(abi::PLEX_IN_SYNC),
        plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC),
        plex(pb.addr, "DIA-B", abi::PLEX_IN_SYNC),
        plex(pc.addr, "DIA-C", abi::PLEX_IN_SYNC),
    );
    let new = |p: abi::MirrorPlex| abi::MirrorPlex {
        state: abi::PLEX_NEW,
        ..p
    };
    let cqe = create_mirror(&mut m, &mirror_create(&[l, pa_]));
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    attach_ns(&mut m, ns);
    let mut q = IoQ::create(&mut m, 1);
    write_span(&m, &mut q, ns, 0, 4 << 20, 1);
    let g0 = status(&mut m, ns).generation;
    // Create sent its record to both plexes.
    let rec = identify_ns(&mut a.card, 1).1.plex_record;
    assert_eq!(rec.generation, g0);
    assert_eq!(keys(&rec), sorted(vec![key(&l), key(&pa_)]));
    assert_eq!(identify_ns(&mut m, 1).1.plex_record, rec);

    // A new plex must be given as new; a plex of the table as in sync.
    assert_eq!(
        set_plexes(&mut m, ns, &[l, pa_, pb_]),
        abi::STATUS_INVALID_FIELD
    );
    assert_eq!(
        set_plexes(&mut m, ns, &[l, new(pa_)]),
        abi::STATUS_INVALID_FIELD
    );
    assert_eq!(set_plexes(&mut m, 1, &[l]), abi::STATUS_INVALID_FIELD);

    // Add B, and keep writing while it is copied.
    assert_eq!(set_plexes(&mut m, ns, &[l, pa_, new(pb_)]), 0);
    let s = status(&mut m, ns);
    assert_eq!((s.plex_count, s.generation), (3, g0 + 1));
    assert_ne!(s.plexes[2].state, abi::PLEX_IN_SYNC);
    assert_eq!(s.plexes[2].local, 0);
    for k in 0..8u64 {
        write_span(
            &m,
            &mut q,
            ns,
            (k * 2 + 1) * REGION_BLOCKS,
            1 << 20,
            20 + k as u8,
        );
    }
    let s = wait_in_sync(&mut m, ns, 2);
    assert!(
        s.plexes[2].resync_bytes >= BLOCKS * 4096,
        "B got a full copy: {}",
        s.plexes[2].resync_bytes
    );
    let mut qa = IoQ::create(&mut a.card, 1);
    let mut qb = IoQ::create(&mut b.card, 1);
    let mut qc = IoQ::create(&mut c.card, 1);
    let local = whole(&m, &mut q, 1);
    assert!(local[..65536] == pattern(1, 65536)[..]);
    assert!(whole(&a.card, &mut qa, 1) == local, "A differs");
    assert!(whole(&b.card, &mut qb, 1) == local, "B differs");
    // B in sync: every plex's record names the three.
    let rec = identify_ns(&mut b.card, 1).1.plex_record;
    assert_eq!(rec.generation, s.generation);
    assert_eq!(keys(&rec), sorted(vec![key(&l), key(&pa_), key(&pb_)]));

    // Drop A: it gets no more writes, and the others' record leaves it out.
    assert_eq!(set_plexes(&mut m, ns, &[pb_, l]), 0);
    let s = status(&mut m, ns);
    assert_eq!(s.plex_count, 2);
    assert_eq!(
        (s.plexes[0].local, s.plexes[1].local),
        (0, 1),
        "the new order"
    );
    let late = pattern(60, 65536);
    assert_eq!(
        write_blocks(&m, &mut q, ns, 12 * REGION_BLOCKS, &late, true),
        0
    );
    assert!(read_blocks(&b.card, &mut qb, 1, 12 * REGION_BLOCKS, 16) == late);
    assert!(
        all_zero(&read_blocks(&a.card, &mut qa, 1, 12 * REGION_BLOCKS, 16)),
        "A was dropped"
    );
    let rec = identify_ns(&mut b.card, 1).1.plex_record;
    assert_eq!(rec.generation, s.generation);
    assert_eq!(keys(&rec), sorted(vec![key(&l), key(&pb_)]));
    assert_eq!(identify_ns(&mut m, 1).1.plex_record, rec);

    // B's appliance is gone: B goes out of sync under writes; it cannot
    // stay the only copy; it is replaced by C, rebuilt in full.
    pb.cut();
    write_span(&m, &mut q, ns, 14 * REGION_BLOCKS, 1 << 20, 70);
    assert_eq!(status(&mut m, ns).plexes[0].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!(
        set_plexes(&mut m, ns, &[pb_, new(pc_)]),
        abi::STATUS_MIRROR_LAST_COPY
    );
    assert_eq!(status(&mut m, ns).plex_count, 2, "refused: unchanged");
    assert_eq!(set_plexes(&mut m, ns, &[l, new(pc_)]), 0);
    write_span(&m, &mut q, ns, 15 * REGION_BLOCKS, 1 << 20, 80);
    let s = wait_in_sync(&mut m, ns, 1);
    assert!(s.plexes[1].resync_bytes >= BLOCKS * 4096);
    let local = whole(&m, &mut q, 1);
    assert!(whole(&c.card, &mut qc, 1) == local, "C differs");
    assert!(local[14 << 20..(14 << 20) + 65536] == pattern(70, 65536)[..]);
    let rec = identify_ns(&mut c.card, 1).1.plex_record;
    assert_eq!(keys(&rec), sorted(vec![key(&l), key(&pc_)]));
    // The table survives a detach.
    assert_eq!(
        ns_admin(&mut m, abi::ADMIN_NS_ATTACHMENT, ns, abi::NS_DETACH),
        0
    );
    let s = status(&mut m, ns);
    assert_eq!(s.plex_count, 2);
    assert!(s.plexes[..2].iter().all(|p| p.state == abi::PLEX_IN_SYNC));
    drop(pa);
}

#[test]
fn a_mirror_made_again_elsewhere_copies_the_stale_plex_and_refuses_without_the_newest() {
    let mut a = Exporter::start_as("mirror-again-a", "DIA-A");
    let mut b = Exporter::start_as("mirror-again-b", "DIA-B");
    let mut c = Exporter::start_as("mirror-again-c", "DIA-C");
    let mut pa = Proxy::start(a.target);
    let mut pb = Proxy::start(b.target);
    let mut pc = Proxy::start(c.target);
    let table = [
        plex(pa.addr, "DIA-A", abi::PLEX_IN_SYNC),
        plex(pb.addr, "DIA-B", abi::PLEX_IN_SYNC),
        plex(pc.addr, "DIA-C", abi::PLEX_IN_SYNC),
    ];
    let (g, old) = {
        let mut m1 = PooledCard::start("mirror-again-m1");
        let cqe = create_mirror(&mut m1, &mirror_create(&table));
        assert_eq!(cqe.status_code(), 0);
        let ns = cqe.result;
        attach_ns(&mut m1, ns);
        let mut q = IoQ::create(&mut m1, 1);
        write_span(&m1, &mut q, ns, 0, 1 << 20, 1);
        assert_eq!(flush(&m1, &mut q, ns), 0);
        // C is cut; what is written now only A and B hold.
        pc.cut();
        write_span(&m1, &mut q, ns, 0, 1 << 20, 2);
        let s = status(&mut m1, ns);
        assert_eq!(s.plexes[2].state, abi::PLEX_OUT_OF_SYNC);
        (s.generation, pattern(1, 65536))
        // M1 is gone with its pool (not restarted).
    };
    let rec = identify_ns(&mut a.card, 1).1.plex_record;
    assert_eq!(rec.generation, g);
    assert_eq!(keys(&rec), sorted(vec![key(&table[0]), key(&table[1])]));
    assert_eq!(identify_ns(&mut b.card, 1).1.plex_record, rec);
    let stale = identify_ns(&mut c.card, 1).1.plex_record;
    assert!(stale.generation < g && keys(&stale).len() == 3);
    let mut qc = IoQ::create(&mut c.card, 1);
    assert!(read_blocks(&c.card, &mut qc, 1, 0, 16) == old, "C is stale");

    let mut m2 = PooledCard::start("mirror-again-m2");
    pc.restore();
    // Only the stale plex can be reached: refused, whatever it is given as.
    pa.cut();
    pb.cut();
    assert_eq!(
        create_mirror(&mut m2, &mirror_create(&table)).status_code(),
        abi::STATUS_MIRROR_STALE
    );
    // A plex of the newest copy missing from the table: refused too.
    pa.restore();
    pb.restore();
    assert_eq!(
        create_mirror(&mut m2, &mirror_create(&[table[0], table[2]])).status_code(),
        abi::STATUS_MIRROR_STALE
    );
    // All three, all given in sync: C is stale, copied in full.
    let cqe = create_mirror(&mut m2, &mirror_create(&table));
    assert_eq!(cqe.status_code(), 0);
    let ns = cqe.result;
    let s = status(&mut m2, ns);
    assert_eq!(s.generation, g + 1);
    assert_eq!(s.plexes[2].state, abi::PLEX_OUT_OF_SYNC);
    assert_eq!(s.plexes[2].dirty_regions, 16);
    assert!(s.plexes[..2].iter().all(|p| p.state == abi::PLEX_IN_SYNC));
    let rec = identify_ns(&mut b.card, 1).1.plex_record;
    assert_eq!(rec.generation, g + 1);
    assert_eq!(keys(&rec), sorted(vec![key(&table[0]), key(&table[1])]));
    // Reads spread over the in-sync plexes: none goes to C.
    attach_ns(&mut m2, ns);
    let mut q = IoQ::create(&mut m2, 1);
    for _ in 0..6 {
        assert!(read_blocks(&m2, &mut q, ns, 0, 16) == pattern(2, 65536));
    }
    let s = wait_in_sync(&mut m2, ns, 2);
    assert_eq!(s.plexes[2].resync_bytes, BLOCKS * 4096, "a full copy");
    assert!(read_blocks(&c.card, &mut qc, 1, 0, 16) == pattern(2, 65536));
    let mut qa = IoQ::create(&mut a.card, 1);
    assert!(whole(&c.card, &mut qc, 1) == whole(&a.card, &mut qa, 1));
    let rec = identify_ns(&mut c.card, 1).1.plex_record;
    assert_eq!(rec.generation, s.generation);
    assert_eq!(keys(&rec).len(), 3);
}
