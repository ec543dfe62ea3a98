//! A namespace's chunk map: logical chunk -> physical chunk, for its
//! allocated chunks only. Every I/O command looks it up (a write twice), so
//! the chunks a namespace is most likely to use, its first
//! [`DENSE_CHUNKS`], are a table indexed by the logical chunk; the rest, if
//! the namespace is larger, are in a hash map.

use std::collections::HashMap;

/// Logical chunks kept in the table: the first 64 GiB of a namespace, in
/// at most 256 KiB (4 bytes a chunk). A table of the whole namespace would
/// not do: namespaces are thin, up to `abi::NAMESPACE_MAX_BYTES` (1 PiB:
/// 4 GiB of table), and a guest chooses which chunks it writes. Beyond
/// the table, chunks go to a `HashMap` with std's keyed SipHash: their
/// keys are the guest's choice (LBA >> shift), and a keyed hash keeps
/// colliding keys from being chosen.
pub(super) const DENSE_CHUNKS: u32 = 1 << 16;

/// A table entry of a chunk not mapped. No physical chunk has this number:
/// they are below the pool's chunk count, itself a `u32`.
const UNMAPPED: u32 = u32::MAX;

/// Logical chunk -> physical chunk of one namespace.
#[derive(Debug, Clone, Default)]
pub(super) struct ChunkMap {
    /// Logical chunks `0..table.len()` (at most [`DENSE_CHUNKS`]): the
    /// physical chunk, or [`UNMAPPED`]. Grows up to the highest chunk
    /// mapped in it; never shrinks.
    table: Vec<u32>,
    /// Mapped logical chunks from [`DENSE_CHUNKS`] on.
    beyond: HashMap<u32, u32>,
    /// Mapped chunks, in both.
    len: usize,
}

impl ChunkMap {
    /// The physical chunk behind logical chunk `l`, if mapped.
    pub(super) fn get(&self, l: u32) -> Option<u32> {
        match self.table.get(l as usize) {
            Some(&p) => (p != UNMAPPED).then_some(p),
            None if l < DENSE_CHUNKS => None,
            None => self.beyond.get(&l).copied(),
        }
    }

    /// Whether logical chunk `l` is mapped.
    pub(super) fn contains(&self, l: u32) -> bool {
        self.get(l).is_some()
    }

    /// Maps `l` to `p` (a physical chunk of the pool, so below `u32::MAX`);
    /// returns what `l` mapped to before.
    pub(super) fn insert(&mut self, l: u32, p: u32) -> Option<u32> {
        debug_assert_ne!(p, UNMAPPED, "not a physical chunk");
        let old = if l < DENSE_CHUNKS {
            let i = l as usize;
            if i >= self.table.len() {
                self.table.resize(i + 1, UNMAPPED);
            }
            let old = std::mem::replace(&mut self.table[i], p);
            (old != UNMAPPED).then_some(old)
        } else {
            self.beyond.insert(l, p)
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Unmaps `l`; returns what it mapped to.
    pub(super) fn remove(&mut self, l: u32) -> Option<u32> {
        let old = match self.table.get_mut(l as usize) {
            Some(p) => {
                let old = std::mem::replace(p, UNMAPPED);
                (old != UNMAPPED).then_some(old)
            }
            None if l < DENSE_CHUNKS => None,
            None => self.beyond.remove(&l),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Mapped chunks.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no chunk is mapped.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every (logical, physical) mapping, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let table = self
            .table
            .iter()
            .enumerate()
            .filter(|&(_, &p)| p != UNMAPPED)
            // Below DENSE_CHUNKS: fits u32.
            .map(|(l, &p)| (l as u32, p));
        table.chain(self.beyond.iter().map(|(&l, &p)| (l, p)))
    }

    /// Every mapped physical chunk.
    pub(super) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().map(|(_, p)| p)
    }
}

/// The same mappings, however each map came by them.
impl PartialEq for ChunkMap {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(l, p)| other.get(l) == Some(p))
    }
}

impl Eq for ChunkMap {}

impl FromIterator<(u32, u32)> for ChunkMap {
    fn from_iter<I: IntoIterator<Item = (u32, u32)>>(iter: I) -> Self {
        let mut m = Self::default();
        for (l, p) in iter {
            m.insert(l, p);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn behaves_as_a_map_on_both_sides_of_the_table() {
        let mut m = ChunkMap::default();
        let mut model = BTreeMap::new();
        let keys = [
            0,
            1,
            7,
            DENSE_CHUNKS - 1,
            DENSE_CHUNKS,
            DENSE_CHUNKS + 5,
            u32::MAX,
        ];
        for (i, &l) in keys.iter().enumerate() {
            let p = i as u32 * 3;
            assert_eq!(m.insert(l, p), model.insert(l, p));
        }
        // Remapping returns the old chunk and counts nothing new.
        assert_eq!(m.insert(7, 100), model.insert(7, 100));
        assert_eq!(m.insert(DENSE_CHUNKS, 101), model.insert(DENSE_CHUNKS, 101));
        assert_eq!(m.len(), model.len());
        for l in keys.iter().copied().chain([2, 8, DENSE_CHUNKS + 1]) {
            assert_eq!(m.get(l), model.get(&l).copied(), "chunk {l}");
            assert_eq!(m.contains(l), model.contains_key(&l));
        }
        let mut all: Vec<(u32, u32)> = m.iter().collect();
        all.sort_unstable();
        assert_eq!(all, model.iter().map(|(&l, &p)| (l, p)).collect::<Vec<_>>());
        for l in [1, 2, DENSE_CHUNKS + 5, DENSE_CHUNKS + 6, u32::MAX] {
            assert_eq!(m.remove(l), model.remove(&l), "chunk {l}");
        }
        assert_eq!(m.len(), model.len());
        assert_eq!(m.get(1), None);
        assert_eq!(m.get(u32::MAX), None);
        // Equality looks at mappings, not at how the table grew.
        let same: ChunkMap = model.iter().map(|(&l, &p)| (l, p)).collect();
        assert_eq!(m, same);
        assert_ne!(m, ChunkMap::default());
        let left: Vec<u32> = m.iter().map(|(l, _)| l).collect();
        for l in left {
            assert!(m.remove(l).is_some());
        }
        assert!(m.is_empty());
        assert_eq!(m, ChunkMap::default());
    }
}
