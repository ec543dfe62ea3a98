//! The uplink: frames that leave the card for other cards, as UDP datagrams
//! (one 802.1Q-tagged Ethernet frame each) sent to every configured peer;
//! datagrams from the peers come back in tagged and are switched within
//! their VLAN to local ports only.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};

use dia_abi::card as abi;
use thiserror::Error;
use tracing::debug;

/// 802.1Q tag protocol id.
pub(crate) const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ) service tag protocol id; the card carries neither from a host.
pub(crate) const TPID_8021AD: u16 = 0x88a8;
/// Bytes of a tag.
pub(crate) const TAG_LEN: usize = 4;
/// Largest datagram the card takes from the uplink (a tagged largest frame).
pub(crate) const DATAGRAM_MAX: usize = abi::PORT_FRAME_MAX as usize + TAG_LEN;

/// Why a datagram from the uplink was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum UntagError {
    /// Shorter than a tagged Ethernet header.
    #[error("{0} bytes is too short for a tagged frame")]
    Short(usize),
    /// Longer than the largest tagged frame.
    #[error("{0} bytes is longer than a tagged frame can be")]
    Long(usize),
    /// No 802.1Q tag.
    #[error("not 802.1Q tagged (type {0:#06x})")]
    Untagged(u16),
    /// A VLAN id outside VLAN_MIN..=VLAN_MAX.
    #[error("VLAN {0} out of range")]
    Vlan(u16),
    /// A second tag inside the card's: no card sends that (ports are
    /// access ports), and a port's guest must never see a frame tagged
    /// for another VLAN.
    #[error("a second tag (type {0:#06x}) inside the VLAN tag")]
    Stacked(u16),
}

/// The EtherType (or TPID) at bytes 12..14 of a frame of at least 14 bytes.
pub(crate) fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

/// Writes `frame` with an 802.1Q tag for `vlan` (priority 0) into `out`.
pub(crate) fn tag(frame: &[u8], vlan: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&frame[..12]);
    out.extend_from_slice(&TPID_8021Q.to_be_bytes());
    out.extend_from_slice(&(vlan & 0x0fff).to_be_bytes());
    out.extend_from_slice(&frame[12..]);
}

/// Removes the 802.1Q tag of the datagram in `buf[..len]` in place;
/// returns the VLAN and the untagged frame's length (at the start of `buf`).
pub(crate) fn untag(buf: &mut [u8], len: usize) -> Result<(u16, usize), UntagError> {
    if len < 14 + TAG_LEN {
        return Err(UntagError::Short(len));
    }
    if len > DATAGRAM_MAX || len > buf.len() {
        return Err(UntagError::Long(len));
    }
    let tpid = ethertype(buf);
    if tpid != TPID_8021Q {
        return Err(UntagError::Untagged(tpid));
    }
    let vlan = u16::from_be_bytes([buf[14], buf[15]]) & 0x0fff;
    if !(abi::VLAN_MIN..=abi::VLAN_MAX).contains(&vlan) {
        return Err(UntagError::Vlan(vlan));
    }
    let inner = u16::from_be_bytes([buf[16], buf[17]]);
    if inner == TPID_8021Q || inner == TPID_8021AD {
        return Err(UntagError::Stacked(inner));
    }
    buf.copy_within(12 + TAG_LEN..len, 12);
    Ok((vlan, len - TAG_LEN))
}

/// The uplink socket and its peers.
#[derive(Debug)]
pub(crate) struct Uplink {
    sock: UdpSocket,
    peers: Vec<SocketAddr>,
}

impl Uplink {
    /// Binds `bind` (non-blocking) to talk to `peers`.
    pub(crate) fn bind(bind: SocketAddr, peers: Vec<SocketAddr>) -> std::io::Result<Self> {
        let sock = UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        Ok(Self { sock, peers })
    }

    /// The socket (to poll it).
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.sock
    }

    /// Sends a tagged frame to every peer (best effort, like a wire).
    pub(crate) fn send(&self, tagged: &[u8]) {
        for peer in &self.peers {
            if let Err(e) = self.sock.send_to(tagged, peer) {
                debug!(%peer, "uplink send failed: {e}");
            }
        }
    }

    /// The next datagram from a peer into `buf`: `Some(Ok(len))`, or
    /// `Some(Err(from))` for one from an address that is not a peer;
    /// `None` when there is none.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Option<Result<usize, SocketAddr>> {
        loop {
            match self.sock.recv_from(buf) {
                Ok((len, from)) if self.peers.contains(&from) => return Some(Ok(len)),
                Ok((_, from)) => return Some(Err(from)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) => {
                    debug!("uplink receive failed: {e}");
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn tag_then_untag_is_identity() {
        let f = frame(60);
        let mut t = Vec::new();
        tag(&f, 100, &mut t);
        assert_eq!(t.len(), 64);
        assert_eq!(&t[12..16], &[0x81, 0x00, 0x00, 100]);
        let len = t.len();
        t.resize(DATAGRAM_MAX, 0);
        assert_eq!(untag(&mut t, len), Ok((100, 60)));
        assert_eq!(&t[..60], &f[..]);
    }

    #[test]
    fn bad_datagrams_are_refused() {
        let mut buf = vec![0u8; DATAGRAM_MAX + 10];
        assert_eq!(untag(&mut buf, 17), Err(UntagError::Short(17)));
        assert_eq!(
            untag(&mut buf, DATAGRAM_MAX + 1),
            Err(UntagError::Long(DATAGRAM_MAX + 1))
        );
        buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(untag(&mut buf, 60), Err(UntagError::Untagged(0x0800)));
        for vlan in [0u16, 4095] {
            let mut t = Vec::new();
            tag(&frame(60), vlan, &mut t);
            let len = t.len();
            assert_eq!(untag(&mut t, len), Err(UntagError::Vlan(vlan)));
        }
        // Double tagged: the inner tag could name another VLAN.
        for tpid in [TPID_8021Q, TPID_8021AD] {
            let mut f = frame(60);
            f[12..14].copy_from_slice(&tpid.to_be_bytes());
            let mut t = Vec::new();
            tag(&f, 100, &mut t);
            let len = t.len();
            assert_eq!(untag(&mut t, len), Err(UntagError::Stacked(tpid)));
        }
    }
}
