//! `sluice topic consume NAME`: print records of a topic.
//!
//! With `--group G` the command is a member of consumer group G: the broker
//! assigns it partitions, it starts from the group's committed offsets, and it
//! commits what it printed (each record is flushed to stdout before any commit
//! can cover it: every `--commit-interval-ms`, on a revocation, and when it
//! ends after `--count`, `--exit-idle` or SIGINT/SIGTERM, before leaving the
//! group). So several consumers of one group that each stop print every
//! record once; one killed with SIGKILL re-delivers, through the others,
//! only what it printed after its last commit.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use futures::FutureExt;
use sluice_client::{ClientError, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, SeekTo};

use crate::errors::CliError;
use crate::format;

/// How long retriable errors (broker restarting, leader moving) may last before consume gives up.
const RETRY_WINDOW: Duration = Duration::from_secs(30);

/// Options of `topic consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Topic name.
    pub name: String,
    /// Consume as a member of this consumer group (partitions assigned by the
    /// broker, resuming from the group's committed offsets).
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Where to start: earliest, latest, an OFFSET, or @UNIX_MS (first record at or after that time).
    /// With --group: earliest or latest, for partitions the group has no committed offset for.
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// With --group: session timeout; the broker gives this member's partitions
    /// to the others when it has not heard from it for this long.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// With --group: commit what was printed this often (and always on exit).
    #[arg(long, default_value_t = 1_000)]
    pub commit_interval_ms: u64,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<u32>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Stop after this many ms without a new record.
    #[arg(long)]
    pub exit_idle: Option<u64>,
    /// Output format: %k %v %p %o %t %h and \n \t escapes (like kcat -f).
    #[arg(long, short = 'f', default_value = format::DEFAULT_FORMAT)]
    pub format: String,
}

/// Parses `--from`.
pub fn parse_from(s: &str) -> Result<SeekTo, String> {
    match s {
        "earliest" | "start" | "beginning" => Ok(SeekTo::Earliest),
        "latest" | "end" => Ok(SeekTo::Latest),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                ts.parse::<i64>()
                    .ok()
                    .filter(|t| *t >= 0)
                    .map(SeekTo::Timestamp)
                    .ok_or_else(|| {
                        format!("invalid --from {s:?}: expected @UNIX_MS, e.g. @1700000000000")
                    })
            } else {
                s.parse::<u64>().map(SeekTo::Offset).map_err(|_| {
                    format!(
                        "invalid --from {s:?}: expected earliest, latest, an offset or @UNIX_MS"
                    )
                })
            }
        }
    }
}

/// Runs `topic consume`.
pub async fn run(broker: &str, args: ConsumeArgs) -> Result<i32, CliError> {
    let from = parse_from(&args.from).map_err(CliError::msg)?;
    if let Some(group) = args.group.clone() {
        return run_group(broker, &group, from, args).await;
    }
    let tokens =
        format::parse(&args.format).map_err(|e| CliError::msg(format!("invalid --format: {e}")))?;
    if args.count == Some(0) {
        return Ok(0);
    }
    let admin = crate::topic::admin(broker).await?;
    let info = admin
        .describe_topic(&args.name)
        .await
        .map_err(CliError::topic(&args.name))?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if info.partitions.iter().any(|x| x.partition == p) => vec![p],
        Some(p) => {
            return Err(CliError::msg(format!(
                "topic \"{}\" has no partition {p} (it has {})",
                args.name,
                info.partitions.len()
            )))
        }
        None => info.partitions.iter().map(|p| p.partition).collect(),
    };
    let mut consumer = Consumer::with_config(
        crate::client_config(broker),
        ConsumerConfig {
            start: from,
            ..ConsumerConfig::default()
        },
    );
    consumer.assign(partitions.iter().map(|p| (args.name.clone(), *p)).collect());

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let idle = args.exit_idle.map(Duration::from_millis);
    let mut stop = crate::produce::stop_signal()?;
    let mut seen = 0u64;
    let mut failing_since: Option<Instant> = None;
    loop {
        // Flush before blocking so output appears as soon as records stop arriving.
        let next = match consumer.next().now_or_never() {
            Some(r) => r,
            None => {
                if let Err(e) = out.flush() {
                    return write_failed(e);
                }
                tokio::select! {
                    r = next_within(&mut consumer, idle) => match r {
                        Some(r) => r,
                        None => break, // idle for --exit-idle
                    },
                    _ = &mut stop => break,
                }
            }
        };
        let record = match step(next, &mut failing_since) {
            Step::Record(r) => r,
            Step::Retry => continue,
            Step::Fail(e) => {
                // Already failing: a flush error would only hide the cause.
                let _ = out.flush();
                return Err(CliError::topic(&args.name)(e));
            }
            Step::End => break,
        };
        if let Err(e) = format::write_record(&mut out, &tokens, &record) {
            return write_failed(e);
        }
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    if let Err(e) = out.flush() {
        return write_failed(e);
    }
    Ok(0)
}

/// `topic consume --group`: consume as a group member, commit what was printed.
async fn run_group(
    broker: &str,
    group: &str,
    from: SeekTo,
    args: ConsumeArgs,
) -> Result<i32, CliError> {
    let reset = match from {
        SeekTo::Earliest => OffsetReset::Earliest,
        SeekTo::Latest => OffsetReset::Latest,
        _ => {
            return Err(CliError::msg(format!(
                "--from {} cannot be used with --group: a group resumes from its committed \
                 offsets (use earliest or latest for partitions without one), or move them \
                 first with `sluice group seek {group} --to {}`",
                args.from, args.from
            )))
        }
    };
    if let Some(p) = args.partition {
        return Err(CliError::msg(format!(
            "--partition {p} cannot be used with --group: the group assigns partitions"
        )));
    }
    let tokens =
        format::parse(&args.format).map_err(|e| CliError::msg(format!("invalid --format: {e}")))?;
    if args.count == Some(0) {
        return Ok(0);
    }
    let admin = crate::topic::admin(broker).await?;
    admin
        .describe_topic(&args.name)
        .await
        .map_err(CliError::topic(&args.name))?;
    let mut client = crate::client_config(broker);
    client.client_id = "sluice-cli".to_string();
    let mut consumer = Consumer::with_config(
        client,
        ConsumerConfig {
            auto_offset_reset: reset,
            // Commits are made here, after the printed records are flushed.
            enable_auto_commit: false,
            session_timeout: Duration::from_millis(args.session_timeout_ms),
            ..ConsumerConfig::default()
        },
    );
    consumer
        .subscribe(group, vec![args.name.clone()])
        .await
        .map_err(|e| CliError::msg(crate::errors::render_client(&e, Some(&args.name), broker)))?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let idle = args.exit_idle.map(Duration::from_millis);
    let commit_every = Duration::from_millis(args.commit_interval_ms.max(1));
    let mut stop = crate::produce::stop_signal()?;
    let mut seen = 0u64;
    let mut failing_since: Option<Instant> = None;
    let mut last_commit = Instant::now();
    let mut stdout_closed = false;
    loop {
        let next = tokio::select! {
            r = next_within(&mut consumer, idle) => match r {
                Some(r) => r,
                None => break, // idle for --exit-idle
            },
            _ = &mut stop => break,
        };
        let record = match step(next, &mut failing_since) {
            Step::Record(r) => r,
            Step::Retry => continue,
            Step::Fail(e) => {
                // Already failing: flush and leave errors would only hide the cause.
                let _ = out.flush();
                if let Err(left) = consumer.close().await {
                    tracing::debug!(error = %left, "leave group failed");
                }
                return Err(CliError::topic(&args.name)(e));
            }
            Step::End => break,
        };
        // Flushed before anything can commit it: printed means committed-or-re-delivered.
        // The write blocks while the reader is slow; the heartbeat task runs
        // on the runtime's worker threads meanwhile (this loop runs in
        // `block_on`, where `block_in_place` just runs the write).
        let written = tokio::task::block_in_place(|| {
            format::write_record(&mut out, &tokens, &record).and_then(|_| out.flush())
        });
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // Nobody reads: this record was not delivered; do not commit it.
                stdout_closed = true;
                break;
            }
            return Err(CliError::msg(format!("cannot write to stdout: {e}")));
        }
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        if last_commit.elapsed() >= commit_every {
            last_commit = Instant::now();
            if let Err(e) = consumer.commit().await {
                tracing::warn!(error = %e, "commit failed; will retry");
            }
        }
    }
    if stdout_closed {
        // The last record handed out was not printed: leave without committing it.
        if let Err(e) = consumer.close().await {
            tracing::warn!(error = %e, "leave group failed; the broker will expire the member");
        }
        return Ok(0);
    }
    let committed = consumer.commit().await;
    let left = consumer.close().await;
    if let Err(e) = committed {
        return Err(CliError::msg(format!(
            "could not commit the printed records to group \"{group}\" ({}); \
             they will be delivered again",
            crate::errors::render_client(&e, Some(&args.name), broker)
        )));
    }
    if let Err(e) = left {
        tracing::warn!(error = %e, "leave group failed; the broker will expire the member");
    }
    Ok(0)
}

/// The consumer's next item; `None` when nothing came for `idle` (`--exit-idle`).
async fn next_within(
    consumer: &mut Consumer,
    idle: Option<Duration>,
) -> Option<Option<Result<ConsumerRecord, ClientError>>> {
    match idle {
        Some(d) => tokio::time::timeout(d, consumer.next()).await.ok(),
        None => Some(consumer.next().await),
    }
}

/// What the consume loop does with one item of [`Consumer::next`].
enum Step {
    /// Print it.
    Record(ConsumerRecord),
    /// A retriable error within [`RETRY_WINDOW`]: the consumer retries on its own.
    Retry,
    /// A lasting or fatal error.
    Fail(ClientError),
    /// Nothing is assigned any more.
    End,
}

/// Classifies `next`: a broker restart or a leader move is retried; give up
/// only when errors persist for [`RETRY_WINDOW`] (`failing_since` tracks that).
fn step(
    next: Option<Result<ConsumerRecord, ClientError>>,
    failing_since: &mut Option<Instant>,
) -> Step {
    match next {
        Some(Ok(r)) => {
            *failing_since = None;
            Step::Record(r)
        }
        Some(Err(e))
            if e.is_retriable() && failing_since.is_none_or(|t| t.elapsed() < RETRY_WINDOW) =>
        {
            failing_since.get_or_insert_with(Instant::now);
            tracing::debug!(error = %e, "retrying after error");
            Step::Retry
        }
        Some(Err(e)) => Step::Fail(e),
        None => Step::End,
    }
}

/// A closed stdout (`| head`) ends the command quietly.
fn write_failed(e: std::io::Error) -> Result<i32, CliError> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(CliError::msg(format!("cannot write to stdout: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_from() {
        assert_eq!(parse_from("earliest"), Ok(SeekTo::Earliest));
        assert_eq!(parse_from("latest"), Ok(SeekTo::Latest));
        assert_eq!(parse_from("42"), Ok(SeekTo::Offset(42)));
        assert_eq!(
            parse_from("@1700000000000"),
            Ok(SeekTo::Timestamp(1_700_000_000_000))
        );
        assert!(parse_from("@x").is_err());
        assert!(parse_from("-3").is_err());
        assert!(parse_from("yesterday").is_err());
    }
}
