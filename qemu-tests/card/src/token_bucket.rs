//! A token bucket on a clock in seconds that the caller supplies (so tests
//! simulate it): `rate` tokens per second, at most `depth` stored. One
//! definition for the storage QoS scheduler's ceilings and media model
//! (`qos`) and the ports' egress limits (`net::rate`).

/// Rounding slack when comparing tokens, so float error never makes a
/// command or frame wait for a vanishing amount of time.
const EPSILON: f64 = 1e-6;

/// One token bucket.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: f64,
    depth: f64,
    tokens: f64,
    at: f64,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, depth: f64, now: f64) -> Self {
        Self {
            rate,
            depth,
            tokens: depth,
            at: now,
        }
    }

    /// Most tokens the bucket holds.
    pub(crate) fn depth(&self) -> f64 {
        self.depth
    }

    /// Adds what accrued since the last refill (time never runs back).
    pub(crate) fn refill(&mut self, now: f64) {
        if now > self.at {
            self.tokens = (self.tokens + (now - self.at) * self.rate).min(self.depth);
            self.at = now;
        }
    }

    /// When `need` tokens will be there (the last refill's time if they are).
    pub(crate) fn ready_at(&self, need: f64) -> f64 {
        if self.tokens + EPSILON >= need {
            self.at
        } else {
            self.at + (need - self.tokens) / self.rate
        }
    }

    /// Takes `n` tokens; the bucket may go into debt, which later refills
    /// pay back, so the long-run rate holds whatever the sizes taken.
    pub(crate) fn take(&mut self, n: f64) {
        self.tokens -= n;
    }
}
