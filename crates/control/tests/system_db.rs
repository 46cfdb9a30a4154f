//! The control plane lives in the system database: it survives reopening, and what an earlier
//! version kept in `control.json` and `workflows/*.json` is imported once.
#[path = "../../core/tests/common/mod.rs"]
mod common;
use common::*;

use epoch_control::{ControlPlane, SystemTable};
use epoch_core::{HostConfig, Identity, PersistConfig};

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-systemdb-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_control_plane_survives_reopening_and_legacy_files_are_imported_once() {
    let dir = temp("legacy");
    let db = Identity([3u8; 32]);
    {
        let cp = ControlPlane::open(&dir, HostConfig::default(), PersistConfig::default()).unwrap();
        cp.publish(db, OWNER, &fixture("projections"), false, Default::default()).unwrap();
        cp.add_name("proj", db, OWNER).unwrap();
        cp.set_permission(db, OWNER, Identity([5; 32]), "sync", true).unwrap();
        cp.set_sync_config(db, serde_json::json!({"objectStore": {"url": "file:///x"}})).unwrap();
    }
    {
        let cp = ControlPlane::open(&dir, HostConfig::default(), PersistConfig::default()).unwrap();
        assert_eq!(cp.resolve_name("proj"), Some(db));
        assert!(cp.has_permission(&db, &Identity([5; 32]), "sync"));
        assert_eq!(cp.sync_config(&db).unwrap()["objectStore"]["url"], "file:///x");
        assert_eq!(cp.get(&db).unwrap().owner, OWNER);
    }
    // An earlier version's files, with the system database not yet there.
    std::fs::remove_dir_all(dir.join("system")).unwrap();
    let (db_hex, owner_hex) = (db.to_hex(), OWNER.to_hex());
    let legacy = serde_json::json!({
        "databases": [{"identity": db_hex, "owner": owner_hex}],
        "names": [{"name": "legacy-name", "identity": db_hex, "owner": owner_hex}],
        "permissions": [{"database": db_hex, "identity": Identity([6; 32]).to_hex(), "permission": "sync"}],
        "sync_configs": [{"database": db_hex, "config": {"objectStore": {"url": "file:///legacy"}}}],
    });
    std::fs::write(dir.join("control.json"), legacy.to_string()).unwrap();
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    let instance = serde_json::json!({"id": "wf_old", "kind": "resync-projections", "database": db_hex,
                                      "status": "complete"});
    std::fs::write(dir.join("workflows/wf_old.json"), instance.to_string()).unwrap();
    for _ in 0..2 {
        let cp = ControlPlane::open(&dir, HostConfig::default(), PersistConfig::default()).unwrap();
        assert_eq!(cp.resolve_name("legacy-name"), Some(db));
        assert!(cp.has_permission(&db, &Identity([6; 32]), "sync"));
        assert_eq!(cp.sync_config(&db).unwrap()["objectStore"]["url"], "file:///legacy");
        let workflows = cp.system().rows(SystemTable::Workflows);
        assert_eq!(workflows.len(), 1);
        assert_eq!(workflows[0][0], "wf_old");
        assert!(!dir.join("control.json").exists() && dir.join("control.json.imported").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
