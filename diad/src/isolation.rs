//! What keeps a diad container away from the card, the appliance and its
//! neighbours (the parts of `diad container-init` and `diad ns-exec` that
//! are not about namespaces as such):
//!
//! - **Its own ids.** Each container gets a user namespace whose root is an
//!   unprivileged host uid: a range of [`ID_RANGE`] uids and gids of its
//!   own, the first free one from [`FIRST_ROOT_ID`] on (ranges used by a
//!   running process's user namespace or listed in `/etc/subuid` or
//!   `/etc/subgid` are skipped). diad writes the maps from outside,
//!   `setgroups` denied. Neighbours therefore never share a uid, so one
//!   container's root cannot reach another's processes (`/proc/PID/root`).
//! - **Its own root.** A small tmpfs holding read-only, `nosuid,nodev`
//!   bind mounts of the appliance's `/usr` and `/etc` (and `/bin`, `/sbin`,
//!   `/lib*` as the same symbolic links into `/usr` when the appliance has
//!   a merged `/usr`, bind mounts otherwise), a fresh `/proc`
//!   (`hidepid=invisible`: other uids' processes are not even listed), a
//!   `/dev` of its own and a writable `/tmp`; `pivot_root` into it, and the
//!   appliance's root is detached, so `/run/dia` (diad's socket), the
//!   appliance's `/dev` (`/dev/dia`, other containers' disks) and every other
//!   mount are out of reach.
//! - **A device allow-list.** The container's `/dev` is a tmpfs with bind
//!   mounts of the appliance's `null`, `zero`, `full`, `random`, `urandom`
//!   and `tty`, a new `devpts` instance (`pts/`, `ptmx`) and a `shm` tmpfs;
//!   volumes attached to this container add their own node (owned by the
//!   container's root; given back to the appliance's root while diad has
//!   the volume's file system mounted there, and mounted `nodev,nosuid`).
//! - **A mount namespace it does not own.** The root is built by real root
//!   before the user namespace exists, so the mount namespace belongs to the
//!   appliance: root in the container can mount nothing (no `devtmpfs`, no
//!   `proc`, no remount of the read-only binds) and, lacking `CAP_MKNOD`
//!   outside its user namespace, create no device node.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mkdirat, mknod, Mode, SFlag};

/// The host uid (and gid) of the first container's root.
pub const FIRST_ROOT_ID: u32 = 100_000;
/// How many uids and gids each container gets (0 to 65535 inside).
pub const ID_RANGE: u32 = 65_536;
/// Where `container-init` builds the root, in its own mount namespace,
/// before `pivot_root`: an empty directory on the appliance.
pub const STAGE: &str = "/run/dia-root";

/// The device nodes every container gets (name, and numbers should the
/// appliance's `/dev` lack one).
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Entries of a `/proc/PID/uid_map` (or `gid_map`): (inside, outside, count).
pub fn parse_id_map(text: &str) -> Vec<(u32, u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(str::parse::<u32>);
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(i)), Some(Ok(o)), Some(Ok(c))) => Some((i, o, c)),
                _ => None,
            }
        })
        .collect()
}

/// The outside id of id 0 inside, per an id map's text (`None`: unmapped).
pub fn root_of_map(text: &str) -> Option<u32> {
    parse_id_map(text)
        .into_iter()
        .find(|&(inside, _, count)| inside == 0 && count > 0)
        .map(|(_, outside, _)| outside)
}

/// `[start, end)` host id ranges of an id map, leaving out the identity map
/// of the initial user namespace.
fn ranges_of_map(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    parse_id_map(text)
        .into_iter()
        .filter(|&(i, o, c)| !(i == 0 && o == 0 && c == u32::MAX))
        .map(|(_, o, c)| (u64::from(o), u64::from(o) + u64::from(c)))
}

/// `[start, end)` ranges of an `/etc/subuid` (or `subgid`) file.
pub fn parse_subids(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (_, start, count) = (f.next()?, f.next()?, f.next()?);
            let (start, count): (u64, u64) = (start.parse().ok()?, count.parse().ok()?);
            Some((start, start + count))
        })
        .collect()
}

/// Host id ranges already given out: every user namespace a running process
/// is in, and the subordinate ids of the appliance's users.
pub fn taken_ranges() -> Vec<(u64, u64)> {
    let mut taken = Vec::new();
    for f in ["/etc/subuid", "/etc/subgid"] {
        if let Ok(text) = std::fs::read_to_string(f) {
            taken.extend(parse_subids(&text));
        }
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return taken;
    };
    for p in procs.filter_map(|e| e.ok()) {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        for map in ["uid_map", "gid_map"] {
            if let Ok(text) = std::fs::read_to_string(p.path().join(map)) {
                taken.extend(ranges_of_map(&text));
            }
        }
    }
    taken
}

/// The first container root id (from [`FIRST_ROOT_ID`], in steps of
/// [`ID_RANGE`]) whose range overlaps none of `taken`.
pub fn pick_root_id(taken: &[(u64, u64)]) -> Option<u32> {
    let mut start = u64::from(FIRST_ROOT_ID);
    let range = u64::from(ID_RANGE);
    while start + range <= u64::from(u32::MAX) {
        if !taken.iter().any(|&(s, e)| s < start + range && start < e) {
            return u32::try_from(start).ok();
        }
        start += range;
    }
    None
}

/// From outside (diad): maps ids 0..[`ID_RANGE`] of `pid`'s new user
/// namespace to `root_id`.., uids and gids, with `setgroups` denied.
pub fn write_id_maps(pid: u32, root_id: u32) -> Result<()> {
    let map = format!("0 {root_id} {ID_RANGE}\n");
    for (file, text) in [
        ("setgroups", "deny\n"),
        ("uid_map", map.as_str()),
        ("gid_map", map.as_str()),
    ] {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .with_context(|| format!("writing /proc/{pid}/{file}"))?;
    }
    Ok(())
}

fn dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // mkdir applies the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

fn mount_at(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, target, fstype, flags, data).with_context(|| {
        format!(
            "mounting {} on {}",
            source.or(fstype).unwrap_or("?"),
            target.display()
        )
    })
}

/// Bind-mounts `source` on `target`, read-only, `nosuid,nodev`.
fn bind_read_only(source: &Path, target: &Path) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("binding {} on {}", source.display(), target.display()))?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .with_context(|| format!("making {} read-only", target.display()))
}

/// Builds a container's root at `stage` (a directory of the appliance, in
/// the container's new mount namespace; run as real root): see the module
/// docs. `root_id`: the host uid and gid of the container's root, which
/// owns its `/root`, `/run` and `/home`.
pub fn build_root(stage: &Path, root_id: u32) -> Result<()> {
    std::fs::create_dir_all(stage).with_context(|| format!("creating {}", stage.display()))?;
    mount_at(
        Some("tmpfs"),
        stage,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=755,size=16m"),
    )?;
    for (d, mode) in [
        ("proc", 0o555),
        ("dev", 0o755),
        ("usr", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("mnt", 0o755),
        ("root", 0o700),
        ("run", 0o755),
        ("home", 0o755),
    ] {
        dir(&stage.join(d), mode)?;
    }
    for d in ["root", "run", "home"] {
        std::os::unix::fs::lchown(stage.join(d), Some(root_id), Some(root_id))
            .with_context(|| format!("giving /{d} to the container's root"))?;
    }
    for d in ["usr", "etc"] {
        bind_read_only(&Path::new("/").join(d), &stage.join(d))?;
    }
    // Debian 12 has a merged /usr: /bin, /sbin and /lib* are links into it.
    for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(d);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = std::fs::read_link(&host)?;
                std::os::unix::fs::symlink(&to, stage.join(d))
                    .with_context(|| format!("linking /{d}"))?;
            }
            Ok(m) if m.is_dir() => {
                dir(&stage.join(d), 0o755)?;
                bind_read_only(&host, &stage.join(d))?;
            }
            _ => {}
        }
    }
    build_dev(&stage.join("dev"))?;
    mount_at(
        Some("proc"),
        &stage.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("hidepid=invisible"),
    )
}

/// The container's `/dev`: the allow-list and nothing else (see the module
/// docs). Mounted by real root (unlike a tmpfs mounted inside a user
/// namespace, its nodes can be opened), `nosuid,noexec`.
fn build_dev(dev: &Path) -> Result<()> {
    mount_at(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=755,size=64k"),
    )?;
    for (name, major, minor) in DEVICES {
        let node = dev.join(name);
        let host = Path::new("/dev").join(name);
        if std::fs::metadata(&host).is_ok() {
            std::fs::File::create(&node).with_context(|| format!("creating {}", node.display()))?;
            mount(
                Some(&host),
                &node,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("binding {} into the container", host.display()))?;
        } else {
            mknod(
                &node,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .with_context(|| format!("mknod {}", node.display()))?;
        }
    }
    dir(&dev.join("pts"), 0o755)?;
    mount_at(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx"))?;
    dir(&dev.join("shm"), 0o1777)?;
    mount_at(
        Some("tmpfs"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=64m"),
    )?;
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))?;
    }
    Ok(())
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", path.display()))
}

/// Makes `stage` this process's root (`pivot_root`) and detaches the old
/// root with every mount under it.
pub fn enter_root(stage: &Path) -> Result<()> {
    let old = open_dir(Path::new("/"))?;
    let new = open_dir(stage)?;
    nix::unistd::fchdir(&new)?;
    // The old root ends up stacked on the new one, at ".", and is detached
    // from there.
    nix::unistd::pivot_root(".", ".").context("pivot_root into the container's root")?;
    nix::unistd::fchdir(&old)?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the old root a slave")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the appliance's root")?;
    std::env::set_current_dir("/")?;
    Ok(())
}

/// A directory reached from `/` without following any symbolic link (a
/// container's root could plant one to send diad's mounts elsewhere): the
/// parent of `path`'s last component and that component, or `None` when a
/// directory on the way does not exist and `create` is false.
pub fn parent_no_symlinks(path: &str, create: bool) -> Result<Option<(OwnedFd, String)>> {
    if !path.starts_with('/') {
        bail!("{path} is not an absolute path");
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let Some((last, dirs)) = parts.split_last() else {
        bail!("{path} names the root");
    };
    if parts.iter().any(|&c| c == "." || c == "..") {
        bail!("{path}: '.' and '..' are not allowed");
    }
    let mut at = open_dir(Path::new("/"))?;
    for c in dirs {
        match child_dir(&at, c, create) {
            Ok(fd) => at = fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(e) => return Err(refused(path, c, e)),
        }
    }
    Ok(Some((at, (*last).to_string())))
}

/// `name` under `at` as a directory, never a symbolic link; made first when
/// `create`.
pub fn child_dir(at: &OwnedFd, name: &str, create: bool) -> nix::Result<OwnedFd> {
    if create {
        match mkdirat(at.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    openat(
        at.as_fd(),
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// An error for component `c` of `path`.
pub fn refused(path: &str, c: &str, e: Errno) -> anyhow::Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            anyhow!("{path}: '{c}' is a symbolic link or not a directory; refused")
        }
        e => anyhow!("{path}: '{c}': {e}"),
    }
}

/// The host uid and gid of `pid`'s root (0 for a process in the appliance's
/// own user namespace).
pub fn root_ids_of(pid: u32) -> (u32, u32) {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{f}"))
            .ok()
            .and_then(|t| root_of_map(&t))
            .unwrap_or(0)
    };
    (read("uid_map"), read("gid_map"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_maps_parse_and_name_the_root() {
        let init = "         0          0 4294967295\n";
        assert_eq!(root_of_map(init), Some(0));
        assert_eq!(ranges_of_map(init).count(), 0);
        let container = "         0     100000      65536\n";
        assert_eq!(root_of_map(container), Some(100_000));
        assert_eq!(
            ranges_of_map(container).collect::<Vec<_>>(),
            vec![(100_000, 165_536)]
        );
        // Root unmapped (a rootless runtime's map can start at 1).
        assert_eq!(root_of_map("1 200000 100\n"), None);
        assert_eq!(root_of_map(""), None);
        assert_eq!(
            parse_subids("alice:100000:65536\n#x\nbob:165536:65536\n"),
            vec![(100_000, 165_536), (165_536, 231_072)]
        );
    }

    #[test]
    fn each_container_gets_a_range_no_one_else_has() {
        assert_eq!(pick_root_id(&[]), Some(100_000));
        // The first range is a user's subuids, the second a running
        // container's: the third is free.
        let taken = [(100_000, 165_536), (170_000, 170_001)];
        assert_eq!(pick_root_id(&taken), Some(100_000 + 2 * 65_536));
        // Touching ranges do not overlap.
        assert_eq!(pick_root_id(&[(0, 100_000)]), Some(100_000));
        assert_eq!(pick_root_id(&[(0, 100_001)]), Some(165_536));
        assert_eq!(pick_root_id(&[(0, u64::from(u32::MAX))]), None);
    }

    #[test]
    fn paths_with_symlinks_are_refused_and_dirs_made_without_following() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let outside = base.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, base.join("link")).unwrap();
        let p = |s: &str| format!("{}/{s}", base.display());
        // Through a link: refused, nothing made on the other side.
        let e = parent_no_symlinks(&p("link/data/x"), true).unwrap_err();
        assert!(e.to_string().contains("'link' is a symbolic link"), "{e}");
        assert!(!outside.join("data").exists());
        // A plain path: the directories are made, the last one is not.
        let (parent, last) = parent_no_symlinks(&p("a/b/c"), true).unwrap().unwrap();
        assert_eq!(last, "c");
        assert!(base.join("a/b").is_dir() && !base.join("a/b/c").exists());
        // The last component: child_dir refuses a link there too.
        assert_eq!(
            child_dir(&parent, "c", true).map(drop),
            Ok(()),
            "a new directory"
        );
        std::os::unix::fs::symlink(&outside, base.join("a/b/l")).unwrap();
        assert!(matches!(
            child_dir(&parent, "l", false),
            Err(Errno::ENOTDIR | Errno::ELOOP)
        ));
        // Missing without create: None.
        assert!(parent_no_symlinks(&p("nope/x"), false).unwrap().is_none());
        assert!(parent_no_symlinks("relative/x", true).is_err());
        assert!(parent_no_symlinks(&p("a/../x"), true).is_err());
        assert!(parent_no_symlinks("/", true).is_err());
    }
}
