//! A card port's data path: the net device callbacks, the NAPI poll and the
//! port's interrupt. Transmit maps the skb's own buffers for the card (one
//! descriptor per buffer, checksum and TCP segmentation left to the card)
//! and reclaims what the card has sent, with no TX interrupt unless the
//! ring is full; receive hands each frame to the stack in the
//! page-fragment buffer the card wrote it into (small frames are copied)
//! and posts a fresh buffer in its place. Ring ownership follows
//! `docs/card-interface.md` ("Network ports").

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock};

use crate::abi::card::{self as regs, RxDescriptor, TxDescriptor};
use crate::controller::Hardware;
use crate::glue::dma::{self, CoherentAllocation};
use crate::glue::irq::Handler;
use crate::glue::net::{self, NetDev, NetOps, NetStats, RxBufs, SkBuff, TxBuf};
use crate::glue::pci::Device;
use crate::port_ring::{rx_next, rx_tail, TxRing};

/// Transmit descriptors per port.
pub(crate) const TX_ENTRIES: u16 = 256;
/// Receive descriptors (and buffers) per port: as many as the TX ring, so
/// that the card, which moves up to a whole TX ring per port and pass, has a
/// buffer for each frame of such a burst (with 64 it dropped frames for want
/// of one, and TCP saw hundreds of retransmits in 5 s). The cost is 256
/// buffers of about 9.4 KiB (any MTU up to 9000) per port: 2.4 MiB.
pub(crate) const RX_ENTRIES: u16 = 256;
/// Bytes the card may write into one receive buffer: any frame up to the
/// largest MTU fits (a frame never spans buffers).
const RX_BUF_BYTES: usize = net::RX_ROOM;
const _: () =
    assert!(RX_BUF_BYTES >= regs::PORT_FRAME_MAX as usize && RX_BUF_BYTES <= u16::MAX as usize);
const _: () = assert!(TX_ENTRIES <= regs::PORT_RING_MAX && RX_ENTRIES <= regs::PORT_RING_MAX);

/// Transmit ring state, guarded by the TX lock (taken by `xmit` and by the
/// NAPI poll, both with bottom halves disabled).
///
/// # Invariants
///
/// For each descriptor `i` the card holds (see [`TxRing`]), `bufs[i]` is the
/// live mapping it points at and `skbs[i]` holds the frame's skb on its last
/// descriptor. `irq_on` is what the port's `PORT_TX_IRQ_OFF` register
/// says the other way round (whether TX progress raises the vector), which
/// only holders of this lock write.
struct TxState {
    ring: TxRing,
    bufs: KVec<TxBuf>,
    skbs: KVec<Option<SkBuff>>,
    irq_on: bool,
}

/// Receive ring state, guarded by the RX lock (the NAPI poll; a reset and
/// creation with NAPI off).
///
/// # Invariants
///
/// Every descriptor but the one before `next` is posted with the bus
/// address of its slot's buffer in `bufs`.
struct RxState {
    /// Next RX descriptor to look at.
    next: u16,
    bufs: RxBufs,
}

/// Counters of the driver's side (the card keeps its own, see `PortStats`).
#[derive(Default)]
struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    tx_dropped: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One port's rings, buffers and net device.
#[pin_data(PinnedDrop)]
pub(crate) struct PortPath {
    /// Card port id.
    pub(crate) id: u16,
    /// MSI-X (and doorbell) vector.
    pub(crate) vector: u16,
    hw: Arc<Hardware>,
    pub(crate) nd: Arc<NetDev>,
    tx_ring: CoherentAllocation,
    rx_ring: CoherentAllocation,
    // Lock order: `tx` may be taken while `rx` is held (the poll hands
    // frames to the stack under `rx`, and the stack may transmit from
    // there), never `rx` while `tx` is held; the driver's own code takes
    // them one at a time.
    #[pin]
    tx: SpinLock<TxState>,
    #[pin]
    rx: SpinLock<RxState>,
    counters: Counters,
    /// Whether the interface is up (NAPI enabled).
    open: AtomicBool,
    /// The card died under the port: its link register is stale, so the
    /// carrier stays off until a reset recreates the port.
    lost: AtomicBool,
}

impl PortPath {
    /// Allocates the rings and buffers of port `id` on `vector`, with its
    /// net device `nd`, and posts every receive buffer but one (a full ring
    /// would look empty to the card).
    pub(crate) fn new(
        dev: Device,
        hw: Arc<Hardware>,
        nd: Arc<NetDev>,
        id: u16,
        vector: u16,
    ) -> Result<Arc<Self>> {
        let tx_ring = CoherentAllocation::new(dev, usize::from(TX_ENTRIES) * regs::PORT_DESC_SIZE)?;
        let rx_ring = CoherentAllocation::new(dev, usize::from(RX_ENTRIES) * regs::PORT_DESC_SIZE)?;
        let rx_bufs = RxBufs::new(nd.clone(), usize::from(RX_ENTRIES))?;
        let mut bufs = KVec::with_capacity(usize::from(TX_ENTRIES), GFP_KERNEL)?;
        let mut skbs = KVec::with_capacity(usize::from(TX_ENTRIES), GFP_KERNEL)?;
        for _ in 0..TX_ENTRIES {
            bufs.push(TxBuf::default(), GFP_KERNEL)?;
            skbs.push(None, GFP_KERNEL)?;
        }
        let ring = TxRing::new(TX_ENTRIES).ok_or(EINVAL)?;
        let path = Arc::pin_init(
            pin_init!(PortPath {
                id,
                vector,
                hw,
                nd,
                tx_ring,
                rx_ring,
                // INVARIANT: a new port's register is 0 (interrupts on).
                tx <- kernel::new_spinlock!(
                    TxState {
                        ring,
                        bufs,
                        skbs,
                        irq_on: true
                    },
                    "dia:port-tx"
                ),
                // INVARIANT: posted just below, before the card learns of the ring.
                rx <- kernel::new_spinlock!(RxState { next: 0, bufs: rx_bufs }, "dia:port-rx"),
                counters: Counters::default(),
                open: AtomicBool::new(false),
                lost: AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )?;
        net::with_bh_disabled(|| {
            let mut rx = path.rx.lock();
            (0..RX_ENTRIES).try_for_each(|i| path.post_rx(&mut rx.bufs, i, false))
        })?;
        Ok(path)
    }

    /// Bus address of the TX ring.
    pub(crate) fn tx_ring_dma(&self) -> u64 {
        self.tx_ring.dma_handle()
    }

    /// Bus address of the RX ring.
    pub(crate) fn rx_ring_dma(&self) -> u64 {
        self.rx_ring.dma_handle()
    }

    fn reg(&self, r: usize) -> usize {
        regs::port_regs(self.id) + r
    }

    fn write_reg(&self, r: usize, v: u32) {
        // Port register offsets are inside BAR2 (ids are bounded by the card).
        let _ = self.hw.bar2.write32(self.reg(r), v);
    }

    fn read_reg(&self, r: usize) -> u32 {
        self.hw.bar2.read32(self.reg(r)).unwrap_or(0)
    }

    /// Gives RX descriptor `i` and its slot's buffer (a fresh one if the
    /// slot has none) to the card; `napi`: from the NAPI poll.
    fn post_rx(&self, bufs: &mut RxBufs, i: u16, napi: bool) -> Result {
        let addr = bufs.dma(usize::from(i), napi)?;
        let d = RxDescriptor {
            addr,
            len: RX_BUF_BYTES as u16,
            reserved: 0,
            status: 0,
        };
        self.rx_ring
            .write(usize::from(i) * regs::PORT_DESC_SIZE, &d)
    }

    /// Tells the card, after a Create Port, which RX buffers are posted and
    /// whether the port may interrupt.
    pub(crate) fn start_on_card(&self) {
        self.lost.store(false, Ordering::Relaxed);
        // Process context: NAPI (softirq) takes this lock too.
        // Never the TX and RX locks together: the poll hands frames to the
        // stack under the RX lock, and the stack may transmit (TX lock)
        // from there, so TX-then-RX here would be the other half of a
        // deadlock (lockdep's report on the debug kernel).
        let next = net::with_bh_disabled(|| {
            {
                let mut tx = self.tx.lock();
                // The card reset the register to 0: TX interrupts on. Off,
                // as xmit and the poll reclaim (the ring is empty after a
                // reset).
                tx.irq_on = true;
                self.set_tx_irq(&mut tx, false);
            }
            self.rx.lock().next
        });
        self.write_reg(regs::PORT_RX_TAIL, u32::from(rx_tail(next, RX_ENTRIES)));
        let open = self.open.load(Ordering::Relaxed);
        self.write_reg(regs::PORT_IRQ_MASK, u32::from(!open));
        // A queue stopped before the reset waits for nothing now: the ring
        // is empty.
        if open {
            self.nd.wake_queue();
        }
    }

    /// Forgets every ring position after the card lost the port (a reset):
    /// frames in flight are dropped, every RX buffer is posted again. The
    /// caller recreates the port on the card next.
    pub(crate) fn reset_rings(&self) {
        net::with_bh_disabled(|| {
            {
                // One lock at a time (see `start_on_card`).
                let mut tx = self.tx.lock();
                let n = tx.ring.in_flight();
                self.drop_tx(&mut tx, 0);
                bump(&self.counters.tx_dropped, u64::from(n));
                tx.ring.reset();
            }
            let mut rx = self.rx.lock();
            rx.next = 0;
            for i in 0..RX_ENTRIES {
                let _ = self.post_rx(&mut rx.bufs, i, false);
            }
        });
    }

    /// Unmaps and frees whatever the card still held.
    fn drop_tx(&self, tx: &mut TxState, budget: i32) {
        while let Some(i) = tx.ring.pop_clean() {
            self.release_tx_slot(tx, i, budget);
        }
    }

    fn release_tx_slot(&self, tx: &mut TxState, i: u16, budget: i32) {
        let i = usize::from(i);
        if let Some(buf) = tx.bufs.get(i) {
            self.nd.unmap(buf);
        }
        if let Some(skb) = tx.skbs.get_mut(i).and_then(Option::take) {
            skb.consume(budget);
        }
    }

    /// Frees what the card has sent (up to its TX_HEAD register); returns
    /// how many descriptors (`budget`: the NAPI budget, else 0).
    fn clean_tx(&self, tx: &mut TxState, budget: i32) -> u16 {
        let head = self.read_reg(regs::PORT_TX_HEAD);
        // Only descriptors the card holds can come back.
        let Some(done) = tx.ring.done_until(head) else {
            return 0;
        };
        for _ in 0..done {
            if let Some(i) = tx.ring.pop_clean() {
                self.release_tx_slot(tx, i, budget);
            }
        }
        done
    }

    /// Whether the ring has room for the largest frame.
    fn tx_room(tx: &TxState) -> bool {
        usize::from(tx.ring.free()) >= net::max_bufs()
    }

    /// Turns the port's TX interrupt on or off (its register).
    fn set_tx_irq(&self, tx: &mut TxState, on: bool) {
        if tx.irq_on != on {
            tx.irq_on = on;
            self.write_reg(regs::PORT_TX_IRQ_OFF, u32::from(!on));
        }
    }

    /// The ring is (nearly) full: stops the queue and asks for the TX
    /// interrupt, whose poll wakes it. The card may have sent everything
    /// between the last look and the register write, raising nothing, so
    /// look once more after it (the card orders the other way round, see
    /// `PORT_TX_IRQ_OFF`) and wake at once if there is room again.
    fn stop_tx(&self, tx: &mut TxState) {
        self.nd.stop_queue();
        self.set_tx_irq(tx, true);
        dma::full_barrier();
        self.clean_tx(tx, 0);
        if Self::tx_room(tx) {
            self.set_tx_irq(tx, false);
            self.nd.wake_queue();
        }
    }

    /// Reclaims what the card sent (NAPI); wakes a stopped queue, turning
    /// the TX interrupt off again.
    fn reclaim_tx(&self, budget: i32) -> bool {
        let mut tx = self.tx.lock();
        let done = self.clean_tx(&mut tx, budget);
        if self.nd.queue_stopped() && Self::tx_room(&tx) {
            self.set_tx_irq(&mut tx, false);
            self.nd.wake_queue();
        }
        done > 0
    }

    /// Receives up to `budget` frames (NAPI).
    fn receive(&self, budget: i32) -> i32 {
        let mut rx = self.rx.lock();
        let rx = &mut *rx;
        let mut done = 0;
        while done < budget {
            let next = rx.next;
            if !self.rx_filled(next) {
                break;
            }
            let at = usize::from(next) * regs::PORT_DESC_SIZE;
            dma::read_barrier();
            let (len, status) = self
                .rx_ring
                .read::<RxDescriptor>(at)
                .map_or((0, 0), |d| (usize::from(d.len), d.status));
            let csum_ok = status & regs::RX_CSUM_OK != 0;
            let ok = (14..=RX_BUF_BYTES).contains(&len)
                && rx.bufs.receive(usize::from(next), len, csum_ok).is_ok();
            if ok {
                bump(&self.counters.rx_packets, 1);
                bump(&self.counters.rx_bytes, len as u64);
            } else {
                bump(&self.counters.rx_dropped, 1);
            }
            // `receive` leaves the slot a buffer (the old one or a fresh
            // one), so this only writes the descriptor. Were it to fail, the
            // descriptor must not go back to the card with the address of a
            // buffer the stack now owns: stop, with the tail short of it.
            if self.post_rx(&mut rx.bufs, next, true).is_err() {
                break;
            }
            rx.next = rx_next(next, RX_ENTRIES);
            // The descriptor just emptied is posted again as the one the
            // card may not use yet.
            self.write_reg(regs::PORT_RX_TAIL, u32::from(rx_tail(rx.next, RX_ENTRIES)));
            done += 1;
        }
        done
    }

    /// Whether the card filled RX descriptor `i` (its status, written last,
    /// says so; read the rest only after a read barrier).
    fn rx_filled(&self, i: u16) -> bool {
        let at = usize::from(i) * regs::PORT_DESC_SIZE + regs::RX_STATUS_OFFSET;
        self.rx_ring
            .read::<u32>(at)
            .is_ok_and(|s| s & regs::RX_DONE != 0)
    }

    /// Whether the card left work since the last poll.
    fn work_pending(&self) -> bool {
        let rx = self.rx_filled(self.rx.lock().next);
        // Sent descriptors matter only while the queue waits for them (the
        // TX interrupt is on); otherwise xmit reclaims them.
        let tx = {
            let tx = self.tx.lock();
            tx.irq_on
                && tx
                    .ring
                    .done_until(self.read_reg(regs::PORT_TX_HEAD))
                    .is_some_and(|n| n > 0)
        };
        rx || tx
    }

    /// Publishes the TX tail and rings the port's doorbell. The descriptor
    /// writes reach memory before the register write (writel orders after
    /// normal stores).
    fn kick_tx(&self, tx: &TxState) {
        self.write_reg(regs::PORT_TX_TAIL, u32::from(tx.ring.tail()));
        let _ = self.hw.ring_doorbell(self.vector);
    }

    /// Sets the carrier from the card's link register.
    pub(crate) fn update_link(&self) {
        self.nd
            .set_carrier(!self.lost.load(Ordering::Relaxed) && self.link_up());
    }

    /// Turns the carrier off whatever the card's register says (the card
    /// is dead), until `start_on_card` after a successful reset.
    pub(crate) fn link_down(&self) {
        self.lost.store(true, Ordering::Relaxed);
        self.nd.set_carrier(false);
    }

    /// Whether the card reports the link up.
    pub(crate) fn link_up(&self) -> bool {
        self.read_reg(regs::PORT_LINK) & 1 != 0
    }
}

#[pinned_drop]
impl PinnedDrop for PortPath {
    fn drop(self: Pin<&mut Self>) {
        // The card no longer has the port (deleted or reset): free what it
        // held. Process context, and the TX lock is a softirq lock.
        net::with_bh_disabled(|| {
            let mut tx = self.tx.lock();
            self.drop_tx(&mut tx, 0);
        });
    }
}

impl NetOps for PortPath {
    fn open(&self) -> Result {
        self.open.store(true, Ordering::Relaxed);
        self.nd.napi_enable();
        self.update_link();
        self.write_reg(regs::PORT_IRQ_MASK, 0);
        // The queue wakes below: xmit and the poll reclaim again, so no TX
        // interrupt, even if the queue was stopped on a full ring when the
        // interface went down (process context; NAPI takes this lock).
        net::with_bh_disabled(|| self.set_tx_irq(&mut self.tx.lock(), false));
        self.nd.wake_queue();
        self.nd.napi_schedule();
        Ok(())
    }

    fn stop(&self) {
        self.nd.stop_queue();
        self.write_reg(regs::PORT_IRQ_MASK, 1);
        self.nd.napi_disable();
        self.open.store(false, Ordering::Relaxed);
        self.nd.set_carrier(false);
    }

    fn xmit(&self, mut skb: SkBuff) -> core::result::Result<(), SkBuff> {
        let mut bufs = [TxBuf::default(); 32];
        let mapped = match skb.map(&self.nd, &mut bufs) {
            Ok(n) => bufs.get(..n).unwrap_or(&[]),
            Err(_) => &[],
        };
        let n = mapped.len();
        if n == 0 {
            bump(&self.counters.tx_dropped, 1);
            return Ok(());
        }
        let len = skb.len();
        let csum = skb.checksum_offload();
        // A GSO skb (the device offers TSO only on a card that cuts them):
        // the card segments it at its MSS, its TCP header where the
        // checksum starts.
        let tso = skb.tso_mss();
        if tso.is_some() && csum.is_none() {
            for b in mapped {
                self.nd.unmap(b);
            }
            bump(&self.counters.tx_dropped, 1);
            return Ok(());
        }
        let mut tx = self.tx.lock();
        // No TX interrupt: what the card sent since is freed here.
        self.clean_tx(&mut tx, 0);
        if usize::from(tx.ring.free()) < n {
            for b in mapped {
                self.nd.unmap(b);
            }
            self.stop_tx(&mut tx);
            // Frames batched before this one (`xmit_more`) must not wait.
            self.kick_tx(&tx);
            return Err(skb);
        }
        let mut last = tx.ring.tail();
        for (k, b) in mapped.iter().enumerate() {
            // Room for all `n` was checked above.
            let Some(i) = tx.ring.push() else { break };
            let mut d = TxDescriptor {
                addr: b.addr,
                len: b.len as u16,
                flags: 0,
                csum_start: 0,
                csum_offset: 0,
            };
            if k == 0 {
                if let Some((start, offset)) = csum {
                    d.flags |= regs::TX_CSUM;
                    d.csum_start = start;
                    d.csum_offset = offset;
                }
                if let Some(mss) = tso {
                    // With TX_TSO the offset field carries the MSS.
                    d.flags = regs::TX_TSO;
                    d.csum_offset = mss;
                }
            }
            if k + 1 == n {
                d.flags |= regs::TX_EOP;
            }
            let _ = self
                .tx_ring
                .write(usize::from(i) * regs::PORT_DESC_SIZE, &d);
            if let Some(slot) = tx.bufs.get_mut(usize::from(i)) {
                *slot = *b;
            }
            last = i;
        }
        // Sent skbs are freed when xmit or the poll next looks, which a
        // sender that waits for its socket's memory could wait for forever
        // (one-way UDP, nothing received): release the socket's share now,
        // as virtio-net does when it has no TX interrupt.
        skb.orphan();
        if let Some(slot) = tx.skbs.get_mut(usize::from(last)) {
            *slot = Some(skb);
        }
        bump(&self.counters.tx_packets, 1);
        bump(&self.counters.tx_bytes, u64::from(len));
        let full = !Self::tx_room(&tx);
        if full || !net::xmit_more() {
            self.kick_tx(&tx);
        }
        if full {
            self.stop_tx(&mut tx);
        }
        Ok(())
    }

    fn poll(&self, budget: i32) -> i32 {
        self.reclaim_tx(budget);
        let done = self.receive(budget);
        if done < budget && self.nd.napi_complete_done(done) {
            self.update_link();
            self.write_reg(regs::PORT_IRQ_MASK, 0);
            // Anything the card did while masked raised no interrupt.
            if self.work_pending() {
                self.nd.napi_schedule();
            }
        }
        done
    }

    fn stats(&self) -> NetStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NetStats {
            rx_packets: get(&c.rx_packets),
            tx_packets: get(&c.tx_packets),
            rx_bytes: get(&c.rx_bytes),
            tx_bytes: get(&c.tx_bytes),
            rx_dropped: get(&c.rx_dropped),
            tx_dropped: get(&c.tx_dropped),
        }
    }
}

/// The port's interrupt: mask it and let NAPI do the work.
pub(crate) struct PortIrq {
    pub(crate) path: Arc<PortPath>,
}

impl Handler for PortIrq {
    fn handle(&self) -> bool {
        let p = &self.path;
        if p.open.load(Ordering::Relaxed) {
            p.write_reg(regs::PORT_IRQ_MASK, 1);
            p.nd.napi_schedule();
        }
        true
    }
}
