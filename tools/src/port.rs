//! `diaconfig port ...`: a container's network ports (the card's virtual
//! ports, one net device each inside the container). A port is named
//! `CONTAINER:IFNAME`; `CONTAINER` alone means its `eth0`.

use anyhow::Result;
use clap::{Args, Subcommand};
use dia::api::{format_rate, AttachPort, PortStatsView, PortView, SetTier};

use crate::client::Client;
use crate::output::{self, Format};

/// Port subcommands.
#[derive(Subcommand, Debug)]
pub enum PortCommand {
    /// Give a container a port on a network (an address from its range,
    /// default route via its gateway).
    Attach(AttachArgs),
    /// Take a port away and release its address.
    Detach {
        /// `CONTAINER[:IFNAME]`.
        port: String,
    },
    /// List ports.
    List,
    /// Show one port.
    Show {
        /// `CONTAINER[:IFNAME]`.
        port: String,
    },
    /// A port's counters (packets, bytes, drops, time throttled).
    Stats {
        /// `CONTAINER[:IFNAME]`.
        port: String,
    },
    /// Move a port to another tier (its network limits change at once).
    SetTier {
        /// `CONTAINER[:IFNAME]`.
        port: String,
        /// Tier name.
        tier: String,
    },
}

/// `port attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The container.
    #[arg(long)]
    pub container: String,
    /// The network.
    #[arg(long)]
    pub network: String,
    /// Performance tier (default best-effort).
    #[arg(long)]
    pub tier: Option<String>,
    /// A specific address (default: the next free one of the range).
    #[arg(long)]
    pub ip: Option<String>,
    /// Interface name in the container (default eth0).
    #[arg(long)]
    pub ifname: Option<String>,
}

/// Runs a port subcommand.
pub fn run(client: &Client, format: &Format, cmd: PortCommand) -> Result<()> {
    match cmd {
        PortCommand::Attach(a) => {
            let p: PortView = client.post(
                "/v1/ports",
                &AttachPort {
                    container: a.container,
                    network: a.network,
                    tier: a.tier,
                    ip: a.ip,
                    ifname: a.ifname,
                },
            )?;
            println!("{}", render(&[p], format)?);
        }
        PortCommand::Detach { port } => {
            client.delete(&format!("/v1/ports/{port}"))?;
            println!(
                "{}",
                output::done(format, "detached", &port, format!("port {port} detached"))?
            );
        }
        PortCommand::List => {
            let ps: Vec<PortView> = client.get("/v1/ports")?;
            println!("{}", render(&ps, format)?);
        }
        PortCommand::Show { port } => {
            let p: PortView = client.get(&format!("/v1/ports/{port}"))?;
            println!("{}", render(&[p], format)?);
        }
        PortCommand::Stats { port } => {
            let s: PortStatsView = client.get(&format!("/v1/ports/{port}/stats"))?;
            match format {
                Format::Json | Format::Value(_) => println!("{}", output::data(&s, format)?),
                Format::Table => {
                    let c = &s.counters;
                    println!(
                        "{}",
                        output::key_values(&[
                            ("Port", s.name.clone()),
                            ("TX packets", c.tx_packets.to_string()),
                            ("TX bytes", c.tx_bytes.to_string()),
                            ("RX packets", c.rx_packets.to_string()),
                            ("RX bytes", c.rx_bytes.to_string()),
                            ("TX dropped", c.tx_dropped.to_string()),
                            ("RX dropped", c.rx_dropped.to_string()),
                            ("Throttled", format!("{:.3} s", c.throttled_ns as f64 / 1e9)),
                            ("TSO frames", c.tx_tso_frames.to_string()),
                            ("TSO segments", c.tx_tso_segments.to_string()),
                        ])
                    );
                }
            }
        }
        PortCommand::SetTier { port, tier } => {
            let p: PortView = client.post(&format!("/v1/ports/{port}/tier"), &SetTier { tier })?;
            println!("{}", render(&[p], format)?);
        }
    }
    Ok(())
}

fn render(ps: &[PortView], format: &Format) -> Result<String> {
    Ok(match format {
        Format::Table => output::table(
            &[
                "Port",
                "Network",
                "Address",
                "MAC",
                "Card port",
                "Tier",
                "Limit",
                "Status",
            ],
            ps.iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.network.clone(),
                        p.address.clone(),
                        p.mac.clone(),
                        p.port.to_string(),
                        p.tier.clone(),
                        p.settings
                            .map_or("-".into(), |s| format_rate(s.limits.max_bps)),
                        p.status.clone(),
                    ]
                })
                .collect(),
        ),
        _ if ps.len() == 1 => output::data(&ps[0], format)?,
        _ => output::data(&ps, format)?,
    })
}
