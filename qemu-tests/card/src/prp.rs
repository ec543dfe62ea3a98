//! Physical Region Page (PRP) lists: how a command describes the guest
//! memory it reads or writes, one page per entry, as NVMe defines them.

use dia_abi::card as abi;

use crate::guest_memory::GuestMemory;
use crate::inline_vec::InlineVec;

const PAGE: u64 = abi::PRP_PAGE_BYTES;

/// A transfer's guest (address, length) segments: up to four inline (a
/// transfer of up to 12 KiB, or 8 KiB from any offset), more on the heap.
pub(crate) type Segments = InlineVec<(u64, usize), 4>;

/// Splits a transfer of `len` bytes described by PRP1/PRP2 into guest
/// (address, length) segments, following PRP lists as NVMe defines them:
/// PRP1 may start at any dword offset; every later entry is page aligned;
/// when more than two pages are needed PRP2 points at a list whose last
/// entry chains to the next list page.
pub(crate) fn prp_segments(
    mem: &GuestMemory,
    prp1: u64,
    prp2: u64,
    len: usize,
) -> Result<Segments, u16> {
    let mut segs = Segments::new((0, 0));
    if len == 0 {
        return Ok(segs);
    }
    if prp1 & 3 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    // Pages of the transfer, the most segments it can have.
    let pages = len.div_ceil(PAGE as usize) + 1;
    let first = len.min((PAGE - prp1 % PAGE) as usize);
    segs.push((prp1, first), pages);
    let mut left = len - first;
    if left == 0 {
        return Ok(segs);
    }
    if left <= PAGE as usize {
        if !prp2.is_multiple_of(PAGE) {
            return Err(abi::STATUS_INVALID_PRP_OFFSET);
        }
        segs.push((prp2, left), pages);
        return Ok(segs);
    }
    // PRP2 is a list pointer (may have a dword-aligned offset).
    if prp2 & 7 != 0 {
        return Err(abi::STATUS_INVALID_PRP_OFFSET);
    }
    let mut list = prp2;
    while left > 0 {
        let mut entry = [0u8; 8];
        mem.read(list, &mut entry)
            .map_err(|_| abi::STATUS_DATA_TRANSFER_ERROR)?;
        let addr = u64::from_le_bytes(entry);
        let last_in_page = (list + 8).is_multiple_of(PAGE);
        if last_in_page && left > PAGE as usize {
            // Chain to the next list page.
            if addr % PAGE != 0 {
                return Err(abi::STATUS_INVALID_PRP_OFFSET);
            }
            list = addr;
            continue;
        }
        if addr % PAGE != 0 {
            return Err(abi::STATUS_INVALID_PRP_OFFSET);
        }
        let n = left.min(PAGE as usize);
        segs.push((addr, n), pages);
        left -= n;
        list += 8;
        if segs.len() > pages {
            return Err(abi::STATUS_INVALID_FIELD);
        }
    }
    Ok(segs)
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
        let segs = prp_segments(&m, 0x3000, 0x10000, len).unwrap();
        assert_eq!(segs.len(), 514);
        assert_eq!(segs[1], (0x20000, 4096));
        assert_eq!(segs[511], (0x20000 + 510 * PAGE, 4096));
        assert_eq!(segs[512], (0x90000, 4096));
        assert_eq!(segs[513], (0x91000, 4096));
        assert_eq!(segs.iter().map(|s| s.1).sum::<usize>(), len);
    }

    #[test]
    fn prp_list_exactly_full_page_does_not_chain() {
        let m = mem();
        for i in 0..512u64 {
            m.write(0x10000 + i * 8, &(0x20000 + i * PAGE).to_le_bytes())
                .unwrap();
        }
        let segs = prp_segments(&m, 0x3000, 0x10000, 4096 * 513).unwrap();
        assert_eq!(segs.len(), 513);
        assert_eq!(segs[512], (0x20000 + 511 * PAGE, 4096));
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
