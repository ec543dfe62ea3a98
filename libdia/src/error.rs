//! libdia's errors: each says what failed and what to check, and keeps the
//! errno for programs that need it.

use std::path::Path;

use nix::errno::Errno;
use thiserror::Error;

/// Something a card call could not do.
#[derive(Debug, Error)]
pub enum Error {
    /// The control node does not exist.
    #[error("{path} not found: is the dia module loaded and the card bound?")]
    NoDevice {
        /// The path tried.
        path: String,
    },
    /// Opening the node was refused.
    #[error("{path}: permission denied (the dia control node is root-only)")]
    PermissionDenied {
        /// The path tried.
        path: String,
    },
    /// Any other open failure.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The path tried.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The card did not answer in time.
    #[error("the card did not answer {request} within the driver's admin timeout (ETIMEDOUT): is the card alive?")]
    Timeout {
        /// The ioctl.
        request: &'static str,
    },
    /// The card answered with an error or is in a failed state.
    #[error("the card failed {request} (EIO): see the kernel log (dmesg) for the card's status")]
    CardError {
        /// The ioctl.
        request: &'static str,
    },
    /// The card was removed.
    #[error("the card went away during {request} (ENODEV)")]
    Gone {
        /// The ioctl.
        request: &'static str,
    },
    /// The driver does not know the request (module and library disagree).
    #[error("the driver does not know {request} (ENOTTY, number {number:#x}): are dia.ko and libdia from the same version?")]
    Unsupported {
        /// The ioctl.
        request: &'static str,
        /// Its number.
        number: u32,
    },
    /// The card cannot guarantee the QoS floors asked for.
    #[error("the card cannot guarantee these floors: they exceed its capacity by {excess_iops} I/Os per second (EDQUOT)")]
    OverCapacity {
        /// I/Os per second over capacity (0: only bandwidth is over).
        excess_iops: u32,
    },
    /// Any other errno.
    #[error("{request} failed: {errno}")]
    Ioctl {
        /// The ioctl.
        request: &'static str,
        /// The errno.
        errno: Errno,
    },
}

impl Error {
    pub(crate) fn open(path: &Path, source: std::io::Error) -> Self {
        let path = path.display().to_string();
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::NoDevice { path },
            std::io::ErrorKind::PermissionDenied => Error::PermissionDenied { path },
            _ => Error::Open { path, source },
        }
    }

    pub(crate) fn ioctl(request: &'static str, number: u32, errno: Errno) -> Self {
        match errno {
            Errno::ETIMEDOUT => Error::Timeout { request },
            Errno::EIO => Error::CardError { request },
            Errno::ENODEV => Error::Gone { request },
            Errno::ENOTTY => Error::Unsupported { request, number },
            errno => Error::Ioctl { request, errno },
        }
    }

    /// The errno behind the error, if it came from the kernel.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::NoDevice { .. } => Some(Errno::ENOENT),
            Error::PermissionDenied { .. } => Some(Errno::EACCES),
            Error::Open { source, .. } => source.raw_os_error().map(Errno::from_raw),
            Error::Timeout { .. } => Some(Errno::ETIMEDOUT),
            Error::CardError { .. } => Some(Errno::EIO),
            Error::Gone { .. } => Some(Errno::ENODEV),
            Error::Unsupported { .. } => Some(Errno::ENOTTY),
            Error::Ioctl { errno, .. } => Some(*errno),
            Error::OverCapacity { .. } => Some(Errno::EDQUOT),
        }
    }

    /// Whether the card itself (not the caller) is at fault: timeouts, card
    /// errors, removal.
    pub fn is_card_failure(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::CardError { .. } | Error::Gone { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_user_messages() {
        let e = Error::ioctl("DIA_IOC_IDENTIFY", 1, Errno::ETIMEDOUT);
        assert!(e.to_string().contains("did not answer"), "{e}");
        assert!(e.is_card_failure());
        let e = Error::ioctl("X", 0x44ee, Errno::ENOTTY);
        assert!(e.to_string().contains("0x44ee"), "{e}");
        assert!(!e.is_card_failure());
        let e = Error::open(
            Path::new("/nope"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(e.to_string().contains("is the dia module loaded"), "{e}");
        assert_eq!(e.errno(), Some(Errno::ENOENT));
    }
}
