//! openraft's v2 storage traits on the files of [`crate::store`].
//!
//! [`LogStore`] keeps the whole (small) metadata log in memory as well as in
//! `raft.log`; every append is fsynced before `LogFlushed::log_io_completed` is
//! called. [`StateMachine`] applies entries with [`ClusterMetadata::apply`] in
//! memory and persists a snapshot file (metadata, last applied log id, last
//! membership) whenever openraft builds or installs a snapshot; on open the
//! snapshot is loaded and openraft re-applies the log entries after it.

// openraft's StorageError is large and every trait method returns it; its size
// is not ours to choose.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{self, LogRecord, RecordLog};
use crate::{ClusterMetadata, CommandResult, MetadataCommand, NodeId};

openraft::declare_raft_types!(
    /// openraft type configuration of the metadata controller.
    pub TypeConfig:
        D = MetadataCommand,
        R = CommandResult,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
);

type SErr = StorageError<NodeId>;
type Record = LogRecord<Entry<TypeConfig>, LogId<NodeId>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic mid-update elsewhere; the data is still the
    // last consistent state we wrote (updates are applied after I/O succeeds).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs file I/O (which fsyncs) on tokio's blocking pool, not on a runtime worker.
async fn blocking<T, F>(inner: &Arc<Mutex<LogInner>>, f: F) -> Result<T, SErr>
where
    T: Send + 'static,
    F: FnOnce(&mut LogInner) -> Result<T, SErr> + Send + 'static,
{
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
        .await
        .map_err(|e| SErr::from(StorageIOError::write_logs(&e)))?
}

fn write_logs(e: crate::ClusterError) -> SErr {
    StorageIOError::write_logs(&e).into()
}

#[derive(Debug)]
struct LogInner {
    file: RecordLog,
    /// 1 when the file starts with a `Purged` marker record.
    marker: usize,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
    dir: PathBuf,
}

/// The Raft log and vote on disk; clones share the same files.
#[derive(Debug, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl LogStore {
    /// Opens the log and vote files in `dir`, cutting a torn log tail.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let (file, records) = RecordLog::open::<Record>(dir)?;
        let mut entries = BTreeMap::new();
        let mut last_purged = None;
        let mut marker = 0;
        for (i, r) in records.into_iter().enumerate() {
            match r {
                LogRecord::Purged(id) if i == 0 => {
                    last_purged = Some(id);
                    marker = 1;
                }
                LogRecord::Purged(_) => {
                    return Err(crate::ClusterError::Corrupt {
                        path: dir.join(RecordLog::FILE),
                        reason: format!("purge marker at record {i}"),
                    })
                }
                LogRecord::Entry(e) => {
                    entries.insert(e.log_id.index, e);
                }
            }
        }
        let vote = store::read_atomic(dir, "vote", store::VOTE_MAGIC)?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                file,
                marker,
                entries,
                last_purged,
                vote,
                dir: dir.to_path_buf(),
            })),
        })
    }

    /// Whether nothing was ever written: no vote and no log entry.
    pub fn is_pristine(&self) -> bool {
        let g = lock(&self.inner);
        g.vote.is_none() && g.entries.is_empty() && g.last_purged.is_none()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let g = lock(&self.inner);
        Ok(g.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let g = lock(&self.inner);
        let last = g.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: g.last_purged,
            last_log_id: last.or(g.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let vote = *vote;
        blocking(&self.inner, move |g| {
            store::write_atomic(&g.dir, "vote", store::VOTE_MAGIC, &vote)
                .map_err(|e| SErr::from(StorageIOError::write_vote(&e)))?;
            g.vote = Some(vote);
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(lock(&self.inner).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // Durable before the entries are applied, so a restart re-applies
        // everything this node applied before (the broker reconciles its
        // topics against that state, see `sluiced::cluster`).
        blocking(&self.inner, move |g| {
            store::write_atomic(&g.dir, "committed", store::COMMITTED_MAGIC, &committed)
                .map_err(|e| SErr::from(StorageIOError::write(&e)))
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        let dir = lock(&self.inner).dir.clone();
        let committed: Option<Option<LogId<NodeId>>> =
            store::read_atomic(&dir, "committed", store::COMMITTED_MAGIC)
                .map_err(|e| SErr::from(StorageIOError::read(&e)))?;
        Ok(committed.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let records: Vec<Record> = entries.iter().cloned().map(LogRecord::Entry).collect();
        let result = blocking(&self.inner, move |g| {
            // `append` fsyncs before returning.
            Ok(g.file.append(&records).map(|()| {
                for e in entries {
                    g.entries.insert(e.log_id.index, e);
                }
            }))
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                return Err(e);
            }
        };
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(write_logs(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        blocking(&self.inner, move |g| {
            let pos = g.entries.range(..log_id.index).count() + g.marker;
            g.file.truncate(pos).map_err(write_logs)?;
            g.entries.split_off(&log_id.index);
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        blocking(&self.inner, move |g| {
            let kept = g.entries.split_off(&(log_id.index + 1));
            let mut records: Vec<Record> = Vec::with_capacity(kept.len() + 1);
            records.push(LogRecord::Purged(log_id));
            records.extend(kept.values().cloned().map(LogRecord::Entry));
            if let Err(e) = g.file.rewrite(&records) {
                // Nothing changed on disk: put the entries back.
                g.entries.extend(kept);
                return Err(write_logs(e));
            }
            g.entries = kept;
            g.last_purged = Some(log_id);
            g.marker = 1;
            Ok(())
        })
        .await
    }
}

/// The snapshot file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// openraft's snapshot meta: last log id, last membership, snapshot id.
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    /// The metadata as of `meta.last_log_id`.
    pub data: ClusterMetadata,
}

#[derive(Debug)]
struct SmInner {
    data: ClusterMetadata,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshot: Option<StoredSnapshot>,
    dir: PathBuf,
    snapshot_seq: u64,
}

/// The applied metadata; clones share it.
#[derive(Debug, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<SmInner>>,
    tx: Arc<watch::Sender<Arc<ClusterMetadata>>>,
}

impl StateMachine {
    /// File name of the snapshot inside the controller directory.
    pub const SNAPSHOT_FILE: &'static str = "snapshot";

    /// Opens the state machine from the snapshot file in `dir`, if any.
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let snapshot: Option<StoredSnapshot> =
            store::read_atomic(dir, Self::SNAPSHOT_FILE, store::SNAPSHOT_MAGIC)?;
        let (data, last_applied, membership) = match &snapshot {
            Some(s) => (
                s.data.clone(),
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
            ),
            None => (
                ClusterMetadata::default(),
                None,
                StoredMembership::default(),
            ),
        };
        let (tx, _) = watch::channel(Arc::new(data.clone()));
        Ok(StateMachine {
            inner: Arc::new(Mutex::new(SmInner {
                data,
                last_applied,
                membership,
                snapshot,
                dir: dir.to_path_buf(),
                snapshot_seq: 0,
            })),
            tx: Arc::new(tx),
        })
    }

    /// The applied metadata now.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees each newly applied metadata.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.tx.subscribe()
    }

    fn persist(inner: &SmInner, snap: &StoredSnapshot) -> Result<(), SErr> {
        store::write_atomic(&inner.dir, Self::SNAPSHOT_FILE, store::SNAPSHOT_MAGIC, snap).map_err(
            |e| {
                SErr::from(StorageIOError::write_snapshot(
                    Some(snap.meta.signature()),
                    &e,
                ))
            },
        )
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let mut g = lock(&self.inner);
        g.snapshot_seq += 1;
        let snapshot_id = match g.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, g.snapshot_seq),
            None => format!("none-{}", g.snapshot_seq),
        };
        let snap = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: g.last_applied,
                last_membership: g.membership.clone(),
                snapshot_id,
            },
            data: g.data.clone(),
        };
        Self::persist(&g, &snap)?;
        let bytes = serde_json::to_vec(&snap.data)
            .map_err(|e| SErr::from(StorageIOError::read_state_machine(&e)))?;
        let meta = snap.meta.clone();
        g.snapshot = Some(snap);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SErr> {
        let g = lock(&self.inner);
        Ok((g.last_applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        let mut g = lock(&self.inner);
        for e in entries {
            g.last_applied = Some(e.log_id);
            g.data.applied_index = e.log_id.index;
            let r = match &e.payload {
                EntryPayload::Blank => CommandResult::NoOp,
                EntryPayload::Normal(cmd) => g.data.apply(cmd),
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(e.log_id), m.clone());
                    CommandResult::NoOp
                }
            };
            out.push(r);
        }
        let snapshot = Arc::new(g.data.clone());
        drop(g);
        self.tx.send_replace(snapshot);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data: ClusterMetadata = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| SErr::from(StorageIOError::read_snapshot(Some(meta.signature()), &e)))?;
        let snap = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let mut g = lock(&self.inner);
        Self::persist(&g, &snap)?;
        g.data = data;
        g.last_applied = meta.last_log_id;
        g.membership = meta.last_membership.clone();
        g.snapshot = Some(snap);
        let published = Arc::new(g.data.clone());
        drop(g);
        self.tx.send_replace(published);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let g = lock(&self.inner);
        match &g.snapshot {
            None => Ok(None),
            Some(s) => {
                let bytes = serde_json::to_vec(&s.data)
                    .map_err(|e| SErr::from(StorageIOError::read_state_machine(&e)))?;
                Ok(Some(Snapshot {
                    meta: s.meta.clone(),
                    snapshot: Box::new(Cursor::new(bytes)),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), SErr> {
            let dir = tempfile::tempdir().map_err(|e| SErr::from(StorageIOError::read_logs(&e)))?;
            let log = LogStore::open(dir.path())
                .map_err(|e| SErr::from(StorageIOError::read_logs(&e)))?;
            let sm = StateMachine::open(dir.path())
                .map_err(|e| SErr::from(StorageIOError::read_state_machine(&e)))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own storage conformance suite on our files.
    #[test]
    fn openraft_storage_suite() -> Result<(), SErr> {
        Suite::test_all(Builder)
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(MetadataCommand::AllocateProducerIds { count: index }),
        }
    }

    /// Appends, truncation, purge and the vote survive a reopen.
    #[tokio::test]
    async fn log_store_reopens_with_same_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut log = LogStore::open(dir.path()).expect("open");
            assert!(log.is_pristine());
            {
                let mut g = lock(&log.inner);
                let recs: Vec<Record> = (1..=5).map(|i| LogRecord::Entry(entry(1, i))).collect();
                g.file.append(&recs).expect("append");
                for i in 1..=5 {
                    g.entries.insert(i, entry(1, i));
                }
            }
            log.truncate(LogId::new(openraft::CommittedLeaderId::new(1, 1), 4))
                .await
                .expect("truncate");
            log.purge(LogId::new(openraft::CommittedLeaderId::new(1, 1), 1))
                .await
                .expect("purge");
            log.save_vote(&Vote::new(3, 2)).await.expect("vote");
        }
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert!(!log.is_pristine());
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(1));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
        let got = log.try_get_log_entries(0..10).await.expect("read");
        assert_eq!(
            got.iter().map(|e| e.log_id.index).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
    }

    /// A built snapshot is persisted and loaded back by a fresh open.
    #[tokio::test]
    async fn snapshot_file_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut sm = StateMachine::open(dir.path()).expect("open");
            let create = MetadataCommand::CreateTopic {
                name: "t".into(),
                id: [7; 16],
                assignment: vec![vec![1]],
                config: BTreeMap::new(),
            };
            let e = Entry {
                log_id: LogId::new(openraft::CommittedLeaderId::new(2, 1), 5),
                payload: EntryPayload::Normal(create),
            };
            let r = sm.apply(vec![e]).await.expect("apply");
            assert_eq!(r, vec![CommandResult::Ok]);
            sm.build_snapshot().await.expect("snapshot");
        }
        let mut sm = StateMachine::open(dir.path()).expect("reopen");
        assert!(sm.metadata().topics.contains_key("t"));
        let (applied, _) = sm.applied_state().await.expect("state");
        assert_eq!(applied.map(|l| l.index), Some(5));
        let snap = sm.get_current_snapshot().await.expect("get").expect("some");
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(5));
        let data: ClusterMetadata =
            serde_json::from_slice(snap.snapshot.get_ref()).expect("decode");
        assert!(data.topics.contains_key("t"));
    }
}
