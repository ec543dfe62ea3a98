//! The data pages the target's admin commands return: Identify Controller
//! (with the Fabrics fields the Linux host checks: SGL support, IOCCSZ,
//! IORCSZ, MAXCMD, KAS, subnqn, controller type), Identify Namespace, the
//! active namespace list, namespace identification descriptors, and the
//! discovery log page. Pure byte layouts, offsets as in NVMe 1.4 / NVMe-oF 1.1.

use super::{IN_CAPSULE_BYTES, MDTS_SHIFT, QUEUE_ENTRIES};

/// Bytes of an Identify data structure.
pub const IDENTIFY_BYTES: usize = 4096;
/// NVMe version the target reports (1.3: namespace descriptors, Fabrics).
pub const VERSION: u32 = 0x0001_0300;
/// Keep Alive granularity (KAS), in 100 ms units.
pub const KAS: u16 = 10;

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    b[at..at + v.len()].copy_from_slice(v);
}

/// `s` in a fixed-width ASCII field padded with spaces (cut if longer).
fn padded(b: &mut [u8], at: usize, width: usize, s: &str) {
    let field = &mut b[at..at + width];
    field.fill(b' ');
    let n = s.len().min(width);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// `s` in a NUL-padded field (cut to leave a NUL).
fn nul_padded(b: &mut [u8], at: usize, width: usize, s: &str) {
    let n = s.len().min(width - 1);
    b[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
}

/// What Identify Controller says about one controller.
#[derive(Debug, Clone)]
pub struct ControllerInfo<'a> {
    /// Controller id (as Connect returned it).
    pub cntlid: u16,
    /// The card's serial number.
    pub serial: &'a str,
    /// The subsystem's NQN.
    pub subnqn: &'a str,
    /// A discovery controller (else an I/O controller).
    pub discovery: bool,
}

/// Identify Controller (CNS 01h).
pub fn controller(c: &ControllerInfo<'_>) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_BYTES];
    padded(&mut b, 4, 20, c.serial);
    padded(&mut b, 24, 40, "dia card fabric target");
    padded(&mut b, 64, 8, env!("CARGO_PKG_VERSION"));
    b[72] = 6; // RAB
    b[76] = 1 << 1; // CMIC: the subsystem may have several controllers
    b[77] = MDTS_SHIFT;
    put(&mut b, 78, &c.cntlid.to_le_bytes());
    put(&mut b, 80, &VERSION.to_le_bytes());
    put(&mut b, 96, &1u32.to_le_bytes()); // CTRATT: 128-bit host identifier
    b[111] = if c.discovery { 2 } else { 1 }; // CNTRLTYPE
    b[258] = 3; // ACL
    b[259] = 3; // AERL
    b[261] = 1 << 2; // LPA: extended data for Get Log Page
    put(&mut b, 320, &KAS.to_le_bytes());
    b[512] = 0x66; // SQES
    b[513] = 0x44; // CQES
    put(&mut b, 514, &QUEUE_ENTRIES.to_le_bytes()); // MAXCMD
    if !c.discovery {
        put(&mut b, 516, &1u32.to_le_bytes()); // NN: one namespace per subsystem
                                               // ONCS: Dataset Management, Write Zeroes.
        put(&mut b, 520, &((1u16 << 2) | (1 << 3)).to_le_bytes());
        b[525] = 1; // VWC: a volatile write cache (Flush makes writes durable)
        put(&mut b, 540, &1u32.to_le_bytes()); // MNAN
    }
    // SGLS: SGLs supported (no alignment), the Offset subtype (in-capsule data).
    put(&mut b, 536, &(1u32 | 1 << 20).to_le_bytes());
    nul_padded(&mut b, 768, 256, c.subnqn);
    let ioccsz = ((64 + IN_CAPSULE_BYTES) / 16) as u32;
    put(&mut b, 1792, &ioccsz.to_le_bytes());
    put(&mut b, 1796, &1u32.to_le_bytes()); // IORCSZ: a 16-byte completion
                                            // ICDOFF 0; FCATT 0 (dynamic controller model); MSDBD 1.
    b[1803] = 1;
    b
}

/// What Identify Namespace says about the one namespace of a subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Size in logical blocks.
    pub size_blocks: u64,
    /// log2 of the block size.
    pub lba_shift: u8,
    /// Namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// dia: the volume's plex record (what a mirror of which it is a plex
    /// last told it), at byte 768 as in the card's own Identify Namespace.
    pub plex_record: dia_abi::card::PlexRecord,
}

/// Where the plex record is in Identify Namespace (dia vendor bytes).
pub const PLEX_RECORD_AT: usize = 768;
/// Bytes of a plex record.
pub const PLEX_RECORD_BYTES: usize = std::mem::size_of::<dia_abi::card::PlexRecord>();

/// A plex record's bytes (little-endian: generation, keys, reserved).
pub fn plex_record_bytes(r: &dia_abi::card::PlexRecord) -> [u8; PLEX_RECORD_BYTES] {
    let mut b = [0u8; PLEX_RECORD_BYTES];
    put(&mut b, 0, &r.generation.to_le_bytes());
    for (i, k) in r.in_sync.iter().enumerate() {
        put(&mut b, 8 + 8 * i, &k.to_le_bytes());
    }
    put(&mut b, PLEX_RECORD_BYTES - 8, &r.reserved);
    b
}

/// A plex record from the start of `b`; `None` when `b` is shorter or a
/// reserved byte is set.
pub fn plex_record_of(b: &[u8]) -> Option<dia_abi::card::PlexRecord> {
    let b = b.get(..PLEX_RECORD_BYTES)?;
    let u64_at = |at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let mut r = dia_abi::card::PlexRecord {
        generation: u64_at(0),
        ..Default::default()
    };
    for (i, k) in r.in_sync.iter_mut().enumerate() {
        *k = u64_at(8 + 8 * i);
    }
    r.reserved.copy_from_slice(&b[PLEX_RECORD_BYTES - 8..]);
    (r.reserved == [0; 8]).then_some(r)
}

/// Identify Namespace (CNS 00h); all zeroes for an inactive namespace.
pub fn namespace(ns: Option<&NamespaceInfo>) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_BYTES];
    let Some(ns) = ns else { return b };
    put(&mut b, 0, &ns.size_blocks.to_le_bytes()); // NSZE
    put(&mut b, 8, &ns.size_blocks.to_le_bytes()); // NCAP
    put(&mut b, 16, &ns.size_blocks.to_le_bytes()); // NUSE
    b[24] = 1 << 2; // NSFEAT: deallocated blocks read as zeroes (DAE)
    b[33] = 1 | 1 << 3; // DLFEAT: deallocated reads zeroes, Write Zeroes deallocates
                        // NLBAF 0 (one format), FLBAS 0.
    put(&mut b, 104, &ns.nguid);
    // LBA format 0: no metadata, data size 2^lba_shift.
    b[128 + 2] = ns.lba_shift;
    put(&mut b, PLEX_RECORD_AT, &plex_record_bytes(&ns.plex_record));
    b
}

/// Active Namespace ID list (CNS 02h) of a subsystem whose only namespace
/// is id 1: the ids above `after` that are active.
pub fn active_list(active: bool, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_BYTES];
    if active && after < 1 {
        put(&mut b, 0, &1u32.to_le_bytes());
    }
    b
}

/// Namespace Identification Descriptor list (CNS 03h): the NGUID and the
/// command set (NVM).
pub fn descriptors(nguid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_BYTES];
    b[0] = 2; // NIDT: NGUID
    b[1] = 16;
    put(&mut b, 4, nguid);
    b[20] = 4; // NIDT: Command Set Identifier
    b[21] = 1;
    // CSI 0: NVM.
    b
}

/// One discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// NVMe subsystem (2) or the current discovery subsystem (3).
    pub subtype: u8,
    /// Transport address (IPv4 or IPv6 text).
    pub traddr: String,
    /// Transport service id (the TCP port as text).
    pub trsvcid: String,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// The subsystem's NQN.
    pub subnqn: String,
}

/// Bytes of the discovery log header and of each entry.
pub const DISCOVERY_RECORD_BYTES: usize = 1024;

/// The discovery log page (LID 70h): header and entries.
pub fn discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_RECORD_BYTES * (1 + entries.len())];
    put(&mut b, 0, &genctr.to_le_bytes());
    put(&mut b, 8, &(entries.len() as u64).to_le_bytes());
    // RECFMT 0.
    for (i, e) in entries.iter().enumerate() {
        let at = DISCOVERY_RECORD_BYTES * (i + 1);
        b[at] = 3; // TRTYPE: TCP
        b[at + 1] = if e.ipv6 { 2 } else { 1 }; // ADRFAM
        b[at + 2] = e.subtype;
        // TREQ: secure channel not specified; SQ flow control disable supported.
        b[at + 3] = 1 << 2;
        put(&mut b, at + 4, &1u16.to_le_bytes()); // PORTID
        put(&mut b, at + 6, &0xffffu16.to_le_bytes()); // CNTLID: dynamic
        put(&mut b, at + 8, &32u16.to_le_bytes()); // ASQSZ
        padded(&mut b, at + 32, 32, &e.trsvcid);
        nul_padded(&mut b, at + 256, 256, &e.subnqn);
        padded(&mut b, at + 512, 256, &e.traddr);
        // TSAS for TCP: SECTYPE 0 (none).
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_fields_the_linux_host_reads() {
        let b = controller(&ControllerInfo {
            cntlid: 5,
            serial: "DIA-TEST-0001",
            subnqn: "nqn.2026-12.io.dia:DIA-TEST-0001:ns1",
            discovery: false,
        });
        assert_eq!(&b[4..17], b"DIA-TEST-0001");
        assert_eq!(b[17], b' ');
        assert_eq!(u16::from_le_bytes([b[78], b[79]]), 5);
        assert_eq!(b[111], 1);
        assert_ne!(u16::from_le_bytes([b[320], b[321]]), 0, "KAS");
        assert!(u32::from_le_bytes([b[1792], b[1793], b[1794], b[1795]]) >= 4);
        assert_eq!(b[1796], 1);
        assert_eq!(u32::from_le_bytes([b[536], b[537], b[538], b[539]]) & 3, 1);
        assert_eq!(&b[768..768 + 18], b"nqn.2026-12.io.dia");
        assert_eq!(b[768 + 36], 0);
    }

    #[test]
    fn discovery_log_layout() {
        let e = DiscoveryEntry {
            subtype: 2,
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
            ipv6: false,
            subnqn: "nqn.x".into(),
        };
        let b = discovery_log(7, &[e.clone(), e]);
        assert_eq!(b.len(), 3 * 1024);
        assert_eq!(b[0], 7);
        assert_eq!(b[8], 2);
        assert_eq!(b[1024], 3);
        assert_eq!(&b[1024 + 32..1024 + 36], b"4420");
        assert_eq!(&b[1024 + 256..1024 + 261], b"nqn.x");
        assert_eq!(&b[1024 + 512..1024 + 520], b"10.0.2.2");
    }

    #[test]
    fn namespace_pages() {
        let ns = NamespaceInfo {
            size_blocks: 1000,
            lba_shift: 12,
            nguid: [7; 16],
            plex_record: dia_abi::card::PlexRecord {
                generation: 3,
                in_sync: [11, 0, 12, 0],
                reserved: [0; 8],
            },
        };
        let b = namespace(Some(&ns));
        assert_eq!(plex_record_of(&b[PLEX_RECORD_AT..]), Some(ns.plex_record));
        assert_eq!(b[PLEX_RECORD_AT + 8 + 16], 12);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 1000);
        assert_eq!(b[130], 12);
        assert!(namespace(None).iter().all(|&x| x == 0));
        assert_eq!(active_list(true, 0)[0], 1);
        assert_eq!(active_list(true, 1)[0], 0);
        assert_eq!(descriptors(&[7; 16])[4], 7);
    }
}
