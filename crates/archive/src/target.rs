//! Where archives live: an object store (`s3://bucket/prefix` for S3, R2, MinIO or moto, or
//! `file:///path/prefix`); S3 is reached through `object_store` on a small runtime of its own so
//! that blocking callers (the archiver thread, a restore) can use it from anywhere, a local
//! folder directly and without following links (`local`).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;

use crate::limits::{ARCHIVE_S3_REQUEST_TIMEOUT, S3_CONNECT_TIMEOUT};
use crate::local::LocalDir;
use crate::ArchiveError;

/// How to reach an S3-compatible store; empty fields use the defaults (`us-east-1`, AWS's
/// endpoint, the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` environment).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StoreOptions {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// The secret key never appears in logs or errors.
impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// One archive location: a store and the prefix inside it, or a local folder.
pub struct ArchiveTarget {
    backend: Backend,
    url: String,
    runtime: tokio::runtime::Runtime,
}

/// Where the objects are.
enum Backend {
    /// An S3-compatible store and the prefix inside it.
    Store { store: Arc<dyn ObjectStore>, prefix: String },
    /// A `file://` folder, never read or written through a link (see [`LocalDir`]).
    Local(LocalDir),
}

impl std::fmt::Debug for ArchiveTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveTarget").field("url", &self.url).finish_non_exhaustive()
    }
}

impl ArchiveTarget {
    /// Opens `url` (`s3://bucket/prefix` or `file:///absolute/path`; every component of a
    /// `file://` path must be a real directory: links are refused).
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self, ArchiveError> {
        let backend = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(ArchiveError::Url(url.to_string()));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_region(options.region.as_deref().unwrap_or("us-east-1"))
                .with_client_options(
                    object_store::ClientOptions::new()
                        .with_connect_timeout(S3_CONNECT_TIMEOUT)
                        .with_timeout(ARCHIVE_S3_REQUEST_TIMEOUT),
                );
            if let Some(endpoint) = options.endpoint.as_deref().filter(|e| !e.is_empty()) {
                b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
            }
            if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
                b = b.with_access_key_id(id).with_secret_access_key(secret);
            }
            Backend::Store {
                store: Arc::new(b.build().map_err(|e| ArchiveError::Store(e.to_string()))?),
                prefix: prefix.trim_matches('/').to_string(),
            }
        } else if let Some(path) = url.strip_prefix("file://").filter(|p| p.starts_with('/')) {
            Backend::Local(LocalDir::open(std::path::Path::new(path))?)
        } else {
            return Err(ArchiveError::Url(url.to_string()));
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("archive-io")
            .enable_all()
            .build()
            .map_err(|e| ArchiveError::Store(e.to_string()))?;
        Ok(Self { backend, url: url.trim_end_matches('/').to_string(), runtime })
    }

    /// The URL this target was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn key(prefix: &str, rest: &str) -> String {
        if prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{prefix}/{rest}")
        }
    }

    fn block<T: Send>(&self, f: impl std::future::Future<Output = T> + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| self.runtime.block_on(f)).join().expect("an object-store call does not panic")
        })
    }

    /// Writes the object `rel` (relative to the target's prefix) whole.
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let (store, prefix) = match &self.backend {
            Backend::Local(dir) => return dir.put(rel, &bytes),
            Backend::Store { store, prefix } => (store, prefix),
        };
        let key = Self::key(prefix, rel);
        let path = StorePath::from(key.as_str());
        self.block(store.put(&path, bytes.into())).map_err(|e| ArchiveError::Store(format!("writing {key}: {e}")))?;
        Ok(())
    }

    /// Reads the object `rel`.
    pub fn get(&self, rel: &str) -> Result<Vec<u8>, ArchiveError> {
        let (store, prefix) = match &self.backend {
            Backend::Local(dir) => return dir.get(rel),
            Backend::Store { store, prefix } => (store, prefix),
        };
        let key = Self::key(prefix, rel);
        let path = StorePath::from(key.as_str());
        self.block(async {
            let r = store.get(&path).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => ArchiveError::Missing(rel.to_string()),
            e => ArchiveError::Store(format!("reading {rel}: {e}")),
        })
    }

    /// The names of the objects directly under `rel/`, sorted.
    pub fn list(&self, rel: &str) -> Result<Vec<String>, ArchiveError> {
        let (store, prefix) = match &self.backend {
            Backend::Local(dir) => return dir.list(rel),
            Backend::Store { store, prefix } => (store, prefix),
        };
        let key = Self::key(prefix, rel);
        let path = StorePath::from(key.as_str());
        let metas: Vec<object_store::ObjectMeta> = self
            .block(store.list(Some(&path)).try_collect())
            .map_err(|e| ArchiveError::Store(format!("listing {rel}: {e}")))?;
        let mut names: Vec<String> = metas
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&format!("{key}/")).map(str::to_string))
            .filter(|n| !n.contains('/'))
            .collect();
        names.sort();
        Ok(names)
    }
}
