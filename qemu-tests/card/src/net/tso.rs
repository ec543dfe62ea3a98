//! TCP segmentation offload (`TX_TSO`): a frame of up to 64 KiB that one
//! IPv4 or IPv6 TCP packet fills is cut into MSS-sized segments, each a copy
//! of the headers (lengths, IPv4 id and header checksum, sequence number,
//! flags and TCP checksum made right) followed by its share of the payload.
//! [`plan`] checks the headers once per frame; [`Plan::write`] builds one
//! segment into a reused buffer (no allocation once it has grown).

use dia_abi::card as abi;
use thiserror::Error;

use super::checksum::{fold, ones_sum, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_TCP, IPV6_HLEN};
use super::port::ETH_HLEN;

/// IPv6 extension headers copied as they are: hop-by-hop and destination
/// options (a routing header would change the pseudo-header's address).
const IPV6_HOPOPTS: u8 = 0;
const IPV6_DSTOPTS: u8 = 60;
const TCP_HLEN_MIN: usize = 20;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// Why a `TX_TSO` frame is refused (it is dropped and counted).
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum TsoError {
    /// The MSS is 0.
    #[error("TSO with an MSS of 0")]
    MssZero,
    /// A full segment would not fit the port's MTU.
    #[error("TSO MSS {mss} with {headers} header bytes is over a {frame_max}-byte frame")]
    MssTooLarge {
        /// The MSS asked for.
        mss: usize,
        /// Header bytes each segment carries.
        headers: usize,
        /// The port's largest frame.
        frame_max: usize,
    },
    /// The frame is over `PORT_TSO_FRAME_MAX`.
    #[error("TSO frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// Not IPv4 or IPv6 carrying TCP where `csum_start` says.
    #[error("TSO frame is not IPv4/IPv6 TCP with its TCP header at {0}")]
    NotTcp(usize),
    /// The headers do not fit the frame.
    #[error("TSO headers do not fit a {0}-byte frame")]
    Truncated(usize),
}

/// The network layer of a planned frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ip {
    V4,
    V6,
}

/// How a checked `TX_TSO` frame is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    ip: Ip,
    /// Offset of the TCP header.
    l4: usize,
    /// Header bytes every segment carries (Ethernet to TCP options).
    headers: usize,
    mss: usize,
    /// TCP payload bytes of the whole frame.
    payload: usize,
    /// The pseudo-header's addresses and protocol, summed, unfolded.
    pseudo: u64,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Checks a `TX_TSO` frame: `l4` is the descriptor's `csum_start`, `mss`
/// its `csum_offset`, `frame_max` the port's largest frame.
pub(crate) fn plan(
    frame: &[u8],
    l4: usize,
    mss: usize,
    frame_max: usize,
) -> Result<Plan, TsoError> {
    let len = frame.len();
    if len > abi::PORT_TSO_FRAME_MAX as usize {
        return Err(TsoError::TooLong(len));
    }
    if mss == 0 {
        return Err(TsoError::MssZero);
    }
    if len < ETH_HLEN + 20 || l4.checked_add(TCP_HLEN_MIN).is_none_or(|e| e > len) {
        return Err(TsoError::Truncated(len));
    }
    let ip_at = ETH_HLEN;
    let (ip, pseudo) = match be16(frame, 12) {
        ETHERTYPE_IPV4 => {
            let h = &frame[ip_at..];
            let ihl = usize::from(h[0] & 0xf) * 4;
            // More fragments or an offset: not one whole packet.
            let fragment = be16(h, 6) & 0x3fff != 0;
            if h[0] >> 4 != 4 || ihl < 20 || ip_at + ihl != l4 || h[9] != IPPROTO_TCP || fragment {
                return Err(TsoError::NotTcp(l4));
            }
            (Ip::V4, ones_sum(&h[12..20], u64::from(IPPROTO_TCP)))
        }
        ETHERTYPE_IPV6 => {
            if len < ip_at + IPV6_HLEN || frame[ip_at] >> 4 != 6 || l4 < ip_at + IPV6_HLEN {
                return Err(TsoError::NotTcp(l4));
            }
            // Walk the options headers up to `l4`, which must start TCP.
            let mut next = frame[ip_at + 6];
            let mut at = ip_at + IPV6_HLEN;
            while at < l4 {
                if next != IPV6_HOPOPTS && next != IPV6_DSTOPTS {
                    return Err(TsoError::NotTcp(l4));
                }
                next = frame[at];
                at += (usize::from(frame[at + 1]) + 1) * 8;
            }
            if at != l4 || next != IPPROTO_TCP {
                return Err(TsoError::NotTcp(l4));
            }
            let a = &frame[ip_at + 8..ip_at + IPV6_HLEN];
            (Ip::V6, ones_sum(a, u64::from(IPPROTO_TCP)))
        }
        _ => return Err(TsoError::NotTcp(l4)),
    };
    let headers = l4 + usize::from(frame[l4 + 12] >> 4) * 4;
    if headers < l4 + TCP_HLEN_MIN || headers > len {
        return Err(TsoError::Truncated(len));
    }
    if headers + mss > frame_max {
        return Err(TsoError::MssTooLarge {
            mss,
            headers,
            frame_max,
        });
    }
    Ok(Plan {
        ip,
        l4,
        headers,
        mss,
        payload: len - headers,
        pseudo,
    })
}

/// Segments a frame of `len` bytes with `mss` yields at most (a bound
/// that needs no look at the headers; 1 for an MSS of 0).
pub(crate) fn segments_bound(len: usize, mss: usize) -> usize {
    if mss == 0 {
        1
    } else {
        len.div_ceil(mss).max(1)
    }
}

impl Plan {
    /// Segments the frame is cut into (a frame with no payload is one).
    pub(crate) fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Bytes of all the segments together (what leaves the port).
    pub(crate) fn wire_bytes(&self) -> usize {
        self.payload + self.segments() * self.headers
    }

    /// Writes segment `i` (below [`Plan::segments`]) of `frame` (the frame
    /// this plan was made for) into `out`.
    pub(crate) fn write(&self, frame: &[u8], i: usize, out: &mut Vec<u8>) {
        let h = self.headers;
        let start = h + i * self.mss;
        let n = self.mss.min(self.payload.saturating_sub(i * self.mss));
        out.clear();
        out.extend_from_slice(&frame[..h]);
        out.extend_from_slice(&frame[start..start + n]);
        let ip = ETH_HLEN;
        let l4 = self.l4;
        // Lengths are at most the port's frame max (9014): they fit 16 bits.
        match self.ip {
            Ip::V4 => {
                let total = (h - ip + n) as u16;
                out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
                let id = be16(out, ip + 4).wrapping_add(i as u16);
                out[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
                out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
                let csum = !fold(ones_sum(&out[ip..l4], 0));
                out[ip + 10..ip + 12].copy_from_slice(&csum.to_be_bytes());
            }
            Ip::V6 => {
                let plen = (h - ip - IPV6_HLEN + n) as u16;
                out[ip + 4..ip + 6].copy_from_slice(&plen.to_be_bytes());
            }
        }
        let seq = u32::from_be_bytes([out[l4 + 4], out[l4 + 5], out[l4 + 6], out[l4 + 7]]);
        // `i * mss` is below PORT_TSO_FRAME_MAX: it fits 32 bits.
        let seq = seq.wrapping_add((i * self.mss) as u32);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < self.segments() {
            out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[l4 + 13] &= !TCP_CWR;
        }
        out[l4 + 16..l4 + 18].copy_from_slice(&[0, 0]);
        let tcp_len = (out.len() - l4) as u64;
        let csum = !fold(ones_sum(&out[l4..], self.pseudo + tcp_len));
        out[l4 + 16..l4 + 18].copy_from_slice(&csum.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 1071 the slow way, as a reference independent of `ones_sum`:
    /// big-endian 16-bit words, an odd last byte padded, carries folded.
    fn reference_sum(parts: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        let mut sum: u32 = 0;
        for w in bytes.chunks(2) {
            let hi = u32::from(w[0]) << 8;
            let lo = w.get(1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SEQ: u32 = 0xffff_f000; // wraps within the frame

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A TCP header with timestamps (32 bytes), flags `flags`, the checksum
    /// field left as Linux leaves it for offload (anything: the card
    /// ignores it).
    fn tcp_header(flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&SEQ.to_be_bytes());
        t[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&502u16.to_be_bytes());
        t[16..18].copy_from_slice(&[0xab, 0xcd]);
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        t
    }

    fn eth(ty: u16) -> Vec<u8> {
        let mut e = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        e.extend_from_slice(&ty.to_be_bytes());
        e
    }

    fn frame4(flags: u8, data: &[u8]) -> Vec<u8> {
        let mut f = eth(0x0800);
        let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&SRC4);
        ip.extend_from_slice(&DST4);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&tcp_header(flags));
        f.extend_from_slice(data);
        f
    }

    fn frame6(flags: u8, data: &[u8], dstopts: bool) -> Vec<u8> {
        let mut f = eth(0x86dd);
        let next = if dstopts { 60 } else { 6 };
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, 0, next, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        if dstopts {
            // Next header TCP, length 0 (8 bytes), a PadN option.
            f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(&tcp_header(flags));
        f.extend_from_slice(data);
        f
    }

    /// Cuts `frame` and checks every segment byte for byte against what
    /// it must be, and its checksums with [`reference_sum`].
    fn check_segments(frame: &[u8], l4: usize, mss: usize, v6: bool) -> usize {
        let plan = plan(frame, l4, mss, 1514).unwrap();
        let hdr = l4 + 32;
        let data = &frame[hdr..];
        let segs = plan.segments();
        assert_eq!(segs, data.len().div_ceil(mss).max(1));
        let mut out = Vec::new();
        let mut wire = 0;
        for i in 0..segs {
            plan.write(frame, i, &mut out);
            wire += out.len();
            let chunk = &data[(i * mss).min(data.len())..((i + 1) * mss).min(data.len())];
            assert_eq!(out.len(), hdr + chunk.len(), "segment {i}");
            assert!(out.len() <= 1514);
            // Everything but the fields that change is the frame's.
            let mut want = frame[..hdr].to_vec();
            want.extend_from_slice(chunk);
            if v6 {
                let plen = (out.len() - 54) as u16;
                want[18..20].copy_from_slice(&plen.to_be_bytes());
            } else {
                want[16..18].copy_from_slice(&((out.len() - 14) as u16).to_be_bytes());
                want[18..20].copy_from_slice(&(0x1234u16 + i as u16).to_be_bytes());
                want[24..26].copy_from_slice(&out[24..26]);
                assert_eq!(reference_sum(&[&out[14..34]]), 0xffff, "IPv4 header {i}");
            }
            let seq = SEQ.wrapping_add((i * mss) as u32);
            want[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = frame[l4 + 13];
            if i + 1 < segs {
                flags &= !0x09;
            }
            if i > 0 {
                flags &= !0x80;
            }
            want[l4 + 13] = flags;
            want[l4 + 16..l4 + 18].copy_from_slice(&out[l4 + 16..l4 + 18]);
            assert_eq!(out, want, "segment {i}");
            // The receiver's check over pseudo-header and segment.
            let tcp = &out[l4..];
            let len = (tcp.len() as u32).to_be_bytes();
            let sum = if v6 {
                let len6 = (tcp.len() as u32).to_be_bytes();
                reference_sum(&[&out[22..54], &len6, &[0, 0, 0, 6], tcp])
            } else {
                reference_sum(&[&out[26..34], &[0, 6], &len[2..], tcp])
            };
            assert_eq!(sum, 0xffff, "TCP checksum of segment {i}");
        }
        assert_eq!(wire, plan.wire_bytes());
        segs
    }

    #[test]
    fn ipv4_frame_is_cut_into_exact_segments() {
        // FIN|PSH|CWR|ACK on the big frame; 10000 bytes at MSS 1448: 7
        // segments, the last short and of odd length.
        let data = payload(10_001);
        let frame = frame4(0x80 | 0x10 | 0x08 | 0x01, &data);
        assert_eq!(check_segments(&frame, 34, 1448, false), 7);
    }

    #[test]
    fn ipv6_frame_is_cut_with_and_without_options() {
        let data = payload(4000);
        let frame = frame6(0x18, &data, false);
        assert_eq!(check_segments(&frame, 54, 1428, true), 3);
        let frame = frame6(0x19, &data, true);
        assert_eq!(check_segments(&frame, 62, 1000, true), 4);
    }

    #[test]
    fn one_exact_multiple_and_an_empty_payload() {
        let frame = frame4(0x10, &payload(2 * 1448));
        assert_eq!(check_segments(&frame, 34, 1448, false), 2);
        let frame = frame4(0x11, &[]);
        assert_eq!(check_segments(&frame, 34, 1448, false), 1);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let frame = frame4(0x10, &payload(3000));
        assert_eq!(plan(&frame, 34, 0, 1514), Err(TsoError::MssZero));
        assert!(matches!(
            plan(&frame, 34, 1449, 1514),
            Err(TsoError::MssTooLarge { .. })
        ));
        assert_eq!(plan(&frame, 30, 1000, 1514), Err(TsoError::NotTcp(30)));
        let mut udp = frame.clone();
        udp[23] = 17;
        assert_eq!(plan(&udp, 34, 1000, 1514), Err(TsoError::NotTcp(34)));
        let mut frag = frame.clone();
        frag[20] |= 0x20;
        assert_eq!(plan(&frag, 34, 1000, 1514), Err(TsoError::NotTcp(34)));
        let mut doff = frame.clone();
        doff[46] = 4 << 4;
        assert!(plan(&doff, 34, 1000, 1514).is_err());
        let big = frame4(0x10, &payload(70_000));
        assert_eq!(
            plan(&big, 34, 1000, 1514),
            Err(TsoError::TooLong(big.len()))
        );
        // An IPv6 routing header is not walked over.
        let mut rh = frame6(0x10, &payload(100), true);
        rh[20] = 43;
        assert_eq!(plan(&rh, 62, 1000, 1514), Err(TsoError::NotTcp(62)));
        // Cut anywhere, a frame is refused or planned, never a panic, and
        // a planned one writes its segments.
        let six = frame6(0x10, &payload(300), true);
        let mut out = Vec::new();
        for f in [&frame, &six] {
            for n in 0..f.len() {
                for l4 in [0, 34, 54, 62, n, usize::MAX - 4] {
                    if let Ok(p) = plan(&f[..n], l4, 100, 1514) {
                        for i in 0..p.segments() {
                            p.write(&f[..n], i, &mut out);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn segment_bound_covers_the_plan() {
        let frame = frame4(0x10, &payload(10_000));
        let p = plan(&frame, 34, 1000, 1514).unwrap();
        assert!(segments_bound(frame.len(), 1000) >= p.segments());
        assert_eq!(segments_bound(5, 0), 1);
    }
}
