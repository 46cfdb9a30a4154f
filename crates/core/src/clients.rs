//! The connected clients of one database: their subscriptions, what each committed transaction
//! sends them, and the outbox that hands those messages over only once the transaction is
//! durable, in commit order.
//!
//! The API layer owns the sockets and the wire formats; here a client is a [`ClientSink`] that
//! accepts [`Outgoing`] messages without blocking. Everything runs on the database's writer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use epoch_commitlog::CommitLog;
use epoch_sats::{AlgebraicType, AlgebraicValue, ProductType, Typespace};
use epoch_schema::ModuleDef;
use epoch_store::{Store, TxDelta};
use epoch_subscription::{EvalBudget, Manager, SubscribeError};
use parking_lot::Mutex;

use crate::caller::Caller;
use crate::limits::{
    DEFAULT_MAX_CLIENTS_PER_DATABASE, DEFAULT_MAX_INITIAL_ROWS, DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
    OUTBOX_KEPT_CAPACITY,
};
use crate::view_subs::{ReadyView, ViewSubs};
use epoch_sats::le_bytes_hex;

pub use epoch_subscription::{ClientId, QueryUpdate};

/// The id of a module's first table (and index, constraint, sequence): 1.3 numbers them from
/// 4097, 2.x from 4096 (the ids below are their system tables'; checked against both
/// references). Clients see table ids in updates, so Epoch's store ids are shifted by this on
/// the wire and in the system tables.
pub fn first_user_id(version: epoch_schema::DefVersion) -> u32 {
    match version {
        epoch_schema::DefVersion::V10 => 4096,
        _ => 4097,
    }
}

/// Limits on what clients may hold; each exceeded limit is a clear error to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_clients: usize,
    pub max_subscriptions: usize,
    pub max_initial_rows: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_clients: DEFAULT_MAX_CLIENTS_PER_DATABASE,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS_PER_CLIENT,
            max_initial_rows: DEFAULT_MAX_INITIAL_ROWS,
        }
    }
}

/// Where a client's messages go: the API layer's queue of one connection.
pub trait ClientSink: Send + Sync {
    /// Counts `msg` against the client's limits from the moment it is queued (it may wait in
    /// the outbox until its transaction is durable); returns its size in bytes, or `None` when
    /// the client is (or now gets) cut off as too slow, and the message is dropped. Never
    /// blocks: the database never waits for a client.
    fn admit(&self, msg: &Outgoing) -> Option<usize>;
    /// Hands over `msg`, admitted earlier with `size` bytes, without blocking.
    fn send(&self, msg: Outgoing, size: usize);
}

/// What the wire encoders need to know of a module's tables and reducers.
#[derive(Debug)]
pub struct WireSchema {
    pub typespace: Typespace,
    /// By store table id.
    pub tables: Vec<WireTable>,
    /// By reducer id: name and parameters.
    pub reducers: Vec<(Arc<str>, ProductType)>,
    /// Where the 2.x views start in `tables`: view `v` is table `first_view + v`, after the
    /// store's tables, as 2.x numbers view tables after the module's.
    pub first_view: u32,
}

/// One table as clients see it.
#[derive(Debug)]
pub struct WireTable {
    pub wire_id: u32,
    pub name: Arc<str>,
    pub row_type: AlgebraicType,
    /// The BSATN length of every row, when 1.3 sends the table's rows as fixed-size.
    pub fixed_row_len: Option<usize>,
}

impl WireSchema {
    /// The tables of `def` by their ids in `store` (ids survive module updates, so they may not
    /// follow the module's order).
    pub fn new(def: &ModuleDef, store: &Store) -> Self {
        let tables = store
            .tables()
            .iter()
            .map(|st| {
                let row_type = AlgebraicType::Product(st.schema.row_type().clone());
                WireTable {
                    wire_id: first_user_id(def.version) + st.id,
                    name: Arc::from(st.schema.name()),
                    fixed_row_len: static_len(&def.typespace, &row_type),
                    row_type,
                }
            })
            .collect::<Vec<_>>();
        let first_view = tables.len() as u32;
        // 2.x numbers view tables in name order (as `st_table` shows them).
        let rank = |name: &str| def.views.iter().filter(|v| v.name.as_str() < name).count() as u32;
        let views = def.views.iter().map(|view| {
            let row = epoch_host::view::view_row_type(&def.typespace, view).unwrap_or_default();
            let row_type = AlgebraicType::Product(row);
            WireTable {
                wire_id: first_user_id(def.version) + first_view + rank(&view.name),
                name: Arc::from(view.name.as_str()),
                fixed_row_len: static_len(&def.typespace, &row_type),
                row_type,
            }
        });
        let tables = tables.into_iter().chain(views).collect();
        let reducers = def.reducers.iter().map(|r| (Arc::from(r.name.as_str()), r.params.clone())).collect();
        Self { typespace: def.typespace.clone(), tables, reducers, first_view }
    }
}

/// How a transaction ended, as its event reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxStatus {
    Committed,
    Failed(String),
    OutOfEnergy,
}

/// One transaction as clients are told of it; shared by every message about it.
#[derive(Debug)]
pub struct TxEvent {
    pub status: TxStatus,
    pub timestamp_micros: i64,
    pub caller: Caller,
    pub reducer_name: Arc<str>,
    /// `u32::MAX` when no reducer ran (a call refused before it started).
    pub reducer_id: u32,
    /// The arguments, BSATN.
    pub args: Vec<u8>,
    /// The calling client's request id (0 for calls not from a client).
    pub request_id: u32,
    pub duration_micros: i64,
    pub schema: Arc<WireSchema>,
    /// Encoded frames, shared by clients that receive the same bytes (the API layer fills it).
    pub frames: FrameCache,
    /// The arguments as a JSON caller wrote them (sent as is to JSON clients, as 1.3 does).
    pub json_args: Option<Arc<str>>,
}

/// Frames encoded once per transaction: keyed by the encoder's format code and the updates a
/// client receives (by address, stable while the event lives).
#[derive(Debug, Default)]
pub struct FrameCache(Mutex<HashMap<FrameKey, Arc<[u8]>>>);

/// An encoder's format code and the addresses of the updates a frame carries.
type FrameKey = (u8, Vec<usize>);

impl FrameCache {
    /// The frame for `key`, encoded by `encode` the first time it is asked for.
    pub fn get_or_encode(
        &self,
        format: u8,
        updates: &[Arc<QueryUpdate>],
        encode: impl FnOnce() -> Vec<u8>,
    ) -> Arc<[u8]> {
        let key = (format, updates.iter().map(|u| Arc::as_ptr(u) as usize).collect::<Vec<_>>());
        if let Some(f) = self.0.lock().get(&key) {
            return f.clone();
        }
        let frame: Arc<[u8]> = encode().into();
        self.0.lock().insert(key, frame.clone());
        frame
    }
}

/// Which subscription request rows answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowsReply {
    /// Legacy `Subscribe`: `InitialSubscription`.
    Initial,
    /// `SubscribeSingle`: `SubscribeApplied`.
    SubscribeApplied,
    /// `Unsubscribe`: `UnsubscribeApplied` (rows as deletes).
    UnsubscribeApplied,
    /// `SubscribeMulti`: `SubscribeMultiApplied`.
    SubscribeMultiApplied,
    /// `UnsubscribeMulti`: `UnsubscribeMultiApplied` (rows as deletes).
    UnsubscribeMultiApplied,
}

/// Rows of one query in a subscription reply.
#[derive(Debug)]
pub struct TableRows {
    /// Store table id.
    pub table: u32,
    /// The query's position in its request.
    pub query: usize,
    pub rows: RowBlock,
}

/// BSATN rows packed in one buffer: a subscription answer may carry a whole table, and one
/// copy into one allocation is far cheaper than an allocation per row.
#[derive(Debug, Default, Clone)]
pub struct RowBlock {
    data: Vec<u8>,
    /// Where each row starts in `data`.
    starts: Vec<usize>,
}

impl RowBlock {
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut block = Self::default();
        for r in rows {
            block.starts.push(block.data.len());
            block.data.extend_from_slice(r);
        }
        block
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The rows' bytes, end to end.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Each row.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + Clone + '_ {
        self.starts.iter().enumerate().map(move |(i, &start)| {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.data.len());
            &self.data[start..end]
        })
    }
}

/// Why a subscription request failed, by how 1.3 reports it.
enum RequestError {
    /// As a `SubscriptionError`.
    Subscription(String),
    /// As a failed transaction update (legacy `Subscribe`, a query id in use).
    Failed(String),
}

/// The answer to a one-off query.
#[derive(Debug)]
pub struct OneOffRows {
    pub table_name: String,
    pub row_type: ProductType,
    pub rows: Vec<AlgebraicValue>,
}

/// A message for one client, before encoding.
#[derive(Debug)]
pub enum Outgoing {
    /// A transaction, and this client's part of it (`updates` may be empty for its caller).
    Tx {
        event: Arc<TxEvent>,
        updates: Vec<Arc<QueryUpdate>>,
        to_caller: bool,
    },
    /// The rows a subscription request added (or an unsubscribe removed).
    Rows {
        kind: RowsReply,
        request_id: u32,
        query_id: u32,
        micros: u64,
        tables: Vec<TableRows>,
        schema: Arc<WireSchema>,
    },
    SubscriptionError {
        request_id: Option<u32>,
        query_id: Option<u32>,
        micros: u64,
        message: String,
    },
    OneOff {
        message_id: Vec<u8>,
        micros: u64,
        result: Result<OneOffRows, String>,
        schema: Arc<WireSchema>,
    },
    /// The database cut the client off (its subscriptions failed to evaluate); close with this.
    Close(String),
}

/// Messages wait here until the transactions they describe are durable, and leave in the order
/// they were queued.
pub struct Outbox {
    log: Option<Arc<CommitLog>>,
    queue: Mutex<VecDeque<Pending>>,
}

struct Pending {
    /// The log offset that must be durable first (`None`: only what was queued before).
    offset: Option<u64>,
    /// Each message with the size its sink admitted it with.
    batch: Vec<(Arc<dyn ClientSink>, Outgoing, usize)>,
}

impl Outbox {
    pub fn new(log: Option<Arc<CommitLog>>) -> Arc<Self> {
        Arc::new(Self { log, queue: Mutex::new(VecDeque::new()) })
    }

    /// Queues `batch` to go once offset `offset` (if any) and everything queued earlier is gone.
    /// Each message counts against its client's limits from now on (a slow fsync holds it here);
    /// one its sink refuses is dropped at once.
    pub fn push(self: &Arc<Self>, offset: Option<u64>, batch: Vec<(Arc<dyn ClientSink>, Outgoing)>) {
        let batch: Vec<_> =
            batch.into_iter().filter_map(|(sink, msg)| sink.admit(&msg).map(|size| (sink, msg, size))).collect();
        if batch.is_empty() {
            return;
        }
        {
            let mut q = self.queue.lock();
            // Checked in release builds too: out of order, a client would see a transaction
            // before one it depends on. The newest offset queued bounds all the others.
            let newest = q.iter().rev().find_map(|p| p.offset);
            assert!(
                offset.is_none_or(|o| newest.is_none_or(|n| n <= o)),
                "the outbox is fed in log order ({newest:?} queued before {offset:?})"
            );
            q.push_back(Pending { offset, batch });
        }
        match (&self.log, offset) {
            (Some(log), Some(o)) => {
                let me = self.clone();
                log.on_durable(o, move || me.release());
            }
            _ => self.release(),
        }
    }

    /// Hands over every message at the front whose transaction is durable. Sends happen under
    /// the lock, so two releases never reorder messages.
    fn release(&self) {
        let mut q = self.queue.lock();
        while let Some(front) = q.front() {
            if let (Some(o), Some(log)) = (front.offset, &self.log) {
                if !log.is_durable(o) {
                    break;
                }
            }
            let Some(p) = q.pop_front() else { break };
            for (sink, msg, size) in p.batch {
                sink.send(msg, size);
            }
        }
        // A long wait for the disk may have grown the queue: give its memory back once empty.
        if q.is_empty() && q.capacity() > OUTBOX_KEPT_CAPACITY {
            q.shrink_to(OUTBOX_KEPT_CAPACITY);
        }
    }
}

/// A subscription request's queries, as the client grouped them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SetKey {
    /// The legacy `Subscribe` set (one per client, replaced by each `Subscribe`).
    Legacy,
    /// A `SubscribeSingle` or `SubscribeMulti` query id.
    Query(u32),
}

struct Client {
    caller: Caller,
    is_owner: bool,
    sink: Arc<dyn ClientSink>,
    sets: BTreeMap<SetKey, Vec<Arc<str>>>,
}

impl Client {
    /// The client's rights for queries: the owner's or not, and its identity for `:sender`.
    fn query_context(&self) -> epoch_query::QueryContext {
        epoch_query::QueryContext { is_owner: self.is_owner, sender: Some(self.caller.identity), ..Default::default() }
    }
}

/// What the metrics report of a database's clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientStats {
    pub clients: usize,
    pub queries: usize,
    /// Transactions evaluated against subscriptions, and the time that took.
    pub evaluations: u64,
    pub eval_micros: u64,
    /// 2.x views materialized now (a view for one caller), and how many times views have run.
    pub views_kept: usize,
    pub view_runs: u64,
}

/// Every connected client of a database and its subscriptions.
pub struct Clients {
    evaluations: u64,
    eval_micros: u64,
    manager: Manager,
    /// Subscriptions to 2.x views.
    pub(crate) views: ViewSubs,
    /// The view instances the request being applied reads, by query text (trimmed), run by the database
    /// beforehand (running a view needs the module), or why they could not be.
    pub(crate) ready_views: HashMap<String, Result<ReadyView, String>>,
    clients: HashMap<ClientId, Client>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) schema: Arc<WireSchema>,
    pub(crate) limits: ClientLimits,
}

/// Why a client could not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("the database serves {0} clients already, the most it may")]
    TooManyClients(usize),
    #[error("client_connected failed: {0}")]
    Rejected(String),
}

/// A subscription request, as the protocol layer decoded it.
#[derive(Debug, Clone)]
pub enum SubscriptionRequest {
    /// Legacy `Subscribe`: replaces the client's legacy set.
    Legacy {
        request_id: u32,
        queries: Vec<String>,
    },
    Single {
        request_id: u32,
        query_id: u32,
        query: String,
    },
    Multi {
        request_id: u32,
        query_id: u32,
        queries: Vec<String>,
    },
    Unsubscribe {
        request_id: u32,
        query_id: u32,
    },
    UnsubscribeMulti {
        request_id: u32,
        query_id: u32,
    },
}

impl Clients {
    pub fn new(def: &ModuleDef, store: &Store, log: Option<Arc<CommitLog>>) -> Self {
        Self {
            evaluations: 0,
            eval_micros: 0,
            manager: Manager::default(),
            views: ViewSubs::default(),
            ready_views: HashMap::new(),
            clients: HashMap::new(),
            outbox: Outbox::new(log),
            schema: Arc::new(WireSchema::new(def, store)),
            limits: ClientLimits::default(),
        }
    }

    /// How many clients are connected, and how many distinct queries they hold.
    pub fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.manager.query_count())
    }

    pub fn stats(&self) -> ClientStats {
        ClientStats {
            clients: self.clients.len(),
            queries: self.manager.query_count() + self.views.len(),
            evaluations: self.evaluations,
            eval_micros: self.eval_micros,
            ..ClientStats::default()
        }
    }

    /// Every connected client: (identity, connection id), as `st_client` lists them.
    pub(crate) fn connected(&self) -> Vec<crate::client_journal::ClientKey> {
        self.clients.values().map(|c| (c.caller.identity, c.caller.connection_id)).collect()
    }

    /// Client `id`'s rights for queries.
    pub(crate) fn query_context(&self, id: ClientId) -> Option<epoch_query::QueryContext> {
        self.clients.get(&id).map(Client::query_context)
    }

    pub(crate) fn caller_of(&self, id: ClientId) -> Option<Caller> {
        self.clients.get(&id).map(|c| c.caller)
    }

    /// Whether client `id` is connected as the database's owner.
    pub(crate) fn is_owner(&self, id: ClientId) -> bool {
        self.clients.get(&id).is_some_and(|c| c.is_owner)
    }

    pub(crate) fn check_room(&self) -> Result<(), ConnectError> {
        if self.clients.len() >= self.limits.max_clients {
            return Err(ConnectError::TooManyClients(self.limits.max_clients));
        }
        Ok(())
    }

    pub(crate) fn add(&mut self, id: ClientId, caller: Caller, is_owner: bool, sink: Arc<dyn ClientSink>) {
        self.clients.insert(id, Client { caller, is_owner, sink, sets: BTreeMap::new() });
    }

    /// Forgets client `id` and its subscriptions; returns who it was.
    pub(crate) fn remove(&mut self, id: ClientId) -> Option<Caller> {
        self.manager.disconnect(id);
        self.views.disconnect(id);
        self.clients.remove(&id).map(|c| c.caller)
    }

    /// Every connected client (for disconnecting them all at shutdown).
    pub(crate) fn ids(&self) -> Vec<ClientId> {
        self.clients.keys().copied().collect()
    }

    /// Hands `msg` to client `id` behind everything queued before it.
    pub(crate) fn send_after(&self, id: ClientId, offset: Option<u64>, msg: Outgoing) {
        if let Some(c) = self.clients.get(&id) {
            self.outbox.push(offset, vec![(c.sink.clone(), msg)]);
        }
    }

    /// Applies a subscription request of client `id` against `store`; the answer goes out
    /// behind everything already queued (after `offset` is durable).
    pub(crate) fn request(
        &mut self,
        store: &Store,
        id: ClientId,
        req: SubscriptionRequest,
        offset: Option<u64>,
        started: std::time::Instant,
    ) {
        let Some(client) = self.clients.get(&id) else { return };
        let caller = client.caller;
        let ctx = client.query_context();
        let req = match refuse_event_tables(store, req, ctx) {
            Ok(req) => req,
            Err((request_id, query_id, e)) => {
                let micros = started.elapsed().as_micros() as u64;
                let (request_id, query_id) = (Some(request_id), Some(query_id));
                let msg = match e {
                    RequestError::Subscription(message) => {
                        Outgoing::SubscriptionError { request_id, query_id, micros, message }
                    }
                    RequestError::Failed(message) => Outgoing::Tx {
                        event: Arc::new(refused_event(&self.schema, caller, "<none>", message)),
                        updates: Vec::new(),
                        to_caller: true,
                    },
                };
                self.send_after(id, offset, msg);
                return;
            }
        };
        let (kind, request_id, query_id, reply) = match req {
            SubscriptionRequest::Legacy { request_id, queries } => {
                let queries = expand_all_tables(store, queries, ctx);
                (RowsReply::Initial, request_id, 0, self.replace_legacy(store, id, queries, ctx))
            }
            SubscriptionRequest::Single { request_id, query_id, query } => {
                let r = self.new_set(store, id, query_id, vec![query], ctx, false);
                (RowsReply::SubscribeApplied, request_id, query_id, r)
            }
            SubscriptionRequest::Multi { request_id, query_id, queries } => {
                let queries = expand_all_tables(store, queries, ctx);
                let r = self.new_set(store, id, query_id, queries, ctx, true);
                (RowsReply::SubscribeMultiApplied, request_id, query_id, r)
            }
            SubscriptionRequest::Unsubscribe { request_id, query_id } => {
                (RowsReply::UnsubscribeApplied, request_id, query_id, self.drop_set(store, id, query_id, false))
            }
            SubscriptionRequest::UnsubscribeMulti { request_id, query_id } => {
                (RowsReply::UnsubscribeMultiApplied, request_id, query_id, self.drop_set(store, id, query_id, true))
            }
        };
        let micros = started.elapsed().as_micros() as u64;
        let schema = self.schema.clone();
        let msg = match reply {
            Ok(tables) => Outgoing::Rows { kind, request_id, query_id, micros, tables, schema },
            // 1.3 reports these as a failed transaction of no reducer.
            Err(RequestError::Failed(message)) => Outgoing::Tx {
                event: Arc::new(refused_event(&schema, caller, "<none>", message)),
                updates: Vec::new(),
                to_caller: true,
            },
            Err(RequestError::Subscription(message)) => {
                Outgoing::SubscriptionError { request_id: Some(request_id), query_id: Some(query_id), micros, message }
            }
        };
        self.send_after(id, offset, msg);
    }

    /// Legacy `Subscribe`: the new set replaces the old one whole, or nothing changes.
    fn replace_legacy(
        &mut self,
        store: &Store,
        id: ClientId,
        queries: Vec<String>,
        ctx: epoch_query::QueryContext,
    ) -> Result<Vec<TableRows>, RequestError> {
        let old = self.clients.get_mut(&id).and_then(|c| c.sets.remove(&SetKey::Legacy)).unwrap_or_default();
        // Old view queries are let go only once the new set holds (they cannot be put back).
        let (old_views, old_tables): (Vec<_>, Vec<_>) = old.iter().partition(|q| self.views.holds(id, q));
        for q in &old_tables {
            self.manager.unsubscribe(id, q, ctx);
        }
        match self.subscribe_all(store, id, &queries, ctx, true) {
            Ok(tables) => {
                for q in old_views {
                    self.views.unsubscribe(id, q);
                }
                self.set(id, SetKey::Legacy, queries);
                Ok(tables)
            }
            Err(message) => {
                for q in &old_tables {
                    // Held before this request: put back whatever they cost.
                    let _ = self.manager.subscribe(store, id, q, ctx, &mut EvalBudget::unlimited());
                }
                if let Some(c) = self.clients.get_mut(&id) {
                    c.sets.insert(SetKey::Legacy, old);
                }
                Err(RequestError::Failed(message))
            }
        }
    }

    fn set(&mut self, id: ClientId, key: SetKey, queries: Vec<String>) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.sets.insert(key, queries.into_iter().map(Arc::from).collect());
        }
    }

    /// Subscribes a new query id; refused if the id is in use or a query fails. `multi`: as
    /// `SubscribeMulti` (duplicates dropped, rows only for queries the client did not hold).
    fn new_set(
        &mut self,
        store: &Store,
        id: ClientId,
        query_id: u32,
        mut queries: Vec<String>,
        ctx: epoch_query::QueryContext,
        multi: bool,
    ) -> Result<Vec<TableRows>, RequestError> {
        let client = self.clients.get(&id).ok_or_else(|| RequestError::Subscription("Client not found".into()))?;
        if client.sets.contains_key(&SetKey::Query(query_id)) {
            let (i, c) = (client.caller.identity.to_hex(), le_bytes_hex(&client.caller.connection_id));
            return Err(RequestError::Failed(format!(
                "Subscription with id QueryId {{ id: {query_id} }} already exists for client: (Identity({i}), ConnectionId({c}))"
            )));
        }
        if client.sets.len() >= self.limits.max_subscriptions {
            return Err(RequestError::Subscription(format!(
                "A connection may hold at most {} subscriptions; unsubscribe from some first",
                self.limits.max_subscriptions
            )));
        }
        if multi {
            let mut seen = std::collections::HashSet::new();
            queries = queries.into_iter().map(|q| q.trim().to_string()).filter(|q| seen.insert(q.clone())).collect();
        }
        let held: Vec<bool> =
            queries.iter().map(|q| multi && (self.manager.holds(id, q, ctx) || self.views.holds(id, q))).collect();
        let mut tables = self.subscribe_all(store, id, &queries, ctx, multi).map_err(RequestError::Subscription)?;
        if multi {
            // Rows of queries the client held already are on its side.
            tables.retain(|t| !held.get(t.query).copied().unwrap_or(false));
        }
        self.set(id, SetKey::Query(query_id), queries);
        Ok(tables)
    }

    /// Subscribes every query (all or none) and returns their initial rows, one entry per
    /// query; `skip_empty`: none for a query over an empty table (as 1.3's multi-query answers).
    fn subscribe_all(
        &mut self,
        store: &Store,
        id: ClientId,
        queries: &[String],
        ctx: epoch_query::QueryContext,
        skip_empty: bool,
    ) -> Result<Vec<TableRows>, String> {
        let mut tables: Vec<TableRows> = Vec::new();
        // One budget for the whole request: its queries together may hold the writer only so
        // long, and return at most `max_initial_rows` rows.
        let mut budget = EvalBudget::with_row_limit(self.limits.max_initial_rows);
        for (i, q) in queries.iter().enumerate() {
            if let Some(ready) = self.ready_views.get(q.trim()).cloned() {
                let view = match ready {
                    Ok(view) => view,
                    Err(message) => {
                        self.undo(id, &queries[..i], ctx);
                        return Err(message);
                    }
                };
                let table = self.schema.first_view + view.key.0 as u32;
                let rows = self.views.subscribe(id, q, view.key, view.rows, view.reads);
                if !skip_empty || !rows.is_empty() {
                    tables.push(TableRows { table, query: i, rows: RowBlock::from_rows(rows.iter().map(|r| &r[..])) });
                }
                continue;
            }
            let (table, rows) = match self.manager.subscribe(store, id, q, ctx, &mut budget) {
                Ok(r) => r,
                Err(e) => {
                    self.undo(id, &queries[..i], ctx);
                    return Err(subscribe_error(q, e));
                }
            };
            if !skip_empty || store.table(table).is_ok_and(|t| !t.is_empty()) {
                tables.push(TableRows { table, query: i, rows: RowBlock::from_rows(rows) });
            }
        }
        Ok(tables)
    }

    fn undo(&mut self, id: ClientId, queries: &[String], ctx: epoch_query::QueryContext) {
        for q in queries {
            if self.ready_views.contains_key(q.trim()) {
                self.views.unsubscribe(id, q);
            } else {
                self.manager.unsubscribe(id, q, ctx);
            }
        }
    }

    /// Ends query id `query_id`; its rows are what the client must now remove. `multi`: as
    /// `UnsubscribeMulti` (rows only of queries the client holds no more, none of empty tables).
    fn drop_set(
        &mut self,
        store: &Store,
        id: ClientId,
        query_id: u32,
        multi: bool,
    ) -> Result<Vec<TableRows>, RequestError> {
        let client = self.clients.get_mut(&id).ok_or_else(|| RequestError::Subscription("Client not found".into()))?;
        let ctx = client.query_context();
        let Some(queries) = client.sets.remove(&SetKey::Query(query_id)) else {
            let (i, c) = (client.caller.identity.to_hex(), le_bytes_hex(&client.caller.connection_id));
            return Err(RequestError::Subscription(format!(
                "Subscription not found: ((Identity({i}), ConnectionId({c})), QueryId {{ id: {query_id} }})"
            )));
        };
        let mut tables: Vec<TableRows> = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            if let Some((key, rows)) = self.views.current(id, q) {
                self.views.unsubscribe(id, q);
                if multi && (self.views.holds(id, q) || rows.is_empty()) {
                    continue;
                }
                let table = self.schema.first_view + key.0 as u32;
                tables.push(TableRows { table, query: i, rows: RowBlock::from_rows(rows.iter().map(|r| &r[..])) });
                continue;
            }
            let current = self.manager.current_rows(store, q, ctx);
            self.manager.unsubscribe(id, q, ctx);
            let Ok((table, rows)) = current else { continue };
            if multi && (self.manager.holds(id, q, ctx) || rows.is_empty()) {
                continue;
            }
            tables.push(TableRows { table, query: i, rows: RowBlock::from_rows(rows) });
        }
        Ok(tables)
    }

    /// Sends `event` (a committed transaction whose changes are `delta`, or a failed one with
    /// none) to its caller and to every client whose queries it changed, once `offset` is
    /// durable. `caller` is the calling client and whether it asked to hear of success.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn broadcast(
        &mut self,
        store: &Store,
        delta: &TxDelta,
        view_updates: Vec<(ClientId, Arc<QueryUpdate>)>,
        event: TxEvent,
        caller: Option<(ClientId, bool)>,
        offset: Option<u64>,
    ) {
        let committed = event.status == TxStatus::Committed;
        let mut per_client = if committed && !delta.is_empty() && self.manager.query_count() > 0 {
            let started = std::time::Instant::now();
            let evaluated = self.manager.evaluate(store, delta);
            self.evaluations += 1;
            self.eval_micros += started.elapsed().as_micros() as u64;
            match evaluated {
                Ok(u) => u,
                Err(e) => {
                    self.fail_everyone(format!("Internal error evaluating queries: {e}"), offset);
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        for (client, update) in view_updates {
            per_client.entry(client).or_default().push(update);
        }
        let event = Arc::new(event);
        let mut batch: Vec<(Arc<dyn ClientSink>, Outgoing)> = Vec::with_capacity(per_client.len() + 1);
        if let Some((cid, notify)) = caller {
            // The caller hears of its success even when nothing it watches changed, unless it sent
            // NoSuccessNotify (then it hears only through its queries, as any subscriber).
            if notify {
                if let Some(c) = self.clients.get(&cid) {
                    let updates = per_client.remove(&cid).unwrap_or_default();
                    batch.push((c.sink.clone(), Outgoing::Tx { event: event.clone(), updates, to_caller: true }));
                }
            }
        }
        for (cid, updates) in per_client {
            if let Some(c) = self.clients.get(&cid) {
                batch.push((c.sink.clone(), Outgoing::Tx { event: event.clone(), updates, to_caller: false }));
            }
        }
        self.outbox.push(offset, batch);
    }

    /// Evaluating subscriptions failed: every subscribed client is told and cut off, as 1.3
    /// drops them.
    fn fail_everyone(&mut self, message: String, offset: Option<u64>) {
        let ids: Vec<ClientId> = self.clients.iter().filter(|(_, c)| !c.sets.is_empty()).map(|(id, _)| *id).collect();
        let mut batch: Vec<(Arc<dyn ClientSink>, Outgoing)> = Vec::new();
        for id in ids {
            self.manager.disconnect(id);
            self.views.disconnect(id);
            if let Some(c) = self.clients.get_mut(&id) {
                c.sets.clear();
                let err = Outgoing::SubscriptionError {
                    request_id: None,
                    query_id: None,
                    micros: 0,
                    message: message.clone(),
                };
                batch.push((c.sink.clone(), err));
                batch.push((c.sink.clone(), Outgoing::Close(message.clone())));
            }
        }
        self.outbox.push(offset, batch);
    }

    /// The module changed: encoders use its new tables and reducers from now on, and every
    /// subscription ends (its compiled plan belongs to the old module): each subscribed client
    /// is told, and may subscribe again.
    pub(crate) fn module_updated(&mut self, def: &ModuleDef, store: &Store) {
        self.schema = Arc::new(WireSchema::new(def, store));
        let message = "The module was updated: its subscriptions ended; subscribe again".to_string();
        let mut batch: Vec<(Arc<dyn ClientSink>, Outgoing)> = Vec::new();
        for (id, c) in self.clients.iter_mut() {
            if c.sets.is_empty() {
                continue;
            }
            c.sets.clear();
            self.manager.disconnect(*id);
            self.views.disconnect(*id);
            let err =
                Outgoing::SubscriptionError { request_id: None, query_id: None, micros: 0, message: message.clone() };
            batch.push((c.sink.clone(), err));
        }
        self.outbox.push(None, batch);
    }
}

/// 1.3's wording for a query it cannot subscribe to.
/// What 2.x tells a client of protocol v1 that subscribes to an event table: its rows would
/// pile up in a v1 client's cache, so only v2 clients may.
pub const EVENT_TABLE_NEEDS_V2: &str = "Subscribing to event tables requires WebSocket v2. \
     Please upgrade your client SDK and regenerate your module bindings.";

/// Refuses a request (every client speaks protocol v1 here) naming an event table, as 2.x does.
fn refuse_event_tables(
    store: &Store,
    req: SubscriptionRequest,
    ctx: epoch_query::QueryContext,
) -> Result<SubscriptionRequest, (u32, u32, RequestError)> {
    let (queries, request_id, query_id, legacy): (Vec<&String>, u32, u32, bool) = match &req {
        SubscriptionRequest::Legacy { request_id, queries } => (queries.iter().collect(), *request_id, 0, true),
        SubscriptionRequest::Single { request_id, query_id, query } => (vec![query], *request_id, *query_id, false),
        SubscriptionRequest::Multi { request_id, query_id, queries } => {
            (queries.iter().collect(), *request_id, *query_id, false)
        }
        _ => return Ok(req),
    };
    let event = queries.iter().any(|q| {
        epoch_query::single_table_read(q, ctx)
            .and_then(|t| store.table_by_name(&t).map(|t| t.schema.def.is_event))
            .unwrap_or(false)
    });
    if !event {
        return Ok(req);
    }
    let message = EVENT_TABLE_NEEDS_V2.to_string();
    let e = if legacy { RequestError::Failed(message) } else { RequestError::Subscription(message) };
    Err((request_id, query_id, e))
}

/// `Subscribe` and `SubscribeMulti` accept 1.3's `SELECT * FROM *`: it stands for one query per
/// table the caller may read, placed before the request's other queries (as 1.3 orders them).
/// `SubscribeSingle` does not (1.3 refuses it there as SQL it cannot parse).
fn expand_all_tables(store: &Store, queries: Vec<String>, ctx: epoch_query::QueryContext) -> Vec<String> {
    if !queries.iter().any(|q| epoch_query::is_all_tables(q)) {
        return queries;
    }
    let mut expanded = epoch_query::all_tables_queries(store, ctx);
    expanded.extend(queries.into_iter().filter(|q| !epoch_query::is_all_tables(q)));
    expanded
}

fn subscribe_error(query: &str, e: SubscribeError) -> String {
    match e {
        SubscribeError::Sql(e) => format!("{e}, executing: `{query}`"),
        e => e.to_string(),
    }
}

/// A call refused before any reducer ran, as 1.3 reports it to the caller.
pub fn refused_event(schema: &Arc<WireSchema>, caller: Caller, reducer: &str, message: String) -> TxEvent {
    TxEvent {
        status: TxStatus::Failed(message),
        timestamp_micros: crate::clock::now_micros(),
        caller,
        reducer_id: schema.reducers.iter().position(|(n, _)| &**n == reducer).map_or(u32::MAX, |i| i as u32),
        reducer_name: Arc::from(reducer),
        args: Vec::new(),
        request_id: 0,
        duration_micros: 0,
        schema: schema.clone(),
        frames: FrameCache::default(),
        json_args: None,
    }
}

/// The BSATN length of every value of `ty` when 1.3 treats it as fixed (its static layout):
/// primitives and products of them, and sums whose variants all have one primitive layout.
pub fn static_len(ts: &Typespace, ty: &AlgebraicType) -> Option<usize> {
    fn go(ts: &Typespace, ty: &AlgebraicType, depth: u32) -> Option<usize> {
        if depth > 64 {
            return None;
        }
        match ty {
            AlgebraicType::Product(p) => p.elements.iter().map(|e| go(ts, &e.ty, depth + 1)).sum(),
            AlgebraicType::Ref(r) => go(ts, ts.types.get(*r as usize)?, depth + 1),
            AlgebraicType::Sum(s) => {
                let first = s.variants.first()?;
                let layout = |t: &AlgebraicType| -> Option<(bool, usize)> {
                    let resolved = ts.resolve(t)?;
                    match resolved {
                        AlgebraicType::Product(p) if p.elements.is_empty() => Some((false, 0)),
                        AlgebraicType::Product(_) | AlgebraicType::Sum(_) => None,
                        other => Some((true, other.fixed_bsatn_len(ts)?)),
                    }
                };
                let l = layout(&first.ty)?;
                s.variants.iter().all(|v| layout(&v.ty) == Some(l)).then_some(1 + l.1)
            }
            other => other.fixed_bsatn_len(ts),
        }
    }
    go(ts, ty, 0)
}
