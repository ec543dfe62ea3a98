//! Mirrored volumes (issue 15): a volume whose data is kept in copies
//! ("plexes") on different appliances. diad places the plexes (each an
//! exported namespace of its appliance's card, labelled with the volume's
//! name), records them in the cluster state, and where the volume is
//! attached gives that appliance's card the plex table (a mirror
//! namespace). The card does the rest: every write goes to every in-sync
//! plex, a plex that fails is taken out of sync without an error reaching
//! the container, and what it missed is copied to it when it is back. diad
//! reads the card's view for `volume show` and keeps, in the cluster state,
//! which plexes were in sync at which generation when the volume was last
//! detached. See docs/mirrors.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use dia::api::{format_size, AddPlex, CreateVolume, PlexView, Volume, MAX_MIRRORS};
use dia_abi::card::{
    self as abi, MirrorNamespaceCreate, MirrorPlex, MirrorStatus, MIRROR_REGION_SHIFT,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::ApiError;
use crate::manager::Manager;
use crate::state::{MemberState, PlexState, VolumeState};

/// `POST /peer/v1/plexes`: make a plex of a new mirrored volume on the
/// appliance asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePlex {
    /// The volume (the namespace's label).
    pub name: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// Its block size.
    pub block_size: u32,
}

/// The answer: the plex's namespace on that appliance's card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexCreated {
    /// Its nsid.
    pub nsid: u32,
}

/// Where a new plex goes: the appliance, and its management address when
/// it is another one than this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlexPlace {
    /// The appliance.
    pub node: String,
    /// Its peer API address (`None`: this appliance).
    pub address: Option<String>,
}

/// A change of a mirrored volume's copies: one more (`add`), one fewer
/// (`remove`, an appliance holding a copy), or both at once (a copy
/// replaced). Done by the appliance the volume is attached on
/// (`POST /peer/v1/volumes/{name}/plexes` forwards it there).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlexChange {
    /// Where a new copy may go (its `replace` unused: see `remove`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<AddPlex>,
    /// The appliance whose copy goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove: Option<String>,
}

/// What a plex change needs before the manager applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlexPlan {
    /// The volume is attached on the appliance at this address: the change
    /// is made there.
    Elsewhere(String),
    /// Made here; with a new copy to create first (where, and what).
    Here(Option<(PlexPlace, CreatePlex)>),
}

/// The peer API path that deletes plex `nsid` of volume `name`.
pub fn plex_path(nsid: u32, name: &str) -> String {
    format!("/peer/v1/plexes/{nsid}?label={name}")
}

/// The state names `volume show` uses for `abi::PLEX_*`.
fn state_name(state: u8) -> &'static str {
    match state {
        abi::PLEX_IN_SYNC => "in-sync",
        abi::PLEX_RESYNCING => "resyncing",
        _ => "out-of-sync",
    }
}

fn path_name(local: bool, path: u8) -> &'static str {
    match (local, path) {
        (true, _) => "local",
        (false, abi::REMOTE_PATH_LIVE) => "live",
        (false, abi::REMOTE_PATH_DOWN) => "down",
        _ => "idle",
    }
}

/// A mirrored volume's health from its plexes' states.
fn health(views: &[PlexView]) -> String {
    let in_sync = views.iter().filter(|p| p.state == "in-sync").count();
    match in_sync {
        0 => "failed",
        n if n == views.len() => "healthy",
        _ => "degraded",
    }
    .into()
}

/// Whether member `m` has `label` (any member if none is asked for).
fn has_label(m: &MemberState, label: Option<&str>) -> bool {
    label.is_none_or(|l| m.labels.iter().any(|x| x == l))
}

/// A refusal for want of room on the appliances.
fn no_room(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INSUFFICIENT_STORAGE,
        ..ApiError::conflict(message)
    }
}

impl Manager {
    /// Where the plexes of new mirrored volume `req` go: `req.mirrors`
    /// different appliances with room (this one first if it has room, then
    /// those with most room; `--node` takes the first copy, `--label`
    /// narrows every copy). Checks the request as `create_here` would.
    pub fn mirror_placement(&self, req: &CreateVolume) -> Result<Vec<PlexPlace>, ApiError> {
        let n = req.mirrors.unwrap_or(1);
        if n == 0 || n > MAX_MIRRORS {
            return Err(ApiError::bad_request(format!(
                "--mirrors {n} is out of range (allowed: 1 to {MAX_MIRRORS})"
            )));
        }
        let Some(me) = self.me() else {
            return Err(ApiError::bad_request(
                "mirrored volumes keep their copies on different appliances; this appliance is not in a cluster",
            ));
        };
        self.check_new(req)?;
        let room = |m: &MemberState| self.room(m);
        let labelled: Vec<&MemberState> = self
            .state
            .members
            .iter()
            .filter(|m| has_label(m, req.label.as_deref()))
            .collect();
        if let Some(node) = &req.node {
            if !labelled.iter().any(|m| &m.name == node) {
                let names: Vec<&str> = labelled.iter().map(|m| m.name.as_str()).collect();
                return Err(ApiError::unknown("appliance", node, &names, ""));
            }
        }
        let mut fits: Vec<&MemberState> = labelled
            .iter()
            .copied()
            .filter(|m| room(m) >= req.size_bytes)
            .collect();
        // The first copy: --node, else here, else most room; then most room.
        fits.sort_by_key(|m| {
            (
                req.node.as_deref() != Some(m.name.as_str()),
                req.node.is_some() || m.name != me,
                u64::MAX - room(m),
            )
        });
        if req
            .node
            .as_deref()
            .is_some_and(|n| fits.first().is_none_or(|m| m.name != n))
        {
            let node = req.node.as_deref().unwrap_or_default();
            return Err(no_room(format!(
                "appliance '{node}' has no room for {}",
                format_size(req.size_bytes)
            )));
        }
        if fits.len() < n as usize {
            return Err(no_room(format!(
                "a volume with {n} copies needs {n} different appliances with room for {}; {} {} it: {}",
                format_size(req.size_bytes),
                fits.len(),
                if fits.len() == 1 { "has" } else { "have" },
                self.rooms(&labelled).join(", ")
            )));
        }
        Ok(fits[..n as usize].iter().map(|m| self.place(m)).collect())
    }

    /// Bytes member `m`'s pool has left after what is promised on it.
    fn room(&self, m: &MemberState) -> u64 {
        m.pool_bytes
            .saturating_sub(self.state.promised_bytes(&m.name))
    }

    /// `name (size left)` of each of `members`, for a refusal.
    fn rooms(&self, members: &[&MemberState]) -> Vec<String> {
        members
            .iter()
            .map(|m| format!("{} ({} left)", m.name, format_size(self.room(m))))
            .collect()
    }

    /// Where a copy on member `m` is made or deleted: here, or through
    /// its peer API.
    fn place(&self, m: &MemberState) -> PlexPlace {
        PlexPlace {
            node: m.name.clone(),
            address: (!self.mine(Some(&m.name))).then(|| m.address.clone()),
        }
    }

    /// [`Manager::place`] of appliance `node`, if it is a member.
    pub fn place_of(&self, node: &str) -> Option<PlexPlace> {
        let m = self.state.members.iter().find(|m| m.name == node)?;
        Some(self.place(m))
    }

    /// The management address of the appliance mirrored volume `name` is
    /// attached on, when it is another one.
    pub fn mirror_attached_elsewhere(&self, name: &str) -> Option<String> {
        let v = self.state.volumes.iter().find(|v| v.name == name)?;
        let r = v.remote.as_ref().filter(|_| v.mirrored())?;
        if self.mine(Some(&r.node)) {
            return None;
        }
        let m = self.state.members.iter().find(|m| m.name == r.node)?;
        Some(m.address.clone())
    }

    /// Makes a plex of a new mirrored volume on this appliance: a thin
    /// namespace labelled with the volume's name, exported. It belongs to
    /// no volume until the appliance creating the volume records it (which
    /// deletes it again if that fails).
    pub fn create_plex_here(&mut self, req: &CreatePlex) -> Result<PlexCreated, ApiError> {
        let shift = dia::api::lba_shift(req.block_size).map_err(ApiError::bad_request)?;
        let nsid = self
            .card
            .create_namespace(req.size_bytes, shift, &req.name)
            .map_err(|e| ApiError::card("creating the plex's namespace", e))?;
        if let Err(e) = self.card.attach_namespace(nsid) {
            let _ = self.card.delete_namespace(nsid);
            return Err(ApiError::card("exporting the plex's namespace", e));
        }
        info!(volume = %req.name, nsid, "plex created");
        Ok(PlexCreated { nsid })
    }

    /// Deletes plex namespace `nsid` of this appliance (labelled `label`)
    /// unless a volume still records it: a plex whose volume was not
    /// recorded, or whose volume was deleted.
    pub fn delete_plex_here(&mut self, nsid: u32, label: &str) -> Result<(), ApiError> {
        let used = self
            .state
            .volumes
            .iter()
            .any(|v| v.name == label && v.copies().any(|(n, id)| self.mine(n) && id == nsid));
        if used {
            return Err(ApiError::conflict(format!(
                "namespace {nsid} is a copy of volume '{label}'"
            )));
        }
        match self.card.namespace(nsid) {
            Ok(ns) if ns.label == label => {
                let _ = self.card.detach_namespace(nsid);
                self.card
                    .delete_namespace(nsid)
                    .map_err(|e| ApiError::card("deleting the plex's namespace", e))?;
                info!(volume = %label, nsid, "plex deleted");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Deletes the plexes of mirrored volume `v`, which the cluster no
    /// longer records: here directly, elsewhere through that appliance's
    /// peer API. One that cannot be deleted now is left as an orphan
    /// namespace there (listed, and deleted with `card` tools), logged.
    pub(crate) fn delete_plexes(&mut self, v: &VolumeState) {
        for p in &v.plexes {
            let r = if self.mine(Some(&p.node)) {
                self.delete_plex_here(p.nsid, &v.name)
            } else {
                match self.state.members.iter().find(|m| m.name == p.node) {
                    Some(m) => crate::peer::call::<(), serde_json::Value>(
                        &m.address,
                        "DELETE",
                        &plex_path(p.nsid, &v.name),
                        None,
                    )
                    .map(|_| ()),
                    None => Ok(()),
                }
            };
            if let Err(e) = r {
                warn!(volume = %v.name, node = %p.node, nsid = p.nsid,
                    "deleting a plex: {} (left as an orphan namespace)", e.message);
            }
        }
    }

    /// Records mirrored volume `req` whose plexes exist: the cluster's
    /// pool claims make sure no appliance was promised more than it has
    /// meanwhile.
    pub fn record_mirrored(
        &mut self,
        req: &CreateVolume,
        plexes: &[PlexState],
    ) -> Result<Volume, ApiError> {
        let (_, tier) = self.check_new(req)?;
        let first = plexes
            .first()
            .ok_or_else(|| ApiError::internal("a mirrored volume without plexes"))?;
        self.state.volumes.push(VolumeState {
            name: req.name.clone(),
            nsid: first.nsid,
            size_bytes: req.size_bytes,
            block_size: req.block_size,
            tier: tier.name,
            attachment: None,
            node: Some(first.node.clone()),
            remote: None,
            plexes: plexes.to_vec(),
            generation: 0,
            rebuild_after: req.rebuild_after,
        });
        let nodes: Vec<&str> = plexes.iter().map(|p| p.node.as_str()).collect();
        if let Err(e) = self.check_room_of(&nodes).and_then(|()| self.save()) {
            self.state.volumes.pop();
            return Err(e);
        }
        info!(volume = %req.name, copies = plexes.len(), "mirrored volume created");
        self.show(&req.name)
    }

    /// The mirror namespace for mirrored volume `v` on this appliance's
    /// card: its plexes' targets, those recorded in sync as in sync, the
    /// others to be copied in full. Refused when no plex is known to hold
    /// the newest data (never guessed).
    pub(crate) fn connect_mirror(&self, v: &VolumeState) -> Result<u32, ApiError> {
        if !v.plexes.iter().any(|p| p.in_sync) {
            return Err(ApiError::conflict(format!(
                "volume '{}': no copy is recorded as holding its newest data; refusing to guess",
                v.name
            )));
        }
        let mut create = self.plex_table(&v.name, &v.plexes, false)?;
        create.generation = v.generation;
        self.card
            .create_mirror_namespace(&create)
            .map_err(|e| ApiError::card(&format!("mirroring volume '{}'", v.name), e))
    }

    /// Before the mirror namespace of attached volume `i` (`nsid` here)
    /// goes: which plexes are in sync at which generation, for the next
    /// attach. A plex not in sync is copied in full then (what it missed
    /// was recorded by this mirror namespace only).
    pub(crate) fn record_plex_states(&mut self, i: usize, nsid: u32) {
        let name = self.state.volumes[i].name.clone();
        match self.card.mirror_status(nsid) {
            Ok(st) => {
                let v = &mut self.state.volumes[i];
                for (p, s) in v.plexes.iter_mut().zip(&st.plexes) {
                    p.in_sync = s.state == abi::PLEX_IN_SYNC;
                }
                v.generation = st.generation;
            }
            Err(e) => {
                // The record stays as it was: at worst a plex is trusted
                // that missed writes made since it was recorded.
                warn!(volume = %name, "reading the mirror's status before detaching: {e}");
            }
        }
    }

    /// A mirrored volume's plexes as `volume show` reports them, and its
    /// health: the card's view where it is attached here, else the record.
    pub(crate) fn plex_views(&self, v: &VolumeState) -> (Vec<PlexView>, String) {
        let live = v
            .remote
            .as_ref()
            .filter(|r| self.mine(Some(&r.node)))
            .and_then(|r| match self.card.mirror_status(r.nsid) {
                Ok(st) => Some(st),
                Err(e) => {
                    warn!(volume = %v.name, "reading the mirror's status: {e}");
                    None
                }
            });
        let views: Vec<PlexView> = match live {
            Some(st) => self.live_views(v, &st),
            None => v
                .plexes
                .iter()
                .map(|p| PlexView {
                    node: p.node.clone(),
                    nsid: p.nsid,
                    state: if p.in_sync { "in-sync" } else { "out-of-sync" }.into(),
                    behind_bytes: (!p.in_sync).then_some(v.size_bytes),
                    resync_bytes: None,
                    resync_rate: None,
                    eta_seconds: None,
                    path: None,
                    faults: None,
                })
                .collect(),
        };
        let h = health(&views);
        (views, h)
    }

    fn live_views(&self, v: &VolumeState, st: &MirrorStatus) -> Vec<PlexView> {
        v.plexes
            .iter()
            .zip(&st.plexes)
            .map(|(p, s)| {
                let behind = (s.dirty_regions << MIRROR_REGION_SHIFT).min(v.size_bytes);
                let rate = s.resync_bytes_per_s;
                PlexView {
                    node: p.node.clone(),
                    nsid: p.nsid,
                    state: state_name(s.state).into(),
                    behind_bytes: (s.state != abi::PLEX_IN_SYNC).then_some(behind),
                    resync_bytes: Some(s.resync_bytes),
                    resync_rate: (s.state == abi::PLEX_RESYNCING).then_some(rate),
                    eta_seconds: (s.state == abi::PLEX_RESYNCING && rate > 0)
                        .then(|| behind.div_ceil(rate)),
                    path: Some(path_name(s.local != 0, s.path).into()),
                    faults: Some(s.faults),
                }
            })
            .collect()
    }
}

impl Manager {
    /// Checks a change of volume `name`'s copies and plans it: where it is
    /// made, and where a new copy goes (an appliance without a copy, with
    /// room; `--node` or the most room). A volume with one copy becomes
    /// mirrored this way while it is detached.
    pub fn plan_plex_change(&self, name: &str, change: &PlexChange) -> Result<PlexPlan, ApiError> {
        let v = &self.state.volumes[self.volume_index(name)?];
        if self.me().is_none() {
            return Err(ApiError::bad_request(
                "copies of a volume live on different appliances; this appliance is not in a cluster",
            ));
        }
        if !v.mirrored() && v.attachment.is_some() {
            return Err(ApiError::conflict(format!(
                "volume '{name}' has one copy and is attached: detach it to give it more copies"
            )));
        }
        if let Some(address) = self.mirror_attached_elsewhere(name) {
            return Ok(PlexPlan::Elsewhere(address));
        }
        let holders: Vec<&str> = v.copies().filter_map(|(n, _)| n).collect();
        if let Some(node) = &change.remove {
            if !holders.contains(&node.as_str()) {
                return Err(ApiError::unknown("copy on appliance", node, &holders, ""));
            }
            if change.add.is_none() && holders.len() == 1 {
                return Err(ApiError::conflict(format!(
                    "the copy on '{node}' is volume '{name}''s only one: delete the volume instead"
                )));
            }
        }
        let Some(add) = &change.add else {
            return Ok(PlexPlan::Here(None));
        };
        let after = holders.len() + 1 - usize::from(change.remove.is_some());
        if after > MAX_MIRRORS as usize {
            return Err(ApiError::bad_request(format!(
                "volume '{name}' would have {after} copies (allowed: at most {MAX_MIRRORS})"
            )));
        }
        let room = |m: &MemberState| self.room(m);
        let candidates: Vec<&MemberState> = self
            .state
            .members
            .iter()
            .filter(|m| !holders.contains(&m.name.as_str()))
            .filter(|m| add.node.as_deref().is_none_or(|n| n == m.name))
            .filter(|m| has_label(m, add.label.as_deref()))
            .collect();
        let Some(best) = candidates
            .iter()
            .filter(|m| room(m) >= v.size_bytes)
            .max_by_key(|m| room(m))
        else {
            let others = self.rooms(&candidates);
            return Err(no_room(format!(
                "no appliance without a copy of '{name}' has room for {} (copies on: {}; others: {})",
                format_size(v.size_bytes),
                holders.join(", "),
                if others.is_empty() { "none".into() } else { others.join(", ") }
            )));
        };
        Ok(PlexPlan::Here(Some((
            self.place(best),
            CreatePlex {
                name: name.into(),
                size_bytes: v.size_bytes,
                block_size: v.block_size,
            },
        ))))
    }

    /// Applies a planned change of volume `name`'s copies: `new` (made,
    /// not yet in sync) joins, the copy on `remove` leaves; where the
    /// volume is attached here its card gets the new table at once (the
    /// new copy is filled live). Returns the volume and the copy that left
    /// (to delete).
    pub fn apply_plex_change(
        &mut self,
        name: &str,
        new: Option<&PlexState>,
        remove: Option<&str>,
    ) -> Result<(Volume, Option<PlexState>), ApiError> {
        let i = self.volume_index(name)?;
        let v = self.state.volumes[i].clone();
        let mut plexes = if v.mirrored() {
            v.plexes.clone()
        } else {
            vec![PlexState {
                node: v.node.clone().unwrap_or_default(),
                nsid: v.nsid,
                in_sync: true,
            }]
        };
        let removed = match remove {
            Some(node) => {
                let at = plexes.iter().position(|p| p.node == node).ok_or_else(|| {
                    ApiError::conflict(format!("volume '{name}' has no copy on '{node}'"))
                })?;
                Some(plexes.remove(at))
            }
            None => None,
        };
        plexes.extend(new.cloned());
        let mirror = v
            .remote
            .as_ref()
            .filter(|r| v.mirrored() && self.mine(Some(&r.node)))
            .map(|r| r.nsid);
        match mirror {
            Some(nsid) => {
                let table = self.plex_table(name, &plexes, true)?;
                self.card.set_mirror_plexes(nsid, &table).map_err(|e| {
                    if e.errno() == Some(nix::errno::Errno::EBUSY) {
                        ApiError::conflict(format!(
                            "volume '{name}': no copy in sync would be left"
                        ))
                    } else {
                        ApiError::card("changing the mirror's copies", e)
                    }
                })?;
            }
            None if !plexes.iter().any(|p| p.in_sync) => {
                return Err(ApiError::conflict(format!(
                    "volume '{name}': no copy in sync would be left"
                )));
            }
            None => {}
        }
        let first = plexes[0].clone();
        {
            let w = &mut self.state.volumes[i];
            w.plexes = plexes;
            w.node = Some(first.node);
            w.nsid = first.nsid;
        }
        let nodes: Vec<String> = new.iter().map(|p| p.node.clone()).collect();
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        if let Err(e) = self.check_room_of(&nodes).and_then(|()| self.save()) {
            if let Some(nsid) = mirror {
                // The card goes back to the table the record has.
                let old: Vec<PlexState> = if v.mirrored() {
                    v.plexes.clone()
                } else {
                    vec![]
                };
                if let Ok(table) = self.plex_table(name, &old, true) {
                    let _ = self.card.set_mirror_plexes(nsid, &table);
                }
            }
            self.state.volumes[i] = v;
            return Err(e);
        }
        info!(volume = %name, added = ?new.map(|p| &p.node), removed = ?removed.as_ref().map(|p| &p.node),
            "copies changed");
        Ok((self.show(name)?, removed))
    }

    /// A plex table for the card: `plexes`' targets, those recorded in
    /// sync as in sync (with `keep`, every plex the card already has is
    /// given in sync: it keeps its own state), the others new.
    fn plex_table(
        &self,
        name: &str,
        plexes: &[PlexState],
        keep: bool,
    ) -> Result<MirrorNamespaceCreate, ApiError> {
        let mut table = MirrorNamespaceCreate {
            plex_count: plexes.len() as u8,
            ..Default::default()
        };
        let label = name.as_bytes();
        if label.len() >= table.label.len() {
            return Err(ApiError::bad_request(format!(
                "volume name '{name}' is too long for the card"
            )));
        }
        table.label[..label.len()].copy_from_slice(label);
        let known = |p: &PlexState| {
            self.state
                .volumes
                .iter()
                .find(|v| v.name == name)
                .is_some_and(|v| {
                    v.plexes
                        .iter()
                        .any(|q| q == p || (keep && q.node == p.node && q.nsid == p.nsid))
                })
        };
        for (slot, p) in table.plexes.iter_mut().zip(plexes) {
            let target = self.target_of(&p.node, p.nsid).map_err(|e| ApiError {
                message: format!("volume '{name}': {}", e.message),
                ..e
            })?;
            let in_sync = if keep { known(p) } else { p.in_sync };
            *slot = MirrorPlex {
                target,
                state: if in_sync {
                    abi::PLEX_IN_SYNC
                } else {
                    abi::PLEX_NEW
                },
                reserved: [0; 7],
            };
        }
        Ok(table)
    }

    /// Looks at the mirrors attached here: records in the cluster state
    /// which copies are in sync (so every appliance's `volume show` and a
    /// later attach elsewhere know), and returns the copies unreachable
    /// for longer than their volume's `rebuild_after` (volume, appliance),
    /// to be rebuilt elsewhere. `down_since` remembers when each copy was
    /// first seen unreachable.
    pub fn watch_mirrors(
        &mut self,
        down_since: &mut HashMap<(String, String), Instant>,
    ) -> Vec<(String, String)> {
        let mut overdue = Vec::new();
        let mut changed = false;
        let mut seen = Vec::new();
        for i in 0..self.state.volumes.len() {
            let v = &self.state.volumes[i];
            let Some(nsid) = v
                .remote
                .as_ref()
                .filter(|r| v.mirrored() && self.mine(Some(&r.node)))
                .map(|r| r.nsid)
            else {
                continue;
            };
            let Ok(st) = self.card.mirror_status(nsid) else {
                continue;
            };
            let (name, after) = (v.name.clone(), v.rebuild_after);
            let v = &mut self.state.volumes[i];
            for (p, s) in v.plexes.iter_mut().zip(&st.plexes) {
                let in_sync = s.state == abi::PLEX_IN_SYNC;
                changed |= p.in_sync != in_sync;
                p.in_sync = in_sync;
                let key = (name.clone(), p.node.clone());
                if in_sync || s.path != abi::REMOTE_PATH_DOWN {
                    continue;
                }
                let since = *down_since.entry(key.clone()).or_insert_with(Instant::now);
                seen.push(key.clone());
                if after.is_some_and(|a| since.elapsed() >= Duration::from_secs(a)) {
                    overdue.push(key);
                }
            }
            changed |= v.generation != st.generation;
            v.generation = st.generation;
        }
        down_since.retain(|k, _| seen.contains(k));
        if changed {
            if let Err(e) = self.save() {
                warn!("recording the mirrors' copies: {}", e.message);
            }
        }
        overdue
    }
}

#[cfg(test)]
mod tests {
    use dia::api::CreateVolume;

    use super::*;
    use crate::card_device::CardDevice;
    use crate::test_support::{manager, raw_attachment, vol, LogHost};

    fn member(name: &str, pool: u64) -> MemberState {
        MemberState {
            name: name.into(),
            address: format!("192.0.2.{}", name.len()),
            serial: format!("S-{name}"),
            fabric: Some("192.0.2.9:4420".into()),
            pool_bytes: pool,
            etcd: true,
            labels: Vec::new(),
        }
    }

    fn mirrored(name: &str, copies: u32) -> CreateVolume {
        CreateVolume {
            mirrors: Some(copies),
            ..vol(name, 1 << 30)
        }
    }

    /// Records volume `req` with a copy made here on "a" (in sync) and
    /// one said to be on "b" as namespace `b_nsid`.
    fn record_two(
        m: &mut Manager,
        req: &CreateVolume,
        b_nsid: u32,
        b_in_sync: bool,
    ) -> (u32, Volume) {
        let a = m
            .create_plex_here(&CreatePlex {
                name: req.name.clone(),
                size_bytes: req.size_bytes,
                block_size: req.block_size,
            })
            .unwrap();
        let plexes = [
            PlexState {
                node: "a".into(),
                nsid: a.nsid,
                in_sync: true,
            },
            PlexState {
                node: "b".into(),
                nsid: b_nsid,
                in_sync: b_in_sync,
            },
        ];
        (a.nsid, m.record_mirrored(req, &plexes).unwrap())
    }

    #[test]
    fn a_lone_appliance_refuses_mirrors() {
        let (_dir, m, _, _) = manager(LogHost::default());
        let e = m.mirror_placement(&mirrored("db", 2)).unwrap_err();
        assert!(e.message.contains("not in a cluster"), "{}", e.message);
    }

    #[test]
    fn placement_takes_different_appliances_here_first_and_says_why_not() {
        let (_dir, mut m, _, _) = manager(LogHost::default());
        m.use_test_cluster("b");
        m.state.members = vec![
            member("a", 8 << 30),
            member("b", 4 << 30),
            member("c", 2 << 30),
            member("d", 1 << 29),
        ];
        let p = m.mirror_placement(&mirrored("db", 3)).unwrap();
        let nodes: Vec<&str> = p.iter().map(|x| x.node.as_str()).collect();
        assert_eq!(nodes, ["b", "a", "c"]);
        assert_eq!(p[0].address, None);
        assert!(p[1].address.is_some());
        let e = m.mirror_placement(&mirrored("db", 4)).unwrap_err();
        assert_eq!(e.status, 507);
        assert!(
            e.message.contains("needs 4 different appliances") && e.message.contains("3 have it"),
            "{}",
            e.message
        );
        assert!(e.message.contains("d (512 MiB left)"), "{}", e.message);
        let e = m.mirror_placement(&mirrored("db", 5)).unwrap_err();
        assert!(e.message.contains("allowed: 1 to 4"), "{}", e.message);
        let mut pinned = mirrored("db", 2);
        pinned.node = Some("c".into());
        let p = m.mirror_placement(&pinned).unwrap();
        assert_eq!(p[0].node, "c");
        pinned.node = Some("d".into());
        assert_eq!(m.mirror_placement(&pinned).unwrap_err().status, 507);
    }

    #[test]
    fn attach_gives_the_card_the_plex_table_and_detach_records_it() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        m.use_test_cluster("a");
        m.state.members = vec![member("a", 8 << 30), member("b", 8 << 30)];
        let (a, v) = record_two(&mut m, &mirrored("db", 2), 7, false);
        assert_eq!(v.plexes.len(), 2);
        assert_eq!(v.health.as_deref(), Some("degraded"));
        assert_eq!(m.delete_plex_here(a, "db").unwrap_err().status, 409);
        let v = m.attach("db", &raw_attachment("pid:7")).unwrap();
        let mirror = m.state.volumes[0].remote.as_ref().unwrap().nsid;
        let table = card.mirrors.lock().unwrap()[&mirror];
        assert_eq!(table.plex_count, 2);
        assert_eq!(table.plexes[0].state, abi::PLEX_IN_SYNC);
        assert_eq!(table.plexes[1].state, abi::PLEX_NEW);
        assert_eq!(
            table.plexes[1].target.subnqn_str(),
            Some(dia::volume_nqn("S-b", 7).as_str())
        );
        assert_eq!(v.plexes[1].state, "out-of-sync");
        assert_eq!(v.plexes[1].behind_bytes, Some(1 << 30));
        m.detach("db").unwrap();
        assert!(card.namespace(mirror).is_err(), "the mirror namespace goes");
        assert!(
            card.namespace(a).unwrap().attached,
            "the plex stays exported"
        );
        assert!(!m.state.volumes[0].plexes[1].in_sync);
        m.state.volumes[0]
            .plexes
            .iter_mut()
            .for_each(|p| p.in_sync = false);
        let e = m.attach("db", &raw_attachment("pid:7")).unwrap_err();
        assert!(e.message.contains("refusing to guess"), "{}", e.message);
    }

    #[test]
    fn copies_are_added_replaced_and_removed_and_a_lost_one_is_rebuilt_after_its_time() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        m.use_test_cluster("a");
        m.state.members = vec![
            member("a", 8 << 30),
            member("b", 8 << 30),
            member("c", 4 << 30),
            member("d", 1 << 29),
        ];
        let mut req = mirrored("db", 2);
        req.rebuild_after = Some(0);
        record_two(&mut m, &req, 3, true);
        m.attach("db", &raw_attachment("pid:7")).unwrap();
        let mirror = m.state.volumes[0].remote.as_ref().unwrap().nsid;

        // Add: the copy goes to the appliance without one with most room.
        let add = PlexChange {
            add: Some(AddPlex::default()),
            remove: None,
        };
        let PlexPlan::Here(Some((place, plex))) = m.plan_plex_change("db", &add).unwrap() else {
            panic!("expected a new copy here");
        };
        assert_eq!((place.node.as_str(), plex.size_bytes), ("c", 1 << 30));
        let new = PlexState {
            node: "c".into(),
            nsid: 9,
            in_sync: false,
        };
        let (v, gone) = m.apply_plex_change("db", Some(&new), None).unwrap();
        assert!(gone.is_none());
        assert_eq!(v.plexes.len(), 3);
        let table = card.mirrors.lock().unwrap()[&mirror];
        assert_eq!(table.plex_count, 3);
        assert_eq!(
            [
                table.plexes[0].state,
                table.plexes[1].state,
                table.plexes[2].state
            ],
            [abi::PLEX_IN_SYNC, abi::PLEX_IN_SYNC, abi::PLEX_NEW]
        );
        let e = m
            .plan_plex_change(
                "db",
                &PlexChange {
                    add: Some(AddPlex {
                        node: Some("d".into()),
                        ..Default::default()
                    }),
                    remove: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.status, 507);
        assert!(e.message.contains("copies on: a, b, c"), "{}", e.message);

        // b's appliance goes away; with rebuild_after 0 the watcher asks
        // for it to be rebuilt, and records that it is out of sync.
        card.down.lock().unwrap().push(dia::volume_nqn("S-b", 3));
        let mut since = HashMap::new();
        let overdue = m.watch_mirrors(&mut since);
        assert_eq!(overdue, vec![("db".to_string(), "b".to_string())]);
        assert!(!m.state.volumes[0].plexes[1].in_sync);
        // The replacement: d has no room, so the plan fails; a removal works.
        let replace = PlexChange {
            add: Some(AddPlex::default()),
            remove: Some("b".into()),
        };
        assert_eq!(m.plan_plex_change("db", &replace).unwrap_err().status, 507);
        let (v, gone) = m.apply_plex_change("db", None, Some("b")).unwrap();
        assert_eq!(gone.unwrap().node, "b");
        let nodes: Vec<&str> = v.plexes.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(nodes, ["a", "c"]);
        assert_eq!(card.mirrors.lock().unwrap()[&mirror].plex_count, 2);
        let e = m
            .plan_plex_change(
                "db",
                &PlexChange {
                    add: None,
                    remove: Some("z".into()),
                },
            )
            .unwrap_err();
        assert!(
            e.message.contains("no copy on appliance 'z'"),
            "{}",
            e.message
        );
    }
}
