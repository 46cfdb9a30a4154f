//! # epoch-control
//!
//! The control plane: which databases this server hosts, who owns them, the names that point
//! at them, who else may act on them, and the configurations other parts keep per database.
//! All of it lives in the system database ([`SystemDb`], `data_dir/system/`): each change is one
//! durable transaction, and [`ControlPlane::open`] brings every database back after a restart or
//! a crash.
//!
//! Not for: running a database (epoch-core), HTTP (epoch-api), or what a sync workflow does
//! (epoch-sync); those ask the control plane, it never asks them.

mod backup;
mod configs;
mod error;
mod grants;
mod hosted;
mod legacy;
pub mod limits;
mod locks;
mod names;
mod plane;
mod publish;
mod startup;
pub mod system;

pub use error::{ControlError, SetNamesError};
pub use grants::GrantRule;
pub use hosted::{HostedDatabase, UnavailableDatabase};
pub use locks::{LOCKED_DELETE, LOCKED_RESET};
pub use plane::{ControlPlane, DropListener};
pub use publish::{ProposedUpdate, PublishOp};
pub use system::{SystemDb, SystemError, SystemTable};
