//! `sluiced`: parse config, init tracing, run the broker until SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use sluice_broker::{shutdown_signal, Cli, Server};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.layer.log_level.is_none() {
        cli.layer.log_level = std::env::var("RUST_LOG").ok();
    }
    let config = cli.into_config().context("invalid configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log filter {:?}", config.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluiced")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "listening native={} http={}",
            server.native_addr(),
            server.http_addr()
        )?;
        out.flush()?;
        drop(out);
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            trigger.cancel();
        });
        server.run(shutdown).await?;
        Ok(())
    })
}
