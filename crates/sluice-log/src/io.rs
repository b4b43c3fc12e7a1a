//! The fault-injection seam: the few file-system calls whose failure the
//! engine must handle (space reservation and data sync) go through
//! [`FileIo`], so tests can make them fail on demand.

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// File-system calls the log makes through a replaceable object.
///
/// An implementation must either do what the method says or return an error;
/// the log treats an `Err` from [`FileIo::sync_data`] as "the data may not be
/// on disk" and poisons itself.
pub trait FileIo: Send + Sync + Debug {
    /// Reserves `[offset, offset + len)` of `file` so later stores into a
    /// mapping cannot fault; the file size grows to at least `offset + len`.
    fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the data (and the size) of `file` durable (`fdatasync`).
    fn sync_data(&self, file: &File) -> io::Result<()>;
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
}
