//! Volumes and containers: the desired state, the card and the appliance's
//! containers kept in step. Every change is checked first (names, sizes,
//! block sizes, attachments), applied to the card, then saved to the state
//! file; a step that fails undoes the ones before it. At start `reconcile`
//! compares the state with the card and reports differences: a volume whose
//! namespace is gone is reported `missing` (never silently recreated, since
//! its data is gone), a namespace no volume owns is listed as an orphan.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use dia::api::{
    check_name, format_size, lba_shift, Attachment, Container, CreateVolume, Volume, VolumeList,
};
use dia::Namespace;
use dia_abi::card::NAMESPACE_MAX_BYTES;
use nix::errno::Errno;
use tracing::{info, warn};

use crate::card::CardDevice;
use crate::containers::{Host, NsOp};
use crate::error::ApiError;
use crate::state::{self, ContainerState, DesiredState, VolumeState};

/// Filesystems `attach --fs` can make and mount.
pub const FILESYSTEMS: [&str; 1] = ["ext4"];

/// The volume and container logic.
pub struct Manager {
    pub(crate) card: Arc<dyn CardDevice>,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) state: DesiredState,
    pub(crate) path: PathBuf,
}

fn errno(e: &dia::Error) -> Option<Errno> {
    e.errno()
}

impl Manager {
    /// Wraps the card, the host and the loaded state (saved to `path`).
    pub fn new(
        card: Arc<dyn CardDevice>,
        host: Arc<dyn Host>,
        state: DesiredState,
        path: PathBuf,
    ) -> Self {
        Self {
            card,
            host,
            state,
            path,
        }
    }

    /// The card.
    pub fn card(&self) -> &Arc<dyn CardDevice> {
        &self.card
    }

    pub(crate) fn save(&self) -> Result<(), ApiError> {
        state::save(&self.path, &self.state)
            .map_err(|e| ApiError::internal(format!("saving the state: {e:#}")))
    }

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
            Err(e) if errno(&e) == Some(Errno::ENOENT) => Ok(None),
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
        }
    }

    /// Every volume, and the card's namespaces no volume owns.
    pub fn list(&self) -> VolumeList {
        match self.card.namespaces() {
            Ok(all) => {
                let by_id: HashMap<u32, &Namespace> = all.iter().map(|n| (n.nsid, n)).collect();
                let owned = |n: &Namespace| {
                    self.state
                        .volumes
                        .iter()
                        .any(|v| v.nsid == n.nsid && v.name == n.label)
                };
                VolumeList {
                    volumes: self
                        .state
                        .volumes
                        .iter()
                        .map(|v| {
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
        let ns = self
            .namespace_of(v)
            .map_err(|e| ApiError::card("reading the namespace", e))?;
        Ok(Self::view(v, Ok(ns.as_ref())))
    }

    /// Creates a volume: a thin namespace on the card, detached.
    pub fn create(&mut self, req: &CreateVolume) -> Result<Volume, ApiError> {
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
        let tier = self.tier(&tier_name)?.clone();
        let nsid = self
            .card
            .create_namespace(req.size_bytes, shift, &req.name)
            .map_err(|e| ApiError::card("creating the namespace", e))?;
        if let Err(e) = self.apply_tier(&req.name, nsid, &tier) {
            let _ = self.card.delete_namespace(nsid);
            return Err(e);
        }
        self.state.volumes.push(VolumeState {
            name: req.name.clone(),
            nsid,
            size_bytes: req.size_bytes,
            block_size: req.block_size,
            tier: tier_name,
            attachment: None,
        });
        if let Err(e) = self.save() {
            self.state.volumes.pop();
            let _ = self.card.delete_namespace(nsid);
            return Err(e);
        }
        info!(volume = %req.name, nsid, bytes = req.size_bytes, "volume created");
        self.show(&req.name)
    }

    /// Deletes a volume (refused while attached, unless `force`).
    pub fn delete(&mut self, name: &str, force: bool) -> Result<(), ApiError> {
        let i = self.volume_index(name)?;
        if let Some(a) = &self.state.volumes[i].attachment {
            if !force {
                return Err(ApiError::conflict(format!(
                    "volume '{name}' is attached to container '{}': detach it first, or delete with --force",
                    a.container
                )));
            }
            self.detach(name)?;
        }
        let v = self.state.volumes[i].clone();
        if self
            .namespace_of(&v)
            .map_err(|e| ApiError::card("reading the namespace", e))?
            .is_some()
        {
            self.card
                .delete_namespace(v.nsid)
                .map_err(|e| ApiError::card("deleting the namespace", e))?;
        }
        self.state.volumes.remove(i);
        self.save()?;
        info!(volume = %name, nsid = v.nsid, "volume deleted");
        Ok(())
    }

    /// `(pid, registered name)` of a container id: a diad container's
    /// name, or `pid:N` for any process's namespaces.
    pub(crate) fn resolve(&self, id: &str) -> Result<(u32, Option<String>), ApiError> {
        if let Some(n) = id.strip_prefix("pid:") {
            let pid: u32 = n.parse().map_err(|_| {
                ApiError::bad_request(format!("container '{id}': pid:N needs a number"))
            })?;
            if !self.host.container_alive(pid, None) {
                return Err(ApiError::not_found(format!(
                    "no process {pid} for container '{id}'"
                )));
            }
            return Ok((pid, None));
        }
        let c = self
            .state
            .containers
            .iter()
            .find(|c| c.name == id)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .state
                    .containers
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                ApiError::not_found(format!(
                    "no container '{id}' (containers: {}; or give pid:N)",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        if !self.host.container_alive(c.pid, Some(&c.name)) {
            return Err(ApiError::conflict(format!(
                "container '{id}' is gone (its init {} exited)",
                c.pid
            )));
        }
        Ok((c.pid, Some(c.name.clone())))
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
        let ns = self
            .namespace_of(&v)
            .map_err(|e| ApiError::card("reading the namespace", e))?
            .ok_or_else(|| ApiError::conflict(format!("volume '{name}' is missing on the card")))?;
        if !ns.attached {
            self.card
                .attach_namespace(v.nsid)
                .map_err(|e| ApiError::card("attaching the namespace", e))?;
        }
        let undo = |m: &Self, node: Option<&str>| {
            if let Some(node) = node {
                let _ = m.host.in_container(
                    pid,
                    &NsOp::Unlink {
                        path: node.to_string(),
                    },
                );
            }
            let _ = m.card.detach_namespace(v.nsid);
        };
        let device = match self.card.namespace(v.nsid) {
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
        self.save()?;
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
        let ns = self
            .namespace_of(&v)
            .map_err(|e| ApiError::card("reading the namespace", e))?;
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
        if ns.as_ref().is_some_and(|n| n.attached) {
            self.card.detach_namespace(v.nsid).map_err(|e| {
                if errno(&e) == Some(Errno::EBUSY) {
                    ApiError::conflict(format!(
                        "volume '{name}': its device is open on the appliance"
                    ))
                } else {
                    ApiError::card("detaching the namespace", e)
                }
            })?;
        }
        self.state.volumes[i].attachment = None;
        self.save()?;
        info!(volume = %name, "volume detached");
        self.show(name)
    }

    /// Containers diad started.
    pub fn containers(&self) -> Vec<Container> {
        self.state
            .containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                pid: c.pid,
                status: if self.host.container_alive(c.pid, Some(&c.name)) {
                    "running"
                } else {
                    "gone"
                }
                .into(),
                volumes: self
                    .state
                    .volumes
                    .iter()
                    .filter(|v| v.attachment.as_ref().is_some_and(|a| a.container == c.name))
                    .map(|v| v.name.clone())
                    .collect(),
                ports: self
                    .state
                    .ports
                    .iter()
                    .filter(|p| p.container == c.name)
                    .map(crate::state::PortState::name)
                    .collect(),
            })
            .collect()
    }

    /// Starts a container.
    pub fn create_container(&mut self, name: &str) -> Result<Container, ApiError> {
        check_name("container", name).map_err(ApiError::bad_request)?;
        if self.state.containers.iter().any(|c| c.name == name) {
            return Err(ApiError::conflict(format!(
                "container '{name}' already exists"
            )));
        }
        let pid = self.host.start_container(name)?;
        self.state.containers.push(ContainerState {
            name: name.into(),
            pid,
        });
        if let Err(e) = self.save() {
            let _ = self.host.stop_container(pid);
            self.state.containers.pop();
            return Err(e);
        }
        info!(container = %name, pid, "container started");
        self.containers()
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ApiError::internal("container vanished"))
    }

    /// Stops a container (refused while volumes are attached to it).
    pub fn delete_container(&mut self, name: &str) -> Result<(), ApiError> {
        let i = self
            .state
            .containers
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ApiError::not_found(format!("no container '{name}'")))?;
        let attached: Vec<&str> = self
            .state
            .volumes
            .iter()
            .filter(|v| v.attachment.as_ref().is_some_and(|a| a.container == name))
            .map(|v| v.name.as_str())
            .collect();
        if !attached.is_empty() {
            return Err(ApiError::conflict(format!(
                "container '{name}' has volumes attached ({}): detach them first",
                attached.join(", ")
            )));
        }
        // Its ports go with it (their addresses are released).
        self.detach_ports_of(name)?;
        let c = self.state.containers.remove(i);
        if self.host.container_alive(c.pid, Some(&c.name)) {
            self.host.stop_container(c.pid)?;
        }
        self.save()?;
        info!(container = %name, "container stopped");
        Ok(())
    }

    /// Compares the state with the card at start; returns what differs
    /// (also logged). Attached volumes whose namespace was detached are
    /// attached again.
    pub fn reconcile(&mut self) -> Vec<String> {
        let mut report = Vec::new();
        let all = match self.card.namespaces() {
            Ok(all) => all,
            Err(e) => {
                report.push(format!("card unavailable, nothing reconciled: {e}"));
                for r in &report {
                    warn!("{r}");
                }
                return report;
            }
        };
        let by_id: HashMap<u32, &Namespace> = all.iter().map(|n| (n.nsid, n)).collect();
        for v in &self.state.volumes {
            match by_id.get(&v.nsid).filter(|n| n.label == v.name) {
                None => report.push(format!(
                    "volume '{}' (namespace {}) is in the state file but not on the card: reported as missing, not recreated",
                    v.name, v.nsid
                )),
                Some(ns) => {
                    let applied = self
                        .state
                        .tiers
                        .iter()
                        .find(|t| t.name == v.tier)
                        .map(|t| self.apply_tier(&v.name, v.nsid, t));
                    match applied {
                        Some(Ok(())) => {}
                        Some(Err(e)) => report.push(format!("volume '{}': tier '{}' not applied: {}", v.name, v.tier, e.message)),
                        None => report.push(format!("volume '{}': its tier '{}' does not exist", v.name, v.tier)),
                    }
                    if v.attachment.is_some() && !ns.attached {
                        match self.card.attach_namespace(v.nsid) {
                            Ok(()) => report.push(format!("volume '{}': namespace {} attached again", v.name, v.nsid)),
                            Err(e) => report.push(format!("volume '{}': cannot attach namespace {}: {e}", v.name, v.nsid)),
                        }
                    }
                    if let Some(a) = &v.attachment {
                        if self.resolve(&a.container).is_err() {
                            report.push(format!(
                                "volume '{}' is attached to container '{}', which is gone: detach it",
                                v.name, a.container
                            ));
                        }
                    }
                }
            }
        }
        for n in &all {
            if !self
                .state
                .volumes
                .iter()
                .any(|v| v.nsid == n.nsid && v.name == n.label)
            {
                report.push(format!(
                    "orphan namespace {} (label '{}', {}) on the card: no volume owns it",
                    n.nsid,
                    n.label,
                    format_size(n.size_bytes)
                ));
            }
        }
        for c in &self.state.containers {
            if !self.host.container_alive(c.pid, Some(&c.name)) {
                report.push(format!(
                    "container '{}' is gone (init {} exited)",
                    c.name, c.pid
                ));
            }
        }
        self.reconcile_ports(&mut report);
        for r in &report {
            warn!("{r}");
        }
        report
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use dia::{Identity, Pool};

    use super::*;

    /// An in-memory card for the volume logic (the real one runs in QEMU).
    #[derive(Default)]
    pub(crate) struct MemCard {
        ns: Mutex<Vec<Namespace>>,
        capacity: u64,
        qos: Mutex<HashMap<u32, dia_abi::card::QosSettings>>,
        pub(crate) ports: Mutex<Vec<dia::Port>>,
    }

    fn err(errno: Errno) -> dia::Error {
        dia::Error::Ioctl {
            request: "test",
            errno,
        }
    }

    impl CardDevice for MemCard {
        fn identify(&self) -> Result<Identity, dia::Error> {
            Ok(Identity {
                model: "mem".into(),
                serial: "M".into(),
                firmware: "0".into(),
                interface_version: "1.0".into(),
                abi_version: 3,
                vendor_id: 0,
                capabilities: vec![],
                max_io_queues: 0,
                io_queues: 0,
                max_queue_entries: 0,
                msix_vectors: 0,
                max_namespaces: 128,
                max_ports: 0,
                pool_bytes: 0,
                qos_capacity_iops: 10_000,
                qos_capacity_bps: 1 << 30,
            })
        }
        /// Admits floors as the card does: every other namespace's
        /// floors plus these must fit the capacity `identify` reports.
        fn set_qos(&self, nsid: u32, q: &dia_abi::card::QosSettings) -> Result<(), dia::Error> {
            let id = self.identify()?;
            let mut qos = self.qos.lock().unwrap();
            let (iops, bytes) = qos
                .iter()
                .filter(|(n, _)| **n != nsid)
                .fold((q.min_iops, q.min_bytes_per_s), |(i, b), (_, o)| {
                    (i + o.min_iops, b + o.min_bytes_per_s)
                });
            if iops > id.qos_capacity_iops || bytes > id.qos_capacity_bps {
                let over = iops.saturating_sub(id.qos_capacity_iops);
                return Err(dia::Error::OverCapacity {
                    excess_iops: u32::try_from(over).unwrap_or(u32::MAX),
                });
            }
            qos.insert(nsid, *q);
            Ok(())
        }
        fn stats(&self, _nsid: u32) -> Result<dia::Stats, dia::Error> {
            Err(err(Errno::ENOTSUP))
        }
        fn create_namespace(&self, size: u64, shift: u32, label: &str) -> Result<u32, dia::Error> {
            let mut ns = self.ns.lock().unwrap();
            if ns.iter().map(|n| n.size_bytes).sum::<u64>() + size > self.capacity {
                return Err(err(Errno::ENOSPC));
            }
            let nsid = (1..).find(|i| !ns.iter().any(|n| n.nsid == *i)).unwrap();
            ns.push(Namespace {
                nsid,
                label: label.into(),
                block_size: 1 << shift,
                size_bytes: size,
                used_bytes: 0,
                attached: false,
                device: None,
            });
            Ok(nsid)
        }
        fn delete_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
            let mut ns = self.ns.lock().unwrap();
            let i = ns
                .iter()
                .position(|n| n.nsid == nsid)
                .ok_or(err(Errno::ENOENT))?;
            if ns[i].attached {
                return Err(err(Errno::EBUSY));
            }
            ns.remove(i);
            self.qos.lock().unwrap().remove(&nsid);
            Ok(())
        }
        fn attach_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
            let mut ns = self.ns.lock().unwrap();
            let n = ns
                .iter_mut()
                .find(|n| n.nsid == nsid)
                .ok_or(err(Errno::ENOENT))?;
            n.attached = true;
            n.device = Some(format!("/dev/dia0n{nsid}"));
            Ok(())
        }
        fn detach_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
            let mut ns = self.ns.lock().unwrap();
            let n = ns
                .iter_mut()
                .find(|n| n.nsid == nsid)
                .ok_or(err(Errno::ENOENT))?;
            n.attached = false;
            n.device = None;
            Ok(())
        }
        fn namespace(&self, nsid: u32) -> Result<Namespace, dia::Error> {
            self.ns
                .lock()
                .unwrap()
                .iter()
                .find(|n| n.nsid == nsid)
                .cloned()
                .ok_or(err(Errno::ENOENT))
        }
        fn namespaces(&self) -> Result<Vec<Namespace>, dia::Error> {
            Ok(self.ns.lock().unwrap().clone())
        }
        fn pool(&self) -> Result<Pool, dia::Error> {
            Err(err(Errno::ENOTSUP))
        }
        fn create_port(&self, s: dia::PortSettings) -> Result<dia::NewPort, dia::Error> {
            let mut ports = self.ports.lock().unwrap();
            let port = (1..).find(|i| !ports.iter().any(|p| p.port == *i)).unwrap();
            let ifname = format!("dia0p{port}");
            ports.push(dia::Port {
                port,
                mac: format!("02:d1:00:00:00:{port:02x}"),
                ifname: ifname.clone(),
                ifindex: 10 + port,
                link_up: true,
                settings: s,
                counters: Default::default(),
            });
            Ok(dia::NewPort {
                port,
                mac: format!("02:d1:00:00:00:{port:02x}"),
                ifname,
            })
        }
        fn delete_port(&self, port: u32) -> Result<(), dia::Error> {
            let mut ports = self.ports.lock().unwrap();
            let i = ports
                .iter()
                .position(|p| p.port == port)
                .ok_or(err(Errno::ENOENT))?;
            ports.remove(i);
            Ok(())
        }
        fn set_port(&self, port: u32, s: dia::PortSettings) -> Result<(), dia::Error> {
            let mut ports = self.ports.lock().unwrap();
            let p = ports
                .iter_mut()
                .find(|p| p.port == port)
                .ok_or(err(Errno::ENOENT))?;
            p.settings = s;
            Ok(())
        }
        fn port(&self, port: u32) -> Result<dia::Port, dia::Error> {
            self.ports
                .lock()
                .unwrap()
                .iter()
                .find(|p| p.port == port)
                .cloned()
                .ok_or(err(Errno::ENOENT))
        }
        fn ports(&self) -> Result<Vec<dia::Port>, dia::Error> {
            Ok(self.ports.lock().unwrap().clone())
        }
    }

    /// Records what would be done in containers.
    #[derive(Default)]
    pub(crate) struct LogHost {
        pub(crate) ops: Mutex<Vec<(u32, NsOp)>>,
        pub(crate) fail_mount: bool,
        pub(crate) fail_net: bool,
        pub(crate) moved: Mutex<Vec<(String, u32)>>,
    }

    impl Host for LogHost {
        fn start_container(&self, _name: &str) -> anyhow::Result<u32> {
            Ok(4242)
        }
        fn container_alive(&self, pid: u32, _name: Option<&str>) -> bool {
            pid == 4242 || pid == 7
        }
        fn stop_container(&self, _pid: u32) -> anyhow::Result<()> {
            Ok(())
        }
        fn move_link(&self, ifname: &str, pid: u32) -> anyhow::Result<()> {
            self.moved.lock().unwrap().push((ifname.into(), pid));
            Ok(())
        }
        fn in_container(&self, pid: u32, op: &NsOp) -> anyhow::Result<()> {
            if self.fail_mount && matches!(op, NsOp::Mount { .. }) {
                anyhow::bail!("mount failed");
            }
            if self.fail_net && matches!(op, NsOp::NetUp { .. }) {
                anyhow::bail!("netlink failed");
            }
            self.ops.lock().unwrap().push((pid, op.clone()));
            Ok(())
        }
        fn device_numbers(&self, _device: &str) -> anyhow::Result<(u64, u64)> {
            Ok((259, 1))
        }
        fn ensure_ext4(&self, _device: &str) -> anyhow::Result<()> {
            Ok(())
        }
    }

    pub(crate) fn manager(
        host: LogHost,
    ) -> (tempfile::TempDir, Manager, Arc<MemCard>, Arc<LogHost>) {
        let dir = tempfile::tempdir().unwrap();
        let card = Arc::new(MemCard {
            capacity: 100 << 30,
            ..Default::default()
        });
        let host = Arc::new(host);
        let m = Manager::new(
            card.clone(),
            host.clone(),
            DesiredState::default(),
            dir.path().join("s.toml"),
        );
        (dir, m, card, host)
    }

    fn vol(name: &str, size: u64) -> CreateVolume {
        CreateVolume {
            name: name.into(),
            size_bytes: size,
            block_size: 4096,
            tier: None,
        }
    }

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
        m.attach(
            "db",
            &Attachment {
                container: "pid:7".into(),
                fs: None,
                mount: None,
            },
        )
        .unwrap();
        m.delete("db", true).unwrap();
        assert!(card.namespaces().unwrap().is_empty());
    }

    #[test]
    fn reconcile_reports_missing_and_orphans_without_recreating() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        m.create(&vol("kept", 1 << 30)).unwrap();
        m.create(&vol("lost", 1 << 30)).unwrap();
        card.delete_namespace(2).unwrap();
        card.create_namespace(1 << 20, 12, "stranger").unwrap();
        let report = m.reconcile().join("\n");
        assert!(
            report.contains("volume 'lost' (namespace 2) is in the state file but not on the card"),
            "{report}"
        );
        assert!(report.contains("orphan namespace"), "{report}");
        assert!(report.contains("stranger"), "{report}");
        let list = m.list();
        let lost = list.volumes.iter().find(|v| v.name == "lost").unwrap();
        assert_eq!(lost.status, "missing");
        assert_eq!(list.orphans.len(), 1);
        assert_eq!(card.namespaces().unwrap().len(), 2, "nothing recreated");
    }

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
