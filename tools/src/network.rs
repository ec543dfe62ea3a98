//! `diaconfig network ...`: container networks (a VLAN with a subnet,
//! gateway and address range) that ports join.

use anyhow::Result;
use clap::{Args, Subcommand};
use dia::api::{CreateNetwork, Network};
use dia_abi::card::{PORT_MTU_MAX, PORT_MTU_MIN, VLAN_MAX, VLAN_MIN};

use crate::client::Client;
use crate::output::{self, Format};

/// Network subcommands.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network.
    Create(CreateArgs),
    /// List networks.
    List,
    /// Show one network with its ports.
    Show {
        /// Network name.
        name: String,
    },
    /// Delete a network (refused while ports use it).
    Delete {
        /// Network name.
        name: String,
    },
}

/// `network create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Network name.
    pub name: String,
    #[arg(
        long,
        value_parser = clap::value_parser!(u16).range(i64::from(VLAN_MIN)..=i64::from(VLAN_MAX)),
        help = format!("802.1Q VLAN id ({VLAN_MIN} to {VLAN_MAX}), one per network")
    )]
    pub vlan: u16,
    /// IPv4 subnet, e.g. 10.10.0.0/24.
    #[arg(long)]
    pub subnet: String,
    /// Default gateway inside the subnet, e.g. 10.10.0.1.
    #[arg(long)]
    pub gateway: String,
    /// Addresses handed to ports, e.g. 10.10.0.10-10.10.0.200 (default:
    /// the whole subnet).
    #[arg(long)]
    pub range: Option<String>,
    #[arg(
        long,
        value_parser = clap::value_parser!(u16).range(i64::from(PORT_MTU_MIN)..=i64::from(PORT_MTU_MAX)),
        help = format!("MTU of the network's ports ({PORT_MTU_MIN} to {PORT_MTU_MAX}; default 1500)")
    )]
    pub mtu: Option<u16>,
    /// Allow addresses that overlap another network's (a different VLAN).
    #[arg(long)]
    pub allow_overlap: bool,
}

/// Runs a network subcommand.
pub fn run(client: &Client, format: &Format, cmd: NetworkCommand) -> Result<()> {
    match cmd {
        NetworkCommand::Create(a) => {
            let n: Network = client.post(
                "/v1/networks",
                &CreateNetwork {
                    name: a.name,
                    vlan: a.vlan,
                    subnet: a.subnet,
                    gateway: a.gateway,
                    range: a.range,
                    mtu: a.mtu,
                    allow_overlap: a.allow_overlap,
                },
            )?;
            println!("{}", render(&[n], format)?);
        }
        NetworkCommand::List => {
            let ns: Vec<Network> = client.get("/v1/networks")?;
            println!("{}", render(&ns, format)?);
        }
        NetworkCommand::Show { name } => {
            let n: Network = client.get(&format!("/v1/networks/{name}"))?;
            println!("{}", render(&[n], format)?);
        }
        NetworkCommand::Delete { name } => {
            client.delete(&format!("/v1/networks/{name}"))?;
            println!(
                "{}",
                output::done(format, "deleted", &name, format!("network {name} deleted"))?
            );
        }
    }
    Ok(())
}

fn render(ns: &[Network], format: &Format) -> Result<String> {
    Ok(match format {
        Format::Table => output::table(
            &[
                "Network", "VLAN", "Subnet", "Gateway", "Range", "MTU", "Leased", "Ports",
            ],
            ns.iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.vlan.to_string(),
                        n.subnet.clone(),
                        n.gateway.clone(),
                        format!("{}-{}", n.range_start, n.range_end),
                        n.mtu.to_string(),
                        format!("{}/{}", n.leased, n.addresses),
                        if n.ports.is_empty() {
                            "-".into()
                        } else {
                            n.ports.join(", ")
                        },
                    ]
                })
                .collect(),
        ),
        _ if ns.len() == 1 => output::data(&ns[0], format)?,
        _ => output::data(&ns, format)?,
    })
}
