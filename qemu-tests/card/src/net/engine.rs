//! The network engine: one thread per running controller that moves frames.
//! It polls the doorbells of every live port's vector and the uplink socket
//! (timeout: the next token refill of a throttled port, else CARD_POLL_MS),
//! and in each pass, holding the state lock, takes frames off TX rings,
//! switches them and puts them into RX rings or onto the uplink.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use dia_abi::card::{self as abi, PortStats};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{info, warn};

use super::checksum;
use super::port::{Port, Scratch, Tx, ETH_HLEN};
use super::switch::{Dest, Refused, Switch};
use super::uplink::{self, Uplink, DATAGRAM_MAX};
use crate::board::Board;
use crate::doorbell::EventFd;

/// Datagrams taken from the uplink per pass at most.
const UPLINK_BATCH: usize = 256;

/// The ports and the switch, under one lock: the engine holds it for a
/// whole pass, so an admin command that takes it waits for the pass.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    ports: BTreeMap<u16, Port>,
    switch: Switch,
    /// Datagrams from the uplink refused (not a peer, untagged, bad VLAN).
    pub(crate) uplink_dropped: u64,
    last_age: f64,
    last_uplink_log: Option<Instant>,
}

impl NetState {
    /// The port `id`.
    pub(crate) fn port(&self, id: u16) -> Option<&Port> {
        self.ports.get(&id)
    }

    /// Every port.
    pub(crate) fn ports(&self) -> impl Iterator<Item = &Port> {
        self.ports.values()
    }

    /// Adds a port (its id is free: checked by the caller).
    pub(crate) fn add(&mut self, port: Port) {
        self.switch.set_port(port.id, port.cfg.vlan, port.mac);
        self.ports.insert(port.id, port);
    }

    /// Removes a port: the engine will not touch its rings again.
    pub(crate) fn remove(&mut self, board: &Board, id: u16) -> bool {
        let Some(port) = self.ports.remove(&id) else {
            return false;
        };
        port.link_down(board);
        self.switch.remove_port(id);
        true
    }

    /// Applies a new configuration to a port.
    pub(crate) fn reconfigure(&mut self, id: u16, cfg: abi::PortConfig, now: f64) -> bool {
        let Some(port) = self.ports.get_mut(&id) else {
            return false;
        };
        port.reconfigure(cfg, now);
        self.switch.set_port(id, cfg.vlan, port.mac);
        true
    }

    /// A port's counters.
    pub(crate) fn stats(&self, id: u16, now: f64) -> Option<PortStats> {
        self.ports.get(&id).map(|p| p.stats(now))
    }

    fn uplink_refused(&mut self, why: std::fmt::Arguments<'_>) {
        self.uplink_dropped += 1;
        let now = Instant::now();
        if self
            .last_uplink_log
            .is_none_or(|t| now.duration_since(t).as_secs() >= 1)
        {
            self.last_uplink_log = Some(now);
            warn!(
                dropped = self.uplink_dropped,
                "uplink datagram refused: {why}"
            );
        }
    }

    /// One pass over the uplink and every port. Returns whether anything
    /// moved, and the earliest time a throttled port may send again.
    pub(crate) fn pass(
        &mut self,
        board: &Board,
        up: Option<&Uplink>,
        now: f64,
        s: &mut Buffers,
    ) -> (bool, Option<f64>) {
        let mut moved = false;
        let mut next: Option<f64> = None;
        if now - self.last_age >= 1.0 {
            self.switch.age(now);
            self.last_age = now;
        }
        if let Some(up) = up {
            for _ in 0..UPLINK_BATCH {
                let len = match up.recv(&mut s.datagram) {
                    None => break,
                    Some(Ok(len)) => len,
                    Some(Err(from)) => {
                        self.uplink_refused(format_args!("from {from}, not a peer"));
                        continue;
                    }
                };
                moved = true;
                let (vlan, flen) = match uplink::untag(&mut s.datagram, len) {
                    Ok(v) => v,
                    Err(e) => {
                        self.uplink_refused(format_args!("{e}"));
                        continue;
                    }
                };
                let frame = &s.datagram[..flen];
                let (src, dst) = macs(frame);
                // From the uplink nothing is refused: the frame is only
                // delivered to local ports on its VLAN, if any.
                let _ = self
                    .switch
                    .forward(vlan, src, dst, Dest::Uplink, now, &mut s.dests);
                // Checked once, whatever the number of ports it goes to.
                let csum_ok = !s.dests.is_empty() && checksum::rx_verified(frame);
                for d in &s.dests {
                    if let Dest::Port(p) = d {
                        if let Some(port) = self.ports.get_mut(p) {
                            port.deliver(board, frame, csum_ok);
                        }
                    }
                }
            }
        }
        s.ids.clear();
        s.ids.extend(self.ports.keys().copied());
        for i in 0..s.ids.len() {
            let id = s.ids[i];
            // At most a ring's worth of frames on the wire per port and
            // pass (a TSO frame counts as its segments): fairness, and
            // room in the receivers' rings.
            let pass_max = usize::from(abi::PORT_RING_MAX);
            let mut sent = 0usize;
            while sent < pass_max {
                let Some(port) = self.ports.get_mut(&id) else {
                    break;
                };
                match port.next_tx(board, now, &mut s.scratch, pass_max - sent) {
                    Tx::Idle => break,
                    Tx::Dropped => {
                        moved = true;
                        sent += 1;
                    }
                    Tx::Throttled(at) => {
                        next = Some(next.map_or(at, |n: f64| n.min(at)));
                        break;
                    }
                    Tx::Frame => {
                        moved = true;
                        let vlan = port.cfg.vlan;
                        let Buffers {
                            scratch,
                            tagged,
                            dests,
                            ..
                        } = s;
                        match scratch.tso {
                            None => {
                                sent += 1;
                                let out = Outgoing {
                                    id,
                                    vlan,
                                    now,
                                    csum_ok: None,
                                };
                                self.send(board, up, out, &scratch.frame, dests, tagged);
                            }
                            Some(plan) => {
                                // The card made the checksums itself.
                                let out = Outgoing {
                                    id,
                                    vlan,
                                    now,
                                    csum_ok: Some(true),
                                };
                                // Every segment has the frame's addresses:
                                // one switch decision for all of them.
                                let routed = self.route(out, &scratch.frame, dests);
                                for k in 0..plan.segments() {
                                    sent += 1;
                                    if !routed {
                                        if let Some(port) = self.ports.get_mut(&id) {
                                            port.count_tx_spoofed();
                                        }
                                        continue;
                                    }
                                    plan.write(&scratch.frame, k, &mut scratch.segment);
                                    let seg = &scratch.segment;
                                    self.deliver(board, up, out, seg, dests, tagged);
                                }
                            }
                        }
                    }
                }
            }
        }
        for port in self.ports.values_mut() {
            if port.take_irq_due(board) {
                board.irq.raise(port.vector);
            }
        }
        (moved, next)
    }
}

/// A frame leaving a port: the port, its VLAN, the time, and whether
/// receivers may be told its checksums are right (`None`: check them).
#[derive(Debug, Clone, Copy)]
struct Outgoing {
    id: u16,
    vlan: u16,
    now: f64,
    csum_ok: Option<bool>,
}

impl NetState {
    /// Switches one frame a port sent to its destinations and counts it on
    /// the port (sent, dropped or spoofed).
    fn send(
        &mut self,
        board: &Board,
        up: Option<&Uplink>,
        out: Outgoing,
        frame: &[u8],
        dests: &mut Vec<Dest>,
        tagged: &mut Vec<u8>,
    ) {
        if self.route(out, frame, dests) {
            self.deliver(board, up, out, frame, dests, tagged);
        } else if let Some(port) = self.ports.get_mut(&out.id) {
            port.count_tx_spoofed();
        }
    }

    /// The switch's decision for a frame from port `out.id`: its
    /// destinations in `dests`, or `false` when the port may not send
    /// from that source address (spoofed).
    fn route(&mut self, out: Outgoing, frame: &[u8], dests: &mut Vec<Dest>) -> bool {
        let (src, dst) = macs(frame);
        let verdict = self
            .switch
            .forward(out.vlan, src, dst, Dest::Port(out.id), out.now, dests);
        verdict != Err(Refused::Spoofed)
    }

    /// Hands a routed frame to each of `dests` and counts it on the
    /// sending port (sent, or dropped when no destination took it).
    fn deliver(
        &mut self,
        board: &Board,
        up: Option<&Uplink>,
        out: Outgoing,
        frame: &[u8],
        dests: &[Dest],
        tagged: &mut Vec<u8>,
    ) {
        let Outgoing {
            id, vlan, csum_ok, ..
        } = out;
        let mut sent = false;
        let to_ports = dests.iter().any(|d| matches!(d, Dest::Port(_)));
        let csum_ok = to_ports && csum_ok.unwrap_or_else(|| checksum::rx_verified(frame));
        for d in dests.iter() {
            match d {
                Dest::Port(p) => {
                    if let Some(to) = self.ports.get_mut(p) {
                        to.deliver(board, frame, csum_ok);
                        sent = true;
                    }
                }
                Dest::Uplink => {
                    if let Some(up) = up {
                        uplink::tag(frame, vlan, tagged);
                        up.send(tagged);
                        sent = true;
                    }
                }
            }
        }
        if let Some(port) = self.ports.get_mut(&id) {
            if sent {
                port.count_tx(frame.len());
            } else {
                port.count_tx_dropped();
            }
        }
    }
}

/// Source and destination MACs of a frame of at least 14 bytes.
fn macs(frame: &[u8]) -> ([u8; 6], [u8; 6]) {
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    if frame.len() >= ETH_HLEN {
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
    }
    (src, dst)
}

/// The engine's reusable buffers.
#[derive(Debug)]
pub(crate) struct Buffers {
    scratch: Scratch,
    datagram: Vec<u8>,
    tagged: Vec<u8>,
    dests: Vec<Dest>,
    ids: Vec<u16>,
}

impl Buffers {
    /// Buffers for one engine.
    pub(crate) fn new() -> Self {
        Self {
            scratch: Scratch::default(),
            datagram: vec![0u8; DATAGRAM_MAX + 1],
            tagged: Vec::with_capacity(DATAGRAM_MAX),
            dests: Vec::new(),
            ids: Vec::new(),
        }
    }
}

/// What the engine thread and the controller share.
#[derive(Debug)]
struct Shared {
    state: Mutex<NetState>,
    /// Rung when the set of ports changes (new vectors to poll).
    wake: EventFd,
    epoch: Instant,
}

/// A running network engine; dropping it stops the thread and takes every
/// port's link down (a controller reset deletes all ports).
#[derive(Debug)]
pub(crate) struct NetEngine {
    shared: Arc<Shared>,
    board: Arc<Board>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl NetEngine {
    /// Starts the engine thread, with no ports.
    pub(crate) fn start(board: Arc<Board>, up: Option<Arc<Uplink>>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(NetState::default()),
            wake: EventFd::new()?,
            epoch: Instant::now(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, b, st) = (shared.clone(), board.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("net".into())
            .spawn(move || serve(&sh, &b, up.as_deref(), &st))?;
        Ok(Self {
            shared,
            board,
            stop,
            thread: Some(thread),
        })
    }

    /// The state, locked (waits for a pass in progress).
    pub(crate) fn lock(&self) -> MutexGuard<'_, NetState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Seconds on the engine's clock.
    pub(crate) fn now(&self) -> f64 {
        self.shared.epoch.elapsed().as_secs_f64()
    }

    /// Makes the engine look at the ports again at once.
    pub(crate) fn kick(&self) {
        self.shared.wake.signal();
    }
}

impl Drop for NetEngine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.kick();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut st = self.lock();
        let ids: Vec<u16> = st.ports.keys().copied().collect();
        for id in ids {
            st.remove(&self.board, id);
        }
    }
}

fn serve(shared: &Shared, board: &Board, up: Option<&Uplink>, stop: &AtomicBool) {
    let mut bufs = Buffers::new();
    let mut vectors: Vec<u16> = Vec::new();
    let mut busy = false;
    let mut wait: Option<f64> = None;
    info!("network engine started");
    while !stop.load(Ordering::Relaxed) {
        {
            let st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            vectors.clear();
            vectors.extend(st.ports.values().map(|p| p.vector));
        }
        let max_ms = f64::from(abi::CARD_POLL_MS);
        let ms = if busy {
            0.0
        } else {
            wait.map_or(max_ms, |w| (w * 1000.0).ceil().clamp(0.0, max_ms))
        };
        {
            let mut fds = Vec::with_capacity(vectors.len() + 2);
            fds.push(PollFd::new(shared.wake.as_fd(), PollFlags::POLLIN));
            if let Some(up) = up {
                fds.push(PollFd::new(up.socket().as_fd(), PollFlags::POLLIN));
            }
            for v in &vectors {
                if let Some(db) = board.doorbells.get(usize::from(*v)) {
                    fds.push(PollFd::new(db.as_fd(), PollFlags::POLLIN));
                }
            }
            let timeout = PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, timeout);
        }
        shared.wake.drain();
        for v in &vectors {
            if let Some(db) = board.doorbells.get(usize::from(*v)) {
                db.drain();
            }
        }
        let now = shared.epoch.elapsed().as_secs_f64();
        let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (moved, next) = st.pass(board, up, now, &mut bufs);
        drop(st);
        busy = moved;
        wait = next.map(|t| t - now);
    }
    info!("network engine stopped");
}
