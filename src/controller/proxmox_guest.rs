//! What a ProxmoxGuest needs of Kubernetes around the shared reconcile: its
//! owned DnsRecord, ProxyHost and MonitorTarget children (`spec.dns`,
//! `spec.proxy`, `spec.monitor`) kept and rolled into its conditions, its
//! monitors held in maintenance while a task has it down, the task gauge.

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    context::Context,
    driver::{Controlled, Reconciled},
    shared::Error,
};
use crate::{
    api::{DnsRecord, FIELD_MANAGER, MonitorTarget, ProxmoxGuest, ProxmoxGuestStatus, ProxyHost},
    reconcile::{Cleanup, ownership::Identity, proxmox_guest::children},
};

/// Operations during which the guest does not answer.
fn takes_guest_down(operation: &str) -> bool {
    matches!(operation, "reboot" | "shutdown" | "stop" | "rollback" | "delete")
}

/// Whether the guest's task in flight has it down.
fn is_down(status: Option<&ProxmoxGuestStatus>) -> bool {
    status
        .and_then(|s| s.current_task.as_ref())
        .is_some_and(|t| takes_guest_down(&t.operation))
}

fn busy(ctx: &Context, g: &ProxmoxGuest, down: bool) {
    ctx.monitors.guest_busy(&g.namespace().unwrap_or_default(), &g.name_any(), down);
}

/// A guest naming a policy its namespace lacks (BackupPolicy, UpdatePolicy)
/// is not backed up or not updated: say so rather than stay silent. The
/// reason and the message of the first missing one.
async fn missing_policy(g: &ProxmoxGuest, ctx: &Context) -> Result<Option<(&'static str, String)>, Error> {
    let ns = g.namespace().unwrap_or_default();
    if let Some(name) = g.spec.backup.as_ref().map(|b| b.policy.as_str()) {
        let api: Api<crate::api::BackupPolicy> = Api::namespaced(ctx.client.clone(), &ns);
        if api.get_opt(name).await.map_err(Error::Kube)?.is_none() {
            let why =
                format!("spec.backup.policy names BackupPolicy {name:?}, which namespace {ns} does not have: this guest is not backed up");
            return Ok(Some(("BackupPolicyNotFound", why)));
        }
    }
    if let Some(name) = g.spec.updates.as_ref().map(|u| u.policy.as_str()) {
        let api: Api<crate::api::UpdatePolicy> = Api::namespaced(ctx.client.clone(), &ns);
        if api.get_opt(name).await.map_err(Error::Kube)?.is_none() {
            let why =
                format!("spec.updates.policy names UpdatePolicy {name:?}, which namespace {ns} does not have: this guest is not updated");
            return Ok(Some(("UpdatePolicyNotFound", why)));
        }
    }
    Ok(None)
}

/// The guests of the policy's namespace that name it (`named` reads the
/// reference from a guest), for `Controller::watches`.
pub fn guests_naming<P: Resource>(
    store: &Store<DeserializeGuard<ProxmoxGuest>>,
    policy: &P,
    named: fn(&ProxmoxGuest) -> Option<&str>,
) -> Vec<ObjectRef<DeserializeGuard<ProxmoxGuest>>> {
    let (ns, name) = (policy.meta().namespace.clone(), policy.meta().name.clone());
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|g| g.namespace() == ns && named(g) == name.as_deref())
        .map(|g| ObjectRef::new(&g.name_any()).within(&g.namespace().unwrap_or_default()))
        .collect()
}

/// Degraded with `reason`, the other conditions as they are (the guest itself may still be Ready).
fn degrade(conditions: &mut Vec<Condition>, generation: Option<i64>, reason: &'static str, message: &str) {
    let now = Time(jiff::Timestamp::now());
    match conditions.iter_mut().find(|c| c.type_ == crate::api::CONDITION_DEGRADED) {
        Some(c) => {
            if c.status != "True" {
                c.last_transition_time = now;
            }
            c.status = "True".into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: crate::api::CONDITION_DEGRADED.into(),
            status: "True".into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

impl Controlled for ProxmoxGuest {
    fn after_reconcile<'a>(&'a self, ctx: &'a Context, result: &'a mut Reconciled<Self>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            // Busy from just before the operator's task starts (the reconcile
            // said so) until it is seen finished; on error, as the stored task says.
            let down = result
                .as_ref()
                .map_or_else(|_| is_down(self.status.as_ref()), |o| is_down(Some(&o.status)));
            busy(ctx, self, down);
            let Ok(out) = result else { return Ok(()) };
            ctx.track_task(&Identity::of(self).uid, out.status.current_task.is_some());
            let children = sync_children(self, ctx).await?;
            out.status.children = children.iter().map(|(name, _)| name.clone()).collect();
            children::roll_up(
                &mut out.status.conditions,
                &children,
                self.metadata.generation,
                &Time(jiff::Timestamp::now()),
            );
            if let Some((reason, why)) = missing_policy(self, ctx).await? {
                // One Event when it starts; the condition says it for as long as it lasts.
                let said = self
                    .status
                    .as_ref()
                    .and_then(|s| crate::api::find_condition(&s.conditions, crate::api::CONDITION_DEGRADED));
                if said.is_none_or(|c| c.reason != reason) {
                    out.events.push(crate::reconcile::EventNote::warning(reason, why.clone()));
                }
                degrade(&mut out.status.conditions, self.metadata.generation, reason, &why);
            }
            Ok(())
        })
    }

    /// Children first (monitor, proxy and DNS; their own finalizers clean up), then the guest.
    fn before_cleanup<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let monitors_left = delete_children::<MonitorTarget>(self, ctx).await?;
            let proxies_left = delete_children::<ProxyHost>(self, ctx).await?;
            let records_left = delete_children::<DnsRecord>(self, ctx).await?;
            if monitors_left || proxies_left || records_left {
                return Err(Error::CleanupInProgress(std::time::Duration::from_secs(2)));
            }
            Ok(())
        })
    }

    fn after_cleanup(&self, ctx: &Context, step: &Cleanup<ProxmoxGuestStatus>) {
        let uid = Identity::of(self).uid;
        match step {
            Cleanup::Done(_) => {
                ctx.track_task(&uid, false);
                busy(ctx, self, false);
            }
            Cleanup::Requeue { status, .. } => ctx.track_task(&uid, status.current_task.is_some()),
            Cleanup::Blocked { .. } => {}
        }
    }
}

/// A wanted child by name, with its conditions as last written (none before its first status).
type ChildSeen = (String, Vec<Condition>);

/// What the guest controller needs to know of a child kind.
trait Child:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + serde::Serialize
{
    fn same_spec(&self, other: &Self) -> bool;
    fn conditions(&self) -> Vec<Condition>;
}

macro_rules! child_kind {
    ($($kind:ty),*) => {$(
        impl Child for $kind {
            fn same_spec(&self, other: &Self) -> bool {
                self.spec == other.spec
            }
            fn conditions(&self) -> Vec<Condition> {
                self.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default()
            }
        }
    )*};
}
child_kind!(DnsRecord, ProxyHost, MonitorTarget);

fn owned_by(g: &ProxmoxGuest, meta: &kube::api::ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == g.metadata.uid.as_ref())
}

/// Keep the owned children `spec.dns`, `spec.proxy` and `spec.monitor` ask for.
async fn sync_children(g: &ProxmoxGuest, ctx: &Context) -> Result<Vec<ChildSeen>, Error> {
    // Nothing asked for and nothing made before: no apiserver call at all.
    let made_before = g.status.as_ref().is_some_and(|s| !s.children.is_empty());
    let mut seen = sync_kind(g, ctx, children::dns_records(g), made_before).await?;
    seen.extend(sync_kind(g, ctx, children::proxy_hosts(g), made_before).await?);
    seen.extend(sync_kind(g, ctx, children::monitors(g), made_before).await?);
    Ok(seen)
}

/// Apply missing or changed children of one kind, delete ones no longer
/// wanted. Returns each wanted child's conditions.
async fn sync_kind<K: Child>(g: &ProxmoxGuest, ctx: &Context, wanted: Vec<K>, made_before: bool) -> Result<Vec<ChildSeen>, Error> {
    if wanted.is_empty() && !made_before {
        return Ok(vec![]);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &g.namespace().unwrap_or_default());
    let selector = format!("{}={}", children::GUEST_LABEL, g.name_any());
    let existing = api.list(&ListParams::default().labels(&selector)).await.map_err(Error::Kube)?.items;
    let mut ready = vec![];
    for child in &wanted {
        let name = child.name_any();
        let current = existing.iter().find(|e| e.name_any() == name);
        if current.is_none_or(|c| !c.same_spec(child) || c.meta().owner_references != child.meta().owner_references) {
            let mut patch = serde_json::to_value(child).map_err(|e| Error::Kube(kube::Error::SerdeError(e)))?;
            patch["apiVersion"] = serde_json::json!(K::api_version(&()));
            patch["kind"] = serde_json::json!(K::kind(&()));
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
                .await
                .map_err(Error::Kube)?;
        }
        ready.push((name, current.map(Child::conditions).unwrap_or_default()));
    }
    for stale in existing
        .iter()
        .filter(|e| owned_by(g, e.meta()) && !wanted.iter().any(|w| w.name_any() == e.name_any()))
    {
        api.delete(&stale.name_any(), &DeleteParams::default()).await.map_err(Error::Kube)?;
    }
    Ok(ready)
}

/// Delete the guest's children; true while some still exist (their finalizers run).
async fn delete_children<K: Child>(g: &ProxmoxGuest, ctx: &Context) -> Result<bool, Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &g.namespace().unwrap_or_default());
    let selector = format!("{}={}", children::GUEST_LABEL, g.name_any());
    let left: Vec<K> = api.list(&ListParams::default().labels(&selector)).await.map_err(Error::Kube)?.items;
    let left: Vec<&K> = left.iter().filter(|c| owned_by(g, c.meta())).collect();
    for child in left.iter().filter(|c| c.meta().deletion_timestamp.is_none()) {
        api.delete(&child.name_any(), &DeleteParams::default()).await.map_err(Error::Kube)?;
    }
    Ok(!left.is_empty())
}
