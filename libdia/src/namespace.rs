//! Namespaces (the card's thin volumes) and the flash pool as typed,
//! serialisable values, from the raw structs of the ioctl ABI.

use dia_abi::ioctl::{DiaNsInfo, DiaPoolInfo};
use serde::{Deserialize, Serialize};

/// A namespace on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Namespace id (1-based).
    pub nsid: u32,
    /// The owner's label (diad stores the volume name here).
    pub label: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Bytes allocated in the pool (thin provisioning).
    pub used_bytes: u64,
    /// Whether it is attached (a block device exists).
    pub attached: bool,
    /// The block device (`/dev/dia0n1`) when attached.
    pub device: Option<String>,
}

fn nul_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl From<&DiaNsInfo> for Namespace {
    fn from(r: &DiaNsInfo) -> Self {
        let shift = r.lba_shift.min(31);
        let disk = nul_str(&r.disk_name);
        Self {
            nsid: r.nsid,
            label: nul_str(&r.label),
            block_size: 1 << shift,
            size_bytes: r.size_blocks.saturating_mul(1 << shift),
            used_bytes: r.used_blocks.saturating_mul(1 << shift),
            attached: r.attached != 0,
            device: (!disk.is_empty()).then(|| format!("/dev/{disk}")),
        }
    }
}

/// The card's flash pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Capacity for volume data in bytes.
    pub total_bytes: u64,
    /// Bytes allocated to volumes.
    pub used_bytes: u64,
    /// Namespaces on the card.
    pub namespaces: u32,
    /// Most namespaces the card holds.
    pub max_namespaces: u32,
    /// Thin allocation unit in bytes.
    pub chunk_bytes: u32,
}

impl From<&DiaPoolInfo> for Pool {
    fn from(r: &DiaPoolInfo) -> Self {
        Self {
            total_bytes: r.total_bytes,
            used_bytes: r.used_bytes,
            namespaces: r.namespaces,
            max_namespaces: r.max_namespaces,
            chunk_bytes: r.chunk_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_info_converts() {
        let mut raw = DiaNsInfo {
            nsid: 3,
            lba_shift: 12,
            size_blocks: 256,
            used_blocks: 16,
            attached: 1,
            ..DiaNsInfo::default()
        };
        raw.label[..3].copy_from_slice(b"web");
        raw.disk_name[..6].copy_from_slice(b"dia0n3");
        let ns = Namespace::from(&raw);
        assert_eq!(ns.label, "web");
        assert_eq!(ns.size_bytes, 1 << 20);
        assert_eq!(ns.used_bytes, 65536);
        assert_eq!(ns.device.as_deref(), Some("/dev/dia0n3"));
        raw.disk_name = [0; 32];
        assert_eq!(Namespace::from(&raw).device, None);
    }
}
