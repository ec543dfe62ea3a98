//! The two shared contracts, included verbatim from `abi/` so the driver, the
//! card model and userspace compile the very same definitions: the card
//! interface (`card`) and the `/dev/dia` ioctl ABI (`ioctl`).

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../abi/src/card.rs"]
pub(crate) mod card;

#[allow(dead_code, unreachable_pub, clippy::all)]
#[path = "../abi/src/ioctl.rs"]
pub(crate) mod ioctl;

use kernel::types::{AsBytes, FromBytes};

// SAFETY: `SubmissionEntry` is `repr(C)`, made of integers only, 64 bytes with
// no padding (asserted in the ABI file), so every byte is initialised.
unsafe impl AsBytes for card::SubmissionEntry {}
// SAFETY: `CompletionEntry` is `repr(C)` integers only, 16 bytes, no padding:
// any bit pattern is a valid value.
unsafe impl FromBytes for card::CompletionEntry {}
// SAFETY: `DiaIdentity` is `repr(C)` with integer and byte-array fields laid
// out without padding (160 bytes, asserted in the ABI file).
unsafe impl AsBytes for ioctl::DiaIdentity {}
// SAFETY: `NamespaceCreate` is `repr(C)` integers and byte arrays, 80 bytes,
// no padding (asserted in the ABI file).
unsafe impl AsBytes for card::NamespaceCreate {}
// SAFETY: the ioctl argument structs below are `repr(C)` integers and byte
// arrays with sizes asserted in the ABI file and no implicit padding: every
// byte pattern is a valid value and every byte is initialised.
unsafe impl FromBytes for ioctl::DiaNsCreate {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsCreate {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaNsCreateRemote {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsCreateRemote {}
// SAFETY: as above (512 bytes: a 312-byte target, a label, reserved bytes).
unsafe impl AsBytes for card::RemoteNamespaceCreate {}
// SAFETY: as above (1544 bytes: ids, then a 1536-byte plex table of four
// 320-byte plexes, each a 312-byte target, a state and reserved bytes).
unsafe impl FromBytes for ioctl::DiaNsCreateMirror {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsCreateMirror {}
// SAFETY: as above (1536 bytes, no padding: the u64 generation at offset 64).
unsafe impl AsBytes for card::MirrorNamespaceCreate {}
// SAFETY: as above (1544 bytes: ids, then the same 1536-byte plex table).
// Only read from userspace: the request has no out field, so no `AsBytes`.
unsafe impl FromBytes for ioctl::DiaNsSetMirror {}
// SAFETY: as above (328 bytes: ids, then the 320-byte log page).
unsafe impl FromBytes for ioctl::DiaNsMirrorStatus {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsMirrorStatus {}
// SAFETY: as above (320 bytes: u64 counters, bytes, four 64-byte plexes).
unsafe impl FromBytes for card::MirrorStatus {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaNsId {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaNsInfo {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsInfo {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsList {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaPoolInfo {}
// SAFETY: as above.
unsafe impl AsBytes for card::QosSettings {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaNsQos {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsQos {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaNsStats {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaNsStats {}
// SAFETY: as above.
unsafe impl FromBytes for card::NamespaceStats {}
// SAFETY: as above.
unsafe impl AsBytes for card::PortConfig {}
// SAFETY: as above.
unsafe impl AsBytes for card::PortCreate {}
// SAFETY: as above.
unsafe impl FromBytes for card::PortStats {}
// SAFETY: as above.
unsafe impl AsBytes for card::PortStats {}
// SAFETY: as above.
unsafe impl AsBytes for card::TxDescriptor {}
// SAFETY: as above.
unsafe impl AsBytes for card::RxDescriptor {}
// SAFETY: as above.
unsafe impl FromBytes for card::RxDescriptor {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaPortCreate {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaPortCreate {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaPortId {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaPortSet {}
// SAFETY: as above.
unsafe impl FromBytes for ioctl::DiaPortInfo {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaPortInfo {}
// SAFETY: as above.
unsafe impl AsBytes for ioctl::DiaPortList {}
