//! The security metadata in a three-node cluster, over the Kafka wire with
//! SASL/SCRAM: a user created through one node (AlterUserScramCredentials)
//! logs in on another, ACLs created through a third apply everywhere, the
//! bootstrap admin reaches the cluster metadata, and after a SIGKILL and
//! restart the node still knows the user and the ACLs (they live in the
//! controller's Raft log, never as a password: only salted keys).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use common::cluster::{ClusterSpec, TestCluster};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use sluice_auth::scram::{ScramClient, ScramMechanism};

/// Bound of a security change reaching every node.
const SEEN: Duration = Duration::from_secs(30);

/// A blocking Kafka connection for this test.
struct Kafka {
    s: TcpStream,
    cid: i32,
}

impl Kafka {
    fn connect(addr: SocketAddr) -> Kafka {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Kafka { s, cid: 0 }
    }

    fn call<R: Encodable + HeaderVersion, P: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &R,
    ) -> Result<P, String> {
        self.cid += 1;
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.cid)
            .with_client_id(Some(StrBytes::from_static_str("cluster-security")))
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.s.write_all(&buf).map_err(|e| e.to_string())?;
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut body).map_err(|e| e.to_string())?;
        let mut b = Bytes::from(body);
        assert_eq!(b.get_i32(), self.cid);
        if key.response_header_version(version) >= 1 {
            b.get_u8();
        }
        P::decode(&mut b, version).map_err(|e| e.to_string())
    }

    /// SCRAM login; `Err` carries the broker's error code and message.
    fn login(addr: SocketAddr, m: ScramMechanism, user: &str, pw: &str) -> Result<Kafka, String> {
        let mut k = Kafka::connect(addr);
        let hs: SaslHandshakeResponse = k.call(
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(m.name())),
        )?;
        if hs.error_code != 0 {
            return Err(format!("handshake {}", hs.error_code));
        }
        let mut c = ScramClient::new(m, user, pw);
        let first: SaslAuthenticateResponse = k.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(c.first())),
        )?;
        if first.error_code != 0 {
            return Err(format!("{} {:?}", first.error_code, first.error_message));
        }
        let fin = c.finish(&first.auth_bytes).map_err(|e| e.to_string())?;
        let last: SaslAuthenticateResponse = k.call(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(fin)),
        )?;
        if last.error_code != 0 {
            return Err(format!("{} {:?}", last.error_code, last.error_message));
        }
        c.verify(&last.auth_bytes).map_err(|e| e.to_string())?;
        Ok(k)
    }

    /// Retries a login until it works (a change still travelling to this node).
    fn login_within(
        addr: SocketAddr,
        m: ScramMechanism,
        user: &str,
        pw: &str,
        within: Duration,
    ) -> Kafka {
        let start = Instant::now();
        loop {
            match Kafka::login(addr, m, user, pw) {
                Ok(k) => return k,
                Err(e) if start.elapsed() > within => panic!("{user} cannot log in at {addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    fn metadata_error(&mut self, topic: &str) -> i16 {
        let r: MetadataResponse = self
            .call(
                ApiKey::Metadata,
                12,
                &MetadataRequest::default()
                    .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                    )
                    .with_name(Some(TopicName(StrBytes::from_string(topic.into()))))]))
                    .with_allow_auto_topic_creation(true),
            )
            .expect("metadata");
        r.topics[0].error_code
    }
}

#[test]
fn users_and_acls_live_in_the_cluster_metadata() {
    let mut c = TestCluster::start(ClusterSpec::voters(3).extra_args(&[
        "--kafka-security",
        "sasl_plaintext",
        "--authorization",
        "true",
        "--admin-user",
        "root",
        "--admin-password",
        "root-secret",
        // The harness drives the plaintext native listener anonymously.
        "--super-users",
        "User:ANONYMOUS",
    ]));
    let k = |id| c.node(id).kafka_addr;
    let (a1, a2, a3) = (k(1), k(2), k(3));

    // The bootstrap admin reaches the cluster metadata and logs in anywhere.
    let mut root1 = Kafka::login_within(a1, ScramMechanism::Sha256, "root", "root-secret", SEEN);
    Kafka::login_within(a3, ScramMechanism::Sha512, "root", "root-secret", SEEN);

    // Create alice through node 1 (salted password computed here, as Kafka clients do).
    let salt = b"0123456789abcdef".to_vec();
    let salted = ScramMechanism::Sha512
        .salted_password(b"alice-pw", &salt, 4096)
        .unwrap();
    let r: AlterUserScramCredentialsResponse = root1
        .call(
            ApiKey::AlterUserScramCredentials,
            0,
            &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("alice"))
                    .with_mechanism(ScramMechanism::Sha512.kafka_type())
                    .with_iterations(4096)
                    .with_salt(Bytes::from(salt))
                    .with_salted_password(Bytes::from(salted)),
            ]),
        )
        .unwrap();
    assert_eq!(r.results[0].error_code, 0, "{r:?}");

    // An ACL through node 2: alice may describe topics prefixed "sec-".
    let mut root2 = Kafka::login_within(a2, ScramMechanism::Sha256, "root", "root-secret", SEEN);
    let r: CreateAclsResponse = root2
        .call(
            ApiKey::CreateAcls,
            3,
            &CreateAclsRequest::default().with_creations(vec![
                create_acls_request::AclCreation::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("sec-"))
                    .with_resource_pattern_type(4)
                    .with_principal(StrBytes::from_static_str("User:alice"))
                    .with_host(StrBytes::from_static_str("*"))
                    .with_operation(8)
                    .with_permission_type(3),
            ]),
        )
        .unwrap();
    assert_eq!(r.results[0].error_code, 0, "{r:?}");

    // Alice logs in on node 3 with the credential made on node 1, and the
    // ACL made on node 2 applies there.
    let mut alice = Kafka::login_within(a3, ScramMechanism::Sha512, "alice", "alice-pw", SEEN);
    let deadline = Instant::now() + SEEN;
    while alice.metadata_error("sec-orders") == 29 {
        assert!(Instant::now() < deadline, "the ACL never reached node 3");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(alice.metadata_error("other"), 29, "no ACL: refused");
    let acls: Result<DescribeAclsResponse, String> = alice.call(
        ApiKey::DescribeAcls,
        3,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    );
    assert_eq!(acls.unwrap().error_code, 31, "alice may not read the ACLs");
    // Wrong password and wrong mechanism: refused.
    assert!(Kafka::login(a2, ScramMechanism::Sha512, "alice", "nope").is_err());
    assert!(Kafka::login(a2, ScramMechanism::Sha256, "alice", "alice-pw").is_err());

    // No password is stored in clear anywhere in the data directories.
    for id in c.ids() {
        for entry in walk(&c.node(id).data_dir) {
            let bytes = std::fs::read(&entry).unwrap_or_default();
            assert!(
                !contains(&bytes, b"alice-pw") && !contains(&bytes, b"root-secret"),
                "a password in clear in {}",
                entry.display()
            );
        }
    }

    // SIGKILL node 1 and restart it: alice and her ACL are still there.
    c.kill(1);
    c.restart(1);
    let mut alice1 = Kafka::login_within(a1, ScramMechanism::Sha512, "alice", "alice-pw", SEEN);
    let deadline = Instant::now() + SEEN;
    while alice1.metadata_error("sec-orders") == 29 {
        assert!(Instant::now() < deadline, "the ACL was lost by the restart");
        std::thread::sleep(Duration::from_millis(300));
    }
    // Deleting the user through node 3 locks her out everywhere.
    let mut root3 = Kafka::login_within(a3, ScramMechanism::Sha256, "root", "root-secret", SEEN);
    let r: AlterUserScramCredentialsResponse = root3
        .call(
            ApiKey::AlterUserScramCredentials,
            0,
            &AlterUserScramCredentialsRequest::default().with_deletions(vec![
                alter_user_scram_credentials_request::ScramCredentialDeletion::default()
                    .with_name(StrBytes::from_static_str("alice"))
                    .with_mechanism(ScramMechanism::Sha512.kafka_type()),
            ]),
        )
        .unwrap();
    assert_eq!(r.results[0].error_code, 0, "{r:?}");
    let deadline = Instant::now() + SEEN;
    while Kafka::login(a1, ScramMechanism::Sha512, "alice", "alice-pw").is_ok() {
        assert!(
            Instant::now() < deadline,
            "a deleted user still logs in on node 1"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if e.metadata().is_ok_and(|m| m.len() < 64 << 20) {
                // Preallocated log segments hold no metadata; skip the big ones.
                out.push(p);
            }
        }
    }
    out
}
