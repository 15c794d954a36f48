//! Glue every kind's controller shares: the error type and its policy, status
//! by server-side apply (only when changed), events, error conditions.

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    Resource, ResourceExt,
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::{
        controller::Action,
        events::{Event, EventType},
    },
};
use serde::de::DeserializeOwned;

use super::context::Context;
pub use super::status::StatusWriter;
use crate::{
    api::{self, ConditionState},
    reconcile::{EventNote, ReconcileError, kind::Kind},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("kubernetes: {0}")]
    Kube(#[source] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// Not a failure: deletion waits for an outside task.
    #[error("deletion in progress; checking again in {0:?}")]
    CleanupInProgress(Duration),
}

impl From<crate::providers::UnknownEndpoint> for Error {
    fn from(e: crate::providers::UnknownEndpoint) -> Self {
        Error::Reconcile(e.into())
    }
}

impl Error {
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    /// Stable PascalCase category for conditions, events and the metric label.
    pub fn category(&self) -> &'static str {
        match self.inner() {
            Error::Reconcile(e) => e.category(),
            Error::Kube(_) => "KubernetesApi",
            Error::Finalizer(_) => "Finalizer",
            Error::InvalidObject(_) => "InvalidObject",
            Error::CleanupInProgress(_) => "CleanupInProgress",
        }
    }

    pub fn is_transient(&self) -> bool {
        match self.inner() {
            Error::Reconcile(e) => e.is_transient(),
            Error::Kube(_) | Error::Finalizer(_) | Error::CleanupInProgress(_) => true,
            Error::InvalidObject(_) => false,
        }
    }

    /// The error in words a person can act on: what failed, then the
    /// outside system's own words (never a library's `finalizer: failed to
    /// apply object: ApiError: … (Status { … })`).
    pub fn message(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.message(),
                F::AddFinalizer(e) => format!("adding the operator's finalizer: {}", super::api_words::kube_words(e)),
                F::RemoveFinalizer(e) => format!("removing the operator's finalizer: {}", super::api_words::kube_words(e)),
                F::UnnamedObject => "the resource has no name".into(),
                F::InvalidFinalizer => "the operator's finalizer name is not valid".into(),
            },
            Error::Kube(e) => format!("the Kubernetes API server refused a call: {}", super::api_words::kube_words(e)),
            other => other.to_string(),
        }
    }

    pub fn in_progress(&self) -> Option<Duration> {
        match self.inner() {
            Error::CleanupInProgress(d) => Some(*d),
            _ => None,
        }
    }
}

pub async fn publish(ctx: &Context, reference: &ObjectReference, note: &EventNote, action: &str) {
    let ev = Event {
        type_: if note.warning { EventType::Warning } else { EventType::Normal },
        reason: note.reason.to_string(),
        note: Some(note.note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "publishing event");
    }
}

pub async fn publish_all(ctx: &Context, reference: &ObjectReference, notes: &[EventNote], action: &str) {
    for n in notes {
        publish(ctx, reference, n, action).await;
    }
}

/// A resource that failed to deserialize: one Warning event, then wait for a change.
pub async fn invalid_object<K: Resource<DynamicType = ()>>(ctx: &Context, invalid: &InvalidObject) -> Error {
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: invalid.metadata.name.clone(),
        namespace: invalid.metadata.namespace.clone(),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    publish(
        ctx,
        &reference,
        &EventNote::warning("InvalidObject", format!("cannot read the resource: {}", invalid.error)),
        "Reconcile",
    )
    .await;
    Error::InvalidObject(invalid.error.clone())
}

/// Put the error where people look: a Degraded (transient) or Stalled
/// (needs a person) condition and one Warning event. The conditions go on top
/// of the newest status this reconcile saved.
pub async fn report_error<K: Kind>(obj: &K, writer: &StatusWriter<K>, ctx: &Context, e: &Error) {
    if e.in_progress().is_some() {
        return;
    }
    let transient = e.is_transient();
    let message = e.message();
    let mut new: K::Status = writer.latest().unwrap_or_default();
    let wanted = [
        ConditionState::new(api::CONDITION_READY, false, e.category(), message.clone()),
        ConditionState::new(
            api::CONDITION_RECONCILING,
            transient,
            e.category(),
            if transient { "retrying with backoff" } else { "" },
        ),
        ConditionState::new(
            api::CONDITION_DEGRADED,
            transient,
            e.category(),
            if transient { message.clone() } else { String::new() },
        ),
        ConditionState::new(
            api::CONDITION_STALLED,
            !transient,
            e.category(),
            if transient { String::new() } else { message.clone() },
        ),
    ];
    let conditions = K::conditions_mut(&mut new);
    *conditions = api::merge_conditions(conditions, &wanted, obj.meta().generation, Time(jiff::Timestamp::now()));
    let unchanged = writer
        .latest::<K::Status>()
        .is_some_and(|s| serde_json::to_value(&s).ok() == serde_json::to_value(&new).ok());
    if let Err(err) = writer.apply(&new).await {
        tracing::warn!(error = %err, "writing error status");
    }
    // The same error again (a retry) gets no second Event: the condition already says it.
    if !unchanged {
        publish(ctx, &obj.object_ref(&()), &EventNote::warning(e.category(), message), "Reconcile").await;
    }
}

/// Transient errors back off per object; the rest wait for a person (slow requeue).
pub fn error_policy<K: Kind>(obj: Arc<DeserializeGuard<K>>, err: &Error, ctx: Arc<Context>) -> Action {
    let Some(key) = obj.0.as_ref().ok().and_then(|o| o.meta().uid.clone()) else {
        return Action::await_change();
    };
    if let Some(after) = err.in_progress() {
        return Action::requeue(after);
    }
    if matches!(err.inner(), Error::InvalidObject(_)) {
        return Action::await_change();
    }
    if err.is_transient() {
        let delay = ctx.backoff.next(&key);
        tracing::info!(error = %err, ?delay, "transient error; retrying");
        Action::requeue(delay)
    } else {
        // The spec change that fixes it triggers us; look again slowly anyway in
        // case the outside cause (missing template, permissions) was fixed.
        tracing::warn!(error = %err, "needs attention");
        Action::requeue(Duration::from_secs(600))
    }
}

/// The objects in `store` whose target is `guest` (for `Controller::watches`).
pub fn targeting<K>(
    store: &kube::runtime::reflector::Store<kube::core::DeserializeGuard<K>>,
    guest: &api::ProxmoxGuest,
    target_of: impl Fn(&K) -> Option<&str>,
) -> Vec<kube::runtime::reflector::ObjectRef<kube::core::DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let name = guest.name_any();
    concerning(store, guest, |r| target_of(r) == Some(name.as_str()))
}

/// The objects in `store` of the guest's namespace that `concerns` says the
/// guest's change matters to (for `Controller::watches`).
pub fn concerning<K>(
    store: &kube::runtime::reflector::Store<kube::core::DeserializeGuard<K>>,
    guest: &api::ProxmoxGuest,
    concerns: impl Fn(&K) -> bool,
) -> Vec<kube::runtime::reflector::ObjectRef<kube::core::DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let ns = guest.namespace();
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| r.namespace() == ns && concerns(r))
        .map(|r| kube::runtime::reflector::ObjectRef::new(&r.name_any()).within(&r.namespace().unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::runtime::finalizer::Error as F;

    use super::*;

    #[test]
    fn messages_are_ours_and_the_servers_never_the_librarys() {
        let refused = || {
            kube::Error::Api(Box::new(kube::core::Status::failure(
                "admission webhook denied the request",
                "Forbidden",
            )))
        };
        let cases = [
            (
                Error::Finalizer(Box::new(F::ApplyFailed(Error::Reconcile(ReconcileError::Config(
                    "spec.notify: channel \"x\" is not in the config's notifications: section".into(),
                ))))),
                "spec.notify: channel \"x\" is not in the config's notifications: section",
            ),
            (
                Error::Finalizer(Box::new(F::AddFinalizer(refused()))),
                "adding the operator's finalizer: admission webhook denied the request (Forbidden)",
            ),
            (
                Error::Kube(refused()),
                "the Kubernetes API server refused a call: admission webhook denied the request (Forbidden)",
            ),
        ];
        for (e, words) in cases {
            let m = e.message();
            assert_eq!(m, words);
            for library in ["finalizer: failed", "failed to apply object", "ApiError", "Status {"] {
                assert!(!m.contains(library), "{m}");
            }
        }
    }
}
