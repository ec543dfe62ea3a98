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

    /// Descriptors the card holds.
    pub(crate) fn in_flight(&self) -> u16 {
        (self.tail + self.size - self.clean) % self.size
    }

    /// Descriptors the driver may fill.
    pub(crate) fn free(&self) -> u16 {
        self.size - 1 - self.in_flight()
    }

    /// Takes the descriptor at the tail for the card; `None` when full.
    pub(crate) fn push(&mut self) -> Option<u16> {
        if self.free() == 0 {
            return None;
        }
        let i = self.tail;
        // INVARIANT: stays < size; in flight grows by one, at most size - 1.
        self.tail = (i + 1) % self.size;
        Some(i)
    }

    /// How many descriptors the card finished when it reports `head`
    /// (`None`: a head outside what it holds, ignored).
    pub(crate) fn done_until(&self, head: u32) -> Option<u16> {
        let head = u16::try_from(head).ok().filter(|h| *h < self.size)?;
        let done = (head + self.size - self.clean) % self.size;
        (done <= self.in_flight()).then_some(done)
    }

    /// Hands back the oldest descriptor the card holds, if any.
    pub(crate) fn pop_clean(&mut self) -> Option<u16> {
        if self.clean == self.tail {
            return None;
        }
        let i = self.clean;
        // INVARIANT: stays < size and never passes the tail.
        self.clean = (i + 1) % self.size;
        Some(i)
    }

    /// Forgets every position (after the card lost the port).
    pub(crate) fn reset(&mut self) {
        self.tail = 0;
        self.clean = 0;
    }
}

/// The RX tail register value when the driver looks at descriptor `next`
/// next: every descriptor but the one before it is posted.
pub(crate) fn rx_tail(next: u16, size: u16) -> u16 {
    (next + size - 1) % size
}
