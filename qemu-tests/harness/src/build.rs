//! Building the appliance: guest kernel (cached by input hash, via
//! `scripts/build-kernel.sh`), `dia.ko` against it (with clippy, so lints
//! fail the build), the card model for the host, static (musl) guest
//! userspace, and the initramfs that ties them together.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::paths::Paths;
use crate::progress::Step;

/// Musl target of the guest's userspace.
const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";
/// Guest binaries built from this workspace.
const GUEST_BINS: &[&str] = &["diad", "diaconfig", "dia-guest-check"];
/// Host (Debian) programs the scenarios use, copied with their shared libraries.
const HOST_TOOLS: &[&str] = &[
    "/usr/bin/fio",
    "/usr/sbin/mkfs.ext4",
    "/usr/sbin/e2fsck",
    "/usr/bin/iperf3",
];

/// Everything a boot needs.
pub struct Artefacts {
    /// Guest kernel image.
    pub bzimage: PathBuf,
    /// Initramfs (uncompressed cpio: faster to unpack under TCG).
    pub initramfs: PathBuf,
    /// The card model binary for the host.
    pub card: PathBuf,
}

/// Builds whatever is missing or stale.
pub fn all(paths: &Paths) -> Result<Artefacts> {
    let ktree = kernel(paths)?;
    let ko = module(paths, &ktree)?;
    let card = host_card(paths)?;
    let bins = guest_userspace(paths)?;
    let initramfs = initramfs(paths, &ko, &bins)?;
    Ok(Artefacts {
        bzimage: ktree.join("arch/x86/boot/bzImage"),
        initramfs,
        card,
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The Rust-enabled guest kernel tree (built once per input hash).
pub fn kernel(paths: &Paths) -> Result<PathBuf> {
    let step = Step::start("guest kernel (Linux 6.12 with Rust; about 20 min when not cached)");
    let out = Command::new(paths.qemu_tests("scripts/build-kernel.sh"))
        .env("DIA_CACHE", &paths.cache)
        .stderr(Stdio::inherit())
        .output()
        .context("running build-kernel.sh")?;
    if !out.status.success() {
        bail!("guest kernel build failed; see the log named above");
    }
    let tree = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    if !tree.join("arch/x86/boot/bzImage").is_file() {
        bail!(
            "kernel build reported {} but it has no bzImage",
            tree.display()
        );
    }
    step.done();
    Ok(tree)
}

/// `dia.ko`, built out of tree against `ktree` with clippy as the compiler
/// driver (the kernel build turns warnings into errors), after checking that
/// the module's sources are formatted with the kernel's rustfmt settings.
pub fn module(paths: &Paths, ktree: &Path) -> Result<PathBuf> {
    let step = Step::start("dia.ko (kmod/, Rust-for-Linux, rustfmt, clippy)");
    run(
        Command::new("rustfmt")
            .args(["--check", "--edition", "2021", "--config-path"])
            .arg(ktree.join(".rustfmt.toml"))
            .arg(paths.repo.join("kmod/dia_main.rs")),
        "rustfmt --check of kmod/ (fix with the same command without --check)",
    )?;
    run(
        Command::new("make")
            .arg("-C")
            .arg(ktree)
            .arg(format!("M={}", paths.repo.display()))
            .args(["LLVM=1", "CLIPPY=1", "modules", "-j2"])
            .stdout(Stdio::null()),
        "module build",
    )?;
    let ko = paths.repo.join("dia.ko");
    if !ko.is_file() {
        bail!("module build produced no dia.ko");
    }
    step.done();
    Ok(ko)
}

/// The card model, built for the host.
pub fn host_card(paths: &Paths) -> Result<PathBuf> {
    let step = Step::start("card model (qemu-tests/card)");
    run(
        Command::new("cargo").current_dir(&paths.repo).args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "dia-card",
        ]),
        "card build",
    )?;
    step.done();
    Ok(paths.repo.join("target/release/dia-card"))
}

/// Static guest binaries.
pub fn guest_userspace(paths: &Paths) -> Result<Vec<PathBuf>> {
    let step = Step::start("guest userspace (musl, static)");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&paths.repo)
        .args(["build", "--release", "--quiet", "--target", GUEST_TARGET]);
    // Each guest binary is the package of the same name.
    for b in GUEST_BINS {
        cmd.args(["-p", b]);
    }
    run(&mut cmd, "guest userspace build")?;
    step.done();
    Ok(GUEST_BINS
        .iter()
        .map(|b| {
            paths
                .repo
                .join("target")
                .join(GUEST_TARGET)
                .join("release")
                .join(b)
        })
        .collect())
}

fn hash_file(h: &mut Sha256, path: &Path) -> Result<()> {
    h.update(path.to_string_lossy().as_bytes());
    h.update(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    Ok(())
}

/// The initramfs: busybox, the init script, scenarios, `dia.ko` and the
/// guest binaries. Rebuilt only when one of those changes.
pub fn initramfs(paths: &Paths, ko: &Path, bins: &[PathBuf]) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let init = paths.qemu_tests("guest/init");
    let mut inputs = vec![busybox.to_path_buf(), init.clone(), ko.to_path_buf()];
    inputs.extend(HOST_TOOLS.iter().map(PathBuf::from));
    inputs.extend(bins.iter().cloned());
    let mut scenarios: Vec<PathBuf> = std::fs::read_dir(paths.qemu_tests("scenarios"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    scenarios.sort();
    let mut benches: Vec<PathBuf> = std::fs::read_dir(paths.qemu_tests("bench"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    benches.sort();
    inputs.extend(scenarios.iter().cloned());
    inputs.extend(benches.iter().cloned());

    let mut h = Sha256::new();
    // Bump when the image's layout changes without its inputs changing.
    h.update(b"initramfs layout 2");
    for p in &inputs {
        hash_file(&mut h, p)?;
    }
    let key = format!("{:x}", h.finalize());
    let out = paths.out.join(format!("initramfs-{}.cpio", &key[..16]));
    if out.is_file() {
        return Ok(out);
    }
    let step = Step::start("initramfs");
    let root = paths.out.join("initramfs-root");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for d in [
        "bin",
        "sbin",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "lib/modules",
        "scenarios",
        "etc",
        "root",
        "var/lib/dia",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    copy_exec(busybox, &root.join("bin/busybox"))?;
    copy_exec(&init, &root.join("init"))?;
    std::fs::copy(ko, root.join("lib/modules/dia.ko"))?;
    for b in bins {
        let name = b.file_name().context("binary name")?;
        copy_exec(b, &root.join("bin").join(name))?;
    }
    for s in &scenarios {
        std::fs::copy(
            s,
            root.join("scenarios")
                .join(s.file_name().context("scenario name")?),
        )?;
    }
    // Benchmarks run like scenarios, as /scenarios/bench-NAME.sh.
    for b in &benches {
        let name = b.file_name().context("bench name")?.to_string_lossy();
        std::fs::copy(b, root.join("scenarios").join(format!("bench-{name}")))?;
    }
    for tool in HOST_TOOLS {
        copy_with_libs(Path::new(tool), &root)?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    for old in std::fs::read_dir(&paths.out)?.filter_map(|e| e.ok()) {
        if old.file_name().to_string_lossy().starts_with("initramfs-")
            && old.path().extension().is_some_and(|e| e == "cpio")
        {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let tmp = out.with_extension("tmp");
    run(
        Command::new("sh")
            .arg("-c")
            .arg("find . -print0 | cpio --null -o -H newc --quiet > \"$0\"")
            .arg(&tmp)
            .current_dir(&root),
        "cpio",
    )?;
    std::fs::rename(&tmp, &out)?;
    step.done();
    Ok(out)
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Copies a dynamically linked host program into the guest root at the same
/// path, with every shared library `ldd` names.
fn copy_with_libs(program: &Path, root: &Path) -> Result<()> {
    let rel = program
        .strip_prefix("/")
        .context("tool paths are absolute")?;
    let dest = root.join(rel);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    copy_exec(program, &dest)?;
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .context("running ldd")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let lib = Path::new(path);
        let lib_dest = root.join(lib.strip_prefix("/").context("absolute library path")?);
        if lib_dest.exists() {
            continue;
        }
        if let Some(dir) = lib_dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(lib, &lib_dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    Ok(())
}
