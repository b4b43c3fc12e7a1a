//! Every `unsafe` block of the crate: memory maps, `fallocate`, `flock`.
//!
//! The rest of the crate sees only safe types:
//!
//! - [`Region`]: a mapping plus a *published length*. Bytes below the
//!   published length are immutable for the rest of the mapping's life, so any
//!   thread may read them; the published length only grows (Release store by
//!   the writer, Acquire load by readers).
//! - [`RegionWriter`]: the single writer of a region. It may write only at or
//!   beyond the published length and below the *writable length* (the part of
//!   the file that is known to be allocated), so a store never lands in a
//!   sparse page (SIGBUS on a full disk) or beyond the end of the file.
//! - [`region_bytes`]: a zero-copy `Bytes` over published bytes that keeps
//!   the mapping alive through an `Arc`, even after the file is unlinked.
//!
//! Invariant assumed (and enforced with an advisory `flock` on the partition
//! directory): no other process truncates or rewrites the files we map.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, MmapRaw};

enum Mapping {
    /// Writable shared mapping (active segment and its indexes).
    Raw(MmapRaw),
    /// Read-only mapping (sealed segments).
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
        // <= map_len, checked by RegionWriter::publish) and inside the file
        // (writable never exceeds the allocated file length), and published
        // bytes are never written again, so a shared slice cannot alias a
        // concurrent store. For `Empty`, len is 0 and a dangling pointer is
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

/// Reserves `[offset, offset + len)` of `file` with `fallocate(2)` (mode 0:
/// the file size grows). Falls back to writing zeros where the file system
/// does not support `fallocate`.
pub(crate) fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let l = libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
