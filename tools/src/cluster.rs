//! `diaconfig cluster ...`: appliances in one cluster (shared state in etcd,
//! volumes reached across appliances over NVMe/TCP).

use anyhow::Result;
use clap::Subcommand;
use dia::api::{format_size, ClusterStatus, CreateCluster, JoinCluster};

use crate::client::Client;
use crate::output::{self, Format};

/// Cluster subcommands.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Make this appliance the first of a new cluster; its volumes,
    /// networks, tiers, containers and ports become the cluster's.
    Create {
        /// Cluster name.
        name: String,
    },
    /// Join the cluster of the appliance at ADDRESS (its management
    /// address); this appliance's card, pool and ports become part of it.
    Join {
        /// A member's management address.
        address: String,
    },
    /// Members, their health, capacity and use, and the state store's health.
    Status,
    /// Remove an appliance (refused while it holds the only copy of a volume).
    Remove {
        /// The appliance's name.
        node: String,
    },
}

/// Runs a cluster subcommand.
pub fn run(client: &Client, format: &Format, cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Create { name } => {
            eprintln!("starting etcd and carrying this appliance's state into cluster {name}...");
            let s: ClusterStatus = client.post("/v1/cluster", &CreateCluster { name })?;
            println!("{}", render(&s, format)?);
        }
        ClusterCommand::Join { address } => {
            eprintln!("joining the cluster of {address}...");
            let s: ClusterStatus = client.post("/v1/cluster/join", &JoinCluster { address })?;
            println!("{}", render(&s, format)?);
        }
        ClusterCommand::Status => {
            let s: ClusterStatus = client.get("/v1/cluster")?;
            println!("{}", render(&s, format)?);
        }
        ClusterCommand::Remove { node } => {
            client.delete(&format!("/v1/cluster/members/{node}"))?;
            println!(
                "{}",
                output::done(
                    format,
                    "removed",
                    &node,
                    format!("appliance {node} removed")
                )?
            );
        }
    }
    Ok(())
}

fn render(s: &ClusterStatus, format: &Format) -> Result<String> {
    if !format.is_table() {
        return output::data(s, format);
    }
    let Some(name) = &s.name else {
        return Ok(format!(
            "{} is a lone appliance (no cluster): `diaconfig cluster create NAME` or `cluster join ADDRESS`",
            s.me
        ));
    };
    let mut out = format!(
        "Cluster {name} (this appliance: {}), state store: {}\n",
        s.me, s.store
    );
    out.push_str(&output::table(
        &[
            "Appliance",
            "Address",
            "Health",
            "Pool",
            "Placed",
            "Volumes",
            "etcd",
        ],
        s.members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.address.clone(),
                    m.health.clone(),
                    format_size(m.pool_bytes),
                    format_size(m.promised_bytes),
                    m.volumes.to_string(),
                    if m.etcd { "member" } else { "client" }.into(),
                ]
            })
            .collect(),
    ));
    out.push_str("\nState store (etcd):\n");
    out.push_str(&output::table(
        &["Member", "Endpoint", "Health", "Leader"],
        s.store_members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.endpoint.clone(),
                    m.health.clone(),
                    if m.leader { "yes" } else { "" }.into(),
                ]
            })
            .collect(),
    ));
    Ok(out)
}
