//! Admin commands of a connected controller (queue 0): Property Get/Set,
//! Identify, Get Log Page (the discovery log on the discovery controller;
//! zeroed error, SMART, firmware and changed-namespace pages elsewhere),
//! Set/Get Features (Number of Queues, Asynchronous Event Configuration,
//! Keep Alive Timer, Volatile Write Cache), Asynchronous Event Request
//! (held, never completed while the controller lives), Keep Alive, and
//! dia's Set Plex Record (a mirror's card tells an exported volume that
//! is one of its plexes the mirror's generation and in-sync plexes).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::command::{fctype, opcode, status, Command};
use super::controller::{Ctrl, Shared, Subsystem, DISCOVERY_NQN};
use super::identify::{self, ControllerInfo, DiscoveryEntry};

/// What executing a command gives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Status (SCT << 8 | SC, DNR).
    pub status: u16,
    /// Completion dwords 0 and 1.
    pub result: u64,
    /// Data for the host (C2HData), on success.
    pub data: Vec<u8>,
    /// Held: no completion now (Asynchronous Event Request).
    pub hold: bool,
}

impl Outcome {
    /// Success without data.
    pub fn ok() -> Self {
        Self::default()
    }

    /// A failure.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }

    /// Success with data for the host.
    pub fn data(data: Vec<u8>) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }

    /// Success with a result.
    pub fn result(result: u64) -> Self {
        Self {
            result,
            ..Self::default()
        }
    }
}

/// Feature identifiers.
mod fid {
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
}

/// Log page identifiers.
mod lid {
    pub const ERROR: u8 = 0x01;
    pub const SMART: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    pub const CHANGED_NAMESPACES: u8 = 0x04;
    pub const DISCOVERY: u8 = 0x70;
}

/// Executes admin command `cmd` on `ctrl`.
/// `data` is what the host sent with it; `local` is the address the
/// host's connection reached (for the discovery log when no address is
/// advertised).
pub fn execute(
    shared: &Shared,
    ctrl: &Ctrl,
    cmd: &Command,
    data: &[u8],
    local: Option<SocketAddr>,
) -> Outcome {
    let discovery = ctrl.subsystem == Subsystem::Discovery;
    match cmd.opcode() {
        opcode::FABRICS => fabrics(shared, ctrl, cmd),
        opcode::IDENTIFY => identify(shared, ctrl, cmd),
        opcode::GET_LOG_PAGE => get_log_page(shared, cmd, discovery, local),
        opcode::SET_FEATURES => set_features(ctrl, cmd, discovery),
        opcode::GET_FEATURES => get_features(ctrl, cmd, discovery),
        opcode::ASYNC_EVENT => Outcome {
            hold: true,
            ..Outcome::ok()
        },
        opcode::KEEP_ALIVE => Outcome::ok(),
        opcode::SET_PLEX_RECORD => set_plex_record(shared, ctrl, cmd, data),
        _ => Outcome::status(status::INVALID_OPCODE | status::DNR),
    }
}

fn fabrics(shared: &Shared, ctrl: &Ctrl, cmd: &Command) -> Outcome {
    // Size bits 2:0: 0 = 4 bytes, 1 = 8 bytes.
    let eight = match cmd.property_attrib() & 7 {
        0 => false,
        1 => true,
        _ => return Outcome::status(status::INVALID_FIELD | status::DNR),
    };
    match cmd.fctype() {
        fctype::PROPERTY_GET => match ctrl.property_get(cmd.property_offset(), eight) {
            Ok(v) => Outcome::result(v),
            Err(s) => Outcome::status(s),
        },
        fctype::PROPERTY_SET => {
            let v = cmd.property_value();
            if let Err(s) = ctrl.property_set(cmd.property_offset(), eight, v) {
                return Outcome::status(s);
            }
            // A shutdown notification (CC.SHN) on a volume's controller
            // flushes the pool, as the local controller's does.
            if ctrl.shutting_down() && matches!(ctrl.subsystem, Subsystem::Volume(_)) {
                if let Some(Err(e)) = shared.pool().map(|p| p.flush()) {
                    return Outcome::status(e.status());
                }
            }
            Outcome::ok()
        }
        // A second Connect on a connected queue.
        fctype::CONNECT => Outcome::status(status::COMMAND_SEQUENCE | status::DNR),
        _ => Outcome::status(status::INVALID_OPCODE | status::DNR),
    }
}

fn identify(shared: &Shared, ctrl: &Ctrl, cmd: &Command) -> Outcome {
    let cns = cmd.cdw(10) as u8;
    let volume = match ctrl.subsystem {
        Subsystem::Volume(nsid) => Some(nsid),
        Subsystem::Discovery => None,
    };
    let bad_ns = Outcome::status(status::INVALID_NAMESPACE | status::DNR);
    match (cns, volume) {
        (0x01, _) => Outcome::data(identify::controller(&ControllerInfo {
            cntlid: ctrl.cntlid,
            serial: &shared.cfg.serial,
            subnqn: if volume.is_some() {
                &ctrl.subnqn
            } else {
                DISCOVERY_NQN
            },
            discovery: volume.is_none(),
        })),
        (0x00, Some(card_nsid)) => {
            if cmd.nsid() != 1 {
                return bad_ns;
            }
            Outcome::data(identify::namespace(
                shared.namespace_info(card_nsid).as_ref(),
            ))
        }
        (0x02, Some(card_nsid)) => {
            if cmd.nsid() >= 0xffff_fffe {
                return bad_ns;
            }
            let active = shared.exported().contains(&card_nsid);
            Outcome::data(identify::active_list(active, cmd.nsid()))
        }
        (0x03, Some(card_nsid)) => match shared.namespace_info(card_nsid) {
            Some(ns) if cmd.nsid() == 1 => Outcome::data(identify::descriptors(&ns.nguid)),
            _ => bad_ns,
        },
        // I/O Command Set specific controller data for NVM: nothing to add.
        (0x06, Some(_)) if cmd.cdw(11) >> 24 == 0 => {
            Outcome::data(vec![0; identify::IDENTIFY_BYTES])
        }
        _ => Outcome::status(status::INVALID_FIELD | status::DNR),
    }
}

/// Set Plex Record on the volume's namespace (nsid 1): the record in the
/// data (48 bytes, reserved zero), durable in the pool before the
/// completion.
fn set_plex_record(shared: &Shared, ctrl: &Ctrl, cmd: &Command, data: &[u8]) -> Outcome {
    let Subsystem::Volume(card_nsid) = ctrl.subsystem else {
        return Outcome::status(status::INVALID_OPCODE | status::DNR);
    };
    if cmd.nsid() != 1 {
        return Outcome::status(status::INVALID_NAMESPACE | status::DNR);
    }
    let Some(record) = identify::plex_record_of(data) else {
        return Outcome::status(status::INVALID_FIELD | status::DNR);
    };
    let Some(pool) = shared.pool() else {
        return Outcome::status(status::INVALID_NAMESPACE | status::DNR);
    };
    match pool.set_plex_record(card_nsid, record) {
        Ok(()) => Outcome::ok(),
        Err(crate::pool::StorageError::NoNamespace(_)) => {
            Outcome::status(status::INVALID_NAMESPACE | status::DNR)
        }
        Err(crate::pool::StorageError::BadRemote) => {
            Outcome::status(status::INVALID_FIELD | status::DNR)
        }
        Err(_) => Outcome::status(status::INTERNAL_ERROR),
    }
}

fn get_log_page(
    shared: &Shared,
    cmd: &Command,
    discovery: bool,
    local: Option<SocketAddr>,
) -> Outcome {
    let id = cmd.cdw(10) as u8;
    let dwords = (u64::from(cmd.cdw(11) & 0xffff) << 16 | u64::from(cmd.cdw(10) >> 16)) + 1;
    let len = dwords * 4;
    let offset = u64::from(cmd.cdw(12)) | u64::from(cmd.cdw(13)) << 32;
    if offset % 4 != 0 || len > u64::from(super::MDTS_BYTES) {
        return Outcome::status(status::INVALID_FIELD | status::DNR);
    }
    // Bounded by MDTS just above.
    let len = len as usize;
    let page = match (id, discovery) {
        (lid::DISCOVERY, true) => discovery_log(shared, local),
        (lid::ERROR | lid::SMART | lid::FIRMWARE_SLOT | lid::CHANGED_NAMESPACES, false) => {
            return Outcome::data(vec![0; len]);
        }
        _ => return Outcome::status(status::INVALID_LOG_PAGE | status::DNR),
    };
    let Ok(start) = usize::try_from(offset) else {
        return Outcome::status(status::INVALID_FIELD | status::DNR);
    };
    if start > page.len() {
        return Outcome::status(status::INVALID_FIELD | status::DNR);
    }
    let mut out = page[start..].to_vec();
    out.resize(len, 0);
    Outcome::data(out)
}

/// The discovery log: every exported volume's subsystem, then the
/// discovery subsystem itself.
fn discovery_log(shared: &Shared, local: Option<SocketAddr>) -> Vec<u8> {
    let addr = shared.cfg.advertise.or(local).unwrap_or(shared.cfg.listen);
    let entry = |subtype: u8, subnqn: String| DiscoveryEntry {
        subtype,
        traddr: addr.ip().to_string(),
        trsvcid: addr.port().to_string(),
        ipv6: addr.is_ipv6(),
        subnqn,
    };
    let ids = shared.exported();
    let mut entries: Vec<DiscoveryEntry> = ids
        .iter()
        .map(|&nsid| entry(2, shared.volume_nqn(nsid)))
        .collect();
    entries.push(entry(3, DISCOVERY_NQN.to_string()));
    // The generation changes when the set of subsystems does.
    let genctr = ids.iter().fold(1u64, |h, &id| {
        (h ^ u64::from(id)).wrapping_mul(0x0100_0000_01b3)
    });
    identify::discovery_log(genctr, &entries)
}

fn set_features(ctrl: &Ctrl, cmd: &Command, discovery: bool) -> Outcome {
    if cmd.cdw(10) & (1 << 31) != 0 {
        return Outcome::status(status::FEATURE_NOT_SAVEABLE | status::DNR);
    }
    let v = cmd.cdw(11);
    match cmd.cdw(10) as u8 {
        fid::NUMBER_OF_QUEUES if !discovery => {
            if v & 0xffff == 0xffff || v >> 16 == 0xffff {
                return Outcome::status(status::INVALID_FIELD | status::DNR);
            }
            Outcome::result(u64::from(ctrl.set_queue_count(v as u16, (v >> 16) as u16)))
        }
        fid::ASYNC_EVENT_CONFIG => {
            ctrl.set_aec(v);
            Outcome::ok()
        }
        fid::KEEP_ALIVE_TIMER => {
            ctrl.kato_ms.store(v, Ordering::Relaxed);
            Outcome::ok()
        }
        _ => Outcome::status(status::INVALID_FIELD | status::DNR),
    }
}

fn get_features(ctrl: &Ctrl, cmd: &Command, discovery: bool) -> Outcome {
    let v = match cmd.cdw(10) as u8 {
        fid::NUMBER_OF_QUEUES if !discovery => ctrl.queue_count(),
        fid::VOLATILE_WRITE_CACHE if !discovery => 1,
        fid::ASYNC_EVENT_CONFIG => ctrl.aec(),
        fid::KEEP_ALIVE_TIMER => ctrl.kato_ms.load(Ordering::Relaxed),
        _ => return Outcome::status(status::INVALID_FIELD | status::DNR),
    };
    Outcome::result(u64::from(v))
}
