//! The initiator against small fake targets on a socket: a fake answers
//! the admin queue's setup properly (Connect, properties, Identify from
//! the target's own page encoders, features) and then misbehaves on I/O
//! as each test scripts it — a truncated PDU, a wrong PLEN, C2HData past
//! the buffer, a bad data digest, a response for an unknown command id, a
//! C2HTermReq, an R2T past the write, silence mid-transfer — and every
//! case must end in an error, within the command timeout, without a panic.
//! One script answers out of order, which must work.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::super::command::{fctype, opcode, Command};
use super::super::super::identify;
use super::super::super::pdu::{
    self, Completion, Data, Digests, Header, IcResp, Limits, Pdu, R2t, Term, HEADER_BYTES,
};
use super::super::{Config, Error, Session, TransportError};

const LIMITS: Limits = Limits {
    capsule_data: 1 << 20,
    data_pdu: 1 << 20,
};
/// The fake's namespace: 1000 blocks of 4 KiB.
const BLOCKS: u64 = 1000;
/// How long a command may take in these tests.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What a fake does with an I/O command: writes what it likes.
type Script = Arc<dyn Fn(&mut TcpStream, &Command, Digests) + Send + Sync>;

fn fake(script: Script) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let script = script.clone();
            std::thread::spawn(move || serve(s, &script));
        }
    });
    addr
}

fn send(s: &mut TcpStream, p: &Pdu, d: Digests) {
    let _ = s.write_all(&pdu::encode(p, d));
}

fn reply(s: &mut TcpStream, cid: u16, status: u16, result: u64, d: Digests) {
    let c = Completion {
        result,
        cid,
        status,
        ..Completion::default()
    };
    send(s, &Pdu::Resp(c), d);
}

fn c2h(cid: u16, offset: u32, data: Vec<u8>, last: bool) -> Pdu {
    Pdu::C2hData(Data {
        cid,
        ttag: 0,
        offset,
        last,
        success: false,
        data,
        data_ok: true,
    })
}

fn serve(mut s: TcpStream, script: &Script) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut ic = [0u8; 128];
    if s.read_exact(&mut ic).is_err() {
        return;
    }
    let Ok(Pdu::IcReq(r)) = pdu::decode(&ic, None, LIMITS) else {
        return;
    };
    let d = r.digests;
    let resp = IcResp {
        pfv: 0,
        cpda: 0,
        digests: d,
        maxh2cdata: 65536,
    };
    send(&mut s, &Pdu::IcResp(resp), Digests::default());
    let mut io = false;
    loop {
        let mut head = [0u8; HEADER_BYTES];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let Ok(l) = pdu::check(&Header::parse(&head), Some(d), LIMITS) else {
            return;
        };
        let mut buf = head.to_vec();
        buf.resize(l.plen, 0);
        if s.read_exact(&mut buf[HEADER_BYTES..]).is_err() {
            return;
        }
        let c = match pdu::decode(&buf, Some(d), LIMITS) {
            Ok(Pdu::Cmd(c)) => Command(c.sqe),
            Ok(Pdu::H2cData(_)) => continue,
            _ => return,
        };
        if c.is_fabrics() && c.fctype() == fctype::CONNECT {
            io = c.connect_qid() != 0;
            reply(&mut s, c.cid(), 0, 1, d);
        } else if io {
            script(&mut s, &c, d);
        } else {
            admin(&mut s, &c, d);
        }
    }
}

/// Just enough of an admin queue for `Session::connect` and `namespace`.
fn admin(s: &mut TcpStream, c: &Command, d: Digests) {
    let result = match (c.opcode(), c.fctype()) {
        // CAP: MQES 127, TO 1 s; CSTS: ready.
        (opcode::FABRICS, fctype::PROPERTY_GET) if c.property_offset() == 0 => {
            127 | 2 << 24 | 1 << 37
        }
        (opcode::FABRICS, _) => 1,
        (opcode::IDENTIFY, _) => {
            let page = if c.cdw(10) & 0xff == 1 {
                identify::controller(&identify::ControllerInfo {
                    cntlid: 1,
                    serial: "FAKE",
                    subnqn: "nqn.fake",
                    discovery: false,
                })
            } else {
                identify::namespace(Some(&identify::NamespaceInfo {
                    size_blocks: BLOCKS,
                    lba_shift: 12,
                    nguid: [0; 16],
                    plex_record: Default::default(),
                }))
            };
            send(s, &c2h(c.cid(), 0, page, true), d);
            0
        }
        // Number of Queues: one; KATO: none.
        _ => 0,
    };
    reply(s, c.cid(), 0, result, d);
}

fn session(addr: SocketAddr, digests: bool) -> Session {
    let mut cfg = Config::new(addr, "nqn.fake");
    cfg.command_timeout = TIMEOUT;
    cfg.io_queues = 1;
    cfg.header_digest = digests;
    cfg.data_digest = digests;
    Session::connect(&cfg).unwrap()
}

/// Reads 8 KiB from a fake running `script`; returns the error and how long
/// it took.
fn read_fails(script: Script, digests: bool) -> (Error, Duration) {
    let s = session(fake(script), digests);
    let ns = s.namespace(1).unwrap();
    let started = Instant::now();
    let e = ns.read(0, &mut [0u8; 8192]).unwrap_err();
    let took = started.elapsed();
    assert!(took < TIMEOUT + Duration::from_secs(2), "took {took:?}");
    assert!(s.failure().is_some(), "the session outlived {e}");
    // Later calls fail at once.
    assert!(matches!(ns.flush(), Err(Error::Transport(_))));
    (e, took)
}

fn protocol(e: &Error) -> bool {
    matches!(e, Error::Transport(TransportError::Protocol(_)))
}

#[test]
fn a_truncated_pdu_then_a_close() {
    let (e, _) = read_fails(
        Arc::new(|s, c, d| {
            let b = pdu::encode(&c2h(c.cid(), 0, vec![1; 8192], true), d);
            let _ = s.write_all(&b[..10]);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }),
        false,
    );
    assert_eq!(e, Error::Transport(TransportError::Closed));
}

#[test]
fn a_wrong_plen_gets_an_h2c_termination_request() {
    let term: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let t = term.clone();
    let (e, _) = read_fails(
        Arc::new(move |s, c, d| {
            let mut b = pdu::encode(&Pdu::Resp(Completion::default()), d);
            b[4] = 100;
            b[8 + 12..8 + 14].copy_from_slice(&c.cid().to_le_bytes());
            let _ = s.write_all(&b);
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            *t.lock().unwrap() = Some(got);
        }),
        false,
    );
    assert!(protocol(&e), "{e}");
    let deadline = Instant::now() + TIMEOUT;
    while term.lock().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = term.lock().unwrap().take().expect("the initiator closed");
    match pdu::decode(&got, None, LIMITS) {
        // FEI 4: PLEN; the offending header comes back.
        Ok(Pdu::H2cTerm(t)) => assert_eq!((t.fei, t.header[4]), (4, 100)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn c2hdata_past_the_buffer() {
    let (e, _) = read_fails(
        Arc::new(|s, c, d| send(s, &c2h(c.cid(), 4096, vec![2; 8192], true), d)),
        false,
    );
    assert!(protocol(&e), "{e}");
}

#[test]
fn a_bad_data_digest() {
    let (e, _) = read_fails(
        Arc::new(|s, c, d| {
            let mut b = pdu::encode(&c2h(c.cid(), 0, vec![3; 8192], true), d);
            let n = b.len();
            b[n - 1] ^= 0xff;
            let _ = s.write_all(&b);
            reply(s, c.cid(), 0, 0, d);
        }),
        true,
    );
    assert!(protocol(&e), "{e}");
}

#[test]
fn a_response_for_an_unknown_command_id() {
    let (e, _) = read_fails(
        Arc::new(|s, c, d| reply(s, c.cid().wrapping_add(1000), 0, 0, d)),
        false,
    );
    assert!(protocol(&e), "{e}");
}

#[test]
fn a_c2h_termination_request() {
    let (e, _) = read_fails(
        Arc::new(|s, _, _| {
            let t = Term {
                fes: pdu::fes::SEQUENCE,
                fei: 0,
                header: Vec::new(),
            };
            send(s, &Pdu::C2hTerm(t), Digests::default());
        }),
        false,
    );
    assert!(
        matches!(e, Error::Transport(TransportError::Terminated { fes, .. }) if fes == pdu::fes::SEQUENCE),
        "{e}"
    );
}

#[test]
fn silence_mid_transfer_ends_within_the_timeout() {
    let (e, took) = read_fails(
        Arc::new(|s, c, d| {
            // Half the data, then nothing (the socket stays open).
            send(s, &c2h(c.cid(), 0, vec![4; 4096], false), d);
        }),
        false,
    );
    assert_eq!(
        e,
        Error::Transport(TransportError::Timeout { opcode: 0x02 })
    );
    assert!(took >= TIMEOUT - Duration::from_millis(100), "{took:?}");
}

/// `abort` ends a read the target leaves hanging at once, from another
/// thread, long before the command timeout, and the held handle is dead.
#[test]
fn abort_ends_a_hanging_read_at_once() {
    let s = session(fake(Arc::new(|_, _, _| {})), false);
    let ns = s.namespace(1).unwrap();
    let reader = {
        let ns = ns.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            (ns.read(0, &mut [0u8; 4096]), started.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    s.abort();
    let (r, took) = reader.join().unwrap();
    assert_eq!(r, Err(Error::Transport(TransportError::Ended)));
    assert!(took < TIMEOUT, "the read waited {took:?}");
    assert_eq!(s.failure(), Some(TransportError::Ended));
    assert!(matches!(ns.flush(), Err(Error::Transport(_))));
}

#[test]
fn an_r2t_past_the_write_and_every_command_in_flight_fails() {
    // The first command is held; the second gets an R2T beyond its data.
    let seen = Arc::new(AtomicUsize::new(0));
    let n = seen.clone();
    let addr = fake(Arc::new(move |s, c, d| {
        if n.fetch_add(1, Ordering::SeqCst) == 1 {
            let r = R2t {
                cid: c.cid(),
                ttag: 1,
                offset: 0,
                length: 1 << 20,
            };
            send(s, &Pdu::R2t(r), d);
        }
    }));
    let s = session(addr, false);
    let ns = s.namespace(1).unwrap();
    let held = {
        let ns = ns.clone();
        std::thread::spawn(move || ns.read(0, &mut [0u8; 4096]))
    };
    while seen.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let e = ns.write(0, &vec![5u8; 64 << 10], false).unwrap_err();
    assert!(protocol(&e), "{e}");
    let held = held.join().unwrap().unwrap_err();
    assert!(protocol(&held), "the held command: {held}");
}

#[test]
fn responses_out_of_order_are_matched() {
    // The first read is held until the second comes; the second is
    // answered first.
    let held: Arc<Mutex<Option<u16>>> = Arc::new(Mutex::new(None));
    let h = held.clone();
    let addr = fake(Arc::new(move |s, c, d| {
        let mut first = h.lock().unwrap();
        let Some(cid) = first.take() else {
            *first = Some(c.cid());
            return;
        };
        for (id, fill) in [(c.cid(), 2u8), (cid, 1u8)] {
            send(s, &c2h(id, 0, vec![fill; 4096], true), d);
            reply(s, id, 0, 0, d);
        }
    }));
    let s = session(addr, false);
    let ns = s.namespace(1).unwrap();
    let a = {
        let ns = ns.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            ns.read(0, &mut b).map(|()| b[0])
        })
    };
    while held.lock().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut b = [0u8; 4096];
    ns.read(8, &mut b).unwrap();
    assert_eq!(b[0], 2);
    assert_eq!(a.join().unwrap(), Ok(1));
    assert_eq!(s.failure(), None);
}

#[test]
fn a_target_that_never_answers_icreq() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let keep = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let mut cfg = Config::new(addr, "nqn.fake");
    cfg.connect_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let e = Session::connect(&cfg).unwrap_err();
    assert!(
        matches!(e, Error::Transport(TransportError::Io { .. })),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(keep.join());
}
