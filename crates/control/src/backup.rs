//! The control plane's side of backups and restores: a consistent point to copy from, and a new
//! database opened from restored files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use epoch_core::{Database, RecoveryReport};
use epoch_sats::Identity;

use crate::hosted::{hosted, next_created};
use crate::{ControlError, ControlPlane};

impl ControlPlane {
    /// Prepares a backup of durable database `identity`: writes a snapshot now (on its writer,
    /// between transactions), so a restore from the backup starts from it rather than from an
    /// older one. Returns the directory and the log; the backup's archiver closes the open
    /// segment itself, which makes the copy consistent.
    pub fn backup_point(
        &self,
        identity: &Identity,
    ) -> Result<(PathBuf, Arc<epoch_commitlog::CommitLog>), ControlError> {
        let db = self.get(identity).ok_or(ControlError::NoSuchDatabase)?;
        let dir = self
            .database_dir(identity)
            .ok_or_else(|| ControlError::Restore("an in-memory database has no files to back up".into()))?;
        let log = db
            .handle
            .with(|d| d.snapshot_now().map(|()| d.commit_log()))?
            .map_err(|e| ControlError::Restore(format!("taking a snapshot: {e}")))?
            .ok_or_else(|| ControlError::Restore("an in-memory database has no files to back up".into()))?;
        Ok((dir, log))
    }

    /// Every running durable database as (identity, directory, commitlog), for archiving.
    pub fn archivable(&self) -> Vec<(Identity, PathBuf, Arc<epoch_commitlog::CommitLog>)> {
        self.all()
            .into_iter()
            .filter_map(|db| {
                let dir = self.database_dir(&db.identity)?;
                let log = db.handle.with(|d| d.commit_log()).ok().flatten()?;
                Some((db.identity, dir, log))
            })
            .collect()
    }

    /// Creates database `identity` under the new name `name`, owned by `caller`, from files
    /// `fetch` writes into its empty directory (a restore from an archive): `fetch` returns the
    /// module, and the database opens from the directory as after a restart (no `init`).
    pub fn restore_to_name(
        &self,
        name: &str,
        identity: Identity,
        caller: Identity,
        fetch: impl FnOnce(&Path) -> Result<Vec<u8>, String>,
    ) -> Result<RecoveryReport, ControlError> {
        let (Some(dir), Some((_, persist))) = (self.database_dir(&identity), &self.storage) else {
            return Err(ControlError::Restore("restoring needs a server with a data directory".into()));
        };
        {
            let mut st = self.state.write();
            if st.names.contains_key(name) {
                return Err(ControlError::NameTaken(name.to_string()));
            }
            if st.databases.contains_key(&identity) || st.pending.contains_key(&identity) {
                return Err(ControlError::PublishInProgress(identity.short_hex()));
            }
            st.names.insert(name.to_string(), identity);
            st.name_owners.insert(name.to_string(), caller);
            st.pending.insert(identity, caller);
        }
        let opened = (|| {
            let io = |source| ControlError::Io { path: dir.clone(), source };
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io)?;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            let wasm = fetch(&dir).map_err(ControlError::Restore)?;
            let (db, report) = Database::open_persistent(&wasm, identity, self.config.clone(), &dir, persist.clone())?;
            Ok((db, report, wasm))
        })();
        let mut st = self.state.write();
        st.pending.remove(&identity);
        match opened {
            Ok((db, report, wasm)) => {
                st.databases.insert(identity, hosted(db, caller, &wasm, next_created()));
                self.save(&st)?;
                Ok(report)
            }
            Err(e) => {
                st.names.remove(name);
                st.name_owners.remove(name);
                drop(st);
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }
}
