//! The card's flash pool: one or more backing files or block devices, carved
//! into 1 MiB chunks that thin-provisioned namespaces get on first write.
//! This file holds the types and the `Pool` handle; its parts: `format`
//! (on-disk label and metadata slots), `open` (opening, formatting,
//! recovery), `namespaces` (the namespace commands, and the table entries
//! of remote namespaces, whose data is not in the pool), `allocator` (chunks
//! handed out, freed and punched), `data` (transfers, deallocate, flush and
//! commit), `error`, and `fuzzing` (the fuzz targets' hooks).
//!
//! On-disk layout (all little-endian; see docs/card-interface.md):
//! - every device starts with a 4 KiB label: magic `DIAPOOL1`, the pool's
//!   id, the device's index and the device count, chunk size, where data
//!   starts and how many chunks the device holds, and a CRC32;
//! - device 0 then holds two metadata slots. A commit writes the whole
//!   metadata (namespaces and their chunk maps) with a generation number and
//!   a CRC over the slot's header and payload to the slot the previous
//!   commit did not use, then syncs. Opening takes the valid slot with the
//!   highest generation, so a crash mid-commit (or a damaged slot, header
//!   included) falls back to the previous one;
//! - data chunks follow, device after device.
//!
//! Crash safety. Data goes to the devices with positional writes (the host's
//! page cache is the card's volatile write cache); a flush syncs the data,
//! then commits the metadata if it changed. A chunk freed by a discard is
//! only handed out again after a commit that no longer maps it, so a crash
//! can never leave two namespaces mapping one chunk.
//!
//! Isolation: unwritten blocks of every namespace read as zeroes, whoever
//! had the chunk before. Chunks a discard or a delete frees are punched at
//! once. That is not enough on its own: a chunk allocated and written but
//! not yet committed is free again after a crash (the committed metadata
//! never mapped it) and still holds what was written; so do the chunks of a
//! block device that held something else before it was formatted (only its
//! label is checked for blank). So the pool keeps, per chunk, whether this
//! run of the card knows it is zero (`State::clean`: punched since the pool
//! was opened), and punches every other chunk when it allocates it, before
//! the chunk is mapped and under the state lock, so no read can see it
//! first. This costs one hole punch per chunk per run, only for chunks that
//! are actually allocated (a metadata operation on a file; a discard or
//! zero-out on a block device, or 1 MiB of zeroes where neither works), and
//! needs no on-disk state. Zeroing every free chunk at open instead would
//! cost time proportional to the free space on every start, and telling a
//! clean stop from a crash would need a marker that a crash between its
//! write and the next allocation could still get wrong.

mod allocator;
mod chunk_map;
mod data;
mod error;
mod format;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod mirror;
mod namespaces;
mod open;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use dia_abi::card as abi;

use chunk_map::ChunkMap;
pub use error::{OpenError, StorageError};
pub use mirror::{regions_of, MirrorRecord, PlexRecord, RegionSet};

/// log2 of the allocation unit (1 MiB).
pub const CHUNK_SHIFT: u32 = 20;
/// Allocation unit in bytes.
pub const CHUNK_BYTES: u64 = 1 << CHUNK_SHIFT;
/// Most namespaces a pool holds.
pub const MAX_NAMESPACES: u32 = 128;

/// Which devices make the pool, and whether to create missing files.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// Backing files or block devices, in any order.
    pub paths: Vec<PathBuf>,
    /// Size for files that do not exist yet or are empty (sparse).
    pub create_bytes: Option<u64>,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Device to guest memory.
    Read,
    /// Guest memory to device.
    Write,
}

/// A namespace as the pool keeps it.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// Size in logical blocks.
    pub size_blocks: u64,
    /// log2 of the logical block size.
    pub lba_shift: u8,
    /// Whether I/O is accepted.
    pub attached: bool,
    /// The owner's label.
    pub label: [u8; abi::LABEL_LEN],
    /// Service level.
    pub qos: abi::QosSettings,
    /// Where the data is when it is not in the pool: a remote namespace
    /// (`None`: a namespace of the pool, in its chunks).
    pub remote: Option<Remote>,
    /// A mirrored namespace's table (its data is on its plexes, reached
    /// through `crate::mirror`; `None` for the other kinds). Never both
    /// this and `remote`.
    pub mirror: Option<MirrorRecord>,
    /// A local namespace that is a plex of a mirror: what that mirror last
    /// told it (`abi::ADMIN_SET_PLEX_RECORD`; all zero otherwise, and
    /// always for the other kinds).
    pub plex_record: abi::PlexRecord,
    /// Logical chunk -> physical chunk, for allocated chunks only (always
    /// empty for a remote namespace).
    map: ChunkMap,
}

/// A remote namespace's target as the pool keeps it: the table entry of a
/// namespace whose data lives behind an NVMe/TCP target (the card's I/O
/// path reaches it through `crate::remote`; the pool moves none of its
/// data and gives it no chunks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remote {
    /// Where the data is (checked: `RemoteTarget::validate` holds).
    pub target: abi::RemoteTarget,
    /// The remote namespace said deallocated blocks read as zeroes (when
    /// it was created).
    pub deallocated_reads_zeroes: bool,
}

impl Namespace {
    /// Chunks allocated to this namespace.
    pub fn allocated_chunks(&self) -> u64 {
        self.map.len() as u64
    }

    fn check_range(&self, nsid: u32, slba: u64, blocks: u64) -> Result<(u64, u64), StorageError> {
        match slba.checked_add(blocks) {
            Some(end) if blocks > 0 && end <= self.size_blocks => {
                Ok((slba << self.lba_shift, blocks << self.lba_shift))
            }
            _ => {
                let _ = nsid;
                Err(StorageError::OutOfRange { slba, blocks })
            }
        }
    }

    /// The namespace's data is in the pool: the data path may move it. A
    /// remote (or mirrored) namespace's I/O goes to its target(s), never to
    /// the pool's devices (reaching here with one is a card bug, refused).
    fn local(&self, nsid: u32) -> Result<&Self, StorageError> {
        if self.is_local() {
            Ok(self)
        } else {
            Err(StorageError::Remote(nsid))
        }
    }

    /// Whether its data is in the pool's chunks (neither remote nor
    /// mirrored).
    pub fn is_local(&self) -> bool {
        self.remote.is_none() && self.mirror.is_none()
    }
}

/// Pool usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Data capacity in bytes.
    pub total_bytes: u64,
    /// Bytes allocated to namespaces.
    pub used_bytes: u64,
    /// Namespaces.
    pub namespaces: u32,
}

#[derive(Debug)]
struct Device {
    path: PathBuf,
    file: File,
    data_offset: u64,
    first_chunk: u32,
    chunks: u32,
}

#[derive(Debug, Default)]
struct State {
    namespaces: BTreeMap<u32, Namespace>,
    /// Chunks free on disk: no committed metadata maps them.
    free: Vec<u32>,
    /// Chunks unmapped since the last commit (reusable after the next).
    pending_free: Vec<u32>,
    /// Per chunk: known to read as zeroes (punched since the pool was
    /// opened and not allocated since). Other free chunks may hold data
    /// written before a crash; allocation zeroes them first.
    clean: Vec<bool>,
    /// Metadata changed since the last commit.
    dirty: bool,
}

impl State {
    /// A namespace I/O may use: it exists and is attached.
    fn attached(&self, nsid: u32) -> Result<&Namespace, StorageError> {
        attached(nsid, self.namespaces.get(&nsid))
    }
}

/// `ns`, the namespace `nsid` looked up (shared or mutable), if I/O may use
/// it: it exists and is attached. The rule of [`State::attached`], for a
/// caller that borrows only the namespace map so it can change the rest of
/// the state meanwhile.
fn attached<N: std::ops::Deref<Target = Namespace>>(
    nsid: u32,
    ns: Option<N>,
) -> Result<N, StorageError> {
    let ns = ns.ok_or(StorageError::NoNamespace(nsid))?;
    if !ns.attached {
        return Err(StorageError::NotReady(nsid));
    }
    Ok(ns)
}

/// An open pool.
#[derive(Debug)]
pub struct Pool {
    devices: Vec<Device>,
    total_chunks: u32,
    slot_bytes: u64,
    state: RwLock<State>,
    /// Generation of the last durable metadata; held while committing.
    commit: Mutex<u64>,
    /// Data changes (writes, deallocations) completed so far: a count each
    /// bumps once it has reached the pool's files.
    written: AtomicU64,
    /// The value of `written` the last successful flush read before it
    /// synced: every change counted up to it is durable. A flush whose
    /// changes are all covered returns without a host sync, so a FUA write
    /// and the flush the guest sends after it cost one sync, and flushes
    /// that waited on the commit lock while another synced share its sync
    /// (group commit).
    synced: AtomicU64,
    /// Host syncs of the data the flushes made (for tests and benchmarks).
    syncs: AtomicU64,
}

impl Pool {
    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Capacity and use.
    pub fn usage(&self) -> PoolUsage {
        let st = self.read_state();
        let used: u64 = st
            .namespaces
            .values()
            .map(Namespace::allocated_chunks)
            .sum();
        PoolUsage {
            total_bytes: u64::from(self.total_chunks) * CHUNK_BYTES,
            used_bytes: used * CHUNK_BYTES,
            namespaces: st.namespaces.len() as u32,
        }
    }
}
