//! The initiator's public face: a [`Session`] is one association with a
//! remote NVMe/TCP controller — the admin queue (Connect, CC.EN/CSTS.RDY,
//! Identify Controller, Number of Queues, keep-alive) and its I/O queues —
//! and a [`RemoteNamespace`] does I/O on one of its namespaces from any
//! number of threads (commands spread over the I/O queues, several in
//! flight on each, large transfers split at the target's MDTS).
//!
//! A transport failure on any queue ends the session: everything in
//! flight fails with it, later calls fail at once, and reconnecting is a
//! new `Session` (the caller's decision). The session ends too when the
//! last handle to it (the `Session` or a `RemoteNamespace`) is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::super::command::{cns, opcode, property, Command, ConnectData};
use super::super::digest::crc32c;
use super::super::pdu::Digests;
use super::admin::{self, Admin, Cap, ANY_CNTLID};
use super::error::{check_status, Error, TransportError};
use super::identify::{ControllerInfo, NamespaceInfo};
use super::transport::{Fuse, Payload, Queue, QueueParams, Request, Ticket};
use super::{
    ADMIN_IN_CAPSULE_BYTES, ADMIN_QUEUE_ENTRIES, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENABLE_TIMEOUT, DEFAULT_HOST_NQN, DEFAULT_KATO, MAX_BLOCKS_PER_COMMAND,
    MAX_COMMAND_BYTES, MAX_DSM_RANGES, MAX_IN_CAPSULE_BYTES, MAX_IO_QUEUES, MAX_QUEUE_ENTRIES,
};

/// Bytes of one Dataset Management range.
const DSM_RANGE_BYTES: usize = 16;
/// Dataset Management attribute: Deallocate (command dword 11 bit 2).
const DSM_DEALLOCATE: u32 = 1 << 2;
/// Read/Write command dword 12: Force Unit Access.
const FUA: u32 = 1 << 30;
/// Fewest queue entries that make sense (one command in flight).
const MIN_QUEUE_ENTRIES: u16 = 2;

/// How to reach and use a remote subsystem.
#[derive(Debug, Clone)]
pub struct Config {
    /// The target's address.
    pub addr: SocketAddr,
    /// The subsystem's NQN.
    pub subnqn: String,
    /// This host's NQN.
    pub hostnqn: String,
    /// This host's identifier.
    pub hostid: [u8; 16],
    /// Ask for header digests.
    pub header_digest: bool,
    /// Ask for data digests.
    pub data_digest: bool,
    /// Keep Alive Timeout to ask for (zero: none).
    pub kato: Duration,
    /// I/O queues to ask for (at least 1).
    pub io_queues: u16,
    /// Entries per I/O queue to ask for (commands in flight: one fewer).
    pub queue_entries: u16,
    /// Longest a command may take; past it the session ends.
    pub command_timeout: Duration,
    /// Longest to open a connection and exchange ICReq/ICResp.
    pub connect_timeout: Duration,
    /// Longest to wait for CSTS.RDY after CC.EN.
    pub enable_timeout: Duration,
}

impl Config {
    /// Defaults for subsystem `subnqn` at `addr`: no digests, 2 I/O
    /// queues of 128 entries, the default timeouts and KATO, a host id
    /// derived from the host NQN.
    pub fn new(addr: SocketAddr, subnqn: impl Into<String>) -> Self {
        let hostnqn = DEFAULT_HOST_NQN.to_string();
        Self {
            addr,
            subnqn: subnqn.into(),
            hostid: host_id(&hostnqn),
            hostnqn,
            header_digest: false,
            data_digest: false,
            kato: DEFAULT_KATO,
            io_queues: 2,
            queue_entries: 128,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            enable_timeout: DEFAULT_ENABLE_TIMEOUT,
        }
    }
}

/// A stable 16-byte host identifier derived from a host NQN.
pub fn host_id(hostnqn: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, part) in id.chunks_exact_mut(4).enumerate() {
        let salt = [i as u8];
        part.copy_from_slice(&crc32c(&[&salt, hostnqn.as_bytes()]).to_le_bytes());
    }
    id
}

struct Inner {
    admin: Queue,
    io: Vec<Queue>,
    next: AtomicUsize,
    ctrl: ControllerInfo,
    cntlid: u16,
    kato: Duration,
    /// Largest transfer of one command.
    max_transfer: usize,
    fuse: Arc<Fuse>,
    ended: AtomicBool,
}

impl Admin for Inner {
    fn admin(&self) -> &Queue {
        &self.admin
    }

    fn ended(&self) -> &AtomicBool {
        &self.ended
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        self.fuse.blow(TransportError::Ended);
    }
}

/// One association with a remote controller.
pub struct Session {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cntlid", &self.inner.cntlid)
            .field("io_queues", &self.inner.io.len())
            .finish()
    }
}

impl Session {
    /// Connects: admin queue (ICReq/ICResp, Connect), CAP, CC.EN and
    /// CSTS.RDY, Identify Controller, the accepted KATO (keep-alive from
    /// here on), Number of Queues, then each I/O queue (ICReq/ICResp,
    /// Connect with the admin queue's cntlid).
    pub fn connect(cfg: &Config) -> Result<Self, Error> {
        let fuse = Arc::new(Fuse::default());
        let digests = Digests {
            header: cfg.header_digest,
            data: cfg.data_digest,
        };
        let params = |qid: u16, entries: u16, in_capsule: usize| QueueParams {
            qid,
            digests,
            depth: usize::from(entries - 1),
            in_capsule,
            timeout: cfg.command_timeout,
            connect_timeout: cfg.connect_timeout,
        };
        let admin = Queue::open(
            cfg.addr,
            params(0, ADMIN_QUEUE_ENTRIES, ADMIN_IN_CAPSULE_BYTES),
            fuse.clone(),
        )?;
        let kato_ms = u32::try_from(cfg.kato.as_millis()).unwrap_or(u32::MAX);
        let mut data = ConnectData {
            hostid: cfg.hostid,
            cntlid: ANY_CNTLID,
            subnqn: cfg.subnqn.clone(),
            hostnqn: cfg.hostnqn.clone(),
        };
        let cntlid = admin::connect(&admin, 0, ADMIN_QUEUE_ENTRIES - 1, kato_ms, &data)?;
        let cap = Cap::parse(admin::property_get(&admin, property::CAP, true)?);
        admin::enable(&admin, &cap, cfg.enable_timeout)?;
        let ctrl = ControllerInfo::parse(&admin::identify_controller(&admin)?)?;
        let kato = if kato_ms == 0 {
            0
        } else {
            admin::kato(&admin).unwrap_or(kato_ms)
        };
        let want = cfg.io_queues.clamp(1, MAX_IO_QUEUES);
        let queues = admin::set_queue_count(&admin, want)?.min(want);
        let mut entries = u32::from(cfg.queue_entries.min(MAX_QUEUE_ENTRIES)).min(cap.max_entries);
        if ctrl.maxcmd != 0 {
            entries = entries.min(u32::from(ctrl.maxcmd));
        }
        // At most MAX_QUEUE_ENTRIES.
        let entries = (entries as u16).max(MIN_QUEUE_ENTRIES);
        let in_capsule = ctrl.in_capsule.min(MAX_IN_CAPSULE_BYTES);
        data.cntlid = cntlid;
        let mut io = Vec::with_capacity(usize::from(queues));
        for qid in 1..=queues {
            let q = Queue::open(cfg.addr, params(qid, entries, in_capsule), fuse.clone())?;
            let got = admin::connect(&q, qid, entries - 1, 0, &data)?;
            if got != cntlid {
                return Err(Error::Unusable("an I/O queue joined another controller"));
            }
            io.push(q);
        }
        let max_transfer = ctrl
            .max_transfer(cap.page_bytes())
            .map_or(MAX_COMMAND_BYTES, |m| {
                usize::try_from(m).map_or(MAX_COMMAND_BYTES, |m| m.min(MAX_COMMAND_BYTES))
            });
        let inner = Arc::new(Inner {
            admin,
            io,
            next: AtomicUsize::new(0),
            ctrl,
            cntlid,
            kato: Duration::from_millis(u64::from(kato)),
            max_transfer,
            fuse,
            ended: AtomicBool::new(false),
        });
        if kato > 0 {
            let every = inner.kato / 2;
            admin::spawn_keep_alive(Arc::downgrade(&inner), every).map_err(|e| {
                Error::Transport(TransportError::Io {
                    what: "starting the keep-alive thread",
                    kind: e.kind(),
                })
            })?;
        }
        Ok(Self { inner })
    }

    /// The controller id the target gave.
    pub fn cntlid(&self) -> u16 {
        self.inner.cntlid
    }

    /// What Identify Controller said.
    pub fn controller(&self) -> &ControllerInfo {
        &self.inner.ctrl
    }

    /// I/O queues connected.
    pub fn io_queues(&self) -> usize {
        self.inner.io.len()
    }

    /// The Keep Alive Timeout the target runs with (zero: none).
    pub fn kato(&self) -> Duration {
        self.inner.kato
    }

    /// Largest transfer of one command (larger reads and writes are split).
    pub fn max_transfer(&self) -> usize {
        self.inner.max_transfer
    }

    /// Why the session ended, if it did.
    pub fn failure(&self) -> Option<TransportError> {
        self.inner.fuse.blown()
    }

    /// Namespace `nsid` (Identify Namespace; an inactive one is Invalid
    /// Namespace).
    pub fn namespace(&self, nsid: u32) -> Result<RemoteNamespace, Error> {
        let page = admin::identify(&self.inner.admin, cns::NAMESPACE, nsid)?;
        let info = NamespaceInfo::parse(&page)?;
        Ok(RemoteNamespace {
            inner: self.inner.clone(),
            nsid,
            info,
        })
    }

    /// dia's Set Plex Record on namespace `nsid` (the admin queue): what a
    /// mirror tells a plex; the target makes it durable before it answers.
    pub fn set_plex_record(
        &self,
        nsid: u32,
        record: &dia_abi::card::PlexRecord,
    ) -> Result<(), Error> {
        admin::set_plex_record(&self.inner.admin, nsid, record)
    }

    /// A namespace handle without asking the target (for a caller that
    /// knows the format, e.g. from an earlier session).
    pub fn namespace_as(&self, nsid: u32, info: NamespaceInfo) -> RemoteNamespace {
        RemoteNamespace {
            inner: self.inner.clone(),
            nsid,
            info,
        }
    }

    /// Ends the association cleanly: a shutdown notification (CC.SHN; the
    /// target makes written data durable), then the connections close,
    /// whatever namespace handles remain.
    pub fn close(self) -> Result<(), Error> {
        let r = admin::shutdown(&self.inner.admin, DEFAULT_ENABLE_TIMEOUT);
        self.abort();
        r
    }

    /// Ends the association at once, without a shutdown notification (as
    /// a crash would): every command in flight on any handle fails with
    /// [`TransportError::Ended`], later calls fail at once, the
    /// connections close. For a caller that must stop waiting now
    /// (dropping the `Session` does not end it while namespace handles
    /// live).
    pub fn abort(&self) {
        self.inner.ended.store(true, Ordering::Release);
        self.inner.fuse.blow(TransportError::Ended);
    }
}

/// A namespace of a remote controller; cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct RemoteNamespace {
    inner: Arc<Inner>,
    nsid: u32,
    info: NamespaceInfo,
}

impl std::fmt::Debug for RemoteNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteNamespace")
            .field("nsid", &self.nsid)
            .field("info", &self.info)
            .finish()
    }
}

impl RemoteNamespace {
    /// dia's Set Plex Record on this namespace, through the session's
    /// admin queue.
    pub fn set_plex_record(&self, record: &dia_abi::card::PlexRecord) -> Result<(), Error> {
        admin::set_plex_record(&self.inner.admin, self.nsid, record)
    }

    /// Its namespace id on the remote controller.
    pub fn nsid(&self) -> u32 {
        self.nsid
    }

    /// Size and format.
    pub fn info(&self) -> NamespaceInfo {
        self.info
    }

    /// Bytes per logical block.
    pub fn block_size(&self) -> u32 {
        self.info.block_size()
    }

    /// Size in logical blocks.
    pub fn blocks(&self) -> u64 {
        self.info.blocks
    }

    /// The next I/O queue, round robin.
    fn queue(&self) -> &Queue {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        &self.inner.io[n % self.inner.io.len()]
    }

    /// Blocks in `len` bytes, which must be whole blocks and not zero;
    /// `lba` plus them must not overflow.
    fn blocks_of(&self, lba: u64, len: usize) -> Result<u64, Error> {
        let bs = self.block_size() as usize;
        if len == 0 || !len.is_multiple_of(bs) {
            return Err(Error::Invalid("the buffer is not a whole number of blocks"));
        }
        let blocks = (len / bs) as u64;
        lba.checked_add(blocks)
            .ok_or(Error::Invalid("the LBA range overflows"))?;
        Ok(blocks)
    }

    /// Bytes one Read or Write moves at most.
    fn step_bytes(&self) -> usize {
        let by_transfer = (self.inner.max_transfer >> self.info.lba_shift).max(1) as u64;
        let blocks = by_transfer.min(MAX_BLOCKS_PER_COMMAND);
        // At most MAX_COMMAND_BYTES (or one block).
        (blocks << self.info.lba_shift) as usize
    }

    fn rw(&self, op: u8, lba: u64, len: usize, cdw12: u32) -> Command {
        let mut c = Command::new(op);
        c.set_nsid(self.nsid);
        c.set_cdw(10, lba as u32);
        c.set_cdw(11, (lba >> 32) as u32);
        // At most MAX_BLOCKS_PER_COMMAND blocks: NLB fits 16 bits.
        let nlb = ((len >> self.info.lba_shift) - 1) as u32;
        c.set_cdw(12, nlb | cdw12);
        c
    }

    /// Waits for every ticket (all of them, so no command outlives the
    /// call); the first error wins.
    fn wait_all(q: &Queue, tickets: Vec<Ticket>) -> Result<Vec<Vec<u8>>, Error> {
        let mut first = None;
        let mut data = Vec::with_capacity(tickets.len());
        for t in tickets {
            match q
                .wait(t)
                .and_then(|r| check_status(r.completion.status).map(|()| r))
            {
                Ok(r) => data.push(r.data),
                Err(e) => {
                    first.get_or_insert(e);
                    data.push(Vec::new());
                }
            }
        }
        first.map_or(Ok(data), Err)
    }

    /// Reads whole blocks from `lba` into `buf`.
    pub fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.blocks_of(lba, buf.len())?;
        let data = self.transfer(lba, buf, |_, at, chunk| Request {
            cmd: self.rw(opcode::READ, at, chunk.len(), 0),
            payload: Payload::None,
            read_len: chunk.len(),
        })?;
        for (chunk, d) in buf.chunks_mut(self.step_bytes()).zip(data) {
            // The receive path completes a successful read only with all
            // of its data.
            if d.len() != chunk.len() {
                return Err(Error::Unusable("a read completed without its data"));
            }
            chunk.copy_from_slice(&d);
        }
        Ok(())
    }

    /// Writes whole blocks from `buf` at `lba` (`fua`: Force Unit Access).
    /// Data up to the target's in-capsule limit goes in the capsule, more
    /// through R2T/H2CData.
    pub fn write(&self, lba: u64, buf: &[u8], fua: bool) -> Result<(), Error> {
        self.blocks_of(lba, buf.len())?;
        let flags = if fua { FUA } else { 0 };
        self.transfer(lba, buf, |q, at, chunk| Request {
            cmd: self.rw(opcode::WRITE, at, chunk.len(), flags),
            payload: if chunk.len() <= q.in_capsule() {
                Payload::InCapsule(chunk.to_vec())
            } else {
                Payload::Transport(Arc::new(chunk.to_vec()))
            },
            read_len: 0,
        })
        .map(|_| ())
    }

    /// Submits one command per `step_bytes` of `buf` from `lba` (built by
    /// `request` from the queue, the chunk's first block and the chunk),
    /// then waits for all of them; their read data in order.
    fn transfer(
        &self,
        lba: u64,
        buf: &[u8],
        request: impl Fn(&Queue, u64, &[u8]) -> Request,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let step = self.step_bytes();
        let q = self.queue();
        let mut tickets = Vec::new();
        for (i, chunk) in buf.chunks(step).enumerate() {
            let at = lba + ((i * step) >> self.info.lba_shift) as u64;
            tickets.push(q.submit(request(q, at, chunk))?);
        }
        Self::wait_all(q, tickets)
    }

    /// Flush: data written before it is durable on the target.
    pub fn flush(&self) -> Result<(), Error> {
        let mut c = Command::new(opcode::FLUSH);
        c.set_nsid(self.nsid);
        let r = self.queue().run(Request {
            cmd: c,
            payload: Payload::None,
            read_len: 0,
        })?;
        check_status(r.completion.status)
    }

    /// Write Zeroes over `blocks` blocks from `lba`.
    pub fn write_zeroes(&self, lba: u64, blocks: u64) -> Result<(), Error> {
        if blocks == 0 {
            return Err(Error::Invalid("no blocks"));
        }
        lba.checked_add(blocks)
            .ok_or(Error::Invalid("the LBA range overflows"))?;
        let q = self.queue();
        let mut tickets = Vec::new();
        let mut at = lba;
        let end = lba + blocks;
        while at < end {
            let n = (end - at).min(MAX_BLOCKS_PER_COMMAND);
            let mut c = Command::new(opcode::WRITE_ZEROES);
            c.set_nsid(self.nsid);
            c.set_cdw(10, at as u32);
            c.set_cdw(11, (at >> 32) as u32);
            // At most MAX_BLOCKS_PER_COMMAND: fits 16 bits 0's based.
            c.set_cdw(12, (n - 1) as u32);
            tickets.push(q.submit(Request {
                cmd: c,
                payload: Payload::None,
                read_len: 0,
            })?);
            at += n;
        }
        Self::wait_all(q, tickets).map(|_| ())
    }

    /// Dataset Management, Deallocate, over `ranges` of (LBA, blocks);
    /// deallocated blocks read as zeroes when the namespace says so
    /// ([`NamespaceInfo::deallocated_reads_zeroes`]).
    pub fn deallocate(&self, ranges: &[(u64, u32)]) -> Result<(), Error> {
        if ranges.is_empty() {
            return Err(Error::Invalid("no ranges"));
        }
        let q = self.queue();
        let mut tickets = Vec::new();
        for group in ranges.chunks(MAX_DSM_RANGES) {
            let mut data = Vec::with_capacity(group.len() * DSM_RANGE_BYTES);
            for &(lba, n) in group {
                data.extend_from_slice(&0u32.to_le_bytes()); // context attributes
                data.extend_from_slice(&n.to_le_bytes());
                data.extend_from_slice(&lba.to_le_bytes());
            }
            let mut c = Command::new(opcode::DATASET_MANAGEMENT);
            c.set_nsid(self.nsid);
            // At most MAX_DSM_RANGES (256): NR fits 8 bits 0's based.
            c.set_cdw(10, (group.len() - 1) as u32);
            c.set_cdw(11, DSM_DEALLOCATE);
            let payload = if data.len() <= q.in_capsule() {
                Payload::InCapsule(data)
            } else {
                Payload::Transport(Arc::new(data))
            };
            tickets.push(q.submit(Request {
                cmd: c,
                payload,
                read_len: 0,
            })?);
        }
        Self::wait_all(q, tickets).map(|_| ())
    }
}
