//! The workflow runner: instances as saved data, one thread per running instance.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use epoch_core::control::{from_hex_be, hex_be};
use epoch_core::{Caller, ControlPlane, ReducerArgs};
use epoch_sats::AlgebraicValue;
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::source::{AggregateKey, Source, SourceError, LIST_PAGE};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Paused,
    Complete,
    Errored,
    Terminated,
}

impl Status {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Complete | Self::Errored | Self::Terminated)
    }
}

/// What a resync covers and how fast it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResyncParams {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub batch_size: u32,
    pub delay_seconds: u32,
    /// Tries per item before it counts as failed.
    pub max_attempts: u32,
}

/// The first errors an instance keeps.
const MAX_ERRORS: usize = 100;

/// A workflow instance, exactly as it is saved after every batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub kind: String,
    /// The database, 64 hex digits.
    pub database: String,
    /// Who started it (reducers run as this identity), 64 hex digits.
    pub caller: String,
    pub source_url: String,
    pub reducer: String,
    pub params: ResyncParams,
    pub status: Status,
    pub aggregate_types: Vec<String>,
    pub total: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Aggregates in scope per type.
    pub counts: BTreeMap<String, u64>,
    pub errors: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    pub updated_at: u64,
    pub ended_at: Option<u64>,
    /// The last aggregate done: the run resumes after it.
    pub cursor: Option<AggregateKey>,
}

impl Instance {
    /// Estimated milliseconds left, from the rate so far.
    pub fn eta_ms(&self) -> Option<u64> {
        if self.status.is_finished() || self.done == 0 {
            return None;
        }
        let elapsed = self.updated_at.saturating_sub(self.started_at);
        Some(elapsed * (self.total.saturating_sub(self.done)) / self.done)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("a resync of this database and scope is already running: {0}")]
    Conflict(String),
    #[error("unknown aggregate type `{0}`")]
    UnknownType(String),
    #[error("no workflow instance {0}")]
    NotFound(String),
    #[error("instance {0} has already finished")]
    Finished(String),
    #[error("instance {0} is still running; pause or terminate it first")]
    Running(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("saving workflow state at {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Run,
    Pause,
    Terminate,
}

struct Slot {
    instance: Mutex<Instance>,
    signal: Mutex<Signal>,
    wake: Condvar,
}

/// Runs and keeps every workflow instance of a server.
pub struct Runner {
    dir: PathBuf,
    control: Arc<ControlPlane>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How long finished instances are kept.
    retention: Duration,
}

/// Finished instances are kept this long by default, as Cloudflare Workflows keeps them.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Runner {
    /// Opens the runner on `dir`, resuming every instance that had not finished.
    pub fn open(dir: &Path, control: Arc<ControlPlane>, retention: Duration) -> Result<Arc<Self>, RunnerError> {
        std::fs::create_dir_all(dir).map_err(|source| RunnerError::Io { path: dir.to_path_buf(), source })?;
        let runner = Arc::new(Self { dir: dir.to_path_buf(), control, slots: Mutex::new(HashMap::new()), retention });
        for entry in
            std::fs::read_dir(dir).map_err(|source| RunnerError::Io { path: dir.to_path_buf(), source })?.flatten()
        {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Some(instance) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Instance>(&b).ok())
            else {
                tracing::warn!(path = %path.display(), "skipping an unreadable workflow instance");
                continue;
            };
            let resume = !instance.status.is_finished();
            let signal = if instance.status == Status::Paused { Signal::Pause } else { Signal::Run };
            let slot = Arc::new(Slot {
                instance: Mutex::new(instance.clone()),
                signal: Mutex::new(signal),
                wake: Condvar::new(),
            });
            runner.slots.lock().insert(instance.id.clone(), slot.clone());
            if runner.expired(&instance) {
                runner.forget(&instance.id);
                continue;
            }
            if resume {
                tracing::info!(id = %instance.id, done = instance.done, total = instance.total, "resuming workflow");
                runner.spawn(slot);
            }
        }
        Ok(runner)
    }

    fn save(&self, instance: &Instance) -> Result<(), RunnerError> {
        let path = self.dir.join(format!("{}.json", instance.id));
        let tmp = path.with_extension("tmp");
        let io = |source| RunnerError::Io { path: path.clone(), source };
        let bytes = serde_json::to_vec_pretty(instance).unwrap_or_default();
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// Starts resyncing `database` from the object store at `url` through `reducer`.
    /// `object_store` is the `objectStore` object of the database's sync configuration.
    pub fn start_resync(
        self: &Arc<Self>,
        database: [u8; 32],
        caller: [u8; 32],
        object_store: &serde_json::Value,
        reducer: &str,
        params: ResyncParams,
    ) -> Result<Instance, RunnerError> {
        let url = object_store.get("url").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let db_hex = hex_be(&database);
        if let Some(running) = self.slots.lock().values().find(|s| {
            let i = s.instance.lock();
            !i.status.is_finished()
                && i.database == db_hex
                && i.params.aggregate_type == params.aggregate_type
                && i.params.aggregate_id == params.aggregate_id
        }) {
            return Err(RunnerError::Conflict(running.instance.lock().id.clone()));
        }
        let source = Source::from_config(object_store)?;
        let all_types = source.types()?;
        let types = match &params.aggregate_type {
            Some(t) if !all_types.contains(t) => return Err(RunnerError::UnknownType(t.clone())),
            Some(t) => vec![t.clone()],
            None => all_types,
        };
        let mut counts = BTreeMap::new();
        for t in &types {
            let n = if params.aggregate_id.is_some() { 1 } else { source.count(t)? };
            counts.insert(t.clone(), n);
        }
        let now = now_ms();
        let instance = Instance {
            id: format!("wf_{}", uuid::Uuid::new_v4().simple()),
            kind: "resync-projections".into(),
            database: db_hex,
            caller: hex_be(&caller),
            source_url: url,
            reducer: reducer.to_string(),
            params,
            status: Status::Queued,
            aggregate_types: types,
            total: counts.values().sum(),
            done: 0,
            succeeded: 0,
            failed: 0,
            counts,
            errors: Vec::new(),
            started_at: now,
            updated_at: now,
            ended_at: None,
            cursor: None,
        };
        self.save(&instance)?;
        let slot = Arc::new(Slot {
            instance: Mutex::new(instance.clone()),
            signal: Mutex::new(Signal::Run),
            wake: Condvar::new(),
        });
        self.slots.lock().insert(instance.id.clone(), slot.clone());
        self.spawn(slot);
        Ok(instance)
    }

    fn expired(&self, i: &Instance) -> bool {
        i.ended_at.is_some_and(|end| now_ms().saturating_sub(end) > self.retention.as_millis() as u64)
    }

    fn forget(&self, id: &str) {
        self.slots.lock().remove(id);
        let _ = std::fs::remove_file(self.dir.join(format!("{id}.json")));
    }

    /// Drops finished instances older than the retention period.
    fn prune(&self) {
        let expired: Vec<String> = self
            .slots
            .lock()
            .values()
            .map(|s| s.instance.lock().clone())
            .filter(|i| self.expired(i))
            .map(|i| i.id)
            .collect();
        for id in expired {
            self.forget(&id);
        }
    }

    /// Starts a finished instance over from the beginning, with the same scope and settings.
    pub fn restart(self: &Arc<Self>, id: &str) -> Result<Instance, RunnerError> {
        let slot = self.slots.lock().get(id).cloned().ok_or_else(|| RunnerError::NotFound(id.into()))?;
        let source = {
            let i = slot.instance.lock();
            if !i.status.is_finished() {
                return Err(RunnerError::Running(id.into()));
            }
            self.source_of(&i)?
        };
        let counts: BTreeMap<String, u64> = {
            let i = slot.instance.lock();
            let mut counts = BTreeMap::new();
            for t in &i.aggregate_types {
                counts.insert(t.clone(), if i.params.aggregate_id.is_some() { 1 } else { source.count(t)? });
            }
            counts
        };
        *slot.signal.lock() = Signal::Run;
        let now = now_ms();
        let restarted = self.update(&slot, |i| {
            i.status = Status::Queued;
            i.total = counts.values().sum();
            i.counts = counts;
            (i.done, i.succeeded, i.failed) = (0, 0, 0);
            i.errors.clear();
            i.cursor = None;
            (i.started_at, i.ended_at) = (now, None);
        });
        self.spawn(slot);
        Ok(restarted)
    }

    pub fn get(&self, id: &str) -> Option<Instance> {
        self.slots.lock().get(id).map(|s| s.instance.lock().clone())
    }

    /// Instances of one database, newest first.
    pub fn list(&self, database: &[u8; 32]) -> Vec<Instance> {
        self.prune();
        let hex = hex_be(database);
        let mut v: Vec<Instance> =
            self.slots.lock().values().map(|s| s.instance.lock().clone()).filter(|i| i.database == hex).collect();
        v.sort_by_key(|i| std::cmp::Reverse(i.started_at));
        v
    }

    fn signal(&self, id: &str, signal: Signal) -> Result<Instance, RunnerError> {
        let slot = self.slots.lock().get(id).cloned().ok_or_else(|| RunnerError::NotFound(id.into()))?;
        if slot.instance.lock().status.is_finished() {
            return Err(RunnerError::Finished(id.into()));
        }
        *slot.signal.lock() = signal;
        slot.wake.notify_all();
        let mut i = slot.instance.lock();
        if signal == Signal::Run && i.status == Status::Paused {
            i.status = Status::Running;
        }
        Ok(i.clone())
    }

    pub fn pause(&self, id: &str) -> Result<Instance, RunnerError> {
        self.signal(id, Signal::Pause)
    }

    pub fn resume(&self, id: &str) -> Result<Instance, RunnerError> {
        self.signal(id, Signal::Run)
    }

    pub fn terminate(&self, id: &str) -> Result<Instance, RunnerError> {
        self.signal(id, Signal::Terminate)
    }

    fn spawn(self: &Arc<Self>, slot: Arc<Slot>) {
        let runner = self.clone();
        let name = format!("wf-{}", &slot.instance.lock().id[3..11]);
        let spawned = std::thread::Builder::new().name(name).spawn(move || runner.run(slot));
        if let Err(e) = spawned {
            tracing::error!("cannot start a workflow thread: {e}");
        }
    }

    /// Updates the instance and saves it; returns the saved copy.
    fn update(&self, slot: &Slot, f: impl FnOnce(&mut Instance)) -> Instance {
        let mut i = slot.instance.lock();
        f(&mut i);
        i.updated_at = now_ms();
        let copy = i.clone();
        drop(i);
        if let Err(e) = self.save(&copy) {
            tracing::error!(id = %copy.id, "could not save workflow progress: {e}");
        }
        copy
    }

    /// Waits while paused; returns false when terminated.
    fn wait_while_paused(&self, slot: &Slot) -> bool {
        let mut signal = slot.signal.lock();
        loop {
            match *signal {
                Signal::Run => return true,
                Signal::Terminate => return false,
                Signal::Pause => {
                    drop(signal);
                    self.update(slot, |i| i.status = Status::Paused);
                    signal = slot.signal.lock();
                    while *signal == Signal::Pause {
                        slot.wake.wait(&mut signal);
                    }
                    if *signal == Signal::Run {
                        drop(signal);
                        self.update(slot, |i| i.status = Status::Running);
                        signal = slot.signal.lock();
                    }
                }
            }
        }
    }

    /// The source of an instance: the database's current sync configuration (credentials may
    /// have been rotated since the instance started).
    fn source_of(&self, i: &Instance) -> Result<Source, SourceError> {
        let db = from_hex_be(&i.database).ok_or_else(|| SourceError::Unsupported(i.source_url.clone()))?;
        let config = self.control.sync_config(&db).unwrap_or_default();
        let mut store = config.get("objectStore").cloned().unwrap_or_else(|| serde_json::json!({}));
        if store.get("url").and_then(serde_json::Value::as_str) != Some(i.source_url.as_str()) {
            store = serde_json::json!({ "url": i.source_url });
        }
        Source::from_config(&store)
    }

    fn run(self: Arc<Self>, slot: Arc<Slot>) {
        let snapshot = slot.instance.lock().clone();
        let source = match self.source_of(&snapshot) {
            Ok(s) => s,
            Err(e) => {
                self.update(&slot, |i| {
                    i.status = Status::Errored;
                    i.errors.push(e.to_string());
                    i.ended_at = Some(now_ms());
                });
                return;
            }
        };
        if slot.instance.lock().status == Status::Queued {
            self.update(&slot, |i| i.status = Status::Running);
        }
        loop {
            if !self.wait_while_paused(&slot) {
                self.update(&slot, |i| {
                    i.status = Status::Terminated;
                    i.ended_at = Some(now_ms());
                });
                return;
            }
            let current = slot.instance.lock().clone();
            let batch = match next_batch(&source, &current) {
                Ok(b) => b,
                Err(e) => {
                    self.update(&slot, |i| {
                        i.status = Status::Errored;
                        i.errors.push(format!("listing failed: {e}"));
                        i.ended_at = Some(now_ms());
                    });
                    return;
                }
            };
            if batch.is_empty() {
                self.update(&slot, |i| {
                    i.status = Status::Complete;
                    i.ended_at = Some(now_ms());
                });
                return;
            }
            let results = self.apply_batch(&source, &current, &batch);
            self.update(&slot, |i| {
                for (key, result) in results {
                    i.done += 1;
                    match result {
                        Ok(()) => i.succeeded += 1,
                        Err(e) => {
                            i.failed += 1;
                            if i.errors.len() < MAX_ERRORS {
                                i.errors.push(format!("{}/{}: {e}", key.aggregate_type, key.aggregate_id));
                            }
                        }
                    }
                    i.cursor = Some(key);
                }
            });
            // The pause between batches wakes early for pause and terminate.
            let delay = Duration::from_secs(current.params.delay_seconds as u64);
            let mut signal = slot.signal.lock();
            if *signal == Signal::Run && !delay.is_zero() {
                slot.wake.wait_for(&mut signal, delay);
            }
        }
    }

    /// Applies a batch: every item is submitted to the database writer at once (in key order, so
    /// per-aggregate order holds) and acknowledged by one group-commit fsync; items that fail are
    /// retried with backoff, one by one, up to `max_attempts` tries in all.
    fn apply_batch(
        &self,
        source: &Source,
        i: &Instance,
        batch: &[AggregateKey],
    ) -> Vec<(AggregateKey, Result<(), String>)> {
        let pending: Vec<_> = batch.iter().map(|key| (key.clone(), self.submit(source, i, key))).collect();
        let mut out = Vec::with_capacity(batch.len());
        for (key, waiting) in pending {
            let mut result = waiting.and_then(|rx| rx.recv().unwrap_or_else(|_| Err("the database shut down".into())));
            for attempt in 1..i.params.max_attempts.max(1) {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50 << attempt.min(6)));
                result = self
                    .submit(source, i, &key)
                    .and_then(|rx| rx.recv().unwrap_or_else(|_| Err("the database shut down".into())));
            }
            out.push((key, result));
        }
        out
    }

    /// Reads one aggregate and queues the projection reducer call; the receiver yields the
    /// outcome once the call is durable.
    fn submit(
        &self,
        source: &Source,
        i: &Instance,
        key: &AggregateKey,
    ) -> Result<std::sync::mpsc::Receiver<Result<(), String>>, String> {
        let (version, state) = source.get(key).map_err(|e| e.to_string())?;
        let database = from_hex_be(&i.database).ok_or("bad database id")?;
        let caller = Caller::identity(from_hex_be(&i.caller).ok_or("bad caller id")?);
        let db = self.control.get(&database).ok_or("the database no longer exists")?;
        let args = epoch_sats::bsatn::to_vec(&AlgebraicValue::product([
            AlgebraicValue::string(key.aggregate_type.as_str()),
            AlgebraicValue::string(key.aggregate_id.as_str()),
            AlgebraicValue::U64(version),
            AlgebraicValue::string(state),
        ]));
        let reducer = i.reducer.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        db.handle
            .submit(
                move |d| match d.call(&reducer, ReducerArgs::Bsatn(args), caller) {
                    Ok(r) => r.outcome.error_message().map_or(Ok(()), Err),
                    Err(e) => Err(e.to_string()),
                },
                move |r| {
                    let _ = tx.send(r);
                },
            )
            .map_err(|e| e.to_string())?;
        Ok(rx)
    }
}

/// The next keys after the instance's cursor, in (type, id) order.
fn next_batch(source: &Source, i: &Instance) -> Result<Vec<AggregateKey>, SourceError> {
    let size = i.params.batch_size.max(1) as usize;
    if let (Some(t), Some(id)) = (&i.params.aggregate_type, &i.params.aggregate_id) {
        return Ok(if i.cursor.is_some() {
            Vec::new()
        } else {
            vec![AggregateKey { aggregate_type: t.clone(), aggregate_id: id.clone() }]
        });
    }
    let mut out = Vec::with_capacity(size);
    for t in &i.aggregate_types {
        let after = match &i.cursor {
            Some(c) if c.aggregate_type == *t => Some(c.aggregate_id.as_str()),
            Some(c) if c.aggregate_type > *t => continue,
            _ => None,
        };
        let need = size - out.len();
        for id in source.list(t, after, need.min(LIST_PAGE))? {
            out.push(AggregateKey { aggregate_type: t.clone(), aggregate_id: id });
        }
        if out.len() >= size {
            break;
        }
    }
    Ok(out)
}
