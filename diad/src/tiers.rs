//! Performance tiers: named storage service levels (floor, ceiling,
//! weight) that every volume of the tier gets for itself, enforced by the
//! card per namespace. diad checks a floor against the card's capacity
//! before asking (so the error can say by how much and who holds the rest);
//! the card refuses too, as the authority.

use dia::api::{check_name, format_size, Tier, TierSpec, Volume};
use dia::{NetLimits, Stats};
use dia_abi::card::{
    PortConfigError, PortLimits, QosError, QosSettings, PORT_BURST_MAX_MS, QOS_BURST_MAX_MS,
    QOS_WEIGHT_MAX, QOS_WEIGHT_MIN,
};

use crate::error::ApiError;
use crate::volumes::Manager;

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
                volumes: self
                    .state
                    .volumes
                    .iter()
                    .filter(|v| v.tier == t.name)
                    .map(|v| v.name.clone())
                    .collect(),
                ports: self
                    .state
                    .ports
                    .iter()
                    .filter(|p| p.tier == t.name)
                    .map(crate::state::PortState::name)
                    .collect(),
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
        let users: Vec<String> = self
            .state
            .volumes
            .iter()
            .filter(|v| v.tier == name)
            .map(|v| v.name.clone())
            .chain(
                self.state
                    .ports
                    .iter()
                    .filter(|p| p.tier == name)
                    .map(|p| format!("port {}", p.name())),
            )
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "tier '{name}' is in use by {}: move them to another tier first",
                users.join(", ")
            )));
        }
        self.state.tiers.retain(|t| t.name != name);
        self.save()
    }

    /// Checks that the card can guarantee `tier`'s floors for `volume` on
    /// top of every other volume's.
    pub(crate) fn admit(&self, volume: &str, tier: &TierSpec) -> Result<(), ApiError> {
        if tier.min_iops == 0 && tier.min_bps == 0 {
            return Ok(());
        }
        let id = self
            .card
            .identify()
            .map_err(|e| ApiError::card("reading the card's QoS capacity", e))?;
        let (mut iops, mut bps) = (0u64, 0u64);
        for v in self.state.volumes.iter().filter(|v| v.name != volume) {
            if let Some(t) = self.state.tiers.iter().find(|t| t.name == v.tier) {
                iops = iops.saturating_add(t.min_iops);
                bps = bps.saturating_add(t.min_bps);
            }
        }
        if iops.saturating_add(tier.min_iops) > id.qos_capacity_iops {
            return Err(ApiError::conflict(format!(
                "tier '{}' needs a floor of {} IOPS for volume '{volume}', but the card guarantees {} IOPS and other volumes hold {}: {} IOPS over",
                tier.name,
                tier.min_iops,
                id.qos_capacity_iops,
                iops,
                iops + tier.min_iops - id.qos_capacity_iops
            )));
        }
        if bps.saturating_add(tier.min_bps) > id.qos_capacity_bps {
            return Err(ApiError::conflict(format!(
                "tier '{}' needs a floor of {}/s for volume '{volume}', but the card guarantees {}/s and other volumes hold {}/s: {}/s over",
                tier.name,
                format_size(tier.min_bps),
                format_size(id.qos_capacity_bps),
                format_size(bps),
                format_size(bps + tier.min_bps - id.qos_capacity_bps)
            )));
        }
        Ok(())
    }

    /// Sends a tier's settings to the card for namespace `nsid`.
    pub(crate) fn apply_tier(&self, nsid: u32, tier: &TierSpec) -> Result<(), ApiError> {
        self.card
            .set_qos(nsid, &QosSettings::from(tier))
            .map_err(|e| ApiError::card(&format!("applying tier '{}'", tier.name), e))
    }

    /// Moves a volume to another tier; the card applies it to the next I/O.
    pub fn set_tier(&mut self, volume: &str, tier_name: &str) -> Result<Volume, ApiError> {
        let i = self.volume_index(volume)?;
        let tier = self.tier(tier_name)?.clone();
        self.admit(volume, &tier)?;
        let nsid = self.state.volumes[i].nsid;
        self.apply_tier(nsid, &tier)?;
        self.state.volumes[i].tier = tier.name.clone();
        self.save()?;
        tracing::info!(volume, tier = %tier.name, "volume tier changed");
        self.show(volume)
    }

    /// A volume's counters.
    pub fn stats(&self, volume: &str) -> Result<Stats, ApiError> {
        let v = &self.state.volumes[self.volume_index(volume)?];
        self.card
            .stats(v.nsid)
            .map_err(|e| ApiError::card("reading the volume's counters", e))
    }
}
