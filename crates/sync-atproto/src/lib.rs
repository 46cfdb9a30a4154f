//! # epoch-sync-atproto
//!
//! The AT Protocol source of Epoch's sync engine: members' repository records, kept in step
//! through the database's record reducer.
//!
//! - [`car`], [`frame`], [`repo`], [`value`]: decoders for CAR files, firehose frames, repos
//!   (commit and Merkle Search Tree) and records (to the data model's JSON form: `$link`,
//!   `$bytes`), each bounded and checked (blocks against their CIDs, nesting before recursion);
//! - [`xrpc`]: `listRepos` and `getRepo`, throttled;
//! - [`config`]: the `atproto` section of a sync configuration;
//! - [`backfill`]: the `atproto-full-sync` workflow kind (every member's repo, whole);
//! - [`firehose`]: the `atproto-firehose` kind (the live consumer, and catch_up).
//!
//! Not for: running workflows (epoch-sync's runner does), HTTP routes (epoch-api).

pub mod backfill;
pub mod config;
pub mod firehose;
pub mod xrpc;

pub use backfill::{start_full_sync, FullSyncSpec, KIND as ATPROTO_FULL_SYNC};
pub use config::AtprotoConfig;
pub use firehose::{FirehoseSpec, KIND as ATPROTO_FIREHOSE};
