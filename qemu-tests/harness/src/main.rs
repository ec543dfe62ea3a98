//! `dia-harness`: builds the dia test appliance (Rust-enabled guest kernel,
//! `dia.ko`, static userspace, initramfs), starts the emulated card, boots
//! QEMU and runs the guest scenarios in `qemu-tests/scenarios/`. Invoked
//! through `qemu-tests/run`, which installs the host prerequisites first.

mod bench;
mod build;
mod card_process;
mod host_channel;
mod mgmt_hub;
mod paths;
mod progress;
mod qemu;
mod scenario;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::paths::Paths;

#[derive(Parser)]
#[command(
    name = "dia-harness",
    version,
    about = "Build, boot and test the dia appliance in QEMU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build everything the appliance needs (cached by input hash).
    Build,
    /// List the scenarios.
    List,
    /// Run the scenarios (all, or those whose name contains FILTER) and print `N passed, N failed`.
    Test {
        /// Only scenarios whose name contains this text.
        filter: Option<String>,
        /// Boot the debug kernel (KASAN, KFENCE, lockdep, atomic-sleep and
        /// DMA-API checks, hung-task detector; a warning panics the guest).
        #[arg(long)]
        debug_kernel: bool,
    },
    /// Benchmarks (not tests): storage (dia vs QEMU nvme vs virtio-blk in
    /// one boot), QoS (noisy neighbours with QoS off and on), net (dia
    /// ports vs a virtio-net pair: TCP throughput, ping latency), fabric
    /// (a remote volume vs a local one, and the kernel's NVMe/TCP host),
    /// mirror (volumes with 2 and 3 copies vs one, and the resync rate) and
    /// scale (the card's maximum namespaces and ports at once: time and
    /// memory per object, fairness under load).
    Bench {
        /// Only this one.
        #[arg(value_parser = ["storage", "qos", "net", "fabric", "mirror", "scale"])]
        which: Option<String>,
    },
    /// Boot one appliance with the card, load the driver and start diad:
    /// a shell on the console when interactive, a short demo otherwise.
    Boot {
        /// Force the short non-interactive demo even on a terminal.
        #[arg(long)]
        demo: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dia-harness: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let paths = Paths::discover()?;
    match cli.command {
        Command::Build => {
            build::all(&paths, build::Flavour::Plain)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            for s in scenario::discover(&paths)? {
                println!("{:20} {}", s.name, s.summary);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Test {
            filter,
            debug_kernel,
        } => {
            let flavour = if debug_kernel {
                build::Flavour::Debug
            } else {
                build::Flavour::Plain
            };
            let artefacts = build::all(&paths, flavour)?;
            let scenarios: Vec<_> = scenario::discover(&paths)?
                .into_iter()
                .filter(|s| filter.as_deref().is_none_or(|f| s.name.contains(f)))
                .collect();
            let (passed, failed) = scenario::run_all(&paths, &artefacts, &scenarios)?;
            println!("scenarios: {passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Bench { which } => {
            let artefacts = build::all(&paths, build::Flavour::Plain)?;
            match which.as_deref() {
                Some("storage") => bench::run_storage(&paths, &artefacts).map(drop)?,
                Some("qos") => bench::run_qos(&paths, &artefacts).map(drop)?,
                Some("fabric") => bench::run_fabric(&paths, &artefacts).map(drop)?,
                Some("mirror") => bench::run_mirror(&paths, &artefacts).map(drop)?,
                Some("net") => bench::run_net(&paths, &artefacts).map(drop)?,
                Some("scale") => bench::run_scale(&paths, &artefacts).map(drop)?,
                Some(other) => anyhow::bail!("no benchmark '{other}'"),
                None => bench::run(&paths, &artefacts).map(drop)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Boot { demo } => {
            let artefacts = build::all(&paths, build::Flavour::Plain)?;
            let interactive = !demo && std::io::IsTerminal::is_terminal(&std::io::stdin());
            qemu::boot_appliance(&paths, &artefacts, interactive)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
