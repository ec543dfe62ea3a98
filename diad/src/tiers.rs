//! Performance tiers: named storage service levels (floor, ceiling,
//! weight) that every volume of the tier gets for itself, enforced by the
//! card per namespace. The card alone admits floors against its capacity:
//! its refusal (EDQUOT with the excess) becomes the 409 that says by how
//! much and how much the other volumes hold.

use dia::api::{check_name, format_size, Tier, TierSpec, Volume};
use dia::{NetLimits, Stats};
use dia_abi::card::{
    PortConfigError, PortLimits, QosError, QosSettings, PORT_BURST_MAX_MS, QOS_BURST_MAX_MS,
    QOS_WEIGHT_MAX, QOS_WEIGHT_MIN,
};

use crate::error::ApiError;
use crate::manager::Manager;

/// Checks a tier with the card's own rules ([`QosSettings::validate`],
/// [`PortLimits::validate`]); a weight of 0, which the card reads as 1, is
/// refused so that a tier says what it gets.
fn check_spec(t: &TierSpec) -> Result<(), ApiError> {
    check_name("tier", &t.name).map_err(ApiError::bad_request)?;
    let weight_error =
        |w| format!("weight {w} is out of range (allowed: {QOS_WEIGHT_MIN} to {QOS_WEIGHT_MAX})");
    if t.weight < QOS_WEIGHT_MIN {
        return Err(ApiError::bad_request(weight_error(t.weight)));
    }
    QosSettings::from(t).validate().map_err(|e| {
        ApiError::bad_request(match e {
            QosError::Weight(w) => weight_error(w),
            QosError::BurstMs(b) => {
                format!("burst {b} ms is out of range (allowed: 0 to {QOS_BURST_MAX_MS})")
            }
            QosError::IopsFloorAboveCeiling(min, max) => {
                format!("min-iops {min} is above max-iops {max}")
            }
            QosError::BytesFloorAboveCeiling(min, max) => format!(
                "min-bw {} is above max-bw {}",
                format_size(min),
                format_size(max)
            ),
        })
    })?;
    PortLimits::from(NetLimits::from(t))
        .validate()
        .map_err(|e| match e {
            PortConfigError::BurstMs(b) => ApiError::bad_request(format!(
                "network burst {b} ms is out of range (allowed: 0 to {PORT_BURST_MAX_MS})"
            )),
            // Limits carry no VLAN or MTU, and their reserved field is zero.
            other => ApiError::internal(format!("network limits refused: {other:?}")),
        })
}

impl Manager {
    /// Every tier, with the volumes in it.
    pub fn tiers(&self) -> Vec<Tier> {
        let builtin = dia::api::builtin_tiers();
        self.state
            .tiers
            .iter()
            .map(|t| Tier {
                spec: t.clone(),
                builtin: builtin.iter().any(|b| b.name == t.name),
                volumes: self.state.volume_names(|v| v.tier == t.name),
                ports: self.state.port_names(|p| p.tier == t.name),
            })
            .collect()
    }

    /// A tier by name; the error lists the known ones.
    pub(crate) fn tier(&self, name: &str) -> Result<&TierSpec, ApiError> {
        self.state
            .tiers
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.state.tiers.iter().map(|t| t.name.as_str()).collect();
                ApiError::not_found(format!("no tier '{name}' (tiers: {})", known.join(", ")))
            })
    }

    /// Defines a tier.
    pub fn create_tier(&mut self, spec: TierSpec) -> Result<Tier, ApiError> {
        check_spec(&spec)?;
        if self.state.tiers.iter().any(|t| t.name == spec.name) {
            return Err(ApiError::conflict(format!(
                "tier '{}' already exists",
                spec.name
            )));
        }
        let name = spec.name.clone();
        self.state.tiers.push(spec);
        if let Err(e) = self.save() {
            self.state.tiers.pop();
            return Err(e);
        }
        self.tiers()
            .into_iter()
            .find(|t| t.spec.name == name)
            .ok_or_else(|| ApiError::internal("tier vanished"))
    }

    /// Deletes a tier no volume uses (built-in tiers stay).
    pub fn delete_tier(&mut self, name: &str) -> Result<(), ApiError> {
        self.tier(name)?;
        if dia::api::builtin_tiers().iter().any(|b| b.name == name) {
            return Err(ApiError::conflict(format!(
                "tier '{name}' is built in and cannot be deleted"
            )));
        }
        let mut users = self.state.volume_names(|v| v.tier == name);
        users.extend(
            self.state
                .port_names(|p| p.tier == name)
                .into_iter()
                .map(|p| format!("port {p}")),
        );
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "tier '{name}' is in use by {}: move them to another tier first",
                users.join(", ")
            )));
        }
        self.state.tiers.retain(|t| t.name != name);
        self.save()
    }

    /// Sends a tier's settings to the card for `volume`'s namespace. The card
    /// admits the floors against its QoS capacity (counting every other
    /// namespace's floors); a refusal says by how much, with the capacity
    /// the card reports.
    pub(crate) fn apply_tier(
        &self,
        volume: &str,
        nsid: u32,
        tier: &TierSpec,
    ) -> Result<(), ApiError> {
        match self.card.set_qos(nsid, &QosSettings::from(tier)) {
            Ok(()) => Ok(()),
            Err(dia::Error::OverCapacity { excess_iops }) => {
                Err(self.over_capacity(volume, tier, u64::from(excess_iops)))
            }
            Err(e) => Err(ApiError::card(&format!("applying tier '{}'", tier.name), e)),
        }
    }

    /// The 409 for floors the card refused: `excess_iops` over its capacity
    /// (0: only the bytes per second are over, by an amount it does not say).
    fn over_capacity(&self, volume: &str, tier: &TierSpec, excess_iops: u64) -> ApiError {
        let Ok(id) = self.card.identify() else {
            return ApiError::conflict(format!(
                "tier '{}': the card cannot guarantee its floors for volume '{volume}' on top of the other volumes'",
                tier.name
            ));
        };
        if excess_iops > 0 {
            let held = (id.qos_capacity_iops + excess_iops).saturating_sub(tier.min_iops);
            ApiError::conflict(format!(
                "tier '{}' needs a floor of {} IOPS for volume '{volume}', but the card guarantees {} IOPS and other volumes hold {held}: {excess_iops} IOPS over",
                tier.name, tier.min_iops, id.qos_capacity_iops
            ))
        } else {
            ApiError::conflict(format!(
                "tier '{}' needs a floor of {}/s for volume '{volume}', but the card guarantees {}/s and the other volumes' floors leave less than that",
                tier.name,
                format_size(tier.min_bps),
                format_size(id.qos_capacity_bps)
            ))
        }
    }

    /// Moves a volume to another tier; the card applies it to the next I/O.
    pub fn set_tier(&mut self, volume: &str, tier_name: &str) -> Result<Volume, ApiError> {
        let i = self.volume_index(volume)?;
        let tier = self.tier(tier_name)?.clone();
        // The card where the volume's I/O enters enforces its tier: this
        // one for its own volumes and the ones attached here from another
        // appliance; another appliance applies it when it attaches (or,
        // for its own volumes, when its diad starts).
        if let Some(nsid) = self.local_nsid(&self.state.volumes[i]) {
            self.apply_tier(volume, nsid, &tier)?;
        }
        self.state.volumes[i].tier = tier.name.clone();
        self.save()?;
        tracing::info!(volume, tier = %tier.name, "volume tier changed");
        self.show(volume)
    }

    /// A volume's counters.
    pub fn stats(&self, volume: &str) -> Result<Stats, ApiError> {
        let v = &self.state.volumes[self.volume_index(volume)?];
        let nsid = self.local_nsid(v).ok_or_else(|| {
            ApiError::conflict(format!(
                "volume '{volume}' is neither on nor attached on this appliance: ask appliance '{}'",
                v.node.as_deref().unwrap_or_default()
            ))
        })?;
        self.card
            .stats(nsid)
            .map_err(|e| ApiError::card("reading the volume's counters", e))
    }
}

#[cfg(test)]
mod tests {
    use dia::api::CreateVolume;

    use crate::card_device::CardDevice;
    use crate::test_support::{manager, vol, LogHost};

    #[test]
    fn tiers_are_checked_admitted_and_applied() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        let names: Vec<String> = m.tiers().into_iter().map(|t| t.spec.name).collect();
        assert_eq!(names, ["best-effort", "silver", "gold"]);
        let spec = |name: &str, min_iops, max_iops| dia::api::TierSpec {
            name: name.into(),
            min_iops,
            max_iops,
            min_bps: 0,
            max_bps: 0,
            weight: 1,
            burst_ms: 0,
            net_max_bps: 0,
            net_max_pps: 0,
            net_burst_ms: 0,
        };
        let e = m.create_tier(spec("odd", 6000, 5000)).unwrap_err();
        assert!(
            e.message.contains("min-iops 6000 is above max-iops 5000"),
            "{}",
            e.message
        );
        let e = m
            .create_tier(dia::api::TierSpec {
                weight: 0,
                ..spec("w", 0, 0)
            })
            .unwrap_err();
        assert!(e.message.contains("allowed: 1 to 1000"), "{}", e.message);
        m.create_tier(spec("plat", 4000, 8000)).unwrap();
        assert_eq!(m.create_tier(spec("plat", 1, 2)).unwrap_err().status, 409);
        // Capacity 10000: two plat volumes fit, a third is 2000 over.
        for n in ["a", "b"] {
            m.create(&CreateVolume {
                tier: Some("plat".into()),
                ..vol(n, 1 << 20)
            })
            .unwrap();
        }
        assert_eq!(card.qos.lock().unwrap()[&1].min_iops, 4000);
        let e = m
            .create(&CreateVolume {
                tier: Some("plat".into()),
                ..vol("c", 1 << 20)
            })
            .unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.message.contains(
                "the card guarantees 10000 IOPS and other volumes hold 8000: 2000 IOPS over"
            ),
            "{}",
            e.message
        );
        assert!(
            card.namespaces().unwrap().len() == 2,
            "nothing created on refusal"
        );
        let e = m
            .create(&CreateVolume {
                tier: Some("nope".into()),
                ..vol("c", 1 << 20)
            })
            .unwrap_err();
        assert!(
            e.message.contains("tiers: best-effort, silver, gold, plat"),
            "{}",
            e.message
        );
        // Moving a volume re-admits it without counting itself.
        m.create(&vol("c", 1 << 20)).unwrap();
        let v = m.set_tier("a", "gold").unwrap();
        assert_eq!(v.tier, "gold");
        assert_eq!(card.qos.lock().unwrap()[&1].max_iops, 5000);
        // 2000 + 4000 + 4000 fills the card exactly; silver's 500 is over.
        m.set_tier("c", "plat").unwrap();
        let e = m
            .create(&CreateVolume {
                tier: Some("silver".into()),
                ..vol("d", 1 << 20)
            })
            .unwrap_err();
        assert!(e.message.contains("500 IOPS over"), "{}", e.message);
        assert_eq!(m.delete_tier("plat").unwrap_err().status, 409);
        assert!(m
            .delete_tier("gold")
            .unwrap_err()
            .message
            .contains("built in"));
        m.set_tier("b", "silver").unwrap();
        m.set_tier("c", "silver").unwrap();
        m.delete_tier("plat").unwrap();
    }
}
