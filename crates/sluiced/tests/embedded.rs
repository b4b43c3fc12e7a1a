//! In-process broker test (this file's existence also makes `cargo test
//! --workspace` build the `sluiced` binary that the root black-box tests run).

mod common;

use std::time::Duration;

use sluice_broker::ConfigLayer;
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::*;
use sluiced::Server;

use common::call;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn embedded_server_serves_and_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigLayer {
        segment_bytes: Some(1 << 20),
        ..common::loopback(dir.path())
    }
    .resolve()
    .unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.native_addr();
    let broker = server.broker().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));

    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));
    assert!(matches!(
        call(&mut conn, 1, &Request::ApiVersions).await,
        Response::ApiVersions(_)
    ));
    let mut builder = batch::RecordBatchBuilder::new();
    builder.push(1, Some(b"k"), Some(b"v"), &[]);
    let records = builder.finish();
    let req = Request::Produce(ProduceRequest {
        acks: Acks::Durable,
        timeout_ms: 5000,
        topics: vec![ProduceTopic {
            name: "emb".into(),
            partitions: vec![ProducePartition {
                partition: 0,
                records: records.clone(),
            }],
        }],
    });
    match call(&mut conn, 2, &req).await {
        Response::Produce(r) => assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None),
        other => panic!("unexpected {other:?}"),
    }
    // The same data through the protocol-neutral API.
    let p = broker.partition("emb", 0).unwrap();
    assert_eq!(p.end_offset(), 1);
    assert_eq!(&p.read(0, 1 << 20).unwrap()[..], &records[..]);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
}

#[test]
fn sluiced_binary_prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}
