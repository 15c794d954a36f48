//! In-process simulators of the outside systems, served over real HTTP(S) on
//! loopback, for `demo`, the tests and the benchmark. They do not reuse the
//! providers' types: both sides sharing a type would agree on the same bug.

pub mod faults;
pub mod homelab;
pub mod notify;
pub mod npm;
pub mod pbs;
pub mod pve;
pub mod schema;
pub mod server;
pub mod technitium;

pub use faults::{FaultKind, Faults, ScriptedFault};
pub use server::SimServer;
