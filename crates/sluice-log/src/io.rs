//! The fault-injection seam: every file-system call of the engine that
//! changes the disk or makes a change durable (space reservation, writes,
//! data and directory syncs, file and directory creation, renames,
//! removals, truncation) goes through [`FileIo`], so tests can make them
//! fail on demand, or cut the power at any one of them
//! ([`FaultyFileIo::with_power_cut`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    /// Makes the data, size and metadata of `file` durable (`fsync`).
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }
    /// Makes the entries of directory `dir` (created, renamed and removed
    /// names) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    /// Creates one directory (its parent exists).
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir(dir)
    }
    /// Opens (possibly creating or truncating) `path` with `options`.
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        options.open(path)
    }
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    /// Truncates or extends `file` to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }
}

/// Writes all of `buf` at `offset` of `file` through `io` (looping on short
/// writes).
pub(crate) fn write_all_at(
    io: &dyn FileIo,
    file: &File,
    offset: u64,
    buf: &[u8],
) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        let n = io.write_vectored_at(file, offset + done as u64, &[IoSlice::new(&buf[done..])])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        done += n;
    }
    Ok(())
}

/// Creates `dir` and any missing ancestors through `io`, and makes each new
/// entry durable by syncing the directory that holds it (a directory
/// created and then lost to a power cut would lose everything in it).
pub(crate) fn create_dirs(io: &dyn FileIo, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        cur = d.parent();
    }
    for d in missing.iter().rev() {
        match io.create_dir(d) {
            Ok(()) => {}
            // Created meanwhile by someone else: its entry may not be durable yet.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    for d in missing.iter().rev() {
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => io.sync_dir(p)?,
            _ => io.sync_dir(Path::new("."))?,
        }
    }
    Ok(())
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

/// A [`FileIo`] that delegates to [`OsFileIo`] but fails on request, and
/// can simulate a power cut ([`FaultyFileIo::with_power_cut`]).
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
    /// When non-zero, every `sync_data` takes at least this many
    /// microseconds (a slow disk), and its start and end are logged in
    /// [`FaultyFileIo::sync_times`].
    pub slow_sync_us: AtomicU64,
    /// `(start, end)` of every slowed `sync_data`, in the order they ended.
    pub sync_times: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
    /// The power-cut model, when enabled.
    power: Mutex<Option<PowerModel>>,
}

/// A directory entry as the power-cut model knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    /// A regular file, by inode number.
    File(u64),
    /// A directory (its own entries are tracked by path).
    Dir,
}

/// What survives a power cut under a tree: per inode the content its last
/// successful fsync saw, per directory the entries its last successful
/// fsync saw. Everything else (writes, creations, renames, removals and
/// truncations not yet synced) is lost at the cut.
///
/// Writes through a shared memory map (the index files) are treated the
/// same way: the model reads a file's content when its sync returns, so
/// they count exactly when a sync covered them.
///
/// Removed and replaced files are moved to a graveyard directory instead
/// of unlinked, so their inode numbers are not reused while the model
/// still refers to them.
#[derive(Debug)]
struct PowerModel {
    root: PathBuf,
    graveyard: PathBuf,
    buried: u64,
    /// The step at which the power goes (`None`: only on [`FaultyFileIo::cut_power`]).
    cut_at: Option<u64>,
    steps: u64,
    cut: bool,
    content: HashMap<u64, Vec<u8>>,
    dirs: HashMap<PathBuf, BTreeMap<OsString, Node>>,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// The entries of `dir` as the model sees them.
fn listing(dir: &Path) -> io::Result<BTreeMap<OsString, Node>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = std::fs::symlink_metadata(e.path())?;
        let node = if meta.is_dir() {
            Node::Dir
        } else {
            Node::File(meta.ino())
        };
        out.insert(e.file_name(), node);
    }
    Ok(out)
}

impl PowerModel {
    /// Everything under `root` as it is now counts as durable.
    fn snapshot(&mut self, dir: &Path) -> io::Result<()> {
        let entries = listing(dir)?;
        for (name, node) in &entries {
            let path = dir.join(name);
            match node {
                Node::Dir => self.snapshot(&path)?,
                Node::File(ino) => {
                    self.content.insert(*ino, std::fs::read(&path)?);
                }
            }
        }
        self.dirs.insert(dir.to_path_buf(), entries);
        Ok(())
    }

    fn inside(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
    }

    /// Moves `path` to the graveyard (keeping its inode alive).
    fn bury(&mut self, path: &Path) -> io::Result<()> {
        self.buried += 1;
        std::fs::rename(path, self.graveyard.join(self.buried.to_string()))
    }

    /// Rewrites `dir` to its durable state, recursively.
    fn restore(&self, dir: &Path) -> io::Result<()> {
        let empty = BTreeMap::new();
        let durable = self.dirs.get(dir).unwrap_or(&empty);
        for (name, node) in listing(dir)? {
            let path = dir.join(&name);
            let keep = matches!(
                (durable.get(&name), node),
                (Some(Node::Dir), Node::Dir) | (Some(Node::File(_)), Node::File(_))
            );
            if !keep {
                match node {
                    Node::Dir => std::fs::remove_dir_all(&path)?,
                    Node::File(_) => std::fs::remove_file(&path)?,
                }
            }
        }
        for (name, node) in durable {
            let path = dir.join(name);
            match node {
                Node::File(ino) => {
                    let data = self.content.get(ino).map(Vec::as_slice).unwrap_or(&[]);
                    std::fs::write(&path, data)?;
                }
                Node::Dir => {
                    if !path.is_dir() {
                        std::fs::create_dir(&path)?;
                    }
                    self.restore(&path)?;
                }
            }
        }
        Ok(())
    }
}

impl FaultyFileIo {
    /// A fault injector that models power loss under `root`: from now on
    /// it records what each successful fsync of a file or directory made
    /// durable (everything under `root` now counts as durable). With
    /// `cut_at = Some(n)`, the power goes at the `n`th call (counting from
    /// 0): that call and every later one fail with `EIO`, as if the machine
    /// stopped there. Then drop the log (or store) and call
    /// [`FaultyFileIo::cut_power`] to rewrite `root` to what the disk would
    /// hold. `graveyard` (outside `root`) receives removed and replaced
    /// files.
    pub fn with_power_cut(root: &Path, graveyard: &Path, cut_at: Option<u64>) -> io::Result<Self> {
        std::fs::create_dir_all(graveyard)?;
        let mut model = PowerModel {
            root: root.to_path_buf(),
            graveyard: graveyard.to_path_buf(),
            buried: 0,
            cut_at,
            steps: 0,
            cut: false,
            content: HashMap::new(),
            dirs: HashMap::new(),
        };
        model.snapshot(root)?;
        Ok(FaultyFileIo {
            power: Mutex::new(Some(model)),
            ..FaultyFileIo::default()
        })
    }

    /// File-system calls made since the power-cut model started.
    pub fn steps(&self) -> u64 {
        self.model().as_ref().map_or(0, |m| m.steps)
    }

    /// Whether the power has gone (at the chosen step, or by `cut_power`).
    pub fn is_cut(&self) -> bool {
        self.model().as_ref().is_some_and(|m| m.cut)
    }

    /// Cuts the power now (if the chosen step did not already) and rewrites
    /// the tree to its durable state: every write, creation, rename,
    /// removal and truncation no fsync made durable is undone. Every later
    /// call through this object fails.
    pub fn cut_power(&self) -> io::Result<()> {
        let mut g = self.model();
        let Some(m) = g.as_mut() else {
            return Err(io::Error::other("no power-cut model"));
        };
        m.cut = true;
        let root = m.root.clone();
        m.restore(&root)
    }

    fn model(&self) -> MutexGuard<'_, Option<PowerModel>> {
        self.power.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one call; fails it if the power is (now) gone.
    fn step(&self) -> io::Result<()> {
        let mut g = self.model();
        if let Some(m) = g.as_mut() {
            if m.cut_at.is_some_and(|k| m.steps >= k) {
                m.cut = true;
            }
            m.steps += 1;
            if m.cut {
                return Err(eio());
            }
        }
        Ok(())
    }

    /// After a successful file sync: its content is durable.
    fn record_file(&self, file: &File) -> io::Result<()> {
        let mut g = self.model();
        if let Some(m) = g.as_mut() {
            let ino = file.metadata()?.ino();
            // Through /proc: the descriptor may be write-only.
            let data = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
            m.content.insert(ino, data);
        }
        Ok(())
    }
}

impl FileIo for FaultyFileIo {
    fn allocate(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        self.step()?;
        if self.fail_allocate.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        OsFileIo.allocate(file, offset, len)
    }
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        self.step()?;
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let slow = self.slow_sync_us.load(Ordering::SeqCst);
        let started = std::time::Instant::now();
        OsFileIo.sync_data(file)?;
        if slow > 0 {
            let until = started + std::time::Duration::from_micros(slow);
            std::thread::sleep(until.saturating_duration_since(std::time::Instant::now()));
            self.sync_times
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((started, std::time::Instant::now()));
        }
        self.record_file(file)
    }
    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.step()?;
        file.sync_all()?;
        self.record_file(file)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        File::open(dir)?.sync_all()?;
        let mut g = self.model();
        if let Some(m) = g.as_mut() {
            if m.inside(dir) {
                let entries = listing(dir)?;
                m.dirs.insert(dir.to_path_buf(), entries);
            }
        }
        Ok(())
    }
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        self.step()?;
        std::fs::create_dir(dir)
    }
    fn open(&self, path: &Path, options: &OpenOptions) -> io::Result<File> {
        self.step()?;
        options.open(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step()?;
        let mut g = self.model();
        if let Some(m) = g.as_mut() {
            if to.is_file() {
                // Keep the replaced inode alive (see `PowerModel`).
                m.bury(to)?;
            }
        }
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.step()?;
        let mut g = self.model();
        match g.as_mut() {
            Some(m) => {
                if !path.exists() {
                    return Err(io::Error::from(io::ErrorKind::NotFound));
                }
                m.bury(path)
            }
            None => std::fs::remove_file(path),
        }
    }
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        self.step()?;
        file.set_len(len)
    }
    fn write_vectored_at(
        &self,
        file: &File,
        offset: u64,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        self.step()?;
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
