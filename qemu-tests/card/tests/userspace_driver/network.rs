//! The network function: switching within a VLAN, port argument checks,
//! rate limits, MAC and VLAN enforcement, checksum and segmentation
//! offload, MAC learning, uplinks between cards, and ring wrap-around under load.

use dia_abi::card::{self as abi, SubmissionEntry};

use crate::driver::*;
use crate::port::*;
use crate::port_ring::{rx_next, rx_tail};

#[test]
fn ports_switch_frames_within_their_vlan() {
    let mut d = net_card();
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
    let id = d.read_identify(BUF);
    assert_eq!(id.max_ports, 64);
    assert_ne!(id.capabilities & abi::CARD_CAP_NETWORK, 0);

    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let mut c = d.create_port(7, 2, 200, 5);
    assert_eq!((a.id, b.id, c.id), (1, 2, 7));
    assert_eq!(&a.mac[..2], &[0x02, 0xd1]);
    assert_eq!(a.mac[5], 1);
    assert_eq!(&a.mac[..5], &b.mac[..5]);
    assert_eq!(b.mac[5], 2);

    // A UDP packet in two descriptors, checksum left to the card.
    let payload: Vec<u8> = (0..301u32).map(|i| (i * 7) as u8).collect();
    let (frame, pseudo) = udp_frame(b.mac, a.mac, &payload);
    d.send(&mut a, &[&frame[..20], &frame[20..]], Some((34, 6)));
    let got = d.recv(&mut b, 5000).expect("frame at port B");
    d.wait_irq(usize::from(b.vector));
    assert_eq!(got.len(), frame.len());
    assert_eq!(&got[..40], &frame[..40], "headers intact");
    assert_eq!(&got[42..], &frame[42..], "payload intact");
    let mut check = pseudo.clone();
    check.extend_from_slice(&got[34..]);
    assert_eq!(csum_fold(&check, 0), 0xffff, "UDP checksum right");
    assert_eq!(d.bar.read32(b.reg(abi::PORT_RX_HEAD)), 1);
    d.wait_tx_done(&a);
    assert_eq!(d.bar.read32(a.reg(abi::PORT_TX_HEAD)), 2);
    d.wait_irq(usize::from(a.vector));

    // A broadcast from A reaches B, never C on VLAN 200.
    let bcast = eth(BROADCAST, a.mac, 0x0806, &[0x11; 46]);
    d.send(&mut a, &[&bcast], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&bcast[..]));
    // B answers A by unicast (A's MAC is learned now).
    let reply = eth(a.mac, b.mac, 0x0806, &[0x22; 46]);
    d.send(&mut b, &[&reply], None);
    assert_eq!(d.recv(&mut a, 5000).as_deref(), Some(&reply[..]));
    // C's broadcast reaches neither A nor B.
    let cb = eth(BROADCAST, c.mac, 0x0806, &[0x33; 46]);
    d.send(&mut c, &[&cb], None);
    d.wait_tx_done(&c);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(d.recv(&mut c, 0).is_none(), "nothing comes back to C");
    assert!(d.recv(&mut a, 0).is_none(), "VLAN 200 leaked into A");
    assert!(d.recv(&mut b, 0).is_none(), "VLAN 200 leaked into B");
    assert_eq!(d.bar.read32(c.reg(abi::PORT_RX_HEAD)), 0);

    // Oversize (over MTU 1500 + 14) and tagged frames from the host drop.
    let big = eth(b.mac, a.mac, 0x0800, &vec![0u8; 1501]);
    d.send(&mut a, &[&big], None);
    let tagged = eth(b.mac, a.mac, 0x8100, &[0, 100, 8, 0, 1, 2, 3, 4]);
    d.send(&mut a, &[&tagged], None);
    // A bad descriptor (outside guest memory): dropped, not a crash.
    let slot = d.tx_push(&mut a);
    let bad = abi::TxDescriptor {
        addr: RAM as u64 - 10,
        len: 64,
        flags: abi::TX_EOP,
        ..Default::default()
    };
    d.mem
        .write(a.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&bad))
        .unwrap();
    d.tx_kick(&a);
    d.wait_tx_done(&a);
    let (st, sa) = d.port_stats(a.id);
    assert_eq!(st, abi::STATUS_SUCCESS);
    assert_eq!((sa.tx_packets, sa.tx_dropped), (2, 3), "{sa:?}");
    assert_eq!(sa.tx_bytes, (frame.len() + bcast.len()) as u64);
    assert_eq!((sa.rx_packets, sa.rx_bytes), (1, reply.len() as u64));
    let (_, sb) = d.port_stats(b.id);
    assert_eq!((sb.rx_packets, sb.tx_packets, sb.rx_dropped), (2, 1, 0));
    let (_, sc) = d.port_stats(c.id);
    assert_eq!((sc.rx_packets, sc.tx_packets), (0, 0));
    assert!(d.recv(&mut b, 0).is_none());

    // Set Port: B's MTU down to 500; a 1000-byte frame for it is dropped
    // and counted at B.
    let small = abi::PortConfig {
        vlan: 100,
        mtu: 500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(small)),
        abi::STATUS_SUCCESS
    );
    let mid = eth(b.mac, a.mac, 0x0800, &[5u8; 986]);
    d.send(&mut a, &[&mid], None);
    d.wait_tx_done(&a);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert_eq!(d.port_stats(b.id).1.rx_dropped, 1);
    assert!(d.recv(&mut b, 0).is_none());
    // Set Port moves B to VLAN 200: now A's broadcasts miss it, C's reach it.
    let moved = abi::PortConfig {
        vlan: 200,
        mtu: 1500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(moved)),
        abi::STATUS_SUCCESS
    );
    d.send(&mut a, &[&bcast], None);
    d.send(&mut c, &[&cb], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&cb[..]));
    assert!(d.recv(&mut b, 50).is_none());

    // Delete Port: link down, its ring untouched afterwards, gone for good.
    assert_eq!(
        d.port_cmd(abi::ADMIN_DELETE_PORT, b.id, None),
        abi::STATUS_SUCCESS
    );
    assert_eq!(d.bar.read32(b.reg(abi::PORT_LINK)), 0);
    d.send(&mut c, &[&cb], None);
    d.wait_tx_done(&c);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert!(d.recv(&mut b, 0).is_none());
    assert_eq!(
        d.port_cmd(abi::ADMIN_DELETE_PORT, b.id, None),
        abi::STATUS_INVALID_PORT
    );
    assert_eq!(d.port_stats(b.id).0, abi::STATUS_INVALID_PORT);
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, b.id, Some(moved)),
        abi::STATUS_INVALID_PORT
    );
    // Its id and vector are free again.
    let b2 = d.create_port(b.id, 1, 100, 4);
    assert_eq!(b2.mac, b.mac, "same id, same MAC");
}

#[test]
fn create_port_arguments_are_validated() {
    let mut d = TestDriver::start_full(None, 70, None, Vec::new());
    assert!(d.enable(AQA));
    // I/O CQ 1 interrupts on vector 1.
    assert_eq!(
        d.submit(create_cq(1, 16, 0x20_0000, 1)).status_code(),
        abi::STATUS_SUCCESS
    );
    let p = d.create_port(5, 0, 100, 2);
    assert_eq!(p.id, 5);
    let good = port_create(1, 100, 3);
    type Edit = fn(&mut abi::PortCreate);
    use abi::STATUS_INVALID_VECTOR as VECTOR;
    use abi::{STATUS_INVALID_FIELD as FIELD, STATUS_INVALID_PORT as PORT};
    let cases: [(&str, u16, Edit, u16); 18] = [
        ("vlan 0", 0, |c| c.config.vlan = 0, FIELD),
        ("vlan 4095", 0, |c| c.config.vlan = 4095, FIELD),
        ("mtu 67", 0, |c| c.config.mtu = 67, FIELD),
        ("mtu 9001", 0, |c| c.config.mtu = 9001, FIELD),
        ("burst", 0, |c| c.config.limits.burst_ms = 10_001, FIELD),
        ("reserved", 0, |c| c.config.reserved = 1, FIELD),
        ("reserved2", 0, |c| c.reserved2 = [0, 1], FIELD),
        ("tx align", 0, |c| c.tx_ring += 8, FIELD),
        ("rx outside", 0, |c| c.rx_ring = RAM as u64, FIELD),
        ("entries 3", 0, |c| c.tx_entries = 3, FIELD),
        ("entries 1", 0, |c| c.rx_entries = 1, FIELD),
        ("entries 512", 0, |c| c.rx_entries = 512, FIELD),
        ("vector 0", 0, |c| c.vector = 0, VECTOR),
        ("vector 70", 0, |c| c.vector = 70, VECTOR),
        ("vector of CQ 1", 0, |c| c.vector = 1, VECTOR),
        ("vector of port 5", 0, |c| c.vector = 2, VECTOR),
        ("id in use", 5, |_| {}, PORT),
        ("id 65", 65, |_| {}, PORT),
    ];
    for (what, wanted, edit, want) in cases {
        let mut c = good;
        edit(&mut c);
        let cqe = d.create_port_raw(wanted, &c);
        assert_eq!(cqe.status_code(), want, "{what}");
    }
    // CDW10 beyond u16.
    d.mem.write(BUF, &pod::<_, 64>(&good)).unwrap();
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_CREATE_PORT,
        cdw10: 0x1_0001,
        prp1: BUF,
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), abi::STATUS_INVALID_PORT);
    // An I/O CQ may not take a port's vector either.
    assert_eq!(
        d.submit(create_cq(2, 16, 0x21_0000, 2)).status_code(),
        abi::STATUS_INVALID_VECTOR
    );
    // Set Port validates like Create; stats want nsid 0.
    let bad_cfg = abi::PortConfig {
        vlan: 5000,
        mtu: 1500,
        ..Default::default()
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, 5, Some(bad_cfg)),
        abi::STATUS_INVALID_FIELD
    );
    let cqe = d.submit(SubmissionEntry {
        opcode: abi::ADMIN_GET_LOG_PAGE,
        nsid: 1,
        cdw10: abi::LogPage::of_bytes(abi::LogId::PortStats, 64).cdw10(),
        cdw11: abi::PortStatsLog { port: 5 }.cdw11(),
        prp1: BUF,
        ..Default::default()
    });
    assert_eq!(cqe.status_code(), abi::STATUS_INVALID_FIELD);
    // Fill every id: 63 more (lowest free each), then the limit.
    for i in 0..63u16 {
        let cqe = d.create_port_raw(0, &port_create(1, 100, 3 + i));
        assert_eq!(cqe.status_code(), abi::STATUS_SUCCESS, "port #{i}");
        let want = if i < 4 { i + 1 } else { i + 2 };
        assert_eq!(cqe.result, u32::from(want));
    }
    let cqe = d.create_port_raw(0, &port_create(1, 100, 66));
    assert_eq!(cqe.status_code(), abi::STATUS_PORT_LIMIT);
    // The card keeps serving.
    assert_eq!(d.identify(BUF, 0).status_code(), abi::STATUS_SUCCESS);
    assert_eq!(d.port_stats(5).0, abi::STATUS_SUCCESS);
    // A controller reset deletes every port; the same ids come back.
    d.disable();
    assert_eq!(d.bar.read32(abi::port_regs(5) + abi::PORT_LINK), 0);
    assert!(d.enable(AQA));
    assert_eq!(d.port_stats(5).0, abi::STATUS_INVALID_PORT);
    let again = d.create_port(5, 0, 100, 2);
    assert_eq!((again.id, again.mac), (5, p.mac));
}

#[test]
fn rate_limited_port_keeps_its_rate() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let limits = abi::PortConfig {
        vlan: 100,
        mtu: 1500,
        reserved: 0,
        limits: abi::PortLimits {
            max_bits_per_s: 8_000_000,
            ..Default::default()
        },
    };
    assert_eq!(
        d.port_cmd(abi::ADMIN_SET_PORT, a.id, Some(limits)),
        abi::STATUS_SUCCESS
    );
    let frame = eth(b.mac, a.mac, 0x0800, &[9u8; 1500]);
    let start = std::time::Instant::now();
    // Keep A's ring full for 0.5 s.
    while start.elapsed() < std::time::Duration::from_millis(500) {
        d.tx_reclaim(&mut a);
        while a.tx.free() > 0 {
            d.send(&mut a, &[&frame], None);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let (_, s) = d.port_stats(a.id);
    let t = start.elapsed().as_secs_f64();
    let rate = 1_000_000.0; // bytes per second
    let burst = 10_000.0f64.max(1514.0);
    assert!(
        (s.tx_bytes as f64) <= rate * t + burst + 1514.0,
        "{} bytes in {t} s",
        s.tx_bytes
    );
    assert!(
        (s.tx_bytes as f64) >= 0.5 * rate * 0.5,
        "{} bytes in {t} s: far below the limit",
        s.tx_bytes
    );
    assert!(s.throttled_ns > 100_000_000, "{s:?}");
    // A keeps sending what is left in its ring: let it drain, then both
    // ports' counters hold still (read one after the other, they raced).
    d.wait_tx_done(&a);
    let (_, s) = d.port_stats(a.id);
    assert_eq!(s.tx_dropped, 0, "throttled frames wait, never drop");
    // B had 15 buffers; the rest of what arrived was dropped there.
    let (_, sb) = d.port_stats(b.id);
    assert_eq!(sb.rx_packets, 15);
    assert_eq!(sb.rx_packets + sb.rx_dropped, s.tx_packets);
    let _ = d.recv(&mut b, 0);
}

/// The switch binds each port to its MAC: a frame with another source MAC
/// is dropped and counted (and cannot take the MAC over from its owner),
/// and a frame the host tagged itself never reaches another VLAN.
#[test]
fn a_port_sends_only_with_its_own_mac_and_only_on_its_vlan() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let mut c = d.create_port(0, 2, 200, 5);
    let mut e = d.create_port(0, 3, 100, 6);
    // A claims B's MAC, then a made-up one.
    let steal = eth(BROADCAST, b.mac, 0x0806, &[1u8; 46]);
    d.send(&mut a, &[&steal], None);
    let made_up = eth(
        BROADCAST,
        [0x02, 0x12, 0x34, 0x56, 0x78, 0x9a],
        0x0806,
        &[2u8; 46],
    );
    d.send(&mut a, &[&made_up], None);
    // A's guest tags frames for VLAN 200 itself (802.1Q and 802.1ad).
    for tpid in [0x8100u16, 0x88a8] {
        let mut inner = vec![0x00, 200, 0x08, 0x06];
        inner.extend_from_slice(&[3u8; 46]);
        let tagged = eth(BROADCAST, a.mac, tpid, &inner);
        d.send(&mut a, &[&tagged], None);
    }
    d.wait_tx_done(&a);
    // E's unicast to B's MAC still reaches B, and only B.
    let to_b = eth(b.mac, e.mac, 0x0800, &[4u8; 60]);
    d.send(&mut e, &[&to_b], None);
    assert_eq!(
        d.recv(&mut b, 5000).as_deref(),
        Some(&to_b[..]),
        "B's MAC was taken over"
    );
    // The counters are read under the engine's lock: every frame above
    // has been switched (or dropped) by now.
    let (st, sa) = d.port_stats(a.id);
    assert_eq!(st, abi::STATUS_SUCCESS);
    assert_eq!(
        (sa.tx_packets, sa.tx_dropped, sa.tx_spoofed),
        (0, 4, 2),
        "{sa:?}"
    );
    assert!(d.recv(&mut b, 0).is_none(), "a spoofed frame reached B");
    assert!(d.recv(&mut e, 0).is_none(), "a spoofed frame reached E");
    assert!(d.recv(&mut a, 0).is_none(), "B's unicast went to A");
    assert!(
        d.recv(&mut c, 0).is_none(),
        "a host-tagged frame reached VLAN 200"
    );
    // With its own MAC, A reaches its VLAN.
    let ok = eth(BROADCAST, a.mac, 0x0806, &[5u8; 46]);
    d.send(&mut a, &[&ok], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&ok[..]));
    assert_eq!(d.recv(&mut e, 5000).as_deref(), Some(&ok[..]));
    assert!(d.recv(&mut c, 0).is_none());
    let (_, sa) = d.port_stats(a.id);
    assert_eq!((sa.tx_packets, sa.tx_spoofed), (1, 2));
}

/// The checksum the card computes for TX_CSUM may land anywhere in the
/// frame; it must not turn an untagged frame into a tagged one behind the
/// card's tag check (found while writing the port_tx fuzz target's checks).
#[test]
fn a_checksum_offload_cannot_forge_a_vlan_tag() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    // EtherType 0x7eff over zeroes: the complemented sum from byte 12 is
    // 0x8100, stored over the EtherType itself.
    let f = eth(b.mac, a.mac, 0x7eff, &[0u8; 46]);
    d.send(&mut a, &[&f], Some((12, 0)));
    d.wait_tx_done(&a);
    let (_, sa) = d.port_stats(a.id);
    assert_eq!((sa.tx_packets, sa.tx_dropped), (0, 1), "{sa:?}");
    assert!(
        d.recv(&mut b, 0).is_none(),
        "a tagged frame left a host's port"
    );
}

/// What the switch learns is bounded per VLAN: a peer that floods one VLAN
/// with source MACs (more than the whole card used to learn) does not stop
/// another VLAN from learning, so unicast there still goes to one place.
#[test]
fn a_mac_flood_on_one_vlan_leaves_other_vlans_learning() {
    const FLOOD: u64 = 16 * 1024 + 64;
    let card_addr = free_udp_addr();
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut d = TestDriver::start_full(
        None,
        NET_VECTORS,
        Some(card_addr),
        vec![peer.local_addr().unwrap()],
    );
    assert!(d.enable(AQA));
    let flooded = d.create_port(0, 0, 100, 3);
    let mut c1 = d.create_port(0, 1, 200, 4);
    let mut c2 = d.create_port(0, 2, 200, 5);
    let tagged = |vlan: u16, dst: [u8; 6], src: [u8; 6]| {
        let mut t = Vec::new();
        t.extend_from_slice(&dst);
        t.extend_from_slice(&src);
        t.extend_from_slice(&[0x81, 0x00]);
        t.extend_from_slice(&vlan.to_be_bytes());
        t.extend_from_slice(&[0x08, 0x06]);
        t.extend_from_slice(&[6u8; 46]);
        t
    };
    // Distinct source MACs on VLAN 100, a batch at a time; each one the
    // card takes reaches the flooded port (delivered or, its ring full,
    // dropped). A datagram the host's socket lost is made up for by the
    // next batch; the deadline only turns a stall into a failure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut next = 0u32;
    let mut seen = 0;
    while seen < FLOOD {
        assert!(std::time::Instant::now() < deadline, "{seen} frames taken");
        for _ in 0..64 {
            let [_, x, y, z] = next.to_be_bytes();
            next += 1;
            let f = tagged(100, BROADCAST, [0x02, 0xee, 0, x, y, z]);
            peer.send_to(&f, card_addr).unwrap();
        }
        let mut idle = 0;
        while idle < 20 {
            let (_, s) = d.port_stats(flooded.id);
            let now_seen = s.rx_packets + s.rx_dropped;
            if now_seen == u64::from(next) {
                break;
            }
            idle = if now_seen == seen { idle + 1 } else { 0 };
            seen = now_seen;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (_, s) = d.port_stats(flooded.id);
        seen = s.rx_packets + s.rx_dropped;
    }
    // A station behind the uplink on VLAN 200 speaks: both ports hear it,
    // and the card learns where it is.
    let x = [0x02, 0xdd, 0, 0, 0, 1];
    peer.send_to(&tagged(200, BROADCAST, x), card_addr).unwrap();
    assert!(d.recv(&mut c1, 5000).is_some());
    assert!(d.recv(&mut c2, 5000).is_some());
    // C1's unicast to it goes out the uplink only, not flooded to C2.
    let to_x = eth(x, c1.mac, 0x0800, &[7u8; 60]);
    d.send(&mut c1, &[&to_x], None);
    let mut buf = [0u8; 2048];
    let (n, _) = peer.recv_from(&mut buf).expect("frame on the uplink");
    assert_eq!(&buf[..n], &tagged_frame(&to_x, 200)[..]);
    // The uplink got it in the same pass that would have flooded it.
    assert!(d.recv(&mut c2, 0).is_none(), "VLAN 200 forgot how to learn");
}

#[test]
fn two_cards_linked_by_uplinks_share_a_vlan_only() {
    let (a1, a2) = (free_udp_addr(), free_udp_addr());
    let mut c1 = TestDriver::start_full(None, NET_VECTORS, Some(a1), vec![a2]);
    // Another serial: other port MACs (each card's ports send only theirs).
    let mut c2 = TestDriver::start_card(None, NET_VECTORS, Some(a2), vec![a1], "TEST-SERIAL-8");
    assert!(c1.enable(AQA));
    assert!(c2.enable(AQA));
    let mut p1 = c1.create_port(0, 0, 100, 3);
    let mut q1 = c1.create_port(0, 1, 200, 4);
    let mut p2 = c2.create_port(0, 0, 100, 3);
    let mut q2 = c2.create_port(0, 1, 300, 4);
    assert_ne!(p1.mac, p2.mac);
    let b1 = eth(BROADCAST, p1.mac, 0x0806, &[1u8; 46]);
    c1.send(&mut p1, &[&b1], None);
    assert_eq!(c2.recv(&mut p2, 5000).as_deref(), Some(&b1[..]));
    // Unicast back to p1's (learned) MAC across the uplink.
    let u2 = eth(p1.mac, p2.mac, 0x0800, &[2u8; 100]);
    c2.send(&mut p2, &[&u2], None);
    assert_eq!(c1.recv(&mut p1, 5000).as_deref(), Some(&u2[..]));
    // VLAN 200 on card 1 does not reach VLAN 300 (or 100) on card 2.
    let b3 = eth(BROADCAST, q1.mac, 0x0806, &[3u8; 46]);
    c1.send(&mut q1, &[&b3], None);
    c1.wait_tx_done(&q1);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(c2.recv(&mut q2, 0).is_none());
    assert!(c2.recv(&mut p2, 0).is_none());
    assert!(c1.recv(&mut p1, 0).is_none());
    assert_eq!(c2.port_stats(p2.id).1.rx_packets, 1);
    assert_eq!(c1.port_stats(q1.id).1.tx_packets, 1, "sent to the uplink");
}

/// The network engine keeps moving frames while both rings wrap many times
/// over: a driver that refills TX and RX as fast as it can gets every frame
/// either delivered whole or counted as an RX drop (a NIC drops what finds
/// no posted buffer), and the counters agree. (A correctness test; how
/// fast the engine is belongs in a benchmark, not here. The deadline only
/// turns a stall into a failure instead of a hang.)
#[test]
fn engine_keeps_moving_frames_across_ring_wraps() {
    const FRAMES: u64 = 2000;
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let frame = eth(b.mac, a.mac, 0x0800, &[7u8; 50]);
    // Learn B's MAC so A's frames go to B only.
    let hello = eth(a.mac, b.mac, 0x0800, &[0u8; 50]);
    d.send(&mut b, &[&hello], None);
    assert!(d.recv(&mut a, 5000).is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (mut sent, mut received, mut dropped) = (0u64, 0u64, 0u64);
    while received + dropped < FRAMES {
        assert!(
            std::time::Instant::now() < deadline,
            "stalled: {sent} frames sent, {received} received, {dropped} dropped"
        );
        d.tx_reclaim(&mut a);
        let mut queued = false;
        while sent < FRAMES {
            let Some(slot) = a.tx.push() else {
                break;
            };
            let desc = abi::TxDescriptor {
                addr: a.tx_buf(slot),
                len: frame.len() as u16,
                flags: abi::TX_EOP,
                ..Default::default()
            };
            d.mem.write(a.tx_buf(slot), &frame).unwrap();
            d.mem
                .write(a.tx_ring() + u64::from(slot) * 16, &pod::<_, 16>(&desc))
                .unwrap();
            sent += 1;
            queued = true;
        }
        if queued {
            d.tx_kick(&a);
        }
        // Reap B's RX ring, check each frame, and give the buffers back.
        let mut reaped = false;
        loop {
            let at = b.rx_ring() + u64::from(b.rx_next) * 16;
            let mut raw = [0u8; 16];
            d.mem.read(at, &mut raw).unwrap();
            if u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]) & abi::RX_DONE == 0 {
                break;
            }
            let len = usize::from(u16::from_le_bytes([raw[8], raw[9]]));
            let mut got = vec![0u8; len];
            d.mem.read(b.rx_buf(b.rx_next), &mut got).unwrap();
            assert_eq!(got, frame, "frame {received} damaged");
            let desc = abi::RxDescriptor {
                addr: b.rx_buf(b.rx_next),
                len: BUF_SIZE as u16,
                reserved: 0,
                status: 0,
            };
            d.mem.write(at, &pod::<_, 16>(&desc)).unwrap();
            b.rx_next = rx_next(b.rx_next, RING_N);
            received += 1;
            reaped = true;
        }
        if reaped {
            let tail = rx_tail(b.rx_next, RING_N);
            d.bar.write32(b.reg(abi::PORT_RX_TAIL), u32::from(tail));
            d.ring(usize::from(b.vector));
        } else if sent == FRAMES {
            // Everything is sent and nothing came this pass: count drops.
            dropped = d.port_stats(b.id).1.rx_dropped;
        }
        std::thread::yield_now();
    }
    assert!(received > 0, "no frame delivered");
    assert_eq!(received + dropped, FRAMES);
    assert_eq!(d.port_stats(a.id).1.tx_packets, FRAMES);
    let rx = d.port_stats(b.id).1;
    assert_eq!((rx.rx_packets, rx.rx_dropped), (received, dropped));
}

#[test]
fn tx_progress_interrupts_unless_the_driver_turned_it_off() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let to_b = eth(b.mac, a.mac, 0x0806, &[0x11; 46]);
    let to_a = eth(a.mac, b.mac, 0x0806, &[0x22; 46]);
    let (va, vb) = (usize::from(a.vector), usize::from(b.vector));

    // PORT_TX_IRQ_OFF set on A: A's sent frame raises B's vector (RX) only.
    d.bar.write32(a.reg(abi::PORT_TX_IRQ_OFF), 1);
    d.send(&mut a, &[&to_b], None);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&to_b[..]));
    d.wait_irq(vb);
    d.wait_tx_done(&a);
    assert!(
        !d.irq_within(va, 300),
        "TX progress interrupted with PORT_TX_IRQ_OFF set"
    );
    // A frame for A still interrupts A.
    d.send(&mut b, &[&to_a], None);
    assert_eq!(d.recv(&mut a, 5000).as_deref(), Some(&to_a[..]));
    d.wait_irq(va);
    d.wait_tx_done(&b);
    d.irq_within(vb, 100);

    // Cleared again (as a driver does when its TX ring is full): TX progress
    // interrupts.
    d.bar.write32(a.reg(abi::PORT_TX_IRQ_OFF), 0);
    d.tx_reclaim(&mut a);
    d.send(&mut a, &[&to_b], None);
    d.wait_tx_done(&a);
    d.wait_irq(va);
    assert_eq!(d.recv(&mut b, 5000).as_deref(), Some(&to_b[..]));

    // A recreated port starts with the bit clear (the 1.5 behaviour).
    d.bar.write32(a.reg(abi::PORT_TX_IRQ_OFF), 1);
    assert_eq!(
        d.port_cmd(abi::ADMIN_DELETE_PORT, a.id, None),
        abi::STATUS_SUCCESS
    );
    let a2 = d.create_port(a.id, 0, 100, 3);
    assert_eq!(d.bar.read32(a2.reg(abi::PORT_TX_IRQ_OFF)), 0);
}

/// An IPv4/TCP frame 10.0.0.1:40000 -> 10.0.0.2:5201, sequence `seq`,
/// flags PSH|ACK|FIN, `payload`, the checksum field garbage (the card
/// computes it whole for TSO).
fn tcp_frame(dst: [u8; 6], src: [u8; 6], seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut pkt = vec![
        0x45, 0, 0, 0, 0x30, 0x39, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x19;
    tcp[16..18].copy_from_slice(&[0xde, 0xad]);
    pkt.extend_from_slice(&tcp);
    pkt.extend_from_slice(payload);
    eth(dst, src, 0x0800, &pkt)
}

#[test]
fn a_tso_frame_arrives_as_mss_segments_and_is_counted_as_them() {
    let mut d = net_card();
    let mut a = d.create_port(0, 0, 100, 3);
    let mut b = d.create_port(0, 1, 100, 4);
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 13 + i / 256) as u8).collect();
    let seq = 0xffff_e000;
    let frame = tcp_frame(b.mac, a.mac, seq, &payload);
    // In two descriptors, cut inside the TCP header.
    d.send_tso(&mut a, &[&frame[..40], &frame[40..]], 34, 1448);
    let mut data = Vec::new();
    let mut wire = 0;
    for i in 0..7u32 {
        let s = d.recv(&mut b, 5000).expect("segment at port B");
        wire += s.len() as u64;
        let n = if i < 6 { 1448 } else { 10_000 - 6 * 1448 };
        assert_eq!(s.len(), 54 + n, "segment {i}");
        assert_eq!(&s[..16], &frame[..16], "Ethernet and IP header start");
        assert_eq!(u16::from_be_bytes([s[16], s[17]]) as usize, 40 + n);
        assert_eq!(u16::from_be_bytes([s[18], s[19]]), 0x3039 + i as u16);
        assert_eq!(csum_fold(&s[14..34], 0), 0xffff, "IPv4 header checksum");
        let got_seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
        assert_eq!(got_seq, seq.wrapping_add(i * 1448));
        let want_flags = if i < 6 { 0x10 } else { 0x19 };
        assert_eq!(s[47], want_flags, "flags of segment {i}");
        let mut pseudo = s[26..34].to_vec();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((20 + n) as u16).to_be_bytes());
        pseudo.extend_from_slice(&s[34..]);
        assert_eq!(csum_fold(&pseudo, 0), 0xffff, "TCP checksum of {i}");
        data.extend_from_slice(&s[54..]);
    }
    assert_eq!(data, payload, "the payload, in order");
    d.wait_tx_done(&a);
    assert!(d.recv(&mut b, 50).is_none(), "no more segments");
    let (st, sa) = d.port_stats(a.id);
    assert_eq!(st, abi::STATUS_SUCCESS);
    assert_eq!(
        (
            sa.tx_tso_frames,
            sa.tx_tso_segments,
            sa.tx_packets,
            sa.tx_bytes
        ),
        (1, 7, 7, wire)
    );
    let (_, sb) = d.port_stats(b.id);
    assert_eq!((sb.rx_packets, sb.rx_bytes), (7, wire));

    // Malformed requests: dropped and counted, nothing arrives.
    d.send_tso(&mut a, &[&frame], 34, 0);
    d.send_tso(&mut a, &[&frame], 34, 1461);
    d.send_tso(&mut a, &[&frame], 20, 1000);
    let udp = udp_frame(b.mac, a.mac, &[1; 3000]).0;
    d.send_tso(&mut a, &[&udp], 34, 1000);
    d.wait_tx_done(&a);
    assert!(
        d.recv(&mut b, 50).is_none(),
        "a malformed TSO frame got out"
    );
    let (_, sa) = d.port_stats(a.id);
    assert_eq!((sa.tx_dropped, sa.tx_tso_frames, sa.tx_packets), (4, 1, 7));
}
