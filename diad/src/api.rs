//! diad's HTTP/JSON API (see docs/api.md), served on a unix socket:
//! health, the card, the pool, volumes, tiers, containers, networks and
//! ports. Handlers run the (blocking) daemon logic on tokio's blocking
//! pool, one change at a time.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use dia::api::{
    AddPlex, AttachPort, Attachment, ClusterStatus, Container, CreateCluster, CreateContainer,
    CreateNetwork, CreateVolume, JoinCluster, Network, PortStatsView, PortView, SetTier, Tier,
    TierSpec, Volume, VolumeList,
};
use dia::{Identity, Pool, Stats};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::card_device::CardDevice;
use crate::cluster::LocalNode;
use crate::error::ApiError;
use crate::manager::Manager;
use crate::mirrors::{plex_path, CreatePlex, PlexChange, PlexCreated, PlexPlace, PlexPlan};
use crate::peer::{JoinAnswer, JoinRequest};
use crate::state::PlexState;

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/dia/diad.sock";

/// Shared daemon state.
pub struct AppState {
    card: Arc<dyn CardDevice>,
    manager: Mutex<Manager>,
    node: LocalNode,
}

impl AppState {
    /// Wraps the volume manager (and its card), as an appliance named by
    /// the host name with no management address (a lone one).
    #[cfg(test)]
    pub fn new(manager: Manager) -> Arc<Self> {
        let node = LocalNode {
            name: "test".into(),
            address: None,
            fabric: None,
            labels: Vec::new(),
            dir: std::env::temp_dir(),
        };
        Self::with_node(manager, node)
    }

    /// Wraps the manager for appliance `node`.
    pub fn with_node(manager: Manager, node: LocalNode) -> Arc<Self> {
        Arc::new(Self {
            card: manager.card().clone(),
            manager: Mutex::new(manager),
            node,
        })
    }
}

/// Times a change that lost a race in the cluster state is run again.
const RACE_RETRIES: usize = 20;

/// Runs `f` with the manager on the blocking pool, on the newest desired
/// state; in a cluster, a change that lost a race with another appliance's
/// (and was undone) runs again on the state that won.
async fn with_manager<T: Send + 'static>(
    app: Arc<AppState>,
    f: impl Fn(&mut Manager) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let mut m = app.manager.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tries = 0;
        loop {
            // Without etcd (no quorum) the last state read answers; a
            // change then fails when it is saved, and is undone.
            if let Err(e) = m.refresh() {
                warn!("{}", e.message);
            }
            match f(&mut m) {
                Err(e) if e.raced && tries < RACE_RETRIES => {
                    tries += 1;
                    info!(
                        tries,
                        "lost a race in the cluster state: undone, running again"
                    );
                    // Back off a little, differently on each appliance.
                    std::thread::sleep(std::time::Duration::from_millis(
                        5 * tries as u64 + u64::from(std::process::id() % 7),
                    ));
                }
                r => return r,
            }
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("request task failed: {e}")))?
}

/// Every path of the API with its handlers. docs/api.md documents each
/// (method, path); `api/doc_tests.rs` checks that it does.
fn routes() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    use axum::routing::delete;
    vec![
        ("/v1/health", get(health)),
        ("/v1/card", get(card_info)),
        ("/v1/pool", get(pool_info)),
        ("/v1/volumes", get(list_volumes).post(create_volume)),
        ("/v1/volumes/{name}", get(show_volume).delete(delete_volume)),
        ("/v1/volumes/{name}/attach", post(attach_volume)),
        ("/v1/volumes/{name}/detach", post(detach_volume)),
        ("/v1/volumes/{name}/tier", post(set_volume_tier)),
        ("/v1/volumes/{name}/stats", get(volume_stats)),
        ("/v1/volumes/{name}/plexes", post(add_plex)),
        ("/v1/volumes/{name}/plexes/{node}", delete(remove_plex)),
        ("/v1/tiers", get(list_tiers).post(create_tier)),
        ("/v1/tiers/{name}", delete(delete_tier)),
        (
            "/v1/containers",
            get(list_containers).post(create_container),
        ),
        ("/v1/containers/{name}", delete(delete_container)),
        ("/v1/networks", get(list_networks).post(create_network)),
        (
            "/v1/networks/{name}",
            get(show_network).delete(delete_network),
        ),
        ("/v1/ports", get(list_ports).post(attach_port)),
        ("/v1/ports/{name}", get(show_port).delete(detach_port)),
        ("/v1/ports/{name}/stats", get(port_stats)),
        ("/v1/ports/{name}/tier", post(set_port_tier)),
        ("/v1/cluster", get(cluster_status).post(create_cluster)),
        ("/v1/cluster/join", post(join_cluster)),
        ("/v1/cluster/members/{name}", delete(remove_member)),
    ]
}

/// The peer API's paths (served on the management address, see
/// `peer.rs`).
fn peer_routes() -> Vec<(&'static str, MethodRouter<Arc<AppState>>)> {
    use axum::routing::delete;
    vec![
        ("/peer/v1/members", post(peer_admit)),
        ("/peer/v1/volumes", post(peer_create_volume)),
        (
            "/peer/v1/volumes/{name}",
            get(peer_show_volume).delete(peer_delete_volume),
        ),
        ("/peer/v1/volumes/{name}/plexes", post(peer_change_plexes)),
        ("/peer/v1/plexes", post(peer_create_plex)),
        ("/peer/v1/plexes/{nsid}", delete(peer_delete_plex)),
    ]
}

async fn cluster_status(State(app): State<Arc<AppState>>) -> Result<Json<ClusterStatus>, ApiError> {
    let node = app.node.clone();
    with_manager(app, move |m| m.cluster_status(&node))
        .await
        .map(Json)
}

async fn create_cluster(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreateCluster>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ClusterStatus>), ApiError> {
    let req = body(req)?;
    let node = app.node.clone();
    let s = with_manager(app, move |m| m.create_cluster(&node, &req.name)).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

async fn join_cluster(
    State(app): State<Arc<AppState>>,
    req: Result<Json<JoinCluster>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let req = body(req)?;
    let node = app.node.clone();
    with_manager(app, move |m| m.join_cluster(&node, &req.address))
        .await
        .map(Json)
}

async fn remove_member(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.remove_member(&name)).await?;
    Ok(Json(json!({ "removed": true })))
}

async fn peer_admit(
    State(app): State<Arc<AppState>>,
    req: Result<Json<JoinRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<JoinAnswer>, ApiError> {
    let req = body(req)?;
    with_manager(app, move |m| m.admit(&req)).await.map(Json)
}

async fn peer_create_volume(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreateVolume>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let req = body(req)?;
    let v = with_manager(app, move |m| m.create_here(&req)).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// This appliance's own view of a volume (a mirrored volume attached here
/// shows its card's view of the plexes).
async fn peer_show_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Volume>, ApiError> {
    with_manager(app, move |m| m.show(&name)).await.map(Json)
}

async fn peer_change_plexes(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Result<Json<PlexChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Volume>, ApiError> {
    let req = body(req)?;
    change_plexes(app, name, req).await.map(Json)
}

async fn add_plex(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Result<Json<AddPlex>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Volume>, ApiError> {
    let mut add = body(req)?;
    let remove = add.replace.take();
    change_plexes(
        app,
        name,
        PlexChange {
            add: Some(add),
            remove,
        },
    )
    .await
    .map(Json)
}

async fn remove_plex(
    State(app): State<Arc<AppState>>,
    UrlPath((name, node)): UrlPath<(String, String)>,
) -> Result<Json<Volume>, ApiError> {
    let change = PlexChange {
        add: None,
        remove: Some(node),
    };
    change_plexes(app, name, change).await.map(Json)
}

/// A change of a mirrored volume's copies: made on the appliance it is
/// attached on; a new copy is made first (on another appliance without
/// holding this one's manager), then the card and the record change, then
/// the copy that left is deleted.
async fn change_plexes(
    app: Arc<AppState>,
    name: String,
    change: PlexChange,
) -> Result<Volume, ApiError> {
    let (n, c) = (name.clone(), change.clone());
    let new = match with_manager(app.clone(), move |m| m.plan_plex_change(&n, &c)).await? {
        PlexPlan::Elsewhere(address) => {
            let path = format!("/peer/v1/volumes/{name}/plexes");
            return forward(address, "POST", path, Some(change)).await;
        }
        PlexPlan::Here(new) => new,
    };
    let made = match new {
        None => None,
        Some((place, plex)) => {
            let created = match &place.address {
                None => {
                    let plex = plex.clone();
                    with_manager(app.clone(), move |m| m.create_plex_here(&plex)).await?
                }
                Some(a) => forward(a.clone(), "POST", "/peer/v1/plexes".into(), Some(plex)).await?,
            };
            Some((place, created.nsid))
        }
    };
    let new_plex = made.as_ref().map(|(p, nsid)| PlexState {
        node: p.node.clone(),
        nsid: *nsid,
        in_sync: false,
    });
    let (n, remove) = (name.clone(), change.remove.clone());
    let applied = with_manager(app.clone(), move |m| {
        m.apply_plex_change(&n, new_plex.as_ref(), remove.as_deref())
    })
    .await;
    let (gone, result) = match applied {
        Ok((v, removed)) => (removed.map(|r| (r.node, r.nsid)), Ok(v)),
        Err(e) => (made.map(|(p, nsid)| (p.node, nsid)), Err(e)),
    };
    if let Some((node, nsid)) = gone {
        let n = node.clone();
        let place = with_manager(app.clone(), move |m| Ok(m.place_of(&n))).await;
        let deleted = match place {
            Ok(Some(p)) => delete_plex(app, p.address, nsid, name.clone()).await,
            // No longer a member: nothing to ask.
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = deleted {
            warn!(volume = %name, node = %node, nsid, "deleting a copy that left: {} (left as an orphan namespace there)", e.message);
        }
    }
    result
}

/// Every few seconds: the mirrors attached here are looked at (their
/// copies' states recorded), and a copy unreachable for longer than its
/// volume's `rebuild_after` is replaced by a new one on another appliance,
/// copied in full while the volume is in use.
pub async fn watch_mirrors(app: Arc<AppState>) {
    let down_since = Arc::new(Mutex::new(std::collections::HashMap::new()));
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let d = down_since.clone();
        let overdue = with_manager(app.clone(), move |m| {
            let mut d = d.lock().unwrap_or_else(PoisonError::into_inner);
            Ok(m.watch_mirrors(&mut d))
        })
        .await
        .unwrap_or_default();
        for (volume, node) in overdue {
            info!(volume = %volume, node = %node, "a copy stayed unreachable past its rebuild time: rebuilding it elsewhere");
            let change = PlexChange {
                add: Some(AddPlex::default()),
                remove: Some(node.clone()),
            };
            match change_plexes(app.clone(), volume.clone(), change).await {
                Ok(_) => down_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&(volume, node)),
                Err(e) => {
                    warn!(volume = %volume, node = %node, "rebuilding a copy elsewhere: {}", e.message);
                    None
                }
            };
        }
    }
}

async fn peer_create_plex(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreatePlex>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PlexCreated>), ApiError> {
    let req = body(req)?;
    let p = with_manager(app, move |m| m.create_plex_here(&req)).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

#[derive(Deserialize)]
struct PlexQuery {
    label: String,
}

async fn peer_delete_plex(
    State(app): State<Arc<AppState>>,
    UrlPath(nsid): UrlPath<u32>,
    Query(q): Query<PlexQuery>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.delete_plex_here(nsid, &q.label)).await?;
    Ok(Json(json!({ "deleted": true })))
}

async fn peer_delete_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.delete(&name, false)).await?;
    Ok(Json(json!({ "deleted": true })))
}

/// Serves the peer API on `address` (this appliance's management address)
/// until diad stops.
pub async fn serve_peers(address: &str, app: Arc<AppState>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((address, crate::peer::PEER_PORT))
        .await
        .with_context(|| {
            format!(
                "binding the peer API on {address}:{}",
                crate::peer::PEER_PORT
            )
        })?;
    info!(
        address,
        port = crate::peer::PEER_PORT,
        "serving the peer API"
    );
    let router = peer_routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .with_state(app);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the peer API")
}

/// The API routes.
pub fn router(app: Arc<AppState>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |r, (path, handlers)| r.route(path, handlers))
        .with_state(app)
}

/// Turns axum's JSON rejections into our `{"error"}` bodies.
fn body<T>(r: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(v)| v)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {}", e.body_text())))
}

async fn pool_info(State(app): State<Arc<AppState>>) -> Result<Json<Pool>, ApiError> {
    let card = app.card.clone();
    let pool = tokio::task::spawn_blocking(move || card.pool())
        .await
        .map_err(|e| ApiError::internal(format!("card task failed: {e}")))?
        .map_err(|e| ApiError::card("reading the pool", e))?;
    Ok(Json(pool))
}

async fn list_volumes(State(app): State<Arc<AppState>>) -> Result<Json<VolumeList>, ApiError> {
    with_manager(app, |m| Ok(m.list())).await.map(Json)
}

async fn create_volume(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreateVolume>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let req = body(req)?;
    if req.mirrors.is_some_and(|n| n != 1) {
        let v = create_mirrored(app, req).await?;
        return Ok((StatusCode::CREATED, Json(v)));
    }
    // In a cluster the volume may go to another appliance: asked without
    // holding this one's manager, so two appliances placing on each other
    // at once never wait on each other.
    let place = req.clone();
    let v = match with_manager(app.clone(), move |m| m.placement(&place)).await? {
        Some(address) => forward(address, "POST", "/peer/v1/volumes".into(), Some(req)).await?,
        None => with_manager(app, move |m| m.create_here(&req)).await?,
    };
    Ok((StatusCode::CREATED, Json(v)))
}

/// A mirrored volume: its plexes are made one by one (on other appliances
/// without holding this one's manager), then recorded; a failure deletes
/// the plexes made so far.
async fn create_mirrored(app: Arc<AppState>, req: CreateVolume) -> Result<Volume, ApiError> {
    let place = req.clone();
    let places = with_manager(app.clone(), move |m| m.mirror_placement(&place)).await?;
    let plex = CreatePlex {
        name: req.name.clone(),
        size_bytes: req.size_bytes,
        block_size: req.block_size,
    };
    let mut made: Vec<(PlexPlace, u32)> = Vec::new();
    let mut failed = None;
    for p in places {
        let r = match &p.address {
            None => {
                let plex = plex.clone();
                with_manager(app.clone(), move |m| m.create_plex_here(&plex)).await
            }
            Some(a) => {
                forward(
                    a.clone(),
                    "POST",
                    "/peer/v1/plexes".into(),
                    Some(plex.clone()),
                )
                .await
            }
        };
        match r {
            Ok(c) => made.push((p, c.nsid)),
            Err(e) => {
                failed = Some(ApiError {
                    message: format!("creating the copy on appliance '{}': {}", p.node, e.message),
                    ..e
                });
                break;
            }
        }
    }
    let recorded = match failed {
        Some(e) => Err(e),
        None => {
            let plexes: Vec<PlexState> = made
                .iter()
                .map(|(p, nsid)| PlexState {
                    node: p.node.clone(),
                    nsid: *nsid,
                    in_sync: true,
                })
                .collect();
            with_manager(app.clone(), move |m| m.record_mirrored(&req, &plexes)).await
        }
    };
    if recorded.is_err() {
        for (p, nsid) in made {
            let undone = delete_plex(app.clone(), p.address, nsid, plex.name.clone()).await;
            if let Err(e) = undone {
                warn!(node = %p.node, nsid, "undoing a plex: {}", e.message);
            }
        }
    }
    recorded
}

/// Deletes copy `nsid` of volume `label`: here (`address` `None`), or on
/// the appliance at `address` through its peer API, asked without holding
/// this appliance's manager (that appliance may be the one that is gone).
async fn delete_plex(
    app: Arc<AppState>,
    address: Option<String>,
    nsid: u32,
    label: String,
) -> Result<(), ApiError> {
    match address {
        None => with_manager(app, move |m| m.delete_plex_here(nsid, &label)).await,
        Some(a) => forward::<(), Value>(a, "DELETE", plex_path(nsid, &label), None)
            .await
            .map(|_| ()),
    }
}

/// A peer call on the blocking pool.
async fn forward<
    B: serde::Serialize + Send + 'static,
    T: serde::de::DeserializeOwned + Send + 'static,
>(
    address: String,
    method: &'static str,
    path: String,
    body: Option<B>,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || crate::peer::call(&address, method, &path, body.as_ref()))
        .await
        .map_err(|e| ApiError::internal(format!("peer task failed: {e}")))?
}

async fn show_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Volume>, ApiError> {
    let n = name.clone();
    let (v, there) = with_manager(app, move |m| {
        let v = m.show(&n)?;
        Ok((v, m.mirror_attached_elsewhere(&n)))
    })
    .await?;
    // A mirrored volume attached on another appliance: that appliance's
    // card knows its plexes now.
    match there {
        Some(address) => {
            let path = format!("/peer/v1/volumes/{name}");
            match forward::<(), Volume>(address, "GET", path, None).await {
                Ok(live) => Ok(Json(live)),
                Err(e) => {
                    warn!(volume = %name, "asking the appliance it is attached on: {}", e.message);
                    Ok(Json(v))
                }
            }
        }
        None => Ok(Json(v)),
    }
}

#[derive(Deserialize)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let owner = name.clone();
    match with_manager(app.clone(), move |m| m.owner_elsewhere(&owner)).await? {
        Some(address) => {
            let path = format!("/peer/v1/volumes/{name}");
            forward::<(), Value>(address, "DELETE", path, None).await?;
        }
        None => with_manager(app, move |m| m.delete(&name, q.force)).await?,
    }
    Ok(Json(json!({ "deleted": true })))
}

async fn attach_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Result<Json<Attachment>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Volume>, ApiError> {
    let req = body(req)?;
    with_manager(app, move |m| m.attach(&name, &req))
        .await
        .map(Json)
}

async fn detach_volume(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Volume>, ApiError> {
    with_manager(app, move |m| m.detach(&name)).await.map(Json)
}

async fn set_volume_tier(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Result<Json<SetTier>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Volume>, ApiError> {
    let req = body(req)?;
    with_manager(app, move |m| m.set_tier(&name, &req.tier))
        .await
        .map(Json)
}

async fn volume_stats(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Stats>, ApiError> {
    with_manager(app, move |m| m.stats(&name)).await.map(Json)
}

async fn list_tiers(State(app): State<Arc<AppState>>) -> Result<Json<Vec<Tier>>, ApiError> {
    with_manager(app, |m| Ok(m.tiers())).await.map(Json)
}

async fn create_tier(
    State(app): State<Arc<AppState>>,
    req: Result<Json<TierSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Tier>), ApiError> {
    let req = body(req)?;
    let t = with_manager(app, move |m| m.create_tier(req.clone())).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

async fn delete_tier(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.delete_tier(&name)).await?;
    Ok(Json(json!({ "deleted": true })))
}

async fn list_containers(
    State(app): State<Arc<AppState>>,
) -> Result<Json<Vec<Container>>, ApiError> {
    with_manager(app, |m| Ok(m.containers())).await.map(Json)
}

async fn create_container(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreateContainer>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Container>), ApiError> {
    let req = body(req)?;
    let c = with_manager(app, move |m| m.create_container(&req.name)).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

async fn delete_container(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.delete_container(&name)).await?;
    Ok(Json(json!({ "deleted": true })))
}

async fn list_networks(State(app): State<Arc<AppState>>) -> Result<Json<Vec<Network>>, ApiError> {
    with_manager(app, |m| Ok(m.networks())).await.map(Json)
}

async fn create_network(
    State(app): State<Arc<AppState>>,
    req: Result<Json<CreateNetwork>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Network>), ApiError> {
    let req = body(req)?;
    let n = with_manager(app, move |m| m.create_network(&req)).await?;
    Ok((StatusCode::CREATED, Json(n)))
}

async fn show_network(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Network>, ApiError> {
    with_manager(app, move |m| m.network(&name)).await.map(Json)
}

async fn delete_network(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.delete_network(&name)).await?;
    Ok(Json(json!({ "deleted": true })))
}

async fn list_ports(State(app): State<Arc<AppState>>) -> Result<Json<Vec<PortView>>, ApiError> {
    with_manager(app, |m| Ok(m.ports())).await.map(Json)
}

async fn attach_port(
    State(app): State<Arc<AppState>>,
    req: Result<Json<AttachPort>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PortView>), ApiError> {
    let req = body(req)?;
    let p = with_manager(app, move |m| m.attach_port(&req)).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn show_port(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<PortView>, ApiError> {
    with_manager(app, move |m| m.port(&name)).await.map(Json)
}

async fn detach_port(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    with_manager(app, move |m| m.detach_port(&name)).await?;
    Ok(Json(json!({ "deleted": true })))
}

async fn port_stats(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<PortStatsView>, ApiError> {
    with_manager(app, move |m| m.port_stats(&name))
        .await
        .map(Json)
}

async fn set_port_tier(
    State(app): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    req: Result<Json<SetTier>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PortView>, ApiError> {
    let req = body(req)?;
    with_manager(app, move |m| m.set_port_tier(&name, &req.tier))
        .await
        .map(Json)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn card_info(State(app): State<Arc<AppState>>) -> Result<Json<Identity>, ApiError> {
    let card = app.card.clone();
    let id = tokio::task::spawn_blocking(move || card.identify())
        .await
        .map_err(|e| ApiError::internal(format!("card task failed: {e}")))?
        .inspect_err(|e| warn!("card identify failed: {e}"))?;
    Ok(Json(id))
}

/// Serves the API on `socket` until SIGINT/SIGTERM, then removes the socket.
/// Only root of the appliance is served (see `socket.rs`).
pub async fn serve(socket: &Path, app: Arc<AppState>) -> Result<()> {
    serve_with(socket, app, crate::socket::root_only).await
}

/// `serve` with the peers `policy` accepts.
async fn serve_with(
    socket: &Path,
    app: Arc<AppState>,
    policy: crate::socket::Policy,
) -> Result<()> {
    let listener = crate::socket::bind(socket)?;
    info!(socket = %socket.display(), "serving the dia API");
    let result = axum::serve(crate::socket::Guarded::new(listener, policy), router(app))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = std::fs::remove_file(socket);
    info!("stopped");
    result.context("serving the API")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

#[cfg(test)]
mod doc_tests;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::test_support::{self, MemCard};

    async fn get(socket: &Path, path: &str) -> (u16, String) {
        send(socket, "GET", path, "").await
    }

    /// The tests' peers: this process, whoever runs the tests.
    fn this_uid(peer: &crate::socket::Peer) -> Result<(), String> {
        if peer.uid == nix::unistd::geteuid().as_raw() {
            Ok(())
        } else {
            Err(format!("uid {} is not the test's", peer.uid))
        }
    }

    fn refuse_all(_: &crate::socket::Peer) -> Result<(), String> {
        Err("nobody may".into())
    }

    async fn start(fail: bool) -> (tempfile::TempDir, PathBuf) {
        start_with(fail, this_uid).await
    }

    async fn start_with(fail: bool, policy: crate::socket::Policy) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("diad.sock");
        let host = Arc::new(crate::host::SystemHost::new().unwrap());
        // `fail`: a card that does not answer Identify.
        let card = MemCard {
            identity: (!fail).then(|| Identity {
                serial: "S1".into(),
                ..test_support::identity()
            }),
            ..MemCard::default()
        };
        let app = AppState::new(Manager::new(
            Arc::new(card),
            host,
            crate::state::DesiredState::default(),
            dir.path().join("s.toml"),
        ));
        let s = socket.clone();
        tokio::spawn(async move { serve_with(&s, app, policy).await });
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (dir, socket)
    }

    #[tokio::test]
    async fn card_info_over_the_socket() {
        let (_dir, socket) = start(false).await;
        let (status, body) = get(&socket, "/v1/card").await;
        assert_eq!(status, 200, "{body}");
        let id: Identity = serde_json::from_str(&body).unwrap();
        assert_eq!(id.serial, "S1");
        let (status, body) = get(&socket, "/v1/health").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"ok\""));
        let (status, _) = get(&socket, "/v1/nope").await;
        assert_eq!(status, 404);
    }

    async fn send(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: diad\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn bad_bodies_and_unknown_names_get_clear_errors() {
        let (_dir, socket) = start(false).await;
        let (status, body) = send(&socket, "POST", "/v1/volumes", r#"{"name":"a","size":1}"#).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("bad request body"), "{body}");
        let (status, body) = send(&socket, "GET", "/v1/volumes/ghost", "").await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no volume 'ghost'"), "{body}");
        let (status, body) = send(&socket, "GET", "/v1/volumes", "").await;
        assert_eq!(status, 200, "{body}");
        let list: VolumeList = serde_json::from_str(&body).unwrap();
        assert!(list.volumes.is_empty());
    }

    #[tokio::test]
    async fn card_timeout_is_504_with_a_message() {
        let (_dir, socket) = start(true).await;
        let (status, body) = get(&socket, "/v1/card").await;
        assert_eq!(status, 504);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains("did not answer"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_refused_peer_gets_403_with_a_json_error_and_is_closed() {
        let (_dir, socket) = start_with(false, refuse_all).await;
        let (status, body) = send(&socket, "POST", "/v1/containers", r#"{"name":"x"}"#).await;
        assert_eq!(status, 403, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({ "error": "nobody may" }));
        // Nothing was done for it.
        let (_dir2, socket2) = start(false).await;
        let (status, body) = send(&socket2, "GET", "/v1/containers", "").await;
        assert_eq!(status, 200, "{body}");
    }

    #[tokio::test]
    async fn the_daemon_serves_root_only() {
        // The real policy end to end: root of this machine is served, any
        // other uid that runs the tests is refused.
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/diad.sock");
        let app = AppState::new(Manager::new(
            Arc::new(MemCard::default()),
            Arc::new(crate::host::SystemHost::new().unwrap()),
            crate::state::DesiredState::default(),
            dir.path().join("s.toml"),
        ));
        let s = socket.clone();
        tokio::spawn(async move { serve(&s, app).await });
        for _ in 0..200 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let (status, body) = get(&socket, "/v1/health").await;
        if nix::unistd::geteuid().is_root() {
            assert_eq!(status, 200, "{body}");
        } else {
            assert_eq!(status, 403, "{body}");
            assert!(body.contains("only root of the appliance"), "{body}");
        }
    }
}
