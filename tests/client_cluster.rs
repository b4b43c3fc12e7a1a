//! The client library's cluster view against one real `sluiced`:
//! `Admin::describe_cluster`, `Admin::create_topic_with` and the replicas,
//! isr and leader epoch of described partitions.

mod common;

use common::TestBroker;
use sluice::{Admin, ErrorCode};

#[tokio::test]
async fn admin_sees_the_single_node_cluster() {
    let broker = TestBroker::start();
    let admin = Admin::connect(broker.addr.to_string())
        .await
        .expect("admin");

    let cluster = admin.describe_cluster().await.expect("describe cluster");
    assert_eq!(cluster.controller_id, Some(0));
    assert_eq!(cluster.controller_epoch, 0);
    assert_eq!(cluster.cluster_id, "sluice-single-node");
    assert_eq!(cluster.brokers.len(), 1);
    let b = &cluster.brokers[0];
    assert_eq!((b.node_id, b.alive, b.rack.as_deref()), (0, true, None));
    assert_eq!(b.address(), broker.addr.to_string());
    assert!(cluster.is_alive(0) && !cluster.is_alive(1));

    // Factor 2 and 3 exceed the one broker: refused with the new code, nothing created.
    for factor in [2u16, 3] {
        let name = format!("wide{factor}");
        let e = admin
            .create_topic_with(&name, 1, Some(factor), Vec::new())
            .await
            .expect_err("refused");
        assert_eq!(e.code(), Some(ErrorCode::InvalidReplicationFactor), "{e}");
        assert!(e.to_string().contains("1 broker available"), "{e}");
        let missing = admin.describe_topic(&name).await.expect_err("not created");
        assert_eq!(missing.code(), Some(ErrorCode::UnknownTopicOrPartition));
    }
    // 1 and the default are accepted; the old create_topic still works.
    admin
        .create_topic_with("one", 2, Some(1), Vec::new())
        .await
        .expect("factor 1");
    admin
        .create_topic_with("dflt", 1, None, Vec::new())
        .await
        .expect("default factor");
    admin
        .create_topic("plain", 1, Vec::new())
        .await
        .expect("create_topic");

    let one = admin.describe_topic("one").await.expect("describe");
    assert_eq!(one.partitions.len(), 2);
    for p in &one.partitions {
        assert_eq!((p.leader, p.leader_epoch), (0, 0));
        assert_eq!(p.replicas, vec![0]);
        assert_eq!(p.isr, vec![0]);
    }
    let names: Vec<String> = admin
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["dflt", "one", "plain"]);
}
