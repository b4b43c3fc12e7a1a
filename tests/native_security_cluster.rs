//! Brokers of a cluster whose native listeners require SASL (and ACLs)
//! replicate through them: each follower logs in to its leaders as the
//! bootstrap admin of its own config. A produce with `acks = durable`
//! (fsynced on a majority) succeeds and every replica joins the ISR. A
//! clustered broker with a SASL native listener and no admin does not start.
//!
//! The harness logs its own probes in (`NATIVE_LOGIN`).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::cluster::{ClusterSpec, TestCluster, NATIVE_LOGIN};
use common::process::output_within;
use common::{batch_of, bin_path, RawClient};
use sluice_auth::scram::{ScramClient, ScramMechanism};
use sluice_protocol::*;

const ADMIN: (&str, &str) = ("admin", "cluster-admin-pw");

fn login(addr: SocketAddr) -> RawClient {
    let mut c = RawClient::connect(addr);
    let Response::SaslHandshake(h) = c.call(&Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: "SCRAM-SHA-256".into(),
    })) else {
        panic!("handshake")
    };
    assert_eq!(h.error, ErrorCode::None);
    let mut client = ScramClient::new(ScramMechanism::Sha256, ADMIN.0, ADMIN.1);
    let mut step =
        |bytes: Vec<u8>| match c.call(&Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: Bytes::from(bytes),
        })) {
            Response::SaslAuthenticate(r) if r.error == ErrorCode::None => r.auth_bytes,
            other => panic!("login: {other:?}"),
        };
    let first = step(client.first());
    let last = step(client.finish(&first).unwrap());
    client.verify(&last).unwrap();
    c
}

#[test]
fn followers_log_in_to_their_leaders_and_replicate() {
    NATIVE_LOGIN
        .set((ADMIN.0.to_string(), ADMIN.1.to_string()))
        .expect("set once");
    let mut c = TestCluster::start(ClusterSpec::voters(3).extra_args(&[
        "--native-security",
        "sasl_plaintext",
        "--admin-user",
        ADMIN.0,
        "--admin-password",
        ADMIN.1,
        "--authorization",
        "true",
    ]));
    let (code, msg) = c.create_topic(1, "replicated", 1, 3);
    assert_eq!(code, ErrorCode::None, "{msg}");
    let view = c.wait_topic("replicated", 1, Duration::from_secs(30));
    let leader = view[0].leader;
    // Every replica catches up and joins the ISR: the followers' fetches
    // were authenticated (and authorized: the admin is a super user).
    c.wait_for(
        "all three replicas in the ISR",
        Duration::from_secs(30),
        |c| {
            let m = c.metadata(leader, &["replicated"])?;
            let isr = &m.topics[0].partitions[0].isr;
            if isr.len() == 3 {
                Ok(())
            } else {
                Err(format!("isr {isr:?}"))
            }
        },
    );
    let mut client = login(c.addr(leader));
    let p = client.produce("replicated", 0, batch_of(&[b"one", b"two"]), Acks::Durable);
    assert_eq!(p.error, ErrorCode::None, "{}", c.logs());
    assert_eq!(p.last_offset, 1);
    // A follower's own log has the records (served once it leads): the
    // high watermark the leader reports covers them.
    c.wait_for(
        "the high watermark past the records",
        Duration::from_secs(30),
        |c| {
            let m = c.metadata(leader, &["replicated"])?;
            let end = m.topics[0].partitions[0].end_offset;
            if end >= 2 {
                Ok(())
            } else {
                Err(format!("end {end}"))
            }
        },
    );
    // The followers' logins, as the leader saw them (the harness and this
    // test log in with SCRAM-SHA-256; fetchers prefer SCRAM-SHA-512).
    let fetcher_logins = c
        .log(leader)
        .lines()
        .filter(|l| l.contains("authenticated") && l.contains("SCRAM-SHA-512"))
        .count();
    assert!(fetcher_logins >= 2, "{}", c.log(leader));
    assert!(
        !c.logs().contains("replication login to the leader refused"),
        "{}",
        c.logs()
    );
}

#[test]
fn a_clustered_sasl_native_listener_without_an_admin_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin_path("sluiced"));
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--kafka-listen", "off", "--node-id", "1"])
        .args([
            "--peers",
            "1@127.0.0.1:1",
            "--cluster-listen",
            "127.0.0.1:0",
        ])
        .args(["--native-security", "sasl_plaintext"])
        .env_remove("SLUICE_CONFIG")
        .env_remove("SLUICE_ADMIN_USER")
        .env_remove("SLUICE_ADMIN_PASSWORD");
    let out = output_within(cmd, None, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_user") && err.contains("replication"),
        "{err}"
    );
}
