//! The card's network function: virtual ports with descriptor rings in
//! guest memory (`port`), egress shaping (`rate`), checksum offload
//! (`checksum`), TCP segmentation offload (`tso`), the embedded VLAN switch (`switch`), the UDP uplink to
//! other cards (`uplink`) and the engine thread that moves frames between
//! them (`engine`). Admin commands (create/delete/set port, stats) are in
//! `controller::ports`; the contract is `dia_abi::card`, "Network ports".

mod checksum;
mod engine;
mod port;
mod rate;
mod switch;
mod tso;
mod uplink;

pub(crate) use engine::NetEngine;
pub(crate) use engine::{Buffers, NetState};
pub(crate) use port::{Port, Rings};
pub(crate) use switch::{Dest, Switch};
pub(crate) use uplink::Uplink;

/// Most ports a card has (ids 1..=MAX_PORTS).
pub const MAX_PORTS: u16 = 64;

/// The MAC of port `id` on a card whose Identify serial field is `serial`:
/// locally administered unicast `02:d1:c0:c1:c2:id`, where c0..c2 are the
/// first three bytes of the little-endian CRC-32 (IEEE) of the 20-byte,
/// space-padded serial field and `id` is the port id's low byte.
pub(crate) fn port_mac(serial: &[u8; dia_abi::card::SERIAL_BYTES], id: u16) -> [u8; 6] {
    let c = crc32fast::hash(serial).to_le_bytes();
    [0x02, 0xd1, c[0], c[1], c[2], id as u8]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let serial = dia_abi::card::serial_field("DIA-0000000001");
        let a = port_mac(&serial, 1);
        assert_eq!(a, port_mac(&serial, 1));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(a, port_mac(&serial, 2));
        let mut other = serial;
        other[13] = b'2';
        assert_ne!(a[2..5], port_mac(&other, 1)[2..5]);
    }
}
