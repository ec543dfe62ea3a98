//! What an initiator call can fail with: the NVMe status the target
//! completed the command with ([`Status`], which the card can hand on to
//! its guest as is), a transport failure that ended the connection
//! ([`TransportError`]: every command in flight fails with it, and the
//! session is over), a target the initiator cannot use, or the caller's
//! own bad arguments.

use std::fmt;

use thiserror::Error;

use super::super::command::status;
use super::super::pdu::Fatal;

/// An NVMe status as a completion carries it: SCT << 8 | SC, with the
/// Do Not Retry (0x4000) and More (0x2000) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

/// Bits of the status code type and status code.
const CODE_MASK: u16 = 0x7ff;
/// The More bit.
const MORE: u16 = 0x2000;

impl Status {
    /// Status code type and status code (SCT << 8 | SC), without DNR/More.
    pub fn code(self) -> u16 {
        self.0 & CODE_MASK
    }

    /// Status Code Type.
    pub fn sct(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// Status Code.
    pub fn sc(self) -> u8 {
        self.0 as u8
    }

    /// Do Not Retry.
    pub fn dnr(self) -> bool {
        self.0 & status::DNR != 0
    }

    /// More (a log page has more).
    pub fn more(self) -> bool {
        self.0 & MORE != 0
    }

    /// Successful Completion.
    pub fn is_success(self) -> bool {
        self.code() == status::SUCCESS
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NVMe status {:#05x} (SCT {}, SC {:#04x}",
            self.0,
            self.sct(),
            self.sc()
        )?;
        if self.dnr() {
            f.write_str(", DNR")?;
        }
        f.write_str(")")
    }
}

/// Why a connection ended. Every command in flight on the session fails
/// with the first of these; the session is unusable after it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TransportError {
    /// The socket failed (connect, read or write).
    #[error("socket: {what}: {kind}")]
    Io {
        /// What the initiator was doing.
        what: &'static str,
        /// The error's kind.
        kind: std::io::ErrorKind,
    },
    /// The target closed the connection.
    #[error("the target closed the connection")]
    Closed,
    /// The target sent something the protocol does not allow (checked by
    /// the initiator; an H2CTermReq went out with these FES/FEI).
    #[error("protocol error: {0}")]
    Protocol(Fatal),
    /// The target ended the connection with a C2HTermReq.
    #[error("the target terminated the connection (FES {fes:#x}, FEI {fei:#x})")]
    Terminated {
        /// Fatal Error Status.
        fes: u16,
        /// Fatal Error Information.
        fei: u32,
    },
    /// A command did not complete within the command timeout.
    #[error("a command (opcode {opcode:#04x}) timed out")]
    Timeout {
        /// Its opcode (0x7f: a Fabrics command).
        opcode: u8,
    },
    /// The session was dropped or closed.
    #[error("the session is closed")]
    Ended,
}

impl From<Fatal> for TransportError {
    fn from(f: Fatal) -> Self {
        Self::Protocol(f)
    }
}

/// An initiator error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The target completed the command with this status.
    #[error("{0}")]
    Status(Status),
    /// The connection failed; the session is over (reconnect: a new one).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The target's answers do not let the initiator go on (ICResp values,
    /// a controller that fails to enable, an unusable namespace format).
    #[error("unusable target: {0}")]
    Unusable(&'static str),
    /// The caller's arguments (buffer not whole blocks, LBA overflow).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// The target's NVMe status, if the target completed the command.
    pub fn status(&self) -> Option<Status> {
        match self {
            Self::Status(s) => Some(*s),
            _ => None,
        }
    }

    /// The status the card completes its guest's command with: the
    /// target's own, Transient Transport Error (retryable) for a
    /// transport failure, Namespace Not Ready for an unusable target, and
    /// Invalid Field (DNR) for a request the initiator refused.
    pub fn host_status(&self) -> u16 {
        match self {
            Self::Status(s) => s.0,
            Self::Transport(_) => status::TRANSIENT_TRANSPORT,
            Self::Unusable(_) => status::NAMESPACE_NOT_READY,
            Self::Invalid(_) => status::INVALID_FIELD | status::DNR,
        }
    }
}

/// A command's result: success, or its status as an error.
pub(crate) fn check_status(s: u16) -> Result<(), Error> {
    let st = Status(s);
    if st.is_success() {
        Ok(())
    } else {
        Err(Error::Status(st))
    }
}
