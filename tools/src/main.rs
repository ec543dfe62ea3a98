//! `diaconfig`: the dia command-line tool. It speaks diad's HTTP/JSON API on
//! a unix socket; each subcommand lives in its own module. Output is a table
//! for humans or JSON (`-o json`) for scripts; exit code 0 on success, 1 on
//! a runtime error, 2 on a usage error. `-o value=FIELD` prints one field's
//! value (a line per item) for shell scripts.

mod card;
mod client;
mod cluster;
mod container;
mod network;
mod output;
mod pool;
mod port;
mod tier;
mod volume;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::output::{Format, FORMATS};

/// Configure and inspect the dia card through diad.
#[derive(Parser, Debug)]
#[command(name = "diaconfig", version, about, propagate_version = true)]
struct Cli {
    #[arg(
        short,
        long,
        global = true,
        value_name = "FORMAT",
        value_parser = Format::parse,
        default_value = "table",
        help = format!("Output format: {FORMATS}"),
        long_help = format!(
            "Output format: {FORMATS}. `value=` prints only the named fields' values \
             (strings without quotes, nested fields with dots, e.g. counters.tx_bytes), \
             tab separated, a line per item: for scripts, e.g. \
             `diaconfig -o value=device volume show db`"
        )
    )]
    output: Format,
    /// diad's API socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/dia/diad.sock",
        env = "DIA_SOCKET"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The card itself: identity and capabilities.
    #[command(subcommand)]
    Card(card::CardCommand),
    /// Volumes: thin, NVMe namespaces on the card, attached to containers.
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Containers volumes attach to.
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// The card's flash pool.
    #[command(subcommand)]
    Pool(pool::PoolCommand),
    /// Performance tiers: storage floors, ceilings and weights, network limits.
    #[command(subcommand)]
    Tier(tier::TierCommand),
    /// Container networks: a VLAN with a subnet and address range.
    #[command(subcommand)]
    Network(network::NetworkCommand),
    /// Network ports of containers.
    #[command(subcommand)]
    Port(port::PortCommand),
    /// Appliances in one cluster: create, join, status, remove.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(cli.socket);
    let result = match cli.command {
        Command::Card(cmd) => card::run(&client, &cli.output, cmd),
        Command::Volume(cmd) => volume::run(&client, &cli.output, cmd),
        Command::Container(cmd) => container::run(&client, &cli.output, cmd),
        Command::Pool(cmd) => pool::run(&client, &cli.output, cmd),
        Command::Tier(cmd) => tier::run(&client, &cli.output, cmd),
        Command::Network(cmd) => network::run(&client, &cli.output, cmd),
        Command::Port(cmd) => port::run(&client, &cli.output, cmd),
        Command::Cluster(cmd) => cluster::run(&client, &cli.output, cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("diaconfig: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_card_info_with_json() {
        let cli = Cli::try_parse_from(["diaconfig", "card", "info", "-o", "json"]).unwrap();
        assert_eq!(cli.output, Format::Json);
        assert!(matches!(
            cli.command,
            Command::Card(card::CardCommand::Info)
        ));
    }

    #[test]
    fn output_takes_fields_for_scripts() {
        let cli = Cli::try_parse_from([
            "diaconfig",
            "-o",
            "value=name,counters.tx_bytes",
            "port",
            "stats",
            "web",
        ])
        .unwrap();
        assert_eq!(
            cli.output,
            Format::Value(vec!["name".into(), "counters.tx_bytes".into()])
        );
        let e = Cli::try_parse_from(["diaconfig", "-o", "value=", "card", "info"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_output_format_lists_allowed_values() {
        let e = Cli::try_parse_from(["diaconfig", "-o", "yaml", "card", "info"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("table") && msg.contains("json"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn volume_create_parses_sizes_and_refuses_bad_ones() {
        let cli =
            Cli::try_parse_from(["diaconfig", "volume", "create", "db", "--size", "20G"]).unwrap();
        match cli.command {
            Command::Volume(volume::VolumeCommand::Create(a)) => {
                assert_eq!((a.size, a.block_size), (20 << 30, 4096));
            }
            other => panic!("{other:?}"),
        }
        let e = Cli::try_parse_from(["diaconfig", "volume", "create", "db", "--size", "20Q"])
            .unwrap_err();
        assert!(e.to_string().contains("allowed: K, M, G, T, P"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from([
            "diaconfig",
            "volume",
            "create",
            "db",
            "--size",
            "1G",
            "--block-size",
            "8192",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("4096"), "{e}");
        let e = Cli::try_parse_from([
            "diaconfig",
            "volume",
            "attach",
            "db",
            "--container",
            "c",
            "--fs",
            "ext4",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("--mount"), "{e}");
    }

    #[test]
    fn network_and_port_arguments_are_checked() {
        let e = Cli::try_parse_from([
            "diaconfig",
            "network",
            "create",
            "blue",
            "--vlan",
            "5000",
            "--subnet",
            "10.0.0.0/24",
            "--gateway",
            "10.0.0.1",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("1..=4094"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = Cli::try_parse_from(["diaconfig", "tier", "create", "t", "--net-max-bw", "100Q"])
            .unwrap_err();
        assert!(e.to_string().contains("allowed: K, M, G"), "{e}");
        let cli = Cli::try_parse_from(["diaconfig", "tier", "create", "t", "--net-max-bw", "100M"])
            .unwrap();
        match cli.command {
            Command::Tier(tier::TierCommand::Create(a)) => assert_eq!(a.net_max_bw, 100_000_000),
            other => panic!("{other:?}"),
        }
        let e =
            Cli::try_parse_from(["diaconfig", "port", "attach", "--network", "blue"]).unwrap_err();
        assert!(e.to_string().contains("--container"), "{e}");
    }

    #[test]
    fn typo_in_subcommand_is_a_usage_error() {
        let e = Cli::try_parse_from(["diaconfig", "crad", "info"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
