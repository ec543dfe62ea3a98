//! The card as two processes, so its firmware can really crash. The *board
//! process* owns what outlives the firmware on a real card: the BAR's shared
//! memory, the doorbell and interrupt eventfds, the guest-RAM mapping and the
//! ivshmem connection QEMU holds. It runs the *firmware process* as a child
//! (the same executable, `--firmware-child`), handing it those descriptors
//! by inheritance. `kill` is `SIGKILL` on the child: no destructor, no flush,
//! no commit runs, the host keeps only what the firmware had written to its
//! pool devices (the page cache survives a process, not a power loss).
//! `start` spawns a fresh child, which reopens the pool from its devices.
//!
//! The child learns its descriptors from one argument
//! ([`FirmwareFds::to_arg`]) and reports that it is up by writing one byte to
//! a pipe; it dies with the board process (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use dia_abi::card as abi;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use tracing::{info, warn};

use crate::bar::Bar;
use crate::firmware::FirmwareControl;

/// How long a firmware start (pool open and recovery included) may take.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The descriptor numbers a firmware process inherits, as seen by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareFds {
    /// Guest RAM (`memory-backend-file`).
    pub guest_ram: RawFd,
    /// BAR2's shared memory.
    pub bar: RawFd,
    /// Write end of the readiness pipe.
    pub ready: RawFd,
    /// Doorbell eventfds, by vector.
    pub doorbells: Vec<RawFd>,
    /// The guest's interrupt eventfds, by vector.
    pub irqs: Vec<RawFd>,
}

impl FirmwareFds {
    /// `ram=N,bar=N,ready=N,doorbells=N:N:...,irqs=N:N:...`.
    pub fn to_arg(&self) -> String {
        let list = |v: &[RawFd]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(":")
        };
        format!(
            "ram={},bar={},ready={},doorbells={},irqs={}",
            self.guest_ram,
            self.bar,
            self.ready,
            list(&self.doorbells),
            list(&self.irqs)
        )
    }

    /// Parses [`Self::to_arg`]'s output.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Self {
            guest_ram: -1,
            bar: -1,
            ready: -1,
            doorbells: Vec::new(),
            irqs: Vec::new(),
        };
        let fd = |v: &str| {
            v.parse::<RawFd>()
                .map_err(|_| format!("'{v}' is not a descriptor"))
        };
        for part in s.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not KEY=VALUE"))?;
            match key {
                "ram" => out.guest_ram = fd(value)?,
                "bar" => out.bar = fd(value)?,
                "ready" => out.ready = fd(value)?,
                "doorbells" => {
                    out.doorbells = value.split(':').map(fd).collect::<Result<_, _>>()?
                }
                "irqs" => out.irqs = value.split(':').map(fd).collect::<Result<_, _>>()?,
                other => return Err(format!("unknown key '{other}'")),
            }
        }
        if out.guest_ram < 0 || out.bar < 0 || out.ready < 0 || out.doorbells.is_empty() {
            return Err("ram, bar, ready and doorbells are required".into());
        }
        if out.doorbells.len() != out.irqs.len() {
            return Err("as many irqs as doorbells are required".into());
        }
        Ok(out)
    }

    fn all(&self) -> Vec<RawFd> {
        let mut v = vec![self.guest_ram, self.bar, self.ready];
        v.extend(&self.doorbells);
        v.extend(&self.irqs);
        v
    }

    /// Takes ownership of the inherited descriptors and marks them
    /// close-on-exec again (the firmware execs nothing, but a descriptor
    /// should not outlive its purpose).
    ///
    /// # Safety
    ///
    /// Every number must be an open descriptor this process inherited for
    /// this purpose and that nothing else in the process owns.
    pub unsafe fn take(&self) -> std::io::Result<InheritedFds> {
        let own = |fd: RawFd| -> std::io::Result<OwnedFd> {
            // SAFETY: the caller guarantees `fd` is open and unowned.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
            Ok(owned)
        };
        Ok(InheritedFds {
            guest_ram: own(self.guest_ram)?,
            bar: own(self.bar)?,
            ready: own(self.ready)?,
            doorbells: self
                .doorbells
                .iter()
                .map(|&fd| own(fd))
                .collect::<Result<_, _>>()?,
            irqs: self
                .irqs
                .iter()
                .map(|&fd| own(fd))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A firmware process's inherited descriptors, owned.
#[derive(Debug)]
pub struct InheritedFds {
    /// Guest RAM.
    pub guest_ram: OwnedFd,
    /// BAR2's shared memory.
    pub bar: OwnedFd,
    /// Readiness pipe (write one byte when up).
    pub ready: OwnedFd,
    /// Doorbell eventfds.
    pub doorbells: Vec<OwnedFd>,
    /// Interrupt eventfds.
    pub irqs: Vec<OwnedFd>,
}

/// The board process's handle on its firmware process.
pub struct FirmwareProcess {
    exe: PathBuf,
    args: Vec<OsString>,
    fds: FirmwareFds,
    bar: std::sync::Arc<Bar>,
    child: Option<Child>,
    boots: u32,
}

impl FirmwareProcess {
    /// A firmware process to be run as `exe args... --firmware-child FDS`,
    /// where `fds` are descriptors of this process (kept open by the
    /// caller) that the child inherits under the same numbers; `bar` is
    /// where a kill is made visible (FW_STATUS reads FAILED). Not started.
    pub fn new(
        exe: PathBuf,
        args: Vec<OsString>,
        fds: FirmwareFds,
        bar: std::sync::Arc<Bar>,
    ) -> Self {
        Self {
            exe,
            args,
            fds,
            bar,
            child: None,
            boots: 0,
        }
    }

    /// Reaps a child that exited by itself (an injected fault, a panic).
    fn reap(&mut self) {
        if let Some(child) = &mut self.child {
            match child.try_wait() {
                Ok(Some(status)) => {
                    warn!(%status, "firmware process exited");
                    self.child = None;
                }
                Ok(None) => {}
                Err(e) => warn!("firmware process: {e}"),
            }
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let (ready_rx, ready_tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("readiness pipe")?;
        let mut fds = self.fds.clone();
        fds.ready = ready_tx.as_raw_fd();
        let inherit = fds.all();
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .arg("--firmware-child")
            .arg(fds.to_arg());
        // SAFETY: the closure runs in the forked child before exec and only
        // makes fcntl system calls on descriptor numbers (async-signal-safe,
        // no allocation).
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    if libc_clear_cloexec(fd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("spawning the firmware process")?;
        drop(ready_tx);
        // Wait for the byte (up) or EOF (it died starting), bounded.
        let deadline = Instant::now() + START_TIMEOUT;
        let mut rx = std::fs::File::from(ready_rx);
        let (tx, rx_done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            let _ = tx.send(matches!(rx.read(&mut b), Ok(1)));
        });
        let up = loop {
            if let Ok(up) = rx_done.recv_timeout(Duration::from_millis(100)) {
                break up;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the firmware process did not come up within {START_TIMEOUT:?}");
            }
        };
        if !up {
            let status = child.wait()?;
            bail!("the firmware process exited while starting ({status}); see its log above");
        }
        self.boots += 1;
        info!(boot = self.boots, pid = child.id(), "firmware process up");
        self.child = Some(child);
        Ok(())
    }
}

/// Clears `FD_CLOEXEC` on `fd` with the raw system call (fit for the time
/// between fork and exec). Returns the call's result.
fn libc_clear_cloexec(fd: RawFd) -> i32 {
    // SAFETY: `fd` is a descriptor number; F_SETFD with 0 only changes its
    // flags and touches no memory.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) }
}

impl FirmwareControl for FirmwareProcess {
    fn start(&mut self) -> anyhow::Result<()> {
        self.reap();
        if self.child.is_some() {
            bail!("firmware is already running");
        }
        self.spawn()
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        self.reap();
        let Some(mut child) = self.child.take() else {
            bail!("firmware is not running");
        };
        // SIGKILL: the firmware gets no chance to flush or commit anything.
        child.kill().context("SIGKILL to the firmware process")?;
        let status = child.wait()?;
        self.bar.write32(abi::REG_FW_STATUS, abi::FW_STATUS_FAILED);
        warn!(%status, "firmware process killed");
        Ok(())
    }

    fn status(&mut self) -> &'static str {
        self.reap();
        if self.child.is_some() {
            "running"
        } else {
            "dead"
        }
    }
}

impl Drop for FirmwareProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FirmwareFds;

    #[test]
    fn descriptor_argument_round_trips() {
        let fds = FirmwareFds {
            guest_ram: 3,
            bar: 4,
            ready: 5,
            doorbells: vec![6, 7],
            irqs: vec![8, 9],
        };
        assert_eq!(fds.to_arg(), "ram=3,bar=4,ready=5,doorbells=6:7,irqs=8:9");
        assert_eq!(FirmwareFds::parse(&fds.to_arg()), Ok(fds));
        assert!(FirmwareFds::parse("ram=3,bar=4,ready=5,doorbells=6:7,irqs=8").is_err());
        assert!(FirmwareFds::parse("ram=3,bar=x").is_err());
        assert!(FirmwareFds::parse("ram=3,bar=4,ready=5").is_err());
    }
}
