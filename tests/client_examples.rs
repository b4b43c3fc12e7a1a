//! Runs the compiled examples (`examples/*.rs`) against a real `sluiced`.
//! `cargo test` builds examples into `target/<profile>/examples/`.

mod common;

use std::time::Duration;

use common::{run_example, TestBroker};

/// Runs an example with SLUICE_BROKER set; killed after 60 s.
fn run(name: &str, broker: &str, args: &[&str]) -> String {
    run_example(name, broker, args, Duration::from_secs(60))
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
