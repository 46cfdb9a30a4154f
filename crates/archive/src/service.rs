//! The server's archiving: one archiver per database, all driven by one thread that makes a
//! pass every [`PASS_INTERVAL`] over the databases the server lists.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use epoch_commitlog::CommitLog;

use crate::{ArchiveStatus, ArchiveTarget, Archiver};

/// How often the archiving thread looks for something to ship.
pub const PASS_INTERVAL: Duration = Duration::from_millis(500);

/// One database to archive: its identity (hex, the archive folder's name), directory and log.
pub type ArchivedDatabase = (String, PathBuf, Arc<CommitLog>);

/// Archiving for a whole server.
pub struct ArchiveService {
    target: Arc<ArchiveTarget>,
    max_lag: Duration,
    archivers: Mutex<BTreeMap<String, Archiver>>,
}

impl ArchiveService {
    pub fn new(target: ArchiveTarget, max_lag: Duration) -> Self {
        Self { target: Arc::new(target), max_lag, archivers: Mutex::new(BTreeMap::new()) }
    }

    /// The archive's URL (each database's folder is under it, named by its identity).
    pub fn url(&self) -> &str {
        self.target.url()
    }

    /// One pass: ships what each listed database has new; forgets databases no longer listed.
    pub fn pass(&self, databases: Vec<ArchivedDatabase>) {
        let mut archivers = self.archivers.lock().unwrap_or_else(|p| p.into_inner());
        archivers.retain(|name, _| databases.iter().any(|(n, _, _)| n == name));
        for (name, dir, log) in databases {
            let archiver = archivers
                .entry(name.clone())
                .or_insert_with(|| Archiver::new(&dir, &name, self.target.clone(), self.max_lag));
            let before = archiver.status().error.clone();
            if let Err(e) = archiver.ship(&log) {
                // Said once per new failure, not on every pass.
                if before.as_deref() != Some(e.to_string().as_str()) {
                    tracing::warn!(database = %name, "archiving failed (retrying): {e}");
                }
            } else if before.is_some() {
                tracing::info!(database = %name, "archiving resumed");
            }
        }
    }

    /// What the archiver of database `name` (hex identity) has done.
    pub fn status(&self, name: &str) -> Option<ArchiveStatus> {
        self.archivers.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|a| a.status().clone())
    }

    /// Every archiver's status, by database.
    pub fn statuses(&self) -> Vec<(String, ArchiveStatus)> {
        let archivers = self.archivers.lock().unwrap_or_else(|p| p.into_inner());
        archivers.iter().map(|(n, a)| (n.clone(), a.status().clone())).collect()
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
