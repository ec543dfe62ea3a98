//! NVM commands on an I/O queue of a volume's controller: Read, Write
//! (FUA), Flush, Write Zeroes and Dataset Management (deallocate), on the
//! card's namespace through the same `Pool` calls the local I/O engines
//! make (`transfer`, `flush`, `deallocate`), so a block written over the
//! fabric is the block the local driver reads, and Flush means what a
//! local Flush means. The subsystem's namespace 1 is the card's namespace.

use crate::guest_memory::GuestMemory;
use crate::pool::{Direction, Pool, StorageError};

use super::admin::Outcome;
use super::command::{opcode, status, Command};
use super::MDTS_BYTES;

/// Bytes of one Dataset Management range.
const DSM_RANGE_BYTES: usize = 16;

fn failed(e: &StorageError) -> Outcome {
    Outcome::status(e.status())
}

/// How much data a command says it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLen {
    /// Exactly this many bytes (Read, Write: the blocks).
    Exact(u64),
    /// At least this many (Dataset Management: its ranges; the Linux host
    /// always sends a whole 4 KiB page of them).
    AtLeast(u64),
}

/// The data a command moves, when the command says so itself; the SGL
/// must describe that.
pub fn data_len(
    pool: Option<&Pool>,
    card_nsid: u32,
    cmd: &Command,
) -> Result<Option<DataLen>, u16> {
    match cmd.opcode() {
        opcode::READ | opcode::WRITE => {
            let pool = pool.ok_or(status::NAMESPACE_NOT_READY)?;
            check_nsid(cmd, false)?;
            let shift = pool.io_lba_shift(card_nsid).map_err(|e| e.status())?;
            Ok(Some(DataLen::Exact(cmd.blocks() << shift)))
        }
        opcode::DATASET_MANAGEMENT => Ok(Some(DataLen::AtLeast(
            (u64::from(cmd.cdw(10) & 0xff) + 1) * DSM_RANGE_BYTES as u64,
        ))),
        _ => Ok(None),
    }
}

fn check_nsid(cmd: &Command, broadcast_ok: bool) -> Result<(), u16> {
    match cmd.nsid() {
        1 => Ok(()),
        0xffff_ffff if broadcast_ok => Ok(()),
        _ => Err(status::INVALID_NAMESPACE | status::DNR),
    }
}

/// Executes an NVM command on card namespace `card_nsid`; `data` is the
/// host's data (Write, Dataset Management), `scratch` a buffer of at least
/// [`MDTS_BYTES`] the pool moves data through.
pub fn execute(
    pool: Option<&Pool>,
    card_nsid: u32,
    cmd: &Command,
    data: &[u8],
    scratch: &GuestMemory,
) -> Outcome {
    let Some(pool) = pool else {
        // The firmware is down (restarting): the namespace is not ready.
        return Outcome::status(status::NAMESPACE_NOT_READY);
    };
    let nsid_ok = check_nsid(cmd, cmd.opcode() == opcode::FLUSH);
    if let Err(s) = nsid_ok {
        return Outcome::status(s);
    }
    match cmd.opcode() {
        opcode::READ => read(pool, card_nsid, cmd, scratch),
        opcode::WRITE => write(pool, card_nsid, cmd, data, scratch),
        opcode::FLUSH => match pool.flush() {
            Ok(()) => Outcome::ok(),
            Err(e) => failed(&e),
        },
        opcode::WRITE_ZEROES => {
            let done = pool
                .io_lba_shift(card_nsid)
                .and_then(|_| pool.deallocate(card_nsid, cmd.slba(), cmd.blocks()));
            match done {
                Ok(()) => Outcome::ok(),
                Err(e) => failed(&e),
            }
        }
        opcode::DATASET_MANAGEMENT => deallocate(pool, card_nsid, cmd, data),
        _ => Outcome::status(status::INVALID_OPCODE | status::DNR),
    }
}

/// The transfer's length, if it fits the scratch buffer (MDTS).
fn length(pool: &Pool, card_nsid: u32, cmd: &Command) -> Result<usize, Outcome> {
    let shift = pool.io_lba_shift(card_nsid).map_err(|e| failed(&e))?;
    let len = cmd.blocks() << shift;
    if len > u64::from(MDTS_BYTES) {
        return Err(Outcome::status(status::INVALID_FIELD | status::DNR));
    }
    // At most MDTS_BYTES.
    Ok(len as usize)
}

fn read(pool: &Pool, card_nsid: u32, cmd: &Command, scratch: &GuestMemory) -> Outcome {
    let len = match length(pool, card_nsid, cmd) {
        Ok(l) => l,
        Err(o) => return o,
    };
    if let Err(e) = pool.transfer(
        Direction::Read,
        card_nsid,
        cmd.slba(),
        cmd.blocks(),
        scratch,
        &[(0, len)],
    ) {
        return failed(&e);
    }
    let mut out = vec![0u8; len];
    match scratch.read(0, &mut out) {
        Ok(()) => Outcome::data(out),
        Err(_) => Outcome::status(status::INTERNAL_ERROR),
    }
}

fn write(
    pool: &Pool,
    card_nsid: u32,
    cmd: &Command,
    data: &[u8],
    scratch: &GuestMemory,
) -> Outcome {
    let len = match length(pool, card_nsid, cmd) {
        Ok(l) => l,
        Err(o) => return o,
    };
    if data.len() != len {
        return Outcome::status(status::SGL_LENGTH_INVALID | status::DNR);
    }
    if scratch.write(0, data).is_err() {
        return Outcome::status(status::INTERNAL_ERROR);
    }
    let done = pool
        .transfer(
            Direction::Write,
            card_nsid,
            cmd.slba(),
            cmd.blocks(),
            scratch,
            &[(0, len)],
        )
        .and_then(|()| if cmd.fua() { pool.flush() } else { Ok(()) });
    match done {
        Ok(()) => Outcome::ok(),
        Err(e) => failed(&e),
    }
}

fn deallocate(pool: &Pool, card_nsid: u32, cmd: &Command, data: &[u8]) -> Outcome {
    if let Err(e) = pool.io_lba_shift(card_nsid) {
        return failed(&e);
    }
    // Attribute Deallocate (bit 2); other attributes are hints.
    if cmd.cdw(11) & (1 << 2) == 0 {
        return Outcome::ok();
    }
    let count = (cmd.cdw(10) & 0xff) as usize + 1;
    if data.len() < count * DSM_RANGE_BYTES {
        return Outcome::status(status::SGL_LENGTH_INVALID | status::DNR);
    }
    let Some(ns) = pool.namespace(card_nsid) else {
        return Outcome::status(status::INVALID_NAMESPACE | status::DNR);
    };
    let ranges: Vec<(u64, u64)> = data[..count * DSM_RANGE_BYTES]
        .chunks_exact(DSM_RANGE_BYTES)
        .map(|r| {
            let nlb = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            let mut slba = [0u8; 8];
            slba.copy_from_slice(&r[8..16]);
            (u64::from_le_bytes(slba), u64::from(nlb))
        })
        .collect();
    // Every range is checked before anything changes.
    if ranges
        .iter()
        .any(|&(s, n)| s.checked_add(n).is_none_or(|e| e > ns.size_blocks))
    {
        return Outcome::status(status::LBA_OUT_OF_RANGE | status::DNR);
    }
    for &(s, n) in ranges.iter().filter(|r| r.1 > 0) {
        if let Err(e) = pool.deallocate(card_nsid, s, n) {
            return failed(&e);
        }
    }
    Outcome::ok()
}
