//! The pool's metadata decoder on corrupted slots: raw payloads, payloads
//! built from namespace records, local and remote (so the fuzzer gets
//! past the framing to the rules), whole slots with a damaged header, and a pool opened on
//! such a slot (with its CRC made right, or not).
//!
//! Decoding ends with metadata or a refusal, never a panic; what it
//! accepts must keep every rule the rest of the card relies on (geometry
//! as Create Namespace checks it, chunks inside the pool and mapped once,
//! a stable encoding), and a pool opened on it must take I/O at the end
//! of every namespace.

#![no_main]

use arbitrary::Arbitrary;
use dia_abi::card as abi;
use dia_card_model::fuzz::{self, ScratchDir};
use libfuzzer_sys::fuzz_target;

/// One namespace record as the pool encodes it: a local one (a chunk
/// map follows) or a remote one (its target follows).
#[derive(Arbitrary, Debug)]
struct Record {
    nsid: u8,
    lba_shift: u8,
    attached: bool,
    size_blocks: Size,
    qos: [u64; 4],
    weight: u32,
    burst_ms: u32,
    map: Vec<(u16, u16)>,
    /// Claim more (or fewer) map entries than follow.
    count_delta: i8,
    /// A remote namespace's target instead of the map.
    remote: Option<RemoteRecord>,
}

/// A remote record's target, mostly well formed so the fuzzer gets to
/// the rules behind the framing.
#[derive(Arbitrary, Debug)]
struct RemoteRecord {
    addr: RemoteAddr,
    port: u16,
    digests: u8,
    reserved: u8,
    nsid: u32,
    /// NQN length (a valid one is 1..=223), or raw bytes.
    nqn: Result<u8, Vec<u8>>,
    features: u8,
    tail: [u8; 3],
}

#[derive(Arbitrary, Debug)]
enum RemoteAddr {
    V4([u8; 4]),
    V6([u16; 8]),
    Raw(Vec<u8>),
}

impl RemoteRecord {
    fn encode(&self, b: &mut Vec<u8>) {
        let mut addr = [0u8; abi::REMOTE_ADDR_LEN];
        let text = match &self.addr {
            RemoteAddr::V4(a) => std::net::Ipv4Addr::from(*a).to_string().into_bytes(),
            RemoteAddr::V6(a) => std::net::Ipv6Addr::from(*a).to_string().into_bytes(),
            RemoteAddr::Raw(r) => r.clone(),
        };
        for (d, s) in addr.iter_mut().zip(text) {
            *d = s;
        }
        b.extend_from_slice(&addr);
        b.extend_from_slice(&self.port.to_le_bytes());
        b.push(self.digests);
        b.push(self.reserved);
        b.extend_from_slice(&self.nsid.to_le_bytes());
        let mut nqn = [0u8; abi::NQN_FIELD_LEN];
        match &self.nqn {
            Ok(len) => {
                for (i, d) in nqn.iter_mut().take(usize::from(*len)).enumerate() {
                    *d = b"nqn.2026-12.io.dia:x"[i % 20];
                }
            }
            Err(raw) => {
                for (d, s) in nqn.iter_mut().zip(raw) {
                    *d = *s;
                }
            }
        }
        b.extend_from_slice(&nqn);
        b.push(self.features);
        b.extend_from_slice(&self.tail);
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Small(u16),
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(Vec<u8>),
    Records {
        records: Vec<Record>,
        count_delta: i8,
        tail: Vec<u8>,
    },
}

impl Payload {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Raw(b) => b.clone(),
            Self::Records {
                records,
                count_delta,
                tail,
            } => {
                let mut b = Vec::new();
                let count = (records.len() as i64 + i64::from(*count_delta)).max(0) as u32;
                b.extend_from_slice(&count.to_le_bytes());
                for r in records.iter().take(130) {
                    b.extend_from_slice(&u32::from(r.nsid).to_le_bytes());
                    b.push(r.lba_shift);
                    b.push(u8::from(r.attached));
                    // Kind (0 local, 1 remote), reserved.
                    b.push(u8::from(r.remote.is_some()));
                    b.push(0);
                    let size = match r.size_blocks {
                        Size::Small(n) => u64::from(n),
                        Size::Raw(n) => n,
                    };
                    b.extend_from_slice(&size.to_le_bytes());
                    b.extend_from_slice(&[0x61; abi::LABEL_LEN]);
                    for v in r.qos {
                        b.extend_from_slice(&v.to_le_bytes());
                    }
                    b.extend_from_slice(&r.weight.to_le_bytes());
                    b.extend_from_slice(&r.burst_ms.to_le_bytes());
                    if let Some(remote) = &r.remote {
                        remote.encode(&mut b);
                        continue;
                    }
                    let n = (r.map.len() as i64 + i64::from(r.count_delta)).max(0) as u32;
                    b.extend_from_slice(&n.to_le_bytes());
                    for &(l, p) in &r.map {
                        b.extend_from_slice(&u32::from(l).to_le_bytes());
                        b.extend_from_slice(&u32::from(p).to_le_bytes());
                    }
                }
                b.extend_from_slice(tail);
                b
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// The decoder alone, on a pool of `chunks` chunks.
    Decode { payload: Payload, chunks: u16 },
    /// A whole slot (header included), as read from the device.
    Slot {
        payload: Payload,
        chunks: u16,
        generation: u64,
        which: bool,
        /// Damage: (offset, byte) pairs over the slot.
        damage: Vec<(u16, u8)>,
    },
    /// A pool opened on the slot.
    Open {
        payload: Payload,
        generation: u64,
        which: bool,
        damage: Vec<(u16, u8)>,
    },
}

fn slot(payload: &Payload, generation: u64, damage: &[(u16, u8)]) -> Vec<u8> {
    let mut raw = fuzz::pool_metadata_slot(generation, &payload.bytes());
    for &(at, byte) in damage.iter().take(16) {
        let at = usize::from(at);
        if at < raw.len() {
            raw[at] = byte;
        }
    }
    raw
}

fuzz_target!(|input: Input| match input {
    Input::Decode { payload, chunks } => {
        fuzz::pool_metadata_payload(&payload.bytes(), u32::from(chunks));
    }
    Input::Slot {
        payload,
        chunks,
        generation,
        which,
        damage,
    } => {
        fuzz::pool_read_slot(
            &slot(&payload, generation, &damage),
            u64::from(which),
            u32::from(chunks),
        );
    }
    Input::Open {
        payload,
        generation,
        which,
        damage,
    } => {
        let dir = ScratchDir::new();
        // Generation 0 and 1 are the fresh pool's: a higher one wins.
        let raw = slot(&payload, generation.max(2), &damage);
        fuzz::pool_open_with_slot(&dir, &raw, u64::from(which));
    }
});
