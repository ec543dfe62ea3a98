//! Remote namespaces on the card's I/O path. A remote namespace's data
//! lives behind an NVMe/TCP target; the pool keeps only its table entry
//! (`pool::Remote`). While it is attached, a [`Link`] serves it: a few
//! worker threads of its own and one initiator session
//! (`fabric::initiator`), connected at the first I/O after the attach or
//! the firmware's start, and again after a transport failure, no sooner
//! than a bounded backoff after the last failed attempt.
//!
//! The I/O engines hand a remote namespace's commands to its link once the
//! QoS scheduler released them (so floors, ceilings and weights apply as to
//! a local namespace) and go on with other namespaces: a slow or dead
//! target holds up only its own namespace. A worker checks the command,
//! moves its data between guest memory (its PRPs) and a bounce buffer,
//! calls the target and posts the completion through the engines' own
//! `finish` (counters, faults, completion queue). A target that cannot be
//! reached costs at most the initiator's timeouts, then its commands
//! complete with Transient Transport Error at once until it is back.
//!
//! Durability: writes the card completed but the target has not flushed
//! may be lost if the target loses its cache. When a session ends with
//! such writes, the next Flush of the namespace fails once with Write
//! Fault, so the guest learns of it (see docs/card-interface.md).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dia_abi::card as abi;
use tracing::{debug, info, warn};

use crate::attached::{self, Attached, Cmd, Commands, Fail, Registry, Stop};
use crate::fabric::initiator::{
    self, Config, Error, NamespaceInfo, RemoteNamespace, Session, ONCS_DSM, ONCS_WRITE_ZEROES,
};
use crate::io_queue::{IoContext, Pending};
use crate::nvm;
use crate::pool::Remote;

/// Worker threads per attached remote namespace: its commands in flight
/// to the target at once.
pub(crate) const WORKERS: usize = 4;
/// I/O queues (TCP connections) of a namespace's session.
const IO_QUEUES: u16 = 2;
/// Entries asked for per I/O queue.
const QUEUE_ENTRIES: u16 = 32;
/// Opening a TCP connection and exchanging ICReq/ICResp.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One command on the target; past it the session ends. Well below the
/// reset's wait for running commands (`CARD_QUIESCE_MS`).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// CSTS.RDY after CC.EN.
const ENABLE_TIMEOUT: Duration = Duration::from_secs(2);
/// A command of Create Remote Namespace's probe, which runs on the admin
/// queue (the driver waits 5 s for an admin command).
const PROBE_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The wait after the first failed connect; it doubles with each failure
/// up to [`BACKOFF_MAX`] and starts again after a success.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest wait between connect attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bytes of zeroes one write of the Write Zeroes fallback moves.
const ZEROES_STEP_BYTES: usize = 1 << 20;
/// Bits of a completion status the card's completions carry (SCT << 8 |
/// SC): no DNR or More bit.
const STATUS_CODE: u16 = 0x7ff;

/// The host NQN a card connects to targets with.
pub(crate) fn host_nqn(serial: &str) -> String {
    format!("{}{serial}:host", crate::fabric::NQN_PREFIX)
}

/// The initiator's configuration for `target`; `None` if its address or
/// NQN does not pass its checks.
fn config(
    target: &abi::RemoteTarget,
    host_nqn: &str,
    command_timeout: Duration,
    io_queues: u16,
) -> Option<Config> {
    let addr = SocketAddr::new(target.ip()?, target.port);
    let mut c = Config::new(addr, target.subnqn_str()?);
    c.hostnqn = host_nqn.to_string();
    c.hostid = initiator::host_id(host_nqn);
    c.header_digest = target.digests & abi::REMOTE_HEADER_DIGEST != 0;
    c.data_digest = target.digests & abi::REMOTE_DATA_DIGEST != 0;
    c.io_queues = io_queues;
    c.queue_entries = QUEUE_ENTRIES;
    c.command_timeout = command_timeout;
    c.connect_timeout = CONNECT_TIMEOUT;
    c.enable_timeout = ENABLE_TIMEOUT;
    Some(c)
}

/// The initiator's configuration for a session that serves I/O to
/// `target` (a remote namespace's link, a mirror's remote plex); `None`
/// if its address or NQN does not pass its checks.
pub(crate) fn io_config(target: &abi::RemoteTarget, host_nqn: &str) -> Option<Config> {
    config(target, host_nqn, COMMAND_TIMEOUT, IO_QUEUES)
}

/// A failed Create Remote Namespace: the status and result dword.
pub(crate) type Refusal = (u16, u32);

/// What Create Remote Namespace answers for an initiator error.
fn refusal(e: &Error) -> Refusal {
    match e {
        Error::Transport(_) => (abi::STATUS_REMOTE_UNREACHABLE, 0),
        Error::Status(s) => (abi::STATUS_REMOTE_REFUSED, u32::from(s.code())),
        Error::Unusable(_) => (abi::STATUS_REMOTE_REFUSED, 0),
        Error::Invalid(_) => (abi::STATUS_INVALID_FIELD, 0),
    }
}

/// Create Remote Namespace's look at the target: connects (one I/O
/// queue, short timeouts), reads the remote namespace's size and format,
/// and ends the session.
pub(crate) fn probe(target: &abi::RemoteTarget, host_nqn: &str) -> Result<NamespaceInfo, Refusal> {
    let cfg =
        config(target, host_nqn, PROBE_COMMAND_TIMEOUT, 1).ok_or((abi::STATUS_INVALID_FIELD, 0))?;
    if cfg!(feature = "fuzzing") {
        // The fuzz targets reach no network: an admin command the fuzzer
        // made valid would connect anywhere.
        return Err((abi::STATUS_REMOTE_UNREACHABLE, 0));
    }
    let session = Session::connect(&cfg).map_err(|e| {
        info!(addr = %cfg.addr, subnqn = cfg.subnqn, "remote namespace: cannot connect: {e}");
        refusal(&e)
    })?;
    let ns = session.namespace(target.nsid);
    session.abort();
    ns.map(|ns| ns.info()).map_err(|e| {
        info!(addr = %cfg.addr, subnqn = cfg.subnqn, remote_nsid = target.nsid,
            "remote namespace: refused: {e}");
        refusal(&e)
    })
}

/// A command handed to a link: what the engine's `finish` needs later.
pub(crate) struct Job {
    /// The command's scheduling class (its namespace).
    pub(crate) class: u32,
    /// The command.
    pub(crate) p: Pending,
    /// Its namespace has a ceiling (for the counters).
    pub(crate) throttled: bool,
    /// When the scheduler released it.
    pub(crate) started: Instant,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    stop: Option<Stop>,
}

/// A connected session and the remote namespace on it.
struct Live {
    session: Session,
    ns: RemoteNamespace,
    /// The target's optional NVM commands (ONCS).
    oncs: u16,
}

/// What a worker calls the target through.
#[derive(Clone)]
struct Handle {
    ns: RemoteNamespace,
    /// Which session it belongs to (a failure ends only that one).
    generation: u64,
    oncs: u16,
}

struct Conn {
    live: Option<Live>,
    /// Sessions made so far.
    generation: u64,
    /// No connect attempt before this.
    next_attempt: Instant,
    /// The wait after the next failed attempt.
    backoff: Duration,
    /// A session ended with writes up to this count not flushed: the next
    /// Flush fails once.
    lost_upto: Option<u64>,
}

/// One attached remote namespace's path to its target.
pub(crate) struct Link {
    nsid: u32,
    remote_nsid: u32,
    size_blocks: u64,
    lba_shift: u8,
    cfg: Config,
    ctx: Weak<IoContext>,
    conn: Mutex<Conn>,
    /// `abi::REMOTE_PATH_*`, readable without waiting for a connect.
    path: AtomicU8,
    jobs: Mutex<Jobs>,
    more: Condvar,
    /// Cached writes (not FUA), Write Zeroes and deallocations completed.
    writes: AtomicU64,
    /// Of `writes`, how many a successful Flush covered.
    flushed: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("nsid", &self.nsid)
            .field("addr", &self.cfg.addr)
            .field("subnqn", &self.cfg.subnqn)
            .field("remote_nsid", &self.remote_nsid)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    /// Hands a command over; gives it back if the link stops.
    pub(crate) fn push(&self, job: Job) -> Result<(), Box<Job>> {
        let mut jobs = lock(&self.jobs);
        if jobs.stop.is_some() {
            return Err(Box::new(job));
        }
        jobs.queue.push_back(job);
        drop(jobs);
        self.more.notify_one();
        Ok(())
    }

    fn stopping(&self) -> bool {
        lock(&self.jobs).stop.is_some()
    }

    fn serve(self: &Arc<Self>) {
        loop {
            let (job, stop) = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if let Some(j) = jobs.queue.pop_front() {
                        break (j, jobs.stop);
                    }
                    if jobs.stop.is_some() {
                        return;
                    }
                    jobs = self.more.wait(jobs).unwrap_or_else(PoisonError::into_inner);
                }
            };
            if stop == Some(Stop::Abort) {
                job.p.discard();
                continue;
            }
            self.run(job);
        }
    }

    /// Flushes if any write since the last flush needs it (a broadcast
    /// Flush); the status.
    fn flush_if_needed(self: &Arc<Self>) -> u16 {
        let needed = self.writes.load(Ordering::Acquire) > self.flushed.load(Ordering::Acquire)
            || lock(&self.conn).lost_upto.is_some();
        if needed {
            Fail::status(self.flush())
        } else {
            abi::STATUS_SUCCESS
        }
    }

    /// The result of a call on the target; a failure of the connection
    /// ends the session (the next command connects again).
    fn call<T>(&self, h: &Handle, r: Result<T, Error>) -> Result<T, Fail> {
        r.map_err(|e| {
            if matches!(e, Error::Transport(_) | Error::Unusable(_)) {
                let mut c = lock(&self.conn);
                if c.generation == h.generation {
                    self.end(&mut c, &e.to_string());
                }
            }
            // The card's completions carry no DNR or More bit.
            Fail::Status(e.host_status() & STATUS_CODE)
        })
    }

    /// Ends the live session, if any: the fence for writes not flushed,
    /// the path down, a new session at the next command.
    fn end(&self, c: &mut Conn, why: &str) {
        if let Some(live) = c.live.take() {
            live.session.abort();
        }
        let writes = self.writes.load(Ordering::Acquire);
        if writes > self.flushed.load(Ordering::Acquire) {
            c.lost_upto = Some(c.lost_upto.unwrap_or(0).max(writes));
        }
        c.next_attempt = Instant::now();
        self.path.store(abi::REMOTE_PATH_DOWN, Ordering::Release);
        warn!(nsid = self.nsid, addr = %self.cfg.addr, "remote path down: {why}");
    }

    /// The session to call the target through: the live one, or a new
    /// one if the backoff allows an attempt now.
    fn handle(&self) -> Result<Handle, Fail> {
        let mut c = lock(&self.conn);
        if let Some(live) = &c.live {
            match live.session.failure() {
                None => {
                    return Ok(Handle {
                        ns: live.ns.clone(),
                        generation: c.generation,
                        oncs: live.oncs,
                    })
                }
                Some(why) => self.end(&mut c, &why.to_string()),
            }
        }
        if self.stopping() {
            return Err(abi::STATUS_NAMESPACE_NOT_READY.into());
        }
        let now = Instant::now();
        if now < c.next_attempt {
            return Err(abi::STATUS_TRANSIENT_TRANSPORT.into());
        }
        match self.connect() {
            Ok(live) => {
                c.generation += 1;
                c.backoff = BACKOFF_FIRST;
                self.path.store(abi::REMOTE_PATH_LIVE, Ordering::Release);
                info!(
                    nsid = self.nsid,
                    addr = %self.cfg.addr,
                    subnqn = self.cfg.subnqn,
                    remote_nsid = self.remote_nsid,
                    cntlid = live.session.cntlid(),
                    "remote path up"
                );
                let h = Handle {
                    ns: live.ns.clone(),
                    generation: c.generation,
                    oncs: live.oncs,
                };
                c.live = Some(live);
                Ok(h)
            }
            Err((status, why)) => {
                c.next_attempt = now + c.backoff;
                warn!(
                    nsid = self.nsid,
                    addr = %self.cfg.addr,
                    retry_ms = c.backoff.as_millis() as u64,
                    "remote path: cannot connect: {why}"
                );
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                self.path.store(abi::REMOTE_PATH_DOWN, Ordering::Release);
                Err(status.into())
            }
        }
    }

    /// A new session; the remote namespace must still have the block size
    /// it was created with.
    fn connect(&self) -> Result<Live, (u16, String)> {
        // A target that cannot be reached now; one whose namespace is gone
        // or changed cannot serve this namespace.
        let unreachable = |e: Error| match e {
            Error::Unusable(_) => (abi::STATUS_NAMESPACE_NOT_READY, e.to_string()),
            _ => (abi::STATUS_TRANSIENT_TRANSPORT, e.to_string()),
        };
        let session = Session::connect(&self.cfg).map_err(unreachable)?;
        let ns = match session.namespace(self.remote_nsid) {
            Ok(ns) => ns,
            Err(e) => {
                session.abort();
                return Err(unreachable(e));
            }
        };
        if ns.info().lba_shift != self.lba_shift {
            session.abort();
            return Err((
                abi::STATUS_NAMESPACE_NOT_READY,
                format!(
                    "the remote namespace's blocks are now 2^{} bytes, not 2^{}",
                    ns.info().lba_shift,
                    self.lba_shift
                ),
            ));
        }
        if ns.blocks() < self.size_blocks {
            warn!(
                nsid = self.nsid,
                remote_blocks = ns.blocks(),
                blocks = self.size_blocks,
                "the remote namespace shrank; blocks past its end fail"
            );
        }
        let oncs = session.controller().oncs;
        Ok(Live { session, ns, oncs })
    }
}

impl Commands for Link {
    fn ctx(&self) -> &Weak<IoContext> {
        &self.ctx
    }

    /// The firmware stopped while it ran: a crash posts nothing.
    fn aborted(&self) -> bool {
        lock(&self.jobs).stop == Some(Stop::Abort)
    }

    fn read(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let t = attached::transfer(c, self.size_blocks, self.lba_shift)?;
        let h = self.handle()?;
        let mut buf = vec![0u8; t.len];
        self.call(&h, h.ns.read(t.slba, &mut buf))?;
        attached::to_guest(c, t.segs, &buf)
    }

    fn write(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let t = attached::transfer(c, self.size_blocks, self.lba_shift)?;
        let fua = abi::IoBlocks::from_cdw12(c.sqe.cdw12).fua;
        let mut buf = vec![0u8; t.len];
        attached::from_guest(c, t.segs, &mut buf)?;
        let h = self.handle()?;
        self.call(&h, h.ns.write(t.slba, &buf, fua))?;
        if !fua {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Flush: every write completed before it is durable on the target;
    /// fails once with Write Fault after a session ended with writes not
    /// flushed (they may be lost).
    fn flush(self: &Arc<Self>) -> Result<(), Fail> {
        let upto = self.writes.load(Ordering::Acquire);
        // Looking at the session first notices one that ended meanwhile.
        let h = self.handle();
        if let Some(lost) = lock(&self.conn).lost_upto.take() {
            self.flushed.fetch_max(lost, Ordering::AcqRel);
            warn!(
                nsid = self.nsid,
                "flush fails: the connection to the target ended with writes not flushed there"
            );
            return Err(abi::STATUS_WRITE_FAULT.into());
        }
        let h = h?;
        self.call(&h, h.ns.flush())?;
        self.flushed.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    fn write_zeroes(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let (slba, n) = (nvm::slba(c.sqe), nvm::blocks(c.sqe));
        attached::check_range(slba, n, self.size_blocks)?;
        let h = self.handle()?;
        if h.oncs & ONCS_WRITE_ZEROES != 0 {
            self.call(&h, h.ns.write_zeroes(slba, n))?;
        } else {
            // The target has no Write Zeroes: write zeroes.
            let step = (ZEROES_STEP_BYTES >> self.lba_shift) as u64;
            let zeroes = vec![0u8; ZEROES_STEP_BYTES];
            let mut at = slba;
            while at < slba + n {
                let k = step.min(slba + n - at);
                // At most ZEROES_STEP_BYTES.
                let bytes = (k << self.lba_shift) as usize;
                self.call(&h, h.ns.write(at, &zeroes[..bytes], false))?;
                at += k;
            }
        }
        self.writes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn dataset_management(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        // Every range is checked before any goes to the target.
        let list = attached::deallocations(c, self.size_blocks)?;
        if list.is_empty() {
            return Ok(());
        }
        let h = self.handle()?;
        if h.oncs & ONCS_DSM == 0 {
            // Deallocation is advisory: a target without it keeps the data.
            return Ok(());
        }
        self.call(&h, h.ns.deallocate(&list))?;
        self.writes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn dropped(&self) {
        debug!(
            nsid = self.nsid,
            "remote command dropped: its queue is gone"
        );
    }
}

impl Attached for Link {
    const WHAT: &'static str = "remote link";

    /// A detach returns at once: the link's queued commands complete and
    /// its session ends in the background.
    fn stop_thread(nsid: u32) -> Option<String> {
        Some(format!("remote{nsid}-stop"))
    }

    fn signal(&self, how: Stop) {
        lock(&self.jobs).stop = Some(how);
        self.more.notify_all();
    }

    /// Stops taking commands and the workers; ends the session (with a
    /// shutdown notification if `how` is [`Stop::Drain`]); waits for the
    /// workers.
    fn shut(&self, how: Stop) {
        self.signal(how);
        let live = lock(&self.conn).live.take();
        if let Some(live) = live {
            match how {
                Stop::Abort => live.session.abort(),
                Stop::Drain => {
                    if let Err(e) = live.session.close() {
                        info!(nsid = self.nsid, "remote session shutdown: {e}");
                    }
                }
            }
        }
        self.path.store(abi::REMOTE_PATH_IDLE, Ordering::Release);
        let workers = std::mem::take(&mut *lock(&self.workers));
        for w in workers {
            let _ = w.join();
        }
    }

    /// Flushes if any write since the last flush needs it.
    fn flush_status(self: &Arc<Self>) -> u16 {
        self.flush_if_needed()
    }
}

/// The links of the attached remote namespaces of a firmware run.
#[derive(Debug)]
pub(crate) struct RemoteLinks {
    host_nqn: String,
    /// By nsid. A detach ([`Registry::stop`]) returns at once: the link
    /// takes no more commands, and in the background its queued commands
    /// complete with Namespace Not Ready, its session ends with a shutdown
    /// notification and its workers stop. [`Registry::stop_all`] ends
    /// every link as in a crash (queued commands dropped, sessions ended
    /// without a shutdown); [`Registry::flush_all`] is a broadcast Flush's
    /// remote part: every link with writes not yet flushed flushes.
    pub(crate) attached: Registry<Link>,
}

impl RemoteLinks {
    /// No links yet; sessions will connect as `host_nqn`.
    pub(crate) fn new(host_nqn: String) -> Self {
        Self {
            host_nqn,
            attached: Registry::new(),
        }
    }

    /// The host NQN sessions connect as.
    pub(crate) fn host_nqn(&self) -> &str {
        &self.host_nqn
    }

    /// Starts serving attached remote namespace `nsid` (`size_blocks`
    /// blocks of 2^`lba_shift` bytes at `remote`): its workers start, the
    /// session connects at the first command.
    pub(crate) fn start(
        &self,
        nsid: u32,
        size_blocks: u64,
        lba_shift: u8,
        remote: &Remote,
        ctx: Weak<IoContext>,
    ) {
        let Some(cfg) = io_config(&remote.target, &self.host_nqn) else {
            // The pool checked it when it was created and when it was read.
            warn!(nsid, "remote namespace's target does not parse; not served");
            return;
        };
        let link = Arc::new(Link {
            nsid,
            remote_nsid: remote.target.nsid,
            size_blocks,
            lba_shift,
            cfg,
            ctx,
            conn: Mutex::new(Conn {
                live: None,
                generation: 0,
                next_attempt: Instant::now(),
                backoff: BACKOFF_FIRST,
                lost_upto: None,
            }),
            path: AtomicU8::new(abi::REMOTE_PATH_IDLE),
            jobs: Mutex::new(Jobs::default()),
            more: Condvar::new(),
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            workers: Mutex::new(Vec::new()),
        });
        let workers = attached::spawn_workers(
            &link,
            WORKERS,
            &format!("remote{nsid}"),
            |l| l.serve(),
            |e| warn!(nsid, "no thread for a remote worker: {e}"),
        );
        if workers.is_empty() {
            // Nothing would serve it: its commands take the local path's
            // answer for a namespace not in the pool.
            return;
        }
        *lock(&link.workers) = workers;
        info!(nsid, addr = %link.cfg.addr, subnqn = link.cfg.subnqn, "remote namespace served");
        self.attached.start(nsid, link);
    }

    /// `abi::REMOTE_PATH_*` of `nsid` (idle when it has no link).
    pub(crate) fn path(&self, nsid: u32) -> u8 {
        self.attached
            .get(nsid)
            .map_or(abi::REMOTE_PATH_IDLE, |l| l.path.load(Ordering::Acquire))
    }
}
