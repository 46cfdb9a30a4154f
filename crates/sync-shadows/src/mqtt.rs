//! Live shadow updates over MQTT: per database whose `deviceShadows` section has an `mqttUrl`,
//! one consumer subscribes to every shadow's `update/documents` topic (QoS 1, a persistent
//! session) and pushes each document through [`crate::document::ingest`], the same function as
//! the webhook and force-syncs. A message is acknowledged only once its transaction is durable,
//! so the broker redelivers what a crash interrupted; the reducer ignores versions it already
//! has, so a redelivery changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use epoch_control::ControlPlane;
use epoch_core::Caller;
use epoch_core::Identity;
use parking_lot::Mutex;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use crate::document::{self, ShadowDocument};
use crate::limits::{INGEST_TIMEOUT, KEEP_ALIVE, MAX_BACKOFF, MAX_MESSAGE_BYTES, MIN_BACKOFF};

/// The topics of named and classic shadows' update documents.
pub const TOPICS: [&str; 2] = ["$aws/things/+/shadow/name/+/update/documents", "$aws/things/+/shadow/update/documents"];

/// Where a database's consumer connects, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub client_id: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl MqttTarget {
    /// Parses `mqtt://host[:port]` (TLS brokers are not supported yet); `client_id` is the
    /// configured `mqttClientId`, if any.
    pub fn parse(url: &str, client_id: Option<&Value>) -> Result<Self, String> {
        let rest = url.strip_prefix("mqtt://").ok_or("must be mqtt://host[:port] (mqtts is not supported yet)")?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
            None => (rest, 1883),
        };
        if host.is_empty() || host.contains('/') || host.contains('@') {
            return Err(format!("bad host {host:?}"));
        }
        let client_id = match client_id {
            None => None,
            Some(Value::String(c)) if (1..=128).contains(&c.len()) => Some(c.clone()),
            Some(_) => return Err("`mqttClientId` must be a string of 1 to 128 characters".into()),
        };
        Ok(Self { host: host.to_string(), port, client_id, username: None, password: None })
    }

    /// The target of a database's configuration, if it has one.
    fn of(config: &Value) -> Option<Self> {
        let s = &config["deviceShadows"];
        let mut t = Self::parse(s["mqttUrl"].as_str()?, s.get("mqttClientId")).ok()?;
        t.username = s["mqttUsername"].as_str().map(str::to_string);
        t.password = s["mqttPassword"].as_str().map(str::to_string);
        Some(t)
    }
}

struct Consumer {
    target: MqttTarget,
    stop: Arc<AtomicBool>,
    client: Client,
}

/// The MQTT consumers of a server, one per database that configures one.
pub struct LiveShadows {
    control: Arc<ControlPlane>,
    consumers: Mutex<HashMap<Identity, Consumer>>,
}

impl LiveShadows {
    /// Starts a consumer for every database whose configuration asks for one.
    pub fn start(control: Arc<ControlPlane>) -> Arc<Self> {
        let live = Arc::new(Self { control: control.clone(), consumers: Mutex::new(HashMap::new()) });
        let weak = Arc::downgrade(&live);
        control.on_database_dropped(Box::new(move |database| {
            if let Some(live) = weak.upgrade() {
                live.stop(database);
            }
        }));
        for (database, _) in control.sync_configs() {
            live.reconfigure(&database);
        }
        live
    }

    /// Brings the database's consumer in line with its configuration: started, stopped, or
    /// restarted when the broker or the credentials changed.
    pub fn reconfigure(&self, database: &Identity) {
        let target = self.control.sync_config(database).and_then(|c| MqttTarget::of(&c));
        let mut consumers = self.consumers.lock();
        if consumers.get(database).map(|c| &c.target) == target.as_ref() {
            return;
        }
        if let Some(old) = consumers.remove(database) {
            old.halt();
        }
        if let Some(target) = target {
            let consumer = spawn(self.control.clone(), *database, target);
            consumers.insert(*database, consumer);
        }
    }

    /// Stops the database's consumer, if it has one.
    pub fn stop(&self, database: &Identity) {
        if let Some(c) = self.consumers.lock().remove(database) {
            c.halt();
        }
    }

    /// Stops every consumer (the server is stopping).
    pub fn stop_all(&self) {
        for (_, c) in self.consumers.lock().drain() {
            c.halt();
        }
    }
}

impl Consumer {
    fn halt(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.client.try_disconnect();
    }
}

fn spawn(control: Arc<ControlPlane>, database: Identity, target: MqttTarget) -> Consumer {
    let hex = database.to_hex();
    let client_id = target.client_id.clone().unwrap_or_else(|| format!("epoch-{}", &hex[..16]));
    let mut options = MqttOptions::new(client_id, target.host.clone(), target.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES);
    if let Some(user) = &target.username {
        options.set_credentials(user.clone(), target.password.clone().unwrap_or_default());
    }
    let (client, mut connection) = Client::new(options, 64);
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = Consumer { target: target.clone(), stop: stop.clone(), client: client.clone() };
    let name = format!("mqtt-{}", &hex[..8]);
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        // Connect only once the database serves (after a restart it opens in the background):
        // the broker delivers what it kept for the session as soon as we connect.
        while control.get(&database).is_none() {
            if stop.load(Ordering::Acquire) || control.unavailable(&database).is_some_and(|u| !u.starting) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!(database = %hex, host = %target.host, port = target.port, "shadow MQTT consumer started");
        let mut backoff = MIN_BACKOFF;
        while !stop.load(Ordering::Acquire) {
            match connection.recv_timeout(Duration::from_millis(500)) {
                Err(_) => continue, // nothing yet: look at the stop flag again
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    backoff = MIN_BACKOFF;
                    for topic in TOPICS {
                        if let Err(e) = client.try_subscribe(topic, QoS::AtLeastOnce) {
                            tracing::warn!(database = %hex, "cannot subscribe to {topic}: {e}");
                        }
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    // Held until applied: acknowledged only once durable, in order.
                    let mut wait = MIN_BACKOFF;
                    while !handle(&control, &database, &p.topic, &p.payload) {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(MAX_BACKOFF);
                    }
                    let _ = client.try_ack(&p);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    tracing::warn!(database = %hex, "shadow MQTT connection: {e}; reconnecting in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        tracing::info!(database = %hex, "shadow MQTT consumer stopped");
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start a shadow MQTT consumer: {e}");
    }
    consumer
}

/// Applies one message; true when it may be acknowledged (applied durably, or malformed, which
/// no redelivery would mend).
fn handle(control: &ControlPlane, database: &Identity, topic: &str, payload: &[u8]) -> bool {
    let event = match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut m)) => {
            m.insert("topic".into(), Value::String(topic.to_string()));
            Value::Object(m)
        }
        _ => {
            tracing::warn!(topic, "dropping a shadow message that is not a JSON object");
            return true;
        }
    };
    let doc = match ShadowDocument::from_update_event(&event) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(topic, "dropping a malformed shadow message: {e}");
            return true;
        }
    };
    let Some(db) = control.get(database) else {
        // Still opening, or gone: not acknowledged, so the broker keeps it.
        return false;
    };
    let reducer = document::shadow_reducer(control.sync_config(database).as_ref());
    let caller = Caller::identity(db.owner);
    let (tx, rx) = std::sync::mpsc::channel();
    let args = doc.reducer_args();
    let submitted = db.handle.submit(
        move |d| document::ingest(d, &reducer, args, caller, None),
        move |r| {
            let _ = tx.send(r);
        },
    );
    if submitted.is_err() {
        return false;
    }
    match rx.recv_timeout(INGEST_TIMEOUT) {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            // The reducer's verdict on this document will not change: logged and acknowledged.
            tracing::warn!(thing = %doc.thing_name, shadow = %doc.shadow_name, "shadow update refused: {e}");
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let t = MqttTarget::parse("mqtt://127.0.0.1:1884", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 1884));
        assert_eq!(MqttTarget::parse("mqtt://broker", None).unwrap().port, 1883);
        assert!(MqttTarget::parse("mqtts://broker", None).is_err());
        assert!(MqttTarget::parse("mqtt://:1", None).is_err());
        assert!(MqttTarget::parse("mqtt://h:port", None).is_err());
        assert!(MqttTarget::parse("mqtt://h", Some(&Value::from(3))).is_err());
    }
}
