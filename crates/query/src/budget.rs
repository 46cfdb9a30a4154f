//! The work one request may make the database do while it evaluates queries from scratch (a
//! subscription's initial rows). Evaluation runs on the database's writer, so a query that
//! visits millions of rows (a join whose keys repeat, a scan of a huge table) would hold every
//! other caller's commit behind it; the budget stops it part-way with a clear error instead of
//! building the whole answer first and refusing it afterwards.

use std::time::{Duration, Instant};

use crate::limits::{CLOCK_EVERY, INITIAL_EVALUATION_TIME_LIMIT, MAX_INITIAL_ROWS_VISITED};
use crate::SqlError;

/// What is left of one request's evaluation budget; shared by every query of the request.
#[derive(Debug, Clone)]
pub struct EvalBudget {
    visits_left: u64,
    visit_limit: u64,
    rows_left: usize,
    row_limit: usize,
    started: Instant,
    time_limit: Duration,
    since_clock: u64,
}

impl EvalBudget {
    /// A budget of `visit_limit` visits, `row_limit` rows returned and `time_limit`.
    pub fn new(visit_limit: u64, row_limit: usize, time_limit: Duration) -> Self {
        Self {
            visits_left: visit_limit,
            visit_limit,
            rows_left: row_limit,
            row_limit,
            started: Instant::now(),
            time_limit,
            since_clock: 0,
        }
    }

    /// The default bounds with `row_limit` rows returned at most.
    pub fn with_row_limit(row_limit: usize) -> Self {
        Self::new(MAX_INITIAL_ROWS_VISITED, row_limit, INITIAL_EVALUATION_TIME_LIMIT)
    }

    /// No bound at all: for evaluations whose size the server controls (a module's own
    /// row-level security filters).
    pub fn unlimited() -> Self {
        Self::new(u64::MAX, usize::MAX, Duration::MAX)
    }

    /// Counts one row visited.
    pub fn visit(&mut self) -> Result<(), SqlError> {
        if self.visits_left == 0 {
            return Err(SqlError::TooMuchWork(self.visit_limit));
        }
        self.visits_left -= 1;
        self.since_clock += 1;
        if self.since_clock >= CLOCK_EVERY {
            self.since_clock = 0;
            if self.started.elapsed() > self.time_limit {
                return Err(SqlError::TooSlow(self.time_limit.as_millis() as u64));
            }
        }
        Ok(())
    }

    /// Counts one row returned.
    pub fn emit(&mut self) -> Result<(), SqlError> {
        if self.rows_left == 0 {
            return Err(SqlError::TooManyInitialRows(self.row_limit));
        }
        self.rows_left -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_rows_and_time_are_each_bounded() {
        let mut b = EvalBudget::new(3, 10, Duration::MAX);
        for _ in 0..3 {
            b.visit().unwrap();
        }
        assert_eq!(b.visit(), Err(SqlError::TooMuchWork(3)));
        let mut b = EvalBudget::new(100, 1, Duration::MAX);
        b.emit().unwrap();
        assert_eq!(b.emit(), Err(SqlError::TooManyInitialRows(1)));
        let mut b = EvalBudget::new(u64::MAX, 1, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        let err = (0..CLOCK_EVERY).try_for_each(|_| b.visit()).unwrap_err();
        assert_eq!(err, SqlError::TooSlow(0));
    }
}
