//! A chat client on the official Rust SDK, with bindings made by `spacetime generate` from the
//! `chat` fixture. It connects, subscribes, calls reducers and prints what it observed as JSON
//! lines; `crates/cli/tests/official_sdks.rs` runs it against a live Epoch server and checks
//! them. Usage: `epoch-rust-sdk-client URI DATABASE HANDLE`.

mod module_bindings;

use std::sync::mpsc;
use std::time::Duration;

use module_bindings::*;
use serde_json::json;
use spacetimedb_sdk::{DbContext, Status, Table, TableWithPrimaryKey};

fn say(v: serde_json::Value) {
    println!("{v}");
}

fn status(s: &Status) -> (String, Option<String>) {
    match s {
        Status::Committed => ("Committed".into(), None),
        Status::Failed(m) => ("Failed".into(), Some(m.to_string())),
        _ => ("OutOfEnergy".into(), None),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (uri, db, handle) = (args[1].clone(), args[2].clone(), args[3].clone());
    let (tx, rx) = mpsc::channel::<&'static str>();
    let on_connect_tx = tx.clone();
    let conn = DbConnection::builder()
        .with_uri(uri)
        .with_module_name(db)
        .on_connect(move |conn, identity, _token| {
            say(json!({"event": "connected", "identity": identity.to_hex().to_string()}));
            let applied = on_connect_tx.clone();
            conn.subscription_builder()
                .on_applied(move |ctx| {
                    let mut posts: Vec<String> = ctx.db.post().iter().map(|p| p.body).collect();
                    posts.sort();
                    say(json!({"event": "applied", "posts": posts, "members": ctx.db.member().count()}));
                    let _ = applied.send("applied");
                })
                .on_error(|_ctx, e| {
                    say(json!({"event": "error", "why": format!("subscription: {e}")}));
                    std::process::exit(1);
                })
                .subscribe(["SELECT * FROM post", "SELECT * FROM member"]);
        })
        .on_connect_error(|_ctx, e| {
            say(json!({"event": "error", "why": format!("connect: {e}")}));
            std::process::exit(1);
        })
        .build()
        .expect("connects");
    conn.db.post().on_insert(|_ctx, row| say(json!({"event": "post_insert", "body": row.body})));
    conn.db.post().on_delete(|_ctx, row| say(json!({"event": "post_delete", "body": row.body})));
    conn.db.member().on_update(|_ctx, old, new| {
        say(json!({"event": "member_update", "old": old.handle, "handle": new.handle, "online": new.online}))
    });
    let post_tx = tx.clone();
    conn.reducers.on_send_post(move |ctx, body| {
        let (s, m) = status(&ctx.event.status);
        say(json!({"event": "send_post", "body": body, "status": s, "message": m}));
        let _ = post_tx.send("send_post");
    });
    let retract_tx = tx.clone();
    conn.reducers.on_retract(move |ctx, id| {
        let (s, _) = status(&ctx.event.status);
        say(json!({"event": "retract", "id": id.to_string(), "status": s}));
        let _ = retract_tx.send("retract");
    });
    let handle_tx = tx.clone();
    conn.reducers.on_set_handle(move |ctx, h| {
        let (s, _) = status(&ctx.event.status);
        say(json!({"event": "set_handle", "handle": h, "status": s}));
        let _ = handle_tx.send("set_handle");
    });
    let worker = conn.run_threaded();
    let wait = |what: &str| match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(got) if got == what => {}
        other => {
            say(json!({"event": "error", "why": format!("waiting for {what}: {other:?}")}));
            std::process::exit(1);
        }
    };
    wait("applied");
    conn.reducers.set_handle(handle.clone()).unwrap();
    wait("set_handle");
    conn.reducers.send_post(format!("hello from {handle}")).unwrap();
    wait("send_post");
    conn.reducers.send_post(String::new()).unwrap();
    wait("send_post");
    conn.reducers.send_post(format!("bye from {handle}")).unwrap();
    wait("send_post");
    let bye = conn.db.post().iter().find(|p| p.body == format!("bye from {handle}")).expect("the second post is cached");
    conn.reducers.retract(bye.id).unwrap();
    wait("retract");
    let mut posts: Vec<String> = conn.db.post().iter().map(|p| p.body).collect();
    posts.sort();
    say(json!({"event": "cached", "posts": posts}));
    conn.disconnect().unwrap();
    let _ = worker.join();
}
