//! Files earlier versions kept the control plane in, imported once into the system database.

use std::path::{Path, PathBuf};

use crate::system::{SystemDb, SystemTable};
use crate::ControlError;

/// Moves what earlier versions kept in files (`control.json`, `workflows/*.json`) into the
/// system tables, once, in one transaction; the files are then renamed `*.imported`.
pub(crate) fn import_legacy(data_dir: &Path, system: &SystemDb) -> Result<(), ControlError> {
    use serde_json::Value;
    let control = data_dir.join("control.json");
    let workflows = data_dir.join("workflows");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ControlError::Io { path, source }
    };
    let saved: Option<Value> = match std::fs::read(&control) {
        Ok(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| ControlError::Corrupt { table: "control.json", message: e.to_string() })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&control)(e)),
    };
    let instances: Vec<(PathBuf, Value)> = match std::fs::read_dir(&workflows) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| Some((p.clone(), serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?)))
            .collect(),
        Err(_) => Vec::new(),
    };
    if saved.is_none() && instances.is_empty() {
        return Ok(());
    }
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let list = |k: &str| saved.as_ref().and_then(|s| s.get(k)).and_then(Value::as_array).cloned().unwrap_or_default();
    system.write(|tx| {
        for (seq, d) in list("databases").iter().enumerate() {
            tx.put(SystemTable::Databases, vec![text(d, "identity"), text(d, "owner"), seq.to_string()])?;
        }
        for n in list("names") {
            tx.put(SystemTable::Names, vec![text(&n, "name"), text(&n, "identity"), text(&n, "owner")])?;
        }
        for p in list("permissions") {
            tx.put(SystemTable::Permissions, vec![text(&p, "database"), text(&p, "identity"), text(&p, "permission")])?;
        }
        for c in list("sync_configs") {
            let config = c.get("config").cloned().unwrap_or(Value::Null).to_string();
            tx.put(SystemTable::SyncConfigs, vec![text(&c, "database"), config])?;
        }
        for (_, w) in &instances {
            let row = vec![text(w, "id"), text(w, "database"), text(w, "kind"), text(w, "status"), w.to_string()];
            tx.put(SystemTable::Workflows, row)?;
        }
        Ok(())
    })?;
    if saved.is_some() {
        std::fs::rename(&control, data_dir.join("control.json.imported")).map_err(io(&control))?;
    }
    for (path, _) in instances {
        std::fs::rename(&path, path.with_extension("json.imported")).map_err(io(&path))?;
    }
    tracing::info!("imported the control plane and workflows of an earlier version into the system database");
    Ok(())
}
