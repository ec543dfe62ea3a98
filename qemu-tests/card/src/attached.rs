//! What the attached namespaces served off the local path have in common:
//! remote namespaces (`remote::Link`) and mirrored namespaces
//! (`mirror::Mirror`). A [`Registry`] holds the running ones of a firmware
//! run by nsid and stops them (a detach, or every one as in a crash) and
//! flushes them (a broadcast Flush) through the [`Attached`] trait. The
//! [`Commands`] trait and the functions here are the command plumbing
//! both share: running an I/O command and posting its completion through
//! the engines' `finish`, the checks of its blocks against the namespace,
//! the copies between guest memory and a bounce buffer, and the worker
//! threads. What a server does differently stays in its trait methods.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;

use dia_abi::card::{self as abi, SubmissionEntry};
use tracing::warn;

use crate::guest_memory::{GuestMemory, MemoryError};
use crate::io_queue::{self, IoContext, QueueGate};
use crate::nvm::{self, MAX_TRANSFER_BYTES};
use crate::prp::prp_segments;
use crate::remote::Job;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How an attached namespace's server stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Detached: commands still queued complete with Namespace Not Ready;
    /// sessions end with a shutdown notification (the target makes what
    /// it holds durable).
    Drain,
    /// The firmware stops, as a crash: queued commands are dropped,
    /// sessions end at once.
    Abort,
}

/// A running server of one attached namespace, as a [`Registry`] drives it.
pub(crate) trait Attached: Send + Sync + 'static {
    /// What the logs call one.
    const WHAT: &'static str;

    /// The name of the thread a detach stops it on, in the background
    /// (it takes no more commands at once); `None`: a detach stops it on
    /// the caller's thread and waits for it.
    fn stop_thread(nsid: u32) -> Option<String>;

    /// Marks it stopping as `how` (it takes no more commands) and wakes
    /// its threads; does not wait.
    fn signal(&self, how: Stop);

    /// Stops it as `how` and waits for its threads.
    fn shut(&self, how: Stop);

    /// A broadcast Flush of it: the status.
    fn flush_status(self: &Arc<Self>) -> u16;
}

/// The running servers of a firmware run's attached namespaces, by nsid.
#[derive(Debug)]
pub(crate) struct Registry<T> {
    running: Mutex<HashMap<u32, Arc<T>>>,
}

impl<T: Attached> Registry<T> {
    pub(crate) fn new() -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The server of `nsid`, if it runs.
    pub(crate) fn get(&self, nsid: u32) -> Option<Arc<T>> {
        lock(&self.running).get(&nsid).cloned()
    }

    /// Puts `t` in as `nsid`'s server; the one it replaces, left running.
    pub(crate) fn insert(&self, nsid: u32, t: Arc<T>) -> Option<Arc<T>> {
        lock(&self.running).insert(nsid, t)
    }

    /// Takes `nsid`'s server out, left running.
    pub(crate) fn remove(&self, nsid: u32) -> Option<Arc<T>> {
        lock(&self.running).remove(&nsid)
    }

    /// `t` serves `nsid` from now; one that served it before stops as in
    /// a crash.
    pub(crate) fn start(&self, nsid: u32, t: Arc<T>) {
        if let Some(old) = self.insert(nsid, t) {
            old.shut(Stop::Abort);
        }
    }

    /// Detach: `nsid`'s server stops as [`Stop::Drain`], in the background
    /// if [`Attached::stop_thread`] names a thread (inline if it cannot be
    /// spawned), else before this returns.
    pub(crate) fn stop(&self, nsid: u32) {
        let Some(t) = self.remove(nsid) else {
            return;
        };
        let Some(name) = T::stop_thread(nsid) else {
            t.shut(Stop::Drain);
            return;
        };
        t.signal(Stop::Drain);
        let bg = t.clone();
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || bg.shut(Stop::Drain));
        if let Err(e) = spawned {
            warn!(
                nsid,
                "no thread to stop the {}, stopping inline: {e}",
                T::WHAT
            );
            t.shut(Stop::Drain);
        }
    }

    /// The firmware stops: every server stops as in a crash. All are
    /// signalled first (none takes commands while another is waited for),
    /// then each is waited for.
    pub(crate) fn stop_all(&self) {
        let all: Vec<Arc<T>> = lock(&self.running).drain().map(|(_, t)| t).collect();
        for t in &all {
            t.signal(Stop::Abort);
        }
        for t in all {
            t.shut(Stop::Abort);
        }
    }

    /// A broadcast Flush's part: every server flushes; the first
    /// failure's status.
    pub(crate) fn flush_all(&self) -> u16 {
        let all: Vec<Arc<T>> = lock(&self.running).values().cloned().collect();
        let mut status = abi::STATUS_SUCCESS;
        for t in all {
            let s = t.flush_status();
            if status == abi::STATUS_SUCCESS {
                status = s;
            }
        }
        status
    }
}

/// Why a command ends early.
pub(crate) enum Fail {
    /// With this status.
    Status(u16),
    /// Its queue went away (a reset): it is dropped, nothing is posted.
    Gone,
}

impl From<u16> for Fail {
    fn from(s: u16) -> Self {
        Self::Status(s)
    }
}

impl Fail {
    /// The status of a broadcast Flush's part that ended with `r` (one
    /// whose queue went away counts as an internal error).
    pub(crate) fn status(r: Result<(), Self>) -> u16 {
        match r {
            Ok(()) => abi::STATUS_SUCCESS,
            Err(Self::Status(s)) => s,
            Err(Self::Gone) => abi::STATUS_INTERNAL_ERROR,
        }
    }
}

/// Guest memory pieces of a transfer (address, length).
pub(crate) type Segments = Vec<(u64, usize)>;

/// Whether blocks `slba..slba + blocks` are some and all within a
/// namespace of `size_blocks` blocks.
pub(crate) fn check_range(slba: u64, blocks: u64, size_blocks: u64) -> Result<(), Fail> {
    match slba.checked_add(blocks) {
        Some(end) if blocks > 0 && end <= size_blocks => Ok(()),
        _ => Err(abi::STATUS_LBA_OUT_OF_RANGE.into()),
    }
}

/// A command as a worker runs it.
pub(crate) struct Cmd<'a> {
    /// Where its data is.
    pub(crate) mem: &'a GuestMemory,
    pub(crate) sqe: &'a SubmissionEntry,
    /// Its queue's: guest memory is touched only while it is open.
    pub(crate) gate: &'a QueueGate,
}

/// A Read's or Write's checked blocks.
pub(crate) struct Transfer {
    pub(crate) slba: u64,
    /// Bytes, at most `MAX_TRANSFER_BYTES`.
    pub(crate) len: usize,
    /// The guest memory its PRPs describe.
    pub(crate) segs: Segments,
}

/// A Read's or Write's blocks on a namespace of `size_blocks` blocks of
/// 2^`lba_shift` bytes, checked as the local path checks them: the
/// transfer's size, then its PRPs (read from guest memory while `gate` is
/// open), then the range.
pub(crate) fn transfer(c: &Cmd<'_>, size_blocks: u64, lba_shift: u8) -> Result<Transfer, Fail> {
    let (slba, n) = (nvm::slba(c.sqe), nvm::blocks(c.sqe));
    let len = n << lba_shift;
    if len > u64::from(MAX_TRANSFER_BYTES) {
        return Err(abi::STATUS_INVALID_FIELD.into());
    }
    let segs = {
        let _open = c.gate.enter().ok_or(Fail::Gone)?;
        // At most MAX_TRANSFER_BYTES: fits usize.
        prp_segments(c.mem, c.sqe.prp1, c.sqe.prp2, len as usize)?
    };
    check_range(slba, n, size_blocks)?;
    Ok(Transfer {
        slba,
        // At most MAX_TRANSFER_BYTES.
        len: len as usize,
        segs: segs.into_vec(),
    })
}

/// Copies guest memory `segs` into `buf` while `gate` is open.
pub(crate) fn from_guest(c: &Cmd<'_>, segs: Segments, buf: &mut [u8]) -> Result<(), Fail> {
    each_segment(c.gate, segs, |addr, at| c.mem.read(addr, &mut buf[at]))
}

/// Copies `buf` into guest memory `segs` while `gate` is open.
pub(crate) fn to_guest(c: &Cmd<'_>, segs: Segments, buf: &[u8]) -> Result<(), Fail> {
    each_segment(c.gate, segs, |addr, at| c.mem.write(addr, &buf[at]))
}

/// Calls `copy` for each of `segs` (its guest address and its bytes of
/// the buffer, in order) while `gate` is open.
fn each_segment(
    gate: &QueueGate,
    segs: Segments,
    mut copy: impl FnMut(u64, Range<usize>) -> Result<(), MemoryError>,
) -> Result<(), Fail> {
    let _open = gate.enter().ok_or(Fail::Gone)?;
    let mut off = 0;
    for (addr, len) in segs {
        copy(addr, off..off + len).map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
        off += len;
    }
    Ok(())
}

/// The ranges (slba, blocks) a Dataset Management command deallocates on
/// a namespace of `size_blocks` blocks, every one checked before any is
/// used; empty when it has nothing to do (only hints, or only empty
/// ranges).
pub(crate) fn deallocations(c: &Cmd<'_>, size_blocks: u64) -> Result<Vec<(u64, u32)>, Fail> {
    if !abi::DsmAttributes::from_cdw11(c.sqe.cdw11).deallocate {
        // Only hints: nothing to do.
        return Ok(Vec::new());
    }
    let ranges = {
        let _open = c.gate.enter().ok_or(Fail::Gone)?;
        nvm::dsm_ranges(c.mem, c.sqe)?
    };
    for r in &ranges {
        if r.slba
            .checked_add(u64::from(r.blocks))
            .is_none_or(|e| e > size_blocks)
        {
            return Err(abi::STATUS_LBA_OUT_OF_RANGE.into());
        }
    }
    Ok(ranges
        .iter()
        .filter(|r| r.blocks > 0)
        .map(|r| (r.slba, r.blocks))
        .collect())
}

/// Posts `job`'s completion with `status` through the engines' `finish`
/// (counters, faults, completion queue, interrupt); drops it instead if
/// its queue is gone or, once the queue is held open, `aborted()` (a crash
/// posts nothing).
pub(crate) fn post(ctx: &IoContext, job: Job, status: u16, aborted: impl FnOnce() -> bool) {
    let gate = job.p.gate.clone();
    let Some(_open) = gate.enter() else {
        job.p.discard();
        return;
    };
    if aborted() {
        job.p.discard();
        return;
    }
    let never = AtomicBool::new(false);
    match io_queue::finish(
        ctx,
        job.class,
        job.p,
        status,
        job.started,
        job.throttled,
        &never,
    ) {
        Ok(Some(vector)) => ctx.board.irq.raise(vector),
        Ok(None) => {}
        Err(why) => ctx.report_fatal(why),
    }
}

/// Starts `n` threads named `<name>.<i>` that run `serve(&t)`; one that
/// cannot be spawned is told to `failed` and left out.
pub(crate) fn spawn_workers<T: Send + Sync + 'static>(
    t: &Arc<T>,
    n: usize,
    name: &str,
    serve: fn(&Arc<T>),
    failed: impl Fn(std::io::Error),
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    for i in 0..n {
        let t = t.clone();
        match std::thread::Builder::new()
            .name(format!("{name}.{i}"))
            .spawn(move || serve(&t))
        {
            Ok(h) => threads.push(h),
            Err(e) => failed(e),
        }
    }
    threads
}

/// The I/O commands an attached namespace's server runs for its workers.
pub(crate) trait Commands: Send + Sync + 'static {
    /// Where its commands complete.
    fn ctx(&self) -> &Weak<IoContext>;

    /// It stopped as in a crash: a command that ran meanwhile posts
    /// nothing.
    fn aborted(&self) -> bool;

    /// A command it ran is dropped: its queue went away meanwhile.
    fn dropped(&self);

    fn read(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail>;

    fn write(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail>;

    fn flush(self: &Arc<Self>) -> Result<(), Fail>;

    fn write_zeroes(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail>;

    fn dataset_management(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail>;

    /// Executes a command and posts its completion.
    fn run(self: &Arc<Self>, job: Job) {
        let Some(ctx) = self.ctx().upgrade() else {
            job.p.discard();
            return;
        };
        let gate = job.p.gate.clone();
        let c = Cmd {
            mem: &ctx.board.mem,
            sqe: &job.p.sqe,
            gate: &gate,
        };
        let status = match self.execute(&c) {
            Ok(()) => abi::STATUS_SUCCESS,
            Err(Fail::Status(s)) => s,
            Err(Fail::Gone) => {
                self.dropped();
                job.p.discard();
                return;
            }
        };
        post(&ctx, job, status, || self.aborted());
    }

    fn execute(self: &Arc<Self>, c: &Cmd<'_>) -> Result<(), Fail> {
        if c.sqe.flags != 0 {
            return Err(abi::STATUS_INVALID_FIELD.into());
        }
        match c.sqe.opcode {
            abi::IO_READ => self.read(c),
            abi::IO_WRITE => self.write(c),
            abi::IO_FLUSH => self.flush(),
            abi::IO_WRITE_ZEROES => self.write_zeroes(c),
            abi::IO_DATASET_MANAGEMENT => self.dataset_management(c),
            _ => Err(abi::STATUS_INVALID_OPCODE.into()),
        }
    }
}
