//! I/O queue workers: one thread per I/O submission queue, woken by that
//! queue's doorbell eventfd, so queues are served concurrently (as the
//! engines of a real card would). A worker executes its queue's commands in
//! order, posts each completion on the queue's completion queue (shared, as
//! several SQs may complete on one CQ) and raises the CQ's vector.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use dia_abi::card::{self as abi, CompletionEntry};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::debug;

use crate::board::Board;
use crate::nvm;
use crate::pool::Pool;
use crate::queue::{CompletionQueue, SubmissionQueue};

/// A completion queue shared by the workers of the SQs that use it.
pub(crate) type SharedCq = Arc<Mutex<CompletionQueue>>;

/// Completions posted before the vector is raised while more commands wait.
const IRQ_BATCH: u32 = 8;

/// What workers share with the controller.
#[derive(Debug)]
pub(crate) struct IoContext {
    pub(crate) board: Arc<Board>,
    pub(crate) pool: Option<Arc<Pool>>,
    /// Set by a worker that found the driver broke the queue protocol; the
    /// controller turns it into a fatal status.
    pub(crate) fatal: Mutex<Option<String>>,
}

impl IoContext {
    fn report_fatal(&self, why: String) {
        let mut f = self.fatal.lock().unwrap_or_else(PoisonError::into_inner);
        f.get_or_insert(why);
    }
}

/// A running worker; dropping it stops and joins the thread.
#[derive(Debug)]
pub(crate) struct IoWorker {
    /// The completion queue its commands complete on.
    pub(crate) cqid: u16,
    stop: Arc<AtomicBool>,
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
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("sq{qid}"))
            .spawn(move || serve(&ctx, qid, sq, cqid, &cq, &s))?;
        Ok(Self {
            cqid,
            stop,
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
    }
}

fn serve(
    ctx: &IoContext,
    qid: u16,
    mut sq: SubmissionQueue,
    cqid: u16,
    cq: &SharedCq,
    stop: &AtomicBool,
) {
    let board = &ctx.board;
    let Some(doorbell) = board.doorbells.get(usize::from(qid)) else {
        ctx.report_fatal(format!("SQ {qid} has no doorbell"));
        return;
    };
    doorbell.drain();
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(doorbell.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(abi::CARD_POLL_MS as i32).unwrap_or(PollTimeout::ZERO);
        let _ = poll(&mut fds, timeout);
        doorbell.drain();
        if let Err(why) = drain_queue(ctx, qid, &mut sq, cqid, cq, stop) {
            ctx.report_fatal(why);
            return;
        }
    }
}

/// Executes everything up to the tail the driver rang.
fn drain_queue(
    ctx: &IoContext,
    qid: u16,
    sq: &mut SubmissionQueue,
    cqid: u16,
    cq: &SharedCq,
    stop: &AtomicBool,
) -> Result<(), String> {
    let board = &ctx.board;
    let mut unsignalled = 0u32;
    let mut vector = None;
    let raise = |vector: &mut Option<u16>, n: &mut u32| {
        if let Some(v) = vector.take() {
            board.irq.raise(v);
        }
        *n = 0;
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let tail = board.bar.read32(abi::sq_tail_doorbell(qid));
        if !sq.valid_tail(tail) {
            return Err(format!("SQ {qid} tail doorbell {tail} beyond the queue"));
        }
        // Checked just above: fits the queue size (u16).
        if !sq.pending(tail as u16) {
            raise(&mut vector, &mut unsignalled);
            return Ok(());
        }
        {
            let cq = cq.lock().unwrap_or_else(PoisonError::into_inner);
            let head = board.bar.read32(abi::cq_head_doorbell(cqid));
            if !cq.valid_head(head) {
                return Err(format!("CQ {cqid} head doorbell {head} beyond the queue"));
            }
            if cq.is_full(head) {
                drop(cq);
                debug!("CQ {cqid} full; SQ {qid} waits");
                raise(&mut vector, &mut unsignalled);
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        let sqe = sq.pop(&board.mem).map_err(|e| format!("SQ {qid}: {e}"))?;
        let status = nvm::execute(ctx.pool.as_deref(), &board.mem, &sqe);
        if status != abi::STATUS_SUCCESS {
            debug!(
                qid,
                opcode = sqe.opcode,
                cid = sqe.cid,
                nsid = sqe.nsid,
                "status {status:#x}"
            );
        }
        let cqe = CompletionEntry {
            result: 0,
            rsvd: 0,
            sq_head: sq.head(),
            sq_id: qid,
            cid: sqe.cid,
            status: 0,
        };
        // Another SQ sharing the CQ may have filled it meanwhile: wait.
        let mut cq = loop {
            let cq = cq.lock().unwrap_or_else(PoisonError::into_inner);
            if !cq.is_full(board.bar.read32(abi::cq_head_doorbell(cqid))) {
                break cq;
            }
            drop(cq);
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            raise(&mut vector, &mut unsignalled);
            std::thread::sleep(Duration::from_micros(200));
        };
        cq.post(&board.mem, cqe, status)
            .map_err(|e| format!("CQ {cqid}: {e}"))?;
        if cq.interrupts {
            vector = Some(cq.vector);
            unsignalled += 1;
        }
        drop(cq);
        if unsignalled >= IRQ_BATCH {
            raise(&mut vector, &mut unsignalled);
        }
    }
}
