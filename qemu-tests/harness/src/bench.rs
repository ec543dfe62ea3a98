//! `dia-harness bench`: storage benchmark of dia against QEMU's own `nvme`
//! and `virtio-blk-pci` (with an iothread) in ONE guest boot, each on a
//! same-size raw file on the same host disk. The guest side is
//! `qemu-tests/bench/storage.sh`; this side provisions the peers' backing
//! files, parses fio's JSON and prints IOPS, bandwidth, p99 latency and the
//! ratios dia/nvme and dia/virtio-blk as a Markdown table. A second boot
//! runs `qemu-tests/bench/qos.sh` (noisy neighbours with QoS off and on,
//! ceiling accuracy), whose Markdown rows are collected as they come. A
//! third runs `qemu-tests/bench/net.sh`: TCP throughput and ping latency
//! between two network namespaces over dia's ports and over a virtio-net
//! pair, as a table with the ratio dia/virtio-net.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

/// The median of each measure over the rounds, and the lowest and highest
/// IOPS.
fn summarise(rounds: &[Sample]) -> (Sample, f64, f64) {
    let median = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let iops = rounds.iter().map(|s| s.iops);
    let lo = iops.clone().fold(f64::INFINITY, f64::min);
    let hi = iops.fold(0.0, f64::max);
    (
        Sample {
            iops: median(|s| s.iops),
            mib_s: median(|s| s.mib_s),
            p99_us: median(|s| s.p99_us),
        },
        if lo.is_finite() { lo } else { 0.0 },
        hi,
    )
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

/// Runs every benchmark; prints and returns the Markdown reports.
pub fn run(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let storage = run_storage(paths, artefacts)?;
    let qos = run_qos(paths, artefacts)?;
    let net = run_net(paths, artefacts)?;
    let fabric = run_fabric(paths, artefacts)?;
    let mirror = run_mirror(paths, artefacts)?;
    let scale = run_scale(paths, artefacts)?;
    Ok(format!(
        "{storage}\n{qos}\n{net}\n{fabric}\n{mirror}\n{scale}"
    ))
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
    // requires. (QEMU's nvme ignores FUA there: a FUA write is not synced,
    // so the O_DSYNC rows use psync, where a flush follows; see
    // docs/performance.md.)
    let mut s = bench_scenario(paths, "storage")?;
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
            "virtio-blk-pci,drive=peer-vblk,iothread=io1,serial=peer-vblk",
        ]
        .map(String::from),
    );
    eprintln!(
        "==> benchmark: dia vs QEMU nvme vs virtio-blk (one boot, three rounds, about 15 minutes)"
    );
    let (text, console) = run_to_console(paths, artefacts, &s, "benchmark run")?;
    let md = device_table(
        &text,
        &console,
        &["dia", "nvme", "virtio-blk"],
        &["nvme", "virtio-blk"],
    )?;
    save_report(paths, "bench-storage.md", md)
}

/// The benchmark script `bench/NAME.sh`, as a scenario named
/// `bench-NAME` (its run directory and report name).
fn bench_scenario(paths: &Paths, name: &str) -> Result<scenario::Scenario> {
    let mut s = scenario::parse(&paths.qemu_tests(format!("bench/{name}.sh")))?;
    s.name = format!("bench-{name}");
    Ok(s)
}

/// Runs benchmark NAME, which needs no devices beyond the appliances',
/// after saying what it is: its guest text and console path.
fn run_plain(
    paths: &Paths,
    artefacts: &Artefacts,
    name: &str,
    banner: &str,
    what: &str,
) -> Result<(String, PathBuf)> {
    let s = bench_scenario(paths, name)?;
    eprintln!("==> benchmark: {banner}");
    run_to_console(paths, artefacts, &s, what)
}

/// The report lines the guest printed as `@@MD` (Markdown), one a line.
fn md_text(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("@@MD"))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect()
}

/// [`md_text`], or an error naming the console when the guest printed none.
fn md_lines(text: &str, console: &Path) -> Result<String> {
    let md = md_text(text);
    if md.is_empty() {
        bail!("no @@MD results in {}", console.display());
    }
    Ok(md)
}

/// Runs a benchmark's boot; on success, the console text of its (first)
/// appliance and that console's path. `what` names it in the error.
fn run_to_console(
    paths: &Paths,
    artefacts: &Artefacts,
    s: &scenario::Scenario,
    what: &str,
) -> Result<(String, PathBuf)> {
    let outcome = qemu::run_scenario(paths, artefacts, s)?;
    let console = console_of(paths, s);
    if let Outcome::Failed { reason, .. } = outcome {
        bail!("{what} failed: {reason} (console: {})", console.display());
    }
    Ok((std::fs::read_to_string(&console)?, console))
}

/// The console log of a benchmark's (first) appliance.
fn console_of(paths: &Paths, s: &scenario::Scenario) -> PathBuf {
    let run = paths.out.join("runs").join(&s.name);
    if s.appliances > 1 {
        run.join("node0").join("console.log")
    } else {
        run.join("console.log")
    }
}

/// Prints a benchmark's Markdown report and saves it as `file` beside the
/// runs; returns it.
fn save_report(paths: &Paths, file: &str, md: String) -> Result<String> {
    println!("{md}");
    let report = paths.out.join(file);
    std::fs::write(&report, &md)?;
    eprintln!("    report saved to {}", report.display());
    Ok(md)
}

/// The Markdown table of the `@@BENCH <device> <job> <fio JSON>` lines of
/// a console: per job and device the medians over the rounds, and for the
/// first of `devices` its IOPS ratio to each of `peers` ("dia/nvme").
fn device_table(text: &str, console: &Path, devices: &[&str], peers: &[&str]) -> Result<String> {
    // job -> device -> one sample per round
    let mut results: BTreeMap<String, BTreeMap<String, Vec<Sample>>> = BTreeMap::new();
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
            .entry(dev.to_string())
            .or_default()
            .push(smp);
    }
    if order.is_empty() {
        bail!("no @@BENCH results in {}", console.display());
    }
    let mut md = String::new();
    let rounds = results
        .values()
        .flat_map(|row| row.values().map(Vec::len))
        .max()
        .unwrap_or(0);
    writeln!(
        md,
        "Medians of {rounds} rounds; IOPS range: lowest and highest round.\n"
    )?;
    let base = devices[0];
    let ratio_heads: String = peers.iter().map(|p| format!(" {base}/{p} |")).collect();
    writeln!(
        md,
        "| job | device | IOPS | IOPS range | MiB/s | p99 µs |{ratio_heads}"
    )?;
    writeln!(
        md,
        "|---|---|---:|---:|---:|---:|{}",
        "---:|".repeat(peers.len())
    )?;
    for job in &order {
        let row: BTreeMap<&str, (Sample, f64, f64)> = results[job]
            .iter()
            .map(|(dev, v)| (dev.as_str(), summarise(v)))
            .collect();
        let first = row.get(base).map(|r| r.0).unwrap_or_default();
        for dev in devices {
            let Some(&(x, lo, hi)) = row.get(dev) else {
                continue;
            };
            let ratios: String = peers
                .iter()
                .map(|peer| {
                    let r = if *dev == base {
                        row.get(peer)
                            .filter(|p| p.0.iops > 0.0)
                            .map_or("-".to_string(), |p| {
                                format!("{:.2}x", first.iops / p.0.iops)
                            })
                    } else {
                        String::new()
                    };
                    format!(" {r} |")
                })
                .collect();
            writeln!(
                md,
                "| {job} | {dev} | {:.0} | {lo:.0}-{hi:.0} | {:.1} | {:.0} |{ratios}",
                x.iops, x.mib_s, x.p99_us
            )?;
        }
    }
    Ok(md)
}

/// The mirror benchmark: three appliances of one cluster; on the first, a
/// volume with one copy, one with two and one with three (the first copy
/// always the first appliance's own), then the resync rate.
pub fn run_mirror(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let (text, console) = run_plain(
        paths,
        artefacts,
        "mirror",
        "mirrored volumes (2 and 3 copies) vs one copy, and the resync rate (three appliances, one boot, three rounds, about 25 minutes)",
        "benchmark run",
    )?;
    let mut md = device_table(
        &text,
        &console,
        &["mirror-3", "mirror-2", "single"],
        &["single", "mirror-2"],
    )?;
    md.push_str(&md_text(&text));
    save_report(paths, "bench-mirror.md", md)
}

/// The fabric benchmark: two appliances of one cluster; on the first, a
/// local volume, a volume whose data is on the second (the first card's
/// NVMe/TCP initiator, the second card's target) and, side by side, the
/// kernel's own NVMe/TCP host on another volume of the second card.
pub fn run_fabric(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let (text, console) = run_plain(
        paths,
        artefacts,
        "fabric",
        "remote (NVMe/TCP between two cards) vs local volume, and the kernel's NVMe/TCP host (two appliances, one boot, three rounds, about 20 minutes)",
        "benchmark run",
    )?;
    // Ratios of remote to local: the remote row's own ratios are what the
    // issue's goals name (remote IOPS / local IOPS).
    let md = device_table(
        &text,
        &console,
        &["dia-remote", "dia-local", "kernel-tcp"],
        &["dia-local", "kernel-tcp"],
    )?;
    save_report(paths, "bench-fabric.md", md)
}

/// The scale benchmark: one boot, the card's maximum namespaces and ports
/// at once (`qemu-tests/bench/scale.sh`): time and memory per object in
/// steps, then fairness across all of them under load. The guest prints
/// Markdown as `@@MD` lines (the card's memory it asks the harness for on
/// the host channel, `card-memory`), and each fairness run's per-object
/// numbers as `@@SCALE KIND COUNT VALUES...`, kept at the end of the report.
pub fn run_scale(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let (text, console) = run_plain(
        paths,
        artefacts,
        "scale",
        "scale, the card's maximum namespaces and ports at once (one boot, about 15 minutes)",
        "scale benchmark",
    )?;
    let mut md = md_lines(&text, &console)?;
    let raw: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("@@SCALE "))
        .collect();
    if !raw.is_empty() {
        writeln!(
            md,
            "\nPer object, in id order (IOPS per namespace; Mbit/s received per port):\n\n```"
        )?;
        for l in raw {
            writeln!(md, "{}", l.trim_end())?;
        }
        writeln!(md, "```")?;
    }
    save_report(paths, "bench-scale.md", md)
}

/// The QoS benchmark: one boot, Markdown rows printed by the guest.
pub fn run_qos(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let (text, console) = run_plain(
        paths,
        artefacts,
        "qos",
        "storage QoS, noisy neighbours with QoS off and on (one boot, about 3 minutes)",
        "QoS benchmark",
    )?;
    save_report(paths, "bench-qos.md", md_lines(&text, &console)?)
}

/// The network benchmark's setups, as the guest names them, in the order of
/// their columns: dia first, then the peers it is compared with
/// (`bridge`: veth pairs through a Linux bridge inside the guest, the way a
/// host without a card would connect its containers).
const NET_SETUPS: [&str; 3] = ["dia", "virtio-net", "bridge"];

/// One network setup's results, one value per round that measured it.
#[derive(Debug, Default, Clone)]
struct NetResult {
    /// TCP Mbit/s from A to B.
    a_to_b: Vec<f64>,
    /// TCP Mbit/s from B to A.
    b_to_a: Vec<f64>,
    /// Average ping round trip, ms.
    rtt_ms: Vec<f64>,
    /// Why the setup has no (or only part of its) results (the first error).
    error: Option<String>,
}

/// The median of `v` and its lowest and highest value; `None` if empty.
fn median_range(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some((median, v[0], v[n - 1]))
}

/// Mbit/s received in one iperf3 `-J` run, or its error.
fn iperf_mbit(json: &str) -> Result<f64, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("iperf3 JSON: {e}"))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return Err(format!("iperf3: {e}"));
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e6)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received".into())
}

/// The average of busybox ping's `round-trip min/avg/max = a/b/c ms` or
/// iputils ping's `rtt min/avg/max/mdev = a/b/c/d ms`.
fn ping_avg_ms(line: &str) -> Option<f64> {
    let (_, nums) = line.split_once('=')?;
    nums.trim()
        .trim_end_matches("ms")
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// Collects the guest's `@@NET` / `@@NETJSON` lines per setup.
fn net_results(console: &str) -> BTreeMap<String, NetResult> {
    let mut out: BTreeMap<String, NetResult> = BTreeMap::new();
    for line in console.lines() {
        let (json, rest) = if let Some(r) = line.strip_prefix("@@NETJSON ") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("@@NET ") {
            (false, r)
        } else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(setup), Some(key)) = (parts.next(), parts.next()) else {
            continue;
        };
        let value = parts.next().unwrap_or("").trim();
        let r = out.entry(setup.to_string()).or_default();
        let mut note = |e: String| {
            r.error.get_or_insert(e);
        };
        match (json, key) {
            (true, "a-to-b" | "b-to-a") => match iperf_mbit(value) {
                Ok(m) if key == "a-to-b" => r.a_to_b.push(m),
                Ok(m) => r.b_to_a.push(m),
                Err(e) => note(format!("{key}: {e}")),
            },
            (false, "ping") => match ping_avg_ms(value) {
                Some(ms) => r.rtt_ms.push(ms),
                None => note(format!("ping summary not understood: '{value}'")),
            },
            (false, "error") => note(value.to_string()),
            _ => {}
        }
    }
    out
}

/// Picks one measurement's rounds out of a setup's results.
type Pick = fn(&NetResult) -> &[f64];

/// The network benchmark's Markdown table: per measurement and setup the
/// median over the rounds with its range, and dia's ratio of medians to
/// each peer (and a line per setup that has no or only partial results),
/// from the guest's console.
fn net_table(console: &str) -> Result<String> {
    let results = net_results(console);
    let setups: Vec<(&str, NetResult)> = NET_SETUPS
        .iter()
        .map(|s| (*s, results.get(*s).cloned().unwrap_or_default()))
        .collect();
    let (dia, peers) = (&setups[0].1, &setups[1..]);
    let mut md = String::new();
    let rounds = setups
        .iter()
        .map(|(_, r)| r.a_to_b.len().max(r.b_to_a.len()).max(r.rtt_ms.len()))
        .max()
        .unwrap_or(0);
    writeln!(
        md,
        "Medians of {rounds} rounds (lowest-highest round in brackets); ratios of medians.\n"
    )?;
    let names: Vec<&str> = setups.iter().map(|(s, _)| *s).collect();
    let ratios: Vec<String> = peers.iter().map(|(s, _)| format!("dia/{s}")).collect();
    writeln!(
        md,
        "| measurement | {} | {} |",
        names.join(" | "),
        ratios.join(" | ")
    )?;
    writeln!(md, "|---|{}", "---:|".repeat(names.len() + ratios.len()))?;
    let rows: [(&str, Pick, usize); 3] = [
        ("TCP a→b (Mbit/s)", |r| &r.a_to_b, 0),
        ("TCP b→a (Mbit/s)", |r| &r.b_to_a, 0),
        ("ping avg rtt (ms)", |r| &r.rtt_ms, 3),
    ];
    for (label, pick, decimals) in rows {
        let cell = |v: &[f64]| {
            median_range(v).map_or("n/a".to_string(), |(m, lo, hi)| {
                if v.len() > 1 {
                    format!("{m:.decimals$} ({lo:.decimals$}-{hi:.decimals$})")
                } else {
                    format!("{m:.decimals$}")
                }
            })
        };
        let values: Vec<String> = setups.iter().map(|(_, r)| cell(pick(r))).collect();
        let median = |r: &NetResult| median_range(pick(r)).map(|m| m.0);
        let ratios: Vec<String> = peers
            .iter()
            .map(|(_, peer)| match (median(dia), median(peer)) {
                (Some(d), Some(p)) if p > 0.0 => format!("{:.2}x", d / p),
                _ => "n/a".into(),
            })
            .collect();
        writeln!(
            md,
            "| {label} | {} | {} |",
            values.join(" | "),
            ratios.join(" | ")
        )?;
    }
    for (name, r) in &setups {
        let complete = !r.a_to_b.is_empty() && !r.b_to_a.is_empty() && !r.rtt_ms.is_empty();
        match &r.error {
            Some(e) if complete => writeln!(md, "\n{name}: a round failed: {e}")?,
            Some(e) => writeln!(md, "\n{name}: n/a: {e}")?,
            None if !complete => writeln!(md, "\n{name}: n/a: no results in the console")?,
            None => {}
        }
    }
    Ok(md)
}

/// The network benchmark: one boot with dia's ports, a virtio-net pair and
/// an in-guest bridge, measured in rounds (`qemu-tests/bench/net.sh`).
///
/// The peer is two `virtio-net-pci` NICs on one QEMU hub (`-netdev
/// hubport`): what one sends, QEMU hands to the other, in the host process
/// that emulates them, as the card's switch does between two of its ports.
/// (A socket or tap backend would add the host kernel's network stack,
/// which dia's local path does not cross; a bridge in the guest would not
/// leave the guest at all.) With no vnet-header backend, QEMU offers the
/// guest no checksum or segmentation offload on these NICs. A setup that
/// fails is reported as n/a with its error; the bench fails only when the
/// console has no results at all.
pub fn run_net(paths: &Paths, artefacts: &Artefacts) -> Result<String> {
    let mut s = bench_scenario(paths, "net")?;
    for i in 0..2 {
        s.qemu_args.extend([
            "-netdev".to_string(),
            format!("hubport,id=peer{i},hubid=0"),
            "-device".to_string(),
            format!(
                "virtio-net-pci,netdev=peer{i},mac=52:54:00:78:00:0{}",
                i + 1
            ),
        ]);
    }
    eprintln!("==> benchmark: network, dia ports vs virtio-net vs a bridge (one boot, three rounds, about 10 minutes)");
    let outcome = qemu::run_scenario(paths, artefacts, &s)?;
    let console = console_of(paths, &s);
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    if !text.contains("@@NET") {
        let why = match outcome {
            Outcome::Failed { reason, .. } => reason,
            Outcome::Passed { .. } => "the guest printed no @@NET lines".into(),
        };
        bail!(
            "network benchmark failed: {why} (console: {})",
            console.display()
        );
    }
    let mut md = net_table(&text)?;
    if let Outcome::Failed { reason, .. } = outcome {
        writeln!(
            md,
            "\nthe run did not finish: {reason} (console: {})",
            console.display()
        )?;
    }
    save_report(paths, "bench-net.md", md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iperf_json(bps: f64) -> String {
        format!(
            r#"{{"start": {{}}, "end": {{"sum_sent": {{"bits_per_second": {}}}, "sum_received": {{"bits_per_second": {bps}}}}}}}"#,
            bps + 1.0
        )
    }

    #[test]
    fn ping_summary() {
        assert_eq!(
            ping_avg_ms("round-trip min/avg/max = 0.076/0.103/0.195 ms"),
            Some(0.103)
        );
        assert_eq!(ping_avg_ms("round-trip"), None);
        assert_eq!(
            ping_avg_ms("rtt min/avg/max/mdev = 0.726/1.773/10.781/2.160 ms"),
            Some(1.773)
        );
    }

    #[test]
    fn table_with_both_setups() -> Result<()> {
        let console = format!(
            "noise\n@@NET virtio-net ping round-trip min/avg/max = 0.1/0.500/0.9 ms\n\
             @@NETJSON virtio-net a-to-b {}\n@@NETJSON virtio-net b-to-a {}\n\
             @@NET dia ping round-trip min/avg/max = 0.1/0.250/0.9 ms\n\
             @@NETJSON dia a-to-b {}\n@@NETJSON dia b-to-a {}\n\
             @@NET bridge ping round-trip min/avg/max = 0.1/0.125/0.9 ms\n\
             @@NETJSON bridge a-to-b {}\n@@NETJSON bridge b-to-a {}\n",
            iperf_json(2e9),
            iperf_json(1e9),
            iperf_json(1e9),
            iperf_json(1.5e9),
            iperf_json(4e9),
            iperf_json(3e9),
        );
        let md = net_table(&console)?;
        assert!(
            md.contains(
                "| measurement | dia | virtio-net | bridge | dia/virtio-net | dia/bridge |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| TCP a→b (Mbit/s) | 1000 | 2000 | 4000 | 0.50x | 0.25x |"),
            "{md}"
        );
        assert!(
            md.contains("| TCP b→a (Mbit/s) | 1500 | 1000 | 3000 | 1.50x | 0.50x |"),
            "{md}"
        );
        assert!(
            md.contains("| ping avg rtt (ms) | 0.250 | 0.500 | 0.125 | 0.50x | 2.00x |"),
            "{md}"
        );
        assert!(!md.contains("n/a"), "{md}");
        Ok(())
    }

    #[test]
    fn medians_and_ranges_over_rounds() -> Result<()> {
        let mut console = String::new();
        for (dia, virtio, rtt) in [
            (1e9, 2e9, "0.300"),
            (3e9, 2.5e9, "0.100"),
            (2e9, 1e9, "0.200"),
        ] {
            console += &format!(
                "@@NET dia ping round-trip min/avg/max = 0.1/{rtt}/0.9 ms\n\
                 @@NETJSON dia a-to-b {}\n@@NETJSON dia b-to-a {}\n\
                 @@NET virtio-net ping round-trip min/avg/max = 0.1/0.400/0.9 ms\n\
                 @@NETJSON virtio-net a-to-b {}\n@@NETJSON virtio-net b-to-a {}\n",
                iperf_json(dia),
                iperf_json(dia),
                iperf_json(virtio),
                iperf_json(virtio),
            );
        }
        console += "@@NET bridge error no bridge\n";
        let md = net_table(&console)?;
        assert!(md.contains("Medians of 3 rounds"), "{md}");
        assert!(
            md.contains(
                "| TCP a→b (Mbit/s) | 2000 (1000-3000) | 2000 (1000-2500) | n/a | 1.00x | n/a |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ping avg rtt (ms) | 0.200 (0.100-0.300) | 0.400 (0.400-0.400) | n/a | 0.50x | n/a |"),
            "{md}"
        );
        assert!(md.contains("bridge: n/a: no bridge"), "{md}");
        Ok(())
    }

    #[test]
    fn a_failed_setup_is_na_with_its_error() -> Result<()> {
        let console = format!(
            "@@NET virtio-net ping round-trip min/avg/max = 0.1/0.500/0.9 ms\n\
             @@NETJSON virtio-net a-to-b {}\n@@NETJSON virtio-net b-to-a {}\n\
             @@NETJSON dia a-to-b {{\"start\": {{}}, \"error\": \"unable to connect to server\"}}\n\
             @@NET dia error iperf3 a-to-b exited 1\n",
            iperf_json(2e9),
            iperf_json(1e9),
        );
        let md = net_table(&console)?;
        assert!(
            md.contains("| TCP a→b (Mbit/s) | n/a | 2000 | n/a | n/a | n/a |"),
            "{md}"
        );
        assert!(
            md.contains("| ping avg rtt (ms) | n/a | 0.500 | n/a | n/a | n/a |"),
            "{md}"
        );
        assert!(
            md.contains("dia: n/a: a-to-b: iperf3: unable to connect to server"),
            "{md}"
        );
        assert!(!md.contains("virtio-net: n/a"), "{md}");
        // A setup that printed nothing at all.
        let md = net_table("@@NET virtio-net error expected two virtio-net NICs\n")?;
        assert!(
            md.contains("virtio-net: n/a: expected two virtio-net NICs"),
            "{md}"
        );
        assert!(md.contains("dia: n/a: no results in the console"), "{md}");
        Ok(())
    }
}
