//! `dia-guest-check`: low-level checks that scenarios run inside the test
//! appliance, below libdia on purpose: raw ioctls with wrong numbers, bad
//! pointers and random arguments, to prove the driver answers each with an
//! errno and never an oops. Exit code 0 means every check held.

mod fuzz;
mod scale;

use std::ffi::CString;
use std::process::ExitCode;

use dia_abi::card::{
    MirrorNamespaceCreate, MirrorPlex, PortConfig, PortLimits, QosSettings, RemoteNamespaceCreate,
    RemoteTarget, LABEL_LEN, MIRROR_MAX_PLEXES, PLEX_IN_SYNC, PLEX_NEW, REMOTE_DATA_DIGEST,
    REMOTE_HEADER_DIGEST,
};
use dia_abi::ioctl::{
    ioc, DiaIdentity, DiaNsCreate, DiaNsCreateMirror, DiaNsCreateRemote, DiaNsId, DiaNsInfo,
    DiaNsList, DiaNsMirrorStatus, DiaNsQos, DiaNsSetMirror, DiaNsStats, DiaPoolInfo, DiaPortCreate,
    DiaPortId, DiaPortInfo, DiaPortList, DiaPortSet, DIA_IOC_IDENTIFY, DIA_IOC_NS_ATTACH,
    DIA_IOC_NS_CREATE, DIA_IOC_NS_CREATE_MIRROR, DIA_IOC_NS_CREATE_REMOTE, DIA_IOC_NS_DELETE,
    DIA_IOC_NS_DETACH, DIA_IOC_NS_INFO, DIA_IOC_NS_LIST, DIA_IOC_NS_MIRROR_STATUS,
    DIA_IOC_NS_SET_MIRROR, DIA_IOC_NS_SET_QOS, DIA_IOC_NS_STATS, DIA_IOC_POOL_INFO,
    DIA_IOC_PORT_CREATE, DIA_IOC_PORT_DELETE, DIA_IOC_PORT_INFO, DIA_IOC_PORT_LIST,
    DIA_IOC_PORT_SET, IOC_READ, IOC_WRITE,
};

const DEVICE: &str = "/dev/dia";
const USAGE: &str =
    "usage: dia-guest-check identify | ioctl-errors | ioctl-fuzz [--iterations N] [--threads T] [--seed S] [--seconds S] [--chaos]
       | ns-create BYTES [LABEL] [--lba-shift S] | ns-delete N | ns-attach N | ns-detach N
       | ns-create-remote ADDR PORT SUBNQN NSID [LABEL] [--digests]
       | ns-create-mirror LABEL GENERATION PLEX... (PLEX: ADDR,PORT,SUBNQN,NSID[,new])
       | ns-set-mirror N PLEX... (as above; a plex already in the mirror in sync, a new one ,new)
       | ns-mirror-status N
       | ns-info N | ns-stats N | ns-list | pool | ns-set-qos N --max-iops IOPS
       | port-create VLAN MTU [MAX_BPS] | port-set N VLAN MTU [MAX_BPS] | port-delete N
       | port-info N | port-list
       | ns-create-many COUNT BYTES | port-create-many COUNT VLAN MTU (each step timed)
       | rates SECONDS (every namespace's IOPS and port's Mbit/s received over one window)
       | tso IFNAME (prints `tcp-segmentation-offload: on|off`, as `ethtool -k` does)
  ns-* and port-* commands print the result, or the errno name (ENOENT, EBUSY, ...) and exit 1";

/// `tso IFNAME`: whether TCP segmentation offload is on for an interface
/// (the ethtool ioctl's ETHTOOL_GTSO; the appliance has no ethtool).
fn tso(args: &[String]) -> Result<(), String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GTSO: u32 = 0x1e;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        pad: [u8; 16],
    }
    let name = args.first().ok_or(USAGE)?;
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("{name}: name too long"));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GTSO,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `req` is a valid ifreq whose data points at `value`, both
    // live for the call.
    let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req) };
    let err = std::io::Error::last_os_error();
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(format!("{name}: ETHTOOL_GTSO: {err}"));
    }
    let on = if value.data != 0 { "on" } else { "off" };
    println!("tcp-segmentation-offload: {on}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("identify") => identify(),
        Some("ioctl-errors") => ioctl_errors(),
        Some("ioctl-fuzz") => fuzz::ioctl_fuzz(&args[1..]),
        Some("ns-create-many") => scale::ns_create_many(&args[1..]),
        Some("port-create-many") => scale::port_create_many(&args[1..]),
        Some("rates") => scale::rates(&args[1..]),
        Some("tso") => tso(&args[1..]),
        Some(cmd) if cmd.starts_with("ns-") || cmd == "pool" => namespace(cmd, &args[1..]),
        Some(cmd) if cmd.starts_with("port-") => port(cmd, &args[1..]),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dia-guest-check: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An open `/dev/dia`, closed on drop.
struct Dev(libc::c_int);

impl Dev {
    fn open() -> Result<Self, String> {
        let path = CString::new(DEVICE).map_err(|e| e.to_string())?;
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "open {DEVICE}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Self(fd))
    }

    /// Issues a raw ioctl; returns the errno on failure.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<i32, i32> {
        // The request type is c_ulong on glibc and c_int on musl: same bits.
        // SAFETY: the kernel validates `arg`; a bad pointer is the point of
        // some checks and can only produce EFAULT, never touch our memory
        // outside what we pass deliberately.
        let r = unsafe { libc::ioctl(self.0, cmd as _, arg) };
        if r < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(r)
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an fd we own.
        unsafe { libc::close(self.0) };
    }
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

fn identify() -> Result<(), String> {
    let dev = Dev::open()?;
    let mut id = DiaIdentity::default();
    dev.ioctl(DIA_IOC_IDENTIFY, std::ptr::addr_of_mut!(id) as usize)
        .map_err(|e| format!("DIA_IOC_IDENTIFY: {}", std::io::Error::from_raw_os_error(e)))?;
    println!("model:    {}", ascii(&id.model));
    println!("serial:   {}", ascii(&id.serial));
    println!("firmware: {}", ascii(&id.firmware));
    println!("abi:      {}", id.abi_version);
    println!("max_namespaces: {}", id.max_namespaces);
    println!("max_ports: {}", id.max_ports);
    println!("msix_vectors: {}", id.msix_vectors);
    println!("io_queues: {}", id.io_queues);
    Ok(())
}

fn expect_errno(what: &str, got: Result<i32, i32>, want: i32) -> Result<(), String> {
    match got {
        Err(e) if e == want => {
            println!("ok: {what}: {}", std::io::Error::from_raw_os_error(e));
            Ok(())
        }
        Err(e) => Err(format!(
            "{what}: expected {}, got {}",
            std::io::Error::from_raw_os_error(want),
            std::io::Error::from_raw_os_error(e)
        )),
        Ok(r) => Err(format!("{what}: expected an error, got success ({r})")),
    }
}

/// Two pages where the second is inaccessible: a buffer that ends early.
struct ShortBuffer {
    base: *mut libc::c_void,
    page: usize,
}

impl ShortBuffer {
    fn new() -> Result<Self, String> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|e| e.to_string())?;
        // SAFETY: anonymous private mapping of two pages; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err("mmap failed".into());
        }
        // The second page stays mapped but inaccessible: an unmapped hole
        // could be reused by another thread's mapping.
        // SAFETY: changes the protection of the second page of our own mapping.
        unsafe { libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE) };
        Ok(Self { base, page })
    }

    /// An address with only `bytes` valid bytes after it.
    fn tail(&self, bytes: usize) -> usize {
        self.base as usize + self.page - bytes
    }
}

impl Drop for ShortBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps both pages of our own mapping.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

fn ioctl_errors() -> Result<(), String> {
    let dev = Dev::open()?;
    let mut id = DiaIdentity::default();
    let good = std::ptr::addr_of_mut!(id) as usize;
    expect_errno(
        "unknown request number",
        dev.ioctl(ioc(IOC_READ, 0xee, 8), good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify number with a wrong size",
        dev.ioctl(ioc(IOC_READ, 0x01, 8), good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify number with a wrong direction",
        dev.ioctl(
            ioc(IOC_WRITE, 0x01, std::mem::size_of::<DiaIdentity>()),
            good,
        ),
        libc::ENOTTY,
    )?;
    expect_errno(
        "another driver's magic",
        dev.ioctl(0x5401, good),
        libc::ENOTTY,
    )?;
    expect_errno(
        "identify into NULL",
        dev.ioctl(DIA_IOC_IDENTIFY, 0),
        libc::EFAULT,
    )?;
    expect_errno(
        "identify into a kernel address",
        dev.ioctl(DIA_IOC_IDENTIFY, 0xffff_8880_0000_0000),
        libc::EFAULT,
    )?;
    let short = ShortBuffer::new()?;
    expect_errno(
        "identify into a 16-byte buffer",
        dev.ioctl(DIA_IOC_IDENTIFY, short.tail(16)),
        libc::EFAULT,
    )?;
    mirror_errors(&dev)?;
    dev.ioctl(DIA_IOC_IDENTIFY, good)
        .map_err(|e| format!("identify after the bad calls: errno {e}"))?;
    println!("ok: identify still works");
    Ok(())
}

/// The driver's own checks of the mirror requests: `EINVAL` before the
/// card is asked, whatever card (and card interface) is behind it.
fn mirror_errors(dev: &Dev) -> Result<(), String> {
    let mut plex = MirrorPlex::default();
    let addr = "127.0.0.1";
    plex.target.addr[..addr.len()].copy_from_slice(addr.as_bytes());
    let nqn = "nqn.2026-12.io.dia:errors";
    plex.target.subnqn[..nqn.len()].copy_from_slice(nqn.as_bytes());
    plex.target.port = 1;
    plex.target.nsid = 1;
    let mut good = MirrorNamespaceCreate {
        plex_count: 1,
        ..MirrorNamespaceCreate::default()
    };
    good.plexes[0] = plex;
    good.validate()
        .map_err(|e| format!("the base mirror table is not valid: {e:?}"))?;
    let mut broken: Vec<(&str, DiaNsCreateMirror)> = Vec::new();
    let req = |create: MirrorNamespaceCreate| DiaNsCreateMirror {
        nsid: 0,
        reserved: 0,
        create,
    };
    let mut m = good;
    m.plex_count = 0;
    broken.push(("mirror with no plex", req(m)));
    let mut m = good;
    m.plex_count = MIRROR_MAX_PLEXES as u8 + 1;
    broken.push(("mirror with 5 plexes", req(m)));
    let mut m = good;
    m.plexes[0].state = PLEX_NEW;
    broken.push(("mirror with no plex in sync", req(m)));
    let mut m = good;
    m.plex_count = 2;
    m.plexes[1] = plex;
    broken.push(("mirror with the same target twice", req(m)));
    let mut m = good;
    m.plexes[1].target.port = 4420;
    broken.push(("mirror with an entry past plex_count", req(m)));
    let mut m = good;
    m.plexes[0].target.port = 0;
    broken.push(("mirror plex with port 0", req(m)));
    let mut m = good;
    m.plexes[0].state = 9;
    broken.push(("mirror plex in state 9", req(m)));
    let mut m = good;
    m.reserved[175] = 1;
    broken.push(("mirror table with a reserved byte set", req(m)));
    let mut r = req(good);
    r.nsid = 5;
    broken.push(("mirror create with an output nsid set", r));
    let mut r = req(good);
    r.reserved = 1;
    broken.push(("mirror create with its reserved word set", r));
    for &(what, r) in &broken {
        let mut r = r;
        expect_errno(
            what,
            dev.ioctl(DIA_IOC_NS_CREATE_MIRROR, std::ptr::addr_of_mut!(r) as usize),
            libc::EINVAL,
        )?;
    }
    let short = ShortBuffer::new()?;
    expect_errno(
        "mirror create from a 1000-byte buffer",
        dev.ioctl(DIA_IOC_NS_CREATE_MIRROR, short.tail(1000)),
        libc::EFAULT,
    )?;
    // Set Mirror Plexes: the same malformed tables, then the request's own
    // fields; namespace 1 whether it exists or not, the driver refuses first.
    let mut set_broken: Vec<(String, DiaNsSetMirror)> = broken
        .iter()
        .filter(|(_, r)| r.nsid == 0 && r.reserved == 0)
        .map(|&(what, r)| {
            (
                format!("set-mirror: {what}"),
                DiaNsSetMirror {
                    nsid: 1,
                    reserved: 0,
                    plexes: r.create,
                },
            )
        })
        .collect();
    for (what, nsid, reserved) in [
        ("set-mirror of nsid 0", 0, 0),
        ("set-mirror of nsid 0xffffffff", u32::MAX, 0),
        ("set-mirror with its reserved word set", 1, 1),
    ] {
        set_broken.push((
            what.into(),
            DiaNsSetMirror {
                nsid,
                reserved,
                plexes: good,
            },
        ));
    }
    for (what, mut r) in set_broken {
        expect_errno(
            &what,
            dev.ioctl(DIA_IOC_NS_SET_MIRROR, std::ptr::addr_of_mut!(r) as usize),
            libc::EINVAL,
        )?;
    }
    expect_errno(
        "set-mirror from a 1000-byte buffer",
        dev.ioctl(DIA_IOC_NS_SET_MIRROR, short.tail(1000)),
        libc::EFAULT,
    )?;
    for (what, nsid, reserved) in [
        ("mirror status of nsid 0", 0, 0),
        ("mirror status of nsid 0xffffffff", u32::MAX, 0),
        ("mirror status with its reserved word set", 1, 1),
    ] {
        let mut st = DiaNsMirrorStatus {
            nsid,
            reserved,
            ..DiaNsMirrorStatus::default()
        };
        expect_errno(
            what,
            dev.ioctl(
                DIA_IOC_NS_MIRROR_STATUS,
                std::ptr::addr_of_mut!(st) as usize,
            ),
            libc::EINVAL,
        )?;
    }
    Ok(())
}

/// One plex from `ADDR,PORT,SUBNQN,NSID[,new]` (not validated: what is
/// wrong is for the driver to refuse).
fn parse_plex(spec: &str) -> Result<MirrorPlex, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    if !(4..=5).contains(&parts.len()) {
        return Err(format!(
            "plex {spec:?}: expected ADDR,PORT,SUBNQN,NSID[,new]"
        ));
    }
    let num = |s: &str, what: &str| s.parse::<u64>().map_err(|e| format!("plex {what}: {e}"));
    let mut target = RemoteTarget {
        port: u16::try_from(num(parts[1], "PORT")?).map_err(|_| "plex PORT: out of range")?,
        nsid: u32::try_from(num(parts[3], "NSID")?).map_err(|_| "plex NSID: out of range")?,
        ..RemoteTarget::ZERO
    };
    let a = parts[0].len().min(target.addr.len());
    target.addr[..a].copy_from_slice(&parts[0].as_bytes()[..a]);
    let q = parts[2].len().min(target.subnqn.len());
    target.subnqn[..q].copy_from_slice(&parts[2].as_bytes()[..q]);
    let state = match parts.get(4) {
        None => PLEX_IN_SYNC,
        Some(&"new") => PLEX_NEW,
        Some(other) => return Err(format!("plex state {other:?}: only \"new\"")),
    };
    Ok(MirrorPlex {
        target,
        state,
        reserved: [0; 7],
    })
}

fn flag(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .ok_or(format!("{name} needs a value"))?
            .parse()
            .map_err(|e| format!("{name}: {e}")),
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENOSPC => "ENOSPC",
        libc::EIO => "EIO",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ENODEV => "ENODEV",
        libc::EFAULT => "EFAULT",
        libc::ENOTTY => "ENOTTY",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EMEDIUMTYPE => "EMEDIUMTYPE",
        libc::ESTALE => "ESTALE",
        libc::EDQUOT => "EDQUOT",
        libc::ENOMEM => "ENOMEM",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

fn parse_num(s: Option<&String>, what: &str) -> Result<u64, String> {
    s.ok_or(format!("missing {what}"))?
        .parse()
        .map_err(|e| format!("{what}: {e}"))
}

/// Raw namespace ioctls, so scenarios can test the driver below libdia/diad.
fn namespace(cmd: &str, args: &[String]) -> Result<(), String> {
    let dev = Dev::open()?;
    let fail = |e: i32| format!("{cmd}: {}", errno_name(e));
    match cmd {
        "ns-create" => {
            let mut req = DiaNsCreate {
                size_bytes: parse_num(args.first(), "BYTES")?,
                ..DiaNsCreate::default()
            };
            if let Some(i) = args.iter().position(|a| a == "--lba-shift") {
                req.lba_shift = parse_num(args.get(i + 1), "--lba-shift")? as u32;
            }
            if let Some(label) = args.get(1).filter(|l| !l.starts_with("--")) {
                let n = label.len().min(req.label.len());
                req.label[..n].copy_from_slice(&label.as_bytes()[..n]);
            }
            dev.ioctl(DIA_IOC_NS_CREATE, std::ptr::addr_of_mut!(req) as usize)
                .map_err(fail)?;
            println!("{}", req.nsid);
        }
        "ns-create-remote" => {
            let addr = args.first().ok_or("missing ADDR")?;
            let port = parse_num(args.get(1), "PORT")?;
            let subnqn = args.get(2).ok_or("missing SUBNQN")?;
            let nsid = parse_num(args.get(3), "NSID")?;
            let digests = if args.iter().any(|a| a == "--digests") {
                REMOTE_HEADER_DIGEST | REMOTE_DATA_DIGEST
            } else {
                0
            };
            // Unchecked on purpose: the driver and the card must refuse
            // what is wrong (the scenarios send malformed targets too).
            let mut target = RemoteTarget {
                port: u16::try_from(port).map_err(|_| "PORT: out of range")?,
                digests,
                nsid: u32::try_from(nsid).map_err(|_| "NSID: out of range")?,
                ..RemoteTarget::ZERO
            };
            let a = addr.len().min(target.addr.len());
            target.addr[..a].copy_from_slice(&addr.as_bytes()[..a]);
            let q = subnqn.len().min(target.subnqn.len());
            target.subnqn[..q].copy_from_slice(&subnqn.as_bytes()[..q]);
            let mut req = DiaNsCreateRemote {
                nsid: 0,
                reserved: 0,
                create: RemoteNamespaceCreate {
                    target,
                    label: [0; LABEL_LEN],
                    reserved: [0; 136],
                },
            };
            if let Some(label) = args.get(4).filter(|l| !l.starts_with("--")) {
                let n = label.len().min(req.create.label.len());
                req.create.label[..n].copy_from_slice(&label.as_bytes()[..n]);
            }
            dev.ioctl(
                DIA_IOC_NS_CREATE_REMOTE,
                std::ptr::addr_of_mut!(req) as usize,
            )
            .map_err(fail)?;
            println!("{}", req.nsid);
        }
        "ns-create-mirror" => {
            let label = args.first().ok_or("missing LABEL")?;
            let mut req = Box::new(DiaNsCreateMirror {
                nsid: 0,
                reserved: 0,
                create: MirrorNamespaceCreate {
                    generation: parse_num(args.get(1), "GENERATION")?,
                    ..MirrorNamespaceCreate::default()
                },
            });
            let n = label.len().min(req.create.label.len());
            req.create.label[..n].copy_from_slice(&label.as_bytes()[..n]);
            let plexes = args.get(2..).unwrap_or_default();
            if plexes.len() > MIRROR_MAX_PLEXES {
                return Err(format!("at most {MIRROR_MAX_PLEXES} plexes"));
            }
            for (slot, spec) in req.create.plexes.iter_mut().zip(plexes) {
                *slot = parse_plex(spec)?;
            }
            // Zero plexes too: refusing that is the driver's job.
            req.create.plex_count = plexes.len() as u8;
            dev.ioctl(
                DIA_IOC_NS_CREATE_MIRROR,
                std::ptr::addr_of_mut!(*req) as usize,
            )
            .map_err(fail)?;
            println!("{}", req.nsid);
        }
        "ns-set-mirror" => {
            let mut req = Box::new(DiaNsSetMirror {
                nsid: parse_num(args.first(), "N")? as u32,
                reserved: 0,
                plexes: MirrorNamespaceCreate::default(),
            });
            let plexes = args.get(1..).unwrap_or_default();
            if plexes.len() > MIRROR_MAX_PLEXES {
                return Err(format!("at most {MIRROR_MAX_PLEXES} plexes"));
            }
            for (slot, spec) in req.plexes.plexes.iter_mut().zip(plexes) {
                *slot = parse_plex(spec)?;
            }
            // Zero plexes too: refusing that is the driver's job.
            req.plexes.plex_count = plexes.len() as u8;
            dev.ioctl(DIA_IOC_NS_SET_MIRROR, std::ptr::addr_of_mut!(*req) as usize)
                .map_err(fail)?;
            println!("{}", req.nsid);
        }
        "ns-mirror-status" => {
            let mut st = DiaNsMirrorStatus {
                nsid: parse_num(args.first(), "N")? as u32,
                ..DiaNsMirrorStatus::default()
            };
            dev.ioctl(
                DIA_IOC_NS_MIRROR_STATUS,
                std::ptr::addr_of_mut!(st) as usize,
            )
            .map_err(fail)?;
            let s = st.status;
            println!(
                "nsid={} generation={} regions={} plexes={}",
                st.nsid, s.generation, s.regions, s.plex_count
            );
            let n = usize::from(s.plex_count).min(s.plexes.len());
            for (i, p) in s.plexes[..n].iter().enumerate() {
                println!(
                    "plex={i} state={} path={} local={} dirty_regions={} resync_bytes={} resync_bytes_per_s={} faults={} reads={}",
                    p.state,
                    p.path,
                    p.local,
                    p.dirty_regions,
                    p.resync_bytes,
                    p.resync_bytes_per_s,
                    p.faults,
                    p.reads
                );
            }
        }
        "ns-delete" | "ns-attach" | "ns-detach" => {
            let mut id = DiaNsId {
                nsid: parse_num(args.first(), "N")? as u32,
                flags: 0,
            };
            let req = match cmd {
                "ns-delete" => DIA_IOC_NS_DELETE,
                "ns-attach" => DIA_IOC_NS_ATTACH,
                _ => DIA_IOC_NS_DETACH,
            };
            dev.ioctl(req, std::ptr::addr_of_mut!(id) as usize)
                .map_err(fail)?;
            println!("ok");
        }
        "ns-info" => {
            let mut info = DiaNsInfo {
                nsid: parse_num(args.first(), "N")? as u32,
                ..DiaNsInfo::default()
            };
            dev.ioctl(DIA_IOC_NS_INFO, std::ptr::addr_of_mut!(info) as usize)
                .map_err(fail)?;
            println!(
                "nsid={} label={} block={} blocks={} used_blocks={} attached={} disk={}",
                info.nsid,
                ascii(&info.label),
                1u64 << info.lba_shift,
                info.size_blocks,
                info.used_blocks,
                info.attached,
                ascii(&info.disk_name)
            );
        }
        "ns-stats" => {
            let mut st = DiaNsStats {
                nsid: parse_num(args.first(), "N")? as u32,
                ..DiaNsStats::default()
            };
            dev.ioctl(DIA_IOC_NS_STATS, std::ptr::addr_of_mut!(st) as usize)
                .map_err(fail)?;
            let s = st.stats;
            let hist: Vec<String> = s.latency_us_log2.iter().map(u64::to_string).collect();
            // Bucket i counts completions of under 2^i µs (fetch to completion).
            println!(
                "nsid={} reads={} writes={} other={} errors={} latency_us_log2={}",
                st.nsid,
                s.reads,
                s.writes,
                s.other,
                s.errors,
                hist.join(",")
            );
        }
        "ns-set-qos" => {
            let max_iops = match args.iter().position(|a| a == "--max-iops") {
                Some(i) => parse_num(args.get(i + 1), "--max-iops")?,
                None => return Err(USAGE.into()),
            };
            let mut req = DiaNsQos {
                nsid: parse_num(args.first(), "N")? as u32,
                excess_iops: 0,
                qos: QosSettings {
                    max_iops,
                    ..QosSettings::default()
                },
            };
            dev.ioctl(DIA_IOC_NS_SET_QOS, std::ptr::addr_of_mut!(req) as usize)
                .map_err(fail)?;
            println!("ok");
        }
        "ns-list" => {
            let mut list = Box::new(DiaNsList::default());
            dev.ioctl(DIA_IOC_NS_LIST, std::ptr::addr_of_mut!(*list) as usize)
                .map_err(fail)?;
            let ids: Vec<String> = list.nsids[..list.count as usize]
                .iter()
                .map(u32::to_string)
                .collect();
            println!("{}", ids.join(" "));
        }
        "pool" => {
            let mut p = DiaPoolInfo::default();
            dev.ioctl(DIA_IOC_POOL_INFO, std::ptr::addr_of_mut!(p) as usize)
                .map_err(fail)?;
            println!(
                "total={} used={} namespaces={} max={} chunk={}",
                p.total_bytes, p.used_bytes, p.namespaces, p.max_namespaces, p.chunk_bytes
            );
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

/// A port configuration from `VLAN MTU [MAX_BPS]` arguments (not range
/// checked: bad values are what the driver must refuse).
fn port_config(args: &[String]) -> Result<PortConfig, String> {
    Ok(PortConfig {
        vlan: parse_num(args.first(), "VLAN")? as u16,
        mtu: parse_num(args.get(1), "MTU")? as u16,
        reserved: 0,
        limits: PortLimits {
            max_bits_per_s: args
                .get(2)
                .map_or(Ok(0), |a| parse_num(Some(a), "MAX_BPS"))?,
            ..PortLimits::default()
        },
    })
}

/// Raw port ioctls, so scenarios can test the driver below libdia/diad.
fn port(cmd: &str, args: &[String]) -> Result<(), String> {
    let dev = Dev::open()?;
    let fail = |e: i32| format!("{cmd}: {}", errno_name(e));
    match cmd {
        "port-create" => {
            let mut req = DiaPortCreate {
                config: port_config(args)?,
                ..DiaPortCreate::default()
            };
            dev.ioctl(DIA_IOC_PORT_CREATE, std::ptr::addr_of_mut!(req) as usize)
                .map_err(fail)?;
            let m = req.mac;
            println!(
                "port={} ifname={} mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                req.port,
                ascii(&req.ifname),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5]
            );
        }
        "port-set" => {
            let mut req = DiaPortSet {
                port: parse_num(args.first(), "N")? as u32,
                flags: 0,
                config: port_config(&args[1.min(args.len())..])?,
            };
            dev.ioctl(DIA_IOC_PORT_SET, std::ptr::addr_of_mut!(req) as usize)
                .map_err(fail)?;
            println!("ok");
        }
        "port-delete" => {
            let mut id = DiaPortId {
                port: parse_num(args.first(), "N")? as u32,
                flags: 0,
            };
            dev.ioctl(DIA_IOC_PORT_DELETE, std::ptr::addr_of_mut!(id) as usize)
                .map_err(fail)?;
            println!("ok");
        }
        "port-info" => {
            let mut info = DiaPortInfo {
                port: parse_num(args.first(), "N")? as u32,
                ..DiaPortInfo::default()
            };
            dev.ioctl(DIA_IOC_PORT_INFO, std::ptr::addr_of_mut!(info) as usize)
                .map_err(fail)?;
            let (c, st) = (info.config, info.stats);
            println!(
                "port={} ifname={} ifindex={} link={} vlan={} mtu={} max_bps={} tx_packets={} rx_packets={} tx_dropped={} rx_dropped={}",
                info.port,
                ascii(&info.ifname),
                info.ifindex,
                info.link,
                c.vlan,
                c.mtu,
                c.limits.max_bits_per_s,
                st.tx_packets,
                st.rx_packets,
                st.tx_dropped,
                st.rx_dropped
            );
        }
        "port-list" => {
            let mut list = Box::new(DiaPortList::default());
            dev.ioctl(DIA_IOC_PORT_LIST, std::ptr::addr_of_mut!(*list) as usize)
                .map_err(fail)?;
            let n = (list.count as usize).min(list.ports.len());
            let ids: Vec<String> = list.ports[..n].iter().map(u32::to_string).collect();
            println!("{}", ids.join(" "));
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
