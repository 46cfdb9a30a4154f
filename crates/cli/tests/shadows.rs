//! Device shadows, the live path: `…/sync/shadow-webhook` (and the seed's `/admin/shadow-webhook`
//! on the default database) takes the event an IoT topic rule forwards for a named shadow's
//! `update/documents` topic and pushes it through the shadow reducer of the `projections`
//! fixture; an older version never overwrites a newer row; malformed events name the field.

mod common;

use common::Server;
use serde_json::{json, Value};

const KEY: &str = "shadow-admin-key-0001";

fn event(thing: &str, shadow: &str, version: u64, state: Value) -> Value {
    json!({
        "topic": format!("$aws/things/{thing}/shadow/name/{shadow}/update/documents"),
        "previous": {"state": {}, "version": version.saturating_sub(1)},
        "current": {"state": state, "metadata": {}, "version": version},
        "timestamp": 1700000000
    })
}

#[test]
fn the_webhook_ingests_shadow_updates_through_the_reducer() {
    let dir = std::env::temp_dir().join(format!("epoch-shadows-{}-{}", std::process::id(), common::rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, KEY).unwrap();
    let server = Server::start_in(
        dir.clone(),
        &["--admin-api-key-file", key_file.to_str().unwrap(), "--default-database", "proj"],
    );
    let (_, owner) = server.identity();
    assert!(server.publish(&owner, "proj", "projections").status().is_success());
    let post = |path: &str, header: &str, body: &Value| {
        let r = server
            .http()
            .post(format!("{}{path}", server.url))
            .header(header, KEY)
            .bearer_auth(&owner)
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let rows = || {
        let (status, body) = server.sql(Some(&owner), "proj", "SELECT key, version, document FROM device_named_shadow");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()[0]["rows"].clone()
    };

    let state = json!({"reported": {"locked": true}});
    let (status, body) =
        post("/v1/database/proj/sync/shadow-webhook", "X-API-Key", &event("lock-1", "door", 3, state.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["success"].as_bool(), body["statusCode"].as_u64()), (Some(true), Some(200)), "{body}");
    assert_eq!(rows(), json!([["lock-1/door", 3, json!({"state": state}).to_string()]]));

    // An older version never overwrites the newer row; the seed path works on the default database.
    let old = event("lock-1", "door", 2, json!({"reported": {"locked": false}}));
    let (status, body) = post("/admin/shadow-webhook", "X-Admin-API-Key", &old);
    assert_eq!((status, body["success"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(rows()[0][1], 3);

    // Malformed events: 400 naming the field.
    let (status, body) = post(
        "/v1/database/proj/sync/shadow-webhook",
        "X-API-Key",
        &json!({"thingName": "lock-1", "shadowName": "door", "current": {"state": {}}}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["details"][0]["field"], "current.version", "{body}");
    let (status, body) = post(
        "/v1/database/proj/sync/shadow-webhook",
        "X-API-Key",
        &json!({"thingName": "no spaces", "shadowName": "d", "current": {"state": {}, "version": 1}}),
    );
    assert_eq!((status, body["details"][0]["field"].as_str()), (400, Some("thingName")), "{body}");
    // Credentials as every sync route.
    let r =
        server.http().post(format!("{}/v1/database/proj/sync/shadow-webhook", server.url)).json(&old).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
