//! Checksum offloads. TX: the Internet checksum (RFC 1071 ones' complement
//! sum) of a frame's bytes from `csum_start` to its end, stored complemented
//! at `csum_start + csum_offset`. The driver seeds the checksum field with
//! the pseudo-header sum, as Linux's `CHECKSUM_PARTIAL` does. RX: whether a
//! frame's IPv4 header checksum and TCP or UDP checksum are right
//! ([`rx_verified`]), so the host need not check them again.

use thiserror::Error;

/// The checksum region does not fit the frame.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("checksum at {start}+{offset} does not fit a {len}-byte frame")]
pub(crate) struct CsumError {
    start: usize,
    offset: usize,
    len: usize,
}

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with
/// zero) to `sum`, without folding. Eight bytes at a time: the ones'
/// complement sum does not depend on byte order (RFC 1071), so the words
/// are added as read (native order, two 32-bit halves per load: 2^16 is 1
/// modulo 0xffff) and the folded result is put in network order once.
pub(crate) fn ones_sum(data: &[u8], sum: u64) -> u64 {
    let mut native = 0u64;
    let mut eights = data.chunks_exact(8);
    for e in &mut eights {
        let w = u64::from_ne_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        // At most 2^33 per load: no overflow below 2^31 loads.
        native += (w & 0xffff_ffff) + (w >> 32);
    }
    let mut sum = sum + u64::from(u16::from_be(fold(native)));
    // The rest starts at an even offset: big-endian words as they come.
    let mut words = eights.remainder().chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds a sum into 16 bits (end-around carry).
pub(crate) fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    sum as u16
}

/// Computes and stores the checksum of `frame[start..]` at `start + offset`.
pub(crate) fn offload(frame: &mut [u8], start: usize, offset: usize) -> Result<(), CsumError> {
    let err = CsumError {
        start,
        offset,
        len: frame.len(),
    };
    let field = start.checked_add(offset).ok_or(err.clone())?;
    if field.checked_add(2).is_none_or(|end| end > frame.len()) {
        return Err(err);
    }
    let csum = !fold(ones_sum(&frame[start..], 0));
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Ethertypes and IP protocol numbers the receive check and TSO know.
pub(super) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(super) const ETHERTYPE_IPV6: u16 = 0x86dd;
pub(super) const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// The fixed IPv6 header.
pub(super) const IPV6_HLEN: usize = 40;

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Whether `frame` (an untagged Ethernet frame) is IPv4 or IPv6 carrying
/// one whole TCP or UDP packet whose checksums are right: for IPv4 the
/// header checksum too. Anything else is `false` and left to the host:
/// other protocols, fragments, IPv6 extension headers, a UDP checksum of 0
/// (none sent), lengths that disagree with the frame. Never panics.
pub(crate) fn rx_verified(frame: &[u8]) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    match be16(frame, 12) {
        Some(t) if t == usize::from(ETHERTYPE_IPV4) => ipv4_verified(ip),
        Some(t) if t == usize::from(ETHERTYPE_IPV6) => ipv6_verified(ip),
        _ => false,
    }
}

fn ipv4_verified(ip: &[u8]) -> bool {
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0xf) * 4;
    let (Some(total), Some(frag)) = (be16(ip, 2), be16(ip, 6)) else {
        return false;
    };
    // More fragments or a fragment offset: not one whole packet.
    if vihl >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() || frag & 0x3fff != 0 {
        return false;
    }
    if fold(ones_sum(&ip[..ihl], 0)) != 0xffff {
        return false;
    }
    let proto = ip[9];
    let l4 = &ip[ihl..total];
    let pseudo = ones_sum(&ip[12..20], 0) + u64::from(proto) + l4.len() as u64;
    l4_verified(proto, l4, pseudo)
}

fn ipv6_verified(ip: &[u8]) -> bool {
    let Some(plen) = be16(ip, 4) else {
        return false;
    };
    if ip.len() < IPV6_HLEN || ip[0] >> 4 != 6 || IPV6_HLEN + plen > ip.len() {
        return false;
    }
    let next = ip[6];
    let l4 = &ip[IPV6_HLEN..IPV6_HLEN + plen];
    let pseudo = ones_sum(&ip[8..IPV6_HLEN], 0) + plen as u64 + u64::from(next);
    l4_verified(next, l4, pseudo)
}

/// Whether the TCP or UDP packet `l4` sums to all ones with the
/// pseudo-header sum `pseudo`.
fn l4_verified(proto: u8, l4: &[u8], pseudo: u64) -> bool {
    let shaped = match proto {
        IPPROTO_TCP => l4.len() >= 20,
        // The UDP length must be the packet's, and 0 means no checksum.
        IPPROTO_UDP => {
            l4.len() >= 8 && be16(l4, 4) == Some(l4.len()) && l4.get(6..8) != Some(&[0, 0])
        }
        _ => false,
    };
    shaped && fold(ones_sum(l4, pseudo)) == 0xffff
}

impl Clone for CsumError {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPv4 header example from Wikipedia's "IPv4 header checksum".
    const IP_HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn known_ipv4_header_checksum() {
        let mut frame = vec![0u8; 14];
        frame.extend_from_slice(&IP_HEADER);
        offload(&mut frame, 14, 10).unwrap();
        assert_eq!(&frame[24..26], &[0xb8, 0x61]);
        // A correct header sums to 0xffff.
        assert_eq!(fold(ones_sum(&frame[14..], 0)), 0xffff);
    }

    #[test]
    fn udp_with_pseudo_header_seed() {
        // 192.168.0.1:1000 -> 192.168.0.199:2000, payload "hello" (odd length).
        let payload = b"hello";
        let udp_len = 8 + payload.len() as u16;
        let mut udp = Vec::new();
        udp.extend_from_slice(&1000u16.to_be_bytes());
        udp.extend_from_slice(&2000u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&IP_HEADER[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        // What the driver leaves in the field: the folded pseudo-header sum.
        let seed = fold(ones_sum(&pseudo, 0));
        udp[6..8].copy_from_slice(&seed.to_be_bytes());
        let mut frame = vec![0u8; 34];
        frame.extend_from_slice(&udp);
        offload(&mut frame, 34, 6).unwrap();
        // The receiver's check: pseudo header + UDP with the checksum = 0xffff.
        let mut check = pseudo.clone();
        check.extend_from_slice(&frame[34..]);
        assert_eq!(fold(ones_sum(&check, 0)), 0xffff);
        // The same value computed the textbook way (field zero).
        udp[6..8].copy_from_slice(&[0, 0]);
        let mut whole = pseudo;
        whole.extend_from_slice(&udp);
        assert_eq!(&frame[40..42], &(!fold(ones_sum(&whole, 0))).to_be_bytes());
    }

    /// An IPv4 UDP frame 192.168.0.1:1000 -> 192.168.0.199:2000 with its
    /// header and UDP checksums computed, padded to 60 bytes.
    fn udp4_frame(payload: &[u8]) -> Vec<u8> {
        let udp_len = 8 + payload.len();
        let mut ip = IP_HEADER;
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(&ip);
        offload(&mut frame, 14, 10).unwrap();
        frame.extend_from_slice(&1000u16.to_be_bytes());
        frame.extend_from_slice(&2000u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&fold(ones_sum(&pseudo, 0)).to_be_bytes());
        frame.extend_from_slice(payload);
        offload(&mut frame, 34, 6).unwrap();
        frame.resize(frame.len().max(60), 0);
        frame
    }

    #[test]
    fn rx_check_accepts_right_checksums_only() {
        let good = udp4_frame(b"hello");
        assert!(rx_verified(&good));
        // A flipped payload bit, a wrong header checksum.
        let mut bad = good.clone();
        bad[42] ^= 1;
        assert!(!rx_verified(&bad));
        let mut bad = good.clone();
        bad[24] ^= 1;
        assert!(!rx_verified(&bad));
        // A fragment, no UDP checksum, a total length beyond the frame.
        let mut frag = good.clone();
        frag[20] |= 0x20;
        assert!(!rx_verified(&frag));
        let mut none = good.clone();
        none[40..42].copy_from_slice(&[0, 0]);
        assert!(!rx_verified(&none));
        let mut long = good.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert!(!rx_verified(&long));
        // Not IP, truncated anywhere: false, never a panic.
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!rx_verified(&arp));
        for n in 0..good.len() {
            assert!(!rx_verified(&good[..n]) || n >= 47, "{n}");
        }
    }

    #[test]
    fn rx_check_ipv6_tcp() {
        // ::1 -> ::2, a 20-byte TCP header with 3 bytes of payload.
        let mut tcp = vec![0u8; 23];
        tcp[12] = 5 << 4;
        tcp[20..].copy_from_slice(b"abc");
        let mut ip = vec![0x60, 0, 0, 0, 0, 23, 6, 64];
        ip.extend_from_slice(&[0; 15]);
        ip.push(1);
        ip.extend_from_slice(&[0; 15]);
        ip.push(2);
        let pseudo = ones_sum(&ip[8..40], 0) + 23 + 6;
        let csum = !fold(ones_sum(&tcp, pseudo));
        tcp[16..18].copy_from_slice(&csum.to_be_bytes());
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x86, 0xdd]);
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        assert!(rx_verified(&frame));
        frame[60] ^= 0x80;
        assert!(!rx_verified(&frame));
    }

    #[test]
    fn region_outside_the_frame_is_refused() {
        let mut frame = vec![0u8; 60];
        assert!(offload(&mut frame, 58, 1).is_err());
        assert!(offload(&mut frame, 60, 0).is_err());
        assert!(offload(&mut frame, usize::MAX, 1).is_err());
        assert!(offload(&mut frame, 58, 0).is_ok());
    }
}
