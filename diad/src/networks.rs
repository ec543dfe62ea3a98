//! Container networks and ports: a network is a VLAN with an IPv4 subnet,
//! gateway and address range; a port is one of the card's virtual ports
//! given to a container. Attaching creates the port on the card (its VLAN,
//! MTU and the tier's network limits), moves its net device into the
//! container's network namespace, names it (`eth0`), gives it the next free
//! address of the range (the lease, saved with the port) and a default route
//! via the gateway. Detaching deletes the port and frees the lease. Every
//! step that fails undoes the ones before it.

use std::net::Ipv4Addr;

use dia::api::{
    check_name, format_rate, parse_ip, parse_range, AttachPort, CreateNetwork, Network,
    PortStatsView, PortView, Subnet, TierSpec,
};
use dia::PortSettings;
use dia_abi::card::{PORT_MTU_MAX, PORT_MTU_MIN, VLAN_MAX, VLAN_MIN};
use nix::errno::Errno;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::host::NsOp;
use crate::manager::Manager;
use crate::state::{NetworkState, PortState};

/// Default MTU of a network.
pub const DEFAULT_MTU: u16 = 1500;

/// The card's port settings for a port of `net` in `tier`.
pub fn port_settings(net: &NetworkState, tier: &TierSpec) -> PortSettings {
    PortSettings {
        vlan: net.vlan,
        mtu: net.mtu,
        limits: dia::NetLimits::from(tier),
    }
}

fn ip_of(n: &NetworkState) -> (Subnet, Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    // Validated when the network was created; a hand-edited state file that
    // breaks this is reported by reconcile and falls back to nothing leasable.
    let subnet = Subnet::parse(&n.subnet).unwrap_or(Subnet {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 30,
    });
    let gw = n.gateway.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let a = n.range_start.parse().unwrap_or(Ipv4Addr::BROADCAST);
    let b = n.range_end.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    (subnet, gw, a, b)
}

fn range_len(a: Ipv4Addr, b: Ipv4Addr) -> u32 {
    u32::from(b).saturating_sub(u32::from(a)).saturating_add(1)
}

fn check_ifname(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name != "lo";
    if !ok {
        return Err(ApiError::bad_request(format!(
            "interface name '{name}' is not allowed: use 1-15 characters of a-z, A-Z, 0-9, '-', '_' and '.' (not 'lo')"
        )));
    }
    Ok(())
}

impl Manager {
    fn network_view(&self, n: &NetworkState) -> Network {
        let (_, _, a, b) = ip_of(n);
        let ports: Vec<String> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == n.name)
            .map(PortState::name)
            .collect();
        Network {
            name: n.name.clone(),
            vlan: n.vlan,
            subnet: n.subnet.clone(),
            gateway: n.gateway.clone(),
            range_start: n.range_start.clone(),
            range_end: n.range_end.clone(),
            mtu: n.mtu,
            addresses: range_len(a, b),
            leased: ports.len() as u32,
            ports,
        }
    }

    /// Every network.
    pub fn networks(&self) -> Vec<Network> {
        self.state
            .networks
            .iter()
            .map(|n| self.network_view(n))
            .collect()
    }

    fn network_state(&self, name: &str) -> Result<&NetworkState, ApiError> {
        self.state
            .networks
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .state
                    .networks
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect();
                ApiError::unknown(
                    "network",
                    name,
                    &known,
                    "; create one with `diaconfig network create`",
                )
            })
    }

    /// One network.
    pub fn network(&self, name: &str) -> Result<Network, ApiError> {
        Ok(self.network_view(self.network_state(name)?))
    }

    /// Creates a network (nothing changes on the card until a port joins).
    pub fn create_network(&mut self, req: &CreateNetwork) -> Result<Network, ApiError> {
        let bad = ApiError::bad_request;
        check_name("network", &req.name).map_err(bad)?;
        if self.state.networks.iter().any(|n| n.name == req.name) {
            return Err(ApiError::conflict(format!(
                "network '{}' already exists",
                req.name
            )));
        }
        if !(VLAN_MIN..=VLAN_MAX).contains(&req.vlan) {
            return Err(bad(format!(
                "VLAN {} is out of range (allowed: {VLAN_MIN} to {VLAN_MAX})",
                req.vlan
            )));
        }
        if let Some(n) = self.state.networks.iter().find(|n| n.vlan == req.vlan) {
            return Err(ApiError::conflict(format!(
                "VLAN {} is already used by network '{}': each network needs its own VLAN",
                req.vlan, n.name
            )));
        }
        let subnet = Subnet::parse(&req.subnet).map_err(bad)?;
        let gw = parse_ip("gateway", &req.gateway).map_err(bad)?;
        if !subnet.has_host(gw) {
            return Err(bad(format!(
                "gateway {gw} is not a host address of {subnet}"
            )));
        }
        let (a, b) = match &req.range {
            Some(r) => parse_range(r).map_err(bad)?,
            None => (
                Ipv4Addr::from(u32::from(subnet.network()) + 1),
                Ipv4Addr::from(u32::from(subnet.broadcast()) - 1),
            ),
        };
        if !subnet.has_host(a) || !subnet.has_host(b) {
            return Err(bad(format!(
                "range {a}-{b} is not inside {subnet}'s host addresses ({}-{})",
                Ipv4Addr::from(u32::from(subnet.network()) + 1),
                Ipv4Addr::from(u32::from(subnet.broadcast()) - 1)
            )));
        }
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(PORT_MTU_MIN..=PORT_MTU_MAX).contains(&mtu) {
            return Err(bad(format!(
                "MTU {mtu} is out of range (allowed: {PORT_MTU_MIN} to {PORT_MTU_MAX})"
            )));
        }
        if !req.allow_overlap {
            for n in &self.state.networks {
                let (_, _, x, y) = ip_of(n);
                if u32::from(a) <= u32::from(y) && u32::from(x) <= u32::from(b) {
                    return Err(ApiError::conflict(format!(
                        "range {a}-{b} overlaps network '{}' ({x}-{y}, VLAN {}); networks on different VLANs may reuse addresses with --allow-overlap",
                        n.name, n.vlan
                    )));
                }
            }
        }
        let n = NetworkState {
            name: req.name.clone(),
            vlan: req.vlan,
            subnet: subnet.to_string(),
            gateway: gw.to_string(),
            range_start: a.to_string(),
            range_end: b.to_string(),
            mtu,
        };
        self.state.networks.push(n.clone());
        if let Err(e) = self.save() {
            self.state.networks.pop();
            return Err(e);
        }
        info!(network = %n.name, vlan = n.vlan, subnet = %n.subnet, "network created");
        Ok(self.network_view(&n))
    }

    /// Deletes a network no port uses.
    pub fn delete_network(&mut self, name: &str) -> Result<(), ApiError> {
        self.network_state(name)?;
        let users: Vec<String> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == name)
            .map(PortState::name)
            .collect();
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "network '{name}' is in use by ports {}: detach them first",
                users.join(", ")
            )));
        }
        let before = self.state.networks.clone();
        self.state.networks.retain(|n| n.name != name);
        if let Err(e) = self.save() {
            self.state.networks = before;
            return Err(e);
        }
        info!(network = name, "network deleted");
        Ok(())
    }

    /// The first free address of a network's range (skipping the gateway).
    fn next_free(&self, n: &NetworkState) -> Option<Ipv4Addr> {
        let (_, gw, a, b) = ip_of(n);
        (u32::from(a)..=u32::from(b))
            .map(Ipv4Addr::from)
            .find(|ip| *ip != gw && !self.leased(n, *ip))
    }

    fn leased(&self, n: &NetworkState, ip: Ipv4Addr) -> bool {
        let s = ip.to_string();
        self.state
            .ports
            .iter()
            .any(|p| p.network == n.name && p.ip == s)
    }

    fn port_index(&self, name: &str) -> Result<usize, ApiError> {
        let (c, i) = name.split_once(':').unwrap_or((name, "eth0"));
        self.state
            .ports
            .iter()
            .position(|p| p.container == c && p.ifname == i)
            .ok_or_else(|| {
                let known: Vec<String> = self.state.ports.iter().map(PortState::name).collect();
                ApiError::unknown("port", &format!("{c}:{i}"), &known, "")
            })
    }

    fn port_view(&self, p: &PortState) -> PortView {
        let (subnet, gw) = self
            .state
            .networks
            .iter()
            .find(|n| n.name == p.network)
            .map(|n| {
                let (s, gw, _, _) = ip_of(n);
                (s.prefix, gw.to_string())
            })
            .unwrap_or((32, String::new()));
        let (status, settings) = match self.card.port(p.port) {
            _ if !self.mine(p.node.as_deref()) => (
                format!("on {}", p.node.as_deref().unwrap_or_default()),
                None,
            ),
            Ok(c) => (
                if c.link_up { "up" } else { "down" }.to_string(),
                Some(c.settings),
            ),
            Err(e) if e.errno() == Some(Errno::ENOENT) => ("missing".to_string(), None),
            Err(_) => ("card-unavailable".to_string(), None),
        };
        PortView {
            name: p.name(),
            container: p.container.clone(),
            ifname: p.ifname.clone(),
            network: p.network.clone(),
            port: p.port,
            mac: p.mac.clone(),
            address: format!("{}/{}", p.ip, subnet),
            gateway: gw,
            tier: p.tier.clone(),
            status,
            settings,
        }
    }

    /// Every port.
    pub fn ports(&self) -> Vec<PortView> {
        self.state.ports.iter().map(|p| self.port_view(p)).collect()
    }

    /// One port (`container[:ifname]`).
    pub fn port(&self, name: &str) -> Result<PortView, ApiError> {
        Ok(self.port_view(&self.state.ports[self.port_index(name)?]))
    }

    /// A port's counters.
    pub fn port_stats(&self, name: &str) -> Result<PortStatsView, ApiError> {
        let p = &self.state.ports[self.port_index(name)?];
        self.on_this_appliance(p)?;
        let c = self
            .card
            .port(p.port)
            .map_err(|e| ApiError::card("reading the port's counters", e))?;
        Ok(PortStatsView {
            name: p.name(),
            counters: c.counters,
        })
    }

    /// Gives a container a port on a network.
    pub fn attach_port(&mut self, req: &AttachPort) -> Result<PortView, ApiError> {
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
        check_ifname(&ifname)?;
        if req.container.starts_with("pid:") {
            return Err(ApiError::bad_request(
                "ports go to containers diad started (give its name, not pid:N): diad must own the network namespace to manage the port",
            ));
        }
        let (pid, _) = self.resolve(&req.container)?;
        let net = self.network_state(&req.network)?.clone();
        let tier = self
            .tier(req.tier.as_deref().unwrap_or(dia::api::DEFAULT_TIER))?
            .clone();
        if self
            .state
            .ports
            .iter()
            .any(|p| p.container == req.container && p.ifname == ifname)
        {
            return Err(ApiError::conflict(format!(
                "container '{}' already has a port '{ifname}': detach it or pass --ifname",
                req.container
            )));
        }
        let (subnet, gw, a, b) = ip_of(&net);
        let ip = match &req.ip {
            Some(text) => {
                let ip = parse_ip("address", text).map_err(ApiError::bad_request)?;
                if !subnet.has_host(ip) {
                    return Err(ApiError::bad_request(format!(
                        "address {ip} is not a host address of network '{}' ({subnet})",
                        net.name
                    )));
                }
                if ip == gw {
                    return Err(ApiError::bad_request(format!(
                        "address {ip} is the gateway of network '{}'",
                        net.name
                    )));
                }
                if let Some(p) = self
                    .state
                    .ports
                    .iter()
                    .find(|p| p.network == net.name && p.ip == ip.to_string())
                {
                    return Err(ApiError::conflict(format!(
                        "address {ip} is already leased to {}",
                        p.name()
                    )));
                }
                ip
            }
            None => self.next_free(&net).ok_or_else(|| {
                ApiError::conflict(format!(
                    "network '{}' has no free address: all {} of {a}-{b} are leased",
                    net.name,
                    range_len(a, b)
                ))
            })?,
        };
        let created = self
            .card
            .create_port(port_settings(&net, &tier))
            .map_err(|e| ApiError::card("creating the port on the card", e))?;
        let undo = |m: &Manager| {
            if let Err(e) = m.card.delete_port(created.port) {
                warn!(port = created.port, "undoing the port: {e}");
            }
        };
        if let Err(e) = self.host.move_link(&created.ifname, pid) {
            undo(self);
            return Err(ApiError::internal(format!(
                "moving {} into container '{}': {e:#}",
                created.ifname, req.container
            )));
        }
        let op = NsOp::NetUp {
            link: created.ifname.clone(),
            name: ifname.clone(),
            address: format!("{ip}/{}", subnet.prefix),
            gateway: gw.to_string(),
        };
        if let Err(e) = self.host.in_container(pid, &op) {
            undo(self);
            return Err(ApiError::internal(format!(
                "configuring {ifname} in container '{}': {e:#}",
                req.container
            )));
        }
        let p = PortState {
            container: req.container.clone(),
            ifname,
            network: net.name.clone(),
            port: created.port,
            mac: created.mac.clone(),
            ip: ip.to_string(),
            tier: tier.name.clone(),
            node: self.here(),
        };
        self.state.ports.push(p.clone());
        if let Err(e) = self.save() {
            self.state.ports.pop();
            undo(self);
            return Err(e);
        }
        info!(
            port = %p.name(), network = %net.name, ip = %p.ip, card_port = p.port,
            limit = %format_rate(tier.net_max_bps), "port attached"
        );
        Ok(self.port_view(&p))
    }

    /// Takes a port away from its container and frees its address.
    pub fn detach_port(&mut self, name: &str) -> Result<(), ApiError> {
        let i = self.port_index(name)?;
        let p = self.state.ports[i].clone();
        self.on_this_appliance(&p)?;
        match self.card.delete_port(p.port) {
            Ok(()) => {}
            // Already gone (a card that lost it): the lease is still freed.
            Err(e) if e.errno() == Some(Errno::ENOENT) => {
                warn!(port = %p.name(), "port was not on the card");
            }
            Err(e) => return Err(ApiError::card("deleting the port on the card", e)),
        }
        self.state.ports.remove(i);
        if let Err(e) = self.save() {
            self.state.ports.insert(i, p);
            return Err(e);
        }
        info!(port = %p.name(), ip = %p.ip, "port detached; address released");
        Ok(())
    }

    /// Detaches every port of a container (it is going away).
    pub(crate) fn detach_ports_of(&mut self, container: &str) -> Result<(), ApiError> {
        let names: Vec<String> = self
            .state
            .ports
            .iter()
            .filter(|p| p.container == container)
            .map(PortState::name)
            .collect();
        for n in names {
            self.detach_port(&n)?;
        }
        Ok(())
    }

    /// Applies a tier's network limits to its ports (after a tier change).
    pub fn set_port_tier(&mut self, name: &str, tier_name: &str) -> Result<PortView, ApiError> {
        let i = self.port_index(name)?;
        let tier = self.tier(tier_name)?.clone();
        let p = self.state.ports[i].clone();
        self.on_this_appliance(&p)?;
        let net = self.network_state(&p.network)?.clone();
        self.card
            .set_port(p.port, port_settings(&net, &tier))
            .map_err(|e| ApiError::card(&format!("applying tier '{}'", tier.name), e))?;
        self.state.ports[i].tier = tier.name.clone();
        self.save()?;
        info!(port = name, tier = %tier.name, "port tier changed");
        Ok(self.port_view(&self.state.ports[i]))
    }

    /// Refuses to change a port of another appliance of the cluster.
    fn on_this_appliance(&self, p: &PortState) -> Result<(), ApiError> {
        if self.mine(p.node.as_deref()) {
            return Ok(());
        }
        Err(ApiError::conflict(format!(
            "port {} is on appliance '{}': change it there",
            p.name(),
            p.node.as_deref().unwrap_or_default()
        )))
    }

    /// Reports ports whose card port is gone (their leases are kept until
    /// they are detached) and card ports no port owns.
    pub(crate) fn reconcile_ports(&self, report: &mut Vec<String>) {
        let on_card = match self.card.ports() {
            Ok(list) => list,
            // A card without network ports: only a problem if ports exist.
            Err(e) => {
                if !self.state.ports.is_empty() {
                    report.push(format!("cannot list the card's ports: {e}"));
                }
                return;
            }
        };
        let ours = || {
            self.state
                .ports
                .iter()
                .filter(|p| self.mine(p.node.as_deref()))
        };
        for p in ours() {
            if !on_card.iter().any(|c| c.port == p.port) {
                report.push(format!(
                    "port {} (card port {}) is not on the card; detach it to release {}",
                    p.name(),
                    p.port,
                    p.ip
                ));
            }
        }
        for c in &on_card {
            if !ours().any(|p| p.port == c.port) {
                report.push(format!(
                    "card port {} ({}, VLAN {}) is not owned by any container's port",
                    c.port, c.ifname, c.settings.vlan
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{manager, LogHost};

    fn net(name: &str, vlan: u16, subnet: &str, range: Option<&str>) -> CreateNetwork {
        CreateNetwork {
            name: name.into(),
            vlan,
            subnet: subnet.into(),
            gateway: subnet
                .replace(".0/", ".1/")
                .split('/')
                .next()
                .unwrap()
                .into(),
            range: range.map(Into::into),
            mtu: None,
            allow_overlap: false,
        }
    }

    fn attach(container: &str, network: &str) -> AttachPort {
        AttachPort {
            container: container.into(),
            network: network.into(),
            tier: None,
            ip: None,
            ifname: None,
        }
    }

    #[test]
    fn networks_are_validated() {
        let (_d, mut m, _, _) = manager(LogHost::default());
        m.create_network(&net(
            "blue",
            100,
            "10.10.0.0/24",
            Some("10.10.0.10-10.10.0.200"),
        ))
        .unwrap();
        let e = m
            .create_network(&net("red", 100, "10.20.0.0/24", None))
            .unwrap_err();
        assert!(
            e.message
                .contains("VLAN 100 is already used by network 'blue'"),
            "{}",
            e.message
        );
        let e = m
            .create_network(&net("red", 200, "10.10.0.0/24", None))
            .unwrap_err();
        assert!(
            e.message.contains("overlaps network 'blue'"),
            "{}",
            e.message
        );
        let mut r = net("red", 200, "10.10.0.0/24", None);
        r.allow_overlap = true;
        m.create_network(&r).unwrap();
        let e = m
            .create_network(&net("x", 300, "10.30.0.1/24", None))
            .unwrap_err();
        assert!(
            e.message.contains("did you mean 10.30.0.0/24"),
            "{}",
            e.message
        );
        let e = m
            .create_network(&net("x", 5000, "10.30.0.0/24", None))
            .unwrap_err();
        assert!(e.message.contains("allowed: 1 to 4094"), "{}", e.message);
        let e = m
            .create_network(&net("x", 300, "10.30.0.0/24", Some("10.30.1.1-10.30.1.9")))
            .unwrap_err();
        assert!(e.message.contains("not inside"), "{}", e.message);
    }

    #[test]
    fn leases_are_unique_exhaust_clearly_and_free_on_detach() {
        let (_d, mut m, card, host) = manager(LogHost::default());
        m.create_network(&net(
            "blue",
            100,
            "10.10.0.0/24",
            Some("10.10.0.1-10.10.0.3"),
        ))
        .unwrap();
        for c in ["a", "b", "c"] {
            m.create_container(c).unwrap();
        }
        // .1 is the gateway: skipped.
        let a = m.attach_port(&attach("a", "blue")).unwrap();
        assert_eq!(a.address, "10.10.0.2/24");
        let b = m.attach_port(&attach("b", "blue")).unwrap();
        assert_eq!(b.address, "10.10.0.3/24");
        let e = m.attach_port(&attach("c", "blue")).unwrap_err();
        assert!(e.message.contains("no free address"), "{}", e.message);
        assert_eq!(
            card.ports.lock().unwrap().len(),
            2,
            "a refused attach leaves no port"
        );
        let mut taken = attach("c", "blue");
        taken.ip = Some("10.10.0.2".into());
        let e = m.attach_port(&taken).unwrap_err();
        assert!(
            e.message.contains("already leased to a:eth0"),
            "{}",
            e.message
        );
        let e = m.delete_network("blue").unwrap_err();
        assert!(e.message.contains("in use by ports"), "{}", e.message);
        m.detach_port("a").unwrap();
        let c = m.attach_port(&attach("c", "blue")).unwrap();
        assert_eq!(
            c.address, "10.10.0.2/24",
            "the freed address is leased again"
        );
        assert_eq!(card.ports.lock().unwrap().len(), 2);
        assert_eq!(host.moved.lock().unwrap().len(), 3);
        // The lease survives a restart of diad (it is in the state file).
        let saved = crate::state::load_or_create(&m.path).unwrap();
        assert_eq!(saved.ports.len(), 2);
        // Deleting a container releases its ports.
        m.delete_container("b").unwrap();
        assert_eq!(m.ports().len(), 1);
    }

    #[test]
    fn a_failed_configuration_undoes_the_port() {
        let host = LogHost {
            fail_net: true,
            ..Default::default()
        };
        let (_d, mut m, card, _) = manager(host);
        m.create_network(&net("blue", 100, "10.10.0.0/24", None))
            .unwrap();
        m.create_container("a").unwrap();
        let e = m.attach_port(&attach("a", "blue")).unwrap_err();
        assert!(e.message.contains("netlink failed"), "{}", e.message);
        assert!(card.ports.lock().unwrap().is_empty());
        assert!(m.ports().is_empty());
    }

    #[test]
    fn tiers_carry_network_limits_to_the_card() {
        let (_d, mut m, card, _) = manager(LogHost::default());
        m.create_network(&net("blue", 100, "10.10.0.0/24", None))
            .unwrap();
        m.create_container("a").unwrap();
        let mut req = attach("a", "blue");
        req.tier = Some("silver".into());
        m.attach_port(&req).unwrap();
        assert_eq!(
            card.ports.lock().unwrap()[0].settings.limits.max_bps,
            500_000_000
        );
        m.set_port_tier("a:eth0", "best-effort").unwrap();
        assert_eq!(card.ports.lock().unwrap()[0].settings.limits.max_bps, 0);
        let e = m.attach_port(&attach("nope", "blue")).unwrap_err();
        assert_eq!(e.status, 404);
        let e = m.attach_port(&attach("a", "green")).unwrap_err();
        assert!(e.message.contains("no network 'green'"), "{}", e.message);
    }
}
