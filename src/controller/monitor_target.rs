//! What a MonitorTarget needs of Kubernetes around the shared reconcile: the
//! scheduler (which runs its checks and writes its status under `run`) lets
//! go of a monitor whose reconcile failed, and which monitors a guest's
//! change concerns.

use futures::future::BoxFuture;
use kube::{
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    context::Context,
    driver::{Controlled, Reconciled},
    shared::{Error, targeting},
};
use crate::{
    api::{MonitorTarget, ProxmoxGuest},
    reconcile::monitor_target::key,
};

impl Controlled for MonitorTarget {
    fn after_reconcile<'a>(&'a self, ctx: &'a Context, result: &'a mut Reconciled<Self>) -> BoxFuture<'a, Result<(), Error>> {
        // The scheduler must not overwrite the error the driver reports.
        if result.is_err() {
            ctx.monitors.remove(&key(self));
        }
        Box::pin(async { Ok(()) })
    }
}

/// The monitors whose target is `guest` (its address changed).
pub fn monitors_targeting(
    store: &Store<DeserializeGuard<MonitorTarget>>,
    guest: &ProxmoxGuest,
) -> Vec<ObjectRef<DeserializeGuard<MonitorTarget>>> {
    targeting(store, guest, |m: &MonitorTarget| {
        m.spec.target.as_ref().filter(|t| t.kind == "ProxmoxGuest").map(|t| t.name.as_str())
    })
}

/// What a guest reads of its child monitor: spec, Ready, and the Healthy verdict
/// (not the once-a-minute latency and uptime).
pub fn verdict_key(m: &MonitorTarget) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.metadata.generation.hash(&mut h);
    m.metadata.deletion_timestamp.is_some().hash(&mut h);
    let conditions = m.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    for (t, with_message) in [(crate::api::CONDITION_READY, true), (crate::api::CONDITION_HEALTHY, false)] {
        if let Some(c) = crate::api::find_condition(conditions, t) {
            (&c.status, &c.reason, with_message.then_some(&c.message)).hash(&mut h);
        }
    }
    h.finish()
}
