//! Entry points for the `fabric_pdu` cargo-fuzz target (built only with the
//! `fuzzing` feature; not an API): the PDU codec, and a target without
//! sockets whose connections take a host's bytes and give back what the
//! target would send, plus a host-side check that everything the target
//! sends is a well-formed controller-to-host PDU.

use std::sync::Arc;

use crate::pool::Pool;

use super::controller::{Shared, TargetConfig};
use super::pdu::{self, kind, Header, HEADER_BYTES};
pub use super::pdu::{
    decode, encode, Capsule, Completion, Data, Digests, Fatal, IcReq, Limits, Pdu, R2t, Term,
};
pub use super::queue::Stop;
use super::queue::{self, Connection};
pub use super::{IN_CAPSULE_BYTES, MAXH2CDATA, MDTS_BYTES};

/// A target without sockets.
#[derive(Debug)]
pub struct Target {
    shared: Arc<Shared>,
    conns: Vec<Option<Connection>>,
}

impl Target {
    /// A target serving `pool` (none: a card without storage) for a card
    /// with serial number `serial`.
    pub fn new(pool: Option<Arc<Pool>>, serial: &str) -> Self {
        let cfg = TargetConfig {
            listen: ([127, 0, 0, 1], 4420).into(),
            serial: serial.to_string(),
            advertise: None,
            max_connections: 8,
        };
        Self {
            shared: Arc::new(Shared::new(cfg, Arc::new(move || pool.clone()))),
            conns: Vec::new(),
        }
    }

    /// Opens a connection; returns its index.
    pub fn connect(&mut self) -> usize {
        self.conns
            .push(Some(Connection::new(self.shared.clone(), None)));
        self.conns.len() - 1
    }

    /// Open connections' indices.
    pub fn open(&self) -> Vec<usize> {
        (0..self.conns.len())
            .filter(|&i| self.conns[i].as_ref().is_some_and(Connection::alive))
            .collect()
    }

    /// The digests connection `i` uses.
    pub fn digests(&self, i: usize) -> Digests {
        self.conns
            .get(i)
            .and_then(Option::as_ref)
            .map(Connection::digests)
            .unwrap_or_default()
    }

    /// Feeds a host's bytes to connection `i`; returns what the target
    /// sent, why it ended the connection (then closed), and the digests
    /// its PDUs after ICResp carry.
    pub fn feed(&mut self, i: usize, bytes: &[u8]) -> (Vec<u8>, Option<Stop>, Digests) {
        let mut out = Vec::new();
        let Some(Some(conn)) = self.conns.get_mut(i) else {
            return (out, None, Digests::default());
        };
        let stop = queue::feed(conn, bytes, &mut out);
        let digests = conn.digests();
        if stop.is_some() {
            self.conns[i] = None;
        }
        (out, stop, digests)
    }

    /// Closes connection `i` (the host went away).
    pub fn close(&mut self, i: usize) {
        if let Some(c) = self.conns.get_mut(i) {
            *c = None;
        }
    }

    /// The NQN of card namespace `nsid`'s subsystem.
    pub fn volume_nqn(&self, nsid: u32) -> String {
        self.shared.volume_nqn(nsid)
    }

    /// Live controllers.
    pub fn controllers(&self) -> usize {
        self.shared.controllers()
    }
}

/// Decodes what the target sent on a connection that uses `digests`
/// (after its ICResp); panics if any of it is not a well-formed PDU a
/// controller may send.
pub fn host_decode(mut out: &[u8], digests: Digests) -> Vec<Pdu> {
    let limits = Limits {
        capsule_data: 0,
        data_pdu: usize::MAX,
    };
    let mut pdus = Vec::new();
    while !out.is_empty() {
        let head = out
            .first_chunk::<HEADER_BYTES>()
            .expect("the target sent a partial header");
        let h = Header::parse(head);
        let d = match h.kind {
            kind::IC_RESP | kind::C2H_TERM => None,
            _ => Some(digests),
        };
        let l = pdu::check(&h, d, limits).expect("the target sent a bad header");
        let p = decode(&out[..l.plen], d, limits).expect("the target sent a bad PDU");
        assert!(
            matches!(
                p,
                Pdu::IcResp(_) | Pdu::C2hTerm(_) | Pdu::Resp(_) | Pdu::C2hData(_) | Pdu::R2t(_)
            ),
            "the target sent a host's PDU: {p:?}"
        );
        pdus.push(p);
        out = &out[l.plen..];
    }
    pdus
}

/// The `fabric_initiator` target: the initiator's receive path (and its
/// ICResp check) on a target's bytes, with commands in flight; see
/// `initiator::receive::drive` for the input's layout and what it checks.
pub fn initiator_receive(bytes: &[u8]) {
    super::initiator::receive::drive(bytes);
}
