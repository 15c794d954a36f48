//! Failure of one reconcile: which outside call failed and whether a retry can help.

use crate::providers::{dns, npm, pbs, pve};

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
        source: pbs::Error,
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
    /// The API server failed a read (what the resource refers to).
    #[error("{0}")]
    Kubernetes(String),
    #[error("{0}")]
    Config(String),
}

impl ReconcileError {
    /// The same error with words added to what it says (a Kubernetes or config error's hint).
    pub fn with_suffix(self, suffix: &str) -> Self {
        match self {
            ReconcileError::Kubernetes(m) => ReconcileError::Kubernetes(m + suffix),
            ReconcileError::Config(m) => ReconcileError::Config(m + suffix),
            other => other,
        }
    }

    /// The same error, said to be about `field` (a Kubernetes or config error).
    pub fn about(self, field: &str) -> Self {
        match self {
            ReconcileError::Kubernetes(m) => ReconcileError::Kubernetes(format!("{field}: {m}")),
            ReconcileError::Config(m) => ReconcileError::Config(format!("{field}: {m}")),
            other => other,
        }
    }

    pub fn pve(step: impl Into<String>, source: pve::Error) -> Self {
        ReconcileError::Pve { step: step.into(), source }
    }

    pub fn pbs(step: impl Into<String>, source: pbs::Error) -> Self {
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
            ReconcileError::Status(_) | ReconcileError::Kubernetes(_) => true,
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
            ReconcileError::Kubernetes(_) => "KubernetesApi",
            ReconcileError::Config(_) => "ConfigError",
        }
    }
}

impl From<crate::providers::UnknownEndpoint> for ReconcileError {
    fn from(e: crate::providers::UnknownEndpoint) -> Self {
        ReconcileError::Config(e.to_string())
    }
}
