//! The workflow runner: instances as rows of the system database, one thread per running
//! instance.
//!
//! Exactly once: an instance's row is rewritten after every batch, and each item's reducer call
//! commits its [`WorkflowStep`] in the same transaction as its rows. An instance resumed after a
//! crash asks the database which items of the interrupted batch are already applied and skips
//! them, so nothing already done is done again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use epoch_core::control::{from_hex_be, hex_be};
use epoch_core::{Caller, ControlPlane, Database, HostedDatabase, ReducerArgs, SystemError, SystemTable, WorkflowStep};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

use crate::source::{AggregateKey, SourceError};

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

/// An instance's scope: (database, kind, aggregate type, aggregate id).
pub(crate) type Scope<'a> = (&'a str, &'a str, &'a Option<String>, &'a Option<String>);

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
    /// Batches finished in the current run.
    #[serde(default)]
    pub batches_done: u64,
    /// Starts of this instance (a restart begins a new run); tells runs' steps apart.
    #[serde(default)]
    pub run: u32,
    /// Items found already applied when resuming after a crash: counted as succeeded, not run
    /// again.
    #[serde(default)]
    pub recovered: u64,
    /// Which incarnation of the database the instance works on (its creation sequence in this
    /// process): a database deleted and created again under the same identity is another
    /// database, and the instance must never touch it.
    #[serde(skip)]
    pub(crate) database_seq: Option<u64>,
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

    /// What two instances must not share while both run: database, kind and what they cover.
    pub(crate) fn scope(&self) -> Scope<'_> {
        (&self.database, &self.kind, &self.params.aggregate_type, &self.params.aggregate_id)
    }

    /// The name this run's steps carry in the database's log.
    fn step_instance(&self) -> String {
        format!("{}#{}", self.id, self.run)
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
    #[error("unknown workflow kind `{0}`")]
    UnknownKind(String),
    #[error("saving workflow state: {0}")]
    System(#[from] SystemError),
    #[error("the database no longer exists")]
    NoDatabase,
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
    /// Set when the instance's database is deleted or replaced: the instance is forgotten and
    /// never saved again.
    gone: std::sync::atomic::AtomicBool,
    /// Held while the instance's row is written, so that once `gone` is set and this lock has
    /// been taken, no save is in flight and none will start.
    saving: Mutex<()>,
}

impl Slot {
    fn new(instance: Instance, signal: Signal) -> Arc<Self> {
        Arc::new(Self {
            instance: Mutex::new(instance),
            signal: Mutex::new(signal),
            wake: Condvar::new(),
            gone: std::sync::atomic::AtomicBool::new(false),
            saving: Mutex::new(()),
        })
    }

    fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Runs and keeps every workflow instance of a server.
pub struct Runner {
    control: Arc<ControlPlane>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How long finished instances are kept.
    retention: Duration,
}

/// Finished instances are kept this long by default, as Cloudflare Workflows keeps them.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Runner {
    /// Opens the runner on the system database of `control`, resuming every instance that had
    /// not finished.
    pub fn open(control: Arc<ControlPlane>, retention: Duration) -> Result<Arc<Self>, RunnerError> {
        let rows = control.system().rows(SystemTable::Workflows);
        let runner = Arc::new(Self { control, slots: Mutex::new(HashMap::new()), retention });
        let weak = Arc::downgrade(&runner);
        runner.control.on_database_dropped(Box::new(move |database| {
            if let Some(runner) = weak.upgrade() {
                runner.database_dropped(database);
            }
        }));
        for row in rows {
            let Ok(mut instance) = serde_json::from_str::<Instance>(&row[4]) else {
                tracing::warn!(id = %row[0], "skipping an unreadable workflow instance");
                continue;
            };
            // Bound to its database when its thread starts (the database may still be opening).
            instance.database_seq = None;
            let resume = !instance.status.is_finished();
            let signal = if instance.status == Status::Paused { Signal::Pause } else { Signal::Run };
            let slot = Slot::new(instance.clone(), signal);
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

    fn save(&self, i: &Instance) -> Result<(), RunnerError> {
        let status = serde_json::to_value(i.status).ok().and_then(|v| v.as_str().map(str::to_string));
        let row = vec![
            i.id.clone(),
            i.database.clone(),
            i.kind.clone(),
            status.unwrap_or_default(),
            serde_json::to_string(i).unwrap_or_default(),
        ];
        self.control.system().write(|tx| tx.put(SystemTable::Workflows, row))?;
        Ok(())
    }

    /// Registers a new instance, saves it, and starts running it. Refused with
    /// [`RunnerError::Conflict`] while an unfinished instance has the same scope.
    pub(crate) fn start(self: &Arc<Self>, mut instance: Instance) -> Result<Instance, RunnerError> {
        instance.database_seq = self.current_seq(&instance.database);
        if instance.database_seq.is_none() {
            return Err(RunnerError::NoDatabase);
        }
        let mut slots = self.slots.lock();
        if let Some(running) = running_in_scope(&slots, instance.scope(), None) {
            return Err(RunnerError::Conflict(running));
        }
        self.save(&instance)?;
        let slot = Slot::new(instance.clone(), Signal::Run);
        slots.insert(instance.id.clone(), slot.clone());
        drop(slots);
        self.spawn(slot);
        Ok(instance)
    }

    /// The creation sequence of the database `hex` as it is now, if it exists.
    fn current_seq(&self, hex: &str) -> Option<u64> {
        from_hex_be(hex).and_then(|d| self.control.get(&d)).map(|d| d.created_seq)
    }

    /// A database was deleted or replaced: its instances end now and are forgotten (the control
    /// plane removed their rows in the same transaction as the database), so none of them can
    /// act on, or be restarted against, a database created later under the same identity.
    fn database_dropped(&self, database: &[u8; 32]) {
        let hex = hex_be(database);
        let doomed: Vec<Arc<Slot>> = {
            let mut slots = self.slots.lock();
            let ids: Vec<String> =
                slots.iter().filter(|(_, s)| s.instance.lock().database == hex).map(|(id, _)| id.clone()).collect();
            ids.iter().filter_map(|id| slots.remove(id)).collect()
        };
        for slot in &doomed {
            slot.gone.store(true, std::sync::atomic::Ordering::Release);
            // Wait out a save in flight; later ones see `gone` and skip.
            drop(slot.saving.lock());
            let mut i = slot.instance.lock();
            if !i.status.is_finished() {
                i.status = Status::Terminated;
                i.ended_at = Some(now_ms());
                i.errors.push("the database was deleted".into());
            }
            drop(i);
            *slot.signal.lock() = Signal::Terminate;
            slot.wake.notify_all();
        }
        // Rows a thread saved between the control plane's transaction and the flags above.
        if let Err(e) = self.control.system().write(|tx| tx.delete_where(SystemTable::Workflows, 1, &hex)) {
            tracing::warn!(database = %hex, "could not remove the workflow instances of a dropped database: {e}");
        }
        if !doomed.is_empty() {
            tracing::info!(database = %hex, instances = doomed.len(), "workflows of a dropped database ended");
        }
    }

    /// The id of an unfinished instance with `scope` (checked before costly setup).
    pub(crate) fn running_in(&self, scope: Scope<'_>) -> Option<String> {
        running_in_scope(&self.slots.lock(), scope, None)
    }

    fn expired(&self, i: &Instance) -> bool {
        i.ended_at.is_some_and(|end| now_ms().saturating_sub(end) > self.retention.as_millis() as u64)
    }

    fn forget(&self, id: &str) {
        self.slots.lock().remove(id);
        if let Err(e) = self.control.system().write(|tx| tx.delete(SystemTable::Workflows, id)) {
            tracing::warn!(id, "could not delete an expired workflow instance: {e}");
        }
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
        // Claim the instance under the slots lock (as `start` registers), so two concurrent
        // restarts, or a restart racing a new instance of the same scope, cannot both run.
        let (slot, previous) = {
            let slots = self.slots.lock();
            let slot = slots.get(id).cloned().ok_or_else(|| RunnerError::NotFound(id.into()))?;
            let mine = slot.instance.lock().clone();
            if let Some(rival) = running_in_scope(&slots, mine.scope(), Some(id)) {
                return Err(RunnerError::Conflict(rival));
            }
            let mut i = slot.instance.lock();
            if !i.status.is_finished() {
                return Err(RunnerError::Running(id.into()));
            }
            let previous = i.status;
            i.status = Status::Queued;
            drop(i);
            (slot, previous)
        };
        let snapshot = slot.instance.lock().clone();
        let counts = match self.kind_of(&snapshot).and_then(|k| k.recount(&snapshot)) {
            Ok(c) => c,
            Err(e) => {
                slot.instance.lock().status = previous;
                return Err(e);
            }
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
            i.batches_done = 0;
            i.recovered = 0;
            i.run += 1;
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
        if signal == Signal::Terminate {
            // Ended now, even if the thread is still inside an item: the instance no longer
            // holds its scope, and the thread only records what it finishes, then stops.
            return Ok(self.update(&slot, |i| {
                i.status = Status::Terminated;
                i.ended_at = Some(now_ms());
            }));
        }
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
        let saving = slot.saving.lock();
        // The database was dropped: the instance is over and has no row any more.
        if !slot.is_gone() {
            if let Err(e) = self.save(&copy) {
                tracing::error!(id = %copy.id, "could not save workflow progress: {e}");
            }
        }
        drop(saving);
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

    /// The kind that runs instance `i`.
    fn kind_of(&self, i: &Instance) -> Result<Box<dyn Kind>, RunnerError> {
        match i.kind.as_str() {
            crate::resync::KIND => Ok(Box::new(crate::resync::ResyncProjections::for_instance(&self.control, i)?)),
            other => Err(RunnerError::UnknownKind(other.to_string())),
        }
    }

    fn fail(&self, slot: &Slot, error: String) {
        self.finish(slot, Status::Errored, Some(error));
    }

    /// Ends the instance with `status`, and lets the database forget its steps.
    fn finish(&self, slot: &Slot, status: Status, error: Option<String>) {
        let i = self.update(slot, |i| {
            i.status = status;
            i.errors.extend(error);
            i.ended_at = Some(now_ms());
        });
        if let Some(db) = self.database_of(&i) {
            let name = i.step_instance();
            let _ = db.handle.submit(move |d| d.forget_steps(&name), |_| {});
        }
    }

    /// Makes the batch's transactions durable before the instance's row says the batch is done:
    /// with `--durability async` they are acknowledged once written, not yet fsynced, and the
    /// system row must never run ahead of the database.
    fn sync_database(&self, i: &Instance) {
        let Some(db) = self.database_of(i) else { return };
        if let Ok(Some(log)) = db.handle.with(|d| d.durable_barrier().map(|(log, _)| log)) {
            log.sync_to_disk();
        }
    }

    /// The items of the interrupted batch that the database already applied (after a crash),
    /// by item key.
    fn already_applied(&self, i: &Instance) -> HashSet<String> {
        let Some(db) = self.database_of(i) else { return HashSet::new() };
        let (name, batch) = (i.step_instance(), i.batches_done + 1);
        match db.handle.with(move |d| d.applied_steps(&name)) {
            Ok(Some((b, items))) if b == batch => items,
            _ => HashSet::new(),
        }
    }

    /// Waits while the instance's database is still opening (after a restart databases open in
    /// the background) and binds the instance to it; `None` if it is gone or failed to open.
    fn wait_for_database(&self, slot: &Slot) -> Option<u64> {
        let hex = slot.instance.lock().database.clone();
        let identity = from_hex_be(&hex)?;
        loop {
            if let Some(db) = self.control.get(&identity) {
                slot.instance.lock().database_seq = Some(db.created_seq);
                return Some(db.created_seq);
            }
            match self.control.unavailable(&identity) {
                Some(u) if u.starting && !slot.is_gone() => std::thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    fn run(self: Arc<Self>, slot: Arc<Slot>) {
        if slot.instance.lock().database_seq.is_none() && self.wait_for_database(&slot).is_none() {
            let why = match from_hex_be(&slot.instance.lock().database).and_then(|d| self.control.unavailable(&d)) {
                Some(u) => format!("the database is unavailable: {}", u.reason),
                None => "the database no longer exists".to_string(),
            };
            return self.fail(&slot, why);
        }
        let snapshot = slot.instance.lock().clone();
        let kind = match self.kind_of(&snapshot) {
            Ok(k) => k,
            Err(e) => return self.fail(&slot, e.to_string()),
        };
        let mut already = self.already_applied(&snapshot);
        if !already.is_empty() {
            tracing::info!(id = %snapshot.id, skipped = already.len(), "items of the interrupted batch are already applied");
        }
        if slot.instance.lock().status == Status::Queued {
            self.update(&slot, |i| i.status = Status::Running);
        }
        loop {
            if !self.wait_while_paused(&slot) {
                return self.finish(&slot, Status::Terminated, None);
            }
            let current = slot.instance.lock().clone();
            let batch = match kind.next_batch(&current) {
                Ok(b) => b,
                Err(e) => return self.fail(&slot, format!("listing failed: {e}")),
            };
            if batch.is_empty() {
                return self.finish(&slot, Status::Complete, None);
            }
            let skipped_before = already.len();
            let results = self.apply_batch(kind.as_ref(), &current, &batch, &mut already);
            let recovered = (skipped_before - already.len()) as u64;
            self.sync_database(&current);
            self.update(&slot, |i| {
                // Counted with the batch, so a second crash before it ends does not count twice.
                i.recovered += recovered;
                for (key, result) in results {
                    i.done += 1;
                    match result {
                        Ok(()) => i.succeeded += 1,
                        Err(e) => {
                            i.failed += 1;
                            if i.errors.len() < MAX_ERRORS {
                                i.errors.push(format!("{}: {e}", key.item()));
                            }
                        }
                    }
                    i.cursor = Some(key);
                }
                i.batches_done += 1;
            });
            // The pause between batches wakes early for pause and terminate.
            let delay = Duration::from_secs(current.params.delay_seconds as u64);
            let mut signal = slot.signal.lock();
            if *signal == Signal::Run && !delay.is_zero() {
                slot.wake.wait_for(&mut signal, delay);
            }
        }
    }

    /// Applies a batch: the items' arguments are fetched (concurrently where the source allows),
    /// every item is submitted to the database writer at once (in key order, so per-aggregate
    /// order holds) and acknowledged by one group-commit fsync; items that fail are retried
    /// with backoff, one by one, up to `max_attempts` tries in all. Items in `already` (applied
    /// before a crash) count as succeeded without running again.
    fn apply_batch(
        &self,
        kind: &dyn Kind,
        i: &Instance,
        batch: &[AggregateKey],
        already: &mut HashSet<String>,
    ) -> Vec<(AggregateKey, Result<(), String>)> {
        let step = |key: &AggregateKey| WorkflowStep {
            instance: i.step_instance(),
            batch: i.batches_done + 1,
            item: key.item(),
        };
        let recv = |waiting: Result<Receiver, String>| {
            waiting.and_then(|rx| rx.recv().unwrap_or_else(|_| Err("the database shut down".into())))
        };
        let todo: Vec<AggregateKey> = batch.iter().filter(|k| !already.contains(&k.item())).cloned().collect();
        // An item applied before the crash may now fall in a later batch (the listing changed);
        // its step is committed again under this batch, so a second crash still skips it.
        let mut noted: HashMap<String, Result<Receiver, String>> = batch
            .iter()
            .filter(|k| already.contains(&k.item()))
            .map(|key| (key.item(), self.note_step(i, step(key))))
            .collect();
        let mut pending: HashMap<String, Result<Receiver, String>> = todo
            .iter()
            .zip(kind.arguments(i, &todo))
            .map(|(key, args)| (key.item(), args.and_then(|a| self.submit(i, a, step(key)))))
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for key in batch {
            let Some(waiting) = pending.remove(&key.item()) else {
                if let Some(Err(e)) = noted.remove(&key.item()).map(recv) {
                    tracing::warn!(item = %key.item(), "could not note an already applied item: {e}");
                }
                already.remove(&key.item());
                out.push((key.clone(), Ok(())));
                continue;
            };
            let mut result = recv(waiting);
            for attempt in 1..i.params.max_attempts.max(1) {
                if result.is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50 << attempt.min(6)));
                let args = kind.arguments(i, std::slice::from_ref(key)).pop().unwrap_or_else(|| Err("no item".into()));
                result = recv(args.and_then(|a| self.submit(i, a, step(key))));
            }
            out.push((key.clone(), result));
        }
        out
    }

    /// The database instance `i` works on, if it still exists.
    fn database_of(&self, i: &Instance) -> Option<Arc<HostedDatabase>> {
        from_hex_be(&i.database).and_then(|d| self.control.get(&d)).filter(|db| i.database_seq == Some(db.created_seq))
    }

    /// Queues `job` on the writer of the instance's database; the receiver yields its outcome
    /// once what it committed is durable.
    fn on_writer(
        &self,
        i: &Instance,
        job: impl FnOnce(&mut Database) -> Result<(), String> + Send + 'static,
    ) -> Result<Receiver, String> {
        let db = self.database_of(i).ok_or("the database no longer exists")?;
        let (tx, rx) = std::sync::mpsc::channel();
        db.handle
            .submit(job, move |r| {
                let _ = tx.send(r);
            })
            .map_err(|e| e.to_string())?;
        Ok(rx)
    }

    /// Commits `step` alone (no reducer call) for an item applied before a crash.
    fn note_step(&self, i: &Instance, step: WorkflowStep) -> Result<Receiver, String> {
        self.on_writer(i, move |d| {
            d.note_step(step);
            Ok(())
        })
    }

    /// Calls the instance's reducer with `args`, committing `step` with it.
    fn submit(&self, i: &Instance, args: Vec<u8>, step: WorkflowStep) -> Result<Receiver, String> {
        let caller = Caller::identity(from_hex_be(&i.caller).ok_or("bad caller id")?);
        let reducer = i.reducer.clone();
        self.on_writer(i, move |d| match d.call_step(&reducer, ReducerArgs::Bsatn(args), caller, step) {
            Ok(r) => r.outcome.error_message().map_or(Ok(()), Err),
            Err(e) => Err(e.to_string()),
        })
    }
}

/// The id of an unfinished instance in `slots` with `scope`, other than `except`.
fn running_in_scope(slots: &HashMap<String, Arc<Slot>>, scope: Scope<'_>, except: Option<&str>) -> Option<String> {
    slots.iter().filter(|(id, _)| Some(id.as_str()) != except).find_map(|(_, s)| {
        let i = s.instance.lock();
        (!i.status.is_finished() && i.scope() == scope).then(|| i.id.clone())
    })
}

/// Where an applied item's outcome arrives, once its transaction is durable.
pub(crate) type Receiver = std::sync::mpsc::Receiver<Result<(), String>>;

/// One kind of workflow: which items it goes through, and the reducer arguments of each. The
/// runner owns everything else (calling the instance's reducer, batches, pacing, retries,
/// progress, pause and resume, exactly-once).
pub(crate) trait Kind: Send + Sync {
    /// The next items after the instance's cursor, at most `batch_size`, in a fixed order (so a
    /// cursor resumes exactly).
    fn next_batch(&self, i: &Instance) -> Result<Vec<AggregateKey>, String>;

    /// The reducer arguments (BSATN) of each item, in `keys`' order; an item that cannot be
    /// read fails alone.
    fn arguments(&self, i: &Instance, keys: &[AggregateKey]) -> Vec<Result<Vec<u8>, String>>;

    /// Items in scope per group, counted afresh (for a restart).
    fn recount(&self, i: &Instance) -> Result<BTreeMap<String, u64>, RunnerError>;
}
