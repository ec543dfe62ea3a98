//! QEMU: the appliance's command line (TCG, guest RAM in a shared file the
//! card maps for DMA, the card as an `ivshmem-doorbell` PCI function), and
//! running one scenario with a time limit while the console is saved: on
//! one appliance, or on several (`# appliances: N`), each with its own card
//! and QEMU, the cards linked by their UDP uplinks and the guests by a
//! management network (see `mgmt_hub`).

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::build::Artefacts;
use crate::card_process::{self, CardProcess};
use crate::host_channel::{self, Barrier};
use crate::mgmt_hub::{self, MgmtHub};
use crate::paths::Paths;
use crate::progress::Step;
use crate::scenario::Scenario;

/// Guest RAM; stays below the 32-bit PCI hole so guest-physical == file offset.
pub const GUEST_RAM_MIB: u64 = 1024;

/// Where one node's logs are.
pub struct NodeLogs {
    /// Saved guest console.
    pub console: PathBuf,
    /// Saved card log.
    pub card_log: PathBuf,
}

/// How a scenario ended.
pub enum Outcome {
    /// The guest reported PASS (every node did).
    Passed {
        /// Wall time, boot included.
        seconds: f64,
    },
    /// A guest reported FAIL, timed out, or a QEMU died.
    Failed {
        /// What went wrong.
        reason: String,
        /// Each node's logs (one for a single-appliance scenario).
        nodes: Vec<NodeLogs>,
    },
}

fn base_command(
    artefacts: &Artefacts,
    card: &CardProcess,
    append: &str,
    extra: &[String],
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
        .args(["-m", &format!("{GUEST_RAM_MIB}M")])
        .arg("-object")
        .arg(format!(
            "memory-backend-file,id=ram,size={GUEST_RAM_MIB}M,mem-path={},share=on",
            card.guest_ram.display()
        ))
        .args(["-machine", "pc,memory-backend=ram"])
        .args(["-nodefaults", "-no-reboot", "-display", "none"])
        .arg("-kernel")
        .arg(&artefacts.bzimage)
        .arg("-initrd")
        .arg(&artefacts.initramfs)
        // The Debian root, shared read-only by every appliance; each boot's
        // writes go to a tmpfs overlay in the guest (see guest/init).
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=root,readonly=on",
            artefacts.rootfs.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=root,serial=dia-root"])
        .args(["-append", append])
        .arg("-chardev")
        .arg(format!("socket,path={},id=card0", card.socket.display()))
        .args([
            "-device",
            &format!(
                "ivshmem-doorbell,chardev=card0,vectors={}",
                card_process::VECTORS
            ),
        ])
        .args(extra);
    cmd
}

/// Boots fresh appliances for `scenario` (one, or `# appliances: N`) and
/// waits for the verdict.
///
/// A guest kernel that crashes while booting, before the scenario started
/// (before `dia.ko` is even loaded), is booted again, at most twice: QEMU's
/// multi-threaded TCG occasionally trips the kernel's boot-time code
/// patching (an `int3` oops in an unrelated function). With several nodes,
/// all of them boot again when one of them crashed so. Any failure after
/// the scenario started counts.
pub fn run_scenario(paths: &Paths, artefacts: &Artefacts, scenario: &Scenario) -> Result<Outcome> {
    const ATTEMPTS: u32 = 3;
    let start_marker = format!("@@DIA-START {}", scenario.name);
    // (directory of the crashed node's console, its text), per attempt.
    let mut crashed_consoles: Vec<(PathBuf, String)> = Vec::new();
    let mut attempt = 1;
    let outcome = loop {
        let outcome = run_once(paths, artefacts, scenario)?;
        let Outcome::Failed { nodes, .. } = &outcome else {
            break outcome;
        };
        let mut crashed = Vec::new();
        for node in nodes {
            let text = std::fs::read_to_string(&node.console).unwrap_or_default();
            if !text.contains(&start_marker)
                && (text.contains("Oops:") || text.contains("Kernel panic"))
            {
                let dir = node.console.parent().map(PathBuf::from).unwrap_or_default();
                crashed.push((dir, text));
            }
        }
        if crashed.is_empty() || attempt == ATTEMPTS {
            break outcome;
        }
        eprintln!("    guest kernel crashed while booting, before the scenario started (TCG flake): booting again");
        crashed_consoles.extend(crashed);
        attempt += 1;
    };
    // Keep the crashed boots' consoles beside the final run's.
    for (i, (dir, text)) in crashed_consoles.iter().enumerate() {
        std::fs::write(dir.join(format!("console-boot-crash-{}.log", i + 1)), text)?;
    }
    Ok(outcome)
}

/// What the threads watching the nodes report to the run's loop.
enum Event {
    /// A console line (or a QEMU stderr line, or a host-channel log line) of a node.
    Line(usize, String),
    /// A node's QEMU closed its console (it exited).
    ConsoleClosed(usize),
}

/// One booted node: its card and its QEMU.
struct Node {
    card: Arc<CardProcess>,
    qemu: Child,
    console: std::fs::File,
    console_path: PathBuf,
    /// What the node reported: `Some(true)` passed, `Some(false)` failed.
    verdict: Option<bool>,
    /// How to start its QEMU again when the guest reboots.
    boot: Boot,
    /// The guest announced a reboot (`@@DIA-REBOOT`): its QEMU exits and
    /// is started again, with the same card and disks.
    rebooting: bool,
}

/// What starting a node's QEMU takes, for its first boot and each reboot.
struct Boot {
    /// Kernel command line without the boot number.
    append: String,
    /// The host channel's socket.
    ctl: PathBuf,
    /// Extra QEMU arguments (the scenario's, the state disk).
    qemu_args: Vec<String>,
    /// The node's index.
    index: usize,
    /// 1 for the first boot.
    number: u32,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// Where a node starts: its directory, its place among `count`, its uplink
/// flags, the management network's hub (several nodes).
struct NodeSpec<'a> {
    dir: PathBuf,
    index: usize,
    count: usize,
    uplink: &'a [String],
    mgmt: Option<&'a MgmtHub>,
}

/// Boots one node and starts the threads that feed its console into `tx`.
fn start_node(
    artefacts: &Artefacts,
    scenario: &Scenario,
    spec: &NodeSpec<'_>,
    barrier: &Arc<Barrier>,
    tx: &mpsc::Sender<Event>,
) -> Result<Node> {
    let (dir, index, count) = (spec.dir.as_path(), spec.index, spec.count);
    std::fs::create_dir_all(dir)?;
    let console_path = dir.join("console.log");
    let (card_name, serial) = if count == 1 {
        (scenario.name.clone(), card_process::TEST_SERIAL.to_string())
    } else {
        (
            format!("{}-node{index}", scenario.name),
            card_process::test_serial(index),
        )
    };
    let mut card_args = match &scenario.debug_card_args {
        Some(args) if artefacts.flavour == crate::build::Flavour::Debug => args.clone(),
        _ => scenario.card_args.clone(),
    };
    card_args.extend(spec.uplink.iter().cloned());
    // The card's NVMe/TCP target, reached from the guest through QEMU's
    // user-mode network (the host's 127.0.0.1 is 10.0.2.2 there).
    // And the other way: the guest's own NVMe/TCP port (4420, e.g. Linux's
    // nvmet) reached by the card at a host port QEMU forwards.
    let fabric_port = if scenario.fabric {
        let port = card_process::free_tcp_port()?;
        card_args.extend(["--fabric-listen".into(), format!("127.0.0.1:{port}")]);
        let guest = card_process::free_tcp_port()?;
        Some((port, guest))
    } else {
        None
    };
    let card = CardProcess::start(
        &artefacts.card,
        dir,
        &card_name,
        GUEST_RAM_MIB,
        &serial,
        &card_args,
    )?;
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 appliance.scenario={}",
        scenario.name
    );
    if scenario.service {
        append.push_str(" appliance.service=on");
    }
    if artefacts.flavour == crate::build::Flavour::Debug {
        // A warning or a KASAN report ends the run there and then.
        append.push_str(" panic_on_warn=1 kasan.fault=panic");
        // Four-level paging: with 5-level paging (TCG's `-cpu max` has
        // LA57) 6 of 15 boots of the KASAN kernel panicked at 0.5-0.6 s on
        // a "wild-memory-access" in the 5-level direct map, long before
        // dia.ko exists; with `no5lvl` none of 10 did (docs/reliability.md).
        append.push_str(" no5lvl");
    }
    if count > 1 {
        append.push_str(&format!(" appliance.node={index} appliance.nodes={count}"));
    }
    if spec.mgmt.is_some() {
        append.push(' ');
        append.push_str(&mgmt_hub::kernel_arg(index));
    }
    // Extra words for the guest's command line, e.g. a longer run of a
    // scenario than CI's (`DIA_GUEST_APPEND=appliance.fuzz_calls=1000000`).
    if let Some(extra) = std::env::var_os("DIA_GUEST_APPEND") {
        append.push(' ');
        append.push_str(&extra.to_string_lossy());
    }
    let mut qemu_args = scenario.qemu_args.clone();
    // The management NIC; its ports stay in the Boot, so a rebooted
    // node's QEMU is back on the same hub ports.
    if let Some(hub) = spec.mgmt {
        qemu_args.extend(hub.qemu_args(index));
    }
    if let Some((port, guest)) = fabric_port {
        append.push_str(&format!(
            " appliance.fabric_port={port} appliance.guest_fabric_port={guest}"
        ));
        qemu_args.extend([
            "-nic".to_string(),
            format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{guest}-:4420"),
        ]);
    }
    if scenario.state_disk {
        // The appliance's own disk for /var/lib/dia, kept across its reboots.
        let state = dir.join("state.img");
        std::fs::File::create(&state)?.set_len(STATE_DISK_BYTES)?;
        qemu_args.extend([
            "-drive".to_string(),
            format!(
                "file={},format=raw,if=none,id=state,cache=writeback",
                state.display()
            ),
            "-device".to_string(),
            "virtio-blk-pci,drive=state,serial=dia-state".to_string(),
        ]);
    }
    let boot = Boot {
        append,
        ctl: dir.join("host-channel.sock"),
        qemu_args,
        index,
        number: 1,
    };
    let card = Arc::new(card);
    let qemu = spawn_qemu(artefacts, &card, &boot, barrier, tx)?;
    Ok(Node {
        card,
        qemu,
        console: std::fs::File::create(&console_path)?,
        console_path,
        verdict: None,
        boot,
        rebooting: false,
    })
}

/// Size of an appliance's state disk (sparse).
const STATE_DISK_BYTES: u64 = 256 << 20;

/// Starts a node's QEMU for `boot` and the threads that feed its console
/// and host channel into `tx`.
fn spawn_qemu(
    artefacts: &Artefacts,
    card: &Arc<CardProcess>,
    boot: &Boot,
    barrier: &Arc<Barrier>,
    tx: &mpsc::Sender<Event>,
) -> Result<Child> {
    let index = boot.index;
    let append = format!("{} appliance.boot={}", boot.append, boot.number);
    let ctl = boot.ctl.clone();
    let _ = std::fs::remove_file(&ctl);
    let mut child = base_command(artefacts, card, &append, &boot.qemu_args)
        .args(["-serial", "stdio"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=hostch,path={},server=on,wait=off",
            ctl.display()
        ))
        .args(["-serial", "chardev:hostch"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let log = Mutex::new(tx.clone());
    host_channel::serve(ctl, card.clone(), barrier.clone(), move |line| {
        if let Ok(tx) = log.lock() {
            let _ = tx.send(Event::Line(index, line));
        }
    });
    let tx1 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx1.send(Event::Line(index, line)).is_err() {
                return;
            }
        }
        let _ = tx1.send(Event::ConsoleClosed(index));
    });
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2
                .send(Event::Line(index, format!("[qemu] {line}")))
                .is_err()
            {
                break;
            }
        }
    });
    Ok(child)
}

/// The uplink flags for each of `count` nodes: none for a single node; for
/// several, each card binds its free loopback UDP port of `ports` and has
/// every other card's as a peer. A card without an uplink yet gets none
/// (with a note).
fn uplinks(artefacts: &Artefacts, count: usize, ports: &[u16]) -> Result<Vec<Vec<String>>> {
    if count == 1 {
        return Ok(vec![Vec::new()]);
    }
    if !card_process::supports_uplink(&artefacts.card)? {
        eprintln!("    note: this dia-card has no --uplink-bind yet: the nodes boot without a link between their cards");
        return Ok(vec![Vec::new(); count]);
    }
    Ok((0..count)
        .map(|i| card_process::uplink_args(ports, i))
        .collect())
}

fn run_once(paths: &Paths, artefacts: &Artefacts, scenario: &Scenario) -> Result<Outcome> {
    let dir = paths.out.join("runs").join(&scenario.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let count = scenario.appliances;
    let several = count > 1;
    // Several nodes: the guests' management network, whose hub holds its
    // ports and forwards while `mgmt` lives; then the UDP ports the nodes
    // bind, the cards' uplinks and the QEMUs' management NICs, probed at
    // once so that they all differ.
    let mut mgmt = if several {
        Some(MgmtHub::bind(count)?)
    } else {
        None
    };
    let udp = if several {
        card_process::free_udp_ports(2 * count)?
    } else {
        Vec::new()
    };
    let (uplink_ports, mgmt_ports) = udp.split_at(udp.len() / 2);
    let uplinks = uplinks(artefacts, count, uplink_ports)?;
    if let Some(hub) = &mut mgmt {
        hub.start(mgmt_ports.to_vec())?;
    }
    let barrier = Arc::new(Barrier::new(count));
    let (tx, rx) = mpsc::channel::<Event>();
    let mut nodes = Vec::with_capacity(count);
    for (index, uplink) in uplinks.iter().enumerate() {
        // A single node keeps the run directory itself; several get nodeN/.
        let spec = NodeSpec {
            dir: if several {
                dir.join(format!("node{index}"))
            } else {
                dir.clone()
            },
            index,
            count,
            uplink,
            mgmt: mgmt.as_ref(),
        };
        nodes.push(start_node(artefacts, scenario, &spec, &barrier, &tx)?);
    }

    let start = Instant::now();
    let deadline = start + scenario.timeout;
    let verbose = std::env::var_os("DIA_VERBOSE").is_some();
    let pass = format!("@@DIA-RESULT {} PASS", scenario.name);
    let fail = format!("@@DIA-RESULT {} FAIL", scenario.name);
    let who = |i: usize| {
        if several {
            format!("node{i}: ")
        } else {
            String::new()
        }
    };
    let verdict = loop {
        if nodes.iter().all(|n| n.verdict == Some(true)) {
            break Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let waiting: Vec<String> = (0..count)
                .filter(|&i| nodes[i].verdict.is_none())
                .map(|i| format!("node{i}"))
                .collect();
            let also = if several {
                format!(" (no verdict from {})", waiting.join(", "))
            } else {
                String::new()
            };
            break Err(format!(
                "timed out after {} s{also}",
                scenario.timeout.as_secs()
            ));
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(Event::Line(i, line)) => {
                writeln!(nodes[i].console, "{line}")?;
                if verbose {
                    let tag = if several {
                        format!("n{i}")
                    } else {
                        String::new()
                    };
                    eprintln!("    {tag}| {line}");
                }
                if line.contains(&pass) {
                    nodes[i].verdict = Some(true);
                }
                if line.starts_with("@@DIA-REBOOT") {
                    nodes[i].rebooting = true;
                }
                if line.starts_with("@@DIA-POWER-CUT") && several {
                    // The appliance loses power: its QEMU and its card die
                    // at once; the others go on without it (barriers wait
                    // for one node fewer). Its part passed if it got here.
                    let n = &mut nodes[i];
                    let _ = n.qemu.kill();
                    n.card.power_cut();
                    n.verdict = Some(true);
                    writeln!(n.console, "@@ harness: power cut")?;
                    barrier.leave();
                }
                if line.contains(&fail) {
                    nodes[i].verdict = Some(false);
                    break Err(format!("{}{}", who(i), line.trim()));
                }
            }
            Ok(Event::ConsoleClosed(i)) if nodes[i].rebooting && nodes[i].verdict.is_none() => {
                // The guest rebooted (-no-reboot makes QEMU exit): boot it
                // again on the same card and disks.
                let n = &mut nodes[i];
                let off = Instant::now() + Duration::from_secs(10);
                while n.qemu.try_wait()?.is_none() && Instant::now() < off {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = n.qemu.kill();
                let _ = n.qemu.wait();
                n.rebooting = false;
                n.boot.number += 1;
                writeln!(
                    n.console,
                    "@@ harness: boot {} of this appliance",
                    n.boot.number
                )?;
                n.qemu = spawn_qemu(artefacts, &n.card, &n.boot, &barrier, &tx)?;
            }
            Ok(Event::ConsoleClosed(i)) => {
                if nodes[i].verdict.is_none() {
                    // The console closes as QEMU exits; give it a moment to be reaped.
                    let off = Instant::now() + Duration::from_secs(5);
                    let status = loop {
                        match nodes[i].qemu.try_wait()? {
                            Some(status) => break Some(status),
                            None if Instant::now() < off => {
                                std::thread::sleep(Duration::from_millis(50))
                            }
                            None => break None,
                        }
                    };
                    break Err(match status {
                        Some(status) => {
                            format!("{}QEMU exited ({status}) without a verdict", who(i))
                        }
                        None => format!("{}QEMU closed its console without a verdict", who(i)),
                    });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut exited = None;
                for (i, n) in nodes.iter_mut().enumerate() {
                    if n.verdict.is_none() {
                        if let Some(status) = n.qemu.try_wait()? {
                            exited = Some(format!(
                                "{}QEMU exited ({status}) without a verdict",
                                who(i)
                            ));
                            break;
                        }
                    }
                }
                if let Some(reason) = exited {
                    break Err(reason);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("QEMU closed its console without a verdict".into());
            }
        }
    };
    // No node waits at a barrier any longer.
    barrier.abort();
    // Give the guests a moment to power off, then make sure every QEMU is
    // gone (a node that has not finished when another failed is killed).
    let off_deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut running = false;
        for n in nodes.iter_mut() {
            running |= n.qemu.try_wait()?.is_none();
        }
        if !running || Instant::now() >= off_deadline {
            break;
        }
        while let Ok(ev) = rx.try_recv() {
            if let Event::Line(i, line) = ev {
                writeln!(nodes[i].console, "{line}")?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in nodes.iter_mut() {
        let _ = n.qemu.kill();
        let _ = n.qemu.wait();
    }
    while let Ok(ev) = rx.try_recv() {
        if let Event::Line(i, line) = ev {
            writeln!(nodes[i].console, "{line}")?;
        }
    }
    let logs: Vec<NodeLogs> = nodes
        .iter()
        .map(|n| NodeLogs {
            console: n.console_path.clone(),
            card_log: n.card.log.clone(),
        })
        .collect();
    // The host-channel threads may still hold a reference to a card; its
    // process is killed when the last one goes (at the latest when that
    // thread ends, as its QEMU is gone).
    drop(nodes);
    Ok(match verdict {
        Ok(()) => Outcome::Passed {
            seconds: start.elapsed().as_secs_f64(),
        },
        Err(reason) => Outcome::Failed {
            reason,
            nodes: logs,
        },
    })
}

/// Boots one appliance: an interactive shell on this terminal, or the demo.
pub fn boot_appliance(paths: &Paths, artefacts: &Artefacts, interactive: bool) -> Result<()> {
    let dir = paths.out.join("runs/boot");
    std::fs::create_dir_all(&dir)?;
    let card = CardProcess::start(
        &artefacts.card,
        &dir,
        "boot",
        GUEST_RAM_MIB,
        card_process::TEST_SERIAL,
        &[],
    )?;
    let mode = if interactive { "shell" } else { "demo" };
    let append = format!("console=ttyS0 quiet panic=-1 appliance.mode={mode}");
    let step = Step::start(format!(
        "booting the appliance (card log: {}){}",
        card.log.display(),
        if interactive {
            "; leave with 'poweroff -f' or Ctrl-A X"
        } else {
            ""
        }
    ));
    let status = base_command(artefacts, &card, &append, &[])
        .args(["-serial", "mon:stdio"])
        .status()
        .context("starting qemu-system-x86_64")?;
    drop(card);
    step.done();
    if !status.success() {
        anyhow::bail!("QEMU exited with {status}");
    }
    Ok(())
}
