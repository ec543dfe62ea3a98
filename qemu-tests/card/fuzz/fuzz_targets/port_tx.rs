//! The port TX descriptor path: up to four ports on a card's embedded
//! switch, a driver (the fuzzer) that writes frames, raw descriptors and
//! ring registers as it likes, and engine passes in between (with time
//! moving, so rate limits throttle and refill).
//!
//! Whatever the driver does, the card must not panic, its head registers
//! stay inside their rings, and every frame a port receives comes from
//! another port on its VLAN with that port's own MAC (the switch's
//! isolation and MAC binding) and carries no VLAN tag, checked on every
//! port whose RX ring the driver has not scribbled on.

#![no_main]

use arbitrary::Arbitrary;
use dia_abi::card::{self as abi, PortConfig, PortLimits, RxDescriptor, TxDescriptor};
use dia_card_model::fuzz::NetBench;
use libfuzzer_sys::fuzz_target;

const RAM: usize = 16 << 20;
const SLOT: u64 = 4 << 20;
const TX_BUF: u64 = 0x2400;
const RX_BUF: u64 = 0x1000;
const VECTORS: u16 = 8;

fn tx_ring(slot: u64) -> u64 {
    slot * SLOT
}
fn rx_ring(slot: u64) -> u64 {
    slot * SLOT + 0x1000
}
fn tx_buf(slot: u64, i: u16) -> u64 {
    slot * SLOT + 0x1_0000 + u64::from(i) * TX_BUF
}
fn rx_buf(slot: u64, i: u16) -> u64 {
    slot * SLOT + 0x28_0000 + u64::from(i) * RX_BUF
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Vlan {
    Blue,
    Red,
    Raw(u16),
}

impl Vlan {
    fn get(self) -> u16 {
        match self {
            Self::Blue => 100,
            Self::Red => 200,
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Config {
    vlan: Vlan,
    mtu: u16,
    max_bits_per_s: u32,
    max_pps: u16,
    burst_ms: u16,
}

impl Config {
    fn get(self) -> PortConfig {
        PortConfig {
            vlan: self.vlan.get(),
            // Mostly valid: 68..=9000.
            mtu: if self.mtu > 60_000 {
                self.mtu
            } else {
                68 + self.mtu % 8933
            },
            reserved: 0,
            limits: PortLimits {
                max_bits_per_s: u64::from(self.max_bits_per_s) * 64,
                max_pps: u64::from(self.max_pps),
                burst_ms: u32::from(self.burst_ms % 12_000),
                reserved: 0,
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct PortSpec {
    id: u8,
    config: Config,
    tx_log2: u8,
    rx_log2: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Dst {
    Port(u8),
    Broadcast,
    Multicast,
    Raw([u8; 6]),
}

impl Dst {
    /// The destination MAC: a port's (of `macs`, never empty), broadcast,
    /// a multicast group or any address.
    fn mac(self, macs: &[[u8; 6]]) -> [u8; 6] {
        match self {
            Dst::Port(p) => macs[usize::from(p) % macs.len()],
            Dst::Broadcast => [0xff; 6],
            Dst::Multicast => [0x01, 0x00, 0x5e, 0, 0, 1],
            Dst::Raw(m) => m,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Frame {
    /// From the port's own MAC.
    Own {
        dst: Dst,
        ethertype: u16,
        len: u16,
        byte: u8,
    },
    /// Any bytes at all (any source MAC, tags, runts).
    Raw(Vec<u8>),
    /// From the port's own MAC, IPv4 or IPv6 with a TCP header (its data
    /// offset and flags as given) and `len` payload bytes: what TSO cuts.
    Tcp {
        dst: Dst,
        v6: bool,
        doff: u8,
        flags: u8,
        len: u16,
        byte: u8,
    },
}

/// What the first descriptor asks of the card.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Offload {
    None,
    Csum(u16, u16),
    /// `TX_TSO`: the TCP header offset and the MSS.
    Tso(u16, u16),
}

/// A guest address for a raw descriptor: mostly inside guest RAM.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    In(u32),
    Raw(u64),
}

impl Addr {
    fn get(self) -> u64 {
        match self {
            Self::In(v) => u64::from(v) % RAM as u64,
            Self::Raw(v) => v,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    Send {
        port: u8,
        frame: Frame,
        /// Descriptor boundaries (at most 8 descriptors).
        split: Vec<u16>,
        offload: Offload,
    },
    Desc {
        port: u8,
        index: u8,
        addr: Addr,
        len: u16,
        flags: u16,
        csum_start: u16,
        csum_offset: u16,
    },
    TxTail {
        port: u8,
        value: u32,
    },
    RxTail {
        port: u8,
        value: u32,
    },
    Post {
        port: u8,
        index: u8,
        addr: Addr,
        len: u16,
        status: u32,
    },
    Mask {
        port: u8,
        masked: bool,
    },
    Set {
        port: u8,
        config: Config,
    },
    Remove {
        port: u8,
    },
    Pass {
        ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    ports: Vec<PortSpec>,
    steps: Vec<Step>,
}

/// The driver's side of a port.
struct Driver {
    id: u16,
    slot: u64,
    mac: [u8; 6],
    vlan: u16,
    tx_entries: u16,
    rx_entries: u16,
    tx_tail: u16,
    rx_next: u16,
    rx_tail: u16,
    /// The RX ring holds only what this driver posted (checked on reap).
    checked: bool,
    live: bool,
}

fn pod<T: Copy, const N: usize>(v: &T) -> [u8; N] {
    assert_eq!(std::mem::size_of::<T>(), N);
    // SAFETY: the ABI descriptors are repr(C) plain data of N bytes.
    unsafe { std::ptr::read_unaligned((v as *const T).cast()) }
}

fn post_rx(bench: &NetBench, d: &Driver, i: u16) {
    let desc = RxDescriptor {
        addr: rx_buf(d.slot, i),
        len: RX_BUF as u16,
        reserved: 0,
        status: 0,
    };
    bench
        .mem()
        .write(rx_ring(d.slot) + u64::from(i) * 16, &pod::<_, 16>(&desc))
        .expect("RX ring in guest RAM");
}

/// Takes what the card delivered to checked ports, checks where it came
/// from, and posts the buffers again.
fn reap(bench: &NetBench, drivers: &mut [Driver]) {
    let senders: Vec<(u16, u16, [u8; 6])> = drivers
        .iter()
        .filter(|d| d.live)
        .map(|d| (d.id, d.vlan, d.mac))
        .collect();
    for d in drivers.iter_mut().filter(|d| d.live && d.checked) {
        loop {
            let at = rx_ring(d.slot) + u64::from(d.rx_next) * 16;
            let desc: RxDescriptor = bench.mem().read_obj(at).expect("RX ring in guest RAM");
            if desc.status & abi::RX_DONE == 0 {
                break;
            }
            assert_eq!(
                desc.addr,
                rx_buf(d.slot, d.rx_next),
                "RX descriptor address"
            );
            let len = usize::from(desc.len);
            assert!(
                (14..=RX_BUF as usize).contains(&len),
                "RX frame of {len} bytes"
            );
            let mut frame = vec![0u8; len];
            bench.mem().read(desc.addr, &mut frame).unwrap();
            let ty = u16::from_be_bytes([frame[12], frame[13]]);
            assert!(
                ty != 0x8100 && ty != 0x88a8,
                "port {} got a frame tagged {ty:#06x} from a host",
                d.id
            );
            let src: [u8; 6] = frame[6..12].try_into().unwrap();
            let from = senders.iter().find(|s| s.2 == src);
            match from {
                Some(&(id, vlan, _)) => {
                    assert_ne!(id, d.id, "port {id}'s frame came back to it");
                    assert_eq!(
                        vlan, d.vlan,
                        "port {id} on VLAN {vlan} reached port {} on VLAN {}",
                        d.id, d.vlan
                    );
                }
                None => panic!("port {} got a frame from {src:02x?}, no port's MAC", d.id),
            }
            post_rx(bench, d, d.rx_next);
            d.rx_next = (d.rx_next + 1) % d.rx_entries;
            d.rx_tail = (d.rx_tail + 1) % d.rx_entries;
            bench.write_reg(d.id, abi::PORT_RX_TAIL, u32::from(d.rx_tail));
        }
    }
}

fuzz_target!(|input: Input| {
    let mut bench = NetBench::new(RAM, VECTORS);
    let mut drivers: Vec<Driver> = Vec::new();
    for (slot, spec) in input.ports.iter().take(4).enumerate() {
        let slot = slot as u64;
        let id = u16::from(spec.id % 10);
        let tx_entries = 1u16.checked_shl(u32::from(spec.tx_log2 % 10)).unwrap_or(0);
        let rx_entries = 1u16.checked_shl(u32::from(spec.rx_log2 % 10)).unwrap_or(0);
        let cfg = spec.config.get();
        let vector = 1 + slot as u16;
        if !bench.add_port(
            id,
            cfg,
            tx_ring(slot),
            tx_entries,
            rx_ring(slot),
            rx_entries,
            vector,
        ) {
            continue;
        }
        let d = Driver {
            id,
            slot,
            mac: bench.mac(id).expect("the port exists"),
            vlan: cfg.vlan,
            tx_entries,
            rx_entries,
            tx_tail: 0,
            rx_next: 0,
            rx_tail: rx_entries - 1,
            checked: true,
            live: true,
        };
        for i in 0..rx_entries {
            post_rx(&bench, &d, i);
        }
        bench.write_reg(id, abi::PORT_RX_TAIL, u32::from(d.rx_tail));
        drivers.push(d);
    }
    if drivers.is_empty() {
        return;
    }
    let mut now = 0.0;
    let n = drivers.len();
    for step in input.steps.iter().take(64) {
        match *step {
            Step::Send {
                port,
                ref frame,
                ref split,
                offload,
            } => {
                let macs: Vec<[u8; 6]> = drivers.iter().map(|d| d.mac).collect();
                let d = &mut drivers[usize::from(port) % n];
                let bytes = match *frame {
                    Frame::Own {
                        dst,
                        ethertype,
                        len,
                        byte,
                    } => {
                        let dst = dst.mac(&macs);
                        let mut f = dst.to_vec();
                        f.extend_from_slice(&d.mac);
                        f.extend_from_slice(&ethertype.to_be_bytes());
                        f.resize(14 + usize::from(len % 9100), byte);
                        f
                    }
                    Frame::Raw(ref b) => b.iter().copied().take(9100).collect(),
                    Frame::Tcp {
                        dst,
                        v6,
                        doff,
                        flags,
                        len,
                        byte,
                    } => {
                        let dst = dst.mac(&macs);
                        let mut f = dst.to_vec();
                        f.extend_from_slice(&d.mac);
                        if v6 {
                            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 0, 6, 64]);
                            f.extend_from_slice(&[0xfd; 32]);
                        } else {
                            f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 1, 0x40, 0]);
                            f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
                        }
                        let mut tcp = [0u8; 20];
                        tcp[12] = doff << 4;
                        tcp[13] = flags;
                        f.extend_from_slice(&tcp);
                        f.resize((f.len() + usize::from(len)).min(9100), byte);
                        f
                    }
                };
                // Cut into at most 8 descriptors at the given points.
                let mut cuts: Vec<usize> = split
                    .iter()
                    .take(7)
                    .map(|&c| usize::from(c) % (bytes.len() + 1))
                    .collect();
                cuts.push(0);
                cuts.push(bytes.len());
                cuts.sort_unstable();
                cuts.dedup();
                let pieces: Vec<&[u8]> = if bytes.is_empty() {
                    vec![&bytes[..]]
                } else {
                    cuts.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
                };
                for (k, piece) in pieces.iter().enumerate() {
                    let i = d.tx_tail;
                    let addr = tx_buf(d.slot, i);
                    bench
                        .mem()
                        .write(addr, piece)
                        .expect("TX buffer in guest RAM");
                    let mut flags = 0;
                    if k + 1 == pieces.len() {
                        flags |= abi::TX_EOP;
                    }
                    let (mut cs, mut co) = (0, 0);
                    match (k, offload) {
                        (0, Offload::Csum(s, o)) => {
                            flags |= abi::TX_CSUM;
                            (cs, co) = (s, o);
                        }
                        (0, Offload::Tso(s, mss)) => {
                            flags |= abi::TX_TSO;
                            (cs, co) = (s, mss);
                        }
                        _ => {}
                    }
                    let desc = TxDescriptor {
                        addr,
                        len: piece.len() as u16,
                        flags,
                        csum_start: cs,
                        csum_offset: co,
                    };
                    bench
                        .mem()
                        .write(tx_ring(d.slot) + u64::from(i) * 16, &pod::<_, 16>(&desc))
                        .expect("TX ring in guest RAM");
                    d.tx_tail = (d.tx_tail + 1) % d.tx_entries;
                }
                bench.write_reg(d.id, abi::PORT_TX_TAIL, u32::from(d.tx_tail));
            }
            Step::Desc {
                port,
                index,
                addr,
                len,
                flags,
                csum_start,
                csum_offset,
            } => {
                let d = &drivers[usize::from(port) % n];
                let desc = TxDescriptor {
                    addr: addr.get(),
                    len,
                    flags,
                    csum_start,
                    csum_offset,
                };
                let i = u16::from(index) % d.tx_entries;
                bench
                    .mem()
                    .write(tx_ring(d.slot) + u64::from(i) * 16, &pod::<_, 16>(&desc))
                    .expect("TX ring in guest RAM");
            }
            Step::TxTail { port, value } => {
                let d = &mut drivers[usize::from(port) % n];
                bench.write_reg(d.id, abi::PORT_TX_TAIL, value);
                if value < u32::from(d.tx_entries) {
                    d.tx_tail = value as u16;
                }
            }
            Step::RxTail { port, value } => {
                let d = &mut drivers[usize::from(port) % n];
                bench.write_reg(d.id, abi::PORT_RX_TAIL, value);
                d.checked = false;
            }
            Step::Post {
                port,
                index,
                addr,
                len,
                status,
            } => {
                let d = &mut drivers[usize::from(port) % n];
                let desc = RxDescriptor {
                    addr: addr.get(),
                    len,
                    reserved: 0,
                    status,
                };
                let i = u16::from(index) % d.rx_entries;
                bench
                    .mem()
                    .write(rx_ring(d.slot) + u64::from(i) * 16, &pod::<_, 16>(&desc))
                    .expect("RX ring in guest RAM");
                d.checked = false;
            }
            Step::Mask { port, masked } => {
                let d = &drivers[usize::from(port) % n];
                bench.write_reg(d.id, abi::PORT_IRQ_MASK, u32::from(masked));
            }
            Step::Set { port, config } => {
                let d = &mut drivers[usize::from(port) % n];
                let cfg = config.get();
                if d.live && bench.reconfigure(d.id, cfg, now) {
                    d.vlan = cfg.vlan;
                }
            }
            Step::Remove { port } => {
                let d = &mut drivers[usize::from(port) % n];
                if d.live {
                    assert!(bench.remove(d.id), "a live port is removed");
                    d.live = false;
                }
            }
            Step::Pass { ms } => {
                now += f64::from(ms) / 1000.0;
                bench.pass(now);
                reap(&bench, &mut drivers);
            }
        }
    }
    bench.pass(now + 1.0);
    reap(&bench, &mut drivers);
    for d in drivers.iter().filter(|d| d.live) {
        let s = bench.stats(d.id, now + 1.0).expect("a live port has stats");
        assert!(s.tx_spoofed <= s.tx_dropped, "{s:?}");
    }
});
