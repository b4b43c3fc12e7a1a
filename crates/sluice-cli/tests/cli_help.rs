//! The `sluice` binary starts and documents its command tree. (This test also
//! makes `cargo test --workspace` build the binary for the root `tests/`.)

use std::process::Command;

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run sluice");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let top = help(&[]);
    for cmd in ["topic", "group", "bench", "--broker"] {
        assert!(top.contains(cmd), "missing {cmd} in:\n{top}");
    }
    let topic = help(&["topic"]);
    for cmd in ["create", "list", "describe", "delete", "produce", "consume"] {
        assert!(topic.contains(cmd), "missing {cmd} in:\n{topic}");
    }
    let consume = help(&["topic", "consume"]);
    for flag in [
        "--from",
        "--partition",
        "--count",
        "--exit-idle",
        "--format",
        "--group",
    ] {
        assert!(consume.contains(flag), "missing {flag} in:\n{consume}");
    }
    for path in [&["topic", "produce"][..], &["bench", "produce"]] {
        let h = help(path);
        for codec in ["--compression", "gzip", "snappy", "lz4", "zstd"] {
            assert!(h.contains(codec), "missing {codec} in {path:?}:\n{h}");
        }
    }
    let group = help(&["group"]);
    for cmd in ["list", "describe", "delete", "seek"] {
        assert!(group.contains(cmd), "missing {cmd} in:\n{group}");
    }
    let seek = help(&["group", "seek"]);
    assert!(seek.contains("--to") && seek.contains("--topic"), "{seek}");
    let consume = help(&["topic", "consume"]);
    assert!(
        consume.contains("--session-timeout-ms") && consume.contains("--commit-interval-ms"),
        "{consume}"
    );
    let bench = help(&["bench", "produce"]);
    for flag in [
        "--topic",
        "--messages",
        "--size",
        "--producers",
        "--batch-bytes",
        "--acks",
        "--json",
    ] {
        assert!(bench.contains(flag), "missing {flag} in:\n{bench}");
    }
}

#[test]
fn bad_arguments_fail_without_a_panic() {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["topic", "produce", "t", "--acks", "sometimes"])
        .output()
        .expect("run sluice");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--acks") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
