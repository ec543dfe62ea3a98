//! Access to the card, behind a small trait so the API can be tested on the
//! host; the real implementation is libdia's `Card` on `/dev/dia`.

use dia::Identity;

/// What the daemon needs from a card.
pub trait CardDevice: Send + Sync + 'static {
    /// The card's identity, asked afresh.
    fn identify(&self) -> Result<Identity, dia::Error>;
}

impl CardDevice for dia::Card {
    fn identify(&self) -> Result<Identity, dia::Error> {
        dia::Card::identify(self)
    }
}
