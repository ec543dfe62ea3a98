//! libdia: the userspace side of the `/dev/dia` ioctl ABI. The request
//! numbers and argument structs come from `dia_abi::ioctl` (the one
//! definition, shared with the kernel module); this crate wraps them in typed
//! calls (with nix's ioctl macros) and errors that say what went wrong in a
//! user's terms.

pub mod api;
mod error;
mod identity;
mod namespace;
pub mod network;
mod port;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub use dia_abi::card::{
    MirrorNamespaceCreate, MirrorPlex, MirrorStatus, PlexStatus, RemoteTarget,
};

/// The NQN a card with serial `serial` exports its namespace `nsid` as
/// (NVMe/TCP subsystem; the volume is its namespace 1).
pub fn volume_nqn(serial: &str, nsid: u32) -> String {
    format!("{}{serial}:ns{nsid}", dia_abi::card::VOLUME_NQN_PREFIX)
}
use dia_abi::card::{QosSettings, RemoteNamespaceCreate};
use dia_abi::ioctl::*;

pub use error::Error;
pub use identity::Identity;
pub use namespace::{Namespace, Pool, Stats};
pub use port::{format_mac, NetLimits, NewPort, Port, PortCounters, PortSettings};

/// Where the first card's control node lives.
pub const DEFAULT_DEVICE: &str = "/dev/dia";

mod sys {
    use dia_abi::ioctl::*;
    nix::ioctl_read_bad!(identify, DIA_IOC_IDENTIFY, DiaIdentity);
    nix::ioctl_readwrite_bad!(ns_create, DIA_IOC_NS_CREATE, DiaNsCreate);
    nix::ioctl_readwrite_bad!(
        ns_create_remote,
        DIA_IOC_NS_CREATE_REMOTE,
        DiaNsCreateRemote
    );
    nix::ioctl_readwrite_bad!(
        ns_create_mirror,
        DIA_IOC_NS_CREATE_MIRROR,
        DiaNsCreateMirror
    );
    nix::ioctl_write_ptr_bad!(ns_set_mirror, DIA_IOC_NS_SET_MIRROR, DiaNsSetMirror);
    nix::ioctl_readwrite_bad!(
        ns_mirror_status,
        DIA_IOC_NS_MIRROR_STATUS,
        DiaNsMirrorStatus
    );
    nix::ioctl_write_ptr_bad!(ns_delete, DIA_IOC_NS_DELETE, DiaNsId);
    nix::ioctl_write_ptr_bad!(ns_attach, DIA_IOC_NS_ATTACH, DiaNsId);
    nix::ioctl_write_ptr_bad!(ns_detach, DIA_IOC_NS_DETACH, DiaNsId);
    nix::ioctl_readwrite_bad!(ns_info, DIA_IOC_NS_INFO, DiaNsInfo);
    nix::ioctl_read_bad!(ns_list, DIA_IOC_NS_LIST, DiaNsList);
    nix::ioctl_read_bad!(pool_info, DIA_IOC_POOL_INFO, DiaPoolInfo);
    nix::ioctl_readwrite_bad!(ns_set_qos, DIA_IOC_NS_SET_QOS, DiaNsQos);
    nix::ioctl_readwrite_bad!(ns_stats, DIA_IOC_NS_STATS, DiaNsStats);
    nix::ioctl_readwrite_bad!(port_create, DIA_IOC_PORT_CREATE, DiaPortCreate);
    nix::ioctl_write_ptr_bad!(port_delete, DIA_IOC_PORT_DELETE, DiaPortId);
    nix::ioctl_write_ptr_bad!(port_set, DIA_IOC_PORT_SET, DiaPortSet);
    nix::ioctl_readwrite_bad!(port_info, DIA_IOC_PORT_INFO, DiaPortInfo);
    nix::ioctl_read_bad!(port_list, DIA_IOC_PORT_LIST, DiaPortList);
}

/// An open card control node.
#[derive(Debug)]
pub struct Card {
    file: File,
    path: PathBuf,
}

impl Card {
    /// Opens the card's control node (e.g. `/dev/dia`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::open(&path, source))?;
        Ok(Self { file, path })
    }

    /// The path this card was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the card for its identity (the driver issues Identify afresh).
    pub fn identify(&self) -> Result<Identity, Error> {
        let mut raw = DiaIdentity::default();
        // SAFETY: `raw` is a valid, writable `DiaIdentity`, the exact type the
        // request number encodes; the fd is open for the call's duration.
        unsafe { sys::identify(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_IDENTIFY", DIA_IOC_IDENTIFY, e))?;
        Ok(Identity::from(&raw))
    }

    /// Creates a thin namespace of `size_bytes` (a multiple of the block
    /// size `1 << lba_shift`, shift `LBA_SHIFT_MIN..=LBA_SHIFT_MAX`)
    /// labelled `label` (shorter than [`DIA_LABEL_LEN`] bytes); returns its
    /// id. It starts detached.
    pub fn create_namespace(
        &self,
        size_bytes: u64,
        lba_shift: u32,
        label: &str,
    ) -> Result<u32, Error> {
        let mut raw = DiaNsCreate {
            size_bytes,
            lba_shift,
            ..DiaNsCreate::default()
        };
        let l = label.as_bytes();
        if l.len() >= DIA_LABEL_LEN {
            return Err(Error::Ioctl {
                request: "DIA_IOC_NS_CREATE",
                errno: nix::errno::Errno::ENAMETOOLONG,
            });
        }
        raw.label[..l.len()].copy_from_slice(l);
        // SAFETY: `raw` is a valid DiaNsCreate, the type the request encodes.
        unsafe { sys::ns_create(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_CREATE", DIA_IOC_NS_CREATE, e))?;
        Ok(raw.nsid)
    }

    /// Creates a namespace whose data lives in namespace `target.nsid` of
    /// the NVMe/TCP target `target` (the card connects once to learn its
    /// size), labelled `label`; returns its id. It starts detached and is
    /// used like any other: attach it and `/dev/dia<card>n<nsid>` appears.
    pub fn create_remote_namespace(
        &self,
        target: &RemoteTarget,
        label: &str,
    ) -> Result<u32, Error> {
        let mut raw = DiaNsCreateRemote {
            nsid: 0,
            reserved: 0,
            create: RemoteNamespaceCreate {
                target: *target,
                label: [0; DIA_LABEL_LEN],
                reserved: [0; 136],
            },
        };
        let l = label.as_bytes();
        if l.len() >= DIA_LABEL_LEN {
            return Err(Error::Ioctl {
                request: "DIA_IOC_NS_CREATE_REMOTE",
                errno: nix::errno::Errno::ENAMETOOLONG,
            });
        }
        raw.create.label[..l.len()].copy_from_slice(l);
        // SAFETY: `raw` is a valid DiaNsCreateRemote, the type the request encodes.
        unsafe { sys::ns_create_remote(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_CREATE_REMOTE", DIA_IOC_NS_CREATE_REMOTE, e))?;
        Ok(raw.nsid)
    }

    /// Creates a mirrored namespace: its data is kept in each plex of
    /// `create` (label, the generation the in-sync plexes were last in sync
    /// at, 1..=[`dia_abi::card::MIRROR_MAX_PLEXES`] plexes, each an NVMe/TCP
    /// target that is in sync or new); returns its id. It starts detached
    /// and is attached and used like any other namespace.
    ///
    /// A table that fails [`MirrorNamespaceCreate::validate`] is refused by
    /// the driver with `EINVAL`; then the card's answers: `EHOSTUNREACH`
    /// when no in-sync plex could be reached,
    /// `ECONNREFUSED` when a target refused, `EMEDIUMTYPE` when the plexes
    /// differ in size or block size, `ESTALE` when their records say a
    /// newer copy exists than any reachable one, `ENOSPC` when it has no free namespace
    /// id, `EOPNOTSUPP` on a card without mirrors (interface before 1.5).
    pub fn create_mirror_namespace(&self, create: &MirrorNamespaceCreate) -> Result<u32, Error> {
        // 1.5 KiB: on the heap, as the driver keeps it.
        let mut raw = Box::new(DiaNsCreateMirror {
            nsid: 0,
            reserved: 0,
            create: *create,
        });
        // SAFETY: `raw` is a valid DiaNsCreateMirror, the type the request
        // encodes; it lives across the call.
        unsafe { sys::ns_create_mirror(self.file.as_raw_fd(), &mut *raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_CREATE_MIRROR", DIA_IOC_NS_CREATE_MIRROR, e))?;
        Ok(raw.nsid)
    }

    /// Gives mirrored namespace `nsid` a new plex table, live: plexes
    /// already in it keep their state (give them in sync), new ones must be
    /// new (the card copies everything to them while I/O goes on), those
    /// left out are dropped at once. `EINVAL` for a malformed table, a new
    /// plex given in sync or a namespace that is not mirrored; `ENOENT`
    /// for no such namespace; `EBUSY` when no plex in sync now would be
    /// left; `EOPNOTSUPP` on a card without it.
    pub fn set_mirror_plexes(
        &self,
        nsid: u32,
        plexes: &MirrorNamespaceCreate,
    ) -> Result<(), Error> {
        let raw = Box::new(DiaNsSetMirror {
            nsid,
            reserved: 0,
            plexes: *plexes,
        });
        // SAFETY: `raw` is a valid DiaNsSetMirror, the type the request
        // encodes; it lives across the call.
        unsafe { sys::ns_set_mirror(self.file.as_raw_fd(), &*raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_SET_MIRROR", DIA_IOC_NS_SET_MIRROR, e))?;
        Ok(())
    }

    /// A mirrored namespace's plexes as the card sees them now (state,
    /// path, regions behind, resync progress), in the order they were
    /// created with; `plex_count` is at most
    /// [`dia_abi::card::MIRROR_MAX_PLEXES`] (a larger count from the card
    /// is cut to that). `ENOENT` for no such namespace, `EINVAL` for one
    /// that is not mirrored, `EOPNOTSUPP` on a card without mirrors.
    pub fn mirror_status(&self, nsid: u32) -> Result<MirrorStatus, Error> {
        let mut raw = DiaNsMirrorStatus {
            nsid,
            ..DiaNsMirrorStatus::default()
        };
        // SAFETY: `raw` is a valid DiaNsMirrorStatus, the type the request encodes.
        unsafe { sys::ns_mirror_status(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_MIRROR_STATUS", DIA_IOC_NS_MIRROR_STATUS, e))?;
        let mut status = raw.status;
        status.plex_count = status
            .plex_count
            .min(dia_abi::card::MIRROR_MAX_PLEXES as u8);
        Ok(status)
    }

    fn ns_call(
        &self,
        name: &'static str,
        number: u32,
        nsid: u32,
        f: unsafe fn(i32, *const DiaNsId) -> nix::Result<i32>,
    ) -> Result<(), Error> {
        let raw = DiaNsId { nsid, flags: 0 };
        // SAFETY: `f` is one of the DiaNsId requests; `raw` lives across the call.
        unsafe { f(self.file.as_raw_fd(), &raw) }.map_err(|e| Error::ioctl(name, number, e))?;
        Ok(())
    }

    /// Deletes a detached namespace (`EBUSY` while attached).
    pub fn delete_namespace(&self, nsid: u32) -> Result<(), Error> {
        self.ns_call("DIA_IOC_NS_DELETE", DIA_IOC_NS_DELETE, nsid, sys::ns_delete)
    }

    /// Attaches a namespace: its block device appears.
    pub fn attach_namespace(&self, nsid: u32) -> Result<(), Error> {
        self.ns_call("DIA_IOC_NS_ATTACH", DIA_IOC_NS_ATTACH, nsid, sys::ns_attach)
    }

    /// Removes a namespace's block device (`EBUSY` while open) and detaches it.
    pub fn detach_namespace(&self, nsid: u32) -> Result<(), Error> {
        self.ns_call("DIA_IOC_NS_DETACH", DIA_IOC_NS_DETACH, nsid, sys::ns_detach)
    }

    /// One namespace.
    pub fn namespace(&self, nsid: u32) -> Result<Namespace, Error> {
        let mut raw = DiaNsInfo {
            nsid,
            ..DiaNsInfo::default()
        };
        // SAFETY: `raw` is a valid DiaNsInfo, the type the request encodes.
        unsafe { sys::ns_info(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_INFO", DIA_IOC_NS_INFO, e))?;
        Ok(Namespace::from(&raw))
    }

    /// Every namespace on the card.
    pub fn namespaces(&self) -> Result<Vec<Namespace>, Error> {
        let mut raw = Box::<DiaNsList>::default();
        // SAFETY: `raw` is a valid DiaNsList, the type the request encodes.
        unsafe { sys::ns_list(self.file.as_raw_fd(), &mut *raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_LIST", DIA_IOC_NS_LIST, e))?;
        let n = (raw.count as usize).min(DIA_NS_LIST_MAX);
        let mut out = Vec::with_capacity(n);
        for &id in &raw.nsids[..n] {
            match self.namespace(id) {
                Ok(ns) => out.push(ns),
                // Deleted since the list was taken.
                Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The flash pool's capacity and use.
    pub fn pool(&self) -> Result<Pool, Error> {
        let mut raw = DiaPoolInfo::default();
        // SAFETY: `raw` is a valid DiaPoolInfo, the type the request encodes.
        unsafe { sys::pool_info(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_POOL_INFO", DIA_IOC_POOL_INFO, e))?;
        Ok(Pool::from(&raw))
    }

    /// Sets a namespace's service level. When the card cannot guarantee the
    /// floors the error is [`Error::OverCapacity`] with the excess.
    pub fn set_qos(&self, nsid: u32, qos: &QosSettings) -> Result<(), Error> {
        let mut raw = DiaNsQos {
            nsid,
            excess_iops: 0,
            qos: *qos,
        };
        // SAFETY: `raw` is a valid DiaNsQos, the type the request encodes.
        match unsafe { sys::ns_set_qos(self.file.as_raw_fd(), &mut raw) } {
            Ok(_) => Ok(()),
            Err(nix::errno::Errno::EDQUOT) => Err(Error::OverCapacity {
                excess_iops: raw.excess_iops,
            }),
            Err(e) => Err(Error::ioctl("DIA_IOC_NS_SET_QOS", DIA_IOC_NS_SET_QOS, e)),
        }
    }

    /// A namespace's counters.
    pub fn stats(&self, nsid: u32) -> Result<Stats, Error> {
        let mut raw = DiaNsStats {
            nsid,
            ..DiaNsStats::default()
        };
        // SAFETY: `raw` is a valid DiaNsStats, the type the request encodes.
        unsafe { sys::ns_stats(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_NS_STATS", DIA_IOC_NS_STATS, e))?;
        Ok(Stats::from(&raw.stats))
    }

    /// Creates a port on `settings.vlan` with its net device (down, in the
    /// initial network namespace).
    pub fn create_port(&self, settings: PortSettings) -> Result<NewPort, Error> {
        let mut raw = DiaPortCreate {
            config: settings.into(),
            ..DiaPortCreate::default()
        };
        // SAFETY: `raw` is a valid DiaPortCreate, the type the request encodes.
        unsafe { sys::port_create(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_PORT_CREATE", DIA_IOC_PORT_CREATE, e))?;
        Ok(NewPort {
            port: raw.port,
            mac: format_mac(&raw.mac),
            ifname: port::nul_str(&raw.ifname),
        })
    }

    /// Deletes a port and its net device, wherever the device is.
    pub fn delete_port(&self, port: u32) -> Result<(), Error> {
        let raw = DiaPortId { port, flags: 0 };
        // SAFETY: `raw` is a valid DiaPortId, the type the request encodes.
        unsafe { sys::port_delete(self.file.as_raw_fd(), &raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_PORT_DELETE", DIA_IOC_PORT_DELETE, e))?;
        Ok(())
    }

    /// Changes a live port's VLAN, MTU and limits.
    pub fn set_port(&self, port: u32, settings: PortSettings) -> Result<(), Error> {
        let raw = DiaPortSet {
            port,
            flags: 0,
            config: settings.into(),
        };
        // SAFETY: `raw` is a valid DiaPortSet, the type the request encodes.
        unsafe { sys::port_set(self.file.as_raw_fd(), &raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_PORT_SET", DIA_IOC_PORT_SET, e))?;
        Ok(())
    }

    /// One port, with its counters.
    pub fn port(&self, port: u32) -> Result<Port, Error> {
        let mut raw = DiaPortInfo {
            port,
            ..DiaPortInfo::default()
        };
        // SAFETY: `raw` is a valid DiaPortInfo, the type the request encodes.
        unsafe { sys::port_info(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_PORT_INFO", DIA_IOC_PORT_INFO, e))?;
        Ok(Port::from(&raw))
    }

    /// Every port on the card.
    pub fn ports(&self) -> Result<Vec<Port>, Error> {
        let mut raw = Box::<DiaPortList>::default();
        // SAFETY: `raw` is a valid DiaPortList, the type the request encodes.
        unsafe { sys::port_list(self.file.as_raw_fd(), &mut *raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_PORT_LIST", DIA_IOC_PORT_LIST, e))?;
        let n = (raw.count as usize).min(DIA_PORT_LIST_MAX);
        let mut out = Vec::with_capacity(n);
        for &id in &raw.ports[..n] {
            match self.port(id) {
                Ok(p) => out.push(p),
                Err(e) if e.errno() == Some(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}
