//! Entry points for the card's cargo-fuzz targets (`fuzz/`; built only
//! with the `fuzzing` feature, and not an API). Each builds the part of the
//! card a target drives from plain inputs, reaches it the way a guest
//! does (guest memory, registers, commands), and checks what must hold
//! whatever the guest wrote: a malformed command gets an error status, a
//! driver mistake is dropped or refused, never a panic or a fatal status
//! the guest did not ask for.

use std::path::Path;
use std::sync::Arc;

use dia_abi::card::{self as abi, CompletionEntry, PortConfig, PortStats, SubmissionEntry};

use crate::bar::Bar;
use crate::board::Board;
use crate::controller::{CardConfig, Controller};
use crate::doorbell::{EventFd, Interrupts};
use crate::guest_memory::{GuestMemory, SharedMemory};
use crate::net::{self, Buffers, NetState, Port, Rings};
use crate::pool::{self, Pool, PoolSpec};
use crate::queue::check_placement;
use crate::scratch::Scratch;

pub use crate::nvm::MAX_TRANSFER_BYTES;
pub use crate::pool::CHUNK_BYTES;

/// Guest memory of `bytes` zero bytes.
pub fn guest_memory(bytes: usize) -> GuestMemory {
    GuestMemory::new(SharedMemory::anonymous("fuzz-ram", bytes).expect("memfd for guest RAM"))
}

/// A board: 1 MiB of BAR2, `ram` bytes of guest RAM, `vectors` doorbells
/// and interrupt lines.
pub fn board(ram: usize, vectors: u16) -> Arc<Board> {
    let bar = SharedMemory::anonymous("fuzz-bar", abi::BAR2_MIN_SIZE).expect("memfd for BAR2");
    let eventfds = || {
        (0..vectors)
            .map(|_| EventFd::new().expect("eventfd"))
            .collect()
    };
    Arc::new(Board {
        bar: Bar::new(bar).expect("BAR2"),
        mem: guest_memory(ram),
        irq: Interrupts::new(eventfds()),
        doorbells: eventfds(),
    })
}

/// A directory for scratch pools, removed on drop: on tmpfs when there is
/// one (a pool syncs on every commit), one per thread.
#[derive(Debug)]
pub struct ScratchDir(Scratch);

impl ScratchDir {
    /// A fresh, empty directory.
    pub fn new() -> Self {
        Self(Scratch::new(&format!(
            "dia-card-fuzz-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A freshly formatted pool of `bytes` in it.
    pub fn pool(&self, bytes: u64) -> Pool {
        let _ = std::fs::remove_file(self.path().join("pool.img"));
        self.pool_spec(Some(bytes))
    }

    /// The pool in it opened again, as a restarted firmware does (drop the
    /// old one first, without a flush, for a crash).
    pub fn reopen_pool(&self) -> Pool {
        self.pool_spec(None)
    }

    fn pool_spec(&self, create_bytes: Option<u64>) -> Pool {
        Pool::open(&PoolSpec {
            paths: vec![self.path().join("pool.img")],
            create_bytes,
        })
        .expect("the pool opens")
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

/// The PRP walk: guest (address, length) segments of a `len`-byte
/// transfer, or the status the command gets.
pub fn prp_segments(
    mem: &GuestMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Vec<(u64, usize)>, u16> {
    crate::prp::prp_segments(mem, prp1, prp2, len).map(crate::prp::Segments::into_vec)
}

/// Executes one NVM I/O command as an I/O queue engine does; returns its
/// completion status.
pub fn nvm_execute(pool: Option<&Pool>, mem: &GuestMemory, sqe: &SubmissionEntry) -> u16 {
    crate::nvm::execute(pool, mem, sqe).status
}

/// The pool's metadata decoder on a payload (no header, no CRC): returns
/// whether it decoded; panics if what it accepted breaks a rule the card
/// relies on.
pub fn pool_metadata_payload(payload: &[u8], total_chunks: u32) -> bool {
    pool::fuzzing::check_payload(payload, total_chunks)
}

/// A metadata slot holding `payload` with a right header and CRC.
pub fn pool_metadata_slot(generation: u64, payload: &[u8]) -> Vec<u8> {
    pool::fuzzing::slot(generation, payload)
}

/// The pool's slot reader on a whole (damaged) slot read from slot
/// `which`: returns whether it was usable; panics as
/// [`pool_metadata_payload`].
pub fn pool_read_slot(raw: &[u8], which: u64, total_chunks: u32) -> bool {
    pool::fuzzing::check_slot(raw, which, total_chunks)
}

/// Opens a fresh pool in `dir` whose metadata slot `which` holds `raw`,
/// and uses it if it opens.
pub fn pool_open_with_slot(dir: &ScratchDir, raw: &[u8], which: u64) {
    pool::fuzzing::open_with_slot(dir.path(), raw, which)
}

/// Where [`AdminBench`] keeps its admin queues.
pub const ADMIN_SQ: u64 = 0x1000;
/// The admin completion queue.
pub const ADMIN_CQ: u64 = 0x2000;
/// Entries of each admin queue.
pub const ADMIN_DEPTH: u16 = 16;

/// A controller driven synchronously through its admin queue, as the
/// driver does but without the firmware's thread: commands are written to
/// the admin SQ in guest memory, the tail doorbell moves, and one service
/// pass executes them.
#[derive(Debug)]
pub struct AdminBench {
    board: Arc<Board>,
    ctrl: Controller,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    cid: u16,
    // After `ctrl`: the controller (and its pool) go first.
    _dir: Option<ScratchDir>,
}

impl AdminBench {
    /// A card with `ram` bytes of guest RAM and `vectors` vectors, with an
    /// 8 MiB pool or none, enabled.
    pub fn new(ram: usize, vectors: u16, with_pool: bool) -> Self {
        let board = board(ram, vectors);
        let dir = with_pool.then(ScratchDir::new);
        let pool = dir.as_ref().map(|d| Arc::new(d.pool(8 << 20)));
        let cfg = CardConfig {
            serial: "FUZZ-0001".into(),
            vectors,
            max_queue_entries: 64,
            fault: None,
            qos_capacity_iops: 100_000,
            qos_capacity_bps: 1 << 30,
            media_iops: 0,
            media_bps: 0,
            max_ports: 8,
            uplink_bind: None,
            uplink_peers: Vec::new(),
        };
        let mut ctrl = Controller::new(board.clone(), cfg, pool);
        let bar = &board.bar;
        let depth = u32::from(ADMIN_DEPTH - 1);
        bar.write32(abi::REG_AQA, depth | depth << 16);
        bar.write64(abi::REG_ASQ, ADMIN_SQ);
        bar.write64(abi::REG_ACQ, ADMIN_CQ);
        bar.write32(abi::REG_CC, abi::CC_EN);
        ctrl.service();
        assert_eq!(
            bar.read32(abi::REG_CSTS) & (abi::CSTS_RDY | abi::CSTS_CFS),
            abi::CSTS_RDY,
            "the controller enables"
        );
        Self {
            board,
            ctrl,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            cid: 0,
            _dir: dir,
        }
    }

    /// Guest memory (to lay out what commands point at).
    pub fn mem(&self) -> &GuestMemory {
        &self.board.mem
    }

    /// Submits `sqe` (with the next command id) and runs it; returns its
    /// completion. Panics if the command got no completion or made the
    /// controller fatal: a command's contents are never the card's reason
    /// to stop.
    pub fn run(&mut self, mut sqe: SubmissionEntry) -> CompletionEntry {
        sqe.cid = self.cid;
        self.cid = self.cid.wrapping_add(1);
        let mem = &self.board.mem;
        let bar = &self.board.bar;
        let slot = ADMIN_SQ + u64::from(self.sq_tail) * abi::SQE_SIZE as u64;
        mem.write_obj(slot, &sqe).expect("admin SQ in guest memory");
        // A stale entry in the CQ slot (a command may have written data
        // over the queue) must not pass for the completion.
        let at = ADMIN_CQ + u64::from(self.cq_head) * abi::CQE_SIZE as u64;
        let stale = CompletionEntry {
            status: abi::make_status(0, !self.phase),
            ..CompletionEntry::default()
        };
        mem.write_obj(at, &stale).expect("admin CQ in guest memory");
        self.sq_tail = (self.sq_tail + 1) % ADMIN_DEPTH;
        bar.write32(abi::sq_tail_doorbell(0), u32::from(self.sq_tail));
        self.ctrl.service();
        let csts = bar.read32(abi::REG_CSTS);
        assert_eq!(
            csts & abi::CSTS_CFS,
            0,
            "admin opcode {:#04x} made the controller fatal",
            sqe.opcode
        );
        let cqe: CompletionEntry = mem.read_obj(at).expect("admin CQ in guest memory");
        assert_eq!(cqe.phase(), self.phase, "no completion for {sqe:?}");
        assert_eq!(cqe.cid, sqe.cid, "completion for another command");
        self.cq_head = (self.cq_head + 1) % ADMIN_DEPTH;
        if self.cq_head == 0 {
            self.phase = !self.phase;
        }
        bar.write32(abi::cq_head_doorbell(0), u32::from(self.cq_head));
        cqe
    }
}

/// The network engine's state with ports on a board, driven one pass at a
/// time without the engine's thread.
#[derive(Debug)]
pub struct NetBench {
    board: Arc<Board>,
    state: NetState,
    bufs: Buffers,
    rings: Vec<(u16, Rings)>,
}

impl NetBench {
    /// A board with `ram` bytes of guest RAM and `vectors` vectors, no ports.
    pub fn new(ram: usize, vectors: u16) -> Self {
        Self {
            board: board(ram, vectors),
            state: NetState::default(),
            bufs: Buffers::new(),
            rings: Vec::new(),
        }
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemory {
        &self.board.mem
    }

    /// Adds port `id` if Create Port would take these arguments (the same
    /// checks, except the vector's other users); returns whether it did.
    #[expect(clippy::too_many_arguments, reason = "Create Port's fields")]
    pub fn add_port(
        &mut self,
        id: u16,
        cfg: PortConfig,
        tx_ring: u64,
        tx_entries: u16,
        rx_ring: u64,
        rx_entries: u16,
        vector: u16,
    ) -> bool {
        let mem = &self.board.mem;
        let ok = (1..=net::MAX_PORTS).contains(&id)
            && self.state.port(id).is_none()
            && cfg.validate().is_ok()
            && abi::port_ring_entries_ok(tx_entries)
            && abi::port_ring_entries_ok(rx_entries)
            && check_placement(mem, tx_ring, tx_entries, abi::PORT_DESC_SIZE)
            && check_placement(mem, rx_ring, rx_entries, abi::PORT_DESC_SIZE)
            && vector != 0
            && usize::from(vector) < self.board.doorbells.len();
        if !ok {
            return false;
        }
        let serial = abi::serial_field("FUZZ-0001");
        let rings = Rings {
            tx_ring,
            tx_entries,
            rx_ring,
            rx_entries,
        };
        let mac = net::port_mac(&serial, id);
        self.state
            .add(Port::new(&self.board, id, mac, cfg, rings, vector, 0.0));
        self.rings.push((id, rings));
        true
    }

    /// The MAC of port `id` (the card's rule).
    pub fn mac(&self, id: u16) -> Option<[u8; 6]> {
        self.state.port(id).map(|p| p.mac)
    }

    /// Writes a port register (the driver's side: tails, IRQ mask).
    pub fn write_reg(&self, id: u16, reg: usize, value: u32) {
        self.board.bar.write32(abi::port_regs(id) + reg, value);
    }

    /// Set Port with `cfg` if it is valid; returns whether it applied.
    pub fn reconfigure(&mut self, id: u16, cfg: PortConfig, now: f64) -> bool {
        cfg.validate().is_ok() && self.state.reconfigure(id, cfg, now)
    }

    /// Delete Port.
    pub fn remove(&mut self, id: u16) -> bool {
        self.rings.retain(|(p, _)| *p != id);
        self.state.remove(&self.board, id)
    }

    /// A port's counters.
    pub fn stats(&self, id: u16, now: f64) -> Option<PortStats> {
        self.state.stats(id, now)
    }

    /// One engine pass at time `now` (seconds); then checks that the card's
    /// head registers stayed inside their rings.
    pub fn pass(&mut self, now: f64) {
        self.state.pass(&self.board, None, now, &mut self.bufs);
        for (id, r) in &self.rings {
            let regs = abi::port_regs(*id);
            let tx_head = self.board.bar.read32(regs + abi::PORT_TX_HEAD);
            let rx_head = self.board.bar.read32(regs + abi::PORT_RX_HEAD);
            assert!(
                tx_head < u32::from(r.tx_entries),
                "port {id}: TX head {tx_head}"
            );
            assert!(
                rx_head < u32::from(r.rx_entries),
                "port {id}: RX head {rx_head}"
            );
        }
    }
}
