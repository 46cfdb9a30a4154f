//! A workflow instance: data, saved as one row of the system database after every batch.
//!
//! The runner owns the fields every kind shares (status, counts, pacing, the batch being
//! applied); a kind owns its parameters (`params` beyond the runner's three), its cursor (opaque
//! JSON) and any fields it shows with the instance (`detail`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{MAX_ERRORS, MAX_RESULTS};

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Paused,
    Complete,
    Errored,
    Terminated,
}

impl Status {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Complete | Self::Errored | Self::Terminated)
    }
}

/// How an instance goes: the runner's pacing, and the kind's own parameters beside them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunParams {
    /// Items per batch.
    pub batch_size: u32,
    /// The pause between batches.
    pub delay_seconds: u32,
    /// Tries per item before it counts as failed.
    pub max_attempts: u32,
    /// The kind's parameters (for a resync: `aggregateType`, `aggregateId`).
    #[serde(flatten)]
    pub kind: Map<String, Value>,
}

/// One item's outcome, kept for kinds that answer with every item (a force-sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    pub item: String,
    /// An HTTP status for the item's step: 200 applied, 404 gone at the source, 422 refused by
    /// the reducer or malformed, 502 the source failed, 503 the database is gone.
    pub status: u16,
    /// The id of the step that applied it: `<instance>#<run>/<batch>/<item>`.
    pub request_id: String,
    pub error: Option<String>,
}

/// A workflow instance, exactly as it is saved after every batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub kind: String,
    /// The database, 64 hex digits.
    pub database: String,
    /// Who started it (reducers run as this identity), 64 hex digits.
    pub caller: String,
    /// Where the items come from (a URL), for the record.
    pub source_url: String,
    pub reducer: String,
    pub params: RunParams,
    pub status: Status,
    /// Items in scope; `None` for a stream, whose end is not known in advance.
    pub total: Option<u64>,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Items in scope per group (for a resync: per aggregate type).
    pub counts: BTreeMap<String, u64>,
    pub errors: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub started_at: u64,
    pub updated_at: u64,
    pub ended_at: Option<u64>,
    /// Where the run resumes: the kind's own position after the last item done.
    pub cursor: Option<Value>,
    /// Batches finished in the current run.
    #[serde(default)]
    pub batches_done: u64,
    /// Starts of this instance (a restart begins a new run); tells runs' steps apart.
    #[serde(default)]
    pub run: u32,
    /// Items found already applied when resuming after a crash: counted as succeeded, not run
    /// again.
    #[serde(default)]
    pub recovered: u64,
    /// Every item's outcome, in order, for kinds that keep them (at most [`MAX_RESULTS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ItemResult>,
    /// Fields the kind shows with the instance (for a resync: `aggregateTypes`).
    #[serde(flatten)]
    pub detail: Map<String, Value>,
    /// Which incarnation of the database the instance works on (its creation sequence in this
    /// process): a database deleted and created again under the same identity is another
    /// database, and the instance must never touch it.
    #[serde(skip)]
    pub(crate) database_seq: Option<u64>,
}

impl Instance {
    /// A new, queued instance of `kind`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: &str,
        database: String,
        caller: String,
        source_url: String,
        reducer: String,
        params: RunParams,
        counts: Option<BTreeMap<String, u64>>,
        detail: Map<String, Value>,
    ) -> Self {
        let now = super::now_ms();
        Self {
            id: format!("wf_{}", uuid::Uuid::new_v4().simple()),
            kind: kind.to_string(),
            database,
            caller,
            source_url,
            reducer,
            params,
            status: Status::Queued,
            total: counts.as_ref().map(|c| c.values().sum()),
            done: 0,
            succeeded: 0,
            failed: 0,
            counts: counts.unwrap_or_default(),
            errors: Vec::new(),
            started_at: now,
            updated_at: now,
            ended_at: None,
            cursor: None,
            batches_done: 0,
            run: 0,
            recovered: 0,
            results: Vec::new(),
            detail,
            database_seq: None,
        }
    }

    /// Estimated milliseconds left, from the rate so far (none for a stream).
    pub fn eta_ms(&self) -> Option<u64> {
        let total = self.total?;
        if self.status.is_finished() || self.done == 0 {
            return None;
        }
        let elapsed = self.updated_at.saturating_sub(self.started_at);
        Some(elapsed * (total.saturating_sub(self.done)) / self.done)
    }

    /// The name this run's steps carry in the database's log.
    pub(crate) fn step_instance(&self) -> String {
        format!("{}#{}", self.id, self.run)
    }

    /// The id of the step that applies `item` in batch `batch` of this run (as item results
    /// report it).
    pub fn step_request_id(&self, batch: u64, item: &str) -> String {
        format!("{}/{batch}/{item}", self.step_instance())
    }

    /// A kind parameter as a string, if set.
    pub fn param_str(&self, name: &str) -> Option<&str> {
        self.params.kind.get(name).and_then(Value::as_str)
    }

    /// Checks the counts the runner keeps: every item done either succeeded or failed, and
    /// items recovered after a crash are among those that succeeded. (`done` may pass `total`:
    /// a source that grows during a run is read as it goes.)
    pub(crate) fn debug_check(&self) {
        debug_assert_eq!(self.done, self.succeeded + self.failed, "instance {}: done != succeeded + failed", self.id);
        debug_assert!(self.recovered <= self.succeeded, "instance {}: more recovered than succeeded", self.id);
        debug_assert!(self.results.len() <= MAX_RESULTS && self.errors.len() <= MAX_ERRORS + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Instances saved before kinds owned their parameters (a resync's row of an earlier
    /// version) still load, and save back in the same shape.
    #[test]
    fn rows_of_the_resync_only_shape_still_load() {
        let old = serde_json::json!({
            "id": "wf_1", "kind": "resync-projections", "database": "00", "caller": "11",
            "sourceUrl": "file:///x", "reducer": "project_aggregate",
            "params": {"aggregateType": "order", "aggregateId": null, "batchSize": 20, "delaySeconds": 3, "maxAttempts": 3},
            "status": "running", "aggregateTypes": ["order"], "total": 5, "done": 2, "succeeded": 2, "failed": 0,
            "counts": {"order": 5}, "errors": [], "startedAt": 1, "updatedAt": 2, "endedAt": null,
            "cursor": {"aggregateType": "order", "aggregateId": "b"}, "batchesDone": 1, "run": 0, "recovered": 0
        });
        let i: Instance = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(i.params.batch_size, 20);
        assert_eq!(i.param_str("aggregateType"), Some("order"));
        assert_eq!(i.total, Some(5));
        assert_eq!(i.detail["aggregateTypes"], serde_json::json!(["order"]));
        assert_eq!(serde_json::to_value(&i).unwrap(), old);
    }
}
