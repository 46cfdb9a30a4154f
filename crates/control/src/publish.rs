//! Publishing a module: creating a database, updating its module, or starting it afresh; and
//! deleting it.

use std::sync::Arc;

use epoch_core::atomic_file::write_atomically;
use epoch_core::migrate_policy::MigrationPolicy;
use epoch_core::{Caller, Database};
use epoch_sats::Identity;

use crate::hosted::{hosted, next_created};
use crate::plane::State;
use crate::system::SystemTable;
use crate::{ControlError, ControlPlane, HostedDatabase};

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOp {
    Created,
    Updated,
}

/// What a publish was cleared to do.
pub(crate) enum Claim {
    /// Update the running database's module.
    Update(Arc<HostedDatabase>),
    /// Create the database (claimed in `pending`); `replaced`: an old one was removed (`clear`).
    Create { replaced: bool },
}

impl ControlPlane {
    /// Publishes to the database `name` points at; a free name is claimed for a database with
    /// identity `fresh` in the same step that claims its creation, so two callers racing for one
    /// new name cannot both create it: the loser is told the name is someone else's. A name
    /// that outlived its database (deleted) may be published again by whoever registered it.
    /// A failed creation keeps the name, as 1.3 does (it registers the name before it creates
    /// the database): the name then resolves to a database that does not exist (`No such
    /// database.`), and its registrant may publish a fixed module to it; nobody else may.
    pub fn publish_to_name(
        &self,
        name: &str,
        fresh: Identity,
        caller: Identity,
        wasm: &[u8],
        clear: bool,
        policy: MigrationPolicy,
    ) -> Result<(Identity, PublishOp), ControlError> {
        let mut st = self.state.write();
        let (identity, claimed) = match st.names.get(name).copied() {
            Some(identity) => {
                let name_owner = st.name_owners.get(name).copied().unwrap_or(identity);
                let owner = Self::owner_of(&st, &identity).unwrap_or(name_owner);
                if owner != caller {
                    return Err(Self::not_owner(&caller, &identity));
                }
                (identity, false)
            }
            None => {
                st.names.insert(name.to_string(), fresh);
                st.name_owners.insert(name.to_string(), caller);
                (fresh, true)
            }
        };
        let claim = self.claim(&mut st, identity, caller, clear);
        drop(st);
        let result = claim.and_then(|claim| self.finish_publish(identity, caller, wasm, claim, policy));
        if result.is_err() && claimed {
            // The claimed name outlives the failed creation: write it down (the publish's own
            // error is still the answer).
            if let Err(e) = self.save(&self.state.read()) {
                tracing::error!(name, "cannot record the name of a failed publish: {e}");
            }
        }
        result.map(|op| (identity, op))
    }

    /// Creates the database `identity` from `wasm` (running `init` as `caller`), or updates its
    /// module if it exists and `caller` owns it, as `policy` allows (2.x's consent to an update
    /// that breaks clients). `clear` starts the existing database afresh.
    pub fn publish(
        &self,
        identity: Identity,
        caller: Identity,
        wasm: &[u8],
        clear: bool,
        policy: MigrationPolicy,
    ) -> Result<PublishOp, ControlError> {
        let claim = self.claim(&mut self.state.write(), identity, caller, clear)?;
        self.finish_publish(identity, caller, wasm, claim, policy)
    }

    /// Decides, under the state lock, what a publish of `identity` by `caller` does; a creation
    /// is claimed in `pending` before the lock is let go.
    pub(crate) fn claim(
        &self,
        st: &mut State,
        identity: Identity,
        caller: Identity,
        clear: bool,
    ) -> Result<Claim, ControlError> {
        match Self::owner_of(st, &identity) {
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            _ if st.pending.contains_key(&identity) => {
                return Err(ControlError::PublishInProgress(identity.short_hex()))
            }
            _ => {}
        }
        if clear && st.locks.contains_key(&identity) {
            return Err(ControlError::Locked(crate::LOCKED_RESET));
        }
        if let Some(existing) = st.databases.get(&identity) {
            if !clear {
                return Ok(Claim::Update(existing.clone()));
            }
        } else if let Some(u) = st.unavailable.get(&identity) {
            if !clear || u.starting {
                return Err(u.error(&identity));
            }
        }
        // A creation (or a `clear`, which replaces the database): stop the old one first.
        let replaced = st.databases.remove(&identity).is_some() | st.unavailable.remove(&identity).is_some();
        st.pending.insert(identity, caller);
        Ok(Claim::Create { replaced })
    }

    pub(crate) fn finish_publish(
        &self,
        identity: Identity,
        caller: Identity,
        wasm: &[u8],
        claim: Claim,
        policy: MigrationPolicy,
    ) -> Result<PublishOp, ControlError> {
        let replaced = match claim {
            Claim::Update(existing) => return self.update(existing, wasm, policy),
            Claim::Create { replaced } => replaced,
        };
        if replaced {
            self.dropped(&identity);
        }
        let owner = Caller::identity(caller);
        let created = match (&self.storage, self.database_dir(&identity)) {
            // `create_persistent` empties the directory first, so nothing an earlier database
            // of this identity left there mixes in.
            (Some((_, persist)), Some(dir)) => {
                Database::create_persistent(wasm, identity, owner, self.config.clone(), &dir, persist.clone())
                    .map_err(ControlError::from)
                    .and_then(|db| {
                        let path = dir.join("module.wasm");
                        write_atomically(&path, wasm).map_err(|source| ControlError::Io { path, source })?;
                        Ok(db)
                    })
            }
            _ => Database::create(wasm, identity, owner, self.config.clone()).map_err(ControlError::from),
        };
        let mut st = self.state.write();
        let removed = st.pending.remove(&identity);
        assert_eq!(removed, Some(caller), "only the claimant finishes a creation");
        let db = match created {
            Ok(db) => db,
            Err(e) => {
                if replaced {
                    // The old database is gone; write that down.
                    self.save(&st)?;
                }
                return Err(e);
            }
        };
        st.databases.insert(identity, hosted(db, caller, wasm, next_created()));
        self.save(&st)?;
        Ok(if replaced { PublishOp::Updated } else { PublishOp::Created })
    }

    /// Updates a running database's module, keeping its data.
    pub(crate) fn update(
        &self,
        existing: Arc<HostedDatabase>,
        wasm: &[u8],
        policy: MigrationPolicy,
    ) -> Result<PublishOp, ControlError> {
        let identity = existing.identity;
        let wasm_owned = wasm.to_vec();
        existing.handle.with(move |db| db.update_module(&wasm_owned, policy))??;
        if let Some(dir) = self.database_dir(&identity) {
            let path = dir.join("module.wasm");
            write_atomically(&path, wasm).map_err(|source| ControlError::Io { path, source })?;
        }
        let def = existing.handle.with(|db| Arc::new(db.def().clone()))?;
        let updated = HostedDatabase {
            identity,
            owner: existing.owner,
            handle: existing.handle.clone(),
            logs: existing.logs.clone(),
            program_hash: epoch_core::program::program_hash(wasm),
            def,
            created_seq: existing.created_seq,
            log: existing.log.clone(),
        };
        let mut st = self.state.write();
        // A delete (or `clear`) that came in meanwhile wins: do not bring the database back.
        if st.databases.get(&identity).is_some_and(|d| Arc::ptr_eq(d, &existing)) {
            st.databases.insert(identity, Arc::new(updated));
        }
        Ok(PublishOp::Updated)
    }

    /// Deletes a database (owner only): it stops, its files go, and its permissions, sync
    /// configuration and workflow instances go with it (in the same system transaction), so
    /// nothing of it can reach a database created later under the same name. Names stay, as in
    /// 1.3. A missing database is no error.
    pub fn delete(&self, identity: Identity, caller: Identity) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match Self::owner_of(&st, &identity) {
            None => return Ok(()),
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            Some(_) if st.pending.contains_key(&identity) => {
                return Err(ControlError::PublishInProgress(identity.short_hex()))
            }
            Some(_) => {}
        }
        if let Some(u) = st.unavailable.get(&identity).filter(|u| u.starting) {
            return Err(u.error(&identity));
        }
        if st.locks.contains_key(&identity) {
            return Err(ControlError::Locked(crate::LOCKED_DELETE));
        }
        st.databases.remove(&identity);
        st.unavailable.remove(&identity);
        st.permissions.retain(|(db, _), _| *db != identity);
        st.rules.remove(&identity);
        st.sync_configs.remove(&identity);
        st.archive_configs.remove(&identity);
        self.save_with(&st, |tx| tx.delete_where(SystemTable::Workflows, 1, &identity.to_hex()))?;
        drop(st);
        self.dropped(&identity);
        if let Some(dir) = self.database_dir(&identity) {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(database = %identity.to_hex(), "could not remove {}: {e}", dir.display());
            }
        }
        Ok(())
    }
}

/// What publishing a module to a running database would change, for `pre_publish` to plan:
/// both definitions and both programs' hashes.
pub struct ProposedUpdate {
    pub identity: Identity,
    pub old: Arc<epoch_schema::ModuleDef>,
    pub new: Arc<epoch_schema::ModuleDef>,
    pub old_program: [u8; 32],
    pub new_program: [u8; 32],
}

impl ControlPlane {
    /// Loads `wasm` beside the running module of `identity` (owner only) without changing
    /// anything, so the update can be planned and shown first. The module is compiled and
    /// described as a publish would; a module that does not load is the publisher's mistake.
    pub fn propose_update(
        &self,
        identity: Identity,
        caller: Identity,
        wasm: &[u8],
    ) -> Result<ProposedUpdate, ControlError> {
        let existing = self.get(&identity).ok_or(ControlError::NoSuchDatabase)?;
        if existing.owner != caller {
            return Err(Self::not_owner(&caller, &identity));
        }
        let host = epoch_host::ModuleHost::load(wasm, identity, self.config.clone())
            .map_err(|e| ControlError::Update(e.into()))?;
        Ok(ProposedUpdate {
            identity,
            old: existing.def.clone(),
            new: host.def().clone(),
            old_program: existing.program_hash,
            new_program: epoch_core::program::program_hash(wasm),
        })
    }
}

impl ControlPlane {
    /// Starts a database afresh (2.x's `PUT /reset`; owner only, not while locked): same
    /// identity, names and owner, no data, `init` run again, with `wasm` or, given none, the
    /// module it runs now.
    pub fn reset(&self, identity: Identity, caller: Identity, wasm: Option<&[u8]>) -> Result<PublishOp, ControlError> {
        let existing = self.get(&identity).ok_or(ControlError::NoSuchDatabase)?;
        let program = match wasm {
            Some(w) => w.to_vec(),
            None => existing.handle.with(|db| db.program().to_vec())?,
        };
        self.publish(identity, caller, &program, true, MigrationPolicy::Compatible)
    }
}
