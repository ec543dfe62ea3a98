//! Network devices: an Ethernet `net_device` with one NAPI context per card
//! port, and the socket buffers the data path handles. 6.12's `kernel` crate
//! has no net_device abstraction at all (it never got one upstream either),
//! so this wraps the C API through the shim, in the shape of FUJITA
//! Tomonori's out-of-tree `net::Device` + `Napi` + `SkBuff`.
//!
//! Ownership: [`NetDev`] is the allocation (shared, freed with the last
//! reference); [`Registration`] makes it visible to the stack with a set of
//! [`NetOps`] callbacks and unregisters it on drop. [`SkBuff`] owns one skb.

use core::ptr::NonNull;

use kernel::error::{code::EINVAL, code::ENOMEM, code::ENOSPC, Error, Result};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::sync::Arc;

use super::pci::Device;
use super::{check, ffi};

/// Counters reported to the stack (`ip -s link`).
#[derive(Clone, Copy, Default)]
pub(crate) struct NetStats {
    /// Frames received.
    pub(crate) rx_packets: u64,
    /// Frames sent.
    pub(crate) tx_packets: u64,
    /// Bytes received.
    pub(crate) rx_bytes: u64,
    /// Bytes sent.
    pub(crate) tx_bytes: u64,
    /// Frames dropped on receive.
    pub(crate) rx_dropped: u64,
    /// Frames dropped on transmit.
    pub(crate) tx_dropped: u64,
}

/// The callbacks of a registered device.
pub(crate) trait NetOps: Send + Sync + Sized {
    /// `ndo_open`: the interface goes up.
    fn open(&self) -> Result;
    /// `ndo_stop`: the interface goes down.
    fn stop(&self);
    /// `ndo_start_xmit` (bottom halves disabled). `Err(skb)` hands the skb
    /// back to the stack, which retries it later (the queue must be stopped).
    fn xmit(&self, skb: SkBuff) -> core::result::Result<(), SkBuff>;
    /// NAPI poll (softirq): returns the receive work done, at most `budget`.
    fn poll(&self, budget: i32) -> i32;
    /// `ndo_get_stats64`.
    fn stats(&self) -> NetStats;
}

/// An allocated Ethernet device.
///
/// # Invariants
///
/// `raw` is a `dia_shim_netdev_new` allocation, freed only in `drop`, when
/// no [`Registration`] holds it any more (a registration keeps an `Arc`).
pub(crate) struct NetDev {
    raw: NonNull<ffi::dia_shim_netdev>,
}

// SAFETY: the net_device API used here may be called from any context the
// methods document; the pointer is only an identifier.
unsafe impl Send for NetDev {}
// SAFETY: as above; no `&self` method mutates Rust-visible state.
unsafe impl Sync for NetDev {}

impl NetDev {
    /// Allocates a device named `name` (at most 15 bytes) with MTU `mtu`
    /// (also the largest the device accepts), carrier off, MAC zero until
    /// [`NetDev::set_mac`]; with `tso_max` it offers TCP segmentation
    /// offload (IPv4 and IPv6) for frames of up to that many bytes.
    pub(crate) fn new(
        dev: Device,
        name: &CStr,
        mtu: u16,
        tso_max: Option<u32>,
    ) -> Result<Arc<Self>> {
        if name.len() >= 16 {
            return Err(EINVAL);
        }
        let mut err = 0;
        // SAFETY: `dev` is bound; `name` is NUL-terminated.
        let raw = unsafe {
            ffi::dia_shim_netdev_new(
                dev.as_raw(),
                name.as_char_ptr().cast(),
                u32::from(mtu),
                tso_max.unwrap_or(0),
                &mut err,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| Error::from_errno(err))?;
        // INVARIANT: fresh allocation, freed in `drop`.
        Ok(Arc::new(Self { raw }, GFP_KERNEL)?)
    }

    fn as_raw(&self) -> *mut ffi::dia_shim_netdev {
        self.raw.as_ptr()
    }

    /// Sets the MAC; only before the device is registered (the stack reads
    /// it at registration).
    pub(crate) fn set_mac(&self, mac: &[u8; 6]) {
        // SAFETY: `raw` is live; `mac` has 6 bytes.
        unsafe { ffi::dia_shim_netdev_set_mac(self.as_raw(), mac.as_ptr()) }
    }

    /// Interface index in its current network namespace.
    pub(crate) fn ifindex(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        let i = unsafe { ffi::dia_shim_netdev_ifindex(self.as_raw()) };
        u32::try_from(i).unwrap_or(0)
    }

    /// Sets the largest and the current MTU (process context; takes the RTNL,
    /// so the caller must not hold a lock an RTNL holder may want).
    pub(crate) fn set_mtu(&self, mtu: u16) -> Result {
        // SAFETY: `raw` is live (type invariant); process context.
        check(unsafe { ffi::dia_shim_netdev_set_mtu(self.as_raw(), u32::from(mtu)) })
    }

    /// Carrier (link) on or off; ignored while the device is not (or no
    /// longer) registered, so no carrier event outlives unregistering.
    pub(crate) fn set_carrier(&self, on: bool) {
        // SAFETY: `raw` is live (type invariant); callable from any context.
        unsafe { ffi::dia_shim_netif_carrier(self.as_raw(), i32::from(on)) }
    }

    /// Stops the transmit queue (the ring is full).
    pub(crate) fn stop_queue(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_netif_stop_queue(self.as_raw()) }
    }

    /// Wakes the transmit queue.
    pub(crate) fn wake_queue(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_netif_wake_queue(self.as_raw()) }
    }

    /// Whether the transmit queue is stopped.
    pub(crate) fn queue_stopped(&self) -> bool {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_netif_queue_stopped(self.as_raw()) != 0 }
    }

    /// Enables NAPI (from `open`).
    pub(crate) fn napi_enable(&self) {
        // SAFETY: `raw` is live; NAPI was added at allocation.
        unsafe { ffi::dia_shim_napi_enable(self.as_raw()) }
    }

    /// Disables NAPI, waiting for a running poll (from `stop`; process context).
    pub(crate) fn napi_disable(&self) {
        // SAFETY: `raw` is live; called only after `napi_enable` (from `stop`).
        unsafe { ffi::dia_shim_napi_disable(self.as_raw()) }
    }

    /// Schedules the NAPI poll (any context; a no-op while NAPI is disabled).
    pub(crate) fn napi_schedule(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_napi_schedule(self.as_raw()) }
    }

    /// Ends a poll that did `done` < budget work; true if the driver may
    /// re-enable the interrupt.
    pub(crate) fn napi_complete_done(&self, done: i32) -> bool {
        // SAFETY: `raw` is live; called from this device's NAPI poll.
        unsafe { ffi::dia_shim_napi_complete_done(self.as_raw(), done) != 0 }
    }

    /// Undoes one buffer mapping made by [`SkBuff::map`].
    pub(crate) fn unmap(&self, buf: &TxBuf) {
        // SAFETY: `raw` is live; `buf` describes a live mapping of this device.
        unsafe { ffi::dia_shim_skb_unmap(self.as_raw(), buf.addr, buf.len, i32::from(buf.page)) }
    }
}

impl Drop for NetDev {
    fn drop(&mut self) {
        // SAFETY: no registration holds the device any more (type invariant),
        // so it is unregistered; freed once.
        unsafe { ffi::dia_shim_netdev_free(self.as_raw()) }
    }
}

/// Whether more packets follow in the current transmit batch (from `xmit`):
/// the doorbell can wait for the last one.
pub(crate) fn xmit_more() -> bool {
    // SAFETY: reads a per-CPU flag; called from `xmit` (BH disabled).
    unsafe { ffi::dia_shim_xmit_more() != 0 }
}

/// Most buffers one skb maps to (`MAX_SKB_FRAGS + 1`).
pub(crate) fn max_bufs() -> usize {
    // SAFETY: returns a constant.
    unsafe { ffi::dia_shim_skb_max_bufs() as usize }
}

/// Runs `f` with bottom halves disabled on this CPU, so process-context code
/// can take a lock that the NAPI poll or `xmit` also takes.
pub(crate) fn with_bh_disabled<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: paired with the enable below on the same CPU (no sleeping in `f`).
    unsafe { ffi::dia_shim_local_bh_disable() };
    let r = f();
    // SAFETY: pairs with the disable above.
    unsafe { ffi::dia_shim_local_bh_enable() };
    r
}

/// Bytes of a receive buffer the card may fill (any frame up to the largest
/// MTU).
pub(crate) const RX_ROOM: usize = ffi::DIA_SHIM_RX_ROOM as usize;

/// Received frames of at most this many bytes (ACKs, ARP, ...) are copied
/// into a small skb and their buffer posted again; larger ones are handed
/// to the stack in their buffer, without a copy.
const RX_COPYBREAK: u32 = 256;

/// One receive buffer: a page fragment mapped for the card.
///
/// # Invariants
///
/// `buf` is a `dia_shim_rx_buf_alloc` fragment of the device of the
/// [`RxBufs`] that holds it, mapped at `dma`, owned by that [`RxBufs`].
struct RxBuf {
    buf: NonNull<core::ffi::c_void>,
    dma: u64,
}

/// A port's receive buffers, one per RX ring slot: page fragments that the
/// stack takes over whole when a frame arrives in them (`napi_build_skb`),
/// the slot getting a fresh buffer, so no frame is copied but small ones.
///
/// # Invariants
///
/// Each `Some` slot holds a buffer of `nd` (see [`RxBuf`]), freed in `drop`
/// unless handed to the stack first.
pub(crate) struct RxBufs {
    nd: Arc<NetDev>,
    slots: KVec<Option<RxBuf>>,
}

// SAFETY: the buffers are plain memory owned by this value; freeing them
// (`skb_free_frag`) works from any context.
unsafe impl Send for RxBufs {}

impl RxBufs {
    /// `n` slots of `nd`, each with a buffer (process context).
    pub(crate) fn new(nd: Arc<NetDev>, n: usize) -> Result<Self> {
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(None, GFP_KERNEL)?;
        }
        // INVARIANT: every slot empty.
        let mut bufs = Self { nd, slots };
        for i in 0..n {
            bufs.dma(i, false)?;
        }
        Ok(bufs)
    }

    fn alloc(&self, napi: bool) -> Result<RxBuf> {
        let mut dma = 0u64;
        // SAFETY: `nd` is live; `dma` is a valid out pointer; `napi` is set
        // only by callers in this device's NAPI poll.
        let buf =
            unsafe { ffi::dia_shim_rx_buf_alloc(self.nd.as_raw(), i32::from(napi), &mut dma) };
        let buf = NonNull::new(buf).ok_or(ENOMEM)?;
        // INVARIANT: a fresh buffer of `nd`, mapped at `dma`.
        Ok(RxBuf { buf, dma })
    }

    /// Bus address of slot `i`'s buffer, allocating one if the slot has
    /// none (`napi`: called from the device's NAPI poll).
    pub(crate) fn dma(&mut self, i: usize, napi: bool) -> Result<u64> {
        if let Some(b) = self.slots.get(i).ok_or(EINVAL)? {
            return Ok(b.dma);
        }
        let b = self.alloc(napi)?;
        let dma = b.dma;
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some(b);
        }
        Ok(dma)
    }

    /// Hands the `len`-byte frame the card wrote into slot `i`'s buffer to
    /// the stack, from the device's NAPI poll only (`csum_ok`: the card
    /// checked its checksums, the stack need not). A small frame is copied
    /// and the buffer stays; a larger one goes to the stack in its buffer
    /// and the slot gets a fresh one, allocated first: when none can be had,
    /// the frame is dropped (an error) and the slot keeps its buffer, so the
    /// ring never runs short.
    pub(crate) fn receive(&mut self, i: usize, len: usize, csum_ok: bool) -> Result {
        let len = u32::try_from(len).map_err(|_| EINVAL)?;
        let (buf, dma) = match self.slots.get(i) {
            Some(Some(b)) => (b.buf, b.dma),
            _ => return Err(EINVAL),
        };
        let fresh = if len > RX_COPYBREAK {
            Some(self.alloc(true)?)
        } else {
            None
        };
        let copy = i32::from(fresh.is_none());
        // SAFETY: `buf` is slot `i`'s live buffer of `nd`, mapped at `dma`
        // (type invariant), which the card handed back (its descriptor is
        // done); called from `nd`'s NAPI poll per this method's contract.
        let r = unsafe {
            ffi::dia_shim_rx_buf_receive(
                self.nd.as_raw(),
                buf.as_ptr(),
                dma,
                len,
                copy,
                i32::from(csum_ok),
            )
        };
        match r {
            // The stack owns the old buffer now (only without `copy`, so
            // `fresh` is a buffer).
            0 => {
                if let Some(slot) = self.slots.get_mut(i) {
                    // INVARIANT: the given-away buffer leaves the slot.
                    *slot = fresh;
                }
                Ok(())
            }
            r => {
                if let Some(f) = fresh {
                    self.free(f);
                }
                if r > 0 {
                    Ok(())
                } else {
                    Err(Error::from_errno(r))
                }
            }
        }
    }

    fn free(&self, b: RxBuf) {
        // SAFETY: `b` is a buffer of `nd` mapped at `b.dma` that nothing
        // else holds (type invariant); freed once.
        unsafe { ffi::dia_shim_rx_buf_free(self.nd.as_raw(), b.buf.as_ptr(), b.dma) }
    }
}

impl Drop for RxBufs {
    fn drop(&mut self) {
        let slots = core::mem::take(&mut self.slots);
        for b in slots.into_iter().flatten() {
            self.free(b);
        }
    }
}

/// A device visible to the network stack.
///
/// # Invariants
///
/// `nd` is registered with `data` (from `Arc::into_raw`, one reference
/// owned) as its callback data until `drop`, which unregisters it first.
pub(crate) struct Registration<T: NetOps> {
    nd: Arc<NetDev>,
    data: *const T,
}

// SAFETY: the registration is an owned kernel object; `T: Send + Sync`.
unsafe impl<T: NetOps> Send for Registration<T> {}
// SAFETY: no `&self` method mutates anything.
unsafe impl<T: NetOps> Sync for Registration<T> {}

impl<T: NetOps> Registration<T> {
    const OPS: ffi::dia_shim_net_ops = ffi::dia_shim_net_ops {
        open: Some(open_cb::<T>),
        stop: Some(stop_cb::<T>),
        xmit: Some(xmit_cb::<T>),
        poll: Some(poll_cb::<T>),
        stats: Some(stats_cb::<T>),
    };

    /// Registers `nd` with `data`'s callbacks (process context; takes the
    /// RTNL). The device appears in the initial network namespace, down.
    pub(crate) fn register(nd: Arc<NetDev>, data: Arc<T>) -> Result<Self> {
        let data = Arc::into_raw(data);
        // SAFETY: `nd` is live; `data` stays valid until `drop` releases it
        // after unregistering (or below, on failure); OPS is static.
        let r = unsafe {
            ffi::dia_shim_netdev_register(nd.as_raw(), data.cast_mut().cast(), &Self::OPS)
        };
        if let Err(e) = check(r) {
            // SAFETY: the reference from `into_raw` above; C did not keep it.
            drop(unsafe { Arc::from_raw(data) });
            return Err(e);
        }
        // INVARIANT: registered with `data`.
        Ok(Self { nd, data })
    }
}

impl<T: NetOps> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); after this no callback runs.
        unsafe { ffi::dia_shim_netdev_unregister(self.nd.as_raw()) };
        // SAFETY: the reference from `into_raw` in `register`, released once.
        drop(unsafe { Arc::from_raw(self.data) });
    }
}

/// # Safety
///
/// `data` must be the callback data of a live [`Registration<T>`].
unsafe fn data_of<'a, T>(data: *mut core::ffi::c_void) -> &'a T {
    // SAFETY: per the function's contract.
    unsafe { &*data.cast::<T>() }
}

/// # Safety
///
/// Called by the shim only, with the callback data of a live
/// [`Registration<T>`] (and, for `xmit`, an skb the stack hands over).
unsafe extern "C" fn open_cb<T: NetOps>(data: *mut core::ffi::c_void) -> core::ffi::c_int {
    // SAFETY: called by the shim with the registration's data.
    let t = unsafe { data_of::<T>(data) };
    match t.open() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the shim only, with the callback data of a live
/// [`Registration<T>`] (and, for `xmit`, an skb the stack hands over).
unsafe extern "C" fn stop_cb<T: NetOps>(data: *mut core::ffi::c_void) {
    // SAFETY: called by the shim with the registration's data.
    unsafe { data_of::<T>(data) }.stop()
}

/// # Safety
///
/// Called by the shim only, with the callback data of a live
/// [`Registration<T>`] (and, for `xmit`, an skb the stack hands over).
unsafe extern "C" fn xmit_cb<T: NetOps>(
    data: *mut core::ffi::c_void,
    skb: *mut ffi::sk_buff,
) -> core::ffi::c_int {
    // SAFETY: called by the shim with the registration's data.
    let t = unsafe { data_of::<T>(data) };
    let Some(raw) = NonNull::new(skb) else {
        return ffi::DIA_TX_OK as core::ffi::c_int;
    };
    // INVARIANT: the stack hands us this skb; we own it unless we return BUSY.
    match t.xmit(SkBuff { raw }) {
        Ok(()) => ffi::DIA_TX_OK as core::ffi::c_int,
        Err(skb) => {
            // Back to the stack without freeing it.
            core::mem::forget(skb);
            ffi::DIA_TX_BUSY as core::ffi::c_int
        }
    }
}

/// # Safety
///
/// Called by the shim only, with the callback data of a live
/// [`Registration<T>`] (and, for `xmit`, an skb the stack hands over).
unsafe extern "C" fn poll_cb<T: NetOps>(
    data: *mut core::ffi::c_void,
    budget: core::ffi::c_int,
) -> core::ffi::c_int {
    // SAFETY: called by the shim with the registration's data.
    unsafe { data_of::<T>(data) }.poll(budget)
}

/// # Safety
///
/// Called by the shim only, with the callback data of a live
/// [`Registration<T>`] (and, for `xmit`, an skb the stack hands over).
unsafe extern "C" fn stats_cb<T: NetOps>(
    data: *mut core::ffi::c_void,
    out: *mut ffi::dia_shim_net_stats,
) {
    // SAFETY: called by the shim with the registration's data.
    let s = unsafe { data_of::<T>(data) }.stats();
    // SAFETY: the shim passes a valid, exclusive stats struct.
    let out = unsafe { &mut *out };
    out.rx_packets = s.rx_packets;
    out.tx_packets = s.tx_packets;
    out.rx_bytes = s.rx_bytes;
    out.tx_bytes = s.tx_bytes;
    out.rx_dropped = s.rx_dropped;
    out.tx_dropped = s.tx_dropped;
}

/// One DMA-mapped buffer of an skb.
#[derive(Clone, Copy, Default)]
pub(crate) struct TxBuf {
    /// Bus address.
    pub(crate) addr: u64,
    /// Length in bytes.
    pub(crate) len: u32,
    /// A page fragment (else the linear part).
    pub(crate) page: bool,
}

/// An skb the driver owns (freed on drop if not consumed).
///
/// # Invariants
///
/// `raw` is an skb nobody else frees while this value lives.
pub(crate) struct SkBuff {
    raw: NonNull<ffi::sk_buff>,
}

// SAFETY: an owned skb may be freed from any context (`dev_kfree_skb_any`).
unsafe impl Send for SkBuff {}

impl SkBuff {
    /// Length in bytes.
    pub(crate) fn len(&self) -> u32 {
        // SAFETY: `raw` is owned and live (type invariant).
        unsafe { ffi::dia_shim_skb_len(self.raw.as_ptr()) }
    }

    /// `(csum_start, csum_offset)` if the stack left the checksum to the device.
    pub(crate) fn checksum_offload(&self) -> Option<(u16, u16)> {
        let (mut start, mut offset) = (0u16, 0u16);
        // SAFETY: `raw` is live; the out pointers are valid.
        let partial =
            unsafe { ffi::dia_shim_skb_csum(self.raw.as_ptr(), &mut start, &mut offset) != 0 };
        partial.then_some((start, offset))
    }

    /// The MSS to cut this skb into if it is a TCP GSO skb (the stack
    /// gives those only to a device that offered TSO), else `None`.
    pub(crate) fn tso_mss(&self) -> Option<u16> {
        // SAFETY: `raw` is owned and live (type invariant).
        let mss = unsafe { ffi::dia_shim_skb_tso_mss(self.raw.as_ptr()) };
        (mss != 0).then_some(mss)
    }

    /// DMA-maps the skb's buffers into `out`; returns how many. `ENOSPC`
    /// if it needs more than `out` holds. Each mapping must be undone with
    /// [`NetDev::unmap`] before the skb is freed.
    pub(crate) fn map(&self, nd: &NetDev, out: &mut [TxBuf]) -> Result<usize> {
        const MAX: usize = 32;
        let max = out.len().min(MAX);
        let mut addrs = [0u64; MAX];
        let mut lens = [0u32; MAX];
        let mut pages = [0u8; MAX];
        // SAFETY: `nd` and `raw` are live; the arrays hold `max` entries.
        let n = unsafe {
            ffi::dia_shim_skb_map(
                nd.as_raw(),
                self.raw.as_ptr(),
                addrs.as_mut_ptr(),
                lens.as_mut_ptr(),
                pages.as_mut_ptr(),
                max as u32,
            )
        };
        if n < 0 {
            return Err(Error::from_errno(n));
        }
        let n = usize::try_from(n).map_err(|_| ENOSPC)?.min(max);
        for (o, ((&addr, &len), &page)) in out
            .iter_mut()
            .zip(addrs.iter().zip(&lens).zip(&pages))
            .take(n)
        {
            *o = TxBuf {
                addr,
                len,
                page: page != 0,
            };
        }
        Ok(n)
    }

    /// Detaches the skb from its sending socket, whose send buffer then no
    /// longer waits for the skb to be freed (for a device that frees sent
    /// skbs only when it next transmits or polls).
    pub(crate) fn orphan(&mut self) {
        // SAFETY: `raw` is owned and live (type invariant).
        unsafe { ffi::dia_shim_skb_orphan(self.raw.as_ptr()) }
    }

    /// Frees a transmitted skb (from NAPI with its `budget`, else 0).
    pub(crate) fn consume(self, budget: i32) {
        let raw = self.raw.as_ptr();
        core::mem::forget(self);
        // SAFETY: we own `raw` (type invariant) and give it up here.
        unsafe { ffi::dia_shim_skb_consume(raw, budget) }
    }
}

impl Drop for SkBuff {
    fn drop(&mut self) {
        // SAFETY: we own `raw` (type invariant); freed once, from any context.
        unsafe { ffi::dia_shim_skb_drop(self.raw.as_ptr()) }
    }
}
