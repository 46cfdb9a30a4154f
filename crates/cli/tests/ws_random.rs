//! Randomized: many WebSocket clients with random subscriptions (whole tables, filters, a
//! private table for the owner, the same query under several ids) while random reducers and SQL
//! DML run, some calls in flight at once. After every step each client's local copy (kept from
//! the initial rows and every update, as an SDK keeps it) equals its queries run afresh.
//!
//! `EPOCH_WS_RANDOM_STEPS` sets the number of steps (default 60), `EPOCH_WS_RANDOM_SEED` the seed.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::ws::{connect, Ws, JSON};
use common::Server;
use serde_json::{json, Value};

const QUERIES: &[&str] = &[
    "SELECT * FROM account",
    "SELECT * FROM account WHERE branch = 3",
    "SELECT * FROM account WHERE balance > 100",
    "SELECT * FROM account WHERE id < 8 AND balance <= 100",
    "SELECT * FROM account WHERE id = 5 OR id = 9",
    "SELECT * FROM ledger",
    "SELECT * FROM ledger WHERE from = 3",
    // Joins, maintained by probing the other side's index (1.3 probes `ledger` in the second:
    // only `account` is compared with a constant, so `ledger.from` needs its index).
    "SELECT account.* FROM account JOIN ledger ON account.id = ledger.from",
    "SELECT ledger.* FROM ledger JOIN account ON ledger.from = account.id WHERE account.balance > 100",
    "SELECT account.* FROM account JOIN ledger ON account.id = ledger.to WHERE ledger.amount > 5",
];

/// Columns of each table, in order (to turn rows sent as objects into positional arrays).
fn columns(table: &str) -> &'static [&'static str] {
    match table {
        "account" => &["id", "balance", "branch"],
        _ => &["seq", "from", "to", "amount"],
    }
}

fn table_of(query: &str) -> &'static str {
    if query.starts_with("SELECT ledger") || query.starts_with("SELECT * FROM ledger") {
        "ledger"
    } else {
        "account"
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A row as a positional JSON text.
fn canonical(table: &str, row: &Value) -> String {
    match row {
        Value::Object(m) => Value::Array(columns(table).iter().map(|c| m[*c].clone()).collect()).to_string(),
        other => other.to_string(),
    }
}

struct Client {
    ws: Ws,
    owner: bool,
    /// Query ids held, with their queries.
    sets: BTreeMap<u32, Vec<&'static str>>,
    /// Rows by table, with multiplicity.
    copy: BTreeMap<String, BTreeMap<String, i64>>,
    next_id: u32,
    /// Request ids of calls whose outcome has not arrived.
    pending: BTreeSet<u32>,
}

impl Client {
    fn held(&self) -> BTreeSet<&'static str> {
        self.sets.values().flatten().copied().collect()
    }

    fn apply_update(&mut self, update: &Value, sign: i64) {
        for t in update["tables"].as_array().unwrap() {
            let table = t["table_name"].as_str().unwrap().to_string();
            for u in t["updates"].as_array().unwrap() {
                for (field, s) in [("deletes", -sign), ("inserts", sign)] {
                    for r in u[field].as_array().unwrap() {
                        let row: Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
                        let rows = self.copy.entry(table.clone()).or_default();
                        let n = rows.entry(canonical(&table, &row)).or_default();
                        *n += s;
                        assert!(*n >= 0, "a row deleted that was never held: {row}");
                        if *n == 0 {
                            rows.remove(&canonical(&table, &row));
                        }
                    }
                }
            }
        }
    }

    /// Reads until `until` matches a message, applying every update on the way.
    fn read_until(&mut self, mut until: impl FnMut(&Value) -> bool) {
        loop {
            let m = self.ws.recv();
            if let Some(tx) = m.get("TransactionUpdate") {
                if let Some(c) = tx["status"].get("Committed") {
                    self.apply_update(c, 1);
                }
                self.pending.remove(&(tx["reducer_call"]["request_id"].as_u64().unwrap() as u32));
                if tx["status"].get("Failed").is_some() {
                    // Failures carry no request id (as in 1.3): they answer the oldest call.
                    let first = self.pending.iter().next().copied();
                    if let Some(f) = first {
                        self.pending.remove(&f);
                    }
                }
            } else if let Some(l) = m.get("TransactionUpdateLight") {
                self.apply_update(&l["update"], 1);
            } else if let Some(a) = m.get("SubscribeMultiApplied") {
                self.apply_update(&a["update"], 1);
            } else if let Some(a) = m.get("UnsubscribeMultiApplied") {
                // Rows leaving come as deletes.
                self.apply_update(&a["update"], 1);
            } else if let Some(e) = m.get("SubscriptionError") {
                panic!("unexpected subscription error: {e}");
            }
            if until(&m) {
                return;
            }
        }
    }
}

/// Each query run afresh: through `/sql`, or (joins, which `/sql` does not run) as the initial
/// rows of a new subscription on a separate connection.
fn fresh(
    server: &Server,
    token: &str,
    db: &str,
    queries: &BTreeSet<&str>,
    oracle: &mut Ws,
) -> BTreeMap<String, BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for q in queries {
        if q.contains("JOIN") {
            oracle.send_json(json!({"SubscribeSingle": {"query": q, "request_id": 1, "query_id": {"id": 1}}}));
            let applied = oracle.recv_variant("SubscribeApplied");
            let table = applied["rows"]["table_name"].as_str().unwrap().to_string();
            for u in applied["rows"]["table_rows"]["updates"].as_array().unwrap() {
                for r in u["inserts"].as_array().unwrap() {
                    let row: Value = serde_json::from_str(r.as_str().unwrap()).unwrap();
                    *out.entry(table.clone()).or_default().entry(canonical(&table, &row)).or_default() += 1;
                }
            }
            oracle.send_json(json!({"Unsubscribe": {"request_id": 2, "query_id": {"id": 1}}}));
            oracle.recv_variant("UnsubscribeApplied");
            continue;
        }
        let (status, body) = server.sql(Some(token), db, q);
        assert_eq!(status, 200, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        for row in v[0]["rows"].as_array().unwrap() {
            *out.entry(table_of(q).to_string()).or_default().entry(canonical(table_of(q), row)).or_default() += 1;
        }
    }
    out.retain(|_, rows| !rows.is_empty());
    out
}

#[test]
fn every_client_copy_equals_its_queries_after_every_step() {
    let steps: usize = std::env::var("EPOCH_WS_RANDOM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = std::env::var("EPOCH_WS_RANDOM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_1234);
    eprintln!("seed {seed}, {steps} steps");
    let mut rng = Rng(seed | 1);
    let server = Server::start(&[]);
    let (_, owner) = server.identity();
    let db = format!("rand{}", common::rand_suffix());
    assert!(server.publish(&owner, &db, "bank").status().is_success());
    assert_eq!(server.call(&owner, &db, "open_accounts", "[0, 16, 100]").0, 200);

    let mut clients = connect_clients(&server, &owner, &db);

    let mut oracle = connect(&server.url, &db, JSON, "", Some(&owner)).unwrap();
    oracle.recv_variant("IdentityToken");
    let mut next_request = 100_000u32;
    for step in 0..steps {
        if random_step(&mut rng, &mut clients, (&server, &owner, &db), &mut next_request) {
            check_every_copy(step, &mut clients, (&server, &owner, &db), &mut oracle);
        }
    }
}

/// Six clients, every other one the owner, every third one light.
fn connect_clients(server: &Server, owner: &str, db: &str) -> Vec<Client> {
    (0..6)
        .map(|i| {
            let owner_client = i % 2 == 0;
            let token = owner_client.then_some(owner);
            let light = if i % 3 == 0 { "light=true" } else { "" };
            let mut ws = connect(&server.url, db, JSON, light, token).unwrap();
            ws.recv_variant("IdentityToken");
            Client {
                ws,
                owner: owner_client,
                sets: BTreeMap::new(),
                copy: BTreeMap::new(),
                next_id: 1,
                pending: BTreeSet::new(),
            }
        })
        .collect()
}

/// One random step: subscribe, unsubscribe, SQL DML, or several transfers in flight; `false`
/// when it did nothing (no set to unsubscribe), so no check follows.
fn random_step(
    rng: &mut Rng,
    clients: &mut [Client],
    (server, owner, db): (&Server, &str, &str),
    next_request: &mut u32,
) -> bool {
    match rng.below(10) {
        // Subscribe a random set of queries (the private table only for owners).
        0..=1 => {
            let c = &mut clients[rng.below(6) as usize];
            let n = 1 + rng.below(3) as usize;
            let allowed: Vec<&str> = QUERIES.iter().copied().filter(|q| c.owner || !q.contains("ledger")).collect();
            // (`ledger` is private: joins with it are the owner's too.)
            let qs: Vec<&'static str> = (0..n).map(|_| allowed[rng.below(allowed.len() as u64) as usize]).collect();
            let id = c.next_id;
            c.next_id += 1;
            c.ws.send_json(json!({"SubscribeMulti": {"query_strings": qs, "request_id": id, "query_id": {"id": id}}}));
            c.read_until(|m| m.get("SubscribeMultiApplied").is_some_and(|a| a["query_id"]["id"] == id));
            c.sets.insert(id, qs.into_iter().collect::<BTreeSet<_>>().into_iter().collect());
        }
        // Unsubscribe one set.
        2 => {
            let c = &mut clients[rng.below(6) as usize];
            let Some(&id) = c.sets.keys().nth(rng.below(c.sets.len().max(1) as u64) as usize) else { return false };
            c.ws.send_json(json!({"UnsubscribeMulti": {"request_id": 1000 + id, "query_id": {"id": id}}}));
            c.read_until(|m| m.get("UnsubscribeMultiApplied").is_some_and(|a| a["query_id"]["id"] == id));
            c.sets.remove(&id);
        }
        // SQL DML over HTTP.
        3 => {
            let id = rng.below(16);
            let q = format!("UPDATE account SET balance = {} WHERE id = {id}", rng.below(300));
            assert_eq!(server.sql(Some(owner), db, &q).0, 200);
        }
        // Several transfers in flight at once, from random clients.
        _ => {
            for _ in 0..1 + rng.below(4) {
                let ci = rng.below(6) as usize;
                let c = &mut clients[ci];
                *next_request += 1;
                let rid = *next_request;
                let (from, to, amount) = (rng.below(16), rng.below(16), 1 + rng.below(150));
                c.ws.send_json(json!({"CallReducer": {"reducer": "transfer", "args": format!("[{from},{to},{amount}]"), "request_id": rid, "flags": 0}}));
                c.pending.insert(rid);
            }
            for c in clients.iter_mut() {
                while !c.pending.is_empty() {
                    c.read_until(|m| m.get("TransactionUpdate").is_some());
                }
            }
        }
    }
    true
}

/// After a step, each client's copy equals its queries run afresh. A barrier per client first:
/// a one-off query's answer follows every update queued before it.
fn check_every_copy(step: usize, clients: &mut [Client], (server, owner, db): (&Server, &str, &str), oracle: &mut Ws) {
    // A barrier per client: a one-off query's answer follows every update queued before it.
    for (i, c) in clients.iter_mut().enumerate() {
        let mid = format!("{:08x}", step * 16 + i);
        c.ws.send_json(
            json!({"OneOffQuery": {"message_id": mid, "query_string": "SELECT * FROM account WHERE id = 0"}}),
        );
        c.read_until(|m| m.get("OneOffQueryResponse").is_some_and(|r| r["message_id"] == mid));
        let held = c.held();
        let want = fresh(server, owner, db, &held, oracle);
        let mut got = c.copy.clone();
        got.retain(|_, rows| !rows.is_empty());
        assert_eq!(got, want, "step {step}, client {i}, queries {held:?}");
    }
}
