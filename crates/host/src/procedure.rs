//! Procedures (2.x): functions that run outside any transaction on an instance of their own,
//! may sleep and make HTTP requests, and open and commit transactions of their own.
//!
//! A procedure instance never holds the database's writer while it waits: a transaction is
//! opened by borrowing the database's store from its writer ([`ProcedureTx::start`]), which
//! waits while the procedure works on it and takes it back at commit or abort. Sleeping and
//! HTTP are refused while a transaction is open, so the writer is lent only for the
//! transaction's own work, as 2.x holds its write lock.

use std::time::{Duration, Instant};

use epoch_store::Store as Db;
use wasmtime::{Store, TypedFunc};

use crate::abi::Env;
use crate::limits::PROCEDURE_CHECK_TICKS;
use crate::module::{caller_words, describe, instantiate, trap_outcome, CallContext, HostError};
use crate::{ModuleHost, ReducerOutcome};

/// How a procedure's transactions reach the database they run against.
pub trait ProcedureTx: Send {
    /// Takes the database's store from its writer and opens a transaction on it; returns the
    /// store and the transaction's timestamp (microseconds since the Unix epoch).
    fn start(&mut self) -> Result<(Db, i64), String>;
    /// Commits the transaction made on `db` and gives the store back to the writer once the
    /// commit is durable; an error when the commit could not be made (nothing was kept).
    fn commit(&mut self, db: Db) -> Result<(), String>;
    /// Rolls back the transaction made on `db` and gives the store back to the writer.
    fn abort(&mut self, db: Db);
}

/// What a procedure instance's host calls work with, besides the usual [`Env`].
pub struct ProcedureEnv {
    pub tx: Box<dyn ProcedureTx>,
    /// When the procedure's time runs out: sleeps end there at the latest.
    pub deadline: Instant,
    /// Whether HTTP requests may reach loopback addresses (tests only; 2.x's
    /// `allow_loopback_http_for_tests`).
    pub allow_loopback_http: bool,
    /// How long one of its transactions may stay open (the reducer time limit): the writer
    /// waits while it is, so a transaction is held no longer than a reducer could hold it.
    pub tx_timeout: Duration,
    /// When the open transaction (if any) was opened.
    pub tx_opened: Option<Instant>,
}

impl ProcedureEnv {
    /// Whether the procedure is past its own deadline, or its open transaction past its limit.
    fn out_of_time(&self, now: Instant) -> bool {
        now >= self.deadline || self.tx_opened.is_some_and(|t| now.duration_since(t) >= self.tx_timeout)
    }
}

type CallProcedureFn = TypedFunc<(u32, u64, u64, u64, u64, u64, u64, u64, u32, u32), i32>;

/// A module instance set up to run one procedure call.
pub struct ProcedureInstance {
    store: Store<Env>,
    call: CallProcedureFn,
    timeout: Duration,
}

/// What a procedure's instance is made from: cheap to take on the writer, so the instance
/// itself (instantiation and the module's description) is built on the procedure's thread.
pub struct ProcedureFactory {
    module: wasmtime::Module,
    linker: std::sync::Arc<wasmtime::Linker<Env>>,
    config: crate::HostConfig,
    module_identity: epoch_sats::Identity,
    logs: crate::ModuleLogs,
    connection_jwts: crate::abi::ConnectionJwts,
}

impl ModuleHost {
    /// What a procedure's instance is made from (see [`ProcedureFactory::instance`]).
    pub fn procedure_factory(&self) -> ProcedureFactory {
        let parent = self.env();
        ProcedureFactory {
            module: self.module().clone(),
            linker: self.linker().clone(),
            config: self.config().clone(),
            module_identity: parent.module_identity,
            logs: self.logs().clone(),
            connection_jwts: parent.connection_jwts.clone(),
        }
    }
}

impl ProcedureFactory {
    /// A fresh instance of the module for one procedure call, whose transactions go through
    /// `tx`; built on the calling thread.
    pub fn instance(self, tx: Box<dyn ProcedureTx>) -> Result<ProcedureInstance, HostError> {
        let timeout = self.config.procedure_timeout;
        let allow_loopback_http = self.config.procedure_http_loopback;
        let mut env = Env::new(self.module_identity, self.logs, self.config.memory_max_bytes);
        env.connection_jwts = self.connection_jwts;
        let tx_timeout = self.config.reducer_timeout;
        let deadline = Instant::now() + timeout;
        env.procedure = Some(ProcedureEnv { tx, deadline, allow_loopback_http, tx_timeout, tx_opened: None });
        let (mut store, instance, _) = instantiate(&self.module, &self.linker, env, &self.config)?;
        // Compiled code keeps the deadline it entered with, so a transaction's shorter limit is
        // enforced by looking every few ticks rather than by moving the deadline.
        store.epoch_deadline_callback(|ctx| {
            let p = ctx.data().procedure.as_ref().expect("a procedure instance has its procedure env");
            Ok(if p.out_of_time(Instant::now()) {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(PROCEDURE_CHECK_TICKS)
            })
        });
        // A 2.x module registers its functions while describing itself.
        describe(&mut store, &instance, &self.config)?;
        let call = instance
            .get_typed_func(&mut store, "__call_procedure__")
            .map_err(|_| HostError::MissingExport("__call_procedure__"))?;
        Ok(ProcedureInstance { store, call, timeout })
    }
}

impl ProcedureInstance {
    /// Runs procedure `id` with BSATN `args`; returns the BSATN of its return value, or why it
    /// failed. A transaction the procedure left open is rolled back, as 2.x does.
    pub fn call(mut self, id: u32, name: &str, args: Vec<u8>, ctx: CallContext) -> Result<Vec<u8>, ReducerOutcome> {
        let (source, sink) = self.store.data_mut().start_call(args, Some(std::sync::Arc::from(name)));
        self.store.set_epoch_deadline(PROCEDURE_CHECK_TICKS);
        let (s, c) = caller_words(&ctx);
        let res = self
            .call
            .call(&mut self.store, (id, s[0], s[1], s[2], s[3], c[0], c[1], ctx.timestamp_micros as u64, source, sink));
        let env = self.store.data_mut();
        let output = env.finish_call();
        if let Some(db) = env.db.take() {
            env.procedure.as_mut().expect("a procedure instance has its procedure env").tx.abort(db);
            env.logs.push(crate::logs::LogRecord {
                level: crate::LogLevel::Error,
                ts_micros: crate::logs::now_micros(),
                target: None,
                filename: None,
                line_number: None,
                message: "the procedure returned with a transaction still open; it was rolled back".into(),
                function: env.function.as_deref().map(str::to_string),
                system: true,
                trace: None,
            });
        }
        match res {
            Ok(0) => Ok(output),
            Ok(_) => Err(ReducerOutcome::Failed(String::from_utf8_lossy(&output).into_owned())),
            Err(err) => Err(trap_outcome(&err, env.limiter.denied, &mut env.panic_message, self.timeout)),
        }
    }
}
