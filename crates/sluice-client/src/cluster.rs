//! Metadata cache and request routing.
//!
//! The client asks Metadata which broker leads each partition and sends
//! partition requests there. The cache is refreshed when a broker answers
//! `NOT_LEADER_FOR_PARTITION` or `UNKNOWN_TOPIC_OR_PARTITION`, or when a
//! leader's connection fails, and a topic's entry older than
//! `ClientConfig::metadata_max_age` is refreshed (by whoever claims it with
//! [`Cluster::claim_refresh`]) so partitions added to a topic are found. Today there is one broker, so every route ends
//! at the bootstrap connection; the routing is real so that several brokers
//! need no client change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::{ErrorCode, MetadataRequest, MetadataResponse, Request, Response};

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
}

/// Shared routing state of one client (producer, consumer or admin).
pub(crate) struct Cluster {
    config: ClientConfig,
    bootstrap: Connection,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long a "topic does not exist" answer is trusted before asking again.
const MISSING_TTL: Duration = Duration::from_millis(100);

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
        let request = Request::Metadata(MetadataRequest { topics });
        let mut result = metadata_from(&self.bootstrap, &request).await;
        if matches!(
            &result,
            Err(ClientError::Unreachable { .. }
                | ClientError::Disconnected { .. }
                | ClientError::Timeout { .. })
        ) {
            let others: Vec<Connection> = {
                let state = lock(&self.state);
                let bootstrap = self.bootstrap.connected_addr();
                state
                    .brokers
                    .values()
                    .filter(|(addr, _)| {
                        Some(addr) != bootstrap.as_ref() && *addr != self.config.bootstrap
                    })
                    .map(|(_, c)| c.clone())
                    .collect()
            };
            for conn in others {
                let r = metadata_from(&conn, &request).await;
                let done = r.is_ok();
                result = r;
                if done {
                    break;
                }
            }
        }
        let response = result?;
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
            let Ok(theirs) = metadata_from(&conn, &request).await else {
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
            let addr = self.broker_addr(&b.host, b.port);
            let stale = match state.brokers.get(&b.node_id) {
                Some((known, _)) => *known != addr,
                None => true,
            };
            if stale {
                // The bootstrap connection serves the broker it reached.
                let bootstrap_reached = self.bootstrap.connected_addr().as_deref()
                    == Some(addr.as_str())
                    || addr == self.config.bootstrap;
                let conn = if bootstrap_reached || b.port == 0 || is_unspecified(&b.host) {
                    self.bootstrap.clone()
                } else {
                    Connection::new(addr.clone(), self.config.clone())
                };
                state.brokers.insert(b.node_id, (addr, conn));
            }
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

    /// Partition count of `topic` from the cache, without asking the broker.
    pub fn cached_partition_count(&self, topic: &str) -> Option<u32> {
        lock(&self.state)
            .topics
            .get(topic)
            .map(|r| r.leaders.len() as u32)
    }

    /// True when `topic`'s cached entry is older than `metadata_max_age`; the
    /// entry then counts as fresh again, so of many callers only the first
    /// refreshes it (the others keep using the cached entry meanwhile).
    pub fn claim_refresh(&self, topic: &str) -> bool {
        let mut state = lock(&self.state);
        match state.topics.get_mut(topic) {
            Some(r) if r.fetched.elapsed() >= self.config.metadata_max_age => {
                r.fetched = Instant::now();
                true
            }
            _ => false,
        }
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
async fn metadata_from(conn: &Connection, request: &Request) -> Result<MetadataResponse> {
    match conn.request_negotiated(request).await? {
        Response::Metadata(m) => Ok(m),
        other => Err(ClientError::UnexpectedResponse {
            request: "Metadata",
            got: format!("{other:?}"),
        }),
    }
}
