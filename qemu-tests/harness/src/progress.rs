//! Step lines for long operations: what is happening, then how long it took.

use std::time::Instant;

/// A running step; prints its duration when finished.
pub struct Step {
    what: String,
    start: Instant,
}

impl Step {
    /// Announces a step.
    pub fn start(what: impl Into<String>) -> Self {
        let what = what.into();
        eprintln!("==> {what}");
        Self {
            what,
            start: Instant::now(),
        }
    }

    /// Marks the step done.
    pub fn done(self) {
        eprintln!(
            "    {} done in {:.1}s",
            self.what,
            self.start.elapsed().as_secs_f64()
        );
    }
}
