//! # epoch-sync-shadows
//!
//! The AWS IoT Device Shadow source of Epoch's sync engine.
//!
//! - [`document`]: one shadow document and [`document::ingest`], the one path every shadow
//!   update takes into a database (the webhook, MQTT and force-syncs);
//! - [`client`]: the IoT data plane through the official SDK (`aws-sdk-iotdataplane`);
//! - [`force_sync`]: the `force-sync-shadows` workflow kind (every shadow of one thing);
//! - [`mqtt`]: live updates from an MQTT broker, with no Lambda or webhook in between.
//!
//! Not for: running workflows (epoch-sync's runner does), HTTP (epoch-api).

pub mod client;
pub mod document;
pub mod force_sync;
pub mod limits;
pub mod mqtt;

pub use document::{ShadowDocument, CLASSIC_SHADOW, DEFAULT_SHADOW_REDUCER};
pub use force_sync::{start_force_sync, ForceSyncParams, ForceSyncSpec, KIND as FORCE_SYNC_SHADOWS};
pub use mqtt::LiveShadows;
