//! A `file://` archive folder is never read or written through a symbolic link, and only
//! regular files are read from it: a link anywhere on the path (the folder's own path
//! included), a link in place of a file, and a FIFO are refused, naming the path, and what
//! lies behind a link is never touched.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use epoch_archive::{ArchiveError, ArchiveTarget, StoreOptions};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("epoch-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open(path: &std::path::Path) -> Result<ArchiveTarget, ArchiveError> {
    ArchiveTarget::open(&format!("file://{}", path.display()), &StoreOptions::default())
}

#[test]
fn objects_round_trip_and_list_in_order() {
    let d = dir("plain");
    let target = open(&d.join("arch")).unwrap();
    target.put("log/00000000000000000002.log", b"two".to_vec()).unwrap();
    target.put("log/00000000000000000001.log", b"one".to_vec()).unwrap();
    target.put("log/00000000000000000001.log", b"one again".to_vec()).unwrap();
    assert_eq!(target.get("log/00000000000000000001.log").unwrap(), b"one again");
    assert_eq!(target.list("log").unwrap(), ["00000000000000000001.log", "00000000000000000002.log"]);
    assert!(target.list("snapshots").unwrap().is_empty());
    assert!(matches!(target.get("module.wasm"), Err(ArchiveError::Missing(_))));
    assert!(target.put("../escape", Vec::new()).is_err(), "no `..` steps");
    assert!(open(&d.join("arch/../elsewhere")).is_err(), "nor in the folder's path");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_link_anywhere_is_refused_and_what_it_points_to_is_untouched() {
    let d = dir("links");
    let victim = d.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("file"), b"victim's").unwrap();

    // The folder's own path goes through a link.
    symlink(&victim, d.join("via")).unwrap();
    let err = open(&d.join("via").join("arch")).unwrap_err();
    assert!(matches!(&err, ArchiveError::Link(p) if *p == d.join("via")), "{err}");
    assert!(!victim.join("arch").exists(), "nothing was created behind the link");

    let arch = d.join("arch");
    let target = open(&arch).unwrap();
    // A folder inside is a link.
    symlink(&victim, arch.join("snapshots")).unwrap();
    let err = target.put("snapshots/00000000000000000001.snap", b"evil".to_vec()).unwrap_err();
    assert!(err.to_string().contains("symbolic link") && err.to_string().contains("snapshots"), "{err}");
    assert!(matches!(target.list("snapshots"), Err(ArchiveError::Link(_))));
    // A file is a link: neither written through nor read through.
    symlink(victim.join("file"), arch.join("module.wasm")).unwrap();
    let err = target.put("module.wasm", b"evil".to_vec()).unwrap_err();
    assert!(matches!(&err, ArchiveError::Link(p) if *p == arch.join("module.wasm")), "{err}");
    assert!(matches!(target.get("module.wasm"), Err(ArchiveError::Link(_))));
    // Listed, so that reading it is refused rather than skipped.
    assert_eq!(target.list("").unwrap(), ["module.wasm", "snapshots"]);

    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1, "nothing new behind the links");
    assert_eq!(std::fs::read(victim.join("file")).unwrap(), b"victim's");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let d = dir("fifo");
    let target = open(&d).unwrap();
    use rustix::fs::{FileType, Mode, OFlags};
    let folder = rustix::fs::open(&d, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    rustix::fs::mknodat(&folder, "module.wasm", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
    let err = target.get("module.wasm").unwrap_err();
    assert!(matches!(&err, ArchiveError::NotRegular { path, .. } if *path == d.join("module.wasm")), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
