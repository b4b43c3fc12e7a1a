//! The cluster fields on the wire, served by a single node: Metadata and
//! CreateTopics answer a v0 client in the v0 layout and a v1 client in the
//! v1 layout, a replication factor above the one live broker is refused
//! with INVALID_REPLICATION_FACTOR and creates nothing, and DescribeCluster
//! describes the node as its own controller.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::*;
use sluiced::Server;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A framed native-protocol connection.
type Conn = Framed<TcpStream, FrameCodec>;

/// Sends `req` as `version` and returns the raw response payload.
async fn call_raw(conn: &mut Conn, id: u32, version: u16, req: &Request) -> Bytes {
    let mut buf = BytesMut::new();
    encode_request_version(id, version, "test", req, &mut buf);
    conn.send(buf.split_off(4).freeze()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), conn.next())
        .await
        .expect("response in time")
        .expect("connection open")
        .expect("valid frame")
}

/// Sends `req` as `version` and decodes the answer in that version's layout
/// (the decoder refuses trailing bytes, so a body of another layout fails).
async fn call_v(conn: &mut Conn, id: u32, version: u16, req: &Request) -> Response {
    let payload = call_raw(conn, id, version, req).await;
    let (cid, resp) = decode_response_version(req.api_key(), version, payload).unwrap();
    assert_eq!(cid, id);
    resp
}

fn create(name: &str, replication_factor: i16) -> Request {
    Request::CreateTopics(CreateTopicsRequest {
        topics: vec![CreateTopic {
            name: name.into(),
            partitions: 2,
            replication_factor,
            configs: vec![],
        }],
    })
}

fn metadata(topics: &[&str]) -> Request {
    Request::Metadata(MetadataRequest {
        topics: topics.iter().map(|t| t.to_string()).collect(),
    })
}

fn created(resp: Response) -> TopicResult {
    match resp {
        Response::CreateTopics(mut r) => {
            assert_eq!(r.topics.len(), 1);
            r.topics.remove(0)
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn meta(resp: Response) -> MetadataResponse {
    match resp {
        Response::Metadata(m) => m,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn metadata_and_create_topics_answer_each_client_in_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::loopback(dir.path()).resolve().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.native_addr();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));

    // ApiVersions lists the new versions and the new api.
    let Response::ApiVersions(v) = call_v(&mut conn, 1, 0, &Request::ApiVersions).await else {
        panic!("no ApiVersions answer")
    };
    assert_eq!(ApiKey::Metadata.negotiate(&v.apis), Some(1));
    assert_eq!(ApiKey::CreateTopics.negotiate(&v.apis), Some(1));
    assert_eq!(ApiKey::DescribeCluster.negotiate(&v.apis), Some(0));

    // A v0 client creates a topic and reads v0 metadata. (v0 has no factor on
    // the wire: the 0 here, refused in v1, is never sent.)
    assert_eq!(
        created(call_v(&mut conn, 2, 0, &create("old", 0)).await).error,
        ErrorCode::None
    );
    let v0_raw = call_raw(&mut conn, 3, 0, &metadata(&["old"])).await;
    let (_, v0) = decode_response(ApiKey::Metadata, v0_raw.clone()).unwrap();
    let v0 = meta(v0);
    assert_eq!(v0.controller_id, NO_CONTROLLER, "v0 carries no controller");
    assert_eq!(v0.brokers.len(), 1);
    assert_eq!(v0.brokers[0].port, addr.port());
    let p = &v0.topics[0].partitions;
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|p| p.replicas.is_empty() && p.isr.is_empty()));
    // Byte for byte the v0 layout: re-encoding the decoded answer as v0 gives the same frame.
    let mut again = BytesMut::new();
    encode_response(3, &Response::Metadata(v0.clone()), &mut again);
    assert_eq!(&again[4..], &v0_raw[..]);
    // The same body is not a v1 body.
    assert!(decode_response_version(ApiKey::Metadata, 1, v0_raw).is_err());

    // A v1 client sees the single node as its own controller and sole replica.
    let v1 = meta(call_v(&mut conn, 4, 1, &metadata(&["old"])).await);
    assert_eq!(v1.controller_id, 0);
    assert_eq!(v1.cluster_id, sluice_broker::SINGLE_NODE_CLUSTER_ID);
    assert_eq!(v1.brokers[0].node_id, 0);
    assert_eq!(v1.brokers[0].rack, None);
    for p in &v1.topics[0].partitions {
        assert_eq!((p.leader, p.leader_epoch), (0, 0));
        assert_eq!(p.replicas, vec![0]);
        assert_eq!(p.isr, vec![0]);
    }

    // v1 CreateTopics: -1 and 1 are accepted on one broker.
    for (i, (name, rf)) in [("dflt", -1), ("one", 1)].into_iter().enumerate() {
        let r = created(call_v(&mut conn, 10 + i as u32, 1, &create(name, rf)).await);
        assert_eq!(r.error, ErrorCode::None, "{name}: {}", r.message);
    }
    // 2 (and 3) exceed the one live broker; 0 and -2 are never valid.
    for (i, rf) in [2i16, 3, 0, -2, i16::MIN].into_iter().enumerate() {
        let name = format!("refused{i}");
        let r = created(call_v(&mut conn, 20 + i as u32, 1, &create(&name, rf)).await);
        assert_eq!(r.error, ErrorCode::InvalidReplicationFactor, "factor {rf}");
        assert_eq!(r.error.code(), 32);
        if rf > 1 {
            assert!(
                r.message.contains("1 broker available"),
                "factor {rf}: {}",
                r.message
            );
        } else {
            assert!(
                r.message.contains("at least 1"),
                "factor {rf}: {}",
                r.message
            );
        }
        // Nothing was created: not in metadata, not on disk.
        let m = meta(call_v(&mut conn, 40 + i as u32, 1, &metadata(&[&name])).await);
        assert_eq!(m.topics[0].error, ErrorCode::UnknownTopicOrPartition);
        assert!(!dir.path().join(&name).exists(), "{name} has a directory");
    }
    let all = meta(call_v(&mut conn, 50, 1, &metadata(&[])).await);
    let mut names: Vec<&str> = all.topics.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["dflt", "old", "one"]);

    // DescribeCluster: the node itself, alive, controller of term 0.
    let Response::DescribeCluster(c) = call_v(&mut conn, 60, 0, &Request::DescribeCluster).await
    else {
        panic!("no DescribeCluster answer")
    };
    assert_eq!(c.error, ErrorCode::None);
    assert_eq!((c.controller_id, c.controller_epoch), (0, 0));
    assert_eq!(c.cluster_id, v1.cluster_id);
    assert_eq!(c.brokers.len(), 1);
    let b = &c.brokers[0];
    assert_eq!((b.node_id, b.port, b.alive), (0, addr.port(), true));
    assert_eq!(b.host, addr.ip().to_string());
    assert_eq!(b.rack, None);

    // Version 2 of Metadata is not served: an error response, the connection stays.
    let Response::Error(code) = call_v(&mut conn, 70, 2, &metadata(&[])).await else {
        panic!("v2 answered")
    };
    assert_eq!(code, ErrorCode::UnsupportedVersion);
    assert!(matches!(
        call_v(&mut conn, 71, 0, &metadata(&[])).await,
        Response::Metadata(_)
    ));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
}
