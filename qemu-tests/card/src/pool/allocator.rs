//! Chunk allocation: where a chunk lives on the devices, handing out free
//! chunks to a namespace (zeroed first unless known clean), and hole
//! punching, which a discard, a delete and an allocation use.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::{Device, Pool, StorageError, CHUNK_BYTES, CHUNK_SHIFT};

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

impl Pool {
    pub(super) fn locate(&self, chunk: u32) -> Option<(&Device, u64)> {
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

    pub(super) fn punch_chunk(&self, chunk: u32) -> Result<(), StorageError> {
        self.punch_range(chunk, 0, CHUNK_BYTES)
    }

    pub(super) fn punch_range(
        &self,
        chunk: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), StorageError> {
        let (dev, base) = self
            .locate(chunk)
            .ok_or_else(|| std::io::Error::other(format!("chunk {chunk} outside the pool")))?;
        punch(&dev.file, base + offset, len)?;
        Ok(())
    }

    /// Maps every unmapped chunk of `[start, start+len)` bytes of `nsid`,
    /// all or nothing.
    pub(super) fn allocate(&self, nsid: u32, start: u64, len: u64) -> Result<(), StorageError> {
        let mut st = self.write_state();
        let st = &mut *st;
        let ns = st
            .namespaces
            .get_mut(&nsid)
            .ok_or(StorageError::NoNamespace(nsid))?;
        let first = (start >> CHUNK_SHIFT) as u32;
        let last = ((start + len - 1) >> CHUNK_SHIFT) as u32;
        let missing: Vec<u32> = (first..=last).filter(|&l| !ns.map.contains(l)).collect();
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
}

#[cfg(test)]
mod tests {
    use dia_abi::card as abi;

    use super::*;
    use crate::pool::testing::*;

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
