//! Scenarios: shell scripts in `qemu-tests/scenarios/` run inside a fresh
//! appliance each. Header comments configure the run:
//! `# card-args: ...` (extra card flags, e.g. fault injection),
//! `# debug-card-args: ...` (instead of those on the debug kernel, e.g. a
//! slower media model for its slower guest),
//! `# qemu-args: ...` (extra QEMU devices), `# timeout: SECONDS`,
//! `# appliances: N` (N appliances, each with its own card and QEMU, their
//! cards linked by their uplinks and the guests by a management network,
//! see `mgmt_hub`; default 1), `# service: on` (the appliance
//! loads `dia.ko` and starts diad at boot with its init script, as a real
//! appliance does; by default the scenario does it through `lib.sh`),
//! `# fabric: on` (the card serves NVMe/TCP on a free loopback port, the
//! guest gets a user-mode NIC to reach it at 10.0.2.2, and the port is on
//! the kernel command line as `appliance.fabric_port=`; the guest's own
//! port 4420 at 10.0.2.15 is forwarded from the host port given as
//! `appliance.guest_fabric_port=`, where the card reaches a target in the
//! guest such as Linux's nvmet).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::build::Artefacts;
use crate::paths::Paths;
use crate::qemu::{self, Outcome};

/// Default time a scenario may take, boot included (TCG is slow).
const DEFAULT_TIMEOUT_S: u64 = 300;
/// Most appliances one scenario may boot (the host has 2 cores).
const MAX_APPLIANCES: usize = 4;

/// One scenario script.
pub struct Scenario {
    /// File stem, passed to the guest as `appliance.scenario=`.
    pub name: String,
    /// First descriptive comment line.
    pub summary: String,
    /// Extra card arguments.
    pub card_args: Vec<String>,
    /// Card arguments instead of `card_args` on the debug kernel.
    pub debug_card_args: Option<Vec<String>>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Time limit.
    pub timeout: Duration,
    /// Appliances (nodes) to boot for it, each with its own card and QEMU.
    pub appliances: usize,
    /// The appliance's boot service loads the driver and starts diad.
    pub service: bool,
    /// Each appliance has a state disk kept across its reboots.
    pub state_disk: bool,
    /// Each card serves NVMe/TCP (`--fabric-listen`) and its guest has a
    /// user-mode NIC that reaches it.
    pub fabric: bool,
}

/// All scenarios, sorted by name (`lib.sh` is the shared library, not a scenario).
pub fn discover(paths: &Paths) -> Result<Vec<Scenario>> {
    let dir = paths.qemu_tests("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh") && !p.ends_with("lib.sh"))
        .collect();
    files.sort();
    files.iter().map(|f| parse(f)).collect()
}

/// Reads one scenario file and its header.
pub fn parse(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .context("scenario file name")?
        .to_string_lossy()
        .into_owned();
    let mut s = Scenario {
        name,
        summary: String::new(),
        card_args: Vec::new(),
        debug_card_args: None,
        qemu_args: Vec::new(),
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
        appliances: 1,
        service: false,
        state_disk: false,
        fabric: false,
    };
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        let body = line.trim_start_matches('#').trim();
        if let Some(v) = body.strip_prefix("card-args:") {
            s.card_args.extend(v.split_whitespace().map(String::from));
        } else if let Some(v) = body.strip_prefix("debug-card-args:") {
            s.debug_card_args
                .get_or_insert_with(Vec::new)
                .extend(v.split_whitespace().map(String::from));
        } else if let Some(v) = body.strip_prefix("qemu-args:") {
            s.qemu_args.extend(v.split_whitespace().map(String::from));
        } else if let Some(v) = body.strip_prefix("timeout:") {
            s.timeout = Duration::from_secs(
                v.trim()
                    .parse()
                    .with_context(|| format!("{}: bad timeout", path.display()))?,
            );
        } else if let Some(v) = body.strip_prefix("service:") {
            s.service = match v.trim() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("{}: service: is on or off, not '{other}'", path.display()),
            };
        } else if let Some(v) = body.strip_prefix("state-disk:") {
            s.state_disk = match v.trim() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!(
                    "{}: state-disk: is on or off, not '{other}'",
                    path.display()
                ),
            };
        } else if let Some(v) = body.strip_prefix("fabric:") {
            s.fabric = match v.trim() {
                "on" => true,
                "off" => false,
                other => anyhow::bail!("{}: fabric: is on or off, not '{other}'", path.display()),
            };
        } else if let Some(v) = body.strip_prefix("appliances:") {
            s.appliances = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=MAX_APPLIANCES).contains(n))
                .with_context(|| {
                    format!("{}: bad appliances (1 to {MAX_APPLIANCES})", path.display())
                })?;
        } else if s.summary.is_empty() {
            s.summary = body.to_string();
        }
    }
    Ok(s)
}

/// Runs scenarios one after another; returns (passed, failed).
pub fn run_all(
    paths: &Paths,
    artefacts: &Artefacts,
    scenarios: &[Scenario],
) -> Result<(usize, usize)> {
    let (mut passed, mut failed) = (0, 0);
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!(
            "==> scenario {}/{}: {} ({})",
            i + 1,
            scenarios.len(),
            s.name,
            s.summary
        );
        let outcome = qemu::run_scenario(paths, artefacts, s)?;
        match &outcome {
            Outcome::Passed { seconds } => {
                passed += 1;
                println!("PASS {} ({seconds:.1}s)", s.name);
            }
            Outcome::Failed { reason, nodes } => {
                failed += 1;
                println!("FAIL {}: {reason}", s.name);
                let several = nodes.len() > 1;
                for (i, node) in nodes.iter().enumerate() {
                    let who = if several {
                        format!("node{i} ")
                    } else {
                        String::new()
                    };
                    println!("     {who}guest console: {}", node.console.display());
                    println!("     {who}card log:      {}", node.card_log.display());
                }
                // Show the end of each console so CI logs explain the failure.
                for (i, node) in nodes.iter().enumerate() {
                    let Ok(text) = std::fs::read_to_string(&node.console) else {
                        continue;
                    };
                    let lines: Vec<&str> = text.lines().collect();
                    let who = if several {
                        format!("node{i}")
                    } else {
                        String::new()
                    };
                    if several {
                        println!("     ---- node{i}: {}", node.console.display());
                    }
                    // The reason and any kernel bug first: the guest dumps
                    // its kernel log after a failure, which pushes them out
                    // of the tail below.
                    for l in lines.iter().filter(|l| is_failure_line(l)).take(20) {
                        println!("     {who}! {l}");
                    }
                    for l in &lines[lines.len().saturating_sub(40)..] {
                        println!("     {who}| {l}");
                    }
                }
            }
        }
    }
    Ok((passed, failed))
}

/// A console line that says why a scenario failed: the scenario's own
/// `fail` message or a kernel bug report.
fn is_failure_line(line: &str) -> bool {
    const MARKS: [&str; 9] = [
        "[scenario] FAIL",
        // A guest check tool's own error: what it found wrong.
        "dia-guest-check:",
        "BUG:",
        "Oops",
        "WARNING:",
        "Call Trace",
        "kernel panic",
        "KASAN",
        "UBSAN",
    ];
    MARKS.iter().any(|m| line.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(name: &str, text: &str) -> Result<Scenario> {
        let dir = std::env::temp_dir().join(format!("dia-harness-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.sh"));
        std::fs::write(&path, text)?;
        let s = parse(&path);
        let _ = std::fs::remove_file(&path);
        s
    }

    #[test]
    fn failure_lines() {
        assert!(is_failure_line("[scenario] FAIL: ioctl fuzzer"));
        assert!(is_failure_line(
            "[   70.1] BUG: kernel NULL pointer dereference"
        ));
        assert!(is_failure_line(
            "dia-guest-check: thread 2: NS_CREATE handed out 7 twice"
        ));
        assert!(!is_failure_line("[scenario] round 1: PCI remove"));
        assert!(!is_failure_line(
            "[   62.9] dia: 0000:00:03.0: card 0 ready at /dev/dia"
        ));
    }

    #[test]
    fn header_lines() -> Result<()> {
        let s = parse_text(
            "two",
            "# appliances: 2\n# timeout: 600\n# Two nodes boot.\n. /scenarios/lib.sh\n# appliances: 3\n",
        )?;
        assert_eq!(s.name, "two");
        assert_eq!(s.appliances, 2);
        assert_eq!(s.timeout, Duration::from_secs(600));
        assert_eq!(s.summary, "Two nodes boot.");
        let s = parse_text("one", "# One node.\n")?;
        assert_eq!(s.appliances, 1);
        assert!(!s.fabric);
        assert!(parse_text("fab", "# fabric: on\n# NVMe/TCP.\n")?.fabric);
        assert!(parse_text("bad", "# fabric: yes\n").is_err());
        assert_eq!(s.debug_card_args, None);
        let d = parse_text(
            "dbg",
            "# card-args: --media-iops 4000\n# debug-card-args: --media-iops 1200\n",
        )?;
        assert_eq!(d.card_args, ["--media-iops", "4000"]);
        assert_eq!(
            d.debug_card_args.as_deref(),
            Some(&["--media-iops".to_string(), "1200".to_string()][..])
        );
        assert!(parse_text("bad", "# appliances: 0\n").is_err());
        assert!(parse_text("bad", "# appliances: many\n").is_err());
        Ok(())
    }

    /// Every guest script parses (`sh -n`), so a syntax error fails here in
    /// a second instead of failing every scenario after a boot each. The
    /// guest runs busybox ash; the host's POSIX `sh` checks the same grammar.
    #[test]
    fn guest_scripts_parse() -> Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut scripts = vec![root.join("guest/init")];
        for dir in ["scenarios", "bench"] {
            for e in std::fs::read_dir(root.join(dir))? {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "sh") {
                    scripts.push(p);
                }
            }
        }
        assert!(scripts.len() > 10, "found only {scripts:?}");
        for s in &scripts {
            let out = std::process::Command::new("sh").arg("-n").arg(s).output()?;
            assert!(
                out.status.success(),
                "{} does not parse: {}",
                s.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}
