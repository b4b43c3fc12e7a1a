//! The offsets store's first start on a fresh data directory, with the
//! power cut at every file-system call: every acknowledged commit survives.
//! (Before the `__consumer_offsets` directories were synced into the data
//! directory on creation, a cut after the first commit lost it.)

use std::path::Path;
use std::sync::Arc;

use sluice_group::offsets::OffsetStore;
use sluice_group::{OffsetCommit, TopicPartition};
use sluice_log::FaultyFileIo;

const COMMITS: u64 = 4;

/// Opens the store under `data` through `io` and commits offsets 10, 20, ...
/// Returns (last acknowledged offset, last attempted offset).
fn first_start(data: &Path, io: Arc<FaultyFileIo>) -> (Option<u64>, Option<u64>) {
    let dir = data.join("__consumer_offsets").join("0");
    let Ok(store) = OffsetStore::open_with_io(&dir, OffsetStore::default_log_config(), io) else {
        return (None, None);
    };
    let tp = TopicPartition::new("orders", 0);
    let (mut acked, mut tried) = (None, None);
    for i in 1..=COMMITS {
        let offset = i * 10;
        tried = Some(offset);
        if store
            .commit("g", &[OffsetCommit::new(tp.clone(), offset)], 1_000)
            .is_err()
        {
            break;
        }
        acked = Some(offset);
    }
    (acked, tried)
}

fn cut_and_check(cut_at: Option<u64>) -> u64 {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let io = Arc::new(
        FaultyFileIo::with_power_cut(&data, &base.path().join("graveyard"), cut_at).unwrap(),
    );
    let (acked, tried) = first_start(&data, io.clone());
    let steps = io.steps();
    io.cut_power().unwrap();

    let dir = data.join("__consumer_offsets").join("0");
    let store = OffsetStore::open(&dir, OffsetStore::default_log_config())
        .unwrap_or_else(|e| panic!("cut at {cut_at:?}: reopen failed: {e}"));
    let got = store
        .fetch("g", &TopicPartition::new("orders", 0))
        .map(|c| c.offset);
    if let Some(a) = acked {
        let g = got.unwrap_or_else(|| panic!("cut at {cut_at:?}: commit {a} acknowledged, lost"));
        assert!(
            g >= a && Some(g) <= tried,
            "cut at {cut_at:?}: read {g}, acknowledged {a}, tried up to {tried:?}"
        );
    }
    if let Some(g) = got {
        assert!(
            g % 10 == 0 && Some(g) <= tried,
            "cut at {cut_at:?}: read {g}"
        );
    }
    steps
}

#[test]
fn first_start_survives_a_power_cut_at_every_step() {
    let total = cut_and_check(None);
    assert!(total > 5, "only {total} steps");
    for k in 0..=total {
        cut_and_check(Some(k));
    }
}
