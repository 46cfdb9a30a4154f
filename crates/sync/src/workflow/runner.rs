//! The runner: instances as rows of the system database, one thread per running instance.
//!
//! Exactly once: an instance's row is rewritten after every batch, and each item's reducer call
//! commits its [`WorkflowStep`](epoch_core::WorkflowStep) in the same transaction as its rows.
//! An instance resumed after a crash asks the database which items of the interrupted batch are
//! already applied and skips them (see [`super::batch`]).

use epoch_core::Identity;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use epoch_control::{ControlPlane, SystemError, SystemTable};
use parking_lot::{Condvar, Mutex};

use super::{now_ms, Instance, ItemResult, Kind, KindSpec, Status};
use crate::limits::{MAX_ERRORS, MAX_RESULTS, POSITION_SAVE_INTERVAL, STREAM_POLL};

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("an instance of this kind and scope is already running on this database: {0}")]
    Conflict(String),
    /// The request named something the source does not have (an aggregate type, a thing).
    #[error("{0}")]
    NotFound(String),
    /// The request's parameters are wrong; the message names the parameter.
    #[error("{0}")]
    BadRequest(String),
    #[error("no workflow instance {0}")]
    NoInstance(String),
    #[error("instance {0} has already finished")]
    Finished(String),
    #[error("instance {0} is still running; pause or terminate it first")]
    Running(String),
    /// The source could not be reached or read.
    #[error("{0}")]
    Source(String),
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
    /// What the kind says the instance covers (fixed for its life).
    scope: String,
    /// Whether the instance's thread is running.
    active: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn new(instance: Instance, signal: Signal, scope: String) -> Arc<Self> {
        Arc::new(Self {
            scope,
            active: std::sync::atomic::AtomicBool::new(false),
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
    pub(super) control: Arc<ControlPlane>,
    kinds: Vec<Arc<dyn KindSpec>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// How long finished instances are kept.
    retention: Duration,
}

impl Runner {
    /// Opens the runner on the system database of `control` with the workflow `kinds` this
    /// server knows, resuming every instance that had not finished.
    pub fn open(
        control: Arc<ControlPlane>,
        retention: Duration,
        kinds: Vec<Arc<dyn KindSpec>>,
    ) -> Result<Arc<Self>, RunnerError> {
        let rows = control.system().rows(SystemTable::Workflows);
        let runner = Arc::new(Self { control, kinds, slots: Mutex::new(HashMap::new()), retention });
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
            let scope = runner.scope_of(&instance).map(|s| s.within).unwrap_or_default();
            let slot = Slot::new(instance.clone(), signal, scope);
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
    pub fn start(self: &Arc<Self>, mut instance: Instance) -> Result<Instance, RunnerError> {
        instance.database_seq = self.current_seq(&instance.database);
        if instance.database_seq.is_none() {
            return Err(RunnerError::NoDatabase);
        }
        let mut slots = self.slots.lock();
        let scope = self.scope_of(&instance)?;
        if let Some(running) = running_in_scope(&slots, &scope, None) {
            return Err(RunnerError::Conflict(running));
        }
        self.save(&instance)?;
        let slot = Slot::new(instance.clone(), Signal::Run, scope.within);
        slots.insert(instance.id.clone(), slot.clone());
        drop(slots);
        self.spawn(slot);
        Ok(instance)
    }

    /// The creation sequence of the database `hex` as it is now, if it exists.
    fn current_seq(&self, hex: &str) -> Option<u64> {
        Identity::from_hex(hex).and_then(|d| self.control.get(&d)).map(|d| d.created_seq)
    }

    /// A database was deleted or replaced: its instances end now and are forgotten (the control
    /// plane removed their rows in the same transaction as the database), so none of them can
    /// act on, or be restarted against, a database created later under the same identity.
    fn database_dropped(&self, database: &Identity) {
        let hex = database.to_hex();
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

    /// The id of an unfinished instance sharing `instance`'s scope (checked before costly
    /// setup).
    pub fn running_like(&self, instance: &Instance) -> Option<String> {
        let scope = self.scope_of(instance).ok()?;
        running_in_scope(&self.slots.lock(), &scope, None)
    }

    /// The spec of `kind`, if this server knows it.
    pub fn spec(&self, kind: &str) -> Option<&Arc<dyn KindSpec>> {
        self.kinds.iter().find(|k| k.name() == kind)
    }

    /// Every kind this server knows (the API validates and masks their configuration sections).
    pub fn kinds(&self) -> &[Arc<dyn KindSpec>] {
        &self.kinds
    }

    /// What `i` must not share with another unfinished instance.
    fn scope_of(&self, i: &Instance) -> Result<Scope, RunnerError> {
        let spec = self.spec(&i.kind).ok_or_else(|| RunnerError::UnknownKind(i.kind.clone()))?;
        Ok(Scope { database: i.database.clone(), kind: i.kind.clone(), within: spec.scope(i) })
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
            let slot = slots.get(id).cloned().ok_or_else(|| RunnerError::NoInstance(id.into()))?;
            let mine = slot.instance.lock().clone();
            let scope = self.scope_of(&mine)?;
            if let Some(rival) = running_in_scope(&slots, &scope, Some(id)) {
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
            i.total = counts.as_ref().map(|c| c.values().sum());
            i.counts = counts.unwrap_or_default();
            i.results.clear();
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
    pub fn list(&self, database: &Identity) -> Vec<Instance> {
        self.prune();
        let hex = database.to_hex();
        let mut v: Vec<Instance> =
            self.slots.lock().values().map(|s| s.instance.lock().clone()).filter(|i| i.database == hex).collect();
        v.sort_by_key(|i| std::cmp::Reverse(i.started_at));
        v
    }

    fn signal(&self, id: &str, signal: Signal) -> Result<Instance, RunnerError> {
        let slot = self.slots.lock().get(id).cloned().ok_or_else(|| RunnerError::NoInstance(id.into()))?;
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

    /// Terminates instance `id` and waits (at most `timeout`) until its thread has stopped, so
    /// nothing it was applying is still in flight; false if it had not stopped by then.
    pub fn terminate_and_wait(&self, id: &str, timeout: Duration) -> Result<bool, RunnerError> {
        let slot = self.slots.lock().get(id).cloned().ok_or_else(|| RunnerError::NoInstance(id.into()))?;
        if !slot.instance.lock().status.is_finished() {
            self.terminate(id)?;
        }
        let deadline = std::time::Instant::now() + timeout;
        while slot.active.load(std::sync::atomic::Ordering::Acquire) {
            if std::time::Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(true)
    }

    fn spawn(self: &Arc<Self>, slot: Arc<Slot>) {
        slot.active.store(true, std::sync::atomic::Ordering::Release);
        let unstarted = slot.clone();
        let runner = self.clone();
        let name = format!("wf-{}", &slot.instance.lock().id[3..11]);
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            runner.run(slot.clone());
            slot.active.store(false, std::sync::atomic::Ordering::Release);
        });
        if let Err(e) = spawned {
            unstarted.active.store(false, std::sync::atomic::Ordering::Release);
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
    fn kind_of(&self, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        self.spec(&i.kind).ok_or_else(|| RunnerError::UnknownKind(i.kind.clone()))?.open(&self.control, i)
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

    /// Waits while the instance's database is still opening (after a restart databases open in
    /// the background) and binds the instance to it; `None` if it is gone or failed to open.
    fn wait_for_database(&self, slot: &Slot) -> Option<u64> {
        let hex = slot.instance.lock().database.clone();
        let identity = Identity::from_hex(&hex)?;
        loop {
            if let Some(db) = self.control.get(&identity) {
                slot.instance.lock().database_seq = Some(db.created_seq);
                return Some(db.created_seq);
            }
            match self.control.unavailable(&identity) {
                Some(u) if u.starting && !slot.is_gone() => std::thread::sleep(Duration::from_millis(50)),
                // It finished opening (or reopening) between the two looks.
                None if self.control.get(&identity).is_some() => continue,
                _ => return None,
            }
        }
    }

    /// Runs an instance to its end: batch after batch from its kind, each applied and recorded,
    /// until the kind has no more (or, for a stream, forever), it fails, or it is terminated.
    fn run(self: Arc<Self>, slot: Arc<Slot>) {
        let Some((kind, mut already)) = self.prepare_run(&slot) else { return };
        let mut last_position_saved: Option<std::time::Instant> = None;
        loop {
            if !self.wait_while_paused(&slot) {
                return self.finish(&slot, Status::Terminated, None);
            }
            let current = slot.instance.lock().clone();
            let batch = match kind.next_batch(&current) {
                Ok(b) => b,
                Err(e) => return self.fail(&slot, e.to_string()),
            };
            if batch.is_empty() {
                if kind.idle() {
                    self.idle(&slot, &kind, &current, &mut last_position_saved);
                    continue;
                }
                return self.finish(&slot, Status::Complete, None);
            }
            let skipped_before = already.len();
            let results = self.apply_batch(&kind, &current, &batch, &mut already);
            let recovered = (skipped_before - already.len()) as u64;
            // An item its database could not take (it stayed unwritable past the wait limit,
            // or went away) is not the item's failure: the batch is not recorded as done and
            // the cursor stays before it, so nothing is passed over. What the batch applied
            // is in the database's step ledger, for a later run to skip.
            if let Some((item, Err(e))) = results.iter().find(|(_, r)| matches!(r, Err(super::ItemError::Database(_))))
            {
                return self.fail(
                    &slot,
                    format!("the database could not take item {}: {e}; the batch is not recorded", item.key),
                );
            }
            self.sync_database(&current);
            self.record_batch(&slot, results, recovered, kind.keeps_results());
            // The pause between batches wakes early for pause and terminate.
            let delay = Duration::from_secs(current.params.delay_seconds as u64);
            let mut signal = slot.signal.lock();
            if *signal == Signal::Run && !delay.is_zero() {
                slot.wake.wait_for(&mut signal, delay);
            }
        }
    }

    /// Readies an instance to run: waits for its database, finds its kind and the items of an
    /// interrupted batch that are already applied, and marks it running. `None` once it has
    /// failed instead (its database or kind is gone).
    fn prepare_run(&self, slot: &Arc<Slot>) -> Option<(Arc<dyn Kind>, HashSet<String>)> {
        if slot.instance.lock().database_seq.is_none() && self.wait_for_database(slot).is_none() {
            let why =
                match Identity::from_hex(&slot.instance.lock().database).and_then(|d| self.control.unavailable(&d)) {
                    Some(u) => format!("the database is unavailable: {}", u.reason),
                    None => "the database no longer exists".to_string(),
                };
            self.fail(slot, why);
            return None;
        }
        let snapshot = slot.instance.lock().clone();
        let kind = match self.kind_of(&snapshot) {
            Ok(k) => k,
            Err(e) => {
                self.fail(slot, e.to_string());
                return None;
            }
        };
        let already = self.already_applied(&snapshot);
        if !already.is_empty() {
            tracing::info!(id = %snapshot.id, skipped = already.len(), "items of the interrupted batch are already applied");
        }
        if slot.instance.lock().status == Status::Queued {
            self.update(slot, |i| i.status = Status::Running);
        }
        Some((kind, already))
    }

    /// A stream with nothing new: saves its position (at most every [`POSITION_SAVE_INTERVAL`],
    /// so quiet events do not cost a write each) and waits a little, woken early by pause and
    /// terminate, before it is asked again.
    fn idle(
        &self,
        slot: &Slot,
        kind: &Arc<dyn Kind>,
        current: &Instance,
        last_position_saved: &mut Option<std::time::Instant>,
    ) {
        if let Some(position) = kind.position(current) {
            if current.cursor.as_ref() != Some(&position)
                && last_position_saved.is_none_or(|t| t.elapsed() >= POSITION_SAVE_INTERVAL)
            {
                // Every item listed before is applied and synced: the row may
                // move past the events that had none.
                self.update(slot, |i| i.cursor = Some(position));
                *last_position_saved = Some(std::time::Instant::now());
            }
        }
        let mut signal = slot.signal.lock();
        if *signal == Signal::Run {
            slot.wake.wait_for(&mut signal, STREAM_POLL);
        }
    }

    /// Records an applied batch in the instance: its counts, the first [`MAX_ERRORS`] errors and
    /// [`MAX_RESULTS`] results (for kinds that keep them), and the cursor past its last item, in
    /// one update so the saved instance never holds half a batch.
    fn record_batch(
        &self,
        slot: &Slot,
        results: Vec<(super::Item, Result<(), super::ItemError>)>,
        recovered: u64,
        keep_results: bool,
    ) {
        self.update(slot, |i| {
            // Counted with the batch, so a second crash before it ends does not count twice.
            i.recovered += recovered;
            for (item, result) in results {
                i.done += 1;
                if keep_results && i.results.len() < MAX_RESULTS {
                    i.results.push(ItemResult {
                        request_id: i.step_request_id(i.batches_done + 1, &item.key),
                        status: result.as_ref().map_or_else(|e| e.status(), |()| 200),
                        error: result.as_ref().err().map(|e| e.to_string()),
                        item: item.key.clone(),
                    });
                }
                match result {
                    Ok(()) => i.succeeded += 1,
                    Err(e) => {
                        i.failed += 1;
                        if i.errors.len() < MAX_ERRORS {
                            i.errors.push(format!("{}: {e}", item.key));
                        }
                    }
                }
                i.cursor = Some(item.cursor);
            }
            i.batches_done += 1;
            i.debug_check();
        });
    }
}

/// The id of an unfinished instance in `slots` with `scope`, other than `except`.
fn running_in_scope(slots: &HashMap<String, Arc<Slot>>, scope: &Scope, except: Option<&str>) -> Option<String> {
    slots.iter().filter(|(id, _)| Some(id.as_str()) != except).find_map(|(_, s)| {
        let i = s.instance.lock();
        let same = i.database == scope.database && i.kind == scope.kind && s.scope == scope.within;
        (!i.status.is_finished() && same).then(|| i.id.clone())
    })
}

/// What two unfinished instances must not share: a database, a kind, and what the kind says
/// the instance covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    database: String,
    kind: String,
    within: String,
}
