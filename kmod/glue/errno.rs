//! Errnos that 6.12's `kernel::error::code` does not list, built from the
//! generated constants here so the rest of the driver names them safely.

use kernel::error::Error;

fn from_binding(errno: u32) -> Error {
    // The constants are small positive errnos; the kernel wants them negated.
    Error::from_errno(-(errno as i32))
}

/// `EDQUOT`: the card cannot guarantee the QoS floors asked for.
#[expect(non_snake_case)]
pub(crate) fn EDQUOT() -> Error {
    from_binding(kernel::bindings::EDQUOT)
}

/// `EOPNOTSUPP`: the card does not have the feature (Invalid Opcode).
#[expect(non_snake_case)]
pub(crate) fn EOPNOTSUPP() -> Error {
    from_binding(kernel::bindings::EOPNOTSUPP)
}

/// `EHOSTUNREACH`: the card could not reach an NVMe/TCP target.
#[expect(non_snake_case)]
pub(crate) fn EHOSTUNREACH() -> Error {
    from_binding(kernel::bindings::EHOSTUNREACH)
}

/// `ECONNREFUSED`: an NVMe/TCP target refused the card.
#[expect(non_snake_case)]
pub(crate) fn ECONNREFUSED() -> Error {
    from_binding(kernel::bindings::ECONNREFUSED)
}

/// `EMEDIUMTYPE`: a mirror's plexes differ in size or block size.
#[expect(non_snake_case)]
pub(crate) fn EMEDIUMTYPE() -> Error {
    from_binding(kernel::bindings::EMEDIUMTYPE)
}

/// `ESTALE`: the reachable copies of a mirror are older than its newest.
#[expect(non_snake_case)]
pub(crate) fn ESTALE() -> Error {
    from_binding(kernel::bindings::ESTALE)
}
