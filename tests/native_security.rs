//! The native listener's security against real `sluiced` processes
//! (loopback ports, temp data dirs): SASL with the native client, the CLI
//! and raw frames; the ACL check of every native api key; quotas; the
//! security admin apis through the CLI, across a SIGKILL.
//!
//! - **Logins**: SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (allowed without TLS
//!   only with `sasl_plain_without_tls`) with `sluice_client` (produce and
//!   read back) and the CLI; a wrong password and an unknown user are
//!   refused with `authentication failed for user X`.
//! - **Misbehaving peers**: a request before authentication is answered
//!   ILLEGAL_SASL_STATE and the connection closed; SaslAuthenticate without
//!   a handshake likewise; SASL exchanges cut after the handshake and after
//!   client-first, and a frame cut in half: the broker is unaffected.
//! - **A flood** of 50 failed logins from one address: later failures are
//!   answered ever more slowly, each is logged and counted in
//!   `sluice_auth_failures_total`, and a legitimate client works throughout.
//! - **ACLs over every native api key** ([`ApiKey::ALL`], through an
//!   exhaustive `match` in [`case`], so a new api cannot be left out): an
//!   authenticated principal without ACLs is refused each request with the
//!   right code and nothing it sent is applied (the admin's view of topics,
//!   offsets, groups, configs, users, ACLs and quotas is unchanged); with the
//!   ACL each needs, the same request is served; a super user needs none;
//!   Metadata hides undescribable topics; DENY wins over ALLOW.
//! - **Quotas**: a user over its request-rate quota is slowed (the
//!   connection muted) while another user beside it is not.
//! - **CLI**: `sluice user|acl|quota` round trips, persisted across a
//!   SIGKILL and restart.
//! - **Inside TLS** (`sasl_ssl`, certificates made at test time): PLAIN and
//!   SCRAM with the client and the CLI, TLS first and SASL after.
//!
//! Every socket read and wait is bounded.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch_of, http_get, sluice_cli, RawClient, TestBroker};
use sluice_auth::plain::encode_plain;
use sluice_auth::scram::{ScramClient, ScramMechanism};
use sluice_client::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use sluice_client::{
    Admin, ClientConfig, ClientError, ClientSasl, Consumer, ConsumerConfig, Producer,
    ProducerConfig, Record, SaslMechanism, ScramMechanismType, SeekTo,
};
use sluice_protocol::*;

const ADMIN: (&str, &str) = ("admin", "admin-Secret");
const ALICE: (&str, &str) = ("alice", "al1ce,pw=x!");

/// A broker whose native listener requires SASL, with the bootstrap admin.
fn sasl_broker(extra: &[&str]) -> TestBroker {
    let mut args = vec![
        "--native-security",
        "sasl_plaintext",
        "--admin-user",
        ADMIN.0,
        "--admin-password",
        ADMIN.1,
    ];
    args.extend_from_slice(extra);
    TestBroker::start_with(&args)
}

fn config(addr: SocketAddr, mechanism: SaslMechanism, user: (&str, &str)) -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_secs(10),
        sasl: Some(ClientSasl::new(mechanism, user.0, user.1)),
        ..ClientConfig::new(addr.to_string())
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn admin_of(addr: SocketAddr) -> Admin {
    Admin::with_config(config(addr, SaslMechanism::ScramSha256, ADMIN))
        .await
        .expect("the admin logs in")
}

/// A counter or gauge of `/metrics` (0 when absent).
fn metric(b: &TestBroker, name: &str) -> u64 {
    let (status, body) = http_get(b.http_addr, "/metrics");
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .map_or(0, |v| v as u64)
}

// ------------------------------------------------------------------ raw SASL

/// Why a raw login failed: the code and message the broker answered.
type Refusal = (ErrorCode, String);

fn handshake(c: &mut RawClient, mechanism: &str) -> SaslHandshakeResponse {
    match c.call(&Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: mechanism.into(),
    })) {
        Response::SaslHandshake(r) => r,
        other => panic!("SaslHandshake answered {other:?}"),
    }
}

fn authenticate(c: &mut RawClient, bytes: Vec<u8>) -> SaslAuthenticateResponse {
    match c.call(&Request::SaslAuthenticate(SaslAuthenticateRequest {
        auth_bytes: Bytes::from(bytes),
    })) {
        Response::SaslAuthenticate(r) => r,
        other => panic!("SaslAuthenticate answered {other:?}"),
    }
}

/// A SCRAM login on a raw connection.
fn scram_login(
    c: &mut RawClient,
    m: ScramMechanism,
    user: &str,
    password: &str,
) -> Result<(), Refusal> {
    let hs = handshake(c, m.name());
    if hs.error != ErrorCode::None {
        return Err((hs.error, String::new()));
    }
    let mut client = ScramClient::new(m, user, password);
    let first = authenticate(c, client.first());
    if first.error != ErrorCode::None {
        return Err((first.error, first.error_message));
    }
    let fin = client.finish(&first.auth_bytes).expect("client-final");
    let last = authenticate(c, fin);
    if last.error != ErrorCode::None {
        return Err((last.error, last.error_message));
    }
    client.verify(&last.auth_bytes).expect("server signature");
    Ok(())
}

/// A raw connection logged in with SCRAM-SHA-256.
fn login(b: &TestBroker, user: (&str, &str)) -> RawClient {
    let mut c = b.client();
    scram_login(&mut c, ScramMechanism::Sha256, user.0, user.1)
        .unwrap_or_else(|e| panic!("{} cannot log in: {e:?}", user.0));
    c
}

// ------------------------------------------------------------------ 1: logins

#[test]
fn each_mechanism_logs_in_with_the_client_and_the_cli_and_bad_credentials_are_refused() {
    let b = sasl_broker(&["--sasl-plain-without-tls", "true"]);
    let rt = runtime();
    rt.block_on(async {
        let admin = admin_of(b.addr).await;
        admin
            .upsert_user(ALICE.0, ALICE.1, &ScramMechanismType::ALL, 4096)
            .await
            .unwrap();
        admin.create_topic("logins", 1, vec![]).await.unwrap();
        for (i, m) in [
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
            SaslMechanism::Plain,
        ]
        .into_iter()
        .enumerate()
        {
            let value = format!("hello via {m}");
            let producer =
                Producer::with_config(config(b.addr, m, ALICE), ProducerConfig::default());
            let (p, offset) = producer
                .send(Record::new("logins", value.clone()))
                .await
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            assert_eq!(offset, i as u64);
            producer.close().await;
            let mut consumer =
                Consumer::with_config(config(b.addr, m, ALICE), ConsumerConfig::default());
            consumer.assign(vec![("logins".into(), p)]);
            consumer.seek("logins", p, SeekTo::Offset(offset)).unwrap();
            let r = tokio::time::timeout(Duration::from_secs(20), consumer.next())
                .await
                .expect("a record in time")
                .expect("assigned")
                .unwrap();
            assert_eq!(r.value.as_deref(), Some(value.as_bytes()), "{m}");
        }
        // Wrong password, unknown user: a clear, non-retriable error.
        for (user, pw) in [(ALICE.0, "wrong"), ("nobody", "whatever")] {
            let e = Admin::with_config(config(b.addr, SaslMechanism::ScramSha512, (user, pw)))
                .await
                .err()
                .expect("refused");
            assert!(
                matches!(e, ClientError::Authentication { .. }) && !e.is_retriable(),
                "{e:?}"
            );
            assert!(
                e.to_string()
                    .contains(&format!("authentication failed for user {user}")),
                "{e}"
            );
        }
    });
    // The CLI, each mechanism, and the password from a file.
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("alice.pw");
    std::fs::write(&pw_file, format!("{}\n", ALICE.1)).unwrap();
    for m in ["scram-sha-256", "SCRAM-SHA-512", "plain"] {
        let out = cli_as(
            &b,
            ALICE.0,
            &[
                "--password-file",
                pw_file.to_str().unwrap(),
                "--sasl-mechanism",
                m,
            ],
            &["topic", "list"],
        );
        assert!(out.status.success(), "{m}: {}", stderr(&out));
        assert!(stdout(&out).contains("logins"), "{m}: {}", stdout(&out));
    }
    let out = cli_as(&b, ALICE.0, &["--password", "nope"], &["topic", "list"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("authentication failed for user alice"),
        "{}",
        stderr(&out)
    );
    // No credentials at all: the CLI says the broker wants them.
    let out = sluice_cli(&b.addr.to_string())
        .args(["topic", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requires authentication"),
        "{}",
        stderr(&out)
    );
    assert!(metric(&b, "sluice_auth_failures_total") >= 3);
    assert!(b.log().contains("authentication failed"));

    // Without sasl_plain_without_tls, PLAIN over plain TCP is refused.
    let strict = sasl_broker(&[]);
    let mut c = strict.client();
    let hs = handshake(&mut c, "PLAIN");
    assert_eq!(hs.error, ErrorCode::UnsupportedSaslMechanism);
    assert!(hs.mechanisms.iter().any(|m| m == "SCRAM-SHA-256"));
    // The connection may try another mechanism.
    scram_login(&mut c, ScramMechanism::Sha512, ADMIN.0, ADMIN.1).unwrap();
    rt.block_on(async {
        let e = Admin::with_config(config(strict.addr, SaslMechanism::Plain, ADMIN))
            .await
            .err()
            .expect("PLAIN refused");
        assert!(e.to_string().contains("PLAIN needs TLS"), "{e}");
    });
}

fn cli_as(b: &TestBroker, user: &str, login: &[&str], args: &[&str]) -> Output {
    sluice_cli(&b.addr.to_string())
        .env_remove("SLUICE_PASSWORD")
        .env_remove("SLUICE_USERNAME")
        .env_remove("SLUICE_SASL_MECHANISM")
        .args(["--username", user])
        .args(login)
        .args(args)
        .output()
        .expect("run sluice")
}

fn admin_cli(b: &TestBroker, args: &[&str]) -> Output {
    sluice_cli(&b.addr.to_string())
        .env("SLUICE_USERNAME", ADMIN.0)
        .env("SLUICE_PASSWORD", ADMIN.1)
        .env_remove("SLUICE_SASL_MECHANISM")
        .args(args)
        .output()
        .expect("run sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ------------------------------------------------------------------ 2: misbehaving peers

#[test]
fn requests_before_authentication_and_cut_exchanges_leave_the_broker_unaffected() {
    let mut b = sasl_broker(&[]);
    // ApiVersions is served before authentication; Metadata is not.
    let mut c = b.client();
    assert!(matches!(
        c.call(&Request::ApiVersions),
        Response::ApiVersions(_)
    ));
    let r = c.call(&Request::Metadata(MetadataRequest::default()));
    assert_eq!(r, Response::Error(ErrorCode::IllegalSaslState));
    assert!(c.is_closed_by_peer(), "closed after the answer");
    // A produce first: refused, nothing appended, closed.
    let mut c = b.client();
    let produce = RawClient::produce_request("early", 0, batch_of(&[b"x"]), Acks::Leader);
    assert_eq!(
        c.call(&produce),
        Response::Error(ErrorCode::IllegalSaslState)
    );
    assert!(c.is_closed_by_peer());
    // SaslAuthenticate without a handshake.
    let mut c = b.client();
    let r = authenticate(&mut c, encode_plain(ADMIN.0, ADMIN.1));
    assert_eq!(r.error, ErrorCode::IllegalSaslState);
    assert!(c.is_closed_by_peer());
    // A second handshake after logging in.
    let mut c = login(&b, ADMIN);
    assert_eq!(
        c.call(&Request::SaslHandshake(SaslHandshakeRequest {
            mechanism: "SCRAM-SHA-256".into()
        })),
        Response::Error(ErrorCode::IllegalSaslState)
    );
    assert!(c.is_closed_by_peer());
    // Exchanges cut: after the handshake; after client-first (server-first
    // answered, client-final never sent); after client-first sent but not
    // read; mid-frame.
    {
        let mut c = b.client();
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256").error, ErrorCode::None);
    }
    {
        let mut c = b.client();
        assert_eq!(handshake(&mut c, "SCRAM-SHA-512").error, ErrorCode::None);
        let mut client = ScramClient::new(ScramMechanism::Sha512, ADMIN.0, ADMIN.1);
        assert_eq!(authenticate(&mut c, client.first()).error, ErrorCode::None);
    }
    {
        let mut c = b.client();
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256").error, ErrorCode::None);
        let mut client = ScramClient::new(ScramMechanism::Sha256, ADMIN.0, ADMIN.1);
        c.send(&Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: Bytes::from(client.first()),
        }));
    }
    {
        let mut c = b.client();
        let mut frame = bytes::BytesMut::new();
        wire::encode_request(
            1,
            "cut",
            &Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "SCRAM-SHA-256".into(),
            }),
            &mut frame,
        );
        c.send_raw(&frame[..frame.len() / 2]).unwrap();
    }
    // The broker goes on: it serves a full login and a produce.
    let mut c = login(&b, ADMIN);
    assert_eq!(c.create_topic("after", 1, &[]), ErrorCode::None);
    let r = c.call(&RawClient::produce_request(
        "after",
        0,
        batch_of(&[b"v"]),
        Acks::Leader,
    ));
    let Response::Produce(p) = r else {
        panic!("{r:?}")
    };
    assert_eq!(p.topics[0].partitions[0].error, ErrorCode::None);
    assert!(b.is_running());
    // Nothing of the refused produce was applied.
    let md = match c.call(&Request::Metadata(MetadataRequest {
        topics: vec!["early".into()],
    })) {
        Response::Metadata(m) => m,
        other => panic!("{other:?}"),
    };
    assert_eq!(md.topics[0].error, ErrorCode::UnknownTopicOrPartition);
    assert!(b.log().contains("before SASL authentication"), "logged");
}

// ------------------------------------------------------------------ 3: a flood

/// One failed SCRAM login on a new connection; how long its answer took.
fn failed_login(addr: SocketAddr, user: &str) -> Duration {
    let mut c = RawClient::connect(addr);
    let started = Instant::now();
    let r = scram_login(&mut c, ScramMechanism::Sha256, user, "not-the-password");
    let took = started.elapsed();
    assert_eq!(r.map_err(|e| e.0), Err(ErrorCode::SaslAuthenticationFailed));
    assert!(c.is_closed_by_peer(), "closed after a failed login");
    took
}

#[test]
fn a_flood_of_failed_logins_is_slowed_counted_and_others_still_work() {
    let b = sasl_broker(&["--auth-failure-delay-ms", "100"]);
    {
        let mut admin = login(&b, ADMIN);
        assert_eq!(admin.create_topic("flood", 1, &[]), ErrorCode::None);
    }
    let addr = b.addr;
    let started = Instant::now();
    let workers: Vec<_> = (0..25)
        .map(|w| {
            std::thread::spawn(move || {
                let user = if w % 2 == 0 { ADMIN.0 } else { "nobody" };
                (0..2).map(|_| failed_login(addr, user)).collect::<Vec<_>>()
            })
        })
        .collect();
    // Meanwhile a legitimate client from the same address logs in and produces.
    let mut quick = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the flood ran on"
        );
        let t = Instant::now();
        let mut c = login(&b, ADMIN);
        let r = c.call(&RawClient::produce_request(
            "flood",
            0,
            batch_of(&[b"ok"]),
            Acks::Leader,
        ));
        assert!(matches!(r, Response::Produce(_)), "{r:?}");
        quick.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut took: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a flood worker"))
        .collect();
    took.sort();
    let first: Duration = took[..5].iter().sum();
    let last: Duration = took[45..].iter().sum();
    // 100 ms doubling to 5 s per further failure from the address: the
    // slowest failures wait far longer than the quickest.
    assert!(
        last >= first + Duration::from_secs(1),
        "later failures not slowed: {took:?}"
    );
    assert!(took[0] < Duration::from_secs(2), "{took:?}");
    assert!(
        quick.len() >= 3,
        "the legitimate client ran during the flood"
    );
    let slowest = quick.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(3),
        "the legitimate client was held up: {quick:?}"
    );
    assert_eq!(metric(&b, "sluice_auth_failures_total"), 50);
    let logged = b
        .log()
        .lines()
        .filter(|l| l.contains("authentication failed") && l.contains("peer=127.0.0.1"))
        .count();
    assert!(logged >= 50, "each failure logged with its peer ({logged})");
}

// ------------------------------------------------------------------ 4: ACLs over every api

/// What a principal without ACLs gets for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// This header-level code.
    With(ErrorCode),
    /// Served, but trimmed to nothing the principal may not describe.
    Filtered,
    /// Needs nothing (ApiVersions, the SASL apis).
    Free,
}

/// One api's request, its refusal, and the ACLs that let it through.
struct Case {
    request: Request,
    refused: Refused,
    grants: Vec<AclBinding>,
}

fn allow(rt: ResourceType, name: &str, op: Operation) -> AclBinding {
    AclBinding {
        resource_type: rt,
        name: name.into(),
        pattern: PatternType::Literal,
        principal: "User:mallory".into(),
        host: "*".into(),
        operation: op,
        permission: Permission::Allow,
    }
}

fn topic(name: &str, op: Operation) -> AclBinding {
    allow(ResourceType::Topic, name, op)
}

fn group(name: &str, op: Operation) -> AclBinding {
    allow(ResourceType::Group, name, op)
}

fn cluster(op: Operation) -> AclBinding {
    allow(ResourceType::Cluster, "kafka-cluster", op)
}

/// The case of every api key: an exhaustive match, so a new key fails to
/// compile here until its refusal and grant are written down.
fn case(key: ApiKey) -> Case {
    use ErrorCode::{
        ClusterAuthorizationFailed as C, GroupAuthorizationFailed as G,
        TopicAuthorizationFailed as T,
    };
    use Operation as Op;
    let c = |request, code, grants| Case {
        request,
        refused: Refused::With(code),
        grants,
    };
    match key {
        ApiKey::ApiVersions => Case {
            request: Request::ApiVersions,
            refused: Refused::Free,
            grants: vec![],
        },
        ApiKey::SaslHandshake => Case {
            request: Request::SaslHandshake(SaslHandshakeRequest {
                mechanism: "SCRAM-SHA-256".into(),
            }),
            refused: Refused::Free,
            grants: vec![],
        },
        ApiKey::SaslAuthenticate => Case {
            request: Request::SaslAuthenticate(SaslAuthenticateRequest {
                auth_bytes: Bytes::new(),
            }),
            refused: Refused::Free,
            grants: vec![],
        },
        ApiKey::Metadata => Case {
            request: Request::Metadata(MetadataRequest::default()),
            refused: Refused::Filtered,
            grants: vec![topic("t", Op::Describe)],
        },
        ApiKey::ListGroups => Case {
            request: Request::ListGroups,
            refused: Refused::Filtered,
            grants: vec![group("g", Op::Describe)],
        },
        ApiKey::CreateTopics => c(
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![CreateTopic {
                    name: "new-topic".into(),
                    partitions: 1,
                    replication_factor: DEFAULT_REPLICATION_FACTOR,
                    configs: vec![],
                }],
            }),
            T,
            vec![topic("new-topic", Op::Create)],
        ),
        ApiKey::DeleteTopics => c(
            Request::DeleteTopics(DeleteTopicsRequest {
                topics: vec!["del-me".into()],
            }),
            T,
            vec![topic("del-me", Op::Delete)],
        ),
        ApiKey::Produce => c(
            RawClient::produce_request("t", 0, batch_of(&[b"mallory"]), Acks::Leader),
            T,
            vec![topic("t", Op::Write)],
        ),
        ApiKey::Fetch => c(
            RawClient::fetch_request("t", 0, 0, 0, 0),
            T,
            vec![topic("t", Op::Read)],
        ),
        ApiKey::ListOffsets => c(
            Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: "t".into(),
                    partitions: vec![ListOffsetsPartition {
                        partition: 0,
                        spec: OffsetSpec::Latest,
                    }],
                }],
            }),
            T,
            vec![topic("t", Op::Describe)],
        ),
        ApiKey::JoinGroup => c(
            Request::JoinGroup(JoinGroupRequest {
                group_id: "g-join".into(),
                member_id: String::new(),
                topics: vec!["t".into()],
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 0,
                metadata: Bytes::new(),
            }),
            G,
            vec![group("g-join", Op::Read), topic("t", Op::Describe)],
        ),
        ApiKey::Heartbeat => c(
            Request::Heartbeat(HeartbeatRequest {
                group_id: "g-join".into(),
                member_id: "nobody".into(),
                generation: 1,
                owned: vec![],
                max_wait_ms: 0,
            }),
            G,
            vec![group("g-join", Op::Read)],
        ),
        ApiKey::LeaveGroup => c(
            Request::LeaveGroup(LeaveGroupRequest {
                group_id: "g-join".into(),
                member_id: "nobody".into(),
            }),
            G,
            vec![group("g-join", Op::Read)],
        ),
        ApiKey::OffsetCommit => c(
            commit("g", 99),
            G,
            vec![group("g", Op::Read), topic("t", Op::Read)],
        ),
        ApiKey::OffsetFetch => c(
            Request::OffsetFetch(OffsetFetchRequest {
                group_id: "g".into(),
                topics: vec![TopicPartitions::new("t", vec![0])],
            }),
            G,
            vec![group("g", Op::Describe), topic("t", Op::Describe)],
        ),
        ApiKey::DescribeGroups => c(
            Request::DescribeGroups(DescribeGroupsRequest {
                group_ids: vec!["g".into()],
            }),
            G,
            vec![group("g", Op::Describe)],
        ),
        ApiKey::DeleteGroups => c(
            Request::DeleteGroups(DeleteGroupsRequest {
                group_ids: vec!["old-group".into()],
            }),
            G,
            vec![group("old-group", Op::Delete)],
        ),
        ApiKey::InitProducerId => c(
            Request::InitProducerId,
            C,
            vec![cluster(Op::IdempotentWrite)],
        ),
        ApiKey::DescribeCluster => c(Request::DescribeCluster, C, vec![cluster(Op::Describe)]),
        ApiKey::FindCoordinator => c(
            Request::FindCoordinator(FindCoordinatorRequest {
                group_id: "g".into(),
            }),
            G,
            vec![group("g", Op::Describe)],
        ),
        ApiKey::CreatePartitions => c(
            Request::CreatePartitions(CreatePartitionsRequest {
                topics: vec![CreatePartitionsTopic {
                    name: "grow".into(),
                    count: 3,
                }],
            }),
            T,
            vec![topic("grow", Op::Alter)],
        ),
        ApiKey::AlterConfigs => c(
            Request::AlterConfigs(AlterConfigsRequest {
                topics: vec![AlterConfigsTopic {
                    name: "conf".into(),
                    changes: vec![ConfigChange::set("retention.ms", "12345")],
                }],
            }),
            T,
            vec![topic("conf", Op::AlterConfigs)],
        ),
        ApiKey::ReplicaFetch => c(
            Request::ReplicaFetch(ReplicaFetchRequest {
                replica_id: 7,
                max_wait_ms: 0,
                max_bytes: 1 << 20,
                partitions: vec![],
            }),
            C,
            vec![cluster(Op::ClusterAction)],
        ),
        ApiKey::ReassignPartitions => c(
            Request::ReassignPartitions(ReassignPartitionsRequest {
                action: ReassignAction::Rebalance,
                node_id: 0,
                moves: vec![],
            }),
            C,
            vec![cluster(Op::Alter)],
        ),
        ApiKey::AlterUserScramCredentials => c(
            Request::AlterUserScramCredentials(AlterUserScramCredentialsRequest {
                upsertions: vec![],
                deletions: vec![ScramDeletion {
                    user: "victim".into(),
                    mechanism: None,
                }],
            }),
            C,
            vec![cluster(Op::Alter)],
        ),
        ApiKey::DescribeUsers => c(
            Request::DescribeUsers(DescribeUsersRequest::default()),
            C,
            vec![cluster(Op::Describe)],
        ),
        ApiKey::CreateAcls => c(
            Request::CreateAcls(CreateAclsRequest {
                creations: vec![AclEntry {
                    resource_type: 2,
                    resource_name: "*".into(),
                    pattern_type: 3,
                    principal: "User:mallory".into(),
                    host: "*".into(),
                    operation: 2,
                    permission: 3,
                }],
            }),
            C,
            vec![cluster(Op::Alter)],
        ),
        ApiKey::DescribeAcls => c(
            Request::DescribeAcls(DescribeAclsRequest {
                filter: AclFilterEntry::any(),
            }),
            C,
            vec![cluster(Op::Describe)],
        ),
        ApiKey::DeleteAcls => c(
            Request::DeleteAcls(DeleteAclsRequest {
                filters: vec![AclFilterEntry {
                    principal: Some("User:someone".into()),
                    ..AclFilterEntry::any()
                }],
            }),
            C,
            vec![cluster(Op::Alter)],
        ),
        ApiKey::AlterQuotas => c(
            Request::AlterQuotas(AlterQuotasRequest {
                entries: vec![QuotaEntry {
                    entity: QuotaEntityKey {
                        user: Some(QuotaEntityName::Named("mallory".into())),
                        client_id: None,
                    },
                    rates: QuotaRates {
                        request_rate: Some(1e9),
                        ..QuotaRates::default()
                    },
                }],
            }),
            C,
            vec![cluster(Op::AlterConfigs)],
        ),
        ApiKey::DescribeQuotas => c(
            Request::DescribeQuotas,
            C,
            vec![cluster(Op::DescribeConfigs)],
        ),
    }
}

fn commit(group: &str, offset: i64) -> Request {
    Request::OffsetCommit(OffsetCommitRequest {
        group_id: group.into(),
        member_id: String::new(),
        generation: 0,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset,
                metadata: String::new(),
            }],
        }],
    })
}

/// A topic as the admin sees it: partition count, end offsets, configs.
type TopicState = (usize, Vec<u64>, Vec<(String, String)>);
/// A group's committed offsets by topic: (partition, offset).
type GroupOffsets = Vec<(String, Vec<(u32, i64)>)>;

/// Everything a refused request could have changed, as the admin sees it.
#[derive(Debug, PartialEq)]
struct View {
    topics: BTreeMap<String, TopicState>,
    groups: Vec<String>,
    offsets: Vec<(String, GroupOffsets)>,
    users: Vec<String>,
    acls: Vec<AclEntry>,
    quotas: Vec<QuotaEntry>,
}

fn view(admin: &mut RawClient) -> View {
    let Response::Metadata(md) = admin.call(&Request::Metadata(MetadataRequest::default())) else {
        panic!("metadata")
    };
    let topics = md
        .topics
        .into_iter()
        .map(|t| {
            let ends = t.partitions.iter().map(|p| p.end_offset).collect();
            (t.name, (t.partitions.len(), ends, t.configs))
        })
        .collect();
    let Response::ListGroups(lg) = admin.call(&Request::ListGroups) else {
        panic!("list groups")
    };
    let mut groups: Vec<String> = lg.groups.into_iter().map(|g| g.group_id).collect();
    groups.sort();
    let offsets = ["g", "old-group", "g-join"]
        .iter()
        .map(|g| {
            let Response::OffsetFetch(o) = admin.call(&Request::OffsetFetch(OffsetFetchRequest {
                group_id: g.to_string(),
                topics: vec![],
            })) else {
                panic!("offset fetch")
            };
            let per_topic = o
                .topics
                .into_iter()
                .map(|t| {
                    let parts = t
                        .partitions
                        .iter()
                        .map(|p| (p.partition, p.offset))
                        .collect();
                    (t.name, parts)
                })
                .collect();
            (g.to_string(), per_topic)
        })
        .collect();
    let Response::DescribeUsers(u) =
        admin.call(&Request::DescribeUsers(DescribeUsersRequest::default()))
    else {
        panic!("describe users")
    };
    let Response::DescribeAcls(a) = admin.call(&Request::DescribeAcls(DescribeAclsRequest {
        filter: AclFilterEntry::any(),
    })) else {
        panic!("describe acls")
    };
    let Response::DescribeQuotas(q) = admin.call(&Request::DescribeQuotas) else {
        panic!("describe quotas")
    };
    View {
        topics,
        groups,
        offsets,
        users: u.users.into_iter().map(|u| u.user).collect(),
        acls: a.acls,
        quotas: q.entries,
    }
}

/// The authorization code of a response, if it is a refusal.
fn refusal(r: &Response) -> Option<ErrorCode> {
    match r {
        Response::Error(
            c @ (ErrorCode::TopicAuthorizationFailed
            | ErrorCode::GroupAuthorizationFailed
            | ErrorCode::ClusterAuthorizationFailed),
        ) => Some(*c),
        _ => None,
    }
}

fn grant(admin: &mut RawClient, bindings: &[AclBinding]) {
    let creations = bindings
        .iter()
        .map(|b| AclEntry {
            resource_type: b.resource_type.to_i8() as u8,
            resource_name: b.name.clone(),
            pattern_type: b.pattern.to_i8() as u8,
            principal: b.principal.clone(),
            host: b.host.clone(),
            operation: b.operation.to_i8() as u8,
            permission: b.permission.to_i8() as u8,
        })
        .collect();
    let Response::CreateAcls(r) = admin.call(&Request::CreateAcls(CreateAclsRequest { creations }))
    else {
        panic!("create acls")
    };
    assert!(
        r.results.iter().all(|x| x.error == ErrorCode::None),
        "{r:?}"
    );
}

/// Sends `req` on `c` and returns its answer; a produce with acks leader
/// and every other request here are answered.
fn ask(c: &mut RawClient, req: &Request) -> Response {
    c.call(req)
}

#[test]
fn every_native_api_is_refused_without_acls_and_served_with_them() {
    let b = sasl_broker(&["--authorization", "true"]);
    let mut admin = login(&b, ADMIN);
    // The world mallory pokes at.
    for (name, parts) in [
        ("t", 1),
        ("secret", 1),
        ("del-me", 1),
        ("grow", 1),
        ("conf", 1),
    ] {
        assert_eq!(
            admin.create_topic(name, parts, &[]),
            ErrorCode::None,
            "{name}"
        );
    }
    let r = ask(
        &mut admin,
        &RawClient::produce_request("t", 0, batch_of(&[b"a", b"b"]), Acks::Leader),
    );
    assert!(matches!(r, Response::Produce(_)));
    for (g, offset) in [("g", 1), ("old-group", 2)] {
        let Response::OffsetCommit(r) = ask(&mut admin, &commit(g, offset)) else {
            panic!("commit")
        };
        assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None);
    }
    let rt = runtime();
    rt.block_on(async {
        let a = admin_of(b.addr).await;
        for u in ["mallory", "victim"] {
            a.upsert_user(u, "pw-of-user", &ScramMechanismType::ALL, 4096)
                .await
                .unwrap();
        }
        a.create_acls(&[AclBinding {
            principal: "User:someone".into(),
            ..topic("secret", Operation::Read)
        }])
        .await
        .unwrap();
        a.alter_quota(
            &sluice_client::QuotaEntity {
                user: Some(sluice_client::EntityName::Named("someone".into())),
                client_id: None,
            },
            sluice_client::QuotaValues {
                producer_byte_rate: Some(1e9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    });
    let before = view(&mut admin);
    let mut mallory = login(&b, ("mallory", "pw-of-user"));

    // 1. No ACLs: every api refused (or trimmed), nothing applied.
    for key in ApiKey::ALL {
        let case = case(*key);
        assert_eq!(case.request.api_key(), *key);
        match case.refused {
            Refused::Free => {
                // Needs nothing; the SASL apis are exercised by their own
                // tests (a second handshake closes the connection).
                if *key == ApiKey::ApiVersions {
                    assert!(matches!(
                        ask(&mut mallory, &case.request),
                        Response::ApiVersions(_)
                    ));
                } else {
                    let mut fresh = b.client();
                    let r = ask(&mut fresh, &case.request);
                    assert!(refusal(&r).is_none(), "{key}: {r:?}");
                }
            }
            Refused::With(code) => {
                let r = ask(&mut mallory, &case.request);
                assert_eq!(r, Response::Error(code), "{key}");
            }
            Refused::Filtered => match ask(&mut mallory, &case.request) {
                Response::Metadata(m) => assert!(m.topics.is_empty(), "{key}: {m:?}"),
                Response::ListGroups(l) => assert!(l.groups.is_empty(), "{key}: {l:?}"),
                other => panic!("{key}: {other:?}"),
            },
        }
    }
    // A named topic mallory may not describe.
    let Response::Metadata(m) = ask(
        &mut mallory,
        &Request::Metadata(MetadataRequest {
            topics: vec!["t".into()],
        }),
    ) else {
        panic!("metadata")
    };
    assert_eq!(m.topics[0].error, ErrorCode::TopicAuthorizationFailed);
    assert!(m.topics[0].partitions.is_empty());
    // A produce that would auto-create a topic.
    let r = ask(
        &mut mallory,
        &RawClient::produce_request("auto-made", 0, batch_of(&[b"x"]), Acks::Leader),
    );
    assert_eq!(r, Response::Error(ErrorCode::TopicAuthorizationFailed));
    assert_eq!(
        view(&mut admin),
        before,
        "a refused request changed something"
    );

    // 2. With the ACL each needs, the same request is served.
    for key in ApiKey::ALL {
        let case = case(*key);
        if case.refused == Refused::Free {
            continue;
        }
        grant(&mut admin, &case.grants);
        let r = ask(&mut mallory, &case.request);
        assert!(refusal(&r).is_none(), "{key} still refused: {r:?}");
        match (&r, key) {
            (Response::Metadata(m), _) => {
                let names: Vec<&str> = m.topics.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, ["t"], "Metadata shows only what may be described");
            }
            (Response::ListGroups(l), _) => {
                // g and the g-join mallory joined (READ implies DESCRIBE), not old-group.
                let names: Vec<&str> = l.groups.iter().map(|g| g.group_id.as_str()).collect();
                assert!(
                    names.contains(&"g") && !names.contains(&"old-group"),
                    "{names:?}"
                );
            }
            (Response::Produce(p), _) => {
                assert_eq!(p.topics[0].partitions[0].error, ErrorCode::None)
            }
            (Response::Fetch(f), _) => assert_eq!(
                f.topics[0].partitions[0].error,
                ErrorCode::None,
                "fetch served"
            ),
            (Response::CreateTopics(t), _) => assert_eq!(t.topics[0].error, ErrorCode::None),
            (Response::DeleteTopics(t), _) => assert_eq!(t.topics[0].error, ErrorCode::None),
            (Response::DeleteGroups(g), _) => assert_eq!(g.groups[0].error, ErrorCode::None),
            (Response::CreatePartitions(t), _) => assert_eq!(t.topics[0].error, ErrorCode::None),
            (Response::AlterConfigs(t), _) => assert_eq!(t.topics[0].error, ErrorCode::None),
            (Response::AlterUserScramCredentials(u), _) => {
                assert_eq!(u.results[0].error, ErrorCode::None)
            }
            _ => {}
        }
    }
    let after = view(&mut admin);
    assert!(!after.topics.contains_key("del-me"), "deleted once allowed");
    assert!(
        after.topics.contains_key("new-topic"),
        "created once allowed"
    );
    assert_eq!(after.topics["grow"].0, 3, "grown once allowed");
    assert!(!after.users.contains(&"victim".to_string()));

    // 3. DENY wins over ALLOW.
    grant(
        &mut admin,
        &[AclBinding {
            permission: Permission::Deny,
            ..topic("t", Operation::Read)
        }],
    );
    let fetch = RawClient::fetch_request("t", 0, 0, 0, 0);
    assert_eq!(
        ask(&mut mallory, &fetch),
        Response::Error(ErrorCode::TopicAuthorizationFailed)
    );

    // 4. A super user (the bootstrap admin) needs no ACL for any api.
    for key in ApiKey::ALL {
        let case = case(*key);
        if case.refused == Refused::Free {
            continue;
        }
        let r = ask(&mut admin, &case.request);
        assert!(refusal(&r).is_none(), "super user refused {key}: {r:?}");
        if let Response::Metadata(m) = &r {
            assert!(m.topics.iter().any(|t| t.name == "secret"));
        }
    }
    assert!(b.log().contains("refused by ACLs"));
}

// ------------------------------------------------------------------ 5: quotas

#[test]
fn a_user_over_its_request_quota_is_slowed_and_another_is_not() {
    let b = sasl_broker(&[]);
    let rt = runtime();
    rt.block_on(async {
        let a = admin_of(b.addr).await;
        for u in ["slow", "fast"] {
            a.upsert_user(u, "pw-of-user", &ScramMechanismType::ALL, 4096)
                .await
                .unwrap();
        }
        a.alter_quota(
            &sluice_client::QuotaEntity {
                user: Some(sluice_client::EntityName::Named("slow".into())),
                client_id: None,
            },
            sluice_client::QuotaValues {
                request_rate: Some(10.0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    });
    let time = |user: &str| {
        let mut c = login(&b, (user, "pw-of-user"));
        let t = Instant::now();
        for _ in 0..40 {
            assert!(matches!(
                c.call(&Request::ApiVersions),
                Response::ApiVersions(_)
            ));
        }
        t.elapsed()
    };
    let fast = time("fast");
    let slow = time("slow");
    // 40 requests at 10 per second (a 1 s burst allowed): about 3 s muted.
    assert!(
        slow >= Duration::from_millis(1500),
        "not throttled: {slow:?}"
    );
    assert!(
        fast < Duration::from_secs(1),
        "the other user was slowed: {fast:?}"
    );
    let (_, body) = http_get(b.http_addr, "/metrics");
    assert!(
        body.contains("sluice_quota_throttle_ms_total{kind=\"request\"}"),
        "throttling counted"
    );
}

// ------------------------------------------------------------------ 6: the CLI, across a SIGKILL

#[test]
fn cli_users_acls_and_quotas_round_trip_and_survive_a_kill() {
    let mut b = sasl_broker(&["--authorization", "true"]);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("bob.pw");
    std::fs::write(&pw, "b0b-secret\n").unwrap();
    let ok = |o: Output| -> String {
        assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
        stdout(&o)
    };
    ok(admin_cli(
        &b,
        &[
            "user",
            "create",
            "bob",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    ));
    ok(admin_cli(
        &b,
        &[
            "user",
            "create",
            "carol",
            "--password",
            "c4rol",
            "--mechanism",
            "scram-sha-512",
            "--iterations",
            "8192",
        ],
    ));
    ok(admin_cli(&b, &["topic", "create", "orders-eu"]));
    ok(admin_cli(
        &b,
        &[
            "acl",
            "add",
            "--allow",
            "--principal",
            "User:bob",
            "--operation",
            "read,describe",
            "--topic",
            "orders-",
            "--prefixed",
        ],
    ));
    ok(admin_cli(
        &b,
        &[
            "acl",
            "add",
            "--deny",
            "--principal",
            "User:bob",
            "--operation",
            "write",
            "--cluster",
        ],
    ));
    ok(admin_cli(
        &b,
        &[
            "quota",
            "set",
            "--user",
            "bob",
            "--producer-byte-rate",
            "1048576",
        ],
    ));
    ok(admin_cli(
        &b,
        &["quota", "set", "--user", "bob", "--request-rate", "500"],
    ));
    ok(admin_cli(
        &b,
        &[
            "quota",
            "set",
            "--client-default",
            "--consumer-byte-rate",
            "2097152",
        ],
    ));
    let check = |b: &TestBroker| {
        let users = ok(admin_cli(b, &["user", "list"]));
        assert!(
            users.contains("bob")
                && users.contains("SCRAM-SHA-256")
                && users.contains("SCRAM-SHA-512"),
            "{users}"
        );
        assert!(users.contains("iterations=8192"), "{users}");
        let acls = ok(admin_cli(b, &["acl", "list"]));
        assert!(
            acls.contains("User:bob") && acls.contains("PREFIXED") && acls.contains("DENY"),
            "{acls}"
        );
        let listed: serde_json::Value = serde_json::from_str(&ok(admin_cli(
            b,
            &["acl", "list", "--topic", "orders-eu", "--json"],
        )))
        .unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
        let quotas = ok(admin_cli(b, &["quota", "list"]));
        assert!(
            quotas.contains("user=bob") && quotas.contains("1048576") && quotas.contains("500"),
            "{quotas}"
        );
        assert!(
            quotas.contains("client-id=<default>") && quotas.contains("2097152"),
            "{quotas}"
        );
        // Bob logs in and sees what his ACLs allow.
        let topics = ok(cli_as(
            b,
            "bob",
            &["--password-file", pw.to_str().unwrap()],
            &["topic", "list"],
        ));
        assert!(topics.contains("orders-eu"), "{topics}");
    };
    check(&b);
    b.kill();
    b.restart();
    check(&b);
    // Removal.
    let removed = ok(admin_cli(
        &b,
        &["acl", "remove", "--principal", "User:bob", "--deny"],
    ));
    assert!(removed.contains("removed 1"), "{removed}");
    ok(admin_cli(&b, &["quota", "remove", "--user", "bob"]));
    ok(admin_cli(&b, &["user", "delete", "bob"]));
    let users = ok(admin_cli(&b, &["user", "list"]));
    assert!(!users.contains("bob") && users.contains("carol"), "{users}");
    let quotas = ok(admin_cli(&b, &["quota", "list"]));
    assert!(!quotas.contains("user=bob"), "{quotas}");
    let out = cli_as(
        &b,
        "bob",
        &["--password-file", pw.to_str().unwrap()],
        &["topic", "list"],
    );
    assert!(
        stderr(&out).contains("authentication failed for user bob"),
        "{}",
        stderr(&out)
    );
    let out = admin_cli(&b, &["user", "delete", "bob"]);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

// ------------------------------------------------------------------ 7: SASL inside TLS

/// On `sasl_ssl` the login runs inside the TLS session, so PLAIN is
/// accepted without `sasl_plain_without_tls`; the client and the CLI do
/// TLS, then SASL, on every connection.
#[test]
fn plain_and_scram_inside_tls_with_the_client_and_the_cli() {
    use sluice_client::ClientTls;
    use sluice_tls::testing::Pki;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let leaf = pki.server("broker", "broker");
    let (cert, key) = (leaf.cert.to_str().unwrap(), leaf.key.to_str().unwrap());
    let b = TestBroker::start_with(&[
        "--native-security",
        "sasl_ssl",
        "--admin-user",
        ADMIN.0,
        "--admin-password",
        ADMIN.1,
        "--tls-cert-file",
        cert,
        "--tls-key-file",
        key,
    ]);
    let tls = ClientTls::from_files(&pki.ca_file, None).unwrap();
    let rt = runtime();
    rt.block_on(async {
        for m in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
            let cfg = ClientConfig {
                tls: Some(tls.clone()),
                ..config(b.addr, m, ADMIN)
            };
            let admin = Admin::with_config(cfg.clone())
                .await
                .unwrap_or_else(|e| panic!("{m}: {e}"));
            let name = format!("tls-{}", m.name().to_lowercase());
            admin.create_topic(&name, 1, vec![]).await.unwrap();
            let producer = Producer::with_config(cfg, ProducerConfig::default());
            producer.send(Record::new(name.clone(), "v")).await.unwrap();
            producer.close().await;
        }
        let wrong = ClientConfig {
            tls: Some(tls.clone()),
            ..config(b.addr, SaslMechanism::Plain, (ADMIN.0, "nope"))
        };
        let e = Admin::with_config(wrong).await.err().expect("refused");
        assert!(matches!(e, ClientError::Authentication { .. }), "{e:?}");
    });
    let out = sluice_cli(&b.addr.to_string())
        .env("SLUICE_USERNAME", ADMIN.0)
        .env("SLUICE_PASSWORD", ADMIN.1)
        .args(["--ca-file", pki.ca_file.to_str().unwrap()])
        .args(["--sasl-mechanism", "plain", "topic", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tls-plain"), "{}", stdout(&out));
}
