//! Applying one batch exactly once.
//!
//! Each item's reducer call commits a [`WorkflowStep`] (instance run, batch, item) in the same
//! transaction as its rows. The instance's row is saved only after the batch's transactions are
//! durable. After a crash, the resumed run asks the database which items of the interrupted
//! batch it already applied, and counts those as done without calling the reducer again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use epoch_control::HostedDatabase;
use epoch_core::Identity;
use epoch_core::{Caller, Database, ReducerArgs, WorkflowStep};

use super::{Instance, Item, ItemError, Kind, Runner};
use crate::limits::{DATABASE_POLL, DATABASE_WAIT_LIMIT, RETRY_BASE};

/// Where an applied item's outcome arrives, once its transaction is durable.
type Receiver = std::sync::mpsc::Receiver<Result<(), ItemError>>;

impl Runner {
    /// Makes the batch's transactions durable before the instance's row says the batch is done:
    /// with `--durability async` they are acknowledged once written, not yet fsynced, and the
    /// system row must never run ahead of the database.
    pub(super) fn sync_database(&self, i: &Instance) {
        let Some(db) = self.database_of(i) else { return };
        if let Ok(Some(log)) = db.handle.with(|d| d.durable_barrier().map(|(log, _)| log)) {
            log.sync_to_disk();
        }
    }

    /// The items of the interrupted batch that the database already applied (after a crash),
    /// by item key.
    pub(super) fn already_applied(&self, i: &Instance) -> HashSet<String> {
        let Some(db) = self.database_of(i) else { return HashSet::new() };
        let (name, batch) = (i.step_instance(), i.batches_done + 1);
        match db.handle.with(move |d| d.applied_steps(&name)) {
            Ok(Some((b, items))) if b == batch => items,
            _ => HashSet::new(),
        }
    }

    /// Applies a batch: the items' arguments are read (concurrently where the source allows),
    /// every item is submitted to the database writer at once (in order, so per-key order holds)
    /// and acknowledged by one group-commit fsync; items that fail transiently are retried with
    /// backoff, one by one, up to `max_attempts` tries in all. Items in `already` (applied
    /// before a crash) count as succeeded without running again.
    pub(super) fn apply_batch(
        &self,
        kind: &Arc<dyn Kind>,
        i: &Instance,
        batch: &[Item],
        already: &mut HashSet<String>,
    ) -> Vec<(Item, Result<(), ItemError>)> {
        let step = |item: &Item| step_of(i, item);
        let recv = outcome;
        let todo: Vec<Item> = batch.iter().filter(|k| !already.contains(&k.key)).cloned().collect();
        // An item applied before the crash may now fall in a later batch (the listing changed);
        // its step is committed again under this batch, so a second crash still skips it.
        let mut noted: HashMap<String, Result<Receiver, ItemError>> = batch
            .iter()
            .filter(|k| already.contains(&k.key))
            .map(|item| (item.key.clone(), self.note_step(i, step(item))))
            .collect();
        let mut pending: HashMap<String, Result<Receiver, ItemError>> = todo
            .iter()
            .zip(kind.arguments(i, &todo))
            .map(|(item, args)| (item.key.clone(), args.and_then(|a| self.submit(kind, i, a, step(item)))))
            .collect();
        let mut out = Vec::with_capacity(batch.len());
        for item in batch {
            let Some(waiting) = pending.remove(&item.key) else {
                if let Some(Err(e)) = noted.remove(&item.key).map(recv) {
                    tracing::warn!(item = %item.key, "could not note an already applied item: {e}");
                }
                already.remove(&item.key);
                out.push((item.clone(), Ok(())));
                continue;
            };
            let result = self.retry(kind, i, item, recv(waiting));
            out.push((item.clone(), result));
        }
        debug_assert_eq!(out.len(), batch.len(), "every item of a batch has one outcome");
        out
    }

    /// Tries `item` again after its first `result` while that is a retryable failure: a
    /// transient one with backoff, up to `max_attempts` tries in all; the database's own trouble
    /// by waiting until it writes again, without spending the item's tries.
    fn retry(
        &self,
        kind: &Arc<dyn Kind>,
        i: &Instance,
        item: &Item,
        mut result: Result<(), ItemError>,
    ) -> Result<(), ItemError> {
        let mut attempt = 1;
        let mut database_trouble_since = None;
        while attempt < i.params.max_attempts.max(1) {
            match &result {
                Err(ItemError::Database(_)) => {
                    // The database's trouble, not the item's (a full disk, a log that failed
                    // and is reopening): wait until it writes again, without spending the
                    // item's tries. The item may have reached the disk before the failure,
                    // so its step is looked up before it runs again: once, never twice.
                    let since = *database_trouble_since.get_or_insert_with(std::time::Instant::now);
                    if !self.wait_until_writable(i, since) {
                        break;
                    }
                    if self.already_applied(i).contains(&item.key) {
                        result = Ok(());
                        break;
                    }
                }
                Err(e) if e.is_transient() => {
                    std::thread::sleep(RETRY_BASE * (1 << attempt.min(6)));
                    attempt += 1;
                }
                _ => break,
            }
            let args = kind
                .arguments(i, std::slice::from_ref(item))
                .pop()
                .unwrap_or_else(|| Err(ItemError::Invalid("no item".into())));
            result = outcome(args.and_then(|a| self.submit(kind, i, a, step_of(i, item))));
        }
        result
    }

    /// Waits until the instance's database serves and can write again (it was reopening after a
    /// failed fsync, or its disk was full), at most [`DATABASE_WAIT_LIMIT`] after `since`;
    /// false if it is gone, failed to open, or the limit passed.
    fn wait_until_writable(&self, i: &Instance, since: std::time::Instant) -> bool {
        let Some(identity) = Identity::from_hex(&i.database) else { return false };
        loop {
            match self.database_of(i) {
                Some(db) if db.storage_failure().is_none() => return true,
                Some(_) => {}
                // Reopening shows as starting; anything else means it is not coming back.
                None if self.control.unavailable(&identity).is_some_and(|u| u.starting) => {}
                None if self.database_of(i).is_some() => continue,
                None => return false,
            }
            if since.elapsed() >= DATABASE_WAIT_LIMIT {
                return false;
            }
            std::thread::sleep(DATABASE_POLL);
        }
    }

    /// The database instance `i` works on, if it still exists.
    pub(super) fn database_of(&self, i: &Instance) -> Option<Arc<HostedDatabase>> {
        Identity::from_hex(&i.database)
            .and_then(|d| self.control.get(&d))
            .filter(|db| i.database_seq == Some(db.created_seq))
    }

    /// Queues `job` on the writer of the instance's database; the receiver yields its outcome
    /// once what it committed is durable.
    fn on_writer(
        &self,
        i: &Instance,
        job: impl FnOnce(&mut Database) -> Result<(), ItemError> + Send + 'static,
    ) -> Result<Receiver, ItemError> {
        let gone = || ItemError::Database("the database no longer exists".into());
        let db = self.database_of(i).ok_or_else(gone)?;
        let (tx, rx) = std::sync::mpsc::channel();
        db.handle
            .submit(job, move |r| {
                let _ = tx.send(r);
            })
            .map_err(|e| ItemError::Database(e.to_string()))?;
        Ok(rx)
    }

    /// Commits `step` alone (no reducer call) for an item applied before a crash.
    fn note_step(&self, i: &Instance, step: WorkflowStep) -> Result<Receiver, ItemError> {
        self.on_writer(i, move |d| {
            d.note_step(step);
            Ok(())
        })
    }

    /// Applies one item through its kind, committing `step` with it.
    fn submit(
        &self,
        kind: &Arc<dyn Kind>,
        i: &Instance,
        args: ReducerArgs,
        step: WorkflowStep,
    ) -> Result<Receiver, ItemError> {
        let caller =
            Caller::identity(Identity::from_hex(&i.caller).ok_or_else(|| ItemError::Database("bad caller id".into()))?);
        let reducer = i.reducer.clone();
        let kind = kind.clone();
        self.on_writer(i, move |d| kind.apply(d, &reducer, args, caller, step))
    }
}

/// The step ledger's entry for `item` in the instance's next batch.
fn step_of(i: &Instance, item: &Item) -> WorkflowStep {
    WorkflowStep { instance: i.step_instance(), batch: i.batches_done + 1, item: item.key.clone() }
}

/// The outcome of a submitted item once its database acknowledges it; a writer that went away
/// before answering is the database's trouble, not the item's.
fn outcome(waiting: Result<Receiver, ItemError>) -> Result<(), ItemError> {
    waiting.and_then(|rx| rx.recv().unwrap_or_else(|_| Err(ItemError::Database("the database shut down".into()))))
}
