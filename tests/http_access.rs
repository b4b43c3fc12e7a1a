//! Issue 14, "`/metrics` and `/health` can be bound to another address or
//! put behind a bearer token", against real `sluiced` processes:
//! - with `metrics_token` (here from `--metrics-token-file`, or
//!   `SLUICE_METRICS_TOKEN`), `/metrics` answers 401 with a Bearer challenge
//!   without the token or with a wrong one, and 200 with the metrics text
//!   with the right one; `/health` stays open;
//! - with `--metrics-listen`, that address serves `/metrics` and `/health`
//!   and the main HTTP listener no longer serves `/metrics` (404), only
//!   `/health`; a token applies there too.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::bin_path;

/// A `sluiced` child process; killed on drop.
struct Sluiced {
    child: Child,
    http: SocketAddr,
    metrics: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Drop for Sluiced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `sluiced` with `args` (and `env`) and reads its `listening` line.
fn start(args: &[&str], env: &[(&str, &str)]) -> Sluiced {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin_path("sluiced"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "off"])
        .args(args)
        .env_remove("SLUICE_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sluiced");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        let _ = lines.read_line(&mut first);
        let _ = tx.send(first);
        let _ = std::io::copy(&mut lines, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let field = |name: &str| -> Option<SocketAddr> {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(name)?.parse().ok())
    };
    let http = field("http=").unwrap_or_else(|| panic!("no http address in {line:?}"));
    Sluiced {
        child,
        http,
        metrics: field("metrics="),
        _dir: dir,
    }
}

/// One HTTP response: status, head (lower-cased), body.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// `/metrics` at `addr` refuses without the token and with wrong ones, and
/// serves the metrics text with `token`.
fn metrics_need(addr: SocketAddr, token: &str) {
    let wrong = format!("Bearer {token}x");
    for auth in [None, Some("Bearer nope"), Some(wrong.as_str())] {
        let r = get(addr, "/metrics", auth);
        assert_eq!(r.status, 401, "{auth:?}: {}", r.head);
        assert!(
            r.head.contains("www-authenticate: bearer realm=\"sluice\""),
            "{}",
            r.head
        );
        assert!(!r.body.contains("sluice_"), "metrics leaked: {}", r.body);
    }
    let r = get(addr, "/metrics", Some(&format!("Bearer {token}")));
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body.contains("sluice_disk_free_bytes"), "{}", r.body);
}

#[test]
fn metrics_behind_a_bearer_token_from_a_file_and_health_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.token");
    std::fs::write(&file, "f1le-t0ken\n").unwrap();
    let b = start(&["--metrics-token-file", file.to_str().unwrap()], &[]);
    metrics_need(b.http, "f1le-t0ken");
    let h = get(b.http, "/health", None);
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
}

#[test]
fn the_token_can_come_from_the_environment() {
    let b = start(&[], &[("SLUICE_METRICS_TOKEN", "env-t0ken")]);
    metrics_need(b.http, "env-t0ken");
}

#[test]
fn metrics_listen_serves_metrics_and_health_and_the_main_listener_only_health() {
    let b = start(&["--metrics-listen", "127.0.0.1:0"], &[]);
    let metrics = b.metrics.expect("metrics= in the listening line");
    assert_ne!(metrics, b.http);
    let r = get(metrics, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(r.body.contains("sluice_active_connections"), "{}", r.body);
    assert_eq!(get(metrics, "/health", None).status, 200);
    let main = get(b.http, "/metrics", None);
    assert_eq!(main.status, 404);
    assert!(!main.body.contains("sluice_"), "{}", main.body);
    assert_eq!(get(b.http, "/health", None).status, 200);
    drop(b);

    // With a token as well: the separate listener requires it.
    let b = start(
        &["--metrics-listen", "127.0.0.1:0", "--metrics-token", "both"],
        &[],
    );
    metrics_need(b.metrics.unwrap(), "both");
    assert_eq!(get(b.http, "/metrics", Some("Bearer both")).status, 404);
    assert_eq!(get(b.metrics.unwrap(), "/health", None).status, 200);
}

#[test]
fn an_unreadable_or_conflicting_token_setting_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["--metrics-token-file", "/nonexistent/token"],
        vec![
            "--metrics-token",
            "a",
            "--metrics-token-file",
            "/etc/hostname",
        ],
        vec!["--metrics-token", "has space"],
    ] {
        let out = Command::new(bin_path("sluiced"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "off"])
            .args(&args)
            .env_remove("SLUICE_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("metrics_token") || err.contains("/nonexistent/token"),
            "{args:?}: {err}"
        );
    }
}
