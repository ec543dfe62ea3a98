//! The initiator's tests against the card's own target in-process
//! (`target`).

mod target;
