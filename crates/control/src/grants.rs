//! Permissions on a database: granted to an identity by its owner, or to every token of an
//! issuer whose verified email is in a domain (a rule).

use epoch_sats::Identity;

use crate::plane::State;
use crate::{ControlError, ControlPlane};

/// A permission granted to every token of `issuer` whose verified `email` ends with
/// `@{email_domain}` (the seed's "JWT of an @company.com account").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRule {
    pub issuer: String,
    pub email_domain: String,
    pub permission: String,
}

impl GrantRule {
    /// How the rule is kept in `st_permission`'s identity column.
    pub(crate) fn key(&self) -> String {
        format!("{RULE_PREFIX}{}|{}", self.issuer, self.email_domain)
    }

    /// Whether a verified token's claims fall under the rule.
    pub fn matches(&self, issuer: &str, email: Option<&str>, email_verified: bool) -> bool {
        let domain = self.email_domain.trim_start_matches('@').to_ascii_lowercase();
        issuer == self.issuer
            && email_verified
            && email.is_some_and(|e| e.to_ascii_lowercase().rsplit_once('@').is_some_and(|(_, d)| d == domain))
    }
}

/// `st_permission` rows whose identity column starts with this hold a [`GrantRule`].
pub(crate) const RULE_PREFIX: &str = "rule:";

impl ControlPlane {
    /// Grants (`grant`) or revokes a permission on `database` to `identity`; owner only.
    pub fn set_permission(
        &self,
        database: Identity,
        caller: Identity,
        identity: Identity,
        permission: &str,
        grant: bool,
    ) -> Result<(), ControlError> {
        let mut st = self.state.write();
        Self::check_owner(&st, &database, &caller)?;
        let perms = st.permissions.entry((database, identity)).or_default();
        perms.retain(|p| p != permission);
        if grant {
            perms.push(permission.to_string());
        }
        if perms.is_empty() {
            st.permissions.remove(&(database, identity));
        }
        self.save(&st)
    }

    /// `caller` owns the running database `database`.
    pub(crate) fn check_owner(st: &State, database: &Identity, caller: &Identity) -> Result<(), ControlError> {
        let db = st.databases.get(database).ok_or(ControlError::NoSuchDatabase)?;
        if db.owner != *caller {
            return Err(Self::not_owner(caller, database));
        }
        Ok(())
    }

    /// Grants (`grant`) or revokes a permission on `database` to a rule; owner only.
    pub fn set_rule(
        &self,
        database: Identity,
        caller: Identity,
        rule: GrantRule,
        grant: bool,
    ) -> Result<(), ControlError> {
        let mut st = self.state.write();
        Self::check_owner(&st, &database, &caller)?;
        let rules = st.rules.entry(database).or_default();
        rules.retain(|r| r != &rule);
        if grant {
            rules.push(rule);
        }
        if rules.is_empty() {
            st.rules.remove(&database);
        }
        self.save(&st)
    }

    /// Whether a rule grants `permission` on `database` to a token of `issuer` with this email.
    pub fn rule_grants(
        &self,
        database: &Identity,
        issuer: &str,
        email: Option<&str>,
        email_verified: bool,
        permission: &str,
    ) -> bool {
        let st = self.state.read();
        st.rules.get(database).is_some_and(|rules| {
            rules.iter().any(|r| r.permission == permission && r.matches(issuer, email, email_verified))
        })
    }

    /// Whether `identity` holds `permission` on `database` (owners hold every permission).
    pub fn has_permission(&self, database: &Identity, identity: &Identity, permission: &str) -> bool {
        let st = self.state.read();
        st.databases.get(database).is_some_and(|d| d.owner == *identity)
            || st.permissions.get(&(*database, *identity)).is_some_and(|p| p.iter().any(|x| x == permission))
    }
}
