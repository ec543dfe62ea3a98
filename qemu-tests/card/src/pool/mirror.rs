//! Mirrored namespaces as the pool keeps them: the plex table (targets,
//! per-plex state), the mirror's generation, and per plex the regions it
//! misses (`RegionSet`) with its resync and fault counters. The pool moves
//! none of a mirror's data: the card's I/O path (`crate::mirror`) reaches
//! the plexes and stores the record here whenever it changes, then commits.
//!
//! The regions a plex misses are kept as a set of ranges of 1 MiB regions
//! (`abi::MIRROR_REGION_SHIFT`), at most [`MAX_DIRTY_RANGES`] per plex: a
//! record has a bounded size (a bitmap of a 1 PiB namespace would not fit
//! a metadata slot). When one more range would not fit, the two ranges
//! with the smallest gap between them are merged: the regions between them
//! become dirty too, which only makes a resync copy more, never less.

use std::collections::BTreeMap;

use dia_abi::card as abi;

use super::{Pool, StorageError};

/// Most ranges of dirty regions kept per plex.
pub const MAX_DIRTY_RANGES: usize = 32;

/// Regions of a namespace of `bytes` bytes (the last one may be partial).
pub fn regions_of(bytes: u64) -> u32 {
    // At most NAMESPACE_MAX_BYTES >> MIRROR_REGION_SHIFT = 2^30 regions.
    u32::try_from(bytes.div_ceil(1 << abi::MIRROR_REGION_SHIFT)).unwrap_or(u32::MAX)
}

/// A set of regions, as disjoint, non-adjacent ranges (start -> end,
/// exclusive), at most [`MAX_DIRTY_RANGES`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionSet {
    ranges: BTreeMap<u32, u32>,
}

impl RegionSet {
    /// No region.
    pub fn new() -> Self {
        Self::default()
    }

    /// Regions `0..regions`.
    pub fn all(regions: u32) -> Self {
        let mut s = Self::new();
        s.insert(0, regions);
        s
    }

    /// Whether it holds no region.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Regions it holds.
    pub fn count(&self) -> u64 {
        self.ranges.iter().map(|(&s, &e)| u64::from(e - s)).sum()
    }

    /// Its ranges (start, end exclusive), ascending.
    pub fn ranges(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Whether region `r` is in it.
    pub fn contains(&self, r: u32) -> bool {
        self.ranges
            .range(..=r)
            .next_back()
            .is_some_and(|(_, &e)| r < e)
    }

    /// Whether every region of `start..end` is in it.
    pub fn covers(&self, start: u32, end: u32) -> bool {
        start >= end
            || self
                .ranges
                .range(..=start)
                .next_back()
                .is_some_and(|(_, &e)| end <= e)
    }

    /// Adds regions `start..end`; whether the set grew (a region that was
    /// not in it now is, or a merge made it hold more).
    pub fn insert(&mut self, start: u32, end: u32) -> bool {
        if start >= end || self.covers(start, end) {
            return false;
        }
        let (mut s, mut e) = (start, end);
        // Every range that overlaps or touches start..end joins it.
        let touching: Vec<(u32, u32)> = self
            .ranges
            .range(..=end)
            .rev()
            .take_while(|(_, &re)| re >= start)
            .map(|(&rs, &re)| (rs, re))
            .collect();
        for (rs, re) in touching {
            self.ranges.remove(&rs);
            s = s.min(rs);
            e = e.max(re);
        }
        self.ranges.insert(s, e);
        self.coarsen();
        true
    }

    /// Adds every region of `other`; whether the set grew.
    pub fn union(&mut self, other: &RegionSet) -> bool {
        let mut grew = false;
        for (s, e) in other.ranges() {
            grew |= self.insert(s, e);
        }
        grew
    }

    /// Takes the lowest region out.
    pub fn pop_first(&mut self) -> Option<u32> {
        let (s, e) = self.ranges.pop_first()?;
        if s + 1 < e {
            self.ranges.insert(s + 1, e);
        }
        Some(s)
    }

    /// The lowest region not in `skip`.
    pub fn first_not(&self, skip: impl Fn(u32) -> bool) -> Option<u32> {
        self.ranges().flat_map(|(s, e)| s..e).find(|&r| !skip(r))
    }

    /// Takes region `r` out; `false` (and nothing changes) when that would
    /// split a range and make one range too many.
    pub fn remove(&mut self, r: u32) -> bool {
        let Some((&s, &e)) = self.ranges.range(..=r).next_back() else {
            return true;
        };
        if r >= e {
            return true;
        }
        if s < r && r + 1 < e && self.ranges.len() >= MAX_DIRTY_RANGES {
            return false;
        }
        self.ranges.remove(&s);
        if s < r {
            self.ranges.insert(s, r);
        }
        if r + 1 < e {
            self.ranges.insert(r + 1, e);
        }
        true
    }

    /// Merges the two ranges with the smallest gap between them until at
    /// most [`MAX_DIRTY_RANGES`] are left.
    fn coarsen(&mut self) {
        while self.ranges.len() > MAX_DIRTY_RANGES {
            let v: Vec<(u32, u32)> = self.ranges().collect();
            let Some(i) = (0..v.len() - 1).min_by_key(|&i| v[i + 1].0 - v[i].1) else {
                return;
            };
            self.ranges.remove(&v[i + 1].0);
            self.ranges.insert(v[i].0, v[i + 1].1);
        }
    }

    /// A set from ranges read back from the metadata: ascending, disjoint,
    /// non-adjacent, non-empty, within `regions`, at most
    /// [`MAX_DIRTY_RANGES`]; `None` otherwise.
    pub(super) fn from_ranges(ranges: &[(u32, u32)], regions: u32) -> Option<Self> {
        if ranges.len() > MAX_DIRTY_RANGES {
            return None;
        }
        let mut prev_end: Option<u32> = None;
        let mut out = BTreeMap::new();
        for &(s, e) in ranges {
            if s >= e || e > regions || prev_end.is_some_and(|p| s <= p) {
                return None;
            }
            prev_end = Some(e);
            out.insert(s, e);
        }
        Some(Self { ranges: out })
    }
}

/// One plex of a mirrored namespace as the pool keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlexRecord {
    /// Where the copy is (checked: `RemoteTarget::validate` holds).
    pub target: abi::RemoteTarget,
    /// `abi::PLEX_IN_SYNC` or `abi::PLEX_OUT_OF_SYNC` (a resync in progress
    /// is kept as out of sync: it goes on from the regions left).
    pub state: u8,
    /// The regions it misses (empty when in sync).
    pub dirty: RegionSet,
    /// Bytes resyncs copied to it since the namespace was created.
    pub resync_bytes: u64,
    /// Times it was taken out of sync.
    pub faults: u64,
}

/// A mirrored namespace's table: its generation and its plexes (1..=
/// `abi::MIRROR_MAX_PLEXES`, at least one in sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRecord {
    /// One more each time the set of in-sync plexes changes.
    pub generation: u64,
    /// In the order Create Mirror Namespace gave them.
    pub plexes: Vec<PlexRecord>,
}

impl MirrorRecord {
    /// Whether the record keeps the rules the card relies on: 1..=4
    /// plexes with valid, distinct targets, states in sync or out of sync,
    /// one in sync at least, no dirty region on an in-sync plex.
    pub fn valid(&self) -> bool {
        let n = self.plexes.len();
        (1..=abi::MIRROR_MAX_PLEXES).contains(&n)
            && self.plexes.iter().any(|p| p.state == abi::PLEX_IN_SYNC)
            && self.plexes.iter().enumerate().all(|(i, p)| {
                p.target.validate().is_ok()
                    && matches!(p.state, abi::PLEX_IN_SYNC | abi::PLEX_OUT_OF_SYNC)
                    && (p.state == abi::PLEX_OUT_OF_SYNC || p.dirty.is_empty())
                    && self.plexes[..i].iter().all(|q| q.target != p.target)
            })
    }
}

impl Pool {
    /// Records a mirrored namespace (detached; `size_blocks` blocks of
    /// 2^`lba_shift` bytes, the plexes' geometry) and commits; returns its
    /// id. It takes a namespace id and no chunk. Refused with
    /// `NoFreeId` when the metadata slot would not hold it at its largest.
    pub fn create_mirror_namespace(
        &self,
        size_blocks: u64,
        lba_shift: u8,
        label: [u8; abi::LABEL_LEN],
        mirror: MirrorRecord,
    ) -> Result<u32, StorageError> {
        if !mirror.valid() {
            return Err(StorageError::BadRemote);
        }
        let worst = {
            let st = self.read_state();
            super::format::worst_meta_len(st.namespaces.values(), self.total_chunks)
                + super::format::MIRROR_RECORD
        };
        if worst as u64 > self.slot_bytes {
            return Err(StorageError::NoFreeId);
        }
        self.insert_namespace_with(size_blocks, lba_shift, label, None, Some(mirror))
    }

    /// Sets local namespace `nsid`'s plex record (what a mirror of which
    /// it is a plex last told it) and commits: durable when this returns.
    pub fn set_plex_record(&self, nsid: u32, record: abi::PlexRecord) -> Result<(), StorageError> {
        {
            let mut st = self.write_state();
            let ns = st
                .namespaces
                .get_mut(&nsid)
                .ok_or(StorageError::NoNamespace(nsid))?;
            if !ns.is_local() || record.reserved != [0; 8] {
                return Err(StorageError::BadRemote);
            }
            if ns.plex_record == record {
                return Ok(());
            }
            ns.plex_record = record;
            st.dirty = true;
        }
        self.flush()
    }

    /// Replaces mirrored namespace `nsid`'s record (the I/O path's current
    /// view) without committing: the caller's next `flush` commits it.
    /// Records are stored in the order the I/O path made them, so the
    /// newest always wins.
    pub fn store_mirror(&self, nsid: u32, mirror: MirrorRecord) -> Result<(), StorageError> {
        let mut st = self.write_state();
        let ns = st
            .namespaces
            .get_mut(&nsid)
            .ok_or(StorageError::NoNamespace(nsid))?;
        if ns.mirror.is_none() || !mirror.valid() {
            return Err(StorageError::BadRemote);
        }
        ns.mirror = Some(mirror);
        st.dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_merge_split_and_count() {
        let mut s = RegionSet::new();
        assert!(s.insert(4, 6));
        assert!(!s.insert(4, 5), "already there");
        assert!(s.insert(6, 7), "adjacent: joins");
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(4, 7)]);
        assert!(s.insert(0, 1));
        assert!(s.insert(2, 5));
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 1), (2, 7)]);
        assert_eq!(s.count(), 6);
        assert!(s.contains(0) && !s.contains(1) && s.contains(6) && !s.contains(7));
        assert!(s.remove(4));
        assert_eq!(s.ranges().collect::<Vec<_>>(), vec![(0, 1), (2, 4), (5, 7)]);
        assert_eq!(s.first_not(|r| r < 3), Some(3));
        assert_eq!(s.pop_first(), Some(0));
        assert_eq!(s.pop_first(), Some(2));
        assert_eq!(s.count(), 3);
        assert_eq!(RegionSet::all(5).count(), 5);
        assert!(RegionSet::all(0).is_empty());
    }

    /// Past the range limit the closest ranges merge: the set only grows,
    /// never loses a region.
    #[test]
    fn too_many_ranges_merge_over_the_smallest_gap() {
        let mut s = RegionSet::new();
        let mut want = Vec::new();
        for i in 0..(MAX_DIRTY_RANGES as u32 + 5) {
            // Gaps of 10, except a gap of 1 after range 7.
            let at = i * 11;
            s.insert(at, at + 1);
            want.push(at);
        }
        s.insert(7 * 11 + 2, 7 * 11 + 3);
        want.push(7 * 11 + 2);
        assert!(s.ranges().count() <= MAX_DIRTY_RANGES);
        for r in want {
            assert!(s.contains(r), "region {r} lost");
        }
        // The one-region gap was merged first.
        assert!(s.contains(7 * 11 + 1));
        // A removal that would split a range when full is refused.
        let full: Vec<(u32, u32)> = s.ranges().collect();
        let (a, b) = full.iter().copied().find(|(a, b)| b - a >= 3).unwrap();
        assert!(!s.remove(a + 1));
        assert!(s.contains(a + 1) && s.contains(b - 1));
        assert!(s.remove(a), "the start of a range can go");
    }

    #[test]
    fn ranges_read_back_are_checked() {
        assert!(RegionSet::from_ranges(&[(0, 2), (3, 4)], 4).is_some());
        for bad in [
            &[(0, 0)][..],
            &[(2, 1)],
            &[(0, 5)],
            &[(0, 2), (2, 3)],
            &[(3, 4), (0, 1)],
        ] {
            assert!(RegionSet::from_ranges(bad, 4).is_none(), "{bad:?}");
        }
        let many: Vec<(u32, u32)> = (0..=MAX_DIRTY_RANGES as u32)
            .map(|i| (i * 2, i * 2 + 1))
            .collect();
        assert!(RegionSet::from_ranges(&many, 1000).is_none());
    }
}
