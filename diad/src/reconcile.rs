//! At start, the desired state compared with the card: differences are
//! reported (and logged), a volume whose namespace is gone is reported
//! `missing` (never silently recreated, since its data is gone), a
//! namespace no volume owns is listed as an orphan, tiers are applied again
//! and attached volumes whose namespace was detached are attached again.

use std::collections::HashMap;

use dia::api::format_size;
use dia::Namespace;
use tracing::warn;

use crate::manager::Manager;

impl Manager {
    /// Compares the state with the card at start; returns what differs
    /// (also logged). Attached volumes whose namespace was detached are
    /// attached again.
    pub fn reconcile(&mut self) -> Vec<String> {
        let mut report = Vec::new();
        let all = match self.card.namespaces() {
            Ok(all) => all,
            Err(e) => {
                report.push(format!("card unavailable, nothing reconciled: {e}"));
                for r in &report {
                    warn!("{r}");
                }
                return report;
            }
        };
        let by_id: HashMap<u32, &Namespace> = all.iter().map(|n| (n.nsid, n)).collect();
        for v in self
            .state
            .volumes
            .iter()
            .filter(|v| self.mine(v.node.as_deref()) && !v.mirrored())
        {
            match by_id.get(&v.nsid).filter(|n| n.label == v.name) {
                None => report.push(format!(
                    "volume '{}' (namespace {}) is in the state file but not on the card: reported as missing, not recreated",
                    v.name, v.nsid
                )),
                Some(ns) => {
                    let applied = self
                        .state
                        .tiers
                        .iter()
                        .find(|t| t.name == v.tier)
                        .map(|t| self.apply_tier(&v.name, v.nsid, t));
                    match applied {
                        Some(Ok(())) => {}
                        Some(Err(e)) => report.push(format!("volume '{}': tier '{}' not applied: {}", v.name, v.tier, e.message)),
                        None => report.push(format!("volume '{}': its tier '{}' does not exist", v.name, v.tier)),
                    }
                    if v.attachment.is_some() && !ns.attached {
                        match self.card.attach_namespace(v.nsid) {
                            Ok(()) => report.push(format!("volume '{}': namespace {} attached again", v.name, v.nsid)),
                            Err(e) => report.push(format!("volume '{}': cannot attach namespace {}: {e}", v.name, v.nsid)),
                        }
                    }
                    if let Some(a) = v.attachment.as_ref().filter(|_| v.remote.is_none()) {
                        if self.resolve(&a.container).is_err() {
                            report.push(format!(
                                "volume '{}' is attached to container '{}', which is gone: detach it",
                                v.name, a.container
                            ));
                        }
                    }
                }
            }
        }
        // A mirrored volume's copies here (exported at the cluster's
        // resume); its mirror namespace, where it is attached here, comes
        // back with the card's pool.
        for v in self.state.volumes.iter().filter(|v| v.mirrored()) {
            for (_, nsid) in v.copies().filter(|(n, _)| self.mine(*n)) {
                if by_id.get(&nsid).is_none_or(|n| n.label != v.name) {
                    report.push(format!(
                        "volume '{}': its copy here (namespace {nsid}) is not on the card",
                        v.name
                    ));
                }
            }
        }
        for n in &all {
            if !self.owns(n) {
                report.push(format!(
                    "orphan namespace {} (label '{}', {}) on the card: no volume owns it",
                    n.nsid,
                    n.label,
                    format_size(n.size_bytes)
                ));
            }
        }
        for c in self
            .state
            .containers
            .iter()
            .filter(|c| self.mine(c.node.as_deref()))
        {
            if !self.host.container_alive(c.pid, Some(&c.name)) {
                report.push(format!(
                    "container '{}' is gone (init {} exited)",
                    c.name, c.pid
                ));
            }
        }
        self.reconcile_ports(&mut report);
        for r in &report {
            warn!("{r}");
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use crate::card_device::CardDevice;
    use crate::test_support::{manager, vol, LogHost};

    #[test]
    fn reconcile_reports_missing_and_orphans_without_recreating() {
        let (_dir, mut m, card, _) = manager(LogHost::default());
        m.create(&vol("kept", 1 << 30)).unwrap();
        m.create(&vol("lost", 1 << 30)).unwrap();
        card.delete_namespace(2).unwrap();
        card.create_namespace(1 << 20, 12, "stranger").unwrap();
        let report = m.reconcile().join("\n");
        assert!(
            report.contains("volume 'lost' (namespace 2) is in the state file but not on the card"),
            "{report}"
        );
        assert!(report.contains("orphan namespace"), "{report}");
        assert!(report.contains("stranger"), "{report}");
        let list = m.list();
        let lost = list.volumes.iter().find(|v| v.name == "lost").unwrap();
        assert_eq!(lost.status, "missing");
        assert_eq!(list.orphans.len(), 1);
        assert_eq!(card.namespaces().unwrap().len(), 2, "nothing recreated");
    }
}
