//! `sluice`: the command-line tool for Sluice (topics, produce, consume, bench).
//!
//! Shape follows Redpanda's `rpk`: `sluice topic create|list|describe|delete|produce|consume`,
//! `sluice group list|describe|delete|seek`, `sluice cluster status`,
//! `sluice bench produce|consume`, `sluice user create|delete|list`,
//! `sluice acl add|remove|list`, `sluice quota set|remove|list`. `--broker ADDR`
//! (or `SLUICE_BROKER`) picks the broker. Every failure prints one line,
//! `error: <what went wrong>; <what to try>`, and exits with status 1.
//!
//! Connection settings other than the address (`--tls`, `--ca-file`,
//! `--cert`, `--key`, `--tls-server-name`) are global flags, and the SASL
//! login (`--sasl-mechanism`, `--username`, `--password`, `--password-file`)
//! top-level ones, before the subcommand (see `security`: `user create` has
//! a `--password` of its own); `main` turns
//! them into one [`ClientConfig`] template that every subcommand starts
//! from ([`client_config`]), so a new setting reaches all of them at once.

/// `println!` that ends the process quietly when stdout is a closed pipe
/// (`sluice topic list | head -1`) instead of panicking.
macro_rules! outln {
    () => {
        $crate::write_stdout_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout_line(format_args!($($arg)*))
    };
}

mod bench;
mod bench_kafka;
mod cluster;
mod consume;
mod errors;
mod format;
mod group;
mod produce;
mod security;
mod topic;

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use sluice_client::{ClientConfig, ClientTls};

use crate::errors::{render, CliError};

/// Command-line tool for the Sluice message broker.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, propagate_version = true)]
struct Cli {
    /// Broker address (host:port), or several separated by commas.
    #[arg(long, global = true, env = "SLUICE_BROKER", default_value = sluice_client::DEFAULT_BROKER)]
    broker: String,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    sasl: security::SaslArgs,
    #[command(subcommand)]
    command: Command,
}

/// TLS to the brokers (global: every subcommand, including bench).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS")]
struct TlsArgs {
    /// Connect with TLS (needs --ca-file: no public roots are bundled).
    #[arg(long, global = true, env = "SLUICE_TLS", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    tls: bool,
    /// CA certificate (PEM) that signed the brokers' certificates; implies --tls.
    #[arg(long, global = true, env = "SLUICE_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one (mTLS); with --key.
    #[arg(long, global = true, env = "SLUICE_CERT_FILE", value_name = "PEM")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, env = "SLUICE_KEY_FILE", value_name = "PEM")]
    key: Option<PathBuf>,
    /// Name the brokers' certificates must hold (default: the host of each address).
    #[arg(
        long,
        global = true,
        env = "SLUICE_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    tls_server_name: Option<String>,
}

impl TlsArgs {
    /// The client TLS settings, `None` for plain TCP.
    fn client_tls(&self) -> Result<Option<ClientTls>, CliError> {
        let wanted =
            self.tls || self.ca_file.is_some() || self.cert.is_some() || self.key.is_some();
        if !wanted {
            return Ok(None);
        }
        let Some(ca) = &self.ca_file else {
            return Err(CliError::msg(
                "--tls needs --ca-file: the CA certificate that signed the broker's certificate \
                 (sluice does not bundle public root certificates)",
            ));
        };
        let pair = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            (Some(_), None) => return Err(CliError::msg("--cert needs --key (its private key)")),
            (None, Some(_)) => return Err(CliError::msg("--key needs --cert (its certificate)")),
        };
        let tls =
            ClientTls::from_files(ca, pair).map_err(|e| CliError::msg(format!("TLS: {e}")))?;
        Ok(Some(match &self.tls_server_name {
            Some(name) => tls.with_server_name(name.clone()),
            None => tls,
        }))
    }
}

/// The settings every connection of this run starts from (see the module docs).
static CLIENT: OnceLock<ClientConfig> = OnceLock::new();

/// The client settings for `broker`: the global flags' template with that address.
pub(crate) fn client_config(broker: &str) -> ClientConfig {
    let mut config = CLIENT.get().cloned().unwrap_or_default();
    config.bootstrap = broker.to_string();
    config
}

/// How raw (non-client) connections of this run are made: TLS per the global flags.
pub(crate) fn connector() -> sluice_tls::Connector {
    CLIENT
        .get()
        .and_then(|c| c.tls.as_ref())
        .map_or_else(sluice_tls::Connector::plain, ClientTls::connector)
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
    /// The cluster: controller, brokers and partitions without a live leader.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Measure produce or consume throughput and latency.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// SCRAM users: create (or change a password), delete, list.
    User {
        #[command(subcommand)]
        command: security::UserCommand,
    },
    /// ACLs: add, remove, list (Kafka's model, like kafka-acls).
    Acl {
        #[command(subcommand)]
        command: security::AclCommand,
    },
    /// Quotas of users and client ids: set, remove, list (like kafka-configs).
    Quota {
        #[command(subcommand)]
        command: security::QuotaCommand,
    },
}

/// Runtime threads for a command: one (a current-thread runtime) except for
/// benches, which get `--threads` (default: one per producer or consumer, at
/// most one per core), and `topic consume`, which gets two so a group
/// member's heartbeats go on while a write to a full stdout pipe blocks.
///
/// One producer is one pipeline, and a second worker thread only adds
/// cross-thread wakeups and a runnable thread more than there are cores when
/// the broker runs on the same machine: on the 2-core test VM, `sluice bench
/// produce` with a current-thread runtime had a median p99 of 1.87 ms
/// against 2.51 ms with two workers, at the same throughput (5 paired runs).
fn runtime_threads(command: &Command) -> usize {
    match command {
        Command::Bench {
            command: bench::BenchCommand::Produce(args) | bench::BenchCommand::Consume(args),
        } => args.runtime_threads(),
        Command::Topic {
            command: topic::TopicCommand::Consume(_),
        } => 2,
        _ => 1,
    }
}

/// Writes one line to stdout (see `outln!`): exits with status 0 when the
/// reader has gone away, with an error line and status 1 on any other error.
pub(crate) fn write_stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    match cli
        .tls
        .client_tls()
        .and_then(|tls| Ok((tls, cli.sasl.client_sasl()?)))
    {
        Ok((tls, sasl)) => {
            let _ = CLIENT.set(ClientConfig {
                tls,
                sasl,
                ..ClientConfig::default()
            });
        }
        Err(e) => {
            eprintln!("error: {}", render(&e, &cli.broker));
            std::process::exit(1);
        }
    }
    let threads = runtime_threads(&cli.command);
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
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
        Command::Cluster { command } => cluster::run(&cli.broker, command).await,
        Command::Bench { command } => bench::run(&cli.broker, command).await,
        Command::User { command } => security::run_user(&cli.broker, command).await,
        Command::Acl { command } => security::run_acl(&cli.broker, command).await,
        Command::Quota { command } => security::run_quota(&cli.broker, command).await,
    }
}
