//! The card interface's rules as its `validate()` methods and helpers
//! state them: what the card (and the driver, and diad) accept.

use dia_abi::card::*;

#[test]
fn qos_settings_are_checked_as_the_card_does() {
    let ok = QosSettings {
        min_iops: 100,
        max_iops: 200,
        min_bytes_per_s: 1 << 20,
        max_bytes_per_s: 2 << 20,
        weight: QOS_WEIGHT_MAX,
        burst_ms: QOS_BURST_MAX_MS,
    };
    assert_eq!(ok.validate(), Ok(()));
    // Zero: no floor, no ceiling, weight 1, the default burst.
    assert_eq!(QosSettings::default().validate(), Ok(()));
    assert_eq!(QosSettings::default().burst_or_default_ms(), 50);
    let bad = |q: QosSettings| q.validate().unwrap_err();
    assert_eq!(
        bad(QosSettings { weight: 1001, ..ok }),
        QosError::Weight(1001)
    );
    assert_eq!(
        bad(QosSettings {
            burst_ms: 10_001,
            ..ok
        }),
        QosError::BurstMs(10_001)
    );
    assert_eq!(
        bad(QosSettings {
            min_iops: 300,
            ..ok
        }),
        QosError::IopsFloorAboveCeiling(300, 200)
    );
    assert_eq!(
        bad(QosSettings {
            min_bytes_per_s: 3 << 20,
            ..ok
        }),
        QosError::BytesFloorAboveCeiling(3 << 20, 2 << 20)
    );
    // A floor without a ceiling is fine.
    let floor_only = QosSettings {
        max_iops: 0,
        max_bytes_per_s: 0,
        ..ok
    };
    assert_eq!(floor_only.validate(), Ok(()));
}

#[test]
fn port_configs_are_checked_as_the_card_does() {
    let ok = PortConfig {
        vlan: VLAN_MAX,
        mtu: PORT_MTU_MAX,
        reserved: 0,
        limits: PortLimits {
            max_bits_per_s: 100_000_000,
            max_pps: 0,
            burst_ms: PORT_BURST_MAX_MS,
            reserved: 0,
        },
    };
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(PortLimits::default().burst_or_default_ms(), 10);
    let bad = |c: PortConfig| c.validate().unwrap_err();
    assert_eq!(bad(PortConfig { vlan: 0, ..ok }), PortConfigError::Vlan(0));
    assert_eq!(
        bad(PortConfig { vlan: 4095, ..ok }),
        PortConfigError::Vlan(4095)
    );
    assert_eq!(bad(PortConfig { mtu: 67, ..ok }), PortConfigError::Mtu(67));
    assert_eq!(
        bad(PortConfig { mtu: 9001, ..ok }),
        PortConfigError::Mtu(9001)
    );
    assert_eq!(
        bad(PortConfig { reserved: 1, ..ok }),
        PortConfigError::Reserved
    );
    let mut l = ok;
    l.limits.burst_ms = 10_001;
    assert_eq!(bad(l), PortConfigError::BurstMs(10_001));
    let mut l = ok;
    l.limits.reserved = 1;
    assert_eq!(bad(l), PortConfigError::Reserved);
}

#[test]
fn block_sizes_map_to_shifts() {
    assert_eq!(lba_shift_of(512), Some(9));
    assert_eq!(lba_shift_of(4096), Some(12));
    for bad in [0, 256, 1000, 8192, u32::MAX] {
        assert_eq!(lba_shift_of(bad), None, "{bad}");
    }
    assert_eq!(NAMESPACE_MAX_BYTES, 1 << 50);
}

#[test]
fn remote_namespace_creates_are_checked_as_the_card_does() {
    let target = RemoteTarget::new(
        "192.168.7.20",
        4420,
        1,
        "nqn.2026-12.io.dia:DIA-2:ns5",
        REMOTE_HEADER_DIGEST | REMOTE_DATA_DIGEST,
    )
    .unwrap();
    let ok = RemoteNamespaceCreate {
        target,
        label: [b'v'; LABEL_LEN],
        reserved: [0; 136],
    };
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(ok.target.port, 4420);
    assert_eq!(&ok.target.addr[..13], b"192.168.7.20\0");
    let bad = |f: &dyn Fn(&mut RemoteNamespaceCreate)| {
        let mut c = ok;
        f(&mut c);
        let e = c.validate().unwrap_err();
        assert_eq!(e.status(), STATUS_INVALID_FIELD);
        e
    };
    // The address: an IP literal, NUL terminated and padded.
    for addr in [
        &b"not-an-ip"[..],
        b"",
        b"10.0.0.256",
        b"fe80::1%eth0",
        b"10.0.0.1 ",
    ] {
        assert_eq!(
            bad(&|c| {
                c.target.addr = [0; REMOTE_ADDR_LEN];
                c.target.addr[..addr.len()].copy_from_slice(addr);
            }),
            RemoteTargetError::Address,
            "{addr:?}"
        );
    }
    assert_eq!(
        bad(&|c| c.target.addr = [b'1'; REMOTE_ADDR_LEN]),
        RemoteTargetError::Address,
        "no NUL"
    );
    assert_eq!(
        bad(&|c| c.target.addr[20] = b'x'),
        RemoteTargetError::Address,
        "bytes after the NUL"
    );
    // The longest IPv6 literal fits.
    let long = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    assert_eq!(long.len(), 45);
    assert!(RemoteTarget::new(long, 1, 1, "nqn.x", 0).is_ok());
    assert_eq!(bad(&|c| c.target.port = 0), RemoteTargetError::Port);
    assert_eq!(
        bad(&|c| c.target.digests = 4),
        RemoteTargetError::Digests(4)
    );
    assert_eq!(bad(&|c| c.target.reserved = 1), RemoteTargetError::Reserved);
    assert_eq!(bad(&|c| c.target.nsid = 0), RemoteTargetError::Nsid(0));
    assert_eq!(
        bad(&|c| c.target.nsid = u32::MAX),
        RemoteTargetError::Nsid(u32::MAX)
    );
    assert_eq!(
        bad(&|c| c.target.subnqn = [0; NQN_FIELD_LEN]),
        RemoteTargetError::Nqn,
        "empty"
    );
    assert_eq!(
        bad(&|c| c.target.subnqn[3] = b' '),
        RemoteTargetError::Nqn,
        "a space"
    );
    assert_eq!(
        bad(&|c| c.target.subnqn[200] = b'x'),
        RemoteTargetError::Nqn,
        "bytes after the NUL"
    );
    // 223 bytes is the longest NQN; 224 is refused.
    let nqn = "n".repeat(NQN_MAX_LEN);
    assert!(RemoteTarget::new("::1", 1, 1, &nqn, 0).is_ok());
    assert_eq!(
        RemoteTarget::new("::1", 1, 1, &format!("{nqn}n"), 0),
        Err(RemoteTargetError::Nqn)
    );
    assert_eq!(
        RemoteTarget::new("::1", 1, 1, &"n".repeat(NQN_FIELD_LEN), 0),
        Err(RemoteTargetError::Nqn)
    );
    assert_eq!(bad(&|c| c.reserved[0] = 1), RemoteTargetError::Reserved);
    // The label is the owner's: anything goes.
    let mut any_label = ok;
    any_label.label = [0xff; LABEL_LEN];
    assert_eq!(any_label.validate(), Ok(()));
}

#[test]
fn identify_namespace_carries_the_remote_target_in_reserved_space() {
    let id = IdentifyNamespace::default();
    assert_eq!((id.remote, id.remote_path), (0, REMOTE_PATH_IDLE));
    assert_eq!(id.remote_target, RemoteTarget::ZERO);
    assert_eq!(std::mem::offset_of!(IdentifyNamespace, remote_path), 450);
    assert_eq!(std::mem::offset_of!(IdentifyNamespace, reserved4), 764);
    assert_eq!(std::mem::offset_of!(IdentifyNamespace, plex_record), 768);
    assert_eq!(std::mem::offset_of!(IdentifyNamespace, reserved2), 816);
    assert_eq!(id.plex_record, PlexRecord::default());
}

#[test]
fn plex_keys_depend_on_the_nqn_and_nsid_only() {
    let a = RemoteTarget::new("10.0.0.1", 4420, 1, "nqn.2026-12.io.dia:S1:ns3", 0).unwrap();
    let moved = RemoteTarget::new("10.9.9.9", 4421, 1, "nqn.2026-12.io.dia:S1:ns3", 0).unwrap();
    let other = RemoteTarget::new("10.0.0.1", 4420, 1, "nqn.2026-12.io.dia:S1:ns4", 0).unwrap();
    let ns2 = RemoteTarget::new("10.0.0.1", 4420, 2, "nqn.2026-12.io.dia:S1:ns3", 0).unwrap();
    assert_eq!(plex_key(&a), plex_key(&moved));
    assert_ne!(plex_key(&a), plex_key(&other));
    assert_ne!(plex_key(&a), plex_key(&ns2));
    assert_ne!(plex_key(&a), 0);
}
