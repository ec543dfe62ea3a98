//! Network ports as the test driver does them: creating a port with its
//! rings, sending and receiving frames, port commands and counters, and the
//! frames the tests send.

use dia_abi::card::{self as abi, CompletionEntry, SubmissionEntry};

use crate::driver::{pod, TestDriver, AQA, BUF};
use crate::port_ring::{rx_next, rx_tail, TxRing};

/// Vectors of a card in the network tests: admin, one I/O queue, ports.
pub(crate) const NET_VECTORS: u16 = 8;
pub(crate) const PORT_AREA: u64 = 0x40_0000;
pub(crate) const PORT_SLOT: u64 = 0x8_0000;
pub(crate) const RING_N: u16 = 16;
pub(crate) const BUF_SIZE: u64 = 0x2400;

/// The driver's view of one port.
pub(crate) struct TestPort {
    pub(crate) id: u16,
    pub(crate) mac: [u8; 6],
    pub(crate) vector: u16,
    pub(crate) base: u64,
    /// TX positions, kept as dia.ko keeps them.
    pub(crate) tx: TxRing,
    /// The RX descriptor the driver looks at next.
    pub(crate) rx_next: u16,
}

impl TestPort {
    pub(crate) fn tx_ring(&self) -> u64 {
        self.base
    }
    pub(crate) fn rx_ring(&self) -> u64 {
        self.base + 0x1000
    }
    pub(crate) fn tx_buf(&self, i: u16) -> u64 {
        self.base + 0x2000 + u64::from(i) * BUF_SIZE
    }
    pub(crate) fn rx_buf(&self, i: u16) -> u64 {
        self.base + 0x4_0000 + u64::from(i) * BUF_SIZE
    }
    pub(crate) fn reg(&self, r: usize) -> usize {
        abi::port_regs(self.id) + r
    }
}

pub(crate) fn port_create(slot: u64, vlan: u16, vector: u16) -> abi::PortCreate {
    let base = PORT_AREA + slot * PORT_SLOT;
    abi::PortCreate {
        config: abi::PortConfig {
            vlan,
            mtu: 1500,
            ..Default::default()
        },
        tx_ring: base,
        rx_ring: base + 0x1000,
        tx_entries: RING_N,
        rx_entries: RING_N,
        vector,
        ..Default::default()
    }
}

impl TestDriver {
    pub(crate) fn create_port_raw(&mut self, wanted: u16, c: &abi::PortCreate) -> CompletionEntry {
        self.mem.write(BUF, &pod::<_, 64>(c)).unwrap();
        self.submit(SubmissionEntry {
            opcode: abi::ADMIN_CREATE_PORT,
            cdw10: u32::from(wanted),
            prp1: BUF,
            ..Default::default()
        })
    }

    /// Creates a port in ring slot `slot` and posts RX buffers.
    pub(crate) fn create_port(
        &mut self,
        wanted: u16,
        slot: u64,
        vlan: u16,
        vector: u16,
    ) -> TestPort {
        let c = port_create(slot, vlan, vector);
        let cqe = self.create_port_raw(wanted, &c);
        assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS, "create port");
        let mut back = [0u8; 64];
        self.mem.read(BUF, &mut back).unwrap();
        // SAFETY: PortCreate is repr(C) plain data of 64 bytes.
        let back: abi::PortCreate = unsafe { std::ptr::read_unaligned(back.as_ptr().cast()) };
        let p = TestPort {
            id: cqe.result as u16,
            mac: back.mac,
            vector,
            base: c.tx_ring,
            tx: TxRing::new(RING_N).expect("a power-of-two ring"),
            rx_next: 0,
        };
        assert_eq!(self.bar.read32(p.reg(abi::PORT_LINK)), 1, "link up");
        assert_eq!(self.bar.read32(p.reg(abi::PORT_TX_HEAD)), 0);
        // Post every buffer but one (the tail may not catch up the head).
        for i in 0..RING_N {
            let d = abi::RxDescriptor {
                addr: p.rx_buf(i),
                len: BUF_SIZE as u16,
                reserved: 0,
                status: 0,
            };
            self.mem
                .write(p.rx_ring() + u64::from(i) * 16, &pod::<_, 16>(&d))
                .unwrap();
        }
        self.bar
            .write32(p.reg(abi::PORT_RX_TAIL), u32::from(rx_tail(0, RING_N)));
        p
    }

    pub(crate) fn port_cmd(&mut self, opcode: u8, id: u16, cfg: Option<abi::PortConfig>) -> u16 {
        if let Some(cfg) = cfg {
            self.mem.write(BUF, &pod::<_, 32>(&cfg)).unwrap();
        }
        self.submit(SubmissionEntry {
            opcode,
            cdw10: u32::from(id),
            prp1: BUF,
            ..Default::default()
        })
        .status_code()
    }

    pub(crate) fn port_stats(&mut self, id: u16) -> (u16, abi::PortStats) {
        let cqe = self.submit(SubmissionEntry {
            opcode: abi::ADMIN_GET_LOG_PAGE,
            cdw10: abi::LogPage::of_bytes(abi::LogId::PortStats, SIZE).cdw10(),
            cdw11: abi::PortStatsLog { port: id }.cdw11(),
            prp1: BUF,
            ..Default::default()
        });
        const SIZE: usize = std::mem::size_of::<abi::PortStats>();
        let mut raw = [0u8; SIZE];
        self.mem.read(BUF, &mut raw).unwrap();
        // SAFETY: PortStats is repr(C) plain data of SIZE bytes.
        let s = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        (cqe.status_code(), s)
    }

    /// Queues one frame made of `segments` (one descriptor each) and rings.
    pub(crate) fn send(&self, p: &mut TestPort, segments: &[&[u8]], csum: Option<(u16, u16)>) {
        let first = csum.map_or((0, 0, 0), |(s, o)| (abi::TX_CSUM, s, o));
        self.send_with(p, segments, first);
    }

    /// Queues one `TX_TSO` frame: TCP header at `l4`, cut at `mss`.
    pub(crate) fn send_tso(&self, p: &mut TestPort, segments: &[&[u8]], l4: u16, mss: u16) {
        self.send_with(p, segments, (abi::TX_TSO, l4, mss));
    }

    /// Queues one frame, the first descriptor with `(flags, csum_start,
    /// csum_offset)`, and rings.
    fn send_with(&self, p: &mut TestPort, segments: &[&[u8]], first: (u16, u16, u16)) {
        for (i, seg) in segments.iter().enumerate() {
            let slot = self.tx_push(p);
            self.mem.write(p.tx_buf(slot), seg).unwrap();
            let mut flags = 0;
            if i + 1 == segments.len() {
                flags |= abi::TX_EOP;
            }
            let (mut start, mut offset) = (0, 0);
            if i == 0 {
                flags |= first.0;
                (start, offset) = (first.1, first.2);
            }
            let d = abi::TxDescriptor {
                addr: p.tx_buf(slot),
                len: seg.len() as u16,
                flags,
                csum_start: start,
                csum_offset: offset,
            };
            self.mem
                .write(p.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&d))
                .unwrap();
        }
        self.tx_kick(p);
    }

    /// Hands back the TX descriptors the card has sent (by its TX head).
    pub(crate) fn tx_reclaim(&self, p: &mut TestPort) {
        let head = self.bar.read32(p.reg(abi::PORT_TX_HEAD));
        for _ in 0..p.tx.done_until(head).unwrap_or(0) {
            p.tx.pop_clean();
        }
    }

    /// Takes the next TX descriptor of `p` for a frame, reclaiming what the
    /// card has sent, and waiting (at most 5 s) while the ring is full.
    pub(crate) fn tx_push(&self, p: &mut TestPort) -> u16 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            self.tx_reclaim(p);
            if let Some(slot) = p.tx.push() {
                return slot;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "port {} TX ring stays full",
                p.id
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Tells the card about the descriptors filled since the last kick.
    pub(crate) fn tx_kick(&self, p: &TestPort) {
        self.bar
            .write32(p.reg(abi::PORT_TX_TAIL), u32::from(p.tx.tail()));
        self.ring(usize::from(p.vector));
    }

    /// The next received frame of `p`, waiting up to `ms`.
    pub(crate) fn recv(&self, p: &mut TestPort, ms: u64) -> Option<Vec<u8>> {
        let at = p.rx_ring() + u64::from(p.rx_next) * 16;
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        loop {
            let mut st = [0u8; 4];
            self.mem.read(at + 12, &mut st).unwrap();
            if u32::from_le_bytes(st) & abi::RX_DONE != 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut raw = [0u8; 16];
        self.mem.read(at, &mut raw).unwrap();
        // SAFETY: RxDescriptor is repr(C) plain data of 16 bytes.
        let d: abi::RxDescriptor = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
        let mut frame = vec![0u8; usize::from(d.len)];
        self.mem.read(d.addr, &mut frame).unwrap();
        p.rx_next = rx_next(p.rx_next, RING_N);
        Some(frame)
    }

    /// Waits until the card has sent everything queued on `p`.
    pub(crate) fn wait_tx_done(&self, p: &TestPort) {
        for _ in 0..2000 {
            if self.bar.read32(p.reg(abi::PORT_TX_HEAD)) == u32::from(p.tx.tail()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("port {} TX head never reached {}", p.id, p.tx.tail());
    }
}

pub(crate) const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame `dst, src, type` + `payload`.
pub(crate) fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(crate) fn csum_fold(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        sum += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An IPv4/UDP packet 10.0.0.1:1000 -> 10.0.0.2:2000 in an Ethernet frame,
/// with its UDP checksum field seeded with the pseudo-header sum (as Linux
/// leaves it for offload), and the pseudo header.
pub(crate) fn udp_frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let udp_len = 8 + payload.len() as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    let hc = !csum_fold(&ip, 0);
    ip[10..12].copy_from_slice(&hc.to_be_bytes());
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let mut pkt = ip;
    pkt.extend_from_slice(&1000u16.to_be_bytes());
    pkt.extend_from_slice(&2000u16.to_be_bytes());
    pkt.extend_from_slice(&udp_len.to_be_bytes());
    pkt.extend_from_slice(&csum_fold(&pseudo, 0).to_be_bytes());
    pkt.extend_from_slice(payload);
    (eth(dst, src, 0x0800, &pkt), pseudo)
}

pub(crate) fn net_card() -> TestDriver {
    let mut d = TestDriver::start_full(None, NET_VECTORS, None, Vec::new());
    assert!(d.enable(AQA));
    d
}

/// `frame` with an 802.1Q tag for `vlan`, as the uplink carries it.
pub(crate) fn tagged_frame(frame: &[u8], vlan: u16) -> Vec<u8> {
    let mut t = frame[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vlan.to_be_bytes());
    t.extend_from_slice(&frame[12..]);
    t
}

pub(crate) fn free_udp_addr() -> std::net::SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}
