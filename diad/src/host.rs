//! Containers as the appliance sees them: a process in its own user, mount,
//! UTS, IPC and network namespaces, with its own root (a small tmpfs with
//! the appliance's `/usr` and `/etc` read-only, a fresh `/proc` and a `/dev`
//! of allow-listed nodes; see `isolation.rs` for what a container can and
//! cannot reach), as a runtime's pause container would be. diad starts
//! them as `diad container-init --root-id ID NAME`, and changes what is
//! inside one (device nodes, mounts) through `diad ns-exec`, a short-lived
//! helper that joins the container's mount namespace (as the appliance's
//! root: the container's mount namespace belongs to the appliance); both
//! are fresh single-threaded processes, which `unshare`/`setns` require.
//! `Host` is the seam the volume logic is tested through.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::isolation;

/// Something to do inside a container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsOp {
    /// Create a block device node.
    Mknod {
        /// Where.
        path: String,
        /// Device major.
        major: u64,
        /// Device minor.
        minor: u64,
    },
    /// Remove a file (a device node).
    Unlink {
        /// Which.
        path: String,
    },
    /// Mount a filesystem (creating the mount point).
    Mount {
        /// Device.
        device: String,
        /// Mount point.
        target: String,
        /// Filesystem type.
        fstype: String,
    },
    /// Unmount.
    Umount {
        /// Mount point.
        target: String,
    },
    /// In the network namespace: rename `link` to `name`, give it
    /// `address` (CIDR), bring it and `lo` up, route by default via
    /// `gateway`.
    NetUp {
        /// The net device as it arrived (`dia0p1`).
        link: String,
        /// Its name in the container (`eth0`).
        name: String,
        /// `10.10.0.10/24`.
        address: String,
        /// `10.10.0.1`.
        gateway: String,
    },
}

impl NsOp {
    fn args(&self) -> Vec<String> {
        match self {
            NsOp::Mknod { path, major, minor } => {
                vec![
                    "mknod".into(),
                    path.clone(),
                    major.to_string(),
                    minor.to_string(),
                ]
            }
            NsOp::Unlink { path } => vec!["unlink".into(), path.clone()],
            NsOp::Mount {
                device,
                target,
                fstype,
            } => {
                vec![
                    "mount".into(),
                    device.clone(),
                    target.clone(),
                    fstype.clone(),
                ]
            }
            NsOp::Umount { target } => vec!["umount".into(), target.clone()],
            NsOp::NetUp {
                link,
                name,
                address,
                gateway,
            } => vec![
                "net-up".into(),
                link.clone(),
                name.clone(),
                address.clone(),
                gateway.clone(),
            ],
        }
    }

    /// Parses the helper's arguments (the inverse of `args`).
    pub fn parse(args: &[String]) -> Result<Self> {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(match a.as_slice() {
            ["mknod", path, major, minor] => NsOp::Mknod {
                path: path.to_string(),
                major: major.parse()?,
                minor: minor.parse()?,
            },
            ["unlink", path] => NsOp::Unlink {
                path: path.to_string(),
            },
            ["mount", device, target, fstype] => NsOp::Mount {
                device: device.to_string(),
                target: target.to_string(),
                fstype: fstype.to_string(),
            },
            ["umount", target] => NsOp::Umount {
                target: target.to_string(),
            },
            ["net-up", link, name, address, gateway] => NsOp::NetUp {
                link: link.to_string(),
                name: name.to_string(),
                address: address.to_string(),
                gateway: gateway.to_string(),
            },
            _ => bail!("unknown ns-exec operation {a:?}"),
        })
    }
}

/// What the volume logic needs from the appliance's OS.
pub trait Host: Send + Sync + 'static {
    /// Starts a container; returns its init pid.
    fn start_container(&self, name: &str) -> Result<u32>;
    /// Whether `pid` is still the container's init (`name`: a diad
    /// container; `None`: any process, for `pid:N` containers).
    fn container_alive(&self, pid: u32, name: Option<&str>) -> bool;
    /// Stops a container.
    fn stop_container(&self, pid: u32) -> Result<()>;
    /// Runs `op` in the namespaces of `pid` (mount, or network for
    /// network operations).
    fn in_container(&self, pid: u32, op: &NsOp) -> Result<()>;
    /// Moves net device `ifname` from diad's network namespace into
    /// `pid`'s.
    fn move_link(&self, ifname: &str, pid: u32) -> Result<()>;
    /// Device numbers of a block device (`/dev/dia0n1`).
    fn device_numbers(&self, device: &str) -> Result<(u64, u64)>;
    /// Makes an ext4 filesystem on `device` unless it has one; refuses a
    /// device holding other data.
    fn ensure_ext4(&self, device: &str) -> Result<()>;
}

/// diad's side of `container-init`'s start: once the init is in its new
/// user namespace, map the namespace's ids (only a process outside may),
/// let the init go on, and wait until it is ready.
fn handshake(child: &mut Child, root_id: u32) -> Result<()> {
    let mut out = BufReader::new(child.stdout.take().context("the init's stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "userns" {
        bail!("the init did not reach its user namespace");
    }
    isolation::write_id_maps(child.id(), root_id)?;
    let mut input = child.stdin.take().context("the init's stdin")?;
    input.write_all(b"mapped\n")?;
    drop(input);
    line.clear();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        bail!("the init did not get ready");
    }
    Ok(())
}

/// The real host: this machine.
pub struct SystemHost {
    exe: PathBuf,
}

impl SystemHost {
    /// Uses this diad binary for the helpers.
    pub fn new() -> Result<Self> {
        Ok(Self {
            exe: std::env::current_exe().context("finding diad's own binary")?,
        })
    }
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

impl Host for SystemHost {
    fn start_container(&self, name: &str) -> Result<u32> {
        let root_id = isolation::pick_root_id(&isolation::taken_ranges()).ok_or_else(|| {
            anyhow!(
                "no free range of {} host uids for the container's user namespace",
                isolation::ID_RANGE
            )
        })?;
        let mut child = Command::new(&self.exe)
            .args(["container-init", "--root-id", &root_id.to_string(), name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the container's init")?;
        let pid = child.id();
        if let Err(e) = handshake(&mut child, root_id) {
            let _ = child.kill();
            let mut err = String::new();
            if let Some(mut out) = child.stderr.take() {
                let _ = out.read_to_string(&mut err);
            }
            let _ = child.wait();
            let err = err.trim().trim_start_matches("Error: ");
            if err.is_empty() {
                return Err(e.context("container init failed"));
            }
            bail!("container init failed: {err}");
        }
        // The init runs on; a thread reaps it when it exits.
        std::thread::spawn(move || child.wait());
        Ok(pid)
    }

    fn container_alive(&self, pid: u32, name: Option<&str>) -> bool {
        match (cmdline(pid), name) {
            (Some(args), Some(name)) => {
                args.iter().any(|a| a == "container-init")
                    && args.last().map(String::as_str) == Some(name)
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    fn stop_container(&self, pid: u32) -> Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(anyhow!("stopping the container: {e}")),
        }
    }

    fn in_container(&self, pid: u32, op: &NsOp) -> Result<()> {
        let out = Command::new(&self.exe)
            .args(["ns-exec", "--pid", &pid.to_string()])
            .args(op.args())
            .stdin(Stdio::null())
            .output()
            .context("running diad ns-exec")?;
        if !out.status.success() {
            bail!(
                "{}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .trim_start_matches("Error: ")
            );
        }
        Ok(())
    }

    fn move_link(&self, ifname: &str, pid: u32) -> Result<()> {
        crate::netconf::move_link(ifname, pid)
    }

    fn device_numbers(&self, device: &str) -> Result<(u64, u64)> {
        let name = Path::new(device)
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("bad device {device}"))?;
        let text = std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
            .with_context(|| format!("{device} has no sysfs entry"))?;
        let (maj, min) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("bad dev numbers '{text}'"))?;
        Ok((maj.parse()?, min.parse()?))
    }

    fn ensure_ext4(&self, device: &str) -> Result<()> {
        let mut head = vec![0u8; 64 << 10];
        std::fs::File::open(device)
            .and_then(|mut f| f.read_exact(&mut head))
            .with_context(|| format!("reading {device}"))?;
        // ext2/3/4 superblock magic 0xEF53 at byte 1080.
        if head[1080] == 0x53 && head[1081] == 0xef {
            return Ok(());
        }
        if head.iter().any(|&b| b != 0) {
            bail!("{device} holds data that is not an ext4 filesystem; refusing to format it");
        }
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard", device])
            .stdin(Stdio::null())
            .output()
            .context("running mkfs.ext4 (is e2fsprogs installed?)")?;
        if !out.status.success() {
            bail!(
                "mkfs.ext4 {device} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

/// `diad container-init --root-id ID NAME`: becomes a container's init.
/// Must run single-threaded (before any runtime starts), as root. First, as
/// the appliance's root, in a new mount namespace that therefore stays the
/// appliance's: builds the container's root and `pivot_root`s into it
/// (`isolation.rs`). Then a new user namespace (with new UTS, IPC and
/// network namespaces that belong to it): says `userns` on stdout, waits
/// for diad to map ids 0.. to `root_id`.. and answer `mapped` on stdin,
/// becomes uid and gid 0 inside (`root_id` outside), names the host `name`,
/// says `ready` and sleeps until killed.
pub fn container_init(name: &str, root_id: u32) -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare (needs root)")?;
    // Nothing mounted in here propagates back to the appliance.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("making mounts private")?;
    let stage = Path::new(isolation::STAGE);
    isolation::build_root(stage, root_id).context("building the container's root")?;
    isolation::enter_root(stage)?;
    // No supplementary group of diad's (root's) follows the init in.
    nix::unistd::setgroups(&[]).context("dropping supplementary groups")?;
    unshare(
        CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET,
    )
    .context("unshare of the user, UTS, IPC and network namespaces")?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "userns")?;
    stdout.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    if line.trim() != "mapped" {
        bail!("diad did not map the container's ids");
    }
    let (uid, gid) = (Uid::from_raw(0), Gid::from_raw(0));
    nix::unistd::setresgid(gid, gid, gid).context("becoming gid 0 in the container")?;
    nix::unistd::setresuid(uid, uid, uid).context("becoming uid 0 in the container")?;
    nix::unistd::sethostname(name).context("sethostname")?;
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    loop {
        nix::unistd::pause();
    }
}

/// `diad ns-exec --pid PID OP...`: runs one operation in PID's mount
/// namespace (or network namespace, for network operations), as the
/// appliance's root. Must run single-threaded. A volume's node belongs to
/// the container's root (so a raw volume is usable in there) until its file
/// system is mounted, when it goes back to the appliance's root; a mount is
/// `nodev,nosuid`, its top directory is given to the container's root, and
/// no symbolic link is followed on the way to the mount point.
pub fn ns_exec(pid: u32, op: &NsOp) -> Result<()> {
    if let NsOp::NetUp {
        link,
        name,
        address,
        gateway,
    } = op
    {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
            .with_context(|| format!("container process {pid} not found"))?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .context("joining the container's network namespace")?;
        return crate::netconf::net_up(link, name, address, gateway);
    }
    // Read from the appliance's /proc, before joining.
    let (root_uid, root_gid) = isolation::root_ids_of(pid);
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .with_context(|| format!("container process {pid} not found"))?;
    setns(&ns, CloneFlags::CLONE_NEWNS).context("joining the container's mount namespace")?;
    std::env::set_current_dir("/")?;
    match op {
        NsOp::Mknod { path, major, minor } => {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if meta.file_type().is_block_device() {
                    std::fs::remove_file(path)?;
                } else {
                    bail!("{path} exists in the container and is not a device node");
                }
            }
            mknod(
                path.as_str(),
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o660),
                makedev(*major, *minor),
            )
            .with_context(|| format!("mknod {path} in the container"))?;
            // mknod applies the umask.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            std::os::unix::fs::lchown(path, Some(root_uid), Some(root_gid))
                .with_context(|| format!("giving {path} to the container's root"))?;
        }
        NsOp::Unlink { path } => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {path} in the container")),
        },
        NsOp::Mount {
            device,
            target,
            fstype,
        } => {
            let (parent, last) = isolation::parent_no_symlinks(target, true)?
                .context("the mount point's directories were not made")?;
            let point = isolation::child_dir(&parent, &last, true)
                .map_err(|e| isolation::refused(target, &last, e))?;
            // Mount on the directory just checked, not on a path that could
            // be swapped for a link meanwhile.
            nix::unistd::fchdir(&point)?;
            mount(
                Some(device.as_str()),
                ".",
                Some(fstype.as_str()),
                MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                None::<&str>,
            )
            .with_context(|| format!("mounting {device} on {target} in the container"))?;
            // The file system's top directory (looked up again: now the
            // mount's root) is the container root's.
            let top = isolation::child_dir(&parent, &last, false)
                .map_err(|e| isolation::refused(target, &last, e))?;
            nix::unistd::fchown(
                top.as_fd(),
                Some(Uid::from_raw(root_uid)),
                Some(Gid::from_raw(root_gid)),
            )
            .with_context(|| format!("giving {target} to the container's root"))?;
            // Raw writes under a mounted file system would corrupt it.
            std::os::unix::fs::lchown(device, Some(0), Some(0))
                .with_context(|| format!("giving {device} back to the appliance's root"))?;
            std::env::set_current_dir("/")?;
        }
        NsOp::NetUp { .. } => bail!("network operations are done in the network namespace"),
        NsOp::Umount { target } => {
            let Some((parent, last)) = isolation::parent_no_symlinks(target, false)? else {
                return Ok(());
            };
            nix::unistd::fchdir(&parent)?;
            match umount2(last.as_str(), MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(nix::errno::Errno::EBUSY) => {
                    bail!("{target} is busy in the container (files open): stop what uses it first")
                }
                Err(e) => bail!("unmounting {target} in the container: {e}"),
            }
            std::env::set_current_dir("/")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip_through_arguments() {
        for op in [
            NsOp::Mknod {
                path: "/dev/dia0n1".into(),
                major: 259,
                minor: 0,
            },
            NsOp::Unlink {
                path: "/dev/dia0n1".into(),
            },
            NsOp::Mount {
                device: "/dev/dia0n1".into(),
                target: "/data".into(),
                fstype: "ext4".into(),
            },
            NsOp::Umount {
                target: "/data".into(),
            },
        ] {
            assert_eq!(NsOp::parse(&op.args()).unwrap(), op);
        }
        assert!(NsOp::parse(&["explode".into()]).is_err());
    }
}
