//! The `force-sync-shadows` workflow kind: every named shadow of one thing (and its classic
//! shadow when asked) goes through the live ingest path, in name order.
//!
//! Its parameters are `thingName` and `includeClassic`; its cursor is the last shadow name
//! done; its scope is the thing; it keeps every shadow's result, for the caller that waits.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use epoch_control::ControlPlane;
use epoch_core::Identity;
use epoch_core::{Caller, Database, ReducerArgs, WorkflowStep};
use epoch_sync::{ConfigContext, Instance, Item, ItemError, Kind, KindSpec, ListError, RunParams, Runner, RunnerError};
use serde_json::{json, Map, Value};

use crate::client::{ClientError, ShadowClient};
use crate::document::{self, ShadowDocument, CLASSIC_SHADOW, DEFAULT_SHADOW_REDUCER};

/// The kind's name, as instances and the API show it.
pub const KIND: &str = "force-sync-shadows";

/// The kind as the runner knows it.
pub struct ForceSyncSpec;

impl KindSpec for ForceSyncSpec {
    fn name(&self) -> &'static str {
        KIND
    }

    fn config_section(&self) -> &'static str {
        "deviceShadows"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &["secretAccessKey", "sessionToken", "mqttPassword"]
    }

    fn validate_config(&self, config: &mut Map<String, Value>, cx: &ConfigContext<'_>) -> Result<(), String> {
        let section = config
            .get_mut("deviceShadows")
            .and_then(Value::as_object_mut)
            .ok_or("`deviceShadows` must be an object")?;
        if let Some(endpoint) = section.get("endpoint") {
            let ok = endpoint.as_str().is_some_and(|e| e.starts_with("https://") || e.starts_with("http://"));
            if !ok {
                return Err("`deviceShadows.endpoint` must be an http(s) URL".into());
            }
        }
        for field in ["region", "accessKeyId", "secretAccessKey", "sessionToken", "mqttUsername", "mqttPassword"] {
            if section.get(field).is_some_and(|v| !v.is_string()) {
                return Err(format!("`deviceShadows.{field}` must be a string"));
            }
        }
        if let Some(url) = section.get("mqttUrl") {
            crate::mqtt::MqttTarget::parse(url.as_str().unwrap_or_default(), section.get("mqttClientId"))
                .map_err(|e| format!("`deviceShadows.mqttUrl`: {e}"))?;
        }
        let reducer =
            section.get("shadowReducer").and_then(Value::as_str).unwrap_or(DEFAULT_SHADOW_REDUCER).to_string();
        if !(cx.has_reducer)(&reducer) {
            return Err(format!("the module has no reducer `{reducer}` (deviceShadows.shadowReducer)"));
        }
        section.insert("shadowReducer".into(), json!(reducer));
        Ok(())
    }

    fn scope(&self, i: &Instance) -> String {
        i.param_str("thingName").unwrap_or_default().to_string()
    }

    fn open(&self, control: &Arc<ControlPlane>, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        let database = Identity::from_hex(&i.database).ok_or(RunnerError::NoDatabase)?;
        let config = control.sync_config(&database).unwrap_or_default();
        let client = ShadowClient::from_config(&config["deviceShadows"]).map_err(client_error)?;
        Ok(Arc::new(ForceSync {
            client,
            thing: i.param_str("thingName").unwrap_or_default().to_string(),
            include_classic: i.params.kind.get("includeClassic").and_then(Value::as_bool).unwrap_or(false),
            names: OnceLock::new(),
        }))
    }
}

fn client_error(e: ClientError) -> RunnerError {
    match e {
        ClientError::Config(m) => RunnerError::BadRequest(m),
        ClientError::NotFound(m) => RunnerError::NotFound(m),
        ClientError::Failed(m) => RunnerError::Source(m),
    }
}

/// A running force-sync of one thing.
struct ForceSync {
    client: ShadowClient,
    thing: String,
    include_classic: bool,
    /// The thing's shadows, listed once per run of this process (the cursor is a name, so a
    /// resumed run lists afresh and goes on after it).
    names: OnceLock<Vec<String>>,
}

impl ForceSync {
    fn names(&self) -> Result<&[String], ClientError> {
        if let Some(n) = self.names.get() {
            return Ok(n);
        }
        let mut names = self.client.list_named(&self.thing)?;
        if self.include_classic {
            // `$` sorts before every name AWS allows, so the classic shadow comes first.
            names.insert(0, CLASSIC_SHADOW.to_string());
        }
        Ok(self.names.get_or_init(|| names))
    }
}

impl Kind for ForceSync {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let names = self.names().map_err(|e| ListError(e.to_string()))?;
        let after = i.cursor.as_ref().and_then(Value::as_str);
        let start = after.map_or(0, |a| names.partition_point(|n| n.as_str() <= a));
        let size = i.params.batch_size.max(1) as usize;
        Ok(names[start..].iter().take(size).map(|n| Item { key: n.clone(), cursor: json!(n) }).collect())
    }

    fn arguments(&self, _: &Instance, items: &[Item]) -> Vec<Result<ReducerArgs, ItemError>> {
        let names: Vec<Option<String>> =
            items.iter().map(|item| (item.key != CLASSIC_SHADOW).then(|| item.key.clone())).collect();
        let read = self.client.get_many(&self.thing, &names);
        items
            .iter()
            .zip(read)
            .map(|(item, shadow)| {
                let shadow = shadow.map_err(|e| match e {
                    ClientError::NotFound(m) => ItemError::NotFound(m),
                    e => ItemError::Source(e.to_string()),
                })?;
                let doc = ShadowDocument::from_shadow(&self.thing, &item.key, &shadow)
                    .map_err(|e| ItemError::Invalid(format!("the shadow document's {e}")))?;
                Ok(doc.reducer_args())
            })
            .collect()
    }

    /// Through the live path's function, so a force-sync and a live update of the same
    /// document give the same row.
    fn apply(
        &self,
        d: &mut Database,
        reducer: &str,
        args: ReducerArgs,
        caller: Caller,
        step: WorkflowStep,
    ) -> Result<(), ItemError> {
        document::ingest(d, reducer, args, caller, Some(step)).map_err(|e| ItemError::Refused(e.to_string()))
    }

    fn keeps_results(&self) -> bool {
        true
    }

    fn recount(&self, _: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError> {
        let n = self.names().map_err(client_error)?.len() as u64;
        Ok(Some(BTreeMap::from([("shadows".to_string(), n)])))
    }
}

/// What a force-sync covers, and how fast it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceSyncParams {
    pub thing_name: String,
    pub include_classic: bool,
    pub batch_size: u32,
    pub delay_seconds: u32,
    pub max_attempts: u32,
}

/// Starts force-syncing `thing` into `database`: lists its shadows first, so an unknown thing
/// or an unreachable endpoint is refused at once ([`RunnerError::NotFound`],
/// [`RunnerError::Source`]).
pub fn start_force_sync(
    runner: &Arc<Runner>,
    database: Identity,
    caller: Identity,
    config: &Value,
    params: ForceSyncParams,
) -> Result<Instance, RunnerError> {
    if !document::valid_thing_name(&params.thing_name) {
        return Err(RunnerError::BadRequest("thingName: must be 1 to 128 of [a-zA-Z0-9:_-]".into()));
    }
    let section = &config["deviceShadows"];
    let mut kind = Map::new();
    kind.insert("thingName".into(), json!(params.thing_name));
    kind.insert("includeClassic".into(), json!(params.include_classic));
    let run = RunParams {
        batch_size: params.batch_size,
        delay_seconds: params.delay_seconds,
        max_attempts: params.max_attempts,
        kind,
    };
    let client = ShadowClient::from_config(section).map_err(client_error)?;
    let mut instance = Instance::new(
        KIND,
        database.to_hex(),
        caller.to_hex(),
        client.endpoint().to_string(),
        document::shadow_reducer(Some(config)),
        run,
        None,
        Map::from_iter([("thingName".to_string(), json!(params.thing_name))]),
    );
    if let Some(id) = runner.running_like(&instance) {
        return Err(RunnerError::Conflict(id));
    }
    let named = client.list_named(&params.thing_name).map_err(client_error)?.len() as u64;
    let total = named + params.include_classic as u64;
    instance.total = Some(total);
    instance.counts = BTreeMap::from([("shadows".to_string(), total)]);
    runner.start(instance)
}
