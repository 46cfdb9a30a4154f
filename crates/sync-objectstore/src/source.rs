//! Aggregate sources. `file:///path/prefix` lays aggregates out as `<prefix>/<type>/<id>.json`;
//! listing is in (type, id) order, so "everything after this key" is an exact resume point.

use std::path::{Path, PathBuf};

use crate::limits::{
    FETCH_CONCURRENCY, MAX_DOCUMENT_BYTES, MAX_KEY_PART, READ_AHEAD, S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT,
};

/// One aggregate's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AggregateKey {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl AggregateKey {
    /// `<type>/<id>`: how errors and workflow steps name the aggregate.
    pub fn item(&self) -> String {
        format!("{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("unsupported object store URL {0:?} (use s3://bucket/prefix or file:///path/prefix)")]
    Unsupported(String),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{key}: {message}")]
    BadDocument { key: String, message: String },
    #[error("invalid aggregate type or id {0:?}: use 1 to {MAX_KEY_PART} letters, digits, `_`, `-`, `.`, `:` or `@`, not starting with `.`")]
    InvalidKey(String),
}

/// Checks an aggregate type or id taken from a request: a strict character set, so that it
/// names one file or key directly under its parent and never a path elsewhere (`..`, `/`, an
/// absolute path, a hidden file).
pub fn check_key_part(part: &str) -> Result<(), SourceError> {
    let ok = !part.is_empty()
        && part.len() <= MAX_KEY_PART
        && !part.starts_with('.')
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(SourceError::InvalidKey(part.chars().take(MAX_KEY_PART).collect()))
    }
}

/// Directories a `file://` store may never be in: the kernel's and devices' views, where
/// "files" are endless or special.
const FORBIDDEN_STORE_ROOTS: &[&str] = &["/proc", "/sys", "/dev"];

/// Checks the directory a sync configuration names as a `file://` store: absolute, without `.`
/// or `..` steps, not the file system's root, not in [`FORBIDDEN_STORE_ROOTS`], and neither
/// inside nor around the server's own data directory (links resolved where the path exists).
pub fn check_file_store(path: &Path, server_data_dir: Option<&Path>) -> Result<(), String> {
    use std::path::Component;
    let refuse = |why: &str| Err(format!("`objectStore.url` cannot name {}: {why}", path.display()));
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)) {
        return refuse("the path must be absolute, without `.` or `..`");
    }
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if resolved.parent().is_none() {
        return refuse("the file system's root is not an object store");
    }
    if FORBIDDEN_STORE_ROOTS.iter().any(|r| resolved.starts_with(r)) {
        return refuse("system directories are not object stores");
    }
    if let Some(data) = server_data_dir {
        let data = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
        if resolved.starts_with(&data) || data.starts_with(&resolved) {
            return refuse("it overlaps the server's data directory");
        }
    }
    Ok(())
}

/// An object store on the local file system.
///
/// A directory lists in no useful order, so each listing pass reads the whole type directory
/// but keeps only the smallest [`READ_AHEAD`] ids after the resume point (a bounded heap: memory
/// stays flat however many aggregates there are), and serves the following pages from them.
/// Like an S3 listing, a resync sees the store as it goes: an aggregate added behind the cursor
/// (or among ids already read ahead) waits for the next resync, and one removed meanwhile fails
/// alone as not found.
#[derive(Debug)]
pub struct FileSource {
    root: PathBuf,
    /// Ids read ahead: (type, the id they follow, the ids in order).
    ahead: std::sync::Mutex<Option<ReadAhead>>,
    read_ahead: usize,
}

#[derive(Debug)]
struct ReadAhead {
    aggregate_type: String,
    /// The id the buffered ids follow (`None`: the start of the type).
    after: Option<String>,
    ids: std::collections::VecDeque<String>,
    /// Whether the pass that filled the buffer reached the end of the directory.
    complete: bool,
}

impl FileSource {
    /// A source for a `file:///path/prefix` URL.
    pub fn from_url(url: &str) -> Result<Self, SourceError> {
        let path = url
            .strip_prefix("file://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| SourceError::Unsupported(url.into()))?;
        Ok(Self { root: PathBuf::from(path), ahead: std::sync::Mutex::new(None), read_ahead: READ_AHEAD })
    }

    /// An I/O error naming the path inside the store (the server's own layout stays private).
    fn io<'a>(&'a self, path: &'a Path) -> impl FnOnce(std::io::Error) -> SourceError + 'a {
        move |source| SourceError::Io { path: path.strip_prefix(&self.root).unwrap_or(path).to_path_buf(), source }
    }

    /// The aggregate types present (subdirectories of the prefix), sorted.
    pub fn types(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(self.io(&self.root))? {
            let entry = entry.map_err(self.io(&self.root))?;
            if entry.file_type().map_err(self.io(&self.root))?.is_dir() {
                if let Some(n) = entry.file_name().to_str() {
                    out.push(n.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Ids of `aggregate_type` after `after` (exclusive), sorted, at most `limit`.
    pub fn list(&self, aggregate_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, SourceError> {
        let mut ahead = self.ahead.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let usable = ahead.as_ref().is_some_and(|a| {
            a.aggregate_type == aggregate_type && a.after.as_deref() == after && (a.complete || a.ids.len() >= limit)
        });
        if !usable {
            let (ids, complete) = self.smallest_after(aggregate_type, after, self.read_ahead.max(limit))?;
            *ahead = Some(ReadAhead {
                aggregate_type: aggregate_type.to_string(),
                after: after.map(str::to_string),
                ids: ids.into(),
                complete,
            });
        }
        let a = ahead.as_mut().expect("filled above");
        let page: Vec<String> = a.ids.drain(..limit.min(a.ids.len())).collect();
        if let Some(last) = page.last() {
            a.after = Some(last.clone());
        }
        Ok(page)
    }

    /// One pass over the type directory: the `keep` smallest ids after `after`, sorted, and
    /// whether they are all there are.
    fn smallest_after(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        keep: usize,
    ) -> Result<(Vec<String>, bool), SourceError> {
        let dir = self.root.join(aggregate_type);
        let mut heap = std::collections::BinaryHeap::with_capacity(keep + 1);
        let mut dropped = false;
        for entry in std::fs::read_dir(&dir).map_err(self.io(&dir))? {
            let entry = entry.map_err(self.io(&dir))?;
            // Regular files only: a link, a FIFO or a device is never an aggregate.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if after.is_some_and(|a| id <= a) {
                continue;
            }
            if heap.len() == keep && heap.peek().is_some_and(|max: &String| id >= max.as_str()) {
                dropped = true;
                continue;
            }
            heap.push(id.to_string());
            if heap.len() > keep {
                heap.pop();
                dropped = true;
            }
        }
        Ok((heap.into_sorted_vec(), !dropped))
    }

    /// How many aggregates of each type there are.
    pub fn count(&self, aggregate_type: &str) -> Result<u64, SourceError> {
        let dir = self.root.join(aggregate_type);
        let n = std::fs::read_dir(&dir)
            .map_err(self.io(&dir))?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .count();
        Ok(n as u64)
    }

    /// Reads one aggregate: its whole document and its `version`.
    ///
    /// Only a regular file directly under its type directory is read, and never more than
    /// [`MAX_DOCUMENT_BYTES`]: the last path component is opened without following a link and
    /// without blocking (a FIFO would wait forever), and what was opened is checked before a
    /// byte of it is read.
    pub fn get(&self, key: &AggregateKey) -> Result<(u64, String), SourceError> {
        use std::io::Read;
        check_key_part(&key.aggregate_type)?;
        check_key_part(&key.aggregate_id)?;
        let path = self.root.join(&key.aggregate_type).join(format!("{}.json", key.aggregate_id));
        let mut options = std::fs::OpenOptions::new();
        options.read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW | libc::O_NONBLOCK);
        let file = options.open(&path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => {
                SourceError::BadDocument { key: key.item(), message: "is a symbolic link, not a file".into() }
            }
            _ => self.io(&path)(e),
        })?;
        let meta = file.metadata().map_err(self.io(&path))?;
        if !meta.is_file() {
            return Err(SourceError::BadDocument { key: key.item(), message: "is not a regular file".into() });
        }
        check_size(key, meta.len())?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // Bounded even if the file grows after the check.
        file.take(MAX_DOCUMENT_BYTES + 1).read_to_end(&mut bytes).map_err(self.io(&path))?;
        check_size(key, bytes.len() as u64)?;
        parse_document(key, &bytes)
    }
}

/// An S3-compatible object store (AWS S3, Cloudflare R2, MinIO, moto): `s3://bucket/prefix`.
/// Keys are listed in S3's lexicographic key order with `start-after`, so a resume point is exact
/// and no listing is held in memory.
pub struct S3Source {
    store: std::sync::Arc<object_store::aws::AmazonS3>,
    prefix: String,
    runtime: std::sync::Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Source").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn s3_err(e: object_store::Error) -> SourceError {
    SourceError::Io { path: PathBuf::from("s3"), source: std::io::Error::other(e.to_string()) }
}

impl S3Source {
    /// A source for `s3://bucket/prefix` with the endpoint, region and credentials of `config`
    /// (the `objectStore` object of a sync configuration).
    pub fn from_config(url: &str, config: &serde_json::Value) -> Result<Self, SourceError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| SourceError::Unsupported(url.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s = |k: &str| config.get(k).and_then(serde_json::Value::as_str).filter(|v| !v.is_empty());
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(s("region").unwrap_or("us-east-1"));
        // Client options first: setting them replaces earlier ones, `allow_http` included.
        let client =
            object_store::ClientOptions::new().with_connect_timeout(S3_CONNECT_TIMEOUT).with_timeout(S3_READ_TIMEOUT);
        b = b.with_client_options(client);
        if let Some(endpoint) = s("endpoint") {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (s("accessKeyId"), s("secretAccessKey")) {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = b.build().map_err(s3_err)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| SourceError::Io { path: PathBuf::from("s3 runtime"), source: e })?;
        Ok(Self {
            store: std::sync::Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            runtime: std::sync::Arc::new(runtime),
        })
    }

    /// Runs a future on the source's own runtime, from any thread (async callers included).
    fn block<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        std::thread::scope(|s| s.spawn(|| self.runtime.block_on(f)).join().expect("the S3 call does not panic"))
    }

    fn path(&self, rest: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(rest)
        } else {
            object_store::path::Path::from(format!("{}/{rest}", self.prefix))
        }
    }

    pub fn types(&self) -> Result<Vec<String>, SourceError> {
        use object_store::ObjectStore;
        let prefix = (!self.prefix.is_empty()).then(|| object_store::path::Path::from(self.prefix.as_str()));
        let listed = self.block(self.store.list_with_delimiter(prefix.as_ref())).map_err(s3_err)?;
        let mut out: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        out.sort();
        Ok(out)
    }

    pub fn list(&self, aggregate_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, SourceError> {
        use futures::StreamExt;
        use object_store::ObjectStore;
        let dir = self.path(aggregate_type);
        let stream = match after {
            Some(a) => self.store.list_with_offset(Some(&dir), &self.path(&format!("{aggregate_type}/{a}.json"))),
            None => self.store.list(Some(&dir)),
        };
        let metas: Vec<_> = self.block(stream.take(limit).collect::<Vec<_>>());
        let mut ids = Vec::with_capacity(metas.len());
        for m in metas {
            let m = m.map_err(s3_err)?;
            if let Some(id) = m.location.filename().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }

    pub fn count(&self, aggregate_type: &str) -> Result<u64, SourceError> {
        use futures::StreamExt;
        use object_store::ObjectStore;
        let dir = self.path(aggregate_type);
        let n = self.block(self.store.list(Some(&dir)).fold(Ok(0u64), |acc, m| async move {
            match (acc, m) {
                (Ok(n), Ok(m)) => Ok(n + m.location.as_ref().ends_with(".json") as u64),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }));
        n.map_err(s3_err)
    }

    pub fn get(&self, key: &AggregateKey) -> Result<(u64, String), SourceError> {
        self.block(self.get_async(key))
    }

    async fn get_async(&self, key: &AggregateKey) -> Result<(u64, String), SourceError> {
        use object_store::ObjectStore;
        check_key_part(&key.aggregate_type)?;
        check_key_part(&key.aggregate_id)?;
        let path = self.path(&format!("{}/{}.json", key.aggregate_type, key.aggregate_id));
        let found = self.store.get(&path).await.map_err(s3_err)?;
        check_size(key, found.meta.size as u64)?;
        let bytes = found.bytes().await.map_err(s3_err)?;
        parse_document(key, &bytes)
    }

    /// Reads several aggregates, [`FETCH_CONCURRENCY`] requests at a time; results in `keys`'
    /// order. A batch thus costs a few round trips, not one per aggregate in sequence.
    pub fn get_many(&self, keys: &[AggregateKey]) -> Vec<Result<(u64, String), SourceError>> {
        use futures::StreamExt;
        let reads = futures::stream::iter(keys).map(|k| self.get_async(k)).buffered(FETCH_CONCURRENCY);
        self.block(reads.collect::<Vec<_>>())
    }
}

fn check_size(key: &AggregateKey, size: u64) -> Result<(), SourceError> {
    if size > MAX_DOCUMENT_BYTES {
        return Err(SourceError::BadDocument {
            key: key.item(),
            message: format!("{size} bytes is larger than the {MAX_DOCUMENT_BYTES}-byte limit"),
        });
    }
    Ok(())
}

/// A document's `version` and text.
fn parse_document(key: &AggregateKey, bytes: &[u8]) -> Result<(u64, String), SourceError> {
    let bad = |message: String| SourceError::BadDocument {
        key: format!("{}/{}", key.aggregate_type, key.aggregate_id),
        message,
    };
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| bad("not UTF-8".into()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let version =
        doc.get("version").and_then(serde_json::Value::as_u64).ok_or_else(|| bad("no integer `version`".into()))?;
    Ok((version, text))
}

/// Any aggregate source a sync configuration can name.
#[derive(Debug)]
pub enum Source {
    File(FileSource),
    S3(S3Source),
}

impl Source {
    /// The source of a sync configuration's `objectStore`.
    pub fn from_config(object_store: &serde_json::Value) -> Result<Self, SourceError> {
        let url = object_store.get("url").and_then(serde_json::Value::as_str).unwrap_or_default();
        if url.starts_with("s3://") {
            Ok(Self::S3(S3Source::from_config(url, object_store)?))
        } else {
            Ok(Self::File(FileSource::from_url(url)?))
        }
    }

    pub fn types(&self) -> Result<Vec<String>, SourceError> {
        match self {
            Self::File(s) => s.types(),
            Self::S3(s) => s.types(),
        }
    }

    pub fn list(&self, aggregate_type: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, SourceError> {
        match self {
            Self::File(s) => s.list(aggregate_type, after, limit),
            Self::S3(s) => s.list(aggregate_type, after, limit),
        }
    }

    pub fn count(&self, aggregate_type: &str) -> Result<u64, SourceError> {
        match self {
            Self::File(s) => s.count(aggregate_type),
            Self::S3(s) => s.count(aggregate_type),
        }
    }

    pub fn get(&self, key: &AggregateKey) -> Result<(u64, String), SourceError> {
        match self {
            Self::File(s) => s.get(key),
            Self::S3(s) => s.get(key),
        }
    }

    /// Reads several aggregates (concurrently where that helps); results in `keys`' order.
    pub fn get_many(&self, keys: &[AggregateKey]) -> Vec<Result<(u64, String), SourceError>> {
        match self {
            Self::File(s) => keys.iter().map(|k| s.get(k)).collect(),
            Self::S3(s) => s.get_many(keys),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_stores_stay_out_of_system_directories_and_the_data_directory() {
        let data = std::env::temp_dir().join(format!("epoch-check-data-{}", std::process::id()));
        std::fs::create_dir_all(&data).unwrap();
        let ok = |p: &str| check_file_store(Path::new(p), Some(&data));
        for refused in ["/", "/proc/self", "/sys", "/dev/shm", "/tmp/../proc", "relative/dir"] {
            assert!(ok(refused).is_err(), "{refused}");
        }
        assert!(check_file_store(&data.join("inside"), Some(&data)).is_err());
        assert!(check_file_store(data.parent().unwrap(), Some(&data)).is_err(), "a store around the data directory");
        assert!(ok("/srv/aggregates").is_ok());
        let _ = std::fs::remove_dir_all(&data);
    }

    #[test]
    fn file_listing_pages_exactly_through_read_ahead_boundaries_and_resumes_anywhere() {
        let root = std::env::temp_dir().join(format!("epoch-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("user")).unwrap();
        // Written in a scrambled order; 57 ids, a read-ahead of 10 and pages of 4.
        let mut all: Vec<String> = (0..57).map(|i| format!("u-{:03}", (i * 37) % 57)).collect();
        for id in &all {
            std::fs::write(root.join("user").join(format!("{id}.json")), "{\"version\":1}").unwrap();
        }
        std::fs::write(root.join("user").join("notes.txt"), "not an aggregate").unwrap();
        all.sort();
        let mut source = FileSource::from_url(&format!("file://{}", root.display())).unwrap();
        source.read_ahead = 10;
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = source.list("user", after.as_deref(), 4).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 4);
            after = page.last().cloned();
            seen.extend(page);
        }
        assert_eq!(seen, all);
        // Resuming from any key (as after a crash) gives exactly what follows it.
        assert_eq!(source.list("user", Some("u-030"), 3).unwrap(), vec!["u-031", "u-032", "u-033"]);
        assert_eq!(source.list("user", Some("u-010"), 2).unwrap(), vec!["u-011", "u-012"]);
        assert_eq!(source.list("user", Some("u-056"), 5).unwrap(), Vec::<String>::new());
        assert_eq!(source.count("user").unwrap(), 57);
        // A document over the size limit fails alone, without being read.
        let big = std::fs::File::create(root.join("user").join("huge.json")).unwrap();
        big.set_len(MAX_DOCUMENT_BYTES + 1).unwrap();
        let key = |id: &str| AggregateKey { aggregate_type: "user".into(), aggregate_id: id.into() };
        let got = Source::File(source).get_many(&[key("u-001"), key("huge"), key("u-002")]);
        assert_eq!(got[0].as_ref().unwrap().0, 1);
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("larger than the 16777216-byte limit"), "{err}");
        assert!(got[2].is_ok());
        let _ = std::fs::remove_dir_all(&root);
    }
}
