//! What one kind of workflow supplies. The runner owns everything else: calling the reducer,
//! batches, pacing, retries, progress, pause and resume, and exactly-once.
//!
//! A kind comes in two parts: a [`KindSpec`], registered with the runner once, which knows the
//! kind's parameters, scope and configuration section; and a [`Kind`], opened for one instance
//! (with its source's clients and credentials), which lists items and reads their arguments.

use std::collections::BTreeMap;
use std::sync::Arc;

use epoch_control::ControlPlane;
use epoch_core::{Caller, Database, ReducerArgs, WorkflowStep};
use serde_json::{Map, Value};

use super::{Instance, RunnerError};

/// One item of a workflow: its name (unique within the instance; steps and errors use it) and
/// the cursor that resumes right after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    pub cursor: Value,
}

/// Why one item failed. Each has the HTTP status its result line reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Listed, but gone when read.
    #[error("not found at the source: {0}")]
    NotFound(String),
    /// The source could not be read (after the client's own retries).
    #[error("reading the source failed: {0}")]
    Source(String),
    /// The item's document is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The reducer refused it (its error).
    #[error("{0}")]
    Refused(String),
    /// The database could not take it (gone or shutting down).
    #[error("{0}")]
    Database(String),
}

impl ItemError {
    /// The HTTP status that stands for this error in an item's result.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Invalid(_) | Self::Refused(_) => 422,
            Self::Source(_) => 502,
            Self::Database(_) => 503,
        }
    }

    /// Whether trying again may help (the reducer's refusal and a missing item will not change
    /// within a run, but a source or a database hiccup may).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Source(_) | Self::Database(_) | Self::Refused(_))
    }
}

/// Why an instance's items could not be listed: the instance ends with this error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("listing failed: {0}")]
pub struct ListError(pub String);

/// A kind, opened for one instance.
pub trait Kind: Send + Sync {
    /// The next items after the instance's cursor, at most `batch_size`, in a fixed order (so a
    /// cursor resumes exactly). Empty when there are no more.
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError>;

    /// The reducer arguments of each item, in `items`' order (read concurrently where the
    /// source allows); an item that cannot be read fails alone.
    fn arguments(&self, i: &Instance, items: &[Item]) -> Vec<Result<ReducerArgs, ItemError>>;

    /// Applies one item on the database's writer, committing `step` with it. By default, a call
    /// of the instance's reducer; a kind whose items have a live path of their own applies them
    /// through that path's function, so both give the same rows.
    fn apply(
        &self,
        d: &mut Database,
        reducer: &str,
        args: ReducerArgs,
        caller: Caller,
        step: WorkflowStep,
    ) -> Result<(), ItemError> {
        call_reducer(d, reducer, args, caller, step)
    }

    /// For a stream: whether an empty batch means "nothing yet" (the runner waits and asks
    /// again) rather than the end.
    fn idle(&self) -> bool {
        false
    }

    /// For a stream: where it stands after an empty batch (every item listed so far applied),
    /// when that is further than the instance's cursor: a stream that reads events with no items
    /// for this database (other repos, other collections) still moves its saved position, so a
    /// restart does not read them all again, nor lose the place of a consumer that has applied
    /// nothing yet. The runner saves it at most every [`POSITION_SAVE_INTERVAL`].
    ///
    /// [`POSITION_SAVE_INTERVAL`]: crate::limits::POSITION_SAVE_INTERVAL
    fn position(&self, _: &Instance) -> Option<serde_json::Value> {
        None
    }

    /// Whether the instance keeps every item's result (for a caller that waits for them all).
    fn keeps_results(&self) -> bool {
        false
    }

    /// Items in scope per group, counted afresh (for a restart); `None` for a stream.
    fn recount(&self, i: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError>;
}

/// What validating a configuration section may consult.
pub struct ConfigContext<'a> {
    /// Whether the database's module has a reducer of this name.
    pub has_reducer: &'a dyn Fn(&str) -> bool,
    /// The server's data directory, which no source may name.
    pub data_dir: Option<&'a std::path::Path>,
}

/// A kind of workflow, as the runner and the API know it.
pub trait KindSpec: Send + Sync {
    /// The kind's name, as instances show it.
    fn name(&self) -> &'static str;

    /// The section of a database's sync configuration this kind reads (`objectStore`, …).
    fn config_section(&self) -> &'static str;

    /// The fields of that section that are secrets: never shown, never logged.
    fn secret_fields(&self) -> &'static [&'static str] {
        &["secretAccessKey", "sessionToken"]
    }

    /// Checks the kind's part of a database's sync configuration (called when its section is
    /// present) and fills in defaults; the error names the field that is wrong.
    fn validate_config(&self, config: &mut Map<String, Value>, cx: &ConfigContext<'_>) -> Result<(), String>;

    /// What two unfinished instances of this kind on one database must not share.
    fn scope(&self, i: &Instance) -> String;

    /// Opens the kind for instance `i`, reading the database's current sync configuration
    /// (credentials may have been rotated since the instance started).
    fn open(&self, control: &Arc<ControlPlane>, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError>;
}

/// Calls `reducer` with `args`, committing `step` with its rows: what [`Kind::apply`] does by
/// default, for kinds that choose the reducer per item. The reducer's own error refuses the item.
pub fn call_reducer(
    d: &mut Database,
    reducer: &str,
    args: ReducerArgs,
    caller: Caller,
    step: WorkflowStep,
) -> Result<(), ItemError> {
    match d.call_step(reducer, args, caller, step) {
        Ok(r) => r.outcome.error_message().map_or(Ok(()), |e| Err(ItemError::Refused(e))),
        // The database cannot write now (a full disk): its trouble, not the item's.
        Err(e @ epoch_core::CallError::StorageUnavailable(_)) => Err(ItemError::Database(e.to_string())),
        Err(e) => Err(ItemError::Refused(e.to_string())),
    }
}
