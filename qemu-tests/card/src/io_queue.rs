//! I/O queue engines: one thread per I/O submission queue, woken by that
//! queue's doorbell eventfd. An engine fetches its queue's commands into the
//! card's QoS scheduler (`qos`), shared by all engines, then runs whatever
//! the scheduler says is next, whichever queue it came from: floors first,
//! ceilings respected, spare capacity by weight. A command completes on its
//! own queue's completion queue (shared and locked, as several SQs may use
//! one CQ) and raises that CQ's vector. A remote namespace's command is
//! handed to its link (`remote`) once released, and completes from there.
//! Per-namespace counters are kept here.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dia_abi::card::{self as abi, CompletionEntry, NamespaceStats, SubmissionEntry};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, warn};

use crate::board::Board;
use crate::fault::Fault;
use crate::mirror::Mirrors;
use crate::nvm;
use crate::pool::{Pool, MAX_NAMESPACES};
use crate::qos::{Next, Scheduler};
use crate::queue::{CompletionQueue, SubmissionQueue};
use crate::remote::{Job, RemoteLinks};

/// A completion queue shared by the engines of the SQs that use it.
pub(crate) type SharedCq = Arc<Mutex<CompletionQueue>>;

/// Commands run before the engine looks at its own doorbell again.
const RUN_BATCH: usize = 32;

/// Nice value of the engine threads: below the guest's vCPU threads. A
/// real card has its own cores; this one shares the host's with the
/// guest, and an engine woken by every doorbell that preempts a busy vCPU
/// stalls the guest mid-work (measured: 4k QD32 random reads at 0.56x
/// QEMU's nvme with the engines at nice -10, 0.90x at 0, 1.37x at +10).
/// At lower priority an engine runs when a vCPU halts, which is when the
/// guest waits for I/O, and takes what has queued up by then in one pass.
/// Bulk transfers are the exception ([`BULK_NICE`]).
const ENGINE_NICE: i32 = 10;

/// Nice value of an engine whose last run moved bulk data: the vCPUs'
/// own. Below them, the copy of a large transfer (a 1 MiB write is some
/// 150 µs of copying into the page cache under the pool file's lock, with
/// the guest waiting for it) waits for the vCPUs' slices, and the engine's
/// wakeup preempts none of them: 1 MiB QD8 writes ran at 0.91-0.92x
/// virtio-blk with the engines at nice 10 throughout, at 1.02x with them
/// at nice 0 throughout, and at 0.92x with only the runs that held a bulk
/// command at nice 0 (docs/performance.md). So an engine's priority
/// follows its work: it takes this value after a run with a bulk command
/// and keeps it, asleep too, until a run without one.
const BULK_NICE: i32 = 0;

// Bulk work runs above the small.
const _: () = assert!(BULK_NICE < ENGINE_NICE);

/// A command that moves at least this many bytes is bulk ([`BULK_NICE`]).
const BULK_BYTES: u64 = 256 << 10;

/// The nice value an engine at `nice` takes after a run of `ran` commands
/// of which `bulk` were bulk: [`BULK_NICE`] after a run with a bulk
/// command, [`ENGINE_NICE`] after one without, `nice` after an empty run
/// (a wakeup that found nothing keeps the work's priority).
fn nice_after_run(nice: i32, ran: usize, bulk: usize) -> i32 {
    if bulk > 0 {
        BULK_NICE
    } else if ran > 0 {
        ENGINE_NICE
    } else {
        nice
    }
}

/// Sets the calling thread's nice value; whether it took. Raising a nice
/// value needs no privilege; lowering it again (to [`BULK_NICE`]) needs
/// `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows it. A failure only costs
/// speed.
fn set_nice(nice: i32) -> bool {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on this thread's id; no memory is passed.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        debug!(
            nice,
            "engine priority unchanged: {}",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

/// Whether the commands of a submission queue may still touch guest
/// memory (their data buffers, PRP lists, the completion queue). A queue's
/// engine closes it when the queue goes away (a deletion or a reset),
/// after waiting for its commands; one that still runs then (a remote
/// namespace's, on a slow target) finds it closed and touches nothing, so
/// the reset's promise holds whatever the target does.
#[derive(Debug)]
pub(crate) struct QueueGate(RwLock<bool>);

impl QueueGate {
    fn new() -> Self {
        Self(RwLock::new(true))
    }

    /// Holds the gate open while the guard lives; `None` once it closed.
    pub(crate) fn enter(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let open = self.0.read().unwrap_or_else(PoisonError::into_inner);
        (*open).then_some(open)
    }

    /// Closes it, waiting for every holder to leave.
    fn close(&self) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = false;
    }
}

/// A fetched command waiting for its turn.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) sqe: SubmissionEntry,
    pub(crate) qid: u16,
    sq_head: u16,
    cqid: u16,
    cq: SharedCq,
    fetched: Instant,
    /// Its data transfer in bytes, as the scheduler charged it (0 for a
    /// command without data, or one of a namespace that had none).
    bytes: u64,
    /// Commands of this SQ fetched and not yet completed.
    inflight: Arc<AtomicUsize>,
    /// Whether its queue still takes completions and data.
    pub(crate) gate: Arc<QueueGate>,
    /// Its completion's DW0 (`nvm::Done::result`), 0 until it ran.
    result: u32,
}

impl Pending {
    /// Forgets the command without completing it (its queue is gone, or
    /// the firmware stops).
    pub(crate) fn discard(self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What engines share with the controller.
#[derive(Debug)]
pub(crate) struct IoContext {
    pub(crate) board: Arc<Board>,
    pub(crate) pool: Option<Arc<Pool>>,
    /// Set by an engine that found the driver broke the queue protocol; the
    /// controller turns it into a fatal status.
    pub(crate) fatal: Mutex<Option<String>>,
    /// The QoS scheduler; its classes are namespace ids (0: no namespace).
    pub(crate) sched: Mutex<Scheduler<Pending>>,
    /// Per-namespace counters.
    stats: Mutex<Counters>,
    /// Time zero of the scheduler's clock.
    pub(crate) epoch: Instant,
    /// An injected I/O fault (`--fault lose-io=` or `duplicate-completion=`).
    pub(crate) fault: Option<Fault>,
    /// I/O commands of the faulty namespace executed so far.
    fault_seen: AtomicUsize,
    /// The attached remote namespaces' links to their targets.
    pub(crate) remotes: RemoteLinks,
    /// The attached mirrored namespaces.
    pub(crate) mirrors: Mirrors,
}

impl IoContext {
    /// A context for a firmware run; remote namespaces connect as
    /// `host_nqn`.
    pub(crate) fn new(
        board: Arc<Board>,
        pool: Option<Arc<Pool>>,
        fault: Option<Fault>,
        host_nqn: String,
        serial: &str,
    ) -> Self {
        let fault =
            fault.filter(|f| matches!(f, Fault::LoseIo { .. } | Fault::DuplicateCompletion { .. }));
        Self {
            board,
            pool,
            fatal: Mutex::new(None),
            sched: Mutex::new(Scheduler::default()),
            stats: Mutex::new(Counters::new()),
            epoch: Instant::now(),
            fault,
            fault_seen: AtomicUsize::new(0),
            mirrors: Mirrors::new(host_nqn.clone(), serial),
            remotes: RemoteLinks::new(host_nqn),
        }
    }

    /// What the injected fault does to this executed command, if anything.
    fn fault_for(&self, nsid: u32) -> Option<Fault> {
        let f = self.fault?;
        let (fnsid, nth) = match f {
            Fault::LoseIo { nsid, nth } | Fault::DuplicateCompletion { nsid, nth } => (nsid, nth),
            _ => return None,
        };
        if fnsid != nsid {
            return None;
        }
        let seen = self.fault_seen.fetch_add(1, Ordering::Relaxed) + 1;
        (seen == nth as usize).then_some(f)
    }

    /// Seconds on the scheduler's clock.
    pub(crate) fn now(&self) -> f64 {
        self.at(Instant::now())
    }

    /// `t` on the scheduler's clock, in seconds: one clock read serves
    /// both the scheduler and a command's own timestamps.
    fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_secs_f64()
    }

    /// Records a broken queue protocol for the controller to turn into a
    /// fatal status (the first one wins).
    pub(crate) fn report_fatal(&self, why: String) {
        let mut f = self.fatal.lock().unwrap_or_else(PoisonError::into_inner);
        f.get_or_insert(why);
    }

    pub(crate) fn sched(&self) -> std::sync::MutexGuard<'_, Scheduler<Pending>> {
        self.sched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A namespace's counters (zero if it had no I/O).
    pub(crate) fn stats_of(&self, nsid: u32) -> NamespaceStats {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(nsid)
    }
}

/// The counters of each scheduling class (see [`classify`]: a namespace
/// id of the pool, 1..=`MAX_NAMESPACES`, or 0 for commands naming none of
/// them), a slot each, so counting costs an index, and what a guest sends
/// cannot make the table grow.
#[derive(Debug)]
struct Counters {
    by_id: Box<[NamespaceStats]>,
}

impl Counters {
    fn new() -> Self {
        Self {
            by_id: vec![NamespaceStats::default(); MAX_NAMESPACES as usize + 1].into_boxed_slice(),
        }
    }

    /// The counters of class `id` (zero if it had no command or is not a
    /// class).
    fn get(&self, id: u32) -> NamespaceStats {
        self.by_id.get(id as usize).copied().unwrap_or_default()
    }

    /// The counters of class `id`, to count a command; an id that is not a
    /// class counts in class 0's.
    fn entry(&mut self, id: u32) -> &mut NamespaceStats {
        let i = if (id as usize) < self.by_id.len() {
            id as usize
        } else {
            0
        };
        &mut self.by_id[i]
    }
}

/// A running engine; dropping it stops the thread and waits until none of
/// its queue's commands is queued or running anywhere.
#[derive(Debug)]
pub(crate) struct IoWorker {
    /// The completion queue its commands complete on.
    pub(crate) cqid: u16,
    qid: u16,
    ctx: Arc<IoContext>,
    stop: Arc<AtomicBool>,
    inflight: Arc<AtomicUsize>,
    gate: Arc<QueueGate>,
    thread: Option<JoinHandle<()>>,
}

impl IoWorker {
    /// Starts serving submission queue `qid`.
    pub(crate) fn spawn(
        ctx: Arc<IoContext>,
        qid: u16,
        sq: SubmissionQueue,
        cq: SharedCq,
    ) -> std::io::Result<Self> {
        let cqid = sq.cqid;
        let stop = Arc::new(AtomicBool::new(false));
        let inflight = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(QueueGate::new());
        let engine = Engine {
            ctx: ctx.clone(),
            qid,
            sq,
            cqid,
            cq,
            inflight: inflight.clone(),
            gate: gate.clone(),
            fetched: Vec::new(),
            raised: Vec::new(),
            nice: None,
        };
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sq{qid}"))
            .spawn(move || engine.serve(&s))?;
        Ok(Self {
            cqid,
            qid,
            ctx,
            stop,
            inflight,
            gate,
            thread: Some(thread),
        })
    }
}

impl Drop for IoWorker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Commands of this queue still waiting are dropped (the queue is
        // going away); ones another engine runs right now finish first.
        let qid = self.qid;
        let dropped = self.ctx.sched().remove_where(|p| p.qid == qid);
        if let Some(oldest) = dropped.iter().map(|p| p.fetched.elapsed()).max() {
            warn!(
                qid,
                commands = dropped.len(),
                oldest_ms = oldest.as_millis() as u64,
                "queue deleted with commands still waiting in the scheduler; dropped"
            );
        }
        self.inflight.fetch_sub(dropped.len(), Ordering::AcqRel);
        // A reset is confirmed to the driver only after this: commands that
        // run (a pool sync can take seconds) finish first, within the time
        // the card's CAP.TO promises.
        let deadline = Instant::now() + Duration::from_millis(u64::from(abi::CARD_QUIESCE_MS));
        while self.inflight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(100));
        }
        let left = self.inflight.load(Ordering::Acquire);
        if left > 0 {
            warn!(
                qid,
                left, "commands still running after the quiesce time; reset confirmed anyway"
            );
        }
        // Whatever still runs touches no guest memory from here on.
        self.gate.close();
    }
}

/// An engine without its thread, run by its caller one pass at a time
/// (`bench`): a pass is what a woken engine does after its doorbell, the
/// same `fetch` and `run`, minus the wait for the doorbell.
pub(crate) struct Unthreaded {
    engine: Engine,
    stop: AtomicBool,
}

impl Unthreaded {
    /// An engine for submission queue `qid`, as [`IoWorker::spawn`] makes one.
    pub(crate) fn new(ctx: Arc<IoContext>, qid: u16, sq: SubmissionQueue, cq: SharedCq) -> Self {
        let cqid = sq.cqid;
        Self {
            engine: Engine {
                ctx,
                qid,
                sq,
                cqid,
                cq,
                inflight: Arc::new(AtomicUsize::new(0)),
                gate: Arc::new(QueueGate::new()),
                fetched: Vec::new(),
                raised: Vec::new(),
                nice: None,
            },
            stop: AtomicBool::new(false),
        }
    }

    /// Fetches every command up to the rung tail and runs what the
    /// scheduler releases (at most one batch), posting completions and
    /// raising their vectors; returns as [`Engine::run`].
    pub(crate) fn pass(&mut self) -> Result<Option<Option<f64>>, String> {
        self.engine.fetch()?;
        self.engine.run(&self.stop)
    }
}

struct Engine {
    ctx: Arc<IoContext>,
    qid: u16,
    sq: SubmissionQueue,
    cqid: u16,
    cq: SharedCq,
    inflight: Arc<AtomicUsize>,
    gate: Arc<QueueGate>,
    /// Entries a fetch popped, before they go to the scheduler (kept
    /// between passes, empty, so a pass allocates nothing).
    fetched: Vec<SubmissionEntry>,
    /// Vectors a run raises at its end (kept as `fetched`).
    raised: Vec<u16>,
    /// The engine thread's nice value as last set ([`nice_after_run`]);
    /// `None` on a caller's thread (`Unthreaded`), whose priority is left
    /// alone, and once the host refused a change.
    nice: Option<i32>,
}

impl Engine {
    fn serve(mut self, stop: &AtomicBool) {
        if set_nice(ENGINE_NICE) {
            self.nice = Some(ENGINE_NICE);
        }
        let board = self.ctx.board.clone();
        let Some(doorbell) = board.doorbells.get(usize::from(self.qid)) else {
            self.ctx
                .report_fatal(format!("SQ {} has no doorbell", self.qid));
            return;
        };
        doorbell.drain();
        let mut wait: Option<f64> = None;
        while !stop.load(Ordering::Relaxed) {
            let max_ms = f64::from(abi::CARD_POLL_MS);
            let ms = wait.map_or(max_ms, |w| (w * 1000.0).clamp(0.0, max_ms));
            if ms < 2.0 && wait.is_some() {
                // Short waits for a ceiling: sleep precisely.
                std::thread::sleep(Duration::from_secs_f64(ms / 1000.0));
            } else {
                let mut fds = [PollFd::new(doorbell.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(ms.ceil() as i32).unwrap_or(PollTimeout::ZERO);
                let _ = poll(&mut fds, timeout);
            }
            doorbell.drain();
            while !stop.load(Ordering::Relaxed) {
                if let Err(why) = self.fetch() {
                    self.ctx.report_fatal(why);
                    return;
                }
                match self.run(stop) {
                    Ok(Some(w)) => {
                        wait = w;
                        break;
                    }
                    Ok(None) => continue, // Ran a full batch: look for more.
                    Err(why) => {
                        self.ctx.report_fatal(why);
                        return;
                    }
                }
            }
        }
    }

    /// Moves every command up to the rung tail into the scheduler.
    fn fetch(&mut self) -> Result<(), String> {
        let ctx = &self.ctx;
        let board = &ctx.board;
        let tail = board.bar.read32(abi::sq_tail_doorbell(self.qid));
        if !self.sq.valid_tail(tail) {
            return Err(format!(
                "SQ {} tail doorbell {tail} beyond the queue",
                self.qid
            ));
        }
        // Checked just above: fits the queue size (u16).
        while self.sq.pending(tail as u16) {
            let sqe = self
                .sq
                .pop(&board.mem)
                .map_err(|e| format!("SQ {}: {e}", self.qid))?;
            self.fetched.push(sqe);
        }
        if self.fetched.is_empty() {
            return Ok(());
        }
        // One clock read for the batch: its fetch time on the command and
        // on the scheduler's clock.
        let fetched = Instant::now();
        let now = ctx.at(fetched);
        let mut sched = ctx.sched();
        for sqe in self.fetched.drain(..) {
            let (class, bytes) = classify(ctx.pool.as_deref(), &sqe);
            self.inflight.fetch_add(1, Ordering::AcqRel);
            let p = Pending {
                sqe,
                qid: self.qid,
                sq_head: self.sq.head(),
                cqid: self.cqid,
                cq: self.cq.clone(),
                fetched,
                bytes,
                inflight: self.inflight.clone(),
                gate: self.gate.clone(),
                result: 0,
            };
            sched.push(class, bytes, p, now);
        }
        Ok(())
    }

    /// Runs what the scheduler releases. `Ok(Some(wait))`: nothing more to
    /// run now (`wait`: seconds until a throttled command may run);
    /// `Ok(None)`: a batch ran and more may be ready.
    fn run(&mut self, stop: &AtomicBool) -> Result<Option<Option<f64>>, String> {
        let ctx = &self.ctx;
        let raised = &mut self.raised;
        let mut ran = 0;
        let mut bulk = 0;
        let outcome = loop {
            if stop.load(Ordering::Relaxed) || ran == RUN_BATCH {
                break None;
            }
            // One lock and one clock read per decision; none when nothing
            // is queued. The release time is the command's start.
            let (started, now, next, throttled) = {
                let mut sched = ctx.sched();
                if sched.is_empty() {
                    break Some(None);
                }
                let started = Instant::now();
                let now = ctx.at(started);
                let next = sched.next(now);
                let throttled = match &next {
                    Next::Run(class, _) => sched.has_ceiling(*class),
                    _ => false,
                };
                (started, now, next, throttled)
            };
            match next {
                Next::Run(class, p) => {
                    ran += 1;
                    if p.bytes >= BULK_BYTES {
                        bulk += 1;
                    }
                    match complete(ctx, class, p, started, throttled, stop) {
                        Ok(Some(v)) if !raised.contains(&v) => raised.push(v),
                        Ok(_) => {}
                        Err(why) => {
                            // As before: the queue is broken, raise nothing.
                            raised.clear();
                            return Err(why);
                        }
                    }
                }
                Next::WaitUntil(t) => break Some(Some((t - now).max(0.0))),
                Next::Idle => break Some(None),
            }
        };
        for v in raised.drain(..) {
            ctx.board.irq.raise(v);
        }
        if let Some(nice) = self.nice {
            let next = nice_after_run(nice, ran, bulk);
            if next != nice {
                // A thread's privilege does not change while it runs: a
                // change refused once is refused for good, so the engine
                // stops trying (no syscall per run) at the value it has.
                self.nice = set_nice(next).then_some(next);
            }
        }
        Ok(outcome)
    }
}

/// The scheduling class and size of a command.
fn classify(pool: Option<&Pool>, sqe: &SubmissionEntry) -> (u32, u64) {
    // Only ids a namespace can have get a class of their own: every class
    // stays in the scheduler (and its counters) for good and each decision
    // looks at all of them, so ids a guest makes up (they fail with Invalid
    // Namespace) and the broadcast id share class 0.
    let class = if (1..=MAX_NAMESPACES).contains(&sqe.nsid) {
        sqe.nsid
    } else {
        0
    };
    let bytes = match (sqe.opcode, pool) {
        (abi::IO_READ | abi::IO_WRITE, Some(pool)) => pool
            .io_lba_shift(sqe.nsid)
            .map(|s| u64::from(abi::IoBlocks::from_cdw12(sqe.cdw12).blocks) << s)
            .unwrap_or(0),
        _ => 0,
    };
    (class, bytes)
}

/// Executes a command and posts its completion; returns the vector to
/// raise, if any. A command of a remote namespace is handed to its link,
/// which completes it later: nothing to raise now.
fn complete(
    ctx: &IoContext,
    class: u32,
    p: Pending,
    started: Instant,
    throttled: bool,
    stop: &AtomicBool,
) -> Result<Option<u16>, String> {
    if let Some(mirror) = ctx.mirrors.attached.get(p.sqe.nsid) {
        // A read the in-sync local plex serves runs here, as a local
        // namespace's: no hand-over to the mirror's workers, no bounce
        // buffer.
        if p.sqe.opcode == abi::IO_READ {
            if let Some((i, local)) = mirror.direct_read() {
                let sqe = SubmissionEntry {
                    nsid: local,
                    ..p.sqe
                };
                let status = nvm::execute(ctx.pool.as_deref(), &ctx.board.mem, &sqe).status;
                if status == abi::STATUS_SUCCESS {
                    mirror.count_read(i);
                    return finish(ctx, class, p, status, started, throttled, stop);
                }
            }
        }
        let job = Job {
            class,
            p,
            throttled,
            started,
        };
        let job = match mirror.push(job) {
            Ok(()) => return Ok(None),
            Err(job) => job,
        };
        // Detached meanwhile: as a detached local namespace.
        let status = abi::STATUS_NAMESPACE_NOT_READY;
        return finish(ctx, class, job.p, status, started, throttled, stop);
    }
    let (p, status) = match ctx.remotes.attached.get(p.sqe.nsid) {
        Some(link) => {
            let job = Job {
                class,
                p,
                throttled,
                started,
            };
            match link.push(job) {
                Ok(()) => return Ok(None),
                // Detached meanwhile: as a detached local namespace.
                Err(job) => (job.p, abi::STATUS_NAMESPACE_NOT_READY),
            }
        }
        None => {
            let mut p = p;
            let done = nvm::execute(ctx.pool.as_deref(), &ctx.board.mem, &p.sqe);
            let mut status = done.status;
            p.result = done.result;
            if p.sqe.opcode == abi::IO_FLUSH
                && matches!(p.sqe.nsid, 0 | u32::MAX)
                && status == abi::STATUS_SUCCESS
            {
                // Every namespace's completed writes, the remote ones' too.
                status = ctx.remotes.attached.flush_all();
                if status == abi::STATUS_SUCCESS {
                    status = ctx.mirrors.attached.flush_all();
                }
            }
            (p, status)
        }
    };
    finish(ctx, class, p, status, started, throttled, stop)
}

/// Counts a command that ran (from `started`) with `status` and posts its
/// completion (unless an injected fault says otherwise); returns the
/// vector to raise, if any.
pub(crate) fn finish(
    ctx: &IoContext,
    class: u32,
    p: Pending,
    status: u16,
    started: Instant,
    throttled: bool,
    stop: &AtomicBool,
) -> Result<Option<u16>, String> {
    if status != abi::STATUS_SUCCESS {
        debug!(
            qid = p.qid,
            opcode = p.sqe.opcode,
            cid = p.sqe.cid,
            nsid = p.sqe.nsid,
            "status {status:#x}"
        );
    }
    record(ctx, class, &p, status, started, throttled);
    match ctx.fault_for(p.sqe.nsid) {
        Some(Fault::LoseIo { nth, .. }) => {
            warn!(
                nsid = p.sqe.nsid,
                cid = p.sqe.cid,
                nth,
                "fault: completion of this I/O command is never posted"
            );
            p.inflight.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        Some(Fault::DuplicateCompletion { nth, .. }) => {
            warn!(
                nsid = p.sqe.nsid,
                cid = p.sqe.cid,
                nth,
                "fault: completion of this I/O command is posted twice"
            );
            let twin = Pending {
                sqe: p.sqe,
                qid: p.qid,
                sq_head: p.sq_head,
                cqid: p.cqid,
                cq: p.cq.clone(),
                fetched: p.fetched,
                bytes: p.bytes,
                inflight: p.inflight.clone(),
                gate: p.gate.clone(),
                result: p.result,
            };
            twin.inflight.fetch_add(1, Ordering::AcqRel);
            let first = post(ctx, p, status, stop)?;
            if let Some(v) = first {
                ctx.board.irq.raise(v);
            }
            // A moment later, as a confused card would.
            std::thread::sleep(Duration::from_millis(2));
            return post(ctx, twin, status, stop);
        }
        _ => {}
    }
    post(ctx, p, status, stop)
}

/// Posts the completion of `p` with `status` on its completion queue (waiting
/// while the queue is full, at most 5 s); returns the vector to raise, if any.
pub(crate) fn post(
    ctx: &IoContext,
    p: Pending,
    status: u16,
    stop: &AtomicBool,
) -> Result<Option<u16>, String> {
    let board = &ctx.board;
    let cqe = CompletionEntry {
        result: p.result,
        rsvd: 0,
        sq_head: p.sq_head,
        sq_id: p.qid,
        cid: p.sqe.cid,
        status: 0,
    };
    // The driver may not have consumed earlier completions yet: wait, at
    // most 5 s from finding the queue full (no clock read otherwise).
    let mut deadline = None;
    let mut cq = loop {
        let cq = p.cq.lock().unwrap_or_else(PoisonError::into_inner);
        let head = board.bar.read32(abi::cq_head_doorbell(p.cqid));
        if !cq.valid_head(head) {
            p.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "CQ {} head doorbell {head} beyond the queue",
                p.cqid
            ));
        }
        if !cq.is_full(head) {
            break cq;
        }
        drop(cq);
        board
            .irq
            .raise(p.cq.lock().unwrap_or_else(PoisonError::into_inner).vector);
        let now = Instant::now();
        let deadline = *deadline.get_or_insert(now + Duration::from_secs(5));
        if stop.load(Ordering::Relaxed) || now > deadline {
            warn!(cqid = p.cqid, "CQ stays full; completion dropped");
            p.inflight.fetch_sub(1, Ordering::AcqRel);
            return Ok(None);
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let posted = cq.post(&board.mem, cqe, status);
    let vector = cq.interrupts.then_some(cq.vector);
    drop(cq);
    p.inflight.fetch_sub(1, Ordering::AcqRel);
    posted.map_err(|e| format!("CQ {}: {e}", p.cqid))?;
    Ok(vector)
}

fn record(
    ctx: &IoContext,
    class: u32,
    p: &Pending,
    status: u16,
    started: Instant,
    throttled: bool,
) {
    let mut all = ctx.stats.lock().unwrap_or_else(PoisonError::into_inner);
    let s = all.entry(class);
    let bytes = p.bytes;
    match p.sqe.opcode {
        abi::IO_READ => {
            s.reads += 1;
            s.read_bytes += bytes;
        }
        abi::IO_WRITE => {
            s.writes += 1;
            s.write_bytes += bytes;
        }
        _ => s.other += 1,
    }
    if status != abi::STATUS_SUCCESS {
        s.errors += 1;
    }
    // Waiting behind a ceiling (beyond ordinary queueing) counts as throttled.
    if throttled {
        let queued = started.duration_since(p.fetched);
        if queued > Duration::from_micros(200) {
            s.throttled += 1;
            s.throttled_ns += queued.as_nanos() as u64;
        }
    }
    let us = p.fetched.elapsed().as_micros().max(1) as u64;
    let bucket = (64 - us.leading_zeros() as usize).min(abi::LATENCY_BUCKETS - 1);
    s.latency_us_log2[bucket] += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_every_class_are_kept_apart() {
        let mut c = Counters::new();
        for (id, n) in [(0, 1), (1, 2), (MAX_NAMESPACES, 3), (MAX_NAMESPACES + 1, 4)] {
            for _ in 0..n {
                c.entry(id).reads += 1;
            }
        }
        c.entry(u32::MAX - 1).errors += 1;
        // Ids that are not classes count in class 0's.
        assert_eq!(c.get(0).reads, 5);
        assert_eq!(c.get(0).errors, 1);
        assert_eq!(c.get(1).reads, 2);
        assert_eq!(c.get(MAX_NAMESPACES).reads, 3);
        assert_eq!(c.get(MAX_NAMESPACES + 1), NamespaceStats::default());
        assert_eq!(c.get(7), NamespaceStats::default());
        assert_eq!(c.get(12345), NamespaceStats::default());
    }

    #[test]
    fn an_engine_runs_at_the_vcpus_priority_from_a_bulk_run_until_a_run_without_one() {
        let mut nice = ENGINE_NICE;
        let mut seen = Vec::new();
        // (commands run, of them bulk): small I/O, a wakeup that found
        // nothing, a run with one bulk command among small ones, bulk only,
        // nothing, small again.
        for (ran, bulk) in [(32, 0), (0, 0), (5, 1), (8, 8), (0, 0), (3, 0)] {
            nice = nice_after_run(nice, ran, bulk);
            seen.push(nice);
        }
        let (low, high) = (ENGINE_NICE, BULK_NICE);
        assert_eq!(seen, [low, low, high, high, high, low]);
    }

    #[test]
    fn made_up_namespace_ids_share_one_class() {
        let sqe = |nsid| SubmissionEntry {
            opcode: abi::IO_READ,
            nsid,
            ..SubmissionEntry::default()
        };
        assert_eq!(classify(None, &sqe(1)).0, 1);
        assert_eq!(classify(None, &sqe(MAX_NAMESPACES)).0, MAX_NAMESPACES);
        for nsid in [0, MAX_NAMESPACES + 1, 12345, u32::MAX - 1, u32::MAX] {
            assert_eq!(classify(None, &sqe(nsid)).0, 0, "nsid {nsid}");
        }
    }
}
