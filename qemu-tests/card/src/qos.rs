//! The card's storage QoS scheduler: which namespace's command runs next.
//!
//! Each namespace (a "class") has a floor (reservation: IOPS and bytes/s it
//! is guaranteed), a ceiling (limit: IOPS and bytes/s it never exceeds, with
//! a small burst) and a weight (its share of what is left). The scheduler is
//! mClock (Gulati, Merchant, Varman, OSDI 2010) with token buckets for the
//! ceilings:
//!
//! - every queued command gets a reservation tag `R = max(R_prev +
//!   cost/floor, now - 10 ms)` in real time (the 10 ms keep a floor across
//!   the short gaps of a closed-loop client), where the cost is the larger of its
//!   share of the IOPS and the bytes/s dimension, and a proportional tag `P`
//!   on a virtual clock (start-time fair queueing): it starts where the
//!   class's previous command finished (`+ cost/weight`, cost in 4 KiB
//!   units) but not before the virtual time, which is the `P` of the last
//!   command the weight phase ran. Real-time `P` tags (mClock's original)
//!   let a class that idled come back with unbounded credit and starve its
//!   neighbours; the virtual clock bounds both credit and debt;
//! - a class may run only if its ceiling buckets (IOPS and bytes) hold
//!   enough tokens;
//! - constraint phase first: among eligible heads whose `R <= now`, the
//!   smallest `R` runs (floors are met first);
//! - otherwise weight phase: among eligible heads, the smallest `P` runs, and
//!   that class's later `R` tags move back by the cost it got for free, so
//!   weight-phase service does not count towards its floor (mClock's
//!   adjustment).
//!
//! Time is a plain `f64` of seconds supplied by the caller, so the logic is
//! deterministic and tested with a simulated clock.

use std::collections::{BTreeMap, VecDeque};

use dia_abi::card::{QosSettings, QOS_BURST_DEFAULT_MS, QOS_WEIGHT_MIN};

use crate::token_bucket::Bucket;

/// How long a class with a floor may leave its queue empty without losing
/// the reservation of that time (dmClock's anticipation): a closed-loop
/// client (a guest at a fixed queue depth) always has a short gap between a
/// completion and its next submission, and would otherwise lose part of its
/// floor to every gap.
const ANTICIPATION_S: f64 = 0.01;

/// A class's service level. Zero means "none" for floors and ceilings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QosParams {
    /// Guaranteed I/Os per second.
    pub min_iops: f64,
    /// Guaranteed bytes per second.
    pub min_bps: f64,
    /// Most I/Os per second.
    pub max_iops: f64,
    /// Most bytes per second.
    pub max_bps: f64,
    /// Share of the spare capacity (relative to other classes), > 0.
    pub weight: f64,
    /// Burst the ceilings allow, in seconds of the ceiling rate.
    pub burst_s: f64,
}

impl Default for QosParams {
    fn default() -> Self {
        Self {
            min_iops: 0.0,
            min_bps: 0.0,
            max_iops: 0.0,
            max_bps: 0.0,
            weight: f64::from(QOS_WEIGHT_MIN),
            burst_s: f64::from(QOS_BURST_DEFAULT_MS) / 1000.0,
        }
    }
}

impl QosParams {
    /// The scheduler's view of the card interface's settings (which the
    /// card checks with [`QosSettings::validate`] before it takes them).
    pub fn from_settings(q: &QosSettings) -> Self {
        Self {
            min_iops: q.min_iops as f64,
            min_bps: q.min_bytes_per_s as f64,
            max_iops: q.max_iops as f64,
            max_bps: q.max_bytes_per_s as f64,
            weight: f64::from(q.weight.max(QOS_WEIGHT_MIN)),
            burst_s: f64::from(q.burst_or_default_ms()) / 1000.0,
        }
    }
}

/// Why parameters are refused.
#[derive(Debug, Clone, PartialEq)]
pub enum QosError {
    /// A negative, NaN or infinite value.
    NotFinite(&'static str),
    /// Weight must be positive.
    Weight,
    /// A floor above its ceiling.
    FloorAboveCeiling(&'static str),
}

impl QosParams {
    /// Checks the parameters as the scheduler's arithmetic needs them. The
    /// card's rules for what a driver may ask are the interface's
    /// ([`QosSettings::validate`], applied by Set QoS); this guards the
    /// scheduler against parameters from anywhere else (tests, simulations).
    pub fn validate(&self) -> Result<(), QosError> {
        for (name, v) in [
            ("min_iops", self.min_iops),
            ("min_bps", self.min_bps),
            ("max_iops", self.max_iops),
            ("max_bps", self.max_bps),
            ("burst_s", self.burst_s),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(QosError::NotFinite(name));
            }
        }
        if !self.weight.is_finite() || self.weight <= 0.0 {
            return Err(QosError::Weight);
        }
        if self.max_iops > 0.0 && self.min_iops > self.max_iops {
            return Err(QosError::FloorAboveCeiling("iops"));
        }
        if self.max_bps > 0.0 && self.min_bps > self.max_bps {
            return Err(QosError::FloorAboveCeiling("bandwidth"));
        }
        Ok(())
    }

    /// Time share of a command of `bytes` against rates (`iops`, `bps`):
    /// the larger of the two dimensions; `None` when neither rate is set.
    fn share(iops: f64, bps: f64, bytes: u64) -> Option<f64> {
        let a = (iops > 0.0).then(|| 1.0 / iops);
        let b = (bps > 0.0).then(|| bytes as f64 / bps);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug)]
struct Queued<T> {
    item: T,
    bytes: u64,
    r: f64,
    p: f64,
}

#[derive(Debug)]
struct Class<T> {
    params: QosParams,
    queue: VecDeque<Queued<T>>,
    last_r: f64,
    last_p: f64,
    iops: Option<Bucket>,
    bps: Option<Bucket>,
}

impl<T> Class<T> {
    fn new(params: QosParams, now: f64) -> Self {
        let mut c = Self {
            params,
            queue: VecDeque::new(),
            last_r: now,
            last_p: 0.0,
            iops: None,
            bps: None,
        };
        c.set_buckets(now);
        c
    }

    fn set_buckets(&mut self, now: f64) {
        let p = self.params;
        // A burst holds at least one command (bytes: one 2 MiB transfer).
        self.iops = (p.max_iops > 0.0)
            .then(|| Bucket::new(p.max_iops, (p.max_iops * p.burst_s).max(1.0), now));
        self.bps = (p.max_bps > 0.0).then(|| {
            Bucket::new(
                p.max_bps,
                (p.max_bps * p.burst_s).max(crate::nvm::MAX_TRANSFER_BYTES as f64),
                now,
            )
        });
    }

    /// When the head may run under the ceilings (None: empty).
    fn eligible_at(&mut self, now: f64) -> Option<f64> {
        let bytes = self.queue.front()?.bytes as f64;
        let mut t = now;
        if let Some(b) = &mut self.iops {
            b.refill(now);
            t = t.max(b.ready_at(1.0));
        }
        if let Some(b) = &mut self.bps {
            b.refill(now);
            // A command larger than the bucket waits for a full bucket.
            t = t.max(b.ready_at(bytes.min(b.depth())));
        }
        Some(t)
    }

    fn charge(&mut self, bytes: u64) {
        if let Some(b) = &mut self.iops {
            b.take(1.0);
        }
        if let Some(b) = &mut self.bps {
            b.take((bytes as f64).min(b.depth()));
        }
    }
}

/// What `next` says.
#[derive(Debug, PartialEq)]
pub enum Next<T> {
    /// Run this command of this class now.
    Run(u32, T),
    /// Nothing may run before this time (seconds).
    WaitUntil(f64),
    /// Nothing is queued.
    Idle,
}

/// The scheduler. `T` is whatever the caller queues (a command).
#[derive(Debug)]
pub struct Scheduler<T> {
    classes: BTreeMap<u32, Class<T>>,
    /// The media's own rate (the flash behind the card), shared by every
    /// class: I/Os and bytes per second, when modelled.
    media_iops: Option<Bucket>,
    media_bps: Option<Bucket>,
    /// Virtual time of the weight phase: the start tag of the last command
    /// it dispatched (never goes back).
    vtime: f64,
    /// Commands queued, in all classes (kept, so that asking costs no walk
    /// over the classes).
    queued: usize,
}

impl<T> Default for Scheduler<T> {
    fn default() -> Self {
        Self {
            classes: BTreeMap::new(),
            media_iops: None,
            media_bps: None,
            vtime: 0.0,
            queued: 0,
        }
    }
}

impl<T> Scheduler<T> {
    /// Sets (or changes, taking effect for the next command) a class's
    /// service level.
    pub fn set(&mut self, class: u32, params: QosParams, now: f64) -> Result<(), QosError> {
        params.validate()?;
        match self.classes.get_mut(&class) {
            Some(c) => {
                c.params = params;
                c.set_buckets(now);
            }
            None => {
                self.classes.insert(class, Class::new(params, now));
            }
        }
        Ok(())
    }

    /// Models the media's throughput (0: unlimited): nothing runs faster
    /// than `iops` commands and `bps` bytes per second in total, with 5 ms
    /// of burst. This is what makes the card, not its host, the bottleneck,
    /// as with real flash; floors and weights then decide who gets it.
    pub fn set_media(&mut self, iops: f64, bps: f64, now: f64) {
        const BURST_S: f64 = 0.005;
        self.media_iops = (iops > 0.0 && iops.is_finite())
            .then(|| Bucket::new(iops, (iops * BURST_S).max(1.0), now));
        self.media_bps = (bps > 0.0 && bps.is_finite()).then(|| {
            Bucket::new(
                bps,
                (bps * BURST_S).max(crate::nvm::MAX_TRANSFER_BYTES as f64),
                now,
            )
        });
    }

    /// When the media can take the next command (now if it can). A
    /// command's bytes are charged after it runs (the bucket may go into
    /// debt), so the long-run rate holds whatever the command sizes.
    fn media_ready_at(&mut self, now: f64) -> f64 {
        let mut t = now;
        for b in [&mut self.media_iops, &mut self.media_bps]
            .into_iter()
            .flatten()
        {
            b.refill(now);
            t = t.max(b.ready_at(1.0));
        }
        t
    }

    /// A class's service level (default for unknown classes).
    pub fn params(&self, class: u32) -> QosParams {
        self.classes
            .get(&class)
            .map(|c| c.params)
            .unwrap_or_default()
    }

    /// Queues a command of `bytes` for `class`.
    pub fn push(&mut self, class: u32, bytes: u64, item: T, now: f64) {
        let vtime = self.vtime;
        let c = self
            .classes
            .entry(class)
            .or_insert_with(|| Class::new(QosParams::default(), now));
        let p = c.params;
        let r = match QosParams::share(p.min_iops, p.min_bps, bytes) {
            Some(s) => (c.last_r + s).max(now - ANTICIPATION_S),
            None => f64::INFINITY,
        };
        // Proportional share (start-time fair queueing on a virtual
        // clock): the command starts where the class's last one finished,
        // but never before the virtual time, so an idle class gets no
        // credit and a busy past is no debt. Cost: one I/O plus its bytes in
        // 4 KiB units.
        let cost = 1.0 + bytes as f64 / 4096.0;
        let pt = c.last_p.max(vtime);
        if r.is_finite() {
            c.last_r = r;
        }
        c.last_p = pt + cost / p.weight;
        c.queue.push_back(Queued {
            item,
            bytes,
            r,
            p: pt,
        });
        self.queued += 1;
    }

    /// Removes (and returns) every queued command `drop_it` selects.
    pub fn remove_where(&mut self, mut drop_it: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for c in self.classes.values_mut() {
            let mut keep = VecDeque::with_capacity(c.queue.len());
            for q in c.queue.drain(..) {
                if drop_it(&q.item) {
                    out.push(q.item);
                } else {
                    keep.push_back(q);
                }
            }
            c.queue = keep;
        }
        self.queued -= out.len();
        out
    }

    /// Whether a queued command matches `f`.
    pub fn any(&self, mut f: impl FnMut(&T) -> bool) -> bool {
        self.classes
            .values()
            .any(|c| c.queue.iter().any(|q| f(&q.item)))
    }

    /// Whether `class` has a ceiling.
    pub fn has_ceiling(&self, class: u32) -> bool {
        self.classes
            .get(&class)
            .is_some_and(|c| c.iops.is_some() || c.bps.is_some())
    }

    /// Commands queued.
    pub fn len(&self) -> usize {
        self.queued
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Picks the command to run at `now`.
    pub fn next(&mut self, now: f64) -> Next<T> {
        if self.is_empty() {
            return Next::Idle;
        }
        let media = self.media_ready_at(now);
        if media > now {
            return Next::WaitUntil(media);
        }
        let mut wait = f64::INFINITY;
        let mut by_r: Option<(f64, u32)> = None;
        let mut by_p: Option<(f64, u32)> = None;
        for (&id, c) in self.classes.iter_mut() {
            let Some(at) = c.eligible_at(now) else {
                continue;
            };
            if at > now {
                wait = wait.min(at);
                continue;
            }
            let Some(head) = c.queue.front() else {
                continue;
            };
            if head.r <= now && by_r.is_none_or(|(r, _)| head.r < r) {
                by_r = Some((head.r, id));
            }
            if by_p.is_none_or(|(p, _)| head.p < p) {
                by_p = Some((head.p, id));
            }
        }
        let (id, weight_phase) = match (by_r, by_p) {
            (Some((_, id)), _) => (id, false),
            (None, Some((_, id))) => (id, true),
            (None, None) => {
                return if wait.is_finite() {
                    Next::WaitUntil(wait)
                } else {
                    Next::Idle
                };
            }
        };
        let Some(c) = self.classes.get_mut(&id) else {
            return Next::Idle;
        };
        let Some(q) = c.queue.pop_front() else {
            return Next::Idle;
        };
        self.queued -= 1;
        c.charge(q.bytes);
        if let Some(b) = &mut self.media_iops {
            b.take(1.0);
        }
        if let Some(b) = &mut self.media_bps {
            b.take(q.bytes as f64);
        }
        if weight_phase {
            self.vtime = self.vtime.max(q.p);
            // mClock: service in the weight phase does not count towards
            // the floor: pull the class's later reservation tags back.
            if let Some(s) = QosParams::share(c.params.min_iops, c.params.min_bps, q.bytes) {
                for later in c.queue.iter_mut() {
                    later.r -= s;
                }
                c.last_r -= s;
            }
        }
        Next::Run(id, q.item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Simulates a device that completes one command every `1/capacity` s,
    /// with classes that keep `backlog` commands queued; returns each
    /// class's dispatch times.
    fn simulate(
        classes: &[(u32, QosParams, u64)],
        capacity: f64,
        seconds: f64,
    ) -> BTreeMap<u32, Vec<f64>> {
        let mut s = Scheduler::default();
        let mut out: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        for &(id, p, bytes) in classes {
            s.set(id, p, 0.0).unwrap();
            for _ in 0..8 {
                s.push(id, bytes, (), 0.0);
            }
            out.insert(id, Vec::new());
        }
        let mut now = 0.0;
        let step = 1.0 / capacity;
        while now < seconds {
            match s.next(now) {
                Next::Run(id, ()) => {
                    out.get_mut(&id).unwrap().push(now);
                    let bytes = classes.iter().find(|c| c.0 == id).unwrap().2;
                    s.push(id, bytes, (), now);
                    now += step;
                }
                Next::WaitUntil(t) => now = t.max(now + 1e-9),
                Next::Idle => break,
            }
        }
        out
    }

    fn rate(times: &[f64], from: f64, to: f64) -> f64 {
        times.iter().filter(|&&t| t >= from && t < to).count() as f64 / (to - from)
    }

    #[test]
    fn ceiling_holds_under_pressure() {
        let p = QosParams {
            max_iops: 1000.0,
            ..Default::default()
        };
        let out = simulate(&[(1, p, 4096)], 10_000.0, 5.0);
        let r = rate(&out[&1], 1.0, 5.0);
        assert!((r - 1000.0).abs() / 1000.0 < 0.02, "{r}");
    }

    #[test]
    fn bandwidth_ceiling_holds() {
        let p = QosParams {
            max_bps: 8.0 * 1048576.0,
            ..Default::default()
        };
        // 128 KiB commands: 64 per second.
        let out = simulate(&[(1, p, 128 << 10)], 5000.0, 5.0);
        let r = rate(&out[&1], 1.0, 5.0);
        assert!((r - 64.0).abs() < 2.0, "{r}");
    }

    #[test]
    fn floor_is_kept_against_heavy_neighbours() {
        let gold = QosParams {
            min_iops: 2000.0,
            weight: 1.0,
            ..Default::default()
        };
        let be = QosParams {
            weight: 10.0,
            ..Default::default()
        };
        let out = simulate(
            &[(1, gold, 4096), (2, be, 4096), (3, be, 4096)],
            5000.0,
            4.0,
        );
        let g = rate(&out[&1], 0.5, 4.0);
        assert!(g >= 0.97 * 2000.0, "gold got {g}");
        // The rest is split by weight between the neighbours.
        let (a, b) = (rate(&out[&2], 0.5, 4.0), rate(&out[&3], 0.5, 4.0));
        assert!((a - b).abs() / a < 0.05, "{a} vs {b}");
    }

    #[test]
    fn weights_share_spare_capacity() {
        let w = |weight| QosParams {
            weight,
            ..Default::default()
        };
        let out = simulate(&[(1, w(1.0), 4096), (2, w(3.0), 4096)], 4000.0, 4.0);
        let (a, b) = (rate(&out[&1], 0.5, 4.0), rate(&out[&2], 0.5, 4.0));
        assert!((b / a - 3.0).abs() < 0.15, "{a} {b}");
    }

    /// Runs class 1 through a long run of 1 MiB commands and class 2
    /// through many small ones while class 3 idles, then keeps all three
    /// backlogged (16 queued 4 KiB commands each, closed loop) on a device
    /// of 6000 IOPS for 2 s. Returns each class's rate in every 100 ms
    /// window and the longest any command waited.
    fn after_history(late: QosParams) -> (BTreeMap<u32, Vec<f64>>, f64) {
        let mut s = Scheduler::default();
        for id in 1..=2 {
            s.set(id, QosParams::default(), 0.0).unwrap();
        }
        s.set(3, late, 0.0).unwrap();
        let mut now = 0.0;
        for _ in 0..500 {
            s.push(1, 1 << 20, (0u32, 0.0f64), now);
            let Next::Run(..) = s.next(now) else { panic!() };
            now += 0.001;
        }
        for _ in 0..5000 {
            s.push(2, 4096, (0u32, 0.0f64), now);
            let Next::Run(..) = s.next(now) else { panic!() };
            now += 0.0002;
        }
        let start = now;
        for id in 1..=3 {
            for _ in 0..16 {
                s.push(id, 4096, (id, now), now);
            }
        }
        let mut runs: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        let mut worst_wait: f64 = 0.0;
        while now < start + 2.0 {
            match s.next(now) {
                Next::Run(id, (_, queued)) => {
                    worst_wait = worst_wait.max(now - queued);
                    runs.entry(id).or_default().push(now);
                    s.push(id, 4096, (id, now), now);
                    now += 1.0 / 6000.0;
                }
                other => panic!("{other:?}"),
            }
        }
        let mut windows: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        let mut from = start;
        while from + 0.1 <= start + 2.0 + 1e-9 {
            for id in 1..=3 {
                let r = rate(runs.get(&id).map_or(&[][..], |v| v), from, from + 0.1);
                windows.entry(id).or_default().push(r);
            }
            from += 0.1;
        }
        (windows, worst_wait)
    }

    /// A class that idled while others ran must not come back with credit
    /// that starves them, and a class with a long history of large
    /// transfers must not be starved by its past: every backlogged class
    /// gets close to its equal share in every 100 ms window.
    #[test]
    fn history_gives_no_credit_and_no_debt() {
        let (windows, worst) = after_history(QosParams::default());
        assert!(worst < 0.05, "a command waited {worst} s");
        for (id, rates) in windows {
            for r in rates {
                assert!((r - 2000.0).abs() < 200.0, "class {id} got {r} IOPS");
            }
        }
    }

    /// The same with a floor on the late class: it gets its floor, the
    /// neighbours share the rest, nobody starves.
    #[test]
    fn history_and_a_floor() {
        let gold = QosParams {
            min_iops: 3000.0,
            ..Default::default()
        };
        let (windows, worst) = after_history(gold);
        assert!(worst < 0.05, "a command waited {worst} s");
        for (id, rates) in windows {
            let want = if id == 3 { 3000.0 } else { 1500.0 };
            // The first window is left out: the late class may take up to
            // the anticipation's worth of reservation at once when it joins.
            for r in rates.into_iter().skip(1) {
                assert!(
                    (r - want).abs() < 0.1 * want,
                    "class {id} got {r} IOPS, want {want}"
                );
            }
        }
    }

    /// With the media modelled below what the host pushes, the total is
    /// the media's rate and a floor above the equal share is still kept.
    #[test]
    fn media_rate_bounds_the_total_and_floors_hold_within_it() {
        let mut s = Scheduler::default();
        s.set_media(4000.0, 0.0, 0.0);
        let gold = QosParams {
            min_iops: 2000.0,
            ..Default::default()
        };
        s.set(1, gold, 0.0).unwrap();
        for id in 1..=3 {
            for _ in 0..16 {
                s.push(id, 4096, (), 0.0);
            }
        }
        let mut runs: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        let mut now = 0.0;
        // A host that could do 20000 IOPS.
        while now < 3.0 {
            match s.next(now) {
                Next::Run(id, ()) => {
                    runs.entry(id).or_default().push(now);
                    s.push(id, 4096, (), now);
                    now += 1.0 / 20_000.0;
                }
                Next::WaitUntil(t) => now = t.max(now + 1e-9),
                Next::Idle => unreachable!(),
            }
        }
        let total: f64 = (1..=3).map(|id| rate(&runs[&id], 0.5, 3.0)).sum();
        assert!((total - 4000.0).abs() < 80.0, "total {total}");
        let g = rate(&runs[&1], 0.5, 3.0);
        assert!(g >= 0.97 * 2000.0, "gold got {g}");
        let (a, b) = (rate(&runs[&2], 0.5, 3.0), rate(&runs[&3], 0.5, 3.0));
        assert!(
            (a - 1000.0).abs() < 100.0 && (b - 1000.0).abs() < 100.0,
            "{a} {b}"
        );
    }

    /// A closed-loop client with a floor whose gap between a completion and
    /// its next submission jitters (one command in flight; mostly 0.05 ms,
    /// every fourth 2.5 ms: on average fast enough for its floor, but its
    /// queue drains in every gap) still gets its floor: its reservation is
    /// not lost during the short idle spells (anticipation). Without it, it
    /// would get about 730 of its 1000.
    #[test]
    fn jittery_gaps_do_not_cost_the_floor() {
        let mut s = Scheduler::default();
        s.set_media(4000.0, 0.0, 0.0);
        let gold = QosParams {
            min_iops: 1000.0,
            ..Default::default()
        };
        s.set(1, gold, 0.0).unwrap();
        // A neighbour that takes all the spare capacity (weight), so only
        // the reservation serves gold.
        let heavy = QosParams {
            weight: 1000.0,
            ..Default::default()
        };
        s.set(2, heavy, 0.0).unwrap();
        let mut again: Vec<f64> = Vec::new();
        s.push(1, 4096, (), 0.0);
        for _ in 0..32 {
            s.push(2, 4096, (), 0.0);
        }
        let mut runs: Vec<f64> = Vec::new();
        let mut now = 0.0;
        while now < 3.0 {
            again.sort_by(f64::total_cmp);
            while again.first().is_some_and(|&t| t <= now) {
                let t = again.remove(0);
                s.push(1, 4096, (), t);
            }
            match s.next(now) {
                Next::Run(1, ()) => {
                    runs.push(now);
                    let gap = if runs.len().is_multiple_of(4) {
                        0.0025
                    } else {
                        0.00005
                    };
                    again.push(now + gap);
                }
                Next::Run(_, ()) => s.push(2, 4096, (), now),
                Next::WaitUntil(t) => now = t.max(now + 1e-9),
                Next::Idle => unreachable!(),
            }
            now += 1e-6;
        }
        let g = rate(&runs, 0.5, 3.0);
        assert!(g >= 0.97 * 1000.0, "gold got {g}");
    }

    #[test]
    fn changing_the_ceiling_takes_effect_at_once() {
        let mut s = Scheduler::default();
        s.set(
            1,
            QosParams {
                max_iops: 100.0,
                burst_s: 0.0,
                ..Default::default()
            },
            0.0,
        )
        .unwrap();
        let mut now = 0.0;
        let mut runs = Vec::new();
        for i in 0..10_000 {
            if s.len() < 4 {
                s.push(1, 4096, i, now);
            }
            match s.next(now) {
                Next::Run(_, _) => runs.push(now),
                Next::WaitUntil(t) => now = t,
                Next::Idle => unreachable!(),
            }
            if now >= 1.0 && s.params(1).max_iops == 100.0 {
                s.set(
                    1,
                    QosParams {
                        max_iops: 1000.0,
                        burst_s: 0.0,
                        ..Default::default()
                    },
                    now,
                )
                .unwrap();
            }
            if now > 2.0 {
                break;
            }
        }
        let before = rate(&runs, 0.2, 1.0);
        let after = rate(&runs, 1.1, 2.0);
        assert!((before - 100.0).abs() < 5.0, "{before}");
        assert!((after - 1000.0).abs() < 30.0, "{after}");
    }

    #[test]
    fn the_queued_count_follows_push_next_and_remove() {
        let mut s: Scheduler<u32> = Scheduler::default();
        assert!(s.is_empty());
        for i in 0..6 {
            s.push(i % 3, 4096, i, 0.0);
        }
        assert_eq!(s.len(), 6);
        assert!(matches!(s.next(0.0), Next::Run(_, _)));
        assert_eq!(s.len(), 5);
        let gone = s.remove_where(|&i| i % 2 == 0);
        assert_eq!(s.len(), 5 - gone.len());
        while let Next::Run(_, _) = s.next(0.0) {}
        assert!(s.is_empty());
        assert_eq!(s.next(0.0), Next::Idle);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut s: Scheduler<()> = Scheduler::default();
        let p = |f: fn(&mut QosParams)| {
            let mut p = QosParams::default();
            f(&mut p);
            p
        };
        assert_eq!(s.set(1, p(|p| p.weight = 0.0), 0.0), Err(QosError::Weight));
        assert_eq!(
            s.set(1, p(|p| p.max_iops = f64::NAN), 0.0),
            Err(QosError::NotFinite("max_iops"))
        );
        assert_eq!(
            s.set(
                1,
                p(|p| {
                    p.min_iops = 10.0;
                    p.max_iops = 5.0
                }),
                0.0
            ),
            Err(QosError::FloorAboveCeiling("iops"))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over every window of any class's dispatch times, the ceiling plus
        /// its burst is never exceeded.
        #[test]
        fn ceilings_are_never_exceeded(
            max_iops in 50.0f64..3000.0,
            burst_s in 0.0f64..0.2,
            neighbours in 0usize..3,
            capacity in 1000.0f64..8000.0,
        ) {
            let p = QosParams { max_iops, burst_s, ..Default::default() };
            let mut classes = vec![(1u32, p, 4096u64)];
            for n in 0..neighbours {
                classes.push((2 + n as u32, QosParams::default(), 4096));
            }
            let out = simulate(&classes, capacity, 2.0);
            let t = &out[&1];
            let burst = (max_iops * burst_s).max(1.0);
            for window in [0.01f64, 0.1, 0.5, 1.0] {
                for (i, &start) in t.iter().enumerate() {
                    let n = t[i..].iter().take_while(|&&x| x < start + window).count() as f64;
                    prop_assert!(n <= max_iops * window + burst + 1.0,
                        "{n} in {window}s from {start} (ceiling {max_iops}, burst {burst})");
                }
            }
        }

        /// With floors that fit the device, every backlogged class gets its
        /// floor whatever its neighbours' weights.
        #[test]
        fn floors_that_fit_are_met(
            floors in proptest::collection::vec(100.0f64..1500.0, 1..4),
            weights in proptest::collection::vec(0.1f64..20.0, 4),
        ) {
            let capacity = 6000.0;
            let total: f64 = floors.iter().sum();
            prop_assume!(total < 0.8 * capacity);
            let mut classes: Vec<(u32, QosParams, u64)> = floors.iter().enumerate().map(|(i, &f)| {
                (i as u32 + 1, QosParams { min_iops: f, weight: weights[i], ..Default::default() }, 4096)
            }).collect();
            classes.push((99, QosParams { weight: weights[3] * 10.0, ..Default::default() }, 4096));
            let out = simulate(&classes, capacity, 3.0);
            for (i, &f) in floors.iter().enumerate() {
                let got = rate(&out[&(i as u32 + 1)], 0.5, 3.0);
                prop_assert!(got >= 0.97 * f, "class {} got {got} of floor {f}", i + 1);
            }
        }
    }
}
