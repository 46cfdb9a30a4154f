//! Loading a module and calling its reducers inside transactions, with time and memory limits.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use epoch_schema::{ModuleDef, SchemaError};
use epoch_store::{Store as Db, TxDelta};
use wasmtime::{Config, Engine, Instance, Linker, Module, Store, Trap, TypedFunc};

use crate::abi::{self, Env};
use crate::limits::{
    DEFAULT_LOG_CAPACITY, DEFAULT_MEMORY_MAX_BYTES, DEFAULT_PROCEDURE_TIMEOUT, DEFAULT_REDUCER_TIMEOUT, EPOCH_TICK,
};
use crate::logs::ModuleLogs;

/// Limits and sizes for running one module.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Wall time one reducer (or the module's start-up code) may run before it is stopped.
    pub reducer_timeout: Duration,
    /// The most linear memory a module instance may grow to.
    pub memory_max_bytes: usize,
    /// How many module log lines a database keeps.
    pub log_capacity: usize,
    /// Where the compiled module is cached between starts (`None`: compile every time).
    pub compiled_cache: Option<std::path::PathBuf>,
    /// Wall time one procedure call (2.x) may take, its sleeps and HTTP requests included.
    pub procedure_timeout: Duration,
    /// Whether procedures' HTTP requests may reach loopback addresses: for tests that run
    /// their HTTP server on this machine (2.x builds its test servers the same way).
    pub procedure_http_loopback: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            reducer_timeout: DEFAULT_REDUCER_TIMEOUT,
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            log_capacity: DEFAULT_LOG_CAPACITY,
            compiled_cache: None,
            procedure_timeout: DEFAULT_PROCEDURE_TIMEOUT,
            procedure_http_loopback: false,
        }
    }
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The module is not valid WebAssembly (the text is wasmtime's, as 1.3 reports it).
    #[error("{0}")]
    InvalidWasm(String),
    #[error("module imports `{module}::{name}`, which this server does not provide (it supports the spacetime_10.0 ABI of SpacetimeDB 1.3)")]
    UnknownImport { module: String, name: String },
    #[error("module does not export `{0}`; is it built with the spacetimedb 1.x crate?")]
    MissingExport(&'static str),
    #[error("module failed to start: {0}")]
    Instantiate(String),
    #[error("module's {0}")]
    Schema(#[from] SchemaError),
}

/// How a reducer call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReducerOutcome {
    /// The reducer returned `Ok`; its transaction is committed.
    Committed,
    /// The reducer returned `Err(message)`; nothing it did is kept.
    Failed(String),
    /// The module panicked with this message; nothing it did is kept.
    Panicked(String),
    /// The module trapped for another reason (a bad pointer, `unreachable`, ...).
    Trapped(String),
    /// The reducer ran past the time limit and was stopped.
    OutOfTime(Duration),
    /// The module tried to grow its memory past the cap.
    OutOfMemory,
}

impl ReducerOutcome {
    pub fn is_committed(&self) -> bool {
        matches!(self, Self::Committed)
    }

    /// Whether the host stopped the reducer (rather than the reducer returning an error).
    pub fn is_host_failure(&self) -> bool {
        matches!(self, Self::Panicked(_) | Self::Trapped(_) | Self::OutOfTime(_) | Self::OutOfMemory)
    }

    /// The failure message a caller sees; `None` when committed.
    pub fn error_message(&self) -> Option<String> {
        match self {
            Self::Committed => None,
            Self::Failed(m) => Some(m.clone()),
            Self::Panicked(m) => Some(format!("The module panicked: {m}")),
            Self::Trapped(m) => Some(format!("The module trapped: {m}")),
            Self::OutOfTime(d) => Some(format!("The reducer ran longer than its time limit of {d:?} and was stopped")),
            Self::OutOfMemory => Some("The module ran out of memory".to_string()),
        }
    }
}

/// Who calls a reducer, and when.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    pub sender: epoch_sats::Identity,
    /// The caller's connection id, little-endian; all zeros for none.
    pub connection_id: [u8; 16],
    pub timestamp_micros: i64,
}

/// What one reducer call did.
#[derive(Debug)]
pub struct ReducerResult {
    pub outcome: ReducerOutcome,
    /// The committed changes, when the outcome is `Committed`.
    pub delta: Option<TxDelta>,
    pub duration: Duration,
    /// Reducers the module asked, through `volatile_nonatomic_schedule_immediate`, to run next.
    pub scheduled_immediate: Vec<(String, Vec<u8>)>,
}

type CallReducerFn = TypedFunc<(u32, u64, u64, u64, u64, u64, u64, u64, u32, u32), i32>;

/// The process-wide engine, with a ticker thread driving epoch-based deadlines.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config).expect("the wasmtime configuration is valid");
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("epoch-wasm-ticker".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch ticker thread");
        engine
    })
}

pub(crate) fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// A loaded module: its instance, its definition and its tables.
pub struct ModuleHost {
    module: Module,
    linker: Arc<Linker<Env>>,
    store: Option<Store<Env>>,
    /// The instance in `store` (its exports: views look theirs up when called).
    instance: Instance,
    call_reducer: CallReducerFn,
    def: Arc<ModuleDef>,
    /// Each reducer's name, shared, so a call names its function for the log without copying.
    reducer_names: Vec<Arc<str>>,
    config: HostConfig,
    logs: ModuleLogs,
    /// Set after a trap: the instance's memory may be inconsistent, so the next call starts afresh.
    poisoned: bool,
}

impl ModuleHost {
    /// Compiles `wasm`, checks its imports and exports, runs its start-up code and reads its
    /// definition; the database starts with empty tables.
    pub fn load(wasm: &[u8], module_identity: epoch_sats::Identity, config: HostConfig) -> Result<Self, HostError> {
        let logs = ModuleLogs::new(config.log_capacity);
        Self::load_with_logs(wasm, module_identity, config, logs)
    }

    /// Like [`ModuleHost::load`], writing module logs to an existing log (a module update keeps
    /// the database's log).
    pub fn load_with_logs(
        wasm: &[u8],
        module_identity: epoch_sats::Identity,
        config: HostConfig,
        logs: ModuleLogs,
    ) -> Result<Self, HostError> {
        let engine = engine();
        // Binary modules are what clients publish; the text format is accepted for hand-written
        // test modules only, so that garbage gets the binary parser's error, as in 1.3.
        let is_text = wasm.trim_ascii_start().starts_with(b"(module");
        let cached = config.compiled_cache.as_deref().and_then(|path| crate::compiled_cache::load(engine, path, wasm));
        let module = match cached {
            Some(module) => module,
            None => {
                let module = if is_text { Module::new(engine, wasm) } else { Module::from_binary(engine, wasm) }
                    .map_err(|e| HostError::InvalidWasm(format!("{e:#}")))?;
                if let Some(path) = &config.compiled_cache {
                    crate::compiled_cache::store(path, wasm, &module);
                }
                module
            }
        };
        for import in module.imports() {
            if !abi::is_abi_import(import.module(), import.name()) {
                return Err(HostError::UnknownImport { module: import.module().into(), name: import.name().into() });
            }
        }
        for export in ["memory", "__describe_module__", "__call_reducer__"] {
            if module.get_export(export).is_none() {
                return Err(HostError::MissingExport(export));
            }
        }
        let mut linker = Linker::new(engine);
        abi::link(&mut linker).map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let linker = Arc::new(linker);
        let env = Env::new(module_identity, logs.clone(), config.memory_max_bytes);
        let (mut store, instance, call_reducer) = instantiate(&module, &linker, env, &config)?;

        let bytes = describe(&mut store, &instance, &config)?;
        let def = epoch_schema::module_def_from_bytes(&bytes)?;
        store.data_mut().db = Some(Db::new(&def));

        Ok(Self {
            module,
            linker,
            store: Some(store),
            instance,
            call_reducer,
            reducer_names: def.reducers.iter().map(|r| Arc::from(r.name.as_str())).collect(),
            def: Arc::new(def),
            config,
            logs,
            poisoned: false,
        })
    }

    pub fn def(&self) -> &Arc<ModuleDef> {
        &self.def
    }

    pub(crate) fn parts_mut(&mut self) -> (&mut Store<Env>, Instance, &HostConfig, &mut bool) {
        let store = self.store.as_mut().expect("the wasm store is present outside re-instantiation");
        (store, self.instance, &self.config, &mut self.poisoned)
    }

    pub(crate) fn env(&self) -> &Env {
        self.store().data()
    }

    pub(crate) fn module(&self) -> &Module {
        &self.module
    }

    pub(crate) fn linker(&self) -> &Arc<Linker<Env>> {
        &self.linker
    }

    /// The token payloads of connected clients, which `get_jwt` reads (the database records a
    /// client's as it connects and forgets it as it leaves).
    pub fn connection_jwts(&self) -> &crate::abi::ConnectionJwts {
        &self.env().connection_jwts
    }

    /// Caches this module's compiled code at `path` (it was compiled from `wasm`), for
    /// [`HostConfig::compiled_cache`] to find at the next start.
    pub fn save_compiled(&self, path: &std::path::Path, wasm: &[u8]) {
        crate::compiled_cache::store(path, wasm, &self.module);
    }

    pub fn logs(&self) -> &ModuleLogs {
        &self.logs
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    fn store(&self) -> &Store<Env> {
        self.store.as_ref().expect("the wasm store is present outside re-instantiation")
    }

    fn store_mut(&mut self) -> &mut Store<Env> {
        self.store.as_mut().expect("the wasm store is present outside re-instantiation")
    }

    /// The database's tables.
    pub fn db(&self) -> &Db {
        self.store().data().db.as_ref().expect("the database is set at load")
    }

    /// The database's tables, for writes outside reducers (recovery, SQL DML).
    pub fn db_mut(&mut self) -> &mut Db {
        self.store_mut().data_mut().db.as_mut().expect("the database is set at load")
    }

    /// Swaps in another set of tables (a module update that keeps the data); returns the old ones.
    pub fn replace_db(&mut self, db: Db) -> Db {
        std::mem::replace(self.db_mut(), db)
    }

    /// Replaces the instance after a trap, keeping the tables.
    fn reinstantiate(&mut self) -> Result<(), HostError> {
        let old = self.store.take().expect("the wasm store is present");
        let mut env = old.into_data();
        env.memory = None;
        let (mut store, instance, call_reducer) = instantiate(&self.module, &self.linker, env, &self.config)?;
        // 1.3 modules register their reducers while describing themselves, so a fresh instance
        // must describe itself again before it can dispatch reducer calls.
        describe(&mut store, &instance, &self.config)?;
        self.store = Some(store);
        self.instance = instance;
        self.call_reducer = call_reducer;
        self.poisoned = false;
        Ok(())
    }

    /// Runs reducer `reducer_id` with BSATN `args` in a transaction: committed on success,
    /// rolled back completely on any failure.
    pub fn call_reducer(&mut self, reducer_id: u32, args: Vec<u8>, ctx: CallContext) -> ReducerResult {
        self.call_reducer_with(reducer_id, args, ctx, |_| Ok(()))
    }

    /// Like [`ModuleHost::call_reducer`], running `before` inside the transaction first (a
    /// scheduler uses it to delete a one-shot schedule row atomically with its reducer).
    pub fn call_reducer_with(
        &mut self,
        reducer_id: u32,
        args: Vec<u8>,
        ctx: CallContext,
        before: impl FnOnce(&mut Db) -> Result<(), epoch_store::StoreError>,
    ) -> ReducerResult {
        let start = Instant::now();
        if self.poisoned {
            if let Err(e) = self.reinstantiate() {
                return not_run(format!("could not restart the module: {e}"), start);
            }
        }
        let timeout = self.config.reducer_timeout;
        let call = self.call_reducer.clone();
        let function = self.reducer_names.get(reducer_id as usize).cloned();
        let store = self.store_mut();
        let db = store.data_mut().db.as_mut().expect("the database is set at load");
        db.begin();
        if let Err(e) = before(db) {
            db.rollback();
            return not_run(format!("could not prepare the call: {e}"), start);
        }
        let (source, sink) = store.data_mut().start_call(args, function);
        store.set_epoch_deadline(deadline_ticks(timeout));
        let (s, c) = caller_words(&ctx);
        let res = call.call(
            &mut *store,
            (reducer_id, s[0], s[1], s[2], s[3], c[0], c[1], ctx.timestamp_micros as u64, source, sink),
        );
        let env = store.data_mut();
        let message = env.finish_call();
        let scheduled_immediate = std::mem::take(&mut env.scheduled_immediate);
        let db = env.db.as_mut().expect("the database is set at load");
        let (outcome, delta) = match res {
            Ok(0) => match db.commit() {
                Ok(delta) => (ReducerOutcome::Committed, Some(delta)),
                Err(e) => (ReducerOutcome::Trapped(format!("commit failed: {e}")), None),
            },
            Ok(_) => {
                db.rollback();
                (ReducerOutcome::Failed(String::from_utf8_lossy(&message).into_owned()), None)
            }
            Err(err) => {
                db.rollback();
                let outcome = trap_outcome(&err, env.limiter.denied, &mut env.panic_message, timeout);
                self.poisoned = true;
                (outcome, None)
            }
        };
        let scheduled_immediate = if outcome.is_committed() { scheduled_immediate } else { Vec::new() };
        ReducerResult { outcome, delta, duration: start.elapsed(), scheduled_immediate }
    }
}

/// The result of a call that never reached the module (it could not be restarted, or the
/// `before` step failed): nothing changed, nothing scheduled.
fn not_run(message: String, start: Instant) -> ReducerResult {
    ReducerResult {
        outcome: ReducerOutcome::Trapped(message),
        delta: None,
        duration: start.elapsed(),
        scheduled_immediate: Vec::new(),
    }
}

/// The caller's identity (four words) and connection id (two words) as the reducer ABI passes
/// them: little-endian `u64`s.
pub(crate) fn caller_words(ctx: &CallContext) -> ([u64; 4], [u64; 2]) {
    let s = identity_words(&ctx.sender);
    let c: [u64; 2] =
        std::array::from_fn(|i| u64::from_le_bytes(ctx.connection_id[i * 8..i * 8 + 8].try_into().unwrap_or_default()));
    (s, c)
}

/// An identity as the ABI passes it: four little-endian `u64`s.
pub(crate) fn identity_words(identity: &epoch_sats::Identity) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(identity.0[i * 8..i * 8 + 8].try_into().unwrap_or_default()))
}

/// Why a call that trapped failed, as the caller is told: out of time (the epoch deadline
/// interrupted it), out of memory (the limiter refused a growth), a panic with its message, or
/// the trap itself.
pub(crate) fn trap_outcome(
    err: &wasmtime::Error,
    memory_denied: bool,
    panic_message: &mut Option<String>,
    timeout: Duration,
) -> ReducerOutcome {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        ReducerOutcome::OutOfTime(timeout)
    } else if memory_denied {
        ReducerOutcome::OutOfMemory
    } else if let Some(msg) = panic_message.take() {
        ReducerOutcome::Panicked(msg)
    } else {
        ReducerOutcome::Trapped(format!("{err:#}"))
    }
}

/// Calls `__describe_module__` and returns the BSATN module definition it writes.
pub(crate) fn describe(store: &mut Store<Env>, instance: &Instance, config: &HostConfig) -> Result<Vec<u8>, HostError> {
    let describe = instance
        .get_typed_func::<u32, ()>(&mut *store, "__describe_module__")
        .map_err(|_| HostError::MissingExport("__describe_module__"))?;
    let (_, sink) = store.data_mut().start_call(Vec::new(), None);
    store.set_epoch_deadline(deadline_ticks(config.reducer_timeout));
    let res = describe.call(&mut *store, sink);
    let bytes = store.data_mut().finish_call();
    res.map_err(|e| HostError::Instantiate(format!("__describe_module__ failed: {e:#}")))?;
    Ok(bytes)
}

pub(crate) fn instantiate(
    module: &Module,
    linker: &Linker<Env>,
    env: Env,
    config: &HostConfig,
) -> Result<(Store<Env>, Instance, CallReducerFn), HostError> {
    let err = |e: wasmtime::Error| HostError::Instantiate(format!("{e:#}"));
    let mut store = Store::new(module.engine(), env);
    store.limiter(|env| &mut env.limiter);
    store.set_epoch_deadline(deadline_ticks(config.reducer_timeout));
    let instance = linker.instantiate(&mut store, module).map_err(err)?;
    let memory = instance.get_memory(&mut store, "memory").ok_or(HostError::MissingExport("memory"))?;
    store.data_mut().memory = Some(memory);
    let mut preinits: Vec<String> =
        module.exports().map(|e| e.name().to_string()).filter(|n| n.starts_with("__preinit__")).collect();
    preinits.sort();
    for name in preinits {
        let f = instance.get_typed_func::<(), ()>(&mut store, &name).map_err(err)?;
        f.call(&mut store, ()).map_err(|e| HostError::Instantiate(format!("{name} failed: {e:#}")))?;
    }
    if let Ok(setup) = instance.get_typed_func::<u32, i32>(&mut store, "__setup__") {
        let (_, sink) = store.data_mut().start_call(Vec::new(), None);
        let res = setup.call(&mut store, sink);
        let msg = store.data_mut().finish_call();
        match res {
            Ok(0) => {}
            Ok(_) => {
                return Err(HostError::Instantiate(format!("__setup__ failed: {}", String::from_utf8_lossy(&msg))))
            }
            Err(e) => return Err(err(e)),
        }
    }
    let call_reducer = instance
        .get_typed_func(&mut store, "__call_reducer__")
        .map_err(|_| HostError::MissingExport("__call_reducer__"))?;
    Ok((store, instance, call_reducer))
}
