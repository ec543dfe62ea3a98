//! The card's flash pool: one or more backing files or block devices, carved
//! into 1 MiB chunks that thin-provisioned namespaces get on first write.
//!
//! On-disk layout (all little-endian; see docs/card-interface.md):
//! - every device starts with a 4 KiB label: magic `DIAPOOL1`, the pool's
//!   id, the device's index and the device count, chunk size, where data
//!   starts and how many chunks the device holds, and a CRC32;
//! - device 0 then holds two metadata slots. A commit writes the whole
//!   metadata (namespaces and their chunk maps) with a generation number and
//!   a CRC to the slot the previous commit did not use, then syncs. Opening
//!   takes the valid slot with the highest generation, so a crash mid-commit
//!   falls back to the previous one;
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

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use dia_abi::card as abi;
use thiserror::Error;
use tracing::{info, warn};

use crate::guest_memory::{GuestMemory, MemoryError};

/// log2 of the allocation unit (1 MiB).
pub const CHUNK_SHIFT: u32 = 20;
/// Allocation unit in bytes.
pub const CHUNK_BYTES: u64 = 1 << CHUNK_SHIFT;
/// Most namespaces a pool holds.
pub const MAX_NAMESPACES: u32 = 128;
const LABEL_BYTES: u64 = 4096;
const LABEL_MAGIC: &[u8; 8] = b"DIAPOOL1";
const META_MAGIC: &[u8; 8] = b"DIAMETA1";
const FORMAT_VERSION: u32 = 2;
/// magic, generation, payload length, payload CRC32.
const META_HEADER: usize = 8 + 8 + 4 + 4;
/// nsid, lba_shift, attached, pad, size_blocks, label, QoS, map length.
const NS_RECORD: usize = 4 + 1 + 1 + 2 + 8 + abi::LABEL_LEN + QOS_RECORD + 4;
/// min/max IOPS, min/max bytes/s, weight, burst.
const QOS_RECORD: usize = 4 * 8 + 4 + 4;

/// Why a pool operation failed. Each maps to one card status.
#[derive(Debug, Error)]
pub enum StorageError {
    /// No such namespace.
    #[error("namespace {0} does not exist")]
    NoNamespace(u32),
    /// I/O to a namespace that is not attached.
    #[error("namespace {0} is not attached")]
    NotReady(u32),
    /// Attach of an attached namespace.
    #[error("namespace {0} is already attached")]
    AlreadyAttached(u32),
    /// Detach of a detached namespace.
    #[error("namespace {0} is not attached")]
    NotAttached(u32),
    /// Delete of an attached namespace.
    #[error("namespace {0} is attached")]
    AttachedDelete(u32),
    /// Every namespace id is taken.
    #[error("all {MAX_NAMESPACES} namespace ids are in use")]
    NoFreeId,
    /// Unsupported block size.
    #[error("block size 2^{0} is not supported")]
    BadFormat(u8),
    /// Zero or too large a size.
    #[error("namespace size {0} blocks is not allowed")]
    BadSize(u64),
    /// Blocks outside the namespace.
    #[error("blocks {slba}+{blocks} are outside the namespace")]
    OutOfRange {
        /// First block.
        slba: u64,
        /// Block count.
        blocks: u64,
    },
    /// No free chunk for a write.
    #[error("the pool is full")]
    PoolFull,
    /// A guest address outside guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The backing store failed.
    #[error("pool I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// The completion status the card reports for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoNamespace(_) => abi::STATUS_INVALID_NAMESPACE,
            Self::NotReady(_) => abi::STATUS_NAMESPACE_NOT_READY,
            Self::AlreadyAttached(_) => abi::STATUS_NS_ALREADY_ATTACHED,
            Self::NotAttached(_) => abi::STATUS_NS_NOT_ATTACHED,
            Self::AttachedDelete(_) => abi::STATUS_NS_ATTACHED_DELETE,
            Self::NoFreeId => abi::STATUS_NS_ID_UNAVAILABLE,
            Self::BadFormat(_) => abi::STATUS_INVALID_FORMAT,
            Self::BadSize(_) => abi::STATUS_NS_INSUFFICIENT_CAPACITY,
            Self::OutOfRange { .. } => abi::STATUS_LBA_OUT_OF_RANGE,
            Self::PoolFull => abi::STATUS_CAPACITY_EXCEEDED,
            Self::Memory(_) => abi::STATUS_DATA_TRANSFER_ERROR,
            Self::Io(_) => abi::STATUS_INTERNAL_ERROR,
        }
    }
}

/// Why a pool cannot be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// A device could not be opened, sized or read.
    #[error("{path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The devices do not make a valid pool.
    #[error("{0}")]
    Invalid(String),
}

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
    /// Logical chunk -> physical chunk, for allocated chunks only.
    map: HashMap<u32, u32>,
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

/// An open pool.
#[derive(Debug)]
pub struct Pool {
    devices: Vec<Device>,
    total_chunks: u32,
    slot_bytes: u64,
    state: RwLock<State>,
    /// Generation of the last durable metadata; held while committing.
    commit: Mutex<u64>,
}

fn invalid(msg: String) -> OpenError {
    OpenError::Invalid(msg)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

fn slot_bytes_for(total_chunks: u64) -> u64 {
    let max =
        META_HEADER as u64 + 4 + u64::from(MAX_NAMESPACES) * NS_RECORD as u64 + total_chunks * 8;
    align_up(max, 4096)
}

/// Fixed-size little-endian fields of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Label {
    pool_id: u64,
    index: u32,
    count: u32,
    device_bytes: u64,
    data_offset: u64,
    chunks: u32,
    slot_bytes: u64,
}

impl Label {
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(LABEL_BYTES as usize);
        b.extend_from_slice(LABEL_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&CHUNK_SHIFT.to_le_bytes());
        b.extend_from_slice(&self.pool_id.to_le_bytes());
        b.extend_from_slice(&self.index.to_le_bytes());
        b.extend_from_slice(&self.count.to_le_bytes());
        b.extend_from_slice(&self.device_bytes.to_le_bytes());
        b.extend_from_slice(&self.data_offset.to_le_bytes());
        b.extend_from_slice(&self.chunks.to_le_bytes());
        b.extend_from_slice(&self.slot_bytes.to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.resize(LABEL_BYTES as usize, 0);
        b
    }

    /// `None`: no label (blank); `Err`: a damaged or foreign label.
    fn decode(b: &[u8]) -> Result<Option<Self>, String> {
        if b.iter().all(|&x| x == 0) {
            return Ok(None);
        }
        if &b[..8] != LABEL_MAGIC {
            return Err("not a dia pool device (no DIAPOOL1 label) and not blank".into());
        }
        let mut r = Reader::new(&b[8..]);
        let version = r.u32();
        let shift = r.u32();
        let label = Self {
            pool_id: r.u64(),
            index: r.u32(),
            count: r.u32(),
            device_bytes: r.u64(),
            data_offset: r.u64(),
            chunks: r.u32(),
            slot_bytes: r.u64(),
        };
        let body = 8 + r.pos;
        let crc = Reader::new(&b[body..]).u32();
        if crc32fast::hash(&b[..body]) != crc {
            return Err("pool label checksum mismatch (damaged label)".into());
        }
        if version != FORMAT_VERSION || shift != CHUNK_SHIFT {
            return Err(format!(
                "pool format {version} with chunk shift {shift}; this card reads format {FORMAT_VERSION}, shift {CHUNK_SHIFT}"
            ));
        }
        Ok(Some(label))
    }
}

/// A little-endian cursor over a byte slice that reads zeroes past the end
/// (callers check lengths before trusting values).
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self { b, pos: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = self.b.get(self.pos..self.pos + N) {
            out.copy_from_slice(s);
        }
        self.pos += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn overrun(&self) -> bool {
        self.pos > self.b.len()
    }
}

fn encode_meta(namespaces: &BTreeMap<u32, Namespace>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(namespaces.len() as u32).to_le_bytes());
    for (&nsid, ns) in namespaces {
        b.extend_from_slice(&nsid.to_le_bytes());
        b.push(ns.lba_shift);
        b.push(u8::from(ns.attached));
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&ns.size_blocks.to_le_bytes());
        b.extend_from_slice(&ns.label);
        let q = &ns.qos;
        for v in [q.min_iops, q.max_iops, q.min_bytes_per_s, q.max_bytes_per_s] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&q.weight.to_le_bytes());
        b.extend_from_slice(&q.burst_ms.to_le_bytes());
        b.extend_from_slice(&(ns.map.len() as u32).to_le_bytes());
        let mut map: Vec<(u32, u32)> = ns.map.iter().map(|(&l, &p)| (l, p)).collect();
        map.sort_unstable();
        for (l, p) in map {
            b.extend_from_slice(&l.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
        }
    }
    b
}

fn decode_meta(b: &[u8], total_chunks: u32) -> Result<BTreeMap<u32, Namespace>, String> {
    let mut r = Reader::new(b);
    let count = r.u32();
    if count > MAX_NAMESPACES {
        return Err(format!("{count} namespaces"));
    }
    let mut used = vec![false; total_chunks as usize];
    let mut out = BTreeMap::new();
    for _ in 0..count {
        let nsid = r.u32();
        let lba_shift = r.u8();
        let attached = r.u8() != 0;
        let _pad = r.u16();
        let size_blocks = r.u64();
        let label = r.take::<{ abi::LABEL_LEN }>();
        let qos = abi::QosSettings {
            min_iops: r.u64(),
            max_iops: r.u64(),
            min_bytes_per_s: r.u64(),
            max_bytes_per_s: r.u64(),
            weight: r.u32(),
            burst_ms: r.u32(),
        };
        let n = r.u32();
        if nsid == 0 || nsid > MAX_NAMESPACES || out.contains_key(&nsid) {
            return Err(format!("bad namespace id {nsid}"));
        }
        // As create_namespace checks it: `checked_shl` only checks the
        // shift amount, so a size whose bytes overflow u64 (and wrap below
        // the limit) must be refused by its block count.
        if !(abi::LBA_SHIFT_MIN..=abi::LBA_SHIFT_MAX).contains(&lba_shift)
            || size_blocks == 0
            || size_blocks > u64::MAX >> lba_shift
            || (size_blocks << lba_shift) > abi::NAMESPACE_MAX_BYTES
        {
            return Err(format!("namespace {nsid}: bad geometry"));
        }
        let logical_chunks = (size_blocks << lba_shift).div_ceil(CHUNK_BYTES);
        if u64::from(n) > u64::from(total_chunks) {
            return Err(format!("namespace {nsid}: {n} chunks"));
        }
        let mut map = HashMap::with_capacity(n as usize);
        for _ in 0..n {
            let (l, p) = (r.u32(), r.u32());
            if u64::from(l) >= logical_chunks || p >= total_chunks || used[p as usize] {
                return Err(format!("namespace {nsid}: bad chunk mapping {l}->{p}"));
            }
            used[p as usize] = true;
            if map.insert(l, p).is_some() {
                return Err(format!("namespace {nsid}: chunk {l} mapped twice"));
            }
        }
        if r.overrun() {
            return Err("truncated".into());
        }
        out.insert(
            nsid,
            Namespace {
                size_blocks,
                lba_shift,
                attached,
                label,
                qos,
                map,
            },
        );
    }
    Ok(out)
}

fn open_device(path: &Path, create_bytes: Option<u64>) -> Result<(File, u64), OpenError> {
    let exists = path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create_bytes.is_some())
        .truncate(false)
        .open(path)
        .map_err(io_err(path))?;
    let mut size = file.seek(SeekFrom::End(0)).map_err(io_err(path))?;
    if size == 0 {
        match create_bytes {
            Some(bytes) => {
                file.set_len(bytes).map_err(io_err(path))?;
                size = bytes;
                info!(path = %path.display(), bytes, created = !exists, "pool device sized (sparse)");
            }
            None => {
                return Err(invalid(format!(
                    "{} is empty; give --pool-size to size it",
                    path.display()
                )))
            }
        }
    }
    Ok((file, size))
}

fn punch(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            n,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    // No hole punching here (some block devices): write zeroes instead.
    let zeroes = vec![0u8; 64 << 10];
    let mut done = 0u64;
    while done < len {
        let step = (len - done).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..step], offset + done)?;
        done += step as u64;
    }
    Ok(())
}

/// Runs a vectored positional transfer to completion.
fn transfer_all(
    file: &File,
    dir: Direction,
    iovs: &mut [libc::iovec],
    mut offset: u64,
) -> std::io::Result<()> {
    let mut first = 0usize;
    while first < iovs.len() {
        let rest = &mut iovs[first..];
        let cnt = rest.len().min(1024) as i32;
        let off =
            i64::try_from(offset).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: every iovec points into live guest memory (bounds checked
        // by GuestMemory::dma_ptr) for its length; the kernel copies to or
        // from it; no Rust reference to that memory exists.
        let n = unsafe {
            match dir {
                Direction::Read => libc::preadv(file.as_raw_fd(), rest.as_ptr(), cnt, off),
                Direction::Write => libc::pwritev(file.as_raw_fd(), rest.as_ptr(), cnt, off),
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short transfer at the end of a pool device",
            ));
        }
        let mut n = n as usize;
        offset += n as u64;
        while n > 0 && first < iovs.len() {
            let v = &mut iovs[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                // SAFETY: advancing inside the same iovec's buffer.
                v.iov_base = unsafe { v.iov_base.cast::<u8>().add(n) }.cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

impl Pool {
    /// Opens the pool on `spec`'s devices, formatting them if they are all
    /// blank, and recovers the last committed metadata.
    pub fn open(spec: &PoolSpec) -> Result<Self, OpenError> {
        if spec.paths.is_empty() {
            return Err(invalid("a pool needs at least one device".into()));
        }
        let mut opened = Vec::new();
        for path in &spec.paths {
            let (file, size) = open_device(path, spec.create_bytes)?;
            let mut raw = vec![0u8; LABEL_BYTES as usize];
            if size >= LABEL_BYTES {
                file.read_exact_at(&mut raw, 0).map_err(io_err(path))?;
            }
            let label =
                Label::decode(&raw).map_err(|why| invalid(format!("{}: {why}", path.display())))?;
            opened.push((path.clone(), file, size, label));
        }
        let blank = opened.iter().filter(|d| d.3.is_none()).count();
        if blank == opened.len() {
            Self::format(&mut opened)?;
        } else if blank > 0 {
            return Err(invalid(
                "some pool devices are blank and some are labelled: give exactly the devices of one pool".into(),
            ));
        }
        Self::assemble(opened)
    }

    fn format(devs: &mut [(PathBuf, File, u64, Option<Label>)]) -> Result<(), OpenError> {
        let pool_id = {
            let mut b = [0u8; 8];
            // A random id tells pools apart; time and pid are a fallback.
            let random = File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
            if random.is_err() || b == [0; 8] {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1);
                b = (t ^ u64::from(std::process::id())).to_le_bytes();
            }
            u64::from_le_bytes(b)
        };
        // Chunks per device first (device 0 also holds the metadata slots,
        // whose size depends on the total chunk count: iterate once).
        let rough: u64 = devs.iter().map(|d| d.2 / CHUNK_BYTES).sum();
        let slot_bytes = slot_bytes_for(rough);
        let count = devs.len() as u32;
        let mut total = 0u64;
        for (i, d) in devs.iter_mut().enumerate() {
            let meta = if i == 0 { 2 * slot_bytes } else { 0 };
            let data_offset = align_up(LABEL_BYTES + meta, CHUNK_BYTES);
            let chunks = d.2.saturating_sub(data_offset) / CHUNK_BYTES;
            if chunks == 0 {
                return Err(invalid(format!(
                    "{} ({} bytes) is too small for a pool device: it needs at least {} bytes",
                    d.0.display(),
                    d.2,
                    data_offset + CHUNK_BYTES
                )));
            }
            total += chunks;
            d.3 = Some(Label {
                pool_id,
                index: i as u32,
                count,
                device_bytes: d.2,
                data_offset,
                chunks: u32::try_from(chunks).map_err(|_| invalid("device too large".into()))?,
                slot_bytes,
            });
        }
        if total > u64::from(u32::MAX) {
            return Err(invalid("pool too large".into()));
        }
        // Empty metadata in both slots (generation 0 and 1), then labels.
        let empty = encode_meta(&BTreeMap::new());
        let (path0, file0) = (&devs[0].0, &devs[0].1);
        for generation in 0..2u64 {
            write_slot(file0, slot_bytes, generation, &empty).map_err(io_err(path0))?;
        }
        for d in devs.iter() {
            if let Some(label) = &d.3 {
                d.1.write_all_at(&label.encode(), 0).map_err(io_err(&d.0))?;
                d.1.sync_all().map_err(io_err(&d.0))?;
            }
        }
        info!(
            devices = count,
            chunks = total,
            pool_id = format!("{pool_id:016x}"),
            "pool formatted"
        );
        Ok(())
    }

    fn assemble(opened: Vec<(PathBuf, File, u64, Option<Label>)>) -> Result<Self, OpenError> {
        let mut devs: Vec<(PathBuf, File, u64, Label)> = opened
            .into_iter()
            .filter_map(|(p, f, s, l)| l.map(|l| (p, f, s, l)))
            .collect();
        devs.sort_by_key(|d| d.3.index);
        let first = devs[0].3;
        for (i, d) in devs.iter().enumerate() {
            let l = &d.3;
            if l.pool_id != first.pool_id {
                return Err(invalid(format!(
                    "{} belongs to another pool ({:016x}, not {:016x})",
                    d.0.display(),
                    l.pool_id,
                    first.pool_id
                )));
            }
            if l.count as usize != devs.len() || l.index as usize != i {
                return Err(invalid(format!(
                    "the pool has {} devices; {} given (device {} of the pool is missing or repeated)",
                    l.count,
                    devs.len(),
                    i
                )));
            }
            if d.2 < l.device_bytes {
                return Err(invalid(format!(
                    "{} shrank from {} to {} bytes",
                    d.0.display(),
                    l.device_bytes,
                    d.2
                )));
            }
        }
        let mut devices = Vec::new();
        let mut next = 0u32;
        for (path, file, _, l) in devs {
            devices.push(Device {
                path,
                file,
                data_offset: l.data_offset,
                first_chunk: next,
                chunks: l.chunks,
            });
            next += l.chunks;
        }
        let total_chunks = next;
        let slot_bytes = first.slot_bytes;
        if slot_bytes < slot_bytes_for(u64::from(total_chunks)) {
            return Err(invalid("pool label: metadata slots too small".into()));
        }
        // The newest valid metadata slot.
        let mut best: Option<(u64, BTreeMap<u32, Namespace>)> = None;
        for slot in 0..2u64 {
            let mut raw = vec![0u8; slot_bytes as usize];
            let dev0 = &devices[0];
            dev0.file
                .read_exact_at(&mut raw, LABEL_BYTES + slot * slot_bytes)
                .map_err(io_err(&dev0.path))?;
            match read_slot(&raw, slot, total_chunks) {
                Ok((generation, ns)) => {
                    if best.as_ref().is_none_or(|b| generation > b.0) {
                        best = Some((generation, ns));
                    }
                }
                Err(why) => warn!(slot, "metadata slot not usable: {why}"),
            }
        }
        let (generation, namespaces) =
            best.ok_or_else(|| invalid("both metadata slots of the pool are damaged".into()))?;
        let mut used = vec![false; total_chunks as usize];
        for ns in namespaces.values() {
            for &p in ns.map.values() {
                used[p as usize] = true;
            }
        }
        // Lowest chunks first: `free` is popped from its end.
        let free: Vec<u32> = (0..total_chunks)
            .rev()
            .filter(|&c| !used[c as usize])
            .collect();
        info!(
            generation,
            namespaces = namespaces.len(),
            chunks = total_chunks,
            free = free.len(),
            "pool opened"
        );
        Ok(Self {
            devices,
            total_chunks,
            slot_bytes,
            state: RwLock::new(State {
                namespaces,
                free,
                pending_free: Vec::new(),
                clean: vec![false; total_chunks as usize],
                dirty: false,
            }),
            commit: Mutex::new(generation),
        })
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
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

    /// A namespace's state.
    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.read_state().namespaces.get(&nsid).cloned()
    }

    /// Namespace ids above `after`, ascending (all, or attached only).
    pub fn namespace_ids(&self, after: u32, attached_only: bool) -> Vec<u32> {
        self.read_state()
            .namespaces
            .range(after.saturating_add(1)..)
            .filter(|(_, ns)| ns.attached || !attached_only)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Creates a thin namespace (nothing allocated) and commits; returns its id.
    pub fn create_namespace(
        &self,
        size_blocks: u64,
        lba_shift: u8,
        label: [u8; abi::LABEL_LEN],
    ) -> Result<u32, StorageError> {
        if !(abi::LBA_SHIFT_MIN..=abi::LBA_SHIFT_MAX).contains(&lba_shift) {
            return Err(StorageError::BadFormat(lba_shift));
        }
        let bytes = size_blocks
            .checked_shl(u32::from(lba_shift))
            .unwrap_or(u64::MAX);
        if size_blocks == 0
            || size_blocks > u64::MAX >> lba_shift
            || bytes > abi::NAMESPACE_MAX_BYTES
        {
            return Err(StorageError::BadSize(size_blocks));
        }
        let nsid = {
            let mut st = self.write_state();
            let nsid = (1..=MAX_NAMESPACES)
                .find(|id| !st.namespaces.contains_key(id))
                .ok_or(StorageError::NoFreeId)?;
            st.namespaces.insert(
                nsid,
                Namespace {
                    size_blocks,
                    lba_shift,
                    attached: false,
                    label,
                    qos: abi::QosSettings::default(),
                    map: HashMap::new(),
                },
            );
            st.dirty = true;
            nsid
        };
        self.flush()?;
        Ok(nsid)
    }

    /// Deletes a detached namespace; its chunks return to the pool.
    pub fn delete_namespace(&self, nsid: u32) -> Result<(), StorageError> {
        {
            let mut st = self.write_state();
            let ns = st
                .namespaces
                .get(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            if ns.attached {
                return Err(StorageError::AttachedDelete(nsid));
            }
            let ns = st
                .namespaces
                .remove(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            for &p in ns.map.values() {
                self.punch_chunk(p)?;
                st.clean[p as usize] = true;
                st.pending_free.push(p);
            }
            st.dirty = true;
        }
        self.flush()
    }

    /// Attaches (`true`) or detaches a namespace, and commits.
    pub fn set_attached(&self, nsid: u32, attach: bool) -> Result<(), StorageError> {
        {
            let mut st = self.write_state();
            let ns = st
                .namespaces
                .get_mut(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            match (ns.attached, attach) {
                (true, true) => return Err(StorageError::AlreadyAttached(nsid)),
                (false, false) => return Err(StorageError::NotAttached(nsid)),
                _ => ns.attached = attach,
            }
            st.dirty = true;
        }
        self.flush()
    }

    /// Sets a namespace's service level and commits.
    pub fn set_qos(&self, nsid: u32, qos: abi::QosSettings) -> Result<(), StorageError> {
        {
            let mut st = self.write_state();
            let ns = st
                .namespaces
                .get_mut(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            ns.qos = qos;
            st.dirty = true;
        }
        self.flush()
    }

    /// Every namespace's service level.
    pub fn all_qos(&self) -> Vec<(u32, abi::QosSettings)> {
        self.read_state()
            .namespaces
            .iter()
            .map(|(&id, ns)| (id, ns.qos))
            .collect()
    }

    /// log2 of the block size of an attached namespace.
    pub fn io_lba_shift(&self, nsid: u32) -> Result<u8, StorageError> {
        let st = self.read_state();
        let ns = st
            .namespaces
            .get(&nsid)
            .ok_or(StorageError::NoNamespace(nsid))?;
        if !ns.attached {
            return Err(StorageError::NotReady(nsid));
        }
        Ok(ns.lba_shift)
    }

    fn locate(&self, chunk: u32) -> Option<(&Device, u64)> {
        let i = self
            .devices
            .partition_point(|d| d.first_chunk + d.chunks <= chunk);
        let d = self.devices.get(i)?;
        (chunk >= d.first_chunk).then(|| {
            (
                d,
                d.data_offset + (u64::from(chunk - d.first_chunk) << CHUNK_SHIFT),
            )
        })
    }

    fn punch_chunk(&self, chunk: u32) -> Result<(), StorageError> {
        self.punch_range(chunk, 0, CHUNK_BYTES)
    }

    fn punch_range(&self, chunk: u32, offset: u64, len: u64) -> Result<(), StorageError> {
        let (dev, base) = self
            .locate(chunk)
            .ok_or_else(|| std::io::Error::other(format!("chunk {chunk} outside the pool")))?;
        punch(&dev.file, base + offset, len)?;
        Ok(())
    }

    /// Maps every unmapped chunk of `[start, start+len)` bytes of `nsid`,
    /// all or nothing.
    fn allocate(&self, nsid: u32, start: u64, len: u64) -> Result<(), StorageError> {
        let mut st = self.write_state();
        let st = &mut *st;
        let ns = st
            .namespaces
            .get_mut(&nsid)
            .ok_or(StorageError::NoNamespace(nsid))?;
        let first = (start >> CHUNK_SHIFT) as u32;
        let last = ((start + len - 1) >> CHUNK_SHIFT) as u32;
        let missing: Vec<u32> = (first..=last).filter(|l| !ns.map.contains_key(l)).collect();
        if missing.len() > st.free.len() {
            return Err(StorageError::PoolFull);
        }
        // Checked above: enough free chunks.
        let got = st.free.split_off(st.free.len() - missing.len());
        // A chunk not known to be zero may hold another namespace's data
        // (written before a crash, never committed): zero it before it is
        // mapped. On failure nothing is allocated.
        for &p in &got {
            if !st.clean[p as usize] {
                if let Err(e) = self.punch_chunk(p) {
                    st.free.extend(got);
                    return Err(e);
                }
                st.clean[p as usize] = true;
            }
        }
        for (l, p) in missing.into_iter().zip(got.into_iter().rev()) {
            st.clean[p as usize] = false;
            ns.map.insert(l, p);
        }
        st.dirty = true;
        Ok(())
    }

    /// Moves `blocks` blocks at `slba` of namespace `nsid` between the pool
    /// and the guest memory `segs` (whose lengths add up to the transfer).
    /// A read of never-written blocks returns zeroes; a write allocates.
    pub fn transfer(
        &self,
        dir: Direction,
        nsid: u32,
        slba: u64,
        blocks: u64,
        mem: &GuestMemory,
        segs: &[(u64, usize)],
    ) -> Result<(), StorageError> {
        loop {
            let st = self.read_state();
            let ns = st
                .namespaces
                .get(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            if !ns.attached {
                return Err(StorageError::NotReady(nsid));
            }
            let (start, len) = ns.check_range(nsid, slba, blocks)?;
            if dir == Direction::Write {
                let first = (start >> CHUNK_SHIFT) as u32;
                let last = ((start + len - 1) >> CHUNK_SHIFT) as u32;
                if (first..=last).any(|l| !ns.map.contains_key(&l)) {
                    let reclaimable = !st.pending_free.is_empty();
                    drop(st);
                    match self.allocate(nsid, start, len) {
                        // Chunks freed since the last commit become usable
                        // once a commit no longer maps them: commit now.
                        Err(StorageError::PoolFull) if reclaimable => {
                            self.flush()?;
                            self.allocate(nsid, start, len)?;
                        }
                        other => other?,
                    }
                    // Look again: a discard may have raced the allocation.
                    continue;
                }
            }
            return self.move_data(dir, ns, start, len, mem, segs);
        }
    }

    fn move_data(
        &self,
        dir: Direction,
        ns: &Namespace,
        start: u64,
        len: u64,
        mem: &GuestMemory,
        segs: &[(u64, usize)],
    ) -> Result<(), StorageError> {
        let mut seg = 0usize;
        let mut seg_off = 0usize;
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let chunk = (pos >> CHUNK_SHIFT) as u32;
            let in_chunk = pos & (CHUNK_BYTES - 1);
            let piece = (CHUNK_BYTES - in_chunk).min(end - pos) as usize;
            // The guest pages of this piece.
            let mut iovs: Vec<libc::iovec> = Vec::new();
            let mut need = piece;
            while need > 0 {
                let &(addr, seg_len) = segs.get(seg).ok_or_else(|| {
                    std::io::Error::other("PRP segments shorter than the transfer")
                })?;
                let n = (seg_len - seg_off).min(need);
                let p = mem.dma_ptr(addr + seg_off as u64, n)?;
                iovs.push(libc::iovec {
                    iov_base: p.cast(),
                    iov_len: n,
                });
                need -= n;
                seg_off += n;
                if seg_off == seg_len {
                    seg += 1;
                    seg_off = 0;
                }
            }
            match ns.map.get(&chunk) {
                Some(&phys) => {
                    let (dev, base) = self.locate(phys).ok_or_else(|| {
                        std::io::Error::other(format!("chunk {phys} outside the pool"))
                    })?;
                    transfer_all(&dev.file, dir, &mut iovs, base + in_chunk)?;
                }
                None if dir == Direction::Read => {
                    for v in &iovs {
                        // SAFETY: each iovec was bounds-checked by dma_ptr.
                        unsafe { std::ptr::write_bytes(v.iov_base.cast::<u8>(), 0, v.iov_len) };
                    }
                }
                None => {
                    return Err(std::io::Error::other("write to an unallocated chunk").into());
                }
            }
            pos += piece as u64;
        }
        Ok(())
    }

    /// Zeroes (and deallocates where a whole chunk is covered) blocks of a
    /// namespace: Write Zeroes and Dataset Management deallocate.
    pub fn deallocate(&self, nsid: u32, slba: u64, blocks: u64) -> Result<(), StorageError> {
        let mut st = self.write_state();
        let st = &mut *st;
        let ns = st
            .namespaces
            .get_mut(&nsid)
            .ok_or(StorageError::NoNamespace(nsid))?;
        if !ns.attached {
            return Err(StorageError::NotReady(nsid));
        }
        let (start, len) = ns.check_range(nsid, slba, blocks)?;
        let end = start + len;
        let mut pos = start;
        while pos < end {
            let chunk = (pos >> CHUNK_SHIFT) as u32;
            let in_chunk = pos & (CHUNK_BYTES - 1);
            let piece = (CHUNK_BYTES - in_chunk).min(end - pos);
            // The namespace's last chunk may be partial: covering up to the
            // namespace's end counts as covering the chunk.
            let ns_end = ns.size_blocks << ns.lba_shift;
            let whole = in_chunk == 0 && (piece == CHUNK_BYTES || pos + piece == ns_end);
            if let Some(&phys) = ns.map.get(&chunk) {
                if whole {
                    ns.map.remove(&chunk);
                    self.punch_chunk(phys)?;
                    st.clean[phys as usize] = true;
                    st.pending_free.push(phys);
                    st.dirty = true;
                } else {
                    self.punch_range(phys, in_chunk, piece)?;
                }
            }
            pos += piece;
        }
        Ok(())
    }

    /// Makes every completed write durable: syncs the data, then commits
    /// the metadata if it changed.
    pub fn flush(&self) -> Result<(), StorageError> {
        let mut generation = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        for d in &self.devices {
            d.file.sync_data()?;
        }
        let (payload, freed) = {
            let mut st = self.write_state();
            if !st.dirty {
                return Ok(());
            }
            st.dirty = false;
            (
                encode_meta(&st.namespaces),
                std::mem::take(&mut st.pending_free),
            )
        };
        // Opening refuses a generation without a successor.
        let next = generation.saturating_add(1);
        let dev0 = &self.devices[0];
        let written = write_slot(&dev0.file, self.slot_bytes, next, &payload)
            .and_then(|()| dev0.file.sync_data());
        let mut st = self.write_state();
        match written {
            Ok(()) => {
                *generation = next;
                st.free.extend(freed);
                Ok(())
            }
            Err(e) => {
                st.dirty = true;
                st.pending_free.extend(freed);
                Err(e.into())
            }
        }
    }
}

/// A metadata slot's bytes: header (magic, generation, length, CRC) and
/// payload.
fn slot_image(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_HEADER + payload.len());
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

fn write_slot(
    file: &File,
    slot_bytes: u64,
    generation: u64,
    payload: &[u8],
) -> std::io::Result<()> {
    let b = slot_image(generation, payload);
    if b.len() as u64 > slot_bytes {
        return Err(std::io::Error::other("metadata larger than its slot"));
    }
    file.write_all_at(&b, LABEL_BYTES + (generation % 2) * slot_bytes)
}

/// Reads metadata slot `slot` (0 or 1). The header is not covered by the
/// CRC, so a generation that commit could not have written there is
/// refused as damage: generation g lives in slot g % 2 (a slot claiming
/// the other parity would have the next commit overwrite the newest
/// metadata), and u64::MAX has no successor to commit.
fn read_slot(
    raw: &[u8],
    slot: u64,
    total_chunks: u32,
) -> Result<(u64, BTreeMap<u32, Namespace>), String> {
    if &raw[..8] != META_MAGIC {
        return Err("no metadata magic".into());
    }
    let mut r = Reader::new(&raw[8..]);
    let generation = r.u64();
    if generation % 2 != slot % 2 || generation == u64::MAX {
        return Err(format!("generation {generation} cannot be in slot {slot}"));
    }
    let len = r.u32() as usize;
    let crc = r.u32();
    let payload = raw
        .get(META_HEADER..META_HEADER + len)
        .ok_or("metadata length beyond its slot")?;
    if crc32fast::hash(payload) != crc {
        return Err(format!(
            "generation {generation}: checksum mismatch (torn write)"
        ));
    }
    let ns =
        decode_meta(payload, total_chunks).map_err(|e| format!("generation {generation}: {e}"))?;
    Ok((generation, ns))
}

/// Hooks for the fuzz targets (`crate::fuzz`): the metadata decoder on
/// damaged slots, and a pool opened on them.
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing {
    use std::collections::HashSet;

    use super::*;
    use crate::guest_memory::SharedMemory;

    /// Checks what the rest of the card relies on in decoded metadata: the
    /// rules `create_namespace` applies to a namespace's geometry, no chunk
    /// outside the pool or mapped twice, no logical chunk past the
    /// namespace's end, and that encoding it again decodes to the same.
    fn check_decoded(namespaces: &BTreeMap<u32, Namespace>, total_chunks: u32) {
        let mut used = HashSet::new();
        for (&nsid, ns) in namespaces {
            assert!((1..=MAX_NAMESPACES).contains(&nsid), "namespace id {nsid}");
            assert!(
                (abi::LBA_SHIFT_MIN..=abi::LBA_SHIFT_MAX).contains(&ns.lba_shift),
                "namespace {nsid}: block shift {}",
                ns.lba_shift
            );
            assert!(
                ns.size_blocks > 0
                    && ns.size_blocks <= u64::MAX >> ns.lba_shift
                    && ns.size_blocks << ns.lba_shift <= abi::NAMESPACE_MAX_BYTES,
                "namespace {nsid}: {} blocks of 2^{} bytes accepted",
                ns.size_blocks,
                ns.lba_shift
            );
            let logical = (ns.size_blocks << ns.lba_shift).div_ceil(CHUNK_BYTES);
            for (&l, &p) in &ns.map {
                assert!(
                    u64::from(l) < logical,
                    "namespace {nsid}: chunk {l} past its end"
                );
                assert!(
                    p < total_chunks,
                    "namespace {nsid}: chunk {p} outside the pool"
                );
                assert!(used.insert(p), "chunk {p} mapped twice");
            }
        }
        let encoded = encode_meta(namespaces);
        let again = decode_meta(&encoded, total_chunks).expect("re-encoded metadata decodes");
        assert_eq!(encode_meta(&again), encoded, "metadata round trip");
    }

    /// Decodes a metadata payload as opening a pool does and checks it;
    /// returns whether it decoded.
    pub(crate) fn check_payload(payload: &[u8], total_chunks: u32) -> bool {
        match decode_meta(payload, total_chunks) {
            Ok(namespaces) => {
                check_decoded(&namespaces, total_chunks);
                true
            }
            Err(_) => false,
        }
    }

    /// A metadata slot holding `payload` with a right header and CRC.
    pub(crate) fn slot(generation: u64, payload: &[u8]) -> Vec<u8> {
        slot_image(generation, payload)
    }

    /// Reads a whole slot (header and payload) as opening a pool does
    /// from slot `which` and checks what it decodes to; returns whether it
    /// was usable.
    pub(crate) fn check_slot(raw: &[u8], which: u64, total_chunks: u32) -> bool {
        let mut b = raw.to_vec();
        b.resize(b.len().max(META_HEADER), 0);
        match read_slot(&b, which, total_chunks) {
            Ok((_, namespaces)) => {
                check_decoded(&namespaces, total_chunks);
                true
            }
            Err(_) => false,
        }
    }

    /// Formats a fresh 8 MiB pool in `dir`, puts `raw` (cut or zero-padded
    /// to the slot's size) in metadata slot `which` (0 or 1), and opens it:
    /// it must open or refuse, never panic. An opened pool must hold
    /// checked metadata, and each namespace takes a write, a read and a
    /// deallocate of its last block, and a commit.
    pub(crate) fn open_with_slot(dir: &Path, raw: &[u8], which: u64) {
        let path = dir.join("pool.img");
        let _ = std::fs::remove_file(&path);
        let spec = PoolSpec {
            paths: vec![path.clone()],
            create_bytes: Some(8 << 20),
        };
        let slot_bytes = Pool::open(&spec).expect("a fresh pool opens").slot_bytes;
        let mut b = raw.to_vec();
        b.resize(slot_bytes as usize, 0);
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("the pool file reopens");
        f.write_all_at(&b, LABEL_BYTES + (which % 2) * slot_bytes)
            .expect("slot written");
        drop(f);
        let Ok(pool) = Pool::open(&spec) else {
            return;
        };
        check_decoded(&pool.read_state().namespaces, pool.total_chunks);
        let mem = GuestMemory::new(SharedMemory::anonymous("fuzz-pool", 1 << 13).expect("memfd"));
        for nsid in pool.namespace_ids(0, false) {
            let Some(ns) = pool.namespace(nsid) else {
                continue;
            };
            if !ns.attached && pool.set_attached(nsid, true).is_err() {
                continue;
            }
            let last = ns.size_blocks - 1;
            let seg = [(0u64, 1usize << ns.lba_shift)];
            let _ = pool.transfer(Direction::Write, nsid, last, 1, &mem, &seg);
            let _ = pool.transfer(Direction::Read, nsid, last, 1, &mem, &seg);
            let _ = pool.deallocate(nsid, last, 1);
        }
        let _ = pool.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::SharedMemory;

    fn spec(dir: &Path, names: &[&str], bytes: u64) -> PoolSpec {
        PoolSpec {
            paths: names.iter().map(|n| dir.join(n)).collect(),
            create_bytes: Some(bytes),
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dia-pool-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn label(s: &str) -> [u8; abi::LABEL_LEN] {
        let mut l = [0u8; abi::LABEL_LEN];
        l[..s.len()].copy_from_slice(s.as_bytes());
        l
    }

    fn mem() -> GuestMemory {
        GuestMemory::new(SharedMemory::anonymous("pool-test", 8 << 20).unwrap())
    }

    fn write(
        pool: &Pool,
        m: &GuestMemory,
        nsid: u32,
        slba: u64,
        data: &[u8],
    ) -> Result<(), StorageError> {
        m.write(0, data).unwrap();
        pool.transfer(
            Direction::Write,
            nsid,
            slba,
            data.len() as u64 / 4096,
            m,
            &[(0, data.len())],
        )
    }

    fn read(pool: &Pool, m: &GuestMemory, nsid: u32, slba: u64, len: usize) -> Vec<u8> {
        pool.transfer(
            Direction::Read,
            nsid,
            slba,
            len as u64 / 4096,
            m,
            &[(1 << 20, len)],
        )
        .unwrap();
        let mut out = vec![0u8; len];
        m.read(1 << 20, &mut out).unwrap();
        out
    }

    #[test]
    fn thin_namespaces_survive_reopen_after_flush() {
        let d = tmp("reopen");
        let s = spec(&d, &["a.img"], 64 << 20);
        let m = mem();
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        {
            let pool = Pool::open(&s).unwrap();
            let n = pool.create_namespace(1 << 16, 12, label("vol")).unwrap();
            assert_eq!(pool.usage().used_bytes, 0, "thin: nothing allocated yet");
            pool.set_attached(n, true).unwrap();
            write(&pool, &m, n, 300, &data).unwrap();
            assert_eq!(pool.usage().used_bytes, CHUNK_BYTES);
            assert_eq!(read(&pool, &m, n, 300, 8192), data);
            assert_eq!(read(&pool, &m, n, 5000, 4096), vec![0u8; 4096]);
            pool.flush().unwrap();
        }
        let pool = Pool::open(&s).unwrap();
        let ns = pool.namespace(1).unwrap();
        assert!(ns.attached);
        assert_eq!(&ns.label[..3], b"vol");
        assert_eq!(read(&pool, &m, 1, 300, 8192), data);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unflushed_allocation_is_forgotten_not_corrupted() {
        let d = tmp("crash");
        let s = spec(&d, &["a.img"], 64 << 20);
        let m = mem();
        {
            let pool = Pool::open(&s).unwrap();
            let n = pool.create_namespace(1 << 16, 12, label("x")).unwrap();
            pool.set_attached(n, true).unwrap();
            write(&pool, &m, n, 0, &[1u8; 4096]).unwrap();
            pool.flush().unwrap();
            // Never flushed: lost with the "crash" (drop without commit).
            write(&pool, &m, n, 1024, &[2u8; 4096]).unwrap();
        }
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.usage().used_bytes, CHUNK_BYTES);
        assert_eq!(read(&pool, &m, 1, 0, 4096), vec![1u8; 4096]);
        assert_eq!(read(&pool, &m, 1, 1024, 4096), vec![0u8; 4096]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn pool_full_fails_the_write_and_keeps_others() {
        let d = tmp("full");
        // 8 MiB: label + 2 slots round up to 1 MiB, so 7 data chunks.
        let s = spec(&d, &["a.img"], 8 << 20);
        let m = mem();
        let pool = Pool::open(&s).unwrap();
        let total = pool.usage().total_bytes / CHUNK_BYTES;
        let a = pool.create_namespace(1 << 20, 12, label("a")).unwrap();
        let b = pool.create_namespace(1 << 12, 12, label("b")).unwrap();
        pool.set_attached(a, true).unwrap();
        pool.set_attached(b, true).unwrap();
        write(&pool, &m, b, 0, &[9u8; 4096]).unwrap();
        let mut wrote = 0;
        let err = loop {
            match write(&pool, &m, a, wrote * 256, &[5u8; 4096]) {
                Ok(()) => wrote += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.status(), abi::STATUS_CAPACITY_EXCEEDED);
        assert_eq!(wrote, total - 1);
        assert_eq!(read(&pool, &m, b, 0, 4096), vec![9u8; 4096]);
        // A whole-chunk discard frees space; the write that needs it
        // commits the discard first.
        pool.deallocate(a, 0, 256).unwrap();
        assert_eq!(pool.read_state().pending_free.len(), 1);
        write(&pool, &m, a, wrote * 256, &[5u8; 4096]).unwrap();
        // The reused chunk reads as zeroes, not the old data.
        assert_eq!(read(&pool, &m, a, wrote * 256 + 1, 4096), vec![0u8; 4096]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn partial_deallocate_zeroes_and_keeps_the_rest() {
        let d = tmp("partial");
        let pool = Pool::open(&spec(&d, &["a.img"], 16 << 20)).unwrap();
        let m = mem();
        let n = pool.create_namespace(1 << 10, 12, label("p")).unwrap();
        pool.set_attached(n, true).unwrap();
        write(&pool, &m, n, 0, &[7u8; 16384]).unwrap();
        pool.deallocate(n, 1, 2).unwrap();
        let back = read(&pool, &m, n, 0, 16384);
        assert_eq!(&back[..4096], &[7u8; 4096][..]);
        assert_eq!(&back[4096..12288], &[0u8; 8192][..]);
        assert_eq!(&back[12288..], &[7u8; 4096][..]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_requests_are_refused() {
        let d = tmp("bad");
        let pool = Pool::open(&spec(&d, &["a.img"], 16 << 20)).unwrap();
        let m = mem();
        assert_eq!(
            pool.create_namespace(0, 12, label("z"))
                .unwrap_err()
                .status(),
            abi::STATUS_NS_INSUFFICIENT_CAPACITY
        );
        assert_eq!(
            pool.create_namespace(8, 13, label("z"))
                .unwrap_err()
                .status(),
            abi::STATUS_INVALID_FORMAT
        );
        assert_eq!(
            pool.create_namespace(u64::MAX, 9, label("z"))
                .unwrap_err()
                .status(),
            abi::STATUS_NS_INSUFFICIENT_CAPACITY
        );
        let n = pool.create_namespace(16, 12, label("s")).unwrap();
        assert_eq!(
            write(&pool, &m, n, 0, &[1; 4096]).unwrap_err().status(),
            abi::STATUS_NAMESPACE_NOT_READY
        );
        pool.set_attached(n, true).unwrap();
        assert_eq!(
            pool.set_attached(n, true).unwrap_err().status(),
            abi::STATUS_NS_ALREADY_ATTACHED
        );
        assert_eq!(
            write(&pool, &m, n, 15, &[1; 8192]).unwrap_err().status(),
            abi::STATUS_LBA_OUT_OF_RANGE
        );
        assert_eq!(
            write(&pool, &m, n, u64::MAX, &[1; 4096])
                .unwrap_err()
                .status(),
            abi::STATUS_LBA_OUT_OF_RANGE
        );
        assert_eq!(
            pool.delete_namespace(n).unwrap_err().status(),
            abi::STATUS_NS_ATTACHED_DELETE
        );
        assert_eq!(
            pool.delete_namespace(99).unwrap_err().status(),
            abi::STATUS_INVALID_NAMESPACE
        );
        pool.set_attached(n, false).unwrap();
        pool.delete_namespace(n).unwrap();
        assert_eq!(pool.namespace_ids(0, false), Vec::<u32>::new());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn multi_device_pool_spans_devices_and_checks_membership() {
        let d = tmp("multi");
        let s = spec(&d, &["a.img", "b.img"], 8 << 20);
        let m = mem();
        {
            let pool = Pool::open(&s).unwrap();
            assert_eq!(pool.usage().total_bytes, (7 + 7) * CHUNK_BYTES);
            let n = pool.create_namespace(1 << 16, 12, label("wide")).unwrap();
            pool.set_attached(n, true).unwrap();
            for c in 0..12u64 {
                write(&pool, &m, n, c * 256, &[c as u8 + 1; 4096]).unwrap();
            }
            pool.flush().unwrap();
        }
        // Order of the devices does not matter.
        let rev = PoolSpec {
            paths: vec![d.join("b.img"), d.join("a.img")],
            create_bytes: None,
        };
        let pool = Pool::open(&rev).unwrap();
        for c in 0..12u64 {
            assert_eq!(read(&pool, &m, 1, c * 256, 4096), vec![c as u8 + 1; 4096]);
        }
        drop(pool);
        let missing = PoolSpec {
            paths: vec![d.join("b.img")],
            create_bytes: None,
        };
        let e = Pool::open(&missing).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Found by the pool_meta fuzz target: a size whose bytes overflow
    /// u64 wrapped below the 1 PiB limit and was accepted.
    #[test]
    fn metadata_with_an_overflowing_namespace_size_is_refused() {
        let ns = |size_blocks| Namespace {
            size_blocks,
            lba_shift: 9,
            attached: true,
            label: label("huge"),
            qos: abi::QosSettings::default(),
            map: HashMap::new(),
        };
        let meta = |size_blocks| BTreeMap::from([(1, ns(size_blocks))]);
        assert!(decode_meta(&encode_meta(&meta(1 << 20)), 8).is_ok());
        for size in [0xff00_0000_0000_0000, u64::MAX, (u64::MAX >> 9) + 1] {
            assert!(
                decode_meta(&encode_meta(&meta(size)), 8).is_err(),
                "{size:#x} blocks of 512 bytes accepted"
            );
        }
    }

    /// Found by the pool_meta fuzz target: a slot claiming generation
    /// u64::MAX (the header has no CRC) won at open and the next commit
    /// overflowed (in a release build: wrapped to 0 and lost every later
    /// commit at the next open). Such a slot, and one whose generation has
    /// the other slot's parity, are damage: the other slot is used.
    #[test]
    fn a_slot_with_an_impossible_generation_is_refused() {
        let d = tmp("generation");
        let s = spec(&d, &["a.img"], 16 << 20);
        let slot_bytes = {
            let pool = Pool::open(&s).unwrap();
            // Generation 2, in slot 0.
            pool.create_namespace(64, 12, label("one")).unwrap();
            pool.slot_bytes
        };
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("a.img"))
            .unwrap();
        let empty = encode_meta(&BTreeMap::new());
        for (slot, generation) in [(1, u64::MAX), (1, 8)] {
            let forged = slot_image(generation, &empty);
            f.write_all_at(&forged, LABEL_BYTES + slot * slot_bytes)
                .unwrap();
            let pool = Pool::open(&s).unwrap();
            assert_eq!(pool.namespace_ids(0, false), vec![1], "slot {slot}");
            assert_eq!(*pool.commit.lock().unwrap(), 2);
        }
        // Commits go on from the newest real generation and survive.
        {
            let pool = Pool::open(&s).unwrap();
            pool.create_namespace(64, 12, label("two")).unwrap();
        }
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![1, 2]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_metadata_falls_back_to_the_previous_commit() {
        let d = tmp("torn");
        let s = spec(&d, &["a.img"], 16 << 20);
        let slot_bytes;
        let generation;
        {
            let pool = Pool::open(&s).unwrap();
            pool.create_namespace(64, 12, label("one")).unwrap();
            pool.create_namespace(64, 12, label("two")).unwrap();
            slot_bytes = pool.slot_bytes;
            generation = *pool.commit.lock().unwrap();
        }
        // Damage the newest slot's payload.
        let f = OpenOptions::new()
            .write(true)
            .open(d.join("a.img"))
            .unwrap();
        f.write_all_at(
            &[0xff; 16],
            LABEL_BYTES + (generation % 2) * slot_bytes + 40,
        )
        .unwrap();
        let pool = Pool::open(&s).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![1]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_foreign_file_is_not_formatted() {
        let d = tmp("foreign");
        std::fs::write(d.join("x.img"), vec![0x55u8; 8 << 20]).unwrap();
        let e = Pool::open(&spec(&d, &["x.img"], 8 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a dia pool"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The physical chunk behind logical chunk `l` of `nsid`.
    fn phys(pool: &Pool, nsid: u32, l: u32) -> Option<u32> {
        pool.read_state()
            .namespaces
            .get(&nsid)?
            .map
            .get(&l)
            .copied()
    }

    fn zero(b: &[u8]) -> bool {
        b.iter().all(|&x| x == 0)
    }

    #[test]
    fn a_crash_never_shows_one_namespace_data_to_another() {
        let d = tmp("leak");
        let s = spec(&d, &["a.img"], 16 << 20);
        let m = mem();
        let a;
        let leaked;
        {
            let pool = Pool::open(&s).unwrap();
            a = pool.create_namespace(1 << 16, 12, label("a")).unwrap();
            pool.set_attached(a, true).unwrap();
            // Allocated and written, never committed: the crash forgets
            // the allocation, but the bytes stay on the device.
            write(&pool, &m, a, 0, &[0xa5; 8192]).unwrap();
            leaked = phys(&pool, a, 0).unwrap();
        }
        let pool = Pool::open(&s).unwrap();
        assert_eq!(phys(&pool, a, 0), None, "the allocation was not committed");
        let b = pool.create_namespace(1 << 16, 12, label("b")).unwrap();
        pool.set_attached(b, true).unwrap();
        write(&pool, &m, b, 0, &[0x5a; 4096]).unwrap();
        assert_eq!(phys(&pool, b, 0), Some(leaked), "the same chunk again");
        assert_eq!(read(&pool, &m, b, 0, 4096), vec![0x5a; 4096]);
        assert!(
            zero(&read(&pool, &m, b, 1, 4096)),
            "the other tenant's unflushed data shows through"
        );
        // The old tenant writing again gets zeroes around its write too.
        write(&pool, &m, a, 256 + 1, &[0x11; 4096]).unwrap();
        assert!(zero(&read(&pool, &m, a, 256, 4096)));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_deleted_namespace_data_never_shows_in_the_next_one() {
        let d = tmp("delete");
        let s = spec(&d, &["a.img"], 16 << 20);
        let m = mem();
        let old;
        {
            let pool = Pool::open(&s).unwrap();
            let a = pool.create_namespace(1 << 16, 12, label("a")).unwrap();
            pool.set_attached(a, true).unwrap();
            write(&pool, &m, a, 0, &[0xa5; 8192]).unwrap();
            pool.flush().unwrap();
            old = phys(&pool, a, 0).unwrap();
            pool.set_attached(a, false).unwrap();
            pool.delete_namespace(a).unwrap();
            // Same run: the next namespace gets the freed chunk.
            let b = pool.create_namespace(1 << 16, 12, label("b")).unwrap();
            pool.set_attached(b, true).unwrap();
            write(&pool, &m, b, 2, &[0x5a; 4096]).unwrap();
            assert_eq!(phys(&pool, b, 0), Some(old));
            assert!(zero(&read(&pool, &m, b, 0, 8192)), "deleted data shows");
            // B's write is never flushed: the crash frees the chunk again.
        }
        let pool = Pool::open(&s).unwrap();
        let c = pool.create_namespace(1 << 16, 12, label("c")).unwrap();
        pool.set_attached(c, true).unwrap();
        write(&pool, &m, c, 0, &[0x33; 4096]).unwrap();
        assert_eq!(phys(&pool, c, 0), Some(old));
        assert!(zero(&read(&pool, &m, c, 1, 8192)), "unflushed data shows");
        let _ = std::fs::remove_dir_all(&d);
    }
}
