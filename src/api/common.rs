//! Types and condition helpers shared by every kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const CONDITION_READY: &str = "Ready";
pub const CONDITION_RECONCILING: &str = "Reconciling";
pub const CONDITION_DEGRADED: &str = "Degraded";
pub const CONDITION_STALLED: &str = "Stalled";

/// Whether deleting the resource deletes what it manages outside Kubernetes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the outside object together with the resource.
    Delete,
    /// Keep the outside object; only the operator's ownership mark is removed.
    #[default]
    Retain,
}

/// How far the operator may act on the outside object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ManagementMode {
    /// Observe, plan and write until the outside object matches the spec.
    #[default]
    Reconcile,
    /// Observe and report drift in status, never write.
    ObserveOnly,
    /// Do nothing at all (not even observe); status is left as it is.
    Paused,
}

/// A key in a Secret in the resource's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// The state of one condition as the reconciler sees it; turned into a
/// Kubernetes `Condition` by [`merge_conditions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionState {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl ConditionState {
    pub fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Build the new condition list from the wanted states, keeping
/// `lastTransitionTime` of every condition whose status did not flip, so that
/// writing the same state twice yields an identical list (no status patch).
pub fn merge_conditions(old: &[Condition], wanted: &[ConditionState], generation: Option<i64>, now: Time) -> Vec<Condition> {
    wanted
        .iter()
        .map(|w| {
            let status = if w.status { "True" } else { "False" }.to_string();
            let last = old
                .iter()
                .find(|c| c.type_ == w.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: w.type_.to_string(),
                status,
                reason: w.reason.clone(),
                message: w.message.clone(),
                last_transition_time: last,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

pub fn default_endpoint() -> String {
    "default".to_string()
}

pub fn is_false(b: &bool) -> bool {
    !*b
}

pub fn default_true() -> bool {
    true
}
