//! diad's API socket and who may use it. The socket is root's alone: it is
//! bound under a temporary name, given mode 0600 and only then renamed into
//! place, so it never exists with the umask's mode; its directory is made
//! mode 0700 when diad creates it (or when it holds nothing but the
//! socket). Every accepted connection is checked by its peer credentials
//! (`SO_PEERCRED`): only root of the appliance is served, that is uid 0 in
//! diad's own (the initial) user namespace. A process in a container's user
//! namespace shows up with the unprivileged uid its root is mapped to (or the
//! overflow uid), so root inside a container is refused even if it reached
//! the socket. A refused peer gets a 403 with the API's usual
//! `{"error": "..."}` body, and the connection is closed.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tracing::{error, warn};

use crate::error::ApiError;

/// Mode of the API socket.
pub const SOCKET_MODE: u32 = 0o600;
/// Mode of the socket's directory.
pub const DIR_MODE: u32 = 0o700;

/// Who is at the other end of a connection, as diad sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its pid in diad's pid namespace, when the kernel knows one.
    pub pid: Option<i32>,
    /// Its uid in diad's user namespace (a container's root: the host uid
    /// it is mapped to; an unmapped uid: the overflow uid).
    pub uid: u32,
    /// Its gid, likewise.
    pub gid: u32,
    /// Whether it lives in diad's user namespace (`None`: unknown, e.g. it
    /// exited already).
    pub same_user_ns: Option<bool>,
}

/// Decides whether a peer is served: `Err` says why not.
pub type Policy = fn(&Peer) -> Result<(), String>;

/// The API's policy: only root of the appliance (uid 0 in diad's user
/// namespace, which is the initial one) is served.
pub fn root_only(peer: &Peer) -> Result<(), String> {
    if peer.uid != 0 {
        return Err(format!(
            "uid {} may not use the dia API: only root of the appliance may",
            peer.uid
        ));
    }
    match peer.same_user_ns {
        Some(true) => Ok(()),
        Some(false) => Err(
            "root of another user namespace may not use the dia API: only root of the appliance may"
                .into(),
        ),
        None => Err("cannot tell the caller's user namespace: only root of the appliance may use the dia API".into()),
    }
}

/// Whether process `pid` is in this process's user namespace.
fn same_user_ns(pid: Option<i32>) -> Option<bool> {
    let pid = pid.filter(|&p| p > 0)?;
    let ours = std::fs::read_link("/proc/self/ns/user").ok()?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()?;
    Some(ours == theirs)
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer {
        pid: cred.pid(),
        uid: cred.uid(),
        gid: cred.gid(),
        same_user_ns: same_user_ns(cred.pid()),
    })
}

/// Makes `dir` (the socket's directory) diad's own: created with mode 0700
/// when missing; an existing one is set to 0700 when it holds nothing but
/// the socket (`ours`: the names diad may have left there), and otherwise
/// left alone with a warning (the socket's own mode still keeps others out).
fn prepare_dir(dir: &Path, ours: &[OsString]) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("looking at {}", dir.display())),
        Ok(meta) if !meta.is_dir() => bail!("{} is not a directory", dir.display()),
        Ok(meta) if meta.permissions().mode() & 0o7777 == DIR_MODE => return Ok(()),
        Ok(_) => {
            let others = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok())
                .any(|e| !ours.contains(&e.file_name()));
            if others {
                warn!(
                    dir = %dir.display(),
                    "the API socket's directory holds other files: its mode is left as it is"
                );
                return Ok(());
            }
        }
    }
    // mkdir applies the umask: set the mode exactly.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("setting the mode of {}", dir.display()))
}

/// Binds the API socket at `socket` with mode 0600 whatever the umask (see
/// the module docs), replacing a socket a crashed diad left behind.
pub fn bind(socket: &Path) -> Result<UnixListener> {
    let name = socket
        .file_name()
        .with_context(|| format!("{} has no file name", socket.display()))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let dir = match socket.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    prepare_dir(&dir, &[name.to_owned(), tmp_name.clone()])?;
    let tmp = dir.join(&tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("binding {}", socket.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("setting the mode of {}", tmp.display()))
        .and_then(|()| {
            // Atomically replaces a stale socket; the new one appears with
            // its final mode.
            std::fs::rename(&tmp, socket)
                .with_context(|| format!("moving the socket to {}", socket.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// A listener that serves only the peers `policy` accepts; the others get
/// a 403 and are closed by a task of their own.
pub struct Guarded {
    inner: UnixListener,
    policy: Policy,
}

impl Guarded {
    /// Guards `inner` with `policy`.
    pub fn new(inner: UnixListener, policy: Policy) -> Self {
        Self { inner, policy }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // As axum's own listener: a full fd table clears up.
                    if !matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
                    ) {
                        error!("accepting an API connection: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            let verdict = match peer_of(&stream) {
                Ok(peer) => (self.policy)(&peer).inspect_err(|why| {
                    warn!(pid = ?peer.pid, uid = peer.uid, gid = peer.gid, "API connection refused: {why}");
                }),
                Err(e) => Err(format!("cannot read the caller's credentials: {e}")),
            };
            match verdict {
                Ok(()) => return (stream, addr),
                Err(why) => {
                    tokio::spawn(refuse(stream, why));
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// The 403 answer to a refused peer (bytes on the wire).
pub fn refusal(why: &str) -> Vec<u8> {
    let body = ApiError::forbidden(why).body().to_string();
    format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How many bytes a request whose first `got` bytes are `head` has in all
/// (head and body, per its `Content-Length`), once its head is complete.
pub fn request_len(got: &[u8]) -> Option<usize> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let body = String::from_utf8_lossy(&got[..end])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + body)
}

/// Reads the refused peer's request (so that its client is not cut off
/// while still writing; at most 64 KiB for 2 s), answers 403 and closes.
async fn refuse(mut stream: UnixStream, why: String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while got.len() < 64 << 10 && request_len(&got).is_none_or(|n| got.len() < n) {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = stream.write_all(&refusal(&why)).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    use super::*;

    fn peer(uid: u32, same_user_ns: Option<bool>) -> Peer {
        Peer {
            pid: Some(4242),
            uid,
            gid: uid,
            same_user_ns,
        }
    }

    #[test]
    fn only_root_of_the_appliance_is_served() {
        assert_eq!(root_only(&peer(0, Some(true))), Ok(()));
        // A container's root as diad sees it: its mapped host uid.
        let e = root_only(&peer(100_000, Some(false))).unwrap_err();
        assert!(e.contains("uid 100000 may not"), "{e}");
        // An unmapped uid: the overflow uid.
        assert!(root_only(&peer(65_534, Some(false))).is_err());
        // An ordinary user of the appliance.
        assert!(root_only(&peer(1000, Some(true))).is_err());
        // uid 0 but in a user namespace below diad's (mapped 0 -> 0).
        let e = root_only(&peer(0, Some(false))).unwrap_err();
        assert!(e.contains("another user namespace"), "{e}");
        assert!(root_only(&peer(0, None)).is_err());
    }

    #[test]
    fn this_process_is_in_its_own_user_namespace() {
        assert_eq!(same_user_ns(Some(std::process::id() as i32)), Some(true));
        assert_eq!(same_user_ns(None), None);
        assert_eq!(same_user_ns(Some(0)), None);
    }

    #[test]
    fn the_refusal_is_a_403_with_a_json_error() {
        let text = String::from_utf8(refusal("uid 7 may not")).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v, serde_json::json!({ "error": "uid 7 may not" }));
    }

    #[test]
    fn a_request_is_read_to_the_end_of_its_body() {
        assert_eq!(request_len(b"GET / HTTP/1.1\r\nHost: d"), None);
        assert_eq!(request_len(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        let post = b"POST /v1/x HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\n";
        assert_eq!(request_len(post), Some(post.len() + 5));
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[tokio::test]
    async fn the_socket_is_0600_in_a_0700_directory_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory diad creates (mkdir would give 0755 under umask 022).
        let socket = tmp.path().join("run/dia/diad.sock");
        let l = bind(&socket).unwrap();
        assert_eq!(mode(&socket), SOCKET_MODE);
        assert_eq!(mode(socket.parent().unwrap()), DIR_MODE);
        assert!(std::fs::metadata(&socket).unwrap().file_type().is_socket());
        // No temporary name is left behind.
        let names: Vec<_> = std::fs::read_dir(socket.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("diad.sock")]);
        drop(l);
        // A restart: the stale socket is replaced; an existing directory
        // holding only the socket is tightened to 0700.
        std::fs::set_permissions(
            socket.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let _l = bind(&socket).unwrap();
        assert_eq!(mode(&socket), SOCKET_MODE);
        assert_eq!(mode(socket.parent().unwrap()), DIR_MODE);
        // A shared directory keeps its mode; the socket is still 0600.
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(shared.join("other"), b"x").unwrap();
        let _l2 = bind(&shared.join("diad.sock")).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&shared.join("diad.sock")), SOCKET_MODE);
    }
}
