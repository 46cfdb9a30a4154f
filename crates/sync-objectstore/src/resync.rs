//! The `resync-projections` workflow kind: every aggregate document of an object store goes
//! through the database's projection reducer, in (type, id) order.
//!
//! Its parameters are `aggregateType` and `aggregateId` (each optional); its cursor is the last
//! [`AggregateKey`] done; its scope is the type and id it covers; it shows `aggregateTypes`.

use std::collections::BTreeMap;
use std::sync::Arc;

use epoch_control::ControlPlane;
use epoch_core::Identity;
use epoch_core::ReducerArgs;
use epoch_sats::AlgebraicValue;
use epoch_sync::{ConfigContext, Instance, Item, ItemError, Kind, KindSpec, ListError, RunParams, Runner, RunnerError};
use serde_json::{json, Map, Value};

use crate::limits::LIST_PAGE;
use crate::source::{AggregateKey, Source, SourceError};

/// The kind's name, as instances and the API show it.
pub const KIND: &str = "resync-projections";

/// The projection reducer a database's aggregates go through unless its configuration names
/// another.
pub const DEFAULT_PROJECTION_REDUCER: &str = "project_aggregate";

/// What a resync covers, and how fast it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncParams {
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub batch_size: u32,
    pub delay_seconds: u32,
    /// Tries per item before it counts as failed.
    pub max_attempts: u32,
}

/// The kind as the runner knows it.
pub struct ResyncProjectionsSpec;

fn source_error(e: SourceError) -> RunnerError {
    match e {
        SourceError::InvalidKey(_) | SourceError::Unsupported(_) => RunnerError::BadRequest(e.to_string()),
        e => RunnerError::Source(e.to_string()),
    }
}

impl KindSpec for ResyncProjectionsSpec {
    fn name(&self) -> &'static str {
        KIND
    }

    fn config_section(&self) -> &'static str {
        "objectStore"
    }

    fn validate_config(&self, config: &mut Map<String, Value>, cx: &ConfigContext<'_>) -> Result<(), String> {
        let url = config
            .get("objectStore")
            .and_then(|s| s["url"].as_str())
            .ok_or("`objectStore.url` is required (s3://bucket/prefix or file:///path/prefix)")?;
        if !(url.starts_with("s3://") || url.starts_with("file:///")) {
            return Err(format!("`objectStore.url` must start with s3:// or file:///, not {url:?}"));
        }
        if let Some(path) = url.strip_prefix("file://") {
            crate::source::check_file_store(std::path::Path::new(path), cx.data_dir)?;
        }
        let reducer =
            config.get("projectionReducer").and_then(Value::as_str).unwrap_or(DEFAULT_PROJECTION_REDUCER).to_string();
        if !(cx.has_reducer)(&reducer) {
            return Err(format!("the module has no reducer `{reducer}`"));
        }
        config.insert("projectionReducer".into(), json!(reducer));
        Ok(())
    }

    fn scope(&self, i: &Instance) -> String {
        // Unambiguous: a type never contains `/` (check_key_part).
        format!("{}/{}", i.param_str("aggregateType").unwrap_or("*"), i.param_str("aggregateId").unwrap_or("*"))
    }

    fn open(&self, control: &Arc<ControlPlane>, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        Ok(Arc::new(ResyncProjections::for_instance(control, i).map_err(source_error)?))
    }
}

/// A running resync: where its aggregates come from.
struct ResyncProjections {
    source: Source,
}

impl ResyncProjections {
    /// The resync of instance `i`, reading from the database's current sync configuration
    /// (credentials may have been rotated since the instance started).
    fn for_instance(control: &Arc<ControlPlane>, i: &Instance) -> Result<Self, SourceError> {
        let db = Identity::from_hex(&i.database).ok_or_else(|| SourceError::Unsupported(i.source_url.clone()))?;
        let config = control.sync_config(&db).unwrap_or_default();
        let mut store = config.get("objectStore").cloned().unwrap_or_else(|| json!({}));
        if store.get("url").and_then(Value::as_str) != Some(i.source_url.as_str()) {
            store = json!({ "url": i.source_url });
        }
        Ok(Self { source: Source::from_config(&store)? })
    }
}

/// The aggregate types an instance covers.
fn types_of(i: &Instance) -> Vec<String> {
    serde_json::from_value(i.detail.get("aggregateTypes").cloned().unwrap_or_default()).unwrap_or_default()
}

/// Aggregates in scope per type.
fn count(source: &Source, types: &[String], by_id: bool) -> Result<BTreeMap<String, u64>, SourceError> {
    let mut counts = BTreeMap::new();
    for t in types {
        counts.insert(t.clone(), if by_id { 1 } else { source.count(t)? });
    }
    Ok(counts)
}

impl Kind for ResyncProjections {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let keys = next_batch(&self.source, i).map_err(|e| ListError(e.to_string()))?;
        keys.into_iter()
            .map(|key| {
                let cursor = serde_json::to_value(&key).map_err(|e| ListError(e.to_string()))?;
                Ok(Item { key: key.item(), cursor })
            })
            .collect()
    }

    /// Reads the documents (concurrently from S3) and encodes the projection reducer's
    /// arguments: (type, id, version, document).
    fn arguments(&self, _: &Instance, items: &[Item]) -> Vec<Result<ReducerArgs, ItemError>> {
        let keys: Vec<AggregateKey> =
            items.iter().map(|item| serde_json::from_value(item.cursor.clone()).expect("cursors made above")).collect();
        let docs = self.source.get_many(&keys);
        keys.iter()
            .zip(docs)
            .map(|(key, doc)| {
                let (version, state) = doc.map_err(|e| match e {
                    // The runner names the item itself.
                    SourceError::BadDocument { message, .. } => ItemError::Invalid(message),
                    SourceError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        ItemError::NotFound(e.to_string())
                    }
                    e => ItemError::Source(e.to_string()),
                })?;
                Ok(ReducerArgs::Bsatn(epoch_sats::bsatn::to_vec(&AlgebraicValue::product([
                    AlgebraicValue::string(key.aggregate_type.as_str()),
                    AlgebraicValue::string(key.aggregate_id.as_str()),
                    AlgebraicValue::U64(version),
                    AlgebraicValue::string(state),
                ]))))
            })
            .collect()
    }

    fn recount(&self, i: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError> {
        Ok(Some(count(&self.source, &types_of(i), i.param_str("aggregateId").is_some()).map_err(source_error)?))
    }
}

/// Starts resyncing `database` from the object store at `url` through `reducer`.
/// `object_store` is the `objectStore` object of the database's sync configuration.
pub fn start_resync(
    runner: &Arc<Runner>,
    database: Identity,
    caller: Identity,
    object_store: &Value,
    reducer: &str,
    params: ResyncParams,
) -> Result<Instance, RunnerError> {
    let url = object_store.get("url").and_then(Value::as_str).unwrap_or_default().to_string();
    for part in [&params.aggregate_type, &params.aggregate_id].into_iter().flatten() {
        crate::source::check_key_part(part).map_err(source_error)?;
    }
    let mut kind_params = Map::new();
    kind_params.insert("aggregateType".into(), json!(params.aggregate_type));
    kind_params.insert("aggregateId".into(), json!(params.aggregate_id));
    let run = RunParams {
        batch_size: params.batch_size,
        delay_seconds: params.delay_seconds,
        max_attempts: params.max_attempts,
        kind: kind_params,
    };
    let mut instance =
        Instance::new(KIND, database.to_hex(), caller.to_hex(), url, reducer.to_string(), run, None, Map::new());
    // Checked before listing (which may be slow), and again when registering.
    if let Some(id) = runner.running_like(&instance) {
        return Err(RunnerError::Conflict(id));
    }
    let source = Source::from_config(object_store).map_err(source_error)?;
    let all_types = source.types().map_err(source_error)?;
    let types = match &params.aggregate_type {
        Some(t) if !all_types.contains(t) => {
            return Err(RunnerError::NotFound(format!("unknown aggregate type `{t}`")))
        }
        Some(t) => vec![t.clone()],
        None => all_types,
    };
    let counts = count(&source, &types, params.aggregate_id.is_some()).map_err(source_error)?;
    instance.total = Some(counts.values().sum());
    instance.counts = counts;
    instance.detail.insert("aggregateTypes".into(), json!(types));
    runner.start(instance)
}

/// The next keys after the instance's cursor, in (type, id) order.
fn next_batch(source: &Source, i: &Instance) -> Result<Vec<AggregateKey>, SourceError> {
    let size = i.params.batch_size.max(1) as usize;
    let cursor: Option<AggregateKey> = i.cursor.clone().and_then(|c| serde_json::from_value(c).ok());
    if let (Some(t), Some(id)) = (i.param_str("aggregateType"), i.param_str("aggregateId")) {
        return Ok(if cursor.is_some() {
            Vec::new()
        } else {
            vec![AggregateKey { aggregate_type: t.to_string(), aggregate_id: id.to_string() }]
        });
    }
    let mut out = Vec::with_capacity(size);
    for t in &types_of(i) {
        let after = match &cursor {
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
    // The cursor only moves forward: every key listed comes after it, in order.
    debug_assert!(
        out.windows(2).all(|w| w[0] < w[1]) && cursor.as_ref().is_none_or(|c| out.first().is_none_or(|k| k > c)),
        "resync listing out of order after {cursor:?}"
    );
    Ok(out)
}
