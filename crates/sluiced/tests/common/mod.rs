//! Shared helpers for the in-process server tests: one framed connection,
//! requests sent and their responses awaited (with a bound) and checked.

#![allow(dead_code)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::wire::{decode_response, encode_request};
use sluice_protocol::{ApiKey, Request, Response};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Settings for an in-process broker on `dir` with ephemeral loopback
/// ports (add fields with `..loopback(dir)`).
pub fn loopback(dir: &std::path::Path) -> sluice_broker::ConfigLayer {
    sluice_broker::ConfigLayer {
        data_dir: Some(dir.to_path_buf()),
        listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        http_listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        kafka_listen: Some("127.0.0.1:0".into()),
        ..sluice_broker::ConfigLayer::default()
    }
}

/// A framed native-protocol connection.
pub type Conn = Framed<TcpStream, FrameCodec>;

/// Sends a raw request payload (no length prefix) and reads its answer to `api`,
/// which must carry correlation id `id`.
pub async fn send_raw(conn: &mut Conn, payload: Bytes, api: ApiKey, id: u32) -> Response {
    conn.send(payload).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(20), conn.next())
        .await
        .expect("response in time")
        .expect("connection open")
        .expect("valid frame");
    let (cid, resp) = decode_response(api, frame).unwrap();
    assert_eq!(cid, id);
    resp
}

/// Sends `req` with correlation id `id` and returns its response.
pub async fn call(conn: &mut Conn, id: u32, req: &Request) -> Response {
    let mut buf = BytesMut::new();
    encode_request(id, "test", req, &mut buf);
    // encode_request writes the length prefix; the codec adds its own, so strip it.
    send_raw(conn, buf.split_off(4).freeze(), req.api_key(), id).await
}
