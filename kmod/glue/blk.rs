//! blk-mq: a tag set shared by every namespace disk of a card, the disks
//! themselves, and the requests the block layer hands the driver. 6.12's
//! `kernel::block::mq` has no per-request data, no `tag_to_rq` and no error
//! completion, so this wraps the C block layer directly through the shim.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use kernel::error::{code::EINVAL, Error, Result};
use kernel::str::CStr;
use kernel::sync::{Arc, ArcBorrow};

use super::ffi;
use super::pci::Device;
use crate::abi::card::PRP_LIST_ENTRIES;

/// Largest number of data segments in one request (one page each).
pub(crate) const MAX_SEGMENTS: usize = ffi::DIA_SHIM_MAX_SEGMENTS as usize;

// A request's page entries after the first fit one PRP list page.
const _: () = assert!(MAX_SEGMENTS < PRP_LIST_ENTRIES);

// The shim's PRP page (list pages, segment boundary) is the card's.
const _: () = assert!(ffi::DIA_SHIM_PRP_PAGE as u64 == crate::abi::card::PRP_PAGE_BYTES);

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read data.
    Read,
    /// Write data.
    Write,
    /// Flush the volatile write cache.
    Flush,
    /// Deallocate a range.
    Discard,
    /// Write zeroes to a range.
    WriteZeroes,
    /// Anything else; failed with "not supported".
    Unsupported,
}

/// How a request ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Success.
    Ok,
    /// Out of resources now; the block layer retries.
    Busy,
    /// I/O error.
    IoErr,
    /// Operation not supported.
    NotSupp,
    /// No space left (thin pool full).
    NoSpace,
    /// Error on the target (bad LBA, media): not retried.
    Target,
}

impl Status {
    fn raw(self) -> core::ffi::c_int {
        let v = match self {
            Status::Ok => ffi::DIA_BLK_OK,
            Status::Busy => ffi::DIA_BLK_BUSY,
            Status::IoErr => ffi::DIA_BLK_IOERR,
            Status::NotSupp => ffi::DIA_BLK_NOTSUPP,
            Status::NoSpace => ffi::DIA_BLK_NOSPC,
            Status::Target => ffi::DIA_BLK_TARGET,
        };
        // The shim's status constants are small positive numbers.
        v as core::ffi::c_int
    }
}

/// Per-request driver data: the card's completion status, stored by the
/// interrupt handler and read by the completion callback, and the
/// generation of the command id the request was last submitted with.
#[repr(C)]
pub(crate) struct RequestData {
    /// Card status (`STATUS_*`) of the completed command.
    pub(crate) status: AtomicU32,
    /// Its completion's DW0 (for a write: `WRITE_RESULT_*`).
    pub(crate) result: AtomicU32,
    /// For a flush or a FUA write: the namespace's write count when it was
    /// submitted (what it makes durable when it succeeds and flushes).
    pub(crate) flush_mark: AtomicU64,
    /// Bumped at every submission; part of the command id, so a completion
    /// for an earlier life of the same tag is recognised as stale.
    pub(crate) generation: AtomicU32,
    /// Set by the timeout handler: the request waits for the card to say
    /// whether it holds the command on purpose.
    pub(crate) suspect: AtomicBool,
    /// Set by a reset that found the firmware restarted: this flush was in
    /// flight when the card's volatile cache was lost, so it fails when it
    /// is dispatched again instead of succeeding on the new firmware.
    pub(crate) flush_lost: AtomicBool,
}

/// What the timeout handler decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeoutAction {
    /// Keep waiting: the timer is armed again.
    ResetTimer,
    /// The request was ended.
    Done,
}

/// A request the block layer lent the driver for the duration of a callback.
///
/// # Invariants
///
/// `raw` is a live request of a tag set created by [`TagSet::new`] for `'a`.
pub(crate) struct Request<'a> {
    raw: NonNull<ffi::request>,
    _lifetime: PhantomData<&'a ()>,
}

impl Request<'_> {
    /// The request's tag, unique within its hardware queue (used as command id).
    pub(crate) fn tag(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_tag(self.raw.as_ptr()) }
    }

    /// Operation.
    pub(crate) fn op(&self) -> Op {
        // SAFETY: `raw` is live (type invariant).
        match unsafe { ffi::dia_shim_rq_op(self.raw.as_ptr()) } as u32 {
            ffi::DIA_RQ_READ => Op::Read,
            ffi::DIA_RQ_WRITE => Op::Write,
            ffi::DIA_RQ_FLUSH => Op::Flush,
            ffi::DIA_RQ_DISCARD => Op::Discard,
            ffi::DIA_RQ_WRITE_ZEROES => Op::WriteZeroes,
            _ => Op::Unsupported,
        }
    }

    /// First 512-byte sector.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_sector(self.raw.as_ptr()) }
    }

    /// Length in bytes.
    pub(crate) fn bytes(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_bytes(self.raw.as_ptr()) }
    }

    /// Whether the write must be durable before it completes.
    pub(crate) fn fua(&self) -> bool {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_fua(self.raw.as_ptr()) != 0 }
    }

    /// The driver's data in the request.
    pub(crate) fn data(&self) -> &RequestData {
        // SAFETY: the PDU's Rust part is `size_of::<RequestData>()` bytes,
        // zeroed by init_request (a valid `RequestData`), and lives as long
        // as the request.
        unsafe { &*ffi::dia_shim_rq_pdu(self.raw.as_ptr()).cast::<RequestData>() }
    }

    /// Marks the request started (arms its timeout).
    pub(crate) fn start(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_start(self.raw.as_ptr()) }
    }

    /// DMA-maps the data; returns the segment count (read them with
    /// [`Request::segment`]).
    pub(crate) fn map(&self) -> Result<usize> {
        // SAFETY: `raw` is live (type invariant).
        let n = unsafe { ffi::dia_shim_rq_map(self.raw.as_ptr()) };
        if n < 0 {
            return Err(Error::from_errno(n));
        }
        usize::try_from(n).map_err(|_| EINVAL)
    }

    /// Mapped segment `i`: bus address and length (`None` past the last).
    pub(crate) fn segment(&self, i: usize) -> Option<(u64, u32)> {
        let i = u32::try_from(i).ok()?;
        let (mut addr, mut len) = (0u64, 0u32);
        // SAFETY: `raw` is live; the shim checks `i` against the mapped
        // count and writes only through the two pointers.
        let rc = unsafe { ffi::dia_shim_rq_segment(self.raw.as_ptr(), i, &mut addr, &mut len) };
        (rc == 0).then_some((addr, len))
    }

    /// The request's PRP list page ([`PRP_LIST_ENTRIES`] entries): CPU view and
    /// bus address.
    pub(crate) fn prp_list(&mut self) -> Option<(&mut [u64; PRP_LIST_ENTRIES], u64)> {
        let mut dma = 0u64;
        // SAFETY: `raw` is live.
        let p = unsafe { ffi::dia_shim_rq_prp_list(self.raw.as_ptr(), &mut dma) };
        let p = NonNull::new(p)?.as_ptr().cast::<[u64; PRP_LIST_ENTRIES]>();
        // SAFETY: a non-NULL result is a page-sized, page-aligned pool block
        // owned by this request until `unmap`; only this request's owner uses it.
        Some((unsafe { &mut *p }, dma))
    }

    /// Undoes `map` and frees the PRP list page.
    pub(crate) fn unmap(&self) {
        // SAFETY: `raw` is live; unmapping twice is a no-op.
        unsafe { ffi::dia_shim_rq_unmap(self.raw.as_ptr()) }
    }

    /// Hands the request to `Operations::complete` (callable from hard IRQ).
    pub(crate) fn complete(self) {
        // SAFETY: `raw` is live; the block layer owns it again afterwards.
        unsafe { ffi::dia_shim_rq_complete(self.raw.as_ptr()) }
    }

    /// Ends the request with `status`.
    pub(crate) fn end(self, status: Status) {
        // SAFETY: `raw` is live; ending gives it back to the block layer.
        unsafe { ffi::dia_shim_rq_end(self.raw.as_ptr(), status.raw()) }
    }

    /// Puts the request back on its queue's requeue list (its data
    /// unmapped), to be submitted again once the queue is kicked.
    pub(crate) fn requeue(self) {
        self.unmap();
        // SAFETY: `raw` is live; requeueing gives it back to the block layer.
        unsafe { ffi::dia_shim_rq_end(self.raw.as_ptr(), ffi::DIA_BLK_REQUEUE as core::ffi::c_int) }
    }

    /// Hardware queue of the request.
    pub(crate) fn hctx(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_rq_hctx(self.raw.as_ptr()) }
    }
}

/// The driver's blk-mq callbacks.
pub(crate) trait Operations: Send + Sync + Sized {
    /// Per-disk data (a namespace).
    type Disk: Send + Sync;
    /// Submits `rq` for `disk` on hardware queue `hctx`; `last` says no
    /// more requests follow in this batch.
    fn queue_rq(&self, disk: &Self::Disk, hctx: u32, rq: Request<'_>, last: bool) -> Status;
    /// Rings the doorbell for requests queued without `last`.
    fn commit_rqs(&self, hctx: u32);
    /// Ends a request of `disk` the interrupt handler completed.
    fn complete(&self, disk: &Self::Disk, rq: Request<'_>);
    /// A request ran past its timeout: the callback ends it, or says to
    /// wait longer (the card must not be left holding memory the block
    /// layer gives back).
    fn timeout(&self, rq: Request<'_>) -> TimeoutAction;
    /// The last opener of `disk` closed it.
    fn last_close(&self, disk: &Self::Disk);
}

/// A blk-mq tag set with `T`'s callbacks.
///
/// # Invariants
///
/// `raw` is a live tag set whose `set_data` is `ops`, a pointer from
/// `Arc::into_raw` owning one reference; both are released in `drop`, after
/// every disk of the set was removed.
pub(crate) struct TagSet<T: Operations> {
    raw: NonNull<ffi::dia_shim_tagset>,
    ops: *const T,
}

// SAFETY: the tag set is a kernel object usable from any thread; `T: Send + Sync`.
unsafe impl<T: Operations> Send for TagSet<T> {}
// SAFETY: all `&self` methods are thread-safe block-layer calls.
unsafe impl<T: Operations> Sync for TagSet<T> {}

impl<T: Operations> TagSet<T> {
    const OPS: ffi::dia_shim_blk_ops = ffi::dia_shim_blk_ops {
        queue_rq: Some(queue_rq_callback::<T>),
        commit_rqs: Some(commit_rqs_callback::<T>),
        complete: Some(complete_callback::<T>),
        timeout: Some(timeout_callback::<T>),
        last_close: Some(last_close_callback::<T>),
    };

    /// Creates a tag set of `queues` hardware queues of `depth` tags each.
    pub(crate) fn new(
        dev: Device,
        queues: u32,
        depth: u32,
        timeout_ms: u32,
        ops: Arc<T>,
    ) -> Result<Self> {
        let ops = Arc::into_raw(ops);
        let mut err = 0;
        // SAFETY: `dev` is valid; `ops` owns a reference released only in
        // `drop` (or below on failure); the ops table is copied by C.
        let raw = unsafe {
            ffi::dia_shim_tagset_new(
                dev.as_raw(),
                queues,
                depth,
                core::mem::size_of::<RequestData>() as u32,
                timeout_ms,
                ops.cast_mut().cast(),
                &Self::OPS,
                &mut err,
            )
        };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: the reference from `into_raw` above, unused by C.
            drop(unsafe { Arc::from_raw(ops) });
            return Err(Error::from_errno(err));
        };
        // INVARIANT: live tag set owning one reference to `ops`.
        Ok(Self { raw, ops })
    }

    /// Steers MSI-X `vector` to the CPUs that submit on hardware queue
    /// `hctx` (the block layer's CPU-to-queue map), so that queue's
    /// completions run on the CPUs that issued them.
    pub(crate) fn steer_irq(&self, hctx: u32, vector: u32) -> Result {
        // SAFETY: `raw` is live (type invariant); the C side checks `hctx`
        // and `vector`.
        let err = unsafe { ffi::dia_shim_tagset_steer_irq(self.raw.as_ptr(), hctx, vector) };
        if err < 0 {
            return Err(Error::from_errno(err));
        }
        Ok(())
    }

    /// Stops `queue_rq` calls on every queue (waits for running ones).
    pub(crate) fn quiesce(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_tagset_quiesce(self.raw.as_ptr()) }
    }

    /// Resumes `queue_rq` calls.
    pub(crate) fn unquiesce(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_tagset_unquiesce(self.raw.as_ptr()) }
    }

    /// Re-runs requeued requests.
    pub(crate) fn kick_requeue(&self) {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_tagset_kick_requeue(self.raw.as_ptr()) }
    }

    /// Calls `f` for every request the driver started and has not ended;
    /// `f` may end or requeue it (as the nvme driver's cancel does).
    pub(crate) fn for_each_busy(&self, mut f: impl FnMut(Request<'_>)) {
        /// # Safety
        ///
        /// `data` is a live `&mut F` and `rq` a request the block layer lends
        /// for the call.
        unsafe extern "C" fn trampoline<F: FnMut(Request<'_>)>(
            data: *mut core::ffi::c_void,
            rq: *mut ffi::request,
        ) {
            // SAFETY: `data` is the `&mut F` of `for_each_busy`, live for the
            // synchronous iteration (function contract).
            let f = unsafe { &mut *data.cast::<F>() };
            if let Some(raw) = NonNull::new(rq) {
                // INVARIANT: the block layer lends `rq` for this call.
                f(Request {
                    raw,
                    _lifetime: PhantomData,
                });
            }
        }
        fn callback<F: FnMut(Request<'_>)>(
            _: &F,
        ) -> unsafe extern "C" fn(*mut core::ffi::c_void, *mut ffi::request) {
            trampoline::<F>
        }
        let cb = callback(&f);
        // SAFETY: `raw` is live; `f` outlives the synchronous iteration and
        // `cb` is the trampoline for its type.
        unsafe { ffi::dia_shim_tagset_busy_iter(self.raw.as_ptr(), Some(cb), (&raw mut f).cast()) }
    }

    /// The started request with `tag` on hardware queue `hctx`, if any.
    pub(crate) fn request(&self, hctx: u32, tag: u32) -> Option<Request<'_>> {
        // SAFETY: `raw` is live; the C side range-checks `hctx` and `tag`.
        let rq = unsafe { ffi::dia_shim_tag_to_rq(self.raw.as_ptr(), hctx, tag) };
        // INVARIANT: a request of this tag set, valid while the set lives.
        NonNull::new(rq).map(|raw| Request {
            raw,
            _lifetime: PhantomData,
        })
    }
}

impl<T: Operations> Drop for TagSet<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live; no disk uses it any more (disks hold an Arc
        // of the owner that holds the tag set and are removed first).
        unsafe { ffi::dia_shim_tagset_free(self.raw.as_ptr()) };
        // SAFETY: the reference from `new`, released once.
        drop(unsafe { Arc::from_raw(self.ops) });
    }
}

/// Disk geometry and features.
pub(crate) struct DiskParams {
    /// Logical block size in bytes.
    pub(crate) lba_size: u32,
    /// Capacity in 512-byte sectors.
    pub(crate) capacity_sectors: u64,
    /// Largest transfer in 512-byte sectors.
    pub(crate) max_hw_sectors: u32,
    /// Largest discard (0: none).
    pub(crate) max_discard_sectors: u32,
    /// Largest write-zeroes (0: none).
    pub(crate) max_write_zeroes_sectors: u32,
    /// The device has a volatile write cache (flushes matter).
    pub(crate) volatile_write_cache: bool,
    /// The device honours FUA.
    pub(crate) fua: bool,
}

/// A disk added to the system (`/dev/<name>`).
///
/// # Invariants
///
/// `raw` is a live disk whose queue data is `data`, a pointer from
/// `Arc::into_raw` owning one reference; `drop` removes the disk first.
pub(crate) struct Disk<T: Operations> {
    raw: NonNull<ffi::dia_shim_disk>,
    data: *const T::Disk,
}

// SAFETY: a kernel object usable from any thread; `T::Disk: Send + Sync`.
unsafe impl<T: Operations> Send for Disk<T> {}
// SAFETY: no `&self` method mutates shared state without the kernel's locks.
unsafe impl<T: Operations> Sync for Disk<T> {}

impl<T: Operations> Disk<T> {
    /// Allocates and adds a disk on `set`.
    pub(crate) fn new(
        set: &TagSet<T>,
        name: &CStr,
        p: &DiskParams,
        data: Arc<T::Disk>,
    ) -> Result<Self> {
        let params = ffi::dia_shim_disk_params {
            lba_size: p.lba_size,
            capacity_sectors: p.capacity_sectors,
            max_hw_sectors: p.max_hw_sectors,
            max_discard_sectors: p.max_discard_sectors,
            max_write_zeroes_sectors: p.max_write_zeroes_sectors,
            volatile_write_cache: core::ffi::c_int::from(p.volatile_write_cache),
            fua: core::ffi::c_int::from(p.fua),
        };
        let data = Arc::into_raw(data);
        let mut err = 0;
        // SAFETY: `set` is live; `name` is NUL-terminated (copied); `data`
        // owns a reference released in `drop` after the disk is gone.
        let raw = unsafe {
            ffi::dia_shim_disk_new(
                set.raw.as_ptr(),
                name.as_char_ptr().cast(),
                &params,
                data.cast_mut().cast(),
                &mut err,
            )
        };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: the reference from `into_raw` above, unused by C.
            drop(unsafe { Arc::from_raw(data) });
            return Err(Error::from_errno(err));
        };
        // INVARIANT: live disk owning one reference to `data`.
        Ok(Self { raw, data })
    }

    /// The driver's data of this disk.
    pub(crate) fn data(&self) -> &T::Disk {
        // SAFETY: `data` owns a reference until `drop` (type invariant).
        unsafe { &*self.data }
    }

    /// How many times the disk is open (a mount counts).
    pub(crate) fn openers(&self) -> u32 {
        // SAFETY: `raw` is live (type invariant).
        unsafe { ffi::dia_shim_disk_openers(self.raw.as_ptr()) }
    }
}

impl<T: Operations> Drop for Disk<T> {
    fn drop(&mut self) {
        // SAFETY: `raw` is live; after removal no callback sees `data`.
        unsafe { ffi::dia_shim_disk_remove(self.raw.as_ptr()) };
        // SAFETY: the reference from `new`, released once.
        drop(unsafe { Arc::from_raw(self.data) });
    }
}

/// # Safety
///
/// Called by the shim with the tag set's `set_data`, a disk's `disk_data`
/// and a live request.
unsafe extern "C" fn queue_rq_callback<T: Operations>(
    set_data: *mut core::ffi::c_void,
    disk_data: *mut core::ffi::c_void,
    hctx: core::ffi::c_uint,
    rq: *mut ffi::request,
    last: core::ffi::c_int,
) -> core::ffi::c_int {
    // SAFETY: `set_data` is the tag set's `ops` reference, live while the set lives.
    let ops = unsafe { ArcBorrow::<T>::from_raw(set_data.cast::<T>().cast_const()) };
    // SAFETY: `disk_data` is a disk's reference, live while the disk exists.
    let disk = unsafe { ArcBorrow::<T::Disk>::from_raw(disk_data.cast::<T::Disk>().cast_const()) };
    let Some(raw) = NonNull::new(rq) else {
        return Status::IoErr.raw();
    };
    // INVARIANT: the block layer lends `rq` for this call.
    let rq = Request {
        raw,
        _lifetime: PhantomData,
    };
    ops.queue_rq(&disk, hctx, rq, last != 0).raw()
}

/// # Safety
///
/// Called by the shim with the tag set's `set_data`.
unsafe extern "C" fn commit_rqs_callback<T: Operations>(
    set_data: *mut core::ffi::c_void,
    hctx: core::ffi::c_uint,
) {
    // SAFETY: as in `queue_rq_callback`.
    let ops = unsafe { ArcBorrow::<T>::from_raw(set_data.cast::<T>().cast_const()) };
    ops.commit_rqs(hctx);
}

/// # Safety
///
/// Called by the shim with the tag set's `set_data` and a live request.
unsafe extern "C" fn complete_callback<T: Operations>(
    set_data: *mut core::ffi::c_void,
    rq: *mut ffi::request,
) {
    // SAFETY: as in `queue_rq_callback`.
    let ops = unsafe { ArcBorrow::<T>::from_raw(set_data.cast::<T>().cast_const()) };
    if let Some(raw) = NonNull::new(rq) {
        // SAFETY: `rq` is live; its queue's data is the disk's reference,
        // live while the disk exists, which outlives its requests.
        let disk_data = unsafe { ffi::dia_shim_rq_disk_data(raw.as_ptr()) };
        // SAFETY: as in `queue_rq_callback`.
        let disk =
            unsafe { ArcBorrow::<T::Disk>::from_raw(disk_data.cast::<T::Disk>().cast_const()) };
        // INVARIANT: the block layer lends `rq` for this call.
        ops.complete(
            &disk,
            Request {
                raw,
                _lifetime: PhantomData,
            },
        );
    }
}

/// # Safety
///
/// Called by the shim with the tag set's `set_data` and a live request.
unsafe extern "C" fn timeout_callback<T: Operations>(
    set_data: *mut core::ffi::c_void,
    rq: *mut ffi::request,
) -> core::ffi::c_int {
    // SAFETY: as in `queue_rq_callback`.
    let ops = unsafe { ArcBorrow::<T>::from_raw(set_data.cast::<T>().cast_const()) };
    let Some(raw) = NonNull::new(rq) else {
        return 0;
    };
    // INVARIANT: the block layer lends `rq` for this call.
    match ops.timeout(Request {
        raw,
        _lifetime: PhantomData,
    }) {
        // BLK_EH_RESET_TIMER.
        TimeoutAction::ResetTimer => 1,
        // BLK_EH_DONE: the callback ended the request.
        TimeoutAction::Done => 0,
    }
}

/// # Safety
///
/// Called by the shim with the tag set's `set_data` and a disk's
/// `disk_data`, both live (the disk is not removed: the shim checks under
/// the disk's open mutex).
unsafe extern "C" fn last_close_callback<T: Operations>(
    set_data: *mut core::ffi::c_void,
    disk_data: *mut core::ffi::c_void,
) {
    // SAFETY: as in `queue_rq_callback`.
    let ops = unsafe { ArcBorrow::<T>::from_raw(set_data.cast::<T>().cast_const()) };
    // SAFETY: `disk_data` is the disk's reference, live while it exists.
    let disk = unsafe { ArcBorrow::<T::Disk>::from_raw(disk_data.cast::<T::Disk>().cast_const()) };
    ops.last_close(&disk);
}
