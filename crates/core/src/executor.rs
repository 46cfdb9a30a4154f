//! The single writer of a database: a thread that owns the [`Database`], runs requests one at a
//! time in arrival order, and fires scheduled reducers when they fall due.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::clock::now_micros;
use crate::database::Database;
use crate::limits::{IDLE_WAKE, QUEUE_CAPACITY};

type Job = Box<dyn FnOnce(&mut Database) + Send>;

/// A handle to a database's writer thread. Dropping every handle stops the thread.
#[derive(Clone)]
pub struct DatabaseHandle {
    /// Shared by every handle; the writer holds it weakly, so dropping every handle still
    /// stops the thread.
    tx: Arc<Sender<Job>>,
}

/// Why [`DatabaseHandle::try_execute`] did not queue a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// The writer's queue is full.
    Full,
    /// The writer is gone.
    ShutDown,
}

/// The writer thread is gone (the database was shut down or its thread panicked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the database is shut down")]
pub struct ShutDown;

impl DatabaseHandle {
    /// Starts the writer thread for `db`.
    pub fn spawn(db: Database, name: &str) -> (Self, JoinHandle<()>) {
        let (tx, rx) = bounded::<Job>(QUEUE_CAPACITY);
        let tx = Arc::new(tx);
        let weak = Arc::downgrade(&tx);
        let thread = std::thread::Builder::new()
            .name(format!("db-{name}"))
            // SQL runs here too: give it the stack a query at the operator cap needs.
            .stack_size(epoch_query::limits::MIN_QUERY_STACK_BYTES)
            .spawn(move || writer_loop(db, rx, weak))
            .expect("spawning a database writer thread");
        (Self { tx }, thread)
    }

    /// Runs `f` on the writer and hands its result to `then` (on the writer thread), without
    /// blocking the caller; async callers complete a oneshot channel in `then`.
    pub fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Database) -> R + Send + 'static,
        then: impl FnOnce(R) + Send + 'static,
    ) -> Result<(), ShutDown> {
        self.tx
            .send(Box::new(move |db| {
                let r = f(db);
                // Durable databases answer only once everything the job committed is on disk.
                match db.durable_barrier() {
                    Some((log, offset)) => log.on_durable(offset, move || then(r)),
                    None => then(r),
                }
            }))
            .map_err(|_| ShutDown)
    }

    /// Runs `f` on the writer, in arrival order, without waiting for durability (its caller
    /// learns what it needs another way, e.g. through a client's outbox).
    pub fn execute(&self, f: impl FnOnce(&mut Database) + Send + 'static) -> Result<(), ShutDown> {
        self.tx.send(Box::new(f)).map_err(|_| ShutDown)
    }

    /// As [`DatabaseHandle::execute`], but refuses instead of waiting when the writer's queue
    /// is full (callers on an async runtime must not block).
    pub fn try_execute(&self, f: impl FnOnce(&mut Database) + Send + 'static) -> Result<(), Busy> {
        self.tx.try_send(Box::new(f)).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => Busy::Full,
            crossbeam_channel::TrySendError::Disconnected(_) => Busy::ShutDown,
        })
    }

    /// Runs `f` on the writer and waits for its result only, not for durability: for reads
    /// that may see changes not yet on disk (metrics), which must answer while the disk is
    /// full. Never for an answer that acknowledges a write.
    pub fn read<R: Send + 'static>(&self, f: impl FnOnce(&mut Database) -> R + Send + 'static) -> Result<R, ShutDown> {
        let (rtx, rrx) = bounded(1);
        self.execute(move |db| {
            let _ = rtx.send(f(db));
        })?;
        rrx.recv().map_err(|_| ShutDown)
    }

    /// Runs `f` on the writer and waits for its result.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Database) -> R + Send + 'static) -> Result<R, ShutDown> {
        let (rtx, rrx) = bounded(1);
        self.submit(f, move |r| {
            let _ = rtx.send(r);
        })?;
        rrx.recv().map_err(|_| ShutDown)
    }
}

fn writer_loop(mut db: Database, rx: Receiver<Job>, handle: Weak<Sender<Job>>) {
    loop {
        let now = now_micros();
        db.run_due(now);
        for (name, row) in db.take_due_procedures() {
            let Some(tx) = handle.upgrade() else { return };
            crate::procedure::run_scheduled(DatabaseHandle { tx }, name, row, db.identity());
        }
        let wait = match db.next_due_micros() {
            Some(due) => Duration::from_micros(due.saturating_sub(now_micros()).max(0) as u64).min(IDLE_WAKE),
            None => IDLE_WAKE,
        };
        match rx.recv_timeout(wait) {
            Ok(job) => job(&mut db),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
