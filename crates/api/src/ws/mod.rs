//! `GET /v1/database/:name_or_identity/subscribe`: SpacetimeDB 1.3's WebSocket protocol (v1),
//! BSATN or JSON. A connection runs `client_connected`, sends `IdentityToken` first, then
//! decodes client messages in order and hands each to the database's writer; everything the
//! database says to the client arrives through its [`ConnectionSink`], already in durable commit
//! order. Leaving in any way runs `client_disconnected`.

pub mod encode;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use epoch_core::clients::ClientLimits;
use epoch_core::{Caller, ClientSink, ConnectError, Outgoing, ReducerArgs, SubscriptionRequest};
use futures::SinkExt;

use crate::auth::CallerAuth;
use crate::error::ApiError;
use crate::limits::{
    CLOSE_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_MESSAGES,
    DEFAULT_MAX_TOTAL_QUEUED_BYTES, IDLE_TIMEOUT, MAX_FRAMES_PER_FLUSH, MAX_REQUESTS_IN_FLIGHT, PING_INTERVAL,
    READ_BUFFER_BYTES, RETURN_MEMORY_AFTER_BYTES, WRITE_TIMEOUT,
};
use crate::AppState;
use encode::{Compression, Encoder, Format, Frame};
pub use epoch_wsproto::{from_bsatn, from_json, Args, ClientMessage, MessageError};

/// The binary sub-protocol.
pub const BSATN_PROTOCOL: &str = "v1.bsatn.spacetimedb";
/// The text sub-protocol.
pub const JSON_PROTOCOL: &str = "v1.json.spacetimedb";

fn write_stuck() -> String {
    format!("client too slow: it read nothing for {} seconds", WRITE_TIMEOUT.as_secs())
}

/// Gives memory the allocator holds free back to the system (glibc's `malloc_trim`), on a
/// blocking thread; asks made while one runs get one more run after it.
fn return_memory() {
    static WANTED: AtomicBool = AtomicBool::new(false);
    static RUNNING: AtomicBool = AtomicBool::new(false);
    WANTED.store(true, Ordering::SeqCst);
    if RUNNING.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::task::spawn_blocking(|| loop {
        while WANTED.swap(false, Ordering::SeqCst) {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        RUNNING.store(false, Ordering::SeqCst);
        // An ask that came after the last run and found it running is served here.
        if !WANTED.load(Ordering::SeqCst) || RUNNING.swap(true, Ordering::SeqCst) {
            break;
        }
    });
}

/// Limits of the WebSocket API; each is configurable and each refusal says which was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    pub max_message_bytes: usize,
    pub max_queued_bytes: usize,
    /// Bytes waiting for every client of the server together.
    pub max_total_queued_bytes: usize,
    pub max_queued_messages: usize,
    pub clients: ClientLimits,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
            max_total_queued_bytes: DEFAULT_MAX_TOTAL_QUEUED_BYTES,
            max_queued_messages: DEFAULT_MAX_QUEUED_MESSAGES,
            clients: ClientLimits::default(),
        }
    }
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// The upgrade: query parameters, sub-protocol and database checked in 1.3's order.
pub async fn subscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<CallerAuth>,
    Path(segment): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Ok(ws) = ws else { return Ok(crate::database::upgrade_required()) };
    let compression = compression_param(&q)?;
    let light = light_param(&q)?;
    let connection_id = connection_id_param(&q)?;
    let db = crate::database::lookup(&state, &segment)?;
    let Some(protocol) = chosen_protocol(&headers) else {
        return Err(text(StatusCode::BAD_REQUEST, "no valid protocol selected".into()));
    };
    let format = if protocol == BSATN_PROTOCOL { Format::Bsatn } else { Format::Json };
    let encoder = Encoder { format, compression, light };
    let limits = state.limits.ws;
    let is_owner = caller.identity == db.owner;
    let identity = db.identity;
    let who = Caller { identity: caller.identity, connection_id };
    // The frame limit too (tungstenite's default is 16 MiB): a message of one frame may be as
    // large as a message, and a frame over it is refused from its header, before its payload.
    let ws = ws
        .protocols([protocol])
        .max_message_size(limits.max_message_bytes)
        .max_frame_size(limits.max_message_bytes)
        .read_buffer_size(READ_BUFFER_BYTES);
    Ok(ws.on_upgrade(move |socket| async move {
        let conn = Connection { state, database: identity, who, is_owner, token: caller.token, encoder, limits };
        conn.run(socket).await;
    }))
}

/// A plain-text refusal of the upgrade, in 1.3's words.
fn text(status: StatusCode, body: String) -> ApiError {
    ApiError::text(status, body)
}

/// The `compression` query parameter (Brotli when absent), refused with 1.3's wording.
fn compression_param(q: &HashMap<String, String>) -> Result<Compression, ApiError> {
    Ok(match q.get("compression").map(String::as_str) {
        None | Some("Brotli") => Compression::Brotli,
        Some("None") => Compression::None,
        Some("Gzip") => Compression::Gzip,
        Some(other) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Failed to deserialize query string: compression: unknown variant `{other}`, expected one of `None`, `Brotli`, `Gzip`"
                ),
            ))
        }
    })
}

/// The `light` query parameter (false when absent), refused with 1.3's wording.
fn light_param(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    Ok(match q.get("light").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "Failed to deserialize query string: light: provided string was not `true` or `false`".into(),
            ))
        }
    })
}

/// The `connection_id` query parameter (big-endian hex, not all zeros), or a fresh random id
/// when absent; refused with 1.3's wording.
fn connection_id_param(q: &HashMap<String, String>) -> Result<[u8; 16], ApiError> {
    Ok(match q.get("connection_id") {
        None => crate::database::fresh_connection_id(),
        Some(hex_id) => match hex::decode(hex_id).ok().and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(mut be) if be != [0; 16] => {
                be.reverse();
                be
            }
            Some(_) => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    "Invalid connection ID: the all-zeros ConnectionId is reserved.".into(),
                ))
            }
            None => {
                return Err(text(
                    StatusCode::BAD_REQUEST,
                    "Failed to deserialize query string: connection_id: expected 32 hex digits".into(),
                ))
            }
        },
    })
}

/// The sub-protocol to answer with, from those the client offers; as 1.3, binary when the
/// client offers both.
fn chosen_protocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim).map(str::to_string))
        .collect::<Vec<_>>();
    [BSATN_PROTOCOL, JSON_PROTOCOL].into_iter().find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
}

/// What waits for one connection: counted from the moment the database queues a message
/// (before its transaction is durable) until the connection takes it to write.
#[derive(Default)]
struct QueueState {
    messages: usize,
    bytes: usize,
    /// The most bytes it ever held.
    peak_bytes: usize,
    /// Why the client was cut off, once it is.
    cut: Option<String>,
}

/// One connection's queue as its sink, its connection and the server's budget share it.
struct Queue {
    id: u64,
    state: parking_lot::Mutex<QueueState>,
    /// Wakes the connection when it is cut off, even while it waits on a stuck socket.
    cut_notify: tokio::sync::Notify,
    budget: Arc<OutputBudget>,
    metrics: Arc<crate::Metrics>,
}

impl Queue {
    /// Counts a message of `size` bytes; false when the client is cut off (now or before).
    fn admit(&self, size: usize, limits: &WsLimits) -> bool {
        let mut s = self.state.lock();
        if s.cut.is_some() {
            return false;
        }
        let (messages, bytes) = (s.messages + 1, s.bytes + size);
        if messages > limits.max_queued_messages || bytes > limits.max_queued_bytes {
            let reason = format!(
                "client too slow: {messages} messages ({bytes} bytes) waiting, more than the limit of {} messages or {} bytes",
                limits.max_queued_messages, limits.max_queued_bytes
            );
            self.cut_locked(&mut s, reason);
            return false;
        }
        (s.messages, s.bytes) = (messages, bytes);
        s.peak_bytes = s.peak_bytes.max(bytes);
        self.budget.live.fetch_add(size, Ordering::Relaxed);
        self.metrics.ws_queued(size as i64);
        true
    }

    /// A message of `size` bytes left the queue (written, or dropped).
    fn release(&self, size: usize) {
        let mut s = self.state.lock();
        s.messages = s.messages.saturating_sub(1);
        s.bytes = s.bytes.saturating_sub(size);
        if s.cut.is_none() {
            self.budget.live.fetch_sub(size, Ordering::Relaxed);
        }
        self.metrics.ws_queued(-(size as i64));
    }

    /// Cuts the client off: what it holds no longer counts as live, and the connection ends.
    fn cut(&self, reason: String) {
        self.cut_locked(&mut self.state.lock(), reason);
    }

    fn cut_locked(&self, s: &mut QueueState, reason: String) {
        if s.cut.is_none() {
            s.cut = Some(reason);
            self.budget.live.fetch_sub(s.bytes, Ordering::Relaxed);
            self.cut_notify.notify_one();
        }
    }

    fn is_cut(&self) -> bool {
        self.state.lock().cut.is_some()
    }

    /// Why the client was cut off.
    fn reason(&self) -> String {
        self.state.lock().cut.clone().unwrap_or_else(|| "client too slow".into())
    }
}

/// The server-wide budget of bytes waiting for WebSocket clients: every connection's queue,
/// so that the clients with the most waiting can be cut off first once all of them together
/// hold more than [`WsLimits::max_total_queued_bytes`].
#[derive(Default)]
pub struct OutputBudget {
    /// Bytes waiting for clients not cut off.
    live: AtomicUsize,
    queues: parking_lot::Mutex<HashMap<u64, Arc<Queue>>>,
}

impl OutputBudget {
    /// Bytes waiting for clients that are not being cut off.
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Past `limit`, cuts off the clients with the most bytes waiting until the rest fit.
    fn enforce(&self, limit: usize) {
        if self.live.load(Ordering::Relaxed) <= limit {
            return;
        }
        let queues = self.queues.lock();
        let mut by_size: Vec<(usize, &Arc<Queue>)> = queues
            .values()
            .filter_map(|q| {
                let s = q.state.lock();
                s.cut.is_none().then_some((s.bytes, q))
            })
            .collect();
        by_size.sort_unstable_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
        for (bytes, q) in by_size {
            let live = self.live.load(Ordering::Relaxed);
            if live <= limit {
                break;
            }
            q.cut(format!(
                "server too busy: clients hold {live} bytes waiting, more than {limit}; this one held the most ({bytes})"
            ));
            q.metrics.ws_budget_cut();
        }
    }
}

/// A queue's place in the budget, given up when the connection ends.
struct Registered(Arc<Queue>);

impl Registered {
    fn new(queue: Arc<Queue>) -> Self {
        queue.budget.queues.lock().insert(queue.id, queue.clone());
        Self(queue)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.0.budget.queues.lock().remove(&self.0.id);
    }
}

/// The database's way to one connection: an unbounded queue (the database never waits), with
/// the client cut off once it holds more than the limits allow.
struct ConnectionSink {
    tx: tokio::sync::mpsc::UnboundedSender<(Outgoing, usize)>,
    queue: Arc<Queue>,
    limits: WsLimits,
}

impl ClientSink for ConnectionSink {
    fn admit(&self, msg: &Outgoing) -> Option<usize> {
        let size = approx_size(msg);
        if !self.queue.admit(size, &self.limits) {
            return None;
        }
        self.queue.budget.enforce(self.limits.max_total_queued_bytes);
        Some(size)
    }

    fn send(&self, msg: Outgoing, size: usize) {
        if self.queue.is_cut() {
            self.queue.release(size);
            return;
        }
        if let Err(e) = self.tx.send((msg, size)) {
            // The connection is gone.
            self.queue.release(e.0 .1);
        }
    }
}

/// About how many bytes a message will take (its rows), for the queue limit.
fn approx_size(msg: &Outgoing) -> usize {
    let rows = |rows: &[Box<[u8]>]| rows.iter().map(|r| r.len() + 8).sum::<usize>();
    64 + match msg {
        Outgoing::Tx { updates, .. } => updates.iter().map(|u| rows(&u.deletes) + rows(&u.inserts)).sum(),
        Outgoing::Rows { tables, .. } => tables.iter().map(|t| t.rows.data().len() + 8 * t.rows.len()).sum(),
        Outgoing::OneOff { result: Ok(r), .. } => r.rows.len() * 32,
        Outgoing::SubscriptionError { message, .. } | Outgoing::Close(message) => message.len(),
        Outgoing::OneOff { .. } => 0,
    }
}

/// What became of a client message handed to the database.
enum Dispatched {
    Queued,
    /// The writer's queue is full.
    Busy,
    /// The database is gone.
    Gone,
}

/// Why the connection ended, for the log.
enum End {
    ClientClosed,
    Dropped(String),
    Server(u16, String),
}

struct Connection {
    state: AppState,
    database: epoch_core::Identity,
    who: Caller,
    is_owner: bool,
    token: String,
    encoder: Encoder,
    limits: WsLimits,
}

impl Connection {
    async fn run(self, mut socket: WebSocket) {
        let id = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let queue = Arc::new(Queue {
            id,
            state: Default::default(),
            cut_notify: tokio::sync::Notify::new(),
            budget: self.state.ws_output.clone(),
            metrics: self.state.metrics.clone(),
        });
        let registered = Registered::new(queue.clone());
        let sink: Arc<dyn ClientSink> = Arc::new(ConnectionSink { tx, queue: queue.clone(), limits: self.limits });
        match self.connect(id, sink).await {
            Some(Ok(())) => {}
            Some(Err(ConnectError::Rejected(msg))) => {
                // As 1.3: the connection just ends, with no close frame and no IdentityToken.
                tracing::info!(client = id, "client_connected refused the connection: {msg}");
                return;
            }
            Some(Err(e @ ConnectError::TooManyClients(_))) => {
                let _ = socket.send(close(1013, &e.to_string())).await;
                return;
            }
            None => {
                let _ = socket.send(close(1001, "module exited")).await;
                return;
            }
        }
        self.state.metrics.ws_connected(1);
        let hello = self.encoder.identity_token(self.who.identity, &self.token, self.who.connection_id);
        let end = match socket.send(message(hello)).await {
            Ok(()) => self.serve(&mut socket, id, &mut rx, &queue).await,
            Err(e) => End::Dropped(e.to_string()),
        };
        // What still waits is dropped at once (a client cut off for holding too much gives it
        // back before its close handshake); later messages are refused by the closed channel.
        rx.close();
        while let Ok((_, size)) = rx.try_recv() {
            queue.release(size);
        }
        drop(registered);
        if queue.state.lock().peak_bytes >= RETURN_MEMORY_AFTER_BYTES {
            return_memory();
        }
        self.close(&mut socket, id, &end).await;
        self.state.metrics.ws_connected(-1);
        let connection_id = self.who.connection_id;
        self.on_db(move |d| {
            d.disconnect_client(id);
            d.set_connection_jwt(connection_id, None);
        })
        .await;
    }

    /// Writes the client down as connected (for a restart after a crash: the database's
    /// journal thread writes while its writer goes on), then runs `client_connected` once that
    /// is on disk; `None` when the database is gone.
    async fn connect(&self, id: u64, sink: Arc<dyn ClientSink>) -> Option<Result<(), ConnectError>> {
        let (who, is_owner, limits) = (self.who, self.is_owner, self.limits.clients);
        let (written_tx, written) = tokio::sync::oneshot::channel();
        let recorded = self.on_db(move |d| {
            d.set_client_limits(limits);
            d.record_connecting(who, move |ok| {
                let _ = written_tx.send(ok);
            })
        });
        match recorded.await {
            Some(Ok(())) => {
                if written.await != Ok(true) {
                    tracing::warn!(client = id, "writing down a connected client failed");
                }
                let jwt = epoch_auth::jwt_payload(&self.token);
                self.on_db(move |d| {
                    d.set_connection_jwt(who.connection_id, jwt);
                    d.connect_client(id, who, is_owner, sink)
                })
                .await
            }
            other => other,
        }
    }

    /// Ends the connection as `end` says: answers the client's close, or sends the server's.
    async fn close(&self, socket: &mut WebSocket, id: u64, end: &End) {
        match end {
            End::ClientClosed => {
                tracing::debug!(client = id, "client closed the connection");
                // Hands over the reply to the client's close frame, so its close is clean.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, futures::SinkExt::close(socket)).await;
            }
            End::Dropped(why) => tracing::debug!(client = id, "connection dropped: {why}"),
            End::Server(code, why) => {
                tracing::info!(client = id, code, "closing the connection: {why}");
                // A client too slow to read may never take the close frame either.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.send(close(*code, why))).await;
            }
        }
    }

    /// Runs `f` on the database's writer; `None` when the database is gone.
    async fn on_db<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut epoch_core::Database) -> R + Send + 'static,
    ) -> Option<R> {
        let db = self.state.control.get(&self.database)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        db.handle
            .execute(move |d| {
                let _ = tx.send(f(d));
            })
            .ok()?;
        rx.await.ok()
    }

    async fn serve(
        &self,
        socket: &mut WebSocket,
        id: u64,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Outgoing, usize)>,
        queue: &Arc<Queue>,
    ) -> End {
        let in_flight = Arc::new(InFlight::default());
        // Whatever way the connection ends, the reads it queued are no longer worth doing.
        let _closing = CloseOnDrop(in_flight.clone());
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut last_heard = Instant::now();
        loop {
            tokio::select! {
                incoming = socket.recv() => {
                    last_heard = Instant::now();
                    if let Some(end) = self.receive(incoming, id, &in_flight) {
                        return end;
                    }
                }
                out = rx.recv() => {
                    let Some(first) = out else { return End::Server(1001, "module exited".into()) };
                    if let Some(end) = self.send_queued(socket, rx, queue, first).await {
                        return end;
                    }
                }
                _ = queue.cut_notify.notified() => return End::Server(1008, queue.reason()),
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        return End::Server(1000, format!("no message for {} seconds", IDLE_TIMEOUT.as_secs()));
                    }
                    match tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Ping(Default::default()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return End::Dropped("ping failed".into()),
                        Err(_) => return End::Server(1008, write_stuck()),
                    }
                }
            }
        }
    }

    /// Handles one read from the socket: decodes a request and dispatches it. `Some` ends the
    /// connection (closed, unreadable, undecodable, or too many requests in flight).
    fn receive(
        &self,
        incoming: Option<Result<Message, axum::Error>>,
        id: u64,
        in_flight: &Arc<InFlight>,
    ) -> Option<End> {
        let msg = match incoming {
            None => return Some(End::Dropped("the connection ended".into())),
            Some(Err(e)) => return Some(self.read_failed(e)),
            Some(Ok(m)) => m,
        };
        let decoded = match msg {
            Message::Binary(b) => from_bsatn(&b),
            Message::Text(t) => from_json(t.as_str()),
            Message::Close(_) => return Some(End::ClientClosed),
            Message::Ping(_) | Message::Pong(_) => return None,
        };
        let decoded = match decoded {
            Ok(m) => m,
            Err(e) => return Some(End::Server(1011, e.to_string())),
        };
        if in_flight.count.load(Ordering::Relaxed) >= MAX_REQUESTS_IN_FLIGHT {
            return Some(End::Server(1013, "too many requests".into()));
        }
        match self.dispatch(id, decoded, in_flight) {
            Dispatched::Queued => None,
            Dispatched::Busy => Some(End::Server(1013, "the database is busy: too many requests queued".into())),
            Dispatched::Gone => Some(End::Server(1001, "module exited".into())),
        }
    }

    /// Sends `first` and whatever else is already queued (up to [`MAX_FRAMES_PER_FLUSH`]) in
    /// one flush, giving up on a stuck write or a cut. `Some` ends the connection.
    async fn send_queued(
        &self,
        socket: &mut WebSocket,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Outgoing, usize)>,
        queue: &Arc<Queue>,
        first: (Outgoing, usize),
    ) -> Option<End> {
        // Everything already queued goes out in one flush: replies released together
        // by one group commit cost one write.
        let mut next = Some(first);
        let mut batch = 0usize;
        while let Some((msg, size)) = next.take() {
            queue.release(size);
            if let Outgoing::Close(reason) = &msg {
                return Some(End::Server(1008, reason.clone()));
            }
            if let Some(frame) = self.encoder.encode(&msg) {
                let len = match &frame {
                    Frame::Binary(b) | Frame::Text(b) => b.len(),
                };
                tokio::select! {
                    fed = tokio::time::timeout(WRITE_TIMEOUT, socket.feed(message(frame))) => {
                        match fed {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return Some(End::Dropped(e.to_string())),
                            Err(_) => return Some(End::Server(1008, write_stuck())),
                        }
                    }
                    _ = queue.cut_notify.notified() => return Some(End::Server(1008, queue.reason())),
                }
                self.state.metrics.ws_sent(len);
            }
            batch += 1;
            if batch < MAX_FRAMES_PER_FLUSH {
                next = rx.try_recv().ok();
            }
        }
        tokio::select! {
            flushed = tokio::time::timeout(WRITE_TIMEOUT, socket.flush()) => {
                match flushed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Some(End::Dropped(e.to_string())),
                    Err(_) => return Some(End::Server(1008, write_stuck())),
                }
            }
            _ = queue.cut_notify.notified() => return Some(End::Server(1008, queue.reason())),
        }
        None
    }

    /// Why reading failed: a message over the size limit is closed with 1009 (as documented);
    /// anything else (a reset, a protocol error) just ends the connection.
    fn read_failed(&self, e: axum::Error) -> End {
        let text = e.to_string();
        match e.into_inner().downcast::<tungstenite::Error>() {
            Ok(inner) if matches!(*inner, tungstenite::Error::Capacity(_)) => End::Server(
                1009,
                format!("message too large ({inner}): the limit is {} bytes", self.limits.max_message_bytes),
            ),
            _ => End::Dropped(text),
        }
    }

    /// Hands a client message to the database.
    fn dispatch(&self, id: u64, msg: ClientMessage, in_flight: &Arc<InFlight>) -> Dispatched {
        let Some(db) = self.state.control.get(&self.database) else { return Dispatched::Gone };
        let started = Instant::now();
        // A reducer call is done even if its caller left meanwhile (it asked for a change); a
        // subscription or query of a connection that ended is not (nobody reads its answer).
        let reads_only = !matches!(msg, ClientMessage::CallReducer { .. });
        let job: Box<dyn FnOnce(&mut epoch_core::Database) + Send> = match msg {
            ClientMessage::CallReducer { reducer, args, request_id, notify_success } => {
                let args = match args {
                    Args::Bsatn(b) => ReducerArgs::Bsatn(b),
                    Args::Json(j) => ReducerArgs::Json(j),
                };
                Box::new(move |d| d.client_call(id, &reducer, args, request_id, notify_success))
            }
            ClientMessage::OneOffQuery { message_id, query } => {
                Box::new(move |d| d.client_one_off(id, message_id, &query, started))
            }
            ClientMessage::Subscribe { queries, request_id } => {
                request(id, SubscriptionRequest::Legacy { request_id, queries }, started)
            }
            ClientMessage::SubscribeSingle { query, request_id, query_id } => {
                request(id, SubscriptionRequest::Single { request_id, query_id, query }, started)
            }
            ClientMessage::SubscribeMulti { queries, request_id, query_id } => {
                request(id, SubscriptionRequest::Multi { request_id, query_id, queries }, started)
            }
            ClientMessage::Unsubscribe { request_id, query_id } => {
                request(id, SubscriptionRequest::Unsubscribe { request_id, query_id }, started)
            }
            ClientMessage::UnsubscribeMulti { request_id, query_id } => {
                request(id, SubscriptionRequest::UnsubscribeMulti { request_id, query_id }, started)
            }
        };
        in_flight.count.fetch_add(1, Ordering::Relaxed);
        let pending = in_flight.clone();
        let metrics = self.state.metrics.clone();
        // Never block the runtime on a full writer queue: the client is told to slow down.
        match db.handle.try_execute(move |d| {
            pending.count.fetch_sub(1, Ordering::Relaxed);
            if reads_only && pending.closed.load(Ordering::Relaxed) {
                metrics.ws_orphaned_request();
                return;
            }
            job(d)
        }) {
            Ok(()) => Dispatched::Queued,
            Err(epoch_core::executor::Busy::Full) => {
                in_flight.count.fetch_sub(1, Ordering::Relaxed);
                Dispatched::Busy
            }
            Err(epoch_core::executor::Busy::ShutDown) => Dispatched::Gone,
        }
    }
}

/// A connection's requests waiting for the database's writer: how many, and whether the
/// connection has ended (a client cut off for never reading may have queued thousands of
/// subscriptions; the writer skips them instead of computing answers nobody will read).
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

/// Marks the connection's queued requests as orphaned when the connection's loop ends.
struct CloseOnDrop(Arc<InFlight>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Relaxed);
    }
}

fn request(id: u64, req: SubscriptionRequest, started: Instant) -> Box<dyn FnOnce(&mut epoch_core::Database) + Send> {
    Box::new(move |d| d.client_subscription(id, req, started))
}

fn message(frame: Frame) -> Message {
    match frame {
        Frame::Binary(b) => Message::Binary(b),
        Frame::Text(t) => match axum::extract::ws::Utf8Bytes::try_from(t) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Text("".into()),
        },
    }
}

fn close(code: u16, reason: &str) -> Message {
    // A close reason may hold at most 123 bytes.
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame { code, reason: reason.into() }))
}
