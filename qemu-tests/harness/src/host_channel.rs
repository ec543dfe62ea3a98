//! The host channel: requests a guest sends the harness on its second
//! serial port (`/dev/ttyS1`, see `host_request` in `scenarios/lib.sh`),
//! one line per request and one line per answer, and the barrier that lets
//! the appliances of a multi-appliance scenario wait for each other.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::card_process::CardProcess;

/// How long a node waits at a barrier for the others.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct BarrierState {
    /// Per barrier name: (nodes waiting in the current round, round number).
    names: HashMap<String, (usize, u64)>,
    /// The run ended: every waiter gives up.
    aborted: bool,
    /// Nodes that left the run (their power was cut).
    left: usize,
}

/// A named rendezvous of all nodes of one run: `wait(NAME)` returns once
/// every node asked for NAME (one round; the same NAME can be used again
/// for a later round).
pub struct Barrier {
    nodes: usize,
    state: Mutex<BarrierState>,
    cond: Condvar,
}

impl Barrier {
    /// A barrier for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes,
            state: Mutex::new(BarrierState::default()),
            cond: Condvar::new(),
        }
    }

    /// Waits until all nodes reached `name`, at most `timeout`; returns the
    /// answer line for the guest (`ok` or `error: ...`).
    pub fn wait(&self, name: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let Ok(mut st) = self.state.lock() else {
            return "error: barrier state poisoned".into();
        };
        if st.aborted {
            return "error: the run is over".into();
        }
        let expected = self.nodes.saturating_sub(st.left);
        let entry = st.names.entry(name.to_string()).or_insert((0, 0));
        entry.0 += 1;
        let round = entry.1;
        if entry.0 >= expected {
            *entry = (0, round + 1);
            self.cond.notify_all();
            return "ok".into();
        }
        loop {
            let now = Instant::now();
            if st.aborted {
                return "error: the run is over".into();
            }
            if st.names.get(name).is_some_and(|e| e.1 != round) {
                return "ok".into();
            }
            if now >= deadline {
                let entry = st.names.entry(name.to_string()).or_insert((0, round));
                let arrived = entry.0;
                entry.0 = entry.0.saturating_sub(1);
                return format!(
                    "error: barrier '{name}': {arrived} of {} nodes arrived within {} s",
                    self.nodes,
                    timeout.as_secs()
                );
            }
            st = match self.cond.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(_) => return "error: barrier state poisoned".into(),
            };
        }
    }

    /// A node leaves the run (its power was cut): later rounds wait for
    /// one node fewer, and a round it held up completes now.
    pub fn leave(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.left += 1;
            let expected = self.nodes.saturating_sub(st.left);
            for entry in st.names.values_mut() {
                if entry.0 > 0 && entry.0 >= expected {
                    *entry = (0, entry.1 + 1);
                }
            }
        }
        self.cond.notify_all();
    }

    /// Ends the run: every node still waiting gets an error at once.
    pub fn abort(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.aborted = true;
        }
        self.cond.notify_all();
    }
}

/// Serves one guest's requests on its host-channel socket (QEMU is the
/// server; this thread connects). Requests: `card-kill` (the card's
/// firmware dies), `card-start` (a new firmware starts on the same pool),
/// `card-status`, `card-memory` (the card processes' memory, see
/// [`CardProcess::memory`]), `barrier NAME`. Requests and answers go to `log` (the
/// guest's console stream).
pub fn serve(
    path: PathBuf,
    card: Arc<CardProcess>,
    barrier: Arc<Barrier>,
    log: impl Fn(String) + Send + 'static,
) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(_) => return,
            }
        };
        let Ok(mut writer) = stream.try_clone() else {
            return;
        };
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let request = line.trim().to_string();
            if request.is_empty() {
                continue;
            }
            let answer = match request.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["card-kill"] => card.control("kill"),
                ["card-start"] => card.control("start"),
                ["card-status"] => card.control("status"),
                ["card-memory"] => card.memory(),
                ["barrier", name] => Ok(barrier.wait(name, BARRIER_TIMEOUT)),
                _ => Ok(format!("error: unknown host request '{request}'")),
            }
            .unwrap_or_else(|e| format!("error: {e:#}"));
            log(format!("[host] {request} -> {answer}"));
            if writeln!(writer, "{answer}").is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_leaves_releases_the_others() {
        let b = Arc::new(Barrier::new(3));
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait("x", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        let b3 = b.clone();
        let u = std::thread::spawn(move || b3.wait("x", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        b.leave();
        assert_eq!(t.join().unwrap(), "ok");
        assert_eq!(u.join().unwrap(), "ok");
        // Later rounds need the two that are left.
        let b4 = b.clone();
        let v = std::thread::spawn(move || b4.wait("y", Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.wait("y", Duration::from_secs(10)), "ok");
        assert_eq!(v.join().unwrap(), "ok");
    }

    #[test]
    fn one_node_passes_at_once() {
        let b = Barrier::new(1);
        assert_eq!(b.wait("ready", Duration::from_millis(1)), "ok");
        assert_eq!(b.wait("ready", Duration::from_millis(1)), "ok");
    }

    #[test]
    fn two_nodes_meet_and_the_name_is_reusable() {
        let b = Arc::new(Barrier::new(2));
        for _ in 0..2 {
            let b2 = b.clone();
            let t = std::thread::spawn(move || b2.wait("ready", Duration::from_secs(10)));
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(b.wait("ready", Duration::from_secs(10)), "ok");
            assert_eq!(t.join().ok().as_deref(), Some("ok"));
        }
    }

    #[test]
    fn names_are_separate_and_a_lonely_node_times_out() {
        let b = Arc::new(Barrier::new(2));
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait("a", Duration::from_millis(100)));
        let answer = b.wait("b", Duration::from_millis(100));
        assert!(answer.starts_with("error: barrier 'b': 1 of 2"), "{answer}");
        let answer = t.join().unwrap_or_default();
        assert!(answer.starts_with("error: barrier 'a': 1 of 2"), "{answer}");
        // The timed-out arrivals are withdrawn: a fresh round needs both.
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait("a", Duration::from_secs(10)));
        assert_eq!(b.wait("a", Duration::from_secs(10)), "ok");
        assert_eq!(t.join().ok().as_deref(), Some("ok"));
    }

    #[test]
    fn abort_releases_waiters() {
        let b = Arc::new(Barrier::new(2));
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.wait("x", Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        b.abort();
        assert_eq!(t.join().ok().as_deref(), Some("error: the run is over"));
    }
}
