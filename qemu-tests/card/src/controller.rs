//! The card's controller: the register handshake (CC.EN/CSTS.RDY, shutdown,
//! fatal status), the admin queue and its commands (queues, Identify,
//! namespaces, remote namespaces, log pages). I/O queues are served by their own workers
//! (`io_queue`). One `service` pass reads the registers and the admin
//! doorbell and executes whatever is pending; `run` calls it whenever the
//! admin doorbell fires and at least every `CARD_POLL_MS`. Whatever the
//! guest writes, the controller answers with a status or a fatal controller
//! status, never a crash. Network port commands are in `ports`.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dia_abi::card::{
    self as abi, CompletionEntry, IdentifyController, IdentifyNamespace, NamespaceCreate,
    PoolStatus, SubmissionEntry,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, error, info, warn};

use crate::board::Board;
use crate::fault::{Fault, FAULT_EXIT_CODE};
use crate::guest_memory::{pod_bytes, pod_from_bytes};
use crate::io_queue::{self, IoContext, IoWorker};
use crate::net::{NetEngine, Uplink};
use crate::nvm::MAX_TRANSFER_BYTES;
use crate::pool::{Pool, Remote, CHUNK_BYTES, MAX_NAMESPACES};
use crate::prp::prp_segments;
use crate::qos::QosParams;
use crate::queue::{check_placement, CompletionQueue, SubmissionQueue};
use crate::remote;

mod ports;

/// Static facts about the card.
#[derive(Debug, Clone)]
pub struct CardConfig {
    /// Serial number reported by Identify.
    pub serial: String,
    /// Doorbell/interrupt vectors (admin + I/O queues).
    pub vectors: u16,
    /// Largest queue the card accepts (entries).
    pub max_queue_entries: u16,
    /// Injected fault, if any.
    pub fault: Option<Fault>,
    /// Storage QoS capacity floors are admitted against: I/Os per second.
    pub qos_capacity_iops: u64,
    /// Storage QoS capacity: bytes per second.
    pub qos_capacity_bps: u64,
    /// Modelled media throughput, I/Os per second (0: as fast as the host).
    pub media_iops: u64,
    /// Modelled media throughput, bytes per second (0: as fast as the host).
    pub media_bps: u64,
    /// Most network ports (ids 1..=max_ports), at most `net::MAX_PORTS`.
    pub max_ports: u16,
    /// UDP address the uplink listens on (none: no uplink).
    pub uplink_bind: Option<std::net::SocketAddr>,
    /// Other cards' uplink addresses: frames for the uplink go to each.
    pub uplink_peers: Vec<std::net::SocketAddr>,
}

impl CardConfig {
    fn max_io_queues(&self) -> u16 {
        self.vectors.saturating_sub(1)
    }
}

#[derive(Debug)]
enum State {
    /// CC.EN = 0.
    Disabled,
    /// CC.EN = 1 and CSTS.RDY = 1.
    Running(Box<Queues>),
    /// CSTS.CFS = 1 until the driver clears CC.EN.
    Failed,
}

/// The queues of a running controller. Dropping it stops the I/O workers
/// (before their completion queues go away).
#[derive(Debug)]
struct Queues {
    /// I/O submission queues, each served by its worker.
    workers: BTreeMap<u16, IoWorker>,
    admin_sq: SubmissionQueue,
    admin_cq: CompletionQueue,
    /// I/O completion queues.
    cqs: BTreeMap<u16, crate::io_queue::SharedCq>,
    /// The network engine and its ports (dropping it deletes them).
    net: NetEngine,
}

/// Outcome of one command: status and result dword.
type Outcome = (u16, u32);

/// The controller.
#[derive(Debug)]
pub struct Controller {
    // Field order is drop order: the workers (in `state`) stop first.
    state: State,
    board: Arc<Board>,
    io: Arc<IoContext>,
    cfg: CardConfig,
    admin_seen: HashMap<u8, u32>,
    heartbeat_at: Instant,
    /// The result dword of a command that fails with a status that has
    /// one (QoS Admission: the excess; Remote Refused: the target's status).
    error_result: u32,
    /// The uplink socket, bound for this firmware run.
    uplink: Option<Arc<Uplink>>,
}

impl Drop for Controller {
    /// The firmware stops (a kill, as a crash): remote namespaces' links
    /// end first (their queued commands dropped, their sessions ended at
    /// once), so the I/O queues' engines, which stop next, wait for none
    /// of them.
    fn drop(&mut self) {
        self.io.mirrors.attached.stop_all();
        self.io.remotes.attached.stop_all();
    }
}

impl Controller {
    /// Lays out the registers and reports the firmware running (unless the
    /// `never-ready` fault is injected). `pool` is the card's flash (none:
    /// a card without storage).
    pub fn new(board: Arc<Board>, cfg: CardConfig, pool: Option<Arc<Pool>>) -> Self {
        let bar = &board.bar;
        bar.write64(abi::REG_MAGIC, abi::CARD_MAGIC);
        bar.write32(abi::REG_VS, abi::INTERFACE_VERSION);
        bar.write64(
            abi::REG_CAP,
            abi::make_cap(
                cfg.max_queue_entries - 1,
                cfg.max_io_queues(),
                abi::CAP_TIMEOUT_500MS,
            ),
        );
        bar.write32(abi::REG_CC, 0);
        bar.write32(abi::REG_CSTS, 0);
        bar.write32(abi::REG_CARD_PEER, 0);
        bar.write32(abi::REG_VECTORS, u32::from(cfg.vectors));
        bar.write64(abi::REG_HEARTBEAT, 0);
        bar.write64(abi::REG_FW_BOOT_ID, new_boot_id());
        let status = if cfg.fault == Some(Fault::NeverReady) {
            warn!("fault: never-ready; firmware status stays OFF");
            abi::FW_STATUS_OFF
        } else {
            abi::FW_STATUS_RUNNING
        };
        bar.write32(abi::REG_FW_STATUS, status);
        let io = Arc::new(IoContext::new(
            board.clone(),
            pool,
            cfg.fault,
            remote::host_nqn(&cfg.serial),
            &cfg.serial,
        ));
        io.sched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set_media(cfg.media_iops as f64, cfg.media_bps as f64, io.now());
        // Attached remote namespaces are served again (connecting at
        // their first I/O).
        if let Some(pool) = &io.pool {
            for nsid in pool.namespace_ids(0, true) {
                if let Some(ns) = pool.namespace(nsid) {
                    if let Some(r) = &ns.remote {
                        io.remotes.start(
                            nsid,
                            ns.size_blocks,
                            ns.lba_shift,
                            r,
                            Arc::downgrade(&io),
                        );
                    }
                    if ns.mirror.is_some() {
                        // Mirrors come back with their plex states and
                        // dirty regions; resyncs go on.
                        io.mirrors
                            .start(nsid, &ns, pool.clone(), Arc::downgrade(&io));
                    }
                }
            }
        }
        // Namespaces keep their service level across firmware restarts.
        if let Some(pool) = &io.pool {
            let now = io.now();
            let mut sched = io.sched.lock().unwrap_or_else(PoisonError::into_inner);
            for (nsid, q) in pool.all_qos() {
                if let Err(e) = sched.set(nsid, QosParams::from_settings(&q), now) {
                    warn!(nsid, "stored QoS refused: {e:?}");
                }
            }
        }
        // A firmware start has no ports yet.
        for id in 1..=crate::net::MAX_PORTS {
            bar.write32(abi::port_regs(id) + abi::PORT_LINK, 0);
        }
        let uplink =
            cfg.uplink_bind
                .and_then(|addr| match Uplink::bind(addr, cfg.uplink_peers.clone()) {
                    Ok(u) => {
                        info!(%addr, peers = ?cfg.uplink_peers, "uplink bound");
                        Some(Arc::new(u))
                    }
                    Err(e) => {
                        error!(%addr, "cannot bind the uplink, running without: {e}");
                        None
                    }
                });
        Self {
            state: State::Disabled,
            board,
            io,
            cfg,
            admin_seen: HashMap::new(),
            heartbeat_at: Instant::now(),
            error_result: 0,
            uplink,
        }
    }

    fn bar(&self) -> &crate::bar::Bar {
        &self.board.bar
    }

    fn pool(&self) -> Option<&Pool> {
        self.io.pool.as_deref()
    }

    /// Serves the admin doorbell until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let board = self.board.clone();
        let Some(admin) = board.doorbells.first() else {
            error!("a card needs at least one doorbell");
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [PollFd::new(admin.as_fd(), PollFlags::POLLIN)];
            let timeout =
                PollTimeout::try_from(abi::CARD_POLL_MS as i32).unwrap_or(PollTimeout::ZERO);
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    error!("poll on the admin doorbell failed: {e}");
                    std::thread::sleep(Duration::from_millis(u64::from(abi::CARD_POLL_MS)));
                }
            }
            admin.drain();
            self.service();
        }
    }

    /// One pass: heartbeat, register handshake, pending admin commands.
    pub fn service(&mut self) {
        if self.bar().read32(abi::REG_FW_STATUS) != abi::FW_STATUS_RUNNING {
            return;
        }
        let worker_fatal = self
            .io
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(why) = worker_fatal {
            if matches!(self.state, State::Running(_)) {
                self.fatal(&why);
            }
        }
        self.tick_heartbeat();
        let cc = self.bar().read32(abi::REG_CC);
        let enabled = cc & abi::CC_EN != 0;
        match (&self.state, enabled) {
            (State::Disabled, true) => self.enable(),
            (State::Running(_) | State::Failed, false) => {
                info!("controller reset (CC.EN cleared)");
                // Stops the I/O workers.
                self.state = State::Disabled;
                self.bar().write32(abi::REG_CSTS, 0);
            }
            _ => {}
        }
        if matches!(self.state, State::Running(_)) {
            if cc & abi::CC_SHN_NORMAL != 0 {
                let csts = self.bar().read32(abi::REG_CSTS);
                if csts & abi::CSTS_SHST_COMPLETE == 0 {
                    if let Some(pool) = self.pool() {
                        match pool.flush() {
                            Ok(()) => info!("shutdown notification: pool flushed"),
                            Err(e) => error!("shutdown notification: pool flush failed: {e}"),
                        }
                    }
                    self.bar()
                        .write32(abi::REG_CSTS, csts | abi::CSTS_SHST_COMPLETE);
                }
            }
            self.process_admin();
        }
    }

    /// Moves the heartbeat if half its period passed.
    fn tick_heartbeat(&mut self) {
        if self.heartbeat_at.elapsed() >= Duration::from_millis(u64::from(abi::HEARTBEAT_MS / 2)) {
            let hb = self.bar().read64(abi::REG_HEARTBEAT);
            self.bar().write64(abi::REG_HEARTBEAT, hb.wrapping_add(1));
            self.heartbeat_at = Instant::now();
        }
    }

    fn fatal(&mut self, why: &str) {
        error!("controller fatal status: {why}");
        self.state = State::Failed;
        let csts = self.bar().read32(abi::REG_CSTS);
        self.bar()
            .write32(abi::REG_CSTS, (csts | abi::CSTS_CFS) & !abi::CSTS_RDY);
    }

    fn enable(&mut self) {
        let bar = self.bar();
        let aqa = bar.read32(abi::REG_AQA);
        let abi::AdminQueueAttributes {
            sq_entries: sqn,
            cq_entries: cqn,
        } = abi::AdminQueueAttributes::from_reg(aqa);
        let asq = bar.read64(abi::REG_ASQ);
        let acq = bar.read64(abi::REG_ACQ);
        let sizes_ok = (2..=abi::ADMIN_QUEUE_MAX_ENTRIES).contains(&u32::from(sqn))
            && (2..=abi::ADMIN_QUEUE_MAX_ENTRIES).contains(&u32::from(cqn));
        if !sizes_ok {
            return self.fatal(&format!("bad AQA {aqa:#x}"));
        }
        if !check_placement(&self.board.mem, asq, sqn, abi::SQE_SIZE)
            || !check_placement(&self.board.mem, acq, cqn, abi::CQE_SIZE)
        {
            return self.fatal(&format!(
                "admin queues ASQ {asq:#x} / ACQ {acq:#x} not aligned or outside guest memory"
            ));
        }
        let net = match NetEngine::start(self.board.clone(), self.uplink.clone()) {
            Ok(net) => net,
            Err(e) => return self.fatal(&format!("cannot start the network engine: {e}")),
        };
        self.state = State::Running(Box::new(Queues {
            workers: BTreeMap::new(),
            admin_sq: SubmissionQueue::new(0, asq, sqn),
            admin_cq: CompletionQueue::new(acq, cqn, abi::DOORBELL_VECTOR_ADMIN, true),
            cqs: BTreeMap::new(),
            net,
        }));
        self.bar().write32(abi::REG_CSTS, abi::CSTS_RDY);
        info!(
            "controller enabled: admin SQ {sqn} entries at {asq:#x}, CQ {cqn} entries at {acq:#x}"
        );
    }

    /// Executes the admin commands up to the tail the driver rang.
    fn process_admin(&mut self) {
        let mut posted = false;
        loop {
            let bar = &self.board.bar;
            let tail_raw = bar.read32(abi::sq_tail_doorbell(0));
            let head_raw = bar.read32(abi::cq_head_doorbell(0));
            let State::Running(q) = &mut self.state else {
                break;
            };
            if !q.admin_sq.valid_tail(tail_raw) {
                self.fatal(&format!(
                    "admin SQ tail doorbell {tail_raw} beyond the queue"
                ));
                break;
            }
            if !q.admin_cq.valid_head(head_raw) {
                self.fatal(&format!(
                    "admin CQ head doorbell {head_raw} beyond the queue"
                ));
                break;
            }
            // Checked just above: the tail fits the queue size (u16).
            if !q.admin_sq.pending(tail_raw as u16) {
                break;
            }
            if q.admin_cq.is_full(head_raw) {
                debug!("admin CQ full; admin SQ waits");
                break;
            }
            let sqe = match q.admin_sq.pop(&self.board.mem) {
                Ok(sqe) => sqe,
                Err(e) => {
                    self.fatal(&format!("admin SQ: {e}"));
                    break;
                }
            };
            let sq_head = q.admin_sq.head();
            let (status, result) = self.admin(&sqe);
            if status != abi::STATUS_SUCCESS {
                debug!(
                    opcode = sqe.opcode,
                    cid = sqe.cid,
                    "admin status {status:#x}"
                );
            }
            let State::Running(q) = &mut self.state else {
                break;
            };
            let cqe = CompletionEntry {
                result,
                rsvd: 0,
                sq_head,
                sq_id: 0,
                cid: sqe.cid,
                status: 0,
            };
            if let Err(e) = q.admin_cq.post(&self.board.mem, cqe, status) {
                self.fatal(&format!("admin CQ: {e}"));
                break;
            }
            posted = true;
        }
        if posted {
            self.board.irq.raise(abi::DOORBELL_VECTOR_ADMIN);
        }
    }

    fn admin(&mut self, sqe: &SubmissionEntry) -> Outcome {
        let seen = self.admin_seen.entry(sqe.opcode).or_insert(0);
        *seen += 1;
        if let Some(Fault::ExitOnAdmin { opcode, nth }) = self.cfg.fault {
            if opcode == sqe.opcode && nth == *seen {
                error!(
                    "fault: firmware dies on admin opcode {opcode:#04x} #{nth} (cid {})",
                    sqe.cid
                );
                std::process::exit(FAULT_EXIT_CODE);
            }
        }
        if sqe.flags != 0 {
            return (abi::STATUS_INVALID_FIELD, 0);
        }
        let done = match sqe.opcode {
            abi::ADMIN_IDENTIFY => self.identify(sqe),
            abi::ADMIN_CREATE_IO_CQ => self.create_cq(sqe),
            abi::ADMIN_CREATE_IO_SQ => self.create_sq(sqe),
            abi::ADMIN_DELETE_IO_SQ => self.delete_sq(sqe),
            abi::ADMIN_DELETE_IO_CQ => self.delete_cq(sqe),
            abi::ADMIN_GET_LOG_PAGE => self.get_log_page(sqe),
            abi::ADMIN_NS_MANAGEMENT => self.ns_management(sqe),
            abi::ADMIN_NS_ATTACHMENT => self.ns_attachment(sqe),
            abi::ADMIN_SET_QOS => self.set_qos(sqe),
            abi::ADMIN_CREATE_REMOTE_NS => self.create_remote_ns(sqe),
            abi::ADMIN_CREATE_MIRROR_NS => self.create_mirror_ns(sqe),
            abi::ADMIN_SET_MIRROR_PLEXES => self.set_mirror_plexes(sqe),
            abi::ADMIN_SET_PLEX_RECORD => self.set_plex_record(sqe),
            abi::ADMIN_CREATE_PORT => self.create_port(sqe),
            abi::ADMIN_DELETE_PORT => self.delete_port(sqe),
            abi::ADMIN_SET_PORT => self.set_port(sqe),
            abi::ADMIN_ABORT => self.abort(sqe),
            other => {
                warn!("unknown admin opcode {other:#04x}");
                Err(abi::STATUS_INVALID_OPCODE)
            }
        };
        let error_result = std::mem::take(&mut self.error_result);
        match done {
            Ok(result) => (abi::STATUS_SUCCESS, result),
            Err(status) => (status, error_result),
        }
    }

    /// Abort: a command still waiting in the QoS scheduler is taken out and
    /// completed with "abort requested" on its own queue, unless the driver
    /// only asks whether it waits there (`ABORT_KEEP_QUEUED`). A command
    /// that runs, has completed or is unknown is not aborted: the driver's
    /// next step for it is a controller reset, which waits for it.
    fn abort(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let options = abi::AbortOptions::from_cdw11(sqe.cdw11).map_err(|e| e.status())?;
        let target = abi::AbortTarget::from_cdw10(sqe.cdw10);
        let is_it = |p: &io_queue::Pending| p.qid == target.sqid && p.sqe.cid == target.cid;
        let not_aborted = |queued| {
            abi::AbortResult {
                aborted: false,
                queued,
            }
            .dw0()
        };
        if target.sqid == 0 {
            // Admin commands run one at a time, in order: none waits.
            return Ok(not_aborted(false));
        }
        if options.keep_queued {
            let queued = self.io.sched().any(is_it);
            debug!(sqid = target.sqid, cid = target.cid, queued, "abort query");
            return Ok(not_aborted(queued));
        }
        let taken = self.io.sched().remove_where(is_it);
        if taken.is_empty() {
            return Ok(not_aborted(false));
        }
        let never = AtomicBool::new(false);
        for p in taken {
            info!(sqid = target.sqid, cid = target.cid, "command aborted");
            match io_queue::post(&self.io, p, abi::STATUS_ABORT_REQUESTED, &never) {
                Ok(Some(vector)) => self.board.irq.raise(vector),
                Ok(None) => {}
                Err(why) => self.fatal(&why),
            }
        }
        Ok(abi::AbortResult {
            aborted: true,
            queued: false,
        }
        .dw0())
    }

    fn identify(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let cns = abi::IdentifyCns::from_cdw10(sqe.cdw10).map_err(|e| e.status())?;
        match cns {
            abi::IdentifyCns::Controller => {
                let mut id = IdentifyController {
                    vid: abi::PCI_VENDOR_ID,
                    ssvid: abi::PCI_VENDOR_ID,
                    interface_version: abi::INTERFACE_VERSION,
                    max_io_queues: self.cfg.max_io_queues(),
                    max_queue_entries: self.cfg.max_queue_entries,
                    // A card always has the network function.
                    capabilities: abi::CARD_CAP_NETWORK,
                    max_ports: u32::from(self.max_ports()),
                    ..IdentifyController::default()
                };
                if let Some(pool) = self.pool() {
                    id.capabilities |= abi::CARD_CAP_STORAGE | abi::CARD_CAP_QOS;
                    id.qos_capacity_iops = self.cfg.qos_capacity_iops;
                    id.qos_capacity_bytes_per_s = self.cfg.qos_capacity_bps;
                    id.max_namespaces = MAX_NAMESPACES;
                    id.pool_bytes = pool.usage().total_bytes;
                    // Writes sit in the host's page cache until a flush.
                    id.vwc = 1;
                    id.max_transfer_bytes = MAX_TRANSFER_BYTES;
                }
                abi::fill_ascii(&mut id.serial, &self.cfg.serial);
                abi::fill_ascii(&mut id.model, "dia emulated container IO card");
                abi::fill_ascii(&mut id.firmware, env!("CARGO_PKG_VERSION"));
                self.write_prp(sqe, pod_bytes(&id))
            }
            abi::IdentifyCns::Namespace => {
                let pool = self.pool().ok_or(abi::STATUS_INVALID_FIELD)?;
                let ns = pool
                    .namespace(sqe.nsid)
                    .ok_or(abi::STATUS_INVALID_NAMESPACE)?;
                let block = 1u64 << ns.lba_shift;
                let mut id = IdentifyNamespace {
                    nsze: ns.size_blocks,
                    ncap: ns.size_blocks,
                    nuse: (ns.allocated_chunks() * CHUNK_BYTES / block).min(ns.size_blocks),
                    // Thin provisioned; deallocated blocks read as zeroes.
                    nsfeat: 1 | 1 << 2,
                    lbaf0: u32::from(ns.lba_shift) << 16,
                    attached: u8::from(ns.attached),
                    ..IdentifyNamespace::default()
                };
                id.label = ns.label;
                id.plex_record = ns.plex_record;
                if let Some(r) = &ns.remote {
                    // What the target allocates is the target's to say:
                    // not thin as far as this card knows, nothing used here.
                    id.nuse = 0;
                    id.nsfeat = if r.deallocated_reads_zeroes {
                        1 << 2
                    } else {
                        0
                    };
                    id.remote = 1;
                    id.remote_path = self.io.remotes.path(sqe.nsid);
                    id.remote_target = r.target;
                }
                if ns.mirror.is_some() {
                    // The plexes' allocation is theirs to say; deallocated
                    // blocks read as zeroes on every plex.
                    id.nuse = 0;
                    id.nsfeat = 1 << 2;
                    id.mirrored = 1;
                }
                self.write_prp(sqe, pod_bytes(&id))
            }
            abi::IdentifyCns::ActiveNsList | abi::IdentifyCns::AllocatedNsList => {
                let pool = self.pool().ok_or(abi::STATUS_INVALID_FIELD)?;
                if sqe.nsid >= 0xffff_fffe {
                    return Err(abi::STATUS_INVALID_NAMESPACE);
                }
                let ids = pool.namespace_ids(sqe.nsid, cns == abi::IdentifyCns::ActiveNsList);
                let mut list = vec![0u8; abi::IDENTIFY_SIZE];
                for (slot, id) in list.chunks_exact_mut(4).zip(ids) {
                    slot.copy_from_slice(&id.to_le_bytes());
                }
                self.write_prp(sqe, &list)
            }
        }
    }

    fn get_log_page(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let page = abi::LogPage::from_cdw10(sqe.cdw10).map_err(|e| e.status())?;
        let bytes = page.bytes();
        if page.log == abi::LogId::PortStats {
            let stats = self.port_stats(sqe)?;
            return self.write_log(sqe, bytes, &stats);
        }
        if page.log == abi::LogId::NsStats {
            let pool = self.pool().ok_or(abi::STATUS_INVALID_FIELD)?;
            if pool.namespace(sqe.nsid).is_none() {
                return Err(abi::STATUS_INVALID_NAMESPACE);
            }
            let stats = self.io.stats_of(sqe.nsid);
            return self.write_log(sqe, bytes, &stats);
        }
        if page.log == abi::LogId::MirrorStatus {
            let pool = self.pool().ok_or(abi::STATUS_INVALID_FIELD)?;
            let ns = pool
                .namespace(sqe.nsid)
                .ok_or(abi::STATUS_INVALID_NAMESPACE)?;
            let status = self
                .io
                .mirrors
                .status(sqe.nsid, &ns)
                .ok_or(abi::STATUS_INVALID_FIELD)?;
            return self.write_log(sqe, bytes, &status);
        }
        let pool = self.pool().ok_or(abi::STATUS_INVALID_FIELD)?;
        let u = pool.usage();
        let status = PoolStatus {
            total_bytes: u.total_bytes,
            used_bytes: u.used_bytes,
            namespaces: u.namespaces,
            max_namespaces: MAX_NAMESPACES,
            chunk_bytes: CHUNK_BYTES as u32,
            reserved: 0,
        };
        self.write_log(sqe, bytes, &status)
    }

    fn ns_management(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        match abi::NsManagement::from_cdw10(sqe.cdw10).map_err(|e| e.status())? {
            abi::NsManagement::Create => {
                let mut raw = vec![0u8; std::mem::size_of::<NamespaceCreate>()];
                self.read_prp(sqe, &mut raw)?;
                let create: NamespaceCreate = pod_from_bytes(&raw);
                if create.reserved != [0; 7] {
                    return Err(abi::STATUS_INVALID_FIELD);
                }
                let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
                let nsid = pool
                    .create_namespace(create.size_blocks, create.lba_shift, create.label)
                    .map_err(|e| e.status())?;
                info!(
                    nsid,
                    blocks = create.size_blocks,
                    shift = create.lba_shift,
                    "namespace created"
                );
                Ok(nsid)
            }
            abi::NsManagement::Delete => {
                pool.delete_namespace(sqe.nsid).map_err(|e| e.status())?;
                info!(nsid = sqe.nsid, "namespace deleted");
                Ok(0)
            }
        }
    }

    fn ns_attachment(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        let attach = match abi::NsAttachment::from_cdw10(sqe.cdw10).map_err(|e| e.status())? {
            abi::NsAttachment::Attach => true,
            abi::NsAttachment::Detach => false,
        };
        pool.set_attached(sqe.nsid, attach)
            .map_err(|e| e.status())?;
        if let Some(ns) = pool.namespace(sqe.nsid) {
            if let Some(r) = &ns.remote {
                if attach {
                    let ctx = Arc::downgrade(&self.io);
                    self.io
                        .remotes
                        .start(sqe.nsid, ns.size_blocks, ns.lba_shift, r, ctx);
                } else {
                    self.io.remotes.attached.stop(sqe.nsid);
                }
            }
            if ns.mirror.is_some() {
                if attach {
                    if let Some(pool) = self.io.pool.clone() {
                        let ctx = Arc::downgrade(&self.io);
                        self.io.mirrors.start(sqe.nsid, &ns, pool, ctx);
                    }
                } else {
                    self.io.mirrors.attached.stop(sqe.nsid);
                }
            }
        }
        info!(nsid = sqe.nsid, attach, "namespace attachment changed");
        Ok(0)
    }

    /// Create Remote Namespace: checks the request, asks the target for
    /// the remote namespace's size and format (on a thread of its own,
    /// while this one keeps the heartbeat going; bounded by the
    /// initiator's timeouts), and records a detached namespace with them.
    fn create_remote_ns(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        if self.pool().is_none() {
            return Err(abi::STATUS_INVALID_OPCODE);
        }
        let mut raw = vec![0u8; std::mem::size_of::<abi::RemoteNamespaceCreate>()];
        self.read_prp(sqe, &mut raw)?;
        let create: abi::RemoteNamespaceCreate = pod_from_bytes(&raw);
        create.validate().map_err(|e| {
            debug!("Create Remote Namespace refused: {e:?}");
            e.status()
        })?;
        if !self.pool().is_some_and(Pool::has_free_id) {
            return Err(abi::STATUS_NS_ID_UNAVAILABLE);
        }
        let target = create.target;
        let host_nqn = self.io.remotes.host_nqn().to_string();
        let probe = std::thread::Builder::new()
            .name("remote-probe".into())
            .spawn(move || remote::probe(&target, &host_nqn))
            .map_err(|e| {
                error!("no thread for a remote probe: {e}");
                abi::STATUS_INTERNAL_ERROR
            })?;
        while !probe.is_finished() {
            self.tick_heartbeat();
            std::thread::sleep(Duration::from_millis(5));
        }
        let info = match probe.join() {
            Ok(Ok(info)) => info,
            Ok(Err((status, result))) => {
                self.error_result = result;
                return Err(status);
            }
            Err(_) => return Err(abi::STATUS_INTERNAL_ERROR),
        };
        if !(abi::LBA_SHIFT_MIN..=abi::LBA_SHIFT_MAX).contains(&info.lba_shift) {
            return Err(abi::STATUS_INVALID_FORMAT);
        }
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        let remote = Remote {
            target,
            deallocated_reads_zeroes: info.deallocated_reads_zeroes,
        };
        let nsid = pool
            .create_remote_namespace(info.blocks, info.lba_shift, create.label, remote)
            .map_err(|e| e.status())?;
        info!(
            nsid,
            blocks = info.blocks,
            shift = info.lba_shift,
            addr = ?target.ip(),
            port = target.port,
            subnqn = target.subnqn_str().unwrap_or("?"),
            remote_nsid = target.nsid,
            "remote namespace created"
        );
        Ok(nsid)
    }

    /// Create Mirror Namespace: checks the request, looks at every plex
    /// (on a thread of its own, while this one keeps the heartbeat going)
    /// and records a detached mirrored namespace with their geometry.
    fn create_mirror_ns(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let Some(pool) = self.io.pool.clone() else {
            return Err(abi::STATUS_INVALID_OPCODE);
        };
        let mut raw = vec![0u8; std::mem::size_of::<abi::MirrorNamespaceCreate>()];
        self.read_prp(sqe, &mut raw)?;
        let create: abi::MirrorNamespaceCreate = pod_from_bytes(&raw);
        create.validate().map_err(|e| {
            debug!("Create Mirror Namespace refused: {e:?}");
            e.status()
        })?;
        if !pool.has_free_id() {
            return Err(abi::STATUS_NS_ID_UNAVAILABLE);
        }
        let io = self.io.clone();
        let p = pool.clone();
        let probe = std::thread::Builder::new()
            .name("mirror-probe".into())
            .spawn(move || io.mirrors.create(&create, &p))
            .map_err(|e| {
                error!("no thread for a mirror probe: {e}");
                abi::STATUS_INTERNAL_ERROR
            })?;
        while !probe.is_finished() {
            self.tick_heartbeat();
            std::thread::sleep(Duration::from_millis(5));
        }
        let (nsid, record) = match probe.join() {
            Ok(Ok(found)) => found,
            Ok(Err((status, result))) => {
                self.error_result = result;
                return Err(status);
            }
            Err(_) => return Err(abi::STATUS_INTERNAL_ERROR),
        };
        let states: Vec<u8> = record.plexes.iter().map(|p| p.state).collect();
        info!(
            nsid,
            generation = record.generation,
            ?states,
            "mirrored namespace created"
        );
        Ok(nsid)
    }

    /// Set Mirror Plexes: checks the table, then (on a thread of its own,
    /// while this one keeps the heartbeat going) the mirror takes it.
    fn set_mirror_plexes(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let Some(pool) = self.io.pool.clone() else {
            return Err(abi::STATUS_INVALID_OPCODE);
        };
        let ns = pool
            .namespace(sqe.nsid)
            .ok_or(abi::STATUS_INVALID_NAMESPACE)?;
        if ns.mirror.is_none() {
            return Err(abi::STATUS_INVALID_FIELD);
        }
        let mut raw = vec![0u8; std::mem::size_of::<abi::MirrorNamespaceCreate>()];
        self.read_prp(sqe, &mut raw)?;
        let table: abi::MirrorNamespaceCreate = pod_from_bytes(&raw);
        // Its label and generation are not used.
        table.validate().map_err(|e| {
            debug!("Set Mirror Plexes refused: {e:?}");
            e.status()
        })?;
        let io = self.io.clone();
        let nsid = sqe.nsid;
        let work = std::thread::Builder::new()
            .name("mirror-set".into())
            .spawn(move || io.mirrors.set_plexes(nsid, &table, &pool))
            .map_err(|e| {
                error!("no thread for Set Mirror Plexes: {e}");
                abi::STATUS_INTERNAL_ERROR
            })?;
        while !work.is_finished() {
            self.tick_heartbeat();
            std::thread::sleep(Duration::from_millis(5));
        }
        match work.join() {
            Ok(r) => r.map(|()| 0),
            Err(_) => Err(abi::STATUS_INTERNAL_ERROR),
        }
    }

    /// Set Plex Record: a local namespace's record as a mirror's plex,
    /// durable before the completion.
    fn set_plex_record(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        if pool.namespace(sqe.nsid).is_none() {
            return Err(abi::STATUS_INVALID_NAMESPACE);
        }
        let mut raw = vec![0u8; std::mem::size_of::<abi::PlexRecord>()];
        self.read_prp(sqe, &mut raw)?;
        let record: abi::PlexRecord = pod_from_bytes(&raw);
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        pool.set_plex_record(sqe.nsid, record)
            .map_err(|e| e.status())?;
        info!(
            nsid = sqe.nsid,
            generation = record.generation,
            "plex record set"
        );
        Ok(0)
    }

    /// Set QoS: validates, admits the floors against the card's capacity,
    /// stores the settings with the namespace and applies them to the next
    /// command.
    fn set_qos(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let pool = self.pool().ok_or(abi::STATUS_INVALID_OPCODE)?;
        if pool.namespace(sqe.nsid).is_none() {
            return Err(abi::STATUS_INVALID_NAMESPACE);
        }
        let mut raw = vec![0u8; std::mem::size_of::<abi::QosSettings>()];
        self.read_prp(sqe, &mut raw)?;
        let q: abi::QosSettings = pod_from_bytes(&raw);
        q.validate().map_err(|_| abi::STATUS_INVALID_FIELD)?;
        let params = QosParams::from_settings(&q);
        // Admission: the floors of every namespace must fit the capacity.
        let (mut iops, mut bps) = (q.min_iops, q.min_bytes_per_s);
        for (nsid, other) in pool.all_qos() {
            if nsid != sqe.nsid {
                iops = iops.saturating_add(other.min_iops);
                bps = bps.saturating_add(other.min_bytes_per_s);
            }
        }
        if iops > self.cfg.qos_capacity_iops || bps > self.cfg.qos_capacity_bps {
            let over = iops.saturating_sub(self.cfg.qos_capacity_iops);
            warn!(
                nsid = sqe.nsid,
                iops, bps, "QoS floors refused: over capacity"
            );
            // The result dword carries the excess; the status says why.
            self.error_result = u32::try_from(over).unwrap_or(u32::MAX);
            return Err(abi::STATUS_QOS_ADMISSION);
        }
        pool.set_qos(sqe.nsid, q).map_err(|e| e.status())?;
        let now = self.io.now();
        self.io
            .sched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(sqe.nsid, params, now)
            .map_err(|_| abi::STATUS_INVALID_FIELD)?;
        info!(nsid = sqe.nsid, ?q, "QoS set");
        Ok(0)
    }

    /// Writes a log page: `page`'s bytes, zero-padded or cut to the `bytes`
    /// the command asked for.
    fn write_log<T: crate::guest_memory::Pod>(
        &self,
        sqe: &SubmissionEntry,
        bytes: usize,
        page: &T,
    ) -> Result<u32, u16> {
        let mut out = pod_bytes(page).to_vec();
        out.resize(bytes, 0);
        self.write_prp(sqe, &out)
    }

    /// Copies `data` to the guest buffer described by the command's PRPs.
    fn write_prp(&self, sqe: &SubmissionEntry, data: &[u8]) -> Result<u32, u16> {
        let mem = &self.board.mem;
        let mut off = 0usize;
        for &(addr, len) in prp_segments(mem, sqe.prp1, sqe.prp2, data.len())?.iter() {
            mem.write(addr, &data[off..off + len])
                .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
            off += len;
        }
        Ok(0)
    }

    /// Fills `out` from the guest buffer described by the command's PRPs.
    fn read_prp(&self, sqe: &SubmissionEntry, out: &mut [u8]) -> Result<(), u16> {
        let mem = &self.board.mem;
        let mut off = 0usize;
        for &(addr, len) in prp_segments(mem, sqe.prp1, sqe.prp2, out.len())?.iter() {
            mem.read(addr, &mut out[off..off + len])
                .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
            off += len;
        }
        Ok(())
    }

    /// Checks a Create I/O CQ/SQ: its queue (CDW10), then its `options`
    /// (CDW11, decoded by the caller).
    fn queue_args<T>(
        &self,
        sqe: &SubmissionEntry,
        options: Result<T, abi::CommandWordError>,
    ) -> Result<(u16, u16, T), u16> {
        let abi::NewQueue { qid, entries } = abi::NewQueue::from_cdw10(sqe.cdw10);
        if qid == 0 || qid > self.cfg.max_io_queues() {
            return Err(abi::STATUS_INVALID_QID);
        }
        if !(2..=u32::from(self.cfg.max_queue_entries)).contains(&entries) {
            return Err(abi::STATUS_INVALID_QUEUE_SIZE);
        }
        // Only physically contiguous queues.
        let options = options.map_err(|e| e.status())?;
        // In range of max_queue_entries (u16) per the check above.
        Ok((qid, entries as u16, options))
    }

    fn queues(&mut self) -> Result<&mut Queues, u16> {
        match &mut self.state {
            State::Running(q) => Ok(q),
            _ => Err(abi::STATUS_INTERNAL_ERROR),
        }
    }

    fn create_cq(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let (qid, entries, options) =
            self.queue_args(sqe, abi::CqOptions::from_cdw11(sqe.cdw11))?;
        let abi::CqOptions { interrupts, vector } = options;
        if vector >= self.cfg.vectors || self.vector_used_by_port(vector) {
            return Err(abi::STATUS_INVALID_VECTOR);
        }
        if !check_placement(&self.board.mem, sqe.prp1, entries, abi::CQE_SIZE) {
            return Err(abi::STATUS_INVALID_FIELD);
        }
        let q = self.queues()?;
        if q.cqs.contains_key(&qid) {
            return Err(abi::STATUS_INVALID_QID);
        }
        let cq = CompletionQueue::new(sqe.prp1, entries, vector, interrupts);
        q.cqs.insert(qid, Arc::new(Mutex::new(cq)));
        info!(qid, entries, vector, "I/O completion queue created");
        Ok(0)
    }

    fn create_sq(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let (qid, entries, abi::SqOptions { cqid }) =
            self.queue_args(sqe, abi::SqOptions::from_cdw11(sqe.cdw11))?;
        if !check_placement(&self.board.mem, sqe.prp1, entries, abi::SQE_SIZE) {
            return Err(abi::STATUS_INVALID_FIELD);
        }
        let io = self.io.clone();
        let board = self.board.clone();
        let q = self.queues()?;
        let cq = q.cqs.get(&cqid).ok_or(abi::STATUS_INVALID_CQ)?.clone();
        if q.workers.contains_key(&qid) {
            return Err(abi::STATUS_INVALID_QID);
        }
        board.bar.write32(abi::sq_tail_doorbell(qid), 0);
        let sq = SubmissionQueue::new(cqid, sqe.prp1, entries);
        let worker = IoWorker::spawn(io, qid, sq, cq).map_err(|e| {
            error!("cannot start the worker of SQ {qid}: {e}");
            abi::STATUS_INTERNAL_ERROR
        })?;
        q.workers.insert(qid, worker);
        info!(qid, entries, cqid, "I/O submission queue created");
        Ok(0)
    }

    fn delete_sq(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let qid = abi::DeleteQueue::from_cdw10(sqe.cdw10).qid;
        let q = self.queues()?;
        // Dropping the worker stops it after the command in progress.
        if qid == 0 || q.workers.remove(&qid).is_none() {
            return Err(abi::STATUS_INVALID_QID);
        }
        info!(qid, "I/O submission queue deleted");
        Ok(0)
    }

    fn delete_cq(&mut self, sqe: &SubmissionEntry) -> Result<u32, u16> {
        let qid = abi::DeleteQueue::from_cdw10(sqe.cdw10).qid;
        let q = self.queues()?;
        if qid == 0 || !q.cqs.contains_key(&qid) {
            return Err(abi::STATUS_INVALID_QID);
        }
        if q.workers.values().any(|w| w.cqid == qid) {
            return Err(abi::STATUS_INVALID_QUEUE_DELETION);
        }
        q.cqs.remove(&qid);
        info!(qid, "I/O completion queue deleted");
        Ok(0)
    }
}

/// A boot id for `REG_FW_BOOT_ID`: the start time in nanoseconds mixed with
/// the process id; never 0, different at each firmware start.
fn new_boot_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ u64::from(std::process::id()).rotate_left(40)) | 1
}
