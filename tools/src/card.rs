//! `diaconfig card ...`: the card's identity.

use anyhow::Result;
use clap::Subcommand;
use dia::Identity;

use crate::client::Client;
use crate::output::{self, Format};

/// Card subcommands.
#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Show the card's identity: model, serial, firmware, queues, capabilities.
    Info,
}

/// Runs a card subcommand.
pub fn run(client: &Client, format: &Format, cmd: CardCommand) -> Result<()> {
    match cmd {
        CardCommand::Info => {
            let id: Identity = client.get("/v1/card")?;
            println!("{}", render(&id, format)?);
            Ok(())
        }
    }
}

fn render(id: &Identity, format: &Format) -> Result<String> {
    Ok(match format {
        Format::Json | Format::Value(_) => output::data(id, format)?,
        Format::Table => output::key_values(&[
            ("Model", id.model.clone()),
            ("Serial", id.serial.clone()),
            ("Firmware", id.firmware.clone()),
            ("Interface version", id.interface_version.clone()),
            ("Driver ABI version", id.abi_version.to_string()),
            ("PCI vendor", format!("{:#06x}", id.vendor_id)),
            (
                "Capabilities",
                if id.capabilities.is_empty() {
                    "-".into()
                } else {
                    id.capabilities.join(", ")
                },
            ),
            (
                "I/O queues (in use / max)",
                format!("{} / {}", id.io_queues, id.max_io_queues),
            ),
            ("Queue entries (max)", id.max_queue_entries.to_string()),
            ("MSI-X vectors", id.msix_vectors.to_string()),
            ("Namespaces (max)", id.max_namespaces.to_string()),
            ("Ports (max)", id.max_ports.to_string()),
            ("Pool bytes", id.pool_bytes.to_string()),
            (
                "QoS capacity",
                format!(
                    "{} IOPS, {}/s",
                    id.qos_capacity_iops,
                    dia::api::format_size(id.qos_capacity_bps)
                ),
            ),
        ]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            model: "dia emulated container IO card".into(),
            serial: "DIA-1".into(),
            firmware: "0.1.0".into(),
            interface_version: "1.0".into(),
            abi_version: 1,
            vendor_id: 0x1af4,
            capabilities: vec!["storage".into()],
            max_io_queues: 8,
            io_queues: 2,
            max_queue_entries: 1024,
            msix_vectors: 3,
            max_namespaces: 0,
            max_ports: 0,
            pool_bytes: 0,
            qos_capacity_iops: 25_000,
            qos_capacity_bps: 2 << 30,
        }
    }

    #[test]
    fn table_has_the_fields() {
        let t = render(&id(), &Format::Table).unwrap();
        for want in ["Serial", "DIA-1", "0x1af4", "2 / 8", "storage"] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }

    #[test]
    fn json_round_trips() {
        let j = render(&id(), &Format::Json).unwrap();
        let back: Identity = serde_json::from_str(&j).unwrap();
        assert_eq!(back, id());
    }
}
