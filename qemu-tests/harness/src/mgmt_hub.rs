//! The management network of a multi-appliance scenario: one Ethernet
//! segment shared by every guest, beside the cards, as a real appliance's
//! management NIC (etcd and the dia daemons talk over it).
//!
//! Each node's QEMU has a virtio-net NIC whose backend is a UDP socket
//! (`-netdev dgram`): it binds `127.0.0.1:P_i` and sends every frame to the
//! hub's `127.0.0.1:H_i`. The hub, threads in the harness, sends each
//! datagram received on `H_i` from `P_i` to every other node's `P_j`, from
//! `H_j` (the address that node's QEMU sends to). A hub, not a switch: every
//! node sees every frame, which is plenty for a few nodes. It keeps no state
//! about a node, so a node whose QEMU restarts (a reboot) on the same port
//! is back on the segment at once; while it is down its frames are dropped.
//!
//! Node `i` has MAC `52:54:00:dd:00:<i>` and the address
//! `192.168.77.<10 + i>/24`, given to the guest as `appliance.mgmt_addr=`.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

/// How often a hub thread looks whether the hub is stopping.
const POLL: Duration = Duration::from_millis(200);

/// The management network's hub, forwarding from `start` while it lives.
pub struct MgmtHub {
    /// The hub's socket for each node, until `start` hands them to threads.
    sockets: Vec<UdpSocket>,
    /// The hub's port for each node (`H_i`).
    hub_ports: Vec<u16>,
    /// Each node's own port, its QEMU's socket (`P_i`), from `start`.
    node_ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

impl MgmtHub {
    /// Binds one hub port per node of `count` (held from here on, so
    /// ports probed afterwards for the nodes differ from them).
    pub fn bind(count: usize) -> Result<Self> {
        let sockets = (0..count)
            .map(|_| {
                let s = UdpSocket::bind(loopback(0)).context("binding a hub port on 127.0.0.1")?;
                s.set_read_timeout(Some(POLL))?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        let hub_ports = sockets
            .iter()
            .map(|s| Ok(s.local_addr().context("hub socket address")?.port()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            sockets,
            hub_ports,
            node_ports: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        })
    }

    /// Starts forwarding between the nodes whose QEMUs bind `node_ports`
    /// (one a node, in node order).
    pub fn start(&mut self, node_ports: Vec<u16>) -> Result<()> {
        anyhow::ensure!(
            node_ports.len() == self.sockets.len(),
            "{} node ports for a hub of {}",
            node_ports.len(),
            self.sockets.len()
        );
        let sockets = std::mem::take(&mut self.sockets);
        for (i, socket) in sockets.iter().enumerate() {
            let rx = socket.try_clone()?;
            // Every other node: the socket to send from and where to.
            let out = sockets
                .iter()
                .zip(&node_ports)
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, (s, &p))| Ok((s.try_clone()?, loopback(p))))
                .collect::<Result<Vec<_>>>()?;
            let from = loopback(node_ports[i]);
            let stop = self.stop.clone();
            self.threads.push(
                std::thread::Builder::new()
                    .name(format!("mgmt-hub-{i}"))
                    .spawn(move || forward(&rx, from, &out, &stop))?,
            );
        }
        self.node_ports = node_ports;
        Ok(())
    }

    /// QEMU arguments of node `node`'s management NIC.
    pub fn qemu_args(&self, node: usize) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!(
                "dgram,id=mgmt,local.type=inet,local.host=127.0.0.1,local.port={},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                self.node_ports[node], self.hub_ports[node]
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=mgmt,mac={}", mac(node)),
        ]
    }
}

/// Node `node`'s management MAC: `52:54:00:dd:00:NN` (hex).
pub fn mac(node: usize) -> String {
    format!("52:54:00:dd:00:{:02x}", node)
}

/// The kernel command-line word giving node `node` its management
/// address: `appliance.mgmt_addr=192.168.77.<10 + node>/24`.
pub fn kernel_arg(node: usize) -> String {
    format!("appliance.mgmt_addr=192.168.77.{}/24", 10 + node)
}

/// One node's half of the hub: every frame its QEMU sends goes to every
/// other node. Errors are a node being down (its QEMU rebooting): the
/// frame is lost, as on a cable with nobody at the other end.
fn forward(rx: &UdpSocket, from: SocketAddr, out: &[(UdpSocket, SocketAddr)], stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_from(&mut buf) {
            Ok((n, src)) if src == from => {
                for (socket, to) in out {
                    let _ = socket.send_to(&buf[..n], to);
                }
            }
            // Not this node's QEMU: not on the segment.
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // E.g. ECONNREFUSED reported for an earlier send to a port
            // nobody had bound: nothing to do, but do not spin on it.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

impl Drop for MgmtHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's QEMU: a socket on its own port that sends to its hub port.
    fn node() -> UdpSocket {
        let s = UdpSocket::bind(loopback(0)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    }

    fn port(s: &UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    /// Receives one datagram: (bytes, the hub port it came from).
    fn recv(s: &UdpSocket) -> Option<(Vec<u8>, u16)> {
        let mut buf = [0u8; 2048];
        let (n, src) = s.recv_from(&mut buf).ok()?;
        Some((buf[..n].to_vec(), src.port()))
    }

    #[test]
    fn forwards_to_every_other_node_from_its_hub_port() {
        let nodes: Vec<UdpSocket> = (0..3).map(|_| node()).collect();
        let mut hub = MgmtHub::bind(3).unwrap();
        hub.start(nodes.iter().map(port).collect()).unwrap();
        let h = &hub.hub_ports;
        nodes[0].send_to(b"frame from 0", loopback(h[0])).unwrap();
        assert_eq!(recv(&nodes[1]), Some((b"frame from 0".to_vec(), h[1])));
        assert_eq!(recv(&nodes[2]), Some((b"frame from 0".to_vec(), h[2])));
        assert_eq!(recv(&nodes[0]), None, "a frame never goes back");
        nodes[2].send_to(&[0xab; 1514], loopback(h[2])).unwrap();
        assert_eq!(recv(&nodes[0]), Some((vec![0xab; 1514], h[0])));
        assert_eq!(recv(&nodes[1]), Some((vec![0xab; 1514], h[1])));
        assert_eq!(recv(&nodes[2]), None);
        // A stranger sending to a hub port is not on the segment.
        let stranger = node();
        stranger.send_to(b"stray", loopback(h[1])).unwrap();
        assert_eq!(recv(&nodes[0]), None);
        assert_eq!(recv(&nodes[2]), None);
    }

    #[test]
    fn a_node_that_comes_back_on_its_port_is_reached_again() {
        let mut nodes: Vec<UdpSocket> = (0..2).map(|_| node()).collect();
        let ports: Vec<u16> = nodes.iter().map(port).collect();
        let mut hub = MgmtHub::bind(2).unwrap();
        hub.start(ports.clone()).unwrap();
        let h = &hub.hub_ports;
        // Node 1's QEMU is gone (rebooting): frames to it are lost...
        drop(nodes.pop());
        for _ in 0..3 {
            nodes[0].send_to(b"lost", loopback(h[0])).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        // ...and once it is back on the same port, it hears node 0 again.
        let back = UdpSocket::bind(loopback(ports[1])).unwrap();
        back.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        nodes[0].send_to(b"again", loopback(h[0])).unwrap();
        assert_eq!(recv(&back), Some((b"again".to_vec(), h[1])));
        back.send_to(b"reply", loopback(h[1])).unwrap();
        assert_eq!(recv(&nodes[0]), Some((b"reply".to_vec(), h[0])));
    }

    #[test]
    fn qemu_arguments_and_addresses() {
        let mut hub = MgmtHub::bind(2).unwrap();
        assert!(hub.start(vec![4000]).is_err());
        hub.start(vec![4000, 4001]).unwrap();
        let args = hub.qemu_args(1);
        assert_eq!(args[0], "-netdev");
        assert_eq!(
            args[1],
            format!(
                "dgram,id=mgmt,local.type=inet,local.host=127.0.0.1,local.port=4001,\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                hub.hub_ports[1]
            )
        );
        assert_eq!(args[3], "virtio-net-pci,netdev=mgmt,mac=52:54:00:dd:00:01");
        assert_eq!(mac(10), "52:54:00:dd:00:0a");
        assert_eq!(kernel_arg(2), "appliance.mgmt_addr=192.168.77.12/24");
    }
}
