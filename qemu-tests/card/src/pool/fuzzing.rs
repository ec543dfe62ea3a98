//! Hooks for the fuzz targets (`crate::fuzz`): the metadata decoder on
//! damaged slots, and a pool opened on them.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use dia_abi::card as abi;

use super::format::{decode_meta, encode_meta, read_slot, slot_image, LABEL_BYTES, META_HEADER};
use super::{Direction, Namespace, Pool, PoolSpec, CHUNK_BYTES, MAX_NAMESPACES};
use crate::guest_memory::{GuestMemory, SharedMemory};

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
        if let Some(remote) = &ns.remote {
            assert!(ns.map.is_empty(), "remote namespace {nsid} maps chunks");
            assert_eq!(
                remote.target.validate(),
                Ok(()),
                "namespace {nsid}: remote target"
            );
        }
        let logical = (ns.size_blocks << ns.lba_shift).div_ceil(CHUNK_BYTES);
        for (l, p) in ns.map.iter() {
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
