//! What diad's tests share: one in-memory card device that behaves as the
//! card does where the daemon's logic depends on it (namespaces, admission
//! of QoS floors, ports), a host that records what would be done in
//! containers, and a manager over both with a state file in a temp dir.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dia::api::CreateVolume;
use dia::{Identity, Namespace, Pool};
use dia_abi::card::{MirrorNamespaceCreate, MirrorStatus, QosSettings};
use nix::errno::Errno;

use crate::card_device::CardDevice;
use crate::host::{Host, NsOp};
use crate::manager::Manager;
use crate::state::DesiredState;

/// An in-memory card device (the real card runs beside QEMU).
pub(crate) struct MemCard {
    /// Namespaces, as the card lists them.
    pub(crate) ns: Mutex<Vec<Namespace>>,
    /// Pool bytes namespaces may take in all.
    pub(crate) capacity: u64,
    /// Each namespace's service level, as set.
    pub(crate) qos: Mutex<HashMap<u32, QosSettings>>,
    pub(crate) ports: Mutex<Vec<dia::Port>>,
    /// What Identify answers; `None`: the card does not answer (a timeout).
    pub(crate) identity: Option<Identity>,
    /// Mirrored namespaces' tables, as created.
    pub(crate) mirrors: Mutex<HashMap<u32, MirrorNamespaceCreate>>,
    /// Subsystem NQNs of plex targets that cannot be reached: out of sync,
    /// path down.
    pub(crate) down: Mutex<Vec<String>>,
}

impl Default for MemCard {
    fn default() -> Self {
        Self {
            ns: Mutex::default(),
            capacity: 0,
            qos: Mutex::default(),
            ports: Mutex::default(),
            identity: Some(identity()),
            mirrors: Mutex::default(),
            down: Mutex::default(),
        }
    }
}

/// The identity a [`MemCard`] reports unless told otherwise: QoS capacity
/// 10000 IOPS and 1 GiB/s.
pub(crate) fn identity() -> Identity {
    Identity {
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
    }
}

fn err(errno: Errno) -> dia::Error {
    dia::Error::Ioctl {
        request: "test",
        errno,
    }
}

impl CardDevice for MemCard {
    fn identify(&self) -> Result<Identity, dia::Error> {
        self.identity.clone().ok_or(dia::Error::Timeout {
            request: "DIA_IOC_IDENTIFY",
        })
    }
    /// Admits floors as the card does: every other namespace's
    /// floors plus these must fit the capacity `identify` reports.
    fn set_qos(&self, nsid: u32, q: &QosSettings) -> Result<(), dia::Error> {
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
    fn create_remote_namespace(
        &self,
        target: &dia::RemoteTarget,
        label: &str,
    ) -> Result<u32, dia::Error> {
        let mut ns = self.ns.lock().unwrap();
        let nsid = (1..).find(|i| !ns.iter().any(|n| n.nsid == *i)).unwrap();
        let _ = target;
        ns.push(Namespace {
            nsid,
            label: label.into(),
            block_size: 4096,
            size_bytes: 1 << 30,
            used_bytes: 0,
            attached: false,
            device: None,
        });
        Ok(nsid)
    }
    /// Records the table; the namespace is 1 GiB. Its plexes are in sync
    /// as created (`PLEX_NEW` ones out of sync, every region behind).
    fn create_mirror_namespace(&self, create: &MirrorNamespaceCreate) -> Result<u32, dia::Error> {
        create.validate().map_err(|_| err(Errno::EINVAL))?;
        let end = create.label.iter().position(|&b| b == 0).unwrap_or(64);
        let label = String::from_utf8_lossy(&create.label[..end]).into_owned();
        let nsid = self.create_remote_namespace(&create.plexes[0].target, &label)?;
        self.mirrors.lock().unwrap().insert(nsid, *create);
        Ok(nsid)
    }
    /// Keeps the plexes already there as they were, takes the new table's
    /// order; refuses (`EBUSY`) a table without a plex in sync now.
    fn set_mirror_plexes(
        &self,
        nsid: u32,
        plexes: &MirrorNamespaceCreate,
    ) -> Result<(), dia::Error> {
        plexes.validate().map_err(|_| err(Errno::EINVAL))?;
        let mut mirrors = self.mirrors.lock().unwrap();
        let m = mirrors.get_mut(&nsid).ok_or(err(Errno::EINVAL))?;
        let kept_in_sync = plexes.plexes().iter().any(|p| {
            m.plexes()
                .iter()
                .any(|q| q.target == p.target && q.state == dia_abi::card::PLEX_IN_SYNC)
        });
        if !kept_in_sync {
            return Err(err(Errno::EBUSY));
        }
        let old = *m;
        m.plex_count = plexes.plex_count;
        m.plexes = plexes.plexes;
        for p in m.plexes.iter_mut().take(usize::from(m.plex_count)) {
            if let Some(q) = old.plexes().iter().find(|q| q.target == p.target) {
                p.state = q.state;
            }
        }
        m.generation += 1;
        Ok(())
    }
    fn mirror_status(&self, nsid: u32) -> Result<MirrorStatus, dia::Error> {
        let mirrors = self.mirrors.lock().unwrap();
        let m = mirrors.get(&nsid).ok_or(err(Errno::EINVAL))?;
        let regions = (1u64 << 30) >> dia_abi::card::MIRROR_REGION_SHIFT;
        let mut st = MirrorStatus {
            generation: m.generation,
            regions,
            plex_count: m.plex_count,
            ..Default::default()
        };
        let down = self.down.lock().unwrap();
        for (i, p) in m.plexes().iter().enumerate() {
            st.plexes[i].path = dia_abi::card::REMOTE_PATH_LIVE;
            if p.target
                .subnqn_str()
                .is_some_and(|n| down.iter().any(|d| d == n))
            {
                st.plexes[i].state = dia_abi::card::PLEX_OUT_OF_SYNC;
                st.plexes[i].path = dia_abi::card::REMOTE_PATH_DOWN;
            } else if p.state == dia_abi::card::PLEX_NEW {
                st.plexes[i].state = dia_abi::card::PLEX_OUT_OF_SYNC;
                st.plexes[i].dirty_regions = regions;
            }
        }
        Ok(st)
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
        self.mirrors.lock().unwrap().remove(&nsid);
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

/// A manager over a [`MemCard`] (100 GiB pool) and `host`, its state file
/// in the returned temp dir.
pub(crate) fn manager(host: LogHost) -> (tempfile::TempDir, Manager, Arc<MemCard>, Arc<LogHost>) {
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

/// An attachment of the raw device (no filesystem) to `container`.
pub(crate) fn raw_attachment(container: &str) -> dia::api::Attachment {
    dia::api::Attachment {
        container: container.into(),
        fs: None,
        mount: None,
    }
}

/// A request for a 4 KiB-block volume in the default tier.
pub(crate) fn vol(name: &str, size: u64) -> CreateVolume {
    CreateVolume {
        name: name.into(),
        size_bytes: size,
        block_size: 4096,
        tier: None,
        node: None,
        label: None,
        mirrors: None,
        rebuild_after: None,
    }
}
