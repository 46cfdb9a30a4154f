//! The sync API's credentials: an admin API key *and* a bearer token of the owner or of an
//! identity granted `sync`; its one error shape; the permissions API; the sync configuration
//! with masked secrets, kept across restarts.
mod common;
use common::*;

use serde_json::{json, Value};

const KEY: &str = "test-admin-key-7f3a";

fn start(dir: &std::path::Path) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let key_file = dir.join("admin.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    Server::start_in(dir.to_path_buf(), &["--admin-api-key-file", key_file.to_str().unwrap()])
}

fn config_request(
    s: &Server,
    method: reqwest::Method,
    key: Option<&str>,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = s.http().request(method, format!("{}/v1/database/proj/sync/config", s.url));
    if let Some(k) = key {
        req = req.header("X-Admin-API-Key", k);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn grant(s: &Server, token: &str, identity: &str, revoke: bool) -> (u16, Value) {
    let method = if revoke { reqwest::Method::DELETE } else { reqwest::Method::POST };
    let r = s
        .http()
        .request(method, format!("{}/v1/database/proj/permissions", s.url))
        .bearer_auth(token)
        .json(&json!({"identity": identity, "permission": "sync"}))
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn sync_routes_need_the_admin_key_and_an_allowed_identity() {
    let dir = std::env::temp_dir().join(format!("epoch-sync-auth-{}-{}", std::process::id(), rand_suffix()));
    let s = start(&dir);
    let (_, owner) = s.identity();
    let (stranger_id, stranger) = s.identity();
    let (helper_id, helper) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    let config = json!({
        "objectStore": {"url": "s3://bucket/aggregates", "endpoint": "http://127.0.0.1:5000", "region": "us-east-1",
                         "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "very-secret"},
        "projectionReducer": "project_aggregate"
    });
    use reqwest::Method as M;

    // The auth matrix on PUT (owner only).
    let cases = [
        (None, Some(owner.as_str()), 401),
        (Some("wrong-key"), Some(owner.as_str()), 401),
        (Some(KEY), None, 401),
        (Some(KEY), Some("not-a-token"), 401),
        (Some(KEY), Some(stranger.as_str()), 403),
    ];
    for (key, token, want) in cases {
        let (status, body) = config_request(&s, M::PUT, key, token, Some(config.clone()));
        assert_eq!(status, want, "key {key:?}: {body}");
        assert_eq!(body["code"], want);
        assert!(body["requestId"].as_str().unwrap().starts_with("req_"), "{body}");
        assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    }
    let (status, body) = config_request(&s, M::PUT, Some(KEY), Some(&owner), Some(config.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectStore"]["secretAccessKey"], "********", "secrets never come back");
    assert_eq!(body["objectStore"]["accessKeyId"], "AKIDEXAMPLE");

    // Validation.
    let bad_url = json!({"objectStore": {"url": "ftp://x"}});
    assert_eq!(config_request(&s, M::PUT, Some(KEY), Some(&owner), Some(bad_url)).0, 400);
    let bad_reducer = json!({"objectStore": {"url": "file:///tmp/x"}, "projectionReducer": "nope"});
    let (status, body) = config_request(&s, M::PUT, Some(KEY), Some(&owner), Some(bad_reducer));
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("nope"));

    // Permissions: only the owner grants; a grantee may read (and, later, run) sync.
    assert_eq!(config_request(&s, M::GET, Some(KEY), Some(&helper), None).0, 403);
    assert_eq!(grant(&s, &stranger, &helper_id, false).0, 403);
    let (status, body) = grant(&s, &owner, &helper_id, false);
    assert_eq!(status, 200, "{body}");
    let (status, body) = config_request(&s, M::GET, Some(KEY), Some(&helper), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["objectStore"]["secretAccessKey"], "********");
    assert_eq!(
        config_request(&s, M::PUT, Some(KEY), Some(&helper), Some(config.clone())).0,
        403,
        "config is owner-only"
    );
    assert_eq!(config_request(&s, M::GET, Some(KEY), Some(&stranger), None).0, 403);
    let bad_perm = s
        .http()
        .post(format!("{}/v1/database/proj/permissions", s.url))
        .bearer_auth(&owner)
        .json(&json!({"identity": stranger_id, "permission": "root"}))
        .send()
        .unwrap();
    assert_eq!(bad_perm.status(), 400);

    // Configuration and permissions survive a crash; secrets are kept only in the system
    // database, whose directory only the server's user may enter.
    s.crash();
    let system = dir.join("system");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&system).unwrap().permissions().mode() & 0o777, 0o700);
    }
    let s = start(&dir);
    assert_eq!(config_request(&s, M::GET, Some(KEY), Some(&helper), None).0, 200);
    assert_eq!(grant(&s, &owner, &helper_id, true).0, 200);
    assert_eq!(config_request(&s, M::GET, Some(KEY), Some(&helper), None).0, 403, "revoked");
    assert_eq!(config_request(&s, M::GET, Some(KEY), Some(&owner), None).0, 200);
    let r = s
        .http()
        .get(format!("{}/v1/database/nosuch/sync/config", s.url))
        .header("X-Admin-API-Key", KEY)
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// As the seed's callers send it: the admin key as `X-API-Key` (its examples) or
/// `X-Admin-API-Key` (its text), on `/v1` and seed paths alike; 401 and 403 in the seed's words,
/// with our `requestId` and a `details` list naming what was missing or wrong.
#[test]
fn both_key_headers_work_and_refusals_use_the_seeds_words() {
    let dir = std::env::temp_dir().join(format!("epoch-sync-keys-{}-{}", std::process::id(), rand_suffix()));
    let s = start(&dir);
    let (_, owner) = s.identity();
    let (_, stranger) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    let get = |header: Option<(&str, &str)>, token: Option<&str>| {
        let mut req = s.http().get(format!("{}/v1/database/proj/sync/config", s.url));
        if let Some((h, v)) = header {
            req = req.header(h, v);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    for header in ["X-API-Key", "X-Admin-API-Key", "x-api-key"] {
        // Past the credentials: the database has no configuration yet.
        let (status, body) = get(Some((header, KEY)), Some(&owner));
        assert_eq!(
            (status, body["message"].as_str()),
            (404, Some("this database has no sync configuration")),
            "{header}"
        );
    }
    let detail_fields = |body: &Value| -> Vec<String> {
        body["details"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap().to_string()).collect()
    };
    let (status, body) = get(None, Some(&owner));
    assert_eq!(status, 401);
    assert_eq!(body["message"], "Authentication required. Please provide a valid API token");
    assert_eq!(detail_fields(&body), ["X-Admin-API-Key or X-API-Key"], "{body}");
    assert_eq!(body["details"][0]["message"], "missing");
    let (status, body) = get(Some(("X-API-Key", "wrong")), Some(&owner));
    assert_eq!((status, body["details"][0]["message"].as_str()), (401, Some("not a valid admin API key")));
    let (status, body) = get(Some(("X-API-Key", KEY)), None);
    assert_eq!((status, detail_fields(&body)), (401, vec!["Authorization".to_string()]), "{body}");
    let (status, body) = get(Some(("X-API-Key", KEY)), Some(&stranger));
    assert_eq!(status, 403);
    assert_eq!(body["message"], "You don't have permission to access this resource");
    assert!(body["details"][0]["message"].as_str().unwrap().contains("sync"), "{body}");
    assert!(body["requestId"].as_str().unwrap().starts_with("req_"));
    // The seed paths take X-API-Key too.
    let r =
        s.http().get(format!("{}/admin/workflows", s.url)).header("X-API-Key", KEY).bearer_auth(&owner).send().unwrap();
    assert_ne!(r.status().as_u16(), 401, "the seed path accepts X-API-Key");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every source section is optional (a database may sync shadows and nothing else); PUT replaces
/// the configuration, PATCH replaces the sections it names (null removes one); secrets never
/// come back, and a masked secret sent back keeps its value.
#[test]
fn sync_configuration_sections_put_and_patch() {
    let dir = std::env::temp_dir().join(format!("epoch-sync-sections-{}-{}", std::process::id(), rand_suffix()));
    let s = start(&dir);
    let (_, owner) = s.identity();
    assert_eq!(s.publish(&owner, "proj", "projections").status(), 200);
    use reqwest::Method as M;
    let shadows = json!({"deviceShadows": {"endpoint": "http://127.0.0.1:5000", "region": "us-east-1",
                          "accessKeyId": "AKID", "secretAccessKey": "shadow-secret"}});
    let (status, body) = config_request(&s, M::PUT, Some(KEY), Some(&owner), Some(shadows));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deviceShadows"]["secretAccessKey"], "********");
    assert_eq!(body["deviceShadows"]["shadowReducer"], "ingest_shadow", "the default reducer");
    assert!(body.get("objectStore").is_none());
    // A resync needs an objectStore section.
    let r = s
        .http()
        .post(format!("{}/v1/database/proj/sync/resync-projections", s.url))
        .header("X-API-Key", KEY)
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // PATCH adds a section and keeps the other.
    let store = json!({"objectStore": {"url": "s3://bucket/aggregates", "endpoint": "http://127.0.0.1:5000",
                        "region": "us-east-1", "accessKeyId": "A", "secretAccessKey": "store-secret"}});
    let (status, body) = config_request(&s, M::PATCH, Some(KEY), Some(&owner), Some(store));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deviceShadows"]["accessKeyId"], "AKID");
    assert_eq!(body["objectStore"]["url"], "s3://bucket/aggregates");
    // Read, change, write back whole: the masked secrets keep their values.
    let (_, mut whole) = config_request(&s, M::GET, Some(KEY), Some(&owner), None);
    whole["deviceShadows"]["region"] = json!("eu-west-1");
    let (status, _) = config_request(&s, M::PUT, Some(KEY), Some(&owner), Some(whole));
    assert_eq!(status, 200);
    let cfg = s
        .http()
        .get(format!("{}/v1/database/proj/sync/config", s.url))
        .header("X-API-Key", KEY)
        .bearer_auth(&owner)
        .send()
        .unwrap();
    assert_eq!(cfg.json::<Value>().unwrap()["deviceShadows"]["region"], "eu-west-1");
    // PATCH with null removes a section; a bad reducer is refused.
    let (status, body) = config_request(&s, M::PATCH, Some(KEY), Some(&owner), Some(json!({"deviceShadows": null})));
    assert_eq!(status, 200, "{body}");
    assert!(body.get("deviceShadows").is_none());
    let bad = json!({"deviceShadows": {"shadowReducer": "nope"}});
    let (status, body) = config_request(&s, M::PATCH, Some(KEY), Some(&owner), Some(bad));
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("nope"), "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
