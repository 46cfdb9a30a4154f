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
//! - [`firehose`]: the `atproto-firehose` kind (the live consumer, and catch_up);
//! - [`holds`]: live events held back while a full_sync re-reads their repo;
//! - [`identity`]: repo signing keys from DIDs (PLC, `did:web`), to check commit signatures.
//!
//! Not for: running workflows (epoch-sync's runner does), HTTP routes (epoch-api).

pub mod backfill;
pub mod config;
pub mod firehose;
pub mod holds;
pub mod identity;
pub mod limits;
pub mod xrpc;

pub use backfill::{start_full_sync, FullSyncSpec, KIND as ATPROTO_FULL_SYNC};
pub use config::AtprotoConfig;
pub use identity::Keys;

/// Why a repo's signature could not be trusted, as an item error: an unreachable directory is
/// the source's fault (retried), a missing key or a bad signature the data's.
pub(crate) fn untrusted(did: &str, repo: &epoch_atproto::Repo, keys: &Keys) -> Result<(), epoch_sync::ItemError> {
    let key = signing_key(keys, did)?;
    repo.verify(&key).map_err(|e| epoch_sync::ItemError::Invalid(format!("the repo of {did}: {e}")))
}

/// `did`'s signing key, or why not as an item error.
pub(crate) fn signing_key(
    keys: &Keys,
    did: &str,
) -> Result<epoch_atproto::signature::PublicKey, epoch_sync::ItemError> {
    use epoch_sync::ItemError;
    keys.key(did).map_err(|e| match e {
        identity::ResolveError::Unreachable { .. } => ItemError::Source(e.to_string()),
        identity::ResolveError::NoKey { .. } => ItemError::Invalid(e.to_string()),
    })
}
pub use firehose::{FirehoseSpec, KIND as ATPROTO_FIREHOSE};

/// Applies one item of either AT Protocol kind: a `…#reset` item through the reset reducer,
/// a record through the record reducer (the instance's).
pub(crate) fn apply_item(
    config: &AtprotoConfig,
    d: &mut epoch_core::Database,
    record_reducer: &str,
    args: epoch_core::ReducerArgs,
    caller: epoch_core::Caller,
    step: epoch_core::WorkflowStep,
) -> Result<(), epoch_sync::ItemError> {
    let reducer = if is_reset(&step.item) { config.reset_reducer.as_str() } else { record_reducer };
    epoch_sync::call_reducer(d, reducer, args, caller, step)
}

/// What marks items that reset a repo (`<did>#reset`, `<seq>/<did>#reset`, `<did>#reset@<rev>`)
/// rather than apply a record (record keys hold no `#`).
pub(crate) const RESET: &str = "#reset";

/// Whether the item `key` resets a repo.
pub fn is_reset(key: &str) -> bool {
    key.contains(RESET)
}

/// What an instance of either kind works with: the database's `atproto` section as it is now,
/// a throttled client of its service, and the signing keys when a PLC directory is named.
pub(crate) fn open_source(
    control: &std::sync::Arc<epoch_control::ControlPlane>,
    i: &epoch_sync::Instance,
    allowed_hosts: &identity::AllowedHosts,
) -> Result<(AtprotoConfig, xrpc::Xrpc, Option<Keys>), epoch_sync::RunnerError> {
    use epoch_sync::RunnerError;
    let database = epoch_core::Identity::from_hex(&i.database).ok_or(RunnerError::NoDatabase)?;
    let section = control.sync_config(&database).map(|c| c["atproto"].clone()).unwrap_or_default();
    let config = AtprotoConfig::parse(&section).map_err(RunnerError::BadRequest)?;
    let xrpc =
        xrpc::Xrpc::new(&config.service, config.requests_per_second).map_err(|e| RunnerError::Source(e.to_string()))?;
    let keys = config
        .plc
        .as_deref()
        .map(|plc| Keys::new(plc, allowed_hosts.clone()))
        .transpose()
        .map_err(|e| RunnerError::Source(e.to_string()))?;
    Ok((config, xrpc, keys))
}
