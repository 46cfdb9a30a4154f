//! Subscriptions to 2.x views: `SELECT * FROM view`, held per client like a table's query. A
//! subscribed view instance (a view for one caller, or for everyone when anonymous) keeps the
//! rows its subscribers were last sent and what computing them read. After a commit that meets
//! what it read, the database runs it again and [`ViewSubs::refresh`] sends each subscriber
//! the rows that left and entered (a changed row as a delete plus an insert, as for tables).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use epoch_host::{ReadIndex, ReadSet};
use epoch_store::{Store, TxDelta};
use epoch_subscription::{ClientId, QueryUpdate};

use crate::views::{ViewKey, ViewRows};

/// A view instance a subscription request reads, run before the request is applied.
#[derive(Clone)]
pub(crate) struct ReadyView {
    pub(crate) key: ViewKey,
    pub(crate) rows: ViewRows,
    pub(crate) reads: ReadSet,
}

/// One subscribed view instance.
struct Subscribed {
    rows: ViewRows,
    reads: ReadSet,
    subscribers: BTreeSet<ClientId>,
}

/// Every subscription to a view in one database.
#[derive(Default)]
pub(crate) struct ViewSubs {
    instances: HashMap<ViewKey, Subscribed>,
    /// The subscribed instances by what they read.
    index: ReadIndex<ViewKey>,
    /// Each client's view queries (by text): the instance, and how many of its subscriptions
    /// hold the query.
    clients: HashMap<ClientId, HashMap<Arc<str>, (ViewKey, usize)>>,
}

impl ViewSubs {
    /// Whether `client` holds view query `sql`.
    pub(crate) fn holds(&self, client: ClientId, sql: &str) -> bool {
        self.clients.get(&client).is_some_and(|q| q.contains_key(sql))
    }

    /// How many view instances have subscribers.
    pub(crate) fn len(&self) -> usize {
        self.instances.len()
    }

    /// Subscribes `client` to `sql`, which reads instance `key`, computed now as `rows` having
    /// read `reads`; answers the rows the client starts from.
    pub(crate) fn subscribe(
        &mut self,
        client: ClientId,
        sql: &str,
        key: ViewKey,
        rows: ViewRows,
        reads: ReadSet,
    ) -> ViewRows {
        let index = &mut self.index;
        let instance = self.instances.entry(key).or_insert_with(|| {
            index.insert(key, &reads);
            Subscribed { rows, reads, subscribers: BTreeSet::new() }
        });
        instance.subscribers.insert(client);
        let rows = instance.rows.clone();
        self.clients.entry(client).or_default().entry(Arc::from(sql)).or_insert((key, 0)).1 += 1;
        rows
    }

    /// The instance `client` holds through `sql` and its rows, if it holds it.
    pub(crate) fn current(&self, client: ClientId, sql: &str) -> Option<(ViewKey, ViewRows)> {
        let (key, _) = self.clients.get(&client)?.get(sql)?;
        self.instances.get(key).map(|i| (*key, i.rows.clone()))
    }

    /// Ends one of `client`'s subscriptions to `sql`; an instance nobody holds is dropped.
    pub(crate) fn unsubscribe(&mut self, client: ClientId, sql: &str) {
        let Some(queries) = self.clients.get_mut(&client) else { return };
        let Some((key, count)) = queries.get_mut(sql) else { return };
        *count -= 1;
        if *count > 0 {
            return;
        }
        let key = *key;
        queries.remove(sql);
        let still_held = queries.values().any(|(k, _)| *k == key);
        if queries.is_empty() {
            self.clients.remove(&client);
        }
        if !still_held {
            self.release(client, key);
        }
    }

    /// Ends every view subscription of `client`.
    pub(crate) fn disconnect(&mut self, client: ClientId) {
        for (_, (key, _)) in self.clients.remove(&client).unwrap_or_default() {
            self.release(client, key);
        }
    }

    fn release(&mut self, client: ClientId, key: ViewKey) {
        if let Some(instance) = self.instances.get_mut(&key) {
            instance.subscribers.remove(&client);
            if instance.subscribers.is_empty() {
                if let Some(gone) = self.instances.remove(&key) {
                    self.index.remove(key, &gone.reads);
                }
            }
        }
    }

    /// The subscribed instances whose reads `delta` (committed to `store`) meets.
    pub(crate) fn stale(&self, store: &Store, delta: &TxDelta) -> Vec<ViewKey> {
        if delta.is_empty() {
            return Vec::new();
        }
        self.index.met(store, delta).into_iter().collect()
    }

    /// Instance `key` ran again, answering `rows` having read `reads`: the update of table
    /// `table_id` (named `query`) for each subscriber, when its rows changed.
    pub(crate) fn refresh(
        &mut self,
        key: ViewKey,
        rows: ViewRows,
        reads: ReadSet,
        table_id: u32,
        query: &Arc<str>,
    ) -> Vec<(ClientId, Arc<QueryUpdate>)> {
        let Some(instance) = self.instances.get_mut(&key) else { return Vec::new() };
        let (deletes, inserts) = row_changes(&instance.rows, &rows);
        instance.rows = rows;
        if instance.reads != reads {
            self.index.remove(key, &instance.reads);
            self.index.insert(key, &reads);
            instance.reads = reads;
        }
        if deletes.is_empty() && inserts.is_empty() {
            return Vec::new();
        }
        let update = Arc::new(QueryUpdate { query: query.clone(), table_id, deletes, inserts });
        instance.subscribers.iter().map(|c| (*c, update.clone())).collect()
    }
}

/// Rows handed out, each the BSATN of a row.
type RowList = Vec<Box<[u8]>>;

/// The rows of `old` not in `new` (as many times as they are missing) and those of `new` not
/// in `old`: a view answers a list, which may repeat a row.
fn row_changes(old: &[Box<[u8]>], new: &[Box<[u8]>]) -> (RowList, RowList) {
    let mut counts: HashMap<&[u8], i64> = HashMap::with_capacity(old.len());
    for row in old {
        *counts.entry(row).or_default() += 1;
    }
    let mut inserts = Vec::new();
    for row in new {
        match counts.get_mut(row.as_ref()) {
            Some(n) if *n > 0 => *n -= 1,
            _ => inserts.push(row.clone()),
        }
    }
    let mut deletes = Vec::new();
    for row in old {
        if let Some(n) = counts.get_mut(row.as_ref()) {
            if *n > 0 {
                *n -= 1;
                deletes.push(row.clone());
            }
        }
    }
    (deletes, inserts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(items: &[&str]) -> ViewRows {
        items.iter().map(|s| Box::from(s.as_bytes())).collect::<Vec<_>>().into()
    }

    #[test]
    fn a_refresh_sends_what_left_and_what_entered_to_each_subscriber_once() {
        let mut subs = ViewSubs::default();
        let key = (0, None);
        let q: Arc<str> = Arc::from("SELECT * FROM v");
        assert_eq!(subs.subscribe(1, &q, key, rows(&["a", "b", "b"]), ReadSet::default()).len(), 3);
        subs.subscribe(2, &q, key, rows(&["ignored"]), ReadSet::default());
        subs.subscribe(2, &q, key, rows(&["ignored"]), ReadSet::default());
        let updates = subs.refresh(key, rows(&["b", "c"]), ReadSet::default(), 9, &q);
        assert_eq!(updates.len(), 2);
        let u = &updates[0].1;
        let text = |r: &[Box<[u8]>]| r.iter().map(|x| String::from_utf8_lossy(x).into_owned()).collect::<Vec<_>>();
        assert_eq!(
            (text(&u.deletes), text(&u.inserts), u.table_id),
            (vec!["a".into(), "b".into()], vec!["c".into()], 9)
        );
        assert!(subs.refresh(key, rows(&["c", "b"]), ReadSet::default(), 9, &q).is_empty(), "same rows: nothing");
        // Client 2 holds the query twice: the instance stays until both are gone.
        subs.unsubscribe(1, &q);
        subs.unsubscribe(2, &q);
        assert_eq!((subs.len(), subs.current(2, &q).map(|(_, r)| r.len())), (1, Some(2)));
        subs.unsubscribe(2, &q);
        assert_eq!(subs.len(), 0);
        assert!(!subs.holds(2, &q));
    }
}
