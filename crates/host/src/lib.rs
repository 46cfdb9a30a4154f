//! # epoch-host
//!
//! Runs SpacetimeDB 1.3 and 2.x modules on wasmtime. [`ModuleHost::load`] compiles a module,
//! refuses imports outside the ABI (`spacetime_10.0` to `10.6`), runs its `__preinit__*`
//! functions and reads its definition; [`ModuleHost::call_reducer`] runs one reducer in a
//! transaction of the module's [`epoch_store::Store`], stopped at a wall-time limit (epoch
//! interruption) or a memory cap, and reports a [`ReducerOutcome`] that tells the module's own
//! errors from the host's; [`ModuleHost::procedure_factory`] sets up a 2.x procedure call on an
//! instance of its own (`procedure`).
//!
//! Not for: scheduling, lifecycle policy or argument parsing; `epoch-core` does those.

pub mod abi;
mod compiled_cache;
pub mod http;
pub mod limits;
pub mod logs;
mod module;
pub mod procedure;
pub mod read_set;
pub mod view;

pub use logs::{LogLevel, LogRecord, ModuleLogs};
pub use module::{CallContext, HostConfig, HostError, ModuleHost, ReducerOutcome, ReducerResult};
pub use read_set::{ReadIndex, ReadSet};
