//! The namespace commands on a pool: create (thin), delete, attach and
//! detach, service level, and the lookups the controller answers Identify
//! and the I/O path's checks with. Each change commits the metadata.

use dia_abi::card as abi;

use super::{ChunkMap, Namespace, Pool, Remote, StorageError, MAX_NAMESPACES};

impl Pool {
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

    /// Attached namespaces whose data is in the pool, ascending: the ones
    /// the fabric target may export (a remote namespace is not re-exported).
    pub fn exported_ids(&self) -> Vec<u32> {
        self.read_state()
            .namespaces
            .iter()
            .filter(|(_, ns)| ns.attached && ns.is_local())
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
        self.insert_namespace(size_blocks, lba_shift, label, None)
    }

    /// Records a remote namespace (detached; its geometry is the remote
    /// one's) and commits; returns its id. It takes a namespace id and no
    /// chunk.
    pub fn create_remote_namespace(
        &self,
        size_blocks: u64,
        lba_shift: u8,
        label: [u8; abi::LABEL_LEN],
        remote: Remote,
    ) -> Result<u32, StorageError> {
        if remote.target.validate().is_err() {
            return Err(StorageError::BadRemote);
        }
        self.insert_namespace(size_blocks, lba_shift, label, Some(remote))
    }

    fn insert_namespace(
        &self,
        size_blocks: u64,
        lba_shift: u8,
        label: [u8; abi::LABEL_LEN],
        remote: Option<Remote>,
    ) -> Result<u32, StorageError> {
        self.insert_namespace_with(size_blocks, lba_shift, label, remote, None)
    }

    /// Whether a namespace id is free for a create (without taking it).
    pub fn has_free_id(&self) -> bool {
        self.read_state().namespaces.len() < MAX_NAMESPACES as usize
    }

    pub(super) fn insert_namespace_with(
        &self,
        size_blocks: u64,
        lba_shift: u8,
        label: [u8; abi::LABEL_LEN],
        remote: Option<Remote>,
        mirror: Option<super::MirrorRecord>,
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
                    remote,
                    mirror,
                    plex_record: abi::PlexRecord::default(),
                    map: ChunkMap::default(),
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
            for p in ns.map.values() {
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
        let ns = st.attached(nsid)?;
        Ok(ns.lba_shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testing::*;
    use crate::pool::CHUNK_BYTES;

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

    /// A remote namespace is a table entry: it takes an id and no space,
    /// the data path refuses it, the fabric target does not export it, it
    /// survives a reopen with its target, and it is deleted like any other.
    #[test]
    fn remote_namespaces_are_entries_without_space() {
        let d = tmp("remote");
        let s = spec(&d, &["a.img"], 16 << 20);
        let m = mem();
        let target =
            abi::RemoteTarget::new("127.0.0.1", 4420, 1, "nqn.2026-12.io.dia:X:ns1", 0).unwrap();
        let remote = Remote {
            target,
            deallocated_reads_zeroes: true,
        };
        let (local, far) = {
            let pool = Pool::open(&s).unwrap();
            let local = pool.create_namespace(256, 12, label("near")).unwrap();
            let far = pool
                .create_remote_namespace(1 << 30, 9, label("far"), remote)
                .unwrap();
            pool.set_attached(local, true).unwrap();
            pool.set_attached(far, true).unwrap();
            assert_eq!(pool.usage().used_bytes, 0);
            assert_eq!(pool.usage().namespaces, 2);
            assert_eq!(pool.exported_ids(), vec![local]);
            assert_eq!(pool.namespace_ids(0, true), vec![local, far]);
            assert_eq!(pool.io_lba_shift(far).unwrap(), 9);
            assert!(matches!(
                write(&pool, &m, far, 0, &[1; 4096]),
                Err(StorageError::Remote(n)) if n == far
            ));
            assert!(matches!(
                pool.deallocate(far, 0, 8),
                Err(StorageError::Remote(_))
            ));
            assert_eq!(pool.usage().used_bytes, 0, "nothing allocated for it");
            let mut bad = remote;
            bad.target.port = 0;
            assert_eq!(
                pool.create_remote_namespace(8, 9, label("bad"), bad)
                    .unwrap_err()
                    .status(),
                abi::STATUS_INVALID_FIELD
            );
            assert_eq!(
                pool.create_remote_namespace(0, 9, label("empty"), remote)
                    .unwrap_err()
                    .status(),
                abi::STATUS_NS_INSUFFICIENT_CAPACITY
            );
            (local, far)
        };
        let pool = Pool::open(&s).unwrap();
        let ns = pool.namespace(far).unwrap();
        assert_eq!(ns.remote, Some(remote));
        assert_eq!(
            (ns.size_blocks, ns.lba_shift, ns.attached),
            (1 << 30, 9, true)
        );
        assert_eq!(&ns.label[..3], b"far");
        assert_eq!(pool.namespace(local).unwrap().remote, None);
        pool.set_attached(far, false).unwrap();
        pool.delete_namespace(far).unwrap();
        assert_eq!(pool.namespace_ids(0, false), vec![local]);
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
}
