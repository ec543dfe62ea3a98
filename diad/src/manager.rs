//! The daemon-wide manager: the card, the appliance host and the desired
//! state, which every part of diad (volumes, containers, tiers, networks,
//! reconcile, cluster) works through, each in its own file as `impl
//! Manager`. Every change is checked first, applied to the card or the
//! host, then saved; a step that fails undoes the ones before it.
//!
//! A lone appliance saves its state to a TOML file. An appliance in a
//! cluster keeps the whole cluster's state in etcd (`cluster_store.rs`):
//! it reads it before each change, and a change that raced with another
//! appliance's is undone and run again from the new state.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::runtime::Handle;

use crate::card_device::CardDevice;
use crate::cluster_store::ClusterStore;
use crate::error::ApiError;
use crate::host::Host;
use crate::state::{self, DesiredState};

/// Where the desired state is kept.
pub enum Store {
    /// A lone appliance's TOML file.
    File(PathBuf),
    /// The cluster's etcd, as appliance `me`.
    Cluster {
        /// This appliance's name in the cluster.
        me: String,
        /// The connection.
        store: Box<ClusterStore>,
        /// The runtime its calls run on (the manager runs on blocking
        /// threads).
        rt: Handle,
    },
    /// Unit tests of cluster logic: appliance `me` of a cluster whose
    /// state is saved to a file.
    #[cfg(test)]
    TestCluster {
        /// This appliance's name.
        me: String,
        /// The file.
        path: PathBuf,
    },
}

/// The card, the host and the desired state, kept in step.
pub struct Manager {
    pub(crate) card: Arc<dyn CardDevice>,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) state: DesiredState,
    pub(crate) store: Store,
    /// The TOML file (a lone appliance's state; in a cluster, what the
    /// appliance had before it joined, kept untouched).
    pub(crate) path: PathBuf,
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
            store: Store::File(path.clone()),
            path,
        }
    }

    /// Unit tests: makes this appliance `me` of a cluster (state still in
    /// the file).
    #[cfg(test)]
    pub(crate) fn use_test_cluster(&mut self, me: &str) {
        self.store = Store::TestCluster {
            me: me.into(),
            path: self.path.clone(),
        };
    }

    /// The card.
    pub fn card(&self) -> &Arc<dyn CardDevice> {
        &self.card
    }

    /// This appliance's name in its cluster (`None` when alone).
    pub fn me(&self) -> Option<&str> {
        match &self.store {
            Store::File(_) => None,
            Store::Cluster { me, .. } => Some(me),
            #[cfg(test)]
            Store::TestCluster { me, .. } => Some(me),
        }
    }

    /// Whether an object placed on `node` is this appliance's.
    pub(crate) fn mine(&self, node: Option<&str>) -> bool {
        match (self.me(), node) {
            (None, _) | (Some(_), None) => true,
            (Some(me), Some(n)) => me == n,
        }
    }

    /// The node to record on a new object of this appliance.
    pub(crate) fn here(&self) -> Option<String> {
        self.me().map(str::to_string)
    }

    /// Reads the desired state again (a cluster's changes by others).
    pub(crate) fn refresh(&mut self) -> Result<(), ApiError> {
        if let Store::Cluster { store, rt, .. } = &mut self.store {
            let rt = rt.clone();
            self.state = rt
                .block_on(store.load())
                .map_err(ApiError::store_unavailable)?;
        }
        Ok(())
    }

    /// Saves the desired state: the file, or one etcd transaction (a
    /// [`ApiError::raced`] when another appliance changed what it touches).
    pub(crate) fn save(&mut self) -> Result<(), ApiError> {
        match &mut self.store {
            #[cfg(test)]
            Store::TestCluster { path, .. } => state::save(path, &self.state)
                .map_err(|e| ApiError::internal(format!("saving the state: {e:#}"))),
            Store::File(path) => state::save(path, &self.state)
                .map_err(|e| ApiError::internal(format!("saving the state: {e:#}"))),
            Store::Cluster { store, rt, .. } => {
                let rt = rt.clone();
                match rt.block_on(store.commit(&self.state)) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(ApiError::raced()),
                    Err(e) => Err(ApiError::store_unavailable(e)),
                }
            }
        }
    }
}
