//! Reconcilers: for each kind, observe → plan (pure) → apply → status.
//! Nothing here talks to Kubernetes; the controller and the CLI supply status
//! persistence through [`StatusSink`].

pub mod agent;
pub mod backup_policy;
pub mod cache;
pub mod dns_record;
pub mod inventory;
pub mod proxmox_guest;
pub mod proxy_host;

use std::{future::Future, time::Duration};

use crate::providers::{dns, npm, pve};

/// Where a reconcile stores status mid-way (VMID before create, UPID after a
/// task starts), so a restart at any instant finds its work again.
pub trait StatusSink<S>: Send + Sync {
    fn save(&self, status: &S) -> impl Future<Output = Result<(), String>> + Send;
}

/// An event the caller publishes (Kubernetes Event, or a line on the console).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

impl EventNote {
    pub fn normal(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            note: note.into(),
        }
    }
    pub fn warning(reason: &'static str, note: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            note: note.into(),
        }
    }
}

/// Failure of one reconcile, with enough to decide between backoff and `Stalled`.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{step}: {source}")]
    Pve {
        step: String,
        #[source]
        source: pve::Error,
    },
    #[error("{step}: {source}")]
    Dns {
        step: String,
        #[source]
        source: dns::Error,
    },
    #[error("{step}: {source}")]
    Pbs {
        step: String,
        #[source]
        source: crate::providers::pbs::Error,
    },
    #[error("{step}: {source}")]
    Proxy {
        step: String,
        #[source]
        source: npm::Error,
    },
    #[error("{op} task failed: {message}")]
    TaskFailed { op: String, message: String },
    #[error("saving status: {0}")]
    Status(String),
    #[error("{0}")]
    Config(String),
}

impl ReconcileError {
    pub fn pve(step: impl Into<String>, source: pve::Error) -> Self {
        ReconcileError::Pve { step: step.into(), source }
    }

    pub fn pbs(step: impl Into<String>, source: crate::providers::pbs::Error) -> Self {
        ReconcileError::Pbs { step: step.into(), source }
    }

    /// Transient errors are retried with backoff; the rest need a person.
    pub fn is_transient(&self) -> bool {
        match self {
            ReconcileError::Pve { source, .. } => source.is_transient(),
            ReconcileError::Dns { source, .. } => source.is_transient(),
            ReconcileError::Proxy { source, .. } => source.is_transient(),
            ReconcileError::Pbs { source, .. } => source.is_transient(),
            // A failed task is as transient as its exit status says (a lock: yes; a missing bridge: no).
            ReconcileError::TaskFailed { message, .. } => pve::error::classify_message(message) == pve::ErrorClass::Transient,
            ReconcileError::Status(_) => true,
            ReconcileError::Config(_) => false,
        }
    }

    /// Stable PascalCase category for conditions, events and metrics.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::Pve { source, .. } => match source.class() {
                pve::ErrorClass::Transient if source.is_locked() => "GuestLocked",
                pve::ErrorClass::Transient => "ProxmoxUnavailable",
                pve::ErrorClass::NotFound => "NotFound",
                pve::ErrorClass::Permission => "PermissionDenied",
                pve::ErrorClass::Invalid => "RefusedByProxmox",
                pve::ErrorClass::Conflict => "Conflict",
            },
            ReconcileError::Dns { source, .. } if source.is_transient() => "DnsUnavailable",
            ReconcileError::Dns { source, .. } if source.is_permission() => "PermissionDenied",
            ReconcileError::Dns { .. } => "RefusedByDnsServer",
            ReconcileError::Pbs { source, .. } if source.is_transient() => "BackupServerUnavailable",
            ReconcileError::Pbs { source, .. } if source.is_permission() => "PermissionDenied",
            ReconcileError::Pbs { .. } => "RefusedByBackupServer",
            ReconcileError::Proxy { source, .. } if source.is_transient() => "ProxyUnavailable",
            ReconcileError::Proxy { source, .. } if source.is_permission() => "PermissionDenied",
            ReconcileError::Proxy { .. } => "RefusedByProxy",
            ReconcileError::TaskFailed { .. } => "TaskFailed",
            ReconcileError::Status(_) => "StatusWriteFailed",
            ReconcileError::Config(_) => "ConfigError",
        }
    }
}

/// Ready / Reconciling / Stalled for kinds whose work finishes within one
/// reconcile: `reason` and `message` go to each condition that is true.
pub fn conditions(ready: bool, reconciling: bool, stalled: bool, reason: &'static str, message: &str) -> [crate::api::ConditionState; 3] {
    use crate::api::{CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED, ConditionState};
    [
        ConditionState::new(CONDITION_READY, ready, reason, message),
        ConditionState::new(CONDITION_RECONCILING, reconciling, reason, if reconciling { message } else { "" }),
        ConditionState::new(
            CONDITION_STALLED,
            stalled,
            if stalled { reason } else { "AsExpected" },
            if stalled { message } else { "" },
        ),
    ]
}

/// How soon to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue(pub Duration);

pub const POLL_TASK: Duration = Duration::from_secs(2);
pub const VERIFY_SOON: Duration = Duration::from_secs(1);
pub const RESYNC: Duration = Duration::from_secs(300);
