//! One shadow document, and the one function that pushes it through the database's shadow
//! reducer (default `ingest_shadow(thing_name, shadow_name, version: u64, document: String)`).
//! Every path comes here (a topic rule's webhook, MQTT, a force-sync), so the same shadow state
//! always produces the same row: the document handed to the reducer is `{"state": …}` as
//! canonical JSON (object keys sorted at every depth), whatever the path added around it.

use epoch_core::{CallError, Caller, Database, ReducerArgs, WorkflowStep};
use serde_json::Value;

/// The reducer a database's shadows go through unless its sync configuration names another.
pub const DEFAULT_SHADOW_REDUCER: &str = "ingest_shadow";
/// The name the classic (unnamed) shadow is given when it is synced too.
pub const CLASSIC_SHADOW: &str = "$classic";

/// One shadow document, ready for the reducer: the `desired` and `reported` parts of its state
/// (what devices and apps wrote; `delta` is derived from them and left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDocument {
    pub thing_name: String,
    pub shadow_name: String,
    pub version: u64,
    /// `{"state": …}` as canonical JSON.
    pub document: String,
}

/// A field of an event that is missing or malformed: its path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: &str) -> FieldError {
    FieldError { field: field.to_string(), message: message.to_string() }
}

/// Whether `name` is a thing name AWS accepts: 1–128 of `[a-zA-Z0-9:_-]`.
pub fn valid_thing_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b))
}

/// Whether `name` is a shadow name AWS accepts: 1–64 of `[a-zA-Z0-9:_-]` (or the classic one).
pub fn valid_shadow_name(name: &str) -> bool {
    name == CLASSIC_SHADOW
        || ((1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b)))
}

impl ShadowDocument {
    /// A shadow as a document of its own (`GetThingShadow`'s answer: `state`, `version`, …).
    pub fn from_shadow(thing_name: &str, shadow_name: &str, shadow: &Value) -> Result<Self, FieldError> {
        let version =
            shadow["version"].as_u64().ok_or_else(|| field_error("version", "must be an unsigned integer"))?;
        let state =
            shadow.get("state").filter(|s| s.is_object()).ok_or_else(|| field_error("state", "must be an object"))?;
        // Only what devices and apps wrote: `delta` is derived from these two (a shadow read
        // carries it, an update/documents event does not).
        let kept: serde_json::Map<String, Value> = ["desired", "reported"]
            .into_iter()
            .filter_map(|k| state.get(k).filter(|v| !v.is_null()).map(|v| (k.to_string(), v.clone())))
            .collect();
        Ok(Self {
            thing_name: thing_name.to_string(),
            shadow_name: shadow_name.to_string(),
            version,
            document: canonical(&serde_json::json!({ "state": kept })),
        })
    }

    /// The event a topic rule forwards for `$aws/things/{thing}/shadow/name/{shadow}/update/documents`
    /// (`previous`, `current`, `timestamp`); the names come as `thingName` and `shadowName`
    /// (`topic(3)`, `topic(6)` in the rule) or as the `topic` itself.
    pub fn from_update_event(event: &Value) -> Result<Self, FieldError> {
        let (thing, shadow) = match (event["thingName"].as_str(), event["shadowName"].as_str(), event["topic"].as_str())
        {
            (Some(t), Some(s), _) => (t.to_string(), s.to_string()),
            (_, _, Some(topic)) => {
                let parts: Vec<&str> = topic.split('/').collect();
                match parts.as_slice() {
                    ["$aws", "things", t, "shadow", "name", s, "update", "documents"] => (t.to_string(), s.to_string()),
                    ["$aws", "things", t, "shadow", "update", "documents"] => {
                        (t.to_string(), CLASSIC_SHADOW.to_string())
                    }
                    _ => return Err(field_error("topic", "is not a shadow's update/documents topic")),
                }
            }
            _ => return Err(field_error("thingName", "is required (with shadowName), or the event's topic")),
        };
        if !valid_thing_name(&thing) {
            return Err(field_error("thingName", "must be 1 to 128 of [a-zA-Z0-9:_-]"));
        }
        if !valid_shadow_name(&shadow) {
            return Err(field_error("shadowName", "must be 1 to 64 of [a-zA-Z0-9:_-]"));
        }
        let current = event
            .get("current")
            .filter(|c| c.is_object())
            .ok_or_else(|| field_error("current", "must be an object"))?;
        Self::from_shadow(&thing, &shadow, current)
            .map_err(|e| field_error(&format!("current.{}", e.field), &e.message))
    }

    /// The reducer's arguments, as JSON (`[thing, shadow, version, document]`).
    pub fn reducer_args(&self) -> ReducerArgs {
        ReducerArgs::Json(
            serde_json::json!([self.thing_name, self.shadow_name, self.version, self.document]).to_string(),
        )
    }
}

/// Why a shadow document was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The module has no such reducer (the configuration names the wrong one).
    #[error("the database has no shadow reducer `{0}` (set deviceShadows.shadowReducer in its sync configuration)")]
    NoReducer(String),
    /// The reducer refused the document, or could not be called with it.
    #[error("{0}")]
    Refused(String),
}

/// Applies one shadow document's arguments (from [`ShadowDocument::reducer_args`]) through
/// `reducer`, on the database's writer: the one ingest path of the webhook, MQTT and
/// force-syncs. A force-sync passes its workflow `step`, committed with the rows.
pub fn ingest(
    d: &mut Database,
    reducer: &str,
    args: ReducerArgs,
    caller: Caller,
    step: Option<WorkflowStep>,
) -> Result<(), IngestError> {
    let called = match step {
        Some(step) => d.call_step(reducer, args, caller, step),
        None => d.call(reducer, args, caller),
    };
    match called {
        Ok(r) => r.outcome.error_message().map_or(Ok(()), |e| Err(IngestError::Refused(e))),
        Err(CallError::NoSuchReducer(_)) => Err(IngestError::NoReducer(reducer.to_string())),
        Err(e) => Err(IngestError::Refused(format!("the shadow reducer `{reducer}`: {e}"))),
    }
}

/// The shadow reducer of a database's sync configuration.
pub fn shadow_reducer(config: Option<&Value>) -> String {
    config.and_then(|c| c["deviceShadows"]["shadowReducer"].as_str()).unwrap_or(DEFAULT_SHADOW_REDUCER).to_string()
}

/// JSON with object keys sorted at every depth (the server keeps maps in insertion order, and
/// AWS does not promise one).
fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sorted(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_events_and_shadow_reads_give_the_same_document() {
        let state = json!({"reported": {"locked": true, "battery": 80}, "desired": {"locked": true}});
        let event = json!({
            "topic": "$aws/things/lock-1/shadow/name/door/update/documents",
            "previous": {"state": {}, "version": 6},
            "current": {"state": state, "metadata": {"reported": {}}, "version": 7},
            "timestamp": 1700000000
        });
        let live = ShadowDocument::from_update_event(&event).unwrap();
        // The same state with its keys in another order (as another path may send it).
        let reordered: Value =
            serde_json::from_str(r#"{"desired": {"locked": true}, "reported": {"battery": 80, "locked": true}}"#)
                .unwrap();
        let mut read = json!({"version": 7, "state": reordered, "metadata": {}, "timestamp": 1700000001});
        // A read also carries the derived `delta`, which is not part of the document.
        read["state"]["delta"] = json!({"locked": false});
        assert_eq!(live, ShadowDocument::from_shadow("lock-1", "door", &read).unwrap());
        assert_eq!(live.document, r#"{"state":{"desired":{"locked":true},"reported":{"battery":80,"locked":true}}}"#);
        let ReducerArgs::Json(args) = live.reducer_args() else { panic!("JSON arguments") };
        assert_eq!(args, json!(["lock-1", "door", 7, live.document]).to_string());
        let named = json!({"thingName": "lock-1", "shadowName": "door", "current": {"state": state, "version": 7}});
        assert_eq!(ShadowDocument::from_update_event(&named).unwrap(), live);
    }

    #[test]
    fn malformed_events_name_the_field() {
        let bad = |e: Value| ShadowDocument::from_update_event(&e).unwrap_err().field;
        assert_eq!(bad(json!({"shadowName": "x", "current": {}})), "thingName");
        assert_eq!(bad(json!({"thingName": "bad name", "shadowName": "x"})), "thingName");
        assert_eq!(bad(json!({"thingName": "t", "shadowName": "x"})), "current");
        assert_eq!(bad(json!({"thingName": "t", "shadowName": "x", "current": {"state": {}}})), "current.version");
        assert_eq!(bad(json!({"thingName": "t", "shadowName": "x", "current": {"version": 1}})), "current.state");
        assert_eq!(bad(json!({"topic": "$aws/things/t/jobs"})), "topic");
    }
}
