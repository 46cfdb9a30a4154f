//! A `file://` archive folder, read and written without ever following a symbolic link.
//!
//! Anyone who can write into an archive folder could otherwise plant a link (`snapshots` →
//! another database's directory) and make a backup write there, or a restore read a live
//! database's files. So every path is walked from `/` one component at a time with
//! `openat(O_NOFOLLOW)`: a component that is a link is refused, naming it. Files are written
//! under a fresh name created with `O_CREAT | O_EXCL | O_NOFOLLOW`, fsynced, then renamed over
//! the final name (a rename replaces a link itself, never its target). Reads open with
//! `O_NOFOLLOW | O_NONBLOCK` and check with `fstat` that the file is a regular one, so a FIFO
//! or a device can neither block a restore nor feed it endless bytes.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::ArchiveError;

/// Permissions of the folders and files a backup creates (before the umask).
const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// A folder on the local file system holding archives.
#[derive(Debug)]
pub(crate) struct LocalDir {
    root: PathBuf,
}

fn io_error(path: &Path, e: Errno) -> ArchiveError {
    ArchiveError::Io { path: path.to_path_buf(), source: e.into() }
}

/// Why opening `name` in `dir` with `O_NOFOLLOW` failed: a link is named as such.
fn refused(dir: &OwnedFd, name: &OsStr, path: &Path, e: Errno) -> ArchiveError {
    let is_link = matches!(e, Errno::LOOP | Errno::NOTDIR)
        && rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink);
    if is_link {
        ArchiveError::Link(path.to_path_buf())
    } else {
        io_error(path, e)
    }
}

impl LocalDir {
    /// The folder at `root` (absolute), created if missing; every component must be a real
    /// directory, not a link.
    pub(crate) fn open(root: &Path) -> Result<Self, ArchiveError> {
        if !root.is_absolute() || root.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
            return Err(ArchiveError::Store(format!(
                "{} must be an absolute path without `.` or `..` steps",
                root.display()
            )));
        }
        let dir = Self { root: root.to_path_buf() };
        dir.walk(&[], true)?;
        Ok(dir)
    }

    /// The components of `rel` (`a/b/c`), refusing empty, `.` and `..` steps.
    fn components(rel: &str) -> Result<Vec<&OsStr>, ArchiveError> {
        rel.split('/')
            .map(|c| match c {
                "" | "." | ".." => Err(ArchiveError::Store(format!("{rel:?} is not a plain relative path"))),
                c => Ok(OsStr::new(c)),
            })
            .collect()
    }

    /// Opens the directory `root/rel…` without following links, creating missing ones when
    /// `create`. `Ok(None)`: it does not exist (and `create` is false).
    fn walk(&self, rel: &[&OsStr], create: bool) -> Result<Option<OwnedFd>, ArchiveError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut path = PathBuf::from("/");
        let mut dir = rustix::fs::open("/", flags, Mode::empty()).map_err(|e| io_error(&path, e))?;
        let root = self.root.components().filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        });
        for name in root.chain(rel.iter().copied()) {
            path.push(name);
            let next = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(io_error(&path, e)),
                    }
                    rustix::fs::openat(&dir, name, flags, Mode::empty())
                }
                Err(Errno::NOENT) => return Ok(None),
                other => other,
            };
            dir = next.map_err(|e| refused(&dir, name, &path, e))?;
        }
        Ok(Some(dir))
    }

    /// Writes `rel` whole: a new file (`O_EXCL`, `O_NOFOLLOW`) fsynced and renamed into place.
    pub(crate) fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
        let parts = Self::components(rel)?;
        let (name, parents) = parts.split_last().ok_or_else(|| ArchiveError::Store("an empty object name".into()))?;
        let dir = self.walk(parents, true)?.ok_or_else(|| ArchiveError::Missing(rel.to_string()))?;
        let path = self.root.join(rel);
        if rustix::fs::statat(&dir, *name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Symlink)
        {
            return Err(ArchiveError::Link(path));
        }
        let tmp = format!(".{}.{}.{}.tmp", name.to_string_lossy(), std::process::id(), unique());
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, tmp.as_str(), flags, Mode::from_raw_mode(FILE_MODE))
            .map_err(|e| io_error(&path, e))?;
        let mut file = std::fs::File::from(fd);
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        let renamed = written
            .map_err(|e| ArchiveError::Io { path: path.clone(), source: e })
            .and_then(|()| rustix::fs::renameat(&dir, tmp.as_str(), &dir, *name).map_err(|e| io_error(&path, e)));
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
        }
        renamed?;
        rustix::fs::fsync(&dir).map_err(|e| io_error(&path, e))
    }

    /// Reads `rel`, which must be a regular file reached through no link.
    pub(crate) fn get(&self, rel: &str) -> Result<Vec<u8>, ArchiveError> {
        let parts = Self::components(rel)?;
        let (name, parents) = parts.split_last().ok_or_else(|| ArchiveError::Store("an empty object name".into()))?;
        let path = self.root.join(rel);
        let dir = self.walk(parents, false)?.ok_or_else(|| ArchiveError::Missing(rel.to_string()))?;
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&dir, *name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Err(ArchiveError::Missing(rel.to_string())),
            Err(e) => return Err(refused(&dir, name, &path, e)),
        };
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&fd).map_err(|e| io_error(&path, e))?.st_mode);
        if kind != FileType::RegularFile {
            return Err(ArchiveError::NotRegular { path, kind: format!("{kind:?}") });
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut bytes).map_err(|e| ArchiveError::Io { path, source: e })?;
        Ok(bytes)
    }

    /// The names of the entries directly under `rel/` that are not directories (links and
    /// other special files included, so that reading them is refused rather than skipped),
    /// sorted; none when it does not exist.
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<String>, ArchiveError> {
        let parts = if rel.is_empty() { Vec::new() } else { Self::components(rel)? };
        let Some(dir) = self.walk(&parts, false)? else { return Ok(Vec::new()) };
        let path = self.root.join(rel);
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(&dir).map_err(|e| io_error(&path, e))? {
            let entry = entry.map_err(|e| io_error(&path, e))?;
            let name = entry.file_name().to_bytes();
            // Hidden names are this module's temporary files (and `.`, `..`).
            if name.starts_with(b".") || entry.file_type() == FileType::Directory {
                continue;
            }
            let name = OsStr::from_bytes(name);
            let kind = match entry.file_type() {
                FileType::Unknown => rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|s| FileType::from_raw_mode(s.st_mode))
                    .map_err(|e| io_error(&path.join(name), e))?,
                k => k,
            };
            if kind != FileType::Directory {
                names.push(name.to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// A number no other temporary file of this process uses.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
