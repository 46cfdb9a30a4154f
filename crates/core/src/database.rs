//! One database: a module host and its tables, with lifecycle reducers, argument decoding and
//! scheduled reducers. Owned by exactly one writer (see [`crate::executor`]).

use std::collections::VecDeque;

use epoch_host::{CallContext, HostConfig, HostError, ModuleHost, ReducerOutcome, ReducerResult};
use epoch_sats::{bsatn, json, AlgebraicType, AlgebraicValue, Identity};
use epoch_schema::{Lifecycle, ModuleDef};
use epoch_store::TxDelta;

pub use crate::caller::Caller;
use crate::clients::{ClientId, ClientSink, Clients, ConnectError, FrameCache, SubscriptionRequest, TxEvent, TxStatus};
pub use crate::clock::now_micros;
use crate::migrate_policy::MigrationPolicy;
use crate::persist::{LoggedTx, PersistConfig, PersistError, Persistence, RecoveryReport};
use crate::scheduler::Scheduler;
use crate::steps::StepLedger;
use epoch_commitlog::WorkflowStep;

/// Reducer arguments as a client sends them.
#[derive(Debug, Clone)]
pub enum ReducerArgs {
    /// SATS-JSON: an array of the arguments in order, or an object by parameter name.
    Json(String),
    /// BSATN of the parameter product.
    Bsatn(Vec<u8>),
}

/// Why a reducer could not be called at all (as opposed to failing once called).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no such reducer `{0}`")]
    NoSuchReducer(String),
    #[error("invalid arguments for reducer {reducer}: {message}")]
    InvalidArguments { reducer: String, message: String },
    #[error("lifecycle reducer `{0}` cannot be called directly")]
    LifecycleReducer(String),
    /// The database cannot make changes durable now (its disk is full): nothing was run.
    #[error("the database cannot write now, so the call was refused and nothing changed: {0}")]
    StorageUnavailable(String),
}

/// Why a database could not be created from a module.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the module's init reducer failed: {0}")]
    InitFailed(String),
    /// A row-level security filter does not compile against the module's tables.
    #[error("invalid row-level security filter: {0}")]
    InvalidFilter(String),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("preparing {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

/// Why a module update was not applied.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Host(#[from] HostError),
    /// Refused by the migration planner: the reasons, in 1.3's words and layout.
    #[error("Database update rejected: Errors occurred:\n{0}")]
    Rejected(String),
    /// Planned, but failed while applied (a precheck, a schedule change): nothing changed.
    #[error("Failed to create or update the database: {0}")]
    Failed(String),
}

impl UpdateError {
    /// The planner's reasons, each followed by a blank line as 1.3 prints them.
    fn rejected(errors: Vec<String>) -> Self {
        Self::Rejected(errors.iter().map(|e| format!("{e}\n\n")).collect())
    }
}

/// The file holding a durable database's `SET row_limit`.
const ROW_LIMIT_FILE: &str = "row-limit";

fn read_row_limit(dir: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(ROW_LIMIT_FILE)).ok()?.trim().parse().ok()
}

/// The file listing a durable database's tables by id, once a module update has added tables.
const TABLE_ORDER_FILE: &str = "table-order";

/// Writes the tables' names by id, durably.
fn write_table_order(dir: &std::path::Path, order: &[String]) -> std::io::Result<()> {
    let text: String = order.iter().map(|n| format!("{n}\n")).collect();
    crate::atomic_file::write_atomically(&dir.join(TABLE_ORDER_FILE), text.as_bytes())
}

/// The file listing a durable database's row-level security filters in the order
/// `st_row_level_security` shows them, once a module update has changed them (JSON strings, one
/// a line: a filter's SQL may hold any character).
const FILTER_ORDER_FILE: &str = "filter-order";

/// Writes the filters in `st_row_level_security`'s order, durably.
fn write_filter_order(dir: &std::path::Path, order: &[String]) -> std::io::Result<()> {
    let text: String = order.iter().map(|n| format!("{}\n", serde_json::Value::from(n.as_str()))).collect();
    crate::atomic_file::write_atomically(&dir.join(FILTER_ORDER_FILE), text.as_bytes())
}

/// The filters in the order the last module update left them, if one did.
fn read_filter_order(dir: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(FILTER_ORDER_FILE)).ok()?;
    text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).ok()).collect()
}

/// The tables' names by id as the last module update left them, if one added tables.
fn read_table_order(dir: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(TABLE_ORDER_FILE)).ok()?;
    Some(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// Every row of every table, as if just inserted (to rebuild the schedule).
fn all_rows(store: &epoch_store::Store) -> TxDelta {
    TxDelta {
        tables: store
            .tables()
            .iter()
            .map(|t| epoch_store::TableDelta {
                table_id: t.id,
                inserts: t.iter().map(|(_, r)| Box::<[u8]>::from(r)).collect(),
                deletes: Vec::new(),
            })
            .collect(),
    }
}

/// A call from a connected client: who hears of its outcome, and under which request id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCall {
    pub client: ClientId,
    pub request_id: u32,
    /// Whether the client wants to hear of a success even when none of its queries changed
    /// (1.3's `FullUpdate` flag; `NoSuccessNotify` clears it).
    pub notify_success: bool,
    /// The arguments as the client wrote them in JSON, echoed to JSON clients as 1.3 does.
    pub json_args: Option<std::sync::Arc<str>>,
}

/// A committed transaction on its way through [`Database::on_commit`].
struct Commit {
    by: By,
    /// Who asked for it.
    caller: Caller,
    /// Its arguments, BSATN (empty for system transactions).
    args: Vec<u8>,
    /// The workflow item it applied, if any.
    step: Option<WorkflowStep>,
    /// How long the reducer ran.
    duration: std::time::Duration,
    /// The connected client that called it, if any.
    from: Option<ClientCall>,
}

impl Commit {
    fn system(name: &'static str, caller: Identity, args: Vec<u8>, step: Option<WorkflowStep>) -> Self {
        Self {
            by: By::System(name),
            caller: Caller::identity(caller),
            args,
            step,
            duration: std::time::Duration::ZERO,
            from: None,
        }
    }
}

/// What made a transaction.
enum By {
    /// A module reducer, by id.
    Reducer(usize),
    /// The server itself: `__sql__`, `__scheduler__`, `__workflow_step__`.
    System(&'static str),
}

/// Adds `later`'s changes to `delta`: a row inserted then deleted (or deleted then inserted
/// again) cancels out.
fn merge_delta(delta: &mut TxDelta, later: TxDelta) {
    for t in later.tables {
        let Some(into) = delta.tables.iter_mut().find(|d| d.table_id == t.table_id) else {
            delta.tables.push(t);
            continue;
        };
        for row in t.deletes {
            match into.inserts.iter().position(|r| *r == row) {
                Some(i) => {
                    into.inserts.swap_remove(i);
                }
                None => into.deletes.push(row),
            }
        }
        for row in t.inserts {
            match into.deletes.iter().position(|r| *r == row) {
                Some(i) => {
                    into.deletes.swap_remove(i);
                }
                None => into.inserts.push(row),
            }
        }
    }
}

/// The name of lifecycle reducer `name`'s kind, as 1.3's messages give it.
fn lifecycle_name(def: &ModuleDef, name: &str) -> &'static str {
    match def.reducers.iter().find(|r| r.name == name).and_then(|r| r.lifecycle) {
        Some(Lifecycle::Init) => "init",
        Some(Lifecycle::OnConnect) => "client_connected",
        Some(Lifecycle::OnDisconnect) => "client_disconnected",
        None => "unknown",
    }
}

/// Where a durable database keeps its compiled module between starts.
pub fn compiled_cache_path(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("module.cwasm")
}

/// A database: one module, its tables, and its schedules.
pub struct Database {
    host: ModuleHost,
    identity: Identity,
    scheduler: Scheduler,
    /// Reducers queued by `volatile_nonatomic_schedule_immediate`, run after the current call.
    immediate: VecDeque<(String, Vec<u8>)>,
    /// Scheduled procedures (2.x) that fell due, with their rows: started off the writer.
    due_procedures: Vec<(String, Vec<u8>)>,
    /// The commitlog and snapshots, for a durable database.
    persist: Option<Persistence>,
    /// Workflow items applied in each instance's latest batch.
    steps: StepLedger,
    /// Connected clients and their subscriptions.
    clients: Clients,
    /// While set, committed transactions are told to clients together, as one (a scheduled
    /// reducer and the removal of its one-shot row, which 1.3 commits as one transaction).
    deferred: Option<Vec<Deferred>>,
    /// The module's wasm, as `st_module` shows it.
    program: std::sync::Arc<[u8]>,
    /// `SET row_limit = N` (1.3's `st_var`), kept in the database's directory when durable.
    row_limit: Option<u64>,
    /// 2.x views' rows, kept until a transaction changes what they read.
    views: crate::views::Views,
}

/// The log line of a call of a function that does not exist (or that the caller may not see).
pub(crate) fn nonexistent_line(kind: &str, name: &str) -> String {
    format!("External attempt to call nonexistent {kind} {name:?} failed. Have you run `spacetime generate` recently?")
}

/// The log line of a call whose arguments do not fit the function's parameters.
pub(crate) fn invalid_arguments_line(kind: &str, name: &str) -> String {
    format!(
        "External attempt to call {kind} {name:?} failed, invalid arguments.\n\
         This is likely due to a mismatched client schema, have you run `spacetime generate` recently?"
    )
}

/// What a line the server writes to a module's log is about.
enum ServerLine<'a> {
    /// The database itself (creation, updates).
    System,
    /// A failed call of this function from outside.
    External(&'a str),
    /// How a call of this function ended (its error).
    Outcome(&'a str),
}

/// A committed transaction held back to be told to clients with the next ones.
struct Deferred {
    event: TxEvent,
    delta: TxDelta,
    caller: Option<(ClientId, bool)>,
    offset: Option<u64>,
}

impl Database {
    /// Loads `wasm` as a new database with identity `identity`, and runs the module's `init`
    /// reducer (if any) with `owner` as the caller, as a first publish does.
    pub fn create(wasm: &[u8], identity: Identity, owner: Caller, config: HostConfig) -> Result<Self, CreateError> {
        let host = ModuleHost::load(wasm, identity, config)?;
        epoch_query::check_filters(host.db()).map_err(CreateError::InvalidFilter)?;
        let mut db = Self::from_host(host, identity);
        db.program = std::sync::Arc::from(wasm);
        db.initialize(owner)?;
        Ok(db)
    }

    fn from_host(host: ModuleHost, identity: Identity) -> Self {
        let scheduler = Scheduler::new(host.def(), host.db());
        let clients = Clients::new(host.def(), host.db(), None);
        Self {
            host,
            identity,
            scheduler,
            immediate: VecDeque::new(),
            due_procedures: Vec::new(),
            persist: None,
            steps: StepLedger::default(),
            clients,
            deferred: None,
            program: std::sync::Arc::from(&[][..]),
            row_limit: None,
            views: Default::default(),
        }
    }

    /// Like [`Database::create`], keeping the data durably in `dir` (emptied first): every
    /// committed transaction, `init`'s included, goes to the commitlog.
    pub fn create_persistent(
        wasm: &[u8],
        identity: Identity,
        owner: Caller,
        config: HostConfig,
        dir: &std::path::Path,
        persist: PersistConfig,
    ) -> Result<Self, CreateError> {
        let cache = compiled_cache_path(dir);
        let host = ModuleHost::load(wasm, identity, HostConfig { compiled_cache: None, ..config })?;
        // Checked before the directory is touched: a bad filter leaves nothing behind.
        epoch_query::check_filters(host.db()).map_err(CreateError::InvalidFilter)?;
        let io = |source| CreateError::Io { path: dir.to_path_buf(), source };
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        host.save_compiled(&cache, wasm);
        let mut db = Self::from_host(host, identity);
        db.program = std::sync::Arc::from(wasm);
        let (p, _) = Persistence::open(dir, persist, db.host.db_mut(), &mut db.steps)?;
        db.clients = Clients::new(db.host.def(), db.host.db(), Some(p.log().clone()));
        db.persist = Some(p);
        db.initialize(owner)?;
        Ok(db)
    }

    /// Reopens a durable database from `dir`: the newest valid snapshot, then the log after it.
    /// `init` does not run; schedules resume from the scheduled tables' rows.
    pub fn open_persistent(
        wasm: &[u8],
        identity: Identity,
        config: HostConfig,
        dir: &std::path::Path,
        persist: PersistConfig,
    ) -> Result<(Self, RecoveryReport), CreateError> {
        let config = HostConfig { compiled_cache: Some(compiled_cache_path(dir)), ..config };
        let mut host = ModuleHost::load(wasm, identity, config)?;
        if let Some(order) = read_table_order(dir) {
            // Tables keep the ids they had when the log was written.
            let store = epoch_store::Store::with_order(host.def(), &order).map_err(|message| {
                CreateError::Persist(PersistError::Recovery { path: dir.join(TABLE_ORDER_FILE), message })
            })?;
            host.replace_db(store);
        }
        if let Some(order) = read_filter_order(dir) {
            let db = host.db_mut();
            db.row_level_security = crate::migrate::filter_order(&order, &db.row_level_security);
        }
        let mut steps = StepLedger::default();
        let (p, report) = Persistence::open(dir, persist, host.db_mut(), &mut steps)?;
        let mut scheduler = Scheduler::new(host.def(), host.db());
        scheduler.observe(host.db(), &all_rows(host.db()), now_micros());
        let clients = Clients::new(host.def(), host.db(), Some(p.log().clone()));
        let mut db = Self {
            host,
            identity,
            scheduler,
            immediate: VecDeque::new(),
            due_procedures: Vec::new(),
            persist: Some(p),
            steps,
            clients,
            deferred: None,
            program: std::sync::Arc::from(wasm),
            row_limit: read_row_limit(dir),
            views: Default::default(),
        };
        db.disconnect_stale_clients();
        Ok((db, report))
    }

    /// Writes a snapshot now (durable databases; a no-op otherwise).
    pub fn snapshot_now(&mut self) -> Result<(), epoch_commitlog::SnapshotError> {
        match self.persist.as_mut() {
            Some(p) => p.snapshot_now(self.host.db(), &self.steps),
            None => Ok(()),
        }
    }

    /// Why this database cannot make changes durable now (its log cannot write: a full disk),
    /// if so. Reducer calls are refused meanwhile; they succeed again once the log writes.
    pub fn storage_failure(&self) -> Option<String> {
        self.persist.as_ref().and_then(|p| p.log().failure())
    }

    /// A durable database's commitlog (for archiving).
    pub fn commit_log(&self) -> Option<std::sync::Arc<epoch_commitlog::CommitLog>> {
        self.persist.as_ref().map(|p| p.log().clone())
    }

    /// Where a durable database's transactions are acknowledged from: the log and the offset of
    /// the last transaction handed to it.
    pub fn durable_barrier(&self) -> Option<(std::sync::Arc<epoch_commitlog::CommitLog>, u64)> {
        let p = self.persist.as_ref()?;
        Some((p.log().clone(), p.last_offset()?))
    }

    /// The lines a new database's log opens with, as its version writes them: 1.3 names each
    /// table in the module's order; 2.x each table by name, then each view and filter.
    fn creation_lines(def: &ModuleDef) -> Vec<String> {
        if def.version != epoch_schema::DefVersion::V10 {
            return def.tables.iter().map(|t| format!("Creating table `{}`", t.name)).collect();
        }
        let mut tables: Vec<&str> = def.tables.iter().map(|t| t.name.as_str()).collect();
        tables.sort_unstable();
        let mut views: Vec<&str> = def.views.iter().map(|v| v.name.as_str()).collect();
        views.sort_unstable();
        let tables = tables.into_iter().map(|t| format!("Creating table `{t}`"));
        let views = views.into_iter().map(|v| format!("Creating table for view `{v}`"));
        let filters = def.row_level_security.iter().map(|f| format!("Creating row level security `{f}`"));
        tables.chain(views).chain(filters).collect()
    }

    /// Runs `init` (if any) as `owner`, with the system log lines 1.3 (or 2.x) writes at
    /// creation.
    fn initialize(&mut self, owner: Caller) -> Result<(), CreateError> {
        let db = self;
        for line in Self::creation_lines(db.host.def()) {
            db.system_log(line);
        }
        if let Some(init) = db.host.def().lifecycle_reducer(Lifecycle::Init) {
            db.system_log("Invoking `init` reducer".to_string());
            let params = db.host.def().reducers[init].params.clone();
            // `init` takes no arguments beyond the context in 1.3 modules; pass an empty product.
            let args = if params.elements.is_empty() {
                Vec::new()
            } else {
                return Err(CreateError::InitFailed("init must take no arguments".into()));
            };
            let r = db.run(init, args, owner, now_micros(), None, None);
            if let Some(msg) = r.outcome.error_message() {
                return Err(CreateError::InitFailed(msg));
            }
        }
        db.system_log("Database initialized".to_string());
        Ok(())
    }

    /// Writes a line to the module log on the server's behalf, about `function` if it names
    /// one (the log's edge renders it as the database's version writes such lines).
    fn server_log(&self, level: epoch_host::LogLevel, line: ServerLine<'_>, message: String) {
        let (target, filename, function) = match line {
            ServerLine::System => (None, Some("spacetimedb"), None),
            ServerLine::External(function) => (None, Some("external"), Some(function)),
            ServerLine::Outcome(function) => (Some(function.to_string()), None, Some(function)),
        };
        self.host.logs().push(epoch_host::LogRecord {
            level,
            ts_micros: now_micros(),
            target,
            filename: filename.map(str::to_string),
            line_number: None,
            message,
            trace: None,
            function: function.map(str::to_string),
            system: true,
        });
    }

    /// 2.x's `/call` looks for a reducer first and logs that none has the name before it runs
    /// the procedure of that name; this writes that line.
    pub fn log_call_fallback(&self, name: &str) {
        self.external_error(name, nonexistent_line("reducer", name));
    }

    /// A failed outside call of `function`, logged as 1.3 logs it (so module authors see bad
    /// clients).
    pub(crate) fn external_error(&self, function: &str, message: String) {
        self.server_log(epoch_host::LogLevel::Error, ServerLine::External(function), message);
    }

    /// A line in the module log written by the server itself, as 1.3 writes them.
    fn system_log(&self, message: String) {
        self.server_log(epoch_host::LogLevel::Info, ServerLine::System, message);
    }

    pub fn def(&self) -> &ModuleDef {
        self.host.def()
    }

    pub fn identity(&self) -> Identity {
        self.identity
    }

    pub fn host(&self) -> &ModuleHost {
        &self.host
    }

    pub fn store(&self) -> &epoch_store::Store {
        self.host.db()
    }

    pub fn logs(&self) -> &epoch_host::ModuleLogs {
        self.host.logs()
    }

    /// Decodes client arguments for reducer `reducer_id` into BSATN, checking them against its
    /// parameter types.
    pub fn encode_args(&self, reducer_id: usize, args: &ReducerArgs) -> Result<Vec<u8>, CallError> {
        let reducer = &self.host.def().reducers[reducer_id];
        self.encode_function_args(&reducer.name, &reducer.params, args)
    }

    /// Decodes client arguments for the function (reducer or procedure) `name` with parameters
    /// `params` into BSATN, checking them against their types.
    pub(crate) fn encode_function_args(
        &self,
        name: &str,
        params: &epoch_sats::ProductType,
        args: &ReducerArgs,
    ) -> Result<Vec<u8>, CallError> {
        let def = self.host.def();
        let ty = AlgebraicType::Product(params.clone());
        let invalid = |message: String| CallError::InvalidArguments { reducer: name.to_string(), message };
        match args {
            ReducerArgs::Json(text) => {
                let v = json::reducer_args_from_str(&def.typespace, name, params, text).map_err(|message| {
                    // 2.x names the function again after the first step of the path.
                    if def.version != epoch_schema::DefVersion::V10 {
                        return invalid(message);
                    }
                    let first = message.split(": ").next().unwrap_or_default();
                    invalid(format!("{first}: invalid arguments for function {name}: {message}"))
                })?;
                Ok(bsatn::to_vec(&v))
            }
            ReducerArgs::Bsatn(bytes) => {
                bsatn::skip(&def.typespace, &ty, &mut bsatn::Reader::new(bytes))
                    .and_then(|_| bsatn::decode(&def.typespace, &ty, bytes).map(drop))
                    .map_err(|e| invalid(e.to_string()))?;
                Ok(bytes.clone())
            }
        }
    }

    /// Calls reducer `name` as `caller`. Lifecycle reducers are refused; use the dedicated methods.
    pub fn call(&mut self, name: &str, args: ReducerArgs, caller: Caller) -> Result<ReducerResult, CallError> {
        self.call_with_step(name, args, caller, None, None)
    }

    /// Calls reducer `name` as one item of a workflow. When the call commits, `step` is committed
    /// with it (in the same log record, even if the reducer changed nothing), so a workflow that
    /// resumes after a crash can ask [`Database::applied_steps`] what its interrupted batch did.
    pub fn call_step(
        &mut self,
        name: &str,
        args: ReducerArgs,
        caller: Caller,
        step: WorkflowStep,
    ) -> Result<ReducerResult, CallError> {
        self.call_with_step(name, args, caller, Some(step), None)
    }

    fn call_with_step(
        &mut self,
        name: &str,
        args: ReducerArgs,
        caller: Caller,
        step: Option<WorkflowStep>,
        from: Option<ClientCall>,
    ) -> Result<ReducerResult, CallError> {
        if let Some(why) = self.storage_failure() {
            return Err(CallError::StorageUnavailable(why));
        }
        let Some(id) = self.host.def().reducer_id(name) else {
            self.external_error(name, nonexistent_line("reducer", name));
            return Err(CallError::NoSuchReducer(name.to_string()));
        };
        if self.host.def().reducers[id].lifecycle.is_some() {
            return Err(CallError::LifecycleReducer(name.to_string()));
        }
        let args = match self.encode_args(id, &args) {
            Ok(a) => a,
            Err(e) => {
                self.external_error(name, invalid_arguments_line("reducer", name));
                return Err(e);
            }
        };
        // Only this reducer carries the step, not what it schedules.
        let result = self.run(id, args, caller, now_micros(), step, from);
        self.drain_immediate();
        Ok(result)
    }

    /// Commits `step` alone, with no rows: a workflow re-files an item applied in an earlier,
    /// interrupted batch under its current batch, so later recoveries still find it.
    pub fn note_step(&mut self, step: WorkflowStep) {
        let commit = Commit::system("__workflow_step__", self.identity, Vec::new(), Some(step));
        self.on_commit(commit, &TxDelta::default());
    }

    /// The latest batch of workflow `instance` seen here, and which of its items are applied.
    pub fn applied_steps(&self, instance: &str) -> Option<(u64, std::collections::HashSet<String>)> {
        self.steps.applied(instance)
    }

    /// Forgets workflow `instance` (it finished; nothing will ask again).
    pub fn forget_steps(&mut self, instance: &str) {
        self.steps.forget(instance);
    }

    /// Runs the module's `client_connected` reducer, if it has one.
    pub fn client_connected(&mut self, caller: Caller) -> Option<ReducerResult> {
        self.lifecycle(Lifecycle::OnConnect, caller)
    }

    /// Records (or, with `None`, forgets) the token payload a connection presented, which a 2.x
    /// module reads with `get_jwt` (2.x's `st_connection_credentials`).
    pub fn set_connection_jwt(&self, connection_id: [u8; 16], payload: Option<String>) {
        self.host.connection_jwts().set(connection_id, payload.map(std::sync::Arc::from));
    }

    /// Runs the module's `client_disconnected` reducer, if it has one.
    pub fn client_disconnected(&mut self, caller: Caller) -> Option<ReducerResult> {
        self.lifecycle(Lifecycle::OnDisconnect, caller)
    }

    fn lifecycle(&mut self, lc: Lifecycle, caller: Caller) -> Option<ReducerResult> {
        let id = self.host.def().lifecycle_reducer(lc)?;
        let r = self.run(id, Vec::new(), caller, now_micros(), None, None);
        self.drain_immediate();
        Some(r)
    }

    /// Runs one reducer (the workflow item `step`, if any; for client `from`, if any) and
    /// hands its committed changes to [`Database::on_commit`]; a failure is told to its caller.
    fn run(
        &mut self,
        id: usize,
        args: Vec<u8>,
        caller: Caller,
        timestamp_micros: i64,
        step: Option<WorkflowStep>,
        from: Option<ClientCall>,
    ) -> ReducerResult {
        let ctx = CallContext { sender: caller.identity, connection_id: caller.connection_id, timestamp_micros };
        let kept_args = (self.persist.is_some() || self.clients.counts().0 > 0).then(|| args.clone());
        let mut r = self.host.call_reducer(id as u32, args, ctx);
        let args = kept_args.unwrap_or_default();
        if let Some(delta) = r.delta.as_ref() {
            let commit = Commit { by: By::Reducer(id), caller, args, step, duration: r.duration, from };
            self.on_commit_at(commit, delta, timestamp_micros);
        } else if let Some(from) = from.filter(|f| f.notify_success) {
            let status = match &r.outcome {
                ReducerOutcome::OutOfTime(_) => TxStatus::OutOfEnergy,
                o => TxStatus::Failed(o.error_message().unwrap_or_default()),
            };
            // As 1.3: a failure's event carries no request id.
            let mut event = self.event(status, &By::Reducer(id), caller, args, 0, r.duration, timestamp_micros);
            event.json_args = from.json_args.clone();
            let offset = self.persist.as_ref().and_then(Persistence::last_offset);
            let to = Some((from.client, true));
            self.clients.broadcast(self.host.db(), &TxDelta::default(), Vec::new(), event, to, offset);
        }
        // A reducer stopped at the time limit logs nothing, as 1.3 logs nothing when energy runs
        // out (the caller gets 402); running out of memory is worth a line.
        if let ReducerOutcome::OutOfMemory = &r.outcome {
            let def = self.host.def().clone();
            let line = ServerLine::Outcome(&def.reducers[id].name);
            self.server_log(epoch_host::LogLevel::Error, line, r.outcome.error_message().unwrap_or_default());
        }
        if let ReducerOutcome::Failed(msg) = &r.outcome {
            // 1.3 records a reducer's own error in the module log, targeted at the reducer.
            let def = self.host.def().clone();
            self.server_log(epoch_host::LogLevel::Error, ServerLine::Outcome(&def.reducers[id].name), msg.clone());
        }
        self.after_commit(&mut r);
        r
    }

    fn after_commit(&mut self, r: &mut ReducerResult) {
        self.immediate.extend(r.scheduled_immediate.drain(..));
    }

    /// The one path of every committed transaction (reducers, lifecycle and scheduled reducers,
    /// scheduler clean-ups, SQL DML, workflow steps): the workflow step ledger, the commitlog
    /// (which acknowledges it once durable), and the scheduler.
    fn on_commit(&mut self, commit: Commit, delta: &TxDelta) {
        self.on_commit_at(commit, delta, now_micros());
    }

    fn on_commit_at(&mut self, commit: Commit, delta: &TxDelta, timestamp_micros: i64) {
        let Commit { by, caller, args, step, duration, from } = commit;
        if let Some(step) = &step {
            self.steps.record(step);
        }
        let has_clients = self.clients.counts().0 > 0;
        let event_args = if has_clients { args.clone() } else { Vec::new() };
        if let Some(p) = self.persist.as_mut() {
            // A workflow step is logged even when its reducer changed nothing.
            if !delta.is_empty() || step.is_some() {
                let reducer = match by {
                    By::Reducer(id) => self.host.def().reducers[id].name.as_str(),
                    By::System(name) => name,
                };
                let tx = LoggedTx { reducer, caller: caller.identity, args, timestamp_micros, step };
                p.record(self.host.db(), &self.steps, tx, delta);
            }
        }
        if !delta.is_empty() {
            self.scheduler.observe(self.host.db(), delta, now_micros());
            self.views.committed(self.host.db(), delta);
        }
        if has_clients && (!delta.is_empty() || from.is_some()) {
            let request_id = from.as_ref().map_or(0, |f| f.request_id);
            // Clients see no arguments for the server's own transactions (SQL DML).
            let event_args = if matches!(by, By::Reducer(_)) { event_args } else { Vec::new() };
            let mut event =
                self.event(TxStatus::Committed, &by, caller, event_args, request_id, duration, timestamp_micros);
            event.json_args = from.as_ref().and_then(|f| f.json_args.clone());
            let offset = self.persist.as_ref().and_then(Persistence::last_offset);
            let to = from.map(|f| (f.client, f.notify_success));
            match self.deferred.as_mut() {
                Some(held) => held.push(Deferred { event, delta: delta.clone(), caller: to, offset }),
                None => {
                    let views = self.view_updates(delta);
                    self.clients.broadcast(self.host.db(), delta, views, event, to, offset)
                }
            }
        }
    }

    /// Tells clients of the transactions held since `deferred` was set, as one: the first
    /// reducer's event, every change merged, once the last is durable.
    fn release_deferred(&mut self) {
        let Some(held) = self.deferred.take() else { return };
        let mut held = held.into_iter();
        let Some(first) = held.next() else { return };
        let Deferred { event, mut delta, caller, mut offset } = first;
        for later in held {
            merge_delta(&mut delta, later.delta);
            offset = later.offset.or(offset);
        }
        let views = self.view_updates(&delta);
        self.clients.broadcast(self.host.db(), &delta, views, event, caller, offset);
    }

    /// The subscribed views `delta` changed what they read of run again; what each subscriber
    /// must now remove and add. A view that fails keeps the rows its subscribers have (2.x
    /// would have failed the transaction; here it committed already) and says why in the log.
    fn view_updates(&mut self, delta: &TxDelta) -> Vec<(ClientId, std::sync::Arc<epoch_subscription::QueryUpdate>)> {
        let mut updates = Vec::new();
        for key in self.clients.views.stale(self.host.db(), delta) {
            let caller = key.1.unwrap_or_default();
            match self.views.instance(&mut self.host, key.0, caller) {
                Ok((_, rows, reads)) => {
                    let schema = self.clients.schema.clone();
                    let table = schema.first_view + key.0 as u32;
                    let query: std::sync::Arc<str> =
                        std::sync::Arc::from(format!("SELECT * FROM {}", self.def().views[key.0].name));
                    updates.extend(self.clients.views.refresh(key, rows, reads, table, &query));
                }
                Err(e) => {
                    tracing::warn!(view = %self.def().views[key.0].name, "a subscribed view failed to run again: {e}")
                }
            }
        }
        updates
    }

    /// A transaction as clients hear of it.
    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        status: TxStatus,
        by: &By,
        caller: Caller,
        args: Vec<u8>,
        request_id: u32,
        duration: std::time::Duration,
        timestamp_micros: i64,
    ) -> TxEvent {
        let schema = self.clients.schema.clone();
        let (reducer_name, reducer_id) = match by {
            By::Reducer(id) => (schema.reducers[*id].0.clone(), *id as u32),
            // As 1.3 reports SQL DML: no reducer.
            By::System(_) => (std::sync::Arc::from(""), u32::MAX),
        };
        TxEvent {
            status,
            timestamp_micros,
            caller,
            reducer_name,
            reducer_id,
            args,
            request_id,
            duration_micros: duration.as_micros() as i64,
            schema,
            frames: FrameCache::default(),
            json_args: None,
        }
    }

    // --------------------------------------------------------------------------------------------
    // Connected clients (the WebSocket API)

    /// Writes `caller` down as connected, for a durable database, without waiting: `done`
    /// runs (on another thread) once that is on disk, and [`Database::connect_client`] should
    /// be called only then. This keeps the disk off the writer: the journal's thread writes.
    pub fn record_connecting(
        &mut self,
        caller: Caller,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), ConnectError> {
        self.clients.check_room()?;
        match self.persist.as_mut() {
            Some(p) => p.client_journal().connect((caller.identity, caller.connection_id), done),
            None => done(true),
        }
        Ok(())
    }

    /// Connects client `id`: runs `client_connected` as `caller` and, if it succeeds (or the
    /// module has none), registers `sink` for the client's messages. A durable database writes
    /// the client down first (waiting for the disk unless [`Database::record_connecting`] did),
    /// so a crash before it leaves still runs `client_disconnected` at the next start.
    pub fn connect_client(
        &mut self,
        id: ClientId,
        caller: Caller,
        is_owner: bool,
        sink: std::sync::Arc<dyn ClientSink>,
    ) -> Result<(), ConnectError> {
        if let Err(e) = self.clients.check_room() {
            self.note_connected(caller, false);
            return Err(e);
        }
        self.note_connected(caller, true);
        if let Some(r) = self.client_connected(caller) {
            if let Some(msg) = r.outcome.error_message() {
                self.note_connected(caller, false);
                return Err(ConnectError::Rejected(msg));
            }
        }
        self.clients.add(id, caller, is_owner, sink);
        Ok(())
    }

    /// Client `id` left (closed, dropped, or the server is stopping): its subscriptions end and
    /// `client_disconnected` runs.
    pub fn disconnect_client(&mut self, id: ClientId) {
        let Some(caller) = self.clients.remove(id) else { return };
        if let Some(r) = self.client_disconnected(caller) {
            if let Some(msg) = r.outcome.error_message() {
                tracing::debug!("client_disconnected failed: {msg}");
            }
        }
        self.note_connected(caller, false);
    }

    /// Lets every client go without running `client_disconnected` or writing down that it left:
    /// the database failed and is reopened from disk, which runs it for them as after a crash.
    /// Their connections close (their outboxes end).
    pub fn drop_clients(&mut self) {
        for id in self.clients.ids() {
            self.clients.remove(id);
        }
    }

    /// Disconnects every client (the server is stopping).
    pub fn disconnect_all_clients(&mut self) {
        for id in self.clients.ids() {
            self.disconnect_client(id);
        }
    }

    /// Calls reducer `name` for a client that is not connected (an HTTP call): like
    /// [`Database::call`], except that a private reducer (2.x) answers only to the owner.
    pub fn call_from_outside(
        &mut self,
        name: &str,
        args: ReducerArgs,
        caller: Caller,
        is_owner: bool,
    ) -> Result<ReducerResult, CallError> {
        self.check_visible(name, is_owner)?;
        self.call(name, args, caller)
    }

    /// Lends the database's store, in a new transaction, to a procedure (2.x): the writer waits
    /// for it back ([`Database::take_back_store`]) and serves nothing else meanwhile, as 2.x's
    /// procedure transactions hold the database's write lock.
    pub(crate) fn lend_store(&mut self) -> epoch_store::Store {
        let mut store = self.host.replace_db(epoch_store::Store::new(&ModuleDef::default()));
        store.begin();
        store
    }

    /// Takes back a store lent by [`Database::lend_store`], committing its transaction (a system
    /// transaction made by the database's own identity, as 2.x records a procedure's) or
    /// rolling it back.
    pub(crate) fn take_back_store(&mut self, mut store: epoch_store::Store, commit: bool) -> Result<(), String> {
        let why_not = if commit { self.storage_failure() } else { Some(String::new()) };
        if let Some(why) = why_not {
            store.rollback();
            self.host.replace_db(store);
            return if commit { Err(why) } else { Ok(()) };
        }
        let delta = store.commit();
        self.host.replace_db(store);
        let delta = delta.map_err(|e| e.to_string())?;
        self.on_commit(Commit::system("", self.identity, Vec::new(), None), &delta);
        Ok(())
    }

    /// A private reducer of a 2.x module is, to anyone but the owner, a reducer that does not
    /// exist (2.x's answer).
    pub(crate) fn check_visible(&mut self, name: &str, is_owner: bool) -> Result<(), CallError> {
        let private_reducer = self.def().reducers.iter().any(|r| {
            r.name == name && r.lifecycle.is_none() && r.visibility == epoch_schema::FunctionVisibility::Private
        });
        let private_procedure = self
            .def()
            .procedures
            .iter()
            .any(|p| p.name == name && p.visibility == epoch_schema::FunctionVisibility::Private);
        let private = private_reducer || private_procedure;
        if private && !is_owner {
            // As 2.x: a reducer the caller may not see is one that is not there.
            self.external_error(name, nonexistent_line("reducer", name));
            return Err(CallError::NoSuchReducer(name.to_string()));
        }
        Ok(())
    }

    /// Calls reducer `name` for client `id`. The outcome reaches the client as a transaction
    /// update (a refused call too, as 1.3 reports it).
    pub fn client_call(&mut self, id: ClientId, name: &str, args: ReducerArgs, request_id: u32, notify_success: bool) {
        let Some(caller) = self.clients.caller_of(id) else { return };
        let json_args = match &args {
            ReducerArgs::Json(text) => Some(std::sync::Arc::from(text.as_str())),
            ReducerArgs::Bsatn(_) => None,
        };
        let from = ClientCall { client: id, request_id, notify_success, json_args };
        let is_owner = self.clients.is_owner(id);
        let called =
            self.check_visible(name, is_owner).and_then(|_| self.call_with_step(name, args, caller, None, Some(from)));
        if let Err(e) = called {
            let message = match &e {
                CallError::NoSuchReducer(_) => "no such reducer".to_string(),
                CallError::LifecycleReducer(n) => {
                    format!("can't directly call special {} lifecycle reducer", lifecycle_name(self.def(), n))
                }
                CallError::InvalidArguments { .. } | CallError::StorageUnavailable(_) => e.to_string(),
            };
            let event = crate::clients::refused_event(&self.clients.schema, caller, name, message);
            self.clients.send_after(
                id,
                None,
                crate::clients::Outgoing::Tx {
                    event: std::sync::Arc::new(event),
                    updates: Vec::new(),
                    to_caller: true,
                },
            );
        }
    }

    /// Applies a subscription request of client `id`; the answer follows every update already
    /// queued for it.
    pub fn client_subscription(&mut self, id: ClientId, req: SubscriptionRequest, started: std::time::Instant) {
        let offset = self.persist.as_ref().and_then(Persistence::last_offset);
        self.clients.ready_views = self.run_subscribed_views(id, &req);
        self.clients.request(self.host.db(), id, req, offset, started);
        self.clients.ready_views.clear();
    }

    /// Runs (or finds kept) the view instances the queries of `req` read, for client `id`.
    fn run_subscribed_views(
        &mut self,
        id: ClientId,
        req: &SubscriptionRequest,
    ) -> std::collections::HashMap<String, Result<crate::view_subs::ReadyView, String>> {
        let queries: &[String] = match req {
            SubscriptionRequest::Legacy { queries, .. } | SubscriptionRequest::Multi { queries, .. } => queries,
            SubscriptionRequest::Single { query, .. } => std::slice::from_ref(query),
            _ => &[],
        };
        let (Some(ctx), Some(caller)) = (self.clients.query_context(id), self.clients.caller_of(id)) else {
            return Default::default();
        };
        let mut ready = std::collections::HashMap::new();
        for q in queries {
            let Some(view_id) = self.view_read(q, ctx, self.clients.is_owner(id)) else { continue };
            let name = &self.def().views[view_id].name;
            let view = if !epoch_query::selects_whole_table(q, ctx) {
                Err(format!("a subscription to view `{name}` reads it whole: `SELECT * FROM {name}`"))
            } else {
                self.views
                    .instance(&mut self.host, view_id, caller.identity)
                    .map(|(key, rows, reads)| crate::view_subs::ReadyView { key, rows, reads })
                    .map_err(|e| e.to_string())
            };
            ready.insert(q.trim().to_string(), view);
        }
        ready
    }

    /// Runs a one-off query for client `id`, with its rights.
    pub fn client_one_off(&mut self, id: ClientId, message_id: Vec<u8>, sql: &str, started: std::time::Instant) {
        let (Some(ctx), Some(caller)) = (self.clients.query_context(id), self.clients.caller_of(id)) else { return };
        // A 2.x view is read from the caller's materialized rows, as `/sql` reads it.
        let selected = match self.view_read(sql, ctx, self.clients.is_owner(id)) {
            Some(view_id) => self.views.store(&mut self.host, view_id, caller.identity).and_then(|rows| {
                epoch_query::select_only(&rows, sql, epoch_query::QueryContext { is_owner: true, ..ctx })
            }),
            None => epoch_query::select_only(self.host.db(), sql, ctx),
        };
        let result = selected
            .map(|(table_name, r)| crate::clients::OneOffRows { table_name, row_type: r.schema, rows: r.rows })
            .map_err(|e| e.to_string());
        let msg = crate::clients::Outgoing::OneOff {
            message_id,
            micros: started.elapsed().as_micros() as u64,
            result,
            schema: self.clients.schema.clone(),
        };
        let offset = self.persist.as_ref().and_then(Persistence::last_offset);
        self.clients.send_after(id, offset, msg);
    }

    /// How many clients are connected, the queries they hold, and the time spent on them.
    pub fn client_stats(&self) -> crate::clients::ClientStats {
        let (views_kept, view_runs) = self.views.stats();
        crate::clients::ClientStats { views_kept, view_runs, ..self.clients.stats() }
    }

    /// Sets the limits on clients (from the server's configuration).
    pub fn set_client_limits(&mut self, limits: crate::clients::ClientLimits) {
        self.clients.limits = limits;
    }

    /// Writes down (or forgets) a connected client, for a durable database. A connection is
    /// waited for (unless already listed); a departure is written once the transactions so far
    /// (its `client_disconnected`) are durable, off the writer.
    fn note_connected(&mut self, caller: Caller, connected: bool) {
        let Some(p) = self.persist.as_mut() else { return };
        let key = (caller.identity, caller.connection_id);
        if !connected {
            let after = p.last_offset();
            p.client_journal().disconnect(key, after);
            return;
        }
        if p.client_journal().is_listed(&key) {
            return;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        p.client_journal().connect(key, move |ok| {
            let _ = tx.send(ok);
        });
        if rx.recv() != Ok(true) {
            tracing::warn!("recording a connected client failed");
        }
    }

    /// Runs `client_disconnected` for clients a crash (or a kill) cut off: they were written
    /// down as connected and never left.
    fn disconnect_stale_clients(&mut self) {
        let stale = self.persist.as_ref().map(Persistence::connected_clients).unwrap_or_default();
        for (identity, connection_id) in stale {
            let caller = Caller { identity, connection_id };
            if let Some(r) = self.client_disconnected(caller) {
                if let Some(msg) = r.outcome.error_message() {
                    tracing::debug!("client_disconnected after a restart failed: {msg}");
                }
            }
            self.note_connected(caller, false);
        }
    }

    /// Runs reducers the module queued with `volatile_nonatomic_schedule_immediate`, bounded so a
    /// module that keeps queueing cannot hold the writer forever.
    fn drain_immediate(&mut self) {
        for _ in 0..1024 {
            let Some((name, args)) = self.immediate.pop_front() else { return };
            match self.host.def().reducer_id(&name) {
                Some(id) => {
                    let me = Caller::identity(self.identity);
                    let r = self.run(id, args, me, now_micros(), None, None);
                    if let Some(msg) = r.outcome.error_message() {
                        tracing::debug!(reducer = %name, "immediately scheduled reducer failed: {msg}");
                    }
                }
                None => tracing::warn!(reducer = %name, "module scheduled an unknown reducer"),
            }
        }
    }

    /// When the next scheduled reducer is due, in microseconds since the Unix epoch.
    pub fn next_due_micros(&self) -> Option<i64> {
        self.scheduler.next_due()
    }

    /// Runs every scheduled reducer due at `now`; returns how many ran.
    pub fn run_due(&mut self, now: i64) -> usize {
        let mut ran = 0;
        while let Some(job) = self.scheduler.pop_due(now) {
            ran += 1;
            let Some(row) = self.scheduler.row_of(self.host.db(), &job) else { continue };
            let Some(reducer) = self.host.def().reducer_id(&job.reducer) else {
                self.schedule_procedure(&job, row);
                continue;
            };
            // A scheduled reducer takes the row as its one argument: the product's encoding is the row's.
            let me = Caller::identity(self.identity);
            // Clients hear of the call and of its row's removal together, as 1.3 commits them.
            self.deferred = Some(Vec::new());
            let r = self.run(reducer, row, me, job.due_micros.max(now_micros()), None, None);
            if let ReducerOutcome::Committed = r.outcome {
            } else if let Some(msg) = r.outcome.error_message() {
                tracing::debug!(reducer = %job.reducer, "scheduled reducer failed: {msg}");
            }
            // As 1.3 does: a one-shot row is deleted after its call, an interval is queued again.
            let mut cleanup = self.scheduler.finish(&mut self.host, &job);
            if let Some(delta) = cleanup.delta.take() {
                self.on_commit(Commit::system("__scheduler__", self.identity, Vec::new(), None), &delta);
            }
            self.release_deferred();
            self.after_commit(&mut cleanup);
        }
        self.drain_immediate();
        ran
    }

    /// A schedule that targets a procedure (2.x): its row is deleted (or queued again) first,
    /// then the procedure is handed to the writer's loop, which runs it off the writer.
    fn schedule_procedure(&mut self, job: &crate::scheduler::Job, row: Vec<u8>) {
        if self.host.def().procedure_id(&job.reducer).is_none() {
            return;
        }
        let mut cleanup = self.scheduler.finish(&mut self.host, job);
        if let Some(delta) = cleanup.delta.take() {
            self.on_commit(Commit::system("__scheduler__", self.identity, Vec::new(), None), &delta);
        }
        self.due_procedures.push((job.reducer.clone(), row));
    }

    /// The procedures that fell due, for the writer's loop to start.
    pub(crate) fn take_due_procedures(&mut self) -> Vec<(String, Vec<u8>)> {
        std::mem::take(&mut self.due_procedures)
    }

    /// Inserts rows into table `name` in one transaction, all or nothing, through the one
    /// commit path (log, scheduler, subscribers): each line is one row in the export form of
    /// SATS-JSON (as [`Database::export_jsonl`] writes it). An identical row already present
    /// is kept once (a table's set semantics); a unique key held by another row fails the
    /// whole import, naming the line. Refused while the database cannot write.
    pub fn import_rows(&mut self, name: &str, lines: &[&str], caller: Identity) -> Result<usize, String> {
        let table = self.store().table_by_name(name).ok_or_else(|| format!("no table named {name:?}"))?;
        let row_type = table.schema.row_type().clone();
        let ts = self.store().typespace.clone();
        let mut rows = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let row = crate::export::read_jsonl_row(&ts, &row_type, line)
                .map_err(|e| format!("line {}: {e}; nothing was imported", i + 1))?;
            rows.push((i as u64 + 1, row));
        }
        self.import_values(name, rows, caller)
    }

    /// [`Database::import_rows`] from CSV as [`Database::export_csv`] writes it (see
    /// [`crate::export::read_csv`]): a bad cell, or a column missing, unknown or named twice
    /// in the header, fails the whole import, naming it.
    pub fn import_csv(&mut self, name: &str, text: &str, caller: Identity) -> Result<usize, String> {
        let table = self.store().table_by_name(name).ok_or_else(|| format!("no table named {name:?}"))?;
        let row_type = table.schema.row_type().clone();
        let rows = crate::export::read_csv(&self.store().typespace, name, &row_type, text)?;
        self.import_values(name, rows, caller)
    }

    /// Inserts decoded rows (each with its line in the file) in one transaction.
    fn import_values(
        &mut self,
        name: &str,
        rows: Vec<(u64, AlgebraicValue)>,
        caller: Identity,
    ) -> Result<usize, String> {
        if let Some(why) = self.storage_failure() {
            return Err(format!("the database cannot write now: {why}"));
        }
        let table_id = self.store().table_id(name).ok_or_else(|| format!("no table named {name:?}"))?;
        let store = self.host.db_mut();
        store.begin();
        for (line, row) in &rows {
            if let Err(e) = store.insert(table_id, &mut bsatn::to_vec(row)) {
                store.rollback();
                return Err(format!("line {line}: {e}; nothing was imported"));
            }
        }
        let delta = store.commit().map_err(|e| e.to_string())?;
        self.on_commit(Commit::system("__import__", caller, Vec::new(), None), &delta);
        Ok(rows.len())
    }

    /// Every row of table `name` as JSON lines in the export form (exact for every value; see
    /// [`crate::export`]), in storage order.
    pub fn export_jsonl(&self, name: &str) -> Option<Result<String, String>> {
        let table = self.store().table_by_name(name)?;
        let row_type = table.schema.row_type();
        let ts = &self.store().typespace;
        let mut out = String::new();
        for row in self.rows(name)? {
            match crate::export::jsonl_row(ts, row_type, &row) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(e) => return Some(Err(e.to_string())),
            }
        }
        Some(Ok(out))
    }

    /// Every row of table `name` as CSV (see [`crate::export::write_csv`]), in storage order.
    pub fn export_csv(&self, name: &str) -> Option<Result<String, String>> {
        let table = self.store().table_by_name(name)?;
        let rows = self.rows(name)?;
        Some(crate::export::write_csv(&self.store().typespace, table.schema.row_type(), &rows))
    }

    /// Every row of table `name` as SATS-JSON objects, in storage order (for tools and tests).
    pub fn rows_json(&self, name: &str) -> Option<Vec<String>> {
        let table = self.store().table_by_name(name)?;
        let ty = AlgebraicType::Product(table.schema.row_type().clone());
        let ts = &self.store().typespace;
        Some(
            table
                .iter()
                .map(|(_, row)| {
                    bsatn::decode(ts, &ty, row).ok().and_then(|v| json::to_string(ts, &ty, &v).ok()).unwrap_or_default()
                })
                .collect(),
        )
    }

    /// Every row of table `name`, decoded.
    pub fn rows(&self, name: &str) -> Option<Vec<AlgebraicValue>> {
        let table = self.store().table_by_name(name)?;
        let ty = AlgebraicType::Product(table.schema.row_type().clone());
        let ts = &self.store().typespace;
        Some(table.iter().filter_map(|(_, row)| bsatn::decode(ts, &ty, row).ok()).collect())
    }

    /// The running module's wasm.
    pub fn program(&self) -> std::sync::Arc<[u8]> {
        self.program.clone()
    }

    /// Replaces the module with `wasm`, keeping every row, when 1.3 would migrate automatically
    /// (see [`crate::migrate`]): new tables are created after the existing ones, so every table
    /// keeps its id and the log written before the update replays after it; indexes are built
    /// for the new definition; `init` does not run again. A refused update changes nothing.
    pub fn update_module(&mut self, wasm: &[u8], policy: MigrationPolicy) -> Result<(), UpdateError> {
        let config = self.host.config().clone();
        let mut new = ModuleHost::load_with_logs(wasm, self.identity, config, self.host.logs().clone())?;
        epoch_query::check_filters(new.db()).map_err(UpdateError::Failed)?;
        let steps = crate::migrate::plan(self.def(), new.def()).map_err(UpdateError::rejected)?;
        let hashes = (crate::program::program_hash(&self.program), crate::program::program_hash(wasm));
        let breaking = crate::migrate_policy::breaks_clients(self.def(), new.def(), &steps);
        if hashes.0 != hashes.1 {
            crate::migrate_policy::check(policy, &self.identity.to_hex(), (&hashes.0, &hashes.1), new.def(), breaking)
                .map_err(|e| UpdateError::Failed(e.to_string()))?;
        }
        let hash: String = hashes.1.iter().map(|b| format!("{b:02x}")).collect();
        let v10 = new.def().version == epoch_schema::DefVersion::V10;
        if v10 {
            // 2.x names the new program before applying the plan, whether or not it then fails.
            self.system_log(format!("Updated program to {hash}"));
        }
        // 2.x disconnects every client when what they hold no longer fits, before the rows
        // move, so their `client_disconnected` changes move with them; an update that cannot
        // apply (a removed table holds rows) keeps them.
        let checked = self.removed_tables_are_empty(&steps);
        if checked.is_ok() && steps.iter().any(crate::migrate::Step::reshapes_rows) {
            self.disconnect_all_clients();
        }
        let mut store = match checked.and_then(|()| self.migrated_store(new.def(), &steps)) {
            Ok(store) => store,
            Err(e) => {
                self.server_log(epoch_host::LogLevel::Warn, ServerLine::System, format!("Database update failed: {e}"));
                return Err(UpdateError::Failed(e));
            }
        };
        if let Some(p) = self.persist.as_ref() {
            // The new numbering reaches the disk before the new module does (the control plane
            // writes it next): a crash in between restarts the old module, which ignores the
            // names added at the end.
            write_table_order(p.dir(), &store.table_order()).map_err(|e| UpdateError::Failed(e.to_string()))?;
        }
        store.row_level_security =
            crate::migrate::filter_order(&self.store().row_level_security, &new.def().row_level_security);
        if let Some(p) = self.persist.as_ref() {
            write_filter_order(p.dir(), &store.row_level_security).map_err(|e| UpdateError::Failed(e.to_string()))?;
        }
        if !v10 {
            self.system_log(format!("Updated program to {hash}"));
        }
        for step in &steps {
            if let Some(line) = step.log_line() {
                self.system_log(line);
            }
        }
        if v10 && breaking {
            self.system_log("Disconnecting all users".to_string());
        }
        self.system_log("Database updated".to_string());
        new.replace_db(store);
        self.host = new;
        self.program = std::sync::Arc::from(wasm);
        let mut scheduler = Scheduler::new(self.host.def(), self.host.db());
        scheduler.observe(self.host.db(), &all_rows(self.host.db()), now_micros());
        self.scheduler = scheduler;
        self.clients.module_updated(self.host.def(), self.host.db());
        self.views.clear();
        Ok(())
    }

    /// A table an update removes must be empty, as 2.x checks it: when the update is applied.
    fn removed_tables_are_empty(&self, steps: &[crate::migrate::Step]) -> Result<(), String> {
        for step in steps {
            let crate::migrate::Step::RemoveTable(table) = step else { continue };
            if self.store().table_by_name(table).is_some_and(|t| !t.is_empty()) {
                return Err(format!("Cannot remove table `{table}`: table contains data. Clear the table's rows (e.g. via a reducer) before removing it from your schema."));
            }
        }
        Ok(())
    }

    /// The tables of the running module moved into a store for `def`: the same ids for the
    /// tables kept, new ones after them, every row and sequence carried over, indexes built.
    fn migrated_store(&self, def: &ModuleDef, steps: &[crate::migrate::Step]) -> Result<epoch_store::Store, String> {
        use crate::migrate::Step;
        let old = self.store();
        let mut order = old.table_order();
        for step in steps {
            let Step::RemoveTable(table) = step else { continue };
            // Its id stays taken.
            if let Some(place) = order.iter_mut().find(|n| *n == table) {
                *place = format!("{}{table}", epoch_store::REMOVED_TABLE_PREFIX);
            }
        }
        let added: Vec<String> = def.tables.iter().map(|t| t.name.clone()).filter(|n| !order.contains(n)).collect();
        order.extend(added);
        let mut store = epoch_store::Store::with_order(def, &order)?;
        for step in steps {
            match step {
                Step::RemoveSchedule { .. } => return Err("Removing schedules is not yet implemented".into()),
                Step::AddSchedule { .. } => return Err("Adding schedules is not yet implemented".into()),
                _ => {}
            }
        }
        for step in steps {
            // 2.x checks a new unique constraint against the rows first, naming what repeats.
            let Step::AddConstraint { table, constraint } = step else { continue };
            let found = def.table(table).and_then(|d| d.constraints.iter().find(|c| &c.name == constraint));
            let (Some(t), Some(c)) = (old.table_by_name(table), found) else {
                continue;
            };
            let catalog_id = crate::clients::first_user_id(def.version) + t.id;
            crate::migrate::duplicate_values(t, catalog_id, &c.unique_columns)?;
        }
        // Removed tables (and earlier ones' tombstones) are not in the new module.
        for t in old.tables().iter().filter(|t| def.table(t.schema.name()).is_some()) {
            let id = store.table_id(t.schema.name()).ok_or_else(|| format!("table `{}` is gone", t.schema.name()))?;
            let rows: Vec<Box<[u8]>> = t.iter().map(|(_, r)| Box::<[u8]>::from(r)).collect();
            store.load_snapshot_rows(id, &rows).map_err(|e| e.to_string())?;
            store.unique_indexes_hold(id)?;
            for (column, next) in old.table_sequences(t.id) {
                store.advance_sequence(id, column, next);
            }
        }
        for step in steps {
            if let Step::AddSequence { table, sequence, column, min, max } = step {
                // As 1.3: a new sequence may not hand out values the column already holds.
                let Some(t) = store.table_by_name(table) else { continue };
                for (_, row) in t.iter() {
                    let v = t.schema.column_value(row, *column).map_err(|e| e.to_string())?;
                    if v.as_i128().is_some_and(|n| n >= *min && n < *max) {
                        return Err(format!("Precheck failed: added sequence {sequence} already has values in range"));
                    }
                }
            }
        }
        Ok(store)
    }

    /// The view a `SELECT` reads, if it reads one the caller may see (a public view, or any
    /// view for the owner) and no table has its name.
    fn view_read(&self, sql: &str, ctx: epoch_query::QueryContext, is_owner: bool) -> Option<usize> {
        if self.def().views.is_empty() {
            return None;
        }
        let name = epoch_query::single_table_read(sql, ctx)?;
        let id = self.def().views.iter().position(|v| v.name == name && (v.is_public || is_owner))?;
        self.store().table_by_name(&name).is_none().then_some(id)
    }

    /// Runs one SQL statement for `caller`. DML commits like a reducer: logged (so it is durable
    /// before the answer), seen by the scheduler, and sent to subscribers with `caller` named.
    /// The system tables (`st_table`, …) are answered from the catalog, with `owner` as the
    /// module's owner; `SET row_limit` is kept (and caps what later queries may return).
    pub fn sql(
        &mut self,
        sql: &str,
        ctx: epoch_query::QueryContext,
        caller: Identity,
        owner: Identity,
    ) -> Result<epoch_query::Outcome, epoch_query::SqlError> {
        let ctx = match self.row_limit {
            Some(n) => epoch_query::QueryContext { row_limit: ctx.row_limit.min(n as usize), ..ctx },
            None => ctx,
        };
        if let Some(view_id) = self.view_read(sql, ctx, caller == owner) {
            let mut views = self.views.store(&mut self.host, view_id, caller)?;
            let ctx = epoch_query::QueryContext { is_owner: true, ..ctx };
            return epoch_query::run_with_catalog(&mut views, |_| None, sql, ctx);
        }
        let inputs = crate::catalog::CatalogInputs {
            def: self.host.def(),
            store: self.host.db(),
            database_identity: self.identity,
            owner,
            program: &self.program,
            clients: self.clients.connected(),
            credentials: self.host.connection_jwts().entries(),
            row_limit: self.row_limit,
        };
        let catalog = crate::catalog::build_lazily(&inputs);
        let outcome = epoch_query::run_with_catalog(self.host.db_mut(), catalog, sql, ctx)?;
        match &outcome {
            epoch_query::Outcome::Dml { delta, .. } if !delta.is_empty() => {
                let args = if self.persist.is_some() { sql.as_bytes().to_vec() } else { Vec::new() };
                self.on_commit(Commit::system("__sql__", caller, args, None), delta);
            }
            epoch_query::Outcome::SetVar { value, .. } => {
                self.row_limit = Some(*value);
                if let Some(p) = self.persist.as_ref() {
                    let text = format!("{}\n", value);
                    if let Err(e) = crate::atomic_file::write_atomically(&p.dir().join(ROW_LIMIT_FILE), text.as_bytes())
                    {
                        tracing::warn!("saving row_limit: {e}");
                    }
                }
            }
            _ => {}
        }
        Ok(outcome)
    }
}
