//! The `atproto-full-sync` workflow kind: every member's repo is read whole (`getRepo`), then
//! reset and re-ingested through the database's reducers, one repo after another in DID order.
//!
//! Items: for each member, `<did>#reset` (the reset reducer), then `<did>/<collection>/<rkey>`
//! for each record of a kept collection (the record reducer). Each is applied exactly once across
//! crashes by the runner; the cursor is the last item done (`{"did", "key"}`), so a resumed run
//! reads the current repo again and goes on after it. A member whose repo cannot be read fails
//! on its reset item alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use epoch_control::ControlPlane;
use epoch_core::Identity;
use epoch_core::ReducerArgs;
use epoch_sync::{ConfigContext, Instance, Item, ItemError, Kind, KindSpec, ListError, RunParams, Runner, RunnerError};
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::config::AtprotoConfig;
use crate::holds::{HoldGuard, Holds};
use crate::identity::Keys;
use crate::xrpc::{Xrpc, XrpcError};
use crate::RESET;
use epoch_atproto::Repo;

/// The kind's name, as instances show it.
pub const KIND: &str = "atproto-full-sync";

/// The kind as the runner knows it. It shares [`Holds`] with the firehose kind, which holds
/// back live events of the repos it has not re-read yet.
#[derive(Default)]
pub struct FullSyncSpec {
    pub(crate) holds: Arc<Holds>,
    pub(crate) allowed_hosts: crate::identity::AllowedHosts,
}

impl KindSpec for FullSyncSpec {
    fn name(&self) -> &'static str {
        KIND
    }

    fn config_section(&self) -> &'static str {
        "atproto"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn validate_config(&self, config: &mut Map<String, Value>, cx: &ConfigContext<'_>) -> Result<(), String> {
        AtprotoConfig::validate_section(config, cx)
    }

    /// One backfill per database at a time, whatever its type.
    fn scope(&self, _: &Instance) -> String {
        String::new()
    }

    fn open(&self, control: &Arc<ControlPlane>, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        let (config, xrpc, keys) = crate::open_source(control, i, &self.allowed_hosts)?;
        let members: Vec<String> =
            serde_json::from_value(i.detail.get("members").cloned().unwrap_or_default()).unwrap_or_default();
        // The repos not yet done (from the cursor's, on a resumed run) hold their live events.
        let from = i.cursor.as_ref().and_then(|c| c["did"].as_str()).unwrap_or_default();
        let guard = self.holds.begin(&i.database, members.iter().filter(|m| m.as_str() >= from).cloned());
        Ok(Arc::new(FullSync {
            reader: Arc::new(RepoReader { xrpc, keys }),
            ahead: Mutex::new(HashMap::new()),
            config,
            members,
            current: Mutex::new(None),
            database: i.database.clone(),
            snapshot_revs: Mutex::new(BTreeMap::new()),
            _holds: guard,
        }))
    }
}

/// What reading one repo gave.
type RepoRead = Result<Arc<Repo>, ItemError>;

/// Reads and checks repos; shared with the threads that read ahead.
struct RepoReader {
    xrpc: Xrpc,
    /// Signing keys, when the configuration names a PLC directory: each repo's commit is checked.
    keys: Option<Keys>,
}

impl RepoReader {
    fn read(&self, did: &str) -> RepoRead {
        let bytes = self.xrpc.get_repo(did).map_err(|e| match e {
            XrpcError::NotFound(m) => ItemError::NotFound(m),
            XrpcError::Failed(m) => ItemError::Source(m),
        })?;
        let repo = Repo::decode(&bytes).map_err(|e| ItemError::Invalid(format!("the repo of {did}: {e}")))?;
        if repo.did != did {
            return Err(ItemError::Invalid(format!("getRepo for {did} returned the repo of {}", repo.did)));
        }
        if let Some(keys) = &self.keys {
            crate::untrusted(did, &repo, keys)?;
        }
        Ok(Arc::new(repo))
    }
}

/// A running full sync.
struct FullSync {
    reader: Arc<RepoReader>,
    config: AtprotoConfig,
    /// Sorted.
    members: Vec<String>,
    /// The repo being ingested (its DID and what reading it gave).
    current: Mutex<Option<(String, RepoRead)>>,
    /// Reads of the next repos under way (`parallelRepos` at once, the current one included).
    ahead: Mutex<HashMap<String, Receiver<RepoRead>>>,
    /// The database (hex), for [`Holds`].
    database: String,
    /// The `rev` of each repo as read, until the firehose is told it is done.
    snapshot_revs: Mutex<BTreeMap<String, String>>,
    /// Keeps the members' live events held until each is done, or this run ends.
    _holds: HoldGuard,
}

impl FullSync {
    /// The repo of `did`, read once while its items are listed and applied (its read may have
    /// begun ahead); the reads of the next repos begin.
    fn repo(&self, did: &str) -> Result<Arc<Repo>, ItemError> {
        let mut current = self.current.lock();
        if let Some((d, r)) = current.as_ref() {
            if d == did {
                return r.clone();
            }
        }
        let begun = self.ahead.lock().remove(did);
        let read = match begun {
            Some(rx) => rx.recv().unwrap_or_else(|_| Err(ItemError::Source(format!("reading {did} ahead failed")))),
            None => self.reader.read(did),
        };
        self.read_ahead(did);
        if let Ok(repo) = &read {
            self.snapshot_revs.lock().insert(did.to_string(), repo.rev.clone());
        }
        *current = Some((did.to_string(), read.clone()));
        read
    }

    /// Begins reading the repos after `did`, so `parallelRepos` reads are under way at most.
    fn read_ahead(&self, did: &str) {
        let Ok(at) = self.members.binary_search_by(|m| m.as_str().cmp(did)) else { return };
        let end = (at + self.config.parallel_repos as usize).min(self.members.len());
        let mut ahead = self.ahead.lock();
        for next in &self.members[at + 1..end] {
            if ahead.contains_key(next) {
                continue;
            }
            let (tx, rx) = std::sync::mpsc::channel();
            let (reader, next_did) = (self.reader.clone(), next.clone());
            let spawned = std::thread::Builder::new().name("atproto-read-ahead".into()).spawn(move || {
                let _ = tx.send(reader.read(&next_did));
            });
            if spawned.is_ok() {
                ahead.insert(next.clone(), rx);
            }
        }
    }

    /// Every item of `did` is applied: its held live events may go, newer than its snapshot.
    fn finished(&self, did: &str) {
        let rev = self.snapshot_revs.lock().remove(did);
        self.holds().finish_repo(&self.database, did, rev.as_deref());
    }

    fn holds(&self) -> &Holds {
        self._holds.holds()
    }
}

/// One item of `did`'s repo as read at `rev`. A repo read again from its reset after a
/// resume (`pass`: the new read's rev) gets keys of its own, so none is taken for an item of
/// the interrupted pass.
fn item(did: &str, key: &str, rev: Option<&str>, pass: Option<&str>) -> Item {
    let base = if key == RESET { format!("{did}{RESET}") } else { format!("{did}/{key}") };
    Item {
        key: match pass {
            Some(p) => format!("{base}@{p}"),
            None => base,
        },
        cursor: json!({ "did": did, "key": key, "rev": rev, "pass": pass }),
    }
}

impl Kind for FullSync {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let size = i.params.batch_size.max(1) as usize;
        let (mut did_at, mut after, mut pass) = match &i.cursor {
            Some(c) => {
                let did = c["did"].as_str().unwrap_or_default();
                let at = self
                    .members
                    .iter()
                    .position(|m| m == did)
                    .ok_or_else(|| ListError(format!("{did} left the members")))?;
                let mut after = c["key"].as_str().map(str::to_string);
                let mut pass = c["pass"].as_str().map(str::to_string);
                // Resumed in the middle of a repo that changed since it was read: its rows are
                // half from the old read, so it is read again from its reset.
                if let (Some(was), Ok(repo)) = (c["rev"].as_str(), self.repo(did)) {
                    if was != repo.rev {
                        tracing::info!(did, was, now = %repo.rev, "full_sync: the repo changed while interrupted; reading it again whole");
                        after = None;
                        pass = Some(repo.rev.clone());
                    }
                }
                (at, after, pass)
            }
            None => (0, None, None),
        };
        // Every repo before the cursor's is done (the cursor is the last item applied).
        for did in &self.members[..did_at] {
            self.finished(did);
        }
        let mut out = Vec::with_capacity(size);
        while out.len() < size && did_at < self.members.len() {
            let did = &self.members[did_at];
            let listed_before = out.len();
            let read = self.repo(did);
            let rev = read.as_ref().ok().map(|r| r.rev.clone());
            if after.is_none() {
                out.push(item(did, RESET, rev.as_deref(), pass.as_deref()));
            }
            if let Ok(repo) = read {
                let from = match after.as_deref() {
                    None | Some(RESET) => 0,
                    Some(k) => repo.records.partition_point(|r| r.key().as_str() <= k),
                };
                for r in repo.records[from..].iter().filter(|r| self.config.keeps(&r.collection)) {
                    if out.len() >= size {
                        return Ok(out);
                    }
                    out.push(item(did, &r.key(), rev.as_deref(), pass.as_deref()));
                }
            }
            if out.len() == listed_before {
                // Nothing of this repo is left to apply.
                self.finished(did);
            }
            did_at += 1;
            after = None;
            pass = None;
        }
        Ok(out)
    }

    fn arguments(&self, _: &Instance, items: &[Item]) -> Vec<Result<ReducerArgs, ItemError>> {
        items
            .iter()
            .map(|item| {
                let did = item.cursor["did"].as_str().unwrap_or_default();
                let key = item.cursor["key"].as_str().unwrap_or_default();
                let repo = self.repo(did)?;
                if key == RESET {
                    return Ok(ReducerArgs::Json(json!([did]).to_string()));
                }
                let record = repo
                    .records
                    .binary_search_by(|r| r.key().as_str().cmp(key))
                    .map(|at| &repo.records[at])
                    .map_err(|_| ItemError::NotFound(format!("{did}/{key} is no longer in the repo")))?;
                let value = repo.record_json(record).map_err(|e| ItemError::Invalid(e.to_string()))?;
                Ok(ReducerArgs::Json(
                    json!([did, record.collection, record.rkey, record.cid.to_string(), {"some": value.to_string()}])
                        .to_string(),
                ))
            })
            .collect()
    }

    fn apply(
        &self,
        d: &mut epoch_core::Database,
        reducer: &str,
        args: ReducerArgs,
        caller: epoch_core::Caller,
        step: epoch_core::WorkflowStep,
    ) -> Result<(), ItemError> {
        crate::apply_item(&self.config, d, reducer, args, caller, step)
    }

    fn keeps_results(&self) -> bool {
        false
    }

    /// Records are only known once each repo is read: a stream, with repos counted.
    fn recount(&self, _: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError> {
        Ok(None)
    }
}

/// Starts a full sync of every member of `database`'s AT Protocol source. `note` says why (for
/// example, a catch_up asked for without a cursor).
pub fn start_full_sync(
    runner: &Arc<Runner>,
    database: Identity,
    caller: Identity,
    config: &AtprotoConfig,
    backfill_id: String,
    note: Option<String>,
) -> Result<Instance, RunnerError> {
    let run = RunParams {
        batch_size: config.batch_size,
        delay_seconds: 0,
        max_attempts: 3,
        kind: Map::from_iter([("type".to_string(), json!("full_sync"))]),
    };
    let mut detail = Map::new();
    detail.insert("backfillId".into(), json!(backfill_id));
    detail.insert("note".into(), json!(note));
    let mut instance = Instance::new(
        KIND,
        database.to_hex(),
        caller.to_hex(),
        config.service.clone(),
        config.record_reducer.clone(),
        run,
        None,
        detail,
    );
    if let Some(id) = runner.running_like(&instance) {
        return Err(RunnerError::Conflict(id));
    }
    let members = match &config.members {
        Some(m) => m.clone(),
        None => {
            let xrpc = Xrpc::new(&config.service, config.requests_per_second)
                .map_err(|e| RunnerError::Source(e.to_string()))?;
            let listed = xrpc.list_repos().map_err(|e| RunnerError::Source(e.to_string()))?;
            listed.into_iter().filter(|r| r.active != Some(false)).map(|r| r.did).collect()
        }
    };
    let mut members = members;
    members.sort();
    members.dedup();
    instance.counts = BTreeMap::from([("repos".to_string(), members.len() as u64)]);
    instance.detail.insert("members".into(), json!(members));
    runner.start(instance)
}
