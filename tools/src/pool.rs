//! `diaconfig pool info`: the card's flash pool.

use anyhow::Result;
use clap::Subcommand;
use dia::api::format_size;
use dia::Pool;

use crate::client::Client;
use crate::output::{self, Format};

/// Pool subcommands.
#[derive(Subcommand, Debug)]
pub enum PoolCommand {
    /// Capacity, use and namespaces of the flash pool.
    Info,
}

/// Runs a pool subcommand.
pub fn run(client: &Client, format: &Format, cmd: PoolCommand) -> Result<()> {
    match cmd {
        PoolCommand::Info => {
            let p: Pool = client.get("/v1/pool")?;
            let text = match format {
                Format::Json | Format::Value(_) => output::data(&p, format)?,
                Format::Table => output::key_values(&[
                    (
                        "Capacity",
                        format!("{} ({} bytes)", format_size(p.total_bytes), p.total_bytes),
                    ),
                    (
                        "Used",
                        format!("{} ({} bytes)", format_size(p.used_bytes), p.used_bytes),
                    ),
                    (
                        "Free",
                        format_size(p.total_bytes.saturating_sub(p.used_bytes)),
                    ),
                    (
                        "Namespaces",
                        format!("{} of {}", p.namespaces, p.max_namespaces),
                    ),
                    ("Allocation unit", format_size(u64::from(p.chunk_bytes))),
                ]),
            };
            println!("{text}");
        }
    }
    Ok(())
}
