//! Every `unsafe` block of the crate: memory maps, `fallocate`, `flock`,
//! `fstatvfs`.
//!
//! The rest of the crate sees only safe types:
//!
//! - [`Region`]: a mapping plus a *published length*. Bytes below the
//!   published length are immutable for the rest of the mapping's life, so any
//!   thread may read them; the published length only grows (Release store by
//!   the writer, Acquire load by readers).
//! - [`RegionWriter`]: the single writer of an index region. It stores into
//!   the (writable, shared) mapping, only at or beyond the published length
//!   and below the *writable length* (the part of the file that is known to
//!   be allocated), so a store never lands in a sparse page (SIGBUS on a full
//!   disk) or beyond the end of the file.
//! - [`AppendWriter`]: the single writer of an active segment's `.log`. Its
//!   mapping is read-only; it writes with `pwritev(2)` through [`FileIo`]
//!   (the page cache is one per file on Linux, so the mapping sees the
//!   bytes once the call returns), under the same rules: only at or beyond
//!   the published length and below the writable (fallocated) length, so a
//!   write never needs a block that `fallocate` did not reserve. Why not
//!   stores into the map: see "Why appends use pwrite" in the crate docs.
//! - [`region_bytes`]: a zero-copy `Bytes` over published bytes that keeps
//!   the mapping alive through an `Arc`, even after the file is unlinked.
//!
//! Invariant assumed (and enforced with an advisory `flock` on the partition
//! directory): no other process truncates or rewrites the files we map.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::io::FileIo;

enum Mapping {
    /// Writable shared mapping (the active segment's indexes).
    Raw(MmapRaw),
    /// Read-only shared mapping (sealed segments, and the active segment's
    /// `.log`, which grows by `pwritev`).
    ReadOnly(Mmap),
    /// Zero-length file: nothing to map.
    Empty,
}

/// A memory mapping with a published length; see the module docs.
pub(crate) struct Region {
    mapping: Mapping,
    /// Length of the mapping (may exceed the file's length for raw maps).
    map_len: usize,
    /// Bytes `[0, published)` are written and never change again.
    published: AtomicUsize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("map_len", &self.map_len)
            .field("published", &self.published())
            .finish()
    }
}

impl Region {
    /// Maps `file` read-only; all of its `len` bytes are published.
    pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<Arc<Region>> {
        let mapping = if len == 0 {
            Mapping::Empty
        } else {
            // SAFETY: the file is owned by this log (directory flock) and is
            // never truncated below `len` or rewritten while mapped: sealed
            // segments are immutable until they are unlinked, and unlinking
            // keeps the inode (and so the pages) alive while mapped.
            Mapping::ReadOnly(unsafe { MmapOptions::new().len(len).map(file)? })
        };
        Ok(Arc::new(Region {
            mapping,
            map_len: len,
            published: AtomicUsize::new(len),
        }))
    }

    /// Maps `map_len` bytes of `file` shared and writable, with nothing
    /// published yet. The file may be shorter than `map_len`: the writer only
    /// touches bytes below its writable length, which the caller keeps within
    /// the allocated file.
    pub(crate) fn map_writable(
        file: &File,
        map_len: usize,
    ) -> io::Result<(Arc<Region>, RegionWriter)> {
        let mapping = if map_len == 0 {
            Mapping::Empty
        } else {
            Mapping::Raw(MmapOptions::new().len(map_len).map_raw(file)?)
        };
        let region = Arc::new(Region {
            mapping,
            map_len,
            published: AtomicUsize::new(0),
        });
        let writer = RegionWriter {
            region: region.clone(),
            writable: 0,
        };
        Ok((region, writer))
    }

    /// Maps `map_len` bytes of `file` shared and read-only, with nothing
    /// published yet, for an [`AppendWriter`] that grows the file with
    /// `pwritev`. The file may be shorter than `map_len`: readers only touch
    /// published bytes, which are always inside the file.
    pub(crate) fn map_appendable(
        file: Arc<File>,
        map_len: usize,
    ) -> io::Result<(Arc<Region>, AppendWriter)> {
        let mapping = if map_len == 0 {
            Mapping::Empty
        } else {
            // SAFETY: as for `map_read_only`, the file belongs to this log
            // (directory flock) and is never truncated below the published
            // length while mapped (trim cuts exactly at the published end);
            // bytes below the published length are never written again
            // (`AppendWriter` only writes at or beyond it). Pages past the end
            // of the file are never accessed: readers stay below `published`.
            Mapping::ReadOnly(unsafe { MmapOptions::new().len(map_len).map(&*file)? })
        };
        let region = Arc::new(Region {
            mapping,
            map_len,
            published: AtomicUsize::new(0),
        });
        let writer = AppendWriter {
            region: region.clone(),
            file,
            writable: 0,
        };
        Ok((region, writer))
    }

    /// Number of published bytes (Acquire).
    pub(crate) fn published(&self) -> usize {
        self.published.load(Ordering::Acquire)
    }

    /// Length of the mapping.
    pub(crate) fn map_len(&self) -> usize {
        self.map_len
    }

    fn ptr(&self) -> *const u8 {
        match &self.mapping {
            Mapping::Raw(m) => m.as_ptr(),
            Mapping::ReadOnly(m) => m.as_ptr(),
            Mapping::Empty => std::ptr::NonNull::<u8>::dangling().as_ptr(),
        }
    }

    /// The published bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        let len = self.published();
        // SAFETY: `[0, len)` lies inside the mapping (published <= writable
        // <= map_len, checked by RegionWriter::publish and
        // AppendWriter::publish) and inside the file (writable never exceeds
        // the allocated file length), and published bytes are never written
        // again (neither stores nor pwritev touch them), so a shared slice
        // cannot alias a concurrent write. For `Empty`, len is 0 and a dangling pointer is
        // valid for a zero-length slice.
        unsafe { std::slice::from_raw_parts(self.ptr(), len) }
    }
}

struct RegionSlice {
    region: Arc<Region>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for RegionSlice {
    fn as_ref(&self) -> &[u8] {
        // `region_bytes` checked the range against the published length,
        // which never shrinks, so this slice is always in range.
        self.region
            .bytes()
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }
}

/// Zero-copy `Bytes` of published bytes `[start, start + len)`, or `None`
/// when the range is not (yet) published.
pub(crate) fn region_bytes(region: &Arc<Region>, start: usize, len: usize) -> Option<Bytes> {
    let end = start.checked_add(len)?;
    if end > region.published() {
        return None;
    }
    Some(Bytes::from_owner(RegionSlice {
        region: region.clone(),
        start,
        len,
    }))
}

/// The single writer of a [`Region`]; see the module docs.
pub(crate) struct RegionWriter {
    region: Arc<Region>,
    /// Bytes of the file known to be allocated (and inside the mapping).
    writable: usize,
}

impl std::fmt::Debug for RegionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionWriter")
            .field("region", &self.region)
            .field("writable", &self.writable)
            .finish()
    }
}

impl RegionWriter {
    /// Declares that the file is allocated up to `len` bytes (clamped to the
    /// mapping). Call only after `fallocate` (or an equivalent write) succeeded,
    /// or with a smaller value after the file was trimmed.
    pub(crate) fn set_writable(&mut self, len: usize) {
        self.writable = len.min(self.region.map_len).max(self.region.published());
    }

    /// The region this writer writes.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Mutable access to the unpublished, allocated bytes `[at, at + len)`;
    /// `None` if any of them is published or not allocated.
    pub(crate) fn unpublished_mut(&mut self, at: usize, len: usize) -> Option<&mut [u8]> {
        let end = at.checked_add(len)?;
        if at < self.region.published() || end > self.writable {
            return None;
        }
        let ptr = match &self.region.mapping {
            Mapping::Raw(m) => m.as_mut_ptr(),
            _ => return if len == 0 { Some(&mut []) } else { None },
        };
        // SAFETY: `[at, end)` is inside the mapping and the allocated file
        // (end <= writable <= map_len, writable <= allocated length). It is
        // not published, so no reader holds a slice over it (readers only
        // build slices below the published length), and this `&mut self`
        // borrow makes it the only mutable view: RegionWriter is not Clone
        // and there is exactly one per region.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr.add(at), len) })
    }

    /// Writes `src` at `at` (unpublished, allocated bytes only).
    pub(crate) fn write(&mut self, at: usize, src: &[u8]) -> bool {
        match self.unpublished_mut(at, src.len()) {
            Some(dst) => {
                dst.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    /// Publishes bytes up to `len` (Release). Never shrinks; clamped to the
    /// writable length.
    pub(crate) fn publish(&mut self, len: usize) {
        let len = len.min(self.writable);
        if len > self.region.published.load(Ordering::Relaxed) {
            self.region.published.store(len, Ordering::Release);
        }
    }
}

/// Most buffers passed to one `pwritev` by [`AppendWriter::write_at`].
pub(crate) const MAX_WRITE_BUFS: usize = 64;

/// The single writer of an active segment's `.log`; see the module docs.
pub(crate) struct AppendWriter {
    region: Arc<Region>,
    file: Arc<File>,
    /// Bytes of the file known to be allocated (and inside the mapping).
    writable: usize,
}

impl std::fmt::Debug for AppendWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendWriter")
            .field("region", &self.region)
            .field("writable", &self.writable)
            .finish()
    }
}

impl AppendWriter {
    /// Declares that the file is allocated up to `len` bytes (clamped to the
    /// mapping). Call only after `fallocate` succeeded, or with a smaller
    /// value after the file was trimmed.
    pub(crate) fn set_writable(&mut self, len: usize) {
        self.writable = len.min(self.region.map_len).max(self.region.published());
    }

    /// The region this writer grows.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Writes the concatenation of `bufs` (at most [`MAX_WRITE_BUFS`]) at
    /// `at` with `pwritev` through `io`, looping over short writes. Only
    /// unpublished, allocated bytes may be written: anything else is refused
    /// before a byte is written. On error, some of the bytes may have been
    /// written; they are unpublished, so readers never see them and the
    /// next write at the same position replaces them.
    pub(crate) fn write_at(
        &mut self,
        at: usize,
        bufs: &[&[u8]],
        io: &dyn FileIo,
    ) -> io::Result<()> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        let end = at
            .checked_add(total)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if bufs.len() > MAX_WRITE_BUFS || at < self.region.published() || end > self.writable {
            return Err(io::Error::other("append beyond reserved space"));
        }
        let (mut first, mut skip) = (0usize, 0usize);
        let mut pos = at;
        while pos < end {
            let mut iov = [IoSlice::new(&[]); MAX_WRITE_BUFS];
            let mut n = 0;
            for (i, b) in bufs.iter().enumerate().skip(first) {
                let b = if i == first { &b[skip..] } else { b };
                if !b.is_empty() {
                    iov[n] = IoSlice::new(b);
                    n += 1;
                }
            }
            let wrote = io.write_vectored_at(&self.file, pos as u64, &iov[..n])?;
            if wrote == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            pos += wrote;
            // Advance (first, skip) by `wrote` bytes.
            let mut left = wrote;
            while left > 0 && first < bufs.len() {
                let rest = bufs[first].len() - skip;
                if left >= rest {
                    left -= rest;
                    first += 1;
                    skip = 0;
                } else {
                    skip += left;
                    left = 0;
                }
            }
        }
        Ok(())
    }

    /// Publishes bytes up to `len` (Release): the `pwritev` that wrote them
    /// returned before this store, so a reader that loads the new length
    /// (Acquire) sees them through the mapping. Never shrinks; clamped to
    /// the writable length.
    pub(crate) fn publish(&mut self, len: usize) {
        let len = len.min(self.writable);
        if len > self.region.published.load(Ordering::Relaxed) {
            self.region.published.store(len, Ordering::Release);
        }
    }
}

/// An offset or length that does not fit the C type: `InvalidInput`, keeping
/// the conversion error as its cause.
fn invalid_input(e: std::num::TryFromIntError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// One `pwritev(2)` of `bufs` at `offset` (at most `IOV_MAX` buffers are
/// passed), retried on `EINTR`. Returns the bytes written, which may be
/// fewer than asked.
pub(crate) fn pwritev(file: &File, offset: u64, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    if bufs.is_empty() {
        return Ok(0);
    }
    let off = libc::off_t::try_from(offset).map_err(invalid_input)?;
    let count = bufs.len().min(1024) as libc::c_int;
    loop {
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec`
        // on Unix; the pointer and count describe `bufs`, which outlives the
        // call, and the kernel only reads from those buffers. The file
        // descriptor is valid and open for the duration of the call.
        let rc = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                count,
                off,
            )
        };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Reserves `[offset, offset + len)` of `file` with `fallocate(2)` (mode 0:
/// the file size grows). Falls back to writing zeros where the file system
/// does not support `fallocate`.
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off = libc::off_t::try_from(offset).map_err(invalid_input)?;
    let l = libc::off_t::try_from(len).map_err(invalid_input)?;
    loop {
        // SAFETY: plain syscall on a valid, open file descriptor borrowed for
        // the duration of the call; no memory is passed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, l) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) => return write_zeros(file, offset, len),
            _ => return Err(err),
        }
    }
}

fn write_zeros(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = [0u8; 64 * 1024];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Asks the kernel to start writing back `[offset, offset + len)` of `file`
/// now (`sync_file_range(2)` with `SYNC_FILE_RANGE_WRITE`): asynchronous,
/// it does not wait for the I/O and makes nothing durable by itself (no
/// metadata, no device cache flush); a later `fdatasync` still does that,
/// and finds most of the data already written or in flight.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let off = libc::off64_t::try_from(offset).map_err(invalid_input)?;
    let l = libc::off64_t::try_from(len).map_err(invalid_input)?;
    loop {
        // SAFETY: plain syscall on a valid, open file descriptor borrowed for
        // the duration of the call; no memory is passed.
        let rc =
            unsafe { libc::sync_file_range(file.as_raw_fd(), off, l, libc::SYNC_FILE_RANGE_WRITE) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Takes an exclusive, non-blocking advisory lock on `file` (released when
/// the file is closed).
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<()> {
    // SAFETY: plain syscall on a valid, open file descriptor; no memory passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Space on the file system holding `file` (any open file or directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged process may still allocate (`df`'s "Avail":
    /// `f_bavail`, so blocks reserved for root do not count).
    pub available: u64,
    /// Size of the file system in bytes.
    pub total: u64,
}

/// [`FsSpace`] of the file system holding `file`, with `fstatvfs(2)`.
pub fn fs_space(file: &File) -> io::Result<FsSpace> {
    // SAFETY: all-zero bytes are a valid `statvfs` (plain integers).
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, open file descriptor borrowed for the call, and a
    // pointer to a `statvfs` the kernel fills and nothing else aliases.
    let rc = unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    let (frsize, bavail, blocks) = (
        u64::from(st.f_frsize),
        u64::from(st.f_bavail),
        u64::from(st.f_blocks),
    );
    Ok(FsSpace {
        available: bavail.saturating_mul(frsize),
        total: blocks.saturating_mul(frsize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_offsets_are_invalid_input_with_their_cause() {
        let f = tempfile::tempfile().unwrap();
        let errs = [
            pwritev(&f, u64::MAX, &[IoSlice::new(b"x")]).unwrap_err(),
            start_writeback(&f, u64::MAX, 1).unwrap_err(),
        ];
        for e in errs {
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.get_ref().is_some(), "conversion error kept as the cause");
        }
    }

    #[test]
    fn fs_space_of_a_directory_is_plausible() {
        let dir = tempfile::tempdir().unwrap();
        let space = fs_space(&File::open(dir.path()).unwrap()).unwrap();
        assert!(space.total > 0);
        assert!(space.available <= space.total, "{space:?}");
    }
}
