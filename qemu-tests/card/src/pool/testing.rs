//! What the pool's tests share: scratch pools, labels, guest memory, and
//! block reads and writes through the data path.

use std::path::{Path, PathBuf};

use dia_abi::card as abi;

use super::{Direction, Pool, PoolSpec, StorageError};
use crate::guest_memory::{GuestMemory, SharedMemory};

pub(super) fn spec(dir: &Path, names: &[&str], bytes: u64) -> PoolSpec {
    PoolSpec {
        paths: names.iter().map(|n| dir.join(n)).collect(),
        create_bytes: Some(bytes),
    }
}

pub(super) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("dia-pool-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A scratch pool of `bytes` on one device `a.img` with one attached
/// namespace of `blocks` 4 KiB blocks labelled `name`: the pool's
/// directory, the pool, guest memory, and the namespace's id.
pub(super) fn one_namespace(
    name: &str,
    bytes: u64,
    blocks: u64,
) -> (PathBuf, Pool, GuestMemory, u32) {
    let d = tmp(name);
    let pool = Pool::open(&spec(&d, &["a.img"], bytes)).unwrap();
    let n = pool.create_namespace(blocks, 12, label(name)).unwrap();
    pool.set_attached(n, true).unwrap();
    (d, pool, mem(), n)
}

pub(super) fn label(s: &str) -> [u8; abi::LABEL_LEN] {
    let mut l = [0u8; abi::LABEL_LEN];
    l[..s.len()].copy_from_slice(s.as_bytes());
    l
}

pub(super) fn mem() -> GuestMemory {
    GuestMemory::new(SharedMemory::anonymous("pool-test", 8 << 20).unwrap())
}

pub(super) fn write(
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

pub(super) fn read(pool: &Pool, m: &GuestMemory, nsid: u32, slba: u64, len: usize) -> Vec<u8> {
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

/// The physical chunk behind logical chunk `l` of `nsid`.
pub(super) fn phys(pool: &Pool, nsid: u32, l: u32) -> Option<u32> {
    pool.read_state().namespaces.get(&nsid)?.map.get(l)
}

pub(super) fn zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}
