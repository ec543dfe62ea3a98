//! Network ports (the card's virtual functions) as typed, serialisable
//! values, from the raw structs of the ioctl ABI.

use dia_abi::card::{PortConfig, PortLimits, PortStats};
use dia_abi::ioctl::DiaPortInfo;
use serde::{Deserialize, Serialize};

/// A port's egress limits (0: none), as the API shows them ([`PortLimits`]
/// without its reserved field; `max_bps` is its `max_bits_per_s`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetLimits {
    /// Most bits per second.
    pub max_bps: u64,
    /// Most packets per second.
    pub max_pps: u64,
    /// Burst in milliseconds of the limit (0: the card's default,
    /// [`dia_abi::card::PORT_BURST_DEFAULT_MS`]).
    pub burst_ms: u32,
}

impl From<NetLimits> for PortLimits {
    fn from(l: NetLimits) -> Self {
        Self {
            max_bits_per_s: l.max_bps,
            max_pps: l.max_pps,
            burst_ms: l.burst_ms,
            reserved: 0,
        }
    }
}

impl From<&PortLimits> for NetLimits {
    fn from(l: &PortLimits) -> Self {
        Self {
            max_bps: l.max_bits_per_s,
            max_pps: l.max_pps,
            burst_ms: l.burst_ms,
        }
    }
}

/// What a port is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSettings {
    /// 802.1Q VLAN id ([`dia_abi::card::VLAN_MIN`]..=[`dia_abi::card::VLAN_MAX`]).
    pub vlan: u16,
    /// MTU ([`dia_abi::card::PORT_MTU_MIN`]..=[`dia_abi::card::PORT_MTU_MAX`]).
    pub mtu: u16,
    /// Egress limits.
    pub limits: NetLimits,
}

impl From<PortSettings> for PortConfig {
    fn from(s: PortSettings) -> Self {
        Self {
            vlan: s.vlan,
            mtu: s.mtu,
            reserved: 0,
            limits: s.limits.into(),
        }
    }
}

/// A port's counters since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames the host sent.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Frames delivered to the host.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Sent frames the card dropped.
    pub tx_dropped: u64,
    /// Frames for the port the card dropped (no buffer, over MTU).
    pub rx_dropped: u64,
    /// Time egress waited for its limits, nanoseconds.
    pub throttled_ns: u64,
    /// Frames the host handed the card to segment (TSO).
    #[serde(default)]
    pub tx_tso_frames: u64,
    /// Segments the card cut them into (also in `tx_packets`).
    #[serde(default)]
    pub tx_tso_segments: u64,
}

impl From<&PortStats> for PortCounters {
    fn from(s: &PortStats) -> Self {
        Self {
            tx_packets: s.tx_packets,
            tx_bytes: s.tx_bytes,
            rx_packets: s.rx_packets,
            rx_bytes: s.rx_bytes,
            tx_dropped: s.tx_dropped,
            rx_dropped: s.rx_dropped,
            throttled_ns: s.throttled_ns,
            tx_tso_frames: s.tx_tso_frames,
            tx_tso_segments: s.tx_tso_segments,
        }
    }
}

/// A port on the card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// The card's port id.
    pub port: u32,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The net device's name when created (`dia0p1`).
    pub ifname: String,
    /// Its ifindex in whatever network namespace it is in now.
    pub ifindex: u32,
    /// Link up, as the card reports it.
    pub link_up: bool,
    /// VLAN, MTU, limits.
    pub settings: PortSettings,
    /// Counters.
    pub counters: PortCounters,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub(crate) fn nul_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl From<&DiaPortInfo> for Port {
    fn from(r: &DiaPortInfo) -> Self {
        Self {
            port: r.port,
            mac: format_mac(&r.mac),
            ifname: nul_str(&r.ifname),
            ifindex: r.ifindex,
            link_up: r.link & 1 != 0,
            settings: PortSettings {
                vlan: r.config.vlan,
                mtu: r.config.mtu,
                limits: NetLimits::from(&r.config.limits),
            },
            counters: PortCounters::from(&r.stats),
        }
    }
}

/// What `Card::create_port` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPort {
    /// The card's port id.
    pub port: u32,
    /// Its MAC.
    pub mac: String,
    /// The net device (in the initial network namespace, down).
    pub ifname: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_lower_case_colon_separated() {
        assert_eq!(
            format_mac(&[0x02, 0xd1, 0xa0, 0, 0x01, 0xff]),
            "02:d1:a0:00:01:ff"
        );
    }

    #[test]
    fn info_converts() {
        let mut r = DiaPortInfo {
            port: 3,
            link: 1,
            ..Default::default()
        };
        r.ifname[..6].copy_from_slice(b"dia0p3");
        r.config.vlan = 100;
        r.config.mtu = 1500;
        r.config.limits.max_bits_per_s = 100_000_000;
        r.stats.rx_packets = 7;
        let p = Port::from(&r);
        assert_eq!(p.ifname, "dia0p3");
        assert!(p.link_up);
        assert_eq!(p.settings.vlan, 100);
        assert_eq!(p.settings.limits.max_bps, 100_000_000);
        assert_eq!(p.counters.rx_packets, 7);
    }
}
