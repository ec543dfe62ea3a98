//! diad: the dia daemon. It owns the card's control node (`/dev/dia`), keeps
//! the desired state in a TOML file, and serves the HTTP/JSON API that
//! `diaconfig`, orchestrator plugins and the GUI use, on a unix socket.

mod api;
mod card;
mod error;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use tracing::{info, warn};

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
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `diad=debug`.
    #[arg(long, default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
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
    let app = api::AppState::new(Arc::new(device), desired, args.state.clone());
    api::serve(&args.socket, app).await
}
