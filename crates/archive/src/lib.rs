//! # epoch-archive
//!
//! Continuous archiving of a database to an object store, and restoring it to any moment.
//!
//! An archive of one database is a folder holding:
//! - `module.wasm`, `table-order`, `row-limit`: the module and the database's other files
//!   (written again when they change);
//! - `log/<first offset>.log`: every closed commitlog segment, byte for byte as on disk;
//! - `snapshots/<offset>.snap`: every snapshot, as on disk.
//!
//! [`Archiver::ship`] uploads what is new. It is called periodically, and it closes the open
//! segment once it holds records older than the lag bound. It also keeps the log from pruning
//! segments that are not shipped yet. [`restore`] rebuilds a database directory from an
//! archive, up to a transaction offset or a moment. The database then opens from it as after
//! a restart.
//!
//! Not for: deciding which databases are archived (the server does that), or their data's
//! meaning.

pub mod limits;
mod local;
mod restore;
mod service;
mod ship;
mod target;

pub use restore::{restore, RestoreReport, StopAt};
pub use service::{ArchivePlan, ArchiveService, ArchivedDatabase};
pub use ship::{ArchiveStatus, Archiver};
pub use target::{ArchiveTarget, StoreOptions};

use crate::limits::MAX_LAG_LIMIT;

/// The files of a database directory archived beside its log: the module, the tables' ids
/// (`table-order`, kept by `epoch-core` after migrations) and its SQL row limit, each when it
/// exists (the system database has none of them).
pub const DATABASE_FILES: [&str; 3] = ["module.wasm", "table-order", "row-limit"];

/// A lag bound given in seconds (a flag, a database's `maxLagSeconds`), checked against
/// [`MAX_LAG_LIMIT`].
pub fn max_lag(seconds: f64) -> Result<std::time::Duration, String> {
    if seconds > 0.0 && seconds <= MAX_LAG_LIMIT.as_secs_f64() {
        Ok(std::time::Duration::from_secs_f64(seconds))
    } else {
        Err(format!(
            "the archive lag bound must be above 0 and at most {} seconds (got {seconds})",
            MAX_LAG_LIMIT.as_secs()
        ))
    }
}

/// The folder of the server's own system database under the server's archive URL (user
/// databases' folders are their 64-digit identities).
pub const SYSTEM_FOLDER: &str = "system";

/// Why archiving or a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("unsupported archive URL {0:?} (use s3://bucket/prefix or file:///absolute/path)")]
    Url(String),
    #[error("object store: {0}")]
    Store(String),
    #[error("the archive has no {0}")]
    Missing(String),
    #[error("local file {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Log(#[from] epoch_commitlog::LogError),
    #[error("cannot restore: {0}")]
    Restore(String),
    #[error("{0} is a symbolic link: archive folders are never read or written through links (name the real path)")]
    Link(std::path::PathBuf),
    #[error("{path} is not a regular file ({kind}): only regular files are read from an archive")]
    NotRegular { path: std::path::PathBuf, kind: String },
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io { path: path.to_path_buf(), source }
}

/// The name of a segment file (`<offset, 20 digits>.log`) as it is archived.
fn segment_name(start: u64) -> String {
    format!("{start:020}.log")
}

/// The offset a segment or snapshot file's name starts with.
fn name_offset(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}
