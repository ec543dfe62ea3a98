//! What more than one target sets up the same way (`mod shared;` in each).

use dia_abi::card as abi;
use dia_card_model::Pool;

/// Creates a namespace of `blocks` blocks of `1 << shift` bytes on `pool`
/// and attaches it; `None` when the pool refuses the namespace (a bad
/// shift, no space, no id left). Attaching a namespace just made must
/// succeed.
pub fn attached_namespace(
    pool: &Pool,
    blocks: u64,
    shift: u8,
    label: [u8; abi::LABEL_LEN],
) -> Option<u32> {
    let nsid = pool.create_namespace(blocks, shift, label).ok()?;
    pool.set_attached(nsid, true)
        .expect("attach a new namespace");
    Some(nsid)
}
