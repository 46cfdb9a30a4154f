//! The `atproto-firehose` workflow kind: `com.atproto.sync.subscribeRepos` applied through the
//! record reducer, exactly once, with the cursor saved with the rows it covers.
//!
//! One instance per database follows the firehose: `mode: "live"` forever (a stream), or
//! `mode: "catch_up"` from a stored cursor up to the live head, after which it hands over to a
//! new live instance from where it stopped. The runner's steps make each operation apply once
//! across crashes; the cursor (`seq`, when it last advanced, and the newest `rev` applied per
//! repo) is the last item's, saved after every batch.
//!
//! Each `#commit` of a member, for a kept collection, becomes one item per operation (the
//! record from the commit's blocks, or `None` for a delete). A commit whose `rev` is not newer
//! than the last applied for its repo is skipped. A `#sync` event, or a commit whose `since`
//! is not the last applied `rev` (Sync 1.1: events were missed), re-reads the repo: a reset
//! item and one item per record. An `#account` event that deactivates a repo resets it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use epoch_atproto::{decode_frame, Car, Frame, Repo};
use epoch_control::ControlPlane;
use epoch_core::Identity;
use epoch_core::{Caller, Database, ReducerArgs, WorkflowStep};
use epoch_sync::{ConfigContext, Instance, Item, ItemError, Kind, KindSpec, ListError, RunParams, Runner, RunnerError};
use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::backfill::FullSyncSpec;
use crate::config::AtprotoConfig;
use crate::holds::Holds;
use crate::identity::Keys;
use crate::limits::{
    HEAD_QUIET, MAX_BACKOFF, MAX_HELD_FRAMES, MAX_TRACKED_REPOS, MIN_BACKOFF, READ_AHEAD_FRAMES, REFETCH_RETRY_INTERVAL,
};
use crate::xrpc::Xrpc;
use crate::RESET;

/// The kind's name, as instances show it.
pub const KIND: &str = "atproto-firehose";

/// The kind as the runner knows it. It starts live instances itself (after a catch_up), so it
/// holds the runner once the server has made it.
#[derive(Default)]
pub struct FirehoseSpec {
    runner: OnceLock<Weak<Runner>>,
    holds: Arc<Holds>,
    /// Hosts DID resolution may reach on loopback or private addresses (the operator's list).
    allowed_hosts: crate::identity::AllowedHosts,
}

impl FirehoseSpec {
    /// The kind, resolving DIDs on the hosts of `allowed_hosts` (`host` or `host:port`) even when
    /// they are on a loopback or private address: a local PLC directory or did:web host.
    pub fn with_allowed_hosts(allowed_hosts: Vec<String>) -> Self {
        Self { allowed_hosts: Arc::new(allowed_hosts), ..Self::default() }
    }

    /// Lets catch_up instances hand over to live ones.
    pub fn bind(&self, runner: &Arc<Runner>) {
        let _ = self.runner.set(Arc::downgrade(runner));
    }

    /// The full_sync kind of the same server: the live events of the repos it has not
    /// re-read yet are held back by this kind's instances.
    pub fn full_sync_spec(&self) -> FullSyncSpec {
        FullSyncSpec { holds: self.holds.clone(), allowed_hosts: self.allowed_hosts.clone() }
    }
}

impl KindSpec for FirehoseSpec {
    fn name(&self) -> &'static str {
        KIND
    }

    fn config_section(&self) -> &'static str {
        "atproto"
    }

    fn secret_fields(&self) -> &'static [&'static str] {
        &[]
    }

    fn validate_config(&self, config: &mut Map<String, Value>, cx: &ConfigContext<'_>) -> Result<(), String> {
        AtprotoConfig::validate_section(config, cx)
    }

    /// One firehose instance per database at a time.
    fn scope(&self, _: &Instance) -> String {
        String::new()
    }

    fn open(&self, control: &Arc<ControlPlane>, i: &Instance) -> Result<Arc<dyn Kind>, RunnerError> {
        let (config, xrpc, keys) = crate::open_source(control, i, &self.allowed_hosts)?;
        let runner = self.runner.get().cloned();
        let firehose = Firehose::new(i, config, xrpc, keys, runner.clone(), self.holds.clone());
        // The revs the last full_sync handed over may not have been saved before a crash.
        if let (Some(runner), Some(database)) = (runner.and_then(|r| r.upgrade()), Identity::from_hex(&i.database)) {
            firehose.adopt(crate::backfill::handed_over_revs(&runner, &database));
        }
        Ok(Arc::new(firehose))
    }
}

/// Where a firehose instance is.
#[derive(Debug, Default, Clone)]
struct Cursor {
    seq: Option<i64>,
    revs: BTreeMap<String, String>,
    /// Repos still to be read again whole.
    refetch: BTreeSet<String>,
    /// Repos read again whole so far (gaps, `#sync` events, moves seen after a restart).
    rereads: u64,
}

impl Cursor {
    fn of(i: &Instance) -> Self {
        let c = i.cursor.clone().or_else(|| i.params.kind.get("from").cloned()).unwrap_or(Value::Null);
        Self {
            seq: c["seq"].as_i64(),
            revs: serde_json::from_value(c["revs"].clone()).unwrap_or_default(),
            refetch: serde_json::from_value(c["refetch"].clone()).unwrap_or_default(),
            rereads: c["rereads"].as_u64().unwrap_or(0),
        }
    }
}

/// What the reader thread hands over.
enum Event {
    Frame(Box<Frame>),
    Fatal(String),
}

/// The WebSocket side: a thread that follows the firehose and queues decoded frames.
struct Reader {
    rx: Mutex<std::sync::mpsc::Receiver<Event>>,
    stop: Arc<AtomicBool>,
    /// When the last frame arrived, and whether the stream has connected at least once.
    last_frame: Arc<Mutex<(Instant, bool)>>,
}

impl Reader {
    fn start(service: &str, cursor: Option<i64>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(READ_AHEAD_FRAMES);
        let stop = Arc::new(AtomicBool::new(false));
        let last_frame = Arc::new(Mutex::new((Instant::now(), false)));
        let base = service.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1);
        let (stopping, seen) = (stop.clone(), last_frame.clone());
        let spawned = std::thread::Builder::new().name("atproto-firehose".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Event::Fatal(format!("starting the firehose reader: {e}")));
                    return;
                }
            };
            runtime.block_on(follow(base, cursor, tx, stopping, seen));
        });
        if let Err(e) = spawned {
            tracing::error!("cannot start the firehose reader: {e}");
        }
        Self { rx: Mutex::new(rx), stop, last_frame }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Follows the firehose from `cursor`, reconnecting with backoff from the last frame received.
async fn follow(
    base: String,
    mut cursor: Option<i64>,
    tx: std::sync::mpsc::SyncSender<Event>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<(Instant, bool)>>,
) {
    let mut backoff = MIN_BACKOFF;
    while !stop.load(Ordering::Acquire) {
        let url = match cursor {
            Some(c) => format!("{base}/xrpc/com.atproto.sync.subscribeRepos?cursor={c}"),
            None => format!("{base}/xrpc/com.atproto.sync.subscribeRepos"),
        };
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut ws, _)) => {
                backoff = MIN_BACKOFF;
                *seen.lock() = (Instant::now(), true);
                loop {
                    let next = tokio::time::timeout(Duration::from_millis(250), ws.next()).await;
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    let message = match next {
                        Err(_) => continue, // quiet: look at the stop flag again
                        Ok(None) => break,
                        Ok(Some(Err(e))) => {
                            tracing::warn!("firehose: {e}");
                            break;
                        }
                        Ok(Some(Ok(m))) => m,
                    };
                    let tokio_tungstenite::tungstenite::Message::Binary(bytes) = message else { continue };
                    *seen.lock() = (Instant::now(), true);
                    match decode_frame(&bytes) {
                        Ok(frame) => {
                            if let Some(seq) = frame.seq() {
                                cursor = Some(seq);
                            }
                            let fatal = matches!(frame, Frame::Error(_));
                            // Blocks while the reducers are behind (back-pressure on the relay).
                            if tx.send(Event::Frame(Box::new(frame))).is_err() || fatal {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("firehose: skipping an undecodable frame: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("firehose: connecting to {base}: {e}; again in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A running firehose instance.
struct Firehose {
    /// Signing keys, when the configuration names a PLC directory: each commit is checked.
    keys: Option<Keys>,
    catch_up: bool,
    config: AtprotoConfig,
    xrpc: Xrpc,
    reader: Reader,
    /// The newest `rev` applied per repo (as of the items listed so far).
    revs: Mutex<BTreeMap<String, String>>,
    at_head: AtomicBool,
    runner: Option<Weak<Runner>>,
    instance: String,
    database: String,
    caller: String,
    /// The backfill this instance is (a catch_up), if any.
    backfill_id: Option<String>,
    /// Which repos a full_sync is re-reading (their events wait in `held`).
    holds: Arc<Holds>,
    held: Mutex<Held>,
    /// The newest event listed (applied, skipped or held).
    listed_seq: Mutex<Option<i64>>,
    /// Repos that must be read again whole but could not be (their PDS failed): tried again
    /// every [`REFETCH_RETRY_INTERVAL`], and kept in the saved cursor, so a crash does not
    /// forget them once the cursor has moved past their event.
    refetch_pending: Mutex<BTreeSet<String>>,
    /// When the pending repos may be tried again.
    refetch_retry_at: Mutex<Instant>,
    /// A live consumer started with no place in the stream reads from its head: the repos it
    /// knows a rev of are compared once with the service's (`listRepos`), and those that moved
    /// meanwhile are read again, so records made while it was down are not left for the
    /// repo's next commit to reveal.
    heads_unchecked: AtomicBool,
    /// Repos read again whole by this instance, as its saved cursor counts them: what a
    /// restart with no place in the stream, or a gap, cost.
    rereads: std::sync::atomic::AtomicU64,
}

/// Events held back while their repo is re-read by a full_sync, in order per repo.
#[derive(Default)]
struct Held {
    by_repo: BTreeMap<String, Vec<Frame>>,
    frames: usize,
}

impl Held {
    /// The oldest event held.
    fn first_seq(&self) -> Option<i64> {
        self.by_repo.values().filter_map(|f| f.first().and_then(Frame::seq)).min()
    }
}

impl Firehose {
    /// Instance `i` of the kind, following the firehose of `config.service` from its cursor.
    fn new(
        i: &Instance,
        config: AtprotoConfig,
        xrpc: Xrpc,
        keys: Option<Keys>,
        runner: Option<Weak<Runner>>,
        holds: Arc<Holds>,
    ) -> Self {
        let cursor = Cursor::of(i);
        Self {
            keys,
            catch_up: i.param_str("mode") == Some("catch_up"),
            reader: Reader::start(&config.service, cursor.seq),
            config,
            xrpc,
            revs: Mutex::new(cursor.revs),
            at_head: AtomicBool::new(false),
            runner,
            instance: i.id.clone(),
            database: i.database.clone(),
            caller: i.caller.clone(),
            backfill_id: i.detail.get("backfillId").and_then(Value::as_str).map(str::to_string),
            holds,
            held: Mutex::new(Held::default()),
            listed_seq: Mutex::new(cursor.seq),
            refetch_pending: Mutex::new(cursor.refetch),
            refetch_retry_at: Mutex::new(Instant::now()),
            heads_unchecked: AtomicBool::new(cursor.seq.is_none()),
            rereads: std::sync::atomic::AtomicU64::new(cursor.rereads),
        }
    }

    /// Takes the snapshot revs a full_sync handed over, where newer than those known.
    fn adopt(&self, revs: BTreeMap<String, String>) {
        for (did, rev) in revs {
            let newer = self.revs.lock().get(&did).is_none_or(|old| old.as_str() < rev.as_str());
            if newer {
                self.set_rev(&did, &rev);
            }
        }
    }

    /// Once connected from the head with revs known (see `heads_unchecked`): the repos whose
    /// rev on the service is newer than the one known become pending re-reads.
    fn check_heads(&self) {
        let connected = self.reader.last_frame.lock().1;
        if !connected || !self.heads_unchecked.load(Ordering::Acquire) || Instant::now() < *self.refetch_retry_at.lock()
        {
            return;
        }
        if self.revs.lock().is_empty() {
            self.heads_unchecked.store(false, Ordering::Release);
            return;
        }
        let listed = match self.xrpc.list_repos() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "firehose: cannot compare the repos' heads after a start from the head ({e}); trying again"
                );
                *self.refetch_retry_at.lock() = Instant::now() + REFETCH_RETRY_INTERVAL;
                return;
            }
        };
        self.heads_unchecked.store(false, Ordering::Release);
        let moved: Vec<String> = {
            let revs = self.revs.lock();
            let moved =
                |r: &&crate::xrpc::ListedRepo| revs.get(&r.did).zip(r.rev.as_ref()).is_some_and(|(old, now)| old < now);
            listed.iter().filter(moved).map(|r| r.did.clone()).collect()
        };
        if !moved.is_empty() {
            tracing::info!(
                repos = moved.len(),
                "firehose: repos changed while the consumer had no place in the stream; reading them again"
            );
            self.refetch_pending.lock().extend(moved);
        }
    }

    /// Checks a commit's signature against its repo's key, when keys are checked.
    fn verify(&self, c: &epoch_atproto::frame::Commit, blocks: &Car) -> Result<(), ItemError> {
        let Some(keys) = &self.keys else { return Ok(()) };
        let cid = c.commit.ok_or_else(|| ItemError::Invalid(format!("commit {} names no commit block", c.seq)))?;
        let block = blocks.block(&cid).map_err(|e| ItemError::Invalid(format!("commit {}: {e}", c.seq)))?;
        let key = crate::signing_key(keys, &c.repo)?;
        epoch_atproto::signature::verify_commit(block, &key)
            .map_err(|e| ItemError::Invalid(format!("commit {} of {}: {e}", c.seq, c.repo)))
    }

    /// The cursor after event `seq`, emitted at `time` (RFC 3339; now when unknown): its age is
    /// the age of the newest event applied, however long ago it was applied or saved.
    /// Its `seq` stays before the oldest event held, so a restart reads held events again.
    fn cursor(&self, time: Option<&str>) -> Value {
        let at = time.and_then(parse_rfc3339_ms).unwrap_or_else(epoch_sync::now_ms);
        let listed = *self.listed_seq.lock();
        let seq = match (listed, self.held.lock().first_seq()) {
            (Some(l), Some(h)) => Some(l.min(h - 1)),
            (l, _) => l,
        };
        json!({ "seq": seq, "advancedAt": at })
    }

    /// `cursor` with the newest `rev` applied per repo. Only the cursor the runner saves (a
    /// batch's last item's, or a position) carries them, not every item's.
    fn with_revs(&self, mut cursor: Value) -> Value {
        cursor["revs"] = json!(*self.revs.lock());
        let rereads = self.rereads.load(Ordering::Relaxed);
        if rereads > 0 {
            cursor["rereads"] = json!(rereads);
        }
        let pending = self.refetch_pending.lock();
        if !pending.is_empty() {
            cursor["refetch"] = json!(*pending);
        }
        cursor
    }

    /// Tries again to read the repos whose re-read failed, at most every
    /// [`REFETCH_RETRY_INTERVAL`].
    fn retry_refetches(&self, out: &mut Vec<Item>) -> Result<(), ListError> {
        let pending: Vec<String> = self.refetch_pending.lock().iter().cloned().collect();
        if pending.is_empty() || Instant::now() < *self.refetch_retry_at.lock() {
            return Ok(());
        }
        *self.refetch_retry_at.lock() = Instant::now() + REFETCH_RETRY_INTERVAL;
        let seq = (*self.listed_seq.lock()).unwrap_or(0);
        for did in pending {
            self.refetch(seq, &did, out)?;
        }
        Ok(())
    }

    /// Lets go of the held events of repos a full_sync has finished: each repo's `rev` becomes
    /// its snapshot's, and its held events are listed in order (those not newer are skipped).
    fn release(&self, out: &mut Vec<Item>) -> Result<(), ListError> {
        let ready: Vec<String> = {
            let held = self.held.lock();
            held.by_repo.keys().filter(|did| !self.holds.holding(&self.database, did)).cloned().collect()
        };
        // After the check above: every repo found done has its rev here.
        for (did, rev) in self.holds.take_finished(&self.database) {
            let newer = self.revs.lock().get(&did).is_none_or(|old| old.as_str() < rev.as_str());
            if newer {
                self.set_rev(&did, &rev);
            }
        }
        for did in ready {
            let frames = {
                let mut held = self.held.lock();
                let frames = held.by_repo.remove(&did).unwrap_or_default();
                held.frames -= frames.len();
                frames
            };
            tracing::debug!(did, events = frames.len(), "firehose: applying events held during a full_sync");
            for frame in frames {
                self.items_of(frame, out)?;
            }
        }
        Ok(())
    }

    /// Holds `frame` back when a full_sync is re-reading its repo (or earlier events of the
    /// repo wait already); gives it back otherwise.
    fn hold(&self, frame: Frame) -> Option<Frame> {
        let Some(did) = frame.did().filter(|d| self.config.is_member(d)) else { return Some(frame) };
        let mut held = self.held.lock();
        if !held.by_repo.contains_key(did) && !self.holds.holding(&self.database, did) {
            return Some(frame);
        }
        held.by_repo.entry(did.to_string()).or_default().push(frame);
        held.frames += 1;
        None
    }

    /// Items that re-read `did`'s repo whole: a reset, then every kept record.
    fn refetch(&self, seq: i64, did: &str, out: &mut Vec<Item>) -> Result<(), ListError> {
        let bytes = match self.xrpc.get_repo(did) {
            Ok(b) => b,
            Err(e) => {
                // Never passed over: the repo stays pending (in the saved cursor too) and is
                // read again until it can be.
                if self.refetch_pending.lock().insert(did.to_string()) {
                    tracing::warn!(
                        did,
                        "firehose: cannot re-read a repo ({e}); trying again every {REFETCH_RETRY_INTERVAL:?}"
                    );
                    *self.refetch_retry_at.lock() = Instant::now() + REFETCH_RETRY_INTERVAL;
                }
                return Ok(());
            }
        };
        if self.refetch_pending.lock().remove(did) {
            tracing::info!(did, "firehose: a repo that could not be re-read is read again");
        }
        let repo = Repo::decode(&bytes).map_err(|e| ListError(format!("the repo of {did}: {e}")))?;
        if let Some(keys) = &self.keys {
            if let Err(e) = crate::untrusted(did, &repo, keys) {
                out.push(refused(format!("{seq}/{did}{RESET}"), self.cursor(None), e));
                return Ok(());
            }
        }
        self.set_rev(did, &repo.rev);
        self.rereads.fetch_add(1, Ordering::Relaxed);
        let cursor = self.cursor(None);
        out.push(Item { key: format!("{seq}/{did}{RESET}"), cursor: with_args(&cursor, json!([did])) });
        for r in repo.records.iter().filter(|r| self.config.keeps(&r.collection)) {
            let record = repo.record_json(r).map_err(|e| ListError(e.to_string()))?;
            let args = json!([did, r.collection, r.rkey, r.cid.to_string(), {"some": record.to_string()}]);
            out.push(Item { key: format!("{seq}/{did}/{}", r.key()), cursor: with_args(&cursor, args) });
        }
        Ok(())
    }

    fn set_rev(&self, did: &str, rev: &str) {
        let mut revs = self.revs.lock();
        if revs.len() < MAX_TRACKED_REPOS || revs.contains_key(did) {
            debug_assert!(revs.get(did).is_none_or(|old| old.as_str() <= rev), "a repo's rev only moves forward");
            revs.insert(did.to_string(), rev.to_string());
        }
    }

    /// The items of a commit already checked: one per operation on a kept collection.
    fn commit_items(
        &self,
        c: &epoch_atproto::frame::Commit,
        blocks: &Car,
        out: &mut Vec<Item>,
    ) -> Result<(), ListError> {
        let cursor = self.cursor(Some(&c.time));
        for op in &c.ops {
            let Some((collection, rkey)) = op.path.split_once('/') else { continue };
            if !self.config.keeps(collection) {
                continue;
            }
            let record = match (&op.action[..], &op.cid) {
                ("delete", _) => json!({"none": []}),
                (_, Some(cid)) => {
                    let block = blocks.block(cid).map_err(|e| ListError(format!("commit {}: {e}", c.seq)))?;
                    let v = epoch_atproto::value::record_json(block)
                        .map_err(|e| ListError(format!("commit {}: {e}", c.seq)))?;
                    json!({"some": v.to_string()})
                }
                _ => continue,
            };
            let cid = op.cid.map(|c| c.to_string()).unwrap_or_default();
            let args = json!([c.repo, collection, rkey, cid, record]);
            out.push(Item { key: format!("{}/{}", c.seq, op.path), cursor: with_args(&cursor, args) });
        }
        Ok(())
    }

    /// The items of one frame.
    fn items_of(&self, frame: Frame, out: &mut Vec<Item>) -> Result<(), ListError> {
        match frame {
            Frame::Commit(c) => {
                if !self.config.is_member(&c.repo) {
                    return Ok(());
                }
                let last = self.revs.lock().get(&c.repo).cloned();
                if last.as_deref().is_some_and(|l| c.rev.as_str() <= l) {
                    return Ok(()); // already applied (or older)
                }
                // Sync 1.1: a commit that does not follow the last one applied means events
                // were missed; the repo is read again whole.
                if (last.is_some() && c.since.is_some() && c.since != last) || c.too_big {
                    return self.refetch(c.seq, &c.repo, out);
                }
                let blocks = Car::decode(&c.blocks).map_err(|e| ListError(format!("commit {}: {e}", c.seq)))?;
                if let Err(e) = self.verify(&c, &blocks) {
                    // Not applied; the repo is read again (and checked) at its next event.
                    self.revs.lock().insert(c.repo.clone(), String::new());
                    out.push(refused(format!("{}/{}#commit", c.seq, c.repo), self.cursor(Some(&c.time)), e));
                    return Ok(());
                }
                self.set_rev(&c.repo, &c.rev);
                self.commit_items(&c, &blocks, out)
            }
            Frame::Sync(s) if self.config.is_member(&s.did) => self.refetch(s.seq, &s.did, out),
            Frame::Identity(a) => {
                // The repo's key may have changed: resolve it again at its next commit.
                if let Some(keys) = &self.keys {
                    keys.forget(&a.did);
                }
                Ok(())
            }
            Frame::Account(a) if self.config.is_member(&a.did) && a.active == Some(false) => {
                let cursor = self.cursor(None);
                out.push(Item {
                    key: format!("{}/{}{RESET}", a.seq, a.did),
                    cursor: with_args(&cursor, json!([a.did])),
                });
                self.revs.lock().remove(&a.did);
                Ok(())
            }
            Frame::Account(a) if self.config.is_member(&a.did) && a.active == Some(true) => {
                self.refetch(a.seq, &a.did, out)
            }
            Frame::Info(info) if info.name == "OutdatedCursor" => {
                if self.catch_up {
                    let why = "the relay no longer holds the events after the cursor (OutdatedCursor)";
                    self.turn_into_full_sync(why);
                    return Err(ListError(format!("{why}: a full_sync takes over")));
                }
                tracing::warn!(
                    "firehose: the relay dropped events after the cursor (OutdatedCursor); a full_sync repairs it"
                );
                Ok(())
            }
            Frame::Error(e) => Err(ListError(format!("{}: {}", e.error, e.message.unwrap_or_default()))),
            _ => Ok(()),
        }
    }

    /// A catch_up that cannot be done (the relay dropped the events it needs) becomes a
    /// full_sync under the same backfill id, and the live consumer starts again from now.
    fn turn_into_full_sync(&self, why: &str) {
        let Some(runner) = self.runner.as_ref().and_then(Weak::upgrade) else { return };
        let (Some(database), Some(caller)) = (Identity::from_hex(&self.database), Identity::from_hex(&self.caller))
        else {
            return;
        };
        let (config, id, note) = (self.config.clone(), self.backfill_id.clone().unwrap_or_default(), why.to_string());
        let instance = self.instance.clone();
        std::thread::spawn(move || {
            let _ = runner.terminate_and_wait(&instance, Duration::from_secs(30));
            let note = Some(format!("catch_up became a full_sync: {note}"));
            if let Err(e) = crate::backfill::start_full_sync(&runner, database, caller, &config, id, note) {
                tracing::error!("firehose: cannot start the full_sync that replaces a catch_up: {e}");
            }
            let live = live_instance(&database.to_hex(), &caller.to_hex(), &config, None);
            if let Err(e) = runner.start(live) {
                tracing::error!("firehose: cannot start the live consumer: {e}");
            }
        });
    }

    /// A catch_up at the head hands over to a live instance from its cursor.
    fn hand_over(&self, i: &Instance) {
        let Some(runner) = self.runner.as_ref().and_then(Weak::upgrade) else { return };
        let from = i.cursor.clone();
        let instance = live_instance(&i.database, &i.caller, &self.config, from);
        let id = self.instance.clone();
        // After this instance has ended (its scope is the live one's).
        std::thread::spawn(move || {
            let _ = runner.terminate_and_wait(&id, Duration::from_secs(30));
            if let Err(e) = runner.start(instance) {
                tracing::error!("firehose: cannot start the live consumer after a catch_up: {e}");
            }
        });
    }
}

/// Milliseconds since the epoch of an RFC 3339 time (`2026-12-02T01:27:44.123Z`, any
/// fraction, `Z` or an offset).
pub fn parse_rfc3339_ms(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { t.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d, h, mi, s) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let frac = t.get(start..at)?;
        millis = format!("{:0<3}", &frac[..frac.len().min(3)]).parse().ok()?;
    }
    let offset_min = match b.get(at)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let v = num(at + 1..at + 3)? * 60 + num(at + 4..at + 6)?;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 { (y - 1, mo + 9) } else { (y, mo - 3) };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    u64::try_from(secs * 1000 + millis).ok()
}

/// An item that is not applied, failing with `why` (a commit whose signature did not verify).
fn refused(key: String, cursor: Value, why: ItemError) -> Item {
    let mut cursor = cursor;
    cursor["refused"] = json!(why.to_string());
    Item { key, cursor }
}

/// The cursor of an item, with the reducer arguments it applies.
fn with_args(cursor: &Value, args: Value) -> Value {
    let mut c = cursor.clone();
    c["args"] = args;
    c
}

impl Kind for Firehose {
    fn next_batch(&self, i: &Instance) -> Result<Vec<Item>, ListError> {
        let size = i.params.batch_size.max(1) as usize;
        let mut out = Vec::new();
        self.release(&mut out)?;
        if !self.catch_up {
            self.check_heads();
        }
        self.retry_refetches(&mut out)?;
        let rx = self.reader.rx.lock();
        let deadline = Instant::now() + Duration::from_millis(200);
        // Past MAX_HELD_FRAMES the stream waits for the full_sync (back-pressure).
        while out.len() < size && self.held.lock().frames < MAX_HELD_FRAMES {
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = match rx.recv_timeout(wait) {
                Ok(e) => e,
                Err(_) => break,
            };
            match event {
                Event::Frame(frame) => {
                    if let Some(seq) = frame.seq() {
                        let mut listed = self.listed_seq.lock();
                        debug_assert!(listed.is_none_or(|l| l < seq), "firehose events come in seq order");
                        *listed = Some(seq);
                    }
                    if let Some(frame) = self.hold(*frame) {
                        self.items_of(frame, &mut out)?;
                    }
                }
                Event::Fatal(e) => return Err(ListError(e)),
            }
        }
        drop(rx);
        if let Some(last) = out.pop() {
            out.push(Item { cursor: self.with_revs(last.cursor), ..last });
        }
        if out.is_empty() && self.catch_up {
            let (last, connected) = *self.reader.last_frame.lock();
            if connected && last.elapsed() >= HEAD_QUIET {
                self.at_head.store(true, Ordering::Release);
                self.hand_over(i);
            }
        }
        Ok(out)
    }

    fn arguments(&self, _: &Instance, items: &[Item]) -> Vec<Result<ReducerArgs, ItemError>> {
        items
            .iter()
            .map(|item| match item.cursor["refused"].as_str() {
                Some(why) => Err(ItemError::Invalid(why.to_string())),
                None => Ok(ReducerArgs::Json(item.cursor["args"].to_string())),
            })
            .collect()
    }

    fn apply(
        &self,
        d: &mut Database,
        reducer: &str,
        args: ReducerArgs,
        caller: Caller,
        step: WorkflowStep,
    ) -> Result<(), ItemError> {
        crate::apply_item(&self.config, d, reducer, args, caller, step)
    }

    fn idle(&self) -> bool {
        !self.at_head.load(Ordering::Acquire)
    }

    /// After events with no items (other repos, other collections), the consumer's place: its
    /// seq (before any event held for a full_sync) and the revs applied, as of now. Revs a
    /// finished full_sync handed over are saved too, even before the first event arrives:
    /// without them a restart forgets the rev check that finds events missed meanwhile.
    fn position(&self, i: &Instance) -> Option<Value> {
        let saved = i.cursor.as_ref();
        let cursor = self.cursor(None);
        let seq = cursor["seq"].as_i64();
        if let (Some(seq), Some(listed)) = (seq, *self.listed_seq.lock()) {
            assert!(seq <= listed, "the saved position never passes what was read");
        }
        let saved_seq = saved.and_then(|c| c["seq"].as_i64());
        let moved = seq.is_some_and(|s| saved_seq.is_none_or(|old| s > old));
        let revs_unsaved = {
            let revs = self.revs.lock();
            !revs.is_empty() && saved.map_or(&Value::Null, |c| &c["revs"]) != &json!(*revs)
        };
        (moved || revs_unsaved).then(|| self.with_revs(cursor))
    }

    fn recount(&self, _: &Instance) -> Result<Option<BTreeMap<String, u64>>, RunnerError> {
        Ok(None)
    }
}

/// A live firehose instance of `database` (hex) from `from` (a cursor, or none: from now).
fn live_instance(database: &str, caller: &str, config: &AtprotoConfig, from: Option<Value>) -> Instance {
    let run = RunParams {
        batch_size: config.batch_size,
        delay_seconds: 0,
        max_attempts: 3,
        kind: Map::from_iter([("mode".to_string(), json!("live")), ("from".to_string(), from.unwrap_or(Value::Null))]),
    };
    Instance::new(
        KIND,
        database.to_string(),
        caller.to_string(),
        config.service.clone(),
        config.record_reducer.clone(),
        run,
        None,
        Map::new(),
    )
}

/// The firehose instance of `database` still running, if any.
pub fn running(runner: &Runner, database: &Identity) -> Option<Instance> {
    runner.list(database).into_iter().find(|i| i.kind == KIND && !i.status.is_finished())
}

/// The newest firehose cursor of `database` (of its running instance, else of the latest one)
/// and when it last advanced (milliseconds since the epoch).
pub fn stored_cursor(runner: &Runner, database: &Identity) -> Option<(Value, u64)> {
    let mut all: Vec<Instance> = runner.list(database).into_iter().filter(|i| i.kind == KIND).collect();
    all.sort_by_key(|i| std::cmp::Reverse(i.started_at));
    all.iter().find_map(|i| {
        let c = i.cursor.clone().or_else(|| i.params.kind.get("from").cloned().filter(|v| !v.is_null()))?;
        let at = c["advancedAt"].as_u64()?;
        Some((c, at))
    })
}

/// Starts (or restarts, keeping its cursor unless the service changed) the live consumer of
/// `database` with `config`; the database owner's identity runs the reducers.
pub fn start_live(
    runner: &Arc<Runner>,
    database: Identity,
    caller: Identity,
    config: &AtprotoConfig,
) -> Result<Instance, RunnerError> {
    let mut from = stored_cursor(runner, &database).map(|(c, _)| c);
    if let Some(previous) = running(runner, &database) {
        if previous.source_url != config.service {
            from = None;
        }
        runner.terminate_and_wait(&previous.id, Duration::from_secs(30))?;
    } else if runner
        .list(&database)
        .iter()
        .filter(|i| i.kind == KIND)
        .max_by_key(|i| i.started_at)
        .is_some_and(|i| i.source_url != config.service)
    {
        from = None;
    }
    runner.start(live_instance(&database.to_hex(), &caller.to_hex(), config, from))
}

/// Stops the database's firehose (its section was removed).
pub fn stop_live(runner: &Runner, database: &Identity) {
    if let Some(i) = running(runner, database) {
        let _ = runner.terminate_and_wait(&i.id, Duration::from_secs(30));
    }
}

/// Replaces the live consumer with a catch_up from its stored cursor to the head (then live
/// again); `None` when there is no cursor to start from.
pub fn start_catch_up(
    runner: &Arc<Runner>,
    database: Identity,
    caller: Identity,
    config: &AtprotoConfig,
    backfill_id: String,
) -> Result<Option<Instance>, RunnerError> {
    if let Some(previous) = running(runner, &database) {
        runner.terminate_and_wait(&previous.id, Duration::from_secs(30))?;
    }
    let Some((from, _)) = stored_cursor(runner, &database) else { return Ok(None) };
    let run = RunParams {
        batch_size: config.batch_size,
        delay_seconds: 0,
        max_attempts: 3,
        kind: Map::from_iter([
            ("mode".to_string(), json!("catch_up")),
            ("type".to_string(), json!("catch_up")),
            ("from".to_string(), from),
        ]),
    };
    let mut detail = Map::new();
    detail.insert("backfillId".into(), json!(backfill_id));
    let instance = Instance::new(
        KIND,
        database.to_hex(),
        caller.to_hex(),
        config.service.clone(),
        config.record_reducer.clone(),
        run,
        None,
        detail,
    );
    runner.start(instance).map(Some)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A live instance of `config`'s source, from now.
    pub(crate) fn live(config: &AtprotoConfig) -> Instance {
        live_instance(&"ab".repeat(32), &"cd".repeat(32), config, None)
    }

    /// A live consumer of `service` whose instance starts from `from`.
    fn consumer(service: &str, from: Value) -> Firehose {
        let config = AtprotoConfig::parse(&json!({"service": service, "collections": ["app.forum.post"]})).unwrap();
        let xrpc = Xrpc::new(&config.service, 1000.0).unwrap();
        let i = live_instance(&"ab".repeat(32), &"cd".repeat(32), &config, Some(from));
        Firehose::new(&i, config, xrpc, None, None, Arc::new(Holds::default()))
    }

    /// A service whose `listRepos` first page is `body` (its next page is empty); any other
    /// request (the firehose's) gets an empty list too, so it never connects.
    fn list_repos_service(body: Value) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut request = [0u8; 4096];
                let n = std::io::Read::read(&mut stream, &mut request).unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n]).lines().next().unwrap_or_default().to_string();
                let first_page = line.contains("listRepos") && !line.contains("cursor=");
                let page = if first_page { body.clone() } else { json!({"repos": []}) };
                let text = page.to_string();
                let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", text.len());
                let _ = std::io::Write::write_all(&mut stream, format!("{head}{text}").as_bytes());
            }
        });
        url
    }

    /// A consumer restarted with revs but no place in the stream reads from the head: the
    /// repos that moved meanwhile (newer rev on the service) are read again, the others not.
    #[test]
    fn a_consumer_with_no_place_in_the_stream_rereads_the_repos_that_moved() {
        let service = list_repos_service(json!({"cursor": "x", "repos": [
            {"did": "did:plc:moved", "rev": "3kb"},
            {"did": "did:plc:same", "rev": "3ka"},
            {"did": "did:plc:unknown", "rev": "3kz"},
        ]}));
        let f = consumer(&service, json!({"revs": {"did:plc:moved": "3ka", "did:plc:same": "3ka"}}));
        f.check_heads();
        assert!(f.refetch_pending.lock().is_empty(), "not before the stream is connected");
        f.reader.last_frame.lock().1 = true;
        f.check_heads();
        assert_eq!(f.refetch_pending.lock().iter().collect::<Vec<_>>(), ["did:plc:moved"]);
        // Once only.
        f.refetch_pending.lock().clear();
        f.check_heads();
        assert!(f.refetch_pending.lock().is_empty());
        // A consumer with a place in the stream does not compare.
        let placed = consumer(&service, json!({"seq": 7, "revs": {"did:plc:moved": "3ka"}}));
        placed.reader.last_frame.lock().1 = true;
        placed.check_heads();
        assert!(placed.refetch_pending.lock().is_empty());
    }

    /// A repo that must be read again while its PDS does not answer is never passed over: it
    /// stays pending, in the cursor the runner saves too (so a restart still reads it), and
    /// is tried again later.
    #[test]
    fn a_repo_that_cannot_be_read_again_stays_pending_across_a_restart() {
        // Nothing listens on port 9 (discard) here: every request fails at once.
        let service = "http://127.0.0.1:9";
        let f = consumer(service, json!({"seq": 41, "revs": {"did:plc:aaa": "3kaaa"}}));
        let mut out = Vec::new();
        f.refetch(42, "did:plc:aaa", &mut out).unwrap();
        assert!(out.is_empty(), "nothing to apply yet");
        let saved = f.with_revs(f.cursor(None));
        assert_eq!(saved["refetch"], json!(["did:plc:aaa"]), "{saved}");
        // Not tried again before the interval…
        f.retry_refetches(&mut out).unwrap();
        assert!(f.refetch_pending.lock().contains("did:plc:aaa"));
        // …and after a restart from the saved cursor, still pending and tried again.
        let resumed = consumer(service, saved);
        assert!(resumed.refetch_pending.lock().contains("did:plc:aaa"));
        resumed.retry_refetches(&mut out).unwrap();
        assert!(out.is_empty() && resumed.refetch_pending.lock().contains("did:plc:aaa"));
        assert!(*resumed.refetch_retry_at.lock() > Instant::now(), "the next try waits the interval");
    }

    #[test]
    fn event_times_parse() {
        assert_eq!(super::parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(super::parse_rfc3339_ms("2026-12-02T01:27:44.123Z"), Some(1_796_174_864_123));
        assert_eq!(super::parse_rfc3339_ms("2026-12-02T02:27:44.123456+01:00"), Some(1_796_174_864_123));
        assert_eq!(super::parse_rfc3339_ms("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(super::parse_rfc3339_ms("yesterday"), None);
    }
}
