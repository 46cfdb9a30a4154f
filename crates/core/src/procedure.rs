//! Procedures (2.x): called by a client (HTTP `/call` falls back to one when no reducer has the
//! name) or by a schedule, run on an instance of their own, built and run on the caller's
//! thread, never on the writer (which only looks the procedure up and checks its arguments). Each transaction a procedure opens borrows the database's store from the writer
//! ([`WriterTx`]); its commit goes down the one commit path and is durable before the
//! procedure goes on.

use crossbeam_channel::{bounded, Receiver, Sender};
use epoch_host::procedure::{ProcedureFactory, ProcedureTx};
use epoch_host::{CallContext, ReducerOutcome};
use epoch_sats::{bsatn, AlgebraicType, AlgebraicValue, Typespace};
use epoch_store::Store;

use crate::caller::Caller;
use crate::clock::now_micros;
use crate::database::{invalid_arguments_line, nonexistent_line, CallError, Database, ReducerArgs};
use crate::executor::DatabaseHandle;
use epoch_schema::FunctionVisibility;

/// Why a procedure call gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcedureError {
    /// No procedure of that name (or a private one, to anyone but the owner).
    #[error("No such procedure")]
    NoSuchProcedure,
    #[error("invalid arguments for procedure {procedure}: {message}")]
    InvalidArguments { procedure: String, message: String },
    /// The procedure failed (a panic, a trap, its time limit): 2.x's "fatal error".
    #[error("The module instance encountered a fatal error: {0}")]
    Failed(String),
    #[error("the database is shut down")]
    ShutDown,
}

/// A procedure call ready to run: what its instance is made from, and its arguments.
pub struct PreparedProcedure {
    factory: ProcedureFactory,
    handle: DatabaseHandle,
    id: u32,
    name: String,
    args: Vec<u8>,
    ctx: CallContext,
    typespace: Typespace,
    return_type: AlgebraicType,
}

impl Database {
    /// Looks procedure `name` up for `caller`, checks its visibility and arguments, and sets up
    /// its instance, whose transactions go to this database through `handle`.
    pub fn prepare_procedure(
        &mut self,
        name: &str,
        args: &ReducerArgs,
        caller: Caller,
        is_owner: bool,
        handle: DatabaseHandle,
    ) -> Result<PreparedProcedure, ProcedureError> {
        let visible = |p: &epoch_schema::ProcedureDef| is_owner || p.visibility != FunctionVisibility::Private;
        let Some(id) = self.def().procedure_id(name).filter(|id| visible(&self.def().procedures[*id])) else {
            self.external_error(name, nonexistent_line("procedure", name));
            return Err(ProcedureError::NoSuchProcedure);
        };
        // The shared definition (an `Arc`), not a copy of it.
        let def = self.host().def().clone();
        let procedure = &def.procedures[id];
        let args = self.encode_function_args(name, &procedure.params, args).map_err(|e| match e {
            CallError::InvalidArguments { message, .. } => {
                self.external_error(name, invalid_arguments_line("procedure", name));
                ProcedureError::InvalidArguments { procedure: name.to_string(), message }
            }
            other => ProcedureError::Failed(other.to_string()),
        })?;
        let factory = self.host().procedure_factory();
        let ctx = CallContext {
            sender: caller.identity,
            connection_id: caller.connection_id,
            timestamp_micros: now_micros(),
        };
        Ok(PreparedProcedure {
            factory,
            handle,
            id: id as u32,
            name: name.to_string(),
            args,
            ctx,
            typespace: def.typespace.clone(),
            return_type: procedure.return_type.clone(),
        })
    }
}

impl PreparedProcedure {
    /// Runs the procedure on this thread (it may sleep and wait on the network) and returns its
    /// value.
    pub fn run(self) -> Result<(AlgebraicValue, AlgebraicType, Typespace), ProcedureError> {
        let tx = Box::new(WriterTx { handle: self.handle, back: None, done: None });
        let instance = self.factory.instance(tx).map_err(|e| ProcedureError::Failed(e.to_string()))?;
        let bytes = instance.call(self.id, &self.name, self.args, self.ctx).map_err(|outcome| {
            ProcedureError::Failed(match outcome {
                ReducerOutcome::Failed(msg) => msg,
                other => other.error_message().unwrap_or_default(),
            })
        })?;
        let value = bsatn::decode(&self.typespace, &self.return_type, &bytes)
            .map_err(|e| ProcedureError::Failed(format!("the procedure's return value does not decode: {e}")))?;
        Ok((value, self.return_type, self.typespace))
    }
}

impl DatabaseHandle {
    /// Calls procedure `name` as `caller` and waits for its value with its type. Blocks for as
    /// long as the procedure runs: call it from a thread that may wait, never from the writer.
    pub fn call_procedure(
        &self,
        name: String,
        args: ReducerArgs,
        caller: Caller,
        is_owner: bool,
    ) -> Result<(AlgebraicValue, AlgebraicType, Typespace), ProcedureError> {
        let handle = self.clone();
        let prepared = self
            .read(move |d| d.prepare_procedure(&name, &args, caller, is_owner, handle))
            .map_err(|_| ProcedureError::ShutDown)??;
        prepared.run()
    }
}

/// A procedure's transactions, made on the store the writer lends for each.
struct WriterTx {
    handle: DatabaseHandle,
    /// Where the store goes back to the writer (with whether to commit).
    back: Option<Sender<(Store, bool)>>,
    /// Where the writer says how the commit went, once it is durable.
    done: Option<Receiver<Result<(), String>>>,
}

impl ProcedureTx for WriterTx {
    fn start(&mut self) -> Result<(Store, i64), String> {
        let (lend_tx, lend_rx) = bounded::<Store>(1);
        let (back_tx, back_rx) = bounded::<(Store, bool)>(1);
        let (done_tx, done_rx) = bounded(1);
        self.handle
            .execute(move |d| {
                if let Err(unsent) = lend_tx.send(d.lend_store()) {
                    let _ = d.take_back_store(unsent.0, false);
                    return;
                }
                // The procedure's thread always gives the store back (its instance rolls back a
                // transaction left open); only a crash of that thread could keep it.
                let (store, commit) = back_rx.recv().expect("a procedure kept the database's store");
                let result = d.take_back_store(store, commit);
                match d.durable_barrier() {
                    Some((log, offset)) => log.on_durable(offset, move || drop(done_tx.send(result))),
                    None => drop(done_tx.send(result)),
                }
            })
            .map_err(|e| e.to_string())?;
        let store = lend_rx.recv().map_err(|_| "the database is shut down".to_string())?;
        self.back = Some(back_tx);
        self.done = Some(done_rx);
        Ok((store, now_micros()))
    }

    fn commit(&mut self, store: Store) -> Result<(), String> {
        self.give_back(store, true)
    }

    fn abort(&mut self, store: Store) {
        let _ = self.give_back(store, false);
    }
}

impl WriterTx {
    fn give_back(&mut self, store: Store, commit: bool) -> Result<(), String> {
        let back = self.back.take().expect("a store is given back only after it was lent");
        let done = self.done.take().expect("a lent store has its answer channel");
        back.send((store, commit)).map_err(|_| "the database is shut down".to_string())?;
        done.recv().map_err(|_| "the database is shut down".to_string())?
    }
}

/// Runs a scheduled procedure on a thread of its own, as the database's identity; its schedule
/// row was already deleted (or rescheduled), as 2.x does, since a half-run procedure must not
/// run again. A failure is logged.
pub(crate) fn run_scheduled(handle: DatabaseHandle, name: String, row: Vec<u8>, identity: epoch_sats::Identity) {
    let spawned = std::thread::Builder::new().name(format!("procedure-{name}")).spawn(move || {
        let me = Caller::identity(identity);
        if let Err(e) = handle.call_procedure(name.clone(), ReducerArgs::Bsatn(row), me, true) {
            tracing::warn!(procedure = %name, "scheduled procedure failed: {e}");
        }
    });
    if let Err(e) = spawned {
        tracing::error!("could not start a thread for a scheduled procedure: {e}");
    }
}
