//! Namespaces (the card's thin volumes) and the flash pool as typed,
//! serialisable values, from the raw structs of the ioctl ABI.

use dia_abi::card::{NamespaceStats, LATENCY_BUCKETS};
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

/// A namespace's counters since the card started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Other commands (flush, discard, write zeroes).
    pub other: u64,
    /// Failed commands.
    pub errors: u64,
    /// Commands that waited for a ceiling.
    pub throttled: u64,
    /// Time commands waited for a ceiling, nanoseconds.
    pub throttled_ns: u64,
    /// Latency histogram: `latency_us_log2[i]` I/Os took less than 2^i µs.
    pub latency_us_log2: Vec<u64>,
}

impl Stats {
    /// The latency (µs, an upper bound) below which `q` (0..1) of I/Os fell.
    pub fn latency_percentile_us(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency_us_log2.iter().sum();
        if total == 0 {
            return None;
        }
        let want = (total as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.latency_us_log2.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(1u64 << i.min(63));
            }
        }
        None
    }
}

impl From<&NamespaceStats> for Stats {
    fn from(r: &NamespaceStats) -> Self {
        Self {
            reads: r.reads,
            writes: r.writes,
            read_bytes: r.read_bytes,
            write_bytes: r.write_bytes,
            other: r.other,
            errors: r.errors,
            throttled: r.throttled,
            throttled_ns: r.throttled_ns,
            latency_us_log2: r.latency_us_log2[..LATENCY_BUCKETS].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut raw = NamespaceStats::default();
        raw.latency_us_log2[7] = 90; // < 128 µs
        raw.latency_us_log2[10] = 10; // < 1024 µs
        let s = Stats::from(&raw);
        assert_eq!(s.latency_percentile_us(0.5), Some(128));
        assert_eq!(s.latency_percentile_us(0.99), Some(1024));
        assert_eq!(
            Stats::from(&NamespaceStats::default()).latency_percentile_us(0.5),
            None
        );
    }

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
