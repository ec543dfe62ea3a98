//! The network half of diad's API (see docs/api.md): networks (a VLAN with
//! an IPv4 subnet, gateway and address range) and ports (a card port in a
//! container), plus the syntax users type for them: CIDRs, address ranges
//! and bit rates (`100M` = 100 Mbit/s). Shared by diad and its clients.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::{PortCounters, PortSettings};

/// `POST /v1/networks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Name (same rules as volume names).
    pub name: String,
    /// 802.1Q VLAN id, [`dia_abi::card::VLAN_MIN`]..=[`dia_abi::card::VLAN_MAX`],
    /// unique on the appliance.
    pub vlan: u16,
    /// IPv4 subnet, `10.10.0.0/24`.
    pub subnet: String,
    /// Default gateway, inside the subnet.
    pub gateway: String,
    /// Addresses handed to ports: `10.10.0.10-10.10.0.200`, inside the
    /// subnet (default: the whole subnet but its network, broadcast and
    /// gateway addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// MTU of the network's ports,
    /// [`dia_abi::card::PORT_MTU_MIN`]..=[`dia_abi::card::PORT_MTU_MAX`]
    /// (default 1500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Allow addresses that overlap another network's (they are separate
    /// VLANs, so separate layer-2 domains; off by default to catch typos).
    #[serde(default)]
    pub allow_overlap: bool,
}

/// A network as diad reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Name.
    pub name: String,
    /// VLAN id.
    pub vlan: u16,
    /// Subnet (normalised).
    pub subnet: String,
    /// Gateway.
    pub gateway: String,
    /// First address of the range.
    pub range_start: String,
    /// Last address of the range.
    pub range_end: String,
    /// MTU.
    pub mtu: u16,
    /// Addresses in the range.
    pub addresses: u32,
    /// Addresses leased to ports.
    pub leased: u32,
    /// Ports on it (`container:ifname`).
    pub ports: Vec<String>,
}

/// `POST /v1/ports`: give a container a port on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachPort {
    /// The container (registered with diad).
    pub container: String,
    /// The network.
    pub network: String,
    /// Performance tier (its network limits apply; default best-effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// A specific address from the network's subnet (default: the first
    /// free one of its range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Interface name inside the container (default `eth0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

/// A port as diad reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// `container:ifname`.
    pub name: String,
    /// Container.
    pub container: String,
    /// Interface name inside the container.
    pub ifname: String,
    /// Network.
    pub network: String,
    /// The card's port id.
    pub port: u32,
    /// MAC.
    pub mac: String,
    /// Leased address with prefix, `10.10.0.10/24`.
    pub address: String,
    /// Gateway.
    pub gateway: String,
    /// Tier.
    pub tier: String,
    /// `up`, `down`, `missing` (not on the card) or `card-unavailable`.
    pub status: String,
    /// VLAN, MTU, limits as the card has them (when known).
    pub settings: Option<PortSettings>,
}

/// `GET /v1/ports/{name}/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStatsView {
    /// `container:ifname`.
    pub name: String,
    /// The card's counters.
    pub counters: PortCounters,
}

/// A parsed IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length, 1..=30.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/len`; host bits must be zero.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("subnet '{text}' is not an IPv4 CIDR (example: 10.10.0.0/24)");
        let (a, p) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(1..=30).contains(&prefix) {
            return Err(format!(
                "subnet '{text}': prefix /{prefix} is out of range (allowed: /1 to /30)"
            ));
        }
        let s = Self { addr, prefix };
        if s.network() != addr {
            return Err(format!(
                "subnet '{text}' has host bits set: did you mean {}/{prefix}?",
                s.network()
            ));
        }
        Ok(s)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    /// Whether `ip` is a host address of the subnet (not the network or
    /// broadcast address).
    pub fn has_host(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
            && ip != self.network()
            && ip != self.broadcast()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses an IPv4 address, saying which field it was for.
pub fn parse_ip(what: &str, text: &str) -> Result<Ipv4Addr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} '{text}' is not an IPv4 address (example: 10.10.0.1)"))
}

/// Parses `first-last`.
pub fn parse_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, b) = text.split_once('-').ok_or_else(|| {
        format!("range '{text}' is not FIRST-LAST (example: 10.10.0.10-10.10.0.200)")
    })?;
    let (a, b) = (parse_ip("range start", a)?, parse_ip("range end", b)?);
    if u32::from(a) > u32::from(b) {
        return Err(format!("range '{text}' ends before it starts"));
    }
    Ok((a, b))
}

/// Parses a bit rate: bits per second, or a number (decimals allowed) with
/// K, M or G (powers of 1000, as network rates are; `Mbit`, `Mbps` too).
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches("ps")
        .trim_end_matches("bit")
    {
        "" | "b" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        _ => {
            return Err(format!(
                "rate '{text}': unknown unit '{unit}' (allowed: K, M, G bits per second, e.g. 100M)"
            ))
        }
    };
    let bad = || format!("rate '{text}' is not a rate (examples: 100M, 1.5G, 500000)");
    let v: f64 = num.parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    let bits = v * mult as f64;
    if bits > 1e15 {
        return Err(format!("rate '{text}' is too large (at most 1000000G)"));
    }
    Ok(bits.round() as u64)
}

/// A bit rate for humans: `100 Mbit/s`.
pub fn format_rate(bps: u64) -> String {
    if bps == 0 {
        return "unlimited".into();
    }
    for (div, unit) in [
        (1_000_000_000, "Gbit/s"),
        (1_000_000, "Mbit/s"),
        (1_000, "kbit/s"),
    ] {
        if bps >= div {
            let v = bps as f64 / div as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bps} bit/s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_say_what_is_wrong() {
        let s = Subnet::parse("10.10.0.0/24").unwrap();
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 10, 0, 255));
        assert!(s.has_host(Ipv4Addr::new(10, 10, 0, 1)));
        assert!(!s.has_host(Ipv4Addr::new(10, 10, 0, 255)));
        assert!(!s.has_host(Ipv4Addr::new(10, 10, 1, 1)));
        assert!(Subnet::parse("10.10.0.1/24")
            .unwrap_err()
            .contains("did you mean 10.10.0.0/24"));
        assert!(Subnet::parse("10.10.0.0/33")
            .unwrap_err()
            .contains("out of range"));
        assert!(Subnet::parse("10.10.0.0").unwrap_err().contains("example"));
        assert!(Subnet::parse("300.1.1.0/24").is_err());
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            parse_range("10.0.0.10-10.0.0.20").unwrap(),
            (Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 20))
        );
        assert!(parse_range("10.0.0.20-10.0.0.10")
            .unwrap_err()
            .contains("ends before"));
        assert!(parse_range("10.0.0.20").is_err());
    }

    #[test]
    fn rates_parse_in_bits() {
        assert_eq!(parse_rate("100M"), Ok(100_000_000));
        assert_eq!(parse_rate("100Mbit"), Ok(100_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("2500"), Ok(2500));
        assert!(parse_rate("100X").unwrap_err().contains("allowed"));
        assert_eq!(format_rate(100_000_000), "100 Mbit/s");
        assert_eq!(format_rate(0), "unlimited");
    }
}
