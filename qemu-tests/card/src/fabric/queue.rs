//! One NVMe/TCP connection (one queue) as a state machine without I/O:
//! whole PDUs in, encoded PDUs out. ICReq/ICResp first (digests
//! negotiated), then Connect makes it a controller's admin queue or one of
//! its I/O queues. Commands get their host data in the capsule or through
//! R2T/H2CData (at most [`MAX_TRANSFERS`] R2Ts outstanding; later writes
//! wait their turn), run, and answer with C2HData and a response capsule.
//! Protocol errors end the connection with a C2HTermReq; command errors
//! are NVMe statuses. `target` drives it from a socket; the fuzz target
//! drives it from bytes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use crate::guest_memory::{GuestMemory, SharedMemory};

use super::admin::{self, Outcome};
use super::command::{fctype, sgl_id, status, Command, ConnectData, Direction};
use super::controller::{Ctrl, Shared, Subsystem};
use super::io::{self, DataLen};
use super::pdu::{
    self, fes, Capsule, Completion, Data, Digests, Fatal, Header, IcResp, Limits, Pdu, R2t, Term,
    HEADER_BYTES,
};
use super::{
    C2H_DATA_BYTES, IN_CAPSULE_BYTES, MAXH2CDATA, MAX_TRANSFERS, MDTS_BYTES, QUEUE_ENTRIES,
};

/// Why a connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A protocol error: a C2HTermReq goes out first.
    Fatal(Fatal),
    /// The host sent an H2CTermReq.
    HostTerminated(u16),
}

impl From<Fatal> for Stop {
    fn from(f: Fatal) -> Self {
        Self::Fatal(f)
    }
}

/// Most Asynchronous Event Requests held per controller (AERL + 1).
const MAX_HELD_EVENTS: usize = 4;

#[derive(Debug)]
struct Queue {
    ctrl: Arc<Ctrl>,
    qid: u16,
    /// Entries (sqsize + 1).
    entries: u16,
    sq_head: u16,
}

/// A command waiting for its data from the host.
#[derive(Debug)]
struct Transfer {
    cmd: Command,
    len: usize,
    data: Vec<u8>,
    digest_ok: bool,
}

/// One connection.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    /// The address the host reached (for the discovery log).
    local: Option<SocketAddr>,
    /// Digests, once ICReq/ICResp are done.
    digests: Option<Digests>,
    queue: Option<Queue>,
    transfers: HashMap<u16, Transfer>,
    /// Writes whose R2T waits for a free transfer slot (command, length).
    waiting: VecDeque<(Command, usize)>,
    last_ttag: u16,
    held_events: Vec<u16>,
    /// Where the pool moves data to and from (made on the first I/O).
    scratch: Option<GuestMemory>,
}

impl Connection {
    /// A new connection that reached the target at `local`.
    pub fn new(shared: Arc<Shared>, local: Option<SocketAddr>) -> Self {
        Self {
            shared,
            local,
            digests: None,
            queue: None,
            transfers: HashMap::new(),
            waiting: VecDeque::new(),
            last_ttag: 0,
            held_events: Vec::new(),
            scratch: None,
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            capsule_data: IN_CAPSULE_BYTES,
            data_pdu: MAXH2CDATA as usize,
        }
    }

    /// The digests in use (none before ICReq).
    pub fn digests(&self) -> Digests {
        self.digests.unwrap_or_default()
    }

    /// Whether the connection may go on: an I/O queue ends with its
    /// controller.
    pub fn alive(&self) -> bool {
        self.queue
            .as_ref()
            .is_none_or(|q| q.qid == 0 || q.ctrl.alive())
    }

    /// How long the host may stay silent between PDUs: before ICReq and
    /// Connect, 10 s; on an admin queue, twice the Keep Alive Timeout (the
    /// host sends a Keep Alive every half of it); an I/O queue may idle.
    pub fn idle_limit(&self) -> Option<Duration> {
        match &self.queue {
            None => Some(Duration::from_secs(10)),
            Some(q) if q.qid == 0 => {
                let kato = q.ctrl.kato_ms.load(Ordering::Relaxed);
                (kato > 0).then(|| Duration::from_millis(u64::from(kato) * 2 + 1000))
            }
            Some(_) => None,
        }
    }

    /// Checks the common header of the next PDU; returns its PLEN.
    pub fn check_header(&self, head: &[u8; HEADER_BYTES]) -> Result<usize, Fatal> {
        let h = Header::parse(head);
        if self.digests.is_none() && h.kind != pdu::kind::IC_REQ && h.kind != pdu::kind::H2C_TERM {
            return Err(Fatal::sequence("a PDU before ICReq"));
        }
        Ok(pdu::check(&h, self.digests, self.limits())?.plen)
    }

    /// The C2HTermReq for `f` (`pdu`: the bytes of the PDU in error, or
    /// its header).
    pub fn termination(&self, f: &Fatal, pdu: &[u8]) -> Vec<u8> {
        let hlen = pdu
            .get(2)
            .map_or(pdu.len(), |&h| usize::from(h).max(HEADER_BYTES));
        let header = pdu[..pdu.len().min(hlen).min(128)].to_vec();
        pdu::encode(
            &Pdu::C2hTerm(Term {
                fes: f.fes,
                fei: f.fei,
                header,
            }),
            Digests::default(),
        )
    }

    /// Handles one whole PDU; appends what to send to `out`.
    pub fn receive(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<(), Stop> {
        let p = pdu::decode(buf, self.digests, self.limits())?;
        match (self.digests.is_some(), p) {
            (_, Pdu::H2cTerm(t)) => Err(Stop::HostTerminated(t.fes)),
            (false, Pdu::IcReq(r)) => {
                if r.pfv != 0 {
                    return Err(Fatal {
                        fes: fes::UNSUPPORTED_PARAMETER,
                        fei: 8,
                        why: "PDU format version other than 0",
                    }
                    .into());
                }
                if r.hpda > 31 {
                    return Err(Fatal {
                        fes: fes::UNSUPPORTED_PARAMETER,
                        fei: 10,
                        why: "host PDU data alignment above 31",
                    }
                    .into());
                }
                // Both digests are implemented: the host gets what it asks for.
                let d = r.digests;
                out.extend(pdu::encode(
                    &Pdu::IcResp(IcResp {
                        pfv: 0,
                        cpda: 0,
                        digests: d,
                        maxh2cdata: MAXH2CDATA,
                    }),
                    Digests::default(),
                ));
                self.digests = Some(d);
                Ok(())
            }
            (true, Pdu::Cmd(c)) => self.capsule(c, out),
            (true, Pdu::H2cData(d)) => self.h2c_data(d, out),
            (true, Pdu::IcReq(_)) => Err(Fatal::sequence("a second ICReq").into()),
            (false, _) => Err(Fatal::sequence("a PDU before ICReq").into()),
            (true, _) => Err(Fatal::header(0, "a PDU type only a controller sends").into()),
        }
    }

    fn respond(&mut self, cmd: &Command, status: u16, result: u64, out: &mut Vec<u8>) {
        let (sq_id, sq_head) = match &mut self.queue {
            Some(q) => (q.qid, q.sq_head),
            None => (0, 0),
        };
        let c = Completion {
            result,
            sq_head,
            sq_id,
            cid: cmd.cid(),
            status,
        };
        out.extend(pdu::encode(&Pdu::Resp(c), self.digests()));
    }

    /// Sends `outcome`'s data (exactly `c2h_len` bytes, as the SGL asked)
    /// and its completion.
    fn finish(&mut self, cmd: &Command, outcome: Outcome, c2h_len: usize, out: &mut Vec<u8>) {
        if outcome.hold {
            if self.held_events.len() < MAX_HELD_EVENTS {
                self.held_events.push(cmd.cid());
                return;
            }
            // Asynchronous Event Request Limit Exceeded.
            self.respond(cmd, 0x105 | status::DNR, 0, out);
            return;
        }
        if outcome.status == status::SUCCESS && c2h_len > 0 {
            let mut data = outcome.data;
            data.resize(c2h_len, 0);
            let chunks = data.len().div_ceil(C2H_DATA_BYTES);
            for (i, chunk) in data.chunks(C2H_DATA_BYTES).enumerate() {
                out.extend(pdu::encode(
                    &Pdu::C2hData(Data {
                        cid: cmd.cid(),
                        ttag: 0,
                        offset: (i * C2H_DATA_BYTES) as u32,
                        last: i + 1 == chunks,
                        success: false,
                        data: chunk.to_vec(),
                        data_ok: true,
                    }),
                    self.digests(),
                ));
            }
        }
        self.respond(cmd, outcome.status, outcome.result, out);
    }

    fn capsule(&mut self, c: Capsule, out: &mut Vec<u8>) -> Result<(), Stop> {
        let cmd = Command(c.sqe);
        if let Some(q) = &mut self.queue {
            q.sq_head = (q.sq_head + 1) % q.entries;
        }
        let fail = |s: u16| Outcome::status(s);
        let connect = cmd.is_fabrics() && cmd.fctype() == fctype::CONNECT;
        if !c.data_ok {
            self.finish(&cmd, fail(status::TRANSIENT_TRANSPORT), 0, out);
            return Ok(());
        }
        if self.queue.is_none() && !connect {
            self.finish(&cmd, fail(status::COMMAND_SEQUENCE | status::DNR), 0, out);
            return Ok(());
        }
        // Fused operations are not supported.
        if cmd.flags() & 3 != 0 {
            self.finish(&cmd, fail(status::INVALID_FIELD | status::DNR), 0, out);
            return Ok(());
        }
        let sgl = cmd.sgl();
        let len = sgl.length as usize;
        let dir = cmd.direction();
        if dir == Direction::None || len == 0 {
            let o = self.execute(&cmd, &[]);
            self.finish(&cmd, o, 0, out);
            return Ok(());
        }
        // Data must be described by an SGL (PSDT 01b or 10b), which
        // Fabrics commands imply.
        if !cmd.is_fabrics() && cmd.flags() >> 6 == 0 {
            self.finish(&cmd, fail(status::INVALID_FIELD | status::DNR), 0, out);
            return Ok(());
        }
        if len > MDTS_BYTES as usize {
            self.finish(&cmd, fail(status::SGL_LENGTH_INVALID | status::DNR), 0, out);
            return Ok(());
        }
        if let Err(s) = self.check_length(&cmd, len) {
            self.finish(&cmd, fail(s), 0, out);
            return Ok(());
        }
        match (dir, sgl.id) {
            (Direction::ToHost, sgl_id::TRANSPORT) => {
                let o = self.execute(&cmd, &[]);
                self.finish(&cmd, o, len, out);
            }
            (Direction::ToController, sgl_id::IN_CAPSULE) => {
                let start = usize::try_from(sgl.addr).unwrap_or(usize::MAX);
                if start > c.data.len() {
                    self.finish(&cmd, fail(status::SGL_OFFSET_INVALID | status::DNR), 0, out);
                } else if c.data.len() - start < len {
                    self.finish(&cmd, fail(status::SGL_LENGTH_INVALID | status::DNR), 0, out);
                } else {
                    let o = self.execute(&cmd, &c.data[start..start + len]);
                    self.finish(&cmd, o, 0, out);
                }
            }
            (Direction::ToController, sgl_id::TRANSPORT) if c.data.is_empty() => {
                self.start_transfer(cmd, len, out)?;
            }
            _ => self.finish(&cmd, fail(status::SGL_TYPE_INVALID | status::DNR), 0, out),
        }
        Ok(())
    }

    /// The SGL must describe exactly the data the command moves.
    fn check_length(&self, cmd: &Command, len: usize) -> Result<(), u16> {
        let Some(Subsystem::Volume(nsid)) = self.io_subsystem() else {
            return Ok(());
        };
        let pool = self.shared.pool();
        let len = len as u64;
        match io::data_len(pool.as_deref(), nsid, cmd)? {
            Some(DataLen::Exact(want)) if want != len => {
                Err(status::SGL_LENGTH_INVALID | status::DNR)
            }
            Some(DataLen::AtLeast(want)) if want > len => {
                Err(status::SGL_LENGTH_INVALID | status::DNR)
            }
            _ => Ok(()),
        }
    }

    /// The subsystem, on an I/O queue.
    fn io_subsystem(&self) -> Option<Subsystem> {
        self.queue
            .as_ref()
            .filter(|q| q.qid > 0)
            .map(|q| q.ctrl.subsystem)
    }

    fn start_transfer(&mut self, cmd: Command, len: usize, out: &mut Vec<u8>) -> Result<(), Stop> {
        if self.transfers.len() >= MAX_TRANSFERS {
            let entries = self.queue.as_ref().map_or(1, |q| usize::from(q.entries));
            if self.waiting.len() >= entries {
                return Err(Fatal {
                    fes: fes::LIMIT_EXCEEDED,
                    fei: 0,
                    why: "more commands waiting for data than the queue holds",
                }
                .into());
            }
            self.waiting.push_back((cmd, len));
            return Ok(());
        }
        let mut ttag = self.last_ttag;
        loop {
            ttag = ttag.wrapping_add(1);
            if !self.transfers.contains_key(&ttag) {
                break;
            }
        }
        self.last_ttag = ttag;
        out.extend(pdu::encode(
            &Pdu::R2t(R2t {
                cid: cmd.cid(),
                ttag,
                offset: 0,
                // At most MDTS.
                length: len as u32,
            }),
            self.digests(),
        ));
        self.transfers.insert(
            ttag,
            Transfer {
                cmd,
                len,
                data: Vec::with_capacity(len),
                digest_ok: true,
            },
        );
        Ok(())
    }

    fn h2c_data(&mut self, d: Data, out: &mut Vec<u8>) -> Result<(), Stop> {
        let Some(t) = self.transfers.get_mut(&d.ttag) else {
            return Err(Fatal::header(10, "H2CData for an unknown transfer tag").into());
        };
        if t.cmd.cid() != d.cid {
            return Err(Fatal::header(8, "H2CData command id differs from its R2T's").into());
        }
        if d.offset as usize != t.data.len() || t.data.len() + d.data.len() > t.len {
            return Err(Fatal {
                fes: fes::OUT_OF_RANGE,
                fei: 0,
                why: "H2CData outside what the R2T asked for",
            }
            .into());
        }
        t.data.extend_from_slice(&d.data);
        t.digest_ok &= d.data_ok;
        let done = t.data.len() == t.len;
        if d.last != done {
            return Err(
                Fatal::sequence("H2CData LAST flag where the transfer does not end").into(),
            );
        }
        if !done {
            return Ok(());
        }
        let Some(t) = self.transfers.remove(&d.ttag) else {
            return Ok(());
        };
        let o = if t.digest_ok {
            self.execute(&t.cmd, &t.data)
        } else {
            Outcome::status(status::TRANSIENT_TRANSPORT)
        };
        self.finish(&t.cmd, o, 0, out);
        while self.transfers.len() < MAX_TRANSFERS {
            let Some((cmd, len)) = self.waiting.pop_front() else {
                break;
            };
            self.start_transfer(cmd, len, out)?;
        }
        Ok(())
    }

    fn execute(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        if cmd.is_fabrics() && cmd.fctype() == fctype::CONNECT && self.queue.is_none() {
            return self.connect(cmd, data);
        }
        let Some(q) = &self.queue else {
            return Outcome::status(status::COMMAND_SEQUENCE | status::DNR);
        };
        let ctrl = q.ctrl.clone();
        if q.qid == 0 {
            return admin::execute(&self.shared, &ctrl, cmd, data, self.local);
        }
        if cmd.is_fabrics() {
            // Property Get/Set belong on the admin queue; Connect was done.
            let s = if cmd.fctype() == fctype::CONNECT {
                status::COMMAND_SEQUENCE
            } else {
                status::INVALID_OPCODE
            };
            return Outcome::status(s | status::DNR);
        }
        let Subsystem::Volume(nsid) = ctrl.subsystem else {
            return Outcome::status(status::INVALID_OPCODE | status::DNR);
        };
        if self.scratch.is_none() {
            match SharedMemory::anonymous("dia-fabric", MDTS_BYTES as usize) {
                Ok(m) => self.scratch = Some(GuestMemory::new(m)),
                Err(e) => {
                    debug!("fabric: no scratch buffer: {e}");
                    return Outcome::status(status::INTERNAL_ERROR);
                }
            }
        }
        let Some(scratch) = &self.scratch else {
            return Outcome::status(status::INTERNAL_ERROR);
        };
        let pool = self.shared.pool();
        io::execute(pool.as_deref(), nsid, cmd, data, scratch)
    }

    fn connect(&mut self, cmd: &Command, data: &[u8]) -> Outcome {
        // Invalid Parameters: dword 0 names the field (bit 16: in the data).
        let invalid = |in_data: bool, offset: u64| Outcome {
            status: status::CONNECT_INVALID_PARAMETERS | status::DNR,
            result: u64::from(in_data) << 16 | offset,
            ..Outcome::default()
        };
        if cmd.connect_recfmt() != 0 {
            return Outcome::status(status::CONNECT_INCOMPATIBLE_FORMAT | status::DNR);
        }
        let Some(cd) = ConnectData::parse(data) else {
            return Outcome::status(status::SGL_LENGTH_INVALID | status::DNR);
        };
        let qid = cmd.connect_qid();
        let sqsize = cmd.connect_sqsize();
        if sqsize == 0 || sqsize >= QUEUE_ENTRIES {
            return invalid(false, 44);
        }
        let ctrl = if qid == 0 {
            if cd.cntlid != 0xffff {
                return invalid(true, 16);
            }
            let Some(sub) = self.shared.subsystem(&cd.subnqn) else {
                return invalid(true, 256);
            };
            match self.shared.create_ctrl(sub, &cd, cmd.connect_kato()) {
                Ok(c) => c,
                Err(s) => return Outcome::status(s),
            }
        } else {
            let Some(ctrl) = self.shared.find_ctrl(cd.cntlid) else {
                return invalid(true, 16);
            };
            if ctrl.subnqn != cd.subnqn {
                return invalid(true, 256);
            }
            if ctrl.hostnqn != cd.hostnqn {
                return invalid(true, 512);
            }
            if ctrl.subsystem == Subsystem::Discovery || !ctrl.ready() || !ctrl.claim_queue(qid) {
                return invalid(false, 42);
            }
            ctrl
        };
        let cntlid = ctrl.cntlid;
        debug!(cntlid, qid, subnqn = %cd.subnqn, hostnqn = %cd.hostnqn, "fabric: connected");
        self.queue = Some(Queue {
            ctrl,
            qid,
            entries: sqsize + 1,
            sq_head: 1 % (sqsize + 1),
        });
        Outcome::result(u64::from(cntlid))
    }

    /// The connected queue: (cntlid, qid).
    pub fn queue_id(&self) -> Option<(u16, u16)> {
        self.queue.as_ref().map(|q| (q.ctrl.cntlid, q.qid))
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(q) = &self.queue {
            if q.qid == 0 {
                self.shared.remove_ctrl(q.ctrl.cntlid);
            } else {
                q.ctrl.release_queue(q.qid);
            }
        }
    }
}

/// Feeds `bytes` (a host's side of a stream) to `conn` PDU by PDU, as the
/// target's socket loop does; returns what the target sent and why it
/// stopped, if it did (`None`: the bytes ran out).
#[cfg(any(test, feature = "fuzzing"))]
pub fn feed(conn: &mut Connection, mut bytes: &[u8], out: &mut Vec<u8>) -> Option<Stop> {
    loop {
        let head = bytes.first_chunk::<HEADER_BYTES>()?;
        let plen = match conn.check_header(head) {
            Ok(p) => p,
            Err(f) => {
                out.extend(conn.termination(&f, head));
                return Some(Stop::Fatal(f));
            }
        };
        if bytes.len() < plen {
            return None;
        }
        let (pdu, rest) = bytes.split_at(plen);
        bytes = rest;
        if let Err(stop) = conn.receive(pdu, out) {
            if let Stop::Fatal(f) = &stop {
                out.extend(conn.termination(f, pdu));
            }
            return Some(stop);
        }
    }
}
