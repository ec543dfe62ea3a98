//! `dia-card`: the emulated dia card. It is the ivshmem server QEMU's
//! `ivshmem-doorbell` device connects to, lays out the card's registers in
//! BAR2 (shared memory), maps the guest's RAM for DMA, opens its flash pool
//! and runs the firmware until killed. `--uplink-bind`/`--uplink-peer`
//! link its embedded switch to other cards over UDP. `--fabric-listen` serves
//! the card's namespaces to remote hosts over NVMe/TCP (docs/fabric.md).
//! The process started is the *board process* (ivshmem server, BAR,
//! eventfds); it runs the firmware as a child process of the same binary
//! (`--firmware-child`, see `supervisor` in the library). With `--control`
//! the firmware process can be killed (`SIGKILL`) and restarted on request
//! (for tests) while QEMU stays connected.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dia_card_model::{
    serve_control, serve_fabric, Bar, Board, CardConfig, EventFd, FabricConfig, Fault, Firmware,
    FirmwareControl, FirmwareFds, FirmwareProcess, GuestMemory, Interrupts, PoolSource, PoolSpec,
    Server, SharedMemory,
};
use tracing::info;

/// Parses a size: bytes, or a number with a K/M/G/T suffix (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("'{s}': unknown unit '{c}' (allowed: K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (examples: 1073741824, 96M, 2G)"))?;
    n.checked_shl(shift)
        .filter(|v| v >> shift == n)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[derive(Parser)]
#[command(
    name = "dia-card",
    version,
    about = "The emulated dia card (serves QEMU's ivshmem-doorbell device)"
)]
struct Args {
    /// Unix socket QEMU connects to (`-chardev socket,path=...`).
    #[arg(long)]
    socket: PathBuf,
    /// Guest RAM file, shared with QEMU (`memory-backend-file,mem-path=...,share=on`).
    #[arg(long)]
    guest_ram: PathBuf,
    /// Guest RAM size in bytes (must equal QEMU's `-m`, at most 2 GiB).
    #[arg(long)]
    guest_ram_size: u64,
    /// Doorbell/interrupt vectors (must equal QEMU's `vectors=`): 1 admin,
    /// then the I/O queues' and the ports' (the driver gives each port a
    /// vector of its own after its I/O queues', so all `--max-ports` ports
    /// at once need 1 + I/O queues + max ports). At most 1 + 64 I/O queues
    /// + 64 ports.
    #[arg(long, default_value_t = 9,
          value_parser = clap::value_parser!(u16).range(1..=1 + 64 + i64::from(dia_card_model::MAX_PORTS)))]
    vectors: u16,
    /// Size of BAR2 in bytes (a power of two, at least 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    bar_size: usize,
    /// Serial number the card reports.
    #[arg(long, default_value = "DIA-0000000001")]
    serial: String,
    /// Largest queue the card accepts, in entries.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u16).range(2..))]
    max_queue_entries: u16,
    /// Flash pool device (file or block device); repeat for a pool of
    /// several devices. Without one the card has no storage.
    #[arg(long = "pool")]
    pools: Vec<PathBuf>,
    /// Size of pool files that do not exist yet or are empty (sparse), e.g. `2G`.
    #[arg(long, value_parser = parse_size)]
    pool_size: Option<u64>,
    /// Unix socket taking `kill`, `start` and `status` (crash and restart
    /// the firmware; for tests).
    #[arg(long)]
    control: Option<PathBuf>,
    /// Storage QoS capacity the card admits floors against, I/Os per
    /// second (default: `--media-iops` if set, else what `qemu-tests/run
    /// bench` measured for 4k random I/O on a 2-core TCG appliance, rounded
    /// down: 25000).
    #[arg(long)]
    qos_capacity_iops: Option<u64>,
    /// Storage QoS capacity in bytes per second, e.g. `2G` (default:
    /// `--media-bps` if set, else 2G).
    #[arg(long, value_parser = parse_size)]
    qos_capacity_bps: Option<u64>,
    /// Model the flash's throughput: the card serves at most this many
    /// I/Os per second in total (default: as fast as the host can). With
    /// it the card, not the guest's CPUs, is the bottleneck, as on real
    /// hardware, and floors have something to take from the neighbours.
    #[arg(long, default_value_t = 0)]
    media_iops: u64,
    /// Model the flash's throughput in bytes per second, e.g. `400M`.
    #[arg(long, default_value = "0", value_parser = parse_size)]
    media_bps: u64,
    /// Most network ports the card offers (ids 1..=N; each port also needs
    /// a vector of its own, see `--vectors`).
    #[arg(long, default_value_t = dia_card_model::MAX_PORTS,
          value_parser = clap::value_parser!(u16).range(1..=i64::from(dia_card_model::MAX_PORTS)))]
    max_ports: u16,
    /// UDP address (ADDR:PORT) the card's uplink listens on and sends from:
    /// frames switched to the uplink leave the card 802.1Q-tagged, one per
    /// datagram. Without it the card has no uplink (ports talk only to
    /// ports of the same card).
    #[arg(long, value_name = "ADDR:PORT")]
    uplink_bind: Option<std::net::SocketAddr>,
    /// Another card's `--uplink-bind` address; repeat for several. Frames
    /// for the uplink go to every peer, and only datagrams from peers are
    /// accepted.
    #[arg(
        long = "uplink-peer",
        value_name = "ADDR:PORT",
        requires = "uplink_bind"
    )]
    uplink_peers: Vec<std::net::SocketAddr>,
    /// TCP address (ADDR:PORT) of the card's storage uplink: an NVMe over
    /// Fabrics TCP target serving each attached namespace as subsystem
    /// `nqn.2026-12.io.dia:<serial>:ns<NSID>`, with a discovery controller
    /// (docs/fabric.md). Off without it.
    #[arg(long, value_name = "ADDR:PORT")]
    fabric_listen: Option<std::net::SocketAddr>,
    /// Address the fabric's discovery log gives hosts (default: the
    /// address each host's connection reached).
    #[arg(long, value_name = "ADDR:PORT", requires = "fabric_listen")]
    fabric_advertise: Option<std::net::SocketAddr>,
    /// Most NVMe/TCP connections (queues) at once, all hosts together.
    #[arg(long, default_value_t = dia_card_model::FABRIC_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    fabric_max_connections: u16,
    /// Inject a fault for tests: `exit-on-admin=OPCODE:N` (die on the N-th
    /// admin command with OPCODE, before completing it) or `never-ready`
    /// (firmware never reports running).
    #[arg(long)]
    fault: Option<Fault>,
    /// Internal: run as the firmware process of a board process, with the
    /// descriptors it handed over (`ram=N,bar=N,ready=N,doorbells=..,irqs=..`).
    #[arg(long, hide = true, value_parser = FirmwareFds::parse)]
    firmware_child: Option<FirmwareFds>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if !args.bar_size.is_power_of_two() || args.bar_size < dia_abi::card::BAR2_MIN_SIZE {
        bail!(
            "--bar-size must be a power of two of at least {} bytes",
            dia_abi::card::BAR2_MIN_SIZE
        );
    }
    if args.guest_ram_size == 0 || args.guest_ram_size > 2 << 30 {
        bail!("--guest-ram-size must be 1 byte to 2 GiB (guest RAM must stay below the PCI hole)");
    }
    match args.firmware_child.clone() {
        Some(fds) => firmware_process(args, &fds),
        None => board_process(args),
    }
}

/// The board process: creates what outlives the firmware, starts the
/// firmware process, serves QEMU and the control socket.
fn board_process(args: Args) -> Result<()> {
    let ram_len = usize::try_from(args.guest_ram_size)?;
    let ram = SharedMemory::file(&args.guest_ram, ram_len)
        .with_context(|| format!("mapping guest RAM {}", args.guest_ram.display()))?;
    let bar_mem = SharedMemory::anonymous("dia-bar2", args.bar_size).context("creating BAR2")?;
    let bar_fd = bar_mem.fd().try_clone()?;
    let vectors = usize::from(args.vectors);
    let doorbells: Vec<EventFd> = (0..vectors)
        .map(|_| EventFd::new())
        .collect::<Result<_, _>>()?;
    let guest: Vec<EventFd> = (0..vectors)
        .map(|_| EventFd::new())
        .collect::<Result<_, _>>()?;
    let fds = FirmwareFds {
        guest_ram: ram.fd().as_raw_fd(),
        bar: bar_fd.as_raw_fd(),
        // Filled in per start (a fresh pipe each time).
        ready: -1,
        doorbells: doorbells.iter().map(AsRawFd::as_raw_fd).collect(),
        irqs: guest.iter().map(AsRawFd::as_raw_fd).collect(),
    };
    let bar = Arc::new(Bar::new(bar_mem)?);
    // The running binary itself, even if its file was replaced or removed
    // since (a rebuild under a running board): a firmware restart runs the
    // firmware the board started with, as a card reboots from its flash.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let child_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut firmware = FirmwareProcess::new(exe, child_args, fds, bar);
    firmware.start().context("starting the firmware")?;
    let firmware = Arc::new(Mutex::new(firmware));
    if let Some(path) = &args.control {
        serve_control(firmware.clone(), path)
            .with_context(|| format!("listening on {}", path.display()))?;
    }
    let server = Server::bind(
        &args.socket,
        bar_fd,
        doorbells
            .iter()
            .map(|d| d.try_clone_fd())
            .collect::<Result<_, _>>()?,
        guest
            .iter()
            .map(|d| d.try_clone_fd())
            .collect::<Result<_, _>>()?,
    )
    .with_context(|| format!("listening on {}", args.socket.display()))?;
    std::thread::Builder::new()
        .name("ivshmem".into())
        .spawn(move || server.serve())?;
    info!(socket = %args.socket.display(), vectors, "listening");
    // `ram`, the eventfds and `firmware` live as long as the process.
    let _keep = (ram, doorbells, guest, firmware);
    loop {
        std::thread::park();
    }
}

/// The firmware process: maps what the board process handed over, opens
/// the pool, runs the controller (and the fabric target) until killed.
fn firmware_process(args: Args, fds: &FirmwareFds) -> Result<()> {
    // Die with the board process; and if it is already gone, do not start.
    nix::sys::prctl::set_pdeathsig(Some(nix::sys::signal::Signal::SIGKILL))?;
    if nix::unistd::getppid() == nix::unistd::Pid::from_raw(1) {
        bail!("the board process is gone");
    }
    // SAFETY: the board process opened these descriptors for this process
    // (clearing close-on-exec only on them) and nothing else here owns them.
    let fds = unsafe { fds.take() }.context("taking the board's descriptors")?;
    let ram = SharedMemory::map(fds.guest_ram, usize::try_from(args.guest_ram_size)?)
        .context("mapping guest RAM")?;
    let bar = Bar::new(SharedMemory::map(fds.bar, args.bar_size).context("mapping BAR2")?)?;
    let wrap = |v: Vec<OwnedFd>| {
        v.into_iter().map(|fd| {
            // SAFETY: the board process made these with `EventFd::new`.
            unsafe { EventFd::from_owned_fd(fd) }
        })
    };
    let doorbells: Vec<EventFd> = wrap(fds.doorbells).collect();
    let guest: Vec<EventFd> = wrap(fds.irqs).collect();
    let fabric = args.fabric_listen.map(|listen| FabricConfig {
        listen,
        serial: args.serial.clone(),
        advertise: args.fabric_advertise,
        max_connections: usize::from(args.fabric_max_connections),
    });
    let cfg = CardConfig {
        serial: args.serial,
        vectors: args.vectors,
        max_queue_entries: args.max_queue_entries,
        fault: args.fault,
        qos_capacity_iops: args.qos_capacity_iops.unwrap_or(if args.media_iops > 0 {
            args.media_iops
        } else {
            25_000
        }),
        qos_capacity_bps: args.qos_capacity_bps.unwrap_or(if args.media_bps > 0 {
            args.media_bps
        } else {
            2 << 30
        }),
        media_iops: args.media_iops,
        media_bps: args.media_bps,
        max_ports: args.max_ports,
        uplink_bind: args.uplink_bind,
        uplink_peers: args.uplink_peers,
    };
    let board = Arc::new(Board {
        bar,
        mem: GuestMemory::new(ram),
        irq: Interrupts::new(guest),
        doorbells,
    });
    let pool = (!args.pools.is_empty()).then(|| PoolSpec {
        paths: args.pools.clone(),
        create_bytes: args.pool_size,
    });
    let mut firmware = Firmware::new(board, cfg, pool);
    firmware.start().context("starting the firmware")?;
    let firmware = Arc::new(Mutex::new(firmware));
    if let Some(fabric) = fabric {
        let listen = fabric.listen;
        let fw = firmware.clone();
        let pools: PoolSource =
            Arc::new(move || fw.lock().unwrap_or_else(PoisonError::into_inner).pool());
        serve_fabric(fabric, pools)
            .with_context(|| format!("listening on {listen} for NVMe/TCP (--fabric-listen)"))?;
    }
    // Up: tell the board process.
    std::fs::File::from(fds.ready)
        .write_all(&[1])
        .context("reporting readiness")?;
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("96M"), Ok(96 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("2X")
            .unwrap_err()
            .contains("allowed: K, M, G, T"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
