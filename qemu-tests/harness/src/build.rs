//! Building the appliance: guest kernel (cached by input hash, via
//! `scripts/build-kernel.sh`), the Debian root file system image (cached by
//! input hash, via `scripts/build-appliance-image.sh`), `dia.ko` against the
//! kernel (with clippy, so lints fail the build), the card model for the
//! host, static (musl) guest userspace, and the small initramfs that lays the
//! project's files over the image at each boot.

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

/// Which guest kernel: the plain one, or the debug flavour (KASAN, lockdep,
/// ...; `kernel/debug.config`), a second cached tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// `kernel/dia.config`.
    Plain,
    /// `kernel/dia.config` + `kernel/debug.config`.
    Debug,
}

/// Everything a boot needs.
pub struct Artefacts {
    /// Which kernel it boots.
    pub flavour: Flavour,
    /// Guest kernel image.
    pub bzimage: PathBuf,
    /// Initramfs (uncompressed cpio: faster to unpack under TCG): stage 1
    /// of the boot and the payload laid over the root image.
    pub initramfs: PathBuf,
    /// The appliance's Debian root file system (ext4, booted read-only).
    pub rootfs: PathBuf,
    /// The card model binary for the host.
    pub card: PathBuf,
}

/// Builds whatever is missing or stale.
pub fn all(paths: &Paths, flavour: Flavour) -> Result<Artefacts> {
    let ktree = kernel(paths, flavour)?;
    let rootfs = appliance_image(paths)?;
    let ko = module(paths, &ktree)?;
    let card = host_card(paths)?;
    let bins = guest_userspace(paths)?;
    let initramfs = initramfs(paths, &ktree, &ko, &bins)?;
    Ok(Artefacts {
        flavour,
        bzimage: ktree.join("arch/x86/boot/bzImage"),
        initramfs,
        rootfs,
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
pub fn kernel(paths: &Paths, flavour: Flavour) -> Result<PathBuf> {
    let (what, arg) = match flavour {
        Flavour::Plain => (
            "guest kernel (Linux 6.12 with Rust; 20-30 min when not cached)",
            "plain",
        ),
        Flavour::Debug => (
            "debug guest kernel (KASAN, lockdep, ...; 30-45 min when not cached)",
            "debug",
        ),
    };
    let step = Step::start(what);
    let out = Command::new(paths.qemu_tests("scripts/build-kernel.sh"))
        .arg(arg)
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

/// The appliance's Debian root file system image (built once per input hash).
pub fn appliance_image(paths: &Paths) -> Result<PathBuf> {
    let step = Step::start(
        "appliance image (Debian 12 with podman, etcd, nvme-cli; a few minutes when not cached)",
    );
    let out = Command::new(paths.qemu_tests("scripts/build-appliance-image.sh"))
        .env("DIA_CACHE", &paths.cache)
        .stderr(Stdio::inherit())
        .output()
        .context("running build-appliance-image.sh")?;
    if !out.status.success() {
        bail!("appliance image build failed; see the log named above");
    }
    let image = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    if !image.is_file() {
        bail!(
            "appliance image build reported {} but it is not there",
            image.display()
        );
    }
    step.done();
    Ok(image)
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
    // Objects built against the other kernel flavour must not be reused.
    let stamp = paths.out.join("dia.ko.kernel");
    let tree = ktree.display().to_string();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(tree.as_str()) {
        run(
            Command::new("make")
                .arg("-C")
                .arg(ktree)
                .arg(format!("M={}", paths.repo.display()))
                .args(["LLVM=1", "clean"])
                .stdout(Stdio::null()),
            "module clean",
        )?;
        std::fs::write(&stamp, &tree)?;
    }
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
            "dia-card-model",
        ]),
        "card build",
    )?;
    step.done();
    Ok(paths.repo.join("target/release/dia-card"))
}

/// What the guest binaries are made of: the workspace's manifests and
/// toolchain, and every file of the crates they build from (no crate of
/// theirs has a build script or includes a file from elsewhere).
const GUEST_INPUTS: &[&str] = &[
    "Cargo.toml",
    "Cargo.lock",
    "rust-toolchain.toml",
    "abi",
    "libdia",
    "diad",
    "tools",
    "qemu-tests/guest-check",
];

/// Static guest binaries, kept by the hash of their inputs: a fresh clone
/// (CI's, every run) has newer files than cargo's cached build, and cargo
/// would rebuild every workspace crate for the musl target (45 s on 2
/// cores) although nothing changed.
pub fn guest_userspace(paths: &Paths) -> Result<Vec<PathBuf>> {
    let mut h = Sha256::new();
    // Bump when the build changes without its inputs changing.
    h.update(b"guest binaries 1");
    for input in GUEST_INPUTS {
        hash_tree(&mut h, &paths.repo, Path::new(input))?;
    }
    let key = format!("{:x}", h.finalize());
    let dir = paths.out.join(format!("guest-bins-{}", &key[..16]));
    let bins: Vec<PathBuf> = GUEST_BINS.iter().map(|b| dir.join(b)).collect();
    if bins.iter().all(|b| b.is_file()) {
        return Ok(bins);
    }
    let step = Step::start("guest userspace (musl, static)");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&paths.repo)
        .args(["build", "--release", "--quiet", "--target", GUEST_TARGET]);
    // Each guest binary is the package of the same name.
    for b in GUEST_BINS {
        cmd.args(["-p", b]);
    }
    run(&mut cmd, "guest userspace build")?;
    // Filled under a name of this run's own, then renamed: two harness
    // runs may build at once, and a half-copied directory must not count.
    let tmp = paths
        .out
        .join(format!("guest-bins-tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    let built = paths.repo.join("target").join(GUEST_TARGET).join("release");
    for b in GUEST_BINS {
        copy_exec(&built.join(b), &tmp.join(b))?;
    }
    // Older sets go once they are a day old (as initramfs images do):
    // another harness run may still be packing one of them.
    for old in day_old(&paths.out)? {
        if old.file_name().to_string_lossy().starts_with("guest-bins-") {
            let _ = std::fs::remove_dir_all(old.path());
        }
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another run stored the same set first.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    step.done();
    Ok(bins)
}

/// The entries of `dir` last changed more than a day ago: artefacts no
/// other harness run still uses.
fn day_old(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let day = std::time::Duration::from_secs(24 * 3600);
    Ok(std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day)
        })
        .collect())
}

/// Hashes `rel` under `root`: a file's path and bytes, or a directory's
/// files in name order (build output directories left out).
fn hash_tree(h: &mut Sha256, root: &Path, rel: &Path) -> Result<()> {
    let path = root.join(rel);
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n != "target")
            .collect();
        entries.sort();
        for name in entries {
            hash_tree(h, root, &rel.join(name))?;
        }
        Ok(())
    } else {
        // By its path in the repository: clones elsewhere share the key.
        hash_file(h, rel, &path)
    }
}

/// Hashes the file at `path`, named `name`, and its bytes.
fn hash_file(h: &mut Sha256, name: &Path, path: &Path) -> Result<()> {
    h.update(name.to_string_lossy().as_bytes());
    h.update(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    Ok(())
}

/// The initramfs: a static busybox with the stage-1 `/init`, and under
/// `/payload` what is laid over the Debian root at each boot: the kernel's
/// modules with `dia.ko` (depmod'ed, so `modprobe dia` works), the guest
/// binaries, the appliance's init and service scripts, the scenarios and
/// benchmarks, and busybox applet links for the few tools Debian lacks.
/// Rebuilt only when one of those changes.
pub fn initramfs(paths: &Paths, ktree: &Path, ko: &Path, bins: &[PathBuf]) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    let init = paths.qemu_tests("guest/init");
    let appliance_init = paths.qemu_tests("guest/dia-init");
    let service = paths.qemu_tests("guest/dia.initd");
    let release = std::fs::read_to_string(ktree.join("include/config/kernel.release"))
        .context("reading the kernel's release")?
        .trim()
        .to_string();
    let mut inputs = vec![
        busybox.to_path_buf(),
        init.clone(),
        appliance_init.clone(),
        service.clone(),
        ko.to_path_buf(),
        ktree.join("arch/x86/boot/bzImage"),
    ];
    inputs.extend(bins.iter().cloned());
    let scenarios = shell_scripts(&paths.qemu_tests("scenarios"))?;
    let benches = shell_scripts(&paths.qemu_tests("bench"))?;
    inputs.extend(scenarios.iter().cloned());
    inputs.extend(benches.iter().cloned());

    let mut h = Sha256::new();
    // Bump when the image's layout changes without its inputs changing.
    h.update(b"initramfs layout 3 (payload over the Debian root)");
    h.update(release.as_bytes());
    for p in &inputs {
        hash_file(&mut h, p, p)?;
    }
    let key = format!("{:x}", h.finalize());
    let out = paths.out.join(format!("initramfs-{}.cpio", &key[..16]));
    if out.is_file() {
        return Ok(out);
    }
    let step = Step::start("initramfs (stage 1 and the payload over the image)");
    // A directory of this run's own: two harness runs may build at once.
    let root = paths
        .out
        .join(format!("initramfs-root-{}", std::process::id()));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let payload = root.join("payload");
    for d in ["bin", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    // Debian's /bin, /sbin and /lib are links into /usr (merged /usr): the
    // payload writes under usr/ so copying it never meets a link.
    for d in [
        "usr/sbin",
        "etc/init.d",
        "usr/local/bin",
        "usr/lib/dia/busybox",
        "scenarios",
    ] {
        std::fs::create_dir_all(payload.join(d))?;
    }
    copy_exec(busybox, &root.join("bin/busybox"))?;
    copy_exec(&init, &root.join("init"))?;
    copy_exec(&appliance_init, &payload.join("usr/sbin/dia-init"))?;
    copy_exec(&service, &payload.join("etc/init.d/dia"))?;
    for b in bins {
        let name = b.file_name().context("binary name")?;
        copy_exec(b, &payload.join("usr/local/bin").join(name))?;
    }
    install_modules(ktree, &release, ko, &payload.join("usr"))?;
    for s in &scenarios {
        std::fs::copy(
            s,
            payload
                .join("scenarios")
                .join(s.file_name().context("scenario name")?),
        )?;
    }
    // Benchmarks run like scenarios, as /scenarios/bench-NAME.sh.
    for b in &benches {
        let name = b.file_name().context("bench name")?.to_string_lossy();
        std::fs::copy(b, payload.join("scenarios").join(format!("bench-{name}")))?;
    }
    busybox_fallbacks(busybox, &payload.join("usr/lib/dia/busybox"))?;
    // Earlier images go once they are a day old: another harness run may
    // still be booting one of them.
    for old in day_old(&paths.out)? {
        if old.file_name().to_string_lossy().starts_with("initramfs-")
            && old.path().extension().is_some_and(|e| e == "cpio")
        {
            let _ = std::fs::remove_file(old.path());
        }
    }
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    run(
        Command::new("sh")
            .arg("-c")
            .arg("find . -print0 | cpio --null -o -H newc --quiet > \"$0\"")
            .arg(&tmp)
            .current_dir(&root),
        "cpio",
    )?;
    std::fs::rename(&tmp, &out)?;
    std::fs::remove_dir_all(&root)?;
    step.done();
    Ok(out)
}

/// The `.sh` files of a directory, sorted.
fn shell_scripts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    files.sort();
    Ok(files)
}

/// The kernel's modules and `dia.ko` under `usr/lib/modules/RELEASE` (`usr` is `root`), as a
/// distribution installs an out-of-tree module: `extra/dia.ko`, then
/// `depmod`, so `modprobe dia` and `modinfo dia` work in the appliance.
fn install_modules(ktree: &Path, release: &str, ko: &Path, root: &Path) -> Result<()> {
    run(
        Command::new("make")
            .arg("-C")
            .arg(ktree)
            .arg(format!("INSTALL_MOD_PATH={}", root.display()))
            .args(["LLVM=1", "DEPMOD=true", "modules_install"])
            .stdout(Stdio::null()),
        "make modules_install",
    )?;
    let moddir = root.join("lib/modules").join(release);
    // The build tree's symlinks point at this host's paths.
    for link in ["build", "source"] {
        let _ = std::fs::remove_file(moddir.join(link));
    }
    std::fs::create_dir_all(moddir.join("extra"))?;
    std::fs::copy(ko, moddir.join("extra/dia.ko")).context("installing dia.ko")?;
    run(
        Command::new("depmod").arg("-b").arg(root).arg(release),
        "depmod",
    )?;
    Ok(())
}

/// Links to busybox for each applet that the Debian root has no program of
/// its own for; the appliance's PATH ends with this directory, so Debian's
/// tools always come first.
fn busybox_fallbacks(busybox: &Path, dir: &Path) -> Result<()> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("/bin/busybox", dir.join(applet))
            .with_context(|| format!("linking busybox applet {applet}"))?;
    }
    Ok(())
}

fn copy_exec(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}
