//! The initiator's receive path without I/O: whole PDUs from the target
//! in, checked against the commands in flight, and what follows out —
//! a command completed (with the data it read), or H2CData PDUs to send
//! for an R2T. Nothing the target sends is used before it is checked:
//! type, HLEN/PLEN/PDO and digest flags (`pdu::check`), the digests
//! themselves, a command id in flight, C2HData in order and inside the
//! command's buffer, R2Ts in order and inside the write's data, and a
//! success that comes with all the data. Any violation, and a
//! C2HTermReq, is a [`TransportError`]: the caller ends the connection.
//! The ICResp check is here too. Pure, so the fuzz target drives it.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::pdu::{
    self, fes, kind, Completion, Data, Digests, Fatal, Header, IcResp, Limits, Pdu, R2t,
    HEADER_BYTES,
};
use super::error::TransportError;
use super::{MAX_COMMAND_BYTES, MIN_MAXH2CDATA};

/// Data alignment the initiator asks for (HPDA 0: dwords).
pub const HPDA: u8 = 0;
/// Dword alignment of the data in a PDU from the target (HPDA + 1 dwords).
const DATA_ALIGN: usize = (HPDA as usize + 1) * 4;

/// What a command in flight expects from the target.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Bytes the target sends back (a read), 0 if none.
    pub read_len: usize,
    /// Data the target asks for with R2T (a write whose data is not in the
    /// capsule).
    pub write: Option<Arc<Vec<u8>>>,
}

/// A command's state while in flight.
#[derive(Debug)]
struct Inflight {
    expect: Expect,
    /// C2HData so far (in order).
    received: Vec<u8>,
    /// Write data requested by R2Ts so far (in order).
    requested: usize,
    /// The LAST C2HData came.
    last_seen: bool,
}

/// What a checked PDU leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Command `cid` completed; `data` is what it read (a read, else empty).
    Complete {
        /// The completion (for C2HData with SUCCESS, a made-up successful one).
        completion: Completion,
        /// The data read.
        data: Vec<u8>,
    },
    /// Encoded H2CData PDUs to send, answering an R2T.
    Send(Vec<u8>),
}

/// The connection's parameters from ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Digests in use.
    pub digests: Digests,
    /// Alignment of data the initiator sends (CPDA).
    pub cpda: u8,
    /// Largest H2CData payload.
    pub maxh2cdata: u32,
}

/// Checks an ICResp (`buf`: its 128 bytes) against the ICReq that asked
/// for `digests`.
pub fn check_icresp(buf: &[u8], digests: Digests) -> Result<Negotiated, TransportError> {
    let r: IcResp = match pdu::decode(buf, None, limits())? {
        Pdu::IcResp(r) => r,
        Pdu::C2hTerm(t) => {
            return Err(TransportError::Terminated {
                fes: t.fes,
                fei: t.fei,
            })
        }
        _ => return Err(Fatal::sequence("a PDU other than ICResp after ICReq").into()),
    };
    if r.pfv != 0 {
        return Err(unsupported(8, "ICResp PDU format version other than 0"));
    }
    if r.cpda > pdu::MAX_PDA {
        return Err(unsupported(10, "ICResp CPDA above 31"));
    }
    if r.digests != digests {
        return Err(unsupported(
            11,
            "ICResp digests differ from what ICReq asked",
        ));
    }
    if r.maxh2cdata < MIN_MAXH2CDATA || !r.maxh2cdata.is_multiple_of(4) {
        return Err(unsupported(
            12,
            "ICResp MAXH2CDATA below 4 KiB or not dwords",
        ));
    }
    Ok(Negotiated {
        digests: r.digests,
        cpda: r.cpda,
        maxh2cdata: r.maxh2cdata,
    })
}

fn unsupported(fei: u32, why: &'static str) -> TransportError {
    TransportError::Protocol(Fatal {
        fes: fes::UNSUPPORTED_PARAMETER,
        fei,
        why,
    })
}

/// What one PDU from the target may carry.
fn limits() -> Limits {
    Limits {
        // The target never sends a capsule with data.
        capsule_data: 0,
        data_pdu: MAX_COMMAND_BYTES,
    }
}

fn protocol(fes: u16, fei: u32, why: &'static str) -> TransportError {
    TransportError::Protocol(Fatal { fes, fei, why })
}

/// The receive path of one connection.
#[derive(Debug)]
pub struct Receiver {
    n: Negotiated,
    inflight: HashMap<u16, Inflight>,
}

impl Receiver {
    /// A receive path for a connection that negotiated `n`.
    pub fn new(n: Negotiated) -> Self {
        Self {
            n,
            inflight: HashMap::new(),
        }
    }

    /// What ICResp negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.n
    }

    /// Registers command `cid` before it is sent.
    pub fn expect(&mut self, cid: u16, expect: Expect) {
        self.inflight.insert(
            cid,
            Inflight {
                expect,
                received: Vec::new(),
                requested: 0,
                last_seen: false,
            },
        );
    }

    /// Whether `cid` is in flight.
    pub fn in_flight(&self, cid: u16) -> bool {
        self.inflight.contains_key(&cid)
    }

    /// Commands in flight.
    pub fn len(&self) -> usize {
        self.inflight.len()
    }

    /// Checks the common header of the next PDU; returns its PLEN.
    pub fn check_header(&self, head: &[u8; HEADER_BYTES]) -> Result<usize, TransportError> {
        let h = Header::parse(head);
        if !matches!(
            h.kind,
            kind::C2H_TERM | kind::CAPSULE_RESP | kind::C2H_DATA | kind::R2T
        ) {
            return Err(Fatal::header(0, "a PDU type the target may not send now").into());
        }
        let l = pdu::check(&h, Some(self.n.digests), limits())?;
        if l.data_len > 0 && l.data_at % DATA_ALIGN != 0 {
            return Err(Fatal::header(3, "PDO not aligned as HPDA asked").into());
        }
        Ok(l.plen)
    }

    /// Handles one whole PDU (exactly PLEN bytes); appends what follows.
    pub fn receive(&mut self, buf: &[u8], out: &mut Vec<Action>) -> Result<(), TransportError> {
        let head = buf
            .first_chunk::<HEADER_BYTES>()
            .ok_or(Fatal::header(4, "PDU shorter than its common header"))?;
        self.check_header(head)?;
        match pdu::decode(buf, Some(self.n.digests), limits())? {
            Pdu::C2hTerm(t) => Err(TransportError::Terminated {
                fes: t.fes,
                fei: t.fei,
            }),
            Pdu::Resp(c) => self.response(c, out),
            Pdu::C2hData(d) => self.c2h_data(d, out),
            Pdu::R2t(r) => self.r2t(r, out),
            // `check_header` let only the four types above through.
            _ => Err(Fatal::header(0, "a PDU type the target may not send").into()),
        }
    }

    fn response(&mut self, c: Completion, out: &mut Vec<Action>) -> Result<(), TransportError> {
        let Some(f) = self.inflight.get(&c.cid) else {
            return Err(Fatal::header(20, "a response for a command id not in flight").into());
        };
        let success = c.status & 0x7ff == 0;
        if success && f.received.len() != f.expect.read_len {
            return Err(protocol(
                fes::SEQUENCE,
                0,
                "a successful response before all the data it read",
            ));
        }
        let Some(f) = self.inflight.remove(&c.cid) else {
            return Ok(());
        };
        out.push(Action::Complete {
            completion: c,
            data: if success { f.received } else { Vec::new() },
        });
        Ok(())
    }

    fn c2h_data(&mut self, d: Data, out: &mut Vec<Action>) -> Result<(), TransportError> {
        if !d.data_ok {
            return Err(protocol(
                fes::HEADER_DIGEST,
                0,
                "C2HData data digest mismatch",
            ));
        }
        let Some(f) = self.inflight.get_mut(&d.cid) else {
            return Err(Fatal::header(8, "C2HData for a command id not in flight").into());
        };
        if f.expect.read_len == 0 {
            return Err(Fatal::header(8, "C2HData for a command that reads nothing").into());
        }
        if f.last_seen {
            return Err(Fatal::sequence("C2HData after the LAST one").into());
        }
        if d.offset as usize != f.received.len() {
            return Err(protocol(fes::OUT_OF_RANGE, 12, "C2HData out of order"));
        }
        if f.received.len() + d.data.len() > f.expect.read_len {
            return Err(protocol(
                fes::OUT_OF_RANGE,
                16,
                "C2HData past the command's buffer",
            ));
        }
        f.received.extend_from_slice(&d.data);
        let complete = f.received.len() == f.expect.read_len;
        if d.last && !complete {
            return Err(Fatal::sequence("C2HData LAST before all the data").into());
        }
        f.last_seen = d.last;
        if d.success {
            if !d.last {
                return Err(Fatal::header(1, "C2HData SUCCESS without LAST").into());
            }
            let Some(f) = self.inflight.remove(&d.cid) else {
                return Ok(());
            };
            out.push(Action::Complete {
                completion: Completion {
                    cid: d.cid,
                    ..Completion::default()
                },
                data: f.received,
            });
        }
        Ok(())
    }

    fn r2t(&mut self, r: R2t, out: &mut Vec<Action>) -> Result<(), TransportError> {
        let Some(f) = self.inflight.get_mut(&r.cid) else {
            return Err(Fatal::header(8, "R2T for a command id not in flight").into());
        };
        let Some(data) = f.expect.write.clone() else {
            return Err(Fatal::header(8, "R2T for a command without R2T data").into());
        };
        let start = r.offset as usize;
        if start != f.requested {
            return Err(protocol(fes::OUT_OF_RANGE, 12, "R2T out of order"));
        }
        let end = start.saturating_add(r.length as usize);
        if r.length == 0 || end > data.len() {
            return Err(protocol(
                fes::OUT_OF_RANGE,
                16,
                "R2T outside the write's data",
            ));
        }
        f.requested = end;
        let mut bytes = Vec::new();
        let step = self.n.maxh2cdata as usize;
        let mut at = start;
        while at < end {
            let n = step.min(end - at);
            bytes.extend(pdu::encode_aligned(
                &Pdu::H2cData(Data {
                    cid: r.cid,
                    ttag: r.ttag,
                    // Below `data.len()`, which is at most MAX_COMMAND_BYTES.
                    offset: at as u32,
                    last: at + n == end,
                    success: false,
                    data: data[at..at + n].to_vec(),
                    data_ok: true,
                }),
                self.n.digests,
                self.n.cpda,
            ));
            at += n;
        }
        out.push(Action::Send(bytes));
        Ok(())
    }
}

/// Drives a receive path with bytes from a target, as the fuzz target does
/// (`bytes[0]` picks the digests (bits 1:0) and CPDA (bits 4:2); with bit
/// 7 set the rest starts with an ICResp to check first; the rest is what
/// the target sends), with three commands in flight: a read of 8 KiB (cid 1), a write
/// of 12 KiB through R2T (cid 2), a command without data (cid 3). Checks
/// what must hold whatever the target sends: no panic; a completed read's
/// data is exactly its length; H2CData answers stay inside the write's
/// data, in MAXH2CDATA pieces, aligned to CPDA; nothing goes on after an
/// error.
#[cfg(any(test, feature = "fuzzing"))]
pub fn drive(bytes: &[u8]) {
    let Some((&mode, mut stream)) = bytes.split_first() else {
        return;
    };
    let n = Negotiated {
        digests: Digests::from_bits(mode & 3),
        cpda: (mode >> 2) & 7,
        maxh2cdata: MIN_MAXH2CDATA,
    };
    if mode & ICRESP_FIRST != 0 {
        let Some(ic) = stream.get(..usize::from(pdu::hlen::IC)) else {
            return;
        };
        if check_icresp(ic, n.digests).is_err() {
            return;
        }
        stream = &stream[ic.len()..];
    }
    let mut rx = Receiver::new(n);
    let write: Arc<Vec<u8>> = Arc::new((0..12288u32).map(|i| (i % 251) as u8).collect());
    rx.expect(
        1,
        Expect {
            read_len: 8192,
            write: None,
        },
    );
    rx.expect(
        2,
        Expect {
            read_len: 0,
            write: Some(write.clone()),
        },
    );
    rx.expect(
        3,
        Expect {
            read_len: 0,
            write: None,
        },
    );
    let mut out = Vec::new();
    while let Some(head) = stream.first_chunk::<HEADER_BYTES>() {
        let Ok(plen) = rx.check_header(head) else {
            return;
        };
        let Some(pdu) = stream.get(..plen) else {
            return;
        };
        out.clear();
        if rx.receive(pdu, &mut out).is_err() {
            return;
        }
        for a in &out {
            match a {
                Action::Complete { completion, data } => {
                    assert!(!rx.in_flight(completion.cid));
                    if completion.cid == 1 && completion.status & 0x7ff == 0 {
                        assert_eq!(data.len(), 8192, "a read completed short");
                    } else {
                        assert!(data.is_empty(), "data for a command that read nothing");
                    }
                }
                Action::Send(b) => check_h2c(b, &n, &write),
            }
        }
        stream = &stream[plen..];
    }
}

/// [`drive`]'s mode bit: an ICResp comes first.
#[cfg(any(test, feature = "fuzzing"))]
const ICRESP_FIRST: u8 = 0x80;

/// The H2CData PDUs the initiator sends are well formed and inside `write`.
#[cfg(any(test, feature = "fuzzing"))]
fn check_h2c(mut b: &[u8], n: &Negotiated, write: &[u8]) {
    let lim = Limits {
        capsule_data: 0,
        data_pdu: n.maxh2cdata as usize,
    };
    while let Some(head) = b.first_chunk::<HEADER_BYTES>() {
        let h = Header::parse(head);
        let l = pdu::check(&h, Some(n.digests), lim).expect("a bad H2CData header");
        assert_eq!(
            l.data_at % ((usize::from(n.cpda) + 1) * 4),
            0,
            "H2CData not aligned to CPDA"
        );
        match pdu::decode(&b[..l.plen], Some(n.digests), lim) {
            Ok(Pdu::H2cData(d)) => {
                let at = d.offset as usize;
                assert_eq!(&write[at..at + d.data.len()], &d.data[..]);
            }
            other => panic!("not H2CData: {other:?}"),
        }
        b = &b[l.plen..];
    }
    assert!(b.is_empty(), "a partial H2CData");
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: Negotiated = Negotiated {
        digests: Digests {
            header: true,
            data: true,
        },
        cpda: 0,
        maxh2cdata: 4096,
    };

    fn enc(p: &Pdu) -> Vec<u8> {
        pdu::encode(p, N.digests)
    }

    fn data(cid: u16, offset: u32, len: usize, last: bool) -> Pdu {
        Pdu::C2hData(Data {
            cid,
            ttag: 0,
            offset,
            last,
            success: false,
            data: vec![7; len],
            data_ok: true,
        })
    }

    fn resp(cid: u16, status: u16) -> Pdu {
        Pdu::Resp(Completion {
            cid,
            status,
            ..Completion::default()
        })
    }

    fn rx() -> Receiver {
        let mut rx = Receiver::new(N);
        rx.expect(
            1,
            Expect {
                read_len: 8192,
                write: None,
            },
        );
        rx.expect(
            2,
            Expect {
                read_len: 0,
                write: Some(Arc::new(vec![3; 10000])),
            },
        );
        rx
    }

    fn feed(rx: &mut Receiver, p: &Pdu) -> Result<Vec<Action>, TransportError> {
        let mut out = Vec::new();
        rx.receive(&enc(p), &mut out).map(|()| out)
    }

    #[test]
    fn a_read_in_two_pieces_then_its_response() {
        let mut r = rx();
        assert!(feed(&mut r, &data(1, 0, 4096, false)).unwrap().is_empty());
        assert!(feed(&mut r, &data(1, 4096, 4096, true)).unwrap().is_empty());
        match &feed(&mut r, &resp(1, 0)).unwrap()[..] {
            [Action::Complete { completion, data }] => {
                assert_eq!((completion.cid, data.len()), (1, 8192));
            }
            other => panic!("{other:?}"),
        }
        assert!(!r.in_flight(1));
        // A second response for it: unknown.
        assert!(feed(&mut r, &resp(1, 0)).is_err());
    }

    #[test]
    fn an_r2t_becomes_h2cdata_in_maxh2cdata_pieces() {
        let mut r = rx();
        let a = feed(
            &mut r,
            &Pdu::R2t(R2t {
                cid: 2,
                ttag: 5,
                offset: 0,
                length: 10000,
            }),
        )
        .unwrap();
        let [Action::Send(b)] = &a[..] else {
            panic!("{a:?}")
        };
        check_h2c(b, &N, &[3; 10000]);
        // 4096 + 4096 + 1808 bytes, LAST on the third.
        let h = Header::parse(b.first_chunk::<HEADER_BYTES>().unwrap());
        assert_eq!(h.flags & pdu::flag::DATA_LAST, 0);
        // Asking again for data already asked for is out of order.
        let again = Pdu::R2t(R2t {
            cid: 2,
            ttag: 6,
            offset: 0,
            length: 10,
        });
        assert!(feed(&mut r, &again).is_err());
    }

    #[test]
    fn what_the_target_may_not_send_is_refused() {
        let cases: Vec<(Pdu, &str)> = vec![
            (data(9, 0, 4096, true), "unknown cid"),
            (data(2, 0, 4096, true), "data for a write"),
            (data(1, 4096, 4096, false), "out of order"),
            (data(1, 0, 8196, true), "past the buffer"),
            (data(1, 0, 4096, true), "LAST too early"),
            (resp(9, 0), "response for an unknown cid"),
            (resp(1, 0), "success without the data"),
            (
                Pdu::R2t(R2t {
                    cid: 1,
                    ttag: 1,
                    offset: 0,
                    length: 4096,
                }),
                "R2T for a read",
            ),
            (
                Pdu::R2t(R2t {
                    cid: 2,
                    ttag: 1,
                    offset: 0,
                    length: 10001,
                }),
                "R2T past the data",
            ),
            (
                Pdu::R2t(R2t {
                    cid: 2,
                    ttag: 1,
                    offset: 0,
                    length: 0,
                }),
                "an empty R2T",
            ),
            (
                Pdu::IcResp(IcResp {
                    pfv: 0,
                    cpda: 0,
                    digests: N.digests,
                    maxh2cdata: 4096,
                }),
                "a second ICResp",
            ),
            (
                Pdu::C2hTerm(pdu::Term {
                    fes: 1,
                    fei: 2,
                    header: Vec::new(),
                }),
                "a termination",
            ),
        ];
        for (p, why) in cases {
            assert!(feed(&mut rx(), &p).is_err(), "{why}");
        }
        // A failed read completes without data and without complaint.
        let mut r = rx();
        assert!(matches!(
            &feed(&mut r, &resp(1, 0x80)).unwrap()[..],
            [Action::Complete { data, .. }] if data.is_empty()
        ));
        // A data digest mismatch.
        let mut b = enc(&data(1, 0, 4096, false));
        let n = b.len();
        b[n - 8] ^= 1;
        assert!(rx().receive(&b, &mut Vec::new()).is_err());
    }

    #[test]
    fn success_flag_completes_without_a_response() {
        let mut r = rx();
        let mut p = data(1, 0, 8192, true);
        if let Pdu::C2hData(d) = &mut p {
            d.success = true;
        }
        assert!(matches!(
            &feed(&mut r, &p).unwrap()[..],
            [Action::Complete { data, .. }] if data.len() == 8192
        ));
    }

    #[test]
    fn icresp_checks() {
        let ok = IcResp {
            pfv: 0,
            cpda: 0,
            digests: N.digests,
            maxh2cdata: 65536,
        };
        let b = |r: IcResp| pdu::encode(&Pdu::IcResp(r), Digests::default());
        assert!(check_icresp(&b(ok), N.digests).is_ok());
        assert!(check_icresp(&b(IcResp { pfv: 1, ..ok }), N.digests).is_err());
        assert!(check_icresp(&b(IcResp { cpda: 32, ..ok }), N.digests).is_err());
        assert!(check_icresp(
            &b(IcResp {
                maxh2cdata: 100,
                ..ok
            }),
            N.digests
        )
        .is_err());
        assert!(check_icresp(&b(ok), Digests::default()).is_err());
        assert!(check_icresp(&b(ok)[..100], N.digests).is_err());
    }

    /// The seed corpus of the `fabric_initiator` fuzz target: real
    /// exchanges for [`drive`]'s three commands.
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let none = Digests::default();
        let both = N.digests;
        let stream = |mode: u8, d: Digests, pdus: &[Pdu]| {
            let mut b = vec![mode];
            for p in pdus {
                b.extend(pdu::encode(p, d));
            }
            b
        };
        let r2t = |offset, length| {
            Pdu::R2t(R2t {
                cid: 2,
                ttag: 1,
                offset,
                length,
            })
        };
        let all = [
            data(1, 0, 4096, false),
            data(1, 4096, 4096, true),
            resp(1, 0),
            r2t(0, 12288),
            resp(2, 0),
            resp(3, 0),
        ];
        let mut success = data(1, 0, 8192, true);
        if let Pdu::C2hData(d) = &mut success {
            d.success = true;
        }
        let mut ic = vec![ICRESP_FIRST];
        ic.extend(pdu::encode(
            &Pdu::IcResp(IcResp {
                pfv: 0,
                cpda: 0,
                digests: none,
                maxh2cdata: 4096,
            }),
            none,
        ));
        ic.extend(&stream(0, none, &[resp(3, 0x4002)])[1..]);
        vec![
            ("seed-all-plain", stream(0, none, &all)),
            ("seed-all-digests", stream(3, both, &all)),
            (
                "seed-success-two-r2ts",
                stream(
                    0,
                    none,
                    &[success, r2t(0, 4096), r2t(4096, 8192), resp(2, 0)],
                ),
            ),
            (
                "seed-cpda-errors",
                stream(2 << 2, none, &[r2t(0, 12288), resp(1, 0x80)]),
            ),
            (
                "seed-c2h-term",
                stream(
                    0,
                    none,
                    &[Pdu::C2hTerm(pdu::Term {
                        fes: fes::SEQUENCE,
                        fei: 0,
                        header: vec![4, 0, 72, 0, 72, 0, 0, 0],
                    })],
                ),
            ),
            ("seed-icresp", ic),
        ]
    }

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/fabric_initiator")
    }

    /// Rewrites the seed corpus: `cargo test -p dia-card-model write_initiator_seeds -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/fabric_initiator"]
    fn write_initiator_seeds() {
        std::fs::create_dir_all(corpus_dir()).unwrap();
        for (name, bytes) in seeds() {
            std::fs::write(corpus_dir().join(name), bytes).unwrap();
        }
    }

    #[test]
    fn the_seed_corpus_is_current_and_passes() {
        for (name, bytes) in seeds() {
            drive(&bytes);
            let on_disk = std::fs::read(corpus_dir().join(name)).unwrap();
            assert_eq!(
                on_disk, bytes,
                "{name} differs: rerun write_initiator_seeds"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 300) as usize;
            let mut b: Vec<u8> = (0..len).map(|i| (x >> (i % 24)) as u8).collect();
            if b.len() >= 9 {
                b[1] = [0x03, 0x05, 0x07, 0x09][(x % 4) as usize];
                let plen = b.len() as u32 - 1;
                b[5..9].copy_from_slice(&plen.to_le_bytes());
            }
            drive(&b);
        }
    }
}
