//! The daemon-wide manager: the card, the appliance host and the desired
//! state, which every part of diad (volumes, containers, tiers, networks,
//! reconcile) works through, each in its own file as `impl Manager`. Every
//! change is checked first, applied to the card or the host, then saved to
//! the state file; a step that fails undoes the ones before it.

use std::path::PathBuf;
use std::sync::Arc;

use crate::card_device::CardDevice;
use crate::error::ApiError;
use crate::host::Host;
use crate::state::{self, DesiredState};

/// The card, the host and the desired state, kept in step.
pub struct Manager {
    pub(crate) card: Arc<dyn CardDevice>,
    pub(crate) host: Arc<dyn Host>,
    pub(crate) state: DesiredState,
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
            path,
        }
    }

    /// The card.
    pub fn card(&self) -> &Arc<dyn CardDevice> {
        &self.card
    }

    /// Writes the desired state to its file.
    pub(crate) fn save(&self) -> Result<(), ApiError> {
        state::save(&self.path, &self.state)
            .map_err(|e| ApiError::internal(format!("saving the state: {e:#}")))
    }
}
