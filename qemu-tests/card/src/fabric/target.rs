//! The target's sockets: a listener thread accepting TCP connections (at
//! most `max_connections` at once) and a thread per connection that reads
//! PDUs (header first, checked, then the rest), hands them to its
//! [`Connection`] and writes what it answers. Silence is bounded: a PDU
//! must arrive whole within [`PDU_TIMEOUT`], an admin queue must hear from
//! its host within twice the Keep Alive Timeout, and an I/O queue closes
//! when its controller is gone.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::controller::{PoolSource, Shared, TargetConfig};
use super::pdu::HEADER_BYTES;
use super::queue::{Connection, Stop};

/// Longest a started PDU may take to arrive in full.
pub const PDU_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a waiting connection looks at its controller and deadlines.
const POLL: Duration = Duration::from_millis(500);
/// Longest a write to a host may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running target.
#[derive(Debug)]
pub struct Target {
    /// The address it listens on (the port resolved, if 0 was asked for).
    pub addr: std::net::SocketAddr,
    /// The listener thread.
    pub thread: JoinHandle<()>,
}

/// Binds `cfg.listen` and serves NVMe/TCP on it from a thread of its own.
pub fn serve(cfg: TargetConfig, pools: PoolSource) -> std::io::Result<Target> {
    let listener = TcpListener::bind(cfg.listen)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(cfg, pools));
    info!(%addr, "fabric: NVMe/TCP target listening");
    let thread = std::thread::Builder::new()
        .name("fabric".into())
        .spawn(move || accept(&listener, &shared))?;
    Ok(Target { addr, thread })
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                debug!("fabric: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "?".to_string(), |a| a.to_string());
        let max = shared.cfg.max_connections;
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= max {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, max, "fabric: connection refused, the target has its most connections");
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fabric-conn".into())
            .spawn(move || {
                serve_connection(&s, stream, &peer);
                s.connections.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            warn!("fabric: no thread for a connection: {e}");
        }
    }
}

/// Why reading stopped.
enum ReadEnd {
    /// The host closed the connection.
    Closed,
    /// Nothing (more) came in time.
    TimedOut(&'static str),
    /// The connection's controller is gone.
    Gone,
    /// The socket failed.
    Failed(std::io::Error),
}

/// Fills `buf` from `stream`. `idle` bounds the wait for the first byte
/// (`None`: wait as long as the connection is alive); once a byte came,
/// the rest must come within [`PDU_TIMEOUT`].
fn read_full(
    stream: &mut TcpStream,
    buf: &mut [u8],
    idle: Option<Duration>,
    started: bool,
    conn: &Connection,
) -> Result<(), ReadEnd> {
    let mut got = 0;
    let mut since = Instant::now();
    let mut in_pdu = started;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(ReadEnd::Closed),
            Ok(n) => {
                got += n;
                if !in_pdu {
                    in_pdu = true;
                    since = Instant::now();
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !conn.alive() {
                    return Err(ReadEnd::Gone);
                }
                let limit = if in_pdu { Some(PDU_TIMEOUT) } else { idle };
                if limit.is_some_and(|l| since.elapsed() > l) {
                    return Err(ReadEnd::TimedOut(if in_pdu {
                        "a PDU stopped half way"
                    } else {
                        "the host went silent"
                    }));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadEnd::Failed(e)),
        }
    }
    Ok(())
}

/// After a C2HTermReq: closes the sending side and reads (and drops) what
/// the peer still sends, for at most [`TERM_DRAIN`], so the close is a FIN
/// after the C2HTermReq and not a reset, which would make the peer's stack
/// discard the C2HTermReq unread.
fn drain_before_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = std::time::Instant::now() + TERM_DRAIN;
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < TERM_DRAIN_MAX_BYTES {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match std::io::Read::read(stream, &mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
}

/// How long a terminated connection's input is drained before it closes.
const TERM_DRAIN: Duration = Duration::from_secs(1);
/// Most bytes drained from a terminated connection.
const TERM_DRAIN_MAX_BYTES: usize = 1 << 20;

fn serve_connection(shared: &Arc<Shared>, mut stream: TcpStream, peer: &str) {
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(POLL)))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = setup {
        debug!(peer, "fabric: socket setup: {e}");
        return;
    }
    let mut conn = Connection::new(shared.clone(), stream.local_addr().ok());
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let end = loop {
        let mut head = [0u8; HEADER_BYTES];
        if let Err(e) = read_full(&mut stream, &mut head, conn.idle_limit(), false, &conn) {
            break e;
        }
        let plen = match conn.check_header(&head) {
            Ok(p) => p,
            Err(f) => {
                warn!(peer, queue = ?conn.queue_id(), "fabric: {f}; closing with C2HTermReq");
                let _ = stream.write_all(&conn.termination(&f, &head));
                drain_before_close(&mut stream);
                break ReadEnd::Closed;
            }
        };
        buf.clear();
        buf.extend_from_slice(&head);
        buf.resize(plen, 0);
        if let Err(e) = read_full(&mut stream, &mut buf[HEADER_BYTES..], None, true, &conn) {
            break e;
        }
        out.clear();
        let r = conn.receive(&buf, &mut out);
        if !out.is_empty() {
            if let Err(e) = stream.write_all(&out) {
                break ReadEnd::Failed(e);
            }
        }
        match r {
            Ok(()) => {}
            Err(Stop::Fatal(f)) => {
                warn!(peer, queue = ?conn.queue_id(), "fabric: {f}; closing with C2HTermReq");
                let _ = stream.write_all(&conn.termination(&f, &buf));
                drain_before_close(&mut stream);
                break ReadEnd::Closed;
            }
            Err(Stop::HostTerminated(fes)) => {
                info!(peer, queue = ?conn.queue_id(), fes, "fabric: host terminated the connection");
                break ReadEnd::Closed;
            }
        }
    };
    match end {
        ReadEnd::Closed => debug!(peer, queue = ?conn.queue_id(), "fabric: connection closed"),
        ReadEnd::Gone => {
            debug!(peer, queue = ?conn.queue_id(), "fabric: controller gone; queue closed")
        }
        ReadEnd::TimedOut(why) => {
            info!(peer, queue = ?conn.queue_id(), "fabric: {why}; connection closed")
        }
        ReadEnd::Failed(e) => debug!(peer, queue = ?conn.queue_id(), "fabric: {e}"),
    }
    let _ = stream.shutdown(Shutdown::Both);
}
