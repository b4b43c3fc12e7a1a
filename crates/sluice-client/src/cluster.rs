//! Metadata cache and request routing.
//!
//! The client asks Metadata which broker leads each partition and sends
//! partition requests there. The cache is refreshed when a broker answers
//! `NOT_LEADER_FOR_PARTITION`, `LEADER_NOT_AVAILABLE` or
//! `UNKNOWN_TOPIC_OR_PARTITION`, or when a leader's connection fails, and a
//! topic's entry older than `ClientConfig::metadata_max_age` is refreshed
//! (by whoever [`Cluster::cached_partition_count`] tells to) so partitions
//! added to a topic are found. Metadata and FindCoordinator go to the
//! bootstrap broker, and, when it cannot be reached, to each other broker an
//! earlier answer named. A single broker is its own route for everything.
//!
//! Consumer groups: each group has one coordinator broker. The client asks
//! with FindCoordinator (key 17) and caches the answer
//! per group; a broker that does not list key 17 in ApiVersions coordinates
//! every group itself, so its bootstrap connection is used. A group request
//! answered `NOT_COORDINATOR` or `COORDINATOR_NOT_AVAILABLE` (or whose
//! coordinator cannot be reached) forgets the cached coordinator, waits
//! (exponential backoff) and is sent again to the coordinator found anew,
//! at most [`COORDINATOR_ATTEMPTS`] times (see [`Cluster::group_request`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::{
    ApiKey, ErrorCode, FindCoordinatorRequest, MetadataRequest, MetadataResponse, Request, Response,
};

use crate::config::ClientConfig;
use crate::connection::Connection;
use crate::error::{ClientError, Result};
// Looked up per record with keys this process chose: speed over SipHash.
use rustc_hash::FxHashMap as FastMap;

/// What the cache knows about one topic.
#[derive(Debug, Clone)]
pub(crate) struct TopicRoute {
    /// Leader node id per partition, in partition order.
    pub leaders: Vec<u32>,
    /// When this entry was learned (or last claimed for a refresh).
    pub fetched: Instant,
}

#[derive(Default)]
struct State {
    /// Node id -> (advertised address, connection).
    brokers: HashMap<u32, (String, Connection)>,
    topics: FastMap<String, TopicRoute>,
    /// Topics the broker said do not exist, and when (to avoid asking in a tight loop).
    missing: HashMap<String, Instant>,
    /// Group id -> the connection to its coordinator, as last found.
    coordinators: HashMap<String, Connection>,
}

/// Shared routing state of one client (producer, consumer or admin).
pub(crate) struct Cluster {
    config: ClientConfig,
    bootstrap: Connection,
    state: Mutex<State>,
}

/// Whether `e` means the broker could not be reached (another may answer).
/// Longest wait for a Metadata answer (bounded by the request timeout too):
/// a broker that is paused or cut off answers nothing, and the metadata
/// is then asked of the next broker rather than after a whole request timeout.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

fn unreachable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { .. }
            | ClientError::Disconnected { .. }
            | ClientError::Timeout { .. }
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a "topic does not exist" answer is trusted before asking again.
const MISSING_TTL: Duration = Duration::from_millis(100);

/// How many times [`Cluster::group_request`] sends a request (each time to
/// the coordinator found anew) while the answer is `NOT_COORDINATOR` or
/// `COORDINATOR_NOT_AVAILABLE`, or the coordinator cannot be reached.
pub(crate) const COORDINATOR_ATTEMPTS: u32 = 8;

/// First wait before looking a coordinator up again; doubles each attempt.
const COORDINATOR_BACKOFF: Duration = Duration::from_millis(50);

/// Longest wait between two coordinator look-ups.
const COORDINATOR_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The coordinator error a group response carries, if any (for a request
/// naming one group: the first such code found).
fn coordinator_error(response: &Response) -> Option<ErrorCode> {
    let is = |c: &ErrorCode| {
        matches!(
            c,
            ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable
        )
    };
    match response {
        Response::JoinGroup(r) => Some(r.error),
        Response::Heartbeat(r) => Some(r.error),
        Response::LeaveGroup(r) => Some(r.error),
        Response::OffsetFetch(r) => Some(r.error),
        Response::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error))
            .find(is),
        Response::DescribeGroups(r) => r.groups.iter().map(|g| g.error).find(is),
        Response::DeleteGroups(r) => r.groups.iter().map(|g| g.error).find(is),
        _ => None,
    }
    .filter(is)
}

impl Cluster {
    /// A cluster view that starts from `config.bootstrap` (nothing dialled yet).
    pub fn new(config: ClientConfig) -> Arc<Cluster> {
        let bootstrap = Connection::new(config.bootstrap.clone(), config.clone());
        Arc::new(Cluster {
            config,
            bootstrap,
            state: Mutex::new(State::default()),
        })
    }

    /// The client settings every connection of this cluster uses.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The connection to the bootstrap broker (for cluster-wide requests).
    pub fn bootstrap(&self) -> &Connection {
        &self.bootstrap
    }

    /// Sends a Metadata request for `topics` (empty = all), as the highest
    /// version the broker speaks, and updates the cache.
    ///
    /// When the bootstrap broker cannot be reached, every other broker an
    /// earlier answer named is asked in turn: in a cluster, any live broker
    /// answers Metadata.
    pub async fn fetch_metadata(&self, topics: Vec<String>) -> Result<MetadataResponse> {
        let timeout = self.config.request_timeout.min(METADATA_TIMEOUT);
        self.fetch_metadata_within(topics, timeout).await
    }

    /// [`Cluster::fetch_metadata`] waiting at most `timeout` for each broker asked.
    pub async fn fetch_metadata_within(
        &self,
        topics: Vec<String>,
        timeout: Duration,
    ) -> Result<MetadataResponse> {
        let request = Request::Metadata(MetadataRequest { topics });
        let request = &request;
        let response = self
            .on_any_broker(|conn| async move { metadata_from(&conn, request, timeout).await })
            .await?;
        self.update(&response);
        Ok(response)
    }

    /// [`Cluster::fetch_metadata`] with each partition's offsets and size as
    /// its leader reports them (a broker reports only the partitions it
    /// leads; the others read 0). Brokers that do not answer leave zeros.
    pub async fn fetch_metadata_with_offsets(
        &self,
        topics: Vec<String>,
    ) -> Result<MetadataResponse> {
        let mut response = self.fetch_metadata(topics.clone()).await?;
        if response.brokers.len() < 2 {
            return Ok(response);
        }
        let leaders: std::collections::BTreeSet<u32> = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.leader))
            .collect();
        let request = Request::Metadata(MetadataRequest { topics });
        for node in leaders {
            let known = lock(&self.state).brokers.get(&node).map(|(_, c)| c.clone());
            let Some(conn) = known else { continue };
            let timeout = self.config.request_timeout.min(METADATA_TIMEOUT);
            let Ok(theirs) = metadata_from(&conn, &request, timeout).await else {
                continue;
            };
            for t in &mut response.topics {
                let Some(their) = theirs.topics.iter().find(|x| x.name == t.name) else {
                    continue;
                };
                for p in t.partitions.iter_mut().filter(|p| p.leader == node) {
                    if let Some(q) = their.partitions.iter().find(|q| q.partition == p.partition) {
                        p.start_offset = q.start_offset;
                        p.end_offset = q.end_offset;
                        p.size_bytes = q.size_bytes;
                    }
                }
            }
        }
        Ok(response)
    }

    fn update(&self, response: &MetadataResponse) {
        let mut state = lock(&self.state);
        for b in &response.brokers {
            self.known_broker(&mut state, b.node_id, &b.host, b.port);
        }
        for t in &response.topics {
            if t.error == ErrorCode::None {
                let leaders = t.partitions.iter().map(|p| p.leader).collect();
                state.missing.remove(&t.name);
                state.topics.insert(
                    t.name.clone(),
                    TopicRoute {
                        leaders,
                        fetched: Instant::now(),
                    },
                );
            } else {
                state.topics.remove(&t.name);
                if t.error == ErrorCode::UnknownTopicOrPartition {
                    state.missing.insert(t.name.clone(), Instant::now());
                }
            }
        }
    }

    /// The connection to broker `node_id` at `host:port`: the known one
    /// when the address did not change, else a new one (the bootstrap
    /// connection when that is its only address, or the address is not
    /// usable), remembered for the node.
    fn known_broker(&self, state: &mut State, node_id: u32, host: &str, port: u16) -> Connection {
        let addr = self.broker_addr(host, port);
        if let Some((known, conn)) = state.brokers.get(&node_id) {
            if *known == addr {
                return conn.clone();
            }
        }
        // The bootstrap connection serves the broker it reached, but only
        // when it has a single address: with a list it moves to the next
        // address when its broker goes away, and a node's requests would then
        // reach another broker (a producer would get NOT_LEADER for ever).
        let single = crate::connection::split_addrs(&self.config.bootstrap).len() == 1;
        let bootstrap_reached = single
            && (self.bootstrap.connected_addr().as_deref() == Some(addr.as_str())
                || addr == self.config.bootstrap);
        let conn = if bootstrap_reached || port == 0 || is_unspecified(host) {
            self.bootstrap.clone()
        } else {
            Connection::new(addr.clone(), self.config.clone())
        };
        state.brokers.insert(node_id, (addr, conn.clone()));
        conn
    }

    /// The connection to broker `node_id` at `host:port` (see [`Cluster::known_broker`]).
    pub fn broker_at(&self, node_id: u32, host: &str, port: u16) -> Connection {
        self.known_broker(&mut lock(&self.state), node_id, host, port)
    }

    /// The connection to the coordinator of `group`: cached, else found with
    /// FindCoordinator on the bootstrap broker (the bootstrap connection
    /// itself when that broker does not list FindCoordinator).
    pub async fn coordinator(&self, group: &str) -> Result<Connection> {
        if let Some(c) = lock(&self.state).coordinators.get(group) {
            return Ok(c.clone());
        }
        let conn = self.find_coordinator(group).await?;
        lock(&self.state)
            .coordinators
            .insert(group.to_string(), conn.clone());
        Ok(conn)
    }

    /// Forgets the cached coordinator of `group` (the next request looks it up).
    pub fn forget_coordinator(&self, group: &str) {
        lock(&self.state).coordinators.remove(group);
    }

    /// Every broker an earlier Metadata answer named, but the bootstrap.
    fn other_brokers(&self) -> Vec<Connection> {
        let state = lock(&self.state);
        let bootstrap = self.bootstrap.connected_addr();
        state
            .brokers
            .values()
            .filter(|(addr, _)| Some(addr) != bootstrap.as_ref() && *addr != self.config.bootstrap)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// One FindCoordinator round trip on any reachable broker (any broker of
    /// a cluster answers it).
    async fn find_coordinator(&self, group: &str) -> Result<Connection> {
        self.on_any_broker(|conn| async move { self.find_coordinator_via(&conn, group).await })
            .await
    }

    /// `ask` on the bootstrap broker; when it cannot be reached, on each
    /// other known broker in turn until one answers.
    async fn on_any_broker<T, F, Fut>(&self, ask: F) -> Result<T>
    where
        F: Fn(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut result = ask(self.bootstrap.clone()).await;
        if result.as_ref().is_err_and(unreachable) {
            for conn in self.other_brokers() {
                result = ask(conn).await;
                if result.is_ok() {
                    break;
                }
            }
        }
        result
    }

    /// One FindCoordinator round trip on `conn` (`conn` itself when that
    /// broker does not list FindCoordinator: it coordinates every group).
    async fn find_coordinator_via(&self, conn: &Connection, group: &str) -> Result<Connection> {
        if !conn.advertises(ApiKey::FindCoordinator).await? {
            return Ok(conn.clone());
        }
        let request = Request::FindCoordinator(FindCoordinatorRequest {
            group_id: group.to_string(),
        });
        let r = match conn.request(&request).await? {
            Response::FindCoordinator(r) => r,
            other => {
                return Err(ClientError::UnexpectedResponse {
                    request: "FindCoordinator",
                    got: format!("{other:?}").chars().take(120).collect(),
                })
            }
        };
        if r.error != ErrorCode::None {
            return Err(ClientError::broker(
                r.error,
                format!("find the coordinator of group \"{group}\""),
            ));
        }
        tracing::debug!(group, node = r.node_id, host = %r.host, port = r.port, "group coordinator");
        Ok(self.broker_at(r.node_id, &r.host, r.port))
    }

    /// Sends `request` (which names the one group `group`) to the group's
    /// coordinator and waits up to `timeout` for the answer. On
    /// `NOT_COORDINATOR` / `COORDINATOR_NOT_AVAILABLE` (in the answer or
    /// from the look-up), or when the coordinator cannot be reached, the
    /// coordinator is forgotten and the request sent again to the one found
    /// anew, after a backoff, at most [`COORDINATOR_ATTEMPTS`] times; then
    /// the last answer or error is returned. A request that may have reached
    /// the broker (disconnect, timeout) is not re-sent: the caller decides.
    pub async fn group_request(
        &self,
        group: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response> {
        let mut backoff = COORDINATOR_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = match self.coordinator(group).await {
                Ok(conn) => conn.request_with_timeout(request, timeout).await,
                Err(e) => Err(e),
            };
            let retry = match &result {
                Ok(r) => coordinator_error(r).is_some(),
                Err(ClientError::Unreachable { .. }) => true,
                Err(e) => matches!(
                    e.code(),
                    Some(ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable)
                ),
            };
            if retry
                || matches!(
                    result,
                    Err(ClientError::Disconnected { .. } | ClientError::Timeout { .. })
                )
            {
                self.forget_coordinator(group);
            }
            if !retry || attempt >= COORDINATOR_ATTEMPTS {
                return result;
            }
            tracing::debug!(
                group,
                attempt,
                "coordinator moved or unavailable; looking it up again"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(COORDINATOR_BACKOFF_MAX);
            attempt += 1;
        }
    }

    fn broker_addr(&self, host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The cached route of `topic`, asking the broker when it is not cached.
    ///
    /// `Ok(None)` means the broker says the topic does not exist (yet).
    pub async fn route(&self, topic: &str) -> Result<Option<TopicRoute>> {
        {
            let state = lock(&self.state);
            if let Some(r) = state.topics.get(topic) {
                return Ok(Some(r.clone()));
            }
            if let Some(at) = state.missing.get(topic) {
                if at.elapsed() < MISSING_TTL {
                    return Ok(None);
                }
            }
        }
        self.fetch_metadata(vec![topic.to_string()]).await?;
        Ok(lock(&self.state).topics.get(topic).cloned())
    }

    /// Asks the broker for `topic` now (whatever is cached) and returns its route.
    pub async fn refresh_route(&self, topic: &str) -> Result<Option<TopicRoute>> {
        self.fetch_metadata(vec![topic.to_string()]).await?;
        Ok(lock(&self.state).topics.get(topic).cloned())
    }

    /// The cached route of `topic` without asking the broker.
    pub fn cached_route(&self, topic: &str) -> Option<TopicRoute> {
        lock(&self.state).topics.get(topic).cloned()
    }

    /// Partition count of `topic` from the cache, without asking the broker,
    /// and whether this caller should refresh the entry: true when it is
    /// older than `metadata_max_age`, and the entry then counts as fresh
    /// again, so of many callers only the first refreshes it (the others
    /// keep using the cached entry meanwhile). One lock and one lookup: it
    /// runs for every produced record.
    pub fn cached_partition_count(&self, topic: &str) -> Option<(u32, bool)> {
        let mut state = lock(&self.state);
        let r = state.topics.get_mut(topic)?;
        let stale = r.fetched.elapsed() >= self.config.metadata_max_age;
        if stale {
            r.fetched = Instant::now();
        }
        Some((r.leaders.len() as u32, stale))
    }

    /// Forgets what is cached about `topic` so the next [`route`](Self::route) asks again.
    pub fn invalidate(&self, topic: &str) {
        let mut state = lock(&self.state);
        state.topics.remove(topic);
        state.missing.remove(topic);
    }

    /// Connection to the broker that leads `topic`/`partition`.
    ///
    /// When the topic is not known (it may be auto-created by a produce), the
    /// bootstrap broker is used. A partition beyond the cached count makes it
    /// ask the broker again first (partitions may have been added).
    pub async fn leader(&self, topic: &str, partition: u32) -> Result<(Option<u32>, Connection)> {
        let mut route = self.route(topic).await?;
        if route
            .as_ref()
            .is_some_and(|r| partition as usize >= r.leaders.len())
        {
            // The topic may have grown since it was cached: ask once more.
            route = self.refresh_route(topic).await?;
        }
        let Some(route) = route else {
            return Ok((None, self.bootstrap.clone()));
        };
        let Some(&node) = route.leaders.get(partition as usize) else {
            return Err(ClientError::broker(
                ErrorCode::UnknownTopicOrPartition,
                format!(
                    "partition {partition} of topic \"{topic}\" ({} partitions)",
                    route.leaders.len()
                ),
            ));
        };
        Ok((Some(node), self.node(node)))
    }

    /// Connection to broker `node`, or the bootstrap connection if the node is unknown.
    pub fn node(&self, node: u32) -> Connection {
        lock(&self.state)
            .brokers
            .get(&node)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| self.bootstrap.clone())
    }
}

fn is_unspecified(host: &str) -> bool {
    host.is_empty()
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_unspecified())
            .unwrap_or(false)
}

/// One Metadata request on `conn`, negotiated to the highest version both speak.
async fn metadata_from(
    conn: &Connection,
    request: &Request,
    timeout: Duration,
) -> Result<MetadataResponse> {
    match conn.request_negotiated_within(request, timeout).await? {
        Response::Metadata(m) => Ok(m),
        other => Err(ClientError::UnexpectedResponse {
            request: "Metadata",
            got: format!("{other:?}"),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bytes::BytesMut;
    use futures::StreamExt;
    use sluice_protocol::codec::FrameCodec;
    use sluice_protocol::wire::{decode_request, encode_response, encode_response_version};
    use sluice_protocol::{
        ApiVersionRange, BrokerInfo, DescribeGroupsRequest, DescribeGroupsResponse, DescribedGroup,
        FindCoordinatorResponse, SUPPORTED_APIS,
    };
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    /// Answers one request of a fake broker listening on the given address.
    pub(crate) type FakeHandler =
        Arc<dyn Fn(Request, std::net::SocketAddr) -> Response + Send + Sync>;

    /// A fake broker on 127.0.0.1 answering each request with `handler`;
    /// records the api key of every request it gets.
    pub(crate) async fn serve_fake(
        handler: FakeHandler,
    ) -> (std::net::SocketAddr, Arc<Mutex<Vec<ApiKey>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            // Bounded: a test opens a handful of connections at most.
            for _ in 0..16 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (read, mut write) = stream.into_split();
                let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
                tokio::spawn(async move {
                    let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
                    while let Some(Ok(payload)) = frames.next().await {
                        let (header, request) = decode_request(payload).expect("decodes");
                        lock(&log).push(request.api_key());
                        let response = handler(request, addr);
                        let mut buf = BytesMut::new();
                        encode_response(header.correlation_id, &response, &mut buf);
                        if write.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    /// A fake broker on `listener` (see [`serve_fake`]).
    pub(crate) async fn serve_fake_on(listener: TcpListener, handler: FakeHandler) {
        serve_fake_maybe(
            listener,
            Arc::new(move |request, addr| Some(handler(request, addr))),
        )
        .await
    }

    /// A fake broker on `listener` that leaves a request unanswered when
    /// `handler` returns `None` (a paused broker).
    pub(crate) async fn serve_fake_maybe(
        listener: TcpListener,
        handler: Arc<dyn Fn(Request, std::net::SocketAddr) -> Option<Response> + Send + Sync>,
    ) {
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..16 {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
                    while let Some(Ok(payload)) = frames.next().await {
                        let (header, request) = decode_request(payload).expect("decodes");
                        let Some(response) = handler(request, addr) else {
                            continue;
                        };
                        let mut buf = BytesMut::new();
                        encode_response_version(
                            header.correlation_id,
                            header.api_version,
                            &response,
                            &mut buf,
                        );
                        if write.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[tokio::test]
    async fn a_node_is_not_reached_through_a_bootstrap_list_that_moved_on() {
        let a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a_addr = a.local_addr().unwrap();
        let b = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b_addr = b.local_addr().unwrap();
        let metadata = move || {
            Response::Metadata(MetadataResponse {
                brokers: [(1, a_addr), (2, b_addr)]
                    .iter()
                    .map(|(id, addr)| BrokerInfo {
                        node_id: *id,
                        host: addr.ip().to_string(),
                        port: addr.port(),
                        rack: None,
                    })
                    .collect(),
                topics: Vec::new(),
                controller_id: 1,
                cluster_id: "c".into(),
            })
        };
        let handler: FakeHandler = Arc::new(move |request, _| match request {
            Request::ApiVersions => Response::ApiVersions(sluice_protocol::ApiVersionsResponse {
                apis: SUPPORTED_APIS.to_vec(),
            }),
            Request::Metadata(_) => metadata(),
            other => panic!("unexpected {other:?}"),
        });
        serve_fake_on(b, Arc::clone(&handler)).await;
        // Broker 1 answers the bootstrap connection once, then goes away.
        let first = Arc::clone(&handler);
        let served = tokio::spawn(async move {
            let (stream, _) = a.accept().await.unwrap();
            let (read, mut write) = stream.into_split();
            let mut frames = FramedRead::new(read, FrameCodec::new(1 << 20));
            while let Some(Ok(payload)) = frames.next().await {
                let (header, request) = decode_request(payload).unwrap();
                let done = matches!(request, Request::Metadata(_));
                let mut buf = BytesMut::new();
                encode_response_version(
                    header.correlation_id,
                    header.api_version,
                    &first(request, a_addr),
                    &mut buf,
                );
                write.write_all(&buf).await.unwrap();
                if done {
                    return;
                }
            }
        });
        let cluster = Cluster::new(ClientConfig::new(format!("{a_addr},{b_addr}")));
        cluster.fetch_metadata(Vec::new()).await.unwrap();
        assert_eq!(cluster.bootstrap.connected_addr(), Some(a_addr.to_string()));
        served.await.unwrap(); // broker 1's connection and listener are gone
                               // The bootstrap connection moves on to broker 2 (bounded retries).
        for _ in 0..50 {
            if cluster.fetch_metadata(Vec::new()).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cluster.bootstrap.connected_addr(), Some(b_addr.to_string()));
        // Broker 1 comes back on its address: node 1's requests reach it.
        serve_fake_on(TcpListener::bind(a_addr).await.unwrap(), handler).await;
        let node1 = cluster.node(1);
        let mut reached = None;
        for _ in 0..50 {
            if node1.request(&Request::ApiVersions).await.is_ok() {
                reached = node1.connected_addr();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(reached, Some(a_addr.to_string()));
    }

    /// A fake broker: lists `apis` in ApiVersions, names itself in
    /// FindCoordinator, answers DescribeGroups with `group_error`.
    async fn fake_broker(
        apis: Vec<ApiVersionRange>,
        group_error: ErrorCode,
    ) -> (String, Arc<Mutex<Vec<ApiKey>>>) {
        let (addr, seen) = serve_fake(Arc::new(move |request, addr| match request {
            Request::ApiVersions => {
                Response::ApiVersions(sluice_protocol::ApiVersionsResponse { apis: apis.clone() })
            }
            Request::FindCoordinator(_) => Response::FindCoordinator(FindCoordinatorResponse {
                error: ErrorCode::None,
                node_id: 0,
                host: addr.ip().to_string(),
                port: addr.port(),
            }),
            Request::DescribeGroups(r) => Response::DescribeGroups(DescribeGroupsResponse {
                groups: vec![DescribedGroup {
                    error: group_error,
                    group_id: r.group_ids[0].clone(),
                    state: String::new(),
                    generation: 0,
                    members: Vec::new(),
                    offsets: Vec::new(),
                }],
            }),
            other => panic!("unexpected {other:?}"),
        }))
        .await;
        (addr.to_string(), seen)
    }

    fn describe() -> Request {
        Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec!["g".into()],
        })
    }

    fn group_error(r: &Response) -> ErrorCode {
        match r {
            Response::DescribeGroups(r) => r.groups[0].error,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_broker_without_find_coordinator_coordinates_every_group() {
        let apis: Vec<ApiVersionRange> = SUPPORTED_APIS
            .iter()
            .filter(|r| r.api_key != ApiKey::FindCoordinator as u16)
            .copied()
            .collect();
        let (addr, seen) = fake_broker(apis, ErrorCode::GroupIdNotFound).await;
        let cluster = Cluster::new(ClientConfig::new(addr));
        let timeout = Duration::from_secs(5);
        let r = cluster.group_request("g", &describe(), timeout).await;
        assert_eq!(group_error(&r.unwrap()), ErrorCode::GroupIdNotFound);
        let r = cluster.group_request("g", &describe(), timeout).await;
        assert_eq!(group_error(&r.unwrap()), ErrorCode::GroupIdNotFound);
        // ApiVersions once (per session), no FindCoordinator, both requests sent.
        assert_eq!(
            *lock(&seen),
            [
                ApiKey::ApiVersions,
                ApiKey::DescribeGroups,
                ApiKey::DescribeGroups
            ]
        );
    }

    #[tokio::test]
    async fn not_coordinator_is_retried_a_bounded_number_of_times() {
        let (addr, seen) = fake_broker(SUPPORTED_APIS.to_vec(), ErrorCode::NotCoordinator).await;
        let cluster = Cluster::new(ClientConfig::new(addr));
        let started = Instant::now();
        let r = cluster
            .group_request("g", &describe(), Duration::from_secs(5))
            .await;
        // The last answer comes back once the attempts are used up.
        assert_eq!(group_error(&r.unwrap()), ErrorCode::NotCoordinator);
        let seen = lock(&seen).clone();
        let count = |k| seen.iter().filter(|x| **x == k).count() as u32;
        assert_eq!(count(ApiKey::DescribeGroups), COORDINATOR_ATTEMPTS);
        // Looked up before each attempt (the answer is forgotten each time).
        assert_eq!(count(ApiKey::FindCoordinator), COORDINATOR_ATTEMPTS);
        // With a backoff between attempts, not in a tight loop.
        assert!(started.elapsed() >= COORDINATOR_BACKOFF * (COORDINATOR_ATTEMPTS - 1));
        assert!(lock(&cluster.state).coordinators.is_empty());
    }
}
