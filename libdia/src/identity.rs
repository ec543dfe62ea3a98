//! The card's identity as a typed, serialisable value (from the raw
//! `DiaIdentity` of the ioctl ABI).

use dia_abi::card::{CARD_CAP_NETWORK, CARD_CAP_QOS, CARD_CAP_STORAGE};
use dia_abi::ioctl::DiaIdentity;
use serde::{Deserialize, Serialize};

/// Who the card is and what it can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Firmware revision.
    pub firmware: String,
    /// Card interface version, "major.minor".
    pub interface_version: String,
    /// ioctl ABI version of the driver.
    pub abi_version: u32,
    /// PCI vendor id.
    pub vendor_id: u16,
    /// Capabilities by name (storage, network, qos).
    pub capabilities: Vec<String>,
    /// Maximum I/O queue pairs of the card.
    pub max_io_queues: u16,
    /// I/O queue pairs the driver uses.
    pub io_queues: u32,
    /// Maximum entries per queue.
    pub max_queue_entries: u16,
    /// MSI-X vectors the driver enabled.
    pub msix_vectors: u32,
    /// Maximum namespaces (volumes).
    pub max_namespaces: u32,
    /// Maximum network ports.
    pub max_ports: u32,
    /// Flash pool capacity in bytes.
    pub pool_bytes: u64,
    /// Storage QoS capacity floors are admitted against, I/Os per second.
    #[serde(default)]
    pub qos_capacity_iops: u64,
    /// Storage QoS capacity, bytes per second.
    #[serde(default)]
    pub qos_capacity_bps: u64,
}

fn ascii(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

impl From<&DiaIdentity> for Identity {
    fn from(raw: &DiaIdentity) -> Self {
        let caps = [
            (CARD_CAP_STORAGE, "storage"),
            (CARD_CAP_NETWORK, "network"),
            (CARD_CAP_QOS, "qos"),
        ];
        Self {
            model: ascii(&raw.model),
            serial: ascii(&raw.serial),
            firmware: ascii(&raw.firmware),
            interface_version: format!(
                "{}.{}",
                raw.interface_version >> 16,
                raw.interface_version & 0xffff
            ),
            abi_version: raw.abi_version,
            vendor_id: raw.vendor_id,
            capabilities: caps
                .iter()
                .filter(|(bit, _)| raw.capabilities & bit != 0)
                .map(|(_, n)| n.to_string())
                .collect(),
            max_io_queues: raw.max_io_queues,
            io_queues: raw.io_queues,
            max_queue_entries: raw.max_queue_entries,
            msix_vectors: raw.msix_vectors,
            max_namespaces: raw.max_namespaces,
            max_ports: raw.max_ports,
            pool_bytes: raw.pool_bytes,
            qos_capacity_iops: raw.qos_capacity_iops,
            qos_capacity_bps: raw.qos_capacity_bytes_per_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use dia_abi::card::fill_ascii;
    use dia_abi::ioctl::{ioc_size, DIA_IOC_IDENTIFY, IOC_READ};

    use super::*;

    #[test]
    fn converts_raw_identity() {
        let mut raw = DiaIdentity {
            abi_version: 1,
            interface_version: 1 << 16 | 2,
            capabilities: CARD_CAP_STORAGE | CARD_CAP_QOS,
            vendor_id: 0x1af4,
            max_io_queues: 8,
            ..DiaIdentity::default()
        };
        fill_ascii(&mut raw.model, "dia card");
        fill_ascii(&mut raw.serial, "SN1");
        raw.firmware[..3].copy_from_slice(b"0.1");
        let id = Identity::from(&raw);
        assert_eq!(id.model, "dia card");
        assert_eq!(id.serial, "SN1");
        assert_eq!(id.firmware, "0.1", "NUL padding is trimmed too");
        assert_eq!(id.interface_version, "1.2");
        assert_eq!(id.capabilities, vec!["storage", "qos"]);
    }

    #[test]
    fn identify_number_encodes_read_and_size() {
        assert_eq!(
            ioc_size(DIA_IOC_IDENTIFY),
            std::mem::size_of::<DiaIdentity>()
        );
        assert_eq!(DIA_IOC_IDENTIFY >> 30, IOC_READ);
        assert_eq!((DIA_IOC_IDENTIFY >> 8) & 0xff, u32::from(b'D'));
    }
}
