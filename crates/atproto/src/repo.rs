//! A repository as `com.atproto.sync.getRepo` returns it: a CAR whose root is the signed commit
//! (`did`, `rev`, `data`), `data` being the root of a Merkle Search Tree whose keys are
//! `<collection>/<rkey>` and whose values are the records' CIDs.

use cid::Cid;
use ipld_core::ipld::Ipld;
use ipld_core::serde::from_ipld;
use serde::Deserialize;

use crate::car::{Car, DecodeError};
use crate::limits::{MAX_KEY_BYTES, MAX_MST_DEPTH};

#[derive(Deserialize)]
struct CommitBlock {
    did: String,
    rev: String,
    data: Cid,
}

#[derive(Deserialize)]
struct Node {
    l: Option<Cid>,
    e: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    p: usize,
    #[serde(with = "serde_bytes")]
    k: Vec<u8>,
    v: Cid,
    t: Option<Cid>,
}

/// One record of a repo.
#[derive(Debug, Clone, PartialEq)]
pub struct RepoRecord {
    pub collection: String,
    pub rkey: String,
    pub cid: Cid,
}

impl RepoRecord {
    /// The MST key: `<collection>/<rkey>`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.collection, self.rkey)
    }
}

/// A repo's commit and its records in key order.
#[derive(Debug)]
pub struct Repo {
    pub did: String,
    pub rev: String,
    /// The signed commit's CID (its block is in `car`).
    pub commit: Cid,
    pub records: Vec<RepoRecord>,
    pub car: Car,
}

fn malformed(what: &'static str, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed { what, message: e.to_string() }
}

fn decode<T: for<'de> Deserialize<'de>>(car: &Car, cid: &Cid, what: &'static str) -> Result<T, DecodeError> {
    let block = car.block(cid)?;
    crate::value::check_nesting(block)?;
    let ipld: Ipld = serde_ipld_dagcbor::from_slice(block).map_err(|e| malformed(what, e))?;
    from_ipld(ipld).map_err(|e| malformed(what, e))
}

impl Repo {
    /// Reads a repo CAR: its commit, then every MST entry in key order.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let car = Car::decode(bytes)?;
        let root = *car.roots.first().ok_or_else(|| malformed("repo", "the CAR has no root"))?;
        let commit: CommitBlock = decode(&car, &root, "commit")?;
        let mut records = Vec::new();
        // Depth-first, in order, without recursion: (node, depth) to expand, or an entry to emit.
        enum Step {
            Node(Cid, usize),
            Emit(RepoRecord),
        }
        let mut stack = vec![Step::Node(commit.data, 0)];
        while let Some(step) = stack.pop() {
            let (cid, depth) = match step {
                Step::Emit(r) => {
                    records.push(r);
                    continue;
                }
                Step::Node(cid, depth) => (cid, depth),
            };
            if depth > MAX_MST_DEPTH {
                return Err(malformed("MST", "deeper than allowed"));
            }
            let node: Node = decode(&car, &cid, "MST node")?;
            // Keys are prefix-compressed against the previous entry of the same node.
            let mut key: Vec<u8> = Vec::new();
            let mut todo = Vec::with_capacity(node.e.len() * 2 + 1);
            if let Some(l) = node.l {
                todo.push(Step::Node(l, depth + 1));
            }
            for e in node.e {
                if e.p > key.len() || e.p + e.k.len() > MAX_KEY_BYTES {
                    return Err(malformed("MST", "bad key prefix"));
                }
                key.truncate(e.p);
                key.extend_from_slice(&e.k);
                let text = String::from_utf8(key.clone()).map_err(|e| malformed("MST key", e))?;
                let (collection, rkey) = text
                    .split_once('/')
                    .ok_or_else(|| malformed("MST key", format!("{text:?} is not collection/rkey")))?;
                todo.push(Step::Emit(RepoRecord { collection: collection.into(), rkey: rkey.into(), cid: e.v }));
                if let Some(t) = e.t {
                    todo.push(Step::Node(t, depth + 1));
                }
            }
            // Reversed onto the stack so they come off in order.
            stack.extend(todo.into_iter().rev());
        }
        // An MST lists its keys in strictly increasing order; anything else is not a repo.
        for w in records.windows(2) {
            if w[0].key() >= w[1].key() {
                return Err(malformed("MST", "keys out of order"));
            }
        }
        Ok(Self { did: commit.did, rev: commit.rev, commit: root, records, car })
    }

    /// Checks the commit's signature against the repo's signing key.
    pub fn verify(&self, key: &crate::signature::PublicKey) -> Result<(), crate::signature::SignatureError> {
        let block =
            self.car.block(&self.commit).map_err(|e| crate::signature::SignatureError::Commit(e.to_string()))?;
        crate::signature::verify_commit(block, key)
    }

    /// The record `r` as the data model's JSON.
    pub fn record_json(&self, r: &RepoRecord) -> Result<serde_json::Value, DecodeError> {
        crate::value::record_json(self.car.block(&r.cid)?)
    }
}
