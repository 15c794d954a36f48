//! Reconcilers: for each kind one adapter ([`kind::Kind`]) that observes,
//! plans (pure) and applies, driven alike by the controller and the one-shot
//! commands. Nothing here talks to Kubernetes: what a resource refers to comes
//! through a [`kind::Lookup`], status goes through a [`StatusSink`].

pub mod agent;
pub mod backup_policy;
pub mod cache;
pub mod dns_record;
mod error;
pub mod inventory;
pub mod kind;
pub mod listings;
pub mod monitor_target;
mod outcome;
pub mod ownership;
pub mod proxmox_guest;
pub mod proxy_host;
pub mod update_policy;

pub use error::ReconcileError;
pub use outcome::{Blocked, Change, Cleanup, EventNote, Outcome, POLL_TASK, RESYNC, Requeue, VERIFY_SOON, conditions};

pub use crate::status::StatusSink;

/// What every reconcile reads from, in `run` and in the one-shot commands alike.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub providers: &'a crate::providers::Providers,
    pub cache: &'a cache::ClusterCache,
    pub drift: &'a cache::DriftClock,
    /// The continuous monitor checks (the controller's; the one-shot commands check once).
    pub monitors: Option<&'a dyn monitor_target::Monitors>,
}
