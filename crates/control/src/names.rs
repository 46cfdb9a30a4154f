//! Names of databases: each points at one identity and belongs to whoever registered it.

use epoch_sats::Identity;

use crate::limits::MAX_NAMES_PER_DATABASE;
use crate::plane::State;
use crate::{ControlError, ControlPlane, SetNamesError};

impl ControlPlane {
    pub fn resolve_name(&self, name: &str) -> Option<Identity> {
        self.state.read().names.get(name).copied()
    }

    pub fn names_of(&self, identity: &Identity) -> Vec<String> {
        self.state.read().names.iter().filter(|(_, id)| *id == identity).map(|(n, _)| n.clone()).collect()
    }

    /// Refuses one more name for a database that already holds [`MAX_NAMES_PER_DATABASE`].
    pub(crate) fn check_name_room(st: &State, identity: &Identity) -> Result<(), ControlError> {
        if st.names.values().filter(|id| *id == identity).count() >= MAX_NAMES_PER_DATABASE {
            return Err(ControlError::TooManyNames { database: identity.short_hex(), limit: MAX_NAMES_PER_DATABASE });
        }
        Ok(())
    }

    /// Points `name` at `identity`, registered to `caller`, who must own the database. A name
    /// already in use, or one past [`MAX_NAMES_PER_DATABASE`], is refused.
    pub fn add_name(&self, name: &str, identity: Identity, caller: Identity) -> Result<(), ControlError> {
        let mut st = self.state.write();
        match Self::owner_of(&st, &identity) {
            None => return Err(ControlError::NoSuchDatabase),
            Some(owner) if owner != caller => return Err(Self::not_owner(&caller, &identity)),
            Some(_) => {}
        }
        if st.names.contains_key(name) {
            return Err(ControlError::NameTaken(name.to_string()));
        }
        Self::check_name_room(&st, &identity)?;
        st.names.insert(name.to_string(), identity);
        st.name_owners.insert(name.to_string(), caller);
        self.save(&st)
    }

    /// Replaces every name of `identity` with `names` (owner only; names in use elsewhere refused).
    pub fn set_names(&self, identity: Identity, caller: Identity, names: &[String]) -> Result<(), SetNamesError> {
        let mut st = self.state.write();
        let db = st.databases.get(&identity).ok_or(SetNamesError::DatabaseNotFound)?;
        if db.owner != caller {
            return Err(SetNamesError::NotYourDatabase);
        }
        if let Some(n) = names.iter().find(|n| st.names.contains_key(*n)) {
            return Err(SetNamesError::InUse(n.clone()));
        }
        if names.len() > MAX_NAMES_PER_DATABASE {
            return Err(SetNamesError::TooMany(MAX_NAMES_PER_DATABASE));
        }
        let current: Vec<String> = st.names.iter().filter(|(_, id)| **id == identity).map(|(n, _)| n.clone()).collect();
        if let Some(n) = current.iter().find(|n| st.name_owners.get(*n).is_some_and(|o| *o != caller)) {
            return Err(SetNamesError::PermissionDenied(n.clone()));
        }
        for n in current {
            st.names.remove(&n);
            st.name_owners.remove(&n);
        }
        for n in names {
            st.names.insert(n.clone(), identity);
            st.name_owners.insert(n.clone(), caller);
        }
        self.save(&st).map_err(|e| SetNamesError::Storage(e.to_string()))
    }

    /// Registers the free name `name` to `caller` for identity `fresh`, with no database yet (as
    /// 1.3 registers a publish's name before it checks the request); a name in use is left as
    /// it is.
    pub fn reserve_name(&self, name: &str, fresh: Identity, caller: Identity) -> Result<(), ControlError> {
        let mut st = self.state.write();
        if st.names.contains_key(name) {
            return Ok(());
        }
        st.names.insert(name.to_string(), fresh);
        st.name_owners.insert(name.to_string(), caller);
        self.save(&st)
    }
}
