//! The pool's on-disk format: the label every device starts with, the two
//! metadata slots on device 0 (header and the encoded namespaces with their
//! chunk maps), and their encoders and decoders. Nothing here does I/O but
//! `write_slot`; opening (`open`) and committing (`data`) use it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use dia_abi::card as abi;

use super::mirror::{regions_of, MirrorRecord, PlexRecord, RegionSet, MAX_DIRTY_RANGES};
use super::{ChunkMap, Namespace, Remote, CHUNK_BYTES, CHUNK_SHIFT, MAX_NAMESPACES};

pub(super) const LABEL_BYTES: u64 = 4096;
const LABEL_MAGIC: &[u8; 8] = b"DIAPOOL1";
const META_MAGIC: &[u8; 8] = b"DIAMETA2";
/// 5: a namespace record may be a mirrored namespace's (`KIND_MIRROR`: its
/// plex table, generation and per-plex dirty regions follow) or a local
/// namespace that is a plex of a mirror (`KIND_PLEX`: its plex record, 48
/// bytes, then its chunk map as a local one's; it fits the room format 4
/// reckoned for a remote record), and new
/// pools' metadata slots have room for a mirror record in every namespace
/// id. Format 4 pools still open (their slots hold fewer mirrors: Create
/// Mirror Namespace checks the room). 4: a namespace record says whether its data is in the pool (a chunk map
/// follows) or behind a remote target (the target follows); format 3 had
/// only the first kind. 3: the metadata slot's CRC covers its header too
/// (`DIAMETA2`); format 2 slots (`DIAMETA1`) had it over the payload only.
const FORMAT_VERSION: u32 = 5;
/// The oldest format this card opens (its records are a subset of 5's).
const OLDEST_FORMAT: u32 = 4;
/// The slot header's fields the CRC covers: magic, generation, payload
/// length.
const META_FIELDS: usize = 8 + 8 + 4;
/// Those fields and the CRC32 over them and the payload.
pub(super) const META_HEADER: usize = META_FIELDS + 4;
/// nsid, lba_shift, attached, kind, reserved, size_blocks, label, QoS.
const NS_HEADER: usize = 4 + 1 + 1 + 1 + 1 + 8 + abi::LABEL_LEN + QOS_RECORD;
/// min/max IOPS, min/max bytes/s, weight, burst.
const QOS_RECORD: usize = 4 * 8 + 4 + 4;
/// What follows a local namespace's header: the map length (its entries,
/// 8 bytes each, are counted per chunk of the pool).
const MAP_LENGTH: usize = 4;
/// What follows a remote namespace's header: the target (address, port,
/// digests, reserved, namespace id, NQN, as `abi::RemoteTarget`), then
/// features and 3 reserved bytes.
const REMOTE_RECORD: usize = abi::REMOTE_ADDR_LEN + 2 + 1 + 1 + 4 + abi::NQN_FIELD_LEN + 1 + 3;
/// The largest namespace record without its chunk map, as format 4 sized
/// its slots.
const NS_RECORD: usize = NS_HEADER
    + if REMOTE_RECORD > MAP_LENGTH {
        REMOTE_RECORD
    } else {
        MAP_LENGTH
    };
/// A target in a record: address, port, digests, reserved, namespace id,
/// NQN (as `abi::RemoteTarget`).
const TARGET_RECORD: usize = abi::REMOTE_ADDR_LEN + 2 + 1 + 1 + 4 + abi::NQN_FIELD_LEN;
/// One plex of a mirror record at its largest: target, state, 3 reserved,
/// resync_bytes, faults, range count, ranges (start, end; u32 each).
const PLEX_RECORD: usize = TARGET_RECORD + 1 + 3 + 8 + 8 + 4 + MAX_DIRTY_RANGES * 8;
/// A mirrored namespace's record at its largest: header, generation, plex
/// count, 3 reserved, the plexes.
pub(super) const MIRROR_RECORD: usize =
    NS_HEADER + 8 + 1 + 3 + abi::MIRROR_MAX_PLEXES * PLEX_RECORD;
/// A record's kind: the data is in the pool's chunks.
const KIND_LOCAL: u8 = 0;
/// A record's kind: the data is behind a remote target.
const KIND_REMOTE: u8 = 1;
/// A record's kind: a mirrored namespace (its plex table follows).
const KIND_MIRROR: u8 = 2;
/// A record's kind: a local namespace with a plex record (`abi::PlexRecord`:
/// generation, 4 keys, 8 reserved) before its chunk map.
const KIND_PLEX: u8 = 3;
/// A plex record's bytes.
const PLEX_TAG: usize = 8 + 8 * abi::MIRROR_MAX_PLEXES + 8;
const _: () = assert!(MAP_LENGTH + PLEX_TAG <= REMOTE_RECORD);
/// A remote record's features bit 0: deallocated blocks read as zeroes.
const REMOTE_DEALLOCATED_ZEROES: u8 = 1 << 0;

pub(super) fn align_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The least slot size a pool of `total_chunks` chunks may have (what
/// format 4 gave it: every namespace local or remote).
pub(super) fn slot_bytes_for(total_chunks: u64) -> u64 {
    let max =
        META_HEADER as u64 + 4 + u64::from(MAX_NAMESPACES) * NS_RECORD as u64 + total_chunks * 8;
    align_up(max, 4096)
}

/// The slot size a new pool gets: room for every namespace id to hold a
/// mirror record at its largest.
pub(super) fn new_slot_bytes(total_chunks: u64) -> u64 {
    let record = NS_RECORD.max(MIRROR_RECORD) as u64;
    let max = META_HEADER as u64 + 4 + u64::from(MAX_NAMESPACES) * record + total_chunks * 8;
    align_up(max, 4096)
}

/// The most bytes a slot image of `namespaces` can grow to in a pool of
/// `total_chunks` chunks (mirror records at their largest, every chunk
/// mapped).
pub(super) fn worst_meta_len<'a>(
    namespaces: impl Iterator<Item = &'a Namespace>,
    total_chunks: u32,
) -> usize {
    let records: usize = namespaces
        .map(|ns| match (&ns.remote, &ns.mirror) {
            (_, Some(_)) => MIRROR_RECORD,
            (Some(_), None) => NS_HEADER + REMOTE_RECORD,
            (None, None) => NS_HEADER + MAP_LENGTH + PLEX_TAG,
        })
        .sum();
    META_HEADER + 4 + records + total_chunks as usize * 8
}

/// Fixed-size little-endian fields of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Label {
    pub(super) pool_id: u64,
    pub(super) index: u32,
    pub(super) count: u32,
    pub(super) device_bytes: u64,
    pub(super) data_offset: u64,
    pub(super) chunks: u32,
    pub(super) slot_bytes: u64,
}

impl Label {
    pub(super) fn encode(&self) -> Vec<u8> {
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
    pub(super) fn decode(b: &[u8]) -> Result<Option<Self>, String> {
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
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&version) || shift != CHUNK_SHIFT {
            return Err(format!(
                "pool format {version} with chunk shift {shift}; this card reads formats {OLDEST_FORMAT} to {FORMAT_VERSION}, shift {CHUNK_SHIFT}"
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

fn encode_target(b: &mut Vec<u8>, t: &abi::RemoteTarget) {
    b.extend_from_slice(&t.addr);
    b.extend_from_slice(&t.port.to_le_bytes());
    b.push(t.digests);
    b.push(t.reserved);
    b.extend_from_slice(&t.nsid.to_le_bytes());
    b.extend_from_slice(&t.subnqn);
}

fn decode_target(r: &mut Reader<'_>) -> abi::RemoteTarget {
    abi::RemoteTarget {
        addr: r.take(),
        port: r.u16(),
        digests: r.u8(),
        reserved: r.u8(),
        nsid: r.u32(),
        subnqn: r.take(),
    }
}

fn encode_mirror(b: &mut Vec<u8>, m: &MirrorRecord) {
    b.extend_from_slice(&m.generation.to_le_bytes());
    // At most MIRROR_MAX_PLEXES (MirrorRecord::valid).
    b.push(m.plexes.len() as u8);
    b.extend_from_slice(&[0; 3]);
    for p in &m.plexes {
        encode_target(b, &p.target);
        b.push(p.state);
        b.extend_from_slice(&[0; 3]);
        b.extend_from_slice(&p.resync_bytes.to_le_bytes());
        b.extend_from_slice(&p.faults.to_le_bytes());
        let ranges: Vec<(u32, u32)> = p.dirty.ranges().collect();
        // At most MAX_DIRTY_RANGES (RegionSet keeps it).
        b.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for (s, e) in ranges {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&e.to_le_bytes());
        }
    }
}

fn decode_mirror(r: &mut Reader<'_>, nsid: u32, bytes: u64) -> Result<MirrorRecord, String> {
    let bad = |what: &str| format!("namespace {nsid}: bad mirror record ({what})");
    let generation = r.u64();
    let count = usize::from(r.u8());
    if r.take::<3>() != [0; 3] {
        return Err(bad("reserved"));
    }
    if !(1..=abi::MIRROR_MAX_PLEXES).contains(&count) {
        return Err(bad("plex count"));
    }
    let regions = regions_of(bytes);
    let mut plexes = Vec::with_capacity(count);
    for _ in 0..count {
        let target = decode_target(r);
        let state = r.u8();
        if r.take::<3>() != [0; 3] {
            return Err(bad("plex reserved"));
        }
        let resync_bytes = r.u64();
        let faults = r.u64();
        let n = r.u32() as usize;
        if n > MAX_DIRTY_RANGES {
            return Err(bad("range count"));
        }
        let ranges: Vec<(u32, u32)> = (0..n).map(|_| (r.u32(), r.u32())).collect();
        if r.overrun() {
            return Err("truncated".into());
        }
        let dirty = RegionSet::from_ranges(&ranges, regions).ok_or_else(|| bad("ranges"))?;
        plexes.push(PlexRecord {
            target,
            state,
            dirty,
            resync_bytes,
            faults,
        });
    }
    let m = MirrorRecord { generation, plexes };
    if !m.valid() {
        return Err(bad("plexes"));
    }
    Ok(m)
}

fn encode_remote(b: &mut Vec<u8>, remote: &Remote) {
    encode_target(b, &remote.target);
    let features = if remote.deallocated_reads_zeroes {
        REMOTE_DEALLOCATED_ZEROES
    } else {
        0
    };
    b.extend_from_slice(&[features, 0, 0, 0]);
}

fn decode_remote(r: &mut Reader<'_>, nsid: u32) -> Result<Remote, String> {
    let target = decode_target(r);
    let features = r.u8();
    let reserved = r.take::<3>();
    if r.overrun() {
        return Err("truncated".into());
    }
    if target.validate().is_err() {
        return Err(format!("namespace {nsid}: bad remote target"));
    }
    if features & !REMOTE_DEALLOCATED_ZEROES != 0 || reserved != [0; 3] {
        return Err(format!("namespace {nsid}: bad remote features"));
    }
    Ok(Remote {
        target,
        deallocated_reads_zeroes: features & REMOTE_DEALLOCATED_ZEROES != 0,
    })
}

pub(super) fn encode_meta(namespaces: &BTreeMap<u32, Namespace>) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(namespaces.len() as u32).to_le_bytes());
    for (&nsid, ns) in namespaces {
        b.extend_from_slice(&nsid.to_le_bytes());
        b.push(ns.lba_shift);
        b.push(u8::from(ns.attached));
        b.push(match (&ns.remote, &ns.mirror) {
            (_, Some(_)) => KIND_MIRROR,
            (Some(_), None) => KIND_REMOTE,
            (None, None) if ns.plex_record != abi::PlexRecord::default() => KIND_PLEX,
            (None, None) => KIND_LOCAL,
        });
        b.push(0);
        b.extend_from_slice(&ns.size_blocks.to_le_bytes());
        b.extend_from_slice(&ns.label);
        let q = &ns.qos;
        for v in [q.min_iops, q.max_iops, q.min_bytes_per_s, q.max_bytes_per_s] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&q.weight.to_le_bytes());
        b.extend_from_slice(&q.burst_ms.to_le_bytes());
        if let Some(m) = &ns.mirror {
            encode_mirror(&mut b, m);
            continue;
        }
        if let Some(remote) = &ns.remote {
            encode_remote(&mut b, remote);
            continue;
        }
        if ns.plex_record != abi::PlexRecord::default() {
            let p = &ns.plex_record;
            b.extend_from_slice(&p.generation.to_le_bytes());
            for k in p.in_sync {
                b.extend_from_slice(&k.to_le_bytes());
            }
            b.extend_from_slice(&p.reserved);
        }
        b.extend_from_slice(&(ns.map.len() as u32).to_le_bytes());
        let mut map: Vec<(u32, u32)> = ns.map.iter().collect();
        map.sort_unstable();
        for (l, p) in map {
            b.extend_from_slice(&l.to_le_bytes());
            b.extend_from_slice(&p.to_le_bytes());
        }
    }
    b
}

pub(super) fn decode_meta(b: &[u8], total_chunks: u32) -> Result<BTreeMap<u32, Namespace>, String> {
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
        let attached = r.u8();
        let kind = r.u8();
        let reserved = r.u8();
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
        if nsid == 0 || nsid > MAX_NAMESPACES || out.contains_key(&nsid) {
            return Err(format!("bad namespace id {nsid}"));
        }
        if attached > 1 || reserved != 0 {
            return Err(format!("namespace {nsid}: bad flags"));
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
        let mut namespace = Namespace {
            size_blocks,
            lba_shift,
            attached: attached == 1,
            label,
            qos,
            remote: None,
            mirror: None,
            plex_record: abi::PlexRecord::default(),
            map: ChunkMap::default(),
        };
        match kind {
            KIND_LOCAL => {}
            KIND_PLEX => {
                let p = &mut namespace.plex_record;
                p.generation = r.u64();
                for k in &mut p.in_sync {
                    *k = r.u64();
                }
                p.reserved = r.take::<8>();
                if p.reserved != [0; 8] || *p == abi::PlexRecord::default() {
                    return Err(format!("namespace {nsid}: bad plex record"));
                }
            }
            KIND_MIRROR => {
                namespace.mirror = Some(decode_mirror(&mut r, nsid, size_blocks << lba_shift)?);
                out.insert(nsid, namespace);
                continue;
            }
            KIND_REMOTE => {
                namespace.remote = Some(decode_remote(&mut r, nsid)?);
                out.insert(nsid, namespace);
                continue;
            }
            other => return Err(format!("namespace {nsid}: unknown kind {other}")),
        }
        let n = r.u32();
        let logical_chunks = (size_blocks << lba_shift).div_ceil(CHUNK_BYTES);
        if u64::from(n) > u64::from(total_chunks) {
            return Err(format!("namespace {nsid}: {n} chunks"));
        }
        let map = &mut namespace.map;
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
        out.insert(nsid, namespace);
    }
    if r.overrun() {
        return Err("truncated".into());
    }
    if r.pos != b.len() {
        return Err(format!(
            "{} bytes after the last namespace",
            b.len() - r.pos
        ));
    }
    Ok(out)
}

/// The CRC32 of a metadata slot: over its header's fields (magic,
/// generation, length) and its payload, so no byte a reader trusts is
/// outside it.
fn slot_crc(fields: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(fields);
    h.update(payload);
    h.finalize()
}

/// A metadata slot's bytes: header (magic, generation, length, CRC) and
/// payload.
pub(super) fn slot_image(generation: u64, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(META_HEADER + payload.len());
    b.extend_from_slice(META_MAGIC);
    b.extend_from_slice(&generation.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = slot_crc(&b, payload);
    b.extend_from_slice(&crc.to_le_bytes());
    b.extend_from_slice(payload);
    b
}

pub(super) fn write_slot(
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

/// Reads metadata slot `slot` (0 or 1) from `raw` (at least
/// [`META_HEADER`] bytes). Nothing is believed before the CRC over the
/// header and the payload matches: a torn or damaged slot, header
/// included, is refused and the other slot is used. A generation that
/// commit could not have written there is refused as damage too, CRC or
/// not: generation g lives in slot g % 2 (a slot claiming the other parity
/// would have the next commit overwrite the newest metadata), and u64::MAX
/// has no successor to commit.
pub(super) fn read_slot(
    raw: &[u8],
    slot: u64,
    total_chunks: u32,
) -> Result<(u64, BTreeMap<u32, Namespace>), String> {
    if &raw[..8] != META_MAGIC {
        return Err("no metadata magic".into());
    }
    let mut r = Reader::new(&raw[8..]);
    let generation = r.u64();
    let len = r.u32() as usize;
    let crc = r.u32();
    let payload = raw
        .get(META_HEADER..)
        .and_then(|rest| rest.get(..len))
        .ok_or("metadata length beyond its slot")?;
    if slot_crc(&raw[..META_FIELDS], payload) != crc {
        return Err("checksum mismatch (torn write or damaged header)".into());
    }
    if generation % 2 != slot % 2 || generation == u64::MAX {
        return Err(format!("generation {generation} cannot be in slot {slot}"));
    }
    let ns =
        decode_meta(payload, total_chunks).map_err(|e| format!("generation {generation}: {e}"))?;
    Ok((generation, ns))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::testing::*;

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
            remote: None,
            mirror: None,
            plex_record: abi::PlexRecord::default(),
            map: ChunkMap::default(),
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

    fn remote_ns() -> Namespace {
        Namespace {
            size_blocks: 1 << 20,
            lba_shift: 9,
            attached: true,
            label: label("far"),
            qos: abi::QosSettings {
                max_iops: 500,
                ..Default::default()
            },
            remote: Some(Remote {
                target: abi::RemoteTarget::new(
                    "fd00::2",
                    4420,
                    7,
                    "nqn.2026-12.io.dia:B:ns7",
                    abi::REMOTE_DATA_DIGEST,
                )
                .unwrap(),
                deallocated_reads_zeroes: true,
            }),
            mirror: None,
            plex_record: abi::PlexRecord::default(),
            map: ChunkMap::default(),
        }
    }

    /// A remote namespace's record keeps its target and geometry, beside
    /// local ones with their chunk maps.
    #[test]
    fn remote_namespaces_round_trip_beside_local_ones() {
        let local = Namespace {
            size_blocks: 1 << 12,
            lba_shift: 12,
            attached: false,
            label: label("near"),
            qos: abi::QosSettings::default(),
            remote: None,
            mirror: None,
            plex_record: abi::PlexRecord::default(),
            map: [(0, 5), (3, 1)].into_iter().collect(),
        };
        let meta = BTreeMap::from([(1, local), (2, remote_ns())]);
        let encoded = encode_meta(&meta);
        let back = decode_meta(&encoded, 8).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[&1].map, meta[&1].map);
        assert_eq!(back[&1].remote, None);
        assert_eq!(back[&2].remote, meta[&2].remote);
        assert!(back[&2].map.is_empty() && back[&2].attached);
        assert_eq!(back[&2].qos, meta[&2].qos);
        assert_eq!(encode_meta(&back), encoded);
        // The largest record fits the slot's reckoning: every id remote.
        let all: BTreeMap<u32, Namespace> =
            (1..=MAX_NAMESPACES).map(|id| (id, remote_ns())).collect();
        assert!(META_HEADER + encode_meta(&all).len() <= slot_bytes_for(0) as usize);
    }

    /// A remote record whose target breaks a rule, an unknown kind, set
    /// reserved bits, a cut record or bytes after the last one: refused.
    #[test]
    fn garbage_in_remote_records_is_refused() {
        let good = encode_meta(&BTreeMap::from([(3, remote_ns())]));
        assert!(decode_meta(&good, 8).is_ok());
        // Offsets in the record: 4 (count), then nsid 4, shift, attached,
        // kind, reserved, size 8, label, QoS, then the target.
        let rec = 4;
        let kind = rec + 6;
        let target = rec + NS_HEADER;
        let port = target + abi::REMOTE_ADDR_LEN;
        let nsid = port + 4;
        let nqn = nsid + 4;
        let features = nqn + abi::NQN_FIELD_LEN;
        let damaged = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            decode_meta(&b, 8)
        };
        for (at, value, what) in [
            (kind, 2, "unknown kind"),
            (kind + 1, 1, "reserved byte"),
            (rec + 5, 2, "attached not 0 or 1"),
            (target, b'x', "address"),
            (port + 2, 4, "digest bits"),
            (port + 3, 1, "target reserved"),
            (nqn, 0, "empty NQN"),
            (nqn + 100, b'q', "NQN padding"),
            (features, 2, "features"),
            (features + 3, 1, "features reserved"),
        ] {
            assert!(damaged(at, value).is_err(), "{what} accepted");
        }
        for (at, len, what) in [(port, 2, "port 0"), (nsid, 4, "remote nsid 0")] {
            let mut b = good.clone();
            b[at..at + len].fill(0);
            assert!(decode_meta(&b, 8).is_err(), "{what} accepted");
        }
        for cut in [1, 4, 100, good.len() - rec - 1] {
            assert!(
                decode_meta(&good[..good.len() - cut], 8).is_err(),
                "cut by {cut}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode_meta(&longer, 8).is_err(), "a trailing byte");
    }

    /// Every header byte is under the CRC: a slot damaged anywhere in its
    /// header or payload is refused, never decoded with a wrong generation
    /// or length.
    #[test]
    fn a_damaged_slot_header_or_payload_is_refused() {
        let ns = Namespace {
            size_blocks: 1 << 10,
            lba_shift: 12,
            attached: true,
            label: label("crc"),
            qos: abi::QosSettings::default(),
            remote: None,
            mirror: None,
            plex_record: abi::PlexRecord::default(),
            map: [(0, 3)].into_iter().collect(),
        };
        let payload = encode_meta(&BTreeMap::from([(1, ns)]));
        let mut good = slot_image(4, &payload);
        // As read from the device: the slot's tail is zeroes.
        good.resize(good.len() + 64, 0);
        let (generation, decoded) = read_slot(&good, 0, 8).unwrap();
        assert_eq!((generation, decoded.len()), (4, 1));
        for at in 0..META_HEADER + payload.len() {
            for flip in [0x01, 0x80] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                assert!(
                    read_slot(&bad, 0, 8).is_err(),
                    "byte {at} ^ {flip:#x} of the slot accepted"
                );
            }
        }
    }

    fn mirror_ns() -> Namespace {
        let t = |n: u32| {
            abi::RemoteTarget::new(
                "10.0.0.9",
                4420,
                1,
                &format!("nqn.2026-12.io.dia:S{n}:ns1"),
                0,
            )
            .unwrap()
        };
        let mut dirty = RegionSet::new();
        dirty.insert(3, 5);
        dirty.insert(9, 10);
        Namespace {
            size_blocks: 10 << 8,
            lba_shift: 12,
            attached: true,
            label: label("mirror"),
            qos: abi::QosSettings::default(),
            remote: None,
            mirror: Some(MirrorRecord {
                generation: 7,
                plexes: vec![
                    PlexRecord {
                        target: t(1),
                        state: abi::PLEX_IN_SYNC,
                        dirty: RegionSet::new(),
                        resync_bytes: 5 << 20,
                        faults: 1,
                    },
                    PlexRecord {
                        target: t(2),
                        state: abi::PLEX_OUT_OF_SYNC,
                        dirty,
                        resync_bytes: 0,
                        faults: 2,
                    },
                ],
            }),
            plex_record: abi::PlexRecord::default(),
            map: ChunkMap::default(),
        }
    }

    /// A mirror record keeps its generation, plexes, states, dirty ranges
    /// and counters; its largest form fits the reckoning of new slots.
    #[test]
    fn plex_records_round_trip_with_the_chunk_map() {
        let mut plex = Namespace {
            size_blocks: 1 << 12,
            lba_shift: 12,
            attached: true,
            label: label("plex"),
            qos: abi::QosSettings::default(),
            remote: None,
            mirror: None,
            plex_record: abi::PlexRecord {
                generation: 9,
                in_sync: [3, 4, 0, 0],
                reserved: [0; 8],
            },
            map: [(0, 5), (3, 1)].into_iter().collect(),
        };
        let meta = BTreeMap::from([(1, plex.clone()), (2, remote_ns())]);
        let encoded = encode_meta(&meta);
        assert_eq!(encoded[4 + 6], KIND_PLEX);
        let back = decode_meta(&encoded, 8).unwrap();
        assert_eq!(back[&1].plex_record, meta[&1].plex_record);
        assert_eq!(back[&1].map, meta[&1].map);
        assert_eq!(encode_meta(&back), encoded);
        // Its worst size is what format 4 reckoned for any record.
        assert!(worst_meta_len(back.values(), 8) <= slot_bytes_for(8) as usize);
        // A zero record is a plain local namespace; a zero one tagged as a
        // plex, or reserved bytes set, is refused.
        plex.plex_record = abi::PlexRecord::default();
        let plain = encode_meta(&BTreeMap::from([(1, plex)]));
        assert_eq!(plain[4 + 6], KIND_LOCAL);
        let mut bad = encoded.clone();
        bad[4 + NS_HEADER + 8 + 32] = 1;
        assert!(decode_meta(&bad, 8).is_err());
    }

    #[test]
    fn mirror_records_round_trip() {
        let meta = BTreeMap::from([(2, mirror_ns()), (5, remote_ns())]);
        let encoded = encode_meta(&meta);
        let back = decode_meta(&encoded, 8).unwrap();
        assert_eq!(back[&2].mirror, meta[&2].mirror);
        assert_eq!(back[&5].mirror, None);
        assert_eq!(back[&5].remote, meta[&5].remote);
        assert_eq!(encode_meta(&back), encoded);
        let mut big = mirror_ns();
        let m = big.mirror.as_mut().unwrap();
        for i in 2..4 {
            let mut p = m.plexes[1].clone();
            p.target.nsid = i;
            m.plexes.push(p);
        }
        for p in &mut m.plexes[1..] {
            p.dirty = RegionSet::new();
            for r in 0..MAX_DIRTY_RANGES as u32 {
                p.dirty.insert(r * 2, r * 2 + 1);
            }
        }
        big.size_blocks = 1 << 30;
        let one = encode_meta(&BTreeMap::from([(1, big.clone())]));
        // The in-sync plex has no dirty range: all but its ranges.
        assert_eq!(
            one.len(),
            4 + MIRROR_RECORD - MAX_DIRTY_RANGES * 8,
            "the largest record"
        );
        assert_eq!(
            worst_meta_len([&big].into_iter(), 0),
            META_HEADER + 4 + MIRROR_RECORD
        );
        let all: BTreeMap<u32, Namespace> =
            (1..=MAX_NAMESPACES).map(|id| (id, big.clone())).collect();
        assert!(META_HEADER + encode_meta(&all).len() <= new_slot_bytes(0) as usize);
    }

    /// A mirror record that breaks a rule is refused: no plex in sync, a
    /// dirty in-sync plex, ranges out of order or past the namespace, a
    /// bad state or plex count, reserved bytes, a cut record.
    #[test]
    fn garbage_in_mirror_records_is_refused() {
        let good = encode_meta(&BTreeMap::from([(2, mirror_ns())]));
        assert!(decode_meta(&good, 8).is_ok());
        let m = 4 + NS_HEADER;
        let plex0 = m + 12;
        let state0 = plex0 + TARGET_RECORD;
        let plex1 = state0 + 4 + 16 + 4;
        let state1 = plex1 + TARGET_RECORD;
        let ranges1 = state1 + 4 + 16 + 4;
        let damaged = |at: usize, value: u8| {
            let mut b = good.clone();
            b[at] = value;
            decode_meta(&b, 8)
        };
        for (at, value, what) in [
            (m + 8, 0, "no plex"),
            (m + 8, 5, "five plexes"),
            (m + 9, 1, "reserved"),
            (state0, abi::PLEX_OUT_OF_SYNC, "none in sync"),
            (state0, abi::PLEX_RESYNCING, "resyncing is not kept"),
            (state0 + 1, 1, "plex reserved"),
            (state1, abi::PLEX_IN_SYNC, "in sync with dirty regions"),
            (state1, abi::PLEX_NEW, "new is not kept"),
            (ranges1, 11, "range past the namespace"),
            (ranges1 + 8, 4, "ranges overlap"),
            (ranges1 - 4, 33, "too many ranges"),
            (plex1, b'x', "address"),
        ] {
            assert!(damaged(at, value).is_err(), "{what} accepted");
        }
        // The second plex's target made the first's: a duplicate.
        let mut b = good.clone();
        let first = b[plex0..plex0 + TARGET_RECORD].to_vec();
        b[plex1..plex1 + TARGET_RECORD].copy_from_slice(&first);
        assert!(decode_meta(&b, 8).is_err(), "duplicate target accepted");
        for cut in [1, 8, 30] {
            assert!(
                decode_meta(&good[..good.len() - cut], 8).is_err(),
                "cut by {cut}"
            );
        }
    }
}
