//! `ns-create-many` and `port-create-many`: many namespaces or ports in one
//! process, each step timed on its own (the scale benchmark), so what is
//! measured is the ioctl and the device appearing, not a process start per
//! object.

use std::path::Path;
use std::time::{Duration, Instant};

use dia_abi::ioctl::{
    DiaNsCreate, DiaNsId, DiaNsInfo, DiaNsList, DiaNsStats, DiaPortCreate, DiaPortInfo,
    DiaPortList, DIA_IOC_NS_ATTACH, DIA_IOC_NS_CREATE, DIA_IOC_NS_INFO, DIA_IOC_NS_LIST,
    DIA_IOC_NS_STATS, DIA_IOC_PORT_CREATE, DIA_IOC_PORT_INFO, DIA_IOC_PORT_LIST,
};

use crate::{ascii, errno_name, parse_num, port_config, Dev};

/// How long a device may take to appear after its ioctl returned.
const APPEAR_LIMIT: Duration = Duration::from_secs(30);

/// Microseconds since `t`.
fn us(t: Instant) -> u128 {
    t.elapsed().as_micros()
}

/// Waits until `path` exists; the microseconds it took.
fn appear(path: &Path) -> Result<u128, String> {
    let t = Instant::now();
    while !path.exists() {
        if t.elapsed() > APPEAR_LIMIT {
            return Err(format!("{} did not appear", path.display()));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(us(t))
}

/// `ns-create-many COUNT BYTES`: creates COUNT namespaces of BYTES and
/// attaches each; per namespace a line `nsid=N disk=NAME create_us=..
/// attach_us=.. appear_us=..` (appear: from the attach ioctl's return
/// until /dev/NAME exists), then `total create_us=.. attach_us=..
/// appear_us=..`.
pub fn ns_create_many(args: &[String]) -> Result<(), String> {
    let count = parse_num(args.first(), "COUNT")?;
    let bytes = parse_num(args.get(1), "BYTES")?;
    let dev = Dev::open()?;
    let (mut create, mut attach, mut shown) = (0u128, 0u128, 0u128);
    for i in 0..count {
        let mut req = DiaNsCreate {
            size_bytes: bytes,
            ..DiaNsCreate::default()
        };
        let label = format!("scale-{i}");
        req.label[..label.len()].copy_from_slice(label.as_bytes());
        let t = Instant::now();
        dev.ioctl(DIA_IOC_NS_CREATE, std::ptr::addr_of_mut!(req) as usize)
            .map_err(|e| format!("ns-create #{}: {}", i + 1, errno_name(e)))?;
        let c = us(t);
        let mut id = DiaNsId {
            nsid: req.nsid,
            flags: 0,
        };
        let t = Instant::now();
        dev.ioctl(DIA_IOC_NS_ATTACH, std::ptr::addr_of_mut!(id) as usize)
            .map_err(|e| format!("ns-attach {}: {}", req.nsid, errno_name(e)))?;
        let a = us(t);
        let mut info = DiaNsInfo {
            nsid: req.nsid,
            ..DiaNsInfo::default()
        };
        dev.ioctl(DIA_IOC_NS_INFO, std::ptr::addr_of_mut!(info) as usize)
            .map_err(|e| format!("ns-info {}: {}", req.nsid, errno_name(e)))?;
        let disk = ascii(&info.disk_name);
        let s = appear(&Path::new("/dev").join(&disk))?;
        println!(
            "nsid={} disk={disk} create_us={c} attach_us={a} appear_us={s}",
            req.nsid
        );
        (create, attach, shown) = (create + c, attach + a, shown + s);
    }
    println!("total create_us={create} attach_us={attach} appear_us={shown}");
    Ok(())
}

/// `port-create-many COUNT VLAN MTU`: creates COUNT ports, two to a VLAN
/// (ports 1 and 2 on VLAN, 3 and 4 on VLAN+1, ...); per port a line
/// `port=N ifname=NAME vlan=V create_us=.. appear_us=..` (appear: until
/// /sys/class/net/NAME exists), then `total create_us=.. appear_us=..`.
pub fn port_create_many(args: &[String]) -> Result<(), String> {
    let count = parse_num(args.first(), "COUNT")?;
    let base = port_config(&args[1..])?;
    let dev = Dev::open()?;
    let (mut create, mut shown) = (0u128, 0u128);
    for i in 0..count {
        let mut config = base;
        config.vlan = base
            .vlan
            .checked_add((i / 2) as u16)
            .ok_or("VLAN out of range")?;
        let mut req = DiaPortCreate {
            config,
            ..DiaPortCreate::default()
        };
        let t = Instant::now();
        dev.ioctl(DIA_IOC_PORT_CREATE, std::ptr::addr_of_mut!(req) as usize)
            .map_err(|e| format!("port-create #{}: {}", i + 1, errno_name(e)))?;
        let c = us(t);
        let ifname = ascii(&req.ifname);
        let s = appear(&Path::new("/sys/class/net").join(&ifname))?;
        println!(
            "port={} ifname={ifname} vlan={} create_us={c} appear_us={s}",
            req.port, config.vlan
        );
        (create, shown) = (create + c, shown + s);
    }
    println!("total create_us={create} appear_us={shown}");
    Ok(())
}

/// The card's counters of every namespace (reads + writes) and every port
/// (bytes received, frames dropped for want of an RX buffer), in id order.
fn snapshot(dev: &Dev, ns: &[u32], ports: &[u32]) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(ns.len() + 2 * ports.len());
    for &nsid in ns {
        let mut st = DiaNsStats {
            nsid,
            ..DiaNsStats::default()
        };
        dev.ioctl(DIA_IOC_NS_STATS, std::ptr::addr_of_mut!(st) as usize)
            .map_err(|e| format!("ns-stats {nsid}: {}", errno_name(e)))?;
        out.push(st.stats.reads + st.stats.writes);
    }
    for &port in ports {
        let mut info = DiaPortInfo {
            port,
            ..DiaPortInfo::default()
        };
        dev.ioctl(DIA_IOC_PORT_INFO, std::ptr::addr_of_mut!(info) as usize)
            .map_err(|e| format!("port-info {port}: {}", errno_name(e)))?;
        out.push(info.stats.rx_bytes);
        out.push(info.stats.rx_dropped);
    }
    Ok(out)
}

/// `rates SECONDS`: every namespace's I/O rate and every port's receive
/// rate over one window of SECONDS, from the card's counters read twice
/// (each object's two readings the same time apart): lines `ns NSID
/// IOPS` and `port ID MBIT_PER_S RX_DROPPED` (frames the card had no RX
/// buffer for in the window), then `window_s W pass_s FIRST SECOND` (how
/// long each pass over the objects took: the caller runs this at a high
/// priority so that the passes stay short beside the load). Unlike per-job results of load
/// generators started one after the other, every object is measured over
/// the same window, while all are busy.
pub fn rates(args: &[String]) -> Result<(), String> {
    let secs = parse_num(args.first(), "SECONDS")?;
    let dev = Dev::open()?;
    let mut list = Box::new(DiaNsList::default());
    dev.ioctl(DIA_IOC_NS_LIST, std::ptr::addr_of_mut!(*list) as usize)
        .map_err(|e| format!("ns-list: {}", errno_name(e)))?;
    let ns: Vec<u32> = list.nsids[..(list.count as usize).min(list.nsids.len())].to_vec();
    let mut plist = Box::new(DiaPortList::default());
    dev.ioctl(DIA_IOC_PORT_LIST, std::ptr::addr_of_mut!(*plist) as usize)
        .map_err(|e| format!("port-list: {}", errno_name(e)))?;
    let ports: Vec<u32> = plist.ports[..(plist.count as usize).min(plist.ports.len())].to_vec();
    let t0 = Instant::now();
    let a = snapshot(&dev, &ns, &ports)?;
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_secs(secs));
    let b = snapshot(&dev, &ns, &ports)?;
    // Each object was read `window` apart (the second pass started that
    // long after the first, and both take about as long).
    let window = (t0.elapsed() - took).as_secs_f64().max(1e-3);
    // A pass much shorter than the window, or the objects' windows differ.
    println!(
        "window_s {window:.3} pass_s {:.3} {:.3}",
        took.as_secs_f64(),
        (t0.elapsed() - took - Duration::from_secs(secs)).as_secs_f64()
    );
    for (i, &nsid) in ns.iter().enumerate() {
        println!("ns {nsid} {:.0}", b[i].saturating_sub(a[i]) as f64 / window);
    }
    for (j, &port) in ports.iter().enumerate() {
        let i = ns.len() + 2 * j;
        println!(
            "port {port} {:.1} {}",
            b[i].saturating_sub(a[i]) as f64 * 8.0 / window / 1e6,
            b[i + 1].saturating_sub(a[i + 1])
        );
    }
    Ok(())
}
