//! The initiator's tests: against the card's own target in-process
//! (`target`), and against small misbehaving targets on a socket
//! (`fake`).

mod fake;
mod target;
