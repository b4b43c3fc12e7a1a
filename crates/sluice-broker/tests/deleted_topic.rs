//! A deleted topic stays deleted: handles of its partitions kept past the
//! deletion (a late fetch, a retention pass) never touch a topic re-created
//! under the same name.

use sluice_broker::codes::WireCode;
use sluice_broker::{Broker, ConfigLayer, Metrics};
use sluice_protocol::{batch, ErrorCode};

fn code<T: std::fmt::Debug>(r: Result<T, sluice_broker::BrokerError>) -> ErrorCode {
    r.unwrap_err().code()
}

fn batch_of(seed: u32, records: usize) -> bytes::Bytes {
    let mut b = batch::RecordBatchBuilder::new();
    for r in 0..records {
        let value = vec![(seed as usize + r) as u8; 1_000];
        b.push(
            1_000,
            Some(format!("k{seed}-{r}").as_bytes()),
            Some(&value),
            &[],
        );
    }
    b.finish()
}

#[test]
fn old_handles_of_a_deleted_topic_leave_its_successor_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = ConfigLayer {
        data_dir: Some(dir.path().to_path_buf()),
        ..ConfigLayer::default()
    }
    .resolve()
    .unwrap();
    let small = |retention: &str| {
        vec![
            ("segment.bytes".to_string(), "65536".to_string()),
            ("retention.bytes".to_string(), retention.to_string()),
        ]
    };
    let mut written = Vec::new();
    {
        let broker = Broker::open(&config, Metrics::new()).unwrap();
        broker.create_topic("t", 1, &small("0")).unwrap();
        let old = broker.partition("t", 0).unwrap();
        for i in 0..200 {
            old.append(&batch_of(i, 1)).unwrap();
        }
        assert!(old.log().segment_count() > 2);
        broker.delete_topic("t").unwrap();

        // Same name, same segment file names: `00000000000000000000.log` ...
        broker.create_topic("t", 1, &small("-1")).unwrap();
        let new = broker.partition("t", 0).unwrap();
        for i in 0..150 {
            let b = batch_of(10_000 + i, 1);
            new.append(&b).unwrap();
            written.push(b);
        }
        assert!(new.log().segment_count() > 2);
        new.log().flush().unwrap();

        // Retention (retention.bytes = 0 on the old handle), a roll (an
        // append larger than what is left of the segment), flush and close
        // on the old handle: each refused as an unknown partition.
        assert_eq!(
            code(old.enforce_retention(i64::MAX / 2)),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            code(old.append(&batch_of(7, 60))),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            code(old.maybe_flush(std::time::Instant::now())),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            code(old.read(0, 1 << 20)),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(code(old.close()), ErrorCode::UnknownTopicOrPartition);
        assert!(matches!(
            old.log().flush(),
            Err(sluice_log::LogError::Closed)
        ));
        assert!(matches!(
            old.log().delete_segments_before(u64::MAX),
            Err(sluice_log::LogError::Closed)
        ));
        drop(old);
        broker.close().unwrap();
    }
    // After a restart the new topic has exactly what was appended to it.
    let broker = Broker::open(&config, Metrics::new()).unwrap();
    let p = broker.partition("t", 0).unwrap();
    assert_eq!(p.start_offset(), 0);
    assert_eq!(p.end_offset(), written.len() as u64);
    let mut offset = 0u64;
    let mut got = Vec::new();
    for _ in 0..written.len() {
        if offset == p.end_offset() {
            break;
        }
        let chunk = p.read(offset, 1).unwrap();
        let h = batch::BatchHeader::parse(&chunk).unwrap();
        batch::verify_crc(&chunk[..h.total_len()]).unwrap();
        got.push(chunk[8..h.total_len()].to_vec());
        offset = h.last_offset() as u64 + 1;
    }
    assert_eq!(got.len(), written.len());
    for (g, w) in got.iter().zip(&written) {
        assert_eq!(g.as_slice(), &w[8..]);
    }
}
