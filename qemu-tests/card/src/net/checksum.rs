//! TX checksum offload: the Internet checksum (RFC 1071 ones' complement
//! sum) of a frame's bytes from `csum_start` to its end, stored complemented
//! at `csum_start + csum_offset`. The driver seeds the checksum field with
//! the pseudo-header sum, as Linux's `CHECKSUM_PARTIAL` does.

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
/// zero) to `sum`, without folding.
pub(crate) fn ones_sum(data: &[u8], mut sum: u64) -> u64 {
    let mut words = data.chunks_exact(2);
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

    #[test]
    fn region_outside_the_frame_is_refused() {
        let mut frame = vec![0u8; 60];
        assert!(offload(&mut frame, 58, 1).is_err());
        assert!(offload(&mut frame, 60, 0).is_err());
        assert!(offload(&mut frame, usize::MAX, 1).is_err());
        assert!(offload(&mut frame, 58, 0).is_ok());
    }
}
