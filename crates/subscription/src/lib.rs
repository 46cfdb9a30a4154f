//! # epoch-subscription
//!
//! Subscriptions evaluated incrementally. A client subscribes to queries (`SELECT * FROM t
//! [WHERE …]`, or `SELECT a.* FROM a JOIN b ON a.x = b.y [WHERE …]`); each query is compiled once into an [`epoch_query::Filter`] and shared by every
//! client that sends the same text with the same rights. After each committed transaction,
//! [`Manager::evaluate`] looks only at the transaction's [`TxDelta`]: each shared query filters
//! the inserted and deleted rows of its table once, and every subscriber receives the same
//! [`QueryUpdate`] (shared, not copied). A changed row arrives as a delete plus an insert, as in
//! SpacetimeDB 1.3.
//!
//! Joins are maintained by probing the other side through its index for each changed row.
//!
//! Not for: the WebSocket protocol, encoding or delivery (the API layer's job).
//! No async runtime: the database's writer calls in and hands the updates on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

pub use epoch_query::EvalBudget;
use epoch_query::{Filter, QueryContext, SqlError};
use epoch_store::{Store, TxDelta};

use crate::limits::MAX_QUERIES_PER_CLIENT;

pub mod limits;

/// A connected client, as the API layer numbers them.
pub type ClientId = u64;

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Sql(#[from] SqlError),
    #[error("a client may hold at most {0} queries")]
    TooManyQueries(usize),
}

/// What one transaction changed in the rows one query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryUpdate {
    /// The query's text, as the client sent it.
    pub query: Arc<str>,
    pub table_id: u32,
    /// Rows that left the query's result (BSATN).
    pub deletes: Vec<Box<[u8]>>,
    /// Rows that entered it (BSATN).
    pub inserts: Vec<Box<[u8]>>,
}

/// A query compiled once and shared by its subscribers.
#[derive(Debug)]
struct Shared {
    text: Arc<str>,
    filter: Filter,
    subscribers: BTreeSet<ClientId>,
}

/// A query's identity: its text, whether it was compiled with the owner's rights (which see
/// private tables), and, when row-level security applies, who asks (each caller sees its rows).
type Key = (Arc<str>, bool, Option<epoch_sats::Identity>);

/// Every subscription of one database.
#[derive(Debug, Default)]
pub struct Manager {
    queries: BTreeMap<Key, Shared>,
    /// Whether the module has row-level security filters (then a query's rows depend on its
    /// caller, and queries are shared only among the owner's subscriptions).
    rls: bool,
    /// Each client's queries, with how many of its subscriptions hold each (a client may send
    /// the same query under several query ids; it is evaluated and sent once).
    clients: HashMap<ClientId, BTreeMap<Key, usize>>,
}

impl Manager {
    /// Subscribes `client` to `sql`; returns its table and the rows it selects now (the initial
    /// state), computed within `budget` (shared by the queries of one request). The query is
    /// compiled only if no client holds it yet.
    pub fn subscribe<'s>(
        &mut self,
        store: &'s Store,
        client: ClientId,
        sql: &str,
        ctx: QueryContext,
        budget: &mut EvalBudget,
    ) -> Result<(u32, Vec<&'s [u8]>), SubscribeError> {
        self.rls = !store.row_level_security.is_empty();
        let key = self.key(sql, ctx);
        let held = self.clients.get(&client).map_or(0, BTreeMap::len);
        if held >= MAX_QUERIES_PER_CLIENT && !self.clients.get(&client).is_some_and(|k| k.contains_key(&key)) {
            return Err(SubscribeError::TooManyQueries(MAX_QUERIES_PER_CLIENT));
        }
        let mut fresh = None;
        if !self.queries.contains_key(&key) {
            let filter = Filter::compile(store, sql, ctx)?;
            // Only a query that evaluates is kept (no orphan with no subscriber); its rows are
            // the answer, so they are computed once.
            fresh = Some(filter.initial_rows_within(store, budget)?);
            self.queries.insert(key.clone(), Shared { text: key.0.clone(), filter, subscribers: BTreeSet::new() });
        }
        let shared = self.queries.get_mut(&key).expect("inserted above");
        let rows = match fresh.map_or_else(|| shared.filter.initial_rows_within(store, budget), Ok) {
            Ok(rows) => rows,
            Err(e) => {
                if shared.subscribers.is_empty() {
                    self.queries.remove(&key);
                }
                return Err(e.into());
            }
        };
        let table = shared.filter.table_id();
        shared.subscribers.insert(client);
        *self.clients.entry(client).or_default().entry(key).or_default() += 1;
        debug_assert!(self.consistent());
        Ok((table, rows))
    }

    /// Ends one of `client`'s subscriptions to `sql` (with the rights it subscribed with); the
    /// client stops receiving the query when it holds it no more, and a query no client holds
    /// is dropped. Returns whether it was subscribed.
    pub fn unsubscribe(&mut self, client: ClientId, sql: &str, ctx: QueryContext) -> bool {
        let key = self.key(sql, ctx);
        let Some(count) = self.clients.get_mut(&client).and_then(|keys| keys.get_mut(&key)) else { return false };
        *count -= 1;
        if *count == 0 {
            self.clients.get_mut(&client).map(|keys| keys.remove(&key));
            self.release(client, &key);
        }
        if self.clients.get(&client).is_some_and(BTreeMap::is_empty) {
            self.clients.remove(&client);
        }
        debug_assert!(self.consistent());
        true
    }

    /// Whether `client` holds `sql` (with those rights) through at least one subscription.
    pub fn holds(&self, client: ClientId, sql: &str, ctx: QueryContext) -> bool {
        let key = self.key(sql, ctx);
        self.clients.get(&client).is_some_and(|keys| keys.contains_key(&key))
    }

    /// The table of held query `sql` and the rows it selects now: what an unsubscribe takes
    /// away. `None` when no client holds it.
    pub fn current_rows<'s>(
        &self,
        store: &'s Store,
        sql: &str,
        ctx: QueryContext,
    ) -> Result<(u32, Vec<&'s [u8]>), SqlError> {
        let key = self.key(sql, ctx);
        match self.queries.get(&key) {
            Some(shared) => Ok((shared.filter.table_id(), shared.filter.initial_rows(store)?)),
            None => Err(SqlError::Unsupported(format!("`{sql}` is not subscribed"))),
        }
    }

    /// Ends every subscription of `client` (it disconnected).
    pub fn disconnect(&mut self, client: ClientId) {
        for key in self.clients.remove(&client).unwrap_or_default().into_keys() {
            self.release(client, &key);
        }
        debug_assert!(self.consistent());
    }

    fn release(&mut self, client: ClientId, key: &Key) {
        if let Some(shared) = self.queries.get_mut(key) {
            shared.subscribers.remove(&client);
            if shared.subscribers.is_empty() {
                self.queries.remove(key);
            }
        }
    }

    fn key(&self, sql: &str, ctx: QueryContext) -> Key {
        // A query whose rows depend on who asks (`:sender`, or any query under row-level
        // security) is shared only by that caller's subscriptions.
        let per_caller = self.rls || sql.contains(":sender");
        let caller = (per_caller && !ctx.is_owner || sql.contains(":sender")).then_some(ctx.sender.unwrap_or_default());
        (Arc::from(sql), ctx.is_owner, caller)
    }

    /// How many distinct queries are held (each evaluated once per transaction).
    pub fn query_count(&self) -> usize {
        self.queries.len()
    }

    /// What the committed `delta` changed for each subscribed client: per client, the updates
    /// of its queries that changed (each update shared by every subscriber of its query).
    /// `store` is the state after the transaction (for decoding rows).
    pub fn evaluate(
        &self,
        store: &Store,
        delta: &TxDelta,
    ) -> Result<BTreeMap<ClientId, Vec<Arc<QueryUpdate>>>, SqlError> {
        let mut out: BTreeMap<ClientId, Vec<Arc<QueryUpdate>>> = BTreeMap::new();
        for shared in self.queries.values() {
            let Some((deletes, inserts)) = shared.filter.evaluate(store, delta)? else { continue };
            if deletes.is_empty() && inserts.is_empty() {
                continue;
            }
            let table_id = shared.filter.table_id();
            let update = Arc::new(QueryUpdate { query: shared.text.clone(), table_id, deletes, inserts });
            for client in &shared.subscribers {
                out.entry(*client).or_default().push(update.clone());
            }
        }
        Ok(out)
    }

    /// Every client's queries are held, and every holder of a query is one of its subscribers.
    fn consistent(&self) -> bool {
        let from_clients = self.clients.iter().all(|(c, keys)| {
            keys.iter().all(|(k, n)| *n > 0 && self.queries.get(k).is_some_and(|s| s.subscribers.contains(c)))
        });
        let from_queries = self.queries.iter().all(|(k, s)| {
            !s.subscribers.is_empty()
                && s.subscribers.iter().all(|c| self.clients.get(c).is_some_and(|ks| ks.contains_key(k)))
        });
        from_clients && from_queries
    }
}
