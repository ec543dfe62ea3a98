//! The data path: reads and writes between namespaces and guest memory
//! (allocating on first write), Write Zeroes / deallocate, and flush, which
//! syncs the data and commits changed metadata.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use dia_abi::card::PRP_PAGE_BYTES;

use super::format::{encode_meta, write_slot};
use super::{attached, Direction, Namespace, Pool, StorageError, CHUNK_BYTES, CHUNK_SHIFT};
use crate::guest_memory::GuestMemory;
use crate::inline_vec::InlineVec;

/// The iovecs of one piece of a transfer (a 4 KiB command has one, or two
/// from an unaligned PRP1): up to four inline.
type IoVecs = InlineVec<libc::iovec, 4>;

/// An empty iovec, the filler of [`IoVecs`]' inline slots.
const NO_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// The most bytes one write call hands a pool device, and where its
/// pieces end (multiples of it in the device). The host's page cache sizes
/// the folio a buffered write creates by the length of the call: one
/// 512 KiB call leaves a 512 KiB folio, and every later 4 KiB write into
/// it walks all 128 of its block buffers (ext4's `ext4_block_write_begin`
/// on Linux 6.18), which made the card's 4 KiB writes cost several times
/// a plain buffered write (docs/performance.md, "The pool's page-cache
/// folios"). 64 KiB folios keep that walk at 16 buffers and cost large
/// writes about a tenth more system time than one call per piece. A
/// write into pages already cached creates no folio and goes whole
/// ([`all_cached`]).
const WRITE_CALL_MAX: u64 = 64 << 10;

/// The iovecs one write call takes at most: a 64 KiB call of guest (PRP)
/// pages.
const WRITE_CALL_IOVECS: usize = (WRITE_CALL_MAX / PRP_PAGE_BYTES) as usize;

/// The first iovecs of `rest` (the last one shortened) that end at the
/// next multiple of [`WRITE_CALL_MAX`] after `offset`, or sooner, in
/// `call`; returns how many.
fn write_call(
    rest: &[libc::iovec],
    offset: u64,
    call: &mut [libc::iovec; WRITE_CALL_IOVECS],
) -> usize {
    // At least 1 and at most WRITE_CALL_MAX: fits usize.
    let mut room = (WRITE_CALL_MAX - offset % WRITE_CALL_MAX) as usize;
    let mut cnt = 0;
    for (slot, v) in call.iter_mut().zip(rest) {
        if room == 0 {
            break;
        }
        let len = v.iov_len.min(room);
        *slot = libc::iovec {
            iov_base: v.iov_base,
            iov_len: len,
        };
        room -= len;
        cnt += 1;
    }
    cnt
}

/// cachestat(2)'s number (the same on every architecture; Linux 6.5).
const SYS_CACHESTAT: libc::c_long = 451;

/// cachestat(2)'s range argument.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// cachestat(2)'s result.
#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// Whether every page of `len` bytes at `offset` of `file` is in the host's
/// page cache (false when the kernel cannot tell: before Linux 6.5). A
/// write into cached pages creates no folio, so it need not be cut into
/// [`WRITE_CALL_MAX`] calls: the folios are whatever size they already are.
fn all_cached(file: &File, offset: u64, len: u64) -> bool {
    // cachestat counts the host's pages, not the card's PRP pages.
    // SAFETY: sysconf has no preconditions.
    let page = match u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) {
        Ok(p) if p > 0 => p,
        _ => return false,
    };
    let first = offset / page * page;
    let range = CachestatRange {
        off: first,
        len: (offset + len).div_ceil(page) * page - first,
    };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live and of
    // the layouts the kernel defines; flags must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    rc == 0 && stat.nr_cache == range.len / page
}

/// Runs a vectored positional transfer to completion. A write goes in
/// calls of at most [`WRITE_CALL_MAX`] bytes unless it is larger than one
/// and lands wholly in cached pages.
fn transfer_all(
    file: &File,
    dir: Direction,
    iovs: &mut [libc::iovec],
    mut offset: u64,
) -> std::io::Result<()> {
    let whole = dir == Direction::Read || {
        let len: usize = iovs.iter().map(|v| v.iov_len).sum();
        len as u64 > WRITE_CALL_MAX && all_cached(file, offset, len as u64)
    };
    let mut first = 0usize;
    while first < iovs.len() {
        let rest = &mut iovs[first..];
        let off =
            i64::try_from(offset).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: every iovec points into live guest memory (bounds checked
        // by GuestMemory::dma_ptr) for its length, and each of `call` into
        // one of them; the kernel copies to or from it; no Rust reference to
        // that memory exists.
        let n = unsafe {
            if whole {
                let cnt = rest.len().min(1024) as i32;
                match dir {
                    Direction::Read => libc::preadv(file.as_raw_fd(), rest.as_ptr(), cnt, off),
                    Direction::Write => libc::pwritev(file.as_raw_fd(), rest.as_ptr(), cnt, off),
                }
            } else {
                // A write (reads are always whole) cut at the next boundary.
                let mut call = [NO_IOVEC; WRITE_CALL_IOVECS];
                // At most WRITE_CALL_IOVECS: fits i32.
                let cnt = write_call(rest, offset, &mut call) as i32;
                libc::pwritev(file.as_raw_fd(), call.as_ptr(), cnt, off)
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
        self.with_mapped(dir, nsid, slba, blocks, None, |ns, start, len| {
            self.move_data(dir, ns, start, len, mem, segs)
        })
    }

    /// Runs `f` on namespace `nsid` (attached, in the pool) with the byte
    /// range of `blocks` blocks at `slba` (checked, and of `expect_len`
    /// bytes when given), under the state lock, once every chunk a write
    /// touches is allocated: a write allocates on first use, committing
    /// first when only chunks freed since the last commit are left.
    fn with_mapped<R>(
        &self,
        dir: Direction,
        nsid: u32,
        slba: u64,
        blocks: u64,
        expect_len: Option<usize>,
        f: impl FnOnce(&Namespace, u64, u64) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        loop {
            let st = self.read_state();
            let ns = st.attached(nsid)?.local(nsid)?;
            let (start, len) = ns.check_range(nsid, slba, blocks)?;
            if expect_len.is_some_and(|l| len != l as u64) {
                return Err(std::io::Error::other("buffer and blocks differ").into());
            }
            if dir == Direction::Write {
                let first = (start >> CHUNK_SHIFT) as u32;
                let last = ((start + len - 1) >> CHUNK_SHIFT) as u32;
                if (first..=last).any(|l| !ns.map.contains(l)) {
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
            let done = f(ns, start, len);
            if dir == Direction::Write {
                self.changed();
            }
            return done;
        }
    }

    /// Counts a data change that has reached the files (or failed there:
    /// counting one too many costs a sync, never durability).
    fn changed(&self) {
        self.written.fetch_add(1, Ordering::SeqCst);
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
        // The guest pages of each piece.
        let mut next = |piece: usize, iovs: &mut IoVecs| -> Result<(), StorageError> {
            let mut need = piece;
            while need > 0 {
                let &(addr, seg_len) = segs.get(seg).ok_or_else(|| {
                    std::io::Error::other("PRP segments shorter than the transfer")
                })?;
                let n = (seg_len - seg_off).min(need);
                let p = mem.dma_ptr(addr + seg_off as u64, n)?;
                iovs.push(
                    libc::iovec {
                        iov_base: p.cast(),
                        iov_len: n,
                    },
                    segs.len() - seg,
                );
                need -= n;
                seg_off += n;
                if seg_off == seg_len {
                    seg += 1;
                    seg_off = 0;
                }
            }
            Ok(())
        };
        self.move_pieces(dir, ns, start, len, &mut next)
    }

    /// Moves `len` bytes at byte `start` of `ns` piece by piece (at most a
    /// chunk each) between the pool and the memory `next(piece, iovs)`
    /// puts in the (empty) `iovs` for each piece, in order. Every iovec
    /// must point at memory valid for its length that no Rust reference
    /// covers meanwhile.
    fn move_pieces(
        &self,
        dir: Direction,
        ns: &Namespace,
        start: u64,
        len: u64,
        next: &mut dyn FnMut(usize, &mut IoVecs) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let mut iovs = IoVecs::new(NO_IOVEC);
        let mut pos = start;
        let end = start + len;
        while pos < end {
            let chunk = (pos >> CHUNK_SHIFT) as u32;
            let in_chunk = pos & (CHUNK_BYTES - 1);
            let piece = (CHUNK_BYTES - in_chunk).min(end - pos) as usize;
            iovs.clear();
            next(piece, &mut iovs)?;
            match ns.map.get(chunk) {
                Some(phys) => {
                    let (dev, base) = self.locate(phys).ok_or_else(|| {
                        std::io::Error::other(format!("chunk {phys} outside the pool"))
                    })?;
                    transfer_all(&dev.file, dir, &mut iovs, base + in_chunk)?;
                }
                None if dir == Direction::Read => {
                    for v in iovs.iter() {
                        // SAFETY: each iovec is valid for its length (the
                        // caller's promise: bounds-checked by dma_ptr, or
                        // a piece of the caller's buffer).
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

    /// As [`Pool::transfer`] (a read), into `buf` (whole blocks: `blocks`
    /// of them) instead of guest memory: a mirror's local plex.
    pub fn read_buf(
        &self,
        nsid: u32,
        slba: u64,
        blocks: u64,
        buf: &mut [u8],
    ) -> Result<(), StorageError> {
        self.transfer_buf(
            Direction::Read,
            nsid,
            slba,
            blocks,
            buf.as_mut_ptr(),
            buf.len(),
        )
    }

    /// As [`Pool::read_buf`], the other way: `buf` written at `slba`.
    pub fn write_buf(
        &self,
        nsid: u32,
        slba: u64,
        blocks: u64,
        buf: &[u8],
    ) -> Result<(), StorageError> {
        // pwritev only reads through the pointer.
        let p = buf.as_ptr().cast_mut();
        self.transfer_buf(Direction::Write, nsid, slba, blocks, p, buf.len())
    }

    /// The transfer of `read_buf`/`write_buf`: `base` points at `buf_len`
    /// bytes the caller holds borrowed (mutably for a read) throughout.
    fn transfer_buf(
        &self,
        dir: Direction,
        nsid: u32,
        slba: u64,
        blocks: u64,
        base: *mut u8,
        buf_len: usize,
    ) -> Result<(), StorageError> {
        self.with_mapped(dir, nsid, slba, blocks, Some(buf_len), |ns, start, len| {
            let mut off = 0usize;
            let mut next = |piece: usize, iovs: &mut IoVecs| -> Result<(), StorageError> {
                // SAFETY: off + piece <= buf_len: the pieces add up to
                // len, which is the buffer's length (checked by
                // with_mapped).
                let p = unsafe { base.add(off) };
                off += piece;
                iovs.push(
                    libc::iovec {
                        iov_base: p.cast(),
                        iov_len: piece,
                    },
                    1,
                );
                Ok(())
            };
            self.move_pieces(dir, ns, start, len, &mut next)
        })
    }

    /// Zeroes (and deallocates where a whole chunk is covered) blocks of a
    /// namespace: Write Zeroes and Dataset Management deallocate.
    pub fn deallocate(&self, nsid: u32, slba: u64, blocks: u64) -> Result<(), StorageError> {
        let done = self.deallocate_locked(nsid, slba, blocks);
        self.changed();
        done
    }

    fn deallocate_locked(&self, nsid: u32, slba: u64, blocks: u64) -> Result<(), StorageError> {
        let mut st = self.write_state();
        let st = &mut *st;
        let ns = attached(nsid, st.namespaces.get_mut(&nsid))?;
        ns.local(nsid)?;
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
            if let Some(phys) = ns.map.get(chunk) {
                if whole {
                    ns.map.remove(chunk);
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
    /// the metadata if it changed. Without a host sync when a flush since
    /// the last change already did both: the one that ran while this one
    /// waited for the commit lock (group commit across queues and
    /// namespaces), or the FUA write just before.
    pub fn flush(&self) -> Result<(), StorageError> {
        // Every change this flush must cover completed before this load.
        let target = self.written.load(Ordering::SeqCst);
        // Checked under the lock only: a commit in progress has already
        // cleared `dirty`, and holds the lock until its slot is synced.
        let mut generation = self.commit.lock().unwrap_or_else(PoisonError::into_inner);
        if self.covered(target) {
            return Ok(());
        }
        // The sync below covers every change counted before this load.
        let now = self.written.load(Ordering::SeqCst);
        self.syncs.fetch_add(1, Ordering::Relaxed);
        for d in &self.devices {
            d.file.sync_data()?;
        }
        let done = self.commit_meta(&mut generation);
        if done.is_ok() {
            self.synced.fetch_max(now, Ordering::SeqCst);
        }
        done
    }

    /// How many times a flush synced the pool's data on the host.
    pub fn host_syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Whether the changes counted up to `target` are durable and no
    /// metadata waits for a commit (asked with the commit lock held).
    /// `synced` moves only after a flush
    /// committed the metadata, which included every allocation made by a
    /// write counted before it.
    fn covered(&self, target: u64) -> bool {
        self.synced.load(Ordering::SeqCst) >= target && !self.read_state().dirty
    }

    /// Writes the metadata to the next slot and syncs it, if it changed;
    /// `generation` is the commit lock's value.
    fn commit_meta(&self, generation: &mut u64) -> Result<(), StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testing::*;

    fn iov(base: usize, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: base as *mut libc::c_void,
            iov_len: len,
        }
    }

    #[test]
    fn a_write_call_ends_at_the_next_64k_boundary_or_sooner() {
        let mut call = [NO_IOVEC; WRITE_CALL_IOVECS];
        let lens = |c: &[libc::iovec]| c.iter().map(|v| v.iov_len).collect::<Vec<_>>();
        // One 512 KiB buffer at a boundary: its first 64 KiB.
        let n = write_call(&[iov(0x1000, 512 << 10)], 1 << 20, &mut call);
        assert_eq!(lens(&call[..n]), [64 << 10]);
        // 4 KiB into a 64 KiB piece: up to the boundary only.
        let n = write_call(&[iov(0x1000, 512 << 10)], (1 << 20) + 4096, &mut call);
        assert_eq!(lens(&call[..n]), [60 << 10]);
        // Pages: sixteen of them, however many are left.
        let pages: Vec<_> = (0..128).map(|i| iov(0x10_0000 + i * 4096, 4096)).collect();
        let n = write_call(&pages, 0, &mut call);
        assert_eq!(n, 16);
        assert_eq!(call[15].iov_base as usize, 0x10_0000 + 15 * 4096);
        // An unaligned first page (a PRP1 offset) and a short tail.
        let odd = [iov(0x2200, 0xe00), iov(0x3000, 4096), iov(0x4000, 100)];
        let n = write_call(&odd, 0, &mut call);
        assert_eq!(lens(&call[..n]), [0xe00, 4096, 100]);
        // The boundary falls inside the second iovec: it is cut there.
        let n = write_call(&odd, WRITE_CALL_MAX - 0x1000, &mut call);
        assert_eq!(lens(&call[..n]), [0xe00, 0x200]);
    }

    #[test]
    fn cachestat_tells_cached_pages_from_pages_never_read_or_written() {
        let d = tmp("cachestat");
        let path = d.join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(4 << 20).unwrap();
        assert!(!all_cached(&f, 1 << 20, 1 << 20), "a hole is not cached");
        std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 1 << 20], 1 << 20).unwrap();
        assert!(all_cached(&f, 1 << 20, 1 << 20));
        assert!(all_cached(&f, (1 << 20) + 100, 5000), "pages, not bytes");
        assert!(!all_cached(&f, 1 << 20, (1 << 20) + 1), "one page past it");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn writes_cut_into_calls_land_byte_for_byte() {
        let (d, pool, m, n) = one_namespace("calls", 16 << 20, 1 << 11);
        // 300 KiB of distinct bytes at block 3, from guest pages given in
        // an odd order and with an unaligned first segment, so the calls
        // end inside iovecs and at 64 KiB boundaries of the device.
        let data: Vec<u8> = (0..300u32 << 10)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        m.write(0x20_0000 - 0x600, &data[..0x600]).unwrap();
        let mut segs = vec![(0x20_0000 - 0x600, 0x600usize)];
        let mut at = 0x600;
        let mut page = 0u64;
        while at < data.len() {
            let len = (data.len() - at).min(4096);
            // Every other page from the high half: not one run of memory.
            let addr = 0x40_0000 + (page % 2) * (1 << 20) + (page / 2) * 4096;
            m.write(addr, &data[at..at + len]).unwrap();
            segs.push((addr, len));
            at += len;
            page += 1;
        }
        pool.transfer(Direction::Write, n, 3, 75, &m, &segs)
            .unwrap();
        assert_eq!(read(&pool, &m, n, 3, data.len()), data);
        assert!(zero(&read(&pool, &m, n, 0, 3 * 4096)));
        assert!(zero(&read(&pool, &m, n, 78, 4096)));
        // write_buf (one 300 KiB iovec) the same.
        let rev: Vec<u8> = data.iter().rev().copied().collect();
        pool.write_buf(n, 100, 75, &rev).unwrap();
        let mut back = vec![0u8; rev.len()];
        pool.read_buf(n, 100, 75, &mut back).unwrap();
        assert_eq!(back, rev);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_flush_syncs_only_when_something_changed_since_the_last() {
        let (d, pool, m, n) = one_namespace("group", 16 << 20, 1 << 10);
        let base = pool.host_syncs();
        // A write (allocating: metadata too), then the FUA-style flush and
        // the flush the guest sends after it: one sync.
        write(&pool, &m, n, 0, &[1u8; 4096]).unwrap();
        pool.flush().unwrap();
        pool.flush().unwrap();
        assert_eq!(pool.host_syncs(), base + 1);
        // An overwrite of allocated blocks: one more.
        write(&pool, &m, n, 0, &[2u8; 4096]).unwrap();
        pool.flush().unwrap();
        pool.flush().unwrap();
        assert_eq!(pool.host_syncs(), base + 2);
        // A deallocation counts as a change.
        pool.deallocate(n, 0, 1).unwrap();
        pool.flush().unwrap();
        assert_eq!(pool.host_syncs(), base + 3);
        // Reads change nothing.
        let _ = read(&pool, &m, n, 0, 4096);
        pool.flush().unwrap();
        assert_eq!(pool.host_syncs(), base + 3);
        // Concurrent flushers after one write: every one returns durable,
        // and they share syncs (at most one each, at least one).
        write(&pool, &m, n, 8, &[3u8; 4096]).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| pool.flush().unwrap());
            }
        });
        let after = pool.host_syncs() - base - 3;
        assert!((1..=4).contains(&after), "{after} syncs");
        drop(pool);
        let pool = Pool::open(&spec(&d, &["a.img"], 16 << 20)).unwrap();
        assert_eq!(read(&pool, &m, n, 8, 4096), vec![3u8; 4096]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn chunks_past_the_map_table_are_written_read_deallocated_and_kept() {
        let d = tmp("beyond");
        let s = spec(&d, &["a.img"], 16 << 20);
        let pool = Pool::open(&s).unwrap();
        let m = mem();
        // A thin 128 GiB namespace: its chunks from 64 GiB on are beyond the
        // chunk map's table.
        let n = pool.create_namespace(32 << 20, 12, label("big")).unwrap();
        pool.set_attached(n, true).unwrap();
        let table_end = u64::from(crate::pool::chunk_map::DENSE_CHUNKS) << (20 - 12);
        // One write straddling the table's end, one in it, one far past it.
        let at = [table_end - 1, 5, (32 << 20) - 1];
        write(&pool, &m, n, at[0], &[1u8; 8192]).unwrap();
        write(&pool, &m, n, at[1], &[2u8; 4096]).unwrap();
        write(&pool, &m, n, at[2], &[3u8; 4096]).unwrap();
        assert_eq!(read(&pool, &m, n, at[0], 8192), vec![1u8; 8192]);
        assert_eq!(read(&pool, &m, n, at[2], 4096), vec![3u8; 4096]);
        assert_eq!(read(&pool, &m, n, table_end + 256, 4096), vec![0u8; 4096]);
        pool.flush().unwrap();
        drop(pool);
        let pool = Pool::open(&s).unwrap();
        assert_eq!(read(&pool, &m, n, at[0], 8192), vec![1u8; 8192]);
        assert_eq!(read(&pool, &m, n, at[1], 4096), vec![2u8; 4096]);
        assert_eq!(read(&pool, &m, n, at[2], 4096), vec![3u8; 4096]);
        // Deallocating the last chunk (whole: the namespace ends there)
        // unmaps it; it reads as zeroes.
        pool.deallocate(n, (32 << 20) - 256, 256).unwrap();
        assert_eq!(read(&pool, &m, n, at[2], 4096), vec![0u8; 4096]);
        assert_eq!(pool.usage().used_bytes, 3 << 20);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn partial_deallocate_zeroes_and_keeps_the_rest() {
        let (d, pool, m, n) = one_namespace("partial", 16 << 20, 1 << 10);
        write(&pool, &m, n, 0, &[7u8; 16384]).unwrap();
        pool.deallocate(n, 1, 2).unwrap();
        let back = read(&pool, &m, n, 0, 16384);
        assert_eq!(&back[..4096], &[7u8; 4096][..]);
        assert_eq!(&back[4096..12288], &[0u8; 8192][..]);
        assert_eq!(&back[12288..], &[7u8; 4096][..]);
        let _ = std::fs::remove_dir_all(&d);
    }
}
