//! Compiles the kernel module's `core`-only files on the host so `cargo test`
//! covers them without a guest: the queue ring bookkeeping (`kmod/ring.rs`)
//! and the port rings' (`kmod/port_ring.rs`) are included verbatim, exactly
//! as the module builds them.

#[expect(dead_code, reason = "the driver uses every item, the tests only some")]
#[path = "../../ring.rs"]
mod ring;

#[expect(dead_code, reason = "the driver uses every item, the tests only some")]
#[path = "../../port_ring.rs"]
mod port_ring;

#[cfg_attr(not(test), expect(dead_code, reason = "only the tests use it here"))]
#[path = "../../write_cache.rs"]
mod write_cache;

#[cfg(test)]
mod write_cache_tests {
    use super::write_cache::WriteCache;

    #[test]
    fn a_new_disk_sends_its_first_flush_to_the_card() {
        let c = WriteCache::new();
        assert!(!c.flush_covered(), "an earlier disk's writes may be cached");
        assert!(!c.unflushed(), "but none this disk's users were told about");
        c.synced(c.mark());
        assert!(c.flush_covered());
    }

    /// An O_DSYNC write: a FUA write that flushed the card's cache, then
    /// the block layer's flush, which has nothing left to cover.
    #[test]
    fn the_flush_after_a_fua_write_that_flushed_everything_is_covered() {
        let c = WriteCache::new();
        c.synced(c.mark());
        c.write_completed();
        assert!(!c.flush_covered() && c.unflushed());
        let fua = c.mark();
        c.synced(fua);
        assert!(c.flush_covered() && !c.unflushed());
    }

    /// A write that completes after a sync was submitted is not covered by
    /// it, whatever order the completions come in.
    #[test]
    fn a_write_completed_after_a_sync_was_submitted_needs_the_next_flush() {
        let c = WriteCache::new();
        c.synced(c.mark());
        let mark = c.mark();
        c.write_completed();
        c.synced(mark);
        assert!(!c.flush_covered() && c.unflushed());
        // An older sync completing late does not move the account back.
        let newer = c.mark();
        c.synced(newer);
        c.synced(mark);
        assert!(c.flush_covered());
    }
}

#[cfg(test)]
mod port_ring_tests {
    use proptest::prelude::*;

    use super::port_ring::{rx_tail, TxRing};

    #[test]
    fn sizes_must_be_powers_of_two() {
        assert!(TxRing::new(0).is_none());
        assert!(TxRing::new(1).is_none());
        assert!(TxRing::new(6).is_none());
        assert!(TxRing::new(256).is_some());
    }

    #[test]
    fn keeps_one_descriptor_free() {
        let mut r = TxRing::new(4).unwrap();
        assert_eq!((r.push(), r.push(), r.push()), (Some(0), Some(1), Some(2)));
        assert_eq!(r.push(), None);
        assert_eq!(r.free(), 0);
        assert_eq!(r.done_until(2), Some(2));
        assert_eq!(r.pop_clean(), Some(0));
        assert_eq!(r.pop_clean(), Some(1));
        assert_eq!(r.push(), Some(3));
        assert_eq!(r.push(), Some(0), "wraps");
        assert_eq!(r.tail(), 1);
    }

    #[test]
    fn a_head_beyond_the_tail_is_ignored() {
        let mut r = TxRing::new(8).unwrap();
        r.push();
        r.push();
        assert_eq!(
            r.done_until(3),
            None,
            "the card cannot have sent more than it has"
        );
        assert_eq!(r.done_until(8), None, "outside the ring");
        assert_eq!(r.done_until(u32::MAX), None);
        assert_eq!(r.done_until(0), Some(0));
        assert_eq!(r.done_until(2), Some(2));
    }

    #[test]
    fn rx_tail_leaves_the_previous_descriptor_unposted() {
        assert_eq!(rx_tail(0, 64), 63);
        assert_eq!(rx_tail(5, 64), 4);
    }

    proptest! {
        /// Any sequence of pushes and reclaims keeps in_flight + free = size - 1
        /// and hands descriptors back in the order they went out.
        #[test]
        fn accounting_holds(ops in proptest::collection::vec(0u8..3, 0..400)) {
            let mut r = TxRing::new(16).unwrap();
            let mut out = std::collections::VecDeque::new();
            for op in ops {
                match op {
                    0 | 1 => if let Some(i) = r.push() { out.push_back(i) },
                    _ => prop_assert_eq!(r.pop_clean(), out.pop_front()),
                }
                prop_assert_eq!(r.in_flight() + r.free(), 15);
                prop_assert_eq!(usize::from(r.in_flight()), out.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::ring::RingState;

    #[test]
    fn rejects_tiny_queues() {
        assert!(RingState::new(0).is_none());
        assert!(RingState::new(1).is_none());
        assert!(RingState::new(2).is_some());
    }

    #[test]
    fn sq_keeps_one_slot_free() {
        let mut r = RingState::new(4).unwrap();
        assert_eq!(r.sq_push(), Some(0));
        assert_eq!(r.sq_push(), Some(1));
        assert_eq!(r.sq_push(), Some(2));
        assert_eq!(r.sq_push(), None, "a full SQ has size-1 entries");
        assert!(r.set_sq_head(2));
        assert_eq!(r.sq_push(), Some(3));
        assert_eq!(r.sq_tail(), 0);
        assert_eq!(r.sq_push(), Some(0));
        assert_eq!(r.sq_push(), None);
    }

    #[test]
    fn out_of_range_sq_head_is_ignored() {
        let mut r = RingState::new(8).unwrap();
        r.sq_push();
        assert!(!r.set_sq_head(8));
        assert!(!r.set_sq_head(u16::MAX));
        assert_eq!(r.sq_push(), Some(1));
    }

    #[test]
    fn cq_phase_flips_on_every_wrap() {
        let mut r = RingState::new(3).unwrap();
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(r.cq_expect());
            r.cq_advance();
        }
        assert_eq!(
            seen,
            vec![
                (0, true),
                (1, true),
                (2, true),
                (0, false),
                (1, false),
                (2, false),
                (0, true)
            ]
        );
    }

    proptest! {
        /// Against a model: a card that consumes in order never lets the
        /// driver overwrite an entry it has not consumed, and the driver
        /// always finds the card's completions with the phase it expects.
        #[test]
        fn matches_a_model_card(size in 2u16..64, ops in proptest::collection::vec(0u8..3, 1..400)) {
            let mut r = RingState::new(size).unwrap();
            let mut submitted: u64 = 0;
            let mut consumed: u64 = 0;
            let mut completed: u64 = 0;
            for op in ops {
                match op {
                    0 => {
                        let in_flight = submitted - consumed;
                        match r.sq_push() {
                            Some(slot) => {
                                prop_assert!(in_flight < u64::from(size) - 1);
                                prop_assert_eq!(u64::from(slot), submitted % u64::from(size));
                                submitted += 1;
                            }
                            None => prop_assert_eq!(in_flight, u64::from(size) - 1),
                        }
                    }
                    1 if consumed < submitted => {
                        consumed += 1;
                        prop_assert!(r.set_sq_head((consumed % u64::from(size)) as u16));
                    }
                    _ if completed < consumed => {
                        let (slot, phase) = r.cq_expect();
                        prop_assert_eq!(u64::from(slot), completed % u64::from(size));
                        prop_assert_eq!(phase, (completed / u64::from(size)).is_multiple_of(2));
                        r.cq_advance();
                        completed += 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The module declares the mirror structs `FromBytes`/`AsBytes` (kmod/abi.rs)
/// on the ground that they have no padding: every field starts where the one
/// before it ends and the last ends at the struct's size.
#[cfg(test)]
mod mirror_abi_layout {
    use core::mem::{offset_of, size_of};

    use dia_abi::card::{
        MirrorNamespaceCreate, MirrorPlex, MirrorStatus, PlexStatus, RemoteTarget,
    };
    use dia_abi::ioctl::{DiaNsCreateMirror, DiaNsMirrorStatus, DiaNsSetMirror};

    /// `fields`: (offset, size) in declaration order.
    fn contiguous(name: &str, size: usize, fields: &[(usize, usize)]) {
        let mut end = 0;
        for (i, &(offset, len)) in fields.iter().enumerate() {
            assert_eq!(offset, end, "{name}: padding before field {i}");
            end = offset + len;
        }
        assert_eq!(end, size, "{name}: padding at the end");
    }

    macro_rules! fields {
        ($t:ty: $($f:ident),+) => {
            contiguous(
                stringify!($t),
                size_of::<$t>(),
                &[$((offset_of!($t, $f), {
                    fn len<T>(_: fn(&$t) -> &T) -> usize { size_of::<T>() }
                    len(|v: &$t| &v.$f)
                })),+],
            )
        };
    }

    #[test]
    fn mirror_structs_have_no_padding() {
        fields!(RemoteTarget: addr, port, digests, reserved, nsid, subnqn);
        fields!(MirrorPlex: target, state, reserved);
        fields!(MirrorNamespaceCreate: label, generation, plex_count, reserved0, plexes, reserved);
        fields!(DiaNsCreateMirror: nsid, reserved, create);
        fields!(DiaNsSetMirror: nsid, reserved, plexes);
        fields!(
            PlexStatus: state, path, local, reserved, dirty_regions, resync_bytes,
            resync_bytes_per_s, faults, reads, reserved1
        );
        fields!(MirrorStatus: generation, regions, plex_count, reserved, reserved1, plexes);
        fields!(DiaNsMirrorStatus: nsid, reserved, status);
    }
}
