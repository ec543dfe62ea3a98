//! `diaconfig tier ...`: performance tiers (storage floor, ceiling and
//! weight per volume).

use anyhow::Result;
use clap::{Args, Subcommand};
use dia::api::{format_rate, format_size, parse_rate, parse_size, Tier, TierSpec};
use dia_abi::card::{
    PORT_BURST_DEFAULT_MS, PORT_BURST_MAX_MS, QOS_BURST_DEFAULT_MS, QOS_BURST_MAX_MS,
    QOS_WEIGHT_MAX, QOS_WEIGHT_MIN,
};

use crate::client::Client;
use crate::output::{self, Format};

/// Tier subcommands.
#[derive(Subcommand, Debug)]
pub enum TierCommand {
    /// Define a tier (every volume in it gets these numbers for itself).
    Create(CreateArgs),
    /// List tiers and the volumes in each.
    List,
    /// Delete a tier (refused while volumes or ports use it; built-in tiers stay).
    Delete {
        /// Tier name.
        name: String,
    },
}

/// `tier create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Tier name.
    pub name: String,
    /// Guaranteed I/Os per second.
    #[arg(long, default_value_t = 0)]
    pub min_iops: u64,
    /// Most I/Os per second (0: no ceiling).
    #[arg(long, default_value_t = 0)]
    pub max_iops: u64,
    /// Guaranteed bandwidth per second, e.g. 20M.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub min_bw: u64,
    /// Most bandwidth per second, e.g. 80M (0: no ceiling).
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub max_bw: u64,
    #[arg(
        long,
        default_value_t = QOS_WEIGHT_MIN,
        value_parser = clap::value_parser!(u32).range(i64::from(QOS_WEIGHT_MIN)..=i64::from(QOS_WEIGHT_MAX)),
        help = format!("Share of spare capacity against other tiers ({QOS_WEIGHT_MIN} to {QOS_WEIGHT_MAX})")
    )]
    pub weight: u32,
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(QOS_BURST_MAX_MS)),
        help = format!("Burst the ceilings allow, in milliseconds at the ceiling rate (0: {QOS_BURST_DEFAULT_MS} ms)")
    )]
    pub burst_ms: u32,
    /// Most bits per second a port sends, e.g. 100M = 100 Mbit/s (0: no limit).
    #[arg(long, value_parser = parse_rate, default_value = "0")]
    pub net_max_bw: u64,
    /// Most packets per second a port sends (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub net_max_pps: u64,
    #[arg(
        long,
        default_value_t = 0,
        value_parser = clap::value_parser!(u32).range(0..=i64::from(PORT_BURST_MAX_MS)),
        help = format!("Burst of the network limits, milliseconds (0: {PORT_BURST_DEFAULT_MS} ms)")
    )]
    pub net_burst_ms: u32,
}

/// Runs a tier subcommand.
pub fn run(client: &Client, format: &Format, cmd: TierCommand) -> Result<()> {
    match cmd {
        TierCommand::Create(a) => {
            let t: Tier = client.post(
                "/v1/tiers",
                &TierSpec {
                    name: a.name,
                    min_iops: a.min_iops,
                    max_iops: a.max_iops,
                    min_bps: a.min_bw,
                    max_bps: a.max_bw,
                    weight: a.weight,
                    burst_ms: a.burst_ms,
                    net_max_bps: a.net_max_bw,
                    net_max_pps: a.net_max_pps,
                    net_burst_ms: a.net_burst_ms,
                },
            )?;
            println!("{}", render(&[t], format)?);
        }
        TierCommand::List => {
            let ts: Vec<Tier> = client.get("/v1/tiers")?;
            println!("{}", render(&ts, format)?);
        }
        TierCommand::Delete { name } => {
            client.delete(&format!("/v1/tiers/{name}"))?;
            println!(
                "{}",
                output::done(format, "deleted", &name, format!("tier {name} deleted"))?
            );
        }
    }
    Ok(())
}

fn num(v: u64) -> String {
    if v == 0 {
        "-".into()
    } else {
        v.to_string()
    }
}

fn bw(v: u64) -> String {
    if v == 0 {
        "-".into()
    } else {
        format!("{}/s", format_size(v))
    }
}

fn render(ts: &[Tier], format: &Format) -> Result<String> {
    Ok(match format {
        Format::Table => output::table(
            &[
                "Tier", "Min IOPS", "Max IOPS", "Min BW", "Max BW", "Weight", "Net max", "Volumes",
                "Ports",
            ],
            ts.iter()
                .map(|t| {
                    let s = &t.spec;
                    vec![
                        if t.builtin {
                            format!("{} (built-in)", s.name)
                        } else {
                            s.name.clone()
                        },
                        num(s.min_iops),
                        num(s.max_iops),
                        bw(s.min_bps),
                        bw(s.max_bps),
                        s.weight.to_string(),
                        if s.net_max_bps == 0 {
                            "-".into()
                        } else {
                            format_rate(s.net_max_bps)
                        },
                        if t.volumes.is_empty() {
                            "-".into()
                        } else {
                            t.volumes.join(", ")
                        },
                        if t.ports.is_empty() {
                            "-".into()
                        } else {
                            t.ports.join(", ")
                        },
                    ]
                })
                .collect(),
        ),
        _ if ts.len() == 1 => output::data(&ts[0], format)?,
        _ => output::data(&ts, format)?,
    })
}
