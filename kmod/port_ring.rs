//! Index bookkeeping of a port's descriptor rings, with no memory access, so
//! it is plain logic that also compiles and is tested on the host
//! (kmod/host-tests). TX: the driver fills from `tail`, the card sends and
//! reports its head, the driver reclaims from `clean`. RX: every buffer but
//! one is posted; the card's tail register is the index after the last one.

/// TX ring positions.
///
/// # Invariants
///
/// `size` is a power of two >= 2; `tail` and `clean` are `< size`;
/// descriptors `clean..tail` (mod `size`) belong to the card, so at most
/// `size - 1` are in flight (a full ring would look empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxRing {
    size: u16,
    tail: u16,
    clean: u16,
}

impl TxRing {
    /// An empty ring of `size` descriptors (`None` unless a power of two >= 2).
    pub(crate) fn new(size: u16) -> Option<Self> {
        if size < 2 || !size.is_power_of_two() {
            return None;
        }
        // INVARIANT: valid size, both indices 0.
        Some(Self {
            size,
            tail: 0,
            clean: 0,
        })
    }

    /// Next descriptor the driver fills (the value of the TX tail register).
    pub(crate) fn tail(&self) -> u16 {
        self.tail
    }

    fn mask(&self) -> u16 {
        self.size.wrapping_sub(1)
    }

    /// Descriptors the card holds.
    pub(crate) fn in_flight(&self) -> u16 {
        // Power-of-two size: masking is the modulo, with no panic path.
        self.tail.wrapping_sub(self.clean) & self.mask()
    }

    /// Descriptors the driver may fill.
    pub(crate) fn free(&self) -> u16 {
        self.mask().wrapping_sub(self.in_flight())
    }

    /// Takes the descriptor at the tail for the card; `None` when full.
    pub(crate) fn push(&mut self) -> Option<u16> {
        if self.free() == 0 {
            return None;
        }
        let i = self.tail;
        // INVARIANT: stays < size; in flight grows by one, at most size - 1.
        self.tail = i.wrapping_add(1) & self.mask();
        Some(i)
    }

    /// How many descriptors the card finished when it reports `head`
    /// (`None`: a head outside what it holds, ignored).
    pub(crate) fn done_until(&self, head: u32) -> Option<u16> {
        let head = u16::try_from(head).ok().filter(|h| *h < self.size)?;
        let done = head.wrapping_sub(self.clean) & self.mask();
        (done <= self.in_flight()).then_some(done)
    }

    /// Hands back the oldest descriptor the card holds, if any.
    pub(crate) fn pop_clean(&mut self) -> Option<u16> {
        if self.clean == self.tail {
            return None;
        }
        let i = self.clean;
        // INVARIANT: stays < size and never passes the tail.
        self.clean = i.wrapping_add(1) & self.mask();
        Some(i)
    }

    /// Forgets every position (after the card lost the port).
    pub(crate) fn reset(&mut self) {
        self.tail = 0;
        self.clean = 0;
    }
}

/// The RX tail register value when the driver looks at descriptor `next`
/// next: every descriptor but the one before it is posted. `size` is a power
/// of two.
pub(crate) fn rx_tail(next: u16, size: u16) -> u16 {
    next.wrapping_sub(1) & size.wrapping_sub(1)
}

/// The RX descriptor after `i` in a ring of `size` (a power of two).
pub(crate) fn rx_next(i: u16, size: u16) -> u16 {
    i.wrapping_add(1) & size.wrapping_sub(1)
}
