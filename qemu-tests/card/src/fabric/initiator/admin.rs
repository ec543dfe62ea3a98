//! The admin queue's steps, each one command on a [`Queue`]: Fabrics
//! Connect (admin and I/O queues), Property Get/Set, enabling the
//! controller (CC.EN, then CSTS.RDY polled within a bound), Identify,
//! Set/Get Features, Keep Alive, and the keep-alive thread that sends one
//! every half of the Keep Alive Timeout the target accepted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::{Duration, Instant};

use tracing::debug;

use super::super::command::{cns, fctype, feature, opcode, property, Command, ConnectData};
use super::super::identify::IDENTIFY_BYTES;
use super::error::{check_status, Error};
use super::transport::{Payload, Queue, Reply, Request};
use super::{ENABLE_POLL, KEEP_ALIVE_TICK};

/// CC.EN / CSTS.RDY.
const EN: u64 = 1;
/// CSTS.CFS: controller fatal status.
const CSTS_CFS: u64 = 1 << 1;
/// CC.IOSQES (64-byte entries, log2) and CC.IOCQES (16 bytes).
const CC_QUEUE_ENTRY_SIZES: u64 = 6 << 16 | 4 << 20;
/// CC.MPS shift.
const CC_MPS_SHIFT: u32 = 7;
/// cntlid to ask for on the admin queue: any (dynamic model).
pub const ANY_CNTLID: u16 = 0xffff;

/// What CAP says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Entries per queue at most (MQES + 1).
    pub max_entries: u32,
    /// Worst time to ready (TO, 500 ms units).
    pub ready_timeout: Duration,
    /// log2 of the smallest memory page size, minus 12 (MPSMIN).
    pub mpsmin: u8,
}

impl Cap {
    /// Decodes the CAP property.
    pub fn parse(v: u64) -> Self {
        Self {
            max_entries: (v & 0xffff) as u32 + 1,
            ready_timeout: Duration::from_millis(((v >> 24) & 0xff) * 500),
            mpsmin: ((v >> 48) & 0xf) as u8,
        }
    }

    /// Bytes of the smallest memory page.
    pub fn page_bytes(&self) -> u64 {
        4096 << self.mpsmin
    }
}

fn command(q: &Queue, cmd: Command, payload: Payload, read_len: usize) -> Result<Reply, Error> {
    let r = q.run(Request {
        cmd,
        payload,
        read_len,
    })?;
    check_status(r.completion.status)?;
    Ok(r)
}

/// Fabrics Connect for queue `qid` (`sqsize`: entries - 1); returns the
/// controller id.
pub fn connect(
    q: &Queue,
    qid: u16,
    sqsize: u16,
    kato_ms: u32,
    data: &ConnectData,
) -> Result<u16, Error> {
    let mut c = Command::fabrics(fctype::CONNECT);
    c.set_connect(qid, sqsize, kato_ms);
    let r = command(q, c, Payload::InCapsule(data.encode()), 0)?;
    Ok(r.completion.result as u16)
}

/// Property Get.
pub fn property_get(q: &Queue, offset: u32, eight: bool) -> Result<u64, Error> {
    let mut c = Command::fabrics(fctype::PROPERTY_GET);
    c.set_property(eight, offset, 0);
    Ok(command(q, c, Payload::None, 0)?.completion.result)
}

/// Property Set of a 4-byte property.
pub fn property_set(q: &Queue, offset: u32, value: u32) -> Result<(), Error> {
    let mut c = Command::fabrics(fctype::PROPERTY_SET);
    c.set_property(false, offset, u64::from(value));
    command(q, c, Payload::None, 0).map(|_| ())
}

/// Enables the controller (CC.EN with the NVM command set, `cap`'s page
/// size, 64/16-byte entries) and waits for CSTS.RDY for at most `limit`.
pub fn enable(q: &Queue, cap: &Cap, limit: Duration) -> Result<(), Error> {
    let cc = EN | CC_QUEUE_ENTRY_SIZES | u64::from(cap.mpsmin) << CC_MPS_SHIFT;
    // CC is a 4-byte property; every bit above is zero.
    property_set(q, property::CC, cc as u32)?;
    let deadline = Instant::now() + limit;
    loop {
        let csts = property_get(q, property::CSTS, false)?;
        if csts & CSTS_CFS != 0 {
            return Err(Error::Unusable("controller fatal status after CC.EN"));
        }
        if csts & EN != 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Unusable("CSTS.RDY not set in time after CC.EN"));
        }
        std::thread::sleep(ENABLE_POLL);
    }
}

/// Shutdown notification (CC.SHN normal) and a bounded wait for
/// CSTS.SHST complete.
pub fn shutdown(q: &Queue, limit: Duration) -> Result<(), Error> {
    const CC_SHN_NORMAL: u32 = 1 << 14;
    const CSTS_SHST_MASK: u64 = 3 << 2;
    const CSTS_SHST_COMPLETE: u64 = 2 << 2;
    let cc = property_get(q, property::CC, false)? as u32;
    property_set(q, property::CC, cc | CC_SHN_NORMAL)?;
    let deadline = Instant::now() + limit;
    loop {
        let csts = property_get(q, property::CSTS, false)?;
        if csts & CSTS_SHST_MASK == CSTS_SHST_COMPLETE {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Unusable("shutdown not complete in time"));
        }
        std::thread::sleep(ENABLE_POLL);
    }
}

/// Identify with CNS `cns_value` for namespace `nsid`: the 4 KiB page.
pub fn identify(q: &Queue, cns_value: u8, nsid: u32) -> Result<Vec<u8>, Error> {
    let mut c = Command::new(opcode::IDENTIFY);
    c.set_nsid(nsid);
    c.set_cdw(10, u32::from(cns_value));
    Ok(command(q, c, Payload::None, IDENTIFY_BYTES)?.data)
}

/// dia's Set Plex Record on namespace `nsid` (a dia card's target makes
/// it durable before it answers).
pub fn set_plex_record(
    q: &Queue,
    nsid: u32,
    record: &dia_abi::card::PlexRecord,
) -> Result<(), Error> {
    let mut c = Command::new(opcode::SET_PLEX_RECORD);
    c.set_nsid(nsid);
    let data = super::super::identify::plex_record_bytes(record).to_vec();
    command(q, c, Payload::InCapsule(data), 0)?;
    Ok(())
}

/// Identify Controller.
pub fn identify_controller(q: &Queue) -> Result<Vec<u8>, Error> {
    identify(q, cns::CONTROLLER, 0)
}

/// Set Features (not saved); returns completion dword 0.
pub fn set_features(q: &Queue, fid: u8, value: u32) -> Result<u32, Error> {
    let mut c = Command::new(opcode::SET_FEATURES);
    c.set_cdw(10, u32::from(fid));
    c.set_cdw(11, value);
    Ok(command(q, c, Payload::None, 0)?.completion.result as u32)
}

/// Get Features (current value); returns completion dword 0.
pub fn get_features(q: &Queue, fid: u8) -> Result<u32, Error> {
    let mut c = Command::new(opcode::GET_FEATURES);
    c.set_cdw(10, u32::from(fid));
    Ok(command(q, c, Payload::None, 0)?.completion.result as u32)
}

/// Set Features Number of Queues for `n` I/O queues; returns how many the
/// controller granted (the smaller of its submission and completion
/// counts).
pub fn set_queue_count(q: &Queue, n: u16) -> Result<u16, Error> {
    let want = u32::from(n.saturating_sub(1));
    let got = set_features(q, feature::NUMBER_OF_QUEUES, want | want << 16)?;
    let granted = (got & 0xffff).min(got >> 16) as u16;
    Ok(granted.saturating_add(1))
}

/// The Keep Alive Timeout the controller runs with, in ms.
pub fn kato(q: &Queue) -> Result<u32, Error> {
    get_features(q, feature::KEEP_ALIVE_TIMER)
}

/// Keep Alive.
pub fn keep_alive(q: &Queue) -> Result<(), Error> {
    command(q, Command::new(opcode::KEEP_ALIVE), Payload::None, 0).map(|_| ())
}

/// Something that has an admin queue and may end.
pub trait Admin: Send + Sync + 'static {
    /// The admin queue.
    fn admin(&self) -> &Queue;
    /// Whether the session has ended (stop sending Keep Alives).
    fn ended(&self) -> &AtomicBool;
}

/// Sends a Keep Alive every `interval` while the session lives; a failing
/// one ends the session (its queue's timeout or error does).
pub fn spawn_keep_alive<A: Admin>(session: Weak<A>, interval: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("fabric-keepalive".into())
        .spawn(move || {
            let mut next = Instant::now() + interval;
            loop {
                std::thread::sleep(KEEP_ALIVE_TICK.min(interval));
                let Some(s) = session.upgrade() else { return };
                if s.ended().load(Ordering::Acquire) {
                    return;
                }
                if Instant::now() < next {
                    continue;
                }
                if let Err(e) = keep_alive(s.admin()) {
                    debug!("fabric initiator: keep alive failed: {e}");
                    return;
                }
                next = Instant::now() + interval;
            }
        })
        .map(|_| ())
}
