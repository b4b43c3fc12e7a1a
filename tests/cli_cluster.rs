//! The `sluice` binary against one real `sluiced`: `cluster status` (text and
//! JSON), `topic describe` showing replicas, isr and the leader, and
//! `topic create --replication-factor` beyond the one broker failing clearly.

mod common;

use std::process::Output;
use std::time::Duration;

use common::process::{ok, output_within, text};
use common::{sluice_cli, TestBroker};

/// Runs `sluice ARGS` against `broker`; killed after 60 s.
fn sluice(broker: &str, args: &[&str]) -> Output {
    let mut cmd = sluice_cli(broker);
    cmd.args(args);
    output_within(cmd, Some(b""), Duration::from_secs(60))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("json")
}

#[test]
fn cluster_status_shows_the_single_node_as_controller() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    ok(&sluice(&addr, &["topic", "create", "orders", "-p", "2"]));

    let v = json(&sluice(&addr, &["cluster", "status", "--json"]));
    assert_eq!(v["controller"]["id"], 0);
    assert_eq!(v["controller"]["term"], 0);
    assert_eq!(v["cluster_id"], "sluice-single-node");
    let brokers = v["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 1);
    assert_eq!(brokers[0]["id"], 0);
    assert_eq!(brokers[0]["address"], addr.as_str());
    assert_eq!(brokers[0]["port"], broker.addr.port());
    assert_eq!(brokers[0]["rack"], serde_json::Value::Null);
    assert_eq!(brokers[0]["alive"], true);
    assert_eq!(v["leaderless_partitions"], serde_json::json!([]));

    let out = ok(&sluice(&addr, &["cluster", "status"]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"CLUSTER     sluice-single-node"), "{out}");
    assert!(lines.contains(&"CONTROLLER  0 (term 0)"), "{out}");
    let row = lines
        .iter()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("no broker row in {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["0", addr.as_str(), "-", "yes"], "{out}");
    assert!(
        lines.contains(&"PARTITIONS WITHOUT A LIVE LEADER: none"),
        "{out}"
    );
}

#[test]
fn a_configured_rack_is_reported_by_cluster_status() {
    let broker = TestBroker::start_with(&["--rack", "eu-west-1a"]);
    let addr = broker.addr.to_string();
    let v = json(&sluice(&addr, &["cluster", "status", "--json"]));
    assert_eq!(v["brokers"][0]["rack"], "eu-west-1a");
    let out = ok(&sluice(&addr, &["cluster", "status"]));
    let row = out
        .lines()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("no broker row in {out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["0", addr.as_str(), "eu-west-1a", "yes"], "{out}");
}

#[test]
fn topic_describe_shows_replicas_isr_and_leader() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let out = sluice(
        &addr,
        &[
            "topic",
            "create",
            "events",
            "-p",
            "3",
            "--replication-factor",
            "1",
        ],
    );
    assert_eq!(
        ok(&out).trim(),
        "created topic \"events\" with 3 partitions"
    );

    let d = json(&sluice(&addr, &["topic", "describe", "events", "--json"]));
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 0);
        assert_eq!(p["leader_epoch"], 0);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
    }

    let out = ok(&sluice(&addr, &["topic", "describe", "events"]));
    let header = out
        .lines()
        .find(|l| l.trim_start().starts_with("PARTITION "))
        .unwrap_or_else(|| panic!("no header in {out}"));
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "PARTITION",
            "LEADER",
            "REPLICAS",
            "ISR",
            "START-OFFSET",
            "END-OFFSET",
            "SIZE"
        ]
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("PARTITION "))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(&r[..4], [i.to_string().as_str(), "0", "0", "0"], "{out}");
    }
}

#[test]
fn replication_factor_beyond_the_brokers_fails_with_a_clear_message() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let out = sluice(
        &addr,
        &["topic", "create", "wide", "--replication-factor", "3"],
    );
    assert!(!out.status.success(), "created: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    let line = errors[0];
    assert!(line.contains("create topic \"wide\""), "{line}");
    assert!(line.contains("replication factor 3"), "{line}");
    assert!(line.contains("1 broker available"), "{line}");
    assert!(line.contains("invalid replication factor"), "{line}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing was created.
    let list = json(&sluice(&addr, &["topic", "list", "--json"]));
    assert!(
        !list
            .as_array()
            .expect("array")
            .iter()
            .any(|t| t["name"] == "wide"),
        "{list}"
    );
    // 0 is refused by the CLI itself.
    let out = sluice(
        &addr,
        &["topic", "create", "zero", "--replication-factor", "0"],
    );
    assert!(!out.status.success());
}
