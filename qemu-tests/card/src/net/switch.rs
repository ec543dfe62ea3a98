//! The embedded switch: which ports are on which VLAN with which MAC, and
//! per VLAN a table of the MACs learned behind the uplink. Forwarding never
//! leaves the frame's VLAN and never returns a frame to where it came from;
//! unknown, broadcast and multicast destinations flood the VLAN.
//!
//! A port's MAC is the card's (the MAC rule), not the host's choice: a
//! frame from a port whose source MAC is not the port's is refused
//! ([`Refused::Spoofed`]), and a local port's MAC is known from the moment
//! the port exists, so nothing learned can take it over. Only the uplink's
//! MACs are learned, per VLAN (the same MAC on VLAN 100 and on VLAN 200 are
//! two entries) and only on VLANs that have a local port; each VLAN's table
//! holds at most [`VLAN_TABLE_MAX`] entries, so a flood of source MACs on
//! one VLAN stops learning there (its unknown unicast floods) and nowhere
//! else.

use std::collections::{BTreeMap, HashMap};

/// How long a learned MAC stays without being seen again, seconds.
pub(crate) const AGE_S: f64 = 300.0;
/// Most MACs learned behind the uplink per VLAN (beyond: no learning on
/// that VLAN, its frames to unknown MACs flood). With at most one table per
/// VLAN that has a local port, the card holds at most
/// `MAX_PORTS * VLAN_TABLE_MAX` entries.
pub(crate) const VLAN_TABLE_MAX: usize = 4096;

/// Where a frame comes from or goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dest {
    /// A local port.
    Port(u16),
    /// The uplink (other cards).
    Uplink,
}

/// Why the switch refused a frame from a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The port is not on the frame's VLAN (or does not exist).
    NotMember,
    /// The source MAC is not the port's.
    Spoofed,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    vlan: u16,
    mac: [u8; 6],
}

/// The forwarding state.
#[derive(Debug, Default)]
pub(crate) struct Switch {
    /// Port id -> its VLAN and MAC.
    ports: BTreeMap<u16, Member>,
    /// (VLAN, MAC) -> the local port that has it.
    local: HashMap<(u16, [u8; 6]), u16>,
    /// VLAN -> MAC -> when it was last seen behind the uplink. A VLAN has
    /// a table while it has a local port.
    learned: HashMap<u16, HashMap<[u8; 6], f64>>,
}

fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

impl Switch {
    /// Puts `port` with its `mac` on `vlan` (adding it, or moving it).
    pub(crate) fn set_port(&mut self, port: u16, vlan: u16, mac: [u8; 6]) {
        self.remove_port(port);
        self.ports.insert(port, Member { vlan, mac });
        self.local.insert((vlan, mac), port);
        self.learned.entry(vlan).or_default();
    }

    /// Removes `port`; a VLAN left without ports forgets what it learned.
    pub(crate) fn remove_port(&mut self, port: u16) {
        let Some(m) = self.ports.remove(&port) else {
            return;
        };
        if self.local.get(&(m.vlan, m.mac)) == Some(&port) {
            self.local.remove(&(m.vlan, m.mac));
        }
        if !self.ports.values().any(|o| o.vlan == m.vlan) {
            self.learned.remove(&m.vlan);
        }
    }

    /// Drops entries not seen for [`AGE_S`].
    pub(crate) fn age(&mut self, now: f64) {
        for table in self.learned.values_mut() {
            table.retain(|_, at| now - *at < AGE_S);
        }
    }

    /// Learned entries on `vlan`.
    #[cfg(test)]
    pub(crate) fn learned(&self, vlan: u16) -> usize {
        self.learned.get(&vlan).map_or(0, HashMap::len)
    }

    /// Checks a frame from `from` on `vlan`, learns `src` if it came from
    /// the uplink, and fills `out` with where the frame goes (`out` is
    /// cleared first; empty: nowhere).
    pub(crate) fn forward(
        &mut self,
        vlan: u16,
        src: [u8; 6],
        dst: [u8; 6],
        from: Dest,
        now: f64,
        out: &mut Vec<Dest>,
    ) -> Result<(), Refused> {
        out.clear();
        match from {
            Dest::Port(p) => {
                let m = self.ports.get(&p).ok_or(Refused::NotMember)?;
                if m.vlan != vlan {
                    return Err(Refused::NotMember);
                }
                if m.mac != src {
                    return Err(Refused::Spoofed);
                }
            }
            Dest::Uplink => {
                // Never a local port's MAC, never on a VLAN without ports.
                if !is_multicast(&src) && !self.local.contains_key(&(vlan, src)) {
                    if let Some(table) = self.learned.get_mut(&vlan) {
                        if table.len() < VLAN_TABLE_MAX || table.contains_key(&src) {
                            table.insert(src, now);
                        }
                    }
                }
            }
        }
        if !is_multicast(&dst) {
            if let Some(&p) = self.local.get(&(vlan, dst)) {
                if Dest::Port(p) != from {
                    out.push(Dest::Port(p));
                }
                return Ok(());
            }
            let behind_uplink = self
                .learned
                .get(&vlan)
                .and_then(|t| t.get(&dst))
                .is_some_and(|at| now - at < AGE_S);
            if behind_uplink {
                if from != Dest::Uplink {
                    out.push(Dest::Uplink);
                }
                return Ok(());
            }
        }
        // Flood within the VLAN.
        out.extend(
            self.ports
                .iter()
                .filter(|&(&p, m)| m.vlan == vlan && Dest::Port(p) != from)
                .map(|(&p, _)| Dest::Port(p)),
        );
        if from != Dest::Uplink {
            out.push(Dest::Uplink);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCAST: [u8; 6] = [0xff; 6];
    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }
    /// A MAC behind the uplink.
    fn remote(n: u16) -> [u8; 6] {
        let [a, b] = n.to_be_bytes();
        [2, 0xee, 0, 0, a, b]
    }

    /// Ports 1, 2, 4 on VLAN 100 and 3 on VLAN 200; port n has mac(n).
    fn sw() -> Switch {
        let mut s = Switch::default();
        s.set_port(1, 100, mac(1));
        s.set_port(2, 100, mac(2));
        s.set_port(3, 200, mac(3));
        s.set_port(4, 100, mac(4));
        s
    }

    fn fwd_mac(s: &mut Switch, vlan: u16, src: [u8; 6], dst: [u8; 6], from: Dest) -> Vec<Dest> {
        let mut out = Vec::new();
        s.forward(vlan, src, dst, from, 0.0, &mut out)
            .expect("forwarded");
        out
    }

    /// A frame from port `p` (with its own MAC) or from the uplink with
    /// mac(`src`).
    fn fwd(s: &mut Switch, vlan: u16, src: u8, dst: [u8; 6], from: Dest) -> Vec<Dest> {
        fwd_mac(s, vlan, mac(src), dst, from)
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
        assert_eq!(s.learned(300), 0, "nothing learned where no port listens");
    }

    #[test]
    fn unicast_goes_to_one_port_or_the_uplink() {
        let mut s = sw();
        // A local port's MAC is known before it sends anything.
        assert_eq!(
            fwd(&mut s, 100, 1, mac(2), Dest::Port(1)),
            vec![Dest::Port(2)]
        );
        assert_eq!(
            fwd(&mut s, 100, 9, mac(4), Dest::Uplink),
            vec![Dest::Port(4)]
        );
        // Unknown: flood.
        assert_eq!(fwd(&mut s, 100, 1, mac(8), Dest::Port(1)).len(), 3);
        // Learned from the uplink (the frame to port 4 above, too).
        fwd(&mut s, 100, 8, BCAST, Dest::Uplink);
        assert_eq!(
            fwd(&mut s, 100, 1, mac(8), Dest::Port(1)),
            vec![Dest::Uplink]
        );
        assert_eq!(
            fwd(&mut s, 100, 1, mac(9), Dest::Port(1)),
            vec![Dest::Uplink]
        );
        // Never back where it came from.
        assert!(fwd(&mut s, 100, 7, mac(9), Dest::Uplink).is_empty());
        assert!(fwd(&mut s, 100, 1, mac(1), Dest::Port(1)).is_empty());
    }

    #[test]
    fn a_port_sends_only_with_its_own_mac() {
        let mut s = sw();
        let mut out = vec![Dest::Uplink];
        // Port 1 claims port 2's MAC, a remote MAC, a multicast source.
        for src in [mac(2), mac(9), [0x01, 0, 0x5e, 0, 0, 1], BCAST] {
            assert_eq!(
                s.forward(100, src, BCAST, Dest::Port(1), 0.0, &mut out),
                Err(Refused::Spoofed),
                "{src:?}"
            );
            assert!(out.is_empty());
        }
        // Port 2's MAC still leads to port 2, from anywhere.
        assert_eq!(
            fwd(&mut s, 100, 4, mac(2), Dest::Port(4)),
            vec![Dest::Port(2)]
        );
        // The uplink cannot take a local port's MAC either.
        fwd_mac(&mut s, 100, mac(2), BCAST, Dest::Uplink);
        assert_eq!(s.learned(100), 0);
        assert_eq!(
            fwd(&mut s, 100, 1, mac(2), Dest::Port(1)),
            vec![Dest::Port(2)]
        );
        // Nor can a port send on another VLAN (or a deleted one at all).
        assert_eq!(
            s.forward(200, mac(1), BCAST, Dest::Port(1), 0.0, &mut out),
            Err(Refused::NotMember)
        );
        s.remove_port(1);
        assert_eq!(
            s.forward(100, mac(1), BCAST, Dest::Port(1), 0.0, &mut out),
            Err(Refused::NotMember)
        );
    }

    #[test]
    fn vlans_are_isolated() {
        let mut s = sw();
        // Port 3 (VLAN 200) is known, but a VLAN 100 frame to its MAC floods
        // VLAN 100 and never reaches port 3.
        for dst in [mac(3), BCAST, [0x01, 0, 0x5e, 0, 0, 1], mac(42)] {
            for (src, from) in [(1, Dest::Port(1)), (9, Dest::Uplink)] {
                let out = fwd(&mut s, 100, src, dst, from);
                assert!(!out.contains(&Dest::Port(3)), "{dst:?} from {from:?}");
            }
        }
        // The same remote MAC on two VLANs: two independent entries.
        s.set_port(5, 300, mac(5));
        fwd(&mut s, 100, 9, BCAST, Dest::Uplink);
        assert_eq!((s.learned(100), s.learned(300)), (1, 0));
        assert_eq!(
            fwd(&mut s, 100, 1, mac(9), Dest::Port(1)),
            vec![Dest::Uplink]
        );
        assert_eq!(
            fwd(&mut s, 300, 5, mac(9), Dest::Port(5)),
            vec![Dest::Uplink],
            "unknown on 300: floods, which here is the uplink only"
        );
        fwd(&mut s, 300, 9, BCAST, Dest::Uplink);
        assert_eq!((s.learned(100), s.learned(300)), (1, 1));
    }

    #[test]
    fn learning_is_bounded_per_vlan() {
        let mut s = sw();
        // The uplink floods VLAN 100 with source MACs.
        for n in 0..(VLAN_TABLE_MAX as u16 + 100) {
            fwd_mac(&mut s, 100, remote(n), BCAST, Dest::Uplink);
        }
        assert_eq!(s.learned(100), VLAN_TABLE_MAX);
        // A MAC past the bound is not learned: frames to it flood.
        assert_eq!(
            fwd(
                &mut s,
                100,
                1,
                remote(VLAN_TABLE_MAX as u16 + 1),
                Dest::Port(1)
            )
            .len(),
            3
        );
        // VLAN 200 still learns.
        fwd_mac(&mut s, 200, remote(1), BCAST, Dest::Uplink);
        assert_eq!(
            fwd(&mut s, 200, 3, remote(1), Dest::Port(3)),
            vec![Dest::Uplink]
        );
        // And a VLAN whose last port leaves forgets its table.
        s.remove_port(3);
        assert_eq!(s.learned(200), 0);
    }

    #[test]
    fn moving_or_removing_a_port_moves_its_mac() {
        let mut s = sw();
        s.set_port(2, 200, mac(2));
        // Now on 200: VLAN 100 traffic to its MAC floods without it.
        assert_eq!(
            fwd(&mut s, 100, 1, mac(2), Dest::Port(1)),
            vec![Dest::Port(4), Dest::Uplink]
        );
        assert_eq!(
            fwd(&mut s, 200, 3, mac(2), Dest::Port(3)),
            vec![Dest::Port(2)]
        );
        s.remove_port(2);
        assert_eq!(
            fwd(&mut s, 200, 3, BCAST, Dest::Port(3)),
            vec![Dest::Uplink]
        );
        assert_eq!(
            fwd(&mut s, 200, 3, mac(2), Dest::Port(3)),
            vec![Dest::Uplink]
        );
    }

    #[test]
    fn entries_age_out() {
        let mut s = sw();
        let mut out = Vec::new();
        s.forward(100, mac(9), BCAST, Dest::Uplink, 0.0, &mut out)
            .unwrap();
        s.forward(100, mac(1), mac(9), Dest::Port(1), AGE_S - 1.0, &mut out)
            .unwrap();
        assert_eq!(out, vec![Dest::Uplink]);
        s.forward(100, mac(1), mac(9), Dest::Port(1), AGE_S + 1.0, &mut out)
            .unwrap();
        assert_eq!(out.len(), 3, "aged entry floods");
        s.age(AGE_S + 1.0);
        assert_eq!(s.learned(100), 0);
    }
}
