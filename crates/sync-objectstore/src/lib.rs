//! # epoch-sync-objectstore
//!
//! The object-store source of Epoch's sync engine: the `resync-projections` workflow kind.
//! Every aggregate document of an event-sourced store (`s3://bucket/prefix` or
//! `file:///path/prefix`, laid out `<prefix>/<type>/<id>.json`, each with an integer `version`)
//! goes through the database's projection reducer, in (type, id) order, so a cursor resumes
//! exactly. The S3 client (`object_store`) stays in this crate.
//!
//! Not for: running workflows (epoch-sync's runner does), HTTP (epoch-api).

pub mod limits;
mod resync;
mod source;

pub use resync::{start_resync, ResyncParams, ResyncProjectionsSpec, KIND as RESYNC_PROJECTIONS};
pub use source::{check_file_store, AggregateKey, FileSource, S3Source, Source, SourceError};
