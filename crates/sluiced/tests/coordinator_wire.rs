//! Group coordinators on the wire, served by an embedded broker whose
//! coordinator rule makes some groups Remote or Unavailable: FindCoordinator
//! names the coordinator, every group api answers NOT_COORDINATOR /
//! COORDINATOR_NOT_AVAILABLE for those groups without touching group state,
//! ListGroups lists local groups only, and a local group works as before.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{call, Conn};
use sluice_broker::GroupCoordinator;
use sluice_protocol::codec::FrameCodec;
use sluice_protocol::*;
use sluiced::Server;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const REMOTE_HOST: &str = "broker-7.example";
const REMOTE_PORT: u16 = 9191;

/// Groups named `remote-*` are coordinated by node 7, `down-*` have no
/// coordinator, every other group is local.
fn rule(group: &str) -> GroupCoordinator {
    if group.starts_with("remote-") {
        GroupCoordinator::Remote {
            node_id: 7,
            host: REMOTE_HOST.into(),
            port: REMOTE_PORT,
        }
    } else if group.starts_with("down-") {
        GroupCoordinator::Unavailable
    } else {
        GroupCoordinator::Local
    }
}

fn find(group: &str) -> Request {
    Request::FindCoordinator(FindCoordinatorRequest {
        group_id: group.into(),
    })
}

async fn found(conn: &mut Conn, id: u32, group: &str) -> FindCoordinatorResponse {
    match call(conn, id, &find(group)).await {
        Response::FindCoordinator(r) => r,
        other => panic!("unexpected {other:?}"),
    }
}

fn join(group: &str) -> Request {
    Request::JoinGroup(JoinGroupRequest {
        group_id: group.into(),
        member_id: String::new(),
        topics: vec!["t".into()],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 0,
        metadata: Bytes::new(),
    })
}

fn commit(group: &str, member_id: &str, generation: u32, offset: i64) -> Request {
    Request::OffsetCommit(OffsetCommitRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        generation,
        topics: vec![OffsetCommitTopic {
            name: "t".into(),
            partitions: vec![OffsetCommitPartition {
                partition: 0,
                offset,
                metadata: String::new(),
            }],
        }],
    })
}

fn fetch_offsets(group: &str) -> Request {
    Request::OffsetFetch(OffsetFetchRequest {
        group_id: group.into(),
        topics: vec![],
    })
}

fn describe(groups: &[&str]) -> Request {
    Request::DescribeGroups(DescribeGroupsRequest {
        group_ids: groups.iter().map(|g| g.to_string()).collect(),
    })
}

/// The error each group api answers for `group` (one request of each).
async fn group_api_errors(conn: &mut Conn, id: u32, group: &str) -> Vec<(ApiKey, ErrorCode)> {
    let mut out = Vec::new();
    let reqs = [
        join(group),
        Request::Heartbeat(HeartbeatRequest {
            group_id: group.into(),
            member_id: "m-1".into(),
            generation: 1,
            owned: vec![TopicPartitions::new("t", vec![0])],
            max_wait_ms: 0,
        }),
        Request::LeaveGroup(LeaveGroupRequest {
            group_id: group.into(),
            member_id: "m-1".into(),
        }),
        // A standalone commit would create the group if it were let through.
        commit(group, "", 0, 5),
        fetch_offsets(group),
        describe(&[group]),
        Request::DeleteGroups(DeleteGroupsRequest {
            group_ids: vec![group.into()],
        }),
    ];
    for (i, req) in reqs.iter().enumerate() {
        let key = req.api_key();
        let code = match call(conn, id + i as u32, req).await {
            Response::JoinGroup(r) => {
                assert!(r.member_id.is_empty() && r.assignment.is_empty());
                r.error
            }
            Response::Heartbeat(r) => {
                assert!(r.assignment.is_empty() && r.revoke.is_empty());
                r.error
            }
            Response::LeaveGroup(r) => r.error,
            Response::OffsetCommit(r) => {
                assert_eq!(r.topics.len(), 1);
                assert_eq!(r.topics[0].name, "t");
                assert_eq!(r.topics[0].partitions.len(), 1);
                assert_eq!(r.topics[0].partitions[0].partition, 0);
                r.topics[0].partitions[0].error
            }
            Response::OffsetFetch(r) => {
                assert!(r.topics.is_empty());
                r.error
            }
            Response::DescribeGroups(r) => {
                assert_eq!(r.groups.len(), 1);
                assert_eq!(r.groups[0].group_id, group);
                r.groups[0].error
            }
            Response::DeleteGroups(r) => {
                assert_eq!(r.groups.len(), 1);
                r.groups[0].error
            }
            other => panic!("unexpected {other:?}"),
        };
        out.push((key, code));
    }
    out
}

fn listed(resp: Response) -> Vec<String> {
    match resp {
        Response::ListGroups(r) => {
            let mut v: Vec<String> = r.groups.into_iter().map(|g| g.group_id).collect();
            v.sort();
            v
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn groups_coordinated_elsewhere_are_refused_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::loopback(dir.path()).resolve().unwrap();
    let server = Server::bind(config).await.unwrap();
    let addr = server.native_addr();
    let broker = server.broker().clone();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(server.run(shutdown.clone()));
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));

    let Response::ApiVersions(v) = call(&mut conn, 1, &Request::ApiVersions).await else {
        panic!("no ApiVersions answer")
    };
    assert_eq!(ApiKey::FindCoordinator.negotiate(&v.apis), Some(0));
    let Response::CreateTopics(c) = call(
        &mut conn,
        2,
        &Request::CreateTopics(CreateTopicsRequest {
            topics: vec![CreateTopic {
                name: "t".into(),
                partitions: 1,
                replication_factor: DEFAULT_REPLICATION_FACTOR,
                configs: vec![],
            }],
        }),
    )
    .await
    else {
        panic!("no CreateTopics answer")
    };
    assert_eq!(c.topics[0].error, ErrorCode::None);

    // Without a rule every group is local: the broker names itself.
    let r = found(&mut conn, 3, "remote-a").await;
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!((r.node_id, r.port), (broker.node_id(), addr.port()));
    assert_eq!(r.host, addr.ip().to_string());
    // While local, "remote-moved" gets a committed offset (state that stays
    // on this broker when the group's coordinator moves away).
    let Response::OffsetCommit(r) = call(&mut conn, 4, &commit("remote-moved", "", 0, 3)).await
    else {
        panic!("no OffsetCommit answer")
    };
    assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None);

    broker.set_group_coordinator(Box::new(rule));

    // FindCoordinator: local, remote, unavailable, invalid.
    let r = found(&mut conn, 10, "local-a").await;
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!((r.node_id, r.port), (0, addr.port()));
    assert_eq!(r.host, "127.0.0.1");
    let r = found(&mut conn, 11, "remote-a").await;
    assert_eq!(
        r,
        FindCoordinatorResponse {
            error: ErrorCode::None,
            node_id: 7,
            host: REMOTE_HOST.into(),
            port: REMOTE_PORT,
        }
    );
    let r = found(&mut conn, 12, "down-a").await;
    assert_eq!(r.error, ErrorCode::CoordinatorNotAvailable);
    assert_eq!(
        (r.node_id, r.host.as_str(), r.port),
        (NO_COORDINATOR, "", 0)
    );
    let r = found(&mut conn, 13, "").await;
    assert_eq!(r.error, ErrorCode::InvalidGroupId);

    // Every group api refuses a group coordinated elsewhere, with the code
    // in the api's error field.
    let apis = [
        ApiKey::JoinGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::OffsetCommit,
        ApiKey::OffsetFetch,
        ApiKey::DescribeGroups,
        ApiKey::DeleteGroups,
    ];
    for (group, code, id) in [
        ("remote-a", ErrorCode::NotCoordinator, 100),
        ("down-a", ErrorCode::CoordinatorNotAvailable, 200),
        ("remote-moved", ErrorCode::NotCoordinator, 300),
    ] {
        let got = group_api_errors(&mut conn, id, group).await;
        let want: Vec<(ApiKey, ErrorCode)> = apis.iter().map(|k| (*k, code)).collect();
        assert_eq!(got, want, "group {group}");
    }

    // A local group works: join, commit as the member, fetch, describe.
    let Response::JoinGroup(j) = call(&mut conn, 400, &join("local-a")).await else {
        panic!("no JoinGroup answer")
    };
    assert_eq!(j.error, ErrorCode::None);
    assert_eq!(j.assignment, vec![TopicPartitions::new("t", vec![0])]);
    let Response::OffsetCommit(r) = call(
        &mut conn,
        401,
        &commit("local-a", &j.member_id, j.generation, 0),
    )
    .await
    else {
        panic!("no OffsetCommit answer")
    };
    assert_eq!(r.topics[0].partitions[0].error, ErrorCode::None);
    let Response::OffsetFetch(r) = call(&mut conn, 402, &fetch_offsets("local-a")).await else {
        panic!("no OffsetFetch answer")
    };
    assert_eq!(r.error, ErrorCode::None);
    assert_eq!(r.topics[0].partitions[0].offset, 0);
    // One request, two groups: each answered by its own coordinator rule.
    let Response::DescribeGroups(d) =
        call(&mut conn, 403, &describe(&["local-a", "remote-a"])).await
    else {
        panic!("no DescribeGroups answer")
    };
    assert_eq!(d.groups[0].error, ErrorCode::None);
    assert_eq!(d.groups[0].members.len(), 1);
    assert_eq!(d.groups[0].members[0].member_id, j.member_id);
    assert_eq!(d.groups[1].error, ErrorCode::NotCoordinator);
    assert!(d.groups[1].members.is_empty());

    // ListGroups: local groups only ("remote-moved" has state here, but is not ours).
    assert_eq!(
        listed(call(&mut conn, 404, &Request::ListGroups).await),
        ["local-a"]
    );

    // Nothing was touched: with every group local again, the refused
    // requests left no group behind, and "remote-moved" kept its offset
    // (the refused DeleteGroups did not delete it).
    broker.set_group_coordinator(Box::new(|_| GroupCoordinator::Local));
    let Response::DescribeGroups(d) = call(
        &mut conn,
        500,
        &describe(&["remote-a", "down-a", "remote-moved"]),
    )
    .await
    else {
        panic!("no DescribeGroups answer")
    };
    assert_eq!(d.groups[0].error, ErrorCode::GroupIdNotFound);
    assert_eq!(d.groups[1].error, ErrorCode::GroupIdNotFound);
    assert_eq!(d.groups[2].error, ErrorCode::None);
    assert_eq!(d.groups[2].offsets[0].committed_offset, 3);
    assert_eq!(
        listed(call(&mut conn, 501, &Request::ListGroups).await),
        ["local-a", "remote-moved"]
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("shutdown in time")
        .unwrap()
        .unwrap();
}
