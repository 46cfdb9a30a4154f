//! The official `spacetime` 1.3 CLI (`spacetimedb-cli`) for tests: whether it is here, and a
//! command that runs it against its own config file.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Whether `spacetimedb-cli` is installed and runs.
pub fn available() -> bool {
    Command::new("spacetimedb-cli").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `spacetimedb-cli --config-path CONFIG`, without backtraces, ready for its arguments.
pub fn command(config: &Path) -> Command {
    let mut cmd = Command::new("spacetimedb-cli");
    cmd.arg("--config-path").arg(config).env("RUST_BACKTRACE", "0");
    cmd
}
