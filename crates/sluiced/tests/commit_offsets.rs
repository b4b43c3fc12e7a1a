//! Issue 9, item 7 (offsets) over a real connection: an OffsetCommit offset
//! is an i64 like the offsets OffsetFetch and DescribeGroups report. An
//! offset above `i64::MAX` on the wire is refused (INVALID_REQUEST, the
//! connection stays usable) and nothing is stored; `i64::MAX` itself is kept
//! and read back exactly. Also: a request over the entry cap or with a bad
//! topic name is answered with a header error, never a dropped connection.

mod common;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_broker::ConfigLayer;
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::*;
use sluiced::Server;

use common::{call, send_raw, Conn};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// A standalone OffsetCommit of `offset` (written as raw u64 bytes) for `t`/0 in group `g`.
fn raw_commit(id: u32, offset: u64) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u16(ApiKey::OffsetCommit as u16);
    b.put_u16(0);
    b.put_u32(id);
    b.put_u16(1);
    b.put_u8(b'c');
    b.put_u16(1);
    b.put_u8(b'g'); // group_id
    b.put_u16(0); // member_id: standalone
    b.put_u32(0); // generation
    b.put_u32(1);
    b.put_u16(1);
    b.put_u8(b't');
    b.put_u32(1);
    b.put_u32(0); // partition
    b.put_u64(offset);
    b.put_u16(0); // metadata
    b.freeze()
}

async fn committed(conn: &mut Conn, id: u32) -> (i64, i64) {
    let fetched = match call(
        conn,
        id,
        &Request::OffsetFetch(OffsetFetchRequest {
            group_id: "g".into(),
            topics: vec![TopicPartitions::new("t", vec![0])],
        }),
    )
    .await
    {
        Response::OffsetFetch(r) => {
            assert_eq!(r.error, ErrorCode::None);
            r.topics[0].partitions[0].offset
        }
        other => panic!("{other:?}"),
    };
    let described = match call(
        conn,
        id + 1,
        &Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec!["g".into()],
        }),
    )
    .await
    {
        Response::DescribeGroups(r) => r.groups[0]
            .offsets
            .iter()
            .find(|o| o.topic == "t" && o.partition == 0)
            .map_or(-1, |o| o.committed_offset),
        other => panic!("{other:?}"),
    };
    (fetched, described)
}

#[tokio::test]
async fn commit_offsets_are_refused_or_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigLayer {
        segment_bytes: Some(1 << 20),
        max_request_partitions: Some(8),
        ..common::loopback(dir.path())
    }
    .resolve()
    .unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.native_addr();
    server.broker().create_topic("t", 1, &[]).unwrap();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));

    // Above i64::MAX: refused, nothing stored (it used to be acknowledged and read back clamped).
    for (i, offset) in [u64::MAX, 1u64 << 63].into_iter().enumerate() {
        let id = 10 + i as u32;
        let r = send_raw(&mut conn, raw_commit(id, offset), ApiKey::OffsetCommit, id).await;
        assert_eq!(
            r,
            Response::Error(ErrorCode::InvalidRequest),
            "offset {offset}"
        );
    }
    assert_eq!(committed(&mut conn, 20).await, (-1, -1));

    // i64::MAX is kept exactly, and both read paths agree on it.
    let r = send_raw(
        &mut conn,
        raw_commit(30, i64::MAX as u64),
        ApiKey::OffsetCommit,
        30,
    )
    .await;
    match r {
        Response::OffsetCommit(r) => {
            assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(committed(&mut conn, 31).await, (i64::MAX, i64::MAX));

    // Over the configured entry cap (8): a header error, the connection stays.
    let r = call(
        &mut conn,
        40,
        &Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: (0..9)
                    .map(|partition| ListOffsetsPartition {
                        partition,
                        spec: OffsetSpec::Latest,
                    })
                    .collect(),
            }],
        }),
    )
    .await;
    assert_eq!(r, Response::Error(ErrorCode::InvalidRequest));
    // A bad topic name: INVALID_TOPIC for the whole request.
    let r = call(
        &mut conn,
        41,
        &Request::Metadata(MetadataRequest {
            topics: vec!["a/b".into()],
        }),
    )
    .await;
    assert_eq!(r, Response::Error(ErrorCode::InvalidTopic));
    // Still served.
    assert!(matches!(
        call(&mut conn, 42, &Request::ApiVersions).await,
        Response::ApiVersions(_)
    ));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
}
