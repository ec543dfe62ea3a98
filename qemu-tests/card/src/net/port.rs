//! One port: its configuration, its TX and RX rings in guest memory with the
//! card's head indices, its shaper and counters. `next_tx` takes the next
//! whole frame off the TX ring (gathering its descriptors); `deliver` puts a
//! frame into the next posted RX buffer. Driver mistakes drop, never crash.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use dia_abi::card::{self as abi, PortConfig, PortStats, RxDescriptor, TxDescriptor};
use tracing::{debug, warn};

use super::checksum;
use super::rate::Shaper;
use super::tso::{self, Plan};
use super::uplink::{ethertype, TPID_8021AD, TPID_8021Q};
use crate::board::Board;

/// Ethernet header bytes (no tag).
pub(crate) const ETH_HLEN: usize = 14;
/// How often a port logs driver bugs at most.
const BUG_LOG_EVERY: Duration = Duration::from_secs(1);

/// A port's rings as created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rings {
    /// TX ring address (placement validated).
    pub(crate) tx_ring: u64,
    /// TX ring entries.
    pub(crate) tx_entries: u16,
    /// RX ring address (placement validated).
    pub(crate) rx_ring: u64,
    /// RX ring entries.
    pub(crate) rx_entries: u16,
}

/// What `next_tx` found.
#[derive(Debug, PartialEq)]
pub(crate) enum Tx {
    /// No whole frame waiting.
    Idle,
    /// A frame is in the buffer and off the ring.
    Frame,
    /// A frame was dropped (counted) and is off the ring.
    Dropped,
    /// A frame waits for its limits until this time.
    Throttled(f64),
}

/// Reusable buffers of the engine (no allocation per frame).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// The frame being moved.
    pub(crate) frame: Vec<u8>,
    /// Descriptors of the frame being taken off a TX ring.
    descs: Vec<TxDescriptor>,
    /// How `frame` is cut, if it is a `TX_TSO` frame.
    pub(crate) tso: Option<Plan>,
    /// The segment being moved (of a TSO frame).
    pub(crate) segment: Vec<u8>,
}

/// One port.
#[derive(Debug)]
pub(crate) struct Port {
    /// Port id.
    pub(crate) id: u16,
    /// The port's MAC (the card's MAC rule): the only source MAC its
    /// frames may carry.
    pub(crate) mac: [u8; 6],
    /// Current configuration.
    pub(crate) cfg: PortConfig,
    /// MSI-X / doorbell vector.
    pub(crate) vector: u16,
    rings: Rings,
    tx_head: u16,
    rx_head: u16,
    shaper: Shaper,
    stats: PortStats,
    bad_tail_seen: bool,
    last_bug_log: Option<Instant>,
    /// A frame went into an RX buffer since the last interrupt decision.
    rx_due: bool,
    /// TX_HEAD moved since the last interrupt decision.
    tx_due: bool,
}

/// Largest frame a port with `mtu` carries.
pub(crate) fn frame_max(mtu: u16) -> u32 {
    u32::from(mtu) + ETH_HLEN as u32
}

impl Port {
    /// A new port; resets its register block (link up).
    pub(crate) fn new(
        board: &Board,
        id: u16,
        mac: [u8; 6],
        cfg: PortConfig,
        rings: Rings,
        vector: u16,
        now: f64,
    ) -> Self {
        let regs = abi::port_regs(id);
        for r in [
            abi::PORT_TX_TAIL,
            abi::PORT_TX_HEAD,
            abi::PORT_RX_TAIL,
            abi::PORT_RX_HEAD,
            abi::PORT_IRQ_MASK,
            abi::PORT_TX_IRQ_OFF,
        ] {
            board.bar.write32(regs + r, 0);
        }
        board.bar.write32(regs + abi::PORT_LINK, 1);
        Self {
            id,
            mac,
            cfg,
            vector,
            rings,
            tx_head: 0,
            rx_head: 0,
            shaper: Shaper::new(&cfg.limits, frame_max(cfg.mtu), now),
            stats: PortStats::default(),
            bad_tail_seen: false,
            last_bug_log: None,
            rx_due: false,
            tx_due: false,
        }
    }

    /// Applies a new configuration (from the next frame on).
    pub(crate) fn reconfigure(&mut self, cfg: PortConfig, now: f64) {
        let throttled = self.shaper.throttled_ns(now);
        self.shaper = Shaper::new(&cfg.limits, frame_max(cfg.mtu), now);
        self.stats.throttled_ns += throttled;
        self.cfg = cfg;
    }

    /// The port's counters now.
    pub(crate) fn stats(&self, now: f64) -> PortStats {
        let mut s = self.stats;
        s.throttled_ns += self.shaper.throttled_ns(now);
        s
    }

    /// Counts a frame sent (accepted and forwarded somewhere).
    pub(crate) fn count_tx(&mut self, len: usize) {
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
    }

    /// Counts a frame the card could not send anywhere.
    pub(crate) fn count_tx_dropped(&mut self) {
        self.stats.tx_dropped += 1;
    }

    /// Counts a frame dropped because its source MAC was not the port's.
    pub(crate) fn count_tx_spoofed(&mut self) {
        self.stats.tx_dropped += 1;
        self.stats.tx_spoofed += 1;
    }

    /// Logs a driver bug, at most once per [`BUG_LOG_EVERY`].
    fn bug(&mut self, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last_bug_log
            .is_none_or(|t| now.duration_since(t) >= BUG_LOG_EVERY)
        {
            self.last_bug_log = Some(now);
            warn!(port = self.id, "driver bug: {what}");
        }
    }

    fn regs(&self) -> usize {
        abi::port_regs(self.id)
    }

    /// Link down (the port is going away).
    pub(crate) fn link_down(&self, board: &Board) {
        board.bar.write32(self.regs() + abi::PORT_LINK, 0);
    }

    /// Whether the driver masked the port's interrupt.
    pub(crate) fn masked(&self, board: &Board) -> bool {
        board.bar.read32(self.regs() + abi::PORT_IRQ_MASK) & 1 != 0
    }

    /// Whether the port's vector is due since the last call (which this
    /// resets): a frame went into an RX buffer, or TX_HEAD moved and the
    /// driver did not set `PORT_TX_IRQ_OFF`, and the port is not masked.
    pub(crate) fn take_irq_due(&mut self, board: &Board) -> bool {
        let rx = std::mem::take(&mut self.rx_due);
        let tx = std::mem::take(&mut self.tx_due);
        if !rx && !tx || self.masked(board) {
            return false;
        }
        if rx {
            return true;
        }
        // TX_HEAD was stored before the bit is read: a driver that clears
        // the bit and then reads TX_HEAD either sees the new head or gets
        // the interrupt (docs/card-interface.md, PORT_TX_IRQ_OFF).
        fence(Ordering::SeqCst);
        board.bar.read32(self.regs() + abi::PORT_TX_IRQ_OFF) & 1 == 0
    }

    fn set_tx_head(&mut self, board: &Board, head: u16) {
        self.tx_head = head;
        board
            .bar
            .write32(self.regs() + abi::PORT_TX_HEAD, u32::from(head));
        self.tx_due = true;
    }

    fn drop_tx(&mut self, board: &Board, end: u16) -> Tx {
        self.stats.tx_dropped += 1;
        self.set_tx_head(board, end);
        Tx::Dropped
    }

    /// Takes the next whole frame off the TX ring into `scratch.frame`:
    /// gathered, checked against the MTU, checksummed if asked, and
    /// admitted by the shaper (else it stays on the ring). A `TX_TSO` frame
    /// comes with its plan in `scratch.tso` (checked, admitted and counted
    /// as its segments); it stays on the ring while it could be cut into
    /// more than `room` frames, unless `room` is a whole pass's worth.
    pub(crate) fn next_tx(
        &mut self,
        board: &Board,
        now: f64,
        scratch: &mut Scratch,
        room: usize,
    ) -> Tx {
        scratch.tso = None;
        let entries = self.rings.tx_entries;
        let tail_raw = board.bar.read32(self.regs() + abi::PORT_TX_TAIL);
        if tail_raw >= u32::from(entries) {
            if !self.bad_tail_seen {
                self.bad_tail_seen = true;
                self.stats.tx_dropped += 1;
            }
            self.bug(format_args!(
                "TX tail {tail_raw} beyond a {entries}-entry ring"
            ));
            return Tx::Idle;
        }
        self.bad_tail_seen = false;
        // Checked just above: below `entries`, a u16.
        let tail = tail_raw as u16;
        let head = self.tx_head;
        if head == tail {
            return Tx::Idle;
        }
        // Find the frame's descriptors, up to one with EOP.
        scratch.descs.clear();
        let mut idx = head;
        let mut total = 0usize;
        let mut bad_desc = false;
        loop {
            if idx == tail {
                let pending = (tail + entries - head) % entries;
                if pending == entries - 1 {
                    self.bug(format_args!("TX ring full without an end of frame"));
                    return self.drop_tx(board, tail);
                }
                return Tx::Idle;
            }
            let at = self.rings.tx_ring + u64::from(idx) * abi::PORT_DESC_SIZE as u64;
            let d: TxDescriptor = match board.mem.read_obj(at) {
                Ok(d) => d,
                Err(_) => {
                    // The ring's placement was validated; cannot happen.
                    bad_desc = true;
                    TxDescriptor::default()
                }
            };
            idx = (idx + 1) % entries;
            if d.len == 0 || board.mem.dma_ptr(d.addr, usize::from(d.len)).is_err() {
                bad_desc = true;
            }
            total += usize::from(d.len);
            scratch.descs.push(d);
            if d.flags & abi::TX_EOP != 0 {
                break;
            }
        }
        let end = idx;
        if bad_desc {
            self.bug(format_args!(
                "TX descriptor with length 0 or outside guest memory"
            ));
            return self.drop_tx(board, end);
        }
        let first = scratch.descs[0];
        let tso = first.flags & abi::TX_TSO != 0;
        let max = if tso {
            abi::PORT_TSO_FRAME_MAX
        } else {
            frame_max(self.cfg.mtu)
        };
        if tso
            && room < usize::from(abi::PORT_RING_MAX)
            && tso::segments_bound(total, usize::from(first.csum_offset)) > room
        {
            // Next pass: the receivers get to empty their rings first.
            return Tx::Idle;
        }
        if total < ETH_HLEN || total > max as usize {
            debug!(
                port = self.id,
                len = total,
                mtu = self.cfg.mtu,
                "TX frame size out of range; dropped"
            );
            return self.drop_tx(board, end);
        }
        let frame = &mut scratch.frame;
        // Every byte is read over below: no need to zero it first (which
        // cost as much as the copy for a 64 KiB TSO frame).
        frame.resize(total, 0);
        let mut off = 0;
        for d in &scratch.descs {
            let len = usize::from(d.len);
            if board.mem.read(d.addr, &mut frame[off..off + len]).is_err() {
                return self.drop_tx(board, end);
            }
            off += len;
        }
        let mut wire = (total, 1);
        if tso {
            let r = tso::plan(
                frame,
                usize::from(first.csum_start),
                usize::from(first.csum_offset),
                frame_max(self.cfg.mtu) as usize,
            );
            match r {
                Ok(plan) => {
                    wire = (plan.wire_bytes(), plan.segments());
                    scratch.tso = Some(plan);
                }
                Err(e) => {
                    self.bug(format_args!("TX segmentation offload: {e}"));
                    return self.drop_tx(board, end);
                }
            }
        } else if first.flags & abi::TX_CSUM != 0 {
            let r = checksum::offload(
                frame,
                usize::from(first.csum_start),
                usize::from(first.csum_offset),
            );
            if let Err(e) = r {
                self.bug(format_args!("TX checksum offload: {e}"));
                return self.drop_tx(board, end);
            }
        }
        // After the checksum: its field may lie anywhere in the frame, the
        // EtherType included, so the frame is checked as it will leave.
        let ty = ethertype(frame);
        if ty == TPID_8021Q || ty == TPID_8021AD {
            debug!(
                port = self.id,
                "tagged frame from the host; dropped (access port)"
            );
            return self.drop_tx(board, end);
        }
        if let Err(ready) = self.shaper.admit_many(wire.0, wire.1, now) {
            scratch.tso = None;
            return Tx::Throttled(ready);
        }
        if tso {
            self.stats.tx_tso_frames += 1;
            self.stats.tx_tso_segments += wire.1 as u64;
        }
        self.set_tx_head(board, end);
        Tx::Frame
    }

    /// Puts `frame` into the next posted RX buffer (or counts a drop);
    /// `csum_ok`: [`checksum::rx_verified`] said yes (`RX_CSUM_OK`).
    pub(crate) fn deliver(&mut self, board: &Board, frame: &[u8], csum_ok: bool) {
        if frame.len() > frame_max(self.cfg.mtu) as usize {
            self.stats.rx_dropped += 1;
            return;
        }
        let entries = self.rings.rx_entries;
        let tail = board.bar.read32(self.regs() + abi::PORT_RX_TAIL);
        if tail >= u32::from(entries) {
            self.stats.rx_dropped += 1;
            self.bug(format_args!("RX tail {tail} beyond a {entries}-entry ring"));
            return;
        }
        if u32::from(self.rx_head) == tail {
            self.stats.rx_dropped += 1;
            return;
        }
        let at = self.rings.rx_ring + u64::from(self.rx_head) * abi::PORT_DESC_SIZE as u64;
        let Ok(d) = board.mem.read_obj::<RxDescriptor>(at) else {
            self.stats.rx_dropped += 1;
            return;
        };
        if usize::from(d.len) < frame.len() {
            self.stats.rx_dropped += 1;
            return;
        }
        if board.mem.write(d.addr, frame).is_err() {
            self.stats.rx_dropped += 1;
            self.bug(format_args!(
                "RX buffer {:#x}+{} outside guest memory",
                d.addr, d.len
            ));
            return;
        }
        // Frame lengths are at most PORT_FRAME_MAX, a u16.
        let len = frame.len() as u16;
        let wrote = board.mem.write(at + 8, &len.to_le_bytes()).and_then(|()| {
            // The guest reads status first: everything else before it.
            fence(Ordering::Release);
            let status = abi::RX_DONE | if csum_ok { abi::RX_CSUM_OK } else { 0 };
            board
                .mem
                .write(at + abi::RX_STATUS_OFFSET as u64, &status.to_le_bytes())
        });
        if wrote.is_err() {
            self.stats.rx_dropped += 1;
            return;
        }
        self.rx_head = (self.rx_head + 1) % entries;
        board
            .bar
            .write32(self.regs() + abi::PORT_RX_HEAD, u32::from(self.rx_head));
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += frame.len() as u64;
        self.rx_due = true;
    }
}
