//! Shipping one database's closed log segments, snapshots and module to its archive folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use epoch_commitlog::{segment_files, CommitLog};

use crate::{io, name_offset, segment_name, ArchiveError, ArchiveTarget};

/// What an archiver has done so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveStatus {
    /// The database's archive folder.
    pub url: String,
    /// One past the last transaction of the shipped segments: everything before it is in the
    /// archive (0: nothing yet).
    pub shipped_end: u64,
    /// Closed segments and snapshots shipped by this archiver (since the server started).
    pub segments_shipped: u64,
    pub snapshots_shipped: u64,
    /// How long the oldest transaction not yet in the archive has waited (zero when none).
    pub lag: Duration,
    /// The last failure, until a pass succeeds.
    pub error: Option<String>,
}

/// Ships one database's files to `<target>/<folder>/`.
pub struct Archiver {
    db_dir: PathBuf,
    folder: String,
    target: Arc<ArchiveTarget>,
    max_lag: Duration,
    /// What the archive holds, read from it on the first pass and kept up to date after.
    shipped_segments: Option<BTreeSet<u64>>,
    shipped_snapshots: BTreeSet<u64>,
    /// The database files last shipped (see [`crate::DATABASE_FILES`]), by name.
    files: std::collections::BTreeMap<&'static str, Vec<u8>>,
    /// Since when the open segment has held records (as first seen by a pass).
    unshipped_since: Option<Instant>,
    /// Whether this archiver holds the log's unshipped segments from pruning (the continuous
    /// archiver does; a one-off backup does not).
    holds_log: bool,
    status: ArchiveStatus,
}

impl Archiver {
    /// An archiver of the database in `db_dir` into `<target>/<folder>/`, closing a segment
    /// whose records have waited `max_lag`.
    pub fn new(db_dir: &Path, folder: &str, target: Arc<ArchiveTarget>, max_lag: Duration) -> Self {
        let url = if folder.is_empty() { target.url().to_string() } else { format!("{}/{folder}", target.url()) };
        let status = ArchiveStatus { url, ..Default::default() };
        Self {
            db_dir: db_dir.to_path_buf(),
            folder: folder.to_string(),
            target,
            max_lag,
            shipped_segments: None,
            shipped_snapshots: BTreeSet::new(),
            files: Default::default(),
            unshipped_since: None,
            holds_log: true,
            status,
        }
    }

    /// A one-off backup of the database in `db_dir` into `target` itself (no folder): every
    /// pass ships everything and seals the open segment; it never touches the log's prune
    /// floor (a continuous archiver may hold it).
    pub fn backup(db_dir: &Path, target: Arc<ArchiveTarget>) -> Self {
        let mut a = Self::new(db_dir, "", target, Duration::ZERO);
        a.holds_log = false;
        a
    }

    /// What it has done so far.
    pub fn status(&self) -> &ArchiveStatus {
        &self.status
    }

    fn rel(&self, rest: &str) -> String {
        if self.folder.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.folder)
        }
    }

    /// One pass: ships the module and the database's other files if they changed, every closed segment and snapshot not yet in
    /// the archive, and closes the open segment when its records have waited the lag bound (it
    /// is shipped in the same pass). Keeps unshipped segments from being pruned. A failure is
    /// kept in the status and the next pass tries again.
    pub fn ship(&mut self, log: &CommitLog) -> Result<(), ArchiveError> {
        let result = self.ship_inner(log);
        self.status.error = result.as_ref().err().map(ToString::to_string);
        result
    }

    fn ship_inner(&mut self, log: &CommitLog) -> Result<(), ArchiveError> {
        for name in crate::DATABASE_FILES {
            let path = self.db_dir.join(name);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(&path)(e)),
            };
            if self.files.get(name) != Some(&bytes) {
                self.target.put(&self.rel(name), bytes.clone())?;
                self.files.insert(name, bytes);
            }
        }
        if self.shipped_segments.is_none() {
            let names = self.target.list(&self.rel("log"))?;
            debug_assert!(names.windows(2).all(|w| w[0] < w[1]), "listings come sorted");
            self.shipped_segments = Some(names.iter().filter_map(|n| name_offset(n, ".log")).collect());
            self.shipped_snapshots =
                self.target.list(&self.rel("snapshots"))?.iter().filter_map(|n| name_offset(n, ".snap")).collect();
        }
        let mut open_start = self.ship_closed_segments(log)?;
        self.ship_snapshots()?;
        // Records in the open segment: close it once they have waited long enough.
        if log.next_offset() > open_start {
            let since = *self.unshipped_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.max_lag {
                log.seal();
                open_start = self.ship_closed_segments(log)?;
                self.unshipped_since = None;
            }
        } else {
            self.unshipped_since = None;
        }
        self.status.lag = self.unshipped_since.map_or(Duration::ZERO, |s| s.elapsed());
        debug_assert!(open_start >= self.status.shipped_end, "what is shipped only grows");
        self.status.shipped_end = open_start;
        Ok(())
    }

    /// Ships every closed segment the archive lacks; returns the first offset of the open one
    /// (everything before it is shipped), which becomes the log's prune floor.
    fn ship_closed_segments(&mut self, log: &CommitLog) -> Result<u64, ArchiveError> {
        let dir = self.db_dir.join("log");
        let segments = segment_files(&dir)?;
        let Some(((open_start, _), closed)) = segments.split_last() else { return Ok(0) };
        for (start, path) in closed {
            if self.shipped_segments.as_ref().is_some_and(|s| s.contains(start)) {
                continue;
            }
            let bytes = std::fs::read(path).map_err(io(path))?;
            self.target.put(&self.rel(&format!("log/{}", segment_name(*start))), bytes)?;
            tracing::debug!(segment = start, "archived a log segment");
            self.shipped_segments.get_or_insert_with(BTreeSet::new).insert(*start);
            self.status.segments_shipped += 1;
        }
        if self.holds_log {
            log.set_prune_floor(*open_start);
        }
        Ok(*open_start)
    }

    fn ship_snapshots(&mut self) -> Result<(), ArchiveError> {
        let dir = self.db_dir.join("snapshots");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
        let mut local: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| Some((name_offset(e.file_name().to_str()?, ".snap")?, e.path())))
            .collect();
        local.sort();
        for (offset, path) in local {
            if self.shipped_snapshots.contains(&offset) {
                continue;
            }
            // A snapshot may be pruned between the listing and the read; the next pass lists again.
            let Ok(bytes) = std::fs::read(&path) else { continue };
            self.target.put(&self.rel(&format!("snapshots/{offset:020}.snap")), bytes)?;
            self.shipped_snapshots.insert(offset);
            self.status.snapshots_shipped += 1;
        }
        Ok(())
    }
}
