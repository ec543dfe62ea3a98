//! The emulated card as a host process: started before QEMU (it is the
//! ivshmem server QEMU connects to), killed when the run ends.

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Serial number the harness gives the card of a single-appliance run and
/// node 0 of a multi-appliance one (scenarios check it).
pub const TEST_SERIAL: &str = "DIA-TEST-0001";
/// Doorbell/interrupt vectors: admin, up to 8 I/O queues and one for each
/// of the card's [`MAX_PORTS`] network ports, so that every port the card
/// advertises can exist at once (with 32 vectors a 2-CPU guest ran out at
/// its 30th port).
pub const VECTORS: u32 = 1 + 8 + MAX_PORTS;
/// Most network ports the card advertises (the card's `net::MAX_PORTS`,
/// its `--max-ports` default).
pub const MAX_PORTS: u32 = 64;
/// Size of each run's flash pool (a sparse file in the run directory),
/// unless the scenario's `card-args` give `--pool-size`.
pub const POOL_SIZE: &str = "2G";

/// A running card.
pub struct CardProcess {
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

impl CardProcess {
    /// Starts the card for a guest of `ram_mib` MiB with serial number
    /// `serial` and extra arguments (fault injection from the scenario,
    /// uplink flags).
    pub fn start(
        binary: &Path,
        dir: &Path,
        name: &str,
        ram_mib: u64,
        serial: &str,
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
            .arg(serial)
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

impl CardProcess {
    /// Sends one line command to the card's control socket; returns its answer.
    /// Cuts the card's power: its process (board, firmware, fabric target,
    /// uplink) dies at once, as with the appliance around it.
    pub fn power_cut(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
    }

    /// The card's memory from the host: `board_*` for the board process
    /// (the one the harness started: BAR, eventfds, ivshmem server) and
    /// `fw_*` for its firmware process(es) (controller, pool, switch,
    /// engines), each `rss`, `anon` (the process's own heap and stacks),
    /// `file` and `shmem` (guest RAM and BAR pages it touched) in KiB, as
    /// `key=value` words.
    pub fn memory(&self) -> Result<String> {
        let pid = self.child.id();
        let board = proc_memory(pid)?;
        let mut fw = [0u64; 4];
        for child in proc_children(pid) {
            if let Ok(m) = proc_memory(child) {
                for (f, v) in fw.iter_mut().zip(m) {
                    *f += v;
                }
            }
        }
        let words = |who: &str, m: [u64; 4]| {
            format!(
                "{who}_rss={} {who}_anon={} {who}_file={} {who}_shmem={}",
                m[0], m[1], m[2], m[3]
            )
        };
        Ok(format!("{} {}", words("fw", fw), words("board", board)))
    }

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

/// VmRSS, RssAnon, RssFile and RssShmem of process `pid`, in KiB.
fn proc_memory(pid: u32) -> Result<[u64; 4]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    Ok(status_memory(&status))
}

/// The `VmRSS`, `RssAnon`, `RssFile` and `RssShmem` fields (KiB) of a
/// `/proc/PID/status` text; 0 where one is missing.
fn status_memory(status: &str) -> [u64; 4] {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    [
        field("VmRSS"),
        field("RssAnon"),
        field("RssFile"),
        field("RssShmem"),
    ]
}

/// The child processes of `pid` (every thread's children).
fn proc_children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The serial number of node `node` (0-based): `DIA-TEST-0001`, `-0002`, ...
pub fn test_serial(node: usize) -> String {
    format!("DIA-TEST-{:04}", node + 1)
}

/// Whether this card binary has an uplink (`--uplink-bind`, `--uplink-peer`).
pub fn supports_uplink(binary: &Path) -> Result<bool> {
    let out = Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --help", binary.display()))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--uplink-bind"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for the card's
/// NVMe/TCP target, `--fabric-listen`).
pub fn free_tcp_port() -> Result<u16> {
    let l =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a TCP port on 127.0.0.1")?;
    Ok(l.local_addr().context("TCP socket address")?.port())
}

/// `n` UDP ports on 127.0.0.1 that were free a moment ago (all bound at
/// once so they differ, then released for the cards to bind).
pub fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").context("binding a UDP port on 127.0.0.1"))
        .collect::<Result<Vec<_>>>()?;
    sockets
        .iter()
        .map(|s| Ok(s.local_addr().context("UDP socket address")?.port()))
        .collect()
}

/// The uplink flags of node `node` when the nodes' cards bind `ports`:
/// its own port to bind, every other node's as a peer.
pub fn uplink_args(ports: &[u16], node: usize) -> Vec<String> {
    let mut args = vec!["--uplink-bind".into(), format!("127.0.0.1:{}", ports[node])];
    for (i, p) in ports.iter().enumerate() {
        if i != node {
            args.extend(["--uplink-peer".into(), format!("127.0.0.1:{p}")]);
        }
    }
    args
}

impl Drop for CardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.guest_ram);
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let status = "Name:\tdia-card\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t 512 kB\nRssShmem:\t 512 kB\n";
        assert_eq!(status_memory(status), [2048, 1024, 512, 512]);
        assert_eq!(status_memory("Name:\tx\n"), [0; 4]);
    }

    #[test]
    fn this_process_has_memory() {
        let m = proc_memory(std::process::id()).unwrap_or_default();
        assert!(m[0] > 0 && m[1] > 0, "{m:?}");
    }

    #[test]
    fn node_serials() {
        assert_eq!(test_serial(0), TEST_SERIAL);
        assert_eq!(test_serial(1), "DIA-TEST-0002");
    }

    #[test]
    fn two_nodes_peer_with_each_other() {
        let ports = free_udp_ports(2).unwrap_or_default();
        assert_eq!(ports.len(), 2);
        assert_ne!(ports[0], ports[1]);
        assert_eq!(
            uplink_args(&[4000, 4001], 0),
            [
                "--uplink-bind",
                "127.0.0.1:4000",
                "--uplink-peer",
                "127.0.0.1:4001"
            ]
        );
        assert_eq!(
            uplink_args(&[4000, 4001], 1),
            [
                "--uplink-bind",
                "127.0.0.1:4001",
                "--uplink-peer",
                "127.0.0.1:4000"
            ]
        );
    }
}
