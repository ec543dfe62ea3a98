//! Access to the card, behind a small trait so the volume logic can be
//! tested on the host; the real implementation is libdia's `Card` on
//! `/dev/dia`.

use dia::{Identity, Namespace, NewPort, Pool, Port, PortSettings, Stats};
use dia_abi::card::{MirrorNamespaceCreate, MirrorStatus, QosSettings};

/// What the daemon needs from a card.
pub trait CardDevice: Send + Sync + 'static {
    /// The card's identity, asked afresh.
    fn identify(&self) -> Result<Identity, dia::Error>;
    /// Creates a thin namespace; returns its id.
    fn create_namespace(
        &self,
        size_bytes: u64,
        lba_shift: u32,
        label: &str,
    ) -> Result<u32, dia::Error>;
    /// Deletes a detached namespace.
    /// A namespace whose data is behind another card's NVMe/TCP target.
    fn create_remote_namespace(
        &self,
        target: &dia::RemoteTarget,
        label: &str,
    ) -> Result<u32, dia::Error>;
    /// A namespace whose data is kept in several plexes (mirrored).
    fn create_mirror_namespace(&self, create: &MirrorNamespaceCreate) -> Result<u32, dia::Error>;
    /// Gives a mirrored namespace a new plex table, live.
    fn set_mirror_plexes(
        &self,
        nsid: u32,
        plexes: &MirrorNamespaceCreate,
    ) -> Result<(), dia::Error>;
    /// A mirrored namespace's plexes as the card sees them now.
    fn mirror_status(&self, nsid: u32) -> Result<MirrorStatus, dia::Error>;
    fn delete_namespace(&self, nsid: u32) -> Result<(), dia::Error>;
    /// Attaches a namespace (its block device appears).
    fn attach_namespace(&self, nsid: u32) -> Result<(), dia::Error>;
    /// Detaches a namespace (its block device goes).
    fn detach_namespace(&self, nsid: u32) -> Result<(), dia::Error>;
    /// One namespace.
    fn namespace(&self, nsid: u32) -> Result<Namespace, dia::Error>;
    /// Every namespace.
    fn namespaces(&self) -> Result<Vec<Namespace>, dia::Error>;
    /// The flash pool.
    fn pool(&self) -> Result<Pool, dia::Error>;
    /// Sets a namespace's service level.
    fn set_qos(&self, nsid: u32, qos: &QosSettings) -> Result<(), dia::Error>;
    /// A namespace's counters.
    fn stats(&self, nsid: u32) -> Result<Stats, dia::Error>;
    /// Creates a port and its net device.
    fn create_port(&self, settings: PortSettings) -> Result<NewPort, dia::Error>;
    /// Deletes a port and its net device.
    fn delete_port(&self, port: u32) -> Result<(), dia::Error>;
    /// Changes a port's VLAN, MTU and limits.
    fn set_port(&self, port: u32, settings: PortSettings) -> Result<(), dia::Error>;
    /// One port with its counters.
    fn port(&self, port: u32) -> Result<Port, dia::Error>;
    /// Every port.
    fn ports(&self) -> Result<Vec<Port>, dia::Error>;
}

impl CardDevice for dia::Card {
    fn identify(&self) -> Result<Identity, dia::Error> {
        dia::Card::identify(self)
    }
    fn create_namespace(
        &self,
        size_bytes: u64,
        lba_shift: u32,
        label: &str,
    ) -> Result<u32, dia::Error> {
        dia::Card::create_namespace(self, size_bytes, lba_shift, label)
    }
    fn create_remote_namespace(
        &self,
        target: &dia::RemoteTarget,
        label: &str,
    ) -> Result<u32, dia::Error> {
        dia::Card::create_remote_namespace(self, target, label)
    }
    fn create_mirror_namespace(&self, create: &MirrorNamespaceCreate) -> Result<u32, dia::Error> {
        dia::Card::create_mirror_namespace(self, create)
    }
    fn mirror_status(&self, nsid: u32) -> Result<MirrorStatus, dia::Error> {
        dia::Card::mirror_status(self, nsid)
    }
    fn set_mirror_plexes(
        &self,
        nsid: u32,
        plexes: &MirrorNamespaceCreate,
    ) -> Result<(), dia::Error> {
        dia::Card::set_mirror_plexes(self, nsid, plexes)
    }
    fn delete_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
        dia::Card::delete_namespace(self, nsid)
    }
    fn attach_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
        dia::Card::attach_namespace(self, nsid)
    }
    fn detach_namespace(&self, nsid: u32) -> Result<(), dia::Error> {
        dia::Card::detach_namespace(self, nsid)
    }
    fn namespace(&self, nsid: u32) -> Result<Namespace, dia::Error> {
        dia::Card::namespace(self, nsid)
    }
    fn namespaces(&self) -> Result<Vec<Namespace>, dia::Error> {
        dia::Card::namespaces(self)
    }
    fn pool(&self) -> Result<Pool, dia::Error> {
        dia::Card::pool(self)
    }
    fn set_qos(&self, nsid: u32, qos: &QosSettings) -> Result<(), dia::Error> {
        dia::Card::set_qos(self, nsid, qos)
    }
    fn stats(&self, nsid: u32) -> Result<Stats, dia::Error> {
        dia::Card::stats(self, nsid)
    }
    fn create_port(&self, settings: PortSettings) -> Result<NewPort, dia::Error> {
        dia::Card::create_port(self, settings)
    }
    fn delete_port(&self, port: u32) -> Result<(), dia::Error> {
        dia::Card::delete_port(self, port)
    }
    fn set_port(&self, port: u32, settings: PortSettings) -> Result<(), dia::Error> {
        dia::Card::set_port(self, port, settings)
    }
    fn port(&self, port: u32) -> Result<Port, dia::Error> {
        dia::Card::port(self, port)
    }
    fn ports(&self) -> Result<Vec<Port>, dia::Error> {
        dia::Card::ports(self)
    }
}
