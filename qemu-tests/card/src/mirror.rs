//! Mirrored namespaces on the card's I/O path. A mirrored namespace's
//! data is kept on 1..=4 plexes, each a namespace behind an NVMe/TCP
//! target (one initiator session per plex) or this card's own pool (the
//! "local plex": a target whose NQN is this card's export of one of its
//! namespaces, served through the pool, not over TCP). The pool keeps the
//! table (`pool::MirrorRecord`); while the namespace is attached a
//! [`Mirror`] serves it: worker threads that run its commands, a crew of
//! threads that send one command to the remote plexes at once, and a
//! resync thread.
//!
//! Writes (Write, Write Zeroes, deallocate) go to every in-sync plex in
//! parallel and complete when all of them acknowledged; Flush and FUA go to
//! every in-sync plex. A plex that fails (any error: transport, timeout,
//! a status) is taken out of sync before the command completes: its state
//! and the generation are committed to the pool first, with every region
//! it may have missed (the command's, and every region sent to it since
//! its last successful Flush) in its dirty set; the command then completes
//! on the others. The last in-sync plex is never taken out: a command it
//! fails fails. An out-of-sync plex gets no writes: their regions go into
//! its dirty set, committed before the write completes when they were not
//! in it yet.
//!
//! Resync: the resync thread notices an out-of-sync plex's target answers
//! again (with the remote links' backoff), marks it resyncing and copies
//! its dirty regions one at a time from an in-sync plex (local preferred);
//! a write to a region being copied waits for the copy, and a copy waits
//! for writes in flight to its region; a region written during the resync
//! is dirty again. Regions copied stay in the committed dirty set until a
//! Flush of the plex made them durable there (every [`CHECKPOINT`] regions
//! and at the end). When none is left the plex is flushed and in sync
//! again (generation + 1, committed). An all-zero region is written as
//! Write Zeroes (the card's target deallocates it: thin plexes stay thin).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dia_abi::card as abi;
use tracing::{debug, info, warn};

use crate::attached::{self, Attached, Cmd, Commands, Fail, Registry};
use crate::fabric::initiator::{Config, Error, RemoteNamespace, Session, ONCS_WRITE_ZEROES};
use crate::io_queue::IoContext;
use crate::nvm;
use crate::pool::{regions_of, MirrorRecord, Namespace, PlexRecord, Pool, RegionSet};
use crate::remote::{io_config, Job, BACKOFF_FIRST, BACKOFF_MAX};

/// Worker threads per attached mirror: its commands at once.
const WORKERS: usize = 4;
/// How often the resync thread looks at out-of-sync plexes when idle.
const RESYNC_POLL: Duration = Duration::from_millis(100);
/// Regions a resync copies between Flushes of the plex (which let the
/// committed dirty set forget them).
const CHECKPOINT: u32 = 64;
/// Bytes of a region.
const REGION_BYTES: u64 = 1 << abi::MIRROR_REGION_SHIFT;
/// Bits of a completion status the card's completions carry.
const STATUS_CODE: u16 = 0x7ff;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a plex failed a call, and the status a command gets if it was the
/// last in-sync one.
#[derive(Debug, Clone)]
struct PlexError {
    status: u16,
    why: String,
}

impl PlexError {
    fn of_initiator(e: &Error) -> Self {
        Self {
            status: e.host_status() & STATUS_CODE,
            why: e.to_string(),
        }
    }
    fn of_pool(e: &crate::pool::StorageError) -> Self {
        Self {
            status: e.status(),
            why: e.to_string(),
        }
    }
}

/// What a write-like command does on a plex.
#[derive(Clone)]
enum Op {
    Write {
        slba: u64,
        data: Arc<Vec<u8>>,
        fua: bool,
    },
    /// Ranges (slba, blocks) that must read as zeroes.
    Zeroes(Arc<Vec<(u64, u64)>>),
    Flush,
}

/// The local plex: a namespace of this card's pool.
struct LocalPlex {
    nsid: u32,
}

struct Live {
    session: Session,
    ns: RemoteNamespace,
    oncs: u16,
}

struct Conn {
    live: Option<Live>,
    next_attempt: Instant,
    backoff: Duration,
}

/// A remote plex's session, made at its first use and after a failure
/// (no sooner than the backoff allows, for the resync's probes).
struct RemotePlex {
    cfg: Config,
    remote_nsid: u32,
    conn: Mutex<Conn>,
}

enum Where {
    Local(LocalPlex),
    Remote(Box<RemotePlex>),
}

struct Plex {
    at: Where,
    /// `abi::REMOTE_PATH_*`.
    path: AtomicU8,
    /// Reads served since the firmware started.
    reads: AtomicU64,
}

/// The mirror's changing state (one lock).
struct State {
    /// The table as committed (plus changes about to be).
    rec: MirrorRecord,
    /// Runtime: a resync copies to this plex now.
    resyncing: Vec<bool>,
    /// Per plex: regions a resync copied that no Flush of the plex covers
    /// yet (kept in the committed dirty set).
    pending: Vec<RegionSet>,
    /// Per plex: region -> sequence number of the last write sent to it
    /// that no Flush of the plex covers yet.
    unflushed: Vec<BTreeMap<u32, u64>>,
    /// Sequence numbers of write-like commands in flight.
    inflight: BTreeSet<u64>,
    seq: u64,
    /// Region -> write-like commands in flight on it.
    writers: HashMap<u32, u32>,
    /// Regions a resync copies now.
    copying: HashSet<u32>,
    /// Per plex: resync rate window (start, bytes) and the last rate.
    rate: Vec<(Instant, u64, u64)>,
    stop: Option<Stop>,
}

impl State {
    fn in_sync(&self) -> Vec<usize> {
        (0..self.rec.plexes.len())
            .filter(|&i| self.rec.plexes[i].state == abi::PLEX_IN_SYNC)
            .collect()
    }

    /// The record to commit: a plex's dirty set with the regions copied
    /// but not yet flushed there.
    fn record(&self) -> MirrorRecord {
        let mut rec = self.rec.clone();
        for (p, pending) in rec.plexes.iter_mut().zip(&self.pending) {
            p.dirty.union(pending);
        }
        rec
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Detached: queued commands complete with Namespace Not Ready,
    /// sessions end with a shutdown notification.
    Drain,
    /// The firmware stops as in a crash: queued commands are dropped.
    Abort,
    /// Set Mirror Plexes: the workers finish the commands they run and
    /// leave the queued ones to the mirror that takes over (the
    /// successor), the resync stops; sessions stay open.
    Handover,
}

impl From<attached::Stop> for Stop {
    fn from(how: attached::Stop) -> Self {
        match how {
            attached::Stop::Drain => Self::Drain,
            attached::Stop::Abort => Self::Abort,
        }
    }
}

impl Stop {
    /// Commands end (Drain, Abort), rather than wait for a successor.
    fn ends(s: Option<Self>) -> bool {
        matches!(s, Some(Self::Drain | Self::Abort))
    }
}

/// A closure a crew thread runs.
type Task = Box<dyn FnOnce() + Send>;

/// Threads that run closures: a command's calls to its remote plexes at
/// once.
struct Crew {
    tasks: Mutex<(VecDeque<Task>, bool)>,
    more: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Crew {
    fn start(n: usize, name: &str) -> Arc<Self> {
        let crew = Arc::new(Self {
            tasks: Mutex::new((VecDeque::new(), false)),
            more: Condvar::new(),
            threads: Mutex::new(Vec::new()),
        });
        *lock(&crew.threads) = attached::spawn_workers(
            &crew,
            n,
            name,
            |c| c.serve(),
            |e| warn!("no thread for a mirror crew: {e}"),
        );
        crew
    }

    fn serve(&self) {
        loop {
            let task = {
                let mut t = lock(&self.tasks);
                loop {
                    if let Some(task) = t.0.pop_front() {
                        break task;
                    }
                    if t.1 {
                        return;
                    }
                    t = self.more.wait(t).unwrap_or_else(PoisonError::into_inner);
                }
            };
            task();
        }
    }

    /// Runs `task` on a crew thread (inline if the crew has none).
    fn run(&self, task: Task) {
        if lock(&self.threads).is_empty() {
            task();
            return;
        }
        lock(&self.tasks).0.push_back(task);
        self.more.notify_one();
    }

    fn stop(&self) {
        lock(&self.tasks).1 = true;
        self.more.notify_all();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
    }
}

/// One attached mirrored namespace.
pub(crate) struct Mirror {
    nsid: u32,
    size_blocks: u64,
    lba_shift: u8,
    regions: u32,
    pool: Arc<Pool>,
    ctx: Weak<IoContext>,
    plexes: Vec<Arc<Plex>>,
    state: Mutex<State>,
    /// The generation whose plex record every in-sync plex took (0: none
    /// yet in this run); held while records are sent.
    published: Mutex<u64>,
    /// After a handover: the mirror the queued commands go to.
    successor: Mutex<Option<Arc<Mirror>>>,
    /// Signalled when writers, copies, plex states or `stop` change.
    changed: Condvar,
    jobs: Mutex<VecDeque<Job>>,
    more: Condvar,
    crew: Arc<Crew>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").field("nsid", &self.nsid).finish()
    }
}

/// The regions bytes `start..start + len` of a namespace touch.
fn region_span(start: u64, len: u64) -> (u32, u32) {
    let first = (start >> abi::MIRROR_REGION_SHIFT) as u32;
    let last = ((start + len.max(1) - 1) >> abi::MIRROR_REGION_SHIFT) as u32;
    (first, last + 1)
}

impl Mirror {
    fn stopping(&self) -> Option<Stop> {
        lock(&self.state).stop
    }

    /// Where a Read may go directly, on the engine's own thread and
    /// straight into guest memory (as a local namespace's does): the local
    /// plex's pool namespace and its index, while it is in sync and the
    /// mirror runs. Everything else (and a read the local plex fails) goes
    /// through [`Mirror::push`], which fails plexes over.
    pub(crate) fn direct_read(&self) -> Option<(usize, u32)> {
        let st = lock(&self.state);
        if st.stop.is_some() {
            return None;
        }
        st.in_sync()
            .into_iter()
            .find_map(|i| match &self.plexes[i].at {
                Where::Local(l) => Some((i, l.nsid)),
                Where::Remote(_) => None,
            })
    }

    /// Counts a read plex `i` served directly.
    pub(crate) fn count_read(&self, i: usize) {
        if let Some(p) = self.plexes.get(i) {
            p.reads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands a command over; gives it back if the mirror stops.
    pub(crate) fn push(&self, job: Job) -> Result<(), Box<Job>> {
        let mut jobs = lock(&self.jobs);
        let next = lock(&self.successor).clone();
        if let Some(next) = next {
            drop(jobs);
            return next.push(job);
        }
        if Stop::ends(self.stopping()) {
            return Err(Box::new(job));
        }
        jobs.push_back(job);
        drop(jobs);
        self.more.notify_one();
        Ok(())
    }

    fn serve(self: &Arc<Self>) {
        loop {
            let job = {
                let mut jobs = lock(&self.jobs);
                loop {
                    if self.stopping() == Some(Stop::Handover) {
                        // Queued commands go to the successor.
                        return;
                    }
                    if let Some(j) = jobs.pop_front() {
                        break j;
                    }
                    if self.stopping().is_some() {
                        return;
                    }
                    jobs = self
                        .more
                        .wait_timeout(jobs, RESYNC_POLL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            };
            match self.stopping() {
                Some(Stop::Abort) => job.p.discard(),
                Some(Stop::Drain) => self.post(job, abi::STATUS_NAMESPACE_NOT_READY),
                // Popped before the handover began: run here.
                Some(Stop::Handover) | None => self.run(job),
            }
        }
    }

    fn post(&self, job: Job, status: u16) {
        let Some(ctx) = self.ctx.upgrade() else {
            job.p.discard();
            return;
        };
        attached::post(&ctx, job, status, || self.aborted());
    }

    /// The region spans an operation touches.
    fn spans(&self, op: &Op) -> Vec<(u32, u32)> {
        match op {
            Op::Write { slba, data, .. } => {
                vec![region_span(slba << self.lba_shift, data.len() as u64)]
            }
            Op::Zeroes(list) => list
                .iter()
                .map(|&(s, n)| region_span(s << self.lba_shift, n << self.lba_shift))
                .collect(),
            Op::Flush => Vec::new(),
        }
    }

    /// A Write, Write Zeroes or deallocate on every in-sync plex.
    fn mutate(self: &Arc<Self>, op: Op) -> Result<(), Fail> {
        let spans = self.spans(&op);
        let (targets, seq, commit) = {
            let mut st = lock(&self.state);
            loop {
                if Stop::ends(st.stop) {
                    return Err(abi::STATUS_NAMESPACE_NOT_READY.into());
                }
                let busy = spans
                    .iter()
                    .any(|&(s, e)| (s..e).any(|r| st.copying.contains(&r)));
                if !busy {
                    break;
                }
                st = self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            st.seq += 1;
            let seq = st.seq;
            let mut commit = false;
            let mut targets = st.in_sync();
            for i in 0..st.rec.plexes.len() {
                // A resyncing plex takes the writes to regions it holds
                // already (copied, or never missed), so a volume in use
                // does not make it copy them again: the resync ends after
                // one pass over what it missed. Its writes not flushed
                // yet are tracked as an in-sync plex's are.
                let caught_up = st.resyncing[i]
                    && spans
                        .iter()
                        .all(|&(s, e)| (s..e).all(|r| !st.rec.plexes[i].dirty.contains(r)));
                if caught_up {
                    targets.push(i);
                }
                if st.rec.plexes[i].state == abi::PLEX_IN_SYNC || caught_up {
                    for &(s, e) in &spans {
                        for r in s..e {
                            st.unflushed[i].insert(r, seq);
                        }
                    }
                } else {
                    for &(s, e) in &spans {
                        commit |= st.rec.plexes[i].dirty.insert(s, e);
                    }
                }
            }
            for &(s, e) in &spans {
                for r in s..e {
                    *st.writers.entry(r).or_insert(0) += 1;
                }
            }
            st.inflight.insert(seq);
            if commit {
                self.store(&st);
            }
            (targets, seq, commit)
        };
        let result = self.mutate_on(op, &spans, &targets, commit);
        let mut st = lock(&self.state);
        for &(s, e) in &spans {
            for r in s..e {
                if let Some(w) = st.writers.get_mut(&r) {
                    *w -= 1;
                    if *w == 0 {
                        st.writers.remove(&r);
                    }
                }
            }
        }
        st.inflight.remove(&seq);
        drop(st);
        self.changed.notify_all();
        result
    }

    fn mutate_on(
        self: &Arc<Self>,
        op: Op,
        spans: &[(u32, u32)],
        targets: &[usize],
        commit: bool,
    ) -> Result<(), Fail> {
        if commit {
            // The regions an out-of-sync plex misses are durable before
            // the write completes.
            self.pool.flush().map_err(|e| {
                warn!(nsid = self.nsid, "mirror: cannot commit dirty regions: {e}");
                abi::STATUS_INTERNAL_ERROR
            })?;
        }
        let results = self.fan_out(targets, &op);
        let mut ok = false;
        for (i, r) in results {
            match r {
                Ok(()) => ok = true,
                Err(e) => self.fail_plex(i, spans, &e)?,
            }
        }
        if ok {
            // No write completes without a plex that left before every
            // in-sync plex holds the record that says so.
            self.publish()
        } else {
            Err(abi::STATUS_NAMESPACE_NOT_READY.into())
        }
    }

    /// `op` on the plexes `targets` at once (the local one on this
    /// thread, the others on the crew); each plex's result.
    fn fan_out(
        self: &Arc<Self>,
        targets: &[usize],
        op: &Op,
    ) -> Vec<(usize, Result<(), PlexError>)> {
        let (tx, rx) = mpsc::channel();
        let mut inline = None;
        let mut sent = 0;
        for &i in targets {
            if inline.is_none() && matches!(self.plexes[i].at, Where::Local(_)) {
                inline = Some(i);
                continue;
            }
            let (m, op, tx) = (self.clone(), op.clone(), tx.clone());
            sent += 1;
            self.crew.run(Box::new(move || {
                let _ = tx.send((i, m.plex_op(i, &op)));
            }));
        }
        let mut out = Vec::with_capacity(targets.len());
        if let Some(i) = inline {
            out.push((i, self.plex_op(i, op)));
        }
        drop(tx);
        for _ in 0..sent {
            match rx.recv() {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        out
    }

    fn plex_op(&self, i: usize, op: &Op) -> Result<(), PlexError> {
        match op {
            Op::Write { slba, data, fua } => self.plex_write(i, *slba, data, *fua),
            Op::Zeroes(list) => list
                .iter()
                .try_for_each(|&(s, n)| self.plex_zeroes(i, s, n)),
            Op::Flush => self.plex_flush(i),
        }
    }

    fn plex_read(&self, i: usize, slba: u64, buf: &mut [u8]) -> Result<(), PlexError> {
        let blocks = (buf.len() >> self.lba_shift) as u64;
        match &self.plexes[i].at {
            Where::Local(l) => self
                .pool
                .read_buf(l.nsid, slba, blocks, buf)
                .map_err(|e| PlexError::of_pool(&e)),
            Where::Remote(r) => self.call(i, r, false, |h| h.ns.read(slba, buf)),
        }
    }

    fn plex_write(&self, i: usize, slba: u64, buf: &[u8], fua: bool) -> Result<(), PlexError> {
        let blocks = (buf.len() >> self.lba_shift) as u64;
        match &self.plexes[i].at {
            Where::Local(l) => {
                self.pool
                    .write_buf(l.nsid, slba, blocks, buf)
                    .map_err(|e| PlexError::of_pool(&e))?;
                if fua {
                    self.pool.flush().map_err(|e| PlexError::of_pool(&e))?;
                }
                Ok(())
            }
            Where::Remote(r) => self.call(i, r, false, |h| h.ns.write(slba, buf, fua)),
        }
    }

    fn plex_zeroes(&self, i: usize, slba: u64, blocks: u64) -> Result<(), PlexError> {
        match &self.plexes[i].at {
            Where::Local(l) => self
                .pool
                .deallocate(l.nsid, slba, blocks)
                .map_err(|e| PlexError::of_pool(&e)),
            Where::Remote(r) => self.call(i, r, false, |h| {
                if h.oncs & ONCS_WRITE_ZEROES != 0 {
                    return h.ns.write_zeroes(slba, blocks);
                }
                // No Write Zeroes on the target: write zeroes.
                let step = (REGION_BYTES >> self.lba_shift).max(1);
                let zeroes = vec![0u8; REGION_BYTES as usize];
                let mut at = slba;
                while at < slba + blocks {
                    let k = step.min(slba + blocks - at);
                    h.ns.write(at, &zeroes[..(k << self.lba_shift) as usize], false)?;
                    at += k;
                }
                Ok(())
            }),
        }
    }

    fn plex_flush(&self, i: usize) -> Result<(), PlexError> {
        match &self.plexes[i].at {
            Where::Local(_) => self.pool.flush().map_err(|e| PlexError::of_pool(&e)),
            Where::Remote(r) => self.call(i, r, false, |h| h.ns.flush()),
        }
    }

    /// Calls a remote plex through its session (connecting if there is
    /// none; with `backoff`, only if the backoff allows an attempt now).
    /// Any failure ends the session.
    fn call<T>(
        &self,
        i: usize,
        r: &RemotePlex,
        backoff: bool,
        f: impl FnOnce(&CallHandle<'_>) -> Result<T, Error>,
    ) -> Result<T, PlexError> {
        // A clone of the namespace handle: the call runs without the lock.
        let (ns, oncs) = self.handle(i, r, backoff)?;
        f(&CallHandle { ns: &ns, oncs }).map_err(|e| {
            let pe = PlexError::of_initiator(&e);
            self.end(i, r, &pe.why);
            pe
        })
    }

    fn handle(
        &self,
        i: usize,
        r: &RemotePlex,
        backoff: bool,
    ) -> Result<(RemoteNamespace, u16), PlexError> {
        let down = |why: String| PlexError {
            status: abi::STATUS_TRANSIENT_TRANSPORT,
            why,
        };
        let mut c = lock(&r.conn);
        if let Some(live) = &c.live {
            match live.session.failure() {
                None => return Ok((live.ns.clone(), live.oncs)),
                Some(why) => {
                    if let Some(l) = c.live.take() {
                        l.session.abort();
                    }
                    self.plexes[i]
                        .path
                        .store(abi::REMOTE_PATH_DOWN, Ordering::Release);
                    c.next_attempt = Instant::now();
                    debug!(nsid = self.nsid, plex = i, "plex session failed: {why}");
                }
            }
        }
        if Stop::ends(self.stopping()) {
            return Err(PlexError {
                status: abi::STATUS_NAMESPACE_NOT_READY,
                why: "stopping".into(),
            });
        }
        let now = Instant::now();
        if backoff && now < c.next_attempt {
            return Err(down("waiting to connect again".into()));
        }
        match self.connect(r) {
            Ok(live) => {
                c.backoff = BACKOFF_FIRST;
                self.plexes[i]
                    .path
                    .store(abi::REMOTE_PATH_LIVE, Ordering::Release);
                info!(nsid = self.nsid, plex = i, addr = %r.cfg.addr, "mirror plex path up");
                let h = (live.ns.clone(), live.oncs);
                c.live = Some(live);
                Ok(h)
            }
            Err(why) => {
                c.next_attempt = now + c.backoff;
                c.backoff = (c.backoff * 2).min(BACKOFF_MAX);
                self.plexes[i]
                    .path
                    .store(abi::REMOTE_PATH_DOWN, Ordering::Release);
                Err(down(why))
            }
        }
    }

    fn connect(&self, r: &RemotePlex) -> Result<Live, String> {
        if cfg!(feature = "fuzzing") {
            // The fuzz targets reach no network.
            return Err("no network while fuzzing".into());
        }
        let session = Session::connect(&r.cfg).map_err(|e| e.to_string())?;
        let ns = match session.namespace(r.remote_nsid) {
            Ok(ns) => ns,
            Err(e) => {
                session.abort();
                return Err(e.to_string());
            }
        };
        if ns.info().lba_shift != self.lba_shift || ns.blocks() < self.size_blocks {
            session.abort();
            return Err(format!(
                "the plex is {} blocks of 2^{} bytes, the mirror {} of 2^{}",
                ns.blocks(),
                ns.info().lba_shift,
                self.size_blocks,
                self.lba_shift
            ));
        }
        let oncs = session.controller().oncs;
        Ok(Live { session, ns, oncs })
    }

    /// Ends a remote plex's session (the next use connects again).
    fn end(&self, i: usize, r: &RemotePlex, why: &str) {
        let mut c = lock(&r.conn);
        if let Some(l) = c.live.take() {
            l.session.abort();
            warn!(nsid = self.nsid, plex = i, addr = %r.cfg.addr, "mirror plex path down: {why}");
        }
        c.next_attempt = Instant::now() + c.backoff;
        self.plexes[i]
            .path
            .store(abi::REMOTE_PATH_DOWN, Ordering::Release);
    }

    /// Plex `i` failed a call: out of sync (committed) with the regions it
    /// may have missed, unless it is the last in-sync plex (then the
    /// command fails with the plex's status).
    /// Then the new plex record goes to every plex still in sync.
    fn fail_plex(&self, i: usize, spans: &[(u32, u32)], e: &PlexError) -> Result<(), Fail> {
        self.take_out(i, spans, e)?;
        self.publish()
    }

    /// `fail_plex` without sending the record.
    fn take_out(&self, i: usize, spans: &[(u32, u32)], e: &PlexError) -> Result<(), Fail> {
        let mut st = lock(&self.state);
        let grew = if st.rec.plexes[i].state != abi::PLEX_IN_SYNC {
            // A resyncing plex that failed a write: it stops, and what it
            // was sent or copied and did not flush is dirty again.
            let unflushed: Vec<u32> = std::mem::take(&mut st.unflushed[i]).into_keys().collect();
            let pending = std::mem::take(&mut st.pending[i]);
            let p = &mut st.rec.plexes[i];
            let mut grew = p.dirty.union(&pending);
            for r in unflushed {
                grew |= p.dirty.insert(r, r + 1);
            }
            for &(s, en) in spans {
                grew |= p.dirty.insert(s, en);
            }
            if st.resyncing[i] {
                warn!(
                    nsid = self.nsid,
                    plex = i,
                    "mirror resync stopped: {}",
                    e.why
                );
            }
            st.resyncing[i] = false;
            grew
        } else {
            if st.in_sync().len() <= 1 {
                warn!(
                    nsid = self.nsid,
                    plex = i,
                    "mirror: the last in-sync plex failed: {}",
                    e.why
                );
                return Err(if e.status == abi::STATUS_SUCCESS {
                    abi::STATUS_INTERNAL_ERROR
                } else {
                    e.status
                }
                .into());
            }
            let unflushed: Vec<u32> = std::mem::take(&mut st.unflushed[i]).into_keys().collect();
            let rec = &mut st.rec;
            rec.generation = rec.generation.saturating_add(1);
            let generation = rec.generation;
            let p = &mut rec.plexes[i];
            p.state = abi::PLEX_OUT_OF_SYNC;
            p.faults = p.faults.saturating_add(1);
            for &(s, en) in spans {
                p.dirty.insert(s, en);
            }
            for r in unflushed {
                p.dirty.insert(r, r + 1);
            }
            warn!(
                nsid = self.nsid,
                plex = i,
                generation,
                dirty_regions = p.dirty.count(),
                "mirror plex out of sync: {}",
                e.why
            );
            st.resyncing[i] = false;
            true
        };
        if grew {
            self.store(&st);
        }
        drop(st);
        self.changed.notify_all();
        if let Where::Remote(r) = &self.plexes[i].at {
            self.end(i, r, &e.why);
        }
        if grew {
            self.pool.flush().map_err(|err| {
                warn!(
                    nsid = self.nsid,
                    "mirror: cannot commit a plex's failure: {err}"
                );
                abi::STATUS_INTERNAL_ERROR
            })?;
        }
        Ok(())
    }

    /// Sends the plex record of the current generation (the generation,
    /// the keys of the in-sync plexes) to every in-sync plex, unless they
    /// took it already: the local one in the pool, the others through
    /// their sessions. A plex that does not take it is taken out of sync
    /// (and the next generation's record sent); the last in-sync plex
    /// failing fails the caller.
    fn publish(&self) -> Result<(), Fail> {
        let mut published = lock(&self.published);
        loop {
            let (record, targets) = {
                let st = lock(&self.state);
                if st.rec.generation <= *published {
                    return Ok(());
                }
                (plex_record(&st.rec), st.in_sync())
            };
            let mut failed = false;
            for i in targets {
                if let Err(e) = self.plex_set_record(i, &record) {
                    warn!(
                        nsid = self.nsid,
                        plex = i,
                        generation = record.generation,
                        "mirror plex did not take the plex record: {}",
                        e.why
                    );
                    self.take_out(i, &[], &e)?;
                    failed = true;
                }
            }
            if !failed {
                *published = record.generation;
                debug!(
                    nsid = self.nsid,
                    generation = record.generation,
                    "plex record sent"
                );
                return Ok(());
            }
        }
    }

    fn plex_set_record(&self, i: usize, record: &abi::PlexRecord) -> Result<(), PlexError> {
        match &self.plexes[i].at {
            Where::Local(l) => self
                .pool
                .set_plex_record(l.nsid, *record)
                .map_err(|e| PlexError::of_pool(&e)),
            Where::Remote(r) => self.call(i, r, false, |h| h.ns.set_plex_record(record)),
        }
    }

    /// Stores the current record in the pool (the caller commits it).
    fn store(&self, st: &State) {
        if let Err(e) = self.pool.store_mirror(self.nsid, st.record()) {
            warn!(nsid = self.nsid, "mirror record not stored: {e}");
        }
    }

    // ----- resync -----

    fn resync_loop(self: &Arc<Self>) {
        loop {
            if self.stopping().is_some() {
                return;
            }
            let mut busy = false;
            for i in 0..self.plexes.len() {
                busy |= self.resync_step(i);
                if self.stopping().is_some() {
                    return;
                }
            }
            if !busy {
                let st = lock(&self.state);
                if st.stop.is_some() {
                    return;
                }
                let _ = self
                    .changed
                    .wait_timeout(st, RESYNC_POLL)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Whether plex `i`'s target serves a namespace of the mirror's
    /// geometry now.
    fn reachable(&self, i: usize) -> bool {
        match &self.plexes[i].at {
            Where::Local(l) => self.pool.namespace(l.nsid).is_some_and(|ns| {
                ns.is_local()
                    && ns.attached
                    && ns.lba_shift == self.lba_shift
                    && ns.size_blocks >= self.size_blocks
            }),
            Where::Remote(r) => self.handle(i, r, true).is_ok(),
        }
    }

    /// One step of plex `i`'s resync (a few regions); whether it did
    /// something.
    fn resync_step(self: &Arc<Self>, i: usize) -> bool {
        let (state, resyncing) = {
            let st = lock(&self.state);
            (st.rec.plexes[i].state, st.resyncing[i])
        };
        if state == abi::PLEX_IN_SYNC {
            return false;
        }
        if !resyncing {
            if !self.reachable(i) {
                return false;
            }
            let mut st = lock(&self.state);
            if st.rec.plexes[i].state == abi::PLEX_IN_SYNC || st.stop.is_some() {
                return false;
            }
            st.resyncing[i] = true;
            st.rate[i] = (Instant::now(), 0, 0);
            info!(
                nsid = self.nsid,
                plex = i,
                dirty_regions = st.rec.plexes[i].dirty.count(),
                "mirror plex reachable: resync starts"
            );
        }
        for _ in 0..CHECKPOINT {
            match self.copy_one(i) {
                Copy::Done => return self.finish_resync(i),
                Copy::Copied => {}
                Copy::Stopped => return false,
            }
        }
        self.checkpoint(i);
        true
    }

    /// Copies plex `i`'s lowest dirty region from an in-sync plex.
    fn copy_one(self: &Arc<Self>, i: usize) -> Copy {
        let (r, src) = {
            let mut st = lock(&self.state);
            loop {
                if st.stop.is_some() || !st.resyncing[i] {
                    return Copy::Stopped;
                }
                let Some(r) = st.rec.plexes[i]
                    .dirty
                    .first_not(|r| st.copying.contains(&r))
                else {
                    return Copy::Done;
                };
                if st.writers.contains_key(&r) {
                    st = self
                        .changed
                        .wait_timeout(st, Duration::from_millis(20))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    continue;
                }
                let in_sync = st.in_sync();
                let Some(src) = in_sync
                    .iter()
                    .copied()
                    .find(|&j| matches!(self.plexes[j].at, Where::Local(_)))
                    .or_else(|| in_sync.first().copied())
                else {
                    return Copy::Stopped;
                };
                if !st.rec.plexes[i].dirty.remove(r) {
                    // Cannot happen: the lowest region starts a range.
                    return Copy::Stopped;
                }
                st.copying.insert(r);
                st.pending[i].insert(r, r + 1);
                break (r, src);
            }
        };
        let start = u64::from(r) << abi::MIRROR_REGION_SHIFT;
        let bytes = REGION_BYTES.min((self.size_blocks << self.lba_shift) - start);
        let slba = start >> self.lba_shift;
        let blocks = bytes >> self.lba_shift;
        let mut buf = vec![0u8; bytes as usize];
        let result = match self.plex_read(src, slba, &mut buf) {
            Err(e) => Err((src, e)),
            Ok(()) => {
                let w = if buf.iter().all(|&b| b == 0) {
                    self.plex_zeroes(i, slba, blocks)
                } else {
                    self.plex_write(i, slba, &buf, false)
                };
                w.map_err(|e| (i, e))
            }
        };
        let mut st = lock(&self.state);
        st.copying.remove(&r);
        match result {
            Ok(()) => {
                let p = &mut st.rec.plexes[i];
                p.resync_bytes = p.resync_bytes.saturating_add(bytes);
                let (since, done, last) = st.rate[i];
                let elapsed = since.elapsed();
                st.rate[i] = if elapsed >= Duration::from_secs(1) {
                    let rate = ((done + bytes) as f64 / elapsed.as_secs_f64()) as u64;
                    (Instant::now(), 0, rate)
                } else {
                    (since, done + bytes, last)
                };
                drop(st);
                self.changed.notify_all();
                Copy::Copied
            }
            Err((who, e)) => {
                st.rec.plexes[i].dirty.insert(r, r + 1);
                drop(st);
                self.changed.notify_all();
                if who == src {
                    // The source failed: it is taken out (or, the last in
                    // sync, stays; the resync tries again later).
                    let _ = self.fail_plex(src, &[], &e);
                } else {
                    self.stop_resync(i, &e.why);
                }
                Copy::Stopped
            }
        }
    }

    /// The resync of plex `i` stops (its target failed): what it copied
    /// and did not flush is dirty again.
    fn stop_resync(&self, i: usize, why: &str) {
        let mut st = lock(&self.state);
        st.resyncing[i] = false;
        let pending = std::mem::take(&mut st.pending[i]);
        st.rec.plexes[i].dirty.union(&pending);
        self.store(&st);
        drop(st);
        warn!(nsid = self.nsid, plex = i, "mirror resync stopped: {why}");
        if let Where::Remote(r) = &self.plexes[i].at {
            self.end(i, r, why);
        }
        let _ = self.pool.flush();
    }

    /// Flushes plex `i`; on success the regions copied before are durable
    /// there and leave the committed dirty set.
    fn checkpoint(&self, i: usize) -> bool {
        if let Err(e) = self.plex_flush(i) {
            self.stop_resync(i, &e.why);
            return false;
        }
        let mut st = lock(&self.state);
        st.pending[i] = RegionSet::new();
        self.store(&st);
        drop(st);
        if let Err(e) = self.pool.flush() {
            warn!(
                nsid = self.nsid,
                "mirror: cannot commit resync progress: {e}"
            );
        }
        true
    }

    /// No dirty region is left: flush the plex, and if still none is left
    /// it is in sync again.
    fn finish_resync(&self, i: usize) -> bool {
        if !self.checkpoint(i) {
            return false;
        }
        let mut st = lock(&self.state);
        if !st.rec.plexes[i].dirty.is_empty() || !st.resyncing[i] || st.stop.is_some() {
            return true;
        }
        st.resyncing[i] = false;
        // unflushed[i] stays: the writes it took while resyncing and has
        // not flushed yet are dirty again if it fails.
        st.rec.generation = st.rec.generation.saturating_add(1);
        st.rec.plexes[i].state = abi::PLEX_IN_SYNC;
        let (generation, bytes) = (st.rec.generation, st.rec.plexes[i].resync_bytes);
        self.store(&st);
        drop(st);
        self.changed.notify_all();
        if let Err(e) = self.pool.flush() {
            warn!(
                nsid = self.nsid,
                "mirror: cannot commit a plex back in sync: {e}"
            );
        }
        info!(
            nsid = self.nsid,
            plex = i,
            generation,
            resync_bytes = bytes,
            "mirror plex in sync"
        );
        if self.publish().is_err() {
            warn!(
                nsid = self.nsid,
                "mirror: no in-sync plex took the plex record"
            );
        }
        true
    }

    /// The status log page.
    fn status(&self) -> abi::MirrorStatus {
        let st = lock(&self.state);
        let mut s = status_of(&st.record(), self.regions);
        for (i, p) in s.plexes.iter_mut().take(self.plexes.len()).enumerate() {
            if st.resyncing[i] {
                p.state = abi::PLEX_RESYNCING;
                let (since, done, last) = st.rate[i];
                p.resync_bytes_per_s = if last > 0 {
                    last
                } else {
                    (done as f64 / since.elapsed().as_secs_f64().max(0.001)) as u64
                };
            }
            p.path = self.plexes[i].path.load(Ordering::Acquire);
            p.local = u8::from(matches!(self.plexes[i].at, Where::Local(_)));
            p.reads = self.plexes[i].reads.load(Ordering::Relaxed);
        }
        s
    }

    /// Set Mirror Plexes: the workers finish the commands they run (and
    /// leave the queued ones), the resync and the crew stop; the plexes'
    /// sessions stay for the mirror that takes over.
    fn pause(&self) {
        lock(&self.state).stop = Some(Stop::Handover);
        self.changed.notify_all();
        self.more.notify_all();
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
        self.crew.stop();
    }
}

impl Commands for Mirror {
    fn ctx(&self) -> &Weak<IoContext> {
        &self.ctx
    }

    fn aborted(&self) -> bool {
        self.stopping() == Some(Stop::Abort)
    }

    fn dropped(&self) {
        // Nothing to tell.
    }

    fn read(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let t = attached::transfer(c, self.size_blocks, self.lba_shift)?;
        let mut buf = vec![0u8; t.len];
        loop {
            let i = {
                let st = lock(&self.state);
                if Stop::ends(st.stop) {
                    return Err(abi::STATUS_NAMESPACE_NOT_READY.into());
                }
                let in_sync = st.in_sync();
                // The local plex, else the remote one with the fewest reads
                // so far (spreads them).
                let local = in_sync
                    .iter()
                    .copied()
                    .find(|&i| matches!(self.plexes[i].at, Where::Local(_)));
                match local.or_else(|| {
                    in_sync
                        .iter()
                        .copied()
                        .min_by_key(|&i| self.plexes[i].reads.load(Ordering::Relaxed))
                }) {
                    Some(i) => i,
                    None => return Err(abi::STATUS_NAMESPACE_NOT_READY.into()),
                }
            };
            match self.plex_read(i, t.slba, &mut buf) {
                Ok(()) => {
                    self.plexes[i].reads.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => self.fail_plex(i, &[], &e)?,
            }
        }
        attached::to_guest(c, t.segs, &buf)
    }

    fn write(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let t = attached::transfer(c, self.size_blocks, self.lba_shift)?;
        let mut buf = vec![0u8; t.len];
        attached::from_guest(c, t.segs, &mut buf)?;
        let fua = abi::IoBlocks::from_cdw12(c.sqe.cdw12).fua;
        self.mutate(Op::Write {
            slba: t.slba,
            data: Arc::new(buf),
            fua,
        })
    }

    /// Flush on every in-sync plex.
    fn flush(self: &Arc<Self>) -> Result<(), Fail> {
        let (targets, upto) = {
            let st = lock(&self.state);
            if Stop::ends(st.stop) {
                return Err(abi::STATUS_NAMESPACE_NOT_READY.into());
            }
            // Writes still in flight are not covered.
            let upto = st.inflight.first().map_or(st.seq, |s| s.saturating_sub(1));
            (st.in_sync(), upto)
        };
        let results = self.fan_out(&targets, &Op::Flush);
        let mut ok = false;
        for (i, r) in results {
            match r {
                Ok(()) => {
                    ok = true;
                    lock(&self.state).unflushed[i].retain(|_, s| *s > upto);
                }
                Err(e) => self.fail_plex(i, &[], &e)?,
            }
        }
        if ok {
            Ok(())
        } else {
            Err(abi::STATUS_NAMESPACE_NOT_READY.into())
        }
    }

    fn write_zeroes(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let (slba, n) = (nvm::slba(c.sqe), nvm::blocks(c.sqe));
        attached::check_range(slba, n, self.size_blocks)?;
        self.mutate(Op::Zeroes(Arc::new(vec![(slba, n)])))
    }

    fn dataset_management(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        let list: Vec<(u64, u64)> = attached::deallocations(c, self.size_blocks)?
            .into_iter()
            .map(|(slba, blocks)| (slba, u64::from(blocks)))
            .collect();
        if list.is_empty() {
            return Ok(());
        }
        // Deallocated blocks read as zeroes on every plex.
        self.mutate(Op::Zeroes(Arc::new(list)))
    }
}

impl Attached for Mirror {
    const WHAT: &'static str = "mirror";

    /// A detach waits for the mirror: its resync progress and counters
    /// are in the pool (flushed) when the detach completes.
    fn stop_thread(_nsid: u32) -> Option<String> {
        None
    }

    fn signal(&self, how: attached::Stop) {
        lock(&self.state).stop = Some(how.into());
        self.changed.notify_all();
        self.more.notify_all();
    }

    /// Stops everything; waits for the threads.
    fn shut(&self, how: attached::Stop) {
        self.signal(how);
        if how == attached::Stop::Abort {
            for p in &self.plexes {
                if let Where::Remote(r) = &p.at {
                    if let Some(l) = lock(&r.conn).live.take() {
                        l.session.abort();
                    }
                }
            }
        }
        for t in std::mem::take(&mut *lock(&self.threads)) {
            let _ = t.join();
        }
        self.crew.stop();
        for p in &self.plexes {
            if let Where::Remote(r) = &p.at {
                if let Some(l) = lock(&r.conn).live.take() {
                    if let Err(e) = l.session.close() {
                        debug!(nsid = self.nsid, "plex session shutdown: {e}");
                    }
                }
            }
            p.path.store(abi::REMOTE_PATH_IDLE, Ordering::Release);
        }
        if how == attached::Stop::Drain {
            // Resync progress and counters.
            let _ = self.pool.flush();
        }
    }

    fn flush_status(self: &Arc<Self>) -> u16 {
        Fail::status(self.flush())
    }
}

enum Copy {
    Copied,
    Done,
    Stopped,
}

/// The plex record of `rec`: its generation and its in-sync plexes' keys.
fn plex_record(rec: &MirrorRecord) -> abi::PlexRecord {
    let mut out = abi::PlexRecord {
        generation: rec.generation,
        ..Default::default()
    };
    let keys = rec
        .plexes
        .iter()
        .filter(|p| p.state == abi::PLEX_IN_SYNC)
        .map(|p| abi::plex_key(&p.target));
    for (slot, k) in out.in_sync.iter_mut().zip(keys) {
        *slot = k;
    }
    out
}

/// The status page of a record (nothing running: no resync, no path).
fn status_of(rec: &MirrorRecord, regions: u32) -> abi::MirrorStatus {
    let mut s = abi::MirrorStatus {
        generation: rec.generation,
        regions: u64::from(regions),
        plex_count: rec.plexes.len() as u8,
        ..Default::default()
    };
    for (out, p) in s.plexes.iter_mut().zip(&rec.plexes) {
        out.state = p.state;
        out.dirty_regions = p.dirty.count();
        out.resync_bytes = p.resync_bytes;
        out.faults = p.faults;
    }
    s
}

/// The mirrors of a firmware run.
#[derive(Debug)]
pub(crate) struct Mirrors {
    host_nqn: String,
    /// This card's own volumes' NQNs without the namespace id.
    local_prefix: String,
    /// By nsid. A detach ([`Registry::stop`]): no more commands, queued
    /// ones complete with Namespace Not Ready; it waits for the threads.
    /// [`Registry::stop_all`]: the firmware stops as in a crash.
    /// [`Registry::flush_all`]: a broadcast Flush's mirror part.
    pub(crate) attached: Registry<Mirror>,
}

impl Mirrors {
    /// None yet; `serial` tells the local plex's NQN.
    pub(crate) fn new(host_nqn: String, serial: &str) -> Self {
        Self {
            host_nqn,
            local_prefix: format!("{}{serial}:ns", crate::fabric::NQN_PREFIX),
            attached: Registry::new(),
        }
    }

    /// The namespace of this card's pool `target` names (its own export
    /// `<prefix><serial>:ns<N>`, namespace 1 of that subsystem), if so.
    pub(crate) fn local_nsid(&self, target: &abi::RemoteTarget) -> Option<u32> {
        let n = target.subnqn_str()?.strip_prefix(&self.local_prefix)?;
        if target.nsid != 1 || n.starts_with('0') || n.starts_with('+') {
            return None;
        }
        n.parse().ok()
    }

    /// Starts serving attached mirrored namespace `nsid`.
    pub(crate) fn start(&self, nsid: u32, ns: &Namespace, pool: Arc<Pool>, ctx: Weak<IoContext>) {
        let Some(rec) = ns.mirror.clone() else {
            return;
        };
        let mut plexes = Vec::new();
        for p in &rec.plexes {
            let Some(plex) = self.new_plex(&p.target) else {
                warn!(nsid, "mirror plex target does not parse; not served");
                return;
            };
            plexes.push(Arc::new(plex));
        }
        let geometry = (ns.size_blocks, ns.lba_shift);
        let Some(mirror) = launch(nsid, geometry, rec, plexes, None, pool, ctx) else {
            return;
        };
        self.attached.start(nsid, mirror);
    }

    /// A plex of `target`, not connected yet.
    fn new_plex(&self, target: &abi::RemoteTarget) -> Option<Plex> {
        let at = match self.local_nsid(target) {
            Some(n) => Where::Local(LocalPlex { nsid: n }),
            None => Where::Remote(Box::new(RemotePlex {
                cfg: io_config(target, &self.host_nqn)?,
                remote_nsid: target.nsid,
                conn: Mutex::new(Conn {
                    live: None,
                    next_attempt: Instant::now(),
                    backoff: BACKOFF_FIRST,
                }),
            })),
        };
        let path = if matches!(at, Where::Local(_)) {
            abi::REMOTE_PATH_LIVE
        } else {
            abi::REMOTE_PATH_IDLE
        };
        Some(Plex {
            at,
            path: AtomicU8::new(path),
            reads: AtomicU64::new(0),
        })
    }

    /// The status page of mirrored namespace `ns` (`nsid`): the running
    /// mirror's, else the pool's record.
    pub(crate) fn status(&self, nsid: u32, ns: &Namespace) -> Option<abi::MirrorStatus> {
        if let Some(m) = self.attached.get(nsid) {
            return Some(m.status());
        }
        let rec = ns.mirror.as_ref()?;
        let mut s = status_of(rec, regions_of(ns.size_blocks << ns.lba_shift));
        for (out, p) in s.plexes.iter_mut().zip(&rec.plexes) {
            out.local = u8::from(self.local_nsid(&p.target).is_some());
        }
        Some(s)
    }

    /// Create Mirror Namespace (on a thread of the controller's): looks at
    /// every plex (geometry and plex record), records the namespace and
    /// sends the plexes the new plex record; its nsid, or the refusal.
    pub(crate) fn create(
        &self,
        create: &abi::MirrorNamespaceCreate,
        pool: &Pool,
    ) -> Result<(u32, MirrorRecord), (u16, u32)> {
        let (blocks, shift, record) = self.probe(create, pool)?;
        let nsid = pool
            .create_mirror_namespace(blocks, shift, create.label, record.clone())
            .map_err(|e| (e.status(), 0))?;
        let record = self.publish_detached(nsid, pool, record);
        Ok((nsid, record))
    }

    /// The look at the plexes: the geometry and the record, or the
    /// refusal. With plex records (every plex's, read through Identify
    /// Namespace): g* = the highest generation, S* = the in-sync keys of
    /// a plex at g*; every plex of S* must be in the table, reachable and
    /// at g*, else the newest copy may be missing (`STATUS_MIRROR_STALE`);
    /// a plex given in sync that is not in S* (or below g*) is stale and
    /// copied in full.
    fn probe(
        &self,
        create: &abi::MirrorNamespaceCreate,
        pool: &Pool,
    ) -> Result<(u64, u8, MirrorRecord), (u16, u32)> {
        let mut geometry: Option<(u64, u8)> = None;
        let mut plexes = Vec::new();
        for (i, p) in create.plexes().iter().enumerate() {
            let seen = match self.local_nsid(&p.target) {
                Some(n) => pool
                    .namespace(n)
                    .filter(|ns| ns.is_local() && ns.attached)
                    .map(|ns| (ns.size_blocks, ns.lba_shift, ns.plex_record)),
                None => match crate::remote::probe(&p.target, &self.host_nqn) {
                    Ok(info) => Some((info.blocks, info.lba_shift, info.plex_record)),
                    Err((abi::STATUS_REMOTE_UNREACHABLE, _)) => None,
                    Err(refused) => return Err(refused),
                },
            };
            if let Some((b, s, _)) = seen {
                if geometry.is_some_and(|have| have != (b, s)) {
                    info!(plex = i, "mirror plexes differ in size or block size");
                    return Err((abi::STATUS_INVALID_FORMAT, 0));
                }
                geometry = Some((b, s));
            }
            plexes.push((p, seen.map(|s| s.2)));
        }
        // The newest record among the reachable plexes.
        let newest = plexes
            .iter()
            .filter_map(|(_, r)| *r)
            .max_by_key(|r| r.generation)
            .filter(|r| r.generation > 0);
        let in_newest = |p: &abi::MirrorPlex| {
            let k = abi::plex_key(&p.target);
            newest.is_some_and(|n| n.in_sync.contains(&k))
        };
        if let Some(n) = newest {
            for &k in n.in_sync.iter().filter(|&&k| k != 0) {
                let found = plexes.iter().find(|(p, _)| abi::plex_key(&p.target) == k);
                match found {
                    Some((_, Some(r))) if r.generation == n.generation => {}
                    Some((p, _)) => {
                        info!(
                            subnqn = p.target.subnqn_str().unwrap_or("?"),
                            generation = n.generation,
                            "mirror: a plex of the newest copy is unreachable or older"
                        );
                        return Err((abi::STATUS_MIRROR_STALE, 0));
                    }
                    None => {
                        info!(
                            generation = n.generation,
                            "mirror: a plex of the newest copy is not in the table"
                        );
                        return Err((abi::STATUS_MIRROR_STALE, 0));
                    }
                }
            }
        }
        let Some((blocks, shift)) = geometry else {
            return Err((abi::STATUS_REMOTE_UNREACHABLE, 0));
        };
        if !(abi::LBA_SHIFT_MIN..=abi::LBA_SHIFT_MAX).contains(&shift) {
            return Err((abi::STATUS_INVALID_FORMAT, 0));
        }
        let regions = regions_of(blocks << shift);
        let plexes: Vec<PlexRecord> = plexes
            .into_iter()
            .enumerate()
            .map(|(i, (p, seen))| {
                let stale = newest.is_some() && p.state == abi::PLEX_IN_SYNC && !in_newest(p);
                if stale {
                    info!(
                        plex = i,
                        generation = seen.map(|r| r.generation),
                        "mirror plex is stale: copied in full"
                    );
                }
                let (state, dirty) = match (p.state, seen.is_some()) {
                    _ if stale => (abi::PLEX_OUT_OF_SYNC, RegionSet::all(regions)),
                    (abi::PLEX_IN_SYNC, true) => (abi::PLEX_IN_SYNC, RegionSet::new()),
                    (abi::PLEX_IN_SYNC, false) => (abi::PLEX_OUT_OF_SYNC, RegionSet::new()),
                    _ => (abi::PLEX_OUT_OF_SYNC, RegionSet::all(regions)),
                };
                PlexRecord {
                    target: p.target,
                    state,
                    dirty,
                    resync_bytes: 0,
                    faults: 0,
                }
            })
            .collect();
        if !plexes.iter().any(|p| p.state == abi::PLEX_IN_SYNC) {
            return Err(if newest.is_some() {
                (abi::STATUS_MIRROR_STALE, 0)
            } else {
                (abi::STATUS_REMOTE_UNREACHABLE, 0)
            });
        }
        let generation = newest
            .map_or(0, |n| n.generation)
            .max(create.generation)
            .saturating_add(1);
        Ok((blocks, shift, MirrorRecord { generation, plexes }))
    }

    /// Sends the plex record of mirrored namespace `nsid` (not served
    /// now) to its in-sync plexes, each through a session of its own; a
    /// plex that does not take it goes out of sync (committed; its dirty
    /// regions as they were) and the next record is sent, down to one
    /// in-sync plex (whose record the first write after the attach sends
    /// again). The record as it ends.
    fn publish_detached(&self, nsid: u32, pool: &Pool, mut rec: MirrorRecord) -> MirrorRecord {
        loop {
            let record = plex_record(&rec);
            let mut failed = None;
            for (i, p) in rec.plexes.iter().enumerate() {
                if p.state != abi::PLEX_IN_SYNC {
                    continue;
                }
                if let Err(why) = self.send_record(pool, &p.target, &record) {
                    warn!(
                        nsid,
                        plex = i,
                        "mirror plex did not take the plex record: {why}"
                    );
                    failed = Some(i);
                    break;
                }
            }
            let Some(i) = failed else {
                return rec;
            };
            if rec
                .plexes
                .iter()
                .filter(|p| p.state == abi::PLEX_IN_SYNC)
                .count()
                <= 1
            {
                return rec;
            }
            rec.plexes[i].state = abi::PLEX_OUT_OF_SYNC;
            rec.plexes[i].faults = rec.plexes[i].faults.saturating_add(1);
            rec.generation = rec.generation.saturating_add(1);
            if let Err(e) = pool
                .store_mirror(nsid, rec.clone())
                .and_then(|()| pool.flush())
            {
                warn!(nsid, "mirror record not committed: {e}");
                return rec;
            }
        }
    }

    /// Sets the plex record of `target` (this card's pool, or a session
    /// of its own).
    fn send_record(
        &self,
        pool: &Pool,
        target: &abi::RemoteTarget,
        record: &abi::PlexRecord,
    ) -> Result<(), String> {
        if let Some(n) = self.local_nsid(target) {
            return pool.set_plex_record(n, *record).map_err(|e| e.to_string());
        }
        if cfg!(feature = "fuzzing") {
            return Err("no network while fuzzing".into());
        }
        let mut cfg = io_config(target, &self.host_nqn).ok_or("bad target")?;
        cfg.io_queues = 1;
        let session = Session::connect(&cfg).map_err(|e| e.to_string())?;
        let r = session.set_plex_record(target.nsid, record);
        session.abort();
        r.map_err(|e| e.to_string())
    }

    /// Set Mirror Plexes on mirrored namespace `nsid` (on a thread of the
    /// controller's). Served now: the mirror hands over to one with the
    /// new table (commands queued meanwhile wait, none fails); else the
    /// pool's record changes. Committed, then the plex record is sent.
    pub(crate) fn set_plexes(
        &self,
        nsid: u32,
        create: &abi::MirrorNamespaceCreate,
        pool: &Arc<Pool>,
    ) -> Result<(), u16> {
        let ns = pool.namespace(nsid).ok_or(abi::STATUS_INVALID_NAMESPACE)?;
        let cur = ns.mirror.clone().ok_or(abi::STATUS_INVALID_FIELD)?;
        let regions = regions_of(ns.size_blocks << ns.lba_shift);
        for p in create.plexes() {
            if self.local_nsid(&p.target).is_none()
                && io_config(&p.target, &self.host_nqn).is_none()
            {
                return Err(abi::STATUS_INVALID_FIELD);
            }
        }
        let Some(old) = self.attached.get(nsid) else {
            let (rec, _) = new_table(&cur, create, regions)?;
            pool.store_mirror(nsid, rec.clone())
                .and_then(|()| pool.flush())
                .map_err(|e| e.status())?;
            self.publish_detached(nsid, pool, rec);
            return Ok(());
        };
        // A first check before anything stops.
        new_table(&lock(&old.state).record(), create, regions)?;
        old.pause();
        let (cur, unflushed, seq) = {
            let st = lock(&old.state);
            (st.record(), st.unflushed.clone(), st.seq)
        };
        let identity = || (cur.clone(), (0..cur.plexes.len()).map(Some).collect());
        let (mut result, (rec, from)) = match new_table(&cur, create, regions) {
            Ok(t) => (Ok(()), t),
            Err(s) => (Err(s), identity()),
        };
        let (rec, from) = if result.is_ok() {
            match pool
                .store_mirror(nsid, rec.clone())
                .and_then(|()| pool.flush())
            {
                Ok(()) => (rec, from),
                Err(e) => {
                    warn!(nsid, "mirror: new plex table not committed: {e}");
                    let _ = pool.store_mirror(nsid, cur.clone());
                    result = Err(e.status());
                    identity()
                }
            }
        } else {
            (rec, from)
        };
        // Every new target parsed (checked above).
        let plexes: Vec<Arc<Plex>> = from
            .iter()
            .enumerate()
            .filter_map(|(k, f)| match f {
                Some(j) => old.plexes.get(*j).cloned(),
                None => self.new_plex(&rec.plexes[k].target).map(Arc::new),
            })
            .collect();
        let carry = Carry {
            unflushed: from
                .iter()
                .map(|f| {
                    f.and_then(|j| unflushed.get(j).cloned())
                        .unwrap_or_default()
                })
                .collect(),
            seq,
        };
        let geometry = (old.size_blocks, old.lba_shift);
        let states: Vec<u8> = rec.plexes.iter().map(|p| p.state).collect();
        let generation = rec.generation;
        let launched = (plexes.len() == rec.plexes.len()).then(|| {
            launch(
                nsid,
                geometry,
                rec,
                plexes,
                Some(carry),
                old.pool.clone(),
                old.ctx.clone(),
            )
        });
        let Some(Some(new)) = launched else {
            // No mirror takes over: as a detach.
            self.attached.remove(nsid);
            lock(&old.state).stop = Some(Stop::Drain);
            let queued: Vec<Job> = lock(&old.jobs).drain(..).collect();
            for job in queued {
                old.post(job, abi::STATUS_NAMESPACE_NOT_READY);
            }
            return Err(abi::STATUS_INTERNAL_ERROR);
        };
        {
            let mut jobs = lock(&old.jobs);
            *lock(&old.successor) = Some(new.clone());
            let queued: Vec<Job> = jobs.drain(..).collect();
            drop(jobs);
            for job in queued {
                if let Err(job) = new.push(job) {
                    old.post(*job, abi::STATUS_NAMESPACE_NOT_READY);
                }
            }
        }
        self.attached.insert(nsid, new.clone());
        // Dropped plexes: no more writes; their sessions end.
        for (j, p) in old.plexes.iter().enumerate() {
            if from.contains(&Some(j)) {
                continue;
            }
            if let Where::Remote(r) = &p.at {
                if let Some(l) = lock(&r.conn).live.take() {
                    if let Err(e) = l.session.close() {
                        debug!(nsid, "dropped plex session shutdown: {e}");
                    }
                }
            }
        }
        if new.publish().is_err() {
            warn!(nsid, "mirror: no in-sync plex took the plex record");
        }
        info!(nsid, generation, ?states, "mirror plex table set");
        result
    }
}

/// The table Set Mirror Plexes makes of `cur` (the running states):
/// plexes in it keep their records, new ones miss every region; the new
/// table's plex k came from `cur`'s plex `from[k]`.
fn new_table(
    cur: &MirrorRecord,
    create: &abi::MirrorNamespaceCreate,
    regions: u32,
) -> Result<(MirrorRecord, Vec<Option<usize>>), u16> {
    let mut plexes = Vec::new();
    let mut from = Vec::new();
    for p in create.plexes() {
        match cur.plexes.iter().position(|q| q.target == p.target) {
            Some(j) if p.state == abi::PLEX_IN_SYNC => {
                plexes.push(cur.plexes[j].clone());
                from.push(Some(j));
            }
            None if p.state == abi::PLEX_NEW => {
                plexes.push(PlexRecord {
                    target: p.target,
                    state: abi::PLEX_OUT_OF_SYNC,
                    dirty: RegionSet::all(regions),
                    resync_bytes: 0,
                    faults: 0,
                });
                from.push(None);
            }
            _ => return Err(abi::STATUS_INVALID_FIELD),
        }
    }
    if !plexes.iter().any(|p| p.state == abi::PLEX_IN_SYNC) {
        return Err(abi::STATUS_MIRROR_LAST_COPY);
    }
    let rec = MirrorRecord {
        generation: cur.generation.saturating_add(1),
        plexes,
    };
    Ok((rec, from))
}

/// What a mirror that takes over from another keeps of it: per plex of
/// the new table the regions sent to it since its last Flush (empty for a
/// new plex), and the write sequence.
struct Carry {
    unflushed: Vec<BTreeMap<u32, u64>>,
    seq: u64,
}

/// Builds and starts a mirror (workers, crew, resync thread).
fn launch(
    nsid: u32,
    (size_blocks, lba_shift): (u64, u8),
    rec: MirrorRecord,
    plexes: Vec<Arc<Plex>>,
    carry: Option<Carry>,
    pool: Arc<Pool>,
    ctx: Weak<IoContext>,
) -> Option<Arc<Mirror>> {
    let n = plexes.len();
    let remote = plexes
        .iter()
        .filter(|p| matches!(p.at, Where::Remote(_)))
        .count();
    let now = Instant::now();
    let (unflushed, seq) = match carry {
        Some(c) => (c.unflushed, c.seq),
        None => (vec![BTreeMap::new(); n], 0),
    };
    let mirror = Arc::new(Mirror {
        nsid,
        size_blocks,
        lba_shift,
        regions: regions_of(size_blocks << lba_shift),
        pool,
        ctx,
        plexes,
        state: Mutex::new(State {
            rec,
            resyncing: vec![false; n],
            pending: vec![RegionSet::new(); n],
            unflushed,
            inflight: BTreeSet::new(),
            seq,
            writers: HashMap::new(),
            copying: HashSet::new(),
            rate: vec![(now, 0, 0); n],
            stop: None,
        }),
        published: Mutex::new(0),
        successor: Mutex::new(None),
        changed: Condvar::new(),
        jobs: Mutex::new(VecDeque::new()),
        more: Condvar::new(),
        crew: Crew::start(WORKERS * remote, &format!("mirror{nsid}p")),
        threads: Mutex::new(Vec::new()),
    });
    let mut threads = attached::spawn_workers(
        &mirror,
        WORKERS,
        &format!("mirror{nsid}"),
        |m| m.serve(),
        |e| warn!(nsid, "no thread for a mirror worker: {e}"),
    );
    if threads.is_empty() {
        mirror.crew.stop();
        return None;
    }
    let m = mirror.clone();
    match std::thread::Builder::new()
        .name(format!("mirror{nsid}-resync"))
        .spawn(move || m.resync_loop())
    {
        Ok(t) => threads.push(t),
        Err(e) => warn!(nsid, "no thread for a mirror's resync: {e}"),
    }
    *lock(&mirror.threads) = threads;
    info!(nsid, plexes = n, "mirrored namespace served");
    Some(mirror)
}

/// What a call on a remote plex gets: the namespace and the target's
/// optional commands (ONCS).
struct CallHandle<'a> {
    ns: &'a RemoteNamespace,
    oncs: u16,
}
