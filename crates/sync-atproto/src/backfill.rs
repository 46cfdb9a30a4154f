//! The `atproto-full-sync` workflow kind: every member's repo is read whole (`getRepo`), then
//! reset and re-ingested through the database's reducers, one repo after another in DID order.
//!
//! Items: for each member, `<did>#reset` (the reset reducer), then `<did>/<collection>/<rkey>`
//! for each record of a kept collection (the record reducer). Each is applied exactly once across
//! crashes by the runner; the cursor is the last item done (`{"did", "key"}`), so a resumed run
//! reads the current repo again and goes on after it. A member whose repo cannot be read fails
//! on its reset item alone.
//!
//! The saved cursor also carries the snapshot `rev` of every repo finished before it (`done`):
//! the live consumer needs each repo's rev to see events it missed (Sync 1.1's `since`), and a
//! run resumed after a crash must still hand over the revs of the repos it finished before.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
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
use crate::limits::MAX_TRACKED_REPOS;
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
        Ok(Arc::new(FullSync::new(i, config, RepoReader { xrpc, keys }, members, guard)))
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
    /// The snapshot `rev` of each repo read by this run, and of those a resumed run finished
    /// before (from its cursor's `done`).
    revs: Mutex<BTreeMap<String, String>>,
    /// Keeps the members' live events held until each is done, or this run ends.
    _holds: HoldGuard,
}

impl FullSync {
    /// Instance `i` of the kind, resumed from its cursor, if any.
    fn new(i: &Instance, config: AtprotoConfig, reader: RepoReader, members: Vec<String>, holds: HoldGuard) -> Self {
        Self {
            reader: Arc::new(reader),
            ahead: Mutex::new(HashMap::new()),
            config,
            members,
            current: Mutex::new(None),
            database: i.database.clone(),
            revs: Mutex::new(finished_revs(i.cursor.as_ref())),
            _holds: holds,
        }
    }

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
            self.revs.lock().insert(did.to_string(), repo.rev.clone());
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
        let rev = self.revs.lock().get(did).cloned();
        self.holds().finish_repo(&self.database, did, rev.as_deref());
    }

    /// The last item's cursor (the one the runner saves) gets the revs of the repos before its
    /// own, which are finished once it is applied.
    fn note_finished(&self, items: &mut [Item]) {
        let Some(last) = items.last_mut() else { return };
        let did = last.cursor["did"].as_str().unwrap_or_default().to_string();
        let revs = self.revs.lock();
        let done: Map<String, Value> = revs
            .range::<str, _>((Unbounded, Excluded(did.as_str())))
            .take(MAX_TRACKED_REPOS)
            .map(|(d, rev)| (d.clone(), json!(rev)))
            .collect();
        last.cursor["done"] = Value::Object(done);
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

impl FullSync {
    /// The next items: the rest of the cursor's repo, then the next repos', up to a batch.
    fn list(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
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
}

impl Kind for FullSync {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let mut items = self.list(i)?;
        self.note_finished(&mut items);
        Ok(items)
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

/// The snapshot revs of the repos finished before `cursor` (its `done`).
fn finished_revs(cursor: Option<&Value>) -> BTreeMap<String, String> {
    let Some(c) = cursor else { return BTreeMap::new() };
    serde_json::from_value(c["done"].clone()).unwrap_or_default()
}

/// The snapshot revs the newest ended full_sync of `database` handed to the live consumer: the
/// repos finished before its last item, and that item's repo too when the run completed.
pub(crate) fn handed_over_revs(runner: &Runner, database: &Identity) -> BTreeMap<String, String> {
    let latest = runner
        .list(database)
        .into_iter()
        .filter(|i| i.kind == KIND && i.status.is_finished())
        .max_by_key(|i| i.started_at);
    let Some(i) = latest else { return BTreeMap::new() };
    let mut revs = finished_revs(i.cursor.as_ref());
    if let (Some(c), epoch_sync::Status::Complete) = (&i.cursor, i.status) {
        if let (Some(did), Some(rev)) = (c["did"].as_str(), c["rev"].as_str()) {
            revs.insert(did.to_string(), rev.to_string());
        }
    }
    revs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full_sync of `members` resumed from `cursor`, whose repos cannot be read (nothing
    /// listens on port 9): what it hands over comes from its cursor alone.
    fn resumed(members: &[&str], cursor: Value, holds: &Arc<Holds>) -> (FullSync, Instance) {
        let config =
            AtprotoConfig::parse(&json!({"service": "http://127.0.0.1:9", "collections": ["app.forum.post"]})).unwrap();
        let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
        let mut i = crate::firehose::tests::live(&config);
        i.cursor = Some(cursor);
        let xrpc = Xrpc::new(&config.service, 1000.0).unwrap();
        let guard = holds.begin(&i.database, members.iter().cloned());
        (FullSync::new(&i, config, RepoReader { xrpc, keys: None }, members, guard), i)
    }

    /// A run resumed after a crash still hands the live consumer the snapshot revs of the repos
    /// it finished before the crash (without them the consumer cannot see events it missed),
    /// and keeps them in the cursor it saves next.
    #[test]
    fn a_resumed_full_sync_hands_over_the_revs_of_repos_finished_before_the_crash() {
        let holds = Arc::new(Holds::default());
        let cursor =
            json!({"did": "did:plc:b", "key": "app.forum.post/p1", "rev": "3kb", "done": {"did:plc:a": "3ka"}});
        let (sync, i) = resumed(&["did:plc:a", "did:plc:b", "did:plc:c"], cursor, &holds);
        let batch = sync.next_batch(&i).unwrap();
        let finished = holds.take_finished(&i.database);
        assert_eq!(finished.get("did:plc:a").map(String::as_str), Some("3ka"), "{finished:?}");
        let last = batch.last().expect("the reset item of did:plc:c, which cannot be read");
        assert_eq!(last.cursor["did"], "did:plc:c");
        assert_eq!(last.cursor["done"]["did:plc:a"], "3ka", "{}", last.cursor);
    }
}
