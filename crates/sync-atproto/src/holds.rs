//! Live events held back while a full_sync re-reads their repo.
//!
//! A full_sync resets a repo and ingests it again from one snapshot (`getRepo`). A live event
//! for that repo applied meanwhile could be wiped by the reset, or overwritten by an older
//! snapshot. So while a repo is pending in a full_sync, the firehose holds its events back (and
//! does not move its saved cursor past the first one held); once the repo is done, the firehose
//! learns the snapshot's `rev` and applies the held events newer than it, in order.
//!
//! [`Holds`] is shared by the two kinds of one server: the full_sync registers its members
//! ([`Holds::begin`]) and marks each repo done; the firehose asks whether a repo is held and
//! takes the revs of finished repos.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

/// The repos under a full_sync, per database (hex).
#[derive(Default)]
pub struct Holds {
    state: Mutex<HashMap<String, Database>>,
}

#[derive(Default)]
struct Database {
    /// Repos not yet re-read by the running full_sync (and the run that registered them).
    pending: BTreeSet<String>,
    run: u64,
    /// Repos re-read, with their snapshot's `rev`, not yet taken by the firehose.
    finished: BTreeMap<String, String>,
}

/// Ends a full_sync's holds when dropped (the run finished, failed or was stopped).
pub struct HoldGuard {
    holds: Arc<Holds>,
    database: String,
    run: u64,
}

impl Holds {
    /// Holds `members` of `database` until each is [`finished`](Self::finish_repo) or the guard
    /// drops. A second registration replaces the first.
    pub fn begin(self: &Arc<Self>, database: &str, members: impl IntoIterator<Item = String>) -> HoldGuard {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut state = self.state.lock();
        let db = state.entry(database.to_string()).or_default();
        db.pending = members.into_iter().collect();
        db.run = run;
        HoldGuard { holds: self.clone(), database: database.to_string(), run }
    }

    /// `did` has been re-read whole from a snapshot at `rev`: its held events may go.
    pub fn finish_repo(&self, database: &str, did: &str, rev: Option<&str>) {
        let mut state = self.state.lock();
        let Some(db) = state.get_mut(database) else { return };
        if db.pending.remove(did) {
            if let Some(rev) = rev {
                db.finished.insert(did.to_string(), rev.to_string());
            }
        }
    }

    /// Whether live events of `did` are held back now.
    pub fn holding(&self, database: &str, did: &str) -> bool {
        self.state.lock().get(database).is_some_and(|db| db.pending.contains(did))
    }

    /// Whether any repo of `database` is held back.
    pub fn any(&self, database: &str) -> bool {
        self.state.lock().get(database).is_some_and(|db| !db.pending.is_empty())
    }

    /// The repos re-read since the last call, with their snapshots' revs.
    pub fn take_finished(&self, database: &str) -> BTreeMap<String, String> {
        self.state.lock().get_mut(database).map(|db| std::mem::take(&mut db.finished)).unwrap_or_default()
    }
}

impl HoldGuard {
    /// The holds this guard registered with.
    pub fn holds(&self) -> &Holds {
        &self.holds
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let mut state = self.holds.state.lock();
        if let Some(db) = state.get_mut(&self.database) {
            if db.run == self.run {
                db.pending.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Holds;

    #[test]
    fn a_repo_is_held_until_finished_or_the_run_ends() {
        let holds = std::sync::Arc::new(Holds::default());
        let guard = holds.begin("db", ["did:a".to_string(), "did:b".to_string()]);
        assert!(holds.holding("db", "did:a") && holds.holding("db", "did:b"));
        assert!(!holds.holding("other", "did:a"));
        holds.finish_repo("db", "did:a", Some("3k"));
        assert!(!holds.holding("db", "did:a") && holds.any("db"));
        assert_eq!(holds.take_finished("db").into_iter().collect::<Vec<_>>(), [("did:a".into(), "3k".into())]);
        assert!(holds.take_finished("db").is_empty(), "taken once");
        drop(guard);
        assert!(!holds.holding("db", "did:b") && !holds.any("db"));
    }

    #[test]
    fn an_older_runs_guard_does_not_end_a_newer_run() {
        let holds = std::sync::Arc::new(Holds::default());
        let old = holds.begin("db", ["did:a".to_string()]);
        let _new = holds.begin("db", ["did:b".to_string()]);
        drop(old);
        assert!(holds.holding("db", "did:b"));
    }
}
