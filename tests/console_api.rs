//! The web console's JSON API (`docs/console.md`) on real `sluiced`
//! processes, over HTTP: a single node (every call, and every error with
//! its status and words), a broker whose native listener requires SASL
//! (login, and ACLs applied to the user at the browser), and a three-node
//! cluster (the console of any node sees and reads every partition, and
//! shows a killed broker and its under-replicated partitions).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{ClusterSpec, TestCluster};
use common::{bin_path, http_request, sluice_cli, sluice_with_input, TestBroker};
use serde_json::{json, Value};

/// One HTTP/1.1 request with optional Basic credentials and content type.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    content_type: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let basic = auth.map(|(u, p)| format!("Basic {}", b64(format!("{u}:{p}").as_bytes())));
    let mut headers = Vec::new();
    if let Some(b) = &basic {
        headers.push(("Authorization", b.as_str()));
    }
    if let Some(ct) = content_type {
        headers.push(("Content-Type", ct));
    }
    http_request(addr, method, path, &headers, body)
}

fn b64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in s.bytes().filter(|&c| c != b'=') {
        let v = A.iter().position(|&a| a == ch).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

/// A console client of one broker, as one user.
struct Api {
    addr: SocketAddr,
    auth: Option<(String, String)>,
}

impl Api {
    fn new(addr: SocketAddr) -> Api {
        Api { addr, auth: None }
    }

    fn login(addr: SocketAddr, user: &str, password: &str) -> Api {
        Api {
            addr,
            auth: Some((user.into(), password.into())),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let auth = self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let ct = (!bytes.is_empty()).then_some("application/json");
        let (status, text) = http(self.addr, method, path, auth, ct, bytes.as_bytes());
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text:?}"));
        (status, v)
    }

    fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("GET", path, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    /// The error words of a call that must fail with `status`.
    fn fails(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> String {
        let (got, v) = self.call(method, path, body);
        assert_eq!(got, status, "{method} {path}: {v}");
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no error field: {v}"))
            .to_string()
    }
}

fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Records of one partition from `query` via the message browser.
fn browse(api: &Api, topic: &str, partition: u32, query: &str) -> Value {
    api.get(&format!(
        "/api/v1/topics/{topic}/partitions/{partition}/messages?{query}"
    ))
}

fn values(page: &Value) -> Vec<Vec<u8>> {
    page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| unb64(r["value_b64"].as_str().unwrap()))
        .collect()
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn base64_helpers_agree() {
    for s in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"\x00\xff\x10hello"] {
        assert_eq!(unb64(&b64(s)), s);
    }
    assert_eq!(b64(b"alice:pw"), "YWxpY2U6cHc=");
}

#[test]
fn single_node_api_end_to_end() {
    let b = TestBroker::start();
    let api = Api::new(b.http_addr);
    let broker = b.addr.to_string();

    // The page and its assets are served from the binary.
    let (status, page) = http(b.http_addr, "GET", "/", None, None, b"");
    assert_eq!(status, 200);
    assert!(page.contains("/assets/app.js"), "{page}");
    assert_eq!(
        http(b.http_addr, "GET", "/assets/app.js", None, None, b"").0,
        200
    );
    assert_eq!(
        http(b.http_addr, "GET", "/assets/app.css", None, None, b"").0,
        200
    );
    // /health and /metrics are still there beside the console.
    assert_eq!(http(b.http_addr, "GET", "/health", None, None, b"").0, 200);

    let s = api.get("/api/v1/session");
    assert_eq!(s["auth_required"], false);

    // Create a topic; the same again is a conflict in words.
    let (status, v) = api.post(
        "/api/v1/topics",
        json!({"name": "orders", "partitions": 3, "config": {"retention.ms": "3600000"}}),
    );
    assert_eq!(status, 201, "{v}");
    let e = api.fails(
        "POST",
        "/api/v1/topics",
        Some(json!({"name": "orders", "partitions": 3})),
        409,
    );
    assert!(e.contains("exists already"), "{e}");
    let e = api.fails(
        "POST",
        "/api/v1/topics",
        Some(json!({"name": "bad name!", "partitions": 1})),
        400,
    );
    assert!(e.contains("not valid"), "{e}");
    let e = api.fails(
        "POST",
        "/api/v1/topics",
        Some(json!({"name": "x", "partitions": 0})),
        400,
    );
    assert!(e.contains("at least one partition"), "{e}");
    let e = api.fails("POST", "/api/v1/topics", Some(json!({"nom": "x"})), 400);
    assert!(e.contains("not valid"), "{e}");

    let t = api.get("/api/v1/topics/orders");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(t["config"]["retention.ms"], "3600000");
    assert_eq!(t["partitions"][0]["leader"], 0);

    // Produce through the console: keys, headers, JSON values, byte for byte.
    let mut sent = Vec::new();
    for i in 0..5 {
        let value = format!("{{\"id\":{i},\"name\":\"order-{i}\"}}");
        let (status, v) = api.post(
            "/api/v1/topics/orders/messages",
            json!({"partition": 1, "key": format!("k{i}"), "value": value, "headers": {"source": "console"}}),
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["partition"], 1);
        assert_eq!(v["offset"], i);
        sent.push(value.into_bytes());
    }
    // And through the CLI, read back through the console.
    let out = sluice_with_input(
        &broker,
        &["topic", "produce", "orders", "-p", "2"],
        b"a\nb\nc\n",
    );
    assert!(out.status.success(), "{out:?}");

    let page = browse(&api, "orders", 1, "offset=0&limit=50");
    assert_eq!(values(&page), sent);
    let r0 = &page["records"][0];
    assert_eq!(unb64(r0["key_b64"].as_str().unwrap()), b"k0");
    assert_eq!(r0["headers"][0]["key"], "source");
    assert_eq!(
        unb64(r0["headers"][0]["value_b64"].as_str().unwrap()),
        b"console"
    );
    assert_eq!(page["end_offset"], 5);
    assert_eq!(page["next_offset"], 5);
    // Paging: two at a time from offset 1.
    let page = browse(&api, "orders", 1, "offset=1&limit=2");
    assert_eq!(values(&page), sent[1..3].to_vec());
    assert_eq!(page["next_offset"], 3);
    // From a timestamp: one after the newest record gives nothing; 0 gives all.
    let newest = page["records"][1]["timestamp"].as_i64().unwrap();
    let page = browse(&api, "orders", 2, "timestamp=0");
    assert_eq!(
        values(&page),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert!(page["records"][0]["key_b64"].is_null());
    let late = browse(
        &api,
        "orders",
        1,
        &format!("timestamp={}", newest + 3_600_000),
    );
    assert!(late["records"].as_array().unwrap().is_empty(), "{late}");
    // An empty partition answers no records, not an error.
    let empty = browse(&api, "orders", 0, "offset=0");
    assert!(empty["records"].as_array().unwrap().is_empty());
    // Bad browse requests.
    for (q, words) in [
        ("offset=abc", "not a valid number"),
        ("limit=0", "limit must be"),
        ("limit=100000", "limit must be"),
        ("offset=1&timestamp=5", "not both"),
    ] {
        let e = api.fails(
            "GET",
            &format!("/api/v1/topics/orders/partitions/1/messages?{q}"),
            None,
            400,
        );
        assert!(e.contains(words), "{q}: {e}");
    }
    let e = api.fails(
        "GET",
        "/api/v1/topics/orders/partitions/9/messages",
        None,
        404,
    );
    assert!(e.contains("no such topic or partition"), "{e}");
    let e = api.fails("GET", "/api/v1/topics/nope", None, 404);
    assert!(e.contains("no such topic"), "{e}");

    // Change the config: set one key, remove another; a bad value is refused.
    let (status, v) = api.post(
        "/api/v1/topics/orders/config",
        json!({"set": {"retention.bytes": "1048576"}, "delete": ["retention.ms"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["config"]["retention.bytes"], "1048576");
    assert_eq!(v["config"]["retention.ms"], "-1", "{v}");
    let e = api.fails(
        "POST",
        "/api/v1/topics/orders/config",
        Some(json!({"set": {"retention.ms": "soon"}})),
        400,
    );
    assert!(e.contains("not valid"), "{e}");
    let e = api.fails("POST", "/api/v1/topics/orders/config", Some(json!({})), 400);
    assert!(e.contains("nothing to change"), "{e}");

    // Topics list: partitions, messages, size.
    let list = api.get("/api/v1/topics");
    let orders = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .expect("orders listed");
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["messages"], 8);
    assert!(orders["size_bytes"].as_u64().unwrap() > 0);

    // A group with committed offsets and no members: lag, then reset.
    let out = sluice_cli(&broker)
        .args(["topic", "consume", "orders", "-g", "billing", "-n", "8"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let g = wait_until(
        "the group's members to leave",
        Duration::from_secs(30),
        || {
            let g = api.get("/api/v1/groups/billing");
            if g["members"].as_array().unwrap().is_empty() {
                Ok(g)
            } else {
                Err(g.to_string())
            }
        },
    );
    let lag: u64 = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_u64().unwrap())
        .sum();
    assert_eq!(lag, 0, "{g}");
    let groups = api.get("/api/v1/groups");
    assert_eq!(groups[0]["group_id"], "billing", "{groups}");
    assert_eq!(groups[0]["lag"], 0);
    let (status, v) = api.post("/api/v1/groups/billing/reset", json!({"to": "earliest"}));
    assert_eq!(status, 200, "{v}");
    let g = api.get("/api/v1/groups/billing");
    let lags: Vec<(u64, u64)> = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["committed"].as_u64().unwrap(), o["lag"].as_u64().unwrap()))
        .collect();
    assert_eq!(lags, vec![(0, 0), (0, 5), (0, 3)], "{g}");
    // Lag in seconds is known for a lagging partition.
    assert!(
        g["offsets"][1]["lag_seconds"].as_f64().unwrap() >= 0.0,
        "{g}"
    );
    let (status, v) = api.post(
        "/api/v1/groups/billing/reset",
        json!({"to": "latest", "topic": "orders"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(api.get("/api/v1/groups")[0]["lag"], 0);
    let e = api.fails(
        "POST",
        "/api/v1/groups/billing/reset",
        Some(json!({"to": "timestamp"})),
        400,
    );
    assert!(e.contains("needs \"timestamp\""), "{e}");
    let e = api.fails(
        "POST",
        "/api/v1/groups/billing/reset",
        Some(json!({"to": "yesterday"})),
        400,
    );
    assert!(e.contains("earliest, latest or timestamp"), "{e}");
    let e = api.fails("GET", "/api/v1/groups/nobody", None, 404);
    assert!(e.contains("no such consumer group"), "{e}");

    // A group with a live member cannot be reset: 409, in words.
    let member = KillOnDrop(
        Command::new(bin_path("sluice"))
            .args([
                "--broker", &broker, "topic", "consume", "orders", "-g", "live",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the live member to join", Duration::from_secs(30), || {
        let (status, g) = api.call("GET", "/api/v1/groups/live", None);
        if status == 200 && g["members"].as_array().unwrap().len() == 1 {
            Ok(())
        } else {
            Err(g.to_string())
        }
    });
    let e = api.fails(
        "POST",
        "/api/v1/groups/live/reset",
        Some(json!({"to": "earliest", "topic": "orders"})),
        409,
    );
    assert!(e.contains("active member"), "{e}");
    drop(member);

    // The overview: one live broker leading every partition.
    let o = api.get("/api/v1/overview");
    assert_eq!(o["brokers"].as_array().unwrap().len(), 1, "{o}");
    assert_eq!(o["brokers"][0]["alive"], true);
    assert!(o["brokers"][0]["leaders"].as_u64().unwrap() >= 3, "{o}");
    assert!(o["brokers"][0]["disk_used_bytes"].as_u64().unwrap() > 0);
    assert!(o["partitions"]["under_replicated"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(o["throughput"]["history"].is_array());

    // Errors of the HTTP layer.
    let (status, body) = http(
        b.http_addr,
        "POST",
        "/api/v1/topics",
        None,
        Some("text/plain"),
        br#"{"name":"csrf"}"#,
    );
    assert_eq!(status, 415, "{body}");
    let big = vec![b'x'; 2 << 20];
    let (status, _) = http(
        b.http_addr,
        "POST",
        "/api/v1/topics/orders/messages",
        None,
        Some("application/json"),
        &big,
    );
    assert_eq!(status, 413);
    assert!(api
        .fails("GET", "/api/v1/nothing", None, 404)
        .contains("no API"));
    assert!(api
        .fails("PUT", "/api/v1/topics", None, 405)
        .contains("not allowed"));
    assert_eq!(
        api.call("GET", "/api/v1/topics/orders/partitions/x/messages", None)
            .0,
        400
    );

    // Delete; then it is gone.
    let (status, v) = api.call("DELETE", "/api/v1/topics/orders", None);
    assert_eq!(status, 200, "{v}");
    api.fails("GET", "/api/v1/topics/orders", None, 404);
    let e = api.fails("DELETE", "/api/v1/topics/orders", None, 404);
    assert!(e.contains("no such topic"), "{e}");
    // The broker is unaffected by all of the above.
    assert_eq!(http(b.http_addr, "GET", "/health", None, None, b"").0, 200);
}

const ADMIN: (&str, &str) = ("admin", "admin-Secret");

fn admin_cli(broker: &str, args: &[&str]) -> String {
    let out = sluice_cli(broker)
        .args(["--username", ADMIN.0, "--password", ADMIN.1])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn login_and_acls_apply_to_the_user_at_the_browser() {
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
    let broker = b.addr.to_string();
    let anonymous = Api::new(b.http_addr);
    let s = anonymous.get("/api/v1/session");
    assert_eq!(s["auth_required"], true);
    assert!(s["user"].is_null());
    let e = anonymous.fails("GET", "/api/v1/topics", None, 401);
    assert!(e.contains("login required"), "{e}");
    // No Basic challenge: the page shows its own login form.
    let (status, raw) = {
        let mut s = TcpStream::connect(b.http_addr).unwrap();
        write!(
            s,
            "GET /api/v1/topics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut t = String::new();
        s.read_to_string(&mut t).unwrap();
        (t.split_whitespace().nth(1).unwrap().to_string(), t)
    };
    assert_eq!(status, "401");
    assert!(
        !raw.to_ascii_lowercase().contains("www-authenticate"),
        "{raw}"
    );

    let wrong = Api::login(b.http_addr, ADMIN.0, "not-it");
    let e = wrong.fails("GET", "/api/v1/topics", None, 401);
    assert!(e.contains("login failed for user admin"), "{e}");

    let admin = Api::login(b.http_addr, ADMIN.0, ADMIN.1);
    assert_eq!(admin.get("/api/v1/session")["user"], "admin");
    let (status, v) = admin.post(
        "/api/v1/topics",
        json!({"name": "payments", "partitions": 2}),
    );
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin.post("/api/v1/topics", json!({"name": "public", "partitions": 1}));
    assert_eq!(status, 201, "{v}");
    let (status, v) = admin.post(
        "/api/v1/topics/payments/messages",
        json!({"partition": 0, "value": "secret"}),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = admin.post(
        "/api/v1/topics/public/messages",
        json!({"partition": 0, "value": "hello"}),
    );
    assert_eq!(status, 200, "{v}");

    // Bob exists but holds no ACL: he sees nothing and may do nothing.
    admin_cli(&broker, &["user", "create", "bob", "--password", "b0b-pw"]);
    let bob = Api::login(b.http_addr, "bob", "b0b-pw");
    assert_eq!(bob.get("/api/v1/session")["user"], "bob");
    assert_eq!(bob.get("/api/v1/topics"), json!([]));
    let e = bob.fails(
        "POST",
        "/api/v1/topics",
        Some(json!({"name": "bobs", "partitions": 1})),
        403,
    );
    assert!(e.contains("not allowed"), "{e}");
    let e = bob.fails(
        "POST",
        "/api/v1/topics/payments/messages",
        Some(json!({"value": "forged"})),
        403,
    );
    assert!(e.contains("not allowed"), "{e}");
    let e = bob.fails("DELETE", "/api/v1/topics/payments", None, 403);
    assert!(e.contains("not allowed"), "{e}");
    bob.fails(
        "GET",
        "/api/v1/topics/payments/partitions/0/messages",
        None,
        403,
    );

    // Read and describe on "public" only: he reads it, and only it.
    admin_cli(
        &broker,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "User:bob",
            "--operation",
            "read,describe",
            "--topic",
            "public",
        ],
    );
    let names: Vec<String> = bob
        .get("/api/v1/topics")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["public"]);
    let page = browse(&bob, "public", 0, "offset=0");
    assert_eq!(values(&page), vec![b"hello".to_vec()]);
    bob.fails(
        "GET",
        "/api/v1/topics/payments/partitions/0/messages",
        None,
        403,
    );
    // Nothing bob tried was applied.
    let page = browse(&admin, "payments", 0, "offset=0");
    assert_eq!(values(&page), vec![b"secret".to_vec()]);
    let names: Vec<Value> = admin
        .get("/api/v1/topics")
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(!names.contains(&json!("bobs")), "{names:?}");
    assert!(names.contains(&json!("payments")));
}

#[test]
fn cluster_console_sees_every_broker_and_partition() {
    let mut c = TestCluster::start(ClusterSpec::voters(3));
    let ids = c.ids();
    let api = |c: &TestCluster, id: u32| Api::new(c.node(id).http_addr);
    let (status, v) = api(&c, ids[0]).post(
        "/api/v1/topics",
        json!({"name": "spread", "partitions": 3, "replication": 3}),
    );
    assert_eq!(status, 201, "{v}");
    c.wait_topic("spread", 3, Duration::from_secs(30));
    // Every partition fully in sync, seen from another node's console.
    let o = wait_until(
        "3 brokers and 3 in-sync partitions",
        Duration::from_secs(60),
        || {
            let o = api(&c, ids[1]).get("/api/v1/overview");
            let alive = o["brokers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["alive"] == true)
                .count();
            if alive == 3
                && o["partitions"]["total"] == 3
                && o["partitions"]["under_replicated"]
                    .as_array()
                    .unwrap()
                    .is_empty()
            {
                Ok(o)
            } else {
                Err(o.to_string())
            }
        },
    );
    assert!(o["controller"].is_u64(), "{o}");
    // Produce to every partition through one console, read back through another.
    for p in 0..3u32 {
        let (status, v) = api(&c, ids[2]).post(
            "/api/v1/topics/spread/messages",
            json!({"partition": p, "value": format!("v{p}")}),
        );
        assert_eq!(status, 200, "{v}");
    }
    // The client library too: a consumer bootstrapped at a broker that
    // leads none of these, started at an explicit offset (so no ListOffsets
    // learns the leaders for it), reads every partition. It used to fetch
    // from the bootstrap broker for ever (found by this console test).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for p in 0..3u32 {
            let mut consumer = sluice_client::Consumer::with_config(
                sluice_client::ClientConfig::new(c.addr(ids[0]).to_string()),
                sluice_client::ConsumerConfig {
                    start: sluice_client::SeekTo::Offset(0),
                    ..Default::default()
                },
            );
            consumer.assign(vec![("spread".to_string(), p)]);
            let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .unwrap_or_else(|_| panic!("partition {p}: no record within 20 s"))
                .expect("a record")
                .expect("no error");
            assert_eq!(
                (r.offset, r.value.as_deref()),
                (0, Some(format!("v{p}").as_bytes()))
            );
        }
    });
    for p in 0..3u32 {
        let page = wait_until("the record readable", Duration::from_secs(30), || {
            let page = browse(&api(&c, ids[0]), "spread", p, "offset=0");
            if page["records"].as_array().unwrap().len() == 1 {
                Ok(page)
            } else {
                Err(page.to_string())
            }
        });
        assert_eq!(values(&page), vec![format!("v{p}").into_bytes()]);
    }
    // A killed broker shows as not alive, its partitions under-replicated.
    let victim = ids[2];
    c.kill(victim);
    wait_until(
        "the killed broker shown down",
        Duration::from_secs(60),
        || {
            let o = api(&c, ids[0]).get("/api/v1/overview");
            let down = o["brokers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b["id"] == victim && b["alive"] == false);
            let under = o["partitions"]["under_replicated"]
                .as_array()
                .unwrap()
                .len();
            if down && under == 3 {
                Ok(())
            } else {
                Err(o.to_string())
            }
        },
    );
}

#[test]
fn authorization_without_a_login_turns_the_api_off() {
    // The console's connection would carry the broker's own principal, which
    // such setups make a super user: no API call is answered.
    let b = TestBroker::start_with(&["--authorization", "true", "--super-users", "User:ANONYMOUS"]);
    let api = Api::new(b.http_addr);
    for path in ["/api/v1/session", "/api/v1/topics", "/api/v1/overview"] {
        let e = api.fails("GET", path, None, 403);
        assert!(e.contains("the console is off"), "{e}");
    }
    let e = api.fails("POST", "/api/v1/topics", Some(json!({"name": "x"})), 403);
    assert!(e.contains("native_security"), "{e}");
    // The page itself still loads (and shows that error).
    assert_eq!(http(b.http_addr, "GET", "/", None, None, b"").0, 200);
}
