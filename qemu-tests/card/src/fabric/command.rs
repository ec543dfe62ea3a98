//! The NVMe side of a command capsule: a read-only view of the 64-byte
//! submission entry (common fields, the SGL data pointer, the Fabrics
//! command fields), the data direction its opcode implies, and the status
//! codes the target answers with (SCT << 8 | SC, as the card's ABI spells
//! them; the response capsule shifts them past the phase bit).

/// Status codes (Status Code Type << 8 | Status Code).
pub mod status {
    /// Successful Completion.
    pub const SUCCESS: u16 = 0x000;
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: u16 = 0x001;
    /// Invalid Field in Command.
    pub const INVALID_FIELD: u16 = 0x002;
    /// Internal Error.
    pub const INTERNAL_ERROR: u16 = 0x006;
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: u16 = 0x00b;
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE: u16 = 0x00c;
    /// Data SGL Length Invalid.
    pub const SGL_LENGTH_INVALID: u16 = 0x00f;
    /// SGL Descriptor Type Invalid.
    pub const SGL_TYPE_INVALID: u16 = 0x011;
    /// SGL Offset Invalid.
    pub const SGL_OFFSET_INVALID: u16 = 0x016;
    /// Transient Transport Error (e.g. a data digest mismatch).
    pub const TRANSIENT_TRANSPORT: u16 = 0x022;
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: u16 = 0x080;
    /// Namespace Not Ready.
    pub const NAMESPACE_NOT_READY: u16 = 0x082;
    /// Invalid Log Page.
    pub const INVALID_LOG_PAGE: u16 = 0x109;
    /// Feature Identifier Not Saveable.
    pub const FEATURE_NOT_SAVEABLE: u16 = 0x10d;
    /// Connect: Incompatible Format.
    pub const CONNECT_INCOMPATIBLE_FORMAT: u16 = 0x180;
    /// Connect: Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: u16 = 0x181;
    /// Connect: Invalid Parameters.
    pub const CONNECT_INVALID_PARAMETERS: u16 = 0x182;
    /// Do Not Retry: the same command would fail again.
    pub const DNR: u16 = 0x4000;
}

/// Fabrics command type (the capsule's byte 4 when the opcode is 0x7f).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
}

/// Opcodes.
pub mod opcode {
    /// Fabrics commands (any queue).
    pub const FABRICS: u8 = 0x7f;
    /// Admin: Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Admin: Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Admin: Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Admin: Get Features.
    pub const GET_FEATURES: u8 = 0x0a;
    /// Admin: Asynchronous Event Request.
    pub const ASYNC_EVENT: u8 = 0x0c;
    /// Admin: Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Admin (dia vendor): Set Plex Record (`dia_abi::card::ADMIN_SET_PLEX_RECORD`),
    /// host-to-controller data although its two low bits say both ways.
    pub const SET_PLEX_RECORD: u8 = dia_abi::card::ADMIN_SET_PLEX_RECORD;
    /// NVM: Flush.
    pub const FLUSH: u8 = 0x00;
    /// NVM: Write.
    pub const WRITE: u8 = 0x01;
    /// NVM: Read.
    pub const READ: u8 = 0x02;
    /// NVM: Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// NVM: Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
}

/// Property offsets (Property Get/Set), as in the controller registers.
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1c;
}

/// Feature identifiers (Set/Get Features, command dword 10 bits 7:0).
pub mod feature {
    /// Number of Queues.
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Keep Alive Timer.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
}

/// Identify CNS values (command dword 10 bits 7:0).
pub mod cns {
    /// Identify Namespace.
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller.
    pub const CONTROLLER: u8 = 0x01;
}

/// The flags byte's PSDT (bits 7:6) = 01b: the data pointer is an SGL.
pub const PSDT_SGL: u8 = 1 << 6;

/// Which way a command's data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// No data.
    None,
    /// Host to controller (in-capsule or through R2T/H2CData).
    ToController,
    /// Controller to host (C2HData).
    ToHost,
}

/// The SGL descriptor in a command's data pointer (bytes 24..40).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgl {
    /// Address (for in-capsule data: the offset into it).
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Descriptor type (high nibble) and subtype (low nibble).
    pub id: u8,
}

/// SGL descriptor identifiers the NVMe/TCP host uses.
pub mod sgl_id {
    /// Data Block descriptor, Offset subtype: in-capsule data.
    pub const IN_CAPSULE: u8 = 0x01;
    /// Transport SGL Data Block descriptor, transport-specific subtype:
    /// data moved by R2T/H2CData or C2HData (length 0: no data).
    pub const TRANSPORT: u8 = 0x5a;
}

/// A submission queue entry as it came in a capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(pub [u8; 64]);

impl Command {
    fn u16_at(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.0[at], self.0[at + 1]])
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes([self.0[at], self.0[at + 1], self.0[at + 2], self.0[at + 3]])
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from(self.u32_at(at)) | u64::from(self.u32_at(at + 4)) << 32
    }

    /// Opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// Flags byte (FUSE in bits 1:0, PSDT in bits 7:6).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.u16_at(2)
    }

    /// Namespace id (for Fabrics commands: part of reserved space).
    pub fn nsid(&self) -> u32 {
        self.u32_at(4)
    }

    /// Fabrics command type.
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        self.u32_at(n * 4)
    }

    /// The data pointer as an SGL descriptor.
    pub fn sgl(&self) -> Sgl {
        Sgl {
            addr: self.u64_at(24),
            length: self.u32_at(32),
            id: self.0[39],
        }
    }

    /// Whether this is a Fabrics command.
    pub fn is_fabrics(&self) -> bool {
        self.opcode() == opcode::FABRICS
    }

    /// The data direction the opcode (or Fabrics command type) encodes in
    /// its two low bits.
    pub fn direction(&self) -> Direction {
        let code = if self.is_fabrics() {
            self.fctype()
        } else {
            self.opcode()
        };
        if !self.is_fabrics() && code == opcode::SET_PLEX_RECORD {
            return Direction::ToController;
        }
        match code & 3 {
            1 => Direction::ToController,
            2 => Direction::ToHost,
            // 0: none; 3 (bidirectional) is not supported by any command here.
            _ => Direction::None,
        }
    }

    /// Connect: record format.
    pub fn connect_recfmt(&self) -> u16 {
        self.u16_at(40)
    }

    /// Connect: queue id.
    pub fn connect_qid(&self) -> u16 {
        self.u16_at(42)
    }

    /// Connect: submission queue size, 0's based.
    pub fn connect_sqsize(&self) -> u16 {
        self.u16_at(44)
    }

    /// Connect: keep alive timeout in milliseconds.
    pub fn connect_kato(&self) -> u32 {
        self.u32_at(48)
    }

    /// Property Get/Set: attributes (bits 2:0: 0 = 4 bytes, 1 = 8 bytes).
    pub fn property_attrib(&self) -> u8 {
        self.0[40]
    }

    /// Property Get/Set: property offset.
    pub fn property_offset(&self) -> u32 {
        self.u32_at(44)
    }

    /// Property Set: the value.
    pub fn property_value(&self) -> u64 {
        self.u64_at(48)
    }

    /// Read/Write/Write Zeroes: starting LBA.
    pub fn slba(&self) -> u64 {
        u64::from(self.cdw(10)) | u64::from(self.cdw(11)) << 32
    }

    /// Read/Write/Write Zeroes: number of blocks (1-based).
    pub fn blocks(&self) -> u64 {
        u64::from(self.cdw(12) & 0xffff) + 1
    }

    /// Write: Force Unit Access.
    pub fn fua(&self) -> bool {
        self.cdw(12) & (1 << 30) != 0
    }
}

/// The host side: building a command (the same byte offsets the
/// accessors above read).
impl Command {
    /// A command with opcode `op` and every other field zero.
    pub fn new(op: u8) -> Self {
        let mut c = Self([0; 64]);
        c.0[0] = op;
        c
    }

    /// A Fabrics command of type `fct`.
    pub fn fabrics(fct: u8) -> Self {
        let mut c = Self::new(opcode::FABRICS);
        c.0[4] = fct;
        c
    }

    fn put(&mut self, at: usize, v: &[u8]) {
        self.0[at..at + v.len()].copy_from_slice(v);
    }

    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        self.0[1] = flags;
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.put(2, &cid.to_le_bytes());
    }

    /// Sets the namespace id (not for Fabrics commands).
    pub fn set_nsid(&mut self, nsid: u32) {
        self.put(4, &nsid.to_le_bytes());
    }

    /// Sets command dword `n` (10..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        self.put(n * 4, &v.to_le_bytes());
    }

    /// Sets the data pointer to an SGL descriptor.
    pub fn set_sgl(&mut self, sgl: Sgl) {
        self.put(24, &sgl.addr.to_le_bytes());
        self.put(32, &sgl.length.to_le_bytes());
        self.put(36, &[0; 3]);
        self.0[39] = sgl.id;
    }

    /// Connect: record format 0, queue id, SQ size (0's based), KATO (ms).
    pub fn set_connect(&mut self, qid: u16, sqsize: u16, kato_ms: u32) {
        self.put(40, &0u16.to_le_bytes());
        self.put(42, &qid.to_le_bytes());
        self.put(44, &sqsize.to_le_bytes());
        self.put(48, &kato_ms.to_le_bytes());
    }

    /// Property Get/Set: size (`eight`: 8 bytes), offset and value (Set).
    pub fn set_property(&mut self, eight: bool, offset: u32, value: u64) {
        self.0[40] = u8::from(eight);
        self.put(44, &offset.to_le_bytes());
        self.put(48, &value.to_le_bytes());
    }
}

/// The Connect command's data (1024 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub hostid: [u8; 16],
    /// Controller id (0xffff: any, on the admin queue).
    pub cntlid: u16,
    /// The subsystem the host asks for.
    pub subnqn: String,
    /// The host's NQN.
    pub hostnqn: String,
}

/// Bytes of the Connect data.
pub const CONNECT_DATA_BYTES: usize = 1024;

impl ConnectData {
    /// Parses the Connect data; `None` when it is too short.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < CONNECT_DATA_BYTES {
            return None;
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&b[..16]);
        Some(Self {
            hostid,
            cntlid: u16::from_le_bytes([b[16], b[17]]),
            subnqn: nqn(&b[256..512]),
            hostnqn: nqn(&b[512..768]),
        })
    }
}

impl ConnectData {
    /// The 1024 bytes of the Connect data (NQNs cut to leave a NUL).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_BYTES];
        b[..16].copy_from_slice(&self.hostid);
        b[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        for (at, s) in [(256, &self.subnqn), (512, &self.hostnqn)] {
            let n = s.len().min(NQN_FIELD_BYTES - 1);
            b[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        }
        b
    }
}

/// Bytes of an NQN field in the Connect data.
const NQN_FIELD_BYTES: usize = 256;

/// A NUL-terminated (or full) NQN field as text.
fn nqn(field: &[u8]) -> String {
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let mut b = [0u8; 64];
        b[0] = opcode::FABRICS;
        b[2..4].copy_from_slice(&0x1234u16.to_le_bytes());
        b[4] = fctype::CONNECT;
        b[24..32].copy_from_slice(&0u64.to_le_bytes());
        b[32..36].copy_from_slice(&1024u32.to_le_bytes());
        b[39] = sgl_id::IN_CAPSULE;
        b[42..44].copy_from_slice(&3u16.to_le_bytes());
        b[44..46].copy_from_slice(&127u16.to_le_bytes());
        b[48..52].copy_from_slice(&5000u32.to_le_bytes());
        let c = Command(b);
        assert_eq!(c.cid(), 0x1234);
        assert!(c.is_fabrics());
        assert_eq!(c.direction(), Direction::ToController);
        assert_eq!(c.connect_qid(), 3);
        assert_eq!(c.connect_sqsize(), 127);
        assert_eq!(c.connect_kato(), 5000);
        assert_eq!(
            c.sgl(),
            Sgl {
                addr: 0,
                length: 1024,
                id: sgl_id::IN_CAPSULE
            }
        );
        let mut r = [0u8; 64];
        r[0] = opcode::READ;
        assert_eq!(Command(r).direction(), Direction::ToHost);
        r[0] = opcode::FLUSH;
        assert_eq!(Command(r).direction(), Direction::None);
    }

    #[test]
    fn built_commands_read_back() {
        let mut c = Command::fabrics(fctype::CONNECT);
        c.set_cid(0xbeef);
        c.set_connect(2, 127, 0);
        c.set_sgl(Sgl {
            addr: 0,
            length: 1024,
            id: sgl_id::IN_CAPSULE,
        });
        assert_eq!(
            (c.cid(), c.connect_qid(), c.connect_sqsize()),
            (0xbeef, 2, 127)
        );
        assert_eq!(c.sgl().length, 1024);
        let mut r = Command::new(opcode::READ);
        r.set_flags(PSDT_SGL);
        r.set_nsid(1);
        r.set_cdw(10, 5);
        r.set_cdw(12, 7 | 1 << 30);
        assert_eq!((r.nsid(), r.slba(), r.blocks(), r.fua()), (1, 5, 8, true));
        let mut p = Command::fabrics(fctype::PROPERTY_SET);
        p.set_property(false, property::CC, 0x46_0001);
        assert_eq!(p.property_offset(), property::CC);
        assert_eq!(p.property_value(), 0x46_0001);
        let d = ConnectData {
            hostid: [7; 16],
            cntlid: 3,
            subnqn: "nqn.sub".into(),
            hostnqn: "h".repeat(300),
        };
        let back = ConnectData::parse(&d.encode()).unwrap();
        assert_eq!((back.cntlid, back.subnqn.as_str()), (3, "nqn.sub"));
        assert_eq!(back.hostnqn.len(), 255);
    }

    #[test]
    fn connect_data() {
        let mut d = vec![0u8; 1024];
        d[16] = 0xff;
        d[17] = 0xff;
        d[256..256 + 5].copy_from_slice(b"nqn.x");
        d[512..768].fill(b'h');
        let c = ConnectData::parse(&d).unwrap();
        assert_eq!(c.cntlid, 0xffff);
        assert_eq!(c.subnqn, "nqn.x");
        assert_eq!(c.hostnqn.len(), 256);
        assert!(ConnectData::parse(&d[..1000]).is_none());
    }
}
