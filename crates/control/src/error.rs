//! Why the control plane refused a change.

use std::path::PathBuf;

use epoch_core::executor::ShutDown;
use epoch_core::{CreateError, UpdateError};

use crate::system::SystemError;

/// Why a publish, delete or rename was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("Permission denied: `{caller}` does not own database `{database}`")]
    NotOwner { caller: String, database: String },
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error("record with the name {0} already exists")]
    NameTaken(String),
    #[error("no such database")]
    NoSuchDatabase,
    #[error("a publish of database `{0}` is already in progress; try again when it has finished")]
    PublishInProgress(String),
    #[error("database `{database}` holds {limit} names already, the most one database may have")]
    TooManyNames { database: String, limit: usize },
    #[error("database `{database}` is unavailable: {reason}")]
    Unavailable { database: String, reason: String },
    #[error(transparent)]
    ShutDown(#[from] ShutDown),
    #[error("saving the control plane at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the system table {table} is unreadable: {message}")]
    Corrupt { table: &'static str, message: String },
    #[error(transparent)]
    System(#[from] SystemError),
    #[error("restore failed: {0}")]
    Restore(String),
    /// The database is locked against this change (the text is 2.x's, naming the way out).
    #[error("{0}")]
    Locked(&'static str),
}

/// Why `set_names` was refused; the variants are 1.3's `SetDomainsResult`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetNamesError {
    #[error("database not found")]
    DatabaseNotFound,
    #[error("not your database")]
    NotYourDatabase,
    #[error("Cannot rename to {0} because it already is in use.")]
    InUse(String),
    #[error("permission denied for {0}")]
    PermissionDenied(String),
    #[error("a database may have at most {0} names")]
    TooMany(usize),
    #[error("{0}")]
    Storage(String),
}
