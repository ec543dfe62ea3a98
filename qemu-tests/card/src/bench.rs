//! The card's hot paths, driven in-process one operation at a time for
//! `benches/card.rs` (criterion) and `examples/card_costs.rs` (instruction
//! counts under callgrind). Not an API: each item builds a part of the card
//! from plain inputs and runs it through the card's own code, the way the
//! guest reaches it (commands and descriptors in guest memory, doorbell
//! registers), but synchronously: an operation is what the card's thread
//! does once woken, without the wait for the wake-up.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use dia_abi::card::{
    self as abi, CompletionEntry, PortConfig, RxDescriptor, SubmissionEntry, TxDescriptor,
};

use crate::bar::Bar;
use crate::board::Board;
use crate::doorbell::{EventFd, Interrupts};
use crate::guest_memory::{GuestMemory, SharedMemory};
use crate::io_queue::{IoContext, IoWorker, Unthreaded};
use crate::net::{self, Buffers, Dest, NetState, Port, Rings, Switch};
use crate::pool::{Pool, PoolSpec};
use crate::qos::{Next, QosParams, Scheduler};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::scratch::Scratch;

/// A board: 1 MiB of BAR2, `ram` bytes of guest RAM (memfds), `vectors`
/// doorbells and interrupt lines (eventfds).
fn board(ram: usize, vectors: u16) -> Arc<Board> {
    board_with_irqs(ram, eventfds(vectors))
}

/// `vectors` eventfds.
fn eventfds(vectors: u16) -> Vec<EventFd> {
    (0..vectors)
        .map(|_| EventFd::new().expect("eventfd"))
        .collect()
}

/// A board as [`board`], raising the interrupt eventfds `irqs` (one per
/// vector).
fn board_with_irqs(ram: usize, irqs: Vec<EventFd>) -> Arc<Board> {
    let bar = SharedMemory::anonymous("bench-bar", abi::BAR2_MIN_SIZE).expect("memfd for BAR2");
    let ram = SharedMemory::anonymous("bench-ram", ram).expect("memfd for guest RAM");
    let vectors = irqs.len() as u16;
    Arc::new(Board {
        bar: Bar::new(bar).expect("BAR2"),
        mem: GuestMemory::new(ram),
        irq: Interrupts::new(irqs),
        doorbells: eventfds(vectors),
    })
}

/// The PRP walk (`prp::prp_segments`): guest (address, length) segments of
/// a `len`-byte transfer, or the status the command gets.
pub fn prp_segments(
    mem: &GuestMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Vec<(u64, usize)>, u16> {
    crate::prp::prp_segments(mem, prp1, prp2, len).map(crate::prp::Segments::into_vec)
}

/// A new scratch directory for one benchmark's pool (see `scratch.rs`).
fn scratch_dir() -> Scratch {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    Scratch::new(&format!(
        "dia-card-bench-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Where [`IoBench`] keeps its I/O submission queue in guest memory.
const IO_SQ: u64 = 0x1000;
/// Its completion queue.
const IO_CQ: u64 = 0x2000;
/// Its PRP list (one page: up to 513 pages of data with PRP1).
const IO_PRP_LIST: u64 = 0x3000;
/// Where its commands' data is, [`IO_DATA_MAX`] bytes.
pub const IO_DATA: u64 = 0x20_0000;
/// The largest transfer of one [`IoBench`] command.
pub const IO_DATA_MAX: usize = crate::nvm::MAX_TRANSFER_BYTES as usize;
/// Entries of its queues.
const IO_DEPTH: u16 = 64;
/// Its namespace's block size: 4 KiB.
const IO_LBA_SHIFT: u8 = 12;

/// One I/O queue pair of a card with a pool in memory (a file on tmpfs)
/// holding one namespace of 4 KiB blocks, all of it written once (so a
/// write lands on allocated chunks, the steady state of a written volume).
/// A command goes the whole way: its entry written to the SQ in guest
/// memory, the tail doorbell register moved, one engine pass (fetch into
/// the QoS scheduler, release, execute on the pool with the data moving
/// between guest pages and the pool file, counters, completion posted with
/// its phase tag, interrupt raised), the completion read and the CQ head
/// doorbell moved.
///
/// [`IoBench::threaded`] runs the queue's engine on its own thread, as the
/// card does: the doorbell eventfd wakes it and the driver waits for the
/// interrupt eventfd, so a command also pays for two wake-ups.
pub struct IoBench {
    engine: Engine,
    board: Arc<Board>,
    /// The driver's side of interrupt vector 1.
    irq: EventFd,
    nsid: u32,
    blocks: u64,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
    // Last: the pool's files go after the pool (held by the engine).
    _dir: Scratch,
}

impl std::fmt::Debug for IoBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoBench")
            .field("nsid", &self.nsid)
            .field("blocks", &self.blocks)
            .finish_non_exhaustive()
    }
}

/// How an [`IoBench`] runs its engine.
enum Engine {
    /// One pass per command, on the caller's thread.
    Unthreaded(Unthreaded),
    /// On its own thread, woken by the doorbell.
    Thread(#[expect(dead_code, reason = "held, not read: dropping it stops the thread")] IoWorker),
}

impl IoBench {
    /// A card with a `pool_mib` MiB pool and a namespace of `ns_mib` MiB,
    /// written full; its engine runs one pass per command on the caller's
    /// thread.
    pub fn new(pool_mib: u64, ns_mib: u64) -> Self {
        Self::build(pool_mib, ns_mib, false)
    }

    /// As [`IoBench::new`], with the engine on its own thread.
    pub fn threaded(pool_mib: u64, ns_mib: u64) -> Self {
        Self::build(pool_mib, ns_mib, true)
    }

    fn build(pool_mib: u64, ns_mib: u64, threaded: bool) -> Self {
        let irqs = eventfds(2);
        let irq = irqs[1].try_clone().expect("eventfd");
        let board = board_with_irqs(8 << 20, irqs);
        let dir = scratch_dir();
        let pool = Pool::open(&PoolSpec {
            paths: vec![dir.path().join("pool.img")],
            create_bytes: Some(pool_mib << 20),
        })
        .expect("the pool opens");
        let blocks = (ns_mib << 20) >> IO_LBA_SHIFT;
        let nsid = pool
            .create_namespace(blocks, IO_LBA_SHIFT, [0; abi::LABEL_LEN])
            .expect("namespace");
        pool.set_attached(nsid, true).expect("attach");
        let ctx = Arc::new(IoContext::new(
            board.clone(),
            Some(Arc::new(pool)),
            None,
            "nqn.2014-08.org.nvmexpress:uuid:bench".into(),
            "bench",
        ));
        let sq = SubmissionQueue::new(1, IO_SQ, IO_DEPTH);
        let cq = Arc::new(Mutex::new(CompletionQueue::new(IO_CQ, IO_DEPTH, 1, true)));
        // The PRP list: the data's pages after the first, in order.
        let page = abi::PRP_PAGE_BYTES;
        for i in 0..(page / 8) {
            board
                .mem
                .write(
                    IO_PRP_LIST + i * 8,
                    &(IO_DATA + (i + 1) * page).to_le_bytes(),
                )
                .expect("PRP list in guest memory");
        }
        let engine = if threaded {
            Engine::Thread(IoWorker::spawn(ctx, 1, sq, cq).expect("engine thread"))
        } else {
            Engine::Unthreaded(Unthreaded::new(ctx, 1, sq, cq))
        };
        let mut b = Self {
            engine,
            board,
            irq,
            nsid,
            blocks,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 0,
            _dir: dir,
        };
        let step = (IO_DATA_MAX >> IO_LBA_SHIFT) as u64;
        for slba in (0..blocks).step_by(step as usize) {
            let n = step.min(blocks - slba) as u32;
            assert_eq!(b.write(slba, n), abi::STATUS_SUCCESS, "fill at {slba}");
        }
        b
    }

    /// Guest memory (the data is at [`IO_DATA`]).
    pub fn mem(&self) -> &GuestMemory {
        &self.board.mem
    }

    /// Blocks of the namespace.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Reads `blocks` 4 KiB blocks at `slba` to [`IO_DATA`]; returns the
    /// completion's status code.
    pub fn read(&mut self, slba: u64, blocks: u32) -> u16 {
        self.command(abi::IO_READ, slba, blocks)
    }

    /// Writes `blocks` 4 KiB blocks at `slba` from [`IO_DATA`]; returns
    /// the completion's status code.
    pub fn write(&mut self, slba: u64, blocks: u32) -> u16 {
        self.command(abi::IO_WRITE, slba, blocks)
    }

    fn command(&mut self, opcode: u8, slba: u64, blocks: u32) -> u16 {
        let mem = &self.board.mem;
        let bar = &self.board.bar;
        let len = u64::from(blocks) << IO_LBA_SHIFT;
        assert!(len <= IO_DATA_MAX as u64, "{len} bytes: too large");
        let page = abi::PRP_PAGE_BYTES;
        let prp2 = match len {
            l if l <= page => 0,
            l if l <= 2 * page => IO_DATA + page,
            _ => IO_PRP_LIST,
        };
        let lba = abi::StartLba { lba: slba };
        let sqe = SubmissionEntry {
            opcode,
            cid: self.cid,
            nsid: self.nsid,
            prp1: IO_DATA,
            prp2,
            cdw10: lba.cdw10(),
            cdw11: lba.cdw11(),
            cdw12: abi::IoBlocks {
                blocks,
                ..Default::default()
            }
            .cdw12(),
            ..Default::default()
        };
        self.cid = self.cid.wrapping_add(1);
        let slot = IO_SQ + u64::from(self.sq_tail) * abi::SQE_SIZE as u64;
        mem.write_obj(slot, &sqe).expect("SQ in guest memory");
        self.sq_tail = (self.sq_tail + 1) % IO_DEPTH;
        bar.write32(abi::sq_tail_doorbell(1), u32::from(self.sq_tail));
        let at = IO_CQ + u64::from(self.cq_head) * abi::CQE_SIZE as u64;
        let cqe = match &mut self.engine {
            Engine::Unthreaded(e) => {
                let outcome = e.pass().expect("the queue protocol holds");
                assert_eq!(outcome, Some(None), "the scheduler ran everything");
                mem.read_obj::<CompletionEntry>(at)
                    .expect("CQ in guest memory")
            }
            Engine::Thread(_) => {
                self.board.doorbells[1].signal();
                loop {
                    let mut fds = [PollFd::new(self.irq.as_fd(), PollFlags::POLLIN)];
                    let n = poll(&mut fds, PollTimeout::from(5000u16)).expect("poll");
                    assert_eq!(n, 1, "no interrupt within 5 s for {sqe:?}");
                    self.irq.drain();
                    let cqe: CompletionEntry = mem.read_obj(at).expect("CQ in guest memory");
                    if cqe.phase() == self.phase {
                        break cqe;
                    }
                }
            }
        };
        assert_eq!(cqe.phase(), self.phase, "no completion for {sqe:?}");
        assert_eq!(cqe.cid, sqe.cid, "completion for another command");
        self.cq_head = (self.cq_head + 1) % IO_DEPTH;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        bar.write32(abi::cq_head_doorbell(1), u32::from(self.cq_head));
        cqe.status_code()
    }
}

/// Entries of each [`FrameBench`] ring.
const NET_RING: u16 = 256;
/// Port 1's TX ring (port 2's TX ring and port 1's RX ring follow).
const NET_TX1: u64 = 0x1000;
const NET_RX1: u64 = 0x2000;
const NET_TX2: u64 = 0x3000;
/// Port 2's RX ring.
const NET_RX2: u64 = 0x4000;
/// The frame port 1 sends.
const NET_FRAME: u64 = 0x10000;
/// The buffer every RX descriptor of port 2 points at.
const NET_RX_BUF: u64 = 0x20000;
/// The VLAN of both ports.
const NET_VLAN: u16 = 100;

/// A `len`-byte frame from `src` to `dst`: IPv4 carrying one TCP segment
/// with both checksums right, as a TCP stream's frames are, so the card's
/// receive check does all its work (below 54 bytes, only the Ethernet
/// header is set).
fn tcp4_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    fn sum(data: &[u8], mut acc: u32) -> u32 {
        for w in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)]));
        }
        acc
    }
    fn fold(mut acc: u32) -> u16 {
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    if len < 54 {
        return f;
    }
    for (i, b) in f[54..].iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let ip_len = (len - 14) as u16;
    f[14] = 0x45;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    let ip_csum = fold(sum(&f[14..34], 0));
    f[24..26].copy_from_slice(&ip_csum.to_be_bytes());
    f[46] = 5 << 4;
    let pseudo = sum(&f[26..34], 0) + 6 + u32::from(ip_len - 20);
    let tcp_csum = fold(sum(&f[34..], pseudo));
    f[50..52].copy_from_slice(&tcp_csum.to_be_bytes());
    f
}

/// Two ports of the network engine on one VLAN (MTU 1500, no limits):
/// port 1's driver sends one frame to port 2's MAC, and one engine pass
/// takes it off port 1's TX ring (descriptor, DMA read), looks its
/// destination up in the switch and delivers it into port 2's next posted
/// RX buffer (DMA write, descriptor, head register), having checked its
/// checksums (`RX_CSUM_OK`), and raises port 2's interrupt (port 1's too:
/// its driver did not set `PORT_TX_IRQ_OFF`).
pub struct FrameBench {
    board: Arc<Board>,
    state: NetState,
    bufs: Buffers,
    epoch: Instant,
    tx_tail: u16,
    rx_tail: u16,
    /// Frames on the wire one sent frame makes (its TSO segments).
    segments: u16,
}

impl std::fmt::Debug for FrameBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameBench").finish_non_exhaustive()
    }
}

impl FrameBench {
    /// The two ports, with a `frame_len`-byte frame (14..=1514) ready on
    /// every TX descriptor of port 1 and every RX buffer of port 2 posted.
    pub fn new(frame_len: u16) -> Self {
        assert!((14..=1514).contains(&frame_len), "{frame_len}: not a frame");
        Self::with(frame_len, (0, 0, 0), 1)
    }

    /// The same with a `TX_TSO` frame of `payload` TCP bytes (54 bytes of
    /// headers) that the card cuts at MSS 1460, one pass per frame.
    pub fn tso(payload: u16) -> Self {
        let segments = payload.div_ceil(1460).max(1);
        assert!(
            payload <= 65_000 && segments < NET_RING,
            "{payload}: too big"
        );
        Self::with(54 + payload, (abi::TX_TSO, 34, 1460), segments)
    }

    fn with(frame_len: u16, first: (u16, u16, u16), segments: u16) -> Self {
        let board = board(1 << 20, 3);
        let mut state = NetState::default();
        let cfg = PortConfig {
            vlan: NET_VLAN,
            mtu: 1500,
            ..Default::default()
        };
        let serial = abi::serial_field("BENCH-0001");
        let mac1 = net::port_mac(&serial, 1);
        let mac2 = net::port_mac(&serial, 2);
        for (id, mac, tx_ring, rx_ring) in
            [(1, mac1, NET_TX1, NET_RX1), (2, mac2, NET_TX2, NET_RX2)]
        {
            let rings = Rings {
                tx_ring,
                tx_entries: NET_RING,
                rx_ring,
                rx_entries: NET_RING,
            };
            state.add(Port::new(&board, id, mac, cfg, rings, id, 0.0));
        }
        let mem = &board.mem;
        let frame = tcp4_frame(mac2, mac1, usize::from(frame_len));
        mem.write(NET_FRAME, &frame).expect("frame in guest memory");
        let desc_at = |ring: u64, i: u16| ring + u64::from(i) * abi::PORT_DESC_SIZE as u64;
        for i in 0..NET_RING {
            let tx = TxDescriptor {
                addr: NET_FRAME,
                len: frame_len,
                flags: abi::TX_EOP | first.0,
                csum_start: first.1,
                csum_offset: first.2,
            };
            mem.write_obj(desc_at(NET_TX1, i), &tx)
                .expect("TX ring in guest memory");
            let rx = RxDescriptor {
                addr: NET_RX_BUF,
                len: 2048,
                ..Default::default()
            };
            mem.write_obj(desc_at(NET_RX2, i), &rx)
                .expect("RX ring in guest memory");
        }
        let b = Self {
            board,
            state,
            bufs: Buffers::new(),
            epoch: Instant::now(),
            tx_tail: 0,
            rx_tail: NET_RING - 1,
            segments,
        };
        b.write_reg(2, abi::PORT_RX_TAIL, u32::from(b.rx_tail));
        b
    }

    fn write_reg(&self, port: u16, reg: usize, value: u32) {
        self.board.bar.write32(abi::port_regs(port) + reg, value);
    }

    fn read_reg(&self, port: u16, reg: usize) -> u32 {
        self.board.bar.read32(abi::port_regs(port) + reg)
    }

    /// Port 1 sends one frame and one engine pass switches it; returns
    /// whether it reached port 2 (its RX head moved on by one, or by the
    /// segments of a TSO frame).
    pub fn switch_one(&mut self) -> bool {
        let before = self.read_reg(2, abi::PORT_RX_HEAD);
        self.tx_tail = (self.tx_tail + 1) % NET_RING;
        self.write_reg(1, abi::PORT_TX_TAIL, u32::from(self.tx_tail));
        let now = self.epoch.elapsed().as_secs_f64();
        self.state.pass(&self.board, None, now, &mut self.bufs);
        let after = self.read_reg(2, abi::PORT_RX_HEAD);
        // The driver reposts the buffers it took.
        self.rx_tail = (self.rx_tail + self.segments) % NET_RING;
        self.write_reg(2, abi::PORT_RX_TAIL, u32::from(self.rx_tail));
        after == (before + u32::from(self.segments)) % u32::from(NET_RING)
    }
}

/// The embedded switch alone: `ports` local ports on one VLAN, and the
/// lookup that decides where one frame goes (`Switch::forward`).
pub struct SwitchBench {
    switch: Switch,
    out: Vec<Dest>,
}

impl std::fmt::Debug for SwitchBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchBench").finish_non_exhaustive()
    }
}

impl SwitchBench {
    /// Ports 1..=`ports` on VLAN 100, port n with MAC 02:00:00:00:00:n.
    pub fn new(ports: u8) -> Self {
        let mut switch = Switch::default();
        for n in 1..=ports {
            switch.set_port(u16::from(n), NET_VLAN, Self::mac(n));
        }
        Self {
            switch,
            out: Vec::new(),
        }
    }

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    /// Where a unicast frame from port `from` to port `to`'s MAC goes;
    /// returns how many destinations it has (1).
    pub fn forward(&mut self, from: u8, to: u8) -> usize {
        let r = self.switch.forward(
            NET_VLAN,
            Self::mac(from),
            Self::mac(to),
            Dest::Port(u16::from(from)),
            0.0,
            &mut self.out,
        );
        assert!(r.is_ok(), "port {from} refused");
        self.out.len()
    }
}

/// Where [`PrpBench`] keeps its PRP list.
const PRP_LIST: u64 = 0x1000;
/// Where its transfer's data starts (page aligned).
const PRP_DATA: u64 = 0x10000;

/// The PRP walk of one transfer of `pages` 4 KiB pages: PRP1 and a list in
/// guest memory of `pages - 1` entries (one list page: up to 513 pages),
/// every other guest page, so that no two are neighbours the walk merges
/// into one segment: the walk's cost per page.
#[derive(Debug)]
pub struct PrpBench {
    mem: GuestMemory,
    len: usize,
    pages: usize,
}

impl PrpBench {
    /// The list of a `pages`-page transfer (3..=513: PRP2 is a list).
    pub fn new(pages: usize) -> Self {
        assert!(
            (3..=513).contains(&pages),
            "{pages} pages: not one list page"
        );
        let mem = GuestMemory::new(
            SharedMemory::anonymous("bench-prp", 8 << 20).expect("memfd for guest RAM"),
        );
        let page = abi::PRP_PAGE_BYTES;
        for i in 0..(pages as u64 - 1) {
            mem.write(
                PRP_LIST + i * 8,
                &(PRP_DATA + (i + 1) * 2 * page).to_le_bytes(),
            )
            .expect("PRP list in guest memory");
        }
        Self {
            mem,
            len: pages * page as usize,
            pages,
        }
    }

    /// Walks it; returns the number of segments (one per page).
    pub fn walk(&self) -> usize {
        let segs = prp_segments(
            &self.mem,
            std::hint::black_box(PRP_DATA),
            std::hint::black_box(PRP_LIST),
            self.len,
        )
        .expect("a valid list");
        assert_eq!(segs.len(), self.pages);
        segs.len()
    }
}

/// The storage QoS scheduler (`qos`) with `classes` namespaces, each with
/// `depth` 4 KiB commands queued and kept so: namespace 1 has a floor,
/// namespace 2 a ceiling far above what is asked (checked, never binding),
/// the weights are 1..=4. A decision is what an engine does per command:
/// one command arrives (`push`) and the scheduler picks the next to run
/// (`next`), on a clock that moves 10 µs per decision (100k IOPS).
#[derive(Debug)]
pub struct QosBench {
    sched: Scheduler<u64>,
    now: f64,
}

impl QosBench {
    /// The scheduler, its queues full.
    pub fn new(classes: u32, depth: usize) -> Self {
        let mut sched = Scheduler::default();
        for class in 1..=classes {
            let params = QosParams {
                min_iops: if class == 1 { 10_000.0 } else { 0.0 },
                max_iops: if class == 2 { 1e9 } else { 0.0 },
                weight: f64::from(1 + class % 4),
                ..QosParams::default()
            };
            sched.set(class, params, 0.0).expect("valid parameters");
            for i in 0..depth {
                sched.push(class, 4096, i as u64, 0.0);
            }
        }
        Self { sched, now: 0.0 }
    }

    /// One decision; returns the class that runs.
    pub fn decide(&mut self) -> u32 {
        self.now += 1e-5;
        match self.sched.next(std::hint::black_box(self.now)) {
            Next::Run(class, item) => {
                // Its queue stays as full: the next command arrives.
                self.sched.push(class, 4096, item, self.now);
                class
            }
            other => panic!("nothing ran: {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_bench_moves_the_data() {
        let mut b = IoBench::new(64, 4);
        let data: Vec<u8> = (0..IO_DATA_MAX as u32)
            .map(|i| ((i * 13) >> 3) as u8)
            .collect();
        // One page, two pages (PRP2), 32 pages (a list), around the queue.
        for (round, blocks) in [1u32, 2, 32].into_iter().cycle().take(70).enumerate() {
            let len = (blocks as usize) << IO_LBA_SHIFT;
            let slba = round as u64 * 40 % (b.blocks() - 32);
            b.mem().write(IO_DATA, &data[round..round + len]).unwrap();
            assert_eq!(b.write(slba, blocks), abi::STATUS_SUCCESS);
            b.mem().write(IO_DATA, &vec![0u8; len]).unwrap();
            assert_eq!(b.read(slba, blocks), abi::STATUS_SUCCESS);
            let mut back = vec![0u8; len];
            b.mem().read(IO_DATA, &mut back).unwrap();
            assert!(back == data[round..round + len], "round {round}");
        }
    }

    #[test]
    fn threaded_io_bench_completes() {
        let mut b = IoBench::threaded(64, 4);
        for i in 0..100 {
            assert_eq!(b.read(i, 1), abi::STATUS_SUCCESS);
            assert_eq!(b.write(i, 1), abi::STATUS_SUCCESS);
        }
    }

    #[test]
    fn the_other_paths_do_their_work() {
        let mut f = FrameBench::new(1514);
        for _ in 0..3 * NET_RING {
            assert!(f.switch_one());
        }
        let mut s = SwitchBench::new(8);
        assert_eq!(s.forward(1, 5), 1);
        assert_eq!(PrpBench::new(32).walk(), 32);
        let mut q = QosBench::new(8, 32);
        let mut runs = [0u32; 9];
        for _ in 0..8000 {
            runs[q.decide() as usize] += 1;
        }
        // Every namespace runs; the floor's (10k of 100k decisions/s)
        // gets at least its share.
        assert!(runs[1..].iter().all(|&r| r > 0), "{runs:?}");
        assert!(runs[1] >= 800, "{runs:?}");
    }
}
