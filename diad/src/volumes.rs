//! Volumes: thin namespaces on the card, attached to containers. Every
//! change is checked first (names, sizes, block sizes, attachments), applied
//! to the card and the container, then saved to the state file; a step that
//! fails undoes the ones before it.

use std::collections::HashMap;

use dia::api::{check_name, format_size, lba_shift, Attachment, CreateVolume, Volume, VolumeList};
use dia::Namespace;
use dia_abi::card::NAMESPACE_MAX_BYTES;
use nix::errno::Errno;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::host::NsOp;
use crate::manager::Manager;
use crate::state::VolumeState;

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
                if e.errno() == Some(Errno::EBUSY) {
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
}

#[cfg(test)]
mod tests {
    use dia::api::{Attachment, CreateVolume};

    use crate::card_device::CardDevice;
    use crate::host::NsOp;
    use crate::state;
    use crate::test_support::{manager, vol, LogHost};

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
}
