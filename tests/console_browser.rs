//! The web console in a real browser, against real `sluiced` processes
//! (loopback ports, temp data dirs): this test seeds a cluster through
//! `sluice_client`, then runs `tests/console/console.test.js`, which drives
//! headless Chromium (Debian's package) with the pinned puppeteer-core, and
//! asserts it passed. Its PNGs of every page land in
//! `target/console-screenshots/<scenario>/` (CI keeps them).
//!
//! - **plain**: a broker without login. The seed: topic `orders` (3
//!   partitions of 10 records: keys, headers, JSON values, one text value;
//!   partition 1 with timestamps a minute apart), group `billing` with
//!   committed offsets 4 and no member, group `dashboard` with one live
//!   member consuming, and a topic `clicks` with a record every 100 ms (the
//!   charts and rates have something to show). The script checks the overview (broker alive, controller,
//!   partitions in sync, charts), the topic list, creating a topic, the
//!   API's 409 in the error banner, the partitions and config tables,
//!   setting and deleting a config key, the message browser (text, pretty
//!   JSON with its fallback, hex; from an offset, next page, from a
//!   timestamp), producing a record and finding it, the groups and their
//!   lag, resetting `billing` to earliest (the lag becomes the end offsets),
//!   the reset refused while `dashboard` has a member (disabled, and the
//!   API's 409 shown when forced), deleting a topic through the typed
//!   confirmation dialog, a 404 and a network failure in the banner, and
//!   the overview's 10 s auto-refresh whose timer stops on leaving.
//! - **auth**: `--native-security sasl_plaintext`, a bootstrap admin and
//!   `--authorization true`; a user `nobody` without ACLs made with the
//!   `sluice` CLI. The script checks the login form, a wrong password (the
//!   API's 401 words), the pages after the right one with the user in the
//!   header, a stale stored login, logging out, and `nobody` getting the
//!   API's 403 words in the banner.
//!
//! Chromium and puppeteer-core come from `tests/console/setup.sh` (CI runs
//! it); when either is missing this test fails and says so, it never skips.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{http_get, process, sluice_cli, TestBroker};
use sluice_client::{
    Admin, ClientConfig, ClientSasl, Consumer, ConsumerConfig, Producer, ProducerConfig, Record,
    SaslMechanism, SeekTo,
};

const SETUP: &str = "run `bash tests/console/setup.sh` (as root it installs Debian's chromium \
                     and the pinned puppeteer-core; CI runs it)";
const ADMIN: (&str, &str) = ("admin", "adm1n-Secret");
const NOBODY: (&str, &str) = ("nobody", "n0body-pw");
/// Longest the browser script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/`, from this test binary's path (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// Node, Chromium and puppeteer-core, or a failure that says how to get them.
fn browser_tools() -> (PathBuf, PathBuf) {
    let node = on_path(&["node"])
        .unwrap_or_else(|| panic!("node is missing (the Debian package nodejs); then {SETUP}"));
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path(&["chromium", "chromium-browser"]))
        .unwrap_or_else(|| panic!("chromium is missing: {SETUP}"));
    let puppeteer = repo_root().join("tests/console/node_modules/puppeteer-core/package.json");
    assert!(
        puppeteer.is_file(),
        "puppeteer-core is missing ({} not found): {SETUP}",
        puppeteer.display()
    );
    (node, chromium)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn client_config(b: &TestBroker, login: Option<(&str, &str)>) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(10),
        sasl: login.map(|(u, p)| ClientSasl::new(SaslMechanism::ScramSha256, u, p)),
        ..ClientConfig::new(b.addr.to_string())
    }
}

/// The data console.test.js expects (see its header): topic `orders` and
/// group `billing`.
async fn seed(config: ClientConfig) {
    let admin = Admin::with_config(config.clone())
        .await
        .expect("admin connects");
    admin
        .create_topic("orders", 3, Vec::new())
        .await
        .expect("create orders");
    let producer = Producer::with_config(config, ProducerConfig::default());
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    // Whole seconds, an hour ago: the page's datetime-local input has second precision.
    let base_ms = (now_s - 3600) * 1000;
    for partition in 0..3u32 {
        for i in 0..10u32 {
            let value = if partition == 2 && i == 9 {
                "not json: plain text".to_string()
            } else {
                format!(
                    r#"{{"id":{i},"customer":"c-{}","amount":{}.5,"items":["tea","cake"],"paid":true}}"#,
                    i % 4,
                    10 + i
                )
            };
            let mut record = Record::new("orders", value)
                .key(format!("customer-{}", i % 4))
                .header("source", "seed")
                .partition(partition);
            if partition == 1 {
                record = record.timestamp(base_ms + i as i64 * 60_000);
            }
            producer.send(record).await.expect("produce a seed record");
        }
    }
    producer.close().await;
    let moved = admin
        .seek_group("billing", &["orders".to_string()], SeekTo::Offset(4))
        .await
        .expect("commit offsets of billing");
    assert_eq!(moved.len(), 3, "{moved:?}");
}

/// Runs the browser script for `scenario` against `b`'s console; asserts it passed.
fn run_script(b: &TestBroker, scenario: &str, env: &[(&str, &str)]) {
    let (node, chromium) = browser_tools();
    let shots = target_dir().join("console-screenshots").join(scenario);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let mut cmd = Command::new(node);
    cmd.arg(repo_root().join("tests/console/console.test.js"))
        .current_dir(repo_root().join("tests/console"))
        .env("CONSOLE_URL", format!("http://{}", b.http_addr))
        .env("SCREENSHOT_DIR", &shots)
        .env("CONSOLE_SCENARIO", scenario)
        .env("CHROMIUM", chromium)
        .envs(env.iter().copied());
    let out = process::output_within(cmd, None, SCRIPT_TIMEOUT);
    let stdout = process::text(&out.stdout);
    let stderr = process::text(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "the browser test ({scenario}) failed: {}\n{stdout}{stderr}\nscreenshots: {}\nbroker log:\n{}",
        out.status,
        shots.display(),
        tail(&b.log(), 60)
    );
    println!("screenshots: {}", shots.display());
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Produces a small JSON record to `clicks` every 100 ms, for ever: the
/// throughput charts and rates have something to show.
async fn trickle(config: ClientConfig) {
    let producer = Producer::with_config(config, ProducerConfig::default());
    for i in 0u64.. {
        let value = format!(r#"{{"click":{i},"page":"/home","ms":{}}}"#, i * 100);
        let record = Record::new("clicks", value).key(format!("user-{}", i % 7));
        if let Err(e) = producer.send(record).await {
            eprintln!("clicks: {e}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn console_in_a_browser() {
    browser_tools();
    let b = TestBroker::start();
    let rt = runtime();
    rt.block_on(async {
        let admin = Admin::with_config(client_config(&b, None))
            .await
            .expect("admin connects");
        admin
            .create_topic("clicks", 2, Vec::new())
            .await
            .expect("create clicks");
    });
    let clicks = rt.spawn(trickle(client_config(&b, None)));
    // The first API call starts the throughput and lag sampler: early (and
    // after `clicks` exists, so its growth counts), so that the charts have
    // points by the time the browser looks.
    let (status, body) = http_get(b.http_addr, "/api/v1/overview");
    assert_eq!(status, 200, "{body}");
    rt.block_on(seed(client_config(&b, None)));
    // A live member for the whole run, consuming and committing (the "out"
    // throughput): its group cannot be reset.
    let (joined_tx, joined) = tokio::sync::oneshot::channel();
    let config = client_config(&b, None);
    let member = rt.spawn(async move {
        let mut c = Consumer::with_config(config, ConsumerConfig::default());
        c.subscribe(
            "dashboard",
            vec!["orders".to_string(), "clicks".to_string()],
        )
        .await
        .expect("subscribe dashboard");
        let _ = joined_tx.send(());
        while let Some(r) = c.next().await {
            if let Err(e) = r {
                eprintln!("dashboard: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    rt.block_on(joined).expect("dashboard joined");
    run_script(&b, "plain", &[]);
    clicks.abort();
    member.abort();
}

#[test]
fn console_in_a_browser_with_login() {
    browser_tools();
    let b = TestBroker::start_with(&[
        "--native-security",
        "sasl_plaintext",
        "--admin-user",
        ADMIN.0,
        "--admin-password",
        ADMIN.1,
        "--authorization",
        "true",
    ]);
    let rt = runtime();
    rt.block_on(seed(client_config(&b, Some(ADMIN))));
    let out = sluice_cli(&b.addr.to_string())
        .env("SLUICE_USERNAME", ADMIN.0)
        .env("SLUICE_PASSWORD", ADMIN.1)
        .env_remove("SLUICE_SASL_MECHANISM")
        .args(["user", "create", NOBODY.0, "--password", NOBODY.1])
        .output()
        .expect("run sluice user create");
    process::ok(&out);
    run_script(
        &b,
        "auth",
        &[
            ("CONSOLE_USER", ADMIN.0),
            ("CONSOLE_PASSWORD", ADMIN.1),
            ("CONSOLE_NOACL_USER", NOBODY.0),
            ("CONSOLE_NOACL_PASSWORD", NOBODY.1),
        ],
    );
}
