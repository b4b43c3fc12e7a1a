//! The controller's frames on the cluster listener, and openraft's network on them.
//!
//! ## Frame
//!
//! | bytes | field                                                           |
//! |-------|-----------------------------------------------------------------|
//! | 4     | `len` u32 big-endian: payload length, excluding `kind` (≤ [`MAX_FRAME`]) |
//! | 1     | `kind` u8 (table below)                                         |
//! | len   | payload: serde_json                                             |
//!
//! | kind | direction | payload                                                        |
//! |------|-----------|----------------------------------------------------------------|
//! | 1    | request   | openraft `AppendEntriesRequest`                                |
//! | 2    | request   | openraft `VoteRequest`                                         |
//! | 3    | request   | openraft `InstallSnapshotRequest`                              |
//! | 4    | request   | client write: a [`MetadataCommand`] forwarded to the leader    |
//! | 5    | request   | join: a [`JoinRequest`] from a broker-only node                |
//! | 6    | request   | broker heartbeat: a [`HeartbeatRequest`] to the leader         |
//! | 0x81 | response  | `Result<AppendEntriesResponse, RaftError>`                     |
//! | 0x82 | response  | `Result<VoteResponse, RaftError>`                              |
//! | 0x83 | response  | `Result<InstallSnapshotResponse, RaftError<InstallSnapshotError>>` |
//! | 0x84 | response  | [`ClientWriteReply`]                                           |
//! | 0x85 | response  | [`JoinReply`]                                                  |
//! | 0x86 | response  | [`HeartbeatReply`]                                             |
//!
//! A connection carries one request at a time; the response has kind
//! `0x80 | request kind`. `len` is checked against [`MAX_FRAME`] before the
//! payload is allocated. An unknown kind or an undecodable payload closes the
//! connection with a log line. Every request the client side sends has a
//! timeout; a peer that closes or does not answer is an error for that call,
//! and the next call reconnects.
//!
//! With [`ClusterTls`] set (the broker's `cluster_tls`), the listener runs
//! a TLS handshake (bounded by [`TLS_HANDSHAKE_TIMEOUT`], in the
//! connection's task) before the first frame, and every client connection
//! ([`PeerClient`]) opens with one, trusting the cluster CA and presenting
//! the node's own certificate. The frames are the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_tls::{Connector, MaybeTlsStream, ServerTls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::raft::TypeConfig;
use crate::{ClusterError, CommandResult, MetadataCommand, NodeId, Result};

/// Largest frame payload accepted (checked before allocating).
pub const MAX_FRAME: u32 = 64 << 20;

/// Frame kind: AppendEntries request.
pub const KIND_APPEND: u8 = 1;
/// Frame kind: Vote request.
pub const KIND_VOTE: u8 = 2;
/// Frame kind: InstallSnapshot request.
pub const KIND_SNAPSHOT: u8 = 3;
/// Frame kind: a client write forwarded to the leader.
pub const KIND_CLIENT_WRITE: u8 = 4;
/// Frame kind: a broker-only node asks to join as a learner.
pub const KIND_JOIN: u8 = 5;
/// Frame kind: a broker's heartbeat to the controller leader.
pub const KIND_HEARTBEAT: u8 = 6;
/// Bit set in the kind of every response.
pub const KIND_RESPONSE: u8 = 0x80;

/// How long an accepted cluster connection may take to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS of the cluster listener and of this node's connections to the others.
#[derive(Clone, Default)]
pub struct ClusterTls {
    /// The node's identity: the listener runs TLS with it when set.
    pub identity: Option<Arc<ServerTls>>,
    /// How this node connects to the others' cluster listeners.
    pub connector: Connector,
    /// Called once per failed or timed-out handshake on the listener (a metric).
    pub on_handshake_failure: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("listener_tls", &self.identity.is_some())
            .field("connector", &self.connector)
            .finish()
    }
}

/// The answer to a forwarded client write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientWriteReply {
    /// Committed and applied with this result.
    Applied(CommandResult),
    /// This node is not the leader; the leader it knows of, if any.
    ForwardToLeader(Option<NodeId>),
    /// Raft refused or failed the write.
    Failed(String),
}

/// A broker-only node's request to join the metadata group as a learner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining node's id.
    pub id: NodeId,
    /// Its cluster listener address, as the others reach it.
    pub addr: String,
}

/// The answer to a [`JoinRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReply {
    /// The node is a learner of the group (now or already).
    Joined,
    /// This node is not the leader; the leader and its address, if known.
    ForwardToLeader(Option<NodeId>, Option<String>),
    /// The join is refused for good (the reason says why).
    Refused(String),
    /// Raft failed the membership change; try again.
    Failed(String),
}

/// A broker's periodic sign of life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The broker's id.
    pub id: NodeId,
}

/// The answer to a [`HeartbeatRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// Recorded by the leader.
    Accepted,
    /// This node is not the leader; the leader and its address, if known.
    ForwardToLeader(Option<NodeId>, Option<String>),
}

/// Encodes one frame into `out`.
pub fn encode_frame<T: Serialize>(kind: u8, value: &T, out: &mut Vec<u8>) -> Result<()> {
    let payload = serde_json::to_vec(value)?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| {
            ClusterError::Frame(format!("frame of {} bytes too large", payload.len()))
        })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes one frame at the start of `buf`: `Ok(None)` if incomplete, else
/// `(kind, payload, bytes consumed)`.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(u8, &[u8], usize)>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > MAX_FRAME {
        return Err(ClusterError::Frame(format!(
            "frame length {len} exceeds {MAX_FRAME}"
        )));
    }
    let end = 5 + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((buf[4], &buf[5..end], end)))
}

/// Reads one frame from a stream; `Ok(None)` on a clean end of stream.
pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match s.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(ClusterError::Net(e)),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len > MAX_FRAME {
        return Err(ClusterError::Frame(format!(
            "frame length {len} exceeds {MAX_FRAME}"
        )));
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)
        .await
        .map_err(ClusterError::Net)?;
    Ok(Some((head[4], payload)))
}

async fn write_frame<S: AsyncWrite + Unpin, T: Serialize>(
    s: &mut S,
    kind: u8,
    value: &T,
) -> Result<()> {
    let mut buf = Vec::new();
    encode_frame(kind, value, &mut buf)?;
    s.write_all(&buf).await.map_err(ClusterError::Net)?;
    // A TLS stream holds written bytes in its buffer until flushed.
    s.flush().await.map_err(ClusterError::Net)
}

/// A connection to one peer, reconnected after any failure.
#[derive(Debug)]
pub struct PeerClient {
    addr: String,
    conn: Option<MaybeTlsStream>,
    timeout: Duration,
    connector: Connector,
}

impl PeerClient {
    /// A plain-TCP client for the peer at `addr`; each request times out after `timeout`.
    pub fn new(addr: String, timeout: Duration) -> Self {
        PeerClient::with_connector(addr, timeout, Connector::plain())
    }

    /// A client that connects with `connector` (TLS when the cluster runs it).
    pub fn with_connector(addr: String, timeout: Duration, connector: Connector) -> Self {
        PeerClient {
            addr,
            conn: None,
            timeout,
            connector,
        }
    }

    /// Sends one request and waits (bounded) for its response.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: u8,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp> {
        let timeout = timeout.unwrap_or(self.timeout);
        match tokio::time::timeout(timeout, self.call_inner(kind, req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(ClusterError::Timeout(self.addr.clone()))
            }
        }
    }

    async fn call_inner<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        kind: u8,
        req: &Req,
    ) -> Result<Resp> {
        if self.conn.is_none() {
            // The TLS handshake, if any, is inside the call's timeout.
            let s = self
                .connector
                .connect(&self.addr)
                .await
                .map_err(ClusterError::Net)?;
            self.conn = Some(s);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClusterError::Frame("no connection".into()));
        };
        write_frame(conn, kind, req).await?;
        match read_frame(conn).await? {
            None => Err(ClusterError::Net(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed the connection",
            ))),
            Some((k, payload)) if k == KIND_RESPONSE | kind => {
                Ok(serde_json::from_slice(&payload)?)
            }
            Some((k, _)) => Err(ClusterError::Frame(format!(
                "response kind {k:#x} to request kind {kind}"
            ))),
        }
    }
}

/// openraft's network factory over [`PeerClient`]s.
#[derive(Debug, Clone)]
pub struct Network {
    /// Per-request timeout when openraft gives none.
    pub timeout: Duration,
    /// How peers are connected to (plain or TLS).
    pub connector: Connector,
}

/// openraft's network to one peer.
#[derive(Debug)]
pub struct PeerNetwork {
    target: NodeId,
    client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            target,
            client: PeerClient::with_connector(
                node.addr.clone(),
                self.timeout,
                self.connector.clone(),
            ),
        }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl PeerNetwork {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &mut self,
        kind: u8,
        req: &Req,
        option: &RPCOption,
    ) -> std::result::Result<Resp, RpcErr<E>> {
        let reply: std::result::Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(kind, req, Some(option.hard_ttl()))
            .await
            .map_err(|e| match e {
                ClusterError::Net(ref io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.rpc(KIND_APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.rpc(KIND_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<NodeId>, RpcErr> {
        self.rpc(KIND_VOTE, &rpc, &option).await
    }
}

/// Runs a client write on this node's Raft and says what happened.
pub async fn local_client_write(raft: &Raft<TypeConfig>, cmd: MetadataCommand) -> ClientWriteReply {
    use openraft::error::ClientWriteError;
    match raft.client_write(cmd).await {
        Ok(r) => ClientWriteReply::Applied(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            ClientWriteReply::ForwardToLeader(f.leader_id)
        }
        Err(e) => ClientWriteReply::Failed(e.to_string()),
    }
}

/// What the listener needs besides Raft: join and heartbeat handling.
pub trait Membership: Send + Sync + 'static {
    /// Handles a join request.
    fn join(&self, req: JoinRequest) -> impl std::future::Future<Output = JoinReply> + Send;
    /// Handles a heartbeat.
    fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatReply;
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin, M: Membership>(
    mut s: S,
    raft: Raft<TypeConfig>,
    members: std::sync::Arc<M>,
) -> Result<()> {
    while let Some((kind, payload)) = read_frame(&mut s).await? {
        match kind {
            KIND_APPEND => {
                let req: AppendEntriesRequest<TypeConfig> = serde_json::from_slice(&payload)?;
                write_frame(
                    &mut s,
                    KIND_RESPONSE | kind,
                    &raft.append_entries(req).await,
                )
                .await?;
            }
            KIND_VOTE => {
                let req: VoteRequest<NodeId> = serde_json::from_slice(&payload)?;
                write_frame(&mut s, KIND_RESPONSE | kind, &raft.vote(req).await).await?;
            }
            KIND_SNAPSHOT => {
                let req: InstallSnapshotRequest<TypeConfig> = serde_json::from_slice(&payload)?;
                let resp = raft.install_snapshot(req).await;
                write_frame(&mut s, KIND_RESPONSE | kind, &resp).await?;
            }
            KIND_CLIENT_WRITE => {
                let cmd: MetadataCommand = serde_json::from_slice(&payload)?;
                // The caller gives up after 5 s; a leader that cannot commit
                // (cut off from the others) must not hold the connection longer.
                let reply = match tokio::time::timeout(
                    Duration::from_secs(5),
                    local_client_write(&raft, cmd),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => ClientWriteReply::Failed("commit timed out".into()),
                };
                write_frame(&mut s, KIND_RESPONSE | kind, &reply).await?;
            }
            KIND_JOIN => {
                let req: JoinRequest = serde_json::from_slice(&payload)?;
                let reply = members.join(req).await;
                write_frame(&mut s, KIND_RESPONSE | kind, &reply).await?;
            }
            KIND_HEARTBEAT => {
                let req: HeartbeatRequest = serde_json::from_slice(&payload)?;
                let reply = members.heartbeat(req);
                write_frame(&mut s, KIND_RESPONSE | kind, &reply).await?;
            }
            other => return Err(ClusterError::Frame(format!("unknown frame kind {other}"))),
        }
    }
    Ok(())
}

/// Runs the TLS handshake of an accepted connection when `tls` has an
/// identity; `None` (logged, counted) when it fails or times out.
async fn establish(
    s: TcpStream,
    peer: std::net::SocketAddr,
    tls: &ClusterTls,
) -> Option<MaybeTlsStream> {
    let Some(identity) = &tls.identity else {
        return Some(MaybeTlsStream::Plain(s));
    };
    let acceptor = identity.acceptor();
    let failure = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
        Ok(Ok(s)) => return Some(s.into()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no handshake within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
    };
    if let Some(count) = &tls.on_handshake_failure {
        count();
    }
    tracing::warn!(%peer, reason = %failure, "cluster listener: TLS handshake failed; connection closed");
    None
}

/// Accepts cluster connections and serves them until the task is aborted.
pub async fn serve<M: Membership>(
    listener: TcpListener,
    tls: ClusterTls,
    raft: Raft<TypeConfig>,
    members: std::sync::Arc<M>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, peer)) => {
                    let _ = s.set_nodelay(true);
                    let (raft, members) = (raft.clone(), std::sync::Arc::clone(&members));
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let Some(s) = establish(s, peer, &tls).await else {
                            return;
                        };
                        if let Err(e) = serve_conn(s, raft, members).await {
                            tracing::debug!(%peer, error = %e, "cluster connection closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Voter addresses as openraft nodes.
pub fn nodes(voters: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, BasicNode> {
    voters
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_limits() {
        let cmd = MetadataCommand::DeleteTopic { name: "t".into() };
        let mut buf = Vec::new();
        encode_frame(KIND_CLIENT_WRITE, &cmd, &mut buf).expect("encode");
        let payload_len = buf.len() - 5;
        assert_eq!(&buf[..4], &(payload_len as u32).to_be_bytes());
        assert_eq!(buf[4], KIND_CLIENT_WRITE);
        for cut in 0..buf.len() {
            assert!(decode_frame(&buf[..cut]).expect("partial").is_none());
        }
        buf.extend_from_slice(b"next");
        let (kind, payload, used) = decode_frame(&buf).expect("ok").expect("whole");
        assert_eq!(kind, KIND_CLIENT_WRITE);
        assert_eq!(used, 5 + payload_len);
        let back: MetadataCommand = serde_json::from_slice(payload).expect("decode");
        assert_eq!(back, cmd);
        let huge = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(matches!(decode_frame(&huge), Err(ClusterError::Frame(_))));
    }

    #[tokio::test]
    async fn vanished_peer_is_an_error_not_a_hang() {
        // A listener that accepts and closes without answering.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let accept = tokio::spawn(async move {
            for _ in 0..2 {
                if let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }
        });
        let mut c = PeerClient::new(addr.clone(), Duration::from_secs(2));
        let r: Result<ClientWriteReply> = c
            .call(
                KIND_CLIENT_WRITE,
                &MetadataCommand::DeleteTopic { name: "t".into() },
                None,
            )
            .await;
        assert!(r.is_err());
        accept.abort();
        // A listener that accepts and never answers: the timeout fires.
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let hold = tokio::spawn(async move {
            let conn = l.accept().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(conn);
        });
        let mut c = PeerClient::new(addr, Duration::from_millis(200));
        let r: Result<ClientWriteReply> = c
            .call(
                KIND_CLIENT_WRITE,
                &MetadataCommand::DeleteTopic { name: "t".into() },
                None,
            )
            .await;
        assert!(matches!(r, Err(ClusterError::Timeout(_))));
        hold.abort();
    }

    /// The cluster listener's TLS: a peer with the cluster's certificate
    /// gets its answer over TLS; a plaintext peer is refused in the
    /// handshake and counted.
    #[tokio::test]
    async fn tls_peers_are_served_and_plaintext_ones_refused() {
        use sluice_tls::testing::Pki;
        use sluice_tls::{ClientAuth, TlsServerFiles};
        use std::sync::atomic::{AtomicU64, Ordering};

        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new(dir.path(), "cluster");
        let leaf = pki.server("node", "node");
        let identity = Arc::new(
            ServerTls::load(TlsServerFiles {
                cert: leaf.cert,
                key: leaf.key,
                ca: Some(pki.ca_file.clone()),
                client_auth: ClientAuth::Required,
            })
            .expect("identity"),
        );
        let failures = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&failures);
        let tls = ClusterTls {
            identity: Some(Arc::clone(&identity)),
            connector: Connector::peer(Arc::clone(&identity)),
            on_handshake_failure: Some(Arc::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            })),
        };
        // A listener that answers each heartbeat frame (over `establish`).
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server_tls = tls.clone();
        let server = tokio::spawn(async move {
            while let Ok((s, peer)) = l.accept().await {
                let tls = server_tls.clone();
                tokio::spawn(async move {
                    let Some(mut s) = establish(s, peer, &tls).await else {
                        return;
                    };
                    while let Ok(Some((kind, _))) = read_frame(&mut s).await {
                        let reply = HeartbeatReply::Accepted;
                        if write_frame(&mut s, KIND_RESPONSE | kind, &reply)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        let mut c = PeerClient::with_connector(addr.clone(), Duration::from_secs(5), tls.connector);
        for _ in 0..3 {
            let r: HeartbeatReply = c
                .call(KIND_HEARTBEAT, &HeartbeatRequest { id: 7 }, None)
                .await
                .expect("answered over TLS");
            assert_eq!(r, HeartbeatReply::Accepted);
        }
        assert_eq!(failures.load(Ordering::Relaxed), 0);
        let mut plain = PeerClient::new(addr, Duration::from_secs(5));
        let r: Result<HeartbeatReply> = plain
            .call(KIND_HEARTBEAT, &HeartbeatRequest { id: 8 }, None)
            .await;
        assert!(r.is_err(), "a plaintext peer was answered: {r:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while failures.load(Ordering::Relaxed) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the failure was not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    }
}
