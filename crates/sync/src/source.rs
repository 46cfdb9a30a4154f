//! Aggregate sources. `file:///path/prefix` lays aggregates out as `<prefix>/<type>/<id>.json`;
//! listing is in (type, id) order, so "everything after this key" is an exact resume point.

use std::path::{Path, PathBuf};

/// One aggregate's address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct AggregateKey {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("unsupported object store URL {0:?} (this server reads file:/// stores; s3:// comes next)")]
    Unsupported(String),
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{key}: {message}")]
    BadDocument { key: String, message: String },
}

/// An object store on the local file system.
#[derive(Debug, Clone)]
pub struct FileSource {
    root: PathBuf,
}

/// The most keys one listing call returns; callers page with the last key.
pub const LIST_PAGE: usize = 1000;

impl FileSource {
    /// A source for a `file:///path/prefix` URL.
    pub fn from_url(url: &str) -> Result<Self, SourceError> {
        let path = url
            .strip_prefix("file://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| SourceError::Unsupported(url.into()))?;
        Ok(Self { root: PathBuf::from(path) })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SourceError + '_ {
        move |source| SourceError::Io { path: path.to_path_buf(), source }
    }

    /// The aggregate types present (subdirectories of the prefix), sorted.
    pub fn types(&self) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(Self::io(&self.root))? {
            let entry = entry.map_err(Self::io(&self.root))?;
            if entry.file_type().map_err(Self::io(&self.root))?.is_dir() {
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
        let dir = self.root.join(aggregate_type);
        let mut ids: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(Self::io(&dir))? {
            let entry = entry.map_err(Self::io(&dir))?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            if after.is_none_or(|a| id > a) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    /// How many aggregates of each type there are.
    pub fn count(&self, aggregate_type: &str) -> Result<u64, SourceError> {
        let dir = self.root.join(aggregate_type);
        let n = std::fs::read_dir(&dir)
            .map_err(Self::io(&dir))?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .count();
        Ok(n as u64)
    }

    /// Reads one aggregate: its whole document and its `version`.
    pub fn get(&self, key: &AggregateKey) -> Result<(u64, String), SourceError> {
        let path = self.root.join(&key.aggregate_type).join(format!("{}.json", key.aggregate_id));
        let text = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        let bad = |message: String| SourceError::BadDocument {
            key: format!("{}/{}", key.aggregate_type, key.aggregate_id),
            message,
        };
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let version =
            doc.get("version").and_then(serde_json::Value::as_u64).ok_or_else(|| bad("no integer `version`".into()))?;
        Ok((version, text))
    }
}
