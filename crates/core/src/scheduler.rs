//! Scheduled reducers: rows of a module's scheduled tables become timed calls.
//!
//! The scheduler watches committed deltas of scheduled tables: an inserted row is queued at its
//! `ScheduleAt` (`Time(t)` at `t`, `Interval(d)` at now + d), a deleted row is dropped from the
//! queue. When a row fires, its reducer runs with the row as argument and the module's identity
//! as sender; afterwards, as in SpacetimeDB 1.3, a one-shot row is deleted and an interval row is
//! queued again at now + d.
//!
//! Intervals follow 1.3's rule: a negative interval counts by its magnitude when the row is
//! inserted, and re-queues with no delay; zero means "again at once". So one runaway schedule
//! cannot starve the database, scheduled runs are capped at [`MAX_SCHEDULED_RUNS_PER_SECOND`]
//! per database: past the cap, due calls wait for the next second (late, never dropped), and a
//! log line says so once per second.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use epoch_host::{ModuleHost, ReducerOutcome, ReducerResult};
use epoch_sats::AlgebraicValue;
use epoch_schema::ModuleDef;
use epoch_store::{Store, TxDelta};

use crate::clock::now_micros;
use crate::limits::MAX_SCHEDULED_RUNS_PER_SECOND;

#[derive(Debug, Clone)]
struct ScheduledTable {
    reducer: String,
    at_column: u16,
    id_column: u16,
    /// Name of the unique index on the id column.
    id_index: Option<String>,
}

/// A scheduled call that is due.
#[derive(Debug, Clone)]
pub struct Job {
    pub table: u32,
    pub id: u64,
    pub due_micros: i64,
    pub reducer: String,
}

/// `ScheduleAt` decoded.
enum ScheduleAt {
    Interval(i64),
    Time(i64),
}

fn schedule_at(v: &AlgebraicValue) -> Option<ScheduleAt> {
    let AlgebraicValue::Sum(s) = v else { return None };
    let micros = match s.value.as_product()? {
        [AlgebraicValue::I64(m)] => *m,
        _ => return None,
    };
    match s.tag {
        0 => Some(ScheduleAt::Interval(micros)),
        1 => Some(ScheduleAt::Time(micros)),
        _ => None,
    }
}

const SECOND_MICROS: i64 = 1_000_000;

/// The queue of scheduled calls of one database.
#[derive(Debug, Default)]
pub struct Scheduler {
    tables: HashMap<u32, ScheduledTable>,
    queue: BTreeSet<(i64, u32, u64)>,
    due_of: HashMap<(u32, u64), i64>,
    /// The start of the current one-second window of the run cap, and the runs in it.
    window_start: i64,
    runs_in_window: u32,
    /// Whether this window's throttling was logged.
    throttle_logged: bool,
}

/// Microseconds from now until an `Interval(d)` row first fires: 1.3 takes a negative
/// interval's magnitude.
fn first_delay(d: i64) -> i64 {
    d.saturating_abs()
}

/// Microseconds until an interval row fires again after a run: 1.3 re-queues a negative
/// interval with no delay.
fn repeat_delay(d: i64) -> i64 {
    d.max(0)
}

impl Scheduler {
    /// The schedules of `def`'s tables, by their ids in `store` (which may number tables in
    /// another order than the module lists them: ids survive module updates).
    pub fn new(def: &ModuleDef, store: &epoch_store::Store) -> Self {
        let tables = def
            .tables
            .iter()
            .filter_map(|t| {
                let s = t.schedule.as_ref()?;
                let i = store.table_id(&t.name)?;
                let id_index =
                    t.indexes.iter().find(|ix| ix.algorithm.columns() == [s.id_column]).map(|ix| ix.name.clone());
                Some((
                    i,
                    ScheduledTable {
                        reducer: s.reducer_name.clone(),
                        at_column: s.at_column,
                        id_column: s.id_column,
                        id_index,
                    },
                ))
            })
            .collect();
        Self { tables, ..Default::default() }
    }

    fn unqueue(&mut self, table: u32, id: u64) {
        if let Some(due) = self.due_of.remove(&(table, id)) {
            self.queue.remove(&(due, table, id));
        }
    }

    fn enqueue(&mut self, table: u32, id: u64, due: i64) {
        self.unqueue(table, id);
        self.queue.insert((due, table, id));
        self.due_of.insert((table, id), due);
    }

    /// Updates the queue from a committed transaction.
    pub fn observe(&mut self, store: &Store, delta: &TxDelta, now: i64) {
        for td in &delta.tables {
            let Some(st) = self.tables.get(&td.table_id).cloned() else { continue };
            let Ok(table) = store.table(td.table_id) else { continue };
            let id_of = |row: &[u8]| match table.schema.column_value(row, st.id_column) {
                Ok(AlgebraicValue::U64(id)) => Some(id),
                _ => None,
            };
            for row in &td.deletes {
                if let Some(id) = id_of(row) {
                    self.unqueue(td.table_id, id);
                }
            }
            for row in &td.inserts {
                let Some(id) = id_of(row) else { continue };
                let at = table.schema.column_value(row, st.at_column).ok();
                match at.as_ref().and_then(schedule_at) {
                    Some(ScheduleAt::Time(t)) => self.enqueue(td.table_id, id, t),
                    Some(ScheduleAt::Interval(d)) => self.enqueue(td.table_id, id, now.saturating_add(first_delay(d))),
                    None => tracing::warn!(table = table.schema.name(), id, "scheduled row has no valid ScheduleAt"),
                }
            }
        }
    }

    /// When the earliest queued call may run: when it is due, or when the run cap's window
    /// ends if this one is used up.
    pub fn next_due(&self) -> Option<i64> {
        let due = self.queue.first().map(|(due, _, _)| *due)?;
        if self.runs_in_window >= MAX_SCHEDULED_RUNS_PER_SECOND {
            return Some(due.max(self.window_start.saturating_add(SECOND_MICROS)));
        }
        Some(due)
    }

    /// Takes the earliest call due at or before `now`, unless this second's runs are used up.
    pub fn pop_due(&mut self, now: i64) -> Option<Job> {
        let &(due, table, id) = self.queue.first().filter(|(due, _, _)| *due <= now)?;
        if now >= self.window_start.saturating_add(SECOND_MICROS) || now < self.window_start {
            (self.window_start, self.runs_in_window, self.throttle_logged) = (now, 0, false);
        }
        if self.runs_in_window >= MAX_SCHEDULED_RUNS_PER_SECOND {
            if !self.throttle_logged {
                self.throttle_logged = true;
                tracing::warn!(
                    limit = MAX_SCHEDULED_RUNS_PER_SECOND,
                    queued = self.queue.len(),
                    "scheduled reducers are due faster than the per-database limit; the rest wait for the next second"
                );
            }
            return None;
        }
        self.runs_in_window += 1;
        self.queue.pop_first();
        self.due_of.remove(&(table, id));
        let reducer = self.tables.get(&table)?.reducer.clone();
        Some(Job { table, id, due_micros: due, reducer })
    }

    fn find_row<'s>(&self, store: &'s Store, job: &Job) -> Option<(u32, &'s [u8])> {
        let st = self.tables.get(&job.table)?;
        let table = store.table(job.table).ok()?;
        if let Some(index) = st.id_index.as_deref().and_then(|n| store.index_id(n)) {
            let (_, ix) = store.index(index).ok()?;
            let row = ix.get_unique(&AlgebraicValue::U64(job.id))?;
            return Some((row, table.get(row)?));
        }
        table.iter().find(
            |(_, r)| matches!(table.schema.column_value(r, st.id_column), Ok(AlgebraicValue::U64(i)) if i == job.id),
        )
    }

    /// The BSATN row a job fires with, if the row still exists (it may have been cancelled).
    pub fn row_of(&self, store: &Store, job: &Job) -> Option<Vec<u8>> {
        self.find_row(store, job).map(|(_, r)| r.to_vec())
    }

    /// After a job's reducer ran: deletes a one-shot row, or queues an interval row again.
    pub fn finish(&mut self, host: &mut ModuleHost, job: &Job) -> ReducerResult {
        let mut result = ReducerResult {
            outcome: ReducerOutcome::Committed,
            delta: None,
            duration: Duration::ZERO,
            scheduled_immediate: Vec::new(),
        };
        let Some(st) = self.tables.get(&job.table).cloned() else { return result };
        let found = self.find_row(host.db(), job).map(|(id, row)| {
            (id, host.db().table(job.table).ok().and_then(|t| t.schema.column_value(row, st.at_column).ok()))
        });
        let Some((row_id, at)) = found else { return result };
        match at.as_ref().and_then(schedule_at) {
            Some(ScheduleAt::Interval(d)) => {
                self.enqueue(job.table, job.id, now_micros().saturating_add(repeat_delay(d)))
            }
            _ => {
                let db = host.db_mut();
                db.begin();
                let deleted = db.delete_rows(job.table, &[row_id]);
                match deleted.and_then(|_| db.commit()) {
                    Ok(delta) => result.delta = Some(delta),
                    Err(e) => {
                        db.rollback();
                        tracing::warn!("could not delete a fired one-shot schedule row: {e}");
                    }
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_1_3_and_runs_are_capped_per_second() {
        assert_eq!((first_delay(-5), repeat_delay(-5)), (5, 0));
        assert_eq!((first_delay(0), repeat_delay(0)), (0, 0));
        assert_eq!(first_delay(i64::MIN), i64::MAX);
        let mut s = Scheduler::default();
        s.tables.insert(0, ScheduledTable { reducer: "tick".into(), at_column: 1, id_column: 0, id_index: None });
        // Three thousand rows all due now: one second gives at most the cap.
        for id in 0..3_000 {
            s.enqueue(0, id, 0);
        }
        let now = 10 * SECOND_MICROS;
        let mut ran = 0;
        while s.pop_due(now).is_some() {
            ran += 1;
        }
        assert_eq!(ran, MAX_SCHEDULED_RUNS_PER_SECOND);
        assert_eq!(s.next_due(), Some(now + SECOND_MICROS), "the rest wait for the next window");
        assert!(s.pop_due(now + SECOND_MICROS - 1).is_none());
        let mut next = 0;
        while s.pop_due(now + SECOND_MICROS).is_some() {
            next += 1;
        }
        assert_eq!(next, MAX_SCHEDULED_RUNS_PER_SECOND, "late, never dropped");
        assert_eq!(s.queue.len(), 1_000);
    }
}
