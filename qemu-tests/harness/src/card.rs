//! The emulated card as a host process: started before QEMU (it is the
//! ivshmem server QEMU connects to), killed when the run ends.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Serial number the harness gives every card (scenarios check it).
pub const TEST_SERIAL: &str = "DIA-TEST-0001";
/// Doorbell/interrupt vectors: admin, up to 8 I/O queues and up to 23
/// network ports.
pub const VECTORS: u32 = 32;
/// Size of each run's flash pool (a sparse file in the run directory),
/// unless the scenario's `card-args` give `--pool-size`.
pub const POOL_SIZE: &str = "2G";

/// A running card.
pub struct Card {
    child: Child,
    /// The ivshmem server socket QEMU connects to.
    pub socket: PathBuf,
    /// The shared guest-RAM file (QEMU's memory backend).
    pub guest_ram: PathBuf,
    /// Where the card logs.
    pub log: PathBuf,
    /// The card's control socket (kill/start the firmware).
    pub control: PathBuf,
}

impl Card {
    /// Starts the card for a guest of `ram_mib` MiB, with extra arguments
    /// (fault injection) from the scenario.
    pub fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        ram_mib: u64,
        extra: &[String],
    ) -> Result<Self> {
        let socket = dir.join("card.sock");
        let log = dir.join("card.log");
        let control = dir.join("card-control.sock");
        let pool = dir.join("pool.img");
        // Every run starts from a blank pool.
        let _ = std::fs::remove_file(&pool);
        let mut pool_args: Vec<String> = vec!["--pool".into(), pool.display().to_string()];
        if !extra.iter().any(|a| a == "--pool-size") {
            pool_args.extend(["--pool-size".into(), POOL_SIZE.into()]);
        }
        let guest_ram = PathBuf::from(format!("/dev/shm/dia-{}-{name}-ram", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(&guest_ram);
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .arg("--guest-ram")
            .arg(&guest_ram)
            .arg("--guest-ram-size")
            .arg((ram_mib << 20).to_string())
            .arg("--vectors")
            .arg(VECTORS.to_string())
            .arg("--serial")
            .arg(TEST_SERIAL)
            .args(&pool_args)
            .arg("--control")
            .arg(&control)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("DIA_CARD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(File::create(&log)?)
            .stderr(File::create(&log)?.try_clone()?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut card = Self {
            child,
            socket,
            guest_ram,
            log,
            control,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !card.socket.exists() {
            if let Some(status) = card.child.try_wait()? {
                bail!(
                    "card exited at start ({status}); its log:\n{}",
                    std::fs::read_to_string(&card.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("card did not create {} within 20 s", card.socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(card)
    }
}

impl Card {
    /// Sends one line command to the card's control socket; returns its answer.
    pub fn control(&self, command: &str) -> Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.control)
            .with_context(|| format!("connecting to {}", self.control.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        writeln!(s, "{command}")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.guest_ram);
        let _ = std::fs::remove_file(&self.socket);
    }
}
