//! `diaconfig container ...`: containers on the appliance (their own mount,
//! network, UTS and IPC namespaces and /dev) that volumes attach to.

use anyhow::Result;
use clap::Subcommand;
use dia::api::{Container, CreateContainer};

use crate::client::Client;
use crate::output::{self, Format};

/// Container subcommands.
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Start a container (its init waits; enter it with nsenter -t PID -m -n).
    Create {
        /// Container name.
        name: String,
    },
    /// List containers.
    List,
    /// Stop a container (refused while volumes are attached; its ports are
    /// detached and their addresses released).
    Delete {
        /// Container name.
        name: String,
    },
}

/// Runs a container subcommand.
pub fn run(client: &Client, format: &Format, cmd: ContainerCommand) -> Result<()> {
    match cmd {
        ContainerCommand::Create { name } => {
            let c: Container = client.post("/v1/containers", &CreateContainer { name })?;
            println!("{}", render(&[c], format)?);
        }
        ContainerCommand::List => {
            let cs: Vec<Container> = client.get("/v1/containers")?;
            println!("{}", render(&cs, format)?);
        }
        ContainerCommand::Delete { name } => {
            client.delete(&format!("/v1/containers/{name}"))?;
            println!(
                "{}",
                output::done(
                    format,
                    "deleted",
                    &name,
                    format!("container {name} deleted")
                )?
            );
        }
    }
    Ok(())
}

fn render(cs: &[Container], format: &Format) -> Result<String> {
    Ok(match format {
        Format::Table => output::table(
            &["Name", "PID", "Status", "Volumes", "Ports"],
            cs.iter()
                .map(|c| {
                    vec![
                        c.name.clone(),
                        c.pid.to_string(),
                        c.status.clone(),
                        if c.volumes.is_empty() {
                            "-".into()
                        } else {
                            c.volumes.join(", ")
                        },
                        if c.ports.is_empty() {
                            "-".into()
                        } else {
                            c.ports.join(", ")
                        },
                    ]
                })
                .collect(),
        ),
        _ if cs.len() == 1 => output::data(&cs[0], format)?,
        _ => output::data(&cs, format)?,
    })
}
