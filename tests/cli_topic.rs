//! The `sluice` binary against the real `sluiced`: topic commands, produce,
//! consume, errors, bench.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{ok, one_line_error, text, wait_output_within, KillOnDrop};
use common::{sluice_cli, sluice_with_input, TestBroker};

#[test]
fn topic_create_list_describe_delete() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--retention-ms",
            "3600000",
        ],
        b"",
    );
    assert_eq!(
        ok(&out).trim(),
        "created topic \"orders\" with 3 partitions"
    );

    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "create", "orders"],
        b"",
    ));
    assert_eq!(err, "error: topic \"orders\" already exists");

    let list: serde_json::Value = serde_json::from_str(&ok(&sluice_with_input(
        &addr,
        &["topic", "list", "--json"],
        b"",
    )))
    .expect("json");
    let orders = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["partitions"], 3);
    assert!(ok(&sluice_with_input(&addr, &["topic", "list"], b"")).contains("orders"));

    let d: serde_json::Value = serde_json::from_str(&ok(&sluice_with_input(
        &addr,
        &["topic", "describe", "orders", "--json"],
        b"",
    )))
    .expect("json");
    assert_eq!(d["name"], "orders");
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["start_offset"], 0);
        assert_eq!(p["end_offset"], 0);
    }
    assert_eq!(d["configs"]["retention.ms"], "3600000");
    let table = ok(&sluice_with_input(
        &addr,
        &["topic", "describe", "orders"],
        b"",
    ));
    assert!(table.contains("END-OFFSET"), "{table}");

    assert_eq!(
        ok(&sluice_with_input(
            &addr,
            &["topic", "delete", "orders"],
            b""
        ))
        .trim(),
        "deleted topic \"orders\""
    );
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "describe", "orders"],
        b"",
    ));
    assert!(
        err.starts_with("error: topic \"orders\" does not exist"),
        "{err}"
    );
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "delete", "orders"],
        b"",
    ));
    assert!(
        err.starts_with("error: topic \"orders\" does not exist"),
        "{err}"
    );
}

#[test]
fn produce_stdin_then_consume_with_count_and_format() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    ok(&sluice_with_input(
        &addr,
        &["topic", "create", "lines", "--partitions", "1"],
        b"",
    ));
    let mut input = String::new();
    for i in 0..500 {
        input.push_str(&format!("k{i}:value {i}\n"));
    }
    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "produce",
            "lines",
            "--key-separator",
            ":",
            "--acks",
            "durable",
        ],
        input.as_bytes(),
    );
    ok(&out);
    assert_eq!(text(&out.stderr).trim(), "produced 500 records");

    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "consume",
            "lines",
            "--count",
            "3",
            "--format",
            "%k=%v@%p/%o\\n",
        ],
        b"",
    );
    assert_eq!(ok(&out), "k0=value 0@0/0\nk1=value 1@0/1\nk2=value 2@0/2\n");

    // Default format: the value and a newline; --from OFFSET; --exit-idle ends the read.
    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "consume",
            "lines",
            "--from",
            "498",
            "--exit-idle",
            "500",
        ],
        b"",
    );
    assert_eq!(ok(&out), "value 498\nvalue 499\n");
    // From a timestamp in the future: nothing, and exits when idle.
    let future = format!("@{}", common::now_ms() + 3_600_000);
    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "consume",
            "lines",
            "--from",
            &future,
            "--exit-idle",
            "300",
        ],
        b"",
    );
    assert_eq!(ok(&out), "");
    // From a timestamp in the past: everything.
    let out = sluice_with_input(
        &addr,
        &[
            "topic", "consume", "lines", "--from", "@0", "--count", "500", "--format", "%t %o\\n",
        ],
        b"",
    );
    let stdout = ok(&out);
    assert_eq!(stdout.lines().count(), 500);
    let first_ts: i64 = stdout
        .lines()
        .next()
        .and_then(|l| l.split(' ').next())
        .and_then(|t| t.parse().ok())
        .expect("ts");
    assert!(
        (common::now_ms() - first_ts).abs() < 600_000,
        "timestamp {first_ts} is not recent"
    );

    // Headers are empty for CLI-produced records; %h prints nothing.
    let out = sluice_with_input(
        &addr,
        &[
            "topic",
            "consume",
            "lines",
            "--count",
            "1",
            "--format",
            "[%h]\\t%v\\n",
        ],
        b"",
    );
    assert_eq!(ok(&out), "[]\tvalue 0\n");

    // --partition that does not exist and a bad --format: one-line errors.
    let err = one_line_error(&sluice_with_input(
        &addr,
        &[
            "topic",
            "consume",
            "lines",
            "--partition",
            "7",
            "--count",
            "1",
        ],
        b"",
    ));
    assert!(err.contains("no partition 7"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "consume", "lines", "--format", "%q"],
        b"",
    ));
    assert!(err.contains("%q"), "{err}");
    let err = one_line_error(&sluice_with_input(
        &addr,
        &["topic", "consume", "nope", "--count", "1"],
        b"",
    ));
    assert!(
        err.starts_with("error: topic \"nope\" does not exist"),
        "{err}"
    );
}

#[test]
fn produce_against_a_dead_broker_reports_failures() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    drop(broker);
    let started = Instant::now();
    let out = sluice_with_input(
        &addr,
        &["topic", "produce", "t", "--delivery-timeout", "1000"],
        b"a\nb\nc\n",
    );
    let err = one_line_error(&out);
    assert!(
        err.contains(&format!(
            "broker unreachable at {addr} (connection refused); is sluiced running?"
        )),
        "{err}"
    );
    // The first record fails after the delivery timeout; the broker being
    // gone that long, the tool stops there instead of failing every line.
    assert!(
        text(&out.stderr).contains("produced 0 records, 1 failed"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    let err = one_line_error(&sluice_with_input(&addr, &["topic", "list"], b""));
    assert_eq!(
        err,
        format!("error: broker unreachable at {addr} (connection refused); is sluiced running?")
    );
}

#[test]
fn group_errors_are_one_clear_line() {
    // (Consumer groups are served now; their full behaviour is in tests/cli_group.rs.)
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    for (args, expected) in [
        (
            &["group", "describe", "g1"][..],
            "group \"g1\" does not exist",
        ),
        (
            &["group", "delete", "g1"][..],
            "group \"g1\" does not exist",
        ),
        (
            &["topic", "consume", "x", "--group", "g1"][..],
            "topic \"x\" does not exist",
        ),
        (
            &["topic", "consume", "x", "--group", "g1", "--from", "5"][..],
            "cannot be used with --group",
        ),
    ] {
        let err = one_line_error(&sluice_with_input(&addr, args, b""));
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn bench_produce_and_consume_json() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let out = sluice_with_input(
        &addr,
        &[
            "bench",
            "produce",
            "--topic",
            "b",
            "--messages",
            "2000",
            "--size",
            "100",
            "--producers",
            "2",
            "--batch-bytes",
            "16384",
            "--acks",
            "durable",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(ok(&out).trim()).expect("one JSON object");
    assert_eq!(v["mode"], "produce");
    assert_eq!(
        v["flush"], "interval",
        "the topic's flush policy is reported"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        v["threads"],
        2.min(cores),
        "one runtime thread per producer"
    );
    assert_eq!(v["messages"], 2000);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["bytes"], 200_000);
    assert!(v["msgs_per_sec"].as_f64().expect("number") > 0.0);
    for q in ["p50", "p99", "p99_9", "max"] {
        assert!(v["latency_ms"][q].as_f64().expect("latency") > 0.0, "{q}");
    }
    let out = sluice_with_input(
        &addr,
        &[
            "bench",
            "consume",
            "--topic",
            "b",
            "--messages",
            "2000",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_str(ok(&out).trim()).expect("one JSON object");
    assert_eq!(v["mode"], "consume");
    assert_eq!(v["messages"], 2000);
    assert_eq!(v["bytes"], 200_000);
    // Text output without --json.
    let out = sluice_with_input(
        &addr,
        &[
            "bench",
            "produce",
            "--topic",
            "b",
            "--messages",
            "100",
            "--size",
            "10",
        ],
        b"",
    );
    let stdout = ok(&out);
    assert!(
        stdout.contains("msg/s") && stdout.contains("p99.9") && stdout.contains("max"),
        "{stdout}"
    );
    // The summary says what the figure was measured with (the topic's flush
    // policy; the broker's default is interval).
    assert!(stdout.contains("(flush=interval, acks=leader)"), "{stdout}");
}

#[test]
fn produce_stops_on_sigterm_and_reports_what_was_acknowledged() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    ok(&sluice_with_input(
        &addr,
        &["topic", "create", "sig", "--partitions", "1"],
        b"",
    ));
    let mut child = sluice_cli(&addr)
        .args(["topic", "produce", "sig"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    // Keep stdin open: the producer must stop on the signal, not on EOF.
    let mut stdin = child.stdin.take().expect("stdin");
    // Killed if an assertion below fails before the child is waited for.
    let child = KillOnDrop::new(child);
    stdin.write_all(b"one\ntwo\nthree\n").expect("write");
    stdin.flush().expect("flush");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d: serde_json::Value = serde_json::from_str(&ok(&sluice_with_input(
            &addr,
            &["topic", "describe", "sig", "--json"],
            b"",
        )))
        .expect("json");
        if d["partitions"][0]["end_offset"] == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "records never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
    let child = child.take();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    // SIGKILLed after 20 s, which fails the assertion below.
    let out = wait_output_within(child, Duration::from_secs(20));
    drop(stdin);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).trim(), "produced 3 records");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // `sluice topic list | head -0`: the reader is gone before the first line.
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    ok(&sluice_with_input(
        &addr,
        &["topic", "create", "piped"],
        b"",
    ));
    for args in [
        &["topic", "list"][..],
        &["topic", "describe", "piped"][..],
        &["bench", "produce", "--topic", "piped", "--messages", "10"][..],
    ] {
        let mut child = sluice_cli(&addr)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        // Close the read end before the command has talked to the broker.
        drop(child.stdout.take());
        let out = wait_output_within(child, Duration::from_secs(60));
        let stderr = text(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}
