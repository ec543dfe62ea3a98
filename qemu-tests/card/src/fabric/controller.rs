//! What the target's connections share: its configuration, the card's pool
//! (through a [`PoolSource`], as the firmware reopens the pool when it
//! restarts), the subsystems it exports (one per attached namespace, plus
//! the discovery subsystem) and the live controllers (dynamic model: Connect
//! on an admin queue creates one with a fresh cntlid; Connect on an I/O
//! queue joins it by cntlid). A controller's properties (CAP, VS, CC, CSTS)
//! and features live here.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::pool::Pool;

use super::command::{status, ConnectData};
use super::identify::{NamespaceInfo, VERSION};
use super::{MAX_IO_QUEUES, QUEUE_ENTRIES};

/// The NQN of the discovery subsystem (well known).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Prefix of the NQN of a volume's subsystem (the card interface's
/// [`dia_abi::card::VOLUME_NQN_PREFIX`]).
pub const NQN_PREFIX: &str = dia_abi::card::VOLUME_NQN_PREFIX;

/// Where the target finds the card's pool right now (`None` while the
/// firmware is dead or the card has no pool).
pub type PoolSource = Arc<dyn Fn() -> Option<Arc<Pool>> + Send + Sync>;

/// How the target is set up.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// Address the target listens on (`--fabric-listen`).
    pub listen: SocketAddr,
    /// The card's serial number (in every volume's NQN and Identify).
    pub serial: String,
    /// Address the discovery log gives hosts (default: the address the
    /// host's connection reached).
    pub advertise: Option<SocketAddr>,
    /// Most connections (queues) at once, all hosts together.
    pub max_connections: usize,
}

/// A subsystem the target exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    /// The discovery subsystem.
    Discovery,
    /// The subsystem of the card's namespace with this id (its namespace 1).
    Volume(u32),
}

/// State shared by the target's connections.
pub struct Shared {
    /// Configuration.
    pub cfg: TargetConfig,
    pools: PoolSource,
    ctrls: Mutex<Registry>,
    /// Open connections.
    pub connections: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("cfg", &self.cfg).finish()
    }
}

#[derive(Debug, Default)]
struct Registry {
    last: u16,
    live: HashMap<u16, Arc<Ctrl>>,
}

/// Largest dynamic controller id.
const CNTLID_MAX: u16 = 0xffef;

impl Shared {
    /// Shared state for a target.
    pub fn new(cfg: TargetConfig, pools: PoolSource) -> Self {
        Self {
            cfg,
            pools,
            ctrls: Mutex::new(Registry::default()),
            connections: AtomicUsize::new(0),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.ctrls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The card's pool, if the firmware runs with one.
    pub fn pool(&self) -> Option<Arc<Pool>> {
        (self.pools)()
    }

    /// The NQN of the subsystem of card namespace `nsid`.
    pub fn volume_nqn(&self, nsid: u32) -> String {
        format!("{NQN_PREFIX}{}:ns{nsid}", self.cfg.serial)
    }

    /// Card namespaces exported now: the attached ones (those the card
    /// serves I/O for) whose data is in the pool; a remote namespace (data
    /// behind another target) is not served again from here.
    pub fn exported(&self) -> Vec<u32> {
        self.pool().map(|p| p.exported_ids()).unwrap_or_default()
    }

    /// The subsystem `nqn` names, if the target exports it now.
    pub fn subsystem(&self, nqn: &str) -> Option<Subsystem> {
        if nqn == DISCOVERY_NQN {
            return Some(Subsystem::Discovery);
        }
        let rest = nqn.strip_prefix(NQN_PREFIX)?;
        let id = rest
            .strip_prefix(self.cfg.serial.as_str())?
            .strip_prefix(":ns")?;
        if id.starts_with('0') || !id.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let nsid: u32 = id.parse().ok()?;
        self.exported()
            .contains(&nsid)
            .then_some(Subsystem::Volume(nsid))
    }

    /// What Identify Namespace reports for card namespace `nsid`, if it is
    /// exported.
    pub fn namespace_info(&self, nsid: u32) -> Option<NamespaceInfo> {
        let ns = self.pool()?.namespace(nsid)?;
        (ns.attached && ns.remote.is_none()).then(|| NamespaceInfo {
            size_blocks: ns.size_blocks,
            lba_shift: ns.lba_shift,
            nguid: nguid(&self.cfg.serial, nsid, &ns.label),
            plex_record: ns.plex_record,
        })
    }

    /// A new controller of `subsystem` for the host in `data`.
    pub fn create_ctrl(
        &self,
        subsystem: Subsystem,
        data: &ConnectData,
        kato_ms: u32,
    ) -> Result<Arc<Ctrl>, u16> {
        let mut reg = self.registry();
        let mut id = reg.last;
        let cntlid = loop {
            id = if id >= CNTLID_MAX { 1 } else { id + 1 };
            if !reg.live.contains_key(&id) {
                break id;
            }
            if id == reg.last {
                return Err(status::CONNECT_CONTROLLER_BUSY);
            }
        };
        reg.last = cntlid;
        let ctrl = Arc::new(Ctrl {
            cntlid,
            subsystem,
            subnqn: data.subnqn.clone(),
            hostnqn: data.hostnqn.clone(),
            kato_ms: AtomicU32::new(kato_ms),
            regs: Mutex::new(Regs {
                cc: 0,
                csts: 0,
                io_queues: MAX_IO_QUEUES,
                aec: 0,
            }),
            queues: Mutex::new(BTreeSet::new()),
            alive: AtomicBool::new(true),
        });
        reg.live.insert(cntlid, ctrl.clone());
        Ok(ctrl)
    }

    /// A live controller.
    pub fn find_ctrl(&self, cntlid: u16) -> Option<Arc<Ctrl>> {
        self.registry().live.get(&cntlid).cloned()
    }

    /// Ends a controller (its admin queue closed): its I/O queues close too.
    pub fn remove_ctrl(&self, cntlid: u16) {
        if let Some(c) = self.registry().live.remove(&cntlid) {
            c.alive.store(false, Ordering::Release);
        }
    }

    /// Live controllers.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn controllers(&self) -> usize {
        self.registry().live.len()
    }
}

/// A namespace's NGUID: stable for the card, the namespace id and its
/// owner's label, so a new volume that reuses an id gets a new NGUID.
pub fn nguid(serial: &str, nsid: u32, label: &[u8]) -> [u8; 16] {
    let fnv = |bytes: &[u8]| {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let mut g = [0u8; 16];
    g[..8].copy_from_slice(&fnv(serial.as_bytes()).to_be_bytes());
    g[8..12].copy_from_slice(&nsid.to_be_bytes());
    g[12..].copy_from_slice(&(fnv(label) as u32).to_be_bytes());
    g
}

#[derive(Debug)]
struct Regs {
    cc: u32,
    csts: u32,
    /// I/O queues granted (Set Features Number of Queues).
    io_queues: u16,
    /// Asynchronous Event Configuration.
    aec: u32,
}

/// One controller: created by an admin queue's Connect.
#[derive(Debug)]
pub struct Ctrl {
    /// Controller id.
    pub cntlid: u16,
    /// Its subsystem.
    pub subsystem: Subsystem,
    /// Its subsystem's NQN (as the host spelled it in Connect).
    pub subnqn: String,
    /// The host's NQN.
    pub hostnqn: String,
    /// Keep Alive Timeout in ms (0: none).
    pub kato_ms: AtomicU32,
    regs: Mutex<Regs>,
    /// I/O queue ids connected.
    queues: Mutex<BTreeSet<u16>>,
    alive: AtomicBool,
}

/// Property offsets.
mod prop {
    pub const CAP: u32 = 0x00;
    pub const VS: u32 = 0x08;
    pub const CC: u32 = 0x14;
    pub const CSTS: u32 = 0x1c;
}

/// CC.EN, CSTS.RDY.
const EN: u32 = 1;
/// CC.SHN (bits 15:14).
const CC_SHN: u32 = 3 << 14;
/// CSTS.SHST = shutdown complete (bits 3:2 = 10b).
const CSTS_SHUTDOWN_COMPLETE: u32 = 2 << 2;

impl Ctrl {
    fn regs(&self) -> MutexGuard<'_, Regs> {
        self.regs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the controller still exists (its admin queue is open).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// CSTS.RDY.
    pub fn ready(&self) -> bool {
        self.regs().csts & EN != 0
    }

    /// The CAP property: MQES, CQR, TO (10 s), the NVM command set, 4 KiB pages.
    pub fn cap() -> u64 {
        u64::from(QUEUE_ENTRIES - 1) | 1 << 16 | 20 << 24 | 1 << 37
    }

    /// Property Get (`eight`: an 8-byte property).
    pub fn property_get(&self, offset: u32, eight: bool) -> Result<u64, u16> {
        let r = self.regs();
        match (offset, eight) {
            (prop::CAP, true) => Ok(Self::cap()),
            (prop::VS, false) => Ok(u64::from(VERSION)),
            (prop::CC, false) => Ok(u64::from(r.cc)),
            (prop::CSTS, false) => Ok(u64::from(r.csts)),
            _ => Err(status::INVALID_FIELD | status::DNR),
        }
    }

    /// Whether CC.SHN asks for a shutdown.
    pub fn shutting_down(&self) -> bool {
        self.regs().cc & CC_SHN != 0
    }

    /// Property Set: only CC is writable. CC.EN 0 -> 1 makes the controller
    /// ready (CSTS.RDY), 1 -> 0 resets it; a shutdown notification is
    /// complete at once (the caller flushes the pool before it answers).
    pub fn property_set(&self, offset: u32, eight: bool, value: u64) -> Result<(), u16> {
        if offset != prop::CC || eight {
            return Err(status::INVALID_FIELD | status::DNR);
        }
        // A 4-byte property: the upper half is ignored.
        let cc = value as u32;
        let mut r = self.regs();
        // IOSQES (bits 19:16) and IOCQES (bits 23:20) must be 6 and 4 when enabling.
        if cc & EN != 0 && r.cc & EN == 0 && ((cc >> 16) & 0xf != 6 || (cc >> 20) & 0xf != 4) {
            r.csts |= 1 << 1; // CFS
            r.cc = cc;
            return Ok(());
        }
        r.csts = if cc & EN != 0 { r.csts | EN } else { 0 };
        if cc & CC_SHN != 0 {
            r.csts = (r.csts & !(3 << 2)) | CSTS_SHUTDOWN_COMPLETE;
        }
        r.cc = cc;
        Ok(())
    }

    /// Set Features Number of Queues: grants what the host asked for, at
    /// most [`MAX_IO_QUEUES`]; returns the value for completion dword 0.
    pub fn set_queue_count(&self, nsqr: u16, ncqr: u16) -> u32 {
        let n = nsqr.min(ncqr).saturating_add(1).min(MAX_IO_QUEUES);
        self.regs().io_queues = n;
        self.queue_count()
    }

    /// Number of Queues as completion dword 0 (0's based counts).
    pub fn queue_count(&self) -> u32 {
        let n = u32::from(self.regs().io_queues.saturating_sub(1));
        n << 16 | n
    }

    /// Asynchronous Event Configuration.
    pub fn set_aec(&self, v: u32) {
        self.regs().aec = v;
    }

    /// Asynchronous Event Configuration.
    pub fn aec(&self) -> u32 {
        self.regs().aec
    }

    /// Claims I/O queue `qid` for a connection, if granted and free.
    pub fn claim_queue(&self, qid: u16) -> bool {
        if qid == 0 || qid > self.regs().io_queues {
            return false;
        }
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(qid)
    }

    /// Gives I/O queue `qid` back (its connection closed).
    pub fn release_queue(&self, qid: u16) {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&qid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared::new(
            TargetConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                serial: "DIA-1".into(),
                advertise: None,
                max_connections: 4,
            },
            Arc::new(|| None),
        )
    }

    fn connect_data() -> ConnectData {
        ConnectData {
            hostid: [1; 16],
            cntlid: 0xffff,
            subnqn: DISCOVERY_NQN.into(),
            hostnqn: "nqn.host".into(),
        }
    }

    #[test]
    fn nqns() {
        let s = shared();
        assert_eq!(s.volume_nqn(3), "nqn.2026-12.io.dia:DIA-1:ns3");
        assert_eq!(s.subsystem(DISCOVERY_NQN), Some(Subsystem::Discovery));
        // Without a pool nothing else is exported.
        assert_eq!(s.subsystem("nqn.2026-12.io.dia:DIA-1:ns3"), None);
        assert_eq!(s.subsystem("nqn.2026-12.io.dia:DIA-2:ns3"), None);
        assert_eq!(s.subsystem("nqn.2026-12.io.dia:DIA-1:ns03"), None);
    }

    #[test]
    fn controllers_get_distinct_ids_and_go_away() {
        let s = shared();
        let a = s
            .create_ctrl(Subsystem::Discovery, &connect_data(), 0)
            .unwrap();
        let b = s
            .create_ctrl(Subsystem::Discovery, &connect_data(), 0)
            .unwrap();
        assert_ne!(a.cntlid, b.cntlid);
        assert!(s.find_ctrl(a.cntlid).is_some());
        s.remove_ctrl(a.cntlid);
        assert!(!a.alive());
        assert!(s.find_ctrl(a.cntlid).is_none());
        assert_eq!(s.controllers(), 1);
    }

    #[test]
    fn enable_and_shutdown() {
        let s = shared();
        let c = s
            .create_ctrl(Subsystem::Discovery, &connect_data(), 0)
            .unwrap();
        assert_eq!(c.property_get(0, true).unwrap() & 0xffff, 127);
        assert!(c.property_get(0, false).is_err());
        assert!(c.property_set(0, true, 0).is_err());
        let cc = 6 << 16 | 4 << 20 | 1;
        c.property_set(0x14, false, cc).unwrap();
        assert!(c.ready());
        c.property_set(0x14, false, cc | 1 << 14).unwrap();
        assert_eq!(c.property_get(0x1c, false).unwrap() & 0xc, 0x8);
        c.property_set(0x14, false, 0).unwrap();
        assert!(!c.ready());
        // Bad entry sizes: the controller reports a fatal status, not ready.
        c.property_set(0x14, false, 1).unwrap();
        assert!(!c.ready());
        assert_eq!(c.property_get(0x1c, false).unwrap() & 2, 2);
    }

    #[test]
    fn queues() {
        let s = shared();
        let c = s
            .create_ctrl(Subsystem::Discovery, &connect_data(), 0)
            .unwrap();
        assert_eq!(c.set_queue_count(1, 3), 1 << 16 | 1);
        assert!(c.claim_queue(1));
        assert!(!c.claim_queue(1));
        assert!(c.claim_queue(2));
        assert!(!c.claim_queue(3));
        assert!(!c.claim_queue(0));
        c.release_queue(1);
        assert!(c.claim_queue(1));
        assert_eq!(c.set_queue_count(0xffff, 0xffff), 7 << 16 | 7);
    }
}
