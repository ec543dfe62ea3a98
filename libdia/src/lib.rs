//! libdia: the userspace side of the `/dev/dia` ioctl ABI. The request
//! numbers and argument structs come from `dia_abi::ioctl` (the one
//! definition, shared with the kernel module); this crate wraps them in typed
//! calls (with nix's ioctl macros) and errors that say what went wrong in a
//! user's terms.

mod error;
mod identity;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use dia_abi::ioctl::{DiaIdentity, DIA_IOC_IDENTIFY};

pub use error::Error;
pub use identity::Identity;

/// Where the first card's control node lives.
pub const DEFAULT_DEVICE: &str = "/dev/dia";

mod sys {
    use dia_abi::ioctl::{DiaIdentity, DIA_IOC_IDENTIFY};
    nix::ioctl_read_bad!(identify, DIA_IOC_IDENTIFY, DiaIdentity);
}

/// An open card control node.
#[derive(Debug)]
pub struct Card {
    file: File,
    path: PathBuf,
}

impl Card {
    /// Opens the card's control node (e.g. `/dev/dia`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| Error::open(&path, source))?;
        Ok(Self { file, path })
    }

    /// The path this card was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Asks the card for its identity (the driver issues Identify afresh).
    pub fn identify(&self) -> Result<Identity, Error> {
        let mut raw = DiaIdentity::default();
        // SAFETY: `raw` is a valid, writable `DiaIdentity`, the exact type the
        // request number encodes; the fd is open for the call's duration.
        unsafe { sys::identify(self.file.as_raw_fd(), &mut raw) }
            .map_err(|e| Error::ioctl("DIA_IOC_IDENTIFY", DIA_IOC_IDENTIFY, e))?;
        Ok(Identity::from(&raw))
    }
}
