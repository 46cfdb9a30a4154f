//! The HTTP API driven over real HTTP against the real binary: identities, ownership, every
//! status of /call, limits, metrics, logs, and the client commands.
mod common;
use common::*;

use std::io::{BufRead, BufReader};

use serde_json::Value;

#[test]
fn identities_tokens_and_verification() {
    let s = Server::start(&[]);
    let (alice, token) = s.identity();
    assert!(alice.starts_with("c200") && alice.len() == 64);
    let verify = |id: &str, token: Option<&str>| {
        let mut req = s.http().get(format!("{}/v1/identity/{id}/verify", s.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().unwrap().status().as_u16()
    };
    assert_eq!(verify(&alice, Some(&token)), 204);
    let (bob, bob_token) = s.identity();
    assert_eq!(verify(&bob, Some(&token)), 400);
    assert_eq!(verify(&alice, None), 401);
    assert_eq!(verify(&alice, Some("garbage")), 401);
    assert_eq!(verify(&bob, Some(&bob_token)), 204);
    // A forged token (valid shape, wrong key) is refused.
    let mut forged = token.clone();
    forged.truncate(forged.rfind('.').unwrap() + 1);
    forged.push_str("AAAA");
    assert_eq!(verify(&alice, Some(&forged)), 401);

    let pem = s.http().get(format!("{}/v1/identity/public-key", s.url)).send().unwrap();
    assert_eq!(pem.headers()["content-type"], "application/pem-certificate-chain");
    assert!(pem.text().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));

    let ws: Value = s
        .http()
        .post(format!("{}/v1/identity/websocket-token", s.url))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(verify(&alice, ws["token"].as_str()), 204, "the websocket token carries the same identity");
    assert_eq!(s.http().post(format!("{}/v1/identity/websocket-token", s.url)).send().unwrap().status(), 401);

    assert_eq!(s.publish(&token, "owned", "bank").status(), 200);
    let dbs: Value = s.http().get(format!("{}/v1/identity/{alice}/databases", s.url)).send().unwrap().json().unwrap();
    assert_eq!(dbs["identities"].as_array().unwrap().len(), 1);
    let none: Value = s.http().get(format!("{}/v1/identity/{bob}/databases", s.url)).send().unwrap().json().unwrap();
    assert_eq!(none["identities"], serde_json::json!([]));
}

#[test]
fn only_the_owner_may_republish_delete_rename_read_logs_or_private_tables() {
    let s = Server::start(&[]);
    let (_, alice) = s.identity();
    let (_, bob) = s.identity();
    let created: Value = s.publish(&alice, "bank", "bank").json().unwrap();
    assert_eq!(created["Success"]["op"], "created");
    assert_eq!(created["Success"]["domain"], "bank");
    let updated: Value = s.publish(&alice, "bank", "bank").json().unwrap();
    assert_eq!(updated["Success"]["op"], "updated");

    let r = s.publish(&bob, "bank", "bank");
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().starts_with("Permission denied"));
    let r = s.http().delete(format!("{}/v1/database/bank", s.url)).bearer_auth(&bob).send().unwrap();
    assert_eq!(r.status(), 403);
    let r = s.http().get(format!("{}/v1/database/bank/logs", s.url)).bearer_auth(&bob).send().unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().starts_with("Identity does not own database"));
    let r = s
        .http()
        .put(format!("{}/v1/database/bank/names", s.url))
        .bearer_auth(&bob)
        .header("Content-Type", "application/json")
        .body("[\"stolen\"]")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    s.call(&alice, "bank", "open_accounts", "[0, 2, 10]");
    s.call(&alice, "bank", "transfer", "[0, 1, 1]");
    assert_eq!(s.sql(Some(&bob), "bank", "SELECT * FROM ledger"), (400, "`ledger` is not a valid table".into()));
    assert_eq!(s.sql(None, "bank", "SELECT * FROM ledger").0, 400);
    let (status, body) = s.sql(Some(&alice), "bank", "SELECT * FROM ledger");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"rows\":[[1,0,1,1]]"), "{body}");
    // Public tables are readable by anyone.
    assert_eq!(s.sql(Some(&bob), "bank", "SELECT COUNT(*) AS n FROM account").0, 200);

    // Renames by the owner work; the old name stops resolving.
    let r = s
        .http()
        .put(format!("{}/v1/database/bank/names", s.url))
        .bearer_auth(&alice)
        .header("Content-Type", "application/json")
        .body("[\"vault\"]")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.http().get(format!("{}/v1/database/bank/identity", s.url)).send().unwrap().status(), 404);
    assert_eq!(s.http().get(format!("{}/v1/database/vault/identity", s.url)).send().unwrap().status(), 200);
    // A name someone else holds cannot be claimed.
    assert_eq!(s.publish(&bob, "vault", "chat").status(), 403);

    let r = s.http().delete(format!("{}/v1/database/vault", s.url)).bearer_auth(&alice).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = s.http().get(format!("{}/v1/database/vault", s.url)).send().unwrap();
    assert_eq!((r.status().as_u16(), r.text().unwrap()), (404, "No such database.".to_string()));
}

#[test]
fn call_answers_every_outcome_with_1_3_statuses() {
    let s = Server::start(&["--reducer-timeout-ms", "300"]);
    let (_, t) = s.identity();
    assert_eq!(s.publish(&t, "tc", "typecheck").status(), 200);
    assert_eq!(s.call(&t, "tc", "fill_grid", "[1, 1, \"a\"]"), (200, String::new()));
    assert_eq!(s.call(&t, "tc", "insert_then_fail", "[\"x\"]"), (530, "deliberate failure".into()));
    assert_eq!(
        s.call(&t, "tc", "insert_then_panic", "[\"x\"]"),
        (530, "The Wasm instance encountered a fatal error.".into())
    );
    // A runaway reducer is stopped at the time limit; 1.3 reports its equivalent (energy) as 402.
    assert_eq!(
        s.call(&t, "tc", "spin", "[]"),
        (402, "Module energy budget exhausted: the reducer ran past the time limit of 300 ms and was stopped.".into())
    );
    assert_eq!(s.call(&t, "tc", "fill_grid", "[1, 1, \"b\"]").0, 200, "the database keeps serving");
    assert_eq!(s.call(&t, "tc", "nope", "[]"), (404, "no such reducer".into()));
    assert_eq!(s.call(&t, "tc", "init", "[]"), (400, "can't directly call special Init lifecycle reducer".into()));
    let (status, body) = s.call(&t, "tc", "fill_grid", "[1, \"x\", \"a\"]");
    assert_eq!(status, 400);
    assert!(body.starts_with("invalid arguments for reducer fill_grid: [1]: [1]: invalid type: string"), "{body}");
    let (status, body) = s.call(&t, "tc", "insert_scalars", "[true]");
    assert_eq!(status, 400, "{body}");
    let r = s
        .http()
        .post(format!("{}/v1/database/tc/call/fill_grid", s.url))
        .bearer_auth(&t)
        .header("Content-Type", "text/plain")
        .body("[1,1,\"a\"]")
        .send()
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(s.call(&t, "nosuchdb", "x", "[]").0, 404);
    let unknown_id = "c200000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(s.call(&t, unknown_id, "x", "[]"), (404, "No such database.".into()));
    // Anonymous callers get an identity and token in the response headers.
    let r = s
        .http()
        .post(format!("{}/v1/database/tc/call/fill_grid", s.url))
        .header("Content-Type", "application/json")
        .body("[1,1,\"anon\"]")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["spacetime-identity"].to_str().unwrap().starts_with("c200"));
    assert!(r.headers().contains_key("spacetime-identity-token"));
}

#[test]
fn chat_runs_client_connected_around_http_calls() {
    let s = Server::start(&[]);
    let (alice_id, alice) = s.identity();
    s.publish(&alice, "chat", "chat");
    assert_eq!(s.call(&alice, "chat", "send_post", "[\"hello\"]").0, 200);
    let (status, body) = s.sql(Some(&alice), "chat", "SELECT * FROM member");
    assert_eq!(status, 200);
    // client_connected inserted the member, client_disconnected marked it offline.
    assert!(body.contains(&alice_id), "{body}");
    assert!(body.contains("false"), "{body}");
}

#[test]
fn limits_answer_with_clear_errors() {
    let s = Server::start(&["--max-module-bytes", "50000"]);
    let (_, t) = s.identity();
    let r = s.publish(&t, "big", "bank");
    assert_eq!(r.status(), 413);
    let r = s.publish(&t, "notwasm", "bank");
    assert_eq!(r.status(), 413);
    let r = s.http().put(format!("{}/v1/database/bad", s.url)).bearer_auth(&t).body("not wasm").send().unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().starts_with("failed to parse WebAssembly module"));

    let s = Server::start(&[]);
    let (_, t) = s.identity();
    s.publish(&t, "bank", "bank");
    let long = format!("SELECT * FROM account WHERE {}", vec!["id = 1"; 20000].join(" OR "));
    let (status, body) = s.sql(Some(&t), "bank", &long);
    assert_eq!(status, 400);
    assert!(body.contains("longer than"), "{body}");
    let huge = "x".repeat(3 << 20);
    assert_eq!(s.sql(Some(&t), "bank", &huge).0, 413);
    for (q, want) in [
        ("SELECT * FROM nope", "`nope` is not a valid table"),
        ("SELECT nope FROM account", "`nope` is not in scope"),
        ("", "Empty SQL query"),
        ("SELECT * FROM account; SELECT * FROM account", "Multiple SQL statements are not supported"),
    ] {
        assert_eq!(s.sql(Some(&t), "bank", q), (400, want.to_string()), "{q}");
    }
    assert!(s.sql(Some(&t), "bank", "SELEKT").1.starts_with("sql parser error"));
}

#[test]
fn sql_filters_projects_and_counts() {
    let s = Server::start(&[]);
    let (_, t) = s.identity();
    s.publish(&t, "bank", "bank");
    s.call(&t, "bank", "open_accounts", "[0, 100, 5]");
    let rows = |q: &str| -> Vec<Value> {
        let (status, body) = s.sql(Some(&t), "bank", q);
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v[0]["rows"].as_array().unwrap().clone()
    };
    assert_eq!(rows("SELECT * FROM account").len(), 100);
    assert_eq!(rows("SELECT * FROM account WHERE id < 10 AND branch > 4").len(), 5);
    assert_eq!(rows("SELECT * FROM account WHERE id = 3 OR id = 70").len(), 2);
    assert_eq!(
        rows("SELECT id AS key FROM account WHERE (id >= 98)"),
        vec![serde_json::json!([98]), serde_json::json!([99])]
    );
    assert_eq!(rows("SELECT COUNT(*) AS n FROM account WHERE branch = 1"), vec![serde_json::json!([2])]);
    assert_eq!(rows("SELECT * FROM account LIMIT 7").len(), 7);
    assert_eq!(rows("SELECT account.* FROM account WHERE account.id <> 0").len(), 99);
}

#[test]
fn metrics_and_logs_reflect_activity() {
    let s = Server::start(&[]);
    let (_, t) = s.identity();
    s.publish(&t, "tc", "typecheck");
    s.call(&t, "tc", "fill_grid", "[2, 2, \"m\"]");
    s.call(&t, "tc", "insert_then_fail", "[\"m\"]");
    let m = s.http().get(format!("{}/metrics", s.url)).send().unwrap().text().unwrap();
    assert!(m.contains("reducer=\"fill_grid\"} 1"), "{m}");
    assert!(m.contains("epoch_reducer_failures_total{") && m.contains("reducer=\"insert_then_fail\"} 1"), "{m}");
    assert!(m.contains("table=\"grid\"} 4"), "{m}");
    assert!(m.contains("route=\"/v1/database/{name_or_identity}/call/{reducer}\",status=\"530\"} 1"), "{m}");

    let logs = s.http().get(format!("{}/v1/database/tc/logs?num_lines=2", s.url)).bearer_auth(&t).send().unwrap();
    assert_eq!(logs.headers()["content-type"], "application/x-ndjson");
    let text = logs.text().unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("\"message\":\"deliberate failure\""), "{text}");

    // follow=true streams lines written after the request.
    let resp =
        s.http().get(format!("{}/v1/database/tc/logs?num_lines=0&follow=true", s.url)).bearer_auth(&t).send().unwrap();
    let url = s.url.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let http = reqwest::blocking::Client::new();
        http.post(format!("{url}/v1/database/tc/call/log_levels"))
            .bearer_auth(&t)
            .header("Content-Type", "application/json")
            .body("[\"streamed\"]")
            .send()
            .unwrap();
    });
    let mut seen = false;
    for line in BufReader::new(resp).lines().take(20) {
        if line.unwrap().contains("W streamed") {
            seen = true;
            break;
        }
    }
    writer.join().unwrap();
    assert!(seen, "the followed log delivered the new line");
}

#[test]
fn client_commands_publish_call_query_describe_and_delete() {
    let s = Server::start(&[]);
    let config = s.data_dir.join("client.json");
    let epoch = |args: &[&str]| common::cli(&s.url, &config, args);
    let (ok, out, err) = epoch(&["publish", "bank", "--wasm", fixture("bank").to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Created new database with name: bank, identity: c200"), "{out}");
    assert!(epoch(&["call", "bank", "open_accounts", "0", "2", "40"]).0);
    let (ok, _, err) = epoch(&["call", "bank", "transfer", "0", "1", "400"]);
    assert!(!ok);
    assert!(err.contains("insufficient funds"), "{err}");
    let (ok, out, _) = epoch(&["sql", "bank", "SELECT * FROM account"]);
    assert!(ok);
    assert_eq!(out, " id | balance | branch\n----+---------+--------\n 0  | 40      | 0\n 1  | 40      | 1\n");
    let (ok, out, _) = epoch(&["logs", "bank", "-n", "1"]);
    assert!(ok && out.contains("ERROR") && out.contains("insufficient funds"), "{out}");
    let (ok, out, _) = epoch(&["describe", "bank"]);
    assert!(ok);
    let schema: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(schema["tables"][0]["name"], "account");
    assert!(epoch(&["delete", "bank"]).0);
    let (ok, _, err) = epoch(&["sql", "bank", "SELECT * FROM account"]);
    assert!(!ok && err.contains("404"), "{err}");
    // The token was saved once and reused: the same identity owns everything it published.
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(saved["tokens"].as_object().unwrap().len(), 1);
}

#[test]
fn tokens_from_a_configured_third_party_issuer_are_accepted() {
    // An outside identity provider with its own key pair.
    let dir = std::env::temp_dir().join(format!("epoch-idp-{}", std::process::id()));
    let idp = epoch_auth::Authority::load_or_create(&dir, "https://idp.example").unwrap();
    let (id, token) = idp.create_identity().unwrap();
    let pem = dir.join(epoch_auth::PUBLIC_KEY_FILE);
    let spec = format!("https://idp.example={}", pem.display());

    let untrusting = Server::start(&[]);
    let r = untrusting.publish(&token, "ext", "bank");
    assert_eq!(r.status(), 401, "an unknown issuer is refused");

    let s = Server::start(&["--trusted-issuer", &spec]);
    let r = s.publish(&token, "ext", "bank");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["spacetime-identity"].to_str().unwrap(), id.to_hex());
    let r = s.http().get(format!("{}/v1/identity/{}/verify", s.url, id.to_hex())).bearer_auth(&token).send().unwrap();
    assert_eq!(r.status(), 204);
    // The owner's identity is the one derived from the provider's issuer and subject.
    let owned: Value =
        s.http().get(format!("{}/v1/identity/{}/databases", s.url, id.to_hex())).send().unwrap().json().unwrap();
    assert_eq!(owned["identities"].as_array().unwrap().len(), 1);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sql_results_are_capped_at_the_row_limit() {
    let s = Server::start(&["--max-sql-rows", "10"]);
    let (_, t) = s.identity();
    s.publish(&t, "bank", "bank");
    s.call(&t, "bank", "open_accounts", "[0, 11, 1]");
    let (status, body) = s.sql(Some(&t), "bank", "SELECT * FROM account");
    assert_eq!(status, 400);
    assert!(body.contains("more than 10 rows"), "{body}");
    assert_eq!(s.sql(Some(&t), "bank", "SELECT * FROM account LIMIT 10").0, 200);
    assert_eq!(s.sql(Some(&t), "bank", "SELECT COUNT(*) AS n FROM account").0, 200);
}

/// A WebSocket token (60 s, as 1.3's) minted from another WebSocket token expires with it: a
/// short token cannot keep minting fresh ones forever.
#[test]
fn a_websocket_token_never_outlives_the_token_it_was_minted_from() {
    let s = Server::start(&[]);
    let (_, token) = s.identity();
    let mint = |from: &str| -> String {
        let r = s.http().post(format!("{}/v1/identity/websocket-token", s.url)).bearer_auth(from).send().unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().unwrap()["token"].as_str().unwrap().to_string()
    };
    let exp = |t: &str| -> u64 {
        let claims: Value = jsonwebtoken::dangerous::insecure_decode_claims(t).unwrap();
        claims["exp"].as_u64().unwrap()
    };
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let first = mint(&token);
    let first_exp = exp(&first);
    assert!(first_exp >= now() + 55 && first_exp <= now() + 60, "a WebSocket token lives 60 s");
    // Two seconds later, a token minted from the first one ends when the first one does.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let second = mint(&first);
    assert_eq!(exp(&second), first_exp);
    assert_eq!(exp(&mint(&second)), first_exp);
    // A long-lived token still mints a full 60 s.
    assert!(exp(&mint(&token)) > first_exp);
}
