//! `ioctl-fuzz`: several threads hammer `/dev/dia` with every real request
//! number and with random ones, with structured and random contents, through
//! good, NULL, unmapped, short and read-only buffers. Each thread keeps a
//! model of the namespaces and ports it created; at the end the driver's
//! lists must equal the union of the models, and cleaning up must leave the
//! card empty.
//!
//! `--seconds S` ends the run after S seconds even if calls are left.
//! With `--chaos` the scenario kills and restarts the card and removes and
//! rescans the PCI device meanwhile: errors of a dead or missing card are
//! allowed (and the thread reopens `/dev/dia` when it goes away), an
//! operation that failed that way may or may not have happened, so the end
//! check becomes "every listed object was created by someone, every
//! confirmed namespace is still there".

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dia_abi::card::{
    MirrorNamespaceCreate, MirrorPlex, PortConfig, PortLimits, QosSettings, RemoteNamespaceCreate,
    RemoteTarget, LABEL_LEN, MIRROR_MAX_PLEXES, PLEX_IN_SYNC, PLEX_NEW,
};
use dia_abi::ioctl::{
    ioc, DiaIdentity, DiaNsCreate, DiaNsCreateMirror, DiaNsCreateRemote, DiaNsId, DiaNsInfo,
    DiaNsList, DiaNsMirrorStatus, DiaNsQos, DiaNsSetMirror, DiaNsStats, DiaPoolInfo, DiaPortCreate,
    DiaPortId, DiaPortInfo, DiaPortList, DiaPortSet, DIA_IOC_IDENTIFY, DIA_IOC_NS_ATTACH,
    DIA_IOC_NS_CREATE, DIA_IOC_NS_CREATE_MIRROR, DIA_IOC_NS_CREATE_REMOTE, DIA_IOC_NS_DELETE,
    DIA_IOC_NS_DETACH, DIA_IOC_NS_INFO, DIA_IOC_NS_LIST, DIA_IOC_NS_MIRROR_STATUS,
    DIA_IOC_NS_SET_MIRROR, DIA_IOC_NS_SET_QOS, DIA_IOC_NS_STATS, DIA_IOC_POOL_INFO,
    DIA_IOC_PORT_CREATE, DIA_IOC_PORT_DELETE, DIA_IOC_PORT_INFO, DIA_IOC_PORT_LIST,
    DIA_IOC_PORT_SET,
};

use crate::{errno_name, flag, Dev, ShortBuffer};

/// Requests that change the card: random raw calls never use these numbers,
/// so a thread's model is only changed by its own structured calls.
const MUTATING: [u32; 11] = [
    DIA_IOC_NS_CREATE,
    DIA_IOC_NS_CREATE_REMOTE,
    DIA_IOC_NS_CREATE_MIRROR,
    DIA_IOC_NS_SET_MIRROR,
    DIA_IOC_NS_DELETE,
    DIA_IOC_NS_ATTACH,
    DIA_IOC_NS_DETACH,
    DIA_IOC_NS_SET_QOS,
    DIA_IOC_PORT_CREATE,
    DIA_IOC_PORT_DELETE,
    DIA_IOC_PORT_SET,
];

/// Errnos a call may end with on a healthy card (what was wrong with it).
const INPUT_ERRNOS: [i32; 9] = [
    libc::ENOTTY,
    libc::EFAULT,
    libc::EINVAL,
    libc::ENOENT,
    libc::EBUSY,
    libc::EEXIST,
    libc::ENOSPC,
    libc::EDQUOT,
    libc::ENOMEM,
];

/// Errnos Create Remote Namespace may end with besides those: the target
/// (a closed port on the host) cannot be reached or refuses.
const REMOTE_ERRNOS: [i32; 2] = [libc::EHOSTUNREACH, libc::ECONNREFUSED];

/// Errnos Create Mirror Namespace may end with besides those: its plexes'
/// targets (closed ports on the host) cannot be reached or refuse, differ,
/// their records name a newer copy, or the card has no mirrors (before
/// interface 1.5).
const MIRROR_ERRNOS: [i32; 5] = [
    libc::EHOSTUNREACH,
    libc::ECONNREFUSED,
    libc::EMEDIUMTYPE,
    libc::ESTALE,
    libc::EOPNOTSUPP,
];

/// Errnos of a card that is dead, resetting or gone (`--chaos` only).
const CHAOS_ERRNOS: [i32; 4] = [libc::EIO, libc::ENODEV, libc::ETIMEDOUT, libc::ENXIO];

/// Most namespaces and ports one thread keeps at once.
const OWN_MAX: usize = 4;

/// xorshift64*: deterministic, seedable, dependency-free.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// One page mapped read-only: the kernel can read a request from it but
/// not write the answer back.
struct ReadOnlyPage {
    base: *mut libc::c_void,
    len: usize,
}

impl ReadOnlyPage {
    /// A read-only page holding `bytes` at its start.
    fn with(bytes: &[u8]) -> Result<Self, String> {
        let len = 4096;
        // SAFETY: anonymous private mapping of one page; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        let n = bytes.len().min(len);
        // SAFETY: `base` is a fresh writable mapping of `len >= n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), base.cast::<u8>(), n) };
        // SAFETY: changes the protection of our own mapping.
        if unsafe { libc::mprotect(base, len, libc::PROT_READ) } != 0 {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(base, len) };
            return Err("mprotect failed".into());
        }
        Ok(Self { base, len })
    }

    fn addr(&self) -> usize {
        self.base as usize
    }
}

impl Drop for ReadOnlyPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// The bytes of a plain `repr(C)` ABI struct.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    let mut out = vec![0u8; std::mem::size_of::<T>()];
    // SAFETY: `T` is a `repr(C)` ABI struct of plain integers (no padding
    // the ABI tests do not pin); `out` has exactly its size.
    unsafe {
        std::ptr::copy_nonoverlapping(
            std::ptr::from_ref(v).cast::<u8>(),
            out.as_mut_ptr(),
            out.len(),
        )
    };
    out
}

/// How a structured call passes its buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Buffer {
    Good,
    Null,
    Short,
    ReadOnly,
}

/// What one thread created and believes exists.
#[derive(Default)]
struct Model {
    /// Namespaces this thread created and has not deleted: attached or not.
    ns: BTreeMap<u32, bool>,
    /// Ports this thread created and has not deleted.
    ports: BTreeSet<u32>,
    /// Namespaces a failed delete may have removed (`--chaos`).
    maybe_gone_ns: BTreeSet<u32>,
    /// Whether a call ended in doubt (`--chaos`): attach state is unknown.
    doubt: bool,
}

/// A thread's counts: calls by result.
type Counts = BTreeMap<i32, u64>;

/// Structured calls by request: (succeeded, failed).
type PerRequest = BTreeMap<&'static str, (u64, u64)>;

struct Worker {
    id: u64,
    rng: Rng,
    chaos: bool,
    dev: Option<Dev>,
    short: ShortBuffer,
    model: Model,
    counts: Counts,
    per_request: PerRequest,
    label: u64,
}

impl Worker {
    /// The open device, reopened after it went away (`--chaos`).
    fn dev(&mut self) -> Result<&Dev, String> {
        if self.dev.is_none() {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                match Dev::open() {
                    Ok(d) => {
                        self.dev = Some(d);
                        break;
                    }
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!("thread {}: {e} for 120 s", self.id))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.dev.as_ref().ok_or_else(|| "no device".to_string())
    }

    /// Issues one call and accounts for its result; an errno outside the
    /// allowed sets is an error of the driver.
    fn call(
        &mut self,
        what: &'static str,
        cmd: u32,
        arg: usize,
    ) -> Result<Result<i32, i32>, String> {
        let r = self.dev()?.ioctl(cmd, arg);
        let key = match r {
            Ok(_) => 0,
            Err(e) => e,
        };
        *self.counts.entry(key).or_default() += 1;
        let tally = self.per_request.entry(what).or_default();
        if r.is_ok() {
            tally.0 += 1;
        } else {
            tally.1 += 1;
        }
        if let Err(e) = r {
            let allowed = INPUT_ERRNOS.contains(&e)
                || (what == "NS_CREATE_REMOTE" && REMOTE_ERRNOS.contains(&e))
                || (what == "NS_CREATE_MIRROR" && MIRROR_ERRNOS.contains(&e))
                // A card without mirrors; also a raw call that hit the number.
                || (cmd == DIA_IOC_NS_MIRROR_STATUS && e == libc::EOPNOTSUPP)
                || (what == "NS_SET_MIRROR" && e == libc::EOPNOTSUPP)
                || (self.chaos && CHAOS_ERRNOS.contains(&e));
            if !allowed {
                return Err(format!(
                    "thread {}: {what}: unexpected {}",
                    self.id,
                    errno_name(e)
                ));
            }
            if e == libc::ENODEV {
                // The device was removed: reopen the new one. Ports belong
                // to the driver's binding and went with it (namespaces live
                // on the card and stay); attach states are unknown.
                self.dev = None;
                self.model.ports.clear();
                self.model.doubt = true;
            }
        }
        Ok(r)
    }

    /// Whether an errno leaves the outcome of a call unknown.
    fn doubtful(&self, r: Result<i32, i32>) -> bool {
        matches!(r, Err(e) if CHAOS_ERRNOS.contains(&e))
    }

    fn buffer(&mut self) -> Buffer {
        match self.rng.below(20) {
            0 => Buffer::Null,
            1 => Buffer::Short,
            2 | 3 => Buffer::ReadOnly,
            _ => Buffer::Good,
        }
    }

    /// Calls `cmd` with `value` passed through `how`; returns the result and
    /// the value as the kernel left it (for a good buffer).
    fn structured<T: Copy>(
        &mut self,
        what: &'static str,
        cmd: u32,
        mut value: T,
        how: Buffer,
    ) -> Result<(Result<i32, i32>, T), String> {
        let r = match how {
            Buffer::Good => self.call(what, cmd, std::ptr::addr_of_mut!(value) as usize)?,
            Buffer::Null => self.call(what, cmd, 0)?,
            Buffer::Short => {
                let bytes = self.rng.below(std::mem::size_of::<T>() as u64) as usize + 1;
                let bytes = bytes.min(std::mem::size_of::<T>() - 1).max(1);
                let addr = self.short.tail(bytes);
                self.call(what, cmd, addr)?
            }
            Buffer::ReadOnly => {
                let page = ReadOnlyPage::with(&bytes_of(&value))?;
                self.call(what, cmd, page.addr())?
            }
        };
        if how != Buffer::Good && r.is_ok() && cmd_writes_back(cmd) {
            return Err(format!(
                "thread {}: {what} through an unusable buffer succeeded",
                self.id
            ));
        }
        Ok((r, value))
    }

    /// A call whose answer only matters for its errno.
    fn query<T: Copy>(
        &mut self,
        what: &'static str,
        cmd: u32,
        value: T,
        how: Buffer,
    ) -> Result<(), String> {
        self.structured(what, cmd, value, how).map(|_| ())
    }

    /// A namespace id: mostly one of ours, sometimes one nobody can have.
    fn nsid(&mut self) -> u32 {
        let own: Vec<u32> = self.model.ns.keys().copied().collect();
        if !own.is_empty() && self.rng.below(4) != 0 {
            return self.rng.pick(&own);
        }
        self.rng.pick(&[0, u32::MAX, 0x7fff_ffff, 100_000])
    }

    fn port_id(&mut self) -> u32 {
        let own: Vec<u32> = self.model.ports.iter().copied().collect();
        if !own.is_empty() && self.rng.below(4) != 0 {
            return self.rng.pick(&own);
        }
        self.rng.pick(&[u32::MAX, 0x7fff_ffff, 100_000])
    }

    fn qos(&mut self) -> QosSettings {
        if self.rng.below(2) == 0 {
            // A valid tier, so settings get applied.
            return QosSettings {
                max_iops: self.rng.pick(&[0, 1000, 50_000]),
                weight: self.rng.pick(&[0, 100]),
                burst_ms: self.rng.pick(&[0, 50]),
                ..QosSettings::default()
            };
        }
        let v = [0, 1, 20, 1000, 50_000, u64::MAX, 1 << 40];
        QosSettings {
            min_iops: self.rng.pick(&v),
            max_iops: self.rng.pick(&v),
            min_bytes_per_s: self.rng.pick(&v),
            max_bytes_per_s: self.rng.pick(&v),
            weight: self.rng.pick(&[0, 1, 100, 1000, 10_000, u32::MAX]),
            burst_ms: self.rng.pick(&[0, 1, 50, 1000, 60_000, u32::MAX]),
        }
    }

    fn port_config(&mut self) -> PortConfig {
        if self.rng.below(2) == 0 {
            // A valid one, so ports get made and changed.
            return PortConfig {
                vlan: self.rng.pick(&[1, 100, 4094]),
                mtu: self.rng.pick(&[1500, 9000]),
                reserved: 0,
                limits: PortLimits {
                    max_bits_per_s: self.rng.pick(&[0, 1_000_000]),
                    ..PortLimits::default()
                },
            };
        }
        PortConfig {
            vlan: self.rng.pick(&[0, 1, 100, 4094, 4095, 4096, u16::MAX]),
            mtu: self
                .rng
                .pick(&[0, 67, 68, 1500, 9000, 9216, 9217, u16::MAX]),
            reserved: self.rng.pick(&[0, 0, 0, 1]),
            limits: PortLimits {
                max_bits_per_s: self.rng.pick(&[0, 1, 1_000_000, 1 << 40, u64::MAX]),
                max_pps: self.rng.pick(&[0, 1, 1000, u64::MAX]),
                burst_ms: self.rng.pick(&[0, 50, 1000, u32::MAX]),
                reserved: self.rng.pick(&[0, 0, 0, 7]),
            },
        }
    }

    /// A raw call: random numbers (never a mutating request) and pointers.
    fn raw(&mut self, heap: &mut [u8]) -> Result<(), String> {
        let r = self.rng.next();
        let mut cmd = match r % 4 {
            0 | 1 => ioc(
                (r >> 8) as u32 & 3,
                (r >> 16) as u8,
                (r >> 24) as usize & 0x3fff,
            ),
            2 => self.rng.pick(&[
                DIA_IOC_IDENTIFY,
                DIA_IOC_NS_LIST,
                DIA_IOC_POOL_INFO,
                DIA_IOC_PORT_LIST,
                DIA_IOC_NS_INFO,
                DIA_IOC_NS_STATS,
                DIA_IOC_NS_MIRROR_STATUS,
                DIA_IOC_PORT_INFO,
            ]),
            _ => (r >> 32) as u32,
        };
        if MUTATING.contains(&cmd) {
            cmd = DIA_IOC_IDENTIFY;
        }
        for b in heap.iter_mut().take(512) {
            *b = self.rng.next() as u8;
        }
        let arg = match (r >> 40) % 5 {
            0 => 0,
            1 => heap.as_mut_ptr() as usize,
            2 => self.short.tail(((r >> 48) % 200) as usize + 1),
            3 => 0xffff_8880_0000_0000 + ((r >> 20) & 0xffff_f000) as usize,
            _ => self.rng.next() as usize,
        };
        self.call("raw", cmd, arg).map(|_| ())
    }

    fn ns_create(&mut self) -> Result<(), String> {
        if self.model.ns.len() >= OWN_MAX {
            return self.ns_delete();
        }
        // Most requests are valid, so the run holds namespaces to act on;
        // the rest have sizes and block sizes at and past every limit.
        let valid = self.rng.below(5) < 3;
        let mut req = DiaNsCreate {
            size_bytes: if valid {
                self.rng.pick(&[1 << 20, 4 << 20])
            } else {
                self.rng
                    .pick(&[0, 1, 512, 4096, (4 << 20) + 512, 1 << 40, u64::MAX])
            },
            lba_shift: if valid {
                self.rng.pick(&[9, 12])
            } else {
                self.rng.pick(&[9, 12, 8, 13, 64, u32::MAX])
            },
            // An output field: anything but zero is refused.
            nsid: if valid { 0 } else { self.rng.next() as u32 },
            ..DiaNsCreate::default()
        };
        self.label += 1;
        let label = format!("fuzz-{}-{}", self.id, self.label);
        if self.rng.below(8) == 0 {
            // A label with no NUL anywhere.
            req.label.fill(b'x');
        } else {
            req.label[..label.len()].copy_from_slice(label.as_bytes());
        }
        let how = self.buffer();
        let (r, out) = self.structured("NS_CREATE", DIA_IOC_NS_CREATE, req, how)?;
        match r {
            Ok(_) => {
                if self.model.ns.insert(out.nsid, false).is_some() {
                    return Err(format!(
                        "thread {}: NS_CREATE handed out {} twice",
                        self.id, out.nsid
                    ));
                }
            }
            Err(_) if self.doubtful(r) => self.model.doubt = true,
            Err(_) => {}
        }
        Ok(())
    }

    /// Create Remote Namespace towards a closed port of the card's host (or
    /// with a malformed target): never a namespace, always an errno.
    fn ns_create_remote(&mut self) -> Result<(), String> {
        let valid = self.rng.below(2) == 0;
        let mut target = RemoteTarget {
            port: if valid {
                1
            } else {
                self.rng.pick(&[0, 1, 4420])
            },
            digests: if valid { 0 } else { self.rng.next() as u8 },
            reserved: if valid { 0 } else { self.rng.pick(&[0, 1]) },
            nsid: if valid {
                1
            } else {
                self.rng.pick(&[0, 1, u32::MAX])
            },
            ..RemoteTarget::ZERO
        };
        let addr = if valid {
            "127.0.0.1"
        } else {
            self.rng
                .pick(&["", "300.1.1.1", "not-an-ip", "::1", "127.0.0.1 "])
        };
        target.addr[..addr.len()].copy_from_slice(addr.as_bytes());
        let nqn = "nqn.2026-12.io.dia:fuzz";
        if valid || self.rng.below(4) != 0 {
            target.subnqn[..nqn.len()].copy_from_slice(nqn.as_bytes());
        } else {
            // No NUL anywhere.
            target.subnqn.fill(b'n');
        }
        let mut req = DiaNsCreateRemote {
            nsid: if valid { 0 } else { self.rng.pick(&[0, 7]) },
            reserved: 0,
            create: RemoteNamespaceCreate {
                target,
                label: [0; LABEL_LEN],
                reserved: [0; 136],
            },
        };
        if !valid && self.rng.below(4) == 0 {
            req.create.reserved[135] = 1;
        }
        let how = self.buffer();
        let (r, out) = self.structured("NS_CREATE_REMOTE", DIA_IOC_NS_CREATE_REMOTE, req, how)?;
        if r.is_ok() {
            // Nothing listens there: a namespace would be one the card made
            // without reaching its target.
            return Err(format!(
                "thread {}: NS_CREATE_REMOTE of an unreachable target made namespace {}",
                self.id, out.nsid
            ));
        }
        if self.doubtful(r) {
            self.model.doubt = true;
        }
        Ok(())
    }

    /// A plex table for Create Mirror Namespace: well-formed (every target
    /// a closed port of the card's host, so no in-sync plex can be
    /// reached), or broken in one of the ways `validate` names.
    fn mirror_table(&mut self, valid: bool) -> MirrorNamespaceCreate {
        let mut m = MirrorNamespaceCreate {
            generation: self.rng.pick(&[0, 1, 7, u64::MAX]),
            plex_count: self.rng.below(MIRROR_MAX_PLEXES as u64) as u8 + 1,
            ..MirrorNamespaceCreate::default()
        };
        let label = format!("fuzz-{}-m{}", self.id, self.label);
        m.label[..label.len()].copy_from_slice(label.as_bytes());
        for (i, p) in m.plexes[..usize::from(m.plex_count)].iter_mut().enumerate() {
            let mut target = RemoteTarget {
                port: 1,
                nsid: 1,
                ..RemoteTarget::ZERO
            };
            let addr = "127.0.0.1";
            target.addr[..addr.len()].copy_from_slice(addr.as_bytes());
            // Distinct targets: a subsystem per plex.
            let nqn = format!("nqn.2026-12.io.dia:fuzz-mirror-{i}");
            target.subnqn[..nqn.len()].copy_from_slice(nqn.as_bytes());
            *p = MirrorPlex {
                target,
                state: if i == 0 { PLEX_IN_SYNC } else { PLEX_NEW },
                reserved: [0; 7],
            };
        }
        if valid {
            return m;
        }
        let n = usize::from(m.plex_count);
        let i = self.rng.below(n as u64) as usize;
        match self.rng.below(9) {
            0 => m.plex_count = self.rng.pick(&[0, MIRROR_MAX_PLEXES as u8 + 1, u8::MAX]),
            1 => m.plexes[i].state = self.rng.pick(&[1, 2, 4, u8::MAX]),
            2 => m.plexes[0].state = PLEX_NEW,
            3 => m.plexes[i].reserved[self.rng.below(7) as usize] = 1,
            4 => m.reserved0[self.rng.below(7) as usize] = 1,
            5 => m.reserved[self.rng.below(176) as usize] = 1,
            6 if n < MIRROR_MAX_PLEXES => m.plexes[n].target.port = 1,
            6 | 7 if n > 1 => m.plexes[n - 1].target = m.plexes[0].target,
            _ => {
                let t = &mut m.plexes[i].target;
                match self.rng.below(4) {
                    0 => t.port = 0,
                    1 => t.nsid = self.rng.pick(&[0, u32::MAX]),
                    2 => t.addr.fill(b'9'),
                    _ => t.subnqn.fill(b'n'),
                }
            }
        }
        m
    }

    /// Create Mirror Namespace with a well-formed table towards closed
    /// ports (never a namespace: no in-sync plex can be reached) or a
    /// malformed one (`EINVAL` from the driver, whatever the card has).
    fn ns_create_mirror(&mut self) -> Result<(), String> {
        self.label += 1;
        let valid = self.rng.below(3) == 0;
        let create = self.mirror_table(valid);
        let table_ok = create.validate().is_ok();
        let nsid = if self.rng.below(6) == 0 { 7 } else { 0 };
        let reserved = if self.rng.below(6) == 0 { 1 } else { 0 };
        let req = DiaNsCreateMirror {
            nsid,
            reserved,
            create,
        };
        let how = self.buffer();
        let (r, out) = self.structured("NS_CREATE_MIRROR", DIA_IOC_NS_CREATE_MIRROR, req, how)?;
        if r.is_ok() {
            return Err(format!(
                "thread {}: NS_CREATE_MIRROR with no reachable plex made namespace {}",
                self.id, out.nsid
            ));
        }
        if how == Buffer::Good && !self.chaos {
            let refused = !table_ok || nsid != 0 || reserved != 0;
            if refused != (r == Err(libc::EINVAL)) {
                return Err(format!(
                    "thread {}: NS_CREATE_MIRROR of a {} request ({:?}): {}",
                    self.id,
                    if refused { "malformed" } else { "well-formed" },
                    create.validate(),
                    r.err().map_or("success".into(), errno_name)
                ));
            }
        }
        if self.doubtful(r) {
            self.model.doubt = true;
        }
        Ok(())
    }

    /// Set Mirror Plexes on one of our namespaces (never mirrored: no
    /// mirror create succeeds, so the card refuses with Invalid Field) or
    /// on one nobody can have, with a well-formed table or a malformed one
    /// (`EINVAL` from the driver, whatever the card has). Never succeeds.
    fn ns_set_mirror(&mut self) -> Result<(), String> {
        self.label += 1;
        let valid = self.rng.below(3) == 0;
        let plexes = self.mirror_table(valid);
        let table_ok = plexes.validate().is_ok();
        let nsid = self.nsid();
        let reserved = if self.rng.below(6) == 0 { 1 } else { 0 };
        let req = DiaNsSetMirror {
            nsid,
            reserved,
            plexes,
        };
        let how = self.buffer();
        let (r, _) = self.structured("NS_SET_MIRROR", DIA_IOC_NS_SET_MIRROR, req, how)?;
        if r.is_ok() {
            return Err(format!(
                "thread {}: NS_SET_MIRROR of namespace {nsid}, not a mirror, succeeded",
                self.id
            ));
        }
        if how == Buffer::Good && !self.chaos {
            let refused = !table_ok || reserved != 0 || nsid == 0 || nsid == u32::MAX;
            // A namespace of ours is not mirrored: EINVAL from the card, or
            // EOPNOTSUPP from a card (or driver) without Set Mirror Plexes.
            let plain = self.model.ns.contains_key(&nsid) && !self.model.doubt;
            let ok = if refused {
                r == Err(libc::EINVAL)
            } else if plain {
                matches!(r, Err(libc::EINVAL | libc::EOPNOTSUPP))
            } else {
                true
            };
            if !ok {
                return Err(format!(
                    "thread {}: NS_SET_MIRROR of nsid {nsid} reserved {reserved}, a {} table ({:?}): {}",
                    self.id,
                    if table_ok { "well-formed" } else { "malformed" },
                    plexes.validate(),
                    r.err().map_or("success".into(), errno_name)
                ));
            }
        }
        if self.doubtful(r) {
            self.model.doubt = true;
        }
        Ok(())
    }

    fn ns_delete(&mut self) -> Result<(), String> {
        let nsid = self.nsid();
        let flags = self.rng.pick(&[0, 0, 0, 0, 1]);
        let how = self.buffer();
        let (r, _) =
            self.structured("NS_DELETE", DIA_IOC_NS_DELETE, DiaNsId { nsid, flags }, how)?;
        match r {
            Ok(_) => {
                if self.model.ns.remove(&nsid).is_none() && !self.chaos {
                    return Err(format!(
                        "thread {}: NS_DELETE of {nsid}, not ours, succeeded",
                        self.id
                    ));
                }
            }
            Err(e)
                if self.model.ns.get(&nsid) == Some(&false)
                    && !self.chaos
                    && how == Buffer::Good
                    && flags == 0 =>
            {
                return Err(format!(
                    "thread {}: NS_DELETE of our detached {nsid}: {}",
                    self.id,
                    errno_name(e)
                ));
            }
            Err(_) if self.doubtful(r) => {
                // The card may have deleted it before it died: the id is no
                // longer ours (a later create, here or in another thread,
                // may hand it out again), and the end may not find it.
                self.model.doubt = true;
                if self.model.ns.remove(&nsid).is_some() {
                    self.model.maybe_gone_ns.insert(nsid);
                }
            }
            Err(_) => {}
        }
        Ok(())
    }

    fn ns_attach_detach(&mut self) -> Result<(), String> {
        let nsid = self.nsid();
        let attach = self.rng.below(2) == 0;
        let (what, cmd) = if attach {
            ("NS_ATTACH", DIA_IOC_NS_ATTACH)
        } else {
            ("NS_DETACH", DIA_IOC_NS_DETACH)
        };
        let flags = self.rng.pick(&[0, 0, 0, 0, 2]);
        let how = self.buffer();
        let (r, _) = self.structured(what, cmd, DiaNsId { nsid, flags }, how)?;
        if let Some(state) = self.model.ns.get_mut(&nsid) {
            match r {
                Ok(_) => *state = attach,
                Err(_) if self.doubtful(r) => self.model.doubt = true,
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn ns_query(&mut self) -> Result<(), String> {
        let nsid = self.nsid();
        let how = self.buffer();
        match self.rng.below(4) {
            0 => {
                let info = DiaNsInfo {
                    nsid,
                    ..DiaNsInfo::default()
                };
                let (r, out) = self.structured("NS_INFO", DIA_IOC_NS_INFO, info, how)?;
                if how == Buffer::Good && !self.chaos && !self.model.doubt {
                    if let Some(&attached) = self.model.ns.get(&nsid) {
                        match r {
                            Ok(_) if (out.attached != 0) == attached => {}
                            Ok(_) => {
                                return Err(format!(
                                    "thread {}: NS_INFO {nsid} says attached={}, we attached={attached}",
                                    self.id, out.attached
                                ))
                            }
                            Err(e) => {
                                return Err(format!(
                                    "thread {}: NS_INFO of our {nsid}: {}",
                                    self.id,
                                    errno_name(e)
                                ))
                            }
                        }
                    }
                }
            }
            1 => {
                let st = DiaNsStats {
                    nsid,
                    ..DiaNsStats::default()
                };
                self.query("NS_STATS", DIA_IOC_NS_STATS, st, how)?;
            }
            2 => {
                let req = DiaNsQos {
                    nsid,
                    // An output field: anything but zero is refused.
                    excess_iops: if self.rng.below(4) == 0 {
                        self.rng.next() as u32
                    } else {
                        0
                    },
                    qos: self.qos(),
                };
                self.query("NS_SET_QOS", DIA_IOC_NS_SET_QOS, req, how)?;
            }
            _ if self.rng.below(4) == 0 => {
                let reserved = self.rng.pick(&[0, 0, 0, 1]);
                let req = DiaNsMirrorStatus {
                    nsid,
                    reserved,
                    ..DiaNsMirrorStatus::default()
                };
                let (r, _) =
                    self.structured("NS_MIRROR_STATUS", DIA_IOC_NS_MIRROR_STATUS, req, how)?;
                // Refused by the driver whatever the card has; our own
                // namespaces are never mirrored (no mirror create succeeds),
                // so the card refuses them.
                let bad = reserved != 0 || nsid == 0 || nsid == u32::MAX;
                let plain = self.model.ns.contains_key(&nsid) && !self.model.doubt;
                if (bad || plain) && how == Buffer::Good && !self.chaos && r != Err(libc::EINVAL) {
                    return Err(format!(
                        "thread {}: NS_MIRROR_STATUS of nsid {nsid} reserved {reserved}: {r:?}, not EINVAL",
                        self.id
                    ));
                }
            }
            _ => {
                let what = self.rng.below(3);
                match what {
                    0 => {
                        self.query("NS_LIST", DIA_IOC_NS_LIST, DiaNsList::default(), how)?;
                    }
                    1 => {
                        self.query("POOL_INFO", DIA_IOC_POOL_INFO, DiaPoolInfo::default(), how)?;
                    }
                    _ => {
                        self.query("IDENTIFY", DIA_IOC_IDENTIFY, DiaIdentity::default(), how)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn port_op(&mut self) -> Result<(), String> {
        let how = self.buffer();
        match self.rng.below(5) {
            0 if self.model.ports.len() < OWN_MAX => {
                let req = DiaPortCreate {
                    config: self.port_config(),
                    port: if self.rng.below(5) == 0 {
                        self.rng.next() as u32
                    } else {
                        0
                    },
                    ..DiaPortCreate::default()
                };
                let (r, out) = self.structured("PORT_CREATE", DIA_IOC_PORT_CREATE, req, how)?;
                match r {
                    Ok(_) => {
                        if !self.model.ports.insert(out.port) {
                            return Err(format!(
                                "thread {}: PORT_CREATE handed out {} twice",
                                self.id, out.port
                            ));
                        }
                    }
                    Err(_) if self.doubtful(r) => self.model.doubt = true,
                    Err(_) => {}
                }
            }
            0 | 1 => {
                let port = self.port_id();
                let flags = self.rng.pick(&[0, 0, 0, 4]);
                let (r, _) = self.structured(
                    "PORT_DELETE",
                    DIA_IOC_PORT_DELETE,
                    DiaPortId { port, flags },
                    how,
                )?;
                match r {
                    Ok(_) => {
                        if !self.model.ports.remove(&port) && !self.chaos {
                            return Err(format!(
                                "thread {}: PORT_DELETE of {port}, not ours, succeeded",
                                self.id
                            ));
                        }
                    }
                    Err(_) if self.doubtful(r) => {
                        // It may be gone, and its id handed out again.
                        self.model.doubt = true;
                        self.model.ports.remove(&port);
                    }
                    Err(_) => {}
                }
            }
            2 => {
                let req = DiaPortSet {
                    port: self.port_id(),
                    flags: self.rng.pick(&[0, 0, 0, 8]),
                    config: self.port_config(),
                };
                self.query("PORT_SET", DIA_IOC_PORT_SET, req, how)?;
            }
            3 => {
                let info = DiaPortInfo {
                    port: self.port_id(),
                    ..DiaPortInfo::default()
                };
                self.query("PORT_INFO", DIA_IOC_PORT_INFO, info, how)?;
            }
            _ => {
                self.query("PORT_LIST", DIA_IOC_PORT_LIST, DiaPortList::default(), how)?;
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        iterations: u64,
        until: Option<Instant>,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let mut heap = vec![0u8; 1 << 16];
        for _ in 0..iterations {
            if stop.load(Ordering::Relaxed) || until.is_some_and(|t| Instant::now() > t) {
                break;
            }
            match self.rng.below(100) {
                0..=49 => self.raw(&mut heap)?,
                50..=74 => self.ns_query()?,
                75..=84 => self.port_op()?,
                85..=94 => self.ns_create()?,
                95 => self.ns_create_remote()?,
                96 => self.ns_create_mirror()?,
                97 => self.ns_delete()?,
                98 if self.rng.below(2) == 0 => self.ns_set_mirror()?,
                _ => self.ns_attach_detach()?,
            }
        }
        Ok(())
    }
}

/// Whether a request writes its answer back to the caller's buffer.
fn cmd_writes_back(cmd: u32) -> bool {
    [
        DIA_IOC_IDENTIFY,
        DIA_IOC_NS_CREATE,
        DIA_IOC_NS_CREATE_REMOTE,
        DIA_IOC_NS_CREATE_MIRROR,
        DIA_IOC_NS_INFO,
        DIA_IOC_NS_MIRROR_STATUS,
        DIA_IOC_NS_LIST,
        DIA_IOC_POOL_INFO,
        DIA_IOC_NS_STATS,
        DIA_IOC_PORT_CREATE,
        DIA_IOC_PORT_INFO,
        DIA_IOC_PORT_LIST,
    ]
    .contains(&cmd)
}

fn ns_list(dev: &Dev) -> Result<BTreeSet<u32>, String> {
    let mut list = Box::new(DiaNsList::default());
    settle(dev, DIA_IOC_NS_LIST, std::ptr::addr_of_mut!(*list) as usize)
        .map_err(|e| format!("NS_LIST: {}", errno_name(e)))?;
    let n = (list.count as usize).min(list.nsids.len());
    Ok(list.nsids[..n].iter().copied().collect())
}

fn port_list(dev: &Dev) -> Result<BTreeSet<u32>, String> {
    let mut list = Box::new(DiaPortList::default());
    settle(
        dev,
        DIA_IOC_PORT_LIST,
        std::ptr::addr_of_mut!(*list) as usize,
    )
    .map_err(|e| format!("PORT_LIST: {}", errno_name(e)))?;
    let n = (list.count as usize).min(list.ports.len());
    Ok(list.ports[..n].iter().copied().collect())
}

/// Retries a cleanup call while a restarting card answers with its errors,
/// or the driver is still adding the disk of a namespace it attaches again
/// after a reset (`EBUSY`), for up to 60 s.
fn settle(dev: &Dev, cmd: u32, arg: usize) -> Result<(), i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match dev.ioctl(cmd, arg) {
            Err(e)
                if (CHAOS_ERRNOS.contains(&e) || e == libc::EBUSY) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r.map(|_| ()),
        }
    }
}

pub(crate) fn ioctl_fuzz(args: &[String]) -> Result<(), String> {
    let iterations = flag(args, "--iterations", 1000)?;
    let threads = flag(args, "--threads", 1)?.clamp(1, 64);
    let seed = flag(args, "--seed", 1)?.max(1);
    let chaos = args.iter().any(|a| a == "--chaos");
    let seconds = flag(args, "--seconds", 0)?;
    let until = (seconds > 0).then(|| Instant::now() + Duration::from_secs(seconds));
    // Objects that exist before the run (the scenario's own) are not ours.
    let before_ns = ns_list(&Dev::open()?)?;
    let before_ports = port_list(&Dev::open()?)?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let stop = stop.clone();
        let per = iterations / threads + u64::from(t < iterations % threads);
        handles.push(std::thread::spawn(move || {
            let mut w = Worker {
                id: t,
                rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(t) | 1),
                chaos,
                dev: None,
                short: ShortBuffer::new()?,
                model: Model::default(),
                counts: Counts::new(),
                per_request: PerRequest::new(),
                label: 0,
            };
            let r = w.run(per, until, &stop);
            if r.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            Ok::<_, String>((r, w.model, w.counts, w.per_request))
        }));
    }
    let mut counts = Counts::new();
    let mut per_request = PerRequest::new();
    let mut models = Vec::new();
    let mut first_error = None;
    for h in handles {
        let (r, model, c, p) = h
            .join()
            .map_err(|_| "a fuzz thread panicked".to_string())??;
        for (k, v) in c {
            *counts.entry(k).or_default() += v;
        }
        for (k, (ok, err)) in p {
            let tally = per_request.entry(k).or_default();
            tally.0 += ok;
            tally.1 += err;
        }
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
        models.push(model);
    }
    let calls: u64 = counts.values().sum();
    println!(
        "{calls} calls from {threads} threads in {:.0} s:",
        started.elapsed().as_secs_f64()
    );
    for (e, n) in &counts {
        let name = if *e == 0 {
            "success".to_string()
        } else {
            errno_name(*e)
        };
        println!("{n:9} x {name}");
    }
    println!("by request (succeeded / failed):");
    for (what, (ok, err)) in &per_request {
        println!("{what:>12} {ok:9} / {err}");
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    check_and_clean(&models, &before_ns, &before_ports, chaos)?;
    println!("ok: {calls} ioctls, the lists match what succeeded, all cleaned up");
    Ok(())
}

/// Compares the driver's lists with the threads' models, then deletes what
/// the run created and checks the card is as it was.
fn check_and_clean(
    models: &[Model],
    before_ns: &BTreeSet<u32>,
    before_ports: &BTreeSet<u32>,
    chaos: bool,
) -> Result<(), String> {
    // After a PCI rescan the new /dev/dia may still be on its way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dev = loop {
        match Dev::open() {
            Ok(d) => break d,
            Err(e) if Instant::now() > deadline => return Err(format!("{e} for 60 s")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let confirmed_ns: BTreeSet<u32> = models.iter().flat_map(|m| m.ns.keys().copied()).collect();
    let maybe_gone: BTreeSet<u32> = models
        .iter()
        .flat_map(|m| m.maybe_gone_ns.iter().copied())
        .collect();
    let ports: BTreeSet<u32> = models
        .iter()
        .flat_map(|m| m.ports.iter().copied())
        .collect();
    let listed_ns: BTreeSet<u32> = ns_list(&dev)?.difference(before_ns).copied().collect();
    let listed_ports: BTreeSet<u32> = port_list(&dev)?.difference(before_ports).copied().collect();
    if !chaos {
        if listed_ns != confirmed_ns {
            return Err(format!(
                "the driver lists namespaces {listed_ns:?}, the calls that succeeded made {confirmed_ns:?}"
            ));
        }
        if listed_ports != ports {
            return Err(format!(
                "the driver lists ports {listed_ports:?}, the calls that succeeded made {ports:?}"
            ));
        }
        println!(
            "ok: {} namespaces and {} ports listed, as created",
            listed_ns.len(),
            listed_ports.len()
        );
    } else {
        // A namespace whose create was acknowledged survives every crash
        // and reset (unless a delete in doubt took it).
        let missing: Vec<u32> = confirmed_ns
            .difference(&listed_ns)
            .filter(|n| !maybe_gone.contains(n))
            .copied()
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "namespaces whose creation was acknowledged are gone: {missing:?}"
            ));
        }
        // Every listed namespace was made by this run (a create in doubt
        // may have happened): its label says so.
        for &nsid in &listed_ns {
            let mut info = DiaNsInfo {
                nsid,
                ..DiaNsInfo::default()
            };
            settle(&dev, DIA_IOC_NS_INFO, std::ptr::addr_of_mut!(info) as usize)
                .map_err(|e| format!("NS_INFO {nsid}: {}", errno_name(e)))?;
            let ours = info.label.starts_with(b"fuzz-") || info.label.iter().all(|&b| b == b'x');
            if !ours {
                return Err(format!(
                    "namespace {nsid} (label {:?}) was not created by this run",
                    crate::ascii(&info.label)
                ));
            }
        }
        println!(
            "ok: all {} acknowledged namespaces survived; {} listed, {} ports listed",
            confirmed_ns.len(),
            listed_ns.len(),
            listed_ports.len()
        );
    }
    for &nsid in &listed_ns {
        let mut id = DiaNsId { nsid, flags: 0 };
        let arg = std::ptr::addr_of_mut!(id) as usize;
        match settle(&dev, DIA_IOC_NS_DETACH, arg) {
            Ok(()) | Err(libc::ENOENT) | Err(libc::EINVAL) => {}
            Err(e) => return Err(format!("cleanup: NS_DETACH {nsid}: {}", errno_name(e))),
        }
        settle(&dev, DIA_IOC_NS_DELETE, arg)
            .map_err(|e| format!("cleanup: NS_DELETE {nsid}: {}", errno_name(e)))?;
    }
    for &port in &listed_ports {
        let mut id = DiaPortId { port, flags: 0 };
        settle(
            &dev,
            DIA_IOC_PORT_DELETE,
            std::ptr::addr_of_mut!(id) as usize,
        )
        .map_err(|e| format!("cleanup: PORT_DELETE {port}: {}", errno_name(e)))?;
    }
    let left_ns = ns_list(&dev)?;
    let left_ports = port_list(&dev)?;
    if &left_ns != before_ns || &left_ports != before_ports {
        return Err(format!(
            "after cleanup: namespaces {left_ns:?} ports {left_ports:?}, before the run {before_ns:?} {before_ports:?}"
        ));
    }
    Ok(())
}
