//! Reconcilers: for each kind, observe → plan (pure) → apply → status.
//! Nothing here talks to Kubernetes; the controller and the CLI supply status
//! persistence through [`StatusSink`].

pub mod agent;
pub mod backup_policy;
pub mod cache;
pub mod dns_record;
mod error;
pub mod inventory;
mod outcome;
pub mod ownership;
pub mod proxmox_guest;
pub mod proxy_host;

use futures::future::BoxFuture;

pub use error::ReconcileError;
pub use outcome::{Blocked, EventNote, POLL_TASK, RESYNC, Requeue, VERIFY_SOON, conditions};

/// Where one object's whole status goes: its status subresource under `run`,
/// memory or the console under the one-shot commands. Reconciles save through
/// it mid-way (VMID before create, UPID after a task starts), so a restart at
/// any instant finds its work again; the monitor scheduler writes through it.
pub trait StatusSink<S>: Send + Sync {
    fn save<'a>(&'a self, status: &'a S) -> BoxFuture<'a, Result<(), String>>;
}

/// What every reconcile reads from, in `run` and in the one-shot commands alike.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub providers: &'a crate::providers::Providers,
    pub cache: &'a cache::ClusterCache,
    pub drift: &'a cache::DriftClock,
}
