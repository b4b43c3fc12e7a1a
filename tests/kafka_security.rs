//! The Kafka listener's security, proved with real Kafka clients and raw
//! frames against real `sluiced` processes (loopback ports, temp data dirs,
//! certificates made at test time by `sluice_tls::testing`, never checked in).
//!
//! - **SASL with each client** (kcat, confluent-kafka, kafka-python,
//!   kafkajs; pinned, installed by `tests/kafka/setup.sh`): SCRAM-SHA-256
//!   and SCRAM-SHA-512 over `sasl_plaintext`, SCRAM-SHA-256 and PLAIN over
//!   `sasl_ssl`, and PLAIN over `sasl_plaintext` where
//!   `sasl_plain_without_tls` allows it. Each produces records (binary keys,
//!   a null value, headers, timestamps) as a user created through Kafka's
//!   AlterUserScramCredentials, reads them back and compares them byte for
//!   byte. The client programs are `tests/kafka/security_client.{py,js}`.
//! - **Refusals with each client**: a wrong password, an unknown user (over
//!   both listeners) and PLAIN without TLS: the client reports an
//!   authentication error, the broker logs the peer address and the user,
//!   and `/metrics` counts `sluice_auth_failures_total`.
//! - **Misbehaving peers**: plaintext Kafka on a SASL port (ApiVersions is
//!   answered, Metadata closes the connection) and on a TLS port; SASL
//!   exchanges cut at every step; a flood of 50 failed SCRAM logins from
//!   one address, whose later failures are answered ever more slowly while
//!   a legitimate client goes on at full speed.
//! - **ACLs over every served api**: for each entry of
//!   [`sluice_kafka::SERVED`] (the SASL apis and ApiVersions excepted, see
//!   [`acl_expectation`]), in every served version, a principal without
//!   ACLs gets Kafka's refusal code (Metadata and ListGroups: filtered;
//!   Metadata by topic id: refused without the name) and nothing it sent
//!   is applied (the admin's view of topics, offsets, commits, groups,
//!   configs, ACLs, users and quotas is the same before and after); with
//!   ACLs (granted through CreateAcls as the admin) the same requests are
//!   served and applied; DescribeAcls lists them, DeleteAcls
//!   removes them, DENY wins over ALLOW, prefixed ACLs stop at their
//!   prefix (Metadata, ListGroups and an all-topics OffsetFetch show only
//!   what may be described), and a super user needs no ACL.
//!
//! Quotas are not here: `crates/sluiced/tests/kafka_quotas.rs` covers them
//! through AlterClientQuotas.
//!
//! Every client run, socket read and loop is bounded.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::process::{output_within, text};
use common::{bin_path, http_get};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde_json::Value;
use sluice_auth::scram::{ScramClient, ScramMechanism};
use sluice_protocol::batch::RecordBatchBuilder;
use uuid::Uuid;

/// Bound on one client program (each also has its own watchdog).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on one socket read of the raw client.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// The bootstrap admin of every broker here.
const ADMIN: (&str, &str) = ("admin", "admin-Secret");
/// The user the clients log in as (created through AlterUserScramCredentials);
/// the password has the characters SCRAM escapes in names, to show it does
/// not in passwords.
const USER: (&str, &str) = ("carol", "c4rol,pw=x!");
/// Records each client writes and reads back.
const RECORDS: usize = 50;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kafka_dir() -> PathBuf {
    repo().join("tests/kafka")
}

/// Runs `tests/kafka/setup.sh` once per test binary (the clients, pinned).
fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let done = SETUP.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(kafka_dir().join("setup.sh"));
        let out = output_within(cmd, None, Duration::from_secs(600));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/kafka/setup.sh could not install the Kafka clients ({}):\n{}{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    });
    if let Err(e) = done {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------- the broker

/// How to start a broker.
#[derive(Clone, Debug)]
struct Opts {
    /// `kafka_security`: `sasl_plaintext`, `sasl_ssl`, `plaintext`, `ssl`.
    kafka_security: &'static str,
    authorization: bool,
    plain_without_tls: bool,
    super_users: Option<&'static str>,
    failure_delay_ms: u64,
}

impl Opts {
    fn sasl_plaintext() -> Opts {
        Opts {
            kafka_security: "sasl_plaintext",
            authorization: false,
            plain_without_tls: false,
            super_users: None,
            failure_delay_ms: 10,
        }
    }

    fn sasl_ssl() -> Opts {
        Opts {
            kafka_security: "sasl_ssl",
            ..Opts::sasl_plaintext()
        }
    }
}

/// A `sluiced` with its Kafka listener under `opts`, SIGKILLed on drop.
struct Broker {
    child: Child,
    kafka: SocketAddr,
    http: SocketAddr,
    /// The CA that signed the broker's certificate (TLS listeners).
    ca: Option<PathBuf>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(opts: &Opts) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("broker log");
        let mut cmd = Command::new(bin_path("sluiced"));
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "127.0.0.1:0"])
            .args(["--group-initial-rebalance-delay-ms", "100"])
            .args(["--kafka-security", opts.kafka_security])
            .args(["--admin-user", ADMIN.0, "--admin-password", ADMIN.1])
            .arg("--authorization")
            .arg(opts.authorization.to_string())
            .arg("--sasl-plain-without-tls")
            .arg(opts.plain_without_tls.to_string())
            .arg("--auth-failure-delay-ms")
            .arg(opts.failure_delay_ms.to_string());
        if let Some(s) = opts.super_users {
            cmd.args(["--super-users", s]);
        }
        let mut ca = None;
        if opts.kafka_security.ends_with("ssl") {
            let pki = sluice_tls::testing::Pki::new(dir.path(), "kafka-security");
            let server = pki.server("broker", "broker");
            cmd.arg("--tls-cert-file")
                .arg(&server.cert)
                .arg("--tls-key-file")
                .arg(&server.key);
            ca = Some(pki.ca_file.clone());
        }
        let mut child = cmd
            .env_remove("SLUICE_CONFIG")
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluiced");
        let stdout = child.stdout.take().expect("stdout");
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
        let (Some(kafka), Some(http)) = (field("kafka="), field("http=")) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluiced did not start (first line {line:?}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        };
        Broker {
            child,
            kafka,
            http,
            ca,
            log_path,
            _dir: dir,
        }
    }

    fn boot(&self) -> String {
        self.kafka.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A counter or gauge of `/metrics` (0 when absent).
    fn metric(&self, name: &str) -> u64 {
        let (status, body) = http_get(self.http, "/metrics");
        assert_eq!(status, 200, "/metrics: {body}");
        body.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse::<f64>().ok())?
            })
            .map_or(0, |v| v as u64)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// A raw connection logged in as the bootstrap admin (SCRAM-SHA-256).
    fn admin(&self) -> Conn {
        Conn::login(self, ADMIN.0, ADMIN.1)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- raw Kafka

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn tn(x: &str) -> TopicName {
    TopicName(s(x))
}

fn gid(x: &str) -> GroupId {
    GroupId(s(x))
}

/// A byte stream: plain TCP or TLS over it.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One Kafka-protocol connection (plain TCP or TLS), synchronous, every read bounded.
struct Conn {
    s: Box<dyn Stream>,
    /// The TCP socket under `s` (for its timeouts).
    tcp: TcpStream,
    cid: i32,
}

impl Conn {
    fn tcp(addr: SocketAddr) -> TcpStream {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Plain TCP to `addr`.
    fn connect(addr: SocketAddr) -> Conn {
        let tcp = Conn::tcp(addr);
        Conn {
            s: Box::new(tcp.try_clone().expect("clone socket")),
            tcp,
            cid: 0,
        }
    }

    /// TLS to `addr`, trusting `ca`, the certificate checked for 127.0.0.1.
    fn connect_tls(addr: SocketAddr, ca: &Path) -> Conn {
        use sluice_tls::rustls;
        let config = sluice_tls::client_config(Some(ca), None).expect("TLS client config");
        let name = sluice_tls::server_name("127.0.0.1").expect("server name");
        let tls = rustls::ClientConnection::new(config, name).expect("TLS client");
        let tcp = Conn::tcp(addr);
        Conn {
            s: Box::new(rustls::StreamOwned::new(
                tls,
                tcp.try_clone().expect("clone socket"),
            )),
            tcp,
            cid: 0,
        }
    }

    /// Plain TCP or TLS, as the broker's Kafka listener speaks.
    fn to(b: &Broker) -> Conn {
        match &b.ca {
            Some(ca) => Conn::connect_tls(b.kafka, ca),
            None => Conn::connect(b.kafka),
        }
    }

    /// Connects and logs in with SCRAM-SHA-256; panics if refused.
    fn login(b: &Broker, user: &str, password: &str) -> Conn {
        let mut c = Conn::to(b);
        if let Err(e) = c.scram(ScramMechanism::Sha256, user, password) {
            panic!("login of {user} refused: {e:?}");
        }
        c
    }

    /// Writes one request frame whose body `body` encodes; returns its correlation id.
    fn send_with(
        &mut self,
        key: ApiKey,
        version: i16,
        body: impl FnOnce(&mut BytesMut),
    ) -> std::io::Result<i32> {
        self.cid += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.cid)
            .with_client_id(Some(s("kafka-security-test")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body(&mut buf);
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.s.write_all(&buf)?;
        Ok(self.cid)
    }

    fn send<R: Encodable>(&mut self, key: ApiKey, version: i16, body: &R) -> std::io::Result<i32> {
        self.send_with(key, version, |buf| {
            body.encode(buf, version)
                .unwrap_or_else(|e| panic!("encode {key:?} v{version}: {e}"))
        })
    }

    fn read_frame(&mut self) -> std::io::Result<Bytes> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        let n = i32::from_be_bytes(len);
        assert!((0..64 << 20).contains(&n), "frame length {n}");
        let mut body = vec![0u8; n as usize];
        self.s.read_exact(&mut body)?;
        Ok(Bytes::from(body))
    }

    /// Reads the answer to request `cid` of `key`/`version`: its body.
    fn recv(&mut self, key: ApiKey, version: i16, cid: i32) -> std::io::Result<Bytes> {
        let mut b = self.read_frame()?;
        assert_eq!(b.get_i32(), cid, "{key:?}: correlation id");
        if key.response_header_version(version) >= 1 {
            assert_eq!(b.get_u8(), 0, "{key:?}: no tagged fields in the header");
        }
        Ok(b)
    }

    /// One request, one decoded answer (panics if the connection fails).
    fn call<R: Encodable, P: Decodable>(&mut self, key: ApiKey, version: i16, body: &R) -> P {
        let cid = self.send(key, version, body).expect("send");
        let mut b = self
            .recv(key, version, cid)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: no answer: {e}"));
        let p = P::decode(&mut b, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: bad answer: {e}"));
        assert_eq!(b.remaining(), 0, "{key:?} v{version}: bytes left over");
        p
    }

    /// One request of any api, its answer decoded by api key.
    fn call_kind(&mut self, key: ApiKey, version: i16, body: &RequestKind) -> ResponseKind {
        let cid = self
            .send_with(key, version, |buf| {
                body.encode(buf, version)
                    .unwrap_or_else(|e| panic!("encode {key:?} v{version}: {e}"))
            })
            .expect("send");
        let mut b = self
            .recv(key, version, cid)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: no answer: {e}"));
        let r = ResponseKind::decode(key, &mut b, version)
            .unwrap_or_else(|e| panic!("{key:?} v{version}: bad answer: {e}"));
        assert_eq!(b.remaining(), 0, "{key:?} v{version}: bytes left over");
        r
    }

    /// Whether the broker closed the connection (EOF or reset within 5 s).
    fn closed(&mut self) -> bool {
        self.tcp
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        let closed = match self.s.read(&mut b) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        closed
    }

    fn handshake(&mut self, mechanism: &str) -> SaslHandshakeResponse {
        self.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(s(mechanism)),
        )
    }

    fn authenticate(&mut self, bytes: Vec<u8>) -> SaslAuthenticateResponse {
        self.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes)),
        )
    }

    /// A SCRAM login (SaslHandshake v1, SaslAuthenticate v2); on refusal,
    /// the error code and message.
    fn scram(
        &mut self,
        m: ScramMechanism,
        user: &str,
        password: &str,
    ) -> Result<(), (i16, String)> {
        let hs = self.handshake(m.name());
        if hs.error_code != 0 {
            return Err((hs.error_code, "handshake".into()));
        }
        let mut client = ScramClient::new(m, user, password);
        let first = self.authenticate(client.first());
        if first.error_code != 0 {
            return Err((first.error_code, format!("{:?}", first.error_message)));
        }
        let fin = client
            .finish(&first.auth_bytes)
            .map_err(|e| (-1, e.to_string()))?;
        let last = self.authenticate(fin);
        if last.error_code != 0 {
            return Err((last.error_code, format!("{:?}", last.error_message)));
        }
        client
            .verify(&last.auth_bytes)
            .map_err(|e| (-1, format!("server signature: {e}")))
    }

    // ------------------------------------------------ admin helpers

    /// Creates `user` with both SCRAM mechanisms (AlterUserScramCredentials:
    /// the salted password crosses the wire, never the password).
    fn create_user(&mut self, user: &str, password: &str) {
        let upsertions = ScramMechanism::ALL
            .into_iter()
            .map(|m| {
                let salt = format!("salt-of-{user}-{}", m.name()).into_bytes();
                let salted = m
                    .salted_password(password.as_bytes(), &salt, 4096)
                    .expect("salted password");
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(s(user))
                    .with_mechanism(m.kafka_type())
                    .with_iterations(4096)
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted))
            })
            .collect();
        let r: AlterUserScramCredentialsResponse = self.call(
            ApiKey::AlterUserScramCredentials,
            0,
            &AlterUserScramCredentialsRequest::default().with_upsertions(upsertions),
        );
        assert!(
            r.results.iter().all(|x| x.error_code == 0),
            "create user {user}: {r:?}"
        );
    }

    fn create_topic(&mut self, name: &str, partitions: i32) {
        let r: CreateTopicsResponse = self.call(
            ApiKey::CreateTopics,
            7,
            &CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(tn(name))
                    .with_num_partitions(partitions)
                    .with_replication_factor(-1)]),
        );
        assert_eq!(r.topics[0].error_code, 0, "create {name}: {r:?}");
    }

    fn metadata(&mut self, topics: Option<&[&str]>) -> MetadataResponse {
        self.call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default()
                .with_topics(topics.map(|ts| {
                    ts.iter()
                        .map(|t| {
                            metadata_request::MetadataRequestTopic::default().with_name(Some(tn(t)))
                        })
                        .collect()
                }))
                .with_allow_auto_topic_creation(false),
        )
    }

    fn topic_id(&mut self, name: &str) -> Uuid {
        let md = self.metadata(Some(&[name]));
        assert_eq!(md.topics[0].error_code, 0, "metadata of {name}");
        md.topics[0].topic_id
    }

    /// Produces `n` records to `topic`/`partition`; returns the base offset.
    fn produce(&mut self, topic: &str, partition: i32, n: usize) -> i64 {
        let r: ProduceResponse = self.call(ApiKey::Produce, 11, &produce_req(topic, partition, n));
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce to {topic}: {r:?}");
        p.base_offset
    }

    /// ListOffsets of `topic`/`partition` at `ts` (-1 latest, -2 earliest).
    fn offset(&mut self, topic: &str, partition: i32, ts: i64) -> i64 {
        let r: ListOffsetsResponse = self.call(
            ApiKey::ListOffsets,
            9,
            &ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(tn(topic))
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(ts),
                    ])]),
        );
        let p = &r.topics[0].partitions[0];
        assert_eq!(
            p.error_code, 0,
            "list offsets of {topic}/{partition}: {r:?}"
        );
        p.offset
    }

    fn commit(&mut self, group: &str, topic: &str, partition: i32, offset: i64) {
        let r: OffsetCommitResponse = self.call(
            ApiKey::OffsetCommit,
            9,
            &commit_req(group, topic, partition, offset),
        );
        assert_eq!(codes_of_commit(&r), vec![0], "commit {group}: {r:?}");
    }

    fn create_acls(&mut self, acls: &[Acl]) {
        let r: CreateAclsResponse = self.call(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(acls.iter().map(Acl::creation).collect()),
        );
        assert!(
            r.results.iter().all(|x| x.error_code == 0),
            "create ACLs: {r:?}"
        );
    }

    /// The ACLs that `filter` selects, as [`Acl`]s, sorted.
    fn describe_acls(&mut self, principal: Option<&str>) -> Vec<Acl> {
        let r: DescribeAclsResponse = self.call(
            ApiKey::DescribeAcls,
            3,
            &DescribeAclsRequest::default()
                .with_host_filter(None)
                .with_resource_name_filter(None)
                .with_resource_type_filter(ANY)
                .with_pattern_type_filter(ANY)
                .with_principal_filter(principal.map(s))
                .with_operation(ANY)
                .with_permission_type(ANY),
        );
        assert_eq!(r.error_code, 0, "describe ACLs: {r:?}");
        let mut out: Vec<Acl> = r
            .resources
            .iter()
            .flat_map(|res| {
                res.acls.iter().map(move |a| Acl {
                    resource: res.resource_type,
                    name: res.resource_name.to_string(),
                    pattern: res.pattern_type,
                    principal: a.principal.to_string(),
                    operation: a.operation,
                    permission: a.permission_type,
                })
            })
            .collect();
        out.sort();
        out
    }
}

/// A produce request of `n` records to one partition.
fn produce_req(topic: &str, partition: i32, n: usize) -> ProduceRequest {
    let mut b = RecordBatchBuilder::new();
    for i in 0..n {
        let k = format!("k{i}");
        let v = format!("v{i}");
        b.push(
            1_700_000_000_000 + i as i64,
            Some(k.as_bytes()),
            Some(v.as_bytes()),
            &[],
        );
    }
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(tn(topic))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(b.into_batch())),
            ])])
}

fn commit_req(group: &str, topic: &str, partition: i32, offset: i64) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(tn(topic))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_partition_index(partition)
                        .with_committed_offset(offset),
                ]),
        ])
}

fn codes_of_commit(r: &OffsetCommitResponse) -> Vec<i16> {
    r.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect()
}

// ---------------------------------------------------------------- clients

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Kcat,
    Confluent,
    KafkaPython,
    Kafkajs,
}

/// What a client connects with.
#[derive(Debug, Clone)]
struct Sec {
    protocol: &'static str,
    mechanism: &'static str,
    user: &'static str,
    password: &'static str,
    ca: Option<PathBuf>,
}

impl Sec {
    fn new(b: &Broker, mechanism: &'static str, user: &'static str, password: &'static str) -> Sec {
        Sec {
            protocol: if b.ca.is_some() {
                "SASL_SSL"
            } else {
                "SASL_PLAINTEXT"
            },
            mechanism,
            user,
            password,
            ca: b.ca.clone(),
        }
    }

    /// librdkafka's `-X` settings (kcat).
    fn rdkafka(&self) -> Vec<String> {
        let mut v = vec![
            format!("security.protocol={}", self.protocol),
            format!("sasl.mechanism={}", self.mechanism),
            format!("sasl.username={}", self.user),
            format!("sasl.password={}", self.password),
        ];
        if let Some(ca) = &self.ca {
            v.push(format!("ssl.ca.location={}", ca.display()));
        }
        v.into_iter().flat_map(|x| ["-X".to_string(), x]).collect()
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("SEC_PROTOCOL", self.protocol)
            .env("SEC_MECHANISM", self.mechanism)
            .env("SEC_USER", self.user)
            .env("SEC_PASSWORD", self.password);
        match &self.ca {
            Some(ca) => cmd.env("SEC_CA", ca),
            None => cmd.env_remove("SEC_CA"),
        };
    }
}

impl Client {
    /// The scenario program (confluent-kafka, kafka-python, kafkajs).
    fn program(self, sec: &Sec) -> Command {
        let venv_python = repo().join("target/kafka-clients/venv/bin/python");
        let mut cmd = match self {
            Client::Confluent | Client::KafkaPython => {
                let mut c = Command::new(venv_python);
                c.arg(kafka_dir().join("security_client.py"))
                    .arg(if self == Client::Confluent {
                        "confluent"
                    } else {
                        "kafka-python"
                    });
                c
            }
            Client::Kafkajs => {
                let mut c = Command::new("node");
                c.arg(kafka_dir().join("security_client.js"));
                c
            }
            Client::Kcat => unreachable!("kcat is driven directly"),
        };
        cmd.env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1")
            .env("KAFKAJS_NO_PARTITIONER_WARNING", "1");
        sec.env(&mut cmd);
        cmd
    }

    /// Runs a scenario; returns its JSON lines and the output.
    fn scenario(self, boot: &str, sec: &Sec, args: &[&str]) -> (Vec<Value>, Output) {
        let mut cmd = self.program(sec);
        cmd.arg(boot).args(args);
        let out = output_within(cmd, None, CLIENT_TIMEOUT);
        let lines = text(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (lines, out)
    }

    /// Writes [`RECORDS`] records to `topic` (3 partitions) and reads them back intact.
    fn roundtrip(self, b: &Broker, sec: &Sec, topic: &str) {
        if self == Client::Kcat {
            return kcat_roundtrip(b, sec, topic);
        }
        let n = RECORDS.to_string();
        let (lines, out) = self.scenario(&b.boot(), sec, &["roundtrip", topic, &n, "3"]);
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            out.status.success() && last["ok"] == Value::Bool(true),
            "{self:?} roundtrip over {} {} failed:\n{}\n{}\nbroker log:\n{}",
            sec.protocol,
            sec.mechanism,
            text(&out.stdout),
            text(&out.stderr),
            b.log_tail()
        );
        assert_eq!(last["records"], Value::from(RECORDS));
    }

    /// Connects with `sec`, which the broker must refuse (`kind`:
    /// `credentials` or `mechanism`); returns what the client reported.
    fn refused(self, b: &Broker, sec: &Sec, kind: &str) -> String {
        if self == Client::Kcat {
            return kcat_refused(b, sec, kind);
        }
        let (lines, out) = self.scenario(&b.boot(), sec, &["refused", "-", kind]);
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            out.status.success() && last["ok"] == Value::Bool(true),
            "{self:?} was not refused as expected ({kind}, {} {} as {}):\n{}\n{}",
            sec.protocol,
            sec.mechanism,
            sec.user,
            text(&out.stdout),
            text(&out.stderr)
        );
        lines
            .iter()
            .find_map(|l| l["auth_error"].as_str().map(str::to_string))
            .expect("an auth_error line")
    }
}

/// kcat's value for record `i`: printable bytes of every kind but the
/// delimiters (tab, newline), of varying length.
fn kcat_value(i: usize) -> String {
    let tail: String = (0..i % 40)
        .map(|j| char::from(b'!' + ((i * 7 + j) % 94) as u8))
        .collect();
    format!("kcat-{i}|{tail}")
}

fn kcat(sec: &Sec, boot: &str) -> Command {
    let mut c = Command::new("kcat");
    c.args(["-b", boot]).args(sec.rdkafka());
    c
}

fn kcat_roundtrip(b: &Broker, sec: &Sec, topic: &str) {
    let input: String = (0..RECORDS)
        .map(|i| format!("key-{i}\t{}\n", kcat_value(i)))
        .collect();
    let mut p = kcat(sec, &b.boot());
    p.args(["-P", "-t", topic, "-K", "\t", "-H", "via=kcat"]);
    let out = output_within(p, Some(input.as_bytes()), CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "kcat produce over {} {}: {}\nbroker log:\n{}",
        sec.protocol,
        sec.mechanism,
        text(&out.stderr),
        b.log_tail()
    );
    let mut c = kcat(sec, &b.boot());
    c.args(["-C", "-t", topic, "-o", "beginning", "-e", "-q"])
        .args(["-f", "%k\t%s\t%h\n"]);
    let out = output_within(c, None, CLIENT_TIMEOUT);
    let got = text(&out.stdout);
    assert!(
        out.status.success(),
        "kcat consume over {} {}: {}",
        sec.protocol,
        sec.mechanism,
        text(&out.stderr)
    );
    let mut seen = BTreeMap::new();
    for line in got.lines() {
        let mut f = line.split('\t');
        let (k, v, h) = (f.next(), f.next(), f.next());
        let i: usize = k
            .and_then(|k| k.strip_prefix("key-"))
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("kcat read an unexpected record {line:?}"));
        assert_eq!(v, Some(kcat_value(i).as_str()), "record {i}");
        assert_eq!(h, Some("via=kcat"), "record {i}'s headers");
        assert!(seen.insert(i, ()).is_none(), "record {i} twice");
    }
    assert_eq!(seen.len(), RECORDS, "kcat read back:\n{got}");
}

fn kcat_refused(b: &Broker, sec: &Sec, kind: &str) -> String {
    let mut c = kcat(sec, &b.boot());
    c.args(["-L", "-m", "5"]);
    let out = output_within(c, None, CLIENT_TIMEOUT);
    let err = text(&out.stderr);
    let says = match kind {
        "mechanism" => "Unsupported SASL mechanism",
        _ => "Authentication failed",
    };
    assert!(
        !out.status.success() && err.contains(says),
        "kcat was not refused as expected ({kind}): {}\n{err}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stdout).contains("topics:"),
        "metadata was served"
    );
    err.lines()
        .find(|l| l.contains(says))
        .unwrap_or_default()
        .to_string()
}

// ---------------------------------------------------------------- 1 and 2: each client

/// SASL roundtrips of one client over every listener kind, then its refusals.
fn client_security(client: Client) {
    setup();
    let tag = format!("{client:?}").to_lowercase();
    let plaintext = Broker::start(&Opts::sasl_plaintext());
    let tls = Broker::start(&Opts::sasl_ssl());
    let plain_allowed = Broker::start(&Opts {
        plain_without_tls: true,
        ..Opts::sasl_plaintext()
    });
    for b in [&plaintext, &tls, &plain_allowed] {
        b.admin().create_user(USER.0, USER.1);
    }
    let combos = [
        (&plaintext, "SCRAM-SHA-256"),
        (&plaintext, "SCRAM-SHA-512"),
        (&tls, "SCRAM-SHA-256"),
        (&tls, "PLAIN"),
        (&plain_allowed, "PLAIN"),
    ];
    for (i, (b, mechanism)) in combos.into_iter().enumerate() {
        let topic = format!("{tag}-{i}");
        b.admin().create_topic(&topic, 3);
        let sec = Sec::new(b, mechanism, USER.0, USER.1);
        client.roundtrip(b, &sec, &topic);
        // Every record is where the client put it (the admin's view).
        let mut admin = b.admin();
        let total: i64 = (0..3).map(|p| admin.offset(&topic, p, -1)).sum();
        assert_eq!(total, RECORDS as i64, "{topic}: records stored");
    }
    assert!(
        plaintext
            .log()
            .contains("principal=\"User:carol\" mechanism=\"SCRAM-SHA-512\""),
        "the broker logs who logged in and how"
    );

    // Refusals: wrong password and unknown user over both listeners.
    for b in [&plaintext, &tls] {
        for (user, password) in [(USER.0, "wrong-password"), ("nobody", USER.1)] {
            let before = b.metric("sluice_auth_failures_total");
            let sec = Sec::new(b, "SCRAM-SHA-256", user, password);
            let said = client.refused(b, &sec, "credentials");
            assert!(
                said.contains("Authentication failed"),
                "{client:?} reports: {said}"
            );
            let after = b.metric("sluice_auth_failures_total");
            assert!(after > before, "failures counted: {before} -> {after}");
            let log = b.log();
            assert!(
                log.lines().any(|l| l.contains("authentication failed")
                    && l.contains("peer=127.0.0.1")
                    && l.contains(&format!("user=\"{user}\""))),
                "the failed login of {user} is logged with the peer address:\n{}",
                b.log_tail()
            );
        }
    }
    // PLAIN without TLS, not allowed: refused at the handshake, and logged.
    let sec = Sec::new(&plaintext, "PLAIN", USER.0, USER.1);
    client.refused(&plaintext, &sec, "mechanism");
    assert!(
        plaintext
            .log()
            .lines()
            .any(|l| l.contains("SASL/PLAIN refused") && l.contains("peer=127.0.0.1")),
        "{}",
        plaintext.log_tail()
    );
    // The brokers are unaffected: the right password still works.
    for b in [&plaintext, &tls] {
        let topic = format!("{tag}-after");
        b.admin().create_topic(&topic, 3);
        client.roundtrip(b, &Sec::new(b, "SCRAM-SHA-256", USER.0, USER.1), &topic);
    }
}

#[test]
fn kcat_sasl_scram_plain_tls_and_refusals() {
    client_security(Client::Kcat);
}

#[test]
fn confluent_kafka_sasl_scram_plain_tls_and_refusals() {
    client_security(Client::Confluent);
}

#[test]
fn kafka_python_sasl_scram_plain_tls_and_refusals() {
    client_security(Client::KafkaPython);
}

#[test]
fn kafkajs_sasl_scram_plain_tls_and_refusals() {
    client_security(Client::Kafkajs);
}

// ---------------------------------------------------------------- 3: misbehaving peers

/// Plaintext Kafka on a SASL port: ApiVersions is answered, anything else
/// closes the connection. Plaintext on a TLS port: the handshake fails. The
/// broker serves everyone else meanwhile.
#[test]
fn plaintext_kafka_on_sasl_and_tls_ports_is_refused_and_others_are_served() {
    setup();
    let mut b = Broker::start(&Opts::sasl_plaintext());
    b.admin().create_user(USER.0, USER.1);
    b.admin().create_topic("served", 1);

    let mut c = Conn::connect(b.kafka);
    let v: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(v.error_code, 0);
    assert!(
        v.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::SaslHandshake as i16),
        "SaslHandshake is advertised"
    );
    c.send(ApiKey::Metadata, 12, &MetadataRequest::default())
        .expect("send");
    assert!(c.closed(), "Metadata before SASL closes the connection");
    assert!(
        b.log().contains("Metadata before SASL authentication"),
        "{}",
        b.log_tail()
    );

    // A real client configured for plaintext gets nothing either.
    let mut k = Command::new("kcat");
    k.args(["-b", &b.boot(), "-L", "-m", "5"]);
    let out = output_within(k, None, CLIENT_TIMEOUT);
    assert!(
        !out.status.success() && !text(&out.stdout).contains("topics:"),
        "kcat over plaintext to a SASL port: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Others are served.
    let mut carol = Conn::login(&b, USER.0, USER.1);
    assert_eq!(carol.produce("served", 0, 3), 0);
    Client::Kcat.roundtrip(
        &b,
        &Sec::new(&b, "SCRAM-SHA-256", USER.0, USER.1),
        "served-kcat",
    );
    assert!(b.alive());

    // Plaintext Kafka on a TLS port.
    let mut t = Broker::start(&Opts::sasl_ssl());
    t.admin().create_user(USER.0, USER.1);
    let before = t.metric("sluice_tls_handshake_failures_total{listener=\"kafka\"}");
    let mut c = Conn::connect(t.kafka);
    c.send(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .expect("send");
    // The broker answers a TLS alert (content type 21), never Kafka, and closes.
    let mut got = Vec::new();
    let _ = (&mut c.tcp).take(1 << 16).read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 21,
        "plaintext on a TLS port got {got:?}"
    );
    let mut k = Command::new("kcat");
    k.args(["-b", &t.boot(), "-L", "-m", "5"]);
    let out = output_within(k, None, CLIENT_TIMEOUT);
    assert!(!out.status.success(), "kcat plaintext to a TLS port");
    let after = t.metric("sluice_tls_handshake_failures_total{listener=\"kafka\"}");
    assert!(
        after > before,
        "TLS handshake failures counted: {before} -> {after}"
    );
    let topic = "tls-served";
    Client::Kcat.roundtrip(&t, &Sec::new(&t, "SCRAM-SHA-512", USER.0, USER.1), topic);
    assert!(t.alive());
}

/// SASL exchanges cut at every step (after the handshake, after
/// client-first, in the middle of a frame, in a v0 exchange of bare tokens):
/// the broker drops those connections and nothing else.
#[test]
fn sasl_exchanges_cut_in_the_middle_leave_the_broker_unaffected() {
    setup();
    let mut b = Broker::start(&Opts::sasl_plaintext());
    b.admin().create_user(USER.0, USER.1);
    b.admin().create_topic("cut", 1);
    // A legitimate client logged in before, and kept open throughout.
    let mut before = Conn::login(&b, USER.0, USER.1);
    for round in 0..5 {
        // After the handshake.
        let mut c = Conn::connect(b.kafka);
        assert_eq!(c.handshake("SCRAM-SHA-256").error_code, 0);
        drop(c);
        // After client-first (SaslHandshake v1, SaslAuthenticate, close).
        let mut c = Conn::connect(b.kafka);
        assert_eq!(c.handshake("SCRAM-SHA-512").error_code, 0);
        let mut client = ScramClient::new(ScramMechanism::Sha512, USER.0, USER.1);
        let first = c.authenticate(client.first());
        assert_eq!(first.error_code, 0);
        assert!(first.auth_bytes.starts_with(b"r="), "server-first");
        c.tcp.shutdown(Shutdown::Both).ok();
        drop(c);
        // Half a client-final frame, then close.
        let mut c = Conn::connect(b.kafka);
        assert_eq!(c.handshake("SCRAM-SHA-256").error_code, 0);
        let mut client = ScramClient::new(ScramMechanism::Sha256, USER.0, USER.1);
        let first = c.authenticate(client.first());
        let fin = client.finish(&first.auth_bytes).expect("client-final");
        let mut frame = BytesMut::new();
        // The length promises more than is ever sent.
        frame.put_i32(1000);
        frame.put_i16(ApiKey::SaslAuthenticate as i16);
        frame.put_i16(2);
        frame.put_i32(99);
        frame.put_slice(&fin[..fin.len() / 2]);
        c.s.write_all(&frame).expect("write half a frame");
        drop(c);
        // A v0 handshake, then a bare client-first token, then close.
        let mut c = Conn::connect(b.kafka);
        let hs: SaslHandshakeResponse = c.call(
            ApiKey::SaslHandshake,
            0,
            &SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-256")),
        );
        assert_eq!(hs.error_code, 0);
        let mut client = ScramClient::new(ScramMechanism::Sha256, USER.0, USER.1);
        let token = client.first();
        let mut raw = BytesMut::new();
        raw.put_u32(token.len() as u32);
        raw.put_slice(&token);
        c.s.write_all(&raw).expect("write a bare token");
        let server_first = c.read_frame().expect("a bare server-first");
        assert!(server_first.starts_with(b"r="), "round {round}");
        drop(c);
    }
    // The broker is unaffected: the old connection and new ones are served.
    assert_eq!(before.produce("cut", 0, 2), 0);
    let mut after = Conn::login(&b, USER.0, USER.1);
    assert_eq!(after.produce("cut", 0, 2), 2);
    Client::Kcat.roundtrip(
        &b,
        &Sec::new(&b, "SCRAM-SHA-256", USER.0, USER.1),
        "cut-kcat",
    );
    assert!(b.alive());
    assert!(!b.log().contains("panicked"), "{}", b.log_tail());
    // Cut exchanges are not failed logins.
    assert_eq!(b.metric("sluice_auth_failures_total"), 0);
}

/// One failed SCRAM login on a fresh connection: the time from client-final
/// to the refusal.
fn failed_login(addr: SocketAddr, user: &str) -> Duration {
    let mut c = Conn::connect(addr);
    c.tcp
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(c.handshake("SCRAM-SHA-256").error_code, 0);
    let mut client = ScramClient::new(ScramMechanism::Sha256, user, "guess");
    let first = c.authenticate(client.first());
    assert_eq!(first.error_code, 0, "server-first");
    let fin = client.finish(&first.auth_bytes).expect("client-final");
    let started = Instant::now();
    let r = c.authenticate(fin);
    let took = started.elapsed();
    assert_eq!(r.error_code, 58, "SASL_AUTHENTICATION_FAILED: {r:?}");
    // Nothing is served after a failed login.
    c.send(ApiKey::Metadata, 12, &MetadataRequest::default())
        .ok();
    assert!(c.closed(), "the connection closes after a failed login");
    took
}

/// 50 failed SCRAM logins from one address (25 at a time): the answers
/// slow down (the delay doubles per failure, up to 5 s), while a legitimate
/// client from the same address logs in and works at once throughout.
#[test]
fn a_flood_of_failed_logins_is_slowed_and_others_are_served() {
    setup();
    let mut b = Broker::start(&Opts {
        failure_delay_ms: 100,
        ..Opts::sasl_plaintext()
    });
    b.admin().create_user(USER.0, USER.1);
    b.admin().create_topic("flood", 1);
    let addr = b.kafka;
    let started = Instant::now();
    let workers: Vec<_> = (0..25)
        .map(|w| {
            std::thread::spawn(move || {
                let user = if w % 2 == 0 { USER.0 } else { "nobody" };
                (0..2).map(|_| failed_login(addr, user)).collect::<Vec<_>>()
            })
        })
        .collect();
    // Meanwhile, a legitimate client: each login and produce is quick.
    let mut quick = Vec::new();
    while !workers.iter().all(|w| w.is_finished()) {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the flood ran on"
        );
        let t = Instant::now();
        let mut c = Conn::login(&b, USER.0, USER.1);
        c.produce("flood", 0, 1);
        quick.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = started.elapsed();
    let mut took: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a flood worker"))
        .collect();
    took.sort();
    let total: Duration = took.iter().sum();
    // 100 ms doubling to 5 s: 0.1 + 0.2 + ... + 3.2 + 44 x 5 s = 226 s in
    // all if each failure saw every earlier one. Bounds well below that:
    assert!(
        total >= Duration::from_secs(100),
        "50 failures took {total:?} in all: {took:?}"
    );
    assert!(
        took[0] < Duration::from_secs(2),
        "the first failure is quick: {took:?}"
    );
    assert!(
        took[40] >= Duration::from_secs(3),
        "later failures are slowed: {took:?}"
    );
    assert!(
        wall < Duration::from_secs(60),
        "the failures wait in parallel: {wall:?}"
    );
    assert!(
        quick.len() >= 3,
        "the legitimate client ran during the flood"
    );
    let slowest = quick.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(3),
        "the legitimate client was held up: {quick:?}"
    );
    assert_eq!(b.metric("sluice_auth_failures_total"), 50);
    let logged = b
        .log()
        .lines()
        .filter(|l| l.contains("authentication failed") && l.contains("peer=127.0.0.1"))
        .count();
    assert_eq!(logged, 50, "each failure logged with its peer");
    assert!(b.alive());
    let mut c = Conn::login(&b, USER.0, USER.1);
    assert_eq!(
        c.offset("flood", 0, -1),
        quick.len() as i64,
        "every produce kept"
    );
}

// ---------------------------------------------------------------- 4: ACLs over every api

/// Kafka's "any" in ACL filters (resource type, pattern, operation, permission).
const ANY: i8 = 1;
/// Kafka's ACL codes.
const TOPIC: i8 = 2;
const GROUP: i8 = 3;
const CLUSTER: i8 = 4;
const LITERAL: i8 = 3;
const PREFIXED: i8 = 4;
const OP_ALL: i8 = 2;
const OP_READ: i8 = 3;
const OP_DESCRIBE: i8 = 8;
const DENY: i8 = 2;
const ALLOW: i8 = 3;
/// Kafka's refusal codes.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const AUTHORIZATION_FAILED: [i16; 3] = [
    TOPIC_AUTHORIZATION_FAILED,
    GROUP_AUTHORIZATION_FAILED,
    CLUSTER_AUTHORIZATION_FAILED,
];

/// One ACL binding (host `*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Acl {
    resource: i8,
    name: String,
    pattern: i8,
    principal: String,
    operation: i8,
    permission: i8,
}

impl Acl {
    fn new(
        resource: i8,
        name: &str,
        pattern: i8,
        principal: &str,
        operation: i8,
        permission: i8,
    ) -> Acl {
        Acl {
            resource,
            name: name.into(),
            pattern,
            principal: principal.into(),
            operation,
            permission,
        }
    }

    fn creation(&self) -> create_acls_request::AclCreation {
        create_acls_request::AclCreation::default()
            .with_resource_type(self.resource)
            .with_resource_name(s(&self.name))
            .with_resource_pattern_type(self.pattern)
            .with_principal(s(&self.principal))
            .with_host(s("*"))
            .with_operation(self.operation)
            .with_permission_type(self.permission)
    }
}

/// What the ACL test's principal gets without ACLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every error in the answer is this code (and there is one).
    Code(i16),
    /// Metadata, ListGroups: filtered (see [`check_refused`]).
    Filtered,
}

/// The refusal of each served api (Kafka's table, see docs/security.md).
/// `None`: not checked, with the reason at the match arm. An api served
/// but missing here fails the test: a new api cannot be left unchecked.
fn acl_expectation(api: ApiKey) -> Option<Refusal> {
    use Refusal::*;
    Some(match api {
        // Before and during authentication every principal needs these;
        // they act on nothing (the SASL ones are covered above).
        ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => return None,
        ApiKey::Metadata => Filtered,
        ApiKey::Produce
        | ApiKey::Fetch
        | ApiKey::ListOffsets
        | ApiKey::CreateTopics
        | ApiKey::DeleteTopics
        | ApiKey::DeleteRecords
        | ApiKey::DescribeConfigs
        | ApiKey::CreatePartitions
        | ApiKey::IncrementalAlterConfigs => Code(TOPIC_AUTHORIZATION_FAILED),
        ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::SyncGroup
        | ApiKey::DescribeGroups
        | ApiKey::DeleteGroups
        | ApiKey::OffsetDelete
        | ApiKey::ConsumerGroupHeartbeat
        | ApiKey::ConsumerGroupDescribe => Code(GROUP_AUTHORIZATION_FAILED),
        ApiKey::ListGroups => Filtered,
        ApiKey::InitProducerId
        | ApiKey::DescribeAcls
        | ApiKey::CreateAcls
        | ApiKey::DeleteAcls
        | ApiKey::DescribeClientQuotas
        | ApiKey::AlterClientQuotas
        | ApiKey::DescribeUserScramCredentials
        | ApiKey::AlterUserScramCredentials
        | ApiKey::DescribeCluster => Code(CLUSTER_AUTHORIZATION_FAILED),
        other => panic!(
            "{other:?} is served but tests/kafka_security.rs does not check its ACLs: \
             add it to acl_expectation and acl_request"
        ),
    })
}

/// Apis whose granted request must succeed outright (code 0 everywhere);
/// the others answer a group-protocol error for the made-up member (e.g.
/// MEMBER_ID_REQUIRED, UNKNOWN_MEMBER_ID), never an authorization one.
fn must_succeed(api: ApiKey) -> bool {
    !matches!(
        api,
        ApiKey::JoinGroup | ApiKey::Heartbeat | ApiKey::LeaveGroup | ApiKey::SyncGroup
    )
}

/// The resources of the ACL test: all named `acl-…`, so one prefixed ACL
/// covers them; `hidden` is outside the prefix.
struct Fixture {
    /// acl-t: 2 partitions, 3 records in partition 0, commits of acl-g and acl-og.
    t_id: Uuid,
    /// acl-del: deleted by id when allowed.
    del_id: Uuid,
    /// Which phase: names some resources differently.
    granted: bool,
}

/// A well-formed request of `api` in `version` touching the fixture's
/// resources (fields a version does not have are left at their defaults).
fn acl_request(api: ApiKey, version: i16, f: &Fixture) -> RequestKind {
    let topic = || tn("acl-t");
    let v = version;
    match api {
        ApiKey::Produce => RequestKind::Produce(produce_req("acl-t", 0, 1)),
        // By topic id from v13: the id is checked as the topic it names.
        ApiKey::Fetch => RequestKind::Fetch(
            FetchRequest::default()
                .with_max_wait_ms(0)
                .with_max_bytes(1 << 20)
                .with_topics(vec![if v >= 13 {
                    fetch_request::FetchTopic::default().with_topic_id(f.t_id)
                } else {
                    fetch_request::FetchTopic::default().with_topic(topic())
                }
                .with_partitions(vec![fetch_request::FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 20)])]),
        ),
        ApiKey::ListOffsets => RequestKind::ListOffsets(
            ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                    ])]),
        ),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                )
                .with_name(Some(topic()))]))
                .with_allow_auto_topic_creation(v < 4),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(commit_req("acl-g", "acl-t", 0, 2)),
        ApiKey::OffsetFetch if v >= 8 => {
            RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default()
                    .with_group_id(gid("acl-g"))
                    .with_topics(None),
            ]))
        }
        ApiKey::OffsetFetch => RequestKind::OffsetFetch(
            OffsetFetchRequest::default()
                .with_group_id(gid("acl-g"))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0]),
                ])),
        ),
        ApiKey::FindCoordinator if v >= 4 => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("acl-g")]),
        ),
        ApiKey::FindCoordinator => {
            RequestKind::FindCoordinator(FindCoordinatorRequest::default().with_key(s("acl-g")))
        }
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(gid("acl-live"))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 10_000 } else { -1 })
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(&[0, 1, 0, 0, 0, 0]))]),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default()
                .with_group_id(gid("acl-live"))
                .with_generation_id(1)
                .with_member_id(s("made-up")),
        ),
        ApiKey::LeaveGroup if v >= 3 => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(gid("acl-live"))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s("made-up"))
                ]),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(gid("acl-live"))
                .with_member_id(s("made-up")),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(gid("acl-live"))
                .with_generation_id(1)
                .with_member_id(s("made-up"))
                .with_protocol_type((v >= 5).then(|| s("consumer")))
                .with_protocol_name((v >= 5).then(|| s("range"))),
        ),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(
            DescribeGroupsRequest::default().with_groups(vec![gid("acl-g")]),
        ),
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::CreateTopics => RequestKind::CreateTopics(
            CreateTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(tn("acl-new"))
                    .with_num_partitions(1)
                    .with_replication_factor(-1)]),
        ),
        ApiKey::DeleteTopics if v < 6 => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topic_names(vec![tn("acl-del")]),
        ),
        // By topic id from v6: checked as the topic it names.
        ApiKey::DeleteTopics => RequestKind::DeleteTopics(
            DeleteTopicsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![delete_topics_request::DeleteTopicState::default()
                    .with_name(None)
                    .with_topic_id(f.del_id)]),
        ),
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(
            DeleteRecordsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(0)
                            .with_offset(1),
                    ])]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_transaction_timeout_ms(60_000)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        ApiKey::DescribeAcls => RequestKind::DescribeAcls(
            DescribeAclsRequest::default()
                .with_host_filter(None)
                .with_resource_name_filter(None)
                .with_resource_type_filter(ANY)
                .with_pattern_type_filter(if v >= 1 { ANY } else { LITERAL })
                .with_operation(ANY)
                .with_permission_type(ANY),
        ),
        ApiKey::CreateAcls => {
            RequestKind::CreateAcls(CreateAclsRequest::default().with_creations(vec![
                Acl::new(TOPIC, "bob-t2", LITERAL, "User:bob", OP_READ, ALLOW).creation(),
            ]))
        }
        // Refused: aims at bob's standing ACL (which must survive); granted:
        // removes the one CreateAcls just made.
        ApiKey::DeleteAcls => RequestKind::DeleteAcls(DeleteAclsRequest::default().with_filters(
            vec![delete_acls_request::DeleteAclsFilter::default()
                .with_host_filter(None)
                .with_resource_type_filter(TOPIC)
                .with_resource_name_filter(Some(s(if f.granted { "bob-t2" } else { "bob-t" })))
                .with_pattern_type_filter(LITERAL)
                .with_principal_filter(Some(s("User:bob")))
                .with_operation(ANY)
                .with_permission_type(ANY)],
        )),
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                describe_configs_request::DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("acl-t"))
                    .with_configuration_keys(None),
            ]))
        }
        ApiKey::CreatePartitions => RequestKind::CreatePartitions(
            CreatePartitionsRequest::default()
                .with_timeout_ms(10_000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(topic())
                        .with_count(3)
                        .with_assignments(None),
                ]),
        ),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![gid("acl-g")]),
        ),
        ApiKey::IncrementalAlterConfigs => RequestKind::IncrementalAlterConfigs(
            IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(s("acl-t"))
                    .with_configs(vec![
                        incremental_alter_configs_request::AlterableConfig::default()
                            .with_name(s("retention.ms"))
                            .with_config_operation(0)
                            .with_value(Some(s("3600000"))),
                    ]),
            ]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default()
                .with_group_id(gid("acl-og"))
                .with_topics(vec![
                    offset_delete_request::OffsetDeleteRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_delete_request::OffsetDeleteRequestPartition::default()
                                .with_partition_index(0),
                        ]),
                ]),
        ),
        ApiKey::DescribeClientQuotas => RequestKind::DescribeClientQuotas(
            DescribeClientQuotasRequest::default()
                .with_components(vec![])
                .with_strict(false),
        ),
        ApiKey::AlterClientQuotas => {
            RequestKind::AlterClientQuotas(AlterClientQuotasRequest::default().with_entries(vec![
                alter_client_quotas_request::EntryData::default()
                    .with_entity(vec![alter_client_quotas_request::EntityData::default()
                        .with_entity_type(s("user"))
                        .with_entity_name(Some(s("mallory")))])
                    .with_ops(vec![alter_client_quotas_request::OpData::default()
                        .with_key(s("producer_byte_rate"))
                        .with_value(1_048_576.0)]),
            ]))
        }
        ApiKey::DescribeUserScramCredentials => RequestKind::DescribeUserScramCredentials(
            DescribeUserScramCredentialsRequest::default().with_users(None),
        ),
        ApiKey::AlterUserScramCredentials => {
            let m = ScramMechanism::Sha256;
            let salted = m
                .salted_password(b"mallory-pw", b"mallory-salt", 4096)
                .expect("salted password");
            RequestKind::AlterUserScramCredentials(
                AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                    alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                        .with_name(s("mallory"))
                        .with_mechanism(m.kafka_type())
                        .with_iterations(4096)
                        .with_salt(Bytes::from_static(b"mallory-salt"))
                        .with_salted_password(Bytes::from(salted)),
                ]),
            )
        }
        ApiKey::DescribeCluster => {
            RequestKind::DescribeCluster(DescribeClusterRequest::default().with_endpoint_type(1))
        }
        ApiKey::ConsumerGroupHeartbeat => RequestKind::ConsumerGroupHeartbeat(
            ConsumerGroupHeartbeatRequest::default()
                .with_group_id(gid("acl-848"))
                .with_member_id(s("7vKW1hX8Q8m7c2yB5mQ1ZA"))
                .with_member_epoch(0)
                .with_rebalance_timeout_ms(10_000)
                .with_subscribed_topic_names(Some(vec![topic()]))
                .with_topic_partitions(Some(vec![])),
        ),
        ApiKey::ConsumerGroupDescribe => RequestKind::ConsumerGroupDescribe(
            ConsumerGroupDescribeRequest::default().with_group_ids(vec![gid("acl-848")]),
        ),
        other => panic!("no request for {other:?}: add it to acl_request"),
    }
}

/// Every error code in an answer (top level, per entry, per partition).
fn codes(r: &ResponseKind) -> Vec<i16> {
    use ResponseKind as R;
    let mut v = Vec::new();
    match r {
        R::Produce(x) => {
            for t in &x.responses {
                v.extend(t.partition_responses.iter().map(|p| p.error_code));
            }
        }
        R::Fetch(x) => {
            v.push(x.error_code);
            for t in &x.responses {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::ListOffsets(x) => {
            for t in &x.topics {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::Metadata(x) => {
            for t in &x.topics {
                v.push(t.error_code);
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::OffsetCommit(x) => {
            for t in &x.topics {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::OffsetFetch(x) => {
            v.push(x.error_code);
            for t in &x.topics {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
            for g in &x.groups {
                v.push(g.error_code);
                for t in &g.topics {
                    v.extend(t.partitions.iter().map(|p| p.error_code));
                }
            }
        }
        R::FindCoordinator(x) => {
            v.push(x.error_code);
            v.extend(x.coordinators.iter().map(|c| c.error_code));
        }
        R::JoinGroup(x) => v.push(x.error_code),
        R::Heartbeat(x) => v.push(x.error_code),
        R::LeaveGroup(x) => {
            v.push(x.error_code);
            v.extend(x.members.iter().map(|m| m.error_code));
        }
        R::SyncGroup(x) => v.push(x.error_code),
        R::DescribeGroups(x) => v.extend(x.groups.iter().map(|g| g.error_code)),
        R::ListGroups(x) => v.push(x.error_code),
        R::CreateTopics(x) => v.extend(x.topics.iter().map(|t| t.error_code)),
        R::DeleteTopics(x) => v.extend(x.responses.iter().map(|t| t.error_code)),
        R::DeleteRecords(x) => {
            for t in &x.topics {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::InitProducerId(x) => v.push(x.error_code),
        R::DescribeAcls(x) => v.push(x.error_code),
        R::CreateAcls(x) => v.extend(x.results.iter().map(|r| r.error_code)),
        R::DeleteAcls(x) => v.extend(x.filter_results.iter().map(|r| r.error_code)),
        R::DescribeConfigs(x) => v.extend(x.results.iter().map(|r| r.error_code)),
        R::CreatePartitions(x) => v.extend(x.results.iter().map(|r| r.error_code)),
        R::DeleteGroups(x) => v.extend(x.results.iter().map(|r| r.error_code)),
        R::IncrementalAlterConfigs(x) => v.extend(x.responses.iter().map(|r| r.error_code)),
        R::OffsetDelete(x) => {
            v.push(x.error_code);
            for t in &x.topics {
                v.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        R::DescribeClientQuotas(x) => v.push(x.error_code),
        R::AlterClientQuotas(x) => v.extend(x.entries.iter().map(|e| e.error_code)),
        R::DescribeUserScramCredentials(x) => {
            v.push(x.error_code);
            v.extend(x.results.iter().map(|r| r.error_code));
        }
        R::AlterUserScramCredentials(x) => v.extend(x.results.iter().map(|r| r.error_code)),
        R::DescribeCluster(x) => v.push(x.error_code),
        R::ConsumerGroupHeartbeat(x) => v.push(x.error_code),
        R::ConsumerGroupDescribe(x) => v.extend(x.groups.iter().map(|g| g.error_code)),
        other => panic!("no error codes read from {other:?}"),
    }
    v
}

/// The admin's view of everything the ACL test's requests could change.
fn state(admin: &mut Conn) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let md = admin.metadata(None);
    let mut topics: Vec<(String, usize)> = md
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.partitions.len(),
            )
        })
        .collect();
    topics.sort();
    out.insert("topics", format!("{topics:?}"));
    let mut offsets = Vec::new();
    for (t, n) in &topics {
        for p in 0..*n as i32 {
            offsets.push((t.clone(), p, admin.offset(t, p, -2), admin.offset(t, p, -1)));
        }
    }
    out.insert("offsets (start, end)", format!("{offsets:?}"));
    let r: OffsetFetchResponse = admin.call(
        ApiKey::OffsetFetch,
        9,
        &OffsetFetchRequest::default().with_groups(
            ["acl-g", "acl-og"]
                .iter()
                .map(|g| {
                    offset_fetch_request::OffsetFetchRequestGroup::default()
                        .with_group_id(gid(g))
                        .with_topics(None)
                })
                .collect(),
        ),
    );
    let committed: Vec<_> = r
        .groups
        .iter()
        .flat_map(|g| {
            g.topics.iter().flat_map(move |t| {
                t.partitions.iter().map(move |p| {
                    (
                        g.group_id.0.to_string(),
                        t.name.0.to_string(),
                        p.partition_index,
                        p.committed_offset,
                    )
                })
            })
        })
        .collect();
    out.insert("committed", format!("{committed:?}"));
    let r: ListGroupsResponse = admin.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let mut groups: Vec<String> = r.groups.iter().map(|g| g.group_id.0.to_string()).collect();
    groups.sort();
    out.insert("groups", format!("{groups:?}"));
    out.insert("acls", format!("{:?}", admin.describe_acls(None)));
    let r: DescribeUserScramCredentialsResponse = admin.call(
        ApiKey::DescribeUserScramCredentials,
        0,
        &DescribeUserScramCredentialsRequest::default().with_users(None),
    );
    let mut users: Vec<String> = r.results.iter().map(|u| u.user.to_string()).collect();
    users.sort();
    out.insert("users", format!("{users:?}"));
    let r: DescribeClientQuotasResponse = admin.call(
        ApiKey::DescribeClientQuotas,
        1,
        &DescribeClientQuotasRequest::default().with_components(vec![]),
    );
    out.insert("quotas", format!("{:?}", r.entries));
    let r: DescribeConfigsResponse = admin.call(
        ApiKey::DescribeConfigs,
        4,
        &DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("acl-t"))
                .with_configuration_keys(Some(vec![s("retention.ms")])),
        ]),
    );
    let retention: Vec<_> = r
        .results
        .iter()
        .flat_map(|x| {
            x.configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.clone()))
        })
        .collect();
    out.insert("acl-t config", format!("{retention:?}"));
    out
}

/// Sends every served api's request as `conn`'s principal; returns each
/// answer by api.
/// Sends every served api's request as `conn`'s principal, in every served
/// version (`all_versions`) or the highest; returns each answer.
fn every_api(conn: &mut Conn, f: &Fixture, all_versions: bool) -> Vec<(ApiKey, i16, ResponseKind)> {
    let mut out = Vec::new();
    for &(key, lo, hi) in sluice_kafka::SERVED {
        let api = ApiKey::try_from(key).expect("a known api key");
        if acl_expectation(api).is_none() {
            continue;
        }
        for version in if all_versions { lo } else { hi }..=hi {
            let r = conn.call_kind(api, version, &acl_request(api, version, f));
            out.push((api, version, r));
        }
    }
    out
}

/// Checks a refusal: every error in the answer is the expected code, or,
/// for the filtered apis, the answer shows nothing of the fixture.
fn check_refused(api: ApiKey, version: i16, r: &ResponseKind, expect: Refusal) {
    let got = codes(r);
    match expect {
        Refusal::Code(code) => {
            let errors: Vec<i16> = got.iter().copied().filter(|c| *c != 0).collect();
            assert!(
                !errors.is_empty() && errors.iter().all(|c| *c == code),
                "{api:?} v{version} without ACLs: want {code} throughout, got {got:?} in {r:?}"
            );
        }
        Refusal::Filtered => match r {
            ResponseKind::Metadata(m) => {
                assert_eq!(m.topics.len(), 1, "{m:?}");
                assert_eq!(m.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED, "{m:?}");
                assert!(
                    m.topics[0].partitions.is_empty(),
                    "no partitions shown: {m:?}"
                );
            }
            // Kafka filters ListGroups: no error, none of the groups.
            ResponseKind::ListGroups(l) => {
                assert_eq!(l.error_code, 0, "{l:?}");
                assert!(l.groups.is_empty(), "{api:?} v{version} lists {l:?}");
            }
            other => panic!("{api:?} v{version}: unexpected answer {other:?}"),
        },
    }
}

/// With authorization on, a principal without ACLs is refused every served
/// api with Kafka's code and nothing it sent is applied; granted ACLs
/// (through CreateAcls) serve the same requests; DescribeAcls lists and
/// DeleteAcls removes them; DENY wins; prefixes stop at the prefix; super
/// users need no ACL.
#[test]
fn every_served_api_is_refused_without_acls_and_served_with_them() {
    let b = Broker::start(&Opts {
        authorization: true,
        super_users: Some("User:ops"),
        ..Opts::sasl_plaintext()
    });
    let mut admin = b.admin();
    admin.create_user("alice", "alice-pw");
    admin.create_user("ops", "ops-pw");
    // The fixture, made by the bootstrap admin (a super user: no ACLs).
    admin.create_topic("acl-t", 2);
    admin.create_topic("acl-del", 1);
    admin.create_topic("hidden", 1);
    assert_eq!(admin.produce("acl-t", 0, 3), 0);
    admin.commit("acl-g", "acl-t", 0, 1);
    admin.commit("acl-og", "acl-t", 0, 1);
    admin.commit("other-g", "acl-t", 0, 1);
    admin.commit("acl-mixed", "acl-t", 1, 0);
    admin.commit("acl-mixed", "hidden", 0, 0);
    admin.create_acls(&[Acl::new(
        TOPIC, "bob-t", LITERAL, "User:bob", OP_READ, ALLOW,
    )]);
    let mut f = Fixture {
        t_id: admin.topic_id("acl-t"),
        del_id: admin.topic_id("acl-del"),
        granted: false,
    };
    let before = state(&mut admin);

    // 1. alice, without any ACL: every api refused, nothing applied.
    let mut alice = Conn::login(&b, "alice", "alice-pw");
    let answers = every_api(&mut alice, &f, true);
    let mut apis: Vec<ApiKey> = answers.iter().map(|(a, _, _)| *a).collect();
    apis.dedup();
    assert_eq!(
        apis.len(),
        sluice_kafka::SERVED.len() - 3,
        "every served api but ApiVersions and the SASL ones"
    );
    for (api, version, r) in &answers {
        check_refused(*api, *version, r, acl_expectation(*api).expect("checked"));
    }
    // Metadata of every topic shows none; by id, the name is not told;
    // auto-creation is refused too.
    let all = alice.metadata(None);
    assert!(all.topics.is_empty(), "alice may describe nothing: {all:?}");
    let by_id: MetadataResponse = alice.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(f.t_id),
        ])),
    );
    assert_eq!(by_id.topics.len(), 1, "{by_id:?}");
    assert_eq!(by_id.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED);
    assert_eq!(
        by_id.topics[0].name, None,
        "the id's name is not told: {by_id:?}"
    );
    let auto: MetadataResponse = alice.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
            )
            .with_name(Some(tn("acl-auto")))]))
            .with_allow_auto_topic_creation(true),
    );
    assert_eq!(
        auto.topics[0].error_code, TOPIC_AUTHORIZATION_FAILED,
        "{auto:?}"
    );
    assert_eq!(state(&mut admin), before, "nothing alice sent was applied");
    assert!(
        b.log().contains("request refused by ACLs"),
        "refusals are logged"
    );

    // 2. The ACLs, granted by the admin through the Kafka wire: prefixed on
    // topics and groups, literal on the cluster.
    let grants = vec![
        Acl::new(TOPIC, "acl-", PREFIXED, "User:alice", OP_ALL, ALLOW),
        Acl::new(GROUP, "acl-", PREFIXED, "User:alice", OP_ALL, ALLOW),
        Acl::new(
            CLUSTER,
            "kafka-cluster",
            LITERAL,
            "User:alice",
            OP_ALL,
            ALLOW,
        ),
    ];
    admin.create_acls(&grants);
    let mut listed = admin.describe_acls(Some("User:alice"));
    listed.sort();
    let mut want = grants.clone();
    want.sort();
    assert_eq!(listed, want, "DescribeAcls lists alice's ACLs");
    f.granted = true;
    for (api, _, r) in every_api(&mut alice, &f, false) {
        let got = codes(&r);
        assert!(
            !got.iter().any(|c| AUTHORIZATION_FAILED.contains(c)),
            "{api:?} with ACLs is still refused: {got:?} in {r:?}"
        );
        if must_succeed(api) {
            assert!(
                got.iter().all(|c| *c == 0),
                "{api:?} with ACLs: {got:?} in {r:?}"
            );
        }
    }
    // ... and applied.
    let after = state(&mut admin);
    assert_eq!(admin.offset("acl-t", 0, -2), 1, "DeleteRecords applied");
    assert_eq!(admin.offset("acl-t", 0, -1), 4, "Produce applied");
    assert!(
        after["topics"].contains("(\"acl-new\", 1)"),
        "{}",
        after["topics"]
    );
    assert!(
        after["topics"].contains("(\"acl-t\", 3)"),
        "{}",
        after["topics"]
    );
    assert!(!after["topics"].contains("acl-del"), "{}", after["topics"]);
    assert!(after["users"].contains("mallory"), "{}", after["users"]);
    assert!(after["quotas"].contains("mallory"), "{}", after["quotas"]);
    assert!(
        after["acl-t config"].contains("3600000"),
        "{}",
        after["acl-t config"]
    );
    assert!(
        !after["committed"].contains("acl-og"),
        "{}",
        after["committed"]
    );
    assert!(after["groups"].contains("acl-848"), "{}", after["groups"]);
    let mut acls = grants.clone();
    acls.push(Acl::new(
        TOPIC, "bob-t", LITERAL, "User:bob", OP_READ, ALLOW,
    ));
    acls.sort();
    assert_eq!(
        admin.describe_acls(None),
        acls,
        "bob-t2 made and removed by alice"
    );

    // 3. DENY wins over ALLOW: reading acl-t is denied, writing still allowed.
    admin.create_acls(&[Acl::new(
        TOPIC,
        "acl-t",
        LITERAL,
        "User:alice",
        OP_READ,
        DENY,
    )]);
    let fetch = alice.call_kind(ApiKey::Fetch, 17, &acl_request(ApiKey::Fetch, 17, &f));
    check_refused(
        ApiKey::Fetch,
        17,
        &fetch,
        Refusal::Code(TOPIC_AUTHORIZATION_FAILED),
    );
    let produced: ProduceResponse = alice.call(ApiKey::Produce, 11, &produce_req("acl-t", 1, 1));
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    // A prefix stops at its prefix: `hidden` is neither writable nor listed.
    let p: ProduceResponse = alice.call(ApiKey::Produce, 11, &produce_req("hidden", 0, 1));
    assert_eq!(
        p.responses[0].partition_responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    // Groups likewise: with DESCRIBE on `acl-` groups only (no cluster
    // DESCRIBE any more), ListGroups shows those and not `other-g`.
    admin.create_acls(&[Acl::new(
        CLUSTER,
        "kafka-cluster",
        LITERAL,
        "User:alice",
        OP_DESCRIBE,
        DENY,
    )]);
    let lg: ListGroupsResponse = alice.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    let mut groups: Vec<String> = lg.groups.iter().map(|g| g.group_id.0.to_string()).collect();
    groups.sort();
    assert!(
        groups.contains(&"acl-848".to_string()) && groups.iter().all(|g| g.starts_with("acl-")),
        "alice lists groups {groups:?}"
    );
    let all: ListGroupsResponse = admin.call(ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert!(all
        .groups
        .iter()
        .any(|g| g.group_id.0.as_str() == "other-g"));
    // OffsetFetch of every topic of a group alice may describe: not the
    // offsets of topics she may not.
    let of: OffsetFetchResponse = alice.call(
        ApiKey::OffsetFetch,
        9,
        &OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(gid("acl-mixed"))
                .with_topics(None),
        ]),
    );
    let seen: Vec<&str> = of.groups[0]
        .topics
        .iter()
        .map(|t| t.name.0.as_str())
        .collect();
    assert_eq!(seen, ["acl-t"], "{of:?}");
    let listed: Vec<String> = alice
        .metadata(None)
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect();
    assert!(
        listed.contains(&"acl-t".to_string()) && !listed.contains(&"hidden".to_string()),
        "alice lists {listed:?}"
    );

    // 4. DeleteAcls removes alice's ACLs (all five match the filter); she is
    // refused again at once, on the same connection.
    let r: DeleteAclsResponse = admin.call(
        ApiKey::DeleteAcls,
        3,
        &DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_host_filter(None)
                .with_resource_name_filter(None)
                .with_resource_type_filter(ANY)
                .with_pattern_type_filter(ANY)
                .with_principal_filter(Some(s("User:alice")))
                .with_operation(ANY)
                .with_permission_type(ANY),
        ]),
    );
    assert_eq!(r.filter_results[0].error_code, 0, "{r:?}");
    assert_eq!(r.filter_results[0].matching_acls.len(), 5, "{r:?}");
    assert!(admin.describe_acls(Some("User:alice")).is_empty());
    let p: ProduceResponse = alice.call(ApiKey::Produce, 11, &produce_req("acl-t", 0, 1));
    assert_eq!(
        p.responses[0].partition_responses[0].error_code,
        TOPIC_AUTHORIZATION_FAILED
    );
    assert!(alice.metadata(None).topics.is_empty());

    // 5. A super user from the config needs no ACL.
    let mut ops = Conn::login(&b, "ops", "ops-pw");
    assert_eq!(ops.produce("hidden", 0, 1), 0);
    ops.create_topic("ops-t", 1);
    let dc: DescribeClusterResponse = ops.call(
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default().with_endpoint_type(1),
    );
    assert_eq!(dc.error_code, 0);
    assert_eq!(
        admin.offset("hidden", 0, -1),
        1,
        "only the super user wrote to hidden"
    );
}
