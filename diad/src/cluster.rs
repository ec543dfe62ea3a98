//! Appliances in one cluster: `cluster create` on a first appliance starts
//! an etcd member there and carries the appliance's state into it; `cluster
//! join` on a further one asks a member (over the management network, the
//! peer API of `peer.rs`) to add it: the first three appliances each run an
//! etcd member, later ones are etcd clients. Every diad keeps a health key
//! on a short etcd lease, so `cluster status` shows an appliance down a few
//! seconds after it is gone. What an appliance needs to rejoin after a
//! reboot is in `cluster.toml` beside the state file.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dia::api::{check_name, ClusterStatus, MemberStatus, StoreMember};
use etcd_client::{Client, ConnectOptions, PutOptions};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::cluster_store::{ClusterStore, HEALTH_PREFIX};
use crate::error::ApiError;
use crate::manager::{Manager, Store};
use crate::state::{self, MemberState};

/// etcd's client port.
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
/// How many appliances run an etcd member; later ones are clients.
pub const ETCD_MEMBERS: usize = 3;
/// Seconds a health key outlives its diad.
pub const HEALTH_TTL: i64 = 3;

/// What this appliance is, from diad's command line.
#[derive(Debug, Clone)]
pub struct LocalNode {
    /// Its name in a cluster (default: the host name).
    pub name: String,
    /// Its management address (needed to create or join a cluster).
    pub address: Option<String>,
    /// Where other cards reach its card's NVMe/TCP target.
    pub fabric: Option<String>,
    /// Placement labels.
    pub labels: Vec<String>,
    /// Directory of the state file (cluster.toml and etcd's data go there).
    pub dir: PathBuf,
}

impl LocalNode {
    fn address(&self) -> Result<&str, ApiError> {
        self.address.as_deref().ok_or_else(|| {
            ApiError::conflict(
                "this appliance has no management address (diad --address): it cannot be in a cluster",
            )
        })
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("cluster.toml")
    }
}

/// `cluster.toml`: how this appliance reaches its cluster after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name.
    pub name: String,
    /// This appliance's name in it.
    pub me: String,
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Whether this appliance runs an etcd member.
    pub etcd: bool,
}

impl ClusterConfig {
    /// The config at `path`, if this appliance is in a cluster.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(t) => Ok(Some(
                toml::from_str(&t).with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string_pretty(self)?)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

fn client_url(address: &str) -> String {
    format!("http://{address}:{ETCD_CLIENT_PORT}")
}

fn peer_url(address: &str) -> String {
    format!("http://{address}:{ETCD_PEER_PORT}")
}

/// Starts this appliance's etcd member (in its own session, so it outlives
/// a diad restart) unless it runs; `initial` is `None` when its data
/// directory already knows the cluster, else (`--initial-cluster`, `new`
/// or `existing`).
pub fn start_etcd(node: &LocalNode, cluster: &str, initial: Option<(&str, &str)>) -> Result<()> {
    let address = node.address.as_deref().context("no management address")?;
    let data = node.dir.join("etcd");
    let pidfile = node.dir.join("etcd.pid");
    if let Ok(pid) = std::fs::read_to_string(&pidfile) {
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", pid.trim())).unwrap_or_default();
        if comm.trim() == "etcd" {
            return Ok(());
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node.dir.join("etcd.log"))
        .context("opening etcd.log")?;
    let mut cmd = Command::new("etcd");
    cmd.arg("--name")
        .arg(&node.name)
        .arg("--data-dir")
        .arg(&data)
        .arg("--listen-peer-urls")
        .arg(peer_url(address))
        .arg("--initial-advertise-peer-urls")
        .arg(peer_url(address))
        .arg("--listen-client-urls")
        .arg(format!(
            "{},http://127.0.0.1:{ETCD_CLIENT_PORT}",
            client_url(address)
        ))
        .arg("--advertise-client-urls")
        .arg(client_url(address))
        .arg("--initial-cluster-token")
        .arg(cluster)
        // A slow emulated machine: a longer election timeout than the
        // default 1 s keeps leaders from flapping.
        .args(["--heartbeat-interval", "250", "--election-timeout", "2500"]);
    if let Some((members, state)) = initial {
        cmd.arg("--initial-cluster")
            .arg(members)
            .arg("--initial-cluster-state")
            .arg(state);
    }
    // SAFETY: setsid() is async-signal-safe and touches no memory of ours.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting etcd (is etcd-server installed?)")?;
    std::fs::write(&pidfile, child.id().to_string())?;
    info!(pid = child.id(), "etcd member started");
    Ok(())
}

/// Waits until etcd at `endpoints` answers a read (at most `limit`).
pub async fn wait_for_etcd(endpoints: &[String], limit: Duration) -> Result<ClusterStore> {
    let start = Instant::now();
    loop {
        let err = match ClusterStore::connect(endpoints).await {
            Ok(mut s) => match s.load().await {
                Ok(_) => return Ok(s),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if start.elapsed() > limit {
            return Err(err.context(format!("etcd did not answer within {limit:?}")));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Keeps `/dia-health/<me>` alive on a lease while diad runs, through
/// each of `endpoints` in turn while one fails.
pub fn keep_healthy(endpoints: Vec<String>, me: String) {
    tokio::spawn(async move {
        for endpoint in endpoints.iter().cycle() {
            let r = match crate::cluster_store::connect_one(endpoint).await {
                Ok(c) => health_round(c, &me).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                warn!("cluster health key via {endpoint}: {e:#}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn health_round(mut client: Client, me: &str) -> Result<()> {
    let lease = client.lease_grant(HEALTH_TTL, None).await?.id();
    client
        .put(
            format!("{HEALTH_PREFIX}{me}"),
            "up",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        keeper.keep_alive().await?;
        match stream.message().await? {
            Some(r) if r.ttl() > 0 => {}
            _ => bail!("lease expired"),
        }
    }
}

impl Manager {
    /// This appliance as a cluster member.
    fn member_state(&self, node: &LocalNode, etcd: bool) -> Result<MemberState, ApiError> {
        let id = self
            .card
            .identify()
            .map_err(|e| ApiError::card("identifying the card", e))?;
        let pool = self
            .card
            .pool()
            .map_err(|e| ApiError::card("reading the pool", e))?;
        Ok(MemberState {
            name: node.name.clone(),
            address: node.address()?.to_string(),
            serial: id.serial,
            fabric: node.fabric.clone(),
            pool_bytes: pool.total_bytes,
            etcd,
            labels: node.labels.clone(),
        })
    }

    /// Switches to the cluster's etcd as `cfg.me`.
    fn enter(
        &mut self,
        node: &LocalNode,
        cfg: &ClusterConfig,
        store: ClusterStore,
    ) -> Result<(), ApiError> {
        cfg.save(&node.config_path())
            .map_err(|e| ApiError::internal(format!("saving cluster.toml: {e:#}")))?;
        self.use_cluster(&cfg.me, store);
        self.refresh()
    }

    /// From now on the desired state is the cluster's, in `store`, as
    /// appliance `me`, whose health key is kept alive.
    fn use_cluster(&mut self, me: &str, store: ClusterStore) {
        keep_healthy(store.endpoints().to_vec(), me.to_string());
        self.store = Store::Cluster {
            me: me.to_string(),
            store: Box::new(store),
            rt: tokio::runtime::Handle::current(),
        };
    }

    /// Exports (attaches on its card) every volume of this appliance, so
    /// other appliances' cards reach it over NVMe/TCP.
    pub(crate) fn export_local_volumes(&self) {
        for v in &self.state.volumes {
            for (_, nsid) in v.copies().filter(|(n, _)| *n == self.me()) {
                let ns = match self.card.namespace(nsid) {
                    Ok(ns) if ns.label == v.name => ns,
                    _ => continue,
                };
                if !ns.attached {
                    if let Err(e) = self.card.attach_namespace(nsid) {
                        warn!(volume = %v.name, nsid, "exporting the volume: {e}");
                    }
                }
            }
        }
    }

    /// `cluster create NAME`: a new cluster of this appliance alone, with
    /// its volumes, networks, tiers, containers and ports.
    pub fn create_cluster(
        &mut self,
        node: &LocalNode,
        name: &str,
    ) -> Result<ClusterStatus, ApiError> {
        check_name("cluster", name).map_err(ApiError::bad_request)?;
        if let Some(c) = self.me() {
            return Err(ApiError::conflict(format!(
                "this appliance is already '{c}' of a cluster"
            )));
        }
        let address = node.address()?.to_string();
        let member = self.member_state(node, true)?;
        let rt = tokio::runtime::Handle::current();
        let _ = std::fs::remove_dir_all(node.dir.join("etcd"));
        start_etcd(
            node,
            name,
            Some((&format!("{}={}", node.name, peer_url(&address)), "new")),
        )?;
        let endpoints = vec![client_url(&address)];
        let mut store = rt
            .block_on(wait_for_etcd(&endpoints, Duration::from_secs(60)))
            .map_err(ApiError::store_unavailable)?;
        let before = self.state.clone();
        self.state.mark_as(&node.name);
        self.state.members = vec![member];
        match rt.block_on(store.commit(&self.state)) {
            Ok(Ok(())) => {}
            other => {
                self.state = before;
                return Err(match other {
                    Err(e) => ApiError::store_unavailable(e),
                    _ => ApiError::conflict("the new etcd already holds a cluster state"),
                });
            }
        }
        let cfg = ClusterConfig {
            name: name.into(),
            me: node.name.clone(),
            endpoints,
            etcd: true,
        };
        self.enter(node, &cfg, store)?;
        self.export_local_volumes();
        info!(cluster = %name, "cluster created");
        self.cluster_status(node)
    }

    /// A joining appliance's request, on a member: checks it, adds an etcd
    /// member for it while fewer than three run, and tells it how to reach
    /// etcd.
    pub fn admit(
        &mut self,
        req: &crate::peer::JoinRequest,
    ) -> Result<crate::peer::JoinAnswer, ApiError> {
        let Store::Cluster { store, rt, me } = &self.store else {
            return Err(ApiError::conflict("this appliance is not in a cluster"));
        };
        let (client, rt) = (store.client(), rt.clone());
        let cluster = ClusterConfig::load(&self.path.with_file_name("cluster.toml"))
            .ok()
            .flatten()
            .map(|c| c.name)
            .unwrap_or_else(|| me.clone());
        if self.state.members.iter().any(|m| m.name == req.member.name) {
            return Err(ApiError::conflict(format!(
                "an appliance named '{}' is already in the cluster",
                req.member.name
            )));
        }
        for v in &req.volumes {
            if self.state.volumes.iter().any(|x| &x.name == v) {
                return Err(ApiError::conflict(format!(
                    "the joining appliance has a volume '{v}', a name the cluster uses already"
                )));
            }
        }
        for (n, vlan) in &req.networks {
            if let Some(x) = self
                .state
                .networks
                .iter()
                .find(|x| &x.name == n || x.vlan == *vlan)
            {
                if x.name != *n || x.vlan != *vlan {
                    return Err(ApiError::conflict(format!(
                        "the joining appliance's network '{n}' (VLAN {vlan}) clashes with the cluster's '{}' (VLAN {})",
                        x.name, x.vlan
                    )));
                }
            }
        }
        let etcd_members: Vec<&MemberState> =
            self.state.members.iter().filter(|m| m.etcd).collect();
        let endpoints: Vec<String> = etcd_members
            .iter()
            .map(|m| client_url(&m.address))
            .collect();
        let initial = if etcd_members.len() < ETCD_MEMBERS {
            let mut c = client.clone();
            // etcd adds a voting member only once every member has been
            // connected for a few seconds ("unhealthy cluster" before):
            // right after the previous join it has to wait.
            let start = Instant::now();
            let resp = loop {
                match rt.block_on(c.member_add([peer_url(&req.member.address)], None)) {
                    Ok(r) => break r,
                    Err(e)
                        if e.to_string().contains("unhealthy cluster")
                            && start.elapsed() < Duration::from_secs(60) =>
                    {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Err(e) => return Err(ApiError::store_unavailable(e.into())),
                }
            };
            let mut parts = Vec::new();
            for m in resp.member_list() {
                let name = if m.name().is_empty() {
                    req.member.name.as_str()
                } else {
                    m.name()
                };
                for u in m.peer_urls() {
                    parts.push(format!("{name}={u}"));
                }
            }
            Some(parts.join(","))
        } else {
            None
        };
        info!(appliance = %req.member.name, etcd = initial.is_some(), "admitting an appliance");
        Ok(crate::peer::JoinAnswer {
            cluster,
            endpoints,
            initial_cluster: initial,
        })
    }

    /// `cluster join ADDRESS`: joins the cluster of the appliance there.
    pub fn join_cluster(
        &mut self,
        node: &LocalNode,
        seed: &str,
    ) -> Result<ClusterStatus, ApiError> {
        if let Some(c) = self.me() {
            return Err(ApiError::conflict(format!(
                "this appliance is already '{c}' of a cluster"
            )));
        }
        let address = node.address()?.to_string();
        let mut member = self.member_state(node, false)?;
        let req = crate::peer::JoinRequest {
            member: member.clone(),
            volumes: self.state.volumes.iter().map(|v| v.name.clone()).collect(),
            networks: self
                .state
                .networks
                .iter()
                .map(|n| (n.name.clone(), n.vlan))
                .collect(),
        };
        let answer: crate::peer::JoinAnswer =
            crate::peer::call(seed, "POST", "/peer/v1/members", Some(&req))?;
        let rt = tokio::runtime::Handle::current();
        let mut endpoints = answer.endpoints.clone();
        if let Some(initial) = &answer.initial_cluster {
            let _ = std::fs::remove_dir_all(node.dir.join("etcd"));
            start_etcd(node, &answer.cluster, Some((initial, "existing")))?;
            // Its own member first: wait until it has caught up and serves.
            endpoints.insert(0, client_url(&address));
            rt.block_on(wait_for_etcd(&endpoints[..1], Duration::from_secs(90)))
                .map_err(ApiError::store_unavailable)?;
            member.etcd = true;
        }
        let mut store = rt
            .block_on(wait_for_etcd(&endpoints, Duration::from_secs(90)))
            .map_err(ApiError::store_unavailable)?;
        let local = self.state.clone();
        // Carry this appliance's objects into the cluster's state, retrying
        // while other appliances change it meanwhile.
        let mut tries = 0;
        loop {
            let mut s = rt
                .block_on(store.load())
                .map_err(ApiError::store_unavailable)?;
            let mut mine = local.clone();
            mine.mark_as(&node.name);
            s.volumes.extend(mine.volumes);
            s.containers.extend(mine.containers);
            s.ports.extend(mine.ports);
            for n in mine.networks {
                if !s.networks.iter().any(|x| x.name == n.name) {
                    s.networks.push(n);
                }
            }
            for t in mine.tiers {
                if !s.tiers.iter().any(|x| x.name == t.name) {
                    s.tiers.push(t);
                }
            }
            s.members.retain(|m| m.name != member.name);
            s.members.push(member.clone());
            match rt.block_on(store.commit(&s)) {
                Ok(Ok(())) => break,
                Ok(Err(_)) if tries < 20 => tries += 1,
                Ok(Err(_)) => return Err(ApiError::raced()),
                Err(e) => return Err(ApiError::store_unavailable(e)),
            }
        }
        let cfg = ClusterConfig {
            name: answer.cluster.clone(),
            me: node.name.clone(),
            endpoints,
            etcd: member.etcd,
        };
        self.enter(node, &cfg, store)?;
        self.export_local_volumes();
        info!(cluster = %answer.cluster, "joined the cluster");
        self.cluster_status(node)
    }

    /// `cluster status`.
    pub fn cluster_status(&mut self, node: &LocalNode) -> Result<ClusterStatus, ApiError> {
        let Store::Cluster { store, rt, me } = &self.store else {
            return Ok(ClusterStatus {
                name: None,
                me: node.name.clone(),
                members: Vec::new(),
                store: "none".into(),
                store_members: Vec::new(),
            });
        };
        let (client, rt, me) = (store.client(), rt.clone(), me.clone());
        let cfg = ClusterConfig::load(&node.config_path()).ok().flatten();
        let (up, store_members) = rt.block_on(store_health(client, &self.state.members));
        let members = self
            .state
            .members
            .iter()
            .map(|m| {
                let volumes = self
                    .state
                    .volumes
                    .iter()
                    .filter(|v| v.copies().any(|(n, _)| n == Some(m.name.as_str())))
                    .count();
                MemberStatus {
                    name: m.name.clone(),
                    address: m.address.clone(),
                    health: if up.contains(&m.name) { "up" } else { "down" }.into(),
                    serial: m.serial.clone(),
                    pool_bytes: m.pool_bytes,
                    promised_bytes: self.state.promised_bytes(&m.name),
                    volumes: volumes as u32,
                    etcd: m.etcd,
                }
            })
            .collect();
        let healthy = store_members
            .iter()
            .filter(|s| s.health == "healthy")
            .count();
        let total = store_members.len().max(1);
        Ok(ClusterStatus {
            name: cfg.map(|c| c.name),
            me,
            members,
            store: if healthy * 2 > total {
                "healthy"
            } else if healthy == 0 && store_members.iter().all(|s| s.health == "unreachable") {
                "unavailable"
            } else {
                "no-quorum"
            }
            .into(),
            store_members,
        })
    }

    /// `cluster remove NODE`: refused while it holds the only copy of a
    /// volume; its etcd member leaves too.
    pub fn remove_member(&mut self, name: &str) -> Result<(), ApiError> {
        let Some(me) = self.me().map(str::to_string) else {
            return Err(ApiError::conflict("this appliance is not in a cluster"));
        };
        if name == me {
            return Err(ApiError::conflict(
                "an appliance cannot remove itself: run `cluster remove` on another member",
            ));
        }
        let Some(m) = self.state.members.iter().find(|m| m.name == name).cloned() else {
            let known: Vec<&str> = self.state.members.iter().map(|m| m.name.as_str()).collect();
            return Err(ApiError::unknown("appliance", name, &known, ""));
        };
        let held = self
            .state
            .volume_names(|v| !v.mirrored() && v.node.as_deref() == Some(name));
        if !held.is_empty() {
            return Err(ApiError::conflict(format!(
                "appliance '{name}' holds the only copy of volumes {}: delete or move them first",
                held.join(", ")
            )));
        }
        let copies = self
            .state
            .volume_names(|v| v.mirrored() && v.copies().any(|(n, _)| n == Some(name)));
        if !copies.is_empty() {
            return Err(ApiError::conflict(format!(
                "appliance '{name}' holds a copy of mirrored volumes {}: delete them first",
                copies.join(", ")
            )));
        }
        self.state.members.retain(|x| x.name != name);
        self.state
            .containers
            .retain(|c| c.node.as_deref() != Some(name));
        self.state.ports.retain(|p| p.node.as_deref() != Some(name));
        for v in &mut self.state.volumes {
            if v.remote.as_ref().is_some_and(|r| r.node == name) {
                v.remote = None;
                v.attachment = None;
            }
        }
        self.save()?;
        if m.etcd {
            if let Store::Cluster { store, rt, .. } = &self.store {
                let mut c = store.client();
                let rt = rt.clone();
                let r: Result<()> = rt.block_on(async {
                    let list = c.member_list().await?;
                    if let Some(x) = list.members().iter().find(|x| x.name() == name) {
                        c.member_remove(x.id()).await?;
                    }
                    Ok(())
                });
                if let Err(e) = r {
                    warn!("removing etcd member {name}: {e:#}");
                }
            }
        }
        info!(appliance = %name, "removed from the cluster");
        Ok(())
    }
}

/// Which appliances are up (health keys), and each etcd member's health.
async fn store_health(
    mut client: Client,
    members: &[MemberState],
) -> (Vec<String>, Vec<StoreMember>) {
    let up = match client
        .get(
            HEALTH_PREFIX,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_serializable(),
            ),
        )
        .await
    {
        Ok(r) => r
            .kvs()
            .iter()
            .filter_map(|kv| {
                kv.key_str()
                    .ok()?
                    .strip_prefix(HEALTH_PREFIX)
                    .map(str::to_string)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for m in members.iter().filter(|m| m.etcd) {
        let endpoint = client_url(&m.address);
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(800))
            .with_timeout(Duration::from_millis(1500));
        let status = async {
            let mut c = Client::connect([endpoint.clone()], Some(opts)).await?;
            c.status().await
        };
        let (health, leader) = match tokio::time::timeout(Duration::from_secs(2), status).await {
            Ok(Ok(s)) => {
                let id = s.header().map(|h| h.member_id()).unwrap_or_default();
                if s.leader() == 0 {
                    ("no-leader", false)
                } else {
                    ("healthy", s.leader() == id)
                }
            }
            _ => ("unreachable", false),
        };
        out.push(StoreMember {
            name: m.name.clone(),
            endpoint,
            health: health.into(),
            leader,
        });
    }
    (up, out)
}

/// On start: the cluster this appliance is in, if any: its etcd member
/// runs again and diad uses the cluster's state.
pub async fn resume(manager: &mut Manager, node: &LocalNode) -> Result<bool> {
    let Some(cfg) = ClusterConfig::load(&node.config_path())? else {
        return Ok(false);
    };
    if cfg.me != node.name {
        bail!(
            "cluster.toml names this appliance '{}', but it is '{}' now",
            cfg.me,
            node.name
        );
    }
    if cfg.etcd {
        start_etcd(node, &cfg.name, None)?;
    }
    // etcd may lack a quorum now; diad comes up anyway and refuses changes
    // until it has one.
    let store = ClusterStore::connect(&cfg.endpoints).await?;
    manager.use_cluster(&cfg.me, store);
    info!(cluster = %cfg.name, me = %cfg.me, "resuming as a cluster member");
    Ok(true)
}

/// The state file's directory.
pub fn state_dir(state_file: &Path) -> PathBuf {
    state_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| {
            PathBuf::from(state::DEFAULT_STATE)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        })
}
