//! The types of diad's HTTP/JSON API (see docs/api.md), shared by diad
//! (which serves them) and its clients (diaconfig, plugins), so each message
//! is defined once. Also the size syntax users type (`20G`).

use dia_abi::card::{lba_shift_of, QosSettings, LBA_SHIFT_MAX, LBA_SHIFT_MIN, QOS_WEIGHT_MIN};
use dia_abi::ioctl::DIA_LABEL_LEN;
use serde::{Deserialize, Serialize};

use crate::{Namespace, NetLimits};

pub use crate::network::*;

/// `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Volume name: 1-63 of `a-z 0-9 - _ .`, starting with a letter or digit.
    pub name: String,
    /// Size in bytes (a multiple of the block size).
    pub size_bytes: u64,
    /// Logical block size: 512, 1024, 2048 or 4096 (see [`lba_shift`]).
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Performance tier (default: best-effort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// In a cluster: the appliance whose card holds the data (default: one
    /// with room, this one first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a cluster: only appliances with this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// In a cluster: copies ("plexes") on this many different appliances,
    /// 1..=[`MAX_MIRRORS`] (default 1: one copy, not mirrored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<u32>,
    /// A mirrored volume: seconds a copy may stay unreachable before it is
    /// rebuilt in full on another appliance (default: never, an operator
    /// decides with `volume plex replace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_after: Option<u64>,
}

/// `POST /v1/volumes/{name}/plexes`: one more copy of a mirrored volume,
/// or (with `replace`) a copy instead of the one on that appliance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddPlex {
    /// The appliance for the new copy (default: one without a copy, with
    /// most room).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Only appliances with this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The copy (its appliance) the new one takes the place of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<String>,
}

/// Most copies of a mirrored volume (the card's plex table).
pub const MAX_MIRRORS: u32 = dia_abi::card::MIRROR_MAX_PLEXES as u32;

/// One copy of a mirrored volume, as `volume show` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexView {
    /// The appliance whose pool holds it.
    pub node: String,
    /// Its namespace on that appliance's card.
    pub nsid: u32,
    /// `in-sync`, `out-of-sync`, `resyncing`, or `new` (holds nothing of
    /// the volume yet: copied in full at the next attach).
    pub state: String,
    /// Bytes it misses (regions written while it was away), while the
    /// volume is attached and the plex is not in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_bytes: Option<u64>,
    /// Bytes resyncs copied to it so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_bytes: Option<u64>,
    /// Bytes per second of the running resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_rate: Option<u64>,
    /// Seconds the running resync still needs at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// The card's path to it (`live`, `down`, `idle`; `local` when it is
    /// in the pool of the card the volume is attached on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Times it was taken out of sync (since the volume was attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faults: Option<u64>,
}

/// A volume's block size unless told otherwise.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;

fn default_block_size() -> u32 {
    DEFAULT_BLOCK_SIZE
}

/// Where a volume is attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    /// The container (a name registered with diad, or `pid:N`).
    pub container: String,
    /// Filesystem made on the volume and mounted (`ext4`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<String>,
    /// Mount point inside the container (with `fs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

/// `POST /v1/volumes/{name}/attach`: an [`Attachment`].
pub type AttachVolume = Attachment;

/// A volume as diad reports it: desired state joined with the card's view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Name.
    pub name: String,
    /// The card namespace behind it.
    pub nsid: u32,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Bytes allocated in the pool (thin provisioning), when known.
    pub used_bytes: Option<u64>,
    /// Block device on the appliance while attached.
    pub device: Option<String>,
    /// `ready`, `missing` (in the state file, not on the card) or
    /// `card-unavailable`.
    pub status: String,
    /// The container it is attached to.
    pub attachment: Option<Attachment>,
    /// Its performance tier.
    #[serde(default)]
    pub tier: String,
    /// In a cluster: the appliance whose card holds its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// In a cluster: the appliance it is attached on, when it is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_on: Option<String>,
    /// A mirrored volume's copies (empty for a volume with one copy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plexes: Vec<PlexView>,
    /// A mirrored volume's health: `healthy` (every copy in sync),
    /// `degraded` (at least one in sync, not all) or `failed` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// A mirrored volume: seconds a copy may stay unreachable before it is
    /// rebuilt elsewhere (none: an operator decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_after: Option<u64>,
}

/// The tier every volume gets unless told otherwise.
pub const DEFAULT_TIER: &str = "best-effort";

/// A performance tier: a storage floor and ceiling every volume of the tier
/// gets for itself (0: none), and its weight in sharing spare capacity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    /// Name (same rules as volume names).
    pub name: String,
    /// Guaranteed I/Os per second per volume.
    #[serde(default)]
    pub min_iops: u64,
    /// Most I/Os per second per volume.
    #[serde(default)]
    pub max_iops: u64,
    /// Guaranteed bytes per second per volume.
    #[serde(default)]
    pub min_bps: u64,
    /// Most bytes per second per volume.
    #[serde(default)]
    pub max_bps: u64,
    /// Share of spare capacity, [`QOS_WEIGHT_MIN`] to
    /// [`dia_abi::card::QOS_WEIGHT_MAX`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Burst the ceilings allow, in milliseconds at the ceiling rate (0: the
    /// card's default, [`dia_abi::card::QOS_BURST_DEFAULT_MS`]).
    #[serde(default)]
    pub burst_ms: u32,
    /// Most bits per second a port of the tier sends (0: no limit).
    #[serde(default)]
    pub net_max_bps: u64,
    /// Most packets per second a port of the tier sends (0: no limit).
    #[serde(default)]
    pub net_max_pps: u64,
    /// Burst of the network limits, milliseconds (0: the card's default,
    /// [`dia_abi::card::PORT_BURST_DEFAULT_MS`]).
    #[serde(default)]
    pub net_burst_ms: u32,
}

fn default_weight() -> u32 {
    QOS_WEIGHT_MIN
}

/// The storage service level the card enforces for each volume of a tier.
impl From<&TierSpec> for QosSettings {
    fn from(t: &TierSpec) -> Self {
        Self {
            min_iops: t.min_iops,
            max_iops: t.max_iops,
            min_bytes_per_s: t.min_bps,
            max_bytes_per_s: t.max_bps,
            weight: t.weight,
            burst_ms: t.burst_ms,
        }
    }
}

/// The egress limits the card enforces for each port of a tier.
impl From<&TierSpec> for NetLimits {
    fn from(t: &TierSpec) -> Self {
        Self {
            max_bps: t.net_max_bps,
            max_pps: t.net_max_pps,
            burst_ms: t.net_burst_ms,
        }
    }
}

/// `GET /v1/tiers` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// The tier's definition.
    #[serde(flatten)]
    pub spec: TierSpec,
    /// Built in (cannot be deleted).
    pub builtin: bool,
    /// Volumes of this tier.
    pub volumes: Vec<String>,
    /// Ports of this tier (`container:ifname`).
    #[serde(default)]
    pub ports: Vec<String>,
}

/// `POST /v1/volumes/{name}/tier`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTier {
    /// The new tier.
    pub tier: String,
}

/// The tiers a new appliance has.
pub fn builtin_tiers() -> Vec<TierSpec> {
    let t = |name: &str, min_iops, max_iops, min_mb: u64, max_mb: u64, weight, net_mbit: u64| {
        TierSpec {
            name: name.into(),
            min_iops,
            max_iops,
            min_bps: min_mb << 20,
            max_bps: max_mb << 20,
            weight,
            burst_ms: 0,
            net_max_bps: net_mbit * 1_000_000,
            net_max_pps: 0,
            net_burst_ms: 0,
        }
    };
    vec![
        t(DEFAULT_TIER, 0, 0, 0, 0, 1, 0),
        t("silver", 500, 2000, 10, 40, 2, 500),
        t("gold", 2000, 5000, 20, 80, 4, 2000),
    ]
}

/// `GET /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeList {
    /// Volumes of the desired state.
    pub volumes: Vec<Volume>,
    /// Namespaces on the card that no volume owns (reported, never deleted).
    pub orphans: Vec<Namespace>,
}

/// `POST /v1/containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContainer {
    /// Name (same rules as volume names).
    pub name: String,
}

/// A container: a process in its own mount, network, UTS and IPC
/// namespaces, with its own /dev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// Name.
    pub name: String,
    /// Its init process.
    pub pid: u32,
    /// `running` or `gone`.
    pub status: String,
    /// Volumes attached to it.
    pub volumes: Vec<String>,
    /// Its network ports (`container:ifname`).
    #[serde(default)]
    pub ports: Vec<String>,
}

/// Longest name: a volume's name is its namespace's label, NUL padded.
pub const NAME_MAX_LEN: usize = DIA_LABEL_LEN - 1;

/// Block sizes a volume may have (the card's logical block sizes), for
/// messages: `512, 1024, 2048, 4096`.
pub fn block_sizes_allowed() -> String {
    (LBA_SHIFT_MIN..=LBA_SHIFT_MAX)
        .map(|s| (1u32 << s).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The card's `lba_shift` for a volume's block size; the error says which
/// sizes are allowed.
pub fn lba_shift(block_size: u32) -> Result<u32, String> {
    lba_shift_of(block_size).ok_or_else(|| {
        format!(
            "block size {block_size} is not allowed (allowed: {})",
            block_sizes_allowed()
        )
    })
}

/// Checks a volume or container name; the error says what is allowed.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > NAME_MAX_LEN || !first_ok || !name.chars().all(ok_char) {
        return Err(format!(
            "{what} name '{name}' is not allowed: use 1-{NAME_MAX_LEN} characters of a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Parses a size: bytes, or a number (decimals allowed) with a K, M, G, T
/// or P suffix (powers of 1024; `KiB`/`KB` spellings too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        other => {
            return Err(format!(
                "size '{text}': unknown unit '{other}' (allowed: K, M, G, T, P, e.g. 20G)"
            ))
        }
    };
    let bad = || format!("size '{text}' is not a size (examples: 4096, 512M, 20G, 1.5T)");
    if num.is_empty() {
        return Err(bad());
    }
    let bytes = if let Some((whole, frac)) = num.split_once('.') {
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        if frac.is_empty() || frac.len() > 6 || frac.contains('.') {
            return Err(bad());
        }
        let f: u64 = frac.parse().map_err(|_| bad())?;
        let scale = 10u64.pow(frac.len() as u32);
        let unit = 1u64 << shift;
        whole
            .checked_mul(unit)
            .and_then(|w| w.checked_add(f.checked_mul(unit)? / scale))
    } else {
        num.parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(1u64 << shift)
    };
    bytes.ok_or_else(|| format!("size '{text}' is too large"))
}

/// A byte count for humans: `20 GiB`, `1.5 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || (v.fract() == 0.0) {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("20G"), Ok(20 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5T"), Ok(3 << 39));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("20X")
            .unwrap_err()
            .contains("allowed: K, M, G, T, P"));
        assert!(parse_size("G").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999P").unwrap_err().contains("too large"));
    }

    #[test]
    fn sizes_format_for_humans() {
        assert_eq!(format_size(20 << 30), "20 GiB");
        assert_eq!(format_size(1536 << 10), "1.5 MiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn block_sizes_are_the_cards() {
        assert_eq!(block_sizes_allowed(), "512, 1024, 2048, 4096");
        assert_eq!(lba_shift(4096), Ok(12));
        assert!(lba_shift(8192)
            .unwrap_err()
            .contains("allowed: 512, 1024, 2048, 4096"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("volume", "web-data_1.x").is_ok());
        for bad in ["", "Web", "-x", "a b", &"x".repeat(64)] {
            let e = check_name("volume", bad).unwrap_err();
            assert!(e.contains("a-z, 0-9"), "{e}");
        }
    }
}

/// `POST /v1/cluster`: make this appliance the first of a new cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCluster {
    /// The cluster's name (same rules as volume names).
    pub name: String,
}

/// `POST /v1/cluster/join`: join the cluster an appliance belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinCluster {
    /// A member's management address (`IP` or `IP:PORT`).
    pub address: String,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's name (`None`: a lone appliance).
    pub name: Option<String>,
    /// This appliance's name.
    pub me: String,
    /// Its appliances.
    pub members: Vec<MemberStatus>,
    /// The state store: `healthy`, `no-quorum` or `unavailable`.
    pub store: String,
    /// Its etcd members.
    pub store_members: Vec<StoreMember>,
}

/// An appliance of the cluster as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Name.
    pub name: String,
    /// Management address.
    pub address: String,
    /// `up` (its diad renews its health key) or `down`.
    pub health: String,
    /// Its card's serial.
    pub serial: String,
    /// Its card's pool size.
    pub pool_bytes: u64,
    /// Bytes of volumes placed on it.
    pub promised_bytes: u64,
    /// Volumes whose data it holds.
    pub volumes: u32,
    /// Whether it runs an etcd member.
    pub etcd: bool,
}

/// An etcd member as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreMember {
    /// Its name (the appliance's).
    pub name: String,
    /// Its client URL.
    pub endpoint: String,
    /// `healthy` (answers, with a leader), `no-leader` or `unreachable`.
    pub health: String,
    /// Whether it leads.
    pub leader: bool,
}
