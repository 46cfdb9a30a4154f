//! # epoch-host
//!
//! Runs SpacetimeDB 1.3 modules on wasmtime. [`ModuleHost::load`] compiles a module, refuses
//! imports outside `spacetime_10.0`, runs its `__preinit__*` functions and reads its definition;
//! [`ModuleHost::call_reducer`] runs one reducer in a transaction of the module's
//! [`epoch_store::Store`], stopped at a wall-time limit (epoch interruption) or a memory cap,
//! and reports a [`ReducerOutcome`] that tells the module's own errors from the host's.
//!
//! Not for: scheduling, lifecycle policy or argument parsing; `epoch-core` does those.

pub mod abi;
mod compiled_cache;
pub mod limits;
pub mod logs;
mod module;

pub use logs::{LogLevel, LogRecord, ModuleLogs};
pub use module::{CallContext, HostConfig, HostError, ModuleHost, ReducerOutcome, ReducerResult};
