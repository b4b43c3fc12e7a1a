//! The fault-injection seam: the few file-system calls whose failure the
//! engine must handle (space reservation, appends to the `.log` and data
//! sync) go through [`FileIo`], so tests can make them fail on demand.

use std::fmt::Debug;
use std::fs::File;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// File-system calls the log makes through a replaceable object.
///
/// An implementation must either do what the method says or return an error;
/// the log treats an `Err` from [`FileIo::sync_data`] as "the data may not be
/// on disk" and poisons itself.
pub trait FileIo: Send + Sync + Debug {
    /// Reserves `[offset, offset + len)` of `file` so later writes (and
    /// loads through a mapping) need no further block allocation; the file size grows to at least `offset + len`.
    fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the data (and the size) of `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;
    /// Writes `bufs` in order at `offset` of `file` with one `pwritev(2)`
    /// and returns how many bytes were written (possibly fewer than asked;
    /// the log loops). Only ever called on space `allocate` reserved.
    fn write_vectored_at(
        &self,
        file: &File,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        crate::sys::pwritev(file, offset, bufs)
    }
}

/// The real implementation: `fallocate(2)` and `fdatasync(2)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileIo;

impl FileIo for OsFileIo {
    fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        crate::sys::fallocate(file, offset, len)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    // `write_vectored_at`: the trait's default, one `pwritev(2)`.
}

/// A [`FileIo`] that delegates to [`OsFileIo`] but fails on request.
#[derive(Debug, Default)]
pub struct FaultyFileIo {
    /// When set, every `sync_data` fails with `EIO`.
    pub fail_sync: AtomicBool,
    /// When set, every `allocate` fails with `ENOSPC`.
    pub fail_allocate: AtomicBool,
    /// Number of `sync_data` calls made (successful or not).
    pub syncs: AtomicU64,
    /// When set, every `write_vectored_at` fails with `EIO` after writing
    /// the first half of what it was asked (at least one byte), as a real
    /// failure part-way through may.
    pub fail_write: AtomicBool,
    /// When non-zero, every `write_vectored_at` writes at most this many bytes.
    pub short_writes: AtomicU64,
}

impl FileIo for FaultyFileIo {
    fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        if self.fail_allocate.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        OsFileIo.allocate(file, offset, len)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        OsFileIo.sync_data(file)
    }
    fn write_vectored_at(
        &self,
        file: &File,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fail = self.fail_write.load(Ordering::SeqCst);
        let mut limit = match self.short_writes.load(Ordering::SeqCst) {
            0 => total,
            n => (n as usize).min(total),
        };
        if fail {
            limit = (total / 2).max(1).min(total);
        }
        // Write at most `limit` bytes of the buffers, in order.
        let mut done = 0usize;
        for b in bufs {
            if done == limit {
                break;
            }
            let n = b.len().min(limit - done);
            let w =
                OsFileIo.write_vectored_at(file, offset + done as u64, &[IoSlice::new(&b[..n])])?;
            done += w;
            if w < n {
                break;
            }
        }
        if fail {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(done)
    }
}
