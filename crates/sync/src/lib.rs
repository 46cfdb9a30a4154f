//! # epoch-sync
//!
//! Durable, throttled workflows that keep tables in step with outside sources of truth. A
//! workflow instance is data ([`Instance`]): it advances batch by batch, saves its progress
//! (counts, errors, and its kind's exact cursor into its source) after every batch, waits
//! `delaySeconds` between batches, and resumes where it stopped after a restart. Items are
//! retried with backoff; one bad item never stops the rest; each item is applied exactly once,
//! across crashes.
//!
//! This crate is the runner and the [`Kind`] / [`KindSpec`] traits a source implements. The
//! sources live in crates of their own, with their clients: `epoch-sync-objectstore` (resync
//! projections from S3, R2 or files) and `epoch-sync-shadows` (AWS IoT Device Shadows).
//!
//! Not for: HTTP (epoch-api routes to [`Runner`]).

pub mod limits;
mod workflow;

pub use workflow::{
    call_reducer, now_ms, ConfigContext, Instance, Item, ItemError, ItemResult, Kind, KindSpec, ListError, RunParams,
    Runner, RunnerError, Status,
};
