//! Volumes: thin namespaces on the card, attached to containers. Every
//! change is checked first (names, sizes, block sizes, attachments), applied
//! to the card and the container, then saved to the state file; a step that
//! fails undoes the ones before it.

use std::collections::HashMap;

use dia::api::{
    check_name, format_size, lba_shift, Attachment, CreateVolume, TierSpec, Volume, VolumeList,
};
use dia::Namespace;
use dia_abi::card::NAMESPACE_MAX_BYTES;
use nix::errno::Errno;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::host::NsOp;
use crate::manager::Manager;
use crate::state::{RemoteAttachment, VolumeState};

/// Filesystems `attach --fs` can make and mount.
pub const FILESYSTEMS: [&str; 1] = ["ext4"];

impl Manager {
    pub(crate) fn volume_index(&self, name: &str) -> Result<usize, ApiError> {
        self.state
            .volumes
            .iter()
            .position(|v| v.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.state.volumes.iter().map(|v| v.name.as_str()).collect();
                ApiError::unknown("volume", name, &known, "")
            })
    }

    pub(crate) fn namespace_of(&self, v: &VolumeState) -> Result<Option<Namespace>, dia::Error> {
        match self.card.namespace(v.nsid) {
            // The nsid may have been reused by another owner.
            Ok(ns) if ns.label == v.name => Ok(Some(ns)),
            Ok(_) => Ok(None),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn view(v: &VolumeState, ns: Result<Option<&Namespace>, ()>) -> Volume {
        let (status, used, device) = match ns {
            Ok(Some(ns)) => ("ready", Some(ns.used_bytes), ns.device.clone()),
            Ok(None) => ("missing", None, None),
            Err(()) => ("card-unavailable", None, None),
        };
        Volume {
            name: v.name.clone(),
            nsid: v.nsid,
            size_bytes: v.size_bytes,
            block_size: v.block_size,
            used_bytes: used,
            device,
            status: status.into(),
            attachment: v.attachment.clone(),
            tier: v.tier.clone(),
            node: v.node.clone(),
            attached_on: match (&v.attachment, &v.remote) {
                (None, _) => None,
                (Some(_), Some(r)) => Some(r.node.clone()),
                (Some(_), None) => v.node.clone(),
            },
            plexes: Vec::new(),
            health: None,
            rebuild_after: v.rebuild_after,
        }
    }

    /// A mirrored volume as this appliance sees it: its device here when
    /// it is attached here, and its plexes.
    fn mirror_view(&self, v: &VolumeState) -> Volume {
        let mut view = self.remote_view(v);
        let (plexes, health) = self.plex_views(v);
        view.plexes = plexes;
        view.health = Some(health);
        view
    }

    /// A volume whose data is on another appliance, as this one sees it:
    /// its device here when it is attached here.
    fn remote_view(&self, v: &VolumeState) -> Volume {
        let mut view = Self::view(v, Ok(None));
        view.status = "ready".into();
        if let Some(r) = v.remote.as_ref().filter(|r| self.mine(Some(&r.node))) {
            match self.card.namespace(r.nsid) {
                Ok(ns) if ns.label == v.name => {
                    view.device = ns.device;
                    view.used_bytes = None;
                }
                _ => view.status = "missing".into(),
            }
        }
        view
    }

    /// The namespace on this card behind a volume: its own (data here), or
    /// the remote namespace attaching it here; `None` otherwise.
    pub(crate) fn local_nsid(&self, v: &VolumeState) -> Option<u32> {
        if self.mine(v.node.as_deref()) {
            return Some(v.nsid);
        }
        v.remote
            .as_ref()
            .filter(|r| self.mine(Some(&r.node)))
            .map(|r| r.nsid)
    }

    /// Whether card namespace `n` is a remote namespace of this appliance
    /// for one of the volumes.
    pub(crate) fn is_remote_here(&self, n: &Namespace) -> bool {
        self.state.volumes.iter().any(|v| {
            v.name == n.label
                && v.remote
                    .as_ref()
                    .is_some_and(|r| r.nsid == n.nsid && self.mine(Some(&r.node)))
        })
    }

    /// Whether card namespace `n` is one of this appliance's for a
    /// volume: its data (a copy of it), or the remote or mirror namespace
    /// reaching it from here.
    pub(crate) fn owns(&self, n: &Namespace) -> bool {
        self.state.volumes.iter().any(|v| {
            v.name == n.label && v.copies().any(|(node, id)| self.mine(node) && id == n.nsid)
        }) || self.is_remote_here(n)
    }

    /// Every volume, and the card's namespaces no volume owns.
    pub fn list(&self) -> VolumeList {
        let here = |v: &VolumeState| self.mine(v.node.as_deref());
        match self.card.namespaces() {
            Ok(all) => {
                let by_id: HashMap<u32, &Namespace> = all.iter().map(|n| (n.nsid, n)).collect();
                let owned = |n: &Namespace| self.owns(n);
                VolumeList {
                    volumes: self
                        .state
                        .volumes
                        .iter()
                        .map(|v| {
                            if v.mirrored() {
                                return self.mirror_view(v);
                            }
                            if !here(v) {
                                return self.remote_view(v);
                            }
                            let ns = by_id.get(&v.nsid).copied().filter(|n| n.label == v.name);
                            Self::view(v, Ok(ns))
                        })
                        .collect(),
                    orphans: all.iter().filter(|n| !owned(n)).cloned().collect(),
                }
            }
            Err(e) => {
                warn!("listing namespaces: {e}");
                VolumeList {
                    volumes: self
                        .state
                        .volumes
                        .iter()
                        .map(|v| Self::view(v, Err(())))
                        .collect(),
                    orphans: Vec::new(),
                }
            }
        }
    }

    /// One volume.
    pub fn show(&self, name: &str) -> Result<Volume, ApiError> {
        let v = &self.state.volumes[self.volume_index(name)?];
        if v.mirrored() {
            return Ok(self.mirror_view(v));
        }
        if !self.mine(v.node.as_deref()) {
            return Ok(self.remote_view(v));
        }
        let ns = self
            .namespace_of(v)
            .map_err(|e| ApiError::card("reading the namespace", e))?;
        Ok(Self::view(v, Ok(ns.as_ref())))
    }

    /// Where a new volume's data goes: `None` for this appliance, else the
    /// management address of the appliance to create it on. A lone
    /// appliance places everything here.
    pub fn placement(&self, req: &CreateVolume) -> Result<Option<String>, ApiError> {
        let Some(me) = self.me() else {
            if req.node.is_some() || req.label.is_some() {
                return Err(ApiError::bad_request(
                    "--node and --label place volumes in a cluster; this appliance is not in one",
                ));
            }
            return Ok(None);
        };
        if self.state.volumes.iter().any(|v| v.name == req.name) {
            return Err(ApiError::conflict(format!(
                "volume '{}' already exists",
                req.name
            )));
        }
        let names: Vec<&str> = self.state.members.iter().map(|m| m.name.as_str()).collect();
        let candidates: Vec<_> = self
            .state
            .members
            .iter()
            .filter(|m| req.node.as_deref().is_none_or(|n| n == m.name))
            .filter(|m| {
                req.label
                    .as_deref()
                    .is_none_or(|l| m.labels.iter().any(|x| x == l))
            })
            .collect();
        if candidates.is_empty() {
            return Err(match (&req.node, &req.label) {
                (Some(n), _) if !names.contains(&n.as_str()) => {
                    ApiError::unknown("appliance", n, &names, "")
                }
                _ => ApiError::bad_request(format!(
                    "no appliance matches {} (appliances: {})",
                    req.label
                        .as_deref()
                        .map(|l| format!("label '{l}'"))
                        .unwrap_or_else(|| "the request".into()),
                    names.join(", ")
                )),
            });
        }
        let room = |m: &&crate::state::MemberState| {
            m.pool_bytes
                .saturating_sub(self.state.promised_bytes(&m.name))
        };
        let fits: Vec<_> = candidates
            .iter()
            .filter(|m| room(m) >= req.size_bytes)
            .collect();
        let Some(best) = fits
            .iter()
            .find(|m| m.name == me)
            .or_else(|| fits.iter().max_by_key(|m| room(m)))
        else {
            let most = candidates.iter().map(room).max().unwrap_or(0);
            return Err(ApiError {
                status: axum::http::StatusCode::INSUFFICIENT_STORAGE,
                ..ApiError::conflict(format!(
                    "no appliance has room for {} (the most room left: {})",
                    format_size(req.size_bytes),
                    format_size(most)
                ))
            });
        };
        Ok((best.name != me).then(|| best.address.clone()))
    }

    /// The management address of the appliance holding volume `name`'s
    /// data, when that is another appliance.
    pub fn owner_elsewhere(&self, name: &str) -> Result<Option<String>, ApiError> {
        let v = &self.state.volumes[self.volume_index(name)?];
        // A mirrored volume is deleted by whichever appliance is asked.
        if v.mirrored() || self.mine(v.node.as_deref()) {
            return Ok(None);
        }
        let node = v.node.clone().unwrap_or_default();
        self.state
            .members
            .iter()
            .find(|m| m.name == node)
            .map(|m| Some(m.address.clone()))
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "volume '{name}' is on appliance '{node}', which is not a member"
                ))
            })
    }

    /// Creates a volume (placing it in a cluster: `api.rs` does the same
    /// without holding the manager while another appliance works).
    #[cfg(test)]
    pub fn create(&mut self, req: &CreateVolume) -> Result<Volume, ApiError> {
        match self.placement(req)? {
            None => self.create_here(req),
            Some(address) => crate::peer::call(&address, "POST", "/peer/v1/volumes", Some(req)),
        }
    }

    /// Checks a new volume's name, size, block size and tier; its block
    /// size's log2 and the tier.
    pub(crate) fn check_new(&self, req: &CreateVolume) -> Result<(u32, TierSpec), ApiError> {
        check_name("volume", &req.name).map_err(ApiError::bad_request)?;
        if self.state.volumes.iter().any(|v| v.name == req.name) {
            return Err(ApiError::conflict(format!(
                "volume '{}' already exists",
                req.name
            )));
        }
        let shift = lba_shift(req.block_size).map_err(ApiError::bad_request)?;
        let bs = u64::from(req.block_size);
        if req.size_bytes == 0 || req.size_bytes > NAMESPACE_MAX_BYTES {
            return Err(ApiError::bad_request(format!(
                "size {} is out of range (allowed: {} to {})",
                req.size_bytes,
                format_size(bs),
                format_size(NAMESPACE_MAX_BYTES)
            )));
        }
        if !req.size_bytes.is_multiple_of(bs) {
            return Err(ApiError::bad_request(format!(
                "size {} is not a multiple of the block size {}",
                req.size_bytes, req.block_size
            )));
        }
        let tier_name = req
            .tier
            .clone()
            .unwrap_or_else(|| dia::api::DEFAULT_TIER.into());
        Ok((shift, self.tier(&tier_name)?.clone()))
    }

    /// Creates a volume on this appliance: a thin namespace on the card,
    /// detached (in a cluster: exported, so other appliances reach it).
    pub fn create_here(&mut self, req: &CreateVolume) -> Result<Volume, ApiError> {
        let (shift, tier) = self.check_new(req)?;
        let tier_name = tier.name.clone();
        let nsid = self
            .card
            .create_namespace(req.size_bytes, shift, &req.name)
            .map_err(|e| ApiError::card("creating the namespace", e))?;
        if let Err(e) = self.apply_tier(&req.name, nsid, &tier) {
            let _ = self.card.delete_namespace(nsid);
            return Err(e);
        }
        if self.me().is_some() {
            if let Err(e) = self.card.attach_namespace(nsid) {
                let _ = self.card.delete_namespace(nsid);
                return Err(ApiError::card("exporting the namespace", e));
            }
        }
        self.state.volumes.push(VolumeState {
            name: req.name.clone(),
            nsid,
            size_bytes: req.size_bytes,
            block_size: req.block_size,
            tier: tier_name,
            attachment: None,
            node: self.here(),
            remote: None,
            plexes: Vec::new(),
            generation: 0,
            rebuild_after: None,
        });
        if let Err(e) = self.check_room().and_then(|()| self.save()) {
            self.state.volumes.pop();
            let _ = self.card.detach_namespace(nsid);
            let _ = self.card.delete_namespace(nsid);
            return Err(e);
        }
        info!(volume = %req.name, nsid, bytes = req.size_bytes, "volume created");
        self.show(&req.name)
    }

    /// In a cluster: whether this appliance's pool can hold what is placed
    /// on it (pool bytes are claimed in etcd, so two appliances placing on
    /// one pool at once never overcommit it).
    fn check_room(&self) -> Result<(), ApiError> {
        match self.me() {
            Some(me) => self.check_room_of(&[me]),
            None => Ok(()),
        }
    }

    /// Whether the pools of appliances `nodes` can hold what is placed on
    /// them.
    pub(crate) fn check_room_of(&self, nodes: &[&str]) -> Result<(), ApiError> {
        for m in self
            .state
            .members
            .iter()
            .filter(|m| nodes.contains(&m.name.as_str()))
        {
            let promised = self.state.promised_bytes(&m.name);
            if promised > m.pool_bytes {
                return Err(ApiError {
                    status: axum::http::StatusCode::INSUFFICIENT_STORAGE,
                    ..ApiError::conflict(format!(
                        "appliance '{}' has no room: its volumes would need {} of its {} pool",
                        m.name,
                        format_size(promised),
                        format_size(m.pool_bytes)
                    ))
                });
            }
        }
        Ok(())
    }

    /// Deletes a volume (refused while attached, unless `force`). In a
    /// cluster, on the appliance that holds its data (`api.rs` forwards
    /// there), and removed from the cluster state before its namespace.
    pub fn delete(&mut self, name: &str, force: bool) -> Result<(), ApiError> {
        if let Some(address) = self.owner_elsewhere(name)? {
            return crate::peer::call::<(), serde_json::Value>(
                &address,
                "DELETE",
                &format!("/peer/v1/volumes/{name}"),
                None,
            )
            .map(|_| ());
        }
        let i = self.volume_index(name)?;
        if let Some(a) = &self.state.volumes[i].attachment {
            let elsewhere = self.state.volumes[i]
                .remote
                .as_ref()
                .filter(|r| !self.mine(Some(&r.node)));
            if let Some(r) = elsewhere {
                return Err(ApiError::conflict(format!(
                    "volume '{name}' is attached to container '{}' on appliance '{}': detach it there first",
                    a.container, r.node
                )));
            }
            if !force {
                return Err(ApiError::conflict(format!(
                    "volume '{name}' is attached to container '{}': detach it first, or delete with --force",
                    a.container
                )));
            }
            self.detach(name)?;
        }
        if self.state.volumes[i].mirrored() {
            // The cluster forgets it first, then its copies go.
            let v = self.state.volumes.remove(i);
            self.save()?;
            self.delete_plexes(&v);
            info!(volume = %name, copies = v.plexes.len(), "mirrored volume deleted");
            return Ok(());
        }
        let v = self.state.volumes[i].clone();
        let ns = self
            .namespace_of(&v)
            .map_err(|e| ApiError::card("reading the namespace", e))?;
        if self.me().is_some() {
            // The cluster forgets it first: an appliance that raced to
            // attach it loses, and the namespace is only then deleted.
            self.state.volumes.remove(i);
            self.save()?;
            if ns.is_some() {
                let _ = self.card.detach_namespace(v.nsid);
                if let Err(e) = self.card.delete_namespace(v.nsid) {
                    warn!(volume = %name, "deleting namespace {}: {e} (left as an orphan)", v.nsid);
                }
            }
        } else {
            if ns.is_some() {
                self.card
                    .delete_namespace(v.nsid)
                    .map_err(|e| ApiError::card("deleting the namespace", e))?;
            }
            self.state.volumes.remove(i);
            self.save()?;
        }
        info!(volume = %name, nsid = v.nsid, "volume deleted");
        Ok(())
    }

    /// The NVMe/TCP target of namespace `nsid` of appliance `node` (every
    /// clustered appliance's card exports its volumes).
    pub(crate) fn target_of(&self, node: &str, nsid: u32) -> Result<dia::RemoteTarget, ApiError> {
        let owner = self
            .state
            .members
            .iter()
            .find(|m| m.name == node)
            .ok_or_else(|| ApiError::conflict(format!("appliance '{node}' is not a member")))?;
        let fabric = owner.fabric.as_deref().ok_or_else(|| {
            ApiError::conflict(format!(
                "appliance '{node}' has no fabric endpoint (diad --fabric-endpoint): its volumes are not reachable from other appliances"
            ))
        })?;
        let (ip, port) = fabric
            .rsplit_once(':')
            .and_then(|(ip, p)| Some((ip, p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "appliance '{node}': bad fabric endpoint '{fabric}'"
                ))
            })?;
        let nqn = dia::volume_nqn(&owner.serial, nsid);
        dia::RemoteTarget::new(ip, port, 1, &nqn, 0).map_err(|e| {
            ApiError::internal(format!(
                "appliance '{node}': fabric endpoint '{fabric}': {e:?}"
            ))
        })
    }

    /// The remote namespace reaching volume `v` (on another appliance)
    /// from this appliance's card: its nsid here.
    fn connect_remote(&self, v: &VolumeState) -> Result<u32, ApiError> {
        let node = v.node.as_deref().unwrap_or_default();
        let target = self.target_of(node, v.nsid).map_err(|e| ApiError {
            message: format!("volume '{}': {}", v.name, e.message),
            ..e
        })?;
        self.card
            .create_remote_namespace(&target, &v.name)
            .map_err(|e| {
                ApiError::card(
                    &format!(
                        "reaching volume '{}' on appliance '{node}' over NVMe/TCP",
                        v.name
                    ),
                    e,
                )
            })
    }

    fn node_path(device: &str) -> String {
        // The container's /dev has the same name as the appliance's.
        device.to_string()
    }

    /// Attaches a volume to a container: its device (and with `fs`, a
    /// filesystem mounted at `mount`) appears in that container only.
    pub fn attach(&mut self, name: &str, req: &Attachment) -> Result<Volume, ApiError> {
        let i = self.volume_index(name)?;
        if let Some(a) = &self.state.volumes[i].attachment {
            return Err(ApiError::conflict(format!(
                "volume '{name}' is already attached to container '{}'",
                a.container
            )));
        }
        match (&req.fs, &req.mount) {
            (Some(fs), Some(m)) => {
                if !FILESYSTEMS.contains(&fs.as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "filesystem '{fs}' is not supported (allowed: ext4)"
                    )));
                }
                if !m.starts_with('/') || m == "/" || m.split('/').any(|c| c == "..") {
                    return Err(ApiError::bad_request(format!(
                        "mount point '{m}' must be an absolute path other than / without '..'"
                    )));
                }
            }
            (None, None) => {}
            _ => return Err(ApiError::bad_request("--fs and --mount go together")),
        }
        let (pid, _) = self.resolve(&req.container)?;
        let v = self.state.volumes[i].clone();
        // Its data is in this card's pool, used directly (a mirrored
        // volume always goes through a mirror namespace).
        let here = self.mine(v.node.as_deref()) && !v.mirrored();
        // The namespace on this card: the volume's own, or a remote one
        // reaching it on the appliance with its data, or a mirror one
        // reaching all its copies.
        let nsid = if here {
            let ns = self
                .namespace_of(&v)
                .map_err(|e| ApiError::card("reading the namespace", e))?
                .ok_or_else(|| {
                    ApiError::conflict(format!("volume '{name}' is missing on the card"))
                })?;
            if !ns.attached {
                self.card
                    .attach_namespace(v.nsid)
                    .map_err(|e| ApiError::card("attaching the namespace", e))?;
            }
            v.nsid
        } else {
            let nsid = if v.mirrored() {
                self.connect_mirror(&v)?
            } else {
                self.connect_remote(&v)?
            };
            // The tier holds for the container's I/O here, where it enters.
            let tier = self.tier(&v.tier).cloned();
            if let Err(e) = tier.and_then(|t| self.apply_tier(&v.name, nsid, &t)) {
                let _ = self.card.delete_namespace(nsid);
                return Err(e);
            }
            if let Err(e) = self.card.attach_namespace(nsid) {
                let _ = self.card.delete_namespace(nsid);
                return Err(ApiError::card("attaching the remote namespace", e));
            }
            nsid
        };
        let exported = here && self.me().is_some();
        let undo = |m: &Self, node: Option<&str>| {
            if let Some(node) = node {
                let _ = m.host.in_container(
                    pid,
                    &NsOp::Unlink {
                        path: node.to_string(),
                    },
                );
            }
            if !exported {
                let _ = m.card.detach_namespace(nsid);
            }
            if !here {
                let _ = m.card.delete_namespace(nsid);
            }
        };
        let device = match self.card.namespace(nsid) {
            Ok(Namespace {
                device: Some(d), ..
            }) => d,
            Ok(_) => {
                undo(self, None);
                return Err(ApiError::internal(
                    "the namespace is attached but has no block device",
                ));
            }
            Err(e) => {
                undo(self, None);
                return Err(ApiError::card("reading the namespace", e));
            }
        };
        let node = Self::node_path(&device);
        let placed = self
            .host
            .device_numbers(&device)
            .and_then(|(major, minor)| {
                self.host.in_container(
                    pid,
                    &NsOp::Mknod {
                        path: node.clone(),
                        major,
                        minor,
                    },
                )
            });
        if let Err(e) = placed {
            undo(self, None);
            return Err(ApiError::internal(format!(
                "placing {device} in the container: {e:#}"
            )));
        }
        if let (Some(fs), Some(target)) = (&req.fs, &req.mount) {
            let mounted = self.host.ensure_ext4(&device).and_then(|()| {
                self.host.in_container(
                    pid,
                    &NsOp::Mount {
                        device: node.clone(),
                        target: target.clone(),
                        fstype: fs.clone(),
                    },
                )
            });
            if let Err(e) = mounted {
                undo(self, Some(&node));
                return Err(ApiError::conflict(format!("{e:#}")));
            }
        }
        self.state.volumes[i].attachment = Some(req.clone());
        if !here {
            self.state.volumes[i].remote = Some(RemoteAttachment {
                node: self.here().unwrap_or_default(),
                nsid,
            });
        }
        if let Err(e) = self.save() {
            if let (Some(_), Some(target)) = (&req.fs, &req.mount) {
                let _ = self.host.in_container(
                    pid,
                    &NsOp::Umount {
                        target: target.clone(),
                    },
                );
            }
            undo(self, Some(&node));
            return Err(e);
        }
        info!(volume = %name, container = %req.container, device = %device, "volume attached");
        self.show(name)
    }

    /// Detaches a volume: unmounts it in its container, removes the device
    /// there, and detaches the namespace.
    pub fn detach(&mut self, name: &str) -> Result<Volume, ApiError> {
        let i = self.volume_index(name)?;
        let v = self.state.volumes[i].clone();
        let Some(a) = &v.attachment else {
            return Err(ApiError::conflict(format!(
                "volume '{name}' is not attached"
            )));
        };
        // The namespace on this card behind the attachment.
        let nsid = match &v.remote {
            Some(r) if self.mine(Some(&r.node)) => r.nsid,
            Some(r) => {
                return Err(ApiError::conflict(format!(
                    "volume '{name}' is attached on appliance '{}': detach it there",
                    r.node
                )))
            }
            None if self.mine(v.node.as_deref()) => v.nsid,
            None => {
                return Err(ApiError::conflict(format!(
                    "volume '{name}' is attached on appliance '{}': detach it there",
                    v.node.as_deref().unwrap_or_default()
                )))
            }
        };
        let ns = match self.card.namespace(nsid) {
            Ok(ns) if ns.label == v.name => Some(ns),
            Ok(_) => None,
            Err(e) if e.errno() == Some(Errno::ENOENT) => None,
            Err(e) => return Err(ApiError::card("reading the namespace", e)),
        };
        // A container that is gone took its mounts with it.
        if let Ok((pid, _)) = self.resolve(&a.container) {
            if let Some(target) = &a.mount {
                self.host
                    .in_container(
                        pid,
                        &NsOp::Umount {
                            target: target.clone(),
                        },
                    )
                    .map_err(|e| ApiError::conflict(format!("{e:#}")))?;
            }
            if let Some(device) = ns.as_ref().and_then(|n| n.device.clone()) {
                self.host
                    .in_container(
                        pid,
                        &NsOp::Unlink {
                            path: Self::node_path(&device),
                        },
                    )
                    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            }
        }
        let remote = v.remote.is_some();
        // An exported volume stays attached on its own card.
        let keep = !remote && self.me().is_some();
        if !keep && ns.as_ref().is_some_and(|n| n.attached) {
            self.card.detach_namespace(nsid).map_err(|e| {
                if e.errno() == Some(Errno::EBUSY) {
                    ApiError::conflict(format!(
                        "volume '{name}': its device is open on the appliance"
                    ))
                } else {
                    ApiError::card("detaching the namespace", e)
                }
            })?;
        }
        if v.mirrored() && ns.is_some() {
            self.record_plex_states(i, nsid);
        }
        if remote && ns.is_some() {
            if let Err(e) = self.card.delete_namespace(nsid) {
                warn!(volume = %name, "deleting remote namespace {nsid}: {e}");
            }
        }
        self.state.volumes[i].attachment = None;
        self.state.volumes[i].remote = None;
        self.save()?;
        info!(volume = %name, "volume detached");
        self.show(name)
    }
}

#[cfg(test)]
mod tests {
    use dia::api::{Attachment, CreateVolume};

    use crate::card_device::CardDevice;
    use crate::host::NsOp;
    use crate::state;
    use crate::test_support::{manager, raw_attachment, vol, LogHost};

    #[test]
    fn create_validates_and_persists() {
        let (dir, mut m, _card, _) = manager(LogHost::default());
        let v = m.create(&vol("web", 1 << 30)).unwrap();
        assert_eq!((v.nsid, v.status.as_str()), (1, "ready"));
        let e = m.create(&vol("web", 1 << 30)).unwrap_err();
        assert_eq!(e.status, 409);
        let e = m.create(&vol("Bad Name", 1 << 30)).unwrap_err();
        assert!(e.message.contains("a-z, 0-9"), "{}", e.message);
        let e = m.create(&vol("x", 1000)).unwrap_err();
        assert!(
            e.message.contains("multiple of the block size"),
            "{}",
            e.message
        );
        let e = m.create(&vol("x", 0)).unwrap_err();
        assert!(
            e.message.contains("allowed: 4 KiB to 1 PiB"),
            "{}",
            e.message
        );
        let e = m
            .create(&CreateVolume {
                block_size: 8192,
                ..vol("x", 1 << 20)
            })
            .unwrap_err();
        assert!(
            e.message.contains("allowed: 512, 1024, 2048, 4096"),
            "{}",
            e.message
        );
        let e = m.create(&vol("huge", 200 << 30)).unwrap_err();
        assert_eq!(e.status, 507);
        let saved = state::load_or_create(&dir.path().join("s.toml")).unwrap();
        assert_eq!(saved.volumes.len(), 1);
        assert!(m.show("nope").unwrap_err().message.contains("volumes: web"));
    }

    #[test]
    fn attach_with_fs_mounts_in_the_container_and_detach_undoes_it() {
        let (_dir, mut m, card, host) = manager(LogHost::default());
        m.create(&vol("db", 1 << 30)).unwrap();
        m.create_container("c1").unwrap();
        let a = Attachment {
            container: "c1".into(),
            fs: Some("ext4".into()),
            mount: Some("/data".into()),
        };
        let v = m.attach("db", &a).unwrap();
        assert_eq!(v.device.as_deref(), Some("/dev/dia0n1"));
        assert_eq!(
            host.ops.lock().unwrap().clone(),
            vec![
                (
                    4242,
                    NsOp::Mknod {
                        path: "/dev/dia0n1".into(),
                        major: 259,
                        minor: 1
                    }
                ),
                (
                    4242,
                    NsOp::Mount {
                        device: "/dev/dia0n1".into(),
                        target: "/data".into(),
                        fstype: "ext4".into()
                    }
                ),
            ]
        );
        assert_eq!(m.attach("db", &a).unwrap_err().status, 409);
        assert_eq!(m.delete("db", false).unwrap_err().status, 409);
        assert_eq!(m.delete_container("c1").unwrap_err().status, 409);
        m.detach("db").unwrap();
        assert!(!card.namespace(1).unwrap().attached);
        assert_eq!(host.ops.lock().unwrap().len(), 4);
        m.delete("db", false).unwrap();
        assert!(card.namespaces().unwrap().is_empty());
    }

    #[test]
    fn a_failed_mount_leaves_nothing_attached() {
        let (_dir, mut m, card, _) = manager(LogHost {
            fail_mount: true,
            ..Default::default()
        });
        m.create(&vol("db", 1 << 30)).unwrap();
        let a = Attachment {
            container: "pid:7".into(),
            fs: Some("ext4".into()),
            mount: Some("/data".into()),
        };
        assert!(m.attach("db", &a).is_err());
        assert!(!card.namespace(1).unwrap().attached);
        assert!(m.show("db").unwrap().attachment.is_none());
    }

    #[test]
    fn attach_arguments_are_checked() {
        let (_dir, mut m, _, _) = manager(LogHost::default());
        m.create(&vol("db", 1 << 30)).unwrap();
        let bad = |container: &str, fs: Option<&str>, mount: Option<&str>| Attachment {
            container: container.into(),
            fs: fs.map(Into::into),
            mount: mount.map(Into::into),
        };
        let e = m.attach("db", &bad("ghost", None, None)).unwrap_err();
        assert!(e.message.contains("no container 'ghost'"), "{}", e.message);
        let e = m
            .attach("db", &bad("pid:7", Some("xfs"), Some("/d")))
            .unwrap_err();
        assert!(e.message.contains("allowed: ext4"), "{}", e.message);
        let e = m
            .attach("db", &bad("pid:7", Some("ext4"), None))
            .unwrap_err();
        assert!(e.message.contains("go together"), "{}", e.message);
        let e = m
            .attach("db", &bad("pid:7", Some("ext4"), Some("data")))
            .unwrap_err();
        assert!(e.message.contains("absolute"), "{}", e.message);
        let e = m.attach("db", &bad("pid:x", None, None)).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn force_delete_detaches_first() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        m.create(&vol("db", 1 << 30)).unwrap();
        m.attach("db", &raw_attachment("pid:7")).unwrap();
        m.delete("db", true).unwrap();
        assert!(card.namespaces().unwrap().is_empty());
    }
}
