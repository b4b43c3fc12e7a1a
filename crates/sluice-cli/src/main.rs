//! `sluice`: the command-line tool for Sluice (topics, produce, consume, bench).
//!
//! Shape follows Redpanda's `rpk`: `sluice topic create|list|describe|delete|produce|consume`,
//! `sluice group list|describe|delete|seek`, `sluice bench produce|consume`. `--broker ADDR`
//! (or `SLUICE_BROKER`) picks the broker. Every failure prints one line,
//! `error: <what went wrong>; <what to try>`, and exits with status 1.

mod bench;
mod consume;
mod errors;
mod format;
mod group;
mod produce;
mod topic;

use clap::{Parser, Subcommand};

use crate::errors::{render, CliError};

/// Command-line tool for the Sluice message broker.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// Broker address (host:port).
    #[arg(long, global = true, env = "SLUICE_BROKER", default_value = sluice_client::DEFAULT_BROKER)]
    broker: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list, describe, delete topics; produce to and consume from them.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Consumer groups: list, describe (members, offsets, lag), delete, seek.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Measure produce or consume throughput and latency.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let broker = cli.broker.clone();
    let result = runtime.block_on(run(cli));
    // Background tasks (connection readers) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {}", render(&e, &broker));
            std::process::exit(1);
        }
    }
}

fn init_tracing() {
    let filter = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "off".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one command; `Ok(code)` is the exit status.
async fn run(cli: Cli) -> Result<i32, CliError> {
    match cli.command {
        Command::Topic { command } => topic::run(&cli.broker, command).await,
        Command::Group { command } => group::run(&cli.broker, command).await,
        Command::Bench { command } => bench::run(&cli.broker, command).await,
    }
}
