//! `diaconfig`: the dia command-line tool. It speaks diad's HTTP/JSON API on
//! a unix socket; each subcommand lives in its own module. Output is a table
//! for humans or JSON (`-o json`) for scripts; exit code 0 on success, 1 on
//! a runtime error, 2 on a usage error.

mod card;
mod client;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;
use crate::output::Format;

/// Configure and inspect the dia card through diad.
#[derive(Parser, Debug)]
#[command(name = "diaconfig", version, about, propagate_version = true)]
struct Cli {
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(cli.socket);
    let result = match cli.command {
        Command::Card(cmd) => card::run(&client, cli.output, cmd),
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
    fn bad_output_format_lists_allowed_values() {
        let e = Cli::try_parse_from(["diaconfig", "-o", "yaml", "card", "info"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("table") && msg.contains("json"), "{msg}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn typo_in_subcommand_is_a_usage_error() {
        let e = Cli::try_parse_from(["diaconfig", "crad", "info"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
