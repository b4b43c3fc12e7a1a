//! Sluice storage engine: the segmented, memory-mapped partition log.
//!
//! This crate owns everything a partition stores on disk: segment files,
//! their sparse indexes, recovery after a crash, retention, and flushing
//! (durability). It knows nothing of sockets. Its one dependency inside the
//! workspace is `sluice_protocol::batch`, the RecordBatch v2 format, which is
//! both the disk and the wire format (pure code, no I/O).
//!
//! # Layout
//!
//! - [`Log`] (`log/mod.rs`): one partition = an ordered list of segments in
//!   one directory; the public API (append, read, flush, retention, config)
//!   and the open sequence. One writer (an internal mutex), any number of
//!   concurrent readers.
//! - `log/recovery.rs`: the recovery plan, pure and unit-tested: from the
//!   directory's file names and the checkpoint, which segments exist, which
//!   orphaned indexes go, how far data is trusted, what is CRC-checked and
//!   fsynced (Kafka's `LogLoader` to the `LocalLog` above).
//! - `log/durability.rs`: group commit, interval flushing and writeback,
//!   background fsyncs of sealed segments, and the checkpoint upkeep.
//! - `segment.rs`: one segment (`.log` + `.index` + `.timeindex`): the
//!   read view shared by readers, the writer's active-segment handle,
//!   recovery and index rebuild.
//! - `index.rs`: the index file formats and their (pure) lookups.
//! - [`policy`]: pure decisions, unit-tested without disks: when to roll and
//!   which sealed segments retention deletes.
//! - [`io`]: the fault-injection seam ([`FileIo`]): every call that changes
//!   the disk or makes a change durable (reservation, writes, file and
//!   directory syncs, creation, rename, removal, truncation), so tests can
//!   make them fail or cut the power at any one of them.
//! - `background.rs`: the bounded thread pool for background fsyncs and
//!   checkpoint rewrites.
//! - `sys.rs`: every `unsafe` block (memory maps, `fallocate`, `flock`,
//!   `fstatvfs` for [`fs_space`]), behind small safe types with a publish protocol.
//!
//! # Directory
//!
//! One directory per partition. A segment is named by its base offset (the
//! offset of its first record), zero-padded to 20 digits:
//! `00000000000000000000.log`, `.index`, `.timeindex`. A `.lock` file holds
//! an advisory `flock` so two processes never open the same log. A
//! `recovery-point` file holds the recovery checkpoint (below), and a
//! `truncate-to` file marks a truncation under way (below).
//!
//! # `.log`: record batches back to back
//!
//! Each batch is exactly Kafka's RecordBatch v2 (see
//! `sluice_protocol::batch` for the 61-byte header table); the log assigns
//! the base offset (bytes 0..8, outside the CRC) when it writes the batch
//! to the file. There is no per-file header: the file is raw batches,
//! so a segment can be served to a socket verbatim.
//!
//! | offset in file | size           | content                                   |
//! |---------------:|----------------|-------------------------------------------|
//! |              0 | 12 + len(0)    | batch 0 (base offset = segment base)      |
//! |   12 + len(0)  | 12 + len(1)    | batch 1 (base offset = last offset(0) + 1)|
//! |            ... | ...            | ...                                       |
//! |            end | preallocated   | zeros reserved with `fallocate` (active   |
//! |                |                | segment only; trimmed on roll and close)  |
//!
//! A segment rolls when an append would take it past `segment_bytes`, or
//! when its first append (wall clock, in this process: the age restarts at
//! reopen) is older than `segment_ms`. One append never spans segments.
//!
//! Base offsets are contiguous: each batch starts at the previous batch's
//! `base_offset + last_offset_delta + 1`. Recovery and reads check this.
//! Index positions are `u32`, so a segment stays below 2 GiB (the
//! configured `segment_bytes` is clamped).
//!
//! # `.index` and `.timeindex`
//!
//! Both start with a 24-byte header, then fixed-size big-endian entries. The
//! active segment's files are mapped and grow in 4 KiB steps; sealed ones are
//! trimmed to the used size and mapped read-only.
//!
//! Header:
//!
//! | offset | size | field       | value                                           |
//! |-------:|-----:|-------------|-------------------------------------------------|
//! |      0 |    4 | magic       | `SLIX` (`.index`) or `SLTX` (`.timeindex`)      |
//! |      4 |    2 | version     | 1 (u16)                                         |
//! |      6 |    2 | entry_len   | 8 (`.index`) or 12 (`.timeindex`) (u16)         |
//! |      8 |    8 | base_offset | the segment's base offset (u64)                 |
//! |     16 |    4 | reserved    | 0                                               |
//! |     20 |    4 | crc         | `crc32fast` (IEEE CRC-32) of bytes 0..20 (u32)  |
//!
//! `.index` entry (one per `index_interval_bytes` of log, never at position 0):
//!
//! | offset | size | field      | meaning                                          |
//! |-------:|-----:|------------|--------------------------------------------------|
//! |      0 |    4 | rel_offset | batch base offset minus segment base (u32)       |
//! |      4 |    4 | position   | byte position of that batch in the `.log` (u32)  |
//!
//! `.timeindex` entry (written with an `.index` entry when the running
//! maximum timestamp grew):
//!
//! | offset | size | field      | meaning                                          |
//! |-------:|-----:|------------|--------------------------------------------------|
//! |      0 |    8 | timestamp  | largest batch max-timestamp so far (i64, ms)     |
//! |      8 |    4 | rel_offset | every batch up to and including the one at this  |
//! |        |      |            | relative offset has max-timestamp <= timestamp   |
//!
//! Entries are valid while both columns increase (timestamps never
//! decrease) and, for `.index`, the position is non-zero and inside the
//! `.log`; an all-zero entry (preallocated space) ends the list. A header
//! that does not check out, a missing file, or a last entry that does not
//! point at a batch with the expected base offset makes the index "damaged":
//! it is rebuilt from the `.log` on open.
//!
//! # `recovery-point`: the checkpoint
//!
//! One 20-byte file per partition directory, big-endian:
//!
//! | offset | size | field           | value                                          |
//! |-------:|-----:|-----------------|------------------------------------------------|
//! |      0 |    4 | magic           | `SLRP`                                         |
//! |      4 |    2 | version         | 1 (u16)                                        |
//! |      6 |    2 | flags           | bit 0: clean shutdown; other bits 0 (u16)      |
//! |      8 |    8 | recovery_offset | every offset below it was fsynced (u64)        |
//! |     16 |    4 | crc             | `crc32fast` (IEEE CRC-32) of bytes 0..16 (u32) |
//!
//! It is replaced atomically: written to `recovery-point.tmp`, fsynced,
//! renamed over `recovery-point`, directory fsynced. It is written:
//!
//! - by [`Log::open`], after recovery and after syncing (below): the end
//!   offset, flag clear. This also invalidates a clean-shutdown flag, so a
//!   crash from then on is seen as unclean;
//! - by [`Log::close`], after everything is synced: the end offset with the
//!   clean flag (not if a sealed segment's background sync is still
//!   pending). The first append after `close` clears the flag before it
//!   writes a byte;
//! - at most once a second after a successful [`Log::flush`],
//!   [`Log::wait_durable`] or [`Log::maybe_flush`], on the background
//!   pool (below), so no appender or group-commit waiter pays for its
//!   two fsyncs (the fdatasync of each group commit is not followed by a
//!   checkpoint write); and by [`Log::write_recovery_point`]. The offset is
//!   the durable offset, or the active segment's base when that is higher
//!   and no sealed segment's background sync is pending; it never goes
//!   back within one open. A roll does not write it inline (that would put
//!   two fsyncs into an append); the next flush picks the sealed segment up.
//!
//! If it cannot be written on open or on the first append after close (a
//! full disk), it is removed instead (an unlink needs no space), so no
//! stale clean flag survives; a failure at close only costs a rescan.
//!
//! # Recovery (on open)
//!
//! Why a recovery point: after a machine crash under `Interval`/`Os`
//! flushing, unsynced pages can be lost out of order, not only at the
//! tail; a batch whose header survived but whose body did not must be cut,
//! or every fetch at its offset fails while appends continue after it.
//! What was fsynced (below the recovery point) is whole.
//!
//! - Clean shutdown (a valid checkpoint with the clean flag): nothing is
//!   rescanned. Sealed segments (all but the last) are trusted by size and
//!   index: the last index entry is checked to point at a batch, then batch
//!   headers (not CRCs) are walked from it to the end of the file; anything
//!   after the last well-formed batch is ignored (and logged). Their CRCs
//!   are checked lazily on read (below). The active (last) segment is
//!   CRC-checked from its last index entry that points at a CRC-valid batch
//!   with the expected base offset (or from 0 if none, or if an index is
//!   damaged), as below.
//! - Unclean shutdown (a valid checkpoint without the flag, recovery point
//!   R): segments holding only offsets below R are opened as after a clean
//!   shutdown. Every sealed segment holding offsets `>= R` is CRC-checked
//!   from the batch of its last index entry at or below R to the end of its
//!   file (trailing bytes after the last batch are damage unless all zero:
//!   an untrimmed preallocated tail). At the first bad batch, all later
//!   segments are deleted (`.log`, `.index`, `.timeindex`; directory
//!   fsynced), a `tracing::warn!` names the segment, position, offset, cut
//!   bytes, deleted files, their bytes and first offset and the reason, and
//!   the damaged segment becomes the active one, cut like one (as Kafka's
//!   log loader does). The active segment is CRC-checked from its last
//!   index entry at or below R (header-checked).
//! - No checkpoint (a log written before it existed) or a damaged one
//!   (length, CRC, magic, version or flags): as with R = 0, every batch of
//!   every segment is CRC-checked, as Kafka does without a recovery-point
//!   file. A pre-checkpoint log pays this once; a new, empty directory
//!   needs nothing. [`Log::open_kind`] tells which case applied.
//! - Active-segment checks: whole, sane header, expected base offset,
//!   CRC-32C. The file is cut at the first short, zero-length/zero-filled,
//!   over-long or CRC-failing batch: `set_len` to the cut, fsync, and a
//!   `tracing::warn!` with the position, next offset and cut byte count (a
//!   zero-filled preallocated tail is dropped silently; it is not data).
//!   Both index files are then rewritten from the kept and rescanned
//!   entries and fsynced.
//! - Before [`Log::durable_offset`] is set to the end offset, every segment
//!   holding offsets at or above the recovery point (all of them after a
//!   full scan) is fdatasynced, and the active one in every case: a killed
//!   process leaves its unsynced writes in the page cache, and they are
//!   made durable before they are reported durable. A failing fsync fails
//!   the open. Then the checkpoint is written.
//! - Recovery never drops a durable batch: an fsynced batch is whole and
//!   CRC-valid, and everything before it too. Damage below the recovery
//!   point (bit rot, not a crash) is found lazily on read, as before.
//! - Cost: one CRC-32C pass over the data from R. Measured with
//!   `cargo bench --bench storage -- recovery`: opening a log whose 1 GiB
//!   active segment was left by a killed process takes about 33 ms when R
//!   is near its end, and about 195 ms for a CRC pass over all of it
//!   (the `indexes_deleted_full_rescan` case, which is what R at the
//!   segment base costs).
//!
//! # Reads and verification
//!
//! [`Log::read`] returns whole batches as `Bytes` that borrow the mapping
//! (the owner holds an `Arc` of it, so bytes of a segment deleted by
//! retention stay valid). Every returned batch's header and base offset are
//! checked. CRCs are checked on read for data this process did not append
//! or recover itself (sealed segments found on open, and the part of the
//! active segment before the recovery scan); a per-segment "verified prefix"
//! watermark makes a sequential consumer pay each CRC once. A damaged batch
//! yields [`LogError::Corrupt`] naming the file and position; the batches
//! before and after it stay readable.
//!
//! # Durability
//!
//! Appends are `pwritev` calls into the page cache (see "Why appends use
//! pwrite" below); `fdatasync` of the `.log` writes those dirty pages back.
//! [`FlushPolicy::Always`] is a group commit: `append` does not wait for
//! the disk and starts no I/O (an earlier version started writeback of
//! every append with `sync_file_range`, under the writer lock: a syscall
//! and a device notification per batch, which halved 100 producers of
//! 16 KiB durable batches, 210 against 366-466 MB/s, and gained nothing
//! for 1 MiB batches); callers that acknowledge only durable data call [`Log::wait_durable`], and
//! one fdatasync (by whichever waiter leads) covers every append that arrived
//! while the previous one ran; [`Log::maybe_flush`] also syncs whenever
//! anything is not durable, so nothing stays unsynced for long. [`FlushPolicy::Interval`] syncs from [`Log::maybe_flush`], which
//! the owner calls on a timer; [`FlushPolicy::Os`] leaves it to the page
//! cache. A failed fdatasync poisons the log ([`LogError::Poisoned`]) until
//! it is reopened; it is never retried or ignored (after a failed fsync the
//! kernel may have dropped the dirty pages).
//!
//! Roll and close trim the preallocated tails (`set_len`) and fsync all
//! three files; creating a segment fsyncs the directory. On roll with
//! `Always` the fsync is inline (normally cheap: waiters have synced most
//! of the data already); with `Interval`/`Os` it runs in the background,
//! as Kafka does, so producers do not stall behind a whole segment's
//! writeback. Background work (these sealed-segment fsyncs and the
//! `recovery-point` rewrites) runs on one process-wide pool of two threads:
//! no roll or flush starts a thread of its own. [`Log::flush`] and
//! [`Log::wait_durable`] also sync any sealed
//! segment whose background fsync has not finished before advancing
//! [`Log::durable_offset`]; a background failure poisons the log. Indexes
//! are not synced on flush (they are rebuildable from the `.log`).
//! After each flush the `recovery-point` checkpoint is brought forward at
//! most once a second (above), which bounds what recovery after a crash
//! has to CRC-check.
//!
//! Disk space is reserved with `fallocate` (mode 0, so the file size grows)
//! in steps of `preallocate_bytes` before any byte is written, and appends
//! only ever write inside the reserved range, so no append needs a block the
//! file system has not already set aside (and a reader's mapping never
//! covers a hole: a load from a sparse mapping on a full disk would be a
//! SIGBUS). `ENOSPC`
//! becomes [`LogError::DiskFull`] before any byte of the append is written
//! (when a whole step does not fit, exactly what the append needs is tried).
//!
//! A failed write (`pwritev` error) fails the append with [`LogError::Io`]
//! and publishes nothing: the end offset, indexes and readers are
//! unchanged, and the next append writes over the partial bytes (after a
//! crash, recovery cuts them as a damaged tail). It does not poison the log:
//! unlike a failed fsync, no acknowledged byte is in doubt.
//!
//! # Why appends use pwrite (a departure from "appends copy into the map")
//!
//! The active segment is still mapped (shared, read-only) and reads are
//! still zero-copy `Bytes` over that mapping, but appends are written with
//! `pwritev(2)` at the end of the file, not stored into the mapping:
//!
//! - A store into a freshly `fallocate`d mapping faults on every page; the
//!   fault reads the (unwritten) extent, i.e. the kernel allocates page
//!   cache folios and zero-fills them (`page_cache_ra_order` ->
//!   `zero_user_segments`), and only then is the page overwritten. Writeback
//!   of a writably mapped page must also write-protect its PTE again (TLB
//!   shootdown IPIs). `perf record` of the broker under a 1 MB-batch produce
//!   load showed ~39-72% of its CPU in that zeroing. A `pwrite` of whole
//!   pages into the page cache needs neither the zeroing nor the faults.
//! - Each batch goes out as two iovecs (its new 8-byte base offset, then the
//!   rest of the batch as received), so the payload is not copied in user
//!   space either (four with a leader epoch: see "Leader epochs on append").
//! - Measured end to end (loopback, 1,000-byte records, ~1 MB batches,
//!   1,000,000 records, 8 requests in flight, 2 vCPUs shared with the
//!   client, Firecracker VM): produce `acks=leader` went from 428-923 MB/s
//!   (stores into the map) to 1.4-2.5 GB/s (`pwritev`); prefaulting each
//!   step with `MADV_POPULATE_WRITE` instead gave 1.3-1.6 GB/s (it still
//!   zero-fills every page). `acks=durable` with `flush = always` went from
//!   382-513 MB/s to 672-928 MB/s (with a per-append early writeback since removed), against
//!   `dd bs=1M count=2048 conv=fdatasync` at 558-856 MB/s in the same runs.
//!   The criterion bench (`append/os_100x1000B`, fresh preallocated pages)
//!   went from 1.9 to 2.6 GiB/s: it gained less because it runs alone, never
//!   writes back, and reuses page frames the previous log just freed.
//! - On that VM, page frames the guest has not touched recently are backed
//!   by the host only on first touch (free page reporting): once the page
//!   cache has to grow into such memory, any writer is capped near
//!   400-500 MB/s (`dd` of a second GiB into the page cache: 378 MB/s).
//!
//! Safety is unchanged: Linux has one page cache per file, so bytes written
//! with `pwrite` are what the shared mapping shows; the writer writes only at
//! or beyond the published length, and publishes the new length (Release)
//! only after the `pwritev` returned, so readers (Acquire) never see a
//! partial batch and published bytes never change.
//!
//! # Leader epochs on append
//!
//! [`Log::append_with_epoch`]`(batches, Some(e))` stores every batch with its
//! `partition_leader_epoch` (bytes 12..16, big-endian i32, outside the CRC)
//! set to `e`, as a replication leader stamps what it accepts; `None` (and
//! `Log::append`) keeps the field each batch carries. The caller's bytes
//! are neither copied nor changed: each batch goes out in the same `pwritev`
//! as `[new base offset, 8 bytes][batch bytes 8..12][e, 4 bytes][batch bytes
//! 16..]`, four iovecs instead of two, so one call carries at most 16 batches
//! instead of 32 (the iovec array stays at 64). The CRC covers bytes 21.. only,
//! so it stays valid.
//!
//! # Truncation: `Log::truncate_to`
//!
//! [`Log::truncate_to`]`(offset)` removes every batch at or after `offset`, as a
//! follower does before it takes the leader's log from a divergence point.
//! The log then ends at the last batch boundary at or below `offset` (a batch
//! containing `offset` goes whole); the new end is returned and the next
//! append continues from it. At or beyond the end it does nothing; below the
//! start offset it empties the log down to its start offset (the segment at
//! the start stays, empty). It runs under the writer lock (and the retention
//! lock); a closed or poisoned log refuses. Steps:
//!
//! 1. A `truncate-to` marker (below) records the new end durably. From here on
//!    a crash cannot resurrect anything: the next open completes the cut
//!    before recovery looks at the directory.
//! 2. The end offset, the cut segment's read view and the durable offset are
//!    lowered; group-commit leaders and checkpoint writers that snapshotted
//!    the old end see a bumped truncation count and claim nothing from it.
//!    The `recovery-point` file is rewritten at once with at most the new end,
//!    clean flag clear.
//! 3. Segments entirely after the cut leave the segment list and their three
//!    files are unlinked, newest first; the directory is fsynced.
//! 4. The segment holding the cut has the removed bytes overwritten with zeros
//!    in place (positioned writes, then fdatasync). **A file that is or was
//!    mapped is never shrunk:** readers may hold `Bytes` into the removed range
//!    (they own a mapping of it), and a load from a mapped page past the end
//!    of a file is a SIGBUS. Such bytes afterwards read as zeros or as newer
//!    data, never fault. Recovery already stops at zeros.
//! 5. That segment (active or sealed) is reopened as the active one through
//!    the active-segment recovery, from an index entry at or below the cut,
//!    keeping the file length (it may grow, and later trims on roll and close
//!    never go below it while this log is open). Its `.index` and
//!    `.timeindex` are first replaced by copies (`X.index.tmp`, fsync, rename
//!    over), because the writer recreates them with `truncate(true)`, which
//!    must not hit an inode that an old reader still maps.
//! 6. The marker is removed (directory fsynced).
//!
//! A `wait_durable` for offsets the cut removed returns once what is left is
//! durable: the caller tells from the end offset that its offsets are gone.
//! A failure after step 1 poisons the log; reopening completes the cut. A
//! reopened log ends where the cut left it; a sealed segment that was cut
//! and later rolled keeps zeros after its last batch (ignored on open, with a
//! warning).
//!
//! # `truncate-to`: the pending-truncation marker
//!
//! Present only while a truncation is under way (or was interrupted). 20 bytes,
//! big-endian, the `recovery-point` layout with another magic:
//!
//! | offset | size | field   | value                                          |
//! |-------:|-----:|---------|------------------------------------------------|
//! |      0 |    4 | magic   | `SLTR`                                         |
//! |      4 |    2 | version | 1 (u16)                                        |
//! |      6 |    2 | flags   | 0 (u16)                                        |
//! |      8 |    8 | offset  | the new end offset T, a batch boundary (u64)   |
//! |     16 |    4 | crc     | `crc32fast` (IEEE CRC-32) of bytes 0..16 (u32) |
//!
//! Written like the checkpoint (`truncate-to.tmp`, fsync, rename, directory
//! fsync). On open, before recovery: every segment whose base is above T is
//! deleted, the last remaining one is zeroed from its first batch that does
//! not end at or before T to its last non-zero byte (fdatasync), leftover
//! `*.index.tmp`/`*.timeindex.tmp` copies are removed, the checkpoint is
//! lowered to at most T with the clean flag clear, and the marker is removed.
//! A damaged marker fails the open ([`LogError::Corrupt`]): the cut it records
//! cannot be known, and ignoring it could resurrect removed batches.
//!
//! # Directories
//!
//! [`Log::open`] creates the directory and any missing parents, and fsyncs
//! the directory holding each new entry, up to the first that existed (an
//! acknowledged append must not vanish with a directory entry that was
//! never durable).
//!
//! # Closed for good
//!
//! [`Log::mark_closed`] (used when a topic is deleted) puts the log in a
//! closed state: append, roll, flush, retention, prefix deletion,
//! truncation, writeback, checkpoint writes and reads return [`LogError::Closed`] and
//! touch no file, so a new log later created at the same path is safe from
//! handles of the old one. It waits for any such operation under way.
//!
//! # Later: compaction
//!
//! Sealed segments are immutable read views swapped into the segment list
//! under a lock; a compactor can write a replacement segment (same base
//! offset, fewer batches, offsets kept) to a temporary name, rename it over
//! the old files and swap the view the same way roll does. Offsets inside a
//! segment then need not be contiguous; the read path only requires that
//! they increase, which is the one check to relax.

#![warn(missing_docs)]

mod background;
mod checkpoint;
mod error;
mod index;
pub mod io;
mod log;
pub mod policy;
mod segment;
mod sys;

pub use crate::background::threads_started as background_threads_started;
pub use crate::error::LogError;
pub use crate::io::{FaultyFileIo, FileIo, OsFileIo};
pub use crate::log::{AppendInfo, FlushPolicy, Log, LogConfig, OpenKind, WRITEBACK_CHUNK};
pub use crate::segment::file_name;
pub use crate::sys::{fs_space, FsSpace};

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
