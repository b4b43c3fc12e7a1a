//! A tiny blocking client for the consumer-group apis (keys 7..=14), for the
//! black-box group tests. Like `tests/common`'s `RawClient` it speaks the
//! wire format through `sluice_protocol::wire` only (the client library's
//! group support is separate), plus helpers that check the broker's view.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sluice_protocol::wire::{decode_response, encode_request};
use sluice_protocol::*;

/// Longest wait for one response (a parked heartbeat answers far sooner).
pub const GROUP_CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// One connection; one request in flight at a time.
pub struct GroupClient {
    stream: TcpStream,
    next_id: u32,
    client_id: String,
}

/// A (topic, partition) pair.
pub type Tp = (String, u32);

impl GroupClient {
    /// Connects with `client_id` in every request header.
    pub fn connect(addr: SocketAddr, client_id: &str) -> GroupClient {
        let stream = TcpStream::connect_timeout(&addr, GROUP_CLIENT_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(GROUP_CLIENT_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        GroupClient {
            stream,
            next_id: 1,
            client_id: client_id.to_string(),
        }
    }

    /// Closes the socket in both directions (a crashed client).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// A second handle on the socket (to shut it down from another thread).
    pub fn socket(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    /// Sends one request and reads its response.
    pub fn call(&mut self, req: &Request) -> Response {
        self.try_call(req).expect("request failed")
    }

    /// Like [`GroupClient::call`], but an I/O error (closed socket) is returned.
    pub fn try_call(&mut self, req: &Request) -> std::io::Result<Response> {
        let id = self.next_id;
        self.next_id += 1;
        let mut buf = BytesMut::new();
        encode_request(id, &self.client_id, req, &mut buf);
        self.stream.write_all(&buf)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload)?;
        let (cid, resp) =
            decode_response(req.api_key(), Bytes::from(payload)).expect("decode response");
        assert_eq!(cid, id);
        Ok(resp)
    }

    /// JoinGroup as a new member.
    pub fn join(&mut self, group: &str, topics: &[&str], session_ms: u32) -> JoinGroupResponse {
        match self.call(&Request::JoinGroup(JoinGroupRequest {
            group_id: group.into(),
            member_id: String::new(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            session_timeout_ms: session_ms,
            rebalance_timeout_ms: 0,
            metadata: Bytes::new(),
        })) {
            Response::JoinGroup(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Heartbeat reporting `owned`.
    pub fn heartbeat(
        &mut self,
        group: &str,
        member: &str,
        generation: u32,
        owned: &[TopicPartitions],
        max_wait_ms: u32,
    ) -> HeartbeatResponse {
        match self.call(&Request::Heartbeat(HeartbeatRequest {
            group_id: group.into(),
            member_id: member.into(),
            generation,
            owned: owned.to_vec(),
            max_wait_ms,
        })) {
            Response::Heartbeat(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// LeaveGroup.
    pub fn leave(&mut self, group: &str, member: &str) -> ErrorCode {
        match self.call(&Request::LeaveGroup(LeaveGroupRequest {
            group_id: group.into(),
            member_id: member.into(),
        })) {
            Response::LeaveGroup(r) => r.error,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// OffsetCommit of `(topic, partition, offset)`; returns each partition's error.
    pub fn commit(
        &mut self,
        group: &str,
        member: &str,
        generation: u32,
        offsets: &[(&str, u32, u64)],
    ) -> Vec<ErrorCode> {
        let mut topics: Vec<OffsetCommitTopic> = Vec::new();
        for (t, p, o) in offsets {
            let part = OffsetCommitPartition {
                partition: *p,
                offset: i64::try_from(*o).expect("test offsets fit an i64"),
                metadata: format!("m{o}"),
            };
            match topics.iter_mut().find(|x| x.name == *t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(OffsetCommitTopic {
                    name: t.to_string(),
                    partitions: vec![part],
                }),
            }
        }
        match self.call(&Request::OffsetCommit(OffsetCommitRequest {
            group_id: group.into(),
            member_id: member.into(),
            generation,
            topics,
        })) {
            Response::OffsetCommit(r) => r
                .topics
                .into_iter()
                .flat_map(|t| t.partitions.into_iter().map(|p| p.error))
                .collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// OffsetFetch; `topics` empty = every committed partition.
    pub fn fetch_offsets(
        &mut self,
        group: &str,
        topics: &[TopicPartitions],
    ) -> OffsetFetchResponse {
        match self.call(&Request::OffsetFetch(OffsetFetchRequest {
            group_id: group.into(),
            topics: topics.to_vec(),
        })) {
            Response::OffsetFetch(r) => r,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Committed offsets of a group as a map (offset -1 entries left out).
    pub fn committed(&mut self, group: &str) -> BTreeMap<Tp, i64> {
        let r = self.fetch_offsets(group, &[]);
        assert_eq!(r.error, ErrorCode::None);
        r.topics
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                t.partitions
                    .into_iter()
                    .filter(|p| p.offset >= 0)
                    .map(move |p| ((name.clone(), p.partition), p.offset))
            })
            .collect()
    }

    /// ListGroups.
    pub fn list(&mut self) -> Vec<ListedGroup> {
        match self.call(&Request::ListGroups) {
            Response::ListGroups(r) => r.groups,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// DescribeGroups for one group.
    pub fn describe(&mut self, group: &str) -> DescribedGroup {
        match self.call(&Request::DescribeGroups(DescribeGroupsRequest {
            group_ids: vec![group.into()],
        })) {
            Response::DescribeGroups(mut r) => r.groups.remove(0),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// DeleteGroups for one group.
    pub fn delete(&mut self, group: &str) -> ErrorCode {
        match self.call(&Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec![group.into()],
        })) {
            Response::DeleteGroups(mut r) => {
                let g = r.groups.remove(0);
                assert_eq!(g.group_id, group);
                g.error
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Flattens a wire partition list.
pub fn set_of(list: &[TopicPartitions]) -> BTreeSet<Tp> {
    TopicPartitions::pairs(list)
        .map(|(t, p)| (t.to_string(), p))
        .collect()
}

/// Each member's owned set (assignment ∪ revoking) in the broker's view,
/// asserting that no partition is owned by two members.
pub fn owned_disjoint(d: &DescribedGroup) -> BTreeMap<String, BTreeSet<Tp>> {
    let mut seen: BTreeMap<Tp, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for m in &d.members {
        let mut owned = set_of(&m.assignment);
        owned.extend(set_of(&m.revoking));
        for tp in &owned {
            if let Some(other) = seen.insert(tp.clone(), m.member_id.clone()) {
                panic!("{tp:?} owned by both {other} and {} in {d:#?}", m.member_id);
            }
        }
        out.insert(m.member_id.clone(), owned);
    }
    out
}
