//! `segment.bytes` and `segment.ms` have floors, at config load and at topic
//! creation, so no config can make a partition roll on every append.

use sluice_broker::codes::WireCode;
use sluice_broker::topic_meta::{MIN_SEGMENT_BYTES, MIN_SEGMENT_MS};
use sluice_broker::{Broker, BrokerError, ConfigLayer, Metrics};
use sluice_protocol::ErrorCode;

fn layer(dir: &std::path::Path) -> ConfigLayer {
    ConfigLayer {
        data_dir: Some(dir.to_path_buf()),
        ..ConfigLayer::default()
    }
}

#[test]
fn config_load_refuses_segments_below_the_floors() {
    let dir = tempfile::tempdir().unwrap();
    for (bytes, ms) in [
        (Some(MIN_SEGMENT_BYTES - 1), None),
        (Some(4096), None),
        (None, Some(0)),
        (None, Some(MIN_SEGMENT_MS - 1)),
    ] {
        let r = ConfigLayer {
            segment_bytes: bytes,
            segment_ms: ms,
            ..layer(dir.path())
        }
        .resolve();
        match r {
            Err(BrokerError::Config(msg)) => assert!(msg.contains("at least"), "{msg}"),
            other => panic!("{bytes:?}/{ms:?} accepted: {other:?}"),
        }
    }
    ConfigLayer {
        segment_bytes: Some(MIN_SEGMENT_BYTES),
        segment_ms: Some(MIN_SEGMENT_MS),
        ..layer(dir.path())
    }
    .resolve()
    .unwrap();
}

#[test]
fn topic_creation_refuses_segments_below_the_floors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(&layer(dir.path()).resolve().unwrap(), Metrics::new()).unwrap();
    for (k, v) in [
        ("segment.bytes", "1024"),
        ("segment.bytes", "65535"),
        ("segment.ms", "0"),
        ("segment.ms", "999"),
    ] {
        let err = broker
            .create_topic("t", 1, &[(k.into(), v.into())])
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidConfig, "{k}={v}");
        assert!(err.to_string().contains(k) || format!("{err:?}").contains("at least"));
    }
    assert!(broker.describe_topic("t").is_err());
    broker
        .create_topic(
            "t",
            1,
            &[
                ("segment.bytes".into(), "65536".into()),
                ("segment.ms".into(), "-1".into()),
            ],
        )
        .unwrap();
    broker
        .create_topic("u", 1, &[("segment.ms".into(), "1000".into())])
        .unwrap();
}
