//! The card's NVMe/TCP initiator (`fabric::initiator`): its receive path
//! on whatever a target sends — optionally an ICResp first, then PDUs —
//! with a read, an R2T write and a command without data in flight.
//!
//! The first input byte picks the digests (bits 1:0), the target's CPDA
//! (bits 4:2) and whether an ICResp comes first (bit 7); the seeds in
//! corpus/fabric_initiator are real exchanges.
//!
//! What must hold whatever the target sends: no panic; a read completes
//! successfully only with exactly its data; the H2CData the initiator
//! sends for an R2T is well formed, inside the write's data, in
//! MAXH2CDATA pieces and aligned to CPDA; nothing is used after the first
//! error.

#![no_main]

use dia_card_model::fabric_fuzz;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| fabric_fuzz::initiator_receive(bytes));
