//! The embedded switch: which ports are on which VLAN, and per VLAN a
//! learned table of source MAC -> where it was seen (a local port or the
//! uplink). Forwarding never leaves the frame's VLAN and never returns a
//! frame to where it came from; unknown, broadcast and multicast flood.

use std::collections::{BTreeMap, HashMap};

/// How long a learned MAC stays without being seen again, seconds.
pub(crate) const AGE_S: f64 = 300.0;
/// Most learned entries (beyond: no learning, frames flood).
const TABLE_MAX: usize = 16 * 1024;

/// Where a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// A local port.
    Port(u16),
    /// The uplink (other cards).
    Uplink,
}

#[derive(Debug, Clone, Copy)]
struct Learned {
    dest: Dest,
    at: f64,
}

/// The forwarding state.
#[derive(Debug, Default)]
pub(crate) struct Switch {
    /// Port id -> its VLAN.
    ports: BTreeMap<u16, u16>,
    /// (VLAN, MAC) -> where the MAC was last seen.
    table: HashMap<(u16, [u8; 6]), Learned>,
}

fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

impl Switch {
    /// Puts `port` on `vlan` (adding it, or moving it: what it had learned
    /// is forgotten).
    pub(crate) fn set_port(&mut self, port: u16, vlan: u16) {
        if self.ports.insert(port, vlan) != Some(vlan) {
            self.forget(Dest::Port(port));
        }
    }

    /// Removes `port` and what was learned on it.
    pub(crate) fn remove_port(&mut self, port: u16) {
        self.ports.remove(&port);
        self.forget(Dest::Port(port));
    }

    fn forget(&mut self, dest: Dest) {
        self.table.retain(|_, l| l.dest != dest);
    }

    /// Drops entries not seen for [`AGE_S`].
    pub(crate) fn age(&mut self, now: f64) {
        self.table.retain(|_, l| now - l.at < AGE_S);
    }

    /// Learned entries.
    #[cfg(test)]
    pub(crate) fn learned(&self) -> usize {
        self.table.len()
    }

    /// Learns `src` and fills `out` with where a frame from `from` on
    /// `vlan` to `dst` goes (`out` is cleared first).
    pub(crate) fn forward(
        &mut self,
        vlan: u16,
        src: [u8; 6],
        dst: [u8; 6],
        from: Dest,
        now: f64,
        out: &mut Vec<Dest>,
    ) {
        out.clear();
        if let Dest::Port(p) = from {
            if self.ports.get(&p) != Some(&vlan) {
                // Not a member: the port's frames go nowhere.
                return;
            }
        }
        if !is_multicast(&src) {
            let key = (vlan, src);
            if self.table.len() < TABLE_MAX || self.table.contains_key(&key) {
                self.table.insert(
                    key,
                    Learned {
                        dest: from,
                        at: now,
                    },
                );
            }
        }
        if !is_multicast(&dst) {
            if let Some(l) = self.table.get(&(vlan, dst)) {
                if now - l.at < AGE_S {
                    let to = l.dest;
                    let member = match to {
                        Dest::Port(p) => self.ports.get(&p) == Some(&vlan),
                        Dest::Uplink => true,
                    };
                    if to != from && member {
                        out.push(to);
                    }
                    return;
                }
            }
        }
        // Flood within the VLAN.
        out.extend(
            self.ports
                .iter()
                .filter(|&(&p, &v)| v == vlan && Dest::Port(p) != from)
                .map(|(&p, _)| Dest::Port(p)),
        );
        if from != Dest::Uplink {
            out.push(Dest::Uplink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCAST: [u8; 6] = [0xff; 6];
    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    fn sw() -> Switch {
        let mut s = Switch::default();
        s.set_port(1, 100);
        s.set_port(2, 100);
        s.set_port(3, 200);
        s.set_port(4, 100);
        s
    }

    fn fwd(s: &mut Switch, vlan: u16, src: u8, dst: [u8; 6], from: Dest) -> Vec<Dest> {
        let mut out = Vec::new();
        s.forward(vlan, mac(src), dst, from, 0.0, &mut out);
        out
    }

    #[test]
    fn broadcast_floods_the_vlan_only_and_not_back() {
        let mut s = sw();
        let out = fwd(&mut s, 100, 1, BCAST, Dest::Port(1));
        assert_eq!(out, vec![Dest::Port(2), Dest::Port(4), Dest::Uplink]);
        let out = fwd(&mut s, 200, 3, BCAST, Dest::Port(3));
        assert_eq!(out, vec![Dest::Uplink]);
        // From the uplink: local ports only.
        let out = fwd(&mut s, 100, 9, BCAST, Dest::Uplink);
        assert_eq!(out, vec![Dest::Port(1), Dest::Port(2), Dest::Port(4)]);
        // A VLAN with no port.
        assert!(fwd(&mut s, 300, 9, BCAST, Dest::Uplink).is_empty());
    }

    #[test]
    fn learning_sends_unicast_to_one_port() {
        let mut s = sw();
        // Unknown: flood.
        assert_eq!(fwd(&mut s, 100, 1, mac(2), Dest::Port(1)).len(), 3);
        // Port 2 answers: learned both ways.
        assert_eq!(
            fwd(&mut s, 100, 2, mac(1), Dest::Port(2)),
            vec![Dest::Port(1)]
        );
        assert_eq!(
            fwd(&mut s, 100, 1, mac(2), Dest::Port(1)),
            vec![Dest::Port(2)]
        );
        // Learned from the uplink.
        fwd(&mut s, 100, 9, BCAST, Dest::Uplink);
        assert_eq!(
            fwd(&mut s, 100, 1, mac(9), Dest::Port(1)),
            vec![Dest::Uplink]
        );
        // Never back where it came from.
        assert!(fwd(&mut s, 100, 7, mac(9), Dest::Uplink).is_empty());
        assert!(fwd(&mut s, 100, 1, mac(1), Dest::Port(1)).is_empty());
    }

    #[test]
    fn vlans_are_isolated() {
        let mut s = sw();
        // Port 3 (VLAN 200) is known, but a VLAN 100 frame to its MAC floods
        // VLAN 100 and never reaches port 3.
        fwd(&mut s, 200, 3, BCAST, Dest::Port(3));
        for dst in [mac(3), BCAST, [0x01, 0, 0x5e, 0, 0, 1], mac(42)] {
            for from in [Dest::Port(1), Dest::Uplink] {
                let out = fwd(&mut s, 100, 1, dst, from);
                assert!(!out.contains(&Dest::Port(3)), "{dst:?} from {from:?}");
            }
        }
        // A port sending on a VLAN it is not on reaches nobody.
        assert!(fwd(&mut s, 200, 1, BCAST, Dest::Port(1)).is_empty());
        // The same MAC may live on two VLANs independently.
        fwd(&mut s, 100, 5, BCAST, Dest::Port(2));
        fwd(&mut s, 200, 5, BCAST, Dest::Port(3));
        assert_eq!(
            fwd(&mut s, 100, 1, mac(5), Dest::Port(1)),
            vec![Dest::Port(2)]
        );
        assert!(fwd(&mut s, 200, 3, mac(5), Dest::Port(3)).is_empty());
    }

    #[test]
    fn moving_or_removing_a_port_forgets_it() {
        let mut s = sw();
        fwd(&mut s, 100, 2, BCAST, Dest::Port(2));
        assert_eq!(s.learned(), 1);
        s.set_port(2, 200);
        assert_eq!(s.learned(), 0);
        // Now on 200: VLAN 100 traffic floods without it.
        assert_eq!(
            fwd(&mut s, 100, 1, mac(2), Dest::Port(1)),
            vec![Dest::Port(4), Dest::Uplink]
        );
        fwd(&mut s, 200, 2, BCAST, Dest::Port(2));
        s.remove_port(2);
        assert!(s.table.values().all(|l| l.dest != Dest::Port(2)));
        assert_eq!(
            fwd(&mut s, 200, 3, BCAST, Dest::Port(3)),
            vec![Dest::Uplink]
        );
    }

    #[test]
    fn entries_age_out() {
        let mut s = sw();
        let mut out = Vec::new();
        s.forward(100, mac(2), BCAST, Dest::Port(2), 0.0, &mut out);
        s.forward(100, mac(1), mac(2), Dest::Port(1), AGE_S - 1.0, &mut out);
        assert_eq!(out, vec![Dest::Port(2)]);
        s.forward(100, mac(1), mac(2), Dest::Port(1), AGE_S + 1.0, &mut out);
        assert_eq!(out.len(), 3, "aged entry floods");
        s.age(AGE_S + 1.0);
        assert_eq!(s.learned(), 1, "only port 1's fresh entry stays");
    }
}
