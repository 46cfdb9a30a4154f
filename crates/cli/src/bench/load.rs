//! The load workloads of `epoch bench`, over HTTP and WebSocket with the `bank` module, each run
//! on every server in turn:
//!
//! - http: `bank.transfer_fast` over HTTP `/call` from 16 connections, one call in flight each.
//! - calls: `bank.transfer` over BSATN from 1, 16 and 64 clients, 8 calls in flight each; each
//!   call is done when its caller's `TransactionUpdate` arrives (Epoch sends it once durable).
//! - fanout: 100 and 1,000 subscribers (light mode) of one row while a writer commits changes
//!   to it; the time from the writer's send to each subscriber's receipt.
//! - initial: a new client subscribing to all 100,000 rows of a table; the time to the complete
//!   `SubscribeApplied`.
//! - sql: `/sql` over HTTP from 4 connections against the 100,000-row table: a point query by
//!   primary key, a range of 100 keys, and a full scan with a filter on an unindexed column.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;

use super::servers::Server;
use super::Row;
use crate::limits::{
    ACCOUNTS, HTTP_CONNECTIONS, INITIAL_ROWS, IN_FLIGHT, LARGE_READ_BUFFER, SMALL_READ_BUFFER, SQL_CONNECTIONS,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// The text of one query of the `sql` workload, from the caller's counter.
type QueryText = fn(u64) -> String;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One server prepared for the workloads.
struct Target {
    name: String,
    url: String,
    token: String,
    /// The database of the call and fan-out workloads, by identity.
    db: String,
    /// The database with `INITIAL_ROWS` accounts.
    big: String,
}

/// Runs the wanted load workloads on every server, adding their rows to `rows`.
pub(crate) async fn run(
    servers: &[Server],
    wasm: &[u8],
    secs: Duration,
    wanted: &dyn Fn(&str) -> bool,
    rows: &mut Vec<Row>,
) -> Result<()> {
    let mut targets = Vec::new();
    for s in servers {
        targets.push(prepare(&s.name, &s.url, wasm).await?);
        eprintln!("prepared {} at {}", s.name, s.url);
    }
    if wanted("http") {
        http_rows(&targets, secs, rows).await?;
    }
    for clients in [1usize, 16, 64].into_iter().filter(|_| wanted("calls")) {
        call_rows(&targets, clients, secs, rows).await?;
    }
    for subscribers in [100usize, 1000].into_iter().filter(|_| wanted("fanout")) {
        fan_out_rows(&targets, subscribers, secs, rows).await?;
    }
    if wanted("initial") {
        initial_rows(&targets, rows).await?;
    }
    if wanted("sql") {
        sql_rows(&targets, secs, rows).await?;
    }
    Ok(())
}

/// Workload 1: reducer calls over HTTP on [`HTTP_CONNECTIONS`] connections; rows of the rate
/// and the median and tail latency, one value per server.
async fn http_rows(targets: &[Target], secs: Duration, rows: &mut Vec<Row>) -> Result<()> {
    let workload = format!("1. HTTP transfer_fast, {HTTP_CONNECTIONS} conns");
    let mut per_s = Row::new(&workload, "calls/s", false);
    let mut p50 = Row::new(&workload, "p50 ms", true);
    let mut p99 = Row::new(&workload, "p99 ms", true);
    for t in targets {
        let (rate, lat) = http_calls(t, secs).await?;
        eprintln!("http x{HTTP_CONNECTIONS} {}: {rate:.0}/s p99 {:.2} ms", t.name, pct(&lat, 0.99));
        per_s.values.push(Some(rate));
        p50.values.push(Some(pct(&lat, 0.5)));
        p99.values.push(Some(pct(&lat, 0.99)));
    }
    rows.extend([per_s, p50, p99]);
    Ok(())
}

/// Workload 2: reducer calls over WebSocket from `clients` clients; rows of the rate and the
/// tail latency.
async fn call_rows(targets: &[Target], clients: usize, secs: Duration, rows: &mut Vec<Row>) -> Result<()> {
    let workload = format!("2. WS transfer, {clients} client{}", if clients == 1 { "" } else { "s" });
    let mut per_s = Row::new(&workload, "calls/s", false);
    let mut p99 = Row::new(&workload, "p99 ms", true);
    for t in targets {
        let (rate, lat) = calls(t, clients, secs).await?;
        eprintln!("calls x{clients} {}: {rate:.0}/s p99 {:.2} ms", t.name, pct(&lat, 0.99));
        per_s.values.push(Some(rate));
        p99.values.push(Some(pct(&lat, 0.99)));
    }
    rows.extend([per_s, p99]);
    Ok(())
}

/// Workload 3: one writer's updates reaching `subscribers` subscribers; rows of the median and
/// tail delivery latency.
async fn fan_out_rows(targets: &[Target], subscribers: usize, secs: Duration, rows: &mut Vec<Row>) -> Result<()> {
    let workload = format!("3. fan-out, {subscribers} subscribers");
    let mut p50 = Row::new(&workload, "p50 ms", true);
    let mut p99 = Row::new(&workload, "p99 ms", true);
    for t in targets {
        let lat = fan_out(t, subscribers, secs).await?;
        eprintln!("fan-out x{subscribers} {}: p50 {:.2} ms p99 {:.2} ms", t.name, pct(&lat, 0.5), pct(&lat, 0.99));
        p50.values.push(Some(pct(&lat, 0.5)));
        p99.values.push(Some(pct(&lat, 0.99)));
    }
    rows.extend([p50, p99]);
    Ok(())
}

/// Workload 4: the time to receive a subscription's [`INITIAL_ROWS`] initial rows.
async fn initial_rows(targets: &[Target], rows: &mut Vec<Row>) -> Result<()> {
    let mut initial = Row::new(format!("4. initial subscription, {INITIAL_ROWS} rows"), "ms (median of 5)", true);
    for t in targets {
        let ms = initial_subscription(t).await?;
        eprintln!("initial {}: {ms:.1} ms", t.name);
        initial.values.push(Some(ms));
    }
    rows.push(initial);
    Ok(())
}

/// Workload 5: SQL over HTTP, a point lookup, a range and a full scan; rows of the rate and the
/// tail latency of each.
async fn sql_rows(targets: &[Target], secs: Duration, rows: &mut Vec<Row>) -> Result<()> {
    let queries: [(&str, QueryText); 3] = [
        ("5. SQL point (primary key)", |n| format!("SELECT * FROM account WHERE id = {}", n % INITIAL_ROWS as u64)),
        ("5. SQL range (100 keys)", |n| {
            let from = n * 100 % (INITIAL_ROWS as u64 - 100);
            format!("SELECT * FROM account WHERE id >= {from} AND id < {}", from + 100)
        }),
        ("5. SQL full scan + filter", |n| format!("SELECT * FROM account WHERE balance = {}", n % 7)),
    ];
    for (workload, query) in queries {
        let mut per_s = Row::new(workload, "queries/s", false);
        let mut p99 = Row::new(workload, "p99 ms", true);
        for t in targets {
            let (rate, lat) = sql_queries(t, query, secs).await?;
            eprintln!("{workload} {}: {rate:.0}/s p99 {:.2} ms", t.name, pct(&lat, 0.99));
            per_s.values.push(Some(rate));
            p99.values.push(Some(pct(&lat, 0.99)));
        }
        rows.extend([per_s, p99]);
    }
    Ok(())
}

/// Runs `connections` loops of `one` (given the loop's counter) for the warm-up and `secs`;
/// returns the rate and the latencies (ms) of the measured window.
async fn http_load<F, Fut>(connections: usize, secs: Duration, one: F) -> Result<(f64, Vec<f64>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let warm = Duration::from_secs(1);
    let start = Instant::now();
    let end = start + warm + secs;
    let one = Arc::new(one);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while Instant::now() < end {
                n += 1;
                let at = Instant::now();
                one(c, n).await?;
                if at >= start + warm && Instant::now() < end {
                    latencies.push(at.elapsed().as_secs_f64() * 1e3);
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((latencies.len() as f64 / secs.as_secs_f64(), latencies))
}

/// HTTP reducer calls: `transfer_fast` between a pair of accounts per connection.
async fn http_calls(t: &Target, secs: Duration) -> Result<(f64, Vec<f64>)> {
    http_transfers(&t.url, &t.token, &t.db, secs).await
}

/// [`http_calls`] against database `db` (holding [`ACCOUNTS`] accounts) of the server at `url`.
pub(crate) async fn http_transfers(url: &str, token: &str, db: &str, secs: Duration) -> Result<(f64, Vec<f64>)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(HTTP_CONNECTIONS).build()?;
    let url = format!("{url}/v1/database/{db}/call/transfer_fast");
    let token = token.to_string();
    http_load(HTTP_CONNECTIONS, secs, move |c, n| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let pair = (c as u32 % (ACCOUNTS / 2)) * 2;
            let (from, to) = if n % 2 == 0 { (pair, pair + 1) } else { (pair + 1, pair) };
            let r = http
                .post(&url)
                .bearer_auth(&token)
                .header("Content-Type", "application/json")
                .body(format!("[{from}, {to}, 1]"))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("transfer_fast: {} {}", r.status(), r.text().await?);
            }
            Ok(())
        }
    })
    .await
}

/// `/sql` queries against the big table, the query text from the loop's counter.
async fn sql_queries(t: &Target, query: QueryText, secs: Duration) -> Result<(f64, Vec<f64>)> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(SQL_CONNECTIONS).build()?;
    let url = format!("{}/v1/database/{}/sql", t.url, t.big);
    let token = t.token.clone();
    http_load(SQL_CONNECTIONS, secs, move |c, n| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let r =
                http.post(&url).bearer_auth(&token).body(query(n * SQL_CONNECTIONS as u64 + c as u64)).send().await?;
            if !r.status().is_success() {
                bail!("sql: {} {}", r.status(), r.text().await?);
            }
            r.bytes().await?;
            Ok(())
        }
    })
    .await
}

/// The `q` quantile of `samples` (milliseconds).
pub(crate) fn pct(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q).round() as usize]
}

async fn prepare(name: &str, url: &str, wasm: &[u8]) -> Result<Target> {
    let http = reqwest::Client::new();
    let v: serde_json::Value = http.post(format!("{url}/v1/identity")).send().await?.json().await?;
    let token = v["token"].as_str().context("no token")?.to_string();
    let mut dbs = Vec::new();
    // Fresh names each run, so the same servers can be measured again.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    for (name, accounts) in [(format!("benchws{run}"), ACCOUNTS), (format!("benchwsbig{run}"), INITIAL_ROWS)] {
        let r = http.put(format!("{url}/v1/database/{name}")).bearer_auth(&token).body(wasm.to_vec()).send().await?;
        if !r.status().is_success() {
            bail!("publishing to {url}: {}", r.text().await?);
        }
        let r = http
            .post(format!("{url}/v1/database/{name}/call/open_accounts"))
            .bearer_auth(&token)
            .header("Content-Type", "application/json")
            .body(format!("[0, {accounts}, 1000000000]"))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("opening accounts on {url}: {}", r.text().await?);
        }
        dbs.push(http.get(format!("{url}/v1/database/{name}/identity")).send().await?.text().await?);
    }
    Ok(Target { name: name.to_string(), url: url.to_string(), token, db: dbs[0].clone(), big: dbs[1].clone() })
}

async fn connect(t: &Target, db: &str, query: &str) -> Result<Socket> {
    connect_with(t, db, query, SMALL_READ_BUFFER).await
}

async fn connect_with(t: &Target, db: &str, query: &str, read_buffer: usize) -> Result<Socket> {
    let url = format!("{}/v1/database/{db}/subscribe?compression=None{query}", t.url.replacen("http", "ws", 1));
    let mut req = url.into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("v1.bsatn.spacetimedb"));
    req.headers_mut().insert("Authorization", HeaderValue::from_str(&format!("Bearer {}", t.token))?);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().read_buffer_size(read_buffer);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    // IdentityToken first.
    next_binary(&mut ws).await?;
    Ok(ws)
}

async fn next_binary(ws: &mut Socket) -> Result<Vec<u8>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
            Some(Ok(Message::Close(c))) => bail!("closed: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the connection ended"),
        }
    }
}

fn call_message(reducer: &str, args: &[u8], request_id: u32) -> Message {
    let mut b = vec![0u8];
    b.extend_from_slice(&(reducer.len() as u32).to_le_bytes());
    b.extend_from_slice(reducer.as_bytes());
    b.extend_from_slice(&(args.len() as u32).to_le_bytes());
    b.extend_from_slice(args);
    b.extend_from_slice(&request_id.to_le_bytes());
    b.push(0);
    Message::Binary(b.into())
}

fn transfer_args(from: u32, to: u32, amount: i64) -> Vec<u8> {
    let mut b = from.to_le_bytes().to_vec();
    b.extend_from_slice(&to.to_le_bytes());
    b.extend_from_slice(&amount.to_le_bytes());
    b
}

/// The request id of a caller's `TransactionUpdate` (uncompressed, empty update or failure).
fn caller_request_id(frame: &[u8]) -> Option<u32> {
    let mut at = 2; // compression tag, message tag
    if frame.get(1) != Some(&1) {
        return None;
    }
    let u32_at = |i: usize| frame.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])));
    match frame.get(at)? {
        0 => {
            // Committed: the caller watches nothing, so no tables.
            if u32_at(at + 1)? != 0 {
                return None;
            }
            at += 5;
        }
        1 => at += 5 + u32_at(at + 1)? as usize,
        _ => at += 1,
    }
    at += 8 + 32 + 16; // timestamp, caller identity, connection id
    at += 4 + u32_at(at)? as usize; // reducer name
    at += 4; // reducer id
    at += 4 + u32_at(at)? as usize; // args
    u32_at(at)
}

/// Throughput: `clients` clients each keeping `IN_FLIGHT` transfers in flight; calls/s over
/// the measured window (after a warm-up of a second) and each call's latency.
async fn calls(t: &Target, clients: usize, secs: Duration) -> Result<(f64, Vec<f64>)> {
    let warm = Duration::from_secs(1);
    // Every client connects first, so the clock covers calls only.
    let mut sockets = Vec::new();
    for _ in 0..clients {
        sockets.push(connect(t, &t.db, "").await?);
    }
    let start = Instant::now();
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (c, mut ws) in sockets.into_iter().enumerate() {
        let (measuring, done) = (measuring.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let pair = (c as u32 % (ACCOUNTS / 2)) * 2;
            let mut sent: HashMap<u32, Instant> = HashMap::new();
            let mut latencies = Vec::new();
            let mut next_id = 1u32;
            let end = start + warm + secs;
            loop {
                while sent.len() < IN_FLIGHT && Instant::now() < end {
                    let (from, to) = if next_id.is_multiple_of(2) { (pair, pair + 1) } else { (pair + 1, pair) };
                    ws.send(call_message("transfer", &transfer_args(from, to, 1), next_id)).await?;
                    sent.insert(next_id, Instant::now());
                    next_id += 1;
                }
                if sent.is_empty() {
                    break;
                }
                let frame = next_binary(&mut ws).await?;
                if let Some(rid) = caller_request_id(&frame) {
                    if let Some(at) = sent.remove(&rid) {
                        if measuring.load(Ordering::Relaxed) && Instant::now() < end {
                            latencies.push(at.elapsed().as_secs_f64() * 1e3);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(latencies)
        }));
    }
    tokio::time::sleep_until((start + warm).into()).await;
    measuring.store(true, Ordering::Relaxed);
    let measured_from = Instant::now();
    tokio::time::sleep_until((start + warm + secs).into()).await;
    let window = measured_from.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((count as f64 / window, latencies))
}

/// Fan-out: `subscribers` light clients watch account 0 while one writer moves money in and
/// out of it; each delivery's delay from the writer's send, in milliseconds.
async fn fan_out(t: &Target, subscribers: usize, secs: Duration) -> Result<Vec<f64>> {
    let sent: Arc<Mutex<HashMap<u32, Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut ws = connect(t, &t.db, "&light=true").await?;
        let mut sub = vec![3u8];
        let q = "SELECT * FROM account WHERE id = 0";
        sub.extend_from_slice(&(q.len() as u32).to_le_bytes());
        sub.extend_from_slice(q.as_bytes());
        sub.extend_from_slice(&(i as u32).to_le_bytes());
        sub.extend_from_slice(&1u32.to_le_bytes());
        ws.send(Message::Binary(sub.into())).await?;
        let applied = next_binary(&mut ws).await?;
        if applied.get(1) != Some(&5) {
            bail!("{}: expected SubscribeApplied, got message tag {:?}", t.name, applied.get(1));
        }
        let (sent, latencies, stop) = (sent.clone(), latencies.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let frame = match tokio::time::timeout(Duration::from_millis(200), next_binary(&mut ws)).await {
                    Ok(f) => f?,
                    Err(_) => continue,
                };
                // TransactionUpdateLight: the writer's request id comes first.
                if frame.get(1) == Some(&2) {
                    let rid = u32::from_le_bytes(frame[2..6].try_into()?);
                    let at = sent.lock().get(&rid).copied();
                    if let Some(at) = at {
                        latencies.lock().push(at.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok(())
        }));
    }
    let mut writer = connect(t, &t.db, "").await?;
    let end = Instant::now() + secs;
    let mut rid = 1u32;
    while Instant::now() < end {
        let (from, to) = if rid.is_multiple_of(2) { (0, 1) } else { (1, 0) };
        sent.lock().insert(rid, Instant::now());
        writer.send(call_message("transfer", &transfer_args(from, to, 1), rid)).await?;
        while caller_request_id(&next_binary(&mut writer).await?) != Some(rid) {}
        rid += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let _ = writer.close(None).await;
    let out = latencies.lock().clone();
    if out.len() < (rid as usize - 1) * subscribers / 2 {
        bail!("{}: only {} of {} deliveries arrived", t.name, out.len(), (rid as usize - 1) * subscribers);
    }
    Ok(out)
}

/// The median of five times to receive all `INITIAL_ROWS` rows of a new subscription, in ms.
async fn initial_subscription(t: &Target) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..5u32 {
        let mut ws = connect_with(t, &t.big, "", LARGE_READ_BUFFER).await?;
        let q = "SELECT * FROM account";
        let mut sub = vec![3u8];
        sub.extend_from_slice(&(q.len() as u32).to_le_bytes());
        sub.extend_from_slice(q.as_bytes());
        sub.extend_from_slice(&i.to_le_bytes());
        sub.extend_from_slice(&1u32.to_le_bytes());
        let started = Instant::now();
        ws.send(Message::Binary(sub.into())).await?;
        let frame = next_binary(&mut ws).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        if frame.get(1) != Some(&5) || frame.len() < INITIAL_ROWS as usize * 14 {
            bail!("{}: expected SubscribeApplied with {INITIAL_ROWS} rows, got {} bytes", t.name, frame.len());
        }
        times.push(ms);
        let _ = ws.close(None).await;
    }
    Ok(pct(&times, 0.5))
}
