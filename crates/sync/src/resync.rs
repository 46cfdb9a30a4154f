//! The `resync-projections` workflow kind: every aggregate document of an object store goes
//! through the database's projection reducer, in (type, id) order.

use std::collections::BTreeMap;
use std::sync::Arc;

use epoch_core::control::{from_hex_be, hex_be};
use epoch_core::ControlPlane;
use epoch_sats::AlgebraicValue;

use crate::source::{AggregateKey, Source, SourceError, LIST_PAGE};
use crate::workflow::{now_ms, Instance, Kind, ResyncParams, Runner, RunnerError, Status};

/// The kind's name, as instances and the API show it.
pub const KIND: &str = "resync-projections";

/// A running resync: where its aggregates come from.
pub(crate) struct ResyncProjections {
    source: Source,
}

impl ResyncProjections {
    /// The resync of instance `i`, reading from the database's current sync configuration
    /// (credentials may have been rotated since the instance started).
    pub(crate) fn for_instance(control: &Arc<ControlPlane>, i: &Instance) -> Result<Self, SourceError> {
        let db = from_hex_be(&i.database).ok_or_else(|| SourceError::Unsupported(i.source_url.clone()))?;
        let config = control.sync_config(&db).unwrap_or_default();
        let mut store = config.get("objectStore").cloned().unwrap_or_else(|| serde_json::json!({}));
        if store.get("url").and_then(serde_json::Value::as_str) != Some(i.source_url.as_str()) {
            store = serde_json::json!({ "url": i.source_url });
        }
        Ok(Self { source: Source::from_config(&store)? })
    }
}

/// Aggregates in scope per type.
fn count(source: &Source, types: &[String], params: &ResyncParams) -> Result<BTreeMap<String, u64>, SourceError> {
    let mut counts = BTreeMap::new();
    for t in types {
        counts.insert(t.clone(), if params.aggregate_id.is_some() { 1 } else { source.count(t)? });
    }
    Ok(counts)
}

impl Kind for ResyncProjections {
    fn next_batch(&self, i: &Instance) -> Result<Vec<AggregateKey>, String> {
        next_batch(&self.source, i).map_err(|e| e.to_string())
    }

    /// Reads the documents (concurrently from S3) and encodes the projection reducer's
    /// arguments: (type, id, version, document).
    fn arguments(&self, _: &Instance, keys: &[AggregateKey]) -> Vec<Result<Vec<u8>, String>> {
        let docs = self.source.get_many(keys);
        keys.iter()
            .zip(docs)
            .map(|(key, doc)| {
                let (version, state) = doc.map_err(|e| match e {
                    // The runner names the item itself.
                    SourceError::BadDocument { message, .. } => message,
                    e => e.to_string(),
                })?;
                Ok(epoch_sats::bsatn::to_vec(&AlgebraicValue::product([
                    AlgebraicValue::string(key.aggregate_type.as_str()),
                    AlgebraicValue::string(key.aggregate_id.as_str()),
                    AlgebraicValue::U64(version),
                    AlgebraicValue::string(state),
                ])))
            })
            .collect()
    }

    fn recount(&self, i: &Instance) -> Result<BTreeMap<String, u64>, RunnerError> {
        Ok(count(&self.source, &i.aggregate_types, &i.params)?)
    }
}

impl Runner {
    /// Starts resyncing `database` from the object store at `url` through `reducer`.
    /// `object_store` is the `objectStore` object of the database's sync configuration.
    pub fn start_resync(
        self: &Arc<Self>,
        database: [u8; 32],
        caller: [u8; 32],
        object_store: &serde_json::Value,
        reducer: &str,
        params: ResyncParams,
    ) -> Result<Instance, RunnerError> {
        let url = object_store.get("url").and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let db_hex = hex_be(&database);
        for part in [&params.aggregate_type, &params.aggregate_id].into_iter().flatten() {
            crate::source::check_key_part(part)?;
        }
        // Checked before listing (which may be slow), and again when registering.
        if let Some(id) = self.running_in((&db_hex, KIND, &params.aggregate_type, &params.aggregate_id)) {
            return Err(RunnerError::Conflict(id));
        }
        let source = Source::from_config(object_store)?;
        let all_types = source.types()?;
        let types = match &params.aggregate_type {
            Some(t) if !all_types.contains(t) => return Err(RunnerError::UnknownType(t.clone())),
            Some(t) => vec![t.clone()],
            None => all_types,
        };
        let counts = count(&source, &types, &params)?;
        let now = now_ms();
        let instance = Instance {
            id: format!("wf_{}", uuid::Uuid::new_v4().simple()),
            kind: KIND.into(),
            database: db_hex,
            caller: hex_be(&caller),
            source_url: url,
            reducer: reducer.to_string(),
            params: params.clone(),
            status: Status::Queued,
            aggregate_types: types,
            total: counts.values().sum(),
            done: 0,
            succeeded: 0,
            failed: 0,
            counts,
            errors: Vec::new(),
            started_at: now,
            updated_at: now,
            ended_at: None,
            cursor: None,
            batches_done: 0,
            run: 0,
            recovered: 0,
            database_seq: None,
        };
        self.start(instance)
    }
}

/// The next keys after the instance's cursor, in (type, id) order.
fn next_batch(source: &Source, i: &Instance) -> Result<Vec<AggregateKey>, SourceError> {
    let size = i.params.batch_size.max(1) as usize;
    if let (Some(t), Some(id)) = (&i.params.aggregate_type, &i.params.aggregate_id) {
        return Ok(if i.cursor.is_some() {
            Vec::new()
        } else {
            vec![AggregateKey { aggregate_type: t.clone(), aggregate_id: id.clone() }]
        });
    }
    let mut out = Vec::with_capacity(size);
    for t in &i.aggregate_types {
        let after = match &i.cursor {
            Some(c) if c.aggregate_type == *t => Some(c.aggregate_id.as_str()),
            Some(c) if c.aggregate_type > *t => continue,
            _ => None,
        };
        let need = size - out.len();
        for id in source.list(t, after, need.min(LIST_PAGE))? {
            out.push(AggregateKey { aggregate_type: t.clone(), aggregate_id: id });
        }
        if out.len() >= size {
            break;
        }
    }
    Ok(out)
}
