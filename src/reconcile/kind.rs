//! The contract of one kind, which both front ends drive: the controller of
//! `run` (over the API server) and the one-shot `plan`/`apply`/`demo` (over
//! the files they read). A kind resolves what its resource refers to through a
//! [`Lookup`], then either observes and plans without writing ([`Kind::plan`])
//! or carries its plan out ([`Kind::reconcile`]); both hand back one
//! [`Outcome`] that the caller turns into status, events and a requeue.

use std::fmt::Debug;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use serde::{Serialize, de::DeserializeOwned};

use super::{Change, Cleanup, Env, Outcome, ReconcileError, StatusSink};
use crate::{
    api::{self, MonitorTarget, ProxmoxGuest, ProxyHost, SecretKeyRef},
    config::SecretString,
};

/// A Secret's key as a lookup found it.
pub enum SecretValue {
    Found(SecretString),
    /// The Secret or its key does not exist; says which.
    Missing(String),
    /// This front end reads no Secrets (the one-shot commands).
    NotRead,
}

/// What a resource refers to outside itself, as the front end knows it: the
/// API server under `run`, the files read (with what `apply` made of them)
/// under the one-shot commands.
pub trait Lookup: Send + Sync {
    /// The ProxmoxGuest `name` of `namespace`, with its last status.
    fn guest<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ProxmoxGuest>, ReconcileError>>;
    /// Every ProxmoxGuest of `namespace`.
    fn guests<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Vec<ProxmoxGuest>, ReconcileError>>;
    /// The ProxyHost `name` of `namespace`.
    fn proxy_host<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<ProxyHost>, ReconcileError>>;
    /// Every MonitorTarget of `namespace` (guests' own `spec.monitor` ones included).
    fn monitors<'a>(&'a self, namespace: &'a str) -> BoxFuture<'a, Result<Vec<MonitorTarget>, ReconcileError>>;
    /// A key of a Secret in `namespace`.
    fn secret<'a>(&'a self, namespace: &'a str, key: &'a SecretKeyRef) -> BoxFuture<'a, Result<SecretValue, ReconcileError>>;
}

/// The addresses of the ProxmoxGuest `name`'s NIC `nic` (default the first);
/// `None` while the guest does not exist.
pub async fn guest_addresses(
    lookup: &dyn Lookup,
    namespace: &str,
    name: &str,
    nic: Option<&str>,
) -> Result<Option<Vec<String>>, ReconcileError> {
    Ok(lookup
        .guest(namespace, name)
        .await?
        .map(|g| g.status.map(|s| s.addresses(nic)).unwrap_or_default()))
}

/// `namespace/name` of a resource as people read it (files default to `default`).
pub fn display_name<K: Resource>(obj: &K) -> String {
    format!("{}/{}", namespace(obj), obj.meta().name.as_deref().unwrap_or(""))
}

/// The resource's namespace (files default to `default`).
pub fn namespace<K: Resource>(obj: &K) -> &str {
    obj.meta().namespace.as_deref().unwrap_or("default")
}

/// The spec generation the status reports on (files have none: 1).
pub fn generation<K: Resource>(obj: &K) -> Option<i64> {
    obj.meta().generation.or(Some(1))
}

/// What a one-shot `apply` does after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Done,
    /// Not settled: reconcile again after this long (past the deadline it failed).
    Again(std::time::Duration),
    /// Settled, but worth following until the deadline (an address, a backup run).
    UntilDeadline(std::time::Duration),
}

/// Result of a lookup's future, boxed.
pub type Fut<'a, T> = BoxFuture<'a, Result<T, ReconcileError>>;

/// One kind the operator reconciles. Implemented on the resource type.
pub trait Kind:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    type Status: Default + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static;
    type Plan: Default + Debug + Send + Sync;
    /// What the resource refers to, resolved before observing anything.
    type Inputs: Send + Sync;

    /// Metric and log label.
    const KIND: &'static str;
    const FINALIZER: &'static str;
    /// Whether the driver writes the outcome's status (not when something
    /// else owns it: the monitor scheduler writes a running monitor's).
    const STATUS_FROM_OUTCOME: bool = true;

    /// How often a one-shot `apply` retries a transient error before giving up.
    const TRANSIENT_RETRIES: u32 = 0;

    fn current_status(&self) -> Option<Self::Status>;
    fn set_status(&mut self, status: Self::Status);
    fn conditions_mut(status: &mut Self::Status) -> &mut Vec<Condition>;
    /// The checks the API server's admission runs (CEL rules), for resources read from files.
    fn admit(&self) -> Result<(), String>;

    /// Resolve what the resource refers to (target addresses, Secrets, members, endpoints).
    fn resolve<'a>(&'a self, env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Self::Inputs>;
    /// Observe the outside system read-only and plan: what `plan` prints.
    fn plan<'a>(&'a self, env: Env<'a>, inputs: &'a Self::Inputs) -> Fut<'a, Outcome<Self::Status, Self::Plan>>;
    /// One reconcile: observe, plan and carry the plan out, saving status mid-way through `sink`.
    fn reconcile<'a>(
        &'a self,
        env: Env<'a>,
        inputs: Self::Inputs,
        sink: &'a dyn StatusSink<Self::Status>,
    ) -> Fut<'a, Outcome<Self::Status, Self::Plan>>;
    /// One step of deleting (or releasing) what the resource owns outside Kubernetes.
    fn cleanup<'a>(&'a self, env: Env<'a>, sink: &'a dyn StatusSink<Self::Status>) -> Fut<'a, Cleanup<Self::Status>>;

    /// What `plan` prints of a planned outcome.
    fn changes(out: &Outcome<Self::Status, Self::Plan>) -> Vec<Change>;
    /// Whether a one-shot `apply` is done with this outcome or reconciles the resource again.
    fn next_pass(&self, _out: &Outcome<Self::Status, Self::Plan>) -> Pass {
        Pass::Done
    }
    /// `apply`'s table: the header, then one row per resource.
    fn table_header() -> Vec<&'static str>;
    fn table_row(name: &str, status: &Self::Status, error: Option<&str>) -> Vec<String>;
}

/// READY and MESSAGE cells of a table row: the Ready condition, or the error.
pub fn ready_cells(conditions: &[Condition], error: Option<&str>) -> [String; 2] {
    let ready = api::find_condition(conditions, api::CONDITION_READY);
    [
        ready.map_or("Unknown".into(), |c| c.status.clone()),
        error.map_or_else(|| ready.map_or(String::new(), |c| c.message.clone()), str::to_string),
    ]
}

/// A Ready condition that is False: why a resource whose plan writes nothing is not done.
pub fn waiting(conditions: &[Condition]) -> Option<Change> {
    api::find_condition(conditions, api::CONDITION_READY)
        .filter(|c| c.status == "False")
        .map(|c| Change::new('.', format!("{}: {}", c.reason, c.message)))
}
