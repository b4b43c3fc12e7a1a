//! The Grafana dashboard (`deploy/grafana/sluice.json`) and the alert rules
//! (`deploy/prometheus/alerts.yml`) evaluated by a real Prometheus against a
//! real broker under load.
//!
//! `tests/deploy.rs` checks that every metric they name is exported; this
//! test checks the queries themselves. It runs
//! `deploy/grafana/preview/run.sh --check`, which starts this profile's
//! `sluiced` and Debian's `prometheus` (scraping it every 2 s and loading
//! the alert rules) on loopback, drives about 40 s of load with the `sluice`
//! CLI (produce, consumer groups, failing produces), and then runs
//! `deploy/grafana/preview/render.py --require-data --rules`: every target of
//! every panel goes through Prometheus's `query_range` with the dashboard
//! variables substituted as Grafana would, and the script fails if
//! Prometheus refused one, if a panel got no series with a value, if a
//! legend names a label its series lack, or if an alert rule was not
//! evaluated cleanly (or is missing). Its report is printed either way; the
//! page it rendered is `target/dashboard-preview/check.html`.
//!
//! `prometheus` and `python3` are required, not optional: a missing one fails
//! the test saying how to install it (`.ci/run` installs Prometheus on CI).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// run.sh is bounded by its own timeouts (~1 min of work); this is the
/// backstop for a machine that stalls.
const TIMEOUT: Duration = Duration::from_secs(420);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Fails the test, saying how to install `program`, if it is not on PATH.
fn require_tool(program: &str, install: &str) {
    match Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed, and this test needs it: {install} \
             (.ci/run installs Prometheus on CI)"
        ),
        Err(e) => panic!("cannot run {program}: {e}"),
    }
}

/// Reads a child's pipe to the end on a thread (so it never fills).
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn every_dashboard_query_and_alert_rule_evaluates_in_prometheus_against_a_live_broker() {
    require_tool(
        "prometheus",
        "Debian/Ubuntu: apt-get install prometheus (the test runs /usr/bin/prometheus \
         itself; the service need not run)",
    );
    require_tool("python3", "Debian/Ubuntu: apt-get install python3");
    let sluiced = PathBuf::from(env!("CARGO_BIN_EXE_sluiced"));
    let bin_dir = sluiced.parent().expect("sluiced has a directory");
    let sluice = bin_dir.join("sluice");
    assert!(
        sluice.exists(),
        "{} is missing: build it first (`cargo build -p sluice-cli`; `cargo test --workspace` does)",
        sluice.display()
    );
    let script = root().join("deploy/grafana/preview/run.sh");

    let started = Instant::now();
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .arg("--bin-dir")
        .arg(bin_dir)
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bash deploy/grafana/preview/run.sh");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for run.sh") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            // SIGTERM: run.sh's trap ends the broker, Prometheus and the load.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("wait").is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let report = format!("run.sh stdout (render.py's report):\n{out}\nrun.sh stderr:\n{err}");
    println!("{report}\nrun.sh took {:.0?}", started.elapsed());
    let status = status.unwrap_or_else(|| panic!("run.sh --check ran over {TIMEOUT:?}\n{report}"));
    assert!(
        status.success(),
        "run.sh --check failed ({status}); exit 3 means a missing tool or binary, 1 a query \
         Prometheus refused, a panel without data or an alert rule that failed (the report \
         names each; the page is target/dashboard-preview/check.html)\n{report}"
    );
    // The report covered the panels and, when the rules file is there, the rules.
    assert!(
        out.contains("panels,") && out.trim_end().ends_with("OK"),
        "{report}"
    );
    if root().join("deploy/prometheus/alerts.yml").exists() {
        assert!(
            out.contains("[rule "),
            "no alert rule was checked\n{report}"
        );
    }
}
