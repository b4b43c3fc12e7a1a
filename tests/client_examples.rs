//! Runs the compiled examples (`examples/*.rs`) against a real `sluiced`.
//! `cargo test` builds examples into `target/<profile>/examples/`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::TestBroker;

fn example_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("test binary has a parent directory");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples` (plain `cargo test` builds them)",
        path.display()
    );
    path
}

/// Runs an example with SLUICE_BROKER set; killed after 60 s.
fn run(name: &str, broker: &str, args: &[&str]) -> String {
    let child = Command::new(example_path(name))
        .args(args)
        .env("SLUICE_BROKER", broker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
    });
    let out: Output = child.wait_with_output().expect("wait");
    let _ = tx.send(());
    let _ = watchdog.join();
    assert!(
        out.status.success(),
        "example {name} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn examples_produce_consume_and_replay() {
    let broker = TestBroker::start();
    let addr = broker.addr.to_string();
    let before = common::now_ms();

    let produced = run("producer", &addr, &["ex", "12"]);
    assert_eq!(produced.lines().count(), 12, "{produced}");
    assert!(
        produced.contains("sent \"hello 0\" -> ex/0@0"),
        "{produced}"
    );

    let consumed = run("consumer", &addr, &["ex", "12"]);
    let lines: Vec<&str> = consumed.lines().collect();
    assert_eq!(lines.len(), 12, "{consumed}");
    assert_eq!(lines[0], "ex/0@0 key=user-0 value=hello 0");
    assert_eq!(lines[11], "ex/0@11 key=user-2 value=hello 11");

    // Replay from before the records were written: all of them.
    let replayed = run("replay", &addr, &["ex", &(before - 1000).to_string()]);
    let lines: Vec<&str> = replayed.lines().collect();
    assert!(lines[0].starts_with("replaying \"ex\" since"), "{replayed}");
    assert_eq!(lines.len(), 14, "{replayed}");
    assert!(lines[1].starts_with("ex/0@0 t="), "{replayed}");
    assert_eq!(lines[13], "replayed 12 records");
    // Replay from the future: none.
    let none = run(
        "replay",
        &addr,
        &["ex", &(common::now_ms() + 3_600_000).to_string()],
    );
    assert_eq!(none.lines().last(), Some("replayed 0 records"), "{none}");
    assert_eq!(none.lines().count(), 2, "{none}");
}
