//! The server's archiving: one archiver per archived database, all driven by one thread that
//! makes a pass every [`PASS_INTERVAL`] over the databases the server lists, each with the
//! plan (where, how often) the server resolved for it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use epoch_commitlog::CommitLog;

use crate::limits::PASS_INTERVAL;
use crate::{ArchiveStatus, ArchiveTarget, Archiver, StoreOptions};

/// Where and how one database is archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivePlan {
    /// The store's URL: an archive root shared by several databases, or one database's folder.
    pub store: String,
    /// The database's folder inside the store (empty when `store` is the folder itself).
    pub folder: String,
    /// How to reach the store.
    pub options: StoreOptions,
    /// A transaction reaches the archive at most this long after it commits (plus one pass).
    pub max_lag: Duration,
}

impl ArchivePlan {
    /// The database's archive folder, as `epoch restore --from` takes it.
    pub fn url(&self) -> String {
        let store = self.store.trim_end_matches('/');
        if self.folder.is_empty() {
            store.to_string()
        } else {
            format!("{store}/{}", self.folder)
        }
    }
}

/// One database the server lists on a pass: its name (the archiver's key: a hex identity, or
/// `system`), directory, log, and where it goes (`None`: not archived, so nothing holds its
/// log from pruning).
pub struct ArchivedDatabase {
    pub name: String,
    pub dir: PathBuf,
    pub log: Arc<CommitLog>,
    pub plan: Option<ArchivePlan>,
}

struct Entry {
    plan: ArchivePlan,
    archiver: Archiver,
}

/// Archiving for a whole server.
#[derive(Default)]
pub struct ArchiveService {
    archivers: Mutex<BTreeMap<String, Entry>>,
    /// Open stores, shared by the databases archived to the same one (each holds a small
    /// runtime of its own).
    targets: Mutex<HashMap<(String, StoreOptions), Arc<ArchiveTarget>>>,
    /// Databases whose store cannot be opened, and why.
    open_errors: Mutex<BTreeMap<String, String>>,
    /// Each archiver's status as of its last pass, read without waiting for a pass (which may
    /// be uploading for minutes).
    published: Mutex<BTreeMap<String, ArchiveStatus>>,
}

impl ArchiveService {
    pub fn new() -> Self {
        Self::default()
    }

    /// One pass: ships what each listed database has new, following each one's plan (a changed
    /// plan starts a new archiver into the new place); forgets databases no longer listed.
    pub fn pass(&self, databases: Vec<ArchivedDatabase>) {
        let mut archivers = self.archivers.lock().unwrap_or_else(|p| p.into_inner());
        let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut open_errors = self.open_errors.lock().unwrap_or_else(|p| p.into_inner());
        archivers.retain(|name, _| databases.iter().any(|d| d.name == *name && d.plan.is_some()));
        open_errors.retain(|name, _| databases.iter().any(|d| d.name == *name && d.plan.is_some()));
        for db in &databases {
            let Some(plan) = &db.plan else {
                // Not archived (any more): its log prunes freely again.
                db.log.release_prune_floor();
                continue;
            };
            if archivers.get(&db.name).is_some_and(|e| e.plan != *plan) {
                tracing::info!(database = %db.name, url = %plan.url(), "the archive plan changed; archiving to the new place");
                archivers.remove(&db.name);
            }
            if !archivers.contains_key(&db.name) {
                let key = (plan.store.clone(), plan.options.clone());
                let target = match targets.get(&key) {
                    Some(t) => t.clone(),
                    None => match ArchiveTarget::open(&plan.store, &plan.options) {
                        Ok(t) => targets.entry(key).or_insert(Arc::new(t)).clone(),
                        Err(e) => {
                            if open_errors.insert(db.name.clone(), e.to_string()).is_none() {
                                tracing::warn!(database = %db.name, "cannot open the archive {}: {e}", plan.store);
                            }
                            continue;
                        }
                    },
                };
                open_errors.remove(&db.name);
                let archiver = Archiver::new(&db.dir, &plan.folder, target, plan.max_lag);
                archivers.insert(db.name.clone(), Entry { plan: plan.clone(), archiver });
            }
            let Some(entry) = archivers.get_mut(&db.name) else { continue };
            let before = entry.archiver.status().error.clone();
            if let Err(e) = entry.archiver.ship(&db.log) {
                // Said once per new failure, not on every pass.
                if before.as_deref() != Some(e.to_string().as_str()) {
                    tracing::warn!(database = %db.name, "archiving failed (retrying): {e}");
                }
            } else if before.is_some() {
                tracing::info!(database = %db.name, "archiving resumed");
            }
        }
        let mut statuses: BTreeMap<String, ArchiveStatus> =
            archivers.iter().map(|(n, e)| (n.clone(), e.archiver.status().clone())).collect();
        for (name, e) in open_errors.iter() {
            statuses.insert(name.clone(), ArchiveStatus { error: Some(e.clone()), ..Default::default() });
        }
        *self.published.lock().unwrap_or_else(|p| p.into_inner()) = statuses;
        // A store nobody archives to any more is closed.
        targets.retain(|(store, options), _| {
            archivers.values().any(|e| e.plan.store == *store && e.plan.options == *options)
        });
    }

    /// What the archiver of database `name` (hex identity, or `system`) has done; `None` before
    /// its first pass.
    pub fn status(&self, name: &str) -> Option<ArchiveStatus> {
        self.published.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Every archiver's status, by database.
    pub fn statuses(&self) -> Vec<(String, ArchiveStatus)> {
        let published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        published.iter().map(|(n, s)| (n.clone(), s.clone())).collect()
    }

    /// Runs passes on a thread of its own, over the databases `list` gives each time.
    pub fn spawn(self: &Arc<Self>, list: impl Fn() -> Vec<ArchivedDatabase> + Send + 'static) {
        let service = self.clone();
        let spawned = std::thread::Builder::new().name("archiver".into()).spawn(move || loop {
            service.pass(list());
            std::thread::sleep(PASS_INTERVAL);
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the archiver thread: {e}");
        }
    }
}
