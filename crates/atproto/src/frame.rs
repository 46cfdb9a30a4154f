//! Frames of `com.atproto.sync.subscribeRepos`: each WebSocket binary message is a DAG-CBOR
//! header (`op`, `t`) followed by a DAG-CBOR body.

use cid::Cid;
use ipld_core::ipld::Ipld;
use ipld_core::serde::from_ipld;
use serde::Deserialize;

use crate::car::DecodeError;
use crate::limits::{MAX_FRAME_BYTES, MAX_OPS};

#[derive(Deserialize)]
struct Header {
    op: i64,
    #[serde(default)]
    t: Option<String>,
}

/// One repo operation of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoOp {
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `<collection>/<rkey>`.
    pub path: String,
    /// The new record (none for a delete).
    pub cid: Option<Cid>,
}

/// A `#commit` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Commit {
    pub seq: i64,
    pub repo: String,
    pub rev: String,
    /// The signed commit (its block is in `blocks`).
    #[serde(default)]
    pub commit: Option<Cid>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(with = "serde_bytes")]
    pub blocks: Vec<u8>,
    pub ops: Vec<RepoOp>,
    #[serde(default, rename = "tooBig")]
    pub too_big: bool,
    /// The MST root before this commit (Sync 1.1).
    #[serde(default, rename = "prevData")]
    pub prev_data: Option<Cid>,
    #[serde(default)]
    pub time: String,
}

/// A `#sync` event: the repo's state was reset; fetch it whole.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SyncEvent {
    pub seq: i64,
    pub did: String,
    pub rev: String,
}

/// An `#identity` or `#account` event.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccountEvent {
    pub seq: i64,
    pub did: String,
    /// `#account` only: whether the account is active.
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    pub status: Option<String>,
}

/// An `#info` message (`OutdatedCursor`: events before the first one sent are gone).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Info {
    pub name: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// An error frame (`op: -1`): `FutureCursor`, `ConsumerTooSlow`, …; the stream ends after it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ErrorFrame {
    pub error: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Commit(Box<Commit>),
    Sync(SyncEvent),
    Identity(AccountEvent),
    Account(AccountEvent),
    Info(Info),
    Error(ErrorFrame),
    /// A message type this consumer does not know (skipped, as the spec asks).
    Unknown(String),
}

impl Frame {
    /// The event's sequence number, when it has one.
    pub fn seq(&self) -> Option<i64> {
        match self {
            Frame::Commit(c) => Some(c.seq),
            Frame::Sync(s) => Some(s.seq),
            Frame::Identity(a) | Frame::Account(a) => Some(a.seq),
            _ => None,
        }
    }

    /// The repo (account) the event is about, when it is about one.
    pub fn did(&self) -> Option<&str> {
        match self {
            Frame::Commit(c) => Some(&c.repo),
            Frame::Sync(s) => Some(&s.did),
            Frame::Identity(a) | Frame::Account(a) => Some(&a.did),
            _ => None,
        }
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed { what: "frame", message: e.to_string() }
}

/// Decodes one binary message of the firehose.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, DecodeError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(malformed(format!("larger than {MAX_FRAME_BYTES} bytes")));
    }
    crate::value::check_nesting(bytes)?;
    let mut values = serde_ipld_dagcbor::de::Deserializer::from_slice(bytes).into_iter::<Ipld>();
    let mut next = || values.next().ok_or_else(|| malformed("truncated"))?.map_err(malformed);
    let (header, body) = (next()?, next()?);
    let header: Header = from_ipld(header).map_err(malformed)?;
    if header.op == -1 {
        return Ok(Frame::Error(from_ipld(body).map_err(malformed)?));
    }
    if header.op != 1 {
        return Err(malformed(format!("unknown op {}", header.op)));
    }
    Ok(match header.t.as_deref() {
        Some("#commit") => {
            let c: Commit = from_ipld(body).map_err(malformed)?;
            if c.ops.len() > MAX_OPS {
                return Err(malformed(format!("a commit with more than {MAX_OPS} operations")));
            }
            Frame::Commit(Box::new(c))
        }
        Some("#sync") => Frame::Sync(from_ipld(body).map_err(malformed)?),
        Some("#identity") => Frame::Identity(from_ipld(body).map_err(malformed)?),
        Some("#account") => Frame::Account(from_ipld(body).map_err(malformed)?),
        Some("#info") => Frame::Info(from_ipld(body).map_err(malformed)?),
        Some(other) => Frame::Unknown(other.to_string()),
        None => return Err(malformed("a message without `t`")),
    })
}
