//! Why pool operations fail: `StorageError` for what a namespace command
//! asks (each maps to one completion status, in `StorageError::status`), and
//! `OpenError` for devices that do not make a pool.

use std::path::{Path, PathBuf};

use dia_abi::card as abi;
use thiserror::Error;

use super::MAX_NAMESPACES;
use crate::guest_memory::MemoryError;

/// Why a pool operation failed. Each maps to one card status.
#[derive(Debug, Error)]
pub enum StorageError {
    /// No such namespace.
    #[error("namespace {0} does not exist")]
    NoNamespace(u32),
    /// I/O to a namespace that is not attached.
    #[error("namespace {0} is not attached")]
    NotReady(u32),
    /// Attach of an attached namespace.
    #[error("namespace {0} is already attached")]
    AlreadyAttached(u32),
    /// Detach of a detached namespace.
    #[error("namespace {0} is not attached")]
    NotAttached(u32),
    /// Delete of an attached namespace.
    #[error("namespace {0} is attached")]
    AttachedDelete(u32),
    /// Every namespace id is taken.
    #[error("all {MAX_NAMESPACES} namespace ids are in use")]
    NoFreeId,
    /// Unsupported block size.
    #[error("block size 2^{0} is not supported")]
    BadFormat(u8),
    /// A remote namespace's target that does not pass its checks.
    #[error("the remote namespace's target is not valid")]
    BadRemote,
    /// Zero or too large a size.
    #[error("namespace size {0} blocks is not allowed")]
    BadSize(u64),
    /// Blocks outside the namespace.
    #[error("blocks {slba}+{blocks} are outside the namespace")]
    OutOfRange {
        /// First block.
        slba: u64,
        /// Block count.
        blocks: u64,
    },
    /// No free chunk for a write.
    #[error("the pool is full")]
    PoolFull,
    /// The pool's data path asked to move a remote namespace's data, which
    /// is not in the pool.
    #[error("namespace {0} is remote: its data is not in the pool")]
    Remote(u32),
    /// A guest address outside guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The backing store failed.
    #[error("pool I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl StorageError {
    /// The completion status the card reports for this error.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoNamespace(_) => abi::STATUS_INVALID_NAMESPACE,
            Self::NotReady(_) => abi::STATUS_NAMESPACE_NOT_READY,
            Self::AlreadyAttached(_) => abi::STATUS_NS_ALREADY_ATTACHED,
            Self::NotAttached(_) => abi::STATUS_NS_NOT_ATTACHED,
            Self::AttachedDelete(_) => abi::STATUS_NS_ATTACHED_DELETE,
            Self::NoFreeId => abi::STATUS_NS_ID_UNAVAILABLE,
            Self::BadFormat(_) => abi::STATUS_INVALID_FORMAT,
            Self::BadSize(_) => abi::STATUS_NS_INSUFFICIENT_CAPACITY,
            Self::BadRemote => abi::STATUS_INVALID_FIELD,
            Self::OutOfRange { .. } => abi::STATUS_LBA_OUT_OF_RANGE,
            Self::PoolFull => abi::STATUS_CAPACITY_EXCEEDED,
            // Only the fabric target can ask (a host still connected to a
            // subsystem whose nsid a remote namespace reuses): not one the
            // pool serves.
            Self::Remote(_) => abi::STATUS_INVALID_NAMESPACE,
            Self::Memory(_) => abi::STATUS_DATA_TRANSFER_ERROR,
            Self::Io(_) => abi::STATUS_INTERNAL_ERROR,
        }
    }
}

/// Why a pool cannot be opened.
#[derive(Debug, Error)]
pub enum OpenError {
    /// A device could not be opened, sized or read.
    #[error("{path}: {source}")]
    Io {
        /// The device.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The devices do not make a valid pool.
    #[error("{0}")]
    Invalid(String),
}

pub(super) fn invalid(msg: String) -> OpenError {
    OpenError::Invalid(msg)
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpenError + '_ {
    move |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}
