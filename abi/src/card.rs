//! The dia card interface, version 1: register layout in BAR2 and the admin
//! queue command set. This file is the single definition of that contract; it
//! is dependency-free (`core` only) so the kernel module includes it with
//! `#[path]` and the card model and userspace use it through the `dia-abi`
//! crate. Every multi-byte field is little-endian. See `docs/card-interface.md`.

/// PCI vendor id of the function that carries the card (QEMU's ivshmem).
pub const PCI_VENDOR_ID: u16 = 0x1af4;
/// PCI device id of the function that carries the card (ivshmem).
pub const PCI_DEVICE_ID: u16 = 0x1110;

/// Signature at [`REG_MAGIC`]: ASCII `DIACARD1`, read as a little-endian u64.
pub const CARD_MAGIC: u64 = u64::from_le_bytes(*b"DIACARD1");
/// Interface version: major in bits 31:16, minor in bits 15:0.
pub const INTERFACE_VERSION: u32 = 1 << 16 | INTERFACE_MINOR_PORT_TSO;
/// Major version a driver must match exactly.
pub const fn version_major(vs: u32) -> u16 {
    (vs >> 16) as u16
}

/// Minimum size of BAR2 (the ivshmem shared memory) a card offers.
pub const BAR2_MIN_SIZE: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Registers in BAR2. Writes by the driver are plain memory writes; the driver
// rings [`DOORBELL_VECTOR_ADMIN`] after changing CC so the card looks at once
// (the card also re-reads CC every [`CARD_POLL_MS`] as a fallback).
// ---------------------------------------------------------------------------

/// u64, RO: [`CARD_MAGIC`].
pub const REG_MAGIC: usize = 0x000;
/// u32, RO: interface version ([`INTERFACE_VERSION`]).
pub const REG_VS: usize = 0x008;
/// u32, RO: firmware status, one of `FW_STATUS_*`.
pub const REG_FW_STATUS: usize = 0x00c;
/// u64, RO: capabilities, see `CAP_*`.
pub const REG_CAP: usize = 0x010;
/// u32, RW: controller configuration, see `CC_*`.
pub const REG_CC: usize = 0x018;
/// u32, RO: controller status, see `CSTS_*`.
pub const REG_CSTS: usize = 0x01c;
/// u32, RW: admin queue attributes: SQ size - 1 in bits 11:0, CQ size - 1 in bits 27:16.
pub const REG_AQA: usize = 0x020;
/// Every queue and ring the driver places in guest memory (admin and I/O
/// queues, port rings) starts on a multiple of this.
pub const QUEUE_ALIGN_BYTES: u64 = 4096;

/// The [`REG_AQA`] register: the admin queues' sizes, each stored as
/// entries - 1 in 12 bits (SQ in bits 11:0, CQ in bits 27:16).
///
/// ```
/// use dia_abi::card::AdminQueueAttributes;
///
/// let aqa = AdminQueueAttributes { sq_entries: 32, cq_entries: 64 };
/// assert_eq!(aqa.reg(), 31 | 63 << 16);
/// assert_eq!(AdminQueueAttributes::from_reg(aqa.reg()), aqa);
/// // Bits outside the two fields are ignored.
/// assert_eq!(AdminQueueAttributes::from_reg(0xf000_f000).sq_entries, 1);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminQueueAttributes {
    /// Entries of the admin submission queue (1..=4096).
    pub sq_entries: u16,
    /// Entries of the admin completion queue (1..=4096).
    pub cq_entries: u16,
}

impl AdminQueueAttributes {
    /// Encodes the register (each size must be 1..=4096).
    pub const fn reg(self) -> u32 {
        (self.sq_entries as u32 - 1) & 0xfff | ((self.cq_entries as u32 - 1) & 0xfff) << 16
    }

    /// Decodes the register.
    pub const fn from_reg(reg: u32) -> Self {
        Self {
            sq_entries: (reg & 0xfff) as u16 + 1,
            cq_entries: ((reg >> 16) & 0xfff) as u16 + 1,
        }
    }
}

/// u64, RW: guest-physical address of the admin submission queue
/// ([`QUEUE_ALIGN_BYTES`] aligned).
pub const REG_ASQ: usize = 0x028;
/// u64, RW: guest-physical address of the admin completion queue
/// ([`QUEUE_ALIGN_BYTES`] aligned).
pub const REG_ACQ: usize = 0x030;
/// u64, RO: incremented by the firmware at least every [`HEARTBEAT_MS`] while it runs.
pub const REG_HEARTBEAT: usize = 0x038;
/// u32, RO: ivshmem peer id the card listens on (doorbells go to this peer).
pub const REG_CARD_PEER: usize = 0x040;
/// u32, RO: number of doorbell/interrupt vectors (admin + I/O queues).
pub const REG_VECTORS: usize = 0x044;
/// u64, RO (interface 1.3): a value the firmware picks anew, never 0, each
/// time it starts. A driver that finds it changed across a reset knows the
/// firmware restarted and its volatile write cache is gone.
pub const REG_FW_BOOT_ID: usize = 0x048;

/// Start of the doorbell array: queue `q` has its SQ tail at
/// `DOORBELL_BASE + 8 * q` and its CQ head at `DOORBELL_BASE + 8 * q + 4`
/// (u32 each). Queue 0 is the admin queue.
pub const DOORBELL_BASE: usize = 0x1000;
/// Offset of the SQ tail doorbell of queue `qid`.
pub const fn sq_tail_doorbell(qid: u16) -> usize {
    DOORBELL_BASE + 8 * qid as usize
}
/// Offset of the CQ head doorbell of queue `qid`.
pub const fn cq_head_doorbell(qid: u16) -> usize {
    DOORBELL_BASE + 8 * qid as usize + 4
}

/// ivshmem doorbell vector that wakes the card for the admin queue and CC changes.
/// I/O queue `q` uses vector `q`. Interrupts to the driver use the same numbering.
pub const DOORBELL_VECTOR_ADMIN: u16 = 0;

/// The firmware is not running (BAR2 fresh, or the card is booting).
pub const FW_STATUS_OFF: u32 = 0;
/// The firmware runs and serves registers and doorbells.
pub const FW_STATUS_RUNNING: u32 = 0x5255_4e21; // "RUN!"
/// The firmware stopped after a fatal error; a reset (CC.EN 0 -> 1) may revive it.
pub const FW_STATUS_FAILED: u32 = 0xdead_0001;

/// Firmware heartbeat period upper bound.
pub const HEARTBEAT_MS: u32 = 100;
/// Card's fallback register poll period.
pub const CARD_POLL_MS: u32 = 20;

/// CAP bits 15:0: maximum entries per queue minus one (MQES).
pub const fn cap_mqes(cap: u64) -> u16 {
    cap as u16
}
/// CAP bits 31:16: maximum number of I/O queue pairs.
pub const fn cap_max_io_queues(cap: u64) -> u16 {
    (cap >> 16) as u16
}
/// CAP bits 39:32: worst-case time for CSTS.RDY to follow CC.EN, in 500 ms units.
pub const fn cap_timeout_500ms(cap: u64) -> u8 {
    (cap >> 32) as u8
}
/// The card's CAP.TO, in 500 ms units (10 s): a reset (CC.EN 1 -> 0) is
/// confirmed (CSTS.RDY 0) only once no command of any I/O queue runs or will
/// touch guest memory again, and a command may sit in a pool sync for
/// seconds; a driver waits this long before it counts the card as dead.
pub const CAP_TIMEOUT_500MS: u8 = 20;
/// How long the card waits for running commands to finish during a reset
/// before it confirms it anyway (below CAP.TO, so the driver's wait covers it).
pub const CARD_QUIESCE_MS: u32 = CAP_TIMEOUT_500MS as u32 * 500 - 2000;
/// Builds a CAP value.
pub const fn make_cap(mqes: u16, max_io_queues: u16, timeout_500ms: u8) -> u64 {
    mqes as u64 | (max_io_queues as u64) << 16 | (timeout_500ms as u64) << 32
}

/// CC.EN: enable the controller. 1 -> 0 resets it (all I/O queues deleted).
pub const CC_EN: u32 = 1 << 0;
/// CC.SHN (bits 15:14) = 01: normal shutdown notification.
pub const CC_SHN_NORMAL: u32 = 1 << 14;
/// CSTS.RDY: the controller follows CC.EN.
pub const CSTS_RDY: u32 = 1 << 0;
/// CSTS.CFS: controller fatal status; the driver must reset.
pub const CSTS_CFS: u32 = 1 << 1;
/// CSTS.SHST (bits 3:2) = 10: shutdown complete.
pub const CSTS_SHST_COMPLETE: u32 = 2 << 2;

/// Largest admin queue the card accepts (entries).
pub const ADMIN_QUEUE_MAX_ENTRIES: u32 = 4096;

// ---------------------------------------------------------------------------
// Queue entries (NVMe-shaped).
// ---------------------------------------------------------------------------

/// Bytes of a memory page as PRP entries describe memory (NVMe's memory page
/// size, fixed here). PRP1 may start anywhere in its page (dword aligned);
/// every later entry is page aligned and covers at most one page; a PRP list
/// is one page of [`PRP_LIST_ENTRIES`] entries whose last chains to the next
/// list page when more follow.
pub const PRP_PAGE_BYTES: u64 = 4096;
/// Entries (u64 addresses) of one PRP list page.
pub const PRP_LIST_ENTRIES: usize = (PRP_PAGE_BYTES / 8) as usize;

/// A 64-byte submission queue entry, laid out like NVMe's common command.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmissionEntry {
    /// Command opcode.
    pub opcode: u8,
    /// Fused operation and PRP/SGL selection; must be 0 (PRPs, not fused).
    pub flags: u8,
    /// Command identifier, echoed in the completion.
    pub cid: u16,
    /// Namespace id (0 when the command does not address a namespace).
    pub nsid: u32,
    /// Reserved (CDW2, CDW3).
    pub rsvd2: u64,
    /// Metadata pointer; unused, must be 0.
    pub mptr: u64,
    /// PRP entry 1: guest-physical address of the first data page.
    pub prp1: u64,
    /// PRP entry 2: second page, or the address of a PRP list.
    pub prp2: u64,
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

/// A 16-byte completion queue entry, laid out like NVMe's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompletionEntry {
    /// Command-specific result (DW0).
    pub result: u32,
    /// Reserved (DW1).
    pub rsvd: u32,
    /// Submission queue head pointer after this command was consumed.
    pub sq_head: u16,
    /// Submission queue the command came from.
    pub sq_id: u16,
    /// Command identifier from the submission entry.
    pub cid: u16,
    /// Bit 0: phase tag. Bits 8:1: status code. Bits 11:9: status code type.
    pub status: u16,
}

/// Size of a submission entry in bytes.
pub const SQE_SIZE: usize = 64;
/// Size of a completion entry in bytes.
pub const CQE_SIZE: usize = 16;
const _: () = assert!(core::mem::size_of::<SubmissionEntry>() == SQE_SIZE);
const _: () = assert!(core::mem::size_of::<CompletionEntry>() == CQE_SIZE);
/// Byte offset of `status` (with the phase tag) in a completion entry. The
/// card writes this word last, after the rest of the entry; a driver reads
/// it first and reads the rest only after a read barrier, or it may pair a
/// new phase with a stale command identifier.
pub const CQE_STATUS_OFFSET: usize = 14;
const _: () = assert!(core::mem::offset_of!(CompletionEntry, status) == CQE_STATUS_OFFSET);

impl CompletionEntry {
    /// The phase tag.
    pub const fn phase(&self) -> bool {
        self.status & 1 != 0
    }
    /// Status without the phase tag: `(sct << 8) | sc`; 0 means success.
    pub const fn status_code(&self) -> u16 {
        (self.status >> 1) & 0x7ff
    }
}

/// Builds the `status` field of a completion from a status (`STATUS_*`) and phase.
pub const fn make_status(status: u16, phase: bool) -> u16 {
    (status & 0x7ff) << 1 | phase as u16
}

// Status values: (status code type << 8) | status code, as NVMe.
/// Successful completion.
pub const STATUS_SUCCESS: u16 = 0x000;
/// Invalid command opcode.
pub const STATUS_INVALID_OPCODE: u16 = 0x001;
/// Invalid field in command.
pub const STATUS_INVALID_FIELD: u16 = 0x002;
/// Data transfer error (a PRP pointed outside guest memory).
pub const STATUS_DATA_TRANSFER_ERROR: u16 = 0x004;
/// Internal error in the card.
pub const STATUS_INTERNAL_ERROR: u16 = 0x006;
/// Command abort requested: the command was aborted by an Abort command.
pub const STATUS_ABORT_REQUESTED: u16 = 0x007;
/// Invalid namespace or format.
pub const STATUS_INVALID_NAMESPACE: u16 = 0x00b;
/// PRP offset invalid (not dword aligned, or a list entry with an offset).
pub const STATUS_INVALID_PRP_OFFSET: u16 = 0x013;
/// Command specific: completion queue invalid.
pub const STATUS_INVALID_CQ: u16 = 0x100;
/// Command specific: invalid queue identifier.
pub const STATUS_INVALID_QID: u16 = 0x101;
/// Command specific: invalid queue size.
pub const STATUS_INVALID_QUEUE_SIZE: u16 = 0x102;
/// Command specific: invalid interrupt vector.
pub const STATUS_INVALID_VECTOR: u16 = 0x108;
/// Command specific: invalid queue deletion (a CQ still used by an SQ).
pub const STATUS_INVALID_QUEUE_DELETION: u16 = 0x10c;

// ---------------------------------------------------------------------------
// Admin command set.
// ---------------------------------------------------------------------------

/// Delete I/O submission queue: CDW10 [`DeleteQueue`] (bits 15:0 queue id).
pub const ADMIN_DELETE_IO_SQ: u8 = 0x00;
/// Create I/O submission queue: PRP1 its base, CDW10 [`NewQueue`] (qid |
/// (entries - 1) << 16), CDW11 [`SqOptions`] (bit 0 contiguous | cqid << 16).
pub const ADMIN_CREATE_IO_SQ: u8 = 0x01;
/// Delete I/O completion queue: CDW10 [`DeleteQueue`] (bits 15:0 queue id).
pub const ADMIN_DELETE_IO_CQ: u8 = 0x04;
/// Create I/O completion queue: PRP1 its base, CDW10 [`NewQueue`] (qid |
/// (entries - 1) << 16), CDW11 [`CqOptions`] (bit 0 contiguous, bit 1
/// interrupts enabled, vector << 16).
pub const ADMIN_CREATE_IO_CQ: u8 = 0x05;
/// Identify: CDW10 [`IdentifyCns`] (bits 7:0 select the structure,
/// `CNS_*`); PRP1 points at a 4 KiB buffer.
pub const ADMIN_IDENTIFY: u8 = 0x06;
/// Abort (NVMe): CDW10 names the command, [`AbortTarget`]; CDW11
/// [`AbortOptions`] (bit 0 [`ABORT_KEEP_QUEUED`]). Result (completion dword
/// 0), [`AbortResult`]: bit 0 [`ABORT_RESULT_NOT_ABORTED`], bit 1
/// [`ABORT_RESULT_QUEUED`]. An aborted command completes on its own queue
/// with [`STATUS_ABORT_REQUESTED`].
pub const ADMIN_ABORT: u8 = 0x08;
/// Abort CDW11 (vendor): a command waiting in the card's QoS scheduler (held
/// on purpose by a ceiling, or queued behind the media's rate) is not
/// aborted; the result says it waits there. A driver whose I/O timer fired
/// asks this way first: a held command is not a hung card.
pub const ABORT_KEEP_QUEUED: u32 = 1 << 0;
/// Abort result bit 0 (NVMe): set when the command was not aborted (it was
/// not found waiting: it runs, has completed, or never reached the card).
pub const ABORT_RESULT_NOT_ABORTED: u32 = 1 << 0;
/// Abort result bit 1 (vendor): the command waits in the QoS scheduler.
pub const ABORT_RESULT_QUEUED: u32 = 1 << 1;

/// The command an Abort names: CDW10 bits 15:0 the submission queue id,
/// bits 31:16 the command identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortTarget {
    /// Submission queue of the command (0 is the admin queue).
    pub sqid: u16,
    /// Its command identifier.
    pub cid: u16,
}

impl AbortTarget {
    /// CDW10 of an Abort naming this command.
    pub const fn cdw10(self) -> u32 {
        self.sqid as u32 | (self.cid as u32) << 16
    }

    /// The command CDW10 names.
    pub const fn from_cdw10(cdw10: u32) -> Self {
        Self {
            sqid: cdw10 as u16,
            cid: (cdw10 >> 16) as u16,
        }
    }
}

/// CDW11 of Abort: what the driver asks for. Every bit but bit 0 is
/// reserved and refused (unlike most words, whose unknown bits are ignored):
/// a driver that sets one means something this card does not do.
///
/// ```
/// use dia_abi::card::{AbortOptions, CommandWordError, ABORT_KEEP_QUEUED};
///
/// let query = AbortOptions { keep_queued: true };
/// assert_eq!(query.cdw11(), ABORT_KEEP_QUEUED);
/// assert_eq!(AbortOptions::from_cdw11(ABORT_KEEP_QUEUED), Ok(query));
/// assert_eq!(AbortOptions::from_cdw11(0), Ok(AbortOptions::default()));
/// assert_eq!(
///     AbortOptions::from_cdw11(1 << 5),
///     Err(CommandWordError::AbortReserved(1 << 5))
/// );
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbortOptions {
    /// Bit 0, [`ABORT_KEEP_QUEUED`]: only ask whether the command waits in
    /// the QoS scheduler; do not abort it.
    pub keep_queued: bool,
}

impl AbortOptions {
    /// Encodes the word.
    pub const fn cdw11(self) -> u32 {
        if self.keep_queued {
            ABORT_KEEP_QUEUED
        } else {
            0
        }
    }

    /// Decodes the word; a reserved bit set is refused.
    pub const fn from_cdw11(cdw11: u32) -> Result<Self, CommandWordError> {
        if cdw11 & !ABORT_KEEP_QUEUED != 0 {
            return Err(CommandWordError::AbortReserved(cdw11));
        }
        Ok(Self {
            keep_queued: cdw11 & ABORT_KEEP_QUEUED != 0,
        })
    }
}

/// Completion dword 0 of Abort: what became of the command.
///
/// ```
/// use dia_abi::card::{AbortResult, ABORT_RESULT_NOT_ABORTED, ABORT_RESULT_QUEUED};
///
/// let waits = AbortResult { aborted: false, queued: true };
/// assert_eq!(waits.dw0(), ABORT_RESULT_NOT_ABORTED | ABORT_RESULT_QUEUED);
/// assert_eq!(AbortResult::from_dw0(waits.dw0()), waits);
/// assert_eq!(AbortResult::from_dw0(0), AbortResult { aborted: true, queued: false });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortResult {
    /// Bit 0 clear ([`ABORT_RESULT_NOT_ABORTED`] is set when it was not):
    /// the command was taken out and completes with
    /// [`STATUS_ABORT_REQUESTED`] on its own queue.
    pub aborted: bool,
    /// Bit 1, [`ABORT_RESULT_QUEUED`]: the command waits in the QoS
    /// scheduler (answered to [`AbortOptions::keep_queued`]).
    pub queued: bool,
}

impl AbortResult {
    /// Encodes the dword.
    pub const fn dw0(self) -> u32 {
        let not_aborted = if self.aborted {
            0
        } else {
            ABORT_RESULT_NOT_ABORTED
        };
        let queued = if self.queued { ABORT_RESULT_QUEUED } else { 0 };
        not_aborted | queued
    }

    /// Decodes the dword; other bits are ignored.
    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            aborted: dw0 & ABORT_RESULT_NOT_ABORTED == 0,
            queued: dw0 & ABORT_RESULT_QUEUED != 0,
        }
    }
}

// ---------------------------------------------------------------------------
// Command words. Each command dword with fields is a small typed value:
// `cdw10()`/`cdw11()`/`cdw12()` encode it (the driver), `from_cdw10()`... decode
// it (the card), returning an error where a field can hold a value the card
// refuses. Bits a decoder does not mention are ignored, as the card always
// did. "0's based" fields (NVMe's term: the wire holds the count minus one)
// are counts in the typed value, 1..=2^width; a count outside that range has
// no encoding and keeps only its low bits.
// ---------------------------------------------------------------------------

/// Why the card refuses a command word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandWordError {
    /// CDW11 bit 0 (physically contiguous) of Create I/O CQ/SQ is clear:
    /// the card only has physically contiguous queues.
    NotContiguous,
    /// An Identify CNS the card does not have.
    Cns(u8),
    /// A log page id the card does not have.
    LogId(u8),
    /// A Namespace Management or Attachment select (CDW10 bits 3:0) that
    /// is not defined.
    Select(u8),
    /// A port id above 16 bits (the whole CDW10 of the port commands is the id).
    PortId(u32),
    /// An Abort CDW11 with a reserved bit (any but [`ABORT_KEEP_QUEUED`]) set.
    AbortReserved(u32),
}

impl CommandWordError {
    /// The completion status the card answers: [`STATUS_INVALID_PORT`] for
    /// a port id, [`STATUS_INVALID_FIELD`] for the rest.
    pub const fn status(self) -> u16 {
        match self {
            Self::PortId(_) => STATUS_INVALID_PORT,
            _ => STATUS_INVALID_FIELD,
        }
    }
}

/// CDW11 bit 0 of Create I/O CQ and SQ: the queue is physically contiguous.
const QUEUE_CONTIGUOUS: u32 = 1 << 0;
/// CDW11 bit 1 of Create I/O CQ: interrupts enabled.
const CQ_INTERRUPTS: u32 = 1 << 1;

/// CDW10 of Create I/O CQ and Create I/O SQ: the queue made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewQueue {
    /// Bits 15:0: the queue id (1..=`max_io_queues`; 0 is the admin queue).
    pub qid: u16,
    /// Bits 31:16, 0's based: entries, 1..=65536 (the card takes
    /// 2..=its maximum).
    pub entries: u32,
}

impl NewQueue {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.qid as u32 | (self.entries.wrapping_sub(1) & 0xffff) << 16
    }

    /// Decodes the word.
    pub const fn from_cdw10(cdw10: u32) -> Self {
        Self {
            qid: cdw10 as u16,
            entries: (cdw10 >> 16) + 1,
        }
    }
}

/// CDW11 of Create I/O CQ. Bit 0 (physically contiguous) is always set:
/// the card has no other kind of queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CqOptions {
    /// Bit 1: the card raises `vector` when it posts a completion.
    pub interrupts: bool,
    /// Bits 31:16: the MSI-X vector (below `REG_VECTORS`, not a port's).
    pub vector: u16,
}

impl CqOptions {
    /// Encodes the word.
    pub const fn cdw11(self) -> u32 {
        QUEUE_CONTIGUOUS
            | if self.interrupts { CQ_INTERRUPTS } else { 0 }
            | (self.vector as u32) << 16
    }

    /// Decodes the word; a queue that is not physically contiguous is refused.
    pub const fn from_cdw11(cdw11: u32) -> Result<Self, CommandWordError> {
        if cdw11 & QUEUE_CONTIGUOUS == 0 {
            return Err(CommandWordError::NotContiguous);
        }
        Ok(Self {
            interrupts: cdw11 & CQ_INTERRUPTS != 0,
            vector: (cdw11 >> 16) as u16,
        })
    }
}

/// CDW11 of Create I/O SQ. Bit 0 (physically contiguous) is always set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SqOptions {
    /// Bits 31:16: the completion queue the SQ's commands complete on
    /// (created before it).
    pub cqid: u16,
}

impl SqOptions {
    /// Encodes the word.
    pub const fn cdw11(self) -> u32 {
        QUEUE_CONTIGUOUS | (self.cqid as u32) << 16
    }

    /// Decodes the word; a queue that is not physically contiguous is refused.
    pub const fn from_cdw11(cdw11: u32) -> Result<Self, CommandWordError> {
        if cdw11 & QUEUE_CONTIGUOUS == 0 {
            return Err(CommandWordError::NotContiguous);
        }
        Ok(Self {
            cqid: (cdw11 >> 16) as u16,
        })
    }
}

/// CDW10 of Delete I/O SQ and Delete I/O CQ: the queue deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteQueue {
    /// Bits 15:0: the queue id.
    pub qid: u16,
}

impl DeleteQueue {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.qid as u32
    }

    /// Decodes the word.
    pub const fn from_cdw10(cdw10: u32) -> Self {
        Self { qid: cdw10 as u16 }
    }
}

/// Identify CNS: the namespace structure for SQE.nsid, [`IdentifyNamespace`].
pub const CNS_NAMESPACE: u8 = 0x00;
/// Identify CNS: the controller (card) structure, [`IdentifyController`].
pub const CNS_CONTROLLER: u8 = 0x01;
/// Identify CNS: attached namespace ids greater than SQE.nsid, ascending,
/// as u32s in a 4 KiB buffer (at most 1024), zero-terminated.
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;
/// Identify CNS: like [`CNS_ACTIVE_NS_LIST`] but every allocated namespace.
pub const CNS_ALLOCATED_NS_LIST: u8 = 0x10;

/// CDW10 of Identify: bits 7:0, the structure asked for (CNS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifyCns {
    /// [`CNS_NAMESPACE`].
    Namespace,
    /// [`CNS_CONTROLLER`].
    Controller,
    /// [`CNS_ACTIVE_NS_LIST`].
    ActiveNsList,
    /// [`CNS_ALLOCATED_NS_LIST`].
    AllocatedNsList,
}

impl IdentifyCns {
    /// The CNS value.
    pub const fn cns(self) -> u8 {
        match self {
            Self::Namespace => CNS_NAMESPACE,
            Self::Controller => CNS_CONTROLLER,
            Self::ActiveNsList => CNS_ACTIVE_NS_LIST,
            Self::AllocatedNsList => CNS_ALLOCATED_NS_LIST,
        }
    }

    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.cns() as u32
    }

    /// Decodes the word; a CNS the card does not have is refused.
    pub const fn from_cdw10(cdw10: u32) -> Result<Self, CommandWordError> {
        match cdw10 as u8 {
            CNS_NAMESPACE => Ok(Self::Namespace),
            CNS_CONTROLLER => Ok(Self::Controller),
            CNS_ACTIVE_NS_LIST => Ok(Self::ActiveNsList),
            CNS_ALLOCATED_NS_LIST => Ok(Self::AllocatedNsList),
            other => Err(CommandWordError::Cns(other)),
        }
    }
}

/// Size of every Identify data structure.
pub const IDENTIFY_SIZE: usize = 4096;

/// Capability bit: storage (namespaces) is implemented.
pub const CARD_CAP_STORAGE: u64 = 1 << 0;
/// Capability bit: network ports are implemented.
pub const CARD_CAP_NETWORK: u64 = 1 << 1;
/// Capability bit: per-namespace/port QoS is implemented.
pub const CARD_CAP_QOS: u64 = 1 << 2;

/// Identify Controller data (CNS 0x01), 4096 bytes. The first 72 bytes sit at
/// the same offsets as NVMe's (VID, SSVID, SN, MN, FR); the rest is dia's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentifyController {
    /// PCI vendor id of the card.
    pub vid: u16,
    /// PCI subsystem vendor id.
    pub ssvid: u16,
    /// Serial number, ASCII, space padded.
    pub serial: [u8; 20],
    /// Model number, ASCII, space padded.
    pub model: [u8; 40],
    /// Firmware revision, ASCII, space padded.
    pub firmware: [u8; 8],
    /// Interface version the firmware implements ([`INTERFACE_VERSION`]).
    pub interface_version: u32,
    /// Maximum number of I/O queue pairs.
    pub max_io_queues: u16,
    /// Maximum entries per queue.
    pub max_queue_entries: u16,
    /// Capability bits, `CARD_CAP_*`.
    pub capabilities: u64,
    /// Maximum number of namespaces.
    pub max_namespaces: u32,
    /// Maximum number of network ports.
    pub max_ports: u32,
    /// Total capacity of the flash pool in bytes.
    pub pool_bytes: u64,
    /// Bit 0: the card has a volatile write cache (Flush and FUA matter).
    pub vwc: u8,
    /// Reserved, zero.
    pub reserved1: [u8; 3],
    /// Largest data transfer of one I/O command, in bytes (0: no limit).
    pub max_transfer_bytes: u32,
    /// dia: storage QoS capacity the card admits floors against, I/Os per second.
    pub qos_capacity_iops: u64,
    /// dia: storage QoS capacity, bytes per second.
    pub qos_capacity_bytes_per_s: u64,
    /// Reserved, zero.
    pub reserved: [u8; 3968],
}
const _: () = assert!(core::mem::size_of::<IdentifyController>() == IDENTIFY_SIZE);

impl Default for IdentifyController {
    fn default() -> Self {
        Self {
            vid: 0,
            ssvid: 0,
            serial: [b' '; 20],
            model: [b' '; 40],
            firmware: [b' '; 8],
            interface_version: 0,
            max_io_queues: 0,
            max_queue_entries: 0,
            capabilities: 0,
            max_namespaces: 0,
            max_ports: 0,
            pool_bytes: 0,
            vwc: 0,
            reserved1: [0; 3],
            max_transfer_bytes: 0,
            qos_capacity_iops: 0,
            qos_capacity_bytes_per_s: 0,
            reserved: [0; 3968],
        }
    }
}

/// Copies `src` into a space-padded ASCII field, truncating if needed.
pub fn fill_ascii(dst: &mut [u8], src: &str) {
    for (i, d) in dst.iter_mut().enumerate() {
        *d = src.as_bytes().get(i).copied().unwrap_or(b' ');
    }
}

/// Bytes of the serial number field of [`IdentifyController`] (NVMe's SN).
pub const SERIAL_BYTES: usize = 20;

/// `serial` as Identify Controller's serial field: ASCII, space padded,
/// truncated to [`SERIAL_BYTES`]. Port MACs derive from this field.
///
/// ```
/// use dia_abi::card::{serial_field, IdentifyController};
///
/// let id = IdentifyController { serial: serial_field("DIA-1"), ..Default::default() };
/// assert_eq!(&id.serial, b"DIA-1               ");
/// ```
pub fn serial_field(serial: &str) -> [u8; SERIAL_BYTES] {
    let mut field = [b' '; SERIAL_BYTES];
    fill_ascii(&mut field, serial);
    field
}

// ---------------------------------------------------------------------------
// Storage (interface 1.0): namespaces carved from the card's flash pool, and
// the NVM I/O command set. NVMe-shaped; see docs/card-interface.md.
// ---------------------------------------------------------------------------

/// Get Log Page: CDW10 [`LogPage`] (bits 7:0 log id, 31:16 dwords - 1);
/// PRP1/PRP2 buffer.
pub const ADMIN_GET_LOG_PAGE: u8 = 0x02;
/// Namespace Management: CDW10 [`NsManagement`], bits 3:0 = [`NS_MGMT_CREATE`] (PRP1: a 4 KiB
/// buffer starting with [`NamespaceCreate`]; result DW0 = new nsid) or
/// [`NS_MGMT_DELETE`] (SQE.nsid; a deleted namespace's blocks return to the pool).
pub const ADMIN_NS_MANAGEMENT: u8 = 0x0d;
/// Namespace Attachment: CDW10 [`NsAttachment`], bits 3:0 = [`NS_ATTACH`] or
/// [`NS_DETACH`]; SQE.nsid.
/// Only attached namespaces accept I/O.
pub const ADMIN_NS_ATTACHMENT: u8 = 0x15;
/// Namespace Management select: create.
pub const NS_MGMT_CREATE: u32 = 0;
/// Namespace Management select: delete.
pub const NS_MGMT_DELETE: u32 = 1;
/// Namespace Attachment select: attach.
pub const NS_ATTACH: u32 = 0;
/// Namespace Attachment select: detach.
pub const NS_DETACH: u32 = 1;

/// CDW10 of Namespace Management: bits 3:0, the select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsManagement {
    /// [`NS_MGMT_CREATE`].
    Create,
    /// [`NS_MGMT_DELETE`].
    Delete,
}

impl NsManagement {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        match self {
            Self::Create => NS_MGMT_CREATE,
            Self::Delete => NS_MGMT_DELETE,
        }
    }

    /// Decodes the word; an undefined select is refused.
    pub const fn from_cdw10(cdw10: u32) -> Result<Self, CommandWordError> {
        match cdw10 & 0xf {
            NS_MGMT_CREATE => Ok(Self::Create),
            NS_MGMT_DELETE => Ok(Self::Delete),
            other => Err(CommandWordError::Select(other as u8)),
        }
    }
}

/// CDW10 of Namespace Attachment: bits 3:0, the select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NsAttachment {
    /// [`NS_ATTACH`].
    Attach,
    /// [`NS_DETACH`].
    Detach,
}

impl NsAttachment {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        match self {
            Self::Attach => NS_ATTACH,
            Self::Detach => NS_DETACH,
        }
    }

    /// Decodes the word; an undefined select is refused.
    pub const fn from_cdw10(cdw10: u32) -> Result<Self, CommandWordError> {
        match cdw10 & 0xf {
            NS_ATTACH => Ok(Self::Attach),
            NS_DETACH => Ok(Self::Detach),
            other => Err(CommandWordError::Select(other as u8)),
        }
    }
}

/// Vendor log page (dia): [`PoolStatus`].
pub const LOG_POOL_STATUS: u8 = 0xc0;

/// A log page the card has (Get Log Page CDW10 bits 7:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogId {
    /// [`LOG_POOL_STATUS`]: [`PoolStatus`].
    PoolStatus,
    /// [`LOG_NS_STATS`]: [`NamespaceStats`] of SQE.nsid.
    NsStats,
    /// [`LOG_PORT_STATS`]: [`PortStats`] of the port in CDW11, [`PortStatsLog`].
    PortStats,
    /// [`LOG_MIRROR_STATUS`]: [`MirrorStatus`] of SQE.nsid.
    MirrorStatus,
}

impl LogId {
    /// The log page id.
    pub const fn id(self) -> u8 {
        match self {
            Self::PoolStatus => LOG_POOL_STATUS,
            Self::NsStats => LOG_NS_STATS,
            Self::PortStats => LOG_PORT_STATS,
            Self::MirrorStatus => LOG_MIRROR_STATUS,
        }
    }

    /// The log page of an id, if the card has it.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            LOG_POOL_STATUS => Some(Self::PoolStatus),
            LOG_NS_STATS => Some(Self::NsStats),
            LOG_PORT_STATS => Some(Self::PortStats),
            LOG_MIRROR_STATUS => Some(Self::MirrorStatus),
            _ => None,
        }
    }
}

/// CDW10 of Get Log Page: which page, and how much of it the buffer takes
/// (the card cuts the page or pads it with zeroes to that length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogPage {
    /// Bits 7:0: the page.
    pub log: LogId,
    /// Bits 31:16, 0's based: dwords to transfer, 1..=65536.
    pub dwords: u32,
}

impl LogPage {
    /// The whole of a page of `bytes` bytes (a multiple of 4, at most 256 KiB).
    pub const fn of_bytes(log: LogId, bytes: usize) -> Self {
        Self {
            log,
            dwords: (bytes / 4) as u32,
        }
    }

    /// Bytes to transfer.
    pub const fn bytes(self) -> usize {
        self.dwords as usize * 4
    }

    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.log.id() as u32 | (self.dwords.wrapping_sub(1) & 0xffff) << 16
    }

    /// Decodes the word; a page the card does not have is refused.
    pub const fn from_cdw10(cdw10: u32) -> Result<Self, CommandWordError> {
        let Some(log) = LogId::from_id(cdw10 as u8) else {
            return Err(CommandWordError::LogId(cdw10 as u8));
        };
        Ok(Self {
            log,
            dwords: (cdw10 >> 16) + 1,
        })
    }
}

/// Smallest and largest logical block size the card supports (as shifts).
pub const LBA_SHIFT_MIN: u8 = 9;
/// See [`LBA_SHIFT_MIN`].
pub const LBA_SHIFT_MAX: u8 = 12;
/// Longest namespace label in bytes.
pub const LABEL_LEN: usize = 64;
/// Largest namespace the card creates, in bytes (1 PiB).
pub const NAMESPACE_MAX_BYTES: u64 = 1 << 50;

/// The `lba_shift` of a logical block size, if the card supports that size
/// (a power of two, 1 << [`LBA_SHIFT_MIN`] to 1 << [`LBA_SHIFT_MAX`]).
pub const fn lba_shift_of(block_size_bytes: u32) -> Option<u32> {
    let shift = block_size_bytes.trailing_zeros();
    if block_size_bytes.is_power_of_two()
        && shift >= LBA_SHIFT_MIN as u32
        && shift <= LBA_SHIFT_MAX as u32
    {
        Some(shift)
    } else {
        None
    }
}

/// Namespace Management create data (start of a 4 KiB buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NamespaceCreate {
    /// Size in logical blocks (thin: nothing is allocated until written).
    pub size_blocks: u64,
    /// log2 of the logical block size, [`LBA_SHIFT_MIN`]..=[`LBA_SHIFT_MAX`].
    pub lba_shift: u8,
    /// Reserved, zero.
    pub reserved: [u8; 7],
    /// Label (the owner's name for it), ASCII/UTF-8, NUL padded.
    pub label: [u8; LABEL_LEN],
}
const _: () = assert!(core::mem::size_of::<NamespaceCreate>() == 80);

impl Default for NamespaceCreate {
    fn default() -> Self {
        Self {
            size_blocks: 0,
            lba_shift: 12,
            reserved: [0; 7],
            label: [0; LABEL_LEN],
        }
    }
}

/// Identify Namespace data (CNS 0x00), 4096 bytes; NVMe offsets for NSZE,
/// NCAP, NUSE, NSFEAT, NLBAF, FLBAS and LBAF0, dia fields after byte 384.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentifyNamespace {
    /// Size in logical blocks.
    pub nsze: u64,
    /// Capacity in logical blocks (= nsze).
    pub ncap: u64,
    /// Blocks allocated in the pool (thin provisioning).
    pub nuse: u64,
    /// Bit 0: thin provisioned; bit 2: deallocated blocks read as zeroes.
    pub nsfeat: u8,
    /// Number of LBA formats - 1 (0: only LBAF0).
    pub nlbaf: u8,
    /// Formatted LBA size: index 0.
    pub flbas: u8,
    /// Reserved.
    pub reserved0: [u8; 101],
    /// LBA format 0: bits 23:16 = log2 of the block size.
    pub lbaf0: u32,
    /// Reserved.
    pub reserved1: [u8; 252],
    /// dia: the namespace's label.
    pub label: [u8; LABEL_LEN],
    /// dia: 1 when attached.
    pub attached: u8,
    /// dia: 1 when the namespace's data lives behind an NVMe/TCP target
    /// (made by [`ADMIN_CREATE_REMOTE_NS`]; `remote_target` says where), 0
    /// for a namespace of the card's pool. Reserved (zero) before.
    pub remote: u8,
    /// dia, remote namespaces only: the card's path to the target now,
    /// `REMOTE_PATH_*` (0 for a local namespace).
    pub remote_path: u8,
    /// dia: 1 when the namespace is mirrored (made by
    /// [`ADMIN_CREATE_MIRROR_NS`]; [`LOG_MIRROR_STATUS`] tells its
    /// plexes), else 0. Reserved (zero) before interface 1.5.
    pub mirrored: u8,
    /// dia, remote namespaces only (zero otherwise): the target, as
    /// Create Remote Namespace gave it.
    pub remote_target: RemoteTarget,
    /// Reserved, zero.
    pub reserved4: [u8; 4],
    /// dia, a local namespace that is a plex of a mirror (interface 1.5):
    /// what the mirror last told it ([`ADMIN_SET_PLEX_RECORD`]); zero
    /// otherwise.
    pub plex_record: PlexRecord,
    /// Reserved, zero.
    pub reserved2: [u8; 3280],
}
const _: () = assert!(core::mem::size_of::<IdentifyNamespace>() == IDENTIFY_SIZE);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, lbaf0) == 128);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, label) == 384);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, attached) == 448);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, remote) == 449);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, remote_target) == 452);
const _: () = assert!(core::mem::offset_of!(IdentifyNamespace, plex_record) == 768);

impl Default for IdentifyNamespace {
    fn default() -> Self {
        Self {
            nsze: 0,
            ncap: 0,
            nuse: 0,
            nsfeat: 0,
            nlbaf: 0,
            flbas: 0,
            reserved0: [0; 101],
            lbaf0: 0,
            reserved1: [0; 252],
            label: [0; LABEL_LEN],
            attached: 0,
            remote: 0,
            remote_path: 0,
            mirrored: 0,
            remote_target: RemoteTarget::ZERO,
            reserved4: [0; 4],
            plex_record: PlexRecord {
                generation: 0,
                in_sync: [0; MIRROR_MAX_PLEXES],
                reserved: [0; 8],
            },
            reserved2: [0; 3280],
        }
    }
}

impl IdentifyNamespace {
    /// log2 of the logical block size from LBAF0.
    pub const fn lba_shift(&self) -> u8 {
        (self.lbaf0 >> 16) as u8
    }
}

/// Pool status (log page [`LOG_POOL_STATUS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Capacity for namespace data in bytes.
    pub total_bytes: u64,
    /// Bytes allocated to namespaces.
    pub used_bytes: u64,
    /// Number of namespaces.
    pub namespaces: u32,
    /// Most namespaces the card holds.
    pub max_namespaces: u32,
    /// Allocation unit of thin provisioning in bytes.
    pub chunk_bytes: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<PoolStatus>() == 32);

// NVM I/O command set.
/// Flush: make every completed write durable.
pub const IO_FLUSH: u8 = 0x00;
/// Write: CDW10/11 starting LBA ([`StartLba`]), CDW12 [`IoBlocks`] (bits
/// 15:0 blocks - 1, bit 30 FUA).
pub const IO_WRITE: u8 = 0x01;
/// Read: fields as Write.
pub const IO_READ: u8 = 0x02;
/// Write Zeroes: fields as Write, CDW12 bit 25 deallocate; no data.
pub const IO_WRITE_ZEROES: u8 = 0x08;
/// Dataset Management: CDW10 [`DsmRanges`] (bits 7:0 ranges - 1), CDW11
/// [`DsmAttributes`] (bit 2 deallocate);
/// PRP1 points at [`DsmRange`] entries.
pub const IO_DATASET_MANAGEMENT: u8 = 0x09;
/// CDW12 bit 30 of Read/Write: force unit access.
pub const RW_FUA: u32 = 1 << 30;
/// CDW12 bit 25 of Write Zeroes: deallocate the blocks too.
pub const WZ_DEALLOCATE: u32 = 1 << 25;
/// Completion DW0 bit 0 of a successful FUA Write: the card made it durable
/// with a Flush of its whole cache, so every write it had completed, on any
/// namespace, before it fetched this command is durable too, as after a
/// Flush. A driver may then complete a Flush that would cover nothing more
/// without sending it (an `O_DSYNC` write is a FUA write and a Flush). Set
/// for a namespace in the card's own pool only; a remote or mirrored
/// namespace's FUA write leaves DW0 zero (its Flush may have a loss to
/// report).
pub const WRITE_RESULT_FLUSHED: u32 = 1 << 0;
/// CDW11 bit 2 of Dataset Management: deallocate the ranges.
pub const DSM_DEALLOCATE: u32 = 1 << 2;

/// CDW10 and CDW11 of Read, Write and Write Zeroes: the first logical block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLba {
    /// CDW10 holds bits 31:0, CDW11 bits 63:32.
    pub lba: u64,
}

impl StartLba {
    /// Encodes CDW10.
    pub const fn cdw10(self) -> u32 {
        self.lba as u32
    }

    /// Encodes CDW11.
    pub const fn cdw11(self) -> u32 {
        (self.lba >> 32) as u32
    }

    /// Decodes the two words.
    pub const fn from_cdw10_cdw11(cdw10: u32, cdw11: u32) -> Self {
        Self {
            lba: cdw10 as u64 | (cdw11 as u64) << 32,
        }
    }
}

/// CDW12 of Read, Write and Write Zeroes: how many blocks, and how.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBlocks {
    /// Bits 15:0, 0's based: logical blocks, 1..=65536.
    pub blocks: u32,
    /// Bit 30, [`RW_FUA`] (Write): the data is durable before the command
    /// completes.
    pub fua: bool,
    /// Bit 25, [`WZ_DEALLOCATE`] (Write Zeroes): deallocate the blocks too
    /// (the card does either way: deallocated blocks read as zeroes).
    pub deallocate: bool,
}

impl IoBlocks {
    /// Encodes the word.
    pub const fn cdw12(self) -> u32 {
        (self.blocks.wrapping_sub(1) & 0xffff)
            | if self.fua { RW_FUA } else { 0 }
            | if self.deallocate { WZ_DEALLOCATE } else { 0 }
    }

    /// Decodes the word.
    pub const fn from_cdw12(cdw12: u32) -> Self {
        Self {
            blocks: (cdw12 & 0xffff) + 1,
            fua: cdw12 & RW_FUA != 0,
            deallocate: cdw12 & WZ_DEALLOCATE != 0,
        }
    }
}

/// CDW10 of Dataset Management: how many [`DsmRange`]s PRP1 points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DsmRanges {
    /// Bits 7:0, 0's based: ranges, 1..=256.
    pub ranges: u32,
}

impl DsmRanges {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.ranges.wrapping_sub(1) & 0xff
    }

    /// Decodes the word.
    pub const fn from_cdw10(cdw10: u32) -> Self {
        Self {
            ranges: (cdw10 & 0xff) + 1,
        }
    }
}

/// CDW11 of Dataset Management: what to do with the ranges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmAttributes {
    /// Bit 2, [`DSM_DEALLOCATE`]: deallocate them (without it the command
    /// is only hints, which the card ignores).
    pub deallocate: bool,
}

impl DsmAttributes {
    /// Encodes the word.
    pub const fn cdw11(self) -> u32 {
        if self.deallocate {
            DSM_DEALLOCATE
        } else {
            0
        }
    }

    /// Decodes the word.
    pub const fn from_cdw11(cdw11: u32) -> Self {
        Self {
            deallocate: cdw11 & DSM_DEALLOCATE != 0,
        }
    }
}

/// One Dataset Management range (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmRange {
    /// Context attributes (ignored).
    pub attributes: u32,
    /// Length in logical blocks.
    pub blocks: u32,
    /// Starting LBA.
    pub slba: u64,
}
const _: () = assert!(core::mem::size_of::<DsmRange>() == 16);

/// LBA out of range (generic).
pub const STATUS_LBA_OUT_OF_RANGE: u16 = 0x080;
/// Capacity exceeded: the thin pool is full (generic).
pub const STATUS_CAPACITY_EXCEEDED: u16 = 0x081;
/// Namespace not ready (not attached) (generic).
pub const STATUS_NAMESPACE_NOT_READY: u16 = 0x082;
/// Invalid format: unsupported LBA size (command specific).
pub const STATUS_INVALID_FORMAT: u16 = 0x10a;
/// Namespace insufficient capacity (command specific).
pub const STATUS_NS_INSUFFICIENT_CAPACITY: u16 = 0x115;
/// Namespace identifier unavailable: no free nsid (command specific).
pub const STATUS_NS_ID_UNAVAILABLE: u16 = 0x116;
/// Namespace already attached (command specific).
pub const STATUS_NS_ALREADY_ATTACHED: u16 = 0x118;
/// Namespace not attached (command specific).
pub const STATUS_NS_NOT_ATTACHED: u16 = 0x11a;
/// dia: the namespace is attached and cannot be deleted (command specific).
pub const STATUS_NS_ATTACHED_DELETE: u16 = 0x1c0;

// ---------------------------------------------------------------------------
// Storage QoS (interface 1.0, capability bit 2): per-namespace floors,
// ceilings and weights enforced in the card's I/O dispatch, and counters.
// ---------------------------------------------------------------------------

/// Set QoS (dia vendor admin command): SQE.nsid; PRP1 points at [`QosSettings`].
pub const ADMIN_SET_QOS: u8 = 0xc1;
/// Vendor log page (dia): [`NamespaceStats`] of SQE.nsid.
pub const LOG_NS_STATS: u8 = 0xc1;
/// dia: the floors asked for exceed what the card can guarantee (command
/// specific); result DW0 = I/Os per second over capacity, 0 if only bytes.
pub const STATUS_QOS_ADMISSION: u16 = 0x1c1;

/// Largest [`QosSettings::weight`].
pub const QOS_WEIGHT_MAX: u32 = 1000;
/// Smallest weight; the card takes a weight of 0 as this.
pub const QOS_WEIGHT_MIN: u32 = 1;
/// Longest [`QosSettings::burst_ms`].
pub const QOS_BURST_MAX_MS: u32 = 10_000;
/// The ceilings' burst when [`QosSettings::burst_ms`] is 0.
pub const QOS_BURST_DEFAULT_MS: u32 = 50;

/// A namespace's service level (zero: no floor / no ceiling).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QosSettings {
    /// Guaranteed I/Os per second.
    pub min_iops: u64,
    /// Most I/Os per second.
    pub max_iops: u64,
    /// Guaranteed bytes per second.
    pub min_bytes_per_s: u64,
    /// Most bytes per second.
    pub max_bytes_per_s: u64,
    /// Share of spare capacity, [`QOS_WEIGHT_MIN`]..=[`QOS_WEIGHT_MAX`]
    /// (0 means [`QOS_WEIGHT_MIN`]).
    pub weight: u32,
    /// Burst of the ceilings in milliseconds of the ceiling rate, at most
    /// [`QOS_BURST_MAX_MS`] (0: [`QOS_BURST_DEFAULT_MS`]).
    pub burst_ms: u32,
}
const _: () = assert!(core::mem::size_of::<QosSettings>() == 40);

/// Why the card refuses [`QosSettings`] (`STATUS_INVALID_FIELD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosError {
    /// The weight is above [`QOS_WEIGHT_MAX`].
    Weight(u32),
    /// The burst is above [`QOS_BURST_MAX_MS`].
    BurstMs(u32),
    /// The I/O floor is above a (non-zero) I/O ceiling: `(min, max)`.
    IopsFloorAboveCeiling(u64, u64),
    /// The byte floor is above a (non-zero) byte ceiling: `(min, max)`.
    BytesFloorAboveCeiling(u64, u64),
}

impl QosSettings {
    /// Checks the settings as the card does before it takes them.
    pub const fn validate(&self) -> Result<(), QosError> {
        if self.weight > QOS_WEIGHT_MAX {
            return Err(QosError::Weight(self.weight));
        }
        if self.burst_ms > QOS_BURST_MAX_MS {
            return Err(QosError::BurstMs(self.burst_ms));
        }
        if self.max_iops != 0 && self.min_iops > self.max_iops {
            return Err(QosError::IopsFloorAboveCeiling(
                self.min_iops,
                self.max_iops,
            ));
        }
        if self.max_bytes_per_s != 0 && self.min_bytes_per_s > self.max_bytes_per_s {
            return Err(QosError::BytesFloorAboveCeiling(
                self.min_bytes_per_s,
                self.max_bytes_per_s,
            ));
        }
        Ok(())
    }

    /// The ceilings' burst in milliseconds, with 0 read as the default.
    pub const fn burst_or_default_ms(&self) -> u32 {
        if self.burst_ms == 0 {
            QOS_BURST_DEFAULT_MS
        } else {
            self.burst_ms
        }
    }
}

/// Latency histogram buckets of [`NamespaceStats`]: bucket i counts I/Os
/// that took less than 2^i microseconds (the last one: everything slower).
pub const LATENCY_BUCKETS: usize = 24;

/// Per-namespace counters since the card started (log page [`LOG_NS_STATS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceStats {
    /// Read commands completed.
    pub reads: u64,
    /// Write commands completed.
    pub writes: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Other commands (flush, deallocate, write zeroes).
    pub other: u64,
    /// Commands that failed.
    pub errors: u64,
    /// Total time commands waited for a ceiling, nanoseconds.
    pub throttled_ns: u64,
    /// Commands that waited for a ceiling.
    pub throttled: u64,
    /// Completion latency histogram (fetch to completion).
    pub latency_us_log2: [u64; LATENCY_BUCKETS],
}
const _: () = assert!(core::mem::size_of::<NamespaceStats>() == 64 + 8 * LATENCY_BUCKETS);

// ---------------------------------------------------------------------------
// Remote namespaces (storage fabric, issue 14): a namespace of the card whose
// data lives in a namespace of an NVMe/TCP target (another card's, or any
// NVMe-oF target), reached by the card's own initiator. It is attached,
// detached, deleted, listed, identified, limited and counted like a namespace
// of the pool, and uses none of the pool's space. See docs/card-interface.md.
// ---------------------------------------------------------------------------

/// Create Remote Namespace (dia vendor admin command; opcode bits 1:0 = 01,
/// host-to-card data, as NVMe's opcodes say): PRP1 points at
/// [`RemoteNamespaceCreate`] (4 KiB page). The card connects to the target,
/// reads the remote namespace's size and block size (Identify Namespace),
/// closes that connection and records a new, detached namespace; result
/// DW0 = its nsid. Errors: [`RemoteNamespaceCreate::validate`]'s status,
/// [`STATUS_REMOTE_UNREACHABLE`], [`STATUS_REMOTE_REFUSED`] (DW0 = the
/// target's status), [`STATUS_INVALID_FORMAT`] (a block size outside
/// 512..=4096), [`STATUS_NS_ID_UNAVAILABLE`], and Invalid Opcode on a card
/// without a pool (the namespace table lives in the pool's metadata).
pub const ADMIN_CREATE_REMOTE_NS: u8 = 0xc9;

/// Bytes of [`RemoteTarget::addr`]: the longest IPv6 literal (45
/// characters, an IPv4-mapped form) and its NUL, rounded up.
pub const REMOTE_ADDR_LEN: usize = 48;
/// Bytes of an NQN field (NVMe-oF: NUL padded).
pub const NQN_FIELD_LEN: usize = 256;
/// Longest NQN in bytes (NVMe: 223).
pub const NQN_MAX_LEN: usize = 223;
/// [`RemoteTarget::digests`] bit 0: ask the target for header digests.
pub const REMOTE_HEADER_DIGEST: u8 = 1 << 0;
/// [`RemoteTarget::digests`] bit 1: ask the target for data digests.
pub const REMOTE_DATA_DIGEST: u8 = 1 << 1;

/// [`IdentifyNamespace::remote_path`]: no connection to the target, and
/// none failed (detached, or no I/O since the attach or firmware start:
/// the card connects at the first I/O).
pub const REMOTE_PATH_IDLE: u8 = 0;
/// [`IdentifyNamespace::remote_path`]: connected.
pub const REMOTE_PATH_LIVE: u8 = 1;
/// [`IdentifyNamespace::remote_path`]: the connection failed or could not
/// be made; I/O completes with [`STATUS_TRANSIENT_TRANSPORT`] until a
/// later attempt (at an I/O, after a backoff) connects again.
pub const REMOTE_PATH_DOWN: u8 = 2;

/// Transient Transport Error (NVMe generic status): a remote namespace's
/// target cannot be reached now (the connection failed under the command,
/// or is down and not yet reconnected). Retrying later may succeed.
pub const STATUS_TRANSIENT_TRANSPORT: u16 = 0x022;
/// Write Fault (NVMe media error): a Flush of a remote namespace whose
/// connection to its target ended while writes the card had completed
/// were not yet flushed there. A target that lost its cache lost them;
/// the card cannot tell, so the Flush fails once (the next one covers only
/// writes after it).
pub const STATUS_WRITE_FAULT: u16 = 0x280;
/// dia (command specific, Create Remote Namespace): no NVMe/TCP
/// association could be made with the target: the TCP connection was
/// refused or timed out, or the connection failed while setting up.
pub const STATUS_REMOTE_UNREACHABLE: u16 = 0x1c4;
/// dia (command specific, Create Remote Namespace): the target answered
/// but refused: Connect failed (no such subsystem, host not allowed), the
/// remote namespace is not there, or the target or the namespace is one
/// the card cannot use (no SGLs, metadata formats). Result DW0: the
/// target's NVMe status (status code type << 8 | status code) when it
/// gave one, else 0.
pub const STATUS_REMOTE_REFUSED: u16 = 0x1c5;

/// Prefix of the NQN of the subsystem a card exports each of its volumes
/// as over NVMe/TCP: `<prefix><card serial>:ns<NSID>` (the volume is that
/// subsystem's namespace 1); a card's own host NQN is
/// `<prefix><card serial>:host`.
pub const VOLUME_NQN_PREFIX: &str = "nqn.2026-12.io.dia:";

/// Where a remote namespace's data is: an NVMe/TCP target, a subsystem on
/// it and a namespace of that subsystem (312 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteTarget {
    /// The target's IP address as an ASCII literal (IPv4 dotted quad or
    /// IPv6, no zone), NUL terminated and NUL padded. The card resolves
    /// no names.
    pub addr: [u8; REMOTE_ADDR_LEN],
    /// The target's TCP port (NVMe/TCP's is 4420), not 0.
    pub port: u16,
    /// [`REMOTE_HEADER_DIGEST`] | [`REMOTE_DATA_DIGEST`]; other bits zero.
    pub digests: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// The namespace id on the target's subsystem: not 0, not 0xffffffff.
    pub nsid: u32,
    /// The subsystem's NQN, ASCII without spaces, 1..=[`NQN_MAX_LEN`]
    /// bytes, NUL terminated and NUL padded.
    pub subnqn: [u8; NQN_FIELD_LEN],
}
const _: () = assert!(core::mem::size_of::<RemoteTarget>() == 312);

impl Default for RemoteTarget {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Why the card refuses a [`RemoteTarget`] or [`RemoteNamespaceCreate`]
/// (each is [`STATUS_INVALID_FIELD`]: [`RemoteTargetError::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteTargetError {
    /// The address is not a NUL-terminated, NUL-padded IP literal.
    Address,
    /// The port is 0.
    Port,
    /// A digest bit other than the two defined is set.
    Digests(u8),
    /// The remote namespace id is 0 or 0xffffffff.
    Nsid(u32),
    /// The NQN is empty, too long, not NUL terminated and padded, or not
    /// printable ASCII without spaces.
    Nqn,
    /// A reserved field is not zero.
    Reserved,
}

impl RemoteTargetError {
    /// The completion status the card answers.
    pub const fn status(self) -> u16 {
        STATUS_INVALID_FIELD
    }
}

/// The text of a NUL-terminated, NUL-padded field of printable ASCII
/// without spaces, at most `max` bytes; `None` if it is not one.
fn nul_terminated_text(field: &[u8], max: usize) -> Option<&str> {
    let len = field.iter().position(|&b| b == 0)?;
    if len == 0 || len > max || field[len..].iter().any(|&b| b != 0) {
        return None;
    }
    let text = &field[..len];
    if !text.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return None;
    }
    core::str::from_utf8(text).ok()
}

/// Copies `src` into a NUL-padded field, leaving at least one NUL; `false`
/// (and the field untouched) if it does not fit.
fn fill_nul(dst: &mut [u8], src: &str) -> bool {
    if src.len() >= dst.len() {
        return false;
    }
    dst.fill(0);
    dst[..src.len()].copy_from_slice(src.as_bytes());
    true
}

impl RemoteTarget {
    /// All zero (what Identify Namespace reports for a local namespace).
    pub const ZERO: Self = Self {
        addr: [0; REMOTE_ADDR_LEN],
        port: 0,
        digests: 0,
        reserved: 0,
        nsid: 0,
        subnqn: [0; NQN_FIELD_LEN],
    };

    /// A target from its parts, checked as the card checks it.
    ///
    /// ```
    /// use dia_abi::card::{RemoteTarget, RemoteTargetError, REMOTE_DATA_DIGEST};
    ///
    /// let t = RemoteTarget::new("10.0.2.2", 4420, 1, "nqn.2026-12.io.dia:DIA-1:ns3", 0).unwrap();
    /// assert_eq!(t.ip(), "10.0.2.2".parse().ok());
    /// assert_eq!(t.subnqn_str(), Some("nqn.2026-12.io.dia:DIA-1:ns3"));
    /// assert_eq!(
    ///     RemoteTarget::new("host.example", 4420, 1, "nqn.x", 0),
    ///     Err(RemoteTargetError::Address)
    /// );
    /// assert!(RemoteTarget::new("fd00::7", 4420, 9, "nqn.x", REMOTE_DATA_DIGEST).is_ok());
    /// ```
    pub fn new(
        addr: &str,
        port: u16,
        nsid: u32,
        subnqn: &str,
        digests: u8,
    ) -> Result<Self, RemoteTargetError> {
        let mut t = Self {
            port,
            digests,
            nsid,
            ..Self::ZERO
        };
        if !fill_nul(&mut t.addr, addr) {
            return Err(RemoteTargetError::Address);
        }
        if !fill_nul(&mut t.subnqn, subnqn) {
            return Err(RemoteTargetError::Nqn);
        }
        t.validate().map(|()| t)
    }

    /// Checks the target as the card does, in this order: address, port,
    /// digests, reserved, namespace id, NQN.
    pub fn validate(&self) -> Result<(), RemoteTargetError> {
        if self.ip().is_none() {
            return Err(RemoteTargetError::Address);
        }
        if self.port == 0 {
            return Err(RemoteTargetError::Port);
        }
        if self.digests & !(REMOTE_HEADER_DIGEST | REMOTE_DATA_DIGEST) != 0 {
            return Err(RemoteTargetError::Digests(self.digests));
        }
        if self.reserved != 0 {
            return Err(RemoteTargetError::Reserved);
        }
        if self.nsid == 0 || self.nsid == u32::MAX {
            return Err(RemoteTargetError::Nsid(self.nsid));
        }
        if self.subnqn_str().is_none() {
            return Err(RemoteTargetError::Nqn);
        }
        Ok(())
    }

    /// The address, if the field holds a valid IP literal.
    pub fn ip(&self) -> Option<core::net::IpAddr> {
        nul_terminated_text(&self.addr, REMOTE_ADDR_LEN - 1)?
            .parse()
            .ok()
    }

    /// The subsystem NQN, if the field holds a valid one.
    pub fn subnqn_str(&self) -> Option<&str> {
        nul_terminated_text(&self.subnqn, NQN_MAX_LEN)
    }
}

/// Create Remote Namespace data (start of a 4 KiB buffer), 512 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteNamespaceCreate {
    /// Where the data is.
    pub target: RemoteTarget,
    /// Label (the owner's name for it), as [`NamespaceCreate::label`].
    pub label: [u8; LABEL_LEN],
    /// Reserved, zero.
    pub reserved: [u8; 136],
}
const _: () = assert!(core::mem::size_of::<RemoteNamespaceCreate>() == 512);

impl Default for RemoteNamespaceCreate {
    fn default() -> Self {
        Self {
            target: RemoteTarget::ZERO,
            label: [0; LABEL_LEN],
            reserved: [0; 136],
        }
    }
}

impl RemoteNamespaceCreate {
    /// Checks the request as the card does before it connects: the
    /// target ([`RemoteTarget::validate`]), then the reserved bytes.
    ///
    /// ```
    /// use dia_abi::card::{RemoteNamespaceCreate, RemoteTarget, RemoteTargetError, LABEL_LEN};
    ///
    /// let target = RemoteTarget::new("127.0.0.1", 4420, 1, "nqn.x", 0).unwrap();
    /// let ok = RemoteNamespaceCreate { target, label: [0; LABEL_LEN], reserved: [0; 136] };
    /// assert_eq!(ok.validate(), Ok(()));
    /// let mut bad = ok;
    /// bad.reserved[135] = 1;
    /// assert_eq!(bad.validate(), Err(RemoteTargetError::Reserved));
    /// ```
    pub fn validate(&self) -> Result<(), RemoteTargetError> {
        self.target.validate()?;
        if self.reserved.iter().any(|&b| b != 0) {
            return Err(RemoteTargetError::Reserved);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Mirrored namespaces (issue 15, interface 1.5): a namespace of the card
// whose data is kept in 1..=MIRROR_MAX_PLEXES copies ("plexes"), each a
// namespace behind an NVMe/TCP target (usually another card's exported
// volume; a plex on this card's own pool is reached through it directly).
// A write completes when every in-sync plex holds it; a plex that fails is
// taken out of sync (no error reaches the host while one in-sync plex is
// left) and the regions written while it is away are recorded in the card's
// crash-safe metadata and copied to it when it is back (resync). See
// docs/mirrors.md and docs/card-interface.md.
// ---------------------------------------------------------------------------

/// Interface minor version that added mirrored namespaces
/// ([`ADMIN_CREATE_MIRROR_NS`], [`LOG_MIRROR_STATUS`]). A 1.4 card answers
/// Create Mirror Namespace with Invalid Opcode.
pub const INTERFACE_MINOR_MIRROR: u32 = 5;

/// Create Mirror Namespace (dia vendor admin command; opcode bits 1:0 = 01,
/// host-to-card data): PRP1 points at [`MirrorNamespaceCreate`] (4 KiB
/// page). The card looks at every plex it can reach (size, block size),
/// records a new, detached namespace with the plex table and its
/// generation, and completes; result DW0 = its nsid. A plex given as in
/// sync that cannot be reached now is recorded out of sync with no dirty
/// region (nothing was written through this namespace yet). Errors:
/// [`MirrorNamespaceCreate::validate`]'s status ([`STATUS_INVALID_FIELD`]),
/// [`STATUS_REMOTE_UNREACHABLE`] (no in-sync plex could be reached),
/// [`STATUS_REMOTE_REFUSED`] (DW0 = the target's status),
/// [`STATUS_INVALID_FORMAT`] (plexes of different sizes or block sizes),
/// [`STATUS_NS_ID_UNAVAILABLE`], and Invalid Opcode on a card without a
/// pool.
pub const ADMIN_CREATE_MIRROR_NS: u8 = 0xcd;
/// Vendor log page (dia): [`MirrorStatus`] of the mirrored namespace
/// SQE.nsid ([`STATUS_INVALID_FIELD`] for a namespace that is not one).
pub const LOG_MIRROR_STATUS: u8 = 0xc3;
/// Most plexes of a mirrored namespace.
pub const MIRROR_MAX_PLEXES: usize = 4;
/// log2 of a mirror region, the unit the card records changes in while a
/// plex is out of sync and copies when it resyncs (1 MiB).
pub const MIRROR_REGION_SHIFT: u32 = 20;

/// [`MirrorPlex::state`], [`PlexStatus::state`]: holds every write the
/// namespace completed; reads and writes go to it.
pub const PLEX_IN_SYNC: u8 = 0;
/// The plex missed writes (its target failed or could not be reached);
/// the card records the regions written since and copies them when the
/// target answers again.
pub const PLEX_OUT_OF_SYNC: u8 = 1;
/// Reachable again; the card is copying the regions it missed.
pub const PLEX_RESYNCING: u8 = 2;
/// Create only: the plex holds nothing of the volume yet (a plex added to
/// a live volume, or a rebuild on another appliance): every region is
/// copied to it (full resync); reported as out of sync or resyncing.
pub const PLEX_NEW: u8 = 3;

/// Set Mirror Plexes (dia vendor admin command, host-to-card data):
/// SQE.nsid = a mirrored namespace (attached or not); PRP1 points at a
/// [`MirrorNamespaceCreate`] (4 KiB page) with the new plex table (its
/// label and generation ignored). A plex whose target is in the current
/// table keeps its state and the regions it misses (give it as
/// [`PLEX_IN_SYNC`]); a target not in the current table is a new plex and
/// must be [`PLEX_NEW`]: the card copies every region to it, live, and
/// takes it into the writes as that copy goes; a current plex missing from
/// the new table is dropped at once (its writes stop). The new order is the
/// status page's from then on; the generation goes up by one. Errors:
/// [`MirrorNamespaceCreate::validate`]'s ([`STATUS_INVALID_FIELD`], also for
/// a new plex given in sync), [`STATUS_INVALID_FIELD`] for a namespace that
/// is not mirrored, [`STATUS_MIRROR_LAST_COPY`] when no plex in sync now
/// would be left.
pub const ADMIN_SET_MIRROR_PLEXES: u8 = 0xce;
/// dia (command specific, Set Mirror Plexes): the change would leave the
/// mirror without a plex that is in sync now.
pub const STATUS_MIRROR_LAST_COPY: u16 = 0x1c6;
/// dia (command specific, Create Mirror Namespace): the plexes' records
/// ([`PlexRecord`]) say a newer copy exists than any reachable one, or
/// that a plex the newest copy counted as in sync cannot be reached: the
/// card refuses rather than serve data that may be stale.
pub const STATUS_MIRROR_STALE: u16 = 0x1c7;

/// What a mirror tells each of its in-sync plexes whenever its set of
/// in-sync plexes changes (before it completes a write without a plex
/// that left it), kept by the plex's card with the exported namespace and
/// reported in its Identify Namespace (`plex_record`): the mirror's
/// generation and which plexes were in sync at it. Create Mirror
/// Namespace reads every reachable plex's record and serves only from
/// the newest (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlexRecord {
    /// The mirror's generation (0: the namespace was never a plex).
    pub generation: u64,
    /// [`plex_key`] of each plex in sync at `generation`, 0 for none.
    pub in_sync: [u64; MIRROR_MAX_PLEXES],
    /// Reserved, zero.
    pub reserved: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<PlexRecord>() == 48);

/// A plex's key in a [`PlexRecord`]: FNV-1a (64 bit) over the target's
/// subsystem NQN (its text), a NUL, and its nsid (4 bytes little-endian);
/// never 0 (0 maps to 1). The address and port are not part of it (an
/// appliance may move).
pub fn plex_key(target: &RemoteTarget) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let nqn_len = target
        .subnqn
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(NQN_FIELD_LEN);
    let nsid = target.nsid.to_le_bytes();
    let bytes = target.subnqn[..nqn_len]
        .iter()
        .chain(core::iter::once(&0u8))
        .chain(nsid.iter());
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// Set Plex Record (dia vendor admin command, host-to-card data, sent by
/// a mirror's card over NVMe/TCP to a plex's target, or by a driver):
/// SQE.nsid = the namespace (a local namespace of the pool); PRP1 (or the
/// capsule's data) holds a [`PlexRecord`]. The card makes it durable
/// before it completes. Errors: [`STATUS_INVALID_FIELD`] (reserved bytes,
/// a remote or mirrored namespace), Invalid Namespace.
pub const ADMIN_SET_PLEX_RECORD: u8 = 0xcf;

/// One plex of [`MirrorNamespaceCreate`] (320 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorPlex {
    /// Where the copy is.
    pub target: RemoteTarget,
    /// [`PLEX_IN_SYNC`] or [`PLEX_NEW`].
    pub state: u8,
    /// Reserved, zero.
    pub reserved: [u8; 7],
}
const _: () = assert!(core::mem::size_of::<MirrorPlex>() == 320);

impl MirrorPlex {
    /// No plex (all zero).
    pub const ZERO: Self = Self {
        target: RemoteTarget::ZERO,
        state: 0,
        reserved: [0; 7],
    };
}

impl Default for MirrorPlex {
    fn default() -> Self {
        Self::ZERO
    }
}

/// Create Mirror Namespace data (start of a 4 KiB buffer), 1536 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirrorNamespaceCreate {
    /// Label (the owner's name for it), as [`NamespaceCreate::label`].
    pub label: [u8; LABEL_LEN],
    /// The generation the in-sync plexes were last in sync at (the
    /// owner's record; 0 for a new volume). The card counts on from it.
    pub generation: u64,
    /// Plexes used in `plexes`, 1..=[`MIRROR_MAX_PLEXES`].
    pub plex_count: u8,
    /// Reserved, zero.
    pub reserved0: [u8; 7],
    /// The plexes; entries past `plex_count` all zero. At least one is
    /// [`PLEX_IN_SYNC`]; no two have the same target.
    pub plexes: [MirrorPlex; MIRROR_MAX_PLEXES],
    /// Reserved, zero.
    pub reserved: [u8; 176],
}
const _: () = assert!(core::mem::size_of::<MirrorNamespaceCreate>() == 1536);

impl Default for MirrorNamespaceCreate {
    fn default() -> Self {
        Self {
            label: [0; LABEL_LEN],
            generation: 0,
            plex_count: 0,
            reserved0: [0; 7],
            plexes: [MirrorPlex::ZERO; MIRROR_MAX_PLEXES],
            reserved: [0; 176],
        }
    }
}

/// Why the card refuses a [`MirrorNamespaceCreate`] (each is
/// [`STATUS_INVALID_FIELD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorCreateError {
    /// `plex_count` is 0 or above [`MIRROR_MAX_PLEXES`].
    PlexCount(u8),
    /// A plex's target does not pass [`RemoteTarget::validate`].
    Target(usize, RemoteTargetError),
    /// A plex's state is neither [`PLEX_IN_SYNC`] nor [`PLEX_NEW`].
    State(usize, u8),
    /// No plex is [`PLEX_IN_SYNC`]: there is nothing to copy from.
    NoneInSync,
    /// Two plexes have the same target (address, port, NQN, nsid).
    Duplicate(usize),
    /// A reserved byte, or an entry past `plex_count`, is not zero.
    Reserved,
}

impl MirrorCreateError {
    /// The completion status the card answers with.
    pub const fn status(self) -> u16 {
        STATUS_INVALID_FIELD
    }
}

impl MirrorNamespaceCreate {
    /// The plexes in use.
    pub fn plexes(&self) -> &[MirrorPlex] {
        let n = usize::from(self.plex_count).min(MIRROR_MAX_PLEXES);
        &self.plexes[..n]
    }

    /// Checks the request as the card does before it connects.
    ///
    /// ```
    /// use dia_abi::card::*;
    ///
    /// let mut m = MirrorNamespaceCreate::default();
    /// assert_eq!(m.validate(), Err(MirrorCreateError::PlexCount(0)));
    /// m.plex_count = 2;
    /// m.plexes[0].target = RemoteTarget::new("10.0.0.1", 4420, 1, "nqn.a", 0).unwrap();
    /// m.plexes[1].target = RemoteTarget::new("10.0.0.2", 4420, 1, "nqn.b", 0).unwrap();
    /// m.plexes[1].state = PLEX_NEW;
    /// assert_eq!(m.validate(), Ok(()));
    /// m.plexes[1].target = m.plexes[0].target;
    /// assert_eq!(m.validate(), Err(MirrorCreateError::Duplicate(1)));
    /// ```
    pub fn validate(&self) -> Result<(), MirrorCreateError> {
        let n = usize::from(self.plex_count);
        if n == 0 || n > MIRROR_MAX_PLEXES {
            return Err(MirrorCreateError::PlexCount(self.plex_count));
        }
        if self
            .reserved0
            .iter()
            .chain(self.reserved.iter())
            .any(|&b| b != 0)
            || self.plexes[n..].iter().any(|p| *p != MirrorPlex::ZERO)
        {
            return Err(MirrorCreateError::Reserved);
        }
        for (i, p) in self.plexes[..n].iter().enumerate() {
            p.target
                .validate()
                .map_err(|e| MirrorCreateError::Target(i, e))?;
            if p.state != PLEX_IN_SYNC && p.state != PLEX_NEW {
                return Err(MirrorCreateError::State(i, p.state));
            }
            if p.reserved.iter().any(|&b| b != 0) {
                return Err(MirrorCreateError::Reserved);
            }
            if self.plexes[..i].iter().any(|q| q.target == p.target) {
                return Err(MirrorCreateError::Duplicate(i));
            }
        }
        if !self.plexes[..n].iter().any(|p| p.state == PLEX_IN_SYNC) {
            return Err(MirrorCreateError::NoneInSync);
        }
        Ok(())
    }
}

/// One plex in [`MirrorStatus`] (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlexStatus {
    /// [`PLEX_IN_SYNC`], [`PLEX_OUT_OF_SYNC`] or [`PLEX_RESYNCING`].
    pub state: u8,
    /// The card's path to the plex's target now, `REMOTE_PATH_*`.
    pub path: u8,
    /// 1 when the plex is this card's own pool (served without the
    /// network), else 0.
    pub local: u8,
    /// Reserved, zero.
    pub reserved: [u8; 5],
    /// Regions ([`MIRROR_REGION_SHIFT`]) the plex misses: what a resync
    /// still has to copy to it (0 when in sync).
    pub dirty_regions: u64,
    /// Bytes resyncs copied to this plex since the namespace was created
    /// (kept across firmware restarts).
    pub resync_bytes: u64,
    /// Bytes per second of the running resync over its last seconds (0
    /// when none runs).
    pub resync_bytes_per_s: u64,
    /// Times the plex was taken out of sync.
    pub faults: u64,
    /// Reads served from the plex since the firmware started.
    pub reads: u64,
    /// Reserved, zero.
    pub reserved1: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<PlexStatus>() == 64);

/// Log page [`LOG_MIRROR_STATUS`]: a mirrored namespace's plexes, as the
/// card sees them now (320 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStatus {
    /// The mirror's generation: one more each time the set of in-sync
    /// plexes changes (persisted with it).
    pub generation: u64,
    /// Regions of the namespace.
    pub regions: u64,
    /// Plexes in `plexes`.
    pub plex_count: u8,
    /// Reserved, zero.
    pub reserved: [u8; 15],
    /// Reserved, zero.
    pub reserved1: [u8; 32],
    /// In the order Create Mirror Namespace gave them.
    pub plexes: [PlexStatus; MIRROR_MAX_PLEXES],
}
const _: () = assert!(core::mem::size_of::<MirrorStatus>() == 320);

// ---------------------------------------------------------------------------
// Network ports (interface 1.1, capability bit 1): virtual ports with their
// own MAC, descriptor rings in host RAM and MSI-X vector, an embedded switch
// that forwards only within a VLAN, an uplink that carries tagged frames
// off the card, and per-port egress rate limits. See docs/card-interface.md.
// ---------------------------------------------------------------------------

/// Interface minor version that added network ports.
pub const INTERFACE_MINOR_NETWORK: u32 = 1;
/// Interface minor version that added [`PortStats::tx_spoofed`] (out of
/// reserved bytes): the switch drops a frame whose source MAC is not its
/// port's. A 1.1 card reports 0 there.
pub const INTERFACE_MINOR_PORT_SPOOFED: u32 = 2;
/// Interface minor version that added [`ADMIN_ABORT`] (with the vendor
/// [`ABORT_KEEP_QUEUED`] query) and a CAP.TO that covers a reset's wait for
/// running commands ([`CAP_TIMEOUT_500MS`]). A 1.2 card answers Abort with
/// Invalid Opcode.
pub const INTERFACE_MINOR_ABORT: u32 = 3;
/// Interface minor version that added remote namespaces
/// ([`ADMIN_CREATE_REMOTE_NS`]: data behind another NVMe/TCP target, the
/// card its initiator) and their fields in Identify Namespace. A 1.3 card
/// answers Create Remote Namespace with Invalid Opcode.
pub const INTERFACE_MINOR_REMOTE: u32 = 4;
/// Interface minor version that added [`PORT_TX_IRQ_OFF`] (a driver that
/// reclaims sent descriptors from its transmit path asks for no interrupt
/// for TX progress alone) and [`RX_CSUM_OK`] (the card checked a received
/// frame's checksums). A 1.5 card ignores the register and interrupts as
/// before, and never sets the bit, which is still correct.
pub const INTERFACE_MINOR_PORT_TX_IRQ: u32 = 6;
/// Interface minor version that added TCP segmentation offload ([`TX_TSO`],
/// [`PORT_TSO_FRAME_MAX`]) and the TSO counters of [`PortStats`] (out of
/// bytes a 1.6 card leaves zero at the end of the log page). A 1.6 card does
/// not know [`TX_TSO`] and would send such a frame whole (or drop it as
/// over the MTU), so a driver sets it only on a card whose Identify reports
/// at least this minor.
pub const INTERFACE_MINOR_PORT_TSO: u32 = 7;

/// Create Port (dia vendor admin command): CDW10 ([`PortTarget`]) = the
/// port id wanted (1..=`max_ports`; 0: the lowest free one; a driver
/// recreating its ports after a reset asks for the ids they had, so their
/// MACs stay the same);
/// PRP1 points at [`PortCreate`] (4 KiB page), into which the card writes
/// the port's MAC back. Result DW0: the port id. A port's MAC depends only
/// on the card's serial number and the port id.
pub const ADMIN_CREATE_PORT: u8 = 0xc4;
/// Delete Port: CDW10 ([`PortTarget`]) = port id. The card stops using the
/// port's rings before it completes the command.
pub const ADMIN_DELETE_PORT: u8 = 0xc5;
/// Set Port: CDW10 ([`PortTarget`]) = port id; PRP1 points at
/// [`PortConfig`]; applies to the next frame.
pub const ADMIN_SET_PORT: u8 = 0xc6;
/// Vendor log page (dia): [`PortStats`] of the port in CDW11 bits 15:0,
/// [`PortStatsLog`] (SQE.nsid is unused and must be 0).
pub const LOG_PORT_STATS: u8 = 0xc2;
/// dia: no such port (command specific).
pub const STATUS_INVALID_PORT: u16 = 0x1c2;
/// dia: every port id is in use (command specific).
pub const STATUS_PORT_LIMIT: u16 = 0x1c3;

/// CDW10 of Create Port, Delete Port and Set Port: the port (the whole
/// dword is the id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortTarget {
    /// The port id, 1..=`max_ports`; for Create Port 0 asks for the lowest
    /// free one.
    pub port: u16,
}

impl PortTarget {
    /// Encodes the word.
    pub const fn cdw10(self) -> u32 {
        self.port as u32
    }

    /// Decodes the word; an id above 16 bits is no port
    /// ([`STATUS_INVALID_PORT`]).
    pub const fn from_cdw10(cdw10: u32) -> Result<Self, CommandWordError> {
        if cdw10 > u16::MAX as u32 {
            return Err(CommandWordError::PortId(cdw10));
        }
        Ok(Self { port: cdw10 as u16 })
    }
}

/// CDW11 of Get Log Page [`LOG_PORT_STATS`]: the port whose counters are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStatsLog {
    /// Bits 15:0: the port id.
    pub port: u16,
}

impl PortStatsLog {
    /// Encodes the word.
    pub const fn cdw11(self) -> u32 {
        self.port as u32
    }

    /// Decodes the word.
    pub const fn from_cdw11(cdw11: u32) -> Self {
        Self { port: cdw11 as u16 }
    }
}

/// Largest MTU (IP packet bytes, without the 14-byte Ethernet header and
/// 4-byte VLAN tag) a port carries.
pub const PORT_MTU_MAX: u16 = 9000;
/// Smallest MTU a port accepts.
pub const PORT_MTU_MIN: u16 = 68;
/// Largest Ethernet frame a port carries (MTU max + header, no FCS): a
/// receive buffer of this size holds any frame.
pub const PORT_FRAME_MAX: u32 = PORT_MTU_MAX as u32 + 14;
/// VLAN ids a port may be on (802.1Q; 0 and 4095 are reserved).
pub const VLAN_MIN: u16 = 1;
/// Highest VLAN id.
pub const VLAN_MAX: u16 = 4094;
/// Largest ring, in descriptors (a power of two, 4 KiB of descriptors).
pub const PORT_RING_MAX: u16 = 256;

/// Longest [`PortLimits::burst_ms`].
pub const PORT_BURST_MAX_MS: u32 = 10_000;
/// The limits' burst when [`PortLimits::burst_ms`] is 0.
pub const PORT_BURST_DEFAULT_MS: u32 = 10;

/// A port's service level: egress (frames the host sends on the port) is
/// shaped by token buckets on bytes and packets. Zero: no limit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLimits {
    /// Most bits per second (Ethernet frame bytes x 8, no preamble/FCS).
    pub max_bits_per_s: u64,
    /// Most packets per second.
    pub max_pps: u64,
    /// Burst in milliseconds of the limit, at most [`PORT_BURST_MAX_MS`]
    /// (0: [`PORT_BURST_DEFAULT_MS`]).
    pub burst_ms: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<PortLimits>() == 24);

/// Why the card refuses a [`PortConfig`] or [`PortLimits`] (`STATUS_INVALID_FIELD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortConfigError {
    /// The VLAN is outside [`VLAN_MIN`]..=[`VLAN_MAX`].
    Vlan(u16),
    /// The MTU is outside [`PORT_MTU_MIN`]..=[`PORT_MTU_MAX`].
    Mtu(u16),
    /// The burst is above [`PORT_BURST_MAX_MS`].
    BurstMs(u32),
    /// A reserved field is not zero.
    Reserved,
}

impl PortLimits {
    /// Checks the limits as the card does before it takes them.
    pub const fn validate(&self) -> Result<(), PortConfigError> {
        if self.burst_ms > PORT_BURST_MAX_MS {
            return Err(PortConfigError::BurstMs(self.burst_ms));
        }
        if self.reserved != 0 {
            return Err(PortConfigError::Reserved);
        }
        Ok(())
    }

    /// The limits' burst in milliseconds, with 0 read as the default.
    pub const fn burst_or_default_ms(&self) -> u32 {
        if self.burst_ms == 0 {
            PORT_BURST_DEFAULT_MS
        } else {
            self.burst_ms
        }
    }
}

/// What the driver can change on a live port (Set Port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    /// VLAN id, [`VLAN_MIN`]..=[`VLAN_MAX`].
    pub vlan: u16,
    /// MTU, [`PORT_MTU_MIN`]..=[`PORT_MTU_MAX`]; larger frames are dropped
    /// (counted) in both directions.
    pub mtu: u16,
    /// Reserved, zero.
    pub reserved: u32,
    /// Egress limits.
    pub limits: PortLimits,
}
const _: () = assert!(core::mem::size_of::<PortConfig>() == 32);

impl PortConfig {
    /// Checks the configuration as the card does (Create and Set Port).
    pub const fn validate(&self) -> Result<(), PortConfigError> {
        if self.vlan < VLAN_MIN || self.vlan > VLAN_MAX {
            return Err(PortConfigError::Vlan(self.vlan));
        }
        if self.mtu < PORT_MTU_MIN || self.mtu > PORT_MTU_MAX {
            return Err(PortConfigError::Mtu(self.mtu));
        }
        if self.reserved != 0 {
            return Err(PortConfigError::Reserved);
        }
        self.limits.validate()
    }
}

/// Create Port data (PRP1). Rings are physically contiguous arrays of 16-byte
/// descriptors ([`TxDescriptor`], [`RxDescriptor`]) the driver allocated.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCreate {
    /// Initial configuration.
    pub config: PortConfig,
    /// Guest-physical address of the transmit ring (4 KiB aligned).
    pub tx_ring: u64,
    /// Guest-physical address of the receive ring (4 KiB aligned).
    pub rx_ring: u64,
    /// Transmit ring entries, a power of two,
    /// [`PORT_RING_MIN`]..=[`PORT_RING_MAX`].
    pub tx_entries: u16,
    /// Receive ring entries, a power of two,
    /// [`PORT_RING_MIN`]..=[`PORT_RING_MAX`].
    pub rx_entries: u16,
    /// MSI-X vector (and doorbell vector) of the port: not 0 and not one an
    /// I/O completion queue uses; the card raises it, the driver rings it.
    pub vector: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// Out (written back to the same page by the card): the port's MAC.
    pub mac: [u8; 6],
    /// Reserved, zero.
    pub reserved2: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PortCreate>() == 64);

/// Smallest ring, in descriptors.
pub const PORT_RING_MIN: u16 = 2;

/// Whether a port ring of `entries` descriptors is one the card takes: a
/// power of two, [`PORT_RING_MIN`]..=[`PORT_RING_MAX`].
pub const fn port_ring_entries_ok(entries: u16) -> bool {
    entries.is_power_of_two() && entries >= PORT_RING_MIN && entries <= PORT_RING_MAX
}

/// Why the card refuses a [`PortCreate`] (`STATUS_INVALID_FIELD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortCreateError {
    /// The configuration is refused.
    Config(PortConfigError),
    /// A reserved field is not zero.
    Reserved,
    /// A ring's entries are not a power of two in
    /// [`PORT_RING_MIN`]..=[`PORT_RING_MAX`].
    RingEntries(u16),
}

impl PortCreate {
    /// Checks what Create Port can check without guest memory, as the card
    /// does, in this order: the configuration, the reserved fields, the
    /// rings' entries. (Where the rings lie, the vector and the port id are
    /// the card's to check.)
    ///
    /// ```
    /// use dia_abi::card::{PortConfig, PortCreate, PortCreateError};
    ///
    /// let ok = PortCreate {
    ///     config: PortConfig { vlan: 1, mtu: 1500, ..Default::default() },
    ///     tx_entries: 256,
    ///     rx_entries: 64,
    ///     ..Default::default()
    /// };
    /// assert_eq!(ok.validate(), Ok(()));
    /// assert_eq!(
    ///     PortCreate { rx_entries: 48, ..ok }.validate(),
    ///     Err(PortCreateError::RingEntries(48))
    /// );
    /// assert_eq!(PortCreate { reserved: 1, ..ok }.validate(), Err(PortCreateError::Reserved));
    /// ```
    pub const fn validate(&self) -> Result<(), PortCreateError> {
        if let Err(e) = self.config.validate() {
            return Err(PortCreateError::Config(e));
        }
        if self.reserved != 0 || self.reserved2[0] != 0 || self.reserved2[1] != 0 {
            return Err(PortCreateError::Reserved);
        }
        if !port_ring_entries_ok(self.tx_entries) {
            return Err(PortCreateError::RingEntries(self.tx_entries));
        }
        if !port_ring_entries_ok(self.rx_entries) {
            return Err(PortCreateError::RingEntries(self.rx_entries));
        }
        Ok(())
    }
}

/// Port registers: a block of [`PORT_REG_STRIDE`] bytes per port in BAR2.
pub const PORT_REG_BASE: usize = 0x8000;
/// Bytes per port register block.
pub const PORT_REG_STRIDE: usize = 64;
/// Offset of port `port`'s register block.
pub const fn port_regs(port: u16) -> usize {
    PORT_REG_BASE + port as usize * PORT_REG_STRIDE
}
/// Driver writes: index of the next TX descriptor it will fill (descriptors
/// from the card's TX head up to here are ready to send).
pub const PORT_TX_TAIL: usize = 0x00;
/// Card writes: index of the next TX descriptor it will send; everything
/// before it is sent and may be reused.
pub const PORT_TX_HEAD: usize = 0x04;
/// Driver writes: index after the last RX buffer it posted.
pub const PORT_RX_TAIL: usize = 0x08;
/// Card writes: index of the next RX descriptor it will fill.
pub const PORT_RX_HEAD: usize = 0x0c;
/// Card writes: bit 0 link up.
pub const PORT_LINK: usize = 0x10;
/// Driver writes: bit 0 set masks the port's interrupt (NAPI polling); the
/// card raises the vector only while it is clear. After clearing it the
/// driver must look at its rings once more.
pub const PORT_IRQ_MASK: usize = 0x14;
/// Driver writes (1.6; 0 at Create Port): bit 0 set: TX progress alone
/// (TX_HEAD moved) does not raise the port's vector; frames written into RX
/// buffers still do. The driver reclaims sent descriptors when it queues
/// more or when it polls; it clears the bit when it runs out of
/// descriptors, and must read TX_HEAD again after clearing it (the card
/// reads the bit after updating TX_HEAD, with a full fence in between).
pub const PORT_TX_IRQ_OFF: usize = 0x18;

/// Transmit descriptor: one buffer of a frame. A frame is one or more
/// consecutive descriptors, the last with [`TX_EOP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxDescriptor {
    /// Guest-physical address of the bytes.
    pub addr: u64,
    /// Bytes in this buffer (1..=65535).
    pub len: u16,
    /// `TX_*` flags.
    pub flags: u16,
    /// With [`TX_CSUM`] (first descriptor of a frame only): where the
    /// checksummed region starts, in bytes from the start of the frame.
    pub csum_start: u16,
    /// With [`TX_CSUM`]: where the 16-bit checksum goes, in bytes from
    /// `csum_start`.
    pub csum_offset: u16,
}
/// Last buffer of a frame.
pub const TX_EOP: u16 = 1 << 0;
/// Checksum offload (first descriptor of a frame): the card computes the
/// Internet checksum (ones' complement sum) of the frame's bytes from
/// `csum_start` to the end of the frame, with the checksum field as the
/// driver left it (seeded with the pseudo-header sum, as Linux's
/// `CHECKSUM_PARTIAL`), and stores its complement at `csum_start +
/// csum_offset` before the frame leaves the port. A region that does not
/// fit the frame drops the frame (counted in `tx_dropped`).
pub const TX_CSUM: u16 = 1 << 1;
/// (1.7) TCP segmentation offload (first descriptor of a frame): the frame
/// is one IPv4 or IPv6 TCP packet with up to [`PORT_TSO_FRAME_MAX`] bytes
/// that the card cuts into segments of at most `csum_offset` TCP payload
/// bytes (the MSS; with this flag `csum_offset` is the MSS, not a checksum
/// offset), `csum_start` being where the TCP header starts. Each segment
/// carries a copy of the headers with the IPv4 total length, identification
/// (the first segment's plus the segment's index) and header checksum, or
/// the IPv6 payload length, the TCP sequence number, FIN and PSH (last
/// segment only), CWR (first segment only) and the TCP checksum (over the
/// pseudo-header, whatever the field held) made right; each then leaves the
/// port as an ordinary frame (MTU, limits, switch, counters). [`TX_CSUM`]
/// is implied and ignored. Dropped (counted in `tx_dropped`): an MSS of 0
/// or one whose segment (headers + MSS) is over the port's MTU, a frame
/// over [`PORT_TSO_FRAME_MAX`], headers that are not IPv4 (no fragment,
/// `csum_start` right after its header) or IPv6 (`csum_start` at or after
/// its fixed header; extension headers are copied as they are) carrying
/// TCP, or headers that do not fit the frame.
pub const TX_TSO: u16 = 1 << 2;
/// (1.7) Largest frame (Ethernet header included) a [`TX_TSO`] frame may
/// have, before it is cut: 64 KiB.
pub const PORT_TSO_FRAME_MAX: u32 = 65_536;

/// Receive descriptor: the driver posts an empty buffer (`addr`, `len` =
/// its size, `status` = 0); the card fills it with one whole frame, writes
/// `len` = frame bytes, then `status` (written last; read it first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxDescriptor {
    /// Guest-physical address of the buffer.
    pub addr: u64,
    /// In: buffer size; out: frame length.
    pub len: u16,
    /// Reserved, zero.
    pub reserved: u16,
    /// Out: `RX_DONE` once filled.
    pub status: u32,
}
/// The card filled this descriptor.
pub const RX_DONE: u32 = 1 << 0;
/// (1.6) With [`RX_DONE`]: the frame is IPv4 or IPv6 carrying one whole TCP
/// or UDP packet (no fragment, no IPv6 extension header, a UDP checksum
/// present) and the card found its checksums right: the IPv4 header's and
/// the TCP or UDP one over the pseudo-header. Clear says nothing (not
/// checked, or wrong): the host checks.
pub const RX_CSUM_OK: u32 = 1 << 1;
/// Byte offset of `status` in an RX descriptor.
pub const RX_STATUS_OFFSET: usize = 12;
/// Size of a ring descriptor.
pub const PORT_DESC_SIZE: usize = 16;
const _: () = assert!(core::mem::size_of::<TxDescriptor>() == PORT_DESC_SIZE);
const _: () = assert!(core::mem::size_of::<RxDescriptor>() == PORT_DESC_SIZE);
const _: () = assert!(core::mem::offset_of!(RxDescriptor, status) == RX_STATUS_OFFSET);

/// Per-port counters since the port was created (log page [`LOG_PORT_STATS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames the host sent on the port.
    pub tx_packets: u64,
    /// Bytes of those frames.
    pub tx_bytes: u64,
    /// Frames delivered to the host on the port.
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Sent frames dropped (malformed, over the MTU, tagged, no destination,
    /// spoofed).
    pub tx_dropped: u64,
    /// Frames for the port dropped (no RX buffer posted, over the MTU).
    pub rx_dropped: u64,
    /// Time the port's egress waited for its limits, nanoseconds.
    pub throttled_ns: u64,
    /// Of `tx_dropped`: frames whose source MAC was not the port's
    /// (interface 1.2; reserved, zero, before).
    pub tx_spoofed: u64,
    /// (1.7) [`TX_TSO`] frames the card cut into segments (each segment is
    /// also counted in `tx_packets` and `tx_bytes` as sent).
    pub tx_tso_frames: u64,
    /// (1.7) Segments those frames were cut into.
    pub tx_tso_segments: u64,
}
const _: () = assert!(core::mem::size_of::<PortStats>() == 80);
