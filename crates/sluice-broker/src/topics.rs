//! The topic registry: which topics exist, their config and partitions.
//!
//! On disk: `<data>/<topic>/topic.meta` plus one log directory per partition,
//! `<data>/<topic>/<partition>/`. Creation opens the partition logs first and
//! writes `topic.meta` last, so a topic exists exactly when its metadata file
//! does. Deletion closes the logs, renames the directory to
//! `<topic>~deleted~<nanos>` (`~` cannot occur in a topic name), fsyncs the
//! data directory and then removes it; leftovers of an interrupted deletion
//! are removed on the next start.
//!
//! A partition whose files cannot be opened at start (corrupt beyond
//! recovery, too many mappings, permissions) does not stop the broker: it is
//! left out of its topic's served partitions, logged once and counted in
//! `sluice_offline_partitions`; requests for it get `PartitionOffline`
//! (STORAGE_ERROR). Its files are left untouched. A damaged `topic.meta`
//! still stops start-up (recreating the topic over it could mix data).
//!
//! Growing a topic ([`TopicRegistry::add_partitions`]) opens the new
//! partition logs first (a leftover directory of an interrupted attempt is
//! removed first: no record can have reached it), then replaces `topic.meta`
//! atomically, so a restart sees either the old count or the new one, never
//! a partition without its directory. Changing the config
//! ([`TopicRegistry::alter_config`]) replaces `topic.meta` and then hands the
//! new settings to the open partitions: retention and the fsync policy
//! (with its read rule, see [`Partition::set_flush`]) apply at once, segment
//! size and age from the next append (the active segment rolls once it
//! exceeds them).
//! Either change swaps in a new [`Topic`] sharing the unchanged partitions;
//! a request holding the old one finishes with it.
//!
//! Locking: the name -> topic map has its own `RwLock`, held only to look up
//! or swap entries. Creation, deletion, growth and config changes are
//! serialized by a separate admin mutex so the slow file work never blocks
//! lookups.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sluice_log::{FileIo, Log, OsFileIo};

use crate::config::{TopicDefaults, MAX_PARTITIONS};
use crate::error::BrokerError;
use crate::metrics::{Metrics, TopicMetrics};
use crate::partition::Partition;
use crate::topic_meta::{sync_dir, validate_topic_name, TopicConfig, TopicMeta, TopicOverrides};

/// Marker in the name of a directory being deleted.
const TRASH_MARKER: &str = "~deleted~";

/// One topic: immutable (a partition count or config change swaps in a new one).
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    meta: TopicMeta,
    config: TopicConfig,
    /// The partitions that opened, in index order.
    partitions: Vec<Arc<Partition>>,
    /// Partitions whose files could not be opened at start, with the reason.
    offline: Vec<(u32, Arc<str>)>,
    dir: PathBuf,
}

impl Topic {
    /// Topic name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Effective config.
    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    /// Stored metadata (partition count and overrides).
    pub fn meta(&self) -> &TopicMeta {
        &self.meta
    }

    /// The partitions being served (all but the offline ones), in index order.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    /// One partition, if it exists and is online.
    pub fn partition(&self, index: u32) -> Option<&Arc<Partition>> {
        match self.partitions.get(index as usize) {
            Some(p) if p.index() == index => Some(p),
            _ => self
                .partitions
                .binary_search_by_key(&index, |p| p.index())
                .ok()
                .and_then(|i| self.partitions.get(i)),
        }
    }

    /// Why partition `index` is offline, if it is.
    pub fn offline_reason(&self, index: u32) -> Option<&str> {
        self.offline
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, r)| &**r)
    }

    /// Partitions whose files could not be opened at start, with the reason.
    pub fn offline_partitions(&self) -> &[(u32, Arc<str>)] {
        &self.offline
    }

    /// Partition count, offline ones included.
    pub fn partition_count(&self) -> u32 {
        self.meta.partitions
    }

    /// The topic's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Why a partition index is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMissing {
    /// The topic or the partition does not exist.
    Unknown,
    /// The partition's files could not be opened at start.
    Offline,
}

/// The partition `index` of `topic` (if the topic exists), or why it is not served.
pub fn serving(topic: Option<&Topic>, index: u32) -> Result<&Arc<Partition>, PartitionMissing> {
    let Some(t) = topic else {
        return Err(PartitionMissing::Unknown);
    };
    match t.partition(index) {
        Some(p) => Ok(p),
        None if t.offline_reason(index).is_some() => Err(PartitionMissing::Offline),
        None => Err(PartitionMissing::Unknown),
    }
}

/// All topics of this broker.
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: TopicDefaults,
    metrics: Metrics,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    admin: Mutex<()>,
    /// Broker-wide cap on partitions (all topics together).
    max_total_partitions: u32,
    /// File-system calls of every partition log go through this.
    io: Arc<dyn FileIo>,
    /// Held (with an exclusive `flock`) for the registry's lifetime: two
    /// brokers appending to the same logs would corrupt them.
    _lock: fs::File,
}

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "sluiced.lock";

/// Takes an exclusive, non-blocking `flock` on `<data>/sluiced.lock`. The
/// kernel drops it when the process dies, so a crash never leaves it stale.
fn lock_data_dir(data_dir: &Path) -> Result<fs::File, BrokerError> {
    let path = data_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock(2) on a descriptor we own and keep open; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(BrokerError::DataDirLocked { path });
            }
            return Err(BrokerError::Io { path, source: err });
        }
    }
    Ok(file)
}

impl std::fmt::Debug for TopicRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicRegistry")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerError + '_ {
    move |source| BrokerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl TopicRegistry {
    /// Opens the data directory (creating it), recovering every topic in it.
    pub fn open(
        data_dir: &Path,
        defaults: TopicDefaults,
        metrics: Metrics,
        max_total_partitions: u32,
    ) -> Result<TopicRegistry, BrokerError> {
        Self::open_with_io(
            data_dir,
            defaults,
            metrics,
            max_total_partitions,
            Arc::new(OsFileIo),
        )
    }

    /// Like [`TopicRegistry::open`], with every partition log's file-system
    /// calls routed through `io` (the fault-injection seam used by tests).
    pub fn open_with_io(
        data_dir: &Path,
        defaults: TopicDefaults,
        metrics: Metrics,
        max_total_partitions: u32,
        io: Arc<dyn FileIo>,
    ) -> Result<TopicRegistry, BrokerError> {
        // A data directory created here is synced into its parent (and so
        // on up), so a power cut cannot take it with all it holds.
        let missing: Vec<&Path> = data_dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.is_dir())
            .collect();
        fs::create_dir_all(data_dir).map_err(io_err(data_dir))?;
        for d in missing.iter().rev() {
            if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = lock_data_dir(data_dir)?;
        let reg = TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            defaults,
            metrics,
            topics: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
            max_total_partitions,
            io,
            _lock: lock,
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(data_dir).map_err(io_err(data_dir))? {
            let entry = entry.map_err(io_err(data_dir))?;
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(dir = %path.display(), "skipping directory with a non-UTF-8 name");
                continue;
            };
            if name.contains(TRASH_MARKER) {
                tracing::info!(dir = %path.display(), "removing leftovers of an interrupted topic deletion");
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
                continue;
            }
            if name.starts_with("__") {
                // Internal logs (`__consumer_offsets`) are opened by their owners.
                continue;
            }
            if validate_topic_name(&name).is_err()
                || !path.join(crate::topic_meta::META_FILE).exists()
            {
                tracing::warn!(dir = %path.display(), "skipping directory that is not a topic (no topic.meta)");
                continue;
            }
            names.push(name);
        }
        names.sort();
        let mut map = HashMap::new();
        for name in names {
            let dir = data_dir.join(&name);
            let mut meta = TopicMeta::load(&dir)?;
            if meta
                .id
                .as_deref()
                .and_then(crate::topic_meta::parse_topic_id)
                .is_none()
            {
                // A topic from before topic ids: give it one, once.
                meta.id = Some(crate::topic_meta::topic_id_hex(
                    &crate::topic_meta::new_topic_id(),
                ));
                meta.store(&dir)?;
            }
            // A partition that cannot be opened goes offline; the rest serve.
            let topic = reg.open_topic(&name, dir, meta, true)?;
            map.insert(name, Arc::new(topic));
        }
        *reg.write_map() = map;
        Ok(reg)
    }

    fn read_map(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Topic>>> {
        // A panic while holding this lock cannot leave the map half-updated
        // (every write is a single insert/remove), so poisoning is ignored.
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_map(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Topic>>> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    fn topic_metrics(&self, name: &str) -> TopicMetrics {
        self.metrics.topic(name)
    }

    /// Opens partition `index` of topic `name`, whose directory is `topic_dir`.
    fn open_partition(
        &self,
        topic_dir: &Path,
        name: &Arc<str>,
        index: u32,
        log_config: sluice_log::LogConfig,
        tm: &TopicMetrics,
    ) -> Result<Partition, BrokerError> {
        // Recovery's lines (what was cut, indexes rebuilt) name only the
        // directory; this span names the partition. ERROR level, so it is
        // on whenever the lines in it are.
        let _span = tracing::error_span!("partition", topic = %name, partition = index).entered();
        let log = Log::open_with_io(
            topic_dir.join(index.to_string()),
            log_config,
            Arc::clone(&self.io),
        )
        .map_err(|source| BrokerError::Log {
            topic: name.to_string(),
            partition: index,
            source,
        })?;
        Ok(Partition::from_log(
            log,
            Arc::clone(name),
            index,
            tm.clone(),
            self.metrics.partition(name, index),
            self.metrics.fsync_duration.clone(),
        ))
    }

    /// Opens a topic's partitions. With `allow_offline` (recovery at start),
    /// a partition that fails to open is logged once, counted in
    /// `sluice_offline_partitions` and left out; without it (creation) the
    /// first failure is the error.
    fn open_topic(
        &self,
        name: &str,
        dir: PathBuf,
        meta: TopicMeta,
        allow_offline: bool,
    ) -> Result<Topic, BrokerError> {
        let config = meta.effective(&self.defaults);
        let name: Arc<str> = Arc::from(name);
        let tm = self.topic_metrics(&name);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        let mut offline = Vec::new();
        for i in 0..meta.partitions {
            let opened = self.open_partition(&dir, &name, i, config.log_config(), &tm);
            match opened {
                Ok(p) => partitions.push(Arc::new(p)),
                Err(e) if allow_offline => {
                    let reason = crate::error::chain(&e);
                    tracing::error!(topic = %name, partition = i, error = %reason, "partition offline: its files cannot be opened; the other partitions are served");
                    self.metrics.offline_partitions.inc();
                    offline.push((i, Arc::from(reason.as_str())));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Topic {
            name,
            meta,
            config,
            partitions,
            offline,
            dir,
        })
    }

    /// Partitions of every topic, offline ones included.
    pub fn total_partitions(&self) -> u64 {
        self.read_map()
            .values()
            .map(|t| u64::from(t.partition_count()))
            .sum()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Broker-wide topic defaults.
    pub fn defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    /// Looks a topic up.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.read_map().get(name).cloned()
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.read_map().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of topics.
    pub fn len(&self) -> usize {
        self.read_map().len()
    }

    /// Whether there are no topics.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a topic; fails with `TopicExists` if it is already there.
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        overrides: TopicOverrides,
    ) -> Result<Arc<Topic>, BrokerError> {
        self.create_inner(name, partitions, overrides, false)
    }

    /// Returns the topic, creating it with `partitions` and default config if missing
    /// (concurrent callers all get the same topic).
    pub fn get_or_create(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        self.create_inner(name, partitions, TopicOverrides::default(), true)
    }

    fn create_inner(
        &self,
        name: &str,
        partitions: u32,
        overrides: TopicOverrides,
        existing_ok: bool,
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        if name.starts_with("__") {
            return Err(BrokerError::InvalidTopic {
                name: name.to_string(),
                reason: "names starting with '__' are reserved for internal topics",
            });
        }
        if partitions == 0 || partitions > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions {
                count: partitions,
                max: MAX_PARTITIONS,
            });
        }
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = self.get(name) {
            return if existing_ok {
                Ok(t)
            } else {
                Err(BrokerError::TopicExists(name.to_string()))
            };
        }
        let existing = self.total_partitions();
        if existing + u64::from(partitions) > u64::from(self.max_total_partitions) {
            return Err(BrokerError::PartitionLimit {
                requested: partitions,
                existing,
                max: self.max_total_partitions,
            });
        }
        let dir = self.data_dir.join(name);
        if dir.exists() {
            // No topic.meta (or we would have loaded it): an interrupted creation.
            fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let meta = TopicMeta {
            partitions,
            overrides,
            id: Some(crate::topic_meta::topic_id_hex(
                &crate::topic_meta::new_topic_id(),
            )),
        };
        let topic = match self.open_topic(name, dir.clone(), meta.clone(), false) {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        meta.store(&dir)?;
        sync_dir(&self.data_dir)?;
        let topic = Arc::new(topic);
        self.write_map()
            .insert(name.to_string(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// Grows topic `name` to `total` partitions (see the module docs for the
    /// order of the file work). Refused with
    /// [`BrokerError::PartitionsNotIncreased`] unless `total` is larger than
    /// the current count, [`BrokerError::InvalidPartitions`] above
    /// [`MAX_PARTITIONS`], [`BrokerError::PartitionLimit`] past the
    /// broker-wide cap; nothing changes then.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let current = topic.partition_count();
        if total <= current {
            return Err(BrokerError::PartitionsNotIncreased {
                topic: name.to_string(),
                current,
                requested: total,
            });
        }
        if total > MAX_PARTITIONS {
            return Err(BrokerError::InvalidPartitions {
                count: total,
                max: MAX_PARTITIONS,
            });
        }
        let added = total - current;
        let existing = self.total_partitions();
        if existing + u64::from(added) > u64::from(self.max_total_partitions) {
            return Err(BrokerError::PartitionLimit {
                requested: added,
                existing,
                max: self.max_total_partitions,
            });
        }
        let meta = TopicMeta {
            partitions: total,
            overrides: topic.meta.overrides.clone(),
            id: topic.meta.id.clone(),
        };
        let config = meta.effective(&self.defaults);
        let tm = self.topic_metrics(&topic.name);
        let mut opened: Vec<Arc<Partition>> = Vec::with_capacity(added as usize);
        let undo = |opened: &[Arc<Partition>]| {
            for p in opened {
                let _ = p.close();
                p.mark_deleted();
                let _ = fs::remove_dir_all(topic.dir.join(p.index().to_string()));
            }
        };
        for i in current..total {
            let dir = topic.dir.join(i.to_string());
            let result = (|| {
                if dir.exists() {
                    // An interrupted growth: topic.meta never counted it, so no record is in it.
                    fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                }
                self.open_partition(&topic.dir, &topic.name, i, config.log_config(), &tm)
            })();
            match result {
                Ok(p) => opened.push(Arc::new(p)),
                Err(e) => {
                    undo(&opened);
                    return Err(e);
                }
            }
        }
        // The commit point: the new count is durable once this returns.
        if let Err(e) = meta.store(&topic.dir) {
            undo(&opened);
            return Err(e);
        }
        let mut partitions = topic.partitions.clone();
        partitions.extend(opened);
        let grown = Arc::new(Topic {
            name: Arc::clone(&topic.name),
            meta,
            config,
            partitions,
            offline: topic.offline.clone(),
            dir: topic.dir.clone(),
        });
        self.write_map()
            .insert(name.to_string(), Arc::clone(&grown));
        tracing::info!(topic = name, from = current, to = total, "added partitions");
        Ok(grown)
    }

    /// Applies AlterConfigs changes to topic `name`: `Some(value)` sets a
    /// key, `None` removes the topic's override (back to the broker
    /// default). Every change is checked first ([`BrokerError::InvalidConfig`]);
    /// then `topic.meta` is replaced durably and the open partitions get the
    /// new settings (see the module docs for when each takes effect).
    pub fn alter_config(
        &self,
        name: &str,
        changes: &[(String, Option<String>)],
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        let overrides = topic.meta.overrides.with_changes(changes)?;
        self.replace_overrides(&topic, overrides)
    }

    /// Replaces topic `name`'s overrides as a whole (the cluster metadata's
    /// config applied to the local copy); a no-op when they are equal.
    pub fn set_overrides(
        &self,
        name: &str,
        overrides: TopicOverrides,
    ) -> Result<Arc<Topic>, BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .get(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        self.replace_overrides(&topic, overrides)
    }

    /// Stores `overrides` for `topic`, hands the partitions their new log
    /// settings and swaps in the new topic. The caller holds the admin lock.
    fn replace_overrides(
        &self,
        topic: &Arc<Topic>,
        overrides: TopicOverrides,
    ) -> Result<Arc<Topic>, BrokerError> {
        if overrides == topic.meta.overrides {
            return Ok(Arc::clone(topic));
        }
        let meta = TopicMeta {
            partitions: topic.meta.partitions,
            overrides,
            id: topic.meta.id.clone(),
        };
        meta.store(&topic.dir)?;
        let config = meta.effective(&self.defaults);
        let log_config = config.log_config();
        for p in &topic.partitions {
            p.set_flush(log_config.clone());
        }
        let altered = Arc::new(Topic {
            name: Arc::clone(&topic.name),
            meta,
            config,
            partitions: topic.partitions.clone(),
            offline: topic.offline.clone(),
            dir: topic.dir.clone(),
        });
        self.write_map()
            .insert(topic.name.to_string(), Arc::clone(&altered));
        tracing::info!(topic = %topic.name, "changed topic config");
        Ok(altered)
    }

    /// Deletes a topic: closes its logs and removes its directory.
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let topic = self
            .write_map()
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        self.metrics
            .offline_partitions
            .sub(topic.offline_partitions().len() as i64);
        for p in topic.partitions() {
            if let Err(e) = p.close() {
                tracing::warn!(topic = name, partition = p.index(), error = %crate::error::chain(&e), "closing a deleted partition failed");
            }
            // For good: handles still held elsewhere (a late fetch, a
            // retention pass) must not touch a topic re-created at this path,
            // and parked fetches on it answer UNKNOWN_TOPIC now.
            p.mark_deleted();
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let trash = self.data_dir.join(format!("{name}{TRASH_MARKER}{nanos}"));
        fs::rename(&topic.dir, &trash).map_err(io_err(&topic.dir))?;
        // The topic is gone from here on: what is left is cleanup, which the
        // next start finishes (leftover trash directories are removed then).
        if let Err(e) = sync_dir(&self.data_dir) {
            tracing::error!(topic = name, error = %crate::error::chain(&e), "syncing the data directory after a topic deletion failed");
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            tracing::warn!(topic = name, dir = %trash.display(), error = %e, "removing a deleted topic's files failed; the next start retries");
        }
        self.metrics.remove_topic(name, topic.meta.partitions);
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Flushes and closes every log; returns the errors (after trying all).
    pub fn close_all(&self) -> Vec<BrokerError> {
        let mut errors = Vec::new();
        for t in self.list() {
            for p in t.partitions() {
                if let Err(e) = p.close() {
                    errors.push(e);
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_defaults() -> TopicDefaults {
        TopicDefaults {
            segment_bytes: 1 << 20,
            ..TopicDefaults::default()
        }
    }

    #[test]
    fn create_reload_delete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg =
                TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap();
            let o = TopicOverrides::from_pairs(&[("retention.ms".into(), "1000".into())]).unwrap();
            reg.create("a", 3, o).unwrap();
            reg.create("b", 1, TopicOverrides::default()).unwrap();
            assert!(matches!(
                reg.create("a", 1, TopicOverrides::default()),
                Err(BrokerError::TopicExists(_))
            ));
            assert!(matches!(
                reg.create("bad/name", 1, TopicOverrides::default()),
                Err(BrokerError::InvalidTopic { .. })
            ));
            assert!(matches!(
                reg.create("zero", 0, TopicOverrides::default()),
                Err(BrokerError::InvalidPartitions { .. })
            ));
            assert_eq!(reg.get_or_create("b", 5).unwrap().partitions().len(), 1);
            assert!(reg.close_all().is_empty());
        }
        // A stray non-topic directory and deletion leftovers.
        fs::create_dir_all(dir.path().join("not-a-topic")).unwrap();
        fs::create_dir_all(dir.path().join("x~deleted~1/0")).unwrap();
        let reg =
            TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap();
        let names: Vec<_> = reg.list().iter().map(|t| t.name().to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!dir.path().join("x~deleted~1").exists());
        let a = reg.get("a").unwrap();
        assert_eq!(a.partitions().len(), 3);
        assert_eq!(a.config().retention_ms, Some(1000));
        drop(a);
        reg.delete("a").unwrap();
        assert!(reg.get("a").is_none());
        assert!(!dir.path().join("a").exists());
        assert!(matches!(reg.delete("a"), Err(BrokerError::UnknownTopic(_))));
        // The name can be reused.
        reg.create("a", 2, TopicOverrides::default()).unwrap();
        assert_eq!(reg.get("a").unwrap().partitions().len(), 2);
    }

    fn batch(value: &[u8]) -> Vec<u8> {
        let mut b = sluice_protocol::batch::RecordBatchBuilder::new();
        b.push(1_700_000_000_000, None, Some(value), &[]);
        b.finish().to_vec()
    }

    #[test]
    fn add_partitions_grows_durably_and_refuses_to_shrink() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg =
                TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 10).unwrap();
            reg.create("t", 2, TopicOverrides::default()).unwrap();
            let p0 = Arc::clone(&reg.get("t").unwrap().partitions()[0]);
            p0.append(&batch(b"old")).unwrap();
            // A leftover of an interrupted growth is replaced, not reused.
            fs::create_dir_all(dir.path().join("t/2")).unwrap();
            fs::write(dir.path().join("t/2/junk"), b"x").unwrap();
            let t = reg.add_partitions("t", 4).unwrap();
            assert_eq!(t.partition_count(), 4);
            assert_eq!(t.partitions().len(), 4);
            assert_eq!(t.config().partitions, 4);
            assert!(!dir.path().join("t/2/junk").exists());
            // The old partitions are the same objects, data and all.
            assert!(Arc::ptr_eq(&t.partitions()[0], &p0));
            assert_eq!(t.partitions()[0].end_offset(), 1);
            let p3 = Arc::clone(t.partition(3).unwrap());
            assert_eq!(p3.append(&batch(b"new")).unwrap().base_offset, 0);
            assert_eq!(reg.get("t").unwrap().partition_count(), 4);
            for (total, want) in [(4, "PartitionsNotIncreased"), (3, "PartitionsNotIncreased")] {
                let e = reg.add_partitions("t", total).unwrap_err();
                assert!(
                    matches!(e, BrokerError::PartitionsNotIncreased { current: 4, .. }),
                    "{want}: {e}"
                );
            }
            assert!(matches!(
                reg.add_partitions("t", MAX_PARTITIONS + 1),
                Err(BrokerError::InvalidPartitions { .. })
            ));
            // The broker-wide cap (10 here) counts the new partitions.
            assert!(matches!(
                reg.add_partitions("t", 11),
                Err(BrokerError::PartitionLimit { .. })
            ));
            assert!(matches!(
                reg.add_partitions("nope", 2),
                Err(BrokerError::UnknownTopic(_))
            ));
            assert_eq!(reg.get("t").unwrap().partition_count(), 4);
            assert!(!dir.path().join("t/4").exists());
            assert!(reg.close_all().is_empty());
        }
        let reg = TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 10).unwrap();
        let t = reg.get("t").unwrap();
        assert_eq!(t.partitions().len(), 4);
        assert_eq!(t.partitions()[0].end_offset(), 1);
        assert_eq!(t.partitions()[3].end_offset(), 1);
        assert_eq!(t.partitions()[2].end_offset(), 0);
    }

    #[test]
    fn alter_config_persists_applies_to_open_logs_and_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let set = |k: &str, v: &str| (k.to_string(), Some(v.to_string()));
        {
            let reg =
                TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100).unwrap();
            let o = TopicOverrides::from_pairs(&[("retention.ms".into(), "1000".into())]).unwrap();
            reg.create("t", 2, o).unwrap();
            let before = reg.get("t").unwrap();
            let t = reg
                .alter_config(
                    "t",
                    &[
                        set("retention.bytes", "4096"),
                        set("segment.bytes", "131072"),
                        set("flush", "always"),
                        ("retention.ms".to_string(), None),
                    ],
                )
                .unwrap();
            assert_eq!(t.config().retention_bytes, Some(4096));
            assert_eq!(t.config().retention_ms, None, "back to the default");
            assert_eq!(t.config().flush, crate::config::FlushMode::Always);
            assert_eq!(t.meta().overrides.retention_ms, None);
            // Live on the open logs, for every partition.
            for p in t.partitions() {
                let lc = p.log().config();
                assert_eq!(lc.retention_bytes, Some(4096));
                assert_eq!(lc.retention_ms, None);
                assert_eq!(lc.segment_bytes, 131072);
                assert_eq!(lc.flush, sluice_log::FlushPolicy::Always);
                assert!(p.durable_reads(), "the always read rule applies at once");
                assert!(Arc::ptr_eq(p, &before.partitions()[p.index() as usize]));
            }
            // A bad value or an unknown key (even to delete) changes nothing.
            for bad in [
                vec![set("retention.ms", "5"), set("segment.bytes", "10")],
                vec![set("retention.ms", "5"), ("no.such".to_string(), None)],
                vec![set("no.such", "1")],
            ] {
                let e = reg.alter_config("t", &bad).unwrap_err();
                assert!(matches!(e, BrokerError::InvalidConfig { .. }), "{e}");
            }
            let t = reg.get("t").unwrap();
            assert_eq!(t.config().retention_ms, None);
            assert_eq!(t.partitions()[0].log().config().retention_ms, None);
            assert!(matches!(
                reg.alter_config("nope", &[]),
                Err(BrokerError::UnknownTopic(_))
            ));
            // No change is a no-op that keeps the same topic.
            let same = reg.alter_config("t", &[]).unwrap();
            assert!(Arc::ptr_eq(&same, &t));
            assert!(reg.close_all().is_empty());
        }
        let reg = TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100).unwrap();
        let t = reg.get("t").unwrap();
        assert_eq!(t.config().retention_bytes, Some(4096));
        assert_eq!(t.config().retention_ms, None);
        assert_eq!(t.config().segment_bytes, 131072);
        assert_eq!(t.partitions()[1].log().config().retention_bytes, Some(4096));
        // Replacing the whole set (the cluster's view of the topic).
        let o = TopicOverrides::from_pairs(&[("retention.ms".into(), "7000".into())]).unwrap();
        let t = reg.set_overrides("t", o.clone()).unwrap();
        assert_eq!(t.meta().overrides, o);
        assert_eq!(t.config().retention_bytes, None);
        assert_eq!(t.partitions()[0].log().config().retention_ms, Some(7000));
    }

    #[test]
    fn a_data_dir_serves_one_broker_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap();
        let second = TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000);
        assert!(matches!(second, Err(BrokerError::DataDirLocked { .. })));
        drop(first);
        TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap();
    }

    #[test]
    fn corrupt_meta_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let reg =
                TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap();
            reg.create("t", 1, TopicOverrides::default()).unwrap();
            reg.close_all();
        }
        let meta = dir.path().join("t").join(crate::topic_meta::META_FILE);
        let mut b = fs::read(&meta).unwrap();
        let last = b.len() - 1;
        b[last] ^= 1;
        fs::write(&meta, b).unwrap();
        let err =
            TopicRegistry::open(dir.path(), small_defaults(), Metrics::new(), 100_000).unwrap_err();
        assert!(matches!(err, BrokerError::TopicMeta { .. }), "{err}");
    }
}
