//! diad: the dia daemon. It owns the card's control node (`/dev/dia`), keeps
//! the desired state in a TOML file, and serves the HTTP/JSON API that
//! `diaconfig`, orchestrator plugins and the GUI use, on a unix socket.

mod api;
mod card_device;
mod cluster;
mod cluster_store;
mod containers;
mod error;
mod host;
mod isolation;
mod manager;
mod mirrors;
mod netconf;
mod networks;
mod peer;
mod reconcile;
mod socket;
mod state;
#[cfg(test)]
mod test_support;
mod tiers;
mod volumes;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracing::{info, warn};

use crate::host::{NsOp, SystemHost};
use crate::manager::Manager;

#[derive(Parser)]
#[command(
    name = "diad",
    version,
    about = "The dia daemon: owns /dev/dia and serves the dia API"
)]
struct Args {
    /// The card's control node.
    #[arg(long, default_value = dia::DEFAULT_DEVICE)]
    device: PathBuf,
    /// Unix socket to serve the API on.
    #[arg(long, default_value = api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Desired-state file (TOML); created if missing.
    #[arg(long, default_value = state::DEFAULT_STATE)]
    state: PathBuf,
    /// This appliance's name in a cluster (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// This appliance's address on the management network: etcd and the
    /// peer API listen there (needed to create or join a cluster).
    #[arg(long)]
    address: Option<String>,
    /// Where other appliances' cards reach this card's NVMe/TCP target,
    /// `IP:PORT` (needed to serve volumes to other appliances).
    #[arg(long)]
    fabric_endpoint: Option<String>,
    /// A placement label of this appliance (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `diad=debug`.
    #[arg(long, default_value = "info")]
    log: String,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Helpers diad runs as separate, single-threaded processes of itself.
#[derive(Subcommand)]
enum Helper {
    /// Become the init of container NAME (new user/mount/UTS/IPC/net
    /// namespaces; ids 0.. inside are ROOT_ID.. outside).
    #[command(hide = true)]
    ContainerInit {
        #[arg(long)]
        root_id: u32,
        name: String,
    },
    /// Run one operation in the mount namespace of PID.
    #[command(hide = true)]
    NsExec {
        #[arg(long)]
        pid: u32,
        #[arg(trailing_var_arg = true, required = true)]
        op: Vec<String>,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    match &args.helper {
        // Before any thread exists: unshare/setns need a single thread.
        Some(Helper::ContainerInit { root_id, name }) => host::container_init(name, *root_id),
        Some(Helper::NsExec { pid, op }) => host::ns_exec(*pid, &NsOp::parse(op)?),
        None => tokio::runtime::Runtime::new()
            .context("starting the async runtime")?
            .block_on(daemon(args)),
    }
}

async fn daemon(args: Args) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log).context("--log")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let desired = state::load_or_create(&args.state)?;
    info!(state = %args.state.display(), version = desired.version, "desired state loaded");
    let device = dia::Card::open(&args.device).with_context(|| "opening the card")?;
    // A card that does not answer is reported, not fatal: the API then
    // answers 503/504 so clients see the card's state.
    match device.identify() {
        Ok(id) => info!(
            model = %id.model, serial = %id.serial, firmware = %id.firmware,
            interface = %id.interface_version, "card {}", args.device.display()
        ),
        Err(e) => warn!(
            "card {} does not answer Identify: {e}",
            args.device.display()
        ),
    }
    let mut manager = Manager::new(
        Arc::new(device),
        Arc::new(SystemHost::new()?),
        desired,
        args.state.clone(),
    );
    let node = cluster::LocalNode {
        name: match &args.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .context("reading the host name")?
                .to_string_lossy()
                .into_owned(),
        },
        address: args.address.clone(),
        fabric: args.fabric_endpoint.clone(),
        labels: args.labels.clone(),
        dir: cluster::state_dir(&args.state),
    };
    let clustered = cluster::resume(&mut manager, &node).await?;
    let report = tokio::task::spawn_blocking(move || {
        if clustered {
            // etcd may have no quorum yet: reconcile what it has, or the
            // state this appliance saved alone if it answers nothing.
            if let Err(e) = manager.refresh() {
                warn!("reading the cluster state: {}", e.message);
            }
            manager.export_local_volumes();
        }
        let report = manager.reconcile();
        (manager, report)
    })
    .await?;
    let (manager, report) = report;
    info!(
        differences = report.len(),
        "reconciled the state with the card"
    );
    let app = api::AppState::with_node(manager, node);
    tokio::spawn(api::watch_mirrors(app.clone()));
    if let Some(address) = &args.address {
        let (address, app) = (address.clone(), app.clone());
        tokio::spawn(async move {
            if let Err(e) = api::serve_peers(&address, app).await {
                warn!("{e:#}");
            }
        });
    }
    api::serve(&args.socket, app).await
}
