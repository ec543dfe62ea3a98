//! diad's HTTP/JSON API (see docs/api.md), served on a unix socket:
//! `GET /v1/health`, `GET /v1/card`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use dia::Identity;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::card::CardDevice;
use crate::error::ApiError;
use crate::state::DesiredState;

/// Default API socket.
pub const DEFAULT_SOCKET: &str = "/run/dia/diad.sock";

/// Shared daemon state.
pub struct AppState {
    card: Arc<dyn CardDevice>,
    #[allow(dead_code)] // Read by the volume/network handlers as they land.
    desired: Mutex<DesiredState>,
    #[allow(dead_code)]
    state_path: PathBuf,
}

impl AppState {
    /// Wraps the card and the loaded desired state.
    pub fn new(card: Arc<dyn CardDevice>, desired: DesiredState, state_path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            card,
            desired: Mutex::new(desired),
            state_path,
        })
    }
}

/// The API routes.
pub fn router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/card", get(card_info))
        .with_state(app)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn card_info(State(app): State<Arc<AppState>>) -> Result<Json<Identity>, ApiError> {
    let card = app.card.clone();
    let id = tokio::task::spawn_blocking(move || card.identify())
        .await
        .map_err(|e| ApiError {
            status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("card task failed: {e}"),
        })?
        .inspect_err(|e| warn!("card identify failed: {e}"))?;
    Ok(Json(id))
}

/// Serves the API on `socket` until SIGINT/SIGTERM, then removes the socket.
pub async fn serve(socket: &Path, app: Arc<AppState>) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket left by a crashed diad would make bind fail.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("binding {}", socket.display()))?;
    info!(socket = %socket.display(), "serving the dia API");
    let result = axum::serve(listener, router(app))
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
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct TestCard {
        fail: bool,
    }

    impl CardDevice for TestCard {
        fn identify(&self) -> Result<Identity, dia::Error> {
            if self.fail {
                return Err(dia::Error::Timeout {
                    request: "DIA_IOC_IDENTIFY",
                });
            }
            Ok(Identity {
                model: "test card".into(),
                serial: "S1".into(),
                firmware: "9.9".into(),
                interface_version: "1.0".into(),
                abi_version: 1,
                vendor_id: 0x1af4,
                capabilities: vec![],
                max_io_queues: 8,
                io_queues: 2,
                max_queue_entries: 1024,
                msix_vectors: 3,
                max_namespaces: 0,
                max_ports: 0,
                pool_bytes: 0,
            })
        }
    }

    async fn get(socket: &Path, path: &str) -> (u16, String) {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: diad\r\nConnection: close\r\n\r\n").as_bytes(),
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

    async fn start(fail: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("diad.sock");
        let app = AppState::new(
            Arc::new(TestCard { fail }),
            DesiredState::default(),
            dir.path().join("s.toml"),
        );
        let s = socket.clone();
        tokio::spawn(async move { serve(&s, app).await });
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
}
