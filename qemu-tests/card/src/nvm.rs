//! The NVM I/O command set: Read, Write (FUA), Flush, Write Zeroes and
//! Dataset Management (deallocate), executed against the pool with data
//! moving straight between guest memory (PRPs) and the pool's devices.
//! Every field of a command is checked; a bad one gets a status. Commands
//! on a remote namespace go to its target instead (`remote`), which reads
//! a command's fields with the helpers here.

use dia_abi::card::{self as abi, DsmRange, SubmissionEntry};

use crate::guest_memory::{pod_from_bytes, GuestMemory};
use crate::pool::{Direction, Pool, StorageError};
use crate::prp::prp_segments;

/// Largest data transfer of one command (reported by Identify).
pub const MAX_TRANSFER_BYTES: u32 = 2 << 20;

type Status = u16;

impl From<StorageError> for Status16 {
    fn from(e: StorageError) -> Self {
        Status16(e.status())
    }
}

/// A completion status as an error value.
struct Status16(Status);

/// What a command completes with: its status and its DW0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) status: Status,
    /// Command-specific result (DW0): [`abi::WRITE_RESULT_FLUSHED`] for a
    /// FUA write, else 0.
    pub(crate) result: u32,
}

impl Done {
    fn status(status: Status) -> Self {
        Self { status, result: 0 }
    }
}

/// Executes one I/O command; returns its completion.
pub(crate) fn execute(pool: Option<&Pool>, mem: &GuestMemory, sqe: &SubmissionEntry) -> Done {
    let Some(pool) = pool else {
        // A card without a pool has no I/O command set.
        return Done::status(abi::STATUS_INVALID_OPCODE);
    };
    if sqe.flags != 0 {
        return Done::status(abi::STATUS_INVALID_FIELD);
    }
    let done = match sqe.opcode {
        abi::IO_READ => rw(pool, mem, sqe, Direction::Read),
        abi::IO_WRITE => rw(pool, mem, sqe, Direction::Write),
        abi::IO_FLUSH => flush(pool, sqe).map(|()| 0),
        abi::IO_WRITE_ZEROES => write_zeroes(pool, sqe).map(|()| 0),
        abi::IO_DATASET_MANAGEMENT => dataset_management(pool, mem, sqe).map(|()| 0),
        _ => Err(Status16(abi::STATUS_INVALID_OPCODE)),
    };
    match done {
        Ok(result) => Done {
            status: abi::STATUS_SUCCESS,
            result,
        },
        Err(Status16(s)) => Done::status(s),
    }
}

/// The first block of a Read, Write or Write Zeroes.
pub(crate) fn slba(sqe: &SubmissionEntry) -> u64 {
    abi::StartLba::from_cdw10_cdw11(sqe.cdw10, sqe.cdw11).lba
}

/// The blocks of a Read, Write or Write Zeroes (1..=65536).
pub(crate) fn blocks(sqe: &SubmissionEntry) -> u64 {
    u64::from(abi::IoBlocks::from_cdw12(sqe.cdw12).blocks)
}

/// The ranges of a Dataset Management command, read from the guest
/// memory its PRPs describe.
pub(crate) fn dsm_ranges(mem: &GuestMemory, sqe: &SubmissionEntry) -> Result<Vec<DsmRange>, u16> {
    // At most 256.
    let count = abi::DsmRanges::from_cdw10(sqe.cdw10).ranges as usize;
    let size = std::mem::size_of::<DsmRange>();
    let segs = prp_segments(mem, sqe.prp1, sqe.prp2, count * size)?;
    let mut raw = vec![0u8; count * size];
    let mut off = 0;
    for &(addr, len) in segs.iter() {
        mem.read(addr, &mut raw[off..off + len])
            .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
        off += len;
    }
    Ok(raw.chunks_exact(size).map(pod_from_bytes).collect())
}

fn rw(
    pool: &Pool,
    mem: &GuestMemory,
    sqe: &SubmissionEntry,
    dir: Direction,
) -> Result<u32, Status16> {
    let shift = pool.io_lba_shift(sqe.nsid)?;
    let n = blocks(sqe);
    let len = n << shift;
    if len > u64::from(MAX_TRANSFER_BYTES) {
        return Err(Status16(abi::STATUS_INVALID_FIELD));
    }
    // At most MAX_TRANSFER_BYTES: fits usize.
    let segs = prp_segments(mem, sqe.prp1, sqe.prp2, len as usize).map_err(Status16)?;
    pool.transfer(dir, sqe.nsid, slba(sqe), n, mem, &segs)?;
    if dir == Direction::Write && abi::IoBlocks::from_cdw12(sqe.cdw12).fua {
        // The pool's flush covers every change counted before it: what
        // the card completed before fetching this command, too.
        pool.flush()?;
        return Ok(abi::WRITE_RESULT_FLUSHED);
    }
    Ok(0)
}

fn flush(pool: &Pool, sqe: &SubmissionEntry) -> Result<(), Status16> {
    if sqe.nsid != 0 && sqe.nsid != u32::MAX && pool.namespace(sqe.nsid).is_none() {
        return Err(Status16(abi::STATUS_INVALID_NAMESPACE));
    }
    pool.flush()?;
    Ok(())
}

fn write_zeroes(pool: &Pool, sqe: &SubmissionEntry) -> Result<(), Status16> {
    pool.io_lba_shift(sqe.nsid)?;
    pool.deallocate(sqe.nsid, slba(sqe), blocks(sqe))?;
    Ok(())
}

fn dataset_management(
    pool: &Pool,
    mem: &GuestMemory,
    sqe: &SubmissionEntry,
) -> Result<(), Status16> {
    pool.io_lba_shift(sqe.nsid)?;
    if !abi::DsmAttributes::from_cdw11(sqe.cdw11).deallocate {
        // Only hints (access frequency etc.): nothing to do.
        return Ok(());
    }
    let ranges = dsm_ranges(mem, sqe).map_err(Status16)?;
    // Check every range before changing anything.
    let ns = pool
        .namespace(sqe.nsid)
        .ok_or(Status16(abi::STATUS_INVALID_NAMESPACE))?;
    for r in &ranges {
        let end = r.slba.checked_add(u64::from(r.blocks));
        if end.is_none_or(|e| e > ns.size_blocks) {
            return Err(Status16(abi::STATUS_LBA_OUT_OF_RANGE));
        }
    }
    for r in ranges.iter().filter(|r| r.blocks > 0) {
        pool.deallocate(sqe.nsid, r.slba, u64::from(r.blocks))?;
    }
    Ok(())
}
