//! # epoch-sync
//!
//! Durable, throttled workflows that keep tables in step with outside sources of truth. A
//! workflow instance is data ([`Instance`]): it advances batch by batch, saves its progress
//! (counts, errors, and an exact cursor into its source) after every batch, waits `delay`
//! between batches, and resumes where it stopped after a restart. Items are retried with
//! backoff; one bad item never stops the rest.
//!
//! The first kind is `resync-projections`: every aggregate document of an object store
//! (`s3://bucket/prefix` or `file:///path/prefix`, laid out `<prefix>/<type>/<id>.json`, each with an integer `version`) goes through the database's
//! projection reducer, in key order, so resumption is exact.
//!
//! Not for: HTTP (epoch-api routes to [`Runner`]).

mod resync;
pub mod shadows;
mod source;
mod workflow;

pub use resync::KIND as RESYNC_PROJECTIONS;
pub use source::{check_file_store, AggregateKey, FileSource, S3Source, Source, SourceError};
pub use workflow::{Instance, ResyncParams, Runner, RunnerError, Status, DEFAULT_RETENTION};
