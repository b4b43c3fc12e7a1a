//! `sluiced`: parse config, init tracing, run the broker until SIGINT/SIGTERM.
//!
//! Logs go to stderr, filtered by `log_level` (`RUST_LOG` syntax), as text
//! or, with `log_format = "json"`, one JSON object per line:
//! `{"timestamp", "level", "target", "fields": {"message", ...}, "span",
//! "spans"}` (tracing-subscriber's JSON layout; `span` is the innermost
//! enclosing span's fields, `spans` all of them, outermost first).

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use sluice_broker::config::LogFormat;
use sluice_broker::Cli;
use sluiced::{shutdown_signal, Server};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if cli.layer.log_level.is_none() {
        cli.layer.log_level = std::env::var("RUST_LOG").ok();
    }
    let config = cli.into_config().context("invalid configuration")?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log filter {:?}", config.log_level))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .with_ansi(false)
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }

    raise_open_file_limit(config.max_connections);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sluiced")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        let mut out = std::io::stdout().lock();
        let kafka = server
            .kafka_addr()
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        let metrics = server
            .metrics_addr()
            .map_or_else(String::new, |a| format!(" metrics={a}"));
        writeln!(
            out,
            "listening native={} http={} kafka={kafka}{metrics}",
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

/// Raises the soft open-file limit to the hard limit, and warns when it still
/// cannot cover `max_connections` sockets plus segment files (three per
/// segment): "too many open files" is the classic broker outage.
fn raise_open_file_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    let needed = max_connections as u64 + 1024;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_file_limit = lim.rlim_cur,
            max_connections,
            "the open-file limit is below max_connections + 1024; raise it (ulimit -n) or lower --max-connections"
        );
    }
}
