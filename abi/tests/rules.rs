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
