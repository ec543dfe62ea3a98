//! Egress shaping of a port: token buckets on bytes and on packets, on a
//! clock in seconds given by the caller (so tests simulate it). A frame
//! that does not fit waits (it is never dropped) and the wait is counted as
//! throttled time.

use dia_abi::card::PortLimits;

use crate::token_bucket::Bucket;

/// A port's egress limits with their throttled-time account.
#[derive(Debug, Clone)]
pub(crate) struct Shaper {
    bytes: Option<Bucket>,
    packets: Option<Bucket>,
    waiting_since: Option<f64>,
    throttled_s: f64,
}

impl Shaper {
    /// Buckets (full) for `limits`; the byte bucket holds at least one
    /// `frame_max`-byte frame so the largest frame can always pass.
    pub(crate) fn new(limits: &PortLimits, frame_max: u32, now: f64) -> Self {
        let burst_s = f64::from(limits.burst_or_default_ms()) / 1000.0;
        let bytes = (limits.max_bits_per_s > 0).then(|| {
            let rate = limits.max_bits_per_s as f64 / 8.0;
            Bucket::new(rate, (rate * burst_s).max(f64::from(frame_max)), now)
        });
        let packets = (limits.max_pps > 0).then(|| {
            let rate = limits.max_pps as f64;
            Bucket::new(rate, (rate * burst_s).max(1.0), now)
        });
        Self {
            bytes,
            packets,
            waiting_since: None,
            throttled_s: 0.0,
        }
    }

    /// Takes the tokens for a frame of `len` bytes, or says when they will
    /// be there (`Err(ready_at)`); the frame must then wait.
    #[cfg(test)]
    pub(crate) fn admit(&mut self, len: u32, now: f64) -> Result<(), f64> {
        self.admit_many(len as usize, 1, now)
    }

    /// Takes the tokens for `packets` frames of `bytes` together (the
    /// segments of one TSO frame), or says when they will be there. More
    /// than a bucket holds waits only for a full bucket and leaves it in
    /// debt, which later frames wait for: the rate holds, and a batch
    /// bigger than the burst still passes.
    pub(crate) fn admit_many(&mut self, bytes: usize, packets: usize, now: f64) -> Result<(), f64> {
        let need = bytes as f64;
        let count = packets as f64;
        let mut ready = now;
        if let Some(b) = &mut self.bytes {
            b.refill(now);
            ready = ready.max(b.ready_at(need.min(b.depth())));
        }
        if let Some(p) = &mut self.packets {
            p.refill(now);
            ready = ready.max(p.ready_at(count.min(p.depth())));
        }
        if ready > now {
            self.waiting_since.get_or_insert(now);
            return Err(ready);
        }
        if let Some(b) = &mut self.bytes {
            b.take(need);
        }
        if let Some(p) = &mut self.packets {
            p.take(count);
        }
        if let Some(since) = self.waiting_since.take() {
            self.throttled_s += (now - since).max(0.0);
        }
        Ok(())
    }

    /// Time spent waiting for tokens, including a wait still going on.
    pub(crate) fn throttled_ns(&self, now: f64) -> u64 {
        let ongoing = self.waiting_since.map_or(0.0, |s| (now - s).max(0.0));
        ((self.throttled_s + ongoing) * 1e9) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bps: u64, max_pps: u64, burst_ms: u32) -> PortLimits {
        PortLimits {
            max_bits_per_s: max_bps,
            max_pps,
            burst_ms,
            reserved: 0,
        }
    }

    /// A sender that always has a `len`-byte frame ready, for `secs`
    /// simulated seconds; returns (time, bytes) of every frame that passed.
    fn saturate(s: &mut Shaper, len: u32, secs: f64) -> Vec<(f64, u32)> {
        let mut t = 0.0;
        let mut sent = Vec::new();
        while t < secs {
            match s.admit(len, t) {
                Ok(()) => sent.push((t, len)),
                Err(ready) => {
                    assert!(ready > t, "ready_at must move forward");
                    t = ready;
                }
            }
        }
        sent
    }

    #[test]
    fn unlimited_never_waits() {
        let mut s = Shaper::new(&limits(0, 0, 0), 1514, 0.0);
        for _ in 0..10_000 {
            assert_eq!(s.admit(9014, 0.0), Ok(()));
        }
        assert_eq!(s.throttled_ns(1.0), 0);
    }

    #[test]
    fn saturating_sender_gets_the_rate_and_no_more_in_any_window() {
        let rate_bps = 8_000_000u64; // 1 MB/s
        let rate = rate_bps as f64 / 8.0;
        let mut s = Shaper::new(&limits(rate_bps, 0, 20), 1514, 0.0);
        let depth = rate * 0.020;
        let sent = saturate(&mut s, 1514, 10.0);
        let total: f64 = sent.iter().map(|&(_, l)| f64::from(l)).sum();
        assert!(total >= 0.99 * rate * 10.0, "total {total}");
        assert!(total <= rate * 10.0 + depth, "total {total}");
        for window in [0.001, 0.05, 0.5, 3.0] {
            for (i, &(start, _)) in sent.iter().enumerate().step_by(7) {
                let bytes: f64 = sent[i..]
                    .iter()
                    .take_while(|&&(t, _)| t < start + window)
                    .map(|&(_, l)| f64::from(l))
                    .sum();
                assert!(
                    bytes <= rate * window + depth + 1.0,
                    "{bytes} bytes in {window} s from {start}"
                );
            }
        }
        // Throttled nearly all the time after the initial burst.
        assert!(
            s.throttled_ns(10.0) > 9_900_000_000,
            "{}",
            s.throttled_ns(10.0)
        );
    }

    #[test]
    fn burst_passes_at_once_then_waits() {
        // 80 Mbit/s = 10 MB/s, 10 ms burst = 100000 bytes.
        let mut s = Shaper::new(&limits(80_000_000, 0, 10), 1514, 0.0);
        let mut n = 0;
        while s.admit(1000, 0.0).is_ok() {
            n += 1;
        }
        assert_eq!(n, 100);
        let ready = s.admit(1000, 0.0).unwrap_err();
        assert!((ready - 0.0001).abs() < 1e-9, "{ready}");
        assert_eq!(s.admit(1000, ready), Ok(()));
        assert_eq!(s.throttled_ns(ready), (ready * 1e9) as u64);
    }

    #[test]
    fn jumbo_frame_passes_a_tiny_limit() {
        // 8 kbit/s = 1000 B/s: 10 ms of it is 10 bytes, less than one frame.
        let mut s = Shaper::new(&limits(8_000, 0, 0), 9014, 0.0);
        assert_eq!(s.admit(9014, 0.0), Ok(()));
        let ready = s.admit(9014, 0.0).unwrap_err();
        assert!((ready - 9.014).abs() < 1e-6, "{ready}");
        assert_eq!(s.admit(9014, ready), Ok(()));
    }

    #[test]
    fn packet_limit() {
        let mut s = Shaper::new(&limits(0, 1000, 0), 1514, 0.0);
        let sent = saturate(&mut s, 64, 10.0);
        let n = sent.len() as f64;
        assert!(
            (0.99 * 10_000.0..=10_000.0 + 10.0 + 1.0).contains(&n),
            "{n}"
        );
    }

    #[test]
    fn both_limits_the_tighter_wins() {
        // 1000 pps of 64 bytes = 64 kB/s, below 8 Mbit/s: the packet limit binds.
        let mut s = Shaper::new(&limits(8_000_000, 1000, 0), 1514, 0.0);
        assert!(saturate(&mut s, 64, 5.0).len() <= 5_000 + 11);
        // 1514-byte frames: 1 MB/s / 1514 = 660 pps < 1000: bytes bind.
        let mut s = Shaper::new(&limits(8_000_000, 1000, 0), 1514, 0.0);
        let n = saturate(&mut s, 1514, 5.0).len() as f64;
        assert!(n <= 5.0 * 1e6 / 1514.0 + 8.0, "{n}");
        assert!(n >= 0.99 * 5.0 * 1e6 / 1514.0, "{n}");
    }

    #[test]
    fn a_tso_batch_over_the_burst_passes_and_its_debt_holds_the_rate() {
        // 1 MB/s, 10 ms burst (10 kB); 1000 packets/s, burst 10.
        let mut s = Shaper::new(&limits(8_000_000, 1000, 10), 1514, 0.0);
        // 45 segments of a 64 KiB frame: over both buckets, still admitted.
        assert_eq!(s.admit_many(66_000, 45, 0.0), Ok(()));
        // Then the debt: nothing more until both are paid back.
        let ready = s.admit(1514, 0.0).unwrap_err();
        assert!(ready >= 0.045, "{ready}");
        assert!(s.admit(1514, 0.03).is_err());
        // Whatever the batch sizes, the long-run rate holds.
        let mut t = 0.05;
        let mut sent = 66_000usize;
        while t < 2.0 {
            match s.admit_many(30_000, 21, t) {
                Ok(()) => sent += 30_000,
                Err(r) => t = r,
            }
        }
        assert!(sent as f64 <= 1_000_000.0 * 2.0 + 66_000.0, "{sent}");
    }
}
