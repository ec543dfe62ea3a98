//! The desired state diad keeps on disk (TOML). It is versioned and strict:
//! unknown fields are refused, so a typo never silently drops configuration.
//! It holds volumes (and the namespace each one is on the card) with their
//! attachments, and the containers diad started; networks and tiers join it
//! as those features land.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dia::api::{builtin_tiers, Attachment, TierSpec, DEFAULT_TIER};
use serde::{Deserialize, Serialize};

/// Default location of the state file.
pub const DEFAULT_STATE: &str = "/var/lib/dia/state.toml";
/// Format version this diad writes.
pub const STATE_VERSION: u32 = 1;

/// Everything the operator asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// Format version of the file.
    pub version: u32,
    /// Volumes, by name.
    #[serde(default)]
    pub volumes: Vec<VolumeState>,
    /// Containers diad started.
    #[serde(default)]
    pub containers: Vec<ContainerState>,
    /// Performance tiers (the built-in ones included).
    #[serde(default)]
    pub tiers: Vec<TierSpec>,
    /// Container networks.
    #[serde(default)]
    pub networks: Vec<NetworkState>,
    /// Ports given to containers (each holds its address lease).
    #[serde(default)]
    pub ports: Vec<PortState>,
    /// The appliances of the cluster (empty for a lone appliance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
}

impl Default for DesiredState {
    fn default() -> Self {
        Self {
            version: STATE_VERSION,
            volumes: Vec::new(),
            containers: Vec::new(),
            tiers: builtin_tiers(),
            networks: Vec::new(),
            ports: Vec::new(),
            members: Vec::new(),
        }
    }
}

impl DesiredState {
    /// Adds built-in tiers the file lacks (older files, new built-ins).
    fn with_builtin_tiers(mut self) -> Self {
        for t in builtin_tiers() {
            if !self.tiers.iter().any(|x| x.name == t.name) {
                self.tiers.push(t);
            }
        }
        self
    }

    /// Names of the volumes `f` picks.
    pub fn volume_names(&self, f: impl Fn(&VolumeState) -> bool) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|v| f(v))
            .map(|v| v.name.clone())
            .collect()
    }

    /// Bytes of the volumes whose data is on appliance `node`: what they
    /// may take of its pool (placement, the pool claim in etcd, status).
    pub fn promised_bytes(&self, node: &str) -> u64 {
        self.volumes
            .iter()
            .flat_map(|v| v.copies().map(move |(n, _)| (n, v.size_bytes)))
            .filter(|(n, _)| *n == Some(node))
            .map(|(_, bytes)| bytes)
            .sum()
    }

    /// Marks every volume, container and port without an appliance as
    /// `node`'s (a lone appliance's state entering a cluster).
    pub fn mark_as(&mut self, node: &str) {
        for v in &mut self.volumes {
            v.node.get_or_insert_with(|| node.to_string());
        }
        for c in &mut self.containers {
            c.node.get_or_insert_with(|| node.to_string());
        }
        for p in &mut self.ports {
            p.node.get_or_insert_with(|| node.to_string());
        }
    }

    /// Names (`container:ifname`) of the ports `f` picks.
    pub fn port_names(&self, f: impl Fn(&PortState) -> bool) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| f(p))
            .map(PortState::name)
            .collect()
    }
}

fn default_tier() -> String {
    DEFAULT_TIER.into()
}

/// A volume the operator created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeState {
    /// Name (also the namespace's label on the card).
    pub name: String,
    /// The card namespace.
    pub nsid: u32,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Performance tier.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// Where it is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// The appliance whose card holds its data (`None`: this lone
    /// appliance, before any cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// While attached on another appliance than `node` (or, mirrored, on
    /// any appliance): that appliance's remote or mirror namespace (its
    /// card's nsid) reaching the data over NVMe/TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteAttachment>,
    /// A mirrored volume's copies, on different appliances (empty: one
    /// copy, `node`/`nsid`). The first is also `node`/`nsid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plexes: Vec<PlexState>,
    /// A mirrored volume: the generation its in-sync plexes were last in
    /// sync at (the card's, recorded when it is detached).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// A mirrored volume: seconds a copy may stay unreachable before it
    /// is rebuilt on another appliance (`None`: an operator decides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_after: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl VolumeState {
    /// Whether it has more than one copy.
    pub fn mirrored(&self) -> bool {
        !self.plexes.is_empty()
    }

    /// Where its data is: each copy's appliance and namespace there.
    pub fn copies(&self) -> impl Iterator<Item = (Option<&str>, u32)> + '_ {
        let single = (!self.mirrored()).then_some((self.node.as_deref(), self.nsid));
        single
            .into_iter()
            .chain(self.plexes.iter().map(|p| (Some(p.node.as_str()), p.nsid)))
    }
}

/// One copy of a mirrored volume: an exported namespace of an appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexState {
    /// The appliance whose pool holds it.
    pub node: String,
    /// Its namespace on that appliance's card.
    pub nsid: u32,
    /// It holds every write up to the volume's generation (`false`: it
    /// missed writes, or is new, and is copied in full at the next attach).
    pub in_sync: bool,
}

/// A volume used on an appliance other than the one with its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAttachment {
    /// The appliance it is attached on.
    pub node: String,
    /// The remote namespace on that appliance's card.
    pub nsid: u32,
}

/// An appliance of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberState {
    /// Its name (unique in the cluster).
    pub name: String,
    /// Its address on the management network (diad's peer API and etcd).
    pub address: String,
    /// Its card's serial number (in the NQN of every volume it exports).
    pub serial: String,
    /// Where other cards reach its card's NVMe/TCP target, `IP:PORT`.
    pub fabric: Option<String>,
    /// Its card's pool size in bytes.
    pub pool_bytes: u64,
    /// Whether it runs an etcd member (the first three appliances do).
    pub etcd: bool,
    /// Labels for placement (`volume create --label`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// A container diad started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerState {
    /// Name.
    pub name: String,
    /// Its init process.
    pub pid: u32,
    /// The appliance it runs on (`None`: this lone appliance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// A network the operator created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkState {
    /// Name.
    pub name: String,
    /// VLAN id.
    pub vlan: u16,
    /// Subnet, `10.10.0.0/24`.
    pub subnet: String,
    /// Gateway.
    pub gateway: String,
    /// First address handed out.
    pub range_start: String,
    /// Last address handed out.
    pub range_end: String,
    /// MTU of its ports.
    pub mtu: u16,
}

/// A port diad gave a container; its address is the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortState {
    /// Container.
    pub container: String,
    /// Interface name inside it.
    pub ifname: String,
    /// Network.
    pub network: String,
    /// The card's port id.
    pub port: u32,
    /// MAC.
    pub mac: String,
    /// Leased address.
    pub ip: String,
    /// Tier.
    #[serde(default = "default_tier")]
    pub tier: String,
    /// The appliance it is on (`None`: this lone appliance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl PortState {
    /// `container:ifname`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.container, self.ifname)
    }
}

/// Reads the state file, or creates it (and its directory) with defaults.
pub fn load_or_create(path: &Path) -> Result<DesiredState> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let state: DesiredState =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            if state.version != STATE_VERSION {
                bail!(
                    "{} has state version {}, this diad understands {}",
                    path.display(),
                    state.version,
                    STATE_VERSION
                );
            }
            Ok(state.with_builtin_tiers())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let state = DesiredState::default();
            save(path, &state)?;
            Ok(state)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the state atomically (temporary file + rename).
pub fn save(path: &Path, state: &DesiredState) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, toml::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/state.toml");
        assert_eq!(load_or_create(&p).unwrap(), DesiredState::default());
        assert!(p.exists());
        assert_eq!(load_or_create(&p).unwrap(), DesiredState::default());
    }

    #[test]
    fn volumes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.toml");
        let mut st = DesiredState::default();
        st.volumes.push(VolumeState {
            name: "web".into(),
            nsid: 2,
            size_bytes: 1 << 30,
            block_size: 4096,
            tier: "gold".into(),
            attachment: Some(Attachment {
                container: "c1".into(),
                fs: Some("ext4".into()),
                mount: Some("/data".into()),
            }),
            node: None,
            remote: None,
            plexes: Vec::new(),
            generation: 0,
            rebuild_after: None,
        });
        st.containers.push(ContainerState {
            name: "c1".into(),
            pid: 42,
            node: None,
        });
        save(&p, &st).unwrap();
        assert_eq!(load_or_create(&p).unwrap(), st);
    }

    #[test]
    fn refuses_unknown_fields_and_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.toml");
        std::fs::write(&p, "version = 1\nvolumez = []\n").unwrap();
        let e = format!("{:#}", load_or_create(&p).unwrap_err());
        assert!(e.contains("volumez"), "{e}");
        std::fs::write(&p, "version = 9\n").unwrap();
        assert!(format!("{:#}", load_or_create(&p).unwrap_err()).contains("version 9"));
    }
}
