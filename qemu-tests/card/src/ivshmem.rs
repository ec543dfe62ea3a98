//! The ivshmem server QEMU's `ivshmem-doorbell` device connects to (QEMU
//! `docs/specs/ivshmem-spec.rst`). On connect the client receives, as
//! little-endian i64 messages: the protocol version (0), its own peer id,
//! -1 with the shared-memory fd (BAR2), then for every other peer its id once
//! per vector with an eventfd, then its own id once per vector with its own
//! eventfds. The card is peer 0 (the guest's doorbell writes reach the card's
//! eventfds); the guest is peer 1 (writing its eventfds raises its MSI-X).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use tracing::{info, warn};

/// Peer id of the card.
pub const CARD_PEER: i64 = 0;
/// Peer id given to the (single) guest.
pub const GUEST_PEER: i64 = 1;
const PROTOCOL_VERSION: i64 = 0;

/// The descriptors the server hands out.
pub struct Server {
    listener: UnixListener,
    shm: OwnedFd,
    card_vectors: Vec<OwnedFd>,
    guest_vectors: Vec<OwnedFd>,
}

fn send(stream: &UnixStream, value: i64, fd: Option<RawFd>) -> std::io::Result<()> {
    let bytes = value.to_le_bytes();
    let iov = [std::io::IoSlice::new(&bytes)];
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    let n = sendmsg::<()>(stream.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)?;
    if n != bytes.len() {
        return Err(std::io::Error::other("short ivshmem message"));
    }
    Ok(())
}

impl Server {
    /// Listens on `path` (replacing a stale socket).
    pub fn bind(
        path: &Path,
        shm: OwnedFd,
        card_vectors: Vec<OwnedFd>,
        guest_vectors: Vec<OwnedFd>,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Self {
            listener: UnixListener::bind(path)?,
            shm,
            card_vectors,
            guest_vectors,
        })
    }

    fn introduce(&self, stream: &UnixStream) -> std::io::Result<()> {
        send(stream, PROTOCOL_VERSION, None)?;
        send(stream, GUEST_PEER, None)?;
        send(stream, -1, Some(self.shm.as_raw_fd()))?;
        for fd in &self.card_vectors {
            send(stream, CARD_PEER, Some(fd.as_raw_fd()))?;
        }
        for fd in &self.guest_vectors {
            send(stream, GUEST_PEER, Some(fd.as_raw_fd()))?;
        }
        Ok(())
    }

    /// Serves clients one at a time, forever: a second concurrent client is
    /// refused (the card has one PCI function).
    pub fn serve(self) {
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    warn!("ivshmem accept failed: {e}");
                    continue;
                }
            };
            if busy.swap(true, std::sync::atomic::Ordering::AcqRel) {
                warn!("a second ivshmem client connected; the card serves one guest, closing it");
                continue;
            }
            if let Err(e) = self.introduce(&stream) {
                warn!("ivshmem handshake failed: {e}");
                busy.store(false, std::sync::atomic::Ordering::Release);
                continue;
            }
            info!("guest connected as ivshmem peer {GUEST_PEER}");
            let busy = busy.clone();
            std::thread::spawn(move || {
                // QEMU never sends anything; EOF means it went away.
                let mut buf = [0u8; 64];
                let mut s = stream;
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                info!("guest disconnected");
                busy.store(false, std::sync::atomic::Ordering::Release);
            });
        }
    }
}
