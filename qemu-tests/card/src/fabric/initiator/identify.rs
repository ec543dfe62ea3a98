//! The Identify pages as the host reads them: the controller fields the
//! initiator needs (MDTS, CNTLID, MAXCMD, KAS, ONCS, VWC, SGLS, controller
//! type, and the Fabrics IOCCSZ/ICDOFF) and a namespace's size and LBA
//! format. Offsets as in NVMe 1.4 / NVMe-oF 1.1, the ones the target's
//! `identify` module writes (a test reads the target's own pages back).

use super::super::identify::IDENTIFY_BYTES;
use super::super::pdu::{le16, le32, le64};
use super::error::Error;
use super::LBA_SHIFT_RANGE;

/// Byte offsets in Identify Controller.
mod ctrl {
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const CNTRLTYPE: usize = 111;
    pub const KAS: usize = 320;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const VWC: usize = 525;
    pub const SGLS: usize = 536;
    pub const IOCCSZ: usize = 1792;
    pub const ICDOFF: usize = 1800;
}

/// Byte offsets in Identify Namespace.
mod ns {
    pub const NSZE: usize = 0;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const DLFEAT: usize = 33;
    pub const LBAF: usize = 128;
    pub const LBAF_BYTES: usize = 4;
}

/// ONCS: Dataset Management.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS: Write Zeroes.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// CNTRLTYPE of an I/O controller (0: not reported, pre-1.4).
const CNTRLTYPE_IO: u8 = 1;
/// Bytes of a command in a capsule, which IOCCSZ counts too.
const SQE_BYTES: usize = 64;

/// What the initiator uses of Identify Controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerInfo {
    /// Controller id.
    pub cntlid: u16,
    /// Maximum data transfer size, log2 of pages (0: no limit).
    pub mdts: u8,
    /// Keep Alive granularity, 100 ms units (0: no keep-alive support).
    pub kas: u16,
    /// Most commands outstanding per queue (0: not reported).
    pub maxcmd: u16,
    /// Number of namespaces.
    pub nn: u32,
    /// Optional NVM commands supported.
    pub oncs: u16,
    /// A volatile write cache is present.
    pub vwc: bool,
    /// In-capsule data an I/O command may carry (from IOCCSZ; 0 if ICDOFF
    /// places it anywhere but right after the command).
    pub in_capsule: usize,
}

impl ControllerInfo {
    /// Parses Identify Controller (CNS 01h).
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        if b.len() < IDENTIFY_BYTES {
            return Err(Error::Unusable("Identify Controller shorter than 4 KiB"));
        }
        let ctype = b[ctrl::CNTRLTYPE];
        if ctype != 0 && ctype != CNTRLTYPE_IO {
            return Err(Error::Unusable("not an I/O controller"));
        }
        if le32(b, ctrl::SGLS) & 3 == 0 {
            return Err(Error::Unusable("the controller supports no SGLs"));
        }
        let ioccsz = le32(b, ctrl::IOCCSZ) as usize;
        let in_capsule = if le16(b, ctrl::ICDOFF) == 0 {
            ioccsz.saturating_mul(16).saturating_sub(SQE_BYTES)
        } else {
            0
        };
        Ok(Self {
            cntlid: le16(b, ctrl::CNTLID),
            mdts: b[ctrl::MDTS],
            kas: le16(b, ctrl::KAS),
            maxcmd: le16(b, ctrl::MAXCMD),
            nn: le32(b, ctrl::NN),
            oncs: le16(b, ctrl::ONCS),
            vwc: b[ctrl::VWC] & 1 != 0,
            in_capsule,
        })
    }

    /// Largest transfer of one command in bytes, for `page` bytes per
    /// memory page (CAP.MPSMIN); `None`: no limit.
    pub fn max_transfer(&self, page: u64) -> Option<u64> {
        (self.mdts != 0).then(|| page.checked_shl(u32::from(self.mdts)).unwrap_or(u64::MAX))
    }
}

/// What the initiator uses of Identify Namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Size in logical blocks.
    pub blocks: u64,
    /// log2 of the logical block size.
    pub lba_shift: u8,
    /// Deallocated blocks read as zeroes (DLFEAT).
    pub deallocated_reads_zeroes: bool,
    /// dia: the namespace's plex record (vendor bytes 768..816 of a dia
    /// card's target; zero when they do not hold one).
    pub plex_record: dia_abi::card::PlexRecord,
}

impl NamespaceInfo {
    /// Parses Identify Namespace (CNS 00h); an all-zero page (an inactive
    /// namespace) is Invalid Namespace.
    pub fn parse(b: &[u8]) -> Result<Self, Error> {
        if b.len() < IDENTIFY_BYTES {
            return Err(Error::Unusable("Identify Namespace shorter than 4 KiB"));
        }
        let blocks = le64(b, ns::NSZE);
        if blocks == 0 {
            return Err(Error::Status(super::Status(
                super::super::command::status::INVALID_NAMESPACE
                    | super::super::command::status::DNR,
            )));
        }
        // FLBAS bits 3:0 and 6:5 pick the format.
        let flbas = b[ns::FLBAS];
        let index = usize::from(flbas & 0xf) | usize::from((flbas >> 5) & 3) << 4;
        if index > usize::from(b[ns::NLBAF]) {
            return Err(Error::Unusable(
                "FLBAS names an LBA format the namespace lacks",
            ));
        }
        let f = ns::LBAF + index * ns::LBAF_BYTES;
        if le16(b, f) != 0 {
            return Err(Error::Unusable("LBA format with metadata"));
        }
        let lba_shift = b[f + 2];
        if !LBA_SHIFT_RANGE.contains(&lba_shift) {
            return Err(Error::Unusable("logical block size outside 512 B..64 KiB"));
        }
        Ok(Self {
            blocks,
            lba_shift,
            deallocated_reads_zeroes: b[ns::DLFEAT] & 7 == 1,
            plex_record: super::super::identify::plex_record_of(
                &b[super::super::identify::PLEX_RECORD_AT..],
            )
            .unwrap_or_default(),
        })
    }

    /// Bytes per logical block.
    pub fn block_size(&self) -> u32 {
        1 << self.lba_shift
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::identify as target;
    use super::*;

    #[test]
    fn the_targets_pages_read_back() {
        let c = ControllerInfo::parse(&target::controller(&target::ControllerInfo {
            cntlid: 7,
            serial: "S",
            subnqn: "nqn.x",
            discovery: false,
        }))
        .unwrap();
        assert_eq!(c.cntlid, 7);
        assert_eq!(c.mdts, super::super::super::MDTS_SHIFT);
        assert_eq!(c.maxcmd, super::super::super::QUEUE_ENTRIES);
        assert_eq!(c.in_capsule, super::super::super::IN_CAPSULE_BYTES);
        assert_eq!(c.max_transfer(4096), Some(512 << 10));
        assert_eq!(
            c.oncs & (ONCS_DSM | ONCS_WRITE_ZEROES),
            ONCS_DSM | ONCS_WRITE_ZEROES
        );
        assert!(c.vwc && c.nn == 1);
        // A discovery controller is not one to do I/O with.
        assert!(
            ControllerInfo::parse(&target::controller(&target::ControllerInfo {
                cntlid: 7,
                serial: "S",
                subnqn: "nqn.x",
                discovery: true,
            }))
            .is_err()
        );
        let n = NamespaceInfo::parse(&target::namespace(Some(&target::NamespaceInfo {
            size_blocks: 1000,
            lba_shift: 9,
            nguid: [1; 16],
            plex_record: dia_abi::card::PlexRecord {
                generation: 5,
                in_sync: [1, 2, 3, 4],
                reserved: [0; 8],
            },
        })))
        .unwrap();
        assert_eq!((n.blocks, n.block_size()), (1000, 512));
        assert_eq!(n.plex_record.generation, 5);
        assert_eq!(n.plex_record.in_sync, [1, 2, 3, 4]);
        assert!(n.deallocated_reads_zeroes);
        assert!(matches!(
            NamespaceInfo::parse(&target::namespace(None)),
            Err(Error::Status(_))
        ));
        assert!(NamespaceInfo::parse(&[0; 100]).is_err());
    }
}
