//! The XRPC calls a backfill makes to a PDS or relay: `com.atproto.sync.listRepos` (paged) and
//! `com.atproto.sync.getRepo` (a CAR), throttled to a number of requests per second.

use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

use crate::limits::{
    CONNECT_TIMEOUT, LIST_PAGE, MAX_MEMBERS, MAX_REQUESTS_PER_SECOND, MIN_REQUESTS_PER_SECOND, REQUEST_TIMEOUT,
};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XrpcError {
    /// The repo does not exist (or was taken down): `RepoNotFound`, `RepoTakendown`, ….
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// A throttled client of one service.
pub struct Xrpc {
    service: String,
    http: reqwest::blocking::Client,
    /// The earliest moment the next request may start.
    next: Mutex<Instant>,
    interval: Duration,
}

#[derive(Deserialize)]
struct ListRepos {
    #[serde(default)]
    cursor: Option<String>,
    repos: Vec<ListedRepo>,
}

/// An account as `listRepos` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedRepo {
    pub did: String,
    #[serde(default)]
    pub rev: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
}

impl Xrpc {
    /// A client of `service` (`https://pds.example.com`) making at most `per_second` requests
    /// a second.
    pub fn new(service: &str, per_second: f64) -> Result<Self, XrpcError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| XrpcError::Failed(e.to_string()))?;
        let interval =
            Duration::from_secs_f64(1.0 / per_second.clamp(MIN_REQUESTS_PER_SECOND, MAX_REQUESTS_PER_SECOND));
        Ok(Self {
            service: service.trim_end_matches('/').to_string(),
            http,
            next: Mutex::new(Instant::now()),
            interval,
        })
    }

    /// Waits for the throttle's next slot.
    fn pace(&self) {
        let wait = {
            let mut next = self.next.lock();
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + self.interval;
            start - now
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    fn get(&self, method: &str, query: &[(&str, &str)]) -> Result<reqwest::blocking::Response, XrpcError> {
        self.pace();
        let url = format!("{}/xrpc/{method}", self.service);
        let r = self.http.get(&url).query(query).send().map_err(|e| XrpcError::Failed(format!("{method}: {e}")))?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body: serde_json::Value = r.json().unwrap_or_default();
        let error = body["error"].as_str().unwrap_or("").to_string();
        let message = format!("{method}: {status} {error} {}", body["message"].as_str().unwrap_or(""));
        if error.starts_with("Repo") || status == reqwest::StatusCode::NOT_FOUND {
            Err(XrpcError::NotFound(message.trim().to_string()))
        } else {
            Err(XrpcError::Failed(message.trim().to_string()))
        }
    }

    /// Every account the service hosts, paging `listRepos` to the end.
    pub fn list_repos(&self) -> Result<Vec<ListedRepo>, XrpcError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let limit = LIST_PAGE.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(c) = &cursor {
                query.push(("cursor", c));
            }
            let page: ListRepos = self
                .get("com.atproto.sync.listRepos", &query)?
                .json()
                .map_err(|e| XrpcError::Failed(format!("listRepos: {e}")))?;
            let empty = page.repos.is_empty();
            out.extend(page.repos);
            if out.len() > MAX_MEMBERS {
                return Err(XrpcError::Failed(format!("the service lists more than {MAX_MEMBERS} accounts")));
            }
            match page.cursor {
                Some(c) if !empty && cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
                _ => return Ok(out),
            }
        }
    }

    /// A repo's CAR (`getRepo`).
    pub fn get_repo(&self, did: &str) -> Result<Vec<u8>, XrpcError> {
        let r = self.get("com.atproto.sync.getRepo", &[("did", did)])?;
        if r.content_length().is_some_and(|n| n as usize > epoch_atproto::limits::MAX_CAR_BYTES) {
            return Err(XrpcError::Failed(format!("the repo of {did} is larger than the limit")));
        }
        let bytes = r.bytes().map_err(|e| XrpcError::Failed(format!("getRepo {did}: {e}")))?;
        Ok(bytes.to_vec())
    }
}
