//! # epoch-atproto
//!
//! Decoders for the AT Protocol data Epoch syncs, each bounded and checked against hostile
//! input (sizes, nesting checked before any recursion, every block against its CID):
//!
//! - [`car`]: CAR v1 files (repos from `getRepo`, the blocks of a firehose commit);
//! - [`frame`]: `com.atproto.sync.subscribeRepos` frames (`#commit`, `#sync`, `#identity`,
//!   `#account`, `#info`, errors);
//! - [`repo`]: a repo's signed commit and its Merkle Search Tree, walked in key order;
//! - [`value`]: records in the data model's JSON form (`$link`, `$bytes`);
//! - [`signature`]: repo signing keys (`did:key` multibase) and commit signatures.
//!
//! Not for: talking to services or applying records (epoch-sync-atproto).

pub mod car;
pub mod frame;
pub mod limits;
pub mod repo;
pub mod signature;
pub mod value;

pub use car::{Car, DecodeError};
pub use frame::{decode_frame, Frame};
pub use repo::{Repo, RepoRecord};
