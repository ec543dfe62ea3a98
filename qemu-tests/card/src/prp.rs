//! Physical Region Page (PRP) lists: how a command describes the guest
//! memory it reads or writes, one page per entry, as NVMe defines them.

use dia_abi::card as abi;

use crate::guest_memory::GuestMemory;
use crate::inline_vec::InlineVec;

const PAGE: u64 = abi::PRP_PAGE_BYTES;

/// A transfer's guest (address, length) segments: up to four inline (a
/// transfer of up to 12 KiB, or 8 KiB from any offset), more on the heap.
pub(crate) type Segments = InlineVec<(u64, usize), 4>;

/// The segments being built: every finished one, and the run of guest
/// pages that follow each other being grown (pushed when a gap ends it),
/// so neighbouring pages become one segment: one iovec and one bounds
/// check for the run.
struct Builder {
    segs: Segments,
    run: (u64, usize),
    /// The most segments the transfer can have (a hint for the heap).
    pages: usize,
}

impl Builder {
    /// Adds the `n` bytes at `addr` (a page start): to the run when it
    /// ends there, else as a new run.
    fn add(&mut self, addr: u64, n: usize) {
        if self.run.0.checked_add(self.run.1 as u64) == Some(addr) {
            self.run.1 += n;
        } else {
            self.segs.push(self.run, self.pages);
            self.run = (addr, n);
        }
    }

    fn finish(mut self) -> Segments {
        self.segs.push(self.run, self.pages);
        self.segs
    }
}

/// Splits a transfer of `len` bytes described by PRP1/PRP2 into guest
/// (address, length) segments, following PRP lists as NVMe defines them:
/// PRP1 may start at any dword offset; every later entry is page aligned;
/// when more than two pages are needed PRP2 points at a list whose last
/// entry chains to the next list page. Pages that follow each other in
/// guest memory come back as one segment.
pub(crate) fn prp_segments(
    mem: &GuestMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Segments, u16> {
    if len == 0 {
        return Ok(Segments::new((0, 0)));
    }
    if prp1 & 3 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    let first = len.min((PAGE - prp1 % PAGE) as usize);
    let mut b = Builder {
        segs: Segments::new((0, 0)),
        run: (prp1, first),
        // Pages of the transfer, the most segments it can have.
        pages: len.div_ceil(PAGE as usize) + 1,
    };
    let mut left = len - first;
    if left == 0 {
        return Ok(b.finish());
    }
    if left <= PAGE as usize {
        if !prp2.is_multiple_of(PAGE) {
            return Err(abi::STATUS_INVALID_PRP_OFFSET);
        }
        b.add(prp2, left);
        return Ok(b.finish());
    }
    // PRP2 is a list pointer (may have a dword-aligned offset).
    if prp2 & 7 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    let mut list = prp2;
    // List entries read a batch at a time: up to the list page's end, at
    // most as many as the transfer still needs (exactly the entries a walk
    // one entry at a time would read), and at most 64.
    let mut raw = [0u8; 64 * 8];
    while left > 0 {
        let in_page = ((PAGE - list % PAGE) / 8) as usize;
        let take = in_page.min(left.div_ceil(PAGE as usize)).min(64);
        let entries = &mut raw[..take * 8];
        mem.read(list, entries)
            .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
        for e in entries.chunks_exact(8) {
            // chunks_exact(8): always eight bytes.
            let addr = u64::from_le_bytes(e.try_into().unwrap_or_default());
            if addr % PAGE != 0 {
                return Err(abi::STATUS_INVALID_PRP_OFFSET);
            }
            if (list + 8).is_multiple_of(PAGE) && left > PAGE as usize {
                // The page's last entry, with more than a page to go:
                // it chains to the next list page.
                list = addr;
                break;
            }
            let n = left.min(PAGE as usize);
            b.add(addr, n);
            left -= n;
            list += 8;
        }
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::SharedMemory;

    fn mem() -> GuestMemory {
        GuestMemory::new(SharedMemory::anonymous("prp", 1 << 20).unwrap())
    }

    #[test]
    fn prp_single_and_two_pages() {
        let m = mem();
        let segs = |prp1, prp2, len| prp_segments(&m, prp1, prp2, len).map(Segments::into_vec);
        assert_eq!(segs(0x1000, 0, 4096), Ok(vec![(0x1000, 4096)]));
        assert_eq!(
            segs(0x1800, 0x5000, 4096),
            Ok(vec![(0x1800, 2048), (0x5000, 2048)])
        );
        assert_eq!(segs(0x1000, 0, 0), Ok(vec![]));
        assert_eq!(
            prp_segments(&m, 0x1802, 0, 8),
            Err(abi::STATUS_INVALID_PRP_OFFSET)
        );
        assert_eq!(
            prp_segments(&m, 0x1800, 0x5001, 4096),
            Err(abi::STATUS_INVALID_PRP_OFFSET)
        );
    }

    #[test]
    fn prp_list_with_chain() {
        let m = mem();
        // A list page at 0x10000 whose last entry chains to 0x11000.
        for i in 0..511u64 {
            m.write(0x10000 + i * 8, &(0x20000 + i * PAGE).to_le_bytes())
                .unwrap();
        }
        m.write(0x10000 + 511 * 8, &0x11000u64.to_le_bytes())
            .unwrap();
        m.write(0x11000, &0x90000u64.to_le_bytes()).unwrap();
        m.write(0x11008, &0x91000u64.to_le_bytes()).unwrap();
        // 1 page at PRP1, 511 from the first list page, 2 from the chained one.
        let len = 4096 * 514;
        // The list's pages follow each other: one segment per run.
        let segs = prp_segments(&m, 0x3000, 0x10000, len).map(Segments::into_vec);
        assert_eq!(
            segs,
            Ok(vec![
                (0x3000, 4096),
                (0x20000, 511 * 4096),
                (0x90000, 2 * 4096)
            ])
        );
    }

    #[test]
    fn prp_list_exactly_full_page_does_not_chain() {
        let m = mem();
        for i in 0..512u64 {
            m.write(0x10000 + i * 8, &(0x20000 + i * PAGE).to_le_bytes())
                .unwrap();
        }
        let segs = prp_segments(&m, 0x3000, 0x10000, 4096 * 513).map(Segments::into_vec);
        assert_eq!(segs, Ok(vec![(0x3000, 4096), (0x20000, 512 * 4096)]));
    }

    #[test]
    fn pages_that_follow_each_other_become_one_segment() {
        let m = mem();
        let segs = |prp1, prp2, len| prp_segments(&m, prp1, prp2, len).map(Segments::into_vec);
        // PRP1 ending where PRP2's page starts, from a page start or not.
        assert_eq!(segs(0x1000, 0x2000, 8192), Ok(vec![(0x1000, 8192)]));
        assert_eq!(segs(0x1800, 0x2000, 4096), Ok(vec![(0x1800, 4096)]));
        // A list with runs, a gap, a page before the last, and a short tail.
        let pages = [
            0x20000u64, 0x21000, 0x30000, 0x31000, 0x32000, 0x22000, 0x23000,
        ];
        for (i, p) in pages.iter().enumerate() {
            m.write(0x10000 + i as u64 * 8, &p.to_le_bytes()).unwrap();
        }
        assert_eq!(
            segs(0x1f000, 0x10000, 7 * 4096 + 100),
            Ok(vec![
                (0x1f000, 3 * 4096),
                (0x30000, 3 * 4096),
                (0x22000, 4096 + 100)
            ])
        );
    }

    #[test]
    fn prp_list_outside_memory() {
        let m = mem();
        assert_eq!(
            prp_segments(&m, 0x3000, 1 << 40, 3 * 4096),
            Err(abi::STATUS_DATA_TRANSFER_ERROR)
        );
    }
}
