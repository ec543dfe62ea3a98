//! One NVMe/TCP connection (one queue) of the initiator: TCP connect and
//! ICReq/ICResp, then a reader thread (PDUs from the target through the
//! checked [`Receiver`]) and a writer thread (capsules and H2CData, in the
//! order they were queued, so the reader never blocks on a send). Callers
//! on any thread [`Queue::submit`] a command (a free command id, at most
//! the queue's depth in flight) and [`Queue::wait`] for its completion,
//! which may come in any order.
//!
//! A connection ends for good on its first transport error — a socket
//! error, a PDU that fails a check (an H2CTermReq goes out), a
//! C2HTermReq, or a command past its timeout — and every command in flight
//! fails with that error. A [`Fuse`] shared by a session's queues carries
//! the first error to all of them: the session is one association, and a
//! new one is the caller's decision.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Rx, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tracing::debug;

use super::super::command::{sgl_id, Command, Sgl, PSDT_SGL};
use super::super::pdu::{self, kind, Capsule, Completion, Digests, Header, IcReq, Pdu, Term};
use super::super::pdu::{Limits, HEADER_BYTES};
use super::error::{Error, TransportError};
use super::receive::{self, Action, Expect, Negotiated, Receiver, HPDA};
use super::MAX_COMMAND_BYTES;

/// A command's data going to the target.
#[derive(Debug, Clone)]
pub enum Payload {
    /// None.
    None,
    /// In the capsule (at most the queue's in-capsule limit).
    InCapsule(Vec<u8>),
    /// Through R2T/H2CData.
    Transport(Arc<Vec<u8>>),
}

/// A command to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// The command (its cid and data pointer are filled in here).
    pub cmd: Command,
    /// Data to the target.
    pub payload: Payload,
    /// Bytes the target sends back (0: none).
    pub read_len: usize,
}

/// A completed command.
#[derive(Debug)]
pub struct Reply {
    /// Its completion.
    pub completion: Completion,
    /// What it read.
    pub data: Vec<u8>,
}

/// A submitted command to wait for.
#[derive(Debug)]
pub struct Ticket {
    opcode: u8,
    rx: Rx<Result<Reply, Error>>,
    deadline: Instant,
}

/// How a queue is set up.
#[derive(Debug, Clone, Copy)]
pub struct QueueParams {
    /// Queue id (0: admin).
    pub qid: u16,
    /// Digests to ask for.
    pub digests: Digests,
    /// Most commands in flight.
    pub depth: usize,
    /// Most in-capsule data.
    pub in_capsule: usize,
    /// Time a command may take (and a socket write may block).
    pub timeout: Duration,
    /// Time to connect and exchange ICReq/ICResp.
    pub connect_timeout: Duration,
}

/// The first transport error of a session, carried to every queue.
#[derive(Debug, Default)]
pub struct Fuse {
    first: Mutex<Option<TransportError>>,
    queues: Mutex<Vec<Weak<Shared>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fuse {
    /// Records `e` unless an error came first; returns the first.
    fn record(&self, e: TransportError) -> TransportError {
        lock(&self.first).get_or_insert(e).clone()
    }

    /// The first error, if any.
    pub fn blown(&self) -> Option<TransportError> {
        lock(&self.first).clone()
    }

    /// Ends every queue of the session with `e` (or the first error).
    pub fn blow(&self, e: TransportError) {
        let e = self.record(e);
        let queues = lock(&self.queues).clone();
        for q in queues.iter().filter_map(Weak::upgrade) {
            q.teardown(e.clone(), None);
        }
    }
}

/// What the writer thread sends.
enum Out {
    /// PDUs.
    Bytes(Vec<u8>),
    /// An H2CTermReq, then the connection closes.
    Term(Vec<u8>),
}

struct State {
    rx: Receiver,
    waiters: HashMap<u16, SyncSender<Result<Reply, Error>>>,
    next_cid: u16,
    dead: Option<TransportError>,
}

/// What a queue's handles and threads share.
pub struct Shared {
    p: QueueParams,
    state: Mutex<State>,
    slots: Condvar,
    out: Sender<Out>,
    stream: TcpStream,
    dead: Arc<AtomicBool>,
    fuse: Arc<Fuse>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("qid", &self.p.qid).finish()
    }
}

/// One connection; dropping it ends the connection.
#[derive(Debug)]
pub struct Queue {
    shared: Arc<Shared>,
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| {
        Error::Transport(TransportError::Io {
            what,
            kind: e.kind(),
        })
    }
}

/// ICReq out, ICResp in (bounded by the stream's read timeout).
fn initialize(stream: &mut TcpStream, digests: Digests) -> Result<Negotiated, Error> {
    let ic = pdu::encode(
        &Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: HPDA,
            digests,
            maxr2t: 0,
        }),
        Digests::default(),
    );
    stream.write_all(&ic).map_err(io("sending ICReq"))?;
    let mut head = [0u8; HEADER_BYTES];
    stream.read_exact(&mut head).map_err(io("reading ICResp"))?;
    let h = Header::parse(&head);
    if h.kind != kind::IC_RESP && h.kind != kind::C2H_TERM {
        return Err(
            TransportError::from(pdu::Fatal::sequence("ICReq answered by another PDU")).into(),
        );
    }
    let lim = Limits {
        capsule_data: 0,
        data_pdu: 0,
    };
    let l = pdu::check(&h, None, lim).map_err(TransportError::from)?;
    let mut buf = head.to_vec();
    buf.resize(l.plen, 0);
    stream
        .read_exact(&mut buf[HEADER_BYTES..])
        .map_err(io("reading ICResp"))?;
    Ok(receive::check_icresp(&buf, digests)?)
}

impl Queue {
    /// Connects to `addr` and initializes the connection; the queue joins
    /// `fuse`.
    pub fn open(addr: SocketAddr, p: QueueParams, fuse: Arc<Fuse>) -> Result<Self, Error> {
        let mut stream =
            TcpStream::connect_timeout(&addr, p.connect_timeout).map_err(io("connecting"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(p.connect_timeout)))
            .and_then(|()| stream.set_write_timeout(Some(p.timeout)))
            .map_err(io("socket setup"))?;
        let n = initialize(&mut stream, p.digests)?;
        stream.set_read_timeout(None).map_err(io("socket setup"))?;
        let reader = stream.try_clone().map_err(io("socket setup"))?;
        let writer = stream.try_clone().map_err(io("socket setup"))?;
        let (out, out_rx) = mpsc::channel();
        let dead = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            p,
            state: Mutex::new(State {
                rx: Receiver::new(n),
                waiters: HashMap::new(),
                next_cid: 0,
                dead: None,
            }),
            slots: Condvar::new(),
            out,
            stream,
            dead: dead.clone(),
            fuse: fuse.clone(),
        });
        lock(&fuse.queues).push(Arc::downgrade(&shared));
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name(format!("fabric-tx{}", p.qid))
            .spawn(move || write_loop(writer, &out_rx, &dead, &weak))
            .map_err(io("starting the writer thread"))?;
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fabric-rx{}", p.qid))
            .spawn(move || read_loop(&s, reader));
        if let Err(e) = spawned {
            shared.teardown(TransportError::Ended, None);
            return Err(io("starting the reader thread")(e));
        }
        // A session already failing: this queue fails with it.
        if let Some(e) = fuse.blown() {
            shared.teardown(e.clone(), None);
            return Err(e.into());
        }
        Ok(Self { shared })
    }

    /// Most in-capsule data.
    pub fn in_capsule(&self) -> usize {
        self.shared.p.in_capsule
    }

    /// Sends a command; at most the queue's depth are in flight (waits for
    /// a free slot within the command timeout).
    pub fn submit(&self, mut req: Request) -> Result<Ticket, Error> {
        let s = &self.shared;
        let deadline = Instant::now() + s.p.timeout;
        let op = req.cmd.opcode();
        let (len, id, data, write) = match req.payload {
            Payload::None => (req.read_len, sgl_id::TRANSPORT, Vec::new(), None),
            Payload::InCapsule(d) => {
                if d.len() > s.p.in_capsule || req.read_len > 0 {
                    return Err(Error::Invalid("in-capsule data beyond the queue's limit"));
                }
                (d.len(), sgl_id::IN_CAPSULE, d, None)
            }
            Payload::Transport(d) => {
                if req.read_len > 0 {
                    return Err(Error::Invalid("a command that both reads and writes"));
                }
                (d.len(), sgl_id::TRANSPORT, Vec::new(), Some(d))
            }
        };
        if len > MAX_COMMAND_BYTES {
            return Err(Error::Invalid("more data than one command moves"));
        }
        // Fabrics commands too: Linux's nvmet refuses a Connect without
        // PSDT = SGL (Invalid Field, found by the fabric-nvmet scenario),
        // and Linux's own host sets it on every command.
        req.cmd.set_flags(PSDT_SGL);
        req.cmd.set_sgl(Sgl {
            addr: 0,
            // At most MAX_COMMAND_BYTES.
            length: len as u32,
            id,
        });
        let mut st = lock(&s.state);
        loop {
            if let Some(e) = &st.dead {
                return Err(e.clone().into());
            }
            if st.rx.len() < s.p.depth {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(st);
                return Err(self.time_out(op));
            }
            st = s
                .slots
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let mut cid = st.next_cid;
        while st.rx.in_flight(cid) {
            cid = cid.wrapping_add(1);
        }
        st.next_cid = cid.wrapping_add(1);
        req.cmd.set_cid(cid);
        let n = st.rx.negotiated();
        st.rx.expect(
            cid,
            Expect {
                read_len: req.read_len,
                write,
            },
        );
        let (tx, rx) = mpsc::sync_channel(1);
        st.waiters.insert(cid, tx);
        let bytes = pdu::encode_aligned(
            &Pdu::Cmd(Capsule {
                sqe: req.cmd.0,
                data,
                data_ok: true,
            }),
            n.digests,
            n.cpda,
        );
        // The writer lives while the queue does; if it is gone the
        // connection is being torn down and the waiter hears of it.
        let _ = s.out.send(Out::Bytes(bytes));
        Ok(Ticket {
            opcode: op,
            rx,
            deadline,
        })
    }

    /// Waits for a submitted command; past its deadline the connection
    /// (and the session) ends with a timeout.
    pub fn wait(&self, t: Ticket) -> Result<Reply, Error> {
        let left = t.deadline.saturating_duration_since(Instant::now());
        match t.rx.recv_timeout(left) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(self.time_out(t.opcode)),
            Err(RecvTimeoutError::Disconnected) => {
                let st = lock(&self.shared.state);
                Err(st.dead.clone().unwrap_or(TransportError::Ended).into())
            }
        }
    }

    /// Submits a command and waits for it.
    pub fn run(&self, req: Request) -> Result<Reply, Error> {
        let t = self.submit(req)?;
        self.wait(t)
    }

    fn time_out(&self, opcode: u8) -> Error {
        let e = TransportError::Timeout { opcode };
        self.shared.teardown(e.clone(), None);
        self.shared.fuse.blown().unwrap_or(e).into()
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.shared.teardown(TransportError::Ended, None);
    }
}

impl Shared {
    /// Ends the connection: every command in flight fails with the
    /// session's first error; an H2CTermReq (`term`) goes out first if
    /// given; then every other queue of the session ends too.
    fn teardown(&self, e: TransportError, term: Option<Vec<u8>>) {
        let e = self.fuse.record(e);
        let waiters = {
            let mut st = lock(&self.state);
            if st.dead.is_some() {
                return;
            }
            st.dead = Some(e.clone());
            std::mem::take(&mut st.waiters)
        };
        self.dead.store(true, Ordering::Release);
        debug!(qid = self.p.qid, "fabric initiator: connection ends: {e}");
        for w in waiters.into_values() {
            let _ = w.try_send(Err(e.clone().into()));
        }
        self.slots.notify_all();
        // With a termination request the writer sends it and closes.
        let handed = term.is_some_and(|t| self.out.send(Out::Term(t)).is_ok());
        if !handed {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        self.fuse.blow(e);
    }
}

/// The H2CTermReq for a protocol error in the PDU whose header is `pdu`.
fn termination(e: &TransportError, pdu: &[u8]) -> Option<Vec<u8>> {
    let TransportError::Protocol(f) = e else {
        return None;
    };
    let hlen = pdu
        .get(2)
        .map_or(pdu.len(), |&h| usize::from(h).max(HEADER_BYTES));
    let header = pdu[..pdu.len().min(hlen).min(128)].to_vec();
    Some(pdu::encode(
        &Pdu::H2cTerm(Term {
            fes: f.fes,
            fei: f.fei,
            header,
        }),
        Digests::default(),
    ))
}

fn read_error(e: &std::io::Error) -> TransportError {
    if e.kind() == ErrorKind::UnexpectedEof {
        TransportError::Closed
    } else {
        TransportError::Io {
            what: "reading",
            kind: e.kind(),
        }
    }
}

fn read_loop(s: &Arc<Shared>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut actions = Vec::new();
    loop {
        let mut head = [0u8; HEADER_BYTES];
        if let Err(e) = stream.read_exact(&mut head) {
            s.teardown(read_error(&e), None);
            return;
        }
        let checked = lock(&s.state).rx.check_header(&head);
        let plen = match checked {
            Ok(p) => p,
            Err(e) => {
                let t = termination(&e, &head);
                s.teardown(e, t);
                return;
            }
        };
        buf.clear();
        buf.extend_from_slice(&head);
        buf.resize(plen, 0);
        if let Err(e) = stream.read_exact(&mut buf[HEADER_BYTES..]) {
            s.teardown(read_error(&e), None);
            return;
        }
        actions.clear();
        let mut st = lock(&s.state);
        if st.dead.is_some() {
            return;
        }
        if let Err(e) = st.rx.receive(&buf, &mut actions) {
            drop(st);
            let t = termination(&e, &buf);
            s.teardown(e, t);
            return;
        }
        for a in actions.drain(..) {
            match a {
                Action::Complete { completion, data } => {
                    if let Some(w) = st.waiters.remove(&completion.cid) {
                        let _ = w.try_send(Ok(Reply { completion, data }));
                    }
                    s.slots.notify_one();
                }
                Action::Send(bytes) => {
                    let _ = s.out.send(Out::Bytes(bytes));
                }
            }
        }
    }
}

fn write_loop(mut stream: TcpStream, rx: &Rx<Out>, dead: &AtomicBool, queue: &Weak<Shared>) {
    for m in rx {
        match m {
            Out::Bytes(b) => {
                if dead.load(Ordering::Acquire) {
                    continue;
                }
                if let Err(e) = stream.write_all(&b) {
                    let e = TransportError::Io {
                        what: "writing",
                        kind: e.kind(),
                    };
                    if let Some(q) = queue.upgrade() {
                        q.teardown(e, None);
                    }
                    let _ = stream.shutdown(Shutdown::Both);
                }
            }
            Out::Term(t) => {
                let _ = stream.write_all(&t);
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}
