//! # epoch-core
//!
//! A [`Database`] is one module with its tables: it decodes client arguments, refuses direct
//! calls of lifecycle reducers, runs `init` on creation and `client_connected` /
//! `client_disconnected` on request, and fires scheduled reducers. A [`DatabaseHandle`] puts it
//! on its own writer thread, so reducers are serializable by construction.
//!
//! It also keeps each database durable (`persist`: the commitlog record of every commit,
//! snapshots, recovery; `client_journal`: who was connected).
//!
//! Modules depend one way: `caller`, `clock`, `atomic_file`, `steps`, `export`, `migrate` use
//! nothing of the crate; `migrate_policy` and `migrate_text` (2.x's consent to a breaking update
//! and its printed plan) only `migrate`; `clients`, `catalog`, `scheduler`, `client_journal` → `persist` build
//! on those; `database` on all of them; `executor` and `bench` on `database`; `procedure` (2.x
//! procedures, run off the writer) on `database` and `executor`.
//!
//! Not for: which databases a server hosts (epoch-control), HTTP, token cryptography
//! (epoch-auth) or the log's file format (epoch-commitlog).

pub mod atomic_file;
pub mod bench;
pub mod caller;
pub mod catalog;
pub(crate) mod catalog_v10;
pub mod client_journal;
pub mod clients;
pub mod clock;
pub mod database;
pub mod executor;
pub mod export;
pub mod limits;
pub mod migrate;
pub mod migrate_policy;
pub mod migrate_text;
pub mod persist;
pub mod procedure;
pub mod program;
pub mod scheduler;
pub mod steps;
pub(crate) mod view_subs;
pub(crate) mod views;

pub use caller::Caller;
pub use clients::{ClientId, ClientLimits, ClientSink, ConnectError, Outgoing, SubscriptionRequest};
pub use clock::now_micros;
pub use database::{CallError, ClientCall, CreateError, Database, ReducerArgs, UpdateError};
pub use epoch_commitlog::{Durability, WorkflowStep};
pub use epoch_host::{HostConfig, ReducerOutcome, ReducerResult};
pub use epoch_sats::Identity;
pub use executor::{DatabaseHandle, ShutDown};
pub use persist::{PersistConfig, PersistError, RecoveryReport};

/// The `/schema?version=9` document of a module, pretty-printed.
pub fn schema_json(def: &epoch_schema::ModuleDef) -> String {
    serde_json::to_string_pretty(&epoch_schema::json::schema_v9(def)).unwrap_or_default()
}
