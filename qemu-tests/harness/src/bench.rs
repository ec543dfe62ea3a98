//! `dia-harness bench`: storage benchmark of dia against QEMU's own `nvme`
//! and `virtio-blk-pci` (with an iothread) in ONE guest boot, each on a
//! same-size raw file on the same host disk. The guest side is
//! `qemu-tests/bench/storage.sh`; this side provisions the peers' backing
//! files, parses fio's JSON and prints IOPS, bandwidth, p99 latency and the
//! ratios dia/nvme and dia/virtio-blk as a Markdown table. A second boot
//! runs `qemu-tests/bench/qos.sh` (noisy neighbours with QoS off and on,
//! ceiling accuracy), whose Markdown rows are collected as they come.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::build::Artefacts;
use crate::paths::Paths;
use crate::qemu::{self, Outcome};
use crate::scenario;

/// Size of each peer's backing file (the dia namespace has the same size).
const DISK_BYTES: u64 = 1 << 30;

/// One measurement.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    iops: f64,
    mib_s: f64,
    p99_us: f64,
}

fn sample(fio: &Value) -> Option<Sample> {
    let job = fio.get("jobs")?.get(0)?;
    let (read, write) = (job.get("read")?, job.get("write")?);
    let side = if read.get("io_bytes")?.as_u64()? > 0 {
        read
    } else {
        write
    };
    let p99_ns = side
        .get("clat_ns")
        .and_then(|c| c.get("percentile"))
        .and_then(|p| p.get("99.000000"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    Some(Sample {
        iops: side.get("iops")?.as_f64()?,
        mib_s: side.get("bw")?.as_f64()? / 1024.0,
        p99_us: p99_ns / 1000.0,
    })
}

fn preallocate(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let status = Command::new("fallocate")
        .arg("-l")
        .arg(DISK_BYTES.to_string())
        .arg(path)
        .status()
        .context("running fallocate")?;
    if !status.success() {
        bail!("fallocate {} failed", path.display());
    }
    Ok(())
}

/// Runs both benchmarks; prints and returns the Markdown reports.
pub fn run(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let storage = run_storage(paths, artefacts)?;
    let qos = run_qos(paths, artefacts)?;
    Ok(format!("{storage}\n{qos}"))
}

/// The storage benchmark; prints and returns its Markdown table.
pub fn run_storage(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let dir = paths.out.join("bench-disks");
    std::fs::create_dir_all(&dir)?;
    let nvme = dir.join("nvme.img");
    let vblk = dir.join("virtio-blk.img");
    preallocate(&nvme)?;
    preallocate(&vblk)?;
    // The card keeps its pool in the host's page cache and makes writes
    // durable on Flush/FUA with fdatasync (a volatile write cache). The
    // peers get the same semantics: cache=writeback (the guest sees a write
    // cache and its flushes become fdatasync), aio=threads as writeback
    // requires.
    let mut s = scenario::parse(&paths.qemu_tests("bench/storage.sh"))?;
    s.name = "bench-storage".into();
    s.qemu_args.extend(
        [
            "-drive",
            &format!(
                "file={},if=none,id=peer-nvme,format=raw,cache=writeback,aio=threads",
                nvme.display()
            ),
            "-device",
            "nvme,serial=peer-nvme,drive=peer-nvme",
            "-object",
            "iothread,id=io1",
            "-drive",
            &format!(
                "file={},if=none,id=peer-vblk,format=raw,cache=writeback,aio=threads",
                vblk.display()
            ),
            "-device",
            "virtio-blk-pci,drive=peer-vblk,iothread=io1",
        ]
        .map(String::from),
    );
    eprintln!("==> benchmark: dia vs QEMU nvme vs virtio-blk (one boot, about 5 minutes)");
    let outcome = qemu::run_scenario(paths, artefacts, &s)?;
    let console = paths.out.join("runs").join(&s.name).join("console.log");
    if let Outcome::Failed { reason, .. } = outcome {
        bail!(
            "benchmark run failed: {reason} (console: {})",
            console.display()
        );
    }
    let text = std::fs::read_to_string(&console)?;
    // job -> device -> sample
    let mut results: BTreeMap<String, BTreeMap<String, Sample>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("@@BENCH ") else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(dev), Some(job), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let v: Value =
            serde_json::from_str(json).with_context(|| format!("fio JSON for {job} on {dev}"))?;
        let smp =
            sample(&v).with_context(|| format!("no result in fio JSON for {job} on {dev}"))?;
        if !order.contains(&job.to_string()) {
            order.push(job.to_string());
        }
        results
            .entry(job.to_string())
            .or_default()
            .insert(dev.to_string(), smp);
    }
    if order.is_empty() {
        bail!("no @@BENCH results in {}", console.display());
    }
    let mut md = String::new();
    writeln!(
        md,
        "| job | device | IOPS | MiB/s | p99 µs | dia/nvme | dia/virtio-blk |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    for job in &order {
        let row = &results[job];
        let dia = row.get("dia").copied().unwrap_or_default();
        for dev in ["dia", "nvme", "virtio-blk"] {
            let Some(x) = row.get(dev) else { continue };
            let ratio = |peer: &str| {
                row.get(peer)
                    .filter(|p| p.iops > 0.0)
                    .map_or("-".to_string(), |p| format!("{:.2}x", dia.iops / p.iops))
            };
            let (r1, r2) = if dev == "dia" {
                (ratio("nvme"), ratio("virtio-blk"))
            } else {
                (String::new(), String::new())
            };
            writeln!(
                md,
                "| {job} | {dev} | {:.0} | {:.1} | {:.0} | {r1} | {r2} |",
                x.iops, x.mib_s, x.p99_us
            )?;
        }
    }
    println!("{md}");
    let report = paths.out.join("bench-storage.md");
    std::fs::write(&report, &md)?;
    eprintln!("    report saved to {}", report.display());
    Ok(md)
}

/// The QoS benchmark: one boot, Markdown rows printed by the guest.
pub fn run_qos(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let mut s = scenario::parse(&paths.qemu_tests("bench/qos.sh"))?;
    s.name = "bench-qos".into();
    eprintln!("==> benchmark: storage QoS, noisy neighbours with QoS off and on (one boot, about 3 minutes)");
    let outcome = qemu::run_scenario(paths, artefacts, &s)?;
    let console = paths.out.join("runs").join(&s.name).join("console.log");
    if let Outcome::Failed { reason, .. } = outcome {
        bail!(
            "QoS benchmark failed: {reason} (console: {})",
            console.display()
        );
    }
    let text = std::fs::read_to_string(&console)?;
    let md: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("@@MD"))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    if md.is_empty() {
        bail!("no @@MD results in {}", console.display());
    }
    println!("{md}");
    let report = paths.out.join("bench-qos.md");
    std::fs::write(&report, &md)?;
    eprintln!("    report saved to {}", report.display());
    Ok(md)
}
