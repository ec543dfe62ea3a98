//! The card's firmware as something that can die and come back: `Firmware`
//! runs the controller on its own thread over a `Board` that outlives it.
//! `kill` stops it abruptly, the way a crash would: nothing is flushed or
//! committed, the heartbeat stops and FW_STATUS reads FAILED. `start` boots
//! it again: the pool is reopened from its devices (recovering the last
//! committed metadata) and the registers are laid out afresh, so the driver
//! must reset the controller, as after a real firmware restart.
//!
//! This in-process kill is what the host tests use; the `dia-card` binary
//! runs the firmware in a process of its own (`supervisor`), whose kill is a
//! real `SIGKILL`. Both are a [`FirmwareControl`]: `serve_control` answers
//! one-line commands on a unix socket (`kill`, `start`, `status`), which is
//! how the test harness crashes the card.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use dia_abi::card as abi;
use tracing::{error, info, warn};

use crate::board::Board;
use crate::controller::{CardConfig, Controller};
use crate::pool::{Pool, PoolSpec};

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    pool: Option<Arc<Pool>>,
}

/// The firmware: a controller that can be killed and restarted.
pub struct Firmware {
    board: Arc<Board>,
    cfg: CardConfig,
    pool: Option<PoolSpec>,
    running: Option<Running>,
    boots: u32,
}

impl Firmware {
    /// Firmware for `board`, with the card's flash on `pool` (if any). Not
    /// started yet.
    pub fn new(board: Arc<Board>, cfg: CardConfig, pool: Option<PoolSpec>) -> Self {
        Self {
            board,
            cfg,
            pool,
            running: None,
            boots: 0,
        }
    }

    /// Boots the firmware (opening the pool).
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.running.is_some() {
            anyhow::bail!("firmware is already running");
        }
        let pool = match &self.pool {
            Some(spec) => Some(Arc::new(Pool::open(spec)?)),
            None => None,
        };
        let mut ctrl = Controller::new(self.board.clone(), self.cfg.clone(), pool.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("firmware".into())
            .spawn(move || ctrl.run(&s))?;
        self.boots += 1;
        info!(boot = self.boots, "firmware started");
        self.running = Some(Running { stop, thread, pool });
        Ok(())
    }

    /// Stops the firmware as a crash would (no flush, no commit).
    pub fn kill(&mut self) -> anyhow::Result<()> {
        let Some(r) = self.running.take() else {
            anyhow::bail!("firmware is not running");
        };
        r.stop.store(true, Ordering::Relaxed);
        if r.thread.join().is_err() {
            warn!("firmware thread panicked");
        }
        self.board
            .bar
            .write32(abi::REG_FW_STATUS, abi::FW_STATUS_FAILED);
        warn!("firmware killed");
        Ok(())
    }

    /// The pool the running firmware serves (none while it is dead): the
    /// fabric target reaches the card's namespaces through it.
    pub fn pool(&self) -> Option<Arc<Pool>> {
        self.running.as_ref().and_then(|r| r.pool.clone())
    }

    /// `running` or `dead`.
    pub fn status(&self) -> &'static str {
        if self.running.is_some() {
            "running"
        } else {
            "dead"
        }
    }
}

/// A firmware that can be crashed and booted again.
pub trait FirmwareControl {
    /// Boots it (opening the pool).
    fn start(&mut self) -> anyhow::Result<()>;
    /// Stops it as a crash would (no flush, no commit).
    fn kill(&mut self) -> anyhow::Result<()>;
    /// `running` or `dead`.
    fn status(&mut self) -> &'static str;
}

impl FirmwareControl for Firmware {
    fn start(&mut self) -> anyhow::Result<()> {
        Firmware::start(self)
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        Firmware::kill(self)
    }

    fn status(&mut self) -> &'static str {
        Firmware::status(self)
    }
}

/// Serves the control socket at `path` (one command per connection).
pub fn serve_control<F: FirmwareControl + Send + 'static>(
    fw: Arc<Mutex<F>>,
    path: &Path,
) -> std::io::Result<JoinHandle<()>> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut line = String::new();
                let Ok(reader) = conn.try_clone() else {
                    continue;
                };
                if BufReader::new(reader).read_line(&mut line).is_err() {
                    continue;
                }
                let mut fw = fw.lock().unwrap_or_else(PoisonError::into_inner);
                let answer = match line.trim() {
                    "kill" => fw.kill().map(|()| "ok killed".to_string()),
                    "start" => fw.start().map(|()| "ok started".to_string()),
                    "status" => Ok(format!("ok {}", fw.status())),
                    other => Err(anyhow::anyhow!(
                        "unknown command '{other}' (allowed: kill, start, status)"
                    )),
                };
                drop(fw);
                let answer = answer.unwrap_or_else(|e| {
                    error!("control: {e:#}");
                    format!("error: {e:#}")
                });
                let _ = writeln!(conn, "{answer}");
            }
        })
}
