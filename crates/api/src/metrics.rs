//! Prometheus metrics: requests by route and status, reducer calls, failures and durations per
//! database, and rows per table (read at scrape time).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use crate::AppState;

/// Upper bounds of the reducer duration histogram, in seconds.
const BUCKETS: [f64; 12] = [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 10.0];

#[derive(Default)]
struct ReducerStats {
    calls: u64,
    failures: u64,
    bucket_counts: [u64; BUCKETS.len()],
    sum_seconds: f64,
}

/// Counters kept by the server.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    reducers: Mutex<BTreeMap<(String, String), ReducerStats>>,
}

impl Metrics {
    /// Records one reducer call of `database` (hex identity).
    pub fn reducer_call(&self, database: &str, reducer: &str, duration: Duration, failed: bool) {
        let mut m = self.reducers.lock();
        let s = m.entry((database.to_string(), reducer.to_string())).or_default();
        s.calls += 1;
        s.failures += failed as u64;
        let secs = duration.as_secs_f64();
        s.sum_seconds += secs;
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                s.bucket_counts[i] += 1;
            }
        }
    }

    /// The Prometheus text exposition of every metric, with `tables` as (database, table, rows).
    pub fn render(&self, tables: &[(String, String, usize)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP epoch_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE epoch_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "epoch_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let reducers = self.reducers.lock();
        out.push_str(
            "# HELP epoch_reducer_calls_total Reducer calls per database.\n# TYPE epoch_reducer_calls_total counter\n",
        );
        for ((db, r), s) in reducers.iter() {
            let _ = writeln!(out, "epoch_reducer_calls_total{{database=\"{db}\",reducer=\"{r}\"}} {}", s.calls);
        }
        out.push_str("# HELP epoch_reducer_failures_total Reducer calls that did not commit.\n# TYPE epoch_reducer_failures_total counter\n");
        for ((db, r), s) in reducers.iter() {
            let _ = writeln!(out, "epoch_reducer_failures_total{{database=\"{db}\",reducer=\"{r}\"}} {}", s.failures);
        }
        out.push_str("# HELP epoch_reducer_duration_seconds Reducer call durations.\n# TYPE epoch_reducer_duration_seconds histogram\n");
        for ((db, r), s) in reducers.iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "epoch_reducer_duration_seconds_bucket{{database=\"{db}\",reducer=\"{r}\",le=\"{b}\"}} {}",
                    s.bucket_counts[i]
                );
            }
            let _ = writeln!(
                out,
                "epoch_reducer_duration_seconds_bucket{{database=\"{db}\",reducer=\"{r}\",le=\"+Inf\"}} {}",
                s.calls
            );
            let _ = writeln!(
                out,
                "epoch_reducer_duration_seconds_sum{{database=\"{db}\",reducer=\"{r}\"}} {}",
                s.sum_seconds
            );
            let _ =
                writeln!(out, "epoch_reducer_duration_seconds_count{{database=\"{db}\",reducer=\"{r}\"}} {}", s.calls);
        }
        out.push_str("# HELP epoch_table_rows Rows per table.\n# TYPE epoch_table_rows gauge\n");
        for (db, t, n) in tables {
            let _ = writeln!(out, "epoch_table_rows{{database=\"{db}\",table=\"{t}\"}} {n}");
        }
        out
    }
}

/// Middleware counting every request by matched route and status.
pub async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    *state.metrics.requests.lock().entry((method, route, resp.status().as_u16())).or_default() += 1;
    resp
}
