//! Which items of each workflow instance's latest batch a database has applied.
//!
//! A workflow commits its progress after every batch; the items of the batch in flight at a
//! crash are the only ones whose fate that progress does not record. Each item's transaction
//! carries its [`WorkflowStep`] in the same log record as its rows, and this ledger (rebuilt by
//! recovery, kept in snapshots) answers "which items of batch N are already applied?", so a
//! resumed workflow applies nothing twice.

use std::collections::{HashMap, HashSet};

use epoch_commitlog::{AppliedSteps, WorkflowStep};

use crate::limits::MAX_INSTANCES;

#[derive(Debug)]
struct Entry {
    batch: u64,
    items: HashSet<String>,
    last_touched: u64,
}

/// Applied items of the latest batch, per workflow instance.
#[derive(Debug, Default)]
pub struct StepLedger {
    instances: HashMap<String, Entry>,
    clock: u64,
}

impl StepLedger {
    /// Notes that `step` committed. A step of a newer batch replaces the older batch's items.
    pub fn record(&mut self, step: &WorkflowStep) {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.instances.entry(step.instance.clone()).or_insert_with(|| Entry {
            batch: step.batch,
            items: HashSet::new(),
            last_touched: clock,
        });
        if step.batch < entry.batch {
            return;
        }
        if step.batch > entry.batch {
            entry.batch = step.batch;
            entry.items.clear();
        }
        entry.items.insert(step.item.clone());
        entry.last_touched = clock;
        if self.instances.len() > MAX_INSTANCES {
            if let Some(oldest) = self.instances.iter().min_by_key(|(_, e)| e.last_touched).map(|(k, _)| k.clone()) {
                self.instances.remove(&oldest);
            }
        }
    }

    /// The latest batch of `instance` and the items of it that are applied.
    pub fn applied(&self, instance: &str) -> Option<(u64, HashSet<String>)> {
        self.instances.get(instance).map(|e| (e.batch, e.items.clone()))
    }

    /// Drops what is known of `instance` (it finished).
    pub fn forget(&mut self, instance: &str) {
        self.instances.remove(instance);
    }

    /// The ledger as a snapshot stores it.
    pub fn to_snapshot(&self) -> Vec<AppliedSteps> {
        let mut v: Vec<AppliedSteps> = self
            .instances
            .iter()
            .map(|(instance, e)| {
                let mut items: Vec<String> = e.items.iter().cloned().collect();
                items.sort();
                AppliedSteps { instance: instance.clone(), batch: e.batch, items }
            })
            .collect();
        v.sort_by(|a, b| a.instance.cmp(&b.instance));
        v
    }

    /// Restores the ledger from a snapshot.
    pub fn load(&mut self, steps: &[AppliedSteps]) {
        for a in steps {
            for item in &a.items {
                self.record(&WorkflowStep { instance: a.instance.clone(), batch: a.batch, item: item.clone() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(instance: &str, batch: u64, item: &str) -> WorkflowStep {
        WorkflowStep { instance: instance.into(), batch, item: item.into() }
    }

    #[test]
    fn a_newer_batch_replaces_the_older_and_stale_steps_are_ignored() {
        let mut l = StepLedger::default();
        l.record(&step("a", 1, "x"));
        l.record(&step("a", 1, "y"));
        l.record(&step("a", 2, "z"));
        l.record(&step("a", 1, "w"));
        let (batch, items) = l.applied("a").unwrap();
        assert_eq!((batch, items.len()), (2, 1));
        assert!(items.contains("z"));
        let mut restored = StepLedger::default();
        restored.load(&l.to_snapshot());
        assert_eq!(restored.applied("a"), l.applied("a"));
        l.forget("a");
        assert!(l.applied("a").is_none());
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_least_recently_active() {
        let mut l = StepLedger::default();
        for i in 0..MAX_INSTANCES + 10 {
            l.record(&step(&format!("wf{i}"), 1, "x"));
        }
        assert_eq!(l.instances.len(), MAX_INSTANCES);
        assert!(l.applied("wf0").is_none());
        assert!(l.applied(&format!("wf{}", MAX_INSTANCES + 9)).is_some());
    }
}
