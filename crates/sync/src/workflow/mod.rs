//! Workflows: durable, paced runs over the items of an outside source, each item applied
//! through a reducer exactly once.
//!
//! - [`instance`]: an instance as it is saved after every batch;
//! - [`kind`]: what a kind of workflow supplies (its items, their arguments, its parameters,
//!   cursor, scope and configuration section);
//! - [`runner`]: the threads that run instances, pause, resume, terminate and restart them;
//! - [`batch`]: how one batch is applied exactly once across crashes.

mod batch;
mod instance;
mod kind;
mod runner;

pub use instance::{Instance, ItemResult, RunParams, Status};
pub use kind::{call_reducer, ConfigContext, Item, ItemError, Kind, KindSpec, ListError};
pub use runner::{Runner, RunnerError};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
