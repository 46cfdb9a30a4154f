//! Prometheus metrics: requests by route and status, reducer calls, failures and durations per
//! database, and rows per table (read at scrape time).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
    ws_connections: AtomicI64,
    ws_messages_sent: AtomicU64,
    ws_bytes_sent: AtomicU64,
    ws_queued_bytes: AtomicI64,
    ws_budget_cuts: AtomicU64,
    ws_orphaned_requests: AtomicU64,
}

/// One series of the archive metrics: name, help, type and how to read it from a status.
type ArchiveSeries = (&'static str, &'static str, &'static str, fn(&epoch_archive::ArchiveStatus) -> f64);

/// The archive series of `/metrics`, one line per database and series.
pub fn render_archive(statuses: &[(String, epoch_archive::ArchiveStatus)]) -> String {
    let mut out = String::new();
    let series: [ArchiveSeries; 5] = [
        ("epoch_archive_shipped_end", "One past the last transaction offset in the archive.", "gauge", |s| {
            s.shipped_end as f64
        }),
        ("epoch_archive_lag_seconds", "How long the oldest transaction not yet archived has waited.", "gauge", |s| {
            s.lag.as_secs_f64()
        }),
        ("epoch_archive_segments_total", "Log segments archived.", "counter", |s| s.segments_shipped as f64),
        ("epoch_archive_snapshots_total", "Snapshots archived.", "counter", |s| s.snapshots_shipped as f64),
        ("epoch_archive_failing", "1 while archiving fails (it retries).", "gauge", |s| s.error.is_some() as u8 as f64),
    ];
    for (name, help, kind, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (db, s) in statuses {
            let _ = writeln!(out, "{name}{{database=\"{db}\"}} {}", value(s));
        }
    }
    out
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

    /// A WebSocket connection opened (`1`) or closed (`-1`).
    pub fn ws_connected(&self, delta: i64) {
        self.ws_connections.fetch_add(delta, Ordering::Relaxed);
    }

    /// A message of `bytes` went to a WebSocket client.
    pub fn ws_sent(&self, bytes: usize) {
        self.ws_messages_sent.fetch_add(1, Ordering::Relaxed);
        self.ws_bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A WebSocket client was cut off because all clients together held too much output.
    pub fn ws_budget_cut(&self) {
        self.ws_budget_cuts.fetch_add(1, Ordering::Relaxed);
    }

    /// A request of a WebSocket connection that had ended was skipped instead of answered.
    pub fn ws_orphaned_request(&self) {
        self.ws_orphaned_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes waiting for WebSocket clients grew (or shrank, when negative).
    pub fn ws_queued(&self, delta: i64) {
        self.ws_queued_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every metric, with `tables` as (database, table, rows)
    /// and `clients` per database.
    pub fn render(
        &self,
        tables: &[(String, String, usize)],
        clients: &[(String, epoch_core::clients::ClientStats)],
    ) -> String {
        let mut out = String::new();
        self.render_ws(&mut out);
        render_subscriptions(&mut out, clients);
        self.render_requests(&mut out);
        self.render_reducers(&mut out);
        render_tables(&mut out, tables);
        out
    }

    /// The WebSocket gauges and counters, each with its HELP and TYPE lines.
    fn render_ws(&self, out: &mut String) {
        gauge(
            out,
            "epoch_ws_connections",
            "Open WebSocket connections.",
            "gauge",
            self.ws_connections.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            out,
            "epoch_ws_messages_sent_total",
            "Messages sent to WebSocket clients.",
            "counter",
            self.ws_messages_sent.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            out,
            "epoch_ws_bytes_sent_total",
            "Bytes sent to WebSocket clients.",
            "counter",
            self.ws_bytes_sent.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            out,
            "epoch_ws_queued_bytes",
            "Bytes (estimated) waiting to be sent to WebSocket clients.",
            "gauge",
            self.ws_queued_bytes.load(Ordering::Relaxed).max(0).to_string(),
        );
        gauge(
            out,
            "epoch_ws_budget_cuts_total",
            "WebSocket clients cut off because all clients together held more than --max-ws-total-queued-bytes.",
            "counter",
            self.ws_budget_cuts.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            out,
            "epoch_ws_orphaned_requests_total",
            "Subscriptions and queries skipped because their WebSocket connection had ended before the database reached them.",
            "counter",
            self.ws_orphaned_requests.load(Ordering::Relaxed).to_string(),
        );
    }

    /// HTTP requests by method, matched route and status.
    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP epoch_http_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE epoch_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().iter() {
            let _ = writeln!(
                out,
                "epoch_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
    }

    /// Reducer calls, failures and the duration histogram, per database and reducer.
    fn render_reducers(&self, out: &mut String) {
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
    }
}

/// One metric with its HELP and TYPE lines and a single value.
fn gauge(out: &mut String, name: &str, help: &str, kind: &str, v: String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
}

/// Subscription clients, queries and evaluation work per database.
fn render_subscriptions(out: &mut String, clients: &[(String, epoch_core::clients::ClientStats)]) {
    out.push_str(
        "# HELP epoch_subscription_clients Connected clients per database.\n# TYPE epoch_subscription_clients gauge\n",
    );
    for (db, c) in clients {
        let _ = writeln!(out, "epoch_subscription_clients{{database=\"{db}\"}} {}", c.clients);
    }
    out.push_str("# HELP epoch_subscription_queries Distinct subscribed queries per database.\n# TYPE epoch_subscription_queries gauge\n");
    for (db, c) in clients {
        let _ = writeln!(out, "epoch_subscription_queries{{database=\"{db}\"}} {}", c.queries);
    }
    out.push_str("# HELP epoch_subscription_eval_seconds_total Time spent evaluating subscriptions against transactions.\n# TYPE epoch_subscription_eval_seconds_total counter\n");
    for (db, c) in clients {
        let _ =
            writeln!(out, "epoch_subscription_eval_seconds_total{{database=\"{db}\"}} {}", c.eval_micros as f64 / 1e6);
    }
    out.push_str("# HELP epoch_subscription_evaluations_total Transactions evaluated against subscriptions.\n# TYPE epoch_subscription_evaluations_total counter\n");
    for (db, c) in clients {
        let _ = writeln!(out, "epoch_subscription_evaluations_total{{database=\"{db}\"}} {}", c.evaluations);
    }
    out.push_str("# HELP epoch_views_materialized 2.x view instances (a view for one caller) kept materialized.\n# TYPE epoch_views_materialized gauge\n");
    for (db, c) in clients {
        let _ = writeln!(out, "epoch_views_materialized{{database=\"{db}\"}} {}", c.views_kept);
    }
    out.push_str("# HELP epoch_view_runs_total Times a 2.x view ran (to materialize it, or again after a change to what it read).\n# TYPE epoch_view_runs_total counter\n");
    for (db, c) in clients {
        let _ = writeln!(out, "epoch_view_runs_total{{database=\"{db}\"}} {}", c.view_runs);
    }
}

/// Rows per table, as (database, table, rows).
fn render_tables(out: &mut String, tables: &[(String, String, usize)]) {
    out.push_str("# HELP epoch_table_rows Rows per table.\n# TYPE epoch_table_rows gauge\n");
    for (db, t, n) in tables {
        let _ = writeln!(out, "epoch_table_rows{{database=\"{db}\",table=\"{t}\"}} {n}");
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
