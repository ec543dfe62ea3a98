//! The cluster's desired state in etcd: one key per object (volume,
//! container, network, port, tier, member) under `/dia/`, plus *claim* keys
//! for what two appliances could race on (a VLAN, an address lease, the
//! bytes promised from one appliance's pool). Every change is one etcd
//! transaction: the keys it changes are compared with the revisions diad
//! last read (absent keys with version 0), so of two appliances that take
//! the same name, VLAN, address or pool bytes at once exactly one wins; the
//! other gets [`Conflict`], reads again and retries (or reports it).
//!
//! The mapping is a pure function ([`keys_of`], [`state_of`]) so it is
//! tested without etcd.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use crate::state::DesiredState;

/// Prefix of every key diad writes.
pub const PREFIX: &str = "/dia/";
/// Prefix of the health keys (one per live diad, on a lease).
pub const HEALTH_PREFIX: &str = "/dia-health/";
/// How long one etcd request may take before the state store is reported
/// unavailable (no quorum, or the member is cut off).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// The state changed in etcd since diad read it: read again and retry.
#[derive(Debug)]
pub struct Conflict;

/// Every key (without [`PREFIX`]) and JSON value a state is stored as,
/// claims included.
pub fn keys_of(s: &DesiredState) -> BTreeMap<String, String> {
    fn json<T: serde::Serialize>(v: &T) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string(v).unwrap_or_default()
    }
    let mut k = BTreeMap::new();
    for v in &s.volumes {
        k.insert(format!("volumes/{}", v.name), json(v));
    }
    let nodes: std::collections::BTreeSet<&str> = s
        .volumes
        .iter()
        .flat_map(|v| v.copies().filter_map(|(n, _)| n))
        .collect();
    for node in nodes {
        k.insert(
            format!("claims/pool/{node}"),
            s.promised_bytes(node).to_string(),
        );
    }
    for c in &s.containers {
        k.insert(format!("containers/{}", c.name), json(c));
    }
    for n in &s.networks {
        k.insert(format!("networks/{}", n.name), json(n));
        k.insert(format!("claims/vlan/{}", n.vlan), n.name.clone());
    }
    for p in &s.ports {
        k.insert(format!("ports/{}", p.name()), json(p));
        k.insert(format!("claims/lease/{}/{}", p.network, p.ip), p.name());
    }
    for t in &s.tiers {
        k.insert(format!("tiers/{}", t.name), json(t));
    }
    for m in &s.members {
        k.insert(format!("members/{}", m.name), json(m));
    }
    k.insert("version".into(), s.version.to_string());
    k
}

/// The state stored as `keys` (claims are derived, so ignored).
pub fn state_of(keys: &BTreeMap<String, String>) -> Result<DesiredState> {
    let mut s = DesiredState {
        tiers: Vec::new(),
        ..DesiredState::default()
    };
    for (key, value) in keys {
        let parse = || format!("cluster state key {PREFIX}{key}");
        let Some((kind, _)) = key.split_once('/') else {
            continue;
        };
        match kind {
            "volumes" => s
                .volumes
                .push(serde_json::from_str(value).with_context(parse)?),
            "containers" => s
                .containers
                .push(serde_json::from_str(value).with_context(parse)?),
            "networks" => s
                .networks
                .push(serde_json::from_str(value).with_context(parse)?),
            "ports" => s
                .ports
                .push(serde_json::from_str(value).with_context(parse)?),
            "tiers" => s
                .tiers
                .push(serde_json::from_str(value).with_context(parse)?),
            "members" => s
                .members
                .push(serde_json::from_str(value).with_context(parse)?),
            _ => {}
        }
    }
    Ok(s)
}

/// A connection to the cluster's etcd and what diad last read of it.
///
/// It talks to one endpoint at a time, the first of the list while it
/// answers (an etcd member's own, for an appliance that runs one): a
/// request that fails moves it on to the next, so a dead member costs one
/// failed request, not every other one (a client balancing over all
/// endpoints keeps sending to the dead one).
pub struct ClusterStore {
    endpoints: Vec<String>,
    at: usize,
    client: Client,
    /// Values and mod revisions of the keys as last read or written.
    seen: HashMap<String, (String, i64)>,
}

/// A client of the etcd at `endpoint` alone.
pub async fn connect_one(endpoint: &str) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(REQUEST_TIMEOUT);
    Client::connect([endpoint], Some(opts))
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))
}

impl ClusterStore {
    /// Connects to etcd at `endpoints` (`http://IP:2379`), the first that
    /// takes a connection.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let mut last = None;
        for (at, e) in endpoints.iter().enumerate() {
            match connect_one(e).await {
                Ok(client) => {
                    return Ok(Self {
                        endpoints: endpoints.to_vec(),
                        at,
                        client,
                        seen: HashMap::new(),
                    })
                }
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no etcd endpoints")))
    }

    /// After a failed request: the next endpoint.
    async fn move_on(&mut self) {
        if self.endpoints.len() < 2 {
            return;
        }
        self.at = (self.at + 1) % self.endpoints.len();
        if let Ok(c) = connect_one(&self.endpoints[self.at]).await {
            self.client = c;
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The client (for membership and health calls).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Reads the whole state.
    pub async fn load(&mut self) -> Result<DesiredState> {
        let r = self.load_here().await;
        if r.is_err() {
            self.move_on().await;
        }
        r
    }

    async fn load_here(&mut self) -> Result<DesiredState> {
        let resp = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client
                .get(PREFIX, Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|_| anyhow!("etcd did not answer within {REQUEST_TIMEOUT:?}"))?
        .context("reading the cluster state from etcd")?;
        // A linearizable read (through the leader): what was committed
        // before it is in it. Without a quorum it fails.
        self.seen.clear();
        let mut keys = BTreeMap::new();
        for kv in resp.kvs() {
            let key = kv.key_str()?.strip_prefix(PREFIX).unwrap_or_default();
            let value = kv.value_str()?.to_string();
            self.seen
                .insert(key.to_string(), (value.clone(), kv.mod_revision()));
            keys.insert(key.to_string(), value);
        }
        state_of(&keys)
    }

    /// Writes `new` as one transaction over the keys that differ from what
    /// was last read; `Ok(Err(Conflict))` when one of them changed since.
    pub async fn commit(&mut self, new: &DesiredState) -> Result<Result<(), Conflict>> {
        let r = self.commit_here(new).await;
        if r.is_err() {
            self.move_on().await;
        }
        r
    }

    async fn commit_here(&mut self, new: &DesiredState) -> Result<Result<(), Conflict>> {
        let want = keys_of(new);
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let mut changed = Vec::new();
        for key in want.keys().chain(self.seen.keys()) {
            let old = self.seen.get(key);
            let new_value = want.get(key);
            if old.map(|(v, _)| v) == new_value || changed.contains(key) {
                continue;
            }
            let full = format!("{PREFIX}{key}");
            compares.push(match old {
                Some((_, rev)) => Compare::mod_revision(full.clone(), CompareOp::Equal, *rev),
                None => Compare::version(full.clone(), CompareOp::Equal, 0),
            });
            ops.push(match new_value {
                Some(v) => TxnOp::put(full, v.clone(), None),
                None => TxnOp::delete(full, None),
            });
            changed.push(key.clone());
        }
        if ops.is_empty() {
            return Ok(Ok(()));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.txn(txn))
            .await
            .map_err(|_| anyhow!("etcd did not answer within {REQUEST_TIMEOUT:?}"))?
            .context("writing the cluster state to etcd")?;
        if !resp.succeeded() {
            return Ok(Err(Conflict));
        }
        let rev = resp.header().map(|h| h.revision()).unwrap_or_default();
        for key in changed {
            match want.get(&key) {
                Some(v) => {
                    self.seen.insert(key, (v.clone(), rev));
                }
                None => {
                    self.seen.remove(&key);
                }
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemberState, NetworkState, PortState, VolumeState};

    fn sample() -> DesiredState {
        let mut s = DesiredState::default();
        for (name, node, size) in [("a", "n1", 10), ("b", "n1", 5), ("c", "n2", 7)] {
            s.volumes.push(VolumeState {
                name: name.into(),
                nsid: 1,
                size_bytes: size,
                block_size: 4096,
                tier: "best-effort".into(),
                attachment: None,
                node: Some(node.into()),
                remote: None,
                plexes: Vec::new(),
                generation: 0,
                rebuild_after: None,
            });
        }
        // A mirrored volume takes room on each of its copies' appliances.
        let mut m = s.volumes[0].clone();
        m.name = "m".into();
        m.size_bytes = 3;
        m.plexes = ["n1", "n2"]
            .iter()
            .map(|n| crate::state::PlexState {
                node: (*n).into(),
                nsid: 2,
                in_sync: true,
            })
            .collect();
        s.volumes.push(m);
        s.networks.push(NetworkState {
            name: "blue".into(),
            vlan: 100,
            subnet: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            range_start: "10.0.0.10".into(),
            range_end: "10.0.0.20".into(),
            mtu: 1500,
        });
        s.ports.push(PortState {
            container: "web".into(),
            ifname: "eth0".into(),
            network: "blue".into(),
            port: 1,
            mac: "02:00:00:00:00:01".into(),
            ip: "10.0.0.10".into(),
            tier: "best-effort".into(),
            node: Some("n1".into()),
        });
        s.members.push(MemberState {
            name: "n1".into(),
            address: "192.168.77.10".into(),
            serial: "S1".into(),
            fabric: Some("127.0.0.1:4420".into()),
            pool_bytes: 100,
            etcd: true,
            labels: vec![],
        });
        s
    }

    #[test]
    fn claims_cover_names_vlans_leases_and_pool_bytes() {
        let k = keys_of(&sample());
        assert_eq!(k["claims/pool/n1"], "18");
        assert_eq!(k["claims/pool/n2"], "10");
        assert_eq!(k["claims/vlan/100"], "blue");
        assert_eq!(k["claims/lease/blue/10.0.0.10"], "web:eth0");
        assert!(k.contains_key("volumes/a") && k.contains_key("members/n1"));
    }

    #[test]
    fn round_trips() {
        let s = sample();
        let mut back = state_of(&keys_of(&s)).unwrap();
        back.volumes.sort_by(|a, b| a.name.cmp(&b.name));
        let mut want = s.clone();
        want.tiers.sort_by(|a, b| a.name.cmp(&b.name));
        back.tiers.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let mut k = keys_of(&sample());
        k.insert("volumes/x".into(), "{".into());
        let e = format!("{:#}", state_of(&k).unwrap_err());
        assert!(e.contains("/dia/volumes/x"), "{e}");
    }
}
