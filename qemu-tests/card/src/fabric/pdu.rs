//! The NVMe/TCP PDU codec (NVMe/TCP Transport Specification 1.0): the
//! common 8-byte header, its checks against the PDU type (HLEN, PDO, PLEN,
//! digest flags), header and data digests (CRC32C), and every PDU type as a
//! value. Pure: bytes in, values out, and back. Any inconsistency becomes a
//! [`Fatal`] carrying the Fatal Error Status and Information a C2HTermReq
//! reports, never a panic, whatever the bytes.

use thiserror::Error;

use super::digest::crc32c;

/// Bytes of the common header.
pub const HEADER_BYTES: usize = 8;
/// Bytes of a header or data digest.
pub const DIGEST_BYTES: usize = 4;
/// Bytes of an NVMe submission queue entry (the command in a capsule).
pub const SQE_BYTES: usize = 64;
/// Bytes of an NVMe completion queue entry (the response in a capsule).
pub const CQE_BYTES: usize = 16;

/// PDU types.
pub mod kind {
    /// Initialize Connection Request (host to controller).
    pub const IC_REQ: u8 = 0x00;
    /// Initialize Connection Response.
    pub const IC_RESP: u8 = 0x01;
    /// Host to Controller Terminate Connection Request.
    pub const H2C_TERM: u8 = 0x02;
    /// Controller to Host Terminate Connection Request.
    pub const C2H_TERM: u8 = 0x03;
    /// Command capsule.
    pub const CAPSULE_CMD: u8 = 0x04;
    /// Response capsule.
    pub const CAPSULE_RESP: u8 = 0x05;
    /// Host to Controller data.
    pub const H2C_DATA: u8 = 0x06;
    /// Controller to Host data.
    pub const C2H_DATA: u8 = 0x07;
    /// Ready to Transfer.
    pub const R2T: u8 = 0x09;
}

/// Header flags.
pub mod flag {
    /// A header digest follows the header.
    pub const HDGST: u8 = 1 << 0;
    /// A data digest follows the data.
    pub const DDGST: u8 = 1 << 1;
    /// Last data PDU of a transfer.
    pub const DATA_LAST: u8 = 1 << 2;
    /// C2HData: the command succeeded, no response capsule follows.
    pub const DATA_SUCCESS: u8 = 1 << 3;
}

/// Fatal Error Status values of a termination request.
pub mod fes {
    /// Invalid PDU Header Field (FEI: the field's byte offset).
    pub const INVALID_HEADER: u16 = 0x01;
    /// PDU Sequence Error.
    pub const SEQUENCE: u16 = 0x02;
    /// Header Digest Error.
    pub const HEADER_DIGEST: u16 = 0x03;
    /// Data Transfer Out of Range.
    pub const OUT_OF_RANGE: u16 = 0x04;
    /// Data Transfer Limit Exceeded (also: R2T Limit Exceeded).
    pub const LIMIT_EXCEEDED: u16 = 0x05;
    /// Unsupported Parameter (FEI: the field's byte offset).
    pub const UNSUPPORTED_PARAMETER: u16 = 0x06;
}

/// Header length of each PDU type.
pub mod hlen {
    /// ICReq and ICResp.
    pub const IC: u8 = 128;
    /// H2CTermReq and C2HTermReq.
    pub const TERM: u8 = 24;
    /// CapsuleCmd: the header plus a 64-byte command.
    pub const CAPSULE_CMD: u8 = 72;
    /// CapsuleResp: the header plus a 16-byte completion.
    pub const CAPSULE_RESP: u8 = 24;
    /// H2CData, C2HData and R2T.
    pub const DATA: u8 = 24;
}

/// Largest termination request (24 bytes plus at most 128 bytes of the
/// offending PDU's header).
pub const TERM_MAX_PLEN: u32 = 152;

/// A connection-ending protocol error: what a termination request reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("fatal transport error {fes:#x} (information {fei:#x}): {why}")]
pub struct Fatal {
    /// Fatal Error Status (see [`fes`]).
    pub fes: u16,
    /// Fatal Error Information (for header errors, the field's byte offset).
    pub fei: u32,
    /// What was wrong, for the log.
    pub why: &'static str,
}

impl Fatal {
    /// An invalid header field at byte `offset`.
    pub fn header(offset: u32, why: &'static str) -> Self {
        Self {
            fes: fes::INVALID_HEADER,
            fei: offset,
            why,
        }
    }

    /// A PDU that may not come now.
    pub fn sequence(why: &'static str) -> Self {
        Self {
            fes: fes::SEQUENCE,
            fei: 0,
            why,
        }
    }
}

/// The common header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// PDU type (see [`kind`]).
    pub kind: u8,
    /// Flags (see [`flag`]).
    pub flags: u8,
    /// Header length (without the header digest).
    pub hlen: u8,
    /// Offset of the data in the PDU (0: no data).
    pub pdo: u8,
    /// Length of the whole PDU on the wire, digests included.
    pub plen: u32,
}

impl Header {
    /// Reads the common header.
    pub fn parse(b: &[u8; HEADER_BYTES]) -> Self {
        Self {
            kind: b[0],
            flags: b[1],
            hlen: b[2],
            pdo: b[3],
            plen: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind, self.flags, self.hlen, self.pdo]);
        out.extend_from_slice(&self.plen.to_le_bytes());
    }
}

/// Which digests a connection negotiated (both off until ICReq/ICResp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// Header digest (HDGST) on capsules, data PDUs and R2T.
    pub header: bool,
    /// Data digest (DDGST) on PDUs that carry data.
    pub data: bool,
}

impl Digests {
    /// From the ICReq/ICResp DGST field.
    pub fn from_bits(bits: u8) -> Self {
        Self {
            header: bits & 1 != 0,
            data: bits & 2 != 0,
        }
    }

    /// As the ICReq/ICResp DGST field.
    pub fn bits(self) -> u8 {
        u8::from(self.header) | u8::from(self.data) << 1
    }

    fn header_len(self) -> usize {
        if self.header {
            DIGEST_BYTES
        } else {
            0
        }
    }
}

/// How much data the receiver accepts in one PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In-capsule data of a CapsuleCmd.
    pub capsule_data: usize,
    /// Data of one H2CData (or C2HData) PDU.
    pub data_pdu: usize,
}

/// ICReq: the host opens a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version (0).
    pub pfv: u16,
    /// Host PDU data alignment, in dwords, 0's based.
    pub hpda: u8,
    /// Digests the host wants.
    pub digests: Digests,
    /// Most outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// ICResp: the controller's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment, in dwords, 0's based.
    pub cpda: u8,
    /// Digests the connection uses.
    pub digests: Digests,
    /// Largest H2CData payload the controller accepts.
    pub maxh2cdata: u32,
}

/// H2CTermReq or C2HTermReq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// Fatal Error Status.
    pub fes: u16,
    /// Fatal Error Information.
    pub fei: u32,
    /// The header of the PDU in error (at most 128 bytes).
    pub header: Vec<u8>,
}

/// A command capsule: the 64-byte command and its in-capsule data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capsule {
    /// The submission queue entry.
    pub sqe: [u8; SQE_BYTES],
    /// In-capsule data (may be empty).
    pub data: Vec<u8>,
    /// The data digest matched (always true without data digests).
    pub data_ok: bool,
}

/// A completion queue entry, as a response capsule carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Completion {
    /// Command specific result (dwords 0 and 1).
    pub result: u64,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Submission queue id.
    pub sq_id: u16,
    /// Command identifier.
    pub cid: u16,
    /// Status field (SCT << 8 | SC, DNR 0x4000, More 0x2000), without the
    /// phase bit (it goes on the wire shifted left by one).
    pub status: u16,
}

impl Completion {
    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.result.to_le_bytes());
        out.extend_from_slice(&self.sq_head.to_le_bytes());
        out.extend_from_slice(&self.sq_id.to_le_bytes());
        out.extend_from_slice(&self.cid.to_le_bytes());
        out.extend_from_slice(&(self.status << 1).to_le_bytes());
    }

    fn read(b: &[u8]) -> Self {
        Self {
            result: le64(b, 0),
            sq_head: le16(b, 8),
            sq_id: le16(b, 10),
            cid: le16(b, 12),
            status: le16(b, 14) >> 1,
        }
    }
}

/// H2CData or C2HData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The command it belongs to.
    pub cid: u16,
    /// Transfer tag (from the R2T; C2HData: reserved).
    pub ttag: u16,
    /// Offset of this data in the command's data.
    pub offset: u32,
    /// Last PDU of the transfer (LAST flag).
    pub last: bool,
    /// C2HData only: SUCCESS flag (the target never sets it).
    pub success: bool,
    /// The data.
    pub data: Vec<u8>,
    /// The data digest matched (always true without data digests).
    pub data_ok: bool,
}

/// R2T: the controller asks for a part of a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// The command.
    pub cid: u16,
    /// Transfer tag the host echoes in its H2CData PDUs.
    pub ttag: u16,
    /// Offset of the requested data.
    pub offset: u32,
    /// Bytes requested.
    pub length: u32,
}

/// One PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// Initialize Connection Request.
    IcReq(IcReq),
    /// Initialize Connection Response.
    IcResp(IcResp),
    /// Host to Controller Terminate Connection Request.
    H2cTerm(Term),
    /// Controller to Host Terminate Connection Request.
    C2hTerm(Term),
    /// Command capsule.
    Cmd(Capsule),
    /// Response capsule.
    Resp(Completion),
    /// Host to Controller data.
    H2cData(Data),
    /// Controller to Host data.
    C2hData(Data),
    /// Ready to Transfer.
    R2t(R2t),
}

pub(super) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | u64::from(le32(b, at + 4)) << 32
}

/// Where a checked PDU keeps its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Total bytes on the wire (PLEN).
    pub plen: usize,
    /// Header length (HLEN).
    pub hlen: usize,
    /// A header digest follows the header.
    pub header_digest: bool,
    /// Data bytes `data_at..data_at + data_len`.
    pub data_at: usize,
    /// Data length (0: none).
    pub data_len: usize,
    /// A data digest follows the data.
    pub data_digest: bool,
}

/// Checks a header against its type, the negotiated digests and the
/// limits, before the rest of the PDU is read; returns where its parts
/// are. `digests` is `None` before the connection is initialized (no
/// digests yet, and only ICReq makes sense then, which the caller checks).
pub fn check(h: &Header, digests: Option<Digests>, limits: Limits) -> Result<Layout, Fatal> {
    let d = digests.unwrap_or_default();
    let plen = h.plen as usize;
    let fixed = |want_hlen: u8, min_plen: u32, max_plen: u32| -> Result<Layout, Fatal> {
        if h.hlen != want_hlen {
            return Err(Fatal::header(2, "HLEN does not match the PDU type"));
        }
        if h.plen < min_plen || h.plen > max_plen {
            return Err(Fatal::header(4, "PLEN does not match the PDU type"));
        }
        Ok(Layout {
            plen,
            hlen: usize::from(h.hlen),
            header_digest: false,
            data_at: usize::from(h.hlen),
            data_len: plen - usize::from(h.hlen),
            data_digest: false,
        })
    };
    match h.kind {
        kind::IC_REQ | kind::IC_RESP => {
            if h.pdo != 0 {
                return Err(Fatal::header(3, "PDO must be 0 in ICReq/ICResp"));
            }
            let l = fixed(hlen::IC, u32::from(hlen::IC), u32::from(hlen::IC))?;
            Ok(Layout { data_len: 0, ..l })
        }
        kind::H2C_TERM | kind::C2H_TERM => fixed(hlen::TERM, u32::from(hlen::TERM), TERM_MAX_PLEN),
        kind::CAPSULE_RESP | kind::R2T => {
            let want = if h.kind == kind::R2T {
                hlen::DATA
            } else {
                hlen::CAPSULE_RESP
            };
            digest_flags(h, d, false)?;
            let total = u32::from(want) + d.header_len() as u32;
            let l = fixed(want, total, total)?;
            Ok(Layout {
                header_digest: d.header,
                data_len: 0,
                ..l
            })
        }
        kind::CAPSULE_CMD => with_data(h, d, hlen::CAPSULE_CMD, limits.capsule_data, false),
        kind::H2C_DATA | kind::C2H_DATA => with_data(h, d, hlen::DATA, limits.data_pdu, true),
        _ => Err(Fatal::header(0, "unknown PDU type")),
    }
}

/// The HDGST/DDGST flags must say what was negotiated.
fn digest_flags(h: &Header, d: Digests, has_data: bool) -> Result<(), Fatal> {
    if (h.flags & flag::HDGST != 0) != d.header {
        return Err(Fatal::header(
            1,
            "HDGST flag differs from the negotiated digests",
        ));
    }
    if (h.flags & flag::DDGST != 0) != (d.data && has_data) {
        return Err(Fatal::header(
            1,
            "DDGST flag differs from the negotiated digests",
        ));
    }
    Ok(())
}

fn with_data(
    h: &Header,
    d: Digests,
    want_hlen: u8,
    max_data: usize,
    data_required: bool,
) -> Result<Layout, Fatal> {
    if h.hlen != want_hlen {
        return Err(Fatal::header(2, "HLEN does not match the PDU type"));
    }
    let hlen = usize::from(h.hlen);
    let head = hlen + d.header_len();
    let plen = h.plen as usize;
    if plen < head {
        return Err(Fatal::header(4, "PLEN shorter than the header"));
    }
    let has_data = plen > head;
    digest_flags(h, d, has_data)?;
    if !has_data {
        if data_required {
            return Err(Fatal::header(4, "data PDU without data"));
        }
        return Ok(Layout {
            plen,
            hlen,
            header_digest: d.header,
            data_at: head,
            data_len: 0,
            data_digest: false,
        });
    }
    let pdo = usize::from(h.pdo);
    let dd = if d.data { DIGEST_BYTES } else { 0 };
    if pdo < head || pdo + dd >= plen {
        return Err(Fatal::header(3, "PDO outside the PDU"));
    }
    let data_len = plen - pdo - dd;
    if data_len > max_data {
        return Err(Fatal {
            fes: fes::LIMIT_EXCEEDED,
            fei: 0,
            why: "more data in one PDU than the connection allows",
        });
    }
    Ok(Layout {
        plen,
        hlen,
        header_digest: d.header,
        data_at: pdo,
        data_len,
        data_digest: d.data,
    })
}

/// Decodes one whole PDU (`buf`: exactly PLEN bytes, header included).
pub fn decode(buf: &[u8], digests: Option<Digests>, limits: Limits) -> Result<Pdu, Fatal> {
    let Some(head) = buf.first_chunk::<HEADER_BYTES>() else {
        return Err(Fatal::header(4, "PDU shorter than its common header"));
    };
    let h = Header::parse(head);
    let l = check(&h, digests, limits)?;
    if buf.len() != l.plen {
        return Err(Fatal::header(4, "PLEN differs from the bytes given"));
    }
    if l.header_digest {
        let want = crc32c(&[&buf[..l.hlen]]);
        if le32(buf, l.hlen) != want {
            return Err(Fatal {
                fes: fes::HEADER_DIGEST,
                fei: 0,
                why: "header digest mismatch",
            });
        }
    }
    let data = &buf[l.data_at..l.data_at + l.data_len];
    let data_ok = !l.data_digest || le32(buf, l.data_at + l.data_len) == crc32c(&[data]);
    Ok(match h.kind {
        kind::IC_REQ => Pdu::IcReq(IcReq {
            pfv: le16(buf, 8),
            hpda: buf[10],
            digests: Digests::from_bits(buf[11]),
            maxr2t: le32(buf, 12),
        }),
        kind::IC_RESP => Pdu::IcResp(IcResp {
            pfv: le16(buf, 8),
            cpda: buf[10],
            digests: Digests::from_bits(buf[11]),
            maxh2cdata: le32(buf, 12),
        }),
        kind::H2C_TERM | kind::C2H_TERM => {
            let t = Term {
                fes: le16(buf, 8),
                fei: le32(buf, 10),
                header: buf[usize::from(hlen::TERM)..].to_vec(),
            };
            if h.kind == kind::H2C_TERM {
                Pdu::H2cTerm(t)
            } else {
                Pdu::C2hTerm(t)
            }
        }
        kind::CAPSULE_CMD => {
            let mut sqe = [0u8; SQE_BYTES];
            sqe.copy_from_slice(&buf[HEADER_BYTES..HEADER_BYTES + SQE_BYTES]);
            Pdu::Cmd(Capsule {
                sqe,
                data: data.to_vec(),
                data_ok,
            })
        }
        kind::CAPSULE_RESP => Pdu::Resp(Completion::read(&buf[HEADER_BYTES..])),
        kind::R2T => Pdu::R2t(R2t {
            cid: le16(buf, 8),
            ttag: le16(buf, 10),
            offset: le32(buf, 12),
            length: le32(buf, 16),
        }),
        // H2C_DATA | C2H_DATA: `check` refused every other type.
        _ => {
            if le32(buf, 16) as usize != l.data_len {
                return Err(Fatal::header(16, "DATAL differs from the data in the PDU"));
            }
            let d = Data {
                cid: le16(buf, 8),
                ttag: le16(buf, 10),
                offset: le32(buf, 12),
                last: h.flags & flag::DATA_LAST != 0,
                success: h.flags & flag::DATA_SUCCESS != 0,
                data: data.to_vec(),
                data_ok,
            };
            if h.kind == kind::H2C_DATA {
                Pdu::H2cData(d)
            } else {
                Pdu::C2hData(d)
            }
        }
    })
}

/// Encodes one PDU with the connection's digests (ICReq, ICResp and
/// termination requests never carry digests).
pub fn encode(pdu: &Pdu, digests: Digests) -> Vec<u8> {
    encode_aligned(pdu, digests, 0)
}

/// Largest PDU data alignment (HPDA, CPDA): 32 dwords.
pub const MAX_PDA: u8 = 31;

/// Encodes one PDU as [`encode`] does, placing the data of a PDU that
/// carries data at a PDO that is a multiple of `pda + 1` dwords (the
/// receiver's HPDA or CPDA, at most [`MAX_PDA`]), padding after the header
/// (digest) with zeroes.
pub fn encode_aligned(pdu: &Pdu, digests: Digests, pda: u8) -> Vec<u8> {
    let align = (usize::from(pda.min(MAX_PDA)) + 1) * 4;
    let mut out = Vec::new();
    match pdu {
        Pdu::IcReq(r) => {
            ic(&mut out, kind::IC_REQ, r.pfv, r.hpda, r.digests, r.maxr2t);
        }
        Pdu::IcResp(r) => {
            ic(
                &mut out,
                kind::IC_RESP,
                r.pfv,
                r.cpda,
                r.digests,
                r.maxh2cdata,
            );
        }
        Pdu::H2cTerm(t) | Pdu::C2hTerm(t) => {
            let k = if matches!(pdu, Pdu::H2cTerm(_)) {
                kind::H2C_TERM
            } else {
                kind::C2H_TERM
            };
            let extra = &t.header[..t.header.len().min(128)];
            Header {
                kind: k,
                flags: 0,
                hlen: hlen::TERM,
                pdo: 0,
                plen: u32::from(hlen::TERM) + extra.len() as u32,
            }
            .write(&mut out);
            out.extend_from_slice(&t.fes.to_le_bytes());
            out.extend_from_slice(&t.fei.to_le_bytes());
            out.resize(usize::from(hlen::TERM), 0);
            out.extend_from_slice(extra);
        }
        Pdu::Cmd(c) => {
            framed(
                &mut out,
                kind::CAPSULE_CMD,
                0,
                digests,
                align,
                &c.sqe,
                &c.data,
            );
        }
        Pdu::Resp(c) => {
            let mut body = Vec::with_capacity(CQE_BYTES);
            c.write(&mut body);
            framed(&mut out, kind::CAPSULE_RESP, 0, digests, align, &body, &[]);
        }
        Pdu::R2t(r) => {
            let mut body = Vec::with_capacity(16);
            body.extend_from_slice(&r.cid.to_le_bytes());
            body.extend_from_slice(&r.ttag.to_le_bytes());
            body.extend_from_slice(&r.offset.to_le_bytes());
            body.extend_from_slice(&r.length.to_le_bytes());
            body.extend_from_slice(&[0; 4]);
            framed(&mut out, kind::R2T, 0, digests, align, &body, &[]);
        }
        Pdu::H2cData(d) | Pdu::C2hData(d) => {
            let (k, mut flags) = if matches!(pdu, Pdu::H2cData(_)) {
                (kind::H2C_DATA, 0)
            } else {
                (kind::C2H_DATA, 0)
            };
            if d.last {
                flags |= flag::DATA_LAST;
            }
            if d.success {
                flags |= flag::DATA_SUCCESS;
            }
            let mut body = Vec::with_capacity(16);
            body.extend_from_slice(&d.cid.to_le_bytes());
            body.extend_from_slice(&d.ttag.to_le_bytes());
            body.extend_from_slice(&d.offset.to_le_bytes());
            body.extend_from_slice(&(d.data.len() as u32).to_le_bytes());
            body.extend_from_slice(&[0; 4]);
            framed(&mut out, k, flags, digests, align, &body, &d.data);
        }
    }
    out
}

fn ic(out: &mut Vec<u8>, k: u8, pfv: u16, pda: u8, d: Digests, max: u32) {
    Header {
        kind: k,
        flags: 0,
        hlen: hlen::IC,
        pdo: 0,
        plen: u32::from(hlen::IC),
    }
    .write(out);
    out.extend_from_slice(&pfv.to_le_bytes());
    out.push(pda);
    out.push(d.bits());
    out.extend_from_slice(&max.to_le_bytes());
    out.resize(usize::from(hlen::IC), 0);
}

/// Header, type-specific header `body`, header digest, padding to a PDO
/// that is a multiple of `align`, data, data digest.
fn framed(
    out: &mut Vec<u8>,
    k: u8,
    mut flags: u8,
    d: Digests,
    align: usize,
    body: &[u8],
    data: &[u8],
) {
    let hlen = HEADER_BYTES + body.len();
    let hd = d.header_len();
    let dd = if d.data && !data.is_empty() {
        DIGEST_BYTES
    } else {
        0
    };
    if d.header {
        flags |= flag::HDGST;
    }
    if dd > 0 {
        flags |= flag::DDGST;
    }
    // Every header here is at most 72 bytes (76 with its digest), `align`
    // at most 128 bytes: PDO fits a byte. Data is bounded by the caller.
    let pad = if data.is_empty() {
        0
    } else {
        (hlen + hd).next_multiple_of(align.max(1)) - (hlen + hd)
    };
    let pdo = if data.is_empty() {
        0
    } else {
        (hlen + hd + pad) as u8
    };
    Header {
        kind: k,
        flags,
        hlen: hlen as u8,
        pdo,
        plen: (hlen + hd + pad + data.len() + dd) as u32,
    }
    .write(out);
    out.extend_from_slice(body);
    if d.header {
        let c = crc32c(&[&out[out.len() - hlen..]]);
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(data);
    if dd > 0 {
        out.extend_from_slice(&crc32c(&[data]).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        capsule_data: 8192,
        data_pdu: 65536,
    };
    const NONE: Digests = Digests {
        header: false,
        data: false,
    };
    const BOTH: Digests = Digests {
        header: true,
        data: true,
    };

    fn samples() -> Vec<Pdu> {
        let mut sqe = [0u8; SQE_BYTES];
        sqe[0] = 0x01;
        sqe[2] = 7;
        vec![
            Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 0,
                digests: BOTH,
                maxr2t: 0,
            }),
            Pdu::IcResp(IcResp {
                pfv: 0,
                cpda: 0,
                digests: NONE,
                maxh2cdata: 65536,
            }),
            Pdu::C2hTerm(Term {
                fes: fes::INVALID_HEADER,
                fei: 2,
                header: vec![4, 0, 9, 0, 72, 0, 0, 0],
            }),
            Pdu::H2cTerm(Term {
                fes: fes::SEQUENCE,
                fei: 0,
                header: Vec::new(),
            }),
            Pdu::Cmd(Capsule {
                sqe,
                data: Vec::new(),
                data_ok: true,
            }),
            Pdu::Cmd(Capsule {
                sqe,
                data: vec![0xa5; 4096],
                data_ok: true,
            }),
            Pdu::Resp(Completion {
                result: 0x1234_5678_9abc,
                sq_head: 3,
                sq_id: 1,
                cid: 7,
                status: 0x4002,
            }),
            Pdu::R2t(R2t {
                cid: 7,
                ttag: 2,
                offset: 8192,
                length: 65536,
            }),
            Pdu::H2cData(Data {
                cid: 7,
                ttag: 2,
                offset: 8192,
                last: true,
                success: false,
                data: vec![1, 2, 3, 4],
                data_ok: true,
            }),
            Pdu::C2hData(Data {
                cid: 9,
                ttag: 0,
                offset: 0,
                last: false,
                success: false,
                data: vec![9; 512],
                data_ok: true,
            }),
        ]
    }

    #[test]
    fn round_trip_with_and_without_digests() {
        for d in [
            NONE,
            BOTH,
            Digests {
                header: true,
                data: false,
            },
        ] {
            for p in samples() {
                let bytes = encode(&p, d);
                let back = decode(&bytes, Some(d), LIMITS).unwrap_or_else(|e| panic!("{p:?}: {e}"));
                assert_eq!(back, p, "digests {d:?}");
            }
        }
    }

    #[test]
    fn aligned_data_round_trips() {
        for d in [NONE, BOTH] {
            for p in samples() {
                assert_eq!(encode_aligned(&p, d, 0), encode(&p, d), "{p:?}");
                for pda in [1, 7, MAX_PDA] {
                    let bytes = encode_aligned(&p, d, pda);
                    let h = Header::parse(bytes.first_chunk::<HEADER_BYTES>().unwrap());
                    if h.pdo != 0 {
                        assert_eq!(usize::from(h.pdo) % ((usize::from(pda) + 1) * 4), 0);
                    }
                    assert_eq!(decode(&bytes, Some(d), LIMITS).unwrap(), p, "pda {pda}");
                }
            }
        }
    }

    #[test]
    fn icreq_as_linux_sends_it() {
        let mut b = vec![0u8; 128];
        b[2] = 128;
        b[4] = 128;
        b[11] = 3;
        b[12] = 0;
        let p = decode(&b, None, LIMITS).unwrap();
        assert_eq!(
            p,
            Pdu::IcReq(IcReq {
                pfv: 0,
                hpda: 0,
                digests: BOTH,
                maxr2t: 0
            })
        );
    }

    #[test]
    fn truncated_pdus_are_refused() {
        for d in [NONE, BOTH] {
            for p in samples() {
                let bytes = encode(&p, d);
                for cut in 0..bytes.len() {
                    assert!(
                        decode(&bytes[..cut], Some(d), LIMITS).is_err(),
                        "{p:?} cut at {cut}"
                    );
                }
                let mut longer = bytes.clone();
                longer.push(0);
                assert!(decode(&longer, Some(d), LIMITS).is_err());
            }
        }
    }

    #[test]
    fn header_inconsistencies_name_the_field() {
        let cmd = encode(&samples()[5], NONE);
        let field = |mutate: &dyn Fn(&mut Vec<u8>)| {
            let mut b = cmd.clone();
            mutate(&mut b);
            decode(&b, Some(NONE), LIMITS).map(|_| ()).unwrap_err()
        };
        assert_eq!(field(&|b| b[0] = 0x0f).fei, 0);
        assert_eq!(field(&|b| b[2] = 24).fei, 2);
        assert_eq!(field(&|b| b[3] = 10).fei, 3);
        assert_eq!(field(&|b| b[1] = flag::HDGST).fei, 1);
        // A PDO past the end of a small capsule.
        let mut small = encode(
            &Pdu::Cmd(Capsule {
                sqe: [0; 64],
                data: vec![1; 4],
                data_ok: true,
            }),
            NONE,
        );
        small[3] = 200;
        let e = decode(&small, Some(NONE), LIMITS).unwrap_err();
        assert_eq!((e.fes, e.fei), (fes::INVALID_HEADER, 3));
        // More in-capsule data than the connection allows.
        let big = encode(
            &Pdu::Cmd(Capsule {
                sqe: [0; 64],
                data: vec![0; 8193],
                data_ok: true,
            }),
            NONE,
        );
        assert_eq!(
            decode(&big, Some(NONE), LIMITS).unwrap_err().fes,
            fes::LIMIT_EXCEEDED
        );
        // A data PDU whose DATAL lies about its data.
        let mut h2c = encode(&samples()[8], NONE);
        h2c[16] = 5;
        assert_eq!(decode(&h2c, Some(NONE), LIMITS).unwrap_err().fei, 16);
        // A data PDU without data.
        let mut empty = h2c[..24].to_vec();
        empty[4] = 24;
        empty[3] = 0;
        assert!(decode(&empty, Some(NONE), LIMITS).is_err());
    }

    #[test]
    fn digests_are_checked() {
        let p = samples()[5].clone();
        let mut b = encode(&p, BOTH);
        b[20] ^= 1; // inside the header: header digest fails
        assert_eq!(
            decode(&b, Some(BOTH), LIMITS).unwrap_err().fes,
            fes::HEADER_DIGEST
        );
        let mut b = encode(&p, BOTH);
        let n = b.len();
        b[n - 10] ^= 1; // inside the data: the PDU decodes, marked bad
        match decode(&b, Some(BOTH), LIMITS).unwrap() {
            Pdu::Cmd(c) => assert!(!c.data_ok),
            other => panic!("{other:?}"),
        }
        // Flags that disagree with what was negotiated.
        assert!(decode(&encode(&p, NONE), Some(BOTH), LIMITS).is_err());
        assert!(decode(&encode(&p, BOTH), Some(NONE), LIMITS).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep; the cargo-fuzz target goes further.
        let mut x = 0x1234_5678_u32;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|i| (x >> (i % 24)) as u8).collect();
            if b.len() >= 8 {
                b[0] %= 10;
                let plen = b.len() as u32;
                b[4..8].copy_from_slice(&plen.to_le_bytes());
            }
            for d in [None, Some(NONE), Some(BOTH)] {
                let _ = decode(&b, d, LIMITS);
            }
        }
    }
}
