//! The PRP walk (`prp::prp_segments`) over PRP1/PRP2 and PRP list pages
//! anywhere in guest memory (or outside it). It must end with segments or
//! a status, never a panic or a hang, and segments must describe exactly
//! the transfer: PRP1 first, then page-aligned runs of pages, each ending
//! on a page boundary but the last, neighbours merged, adding up to the
//! length.

#![no_main]

use arbitrary::Arbitrary;
use dia_abi::card as abi;
use dia_card_model::fuzz;
use libfuzzer_sys::fuzz_target;

const PAGE: u64 = 4096;
const RAM_PAGES: u64 = 256;

/// A guest address: mostly inside the 1 MiB of guest RAM.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Page { page: u8, offset: u16 },
    Aligned { page: u8 },
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Self::Page { page, offset } => u64::from(page) * PAGE + u64::from(offset) % PAGE,
            Self::Aligned { page } => u64::from(page) * PAGE,
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    prp1: Addr,
    prp2: Addr,
    /// Transfer bytes (taken modulo a little over the largest transfer).
    len: u32,
    /// PRP list pages: where, and the entries from the page's start.
    lists: Vec<(u8, Vec<Addr>)>,
}

fuzz_target!(|input: Input| {
    let mem = fuzz::guest_memory((RAM_PAGES * PAGE) as usize);
    for (page, entries) in &input.lists {
        let base = u64::from(*page) * PAGE;
        for (i, e) in entries.iter().take(512).enumerate() {
            mem.write(base + i as u64 * 8, &e.get().to_le_bytes())
                .expect("inside guest RAM");
        }
    }
    let len = (input.len % (fuzz::MAX_TRANSFER_BYTES + 3 * PAGE as u32)) as usize;
    let (prp1, prp2) = (input.prp1.get(), input.prp2.get());
    match fuzz::prp_segments(&mem, prp1, prp2, len) {
        Ok(segs) => {
            assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), len, "{segs:?}");
            if len == 0 {
                assert!(segs.is_empty());
                return;
            }
            assert_eq!(segs[0].0, prp1);
            let first = (PAGE - prp1 % PAGE).min(len as u64) as usize;
            assert!(segs[0].1 >= first, "{segs:?}");
            for (i, &(addr, n)) in segs.iter().enumerate() {
                assert!(n > 0, "segment {i} empty");
                if i > 0 {
                    assert_eq!(addr % PAGE, 0, "segment {i} not page aligned");
                    let (a, m) = segs[i - 1];
                    let end = a.checked_add(m as u64);
                    assert_ne!(end, Some(addr), "segments {} and {i} not merged", i - 1);
                }
                if i + 1 < segs.len() {
                    let end = u128::from(addr) + n as u128;
                    assert_eq!(end % u128::from(PAGE), 0, "segment {i} ends inside a page");
                }
            }
            assert!(segs.len() <= len.div_ceil(PAGE as usize) + 1);
        }
        Err(status) => assert!(
            [
                abi::STATUS_INVALID_PRP_OFFSET,
                abi::STATUS_DATA_TRANSFER_ERROR,
                abi::STATUS_INVALID_FIELD,
            ]
            .contains(&status),
            "status {status:#x}"
        ),
    }
});
