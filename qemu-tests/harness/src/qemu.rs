//! QEMU: the appliance's command line (TCG, guest RAM in a shared file the
//! card maps for DMA, the card as an `ivshmem-doorbell` PCI function), and
//! running one scenario with a time limit while the console is saved.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::build::Artefacts;
use crate::card::{self, Card};
use crate::paths::Paths;
use crate::progress::Step;
use crate::scenario::Scenario;

/// Guest RAM; stays below the 32-bit PCI hole so guest-physical == file offset.
pub const GUEST_RAM_MIB: u64 = 1024;

/// How a scenario ended.
pub enum Outcome {
    /// The guest reported PASS.
    Passed {
        /// Wall time, boot included.
        seconds: f64,
    },
    /// The guest reported FAIL, timed out, or QEMU died.
    Failed {
        /// What went wrong.
        reason: String,
        /// Saved guest console.
        console: PathBuf,
        /// Saved card log.
        card_log: PathBuf,
    },
}

fn base_command(artefacts: &Artefacts, card: &Card, append: &str, extra: &[String]) -> Command {
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
        .args(["-append", append])
        .arg("-chardev")
        .arg(format!("socket,path={},id=card0", card.socket.display()))
        .args([
            "-device",
            &format!("ivshmem-doorbell,chardev=card0,vectors={}", card::VECTORS),
        ])
        .args(extra);
    cmd
}

/// Boots a fresh appliance for `scenario` and waits for its verdict.
///
/// A guest kernel that crashes while booting, before the scenario started
/// (before `dia.ko` is even loaded), is booted again, at most twice: QEMU's
/// multi-threaded TCG occasionally trips the kernel's boot-time code
/// patching (an `int3` oops in an unrelated function). Any failure after the
/// scenario started counts.
pub fn run_scenario(paths: &Paths, artefacts: &Artefacts, scenario: &Scenario) -> Result<Outcome> {
    const ATTEMPTS: u32 = 3;
    let start_marker = format!("@@DIA-START {}", scenario.name);
    let mut crashed_consoles = Vec::new();
    let mut attempt = 1;
    let outcome = loop {
        let outcome = run_once(paths, artefacts, scenario)?;
        let Outcome::Failed { console, .. } = &outcome else {
            break outcome;
        };
        let text = std::fs::read_to_string(console).unwrap_or_default();
        let boot_crash = !text.contains(&start_marker)
            && (text.contains("Oops:") || text.contains("Kernel panic"));
        if !boot_crash || attempt == ATTEMPTS {
            break outcome;
        }
        eprintln!("    guest kernel crashed while booting, before the scenario started (TCG flake): booting again");
        crashed_consoles.push(text);
        attempt += 1;
    };
    // Keep the crashed boots' consoles beside the final run's.
    let dir = paths.out.join("runs").join(&scenario.name);
    for (i, text) in crashed_consoles.iter().enumerate() {
        std::fs::write(dir.join(format!("console-boot-crash-{}.log", i + 1)), text)?;
    }
    Ok(outcome)
}

fn run_once(paths: &Paths, artefacts: &Artefacts, scenario: &Scenario) -> Result<Outcome> {
    let dir = paths.out.join("runs").join(&scenario.name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let console_path = dir.join("console.log");
    let card = Card::start(
        &artefacts.card,
        &dir,
        &scenario.name,
        GUEST_RAM_MIB,
        &scenario.card_args,
    )?;
    let append = format!(
        "console=ttyS0 quiet panic=-1 dia.scenario={}",
        scenario.name
    );
    let ctl = dir.join("host-channel.sock");
    let mut child = base_command(artefacts, &card, &append, &scenario.qemu_args)
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

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let stderr = child.stderr.take().context("qemu stderr")?;
    let tx2 = tx.clone();
    let card = Arc::new(card);
    serve_host_channel(ctl, card.clone(), tx.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("[qemu] {line}")).is_err() {
                break;
            }
        }
    });

    let mut console = std::fs::File::create(&console_path)?;
    let start = Instant::now();
    let deadline = start + scenario.timeout;
    let verbose = std::env::var_os("DIA_VERBOSE").is_some();
    let pass = format!("@@DIA-RESULT {} PASS", scenario.name);
    let fail = format!("@@DIA-RESULT {} FAIL", scenario.name);
    let verdict = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(format!("timed out after {} s", scenario.timeout.as_secs()));
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                writeln!(console, "{line}")?;
                if verbose {
                    eprintln!("    | {line}");
                }
                if line.contains(&pass) {
                    break Ok(());
                }
                if line.contains(&fail) {
                    break Err(line.trim().to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait()? {
                    break Err(format!("QEMU exited ({status}) without a verdict"));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("QEMU closed its console without a verdict".into());
            }
        }
    };
    // Give the guest a moment to power off, then make sure QEMU is gone.
    let off_deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait()?.is_none() && Instant::now() < off_deadline {
        while let Ok(line) = rx.try_recv() {
            writeln!(console, "{line}")?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    while let Ok(line) = rx.try_recv() {
        writeln!(console, "{line}")?;
    }
    let card_log = card.log.clone();
    // The host-channel thread may still hold a reference; the card process
    // is killed when the last one goes (at the latest when that thread ends).
    drop(card);
    Ok(match verdict {
        Ok(()) => Outcome::Passed {
            seconds: start.elapsed().as_secs_f64(),
        },
        Err(reason) => Outcome::Failed {
            reason,
            console: console_path,
            card_log,
        },
    })
}

/// Boots one appliance: an interactive shell on this terminal, or the demo.
pub fn boot_appliance(paths: &Paths, artefacts: &Artefacts, interactive: bool) -> Result<()> {
    let dir = paths.out.join("runs/boot");
    std::fs::create_dir_all(&dir)?;
    let card = Card::start(&artefacts.card, &dir, "boot", GUEST_RAM_MIB, &[])?;
    let mode = if interactive { "shell" } else { "demo" };
    let append = format!("console=ttyS0 quiet panic=-1 dia.mode={mode}");
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

/// Serves the guest's requests to the host on its second serial port
/// (`/dev/ttyS1` in the guest): one line per request, one line per answer.
/// Requests: `card-kill` (the card's firmware dies), `card-start` (a new
/// firmware starts on the same pool), `card-status`. Requests and answers
/// are logged into the console stream.
fn serve_host_channel(path: PathBuf, card: Arc<Card>, log: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(_) => return,
            }
        };
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let request = line.trim().to_string();
            if request.is_empty() {
                continue;
            }
            let answer = match request.as_str() {
                "card-kill" => card.control("kill"),
                "card-start" => card.control("start"),
                "card-status" => card.control("status"),
                other => Ok(format!("error: unknown host request '{other}'")),
            }
            .unwrap_or_else(|e| format!("error: {e:#}"));
            let _ = log.send(format!("[host] {request} -> {answer}"));
            if writeln!(writer, "{answer}").is_err() {
                break;
            }
        }
    });
}
