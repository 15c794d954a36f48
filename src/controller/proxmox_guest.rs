//! ProxmoxGuest controller glue: finalizer, status via server-side apply,
//! events, error policy. The logic lives in `reconcile::proxmox_guest`.

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::Secret,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::controller::Action,
};

use super::context::Context;
use crate::{
    api::{self, DnsRecord, FIELD_MANAGER, MonitorTarget, ProxmoxGuest, ProxmoxGuestStatus, ProxyHost},
    config::SecretString,
    reconcile::{
        ReconcileError,
        ownership::Identity,
        proxmox_guest::{self, CleanupOutcome, GuestCtx, GuestObject, children},
    },
};

pub use super::shared::Error;
use super::shared::{StatusWriter, error_policy as shared_error_policy, publish_all, reconcile_kind};

type KubeStatus = StatusWriter<ProxmoxGuest>;

/// The cloud-init password, read only while the guest may still be created.
async fn ci_password(ctx: &Context, guest: &ProxmoxGuest) -> Result<Option<SecretString>, ReconcileError> {
    let Some(r) = guest.spec.cloud_init.as_ref().and_then(|c| c.password_secret_ref.as_ref()) else {
        return Ok(None);
    };
    let creating = guest
        .status
        .as_ref()
        .is_none_or(|s| matches!(s.state.as_deref(), None | Some("absent")));
    if !creating {
        return Ok(None);
    }
    let ns = guest.namespace().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&r.name)
        .await
        .map_err(|e| ReconcileError::Config(format!("reading Secret {ns}/{}: {e}", r.name)))?
        .ok_or_else(|| ReconcileError::Config(format!("cloudInit.passwordSecretRef: Secret {ns}/{} not found", r.name)))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
        .ok_or_else(|| {
            ReconcileError::Config(format!(
                "cloudInit.passwordSecretRef: key {:?} not in Secret {ns}/{}",
                r.key, r.name
            ))
        })?;
    Ok(Some(SecretString::new(value)))
}

pub async fn reconcile(obj: Arc<DeserializeGuard<ProxmoxGuest>>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_kind(obj, ctx, |g, c, a| Box::pin(apply(g, c, a)), |g, c, a| Box::pin(cleanup(g, c, a))).await
}

fn object_parts(g: &ProxmoxGuest) -> (Identity, String) {
    let id = super::shared::identity(g);
    (id, g.spec.cluster.clone())
}

fn guest_ctx<'a>(
    ctx: &'a Context,
    cluster: &'a str,
    on_takedown: &'a (dyn Fn() + Send + Sync),
) -> Result<GuestCtx<'a, crate::providers::pve::PveClient>, ReconcileError> {
    let api = ctx.providers.pve(cluster)?;
    Ok(GuestCtx {
        api,
        cache: &ctx.cache,
        drift: &ctx.drift,
        cluster,
        dry_run: false,
        on_takedown: Some(on_takedown),
    })
}

fn guest_object<'a>(
    g: &ProxmoxGuest,
    spec: &'a api::ProxmoxGuestSpec,
    id: &'a Identity,
    ci_password: Option<SecretString>,
) -> GuestObject<'a> {
    GuestObject {
        id,
        spec,
        status: g.status.clone().unwrap_or_default(),
        generation: g.metadata.generation,
        ci_password,
    }
}

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

async fn apply(g: &ProxmoxGuest, ctx: &Context, sink: &KubeStatus) -> Result<Action, Error> {
    let (id, cluster) = object_parts(g);
    // Monitors of this guest stay quiet while the operator itself takes it
    // down: from just before the task starts until it is seen finished.
    let takedown = || ctx.monitors.guest_busy(&id.namespace, &id.name, true);
    let gctx = guest_ctx(ctx, &cluster, &takedown)?;
    let spec = g.effective_spec();
    let obj = guest_object(g, &spec, &id, ci_password(ctx, g).await?);
    let result = proxmox_guest::reconcile(&gctx, obj, sink).await;
    let now_down = result
        .as_ref()
        .map_or_else(|_| is_down(g.status.as_ref()), |o| is_down(Some(&o.status)));
    ctx.monitors.guest_busy(&id.namespace, &id.name, now_down);
    let mut out = result?;
    ctx.track_task(&id.uid, out.status.current_task.is_some());
    let children = sync_children(g, ctx).await?;
    out.status.children = children.iter().map(|(name, _)| name.clone()).collect();
    children::roll_up(
        &mut out.status.conditions,
        &children,
        g.metadata.generation,
        &Time(jiff::Timestamp::now()),
    );
    publish_all(ctx, &g.object_ref(&()), &out.events, "Reconcile").await;
    sink.apply(&out.status).await.map_err(Error::Kube)?;
    Ok(Action::requeue(out.requeue))
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

async fn cleanup(g: &ProxmoxGuest, ctx: &Context, sink: &KubeStatus) -> Result<Action, Error> {
    let (id, cluster) = object_parts(g);
    let takedown = || ctx.monitors.guest_busy(&id.namespace, &id.name, true);
    let gctx = guest_ctx(ctx, &cluster, &takedown)?;
    let spec = g.effective_spec();
    let obj = guest_object(g, &spec, &id, None);
    let reference = g.object_ref(&());
    // Children first (monitor, proxy and DNS; their own finalizers clean up), then the guest.
    let monitors_left = delete_children::<MonitorTarget>(g, ctx).await?;
    let proxies_left = delete_children::<ProxyHost>(g, ctx).await?;
    let records_left = delete_children::<DnsRecord>(g, ctx).await?;
    if monitors_left || proxies_left || records_left {
        return Err(Error::CleanupInProgress(std::time::Duration::from_secs(2)));
    }
    match proxmox_guest::cleanup(&gctx, obj, sink).await? {
        CleanupOutcome::Done(events) => {
            ctx.track_task(&id.uid, false);
            ctx.monitors.guest_busy(&id.namespace, &id.name, false);
            publish_all(ctx, &reference, &events, "Delete").await;
            Ok(Action::await_change())
        }
        CleanupOutcome::Requeue { status, events, after } => {
            ctx.track_task(&id.uid, status.current_task.is_some());
            publish_all(ctx, &reference, &events, "Delete").await;
            sink.apply(&status).await.map_err(Error::Kube)?;
            // Returning Ok would remove the finalizer; the guest is not gone yet.
            Err(Error::CleanupInProgress(after))
        }
        CleanupOutcome::Blocked { status, events } => {
            publish_all(ctx, &reference, &events, "Delete").await;
            sink.apply(&status).await.map_err(Error::Kube)?;
            Err(Error::Reconcile(ReconcileError::Config(status_message(&status))))
        }
    }
}

fn status_message(s: &ProxmoxGuestStatus) -> String {
    api::find_condition(&s.conditions, api::CONDITION_STALLED)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub fn error_policy(obj: Arc<DeserializeGuard<ProxmoxGuest>>, err: &Error, ctx: Arc<Context>) -> Action {
    shared_error_policy(obj.0.as_ref().ok().and_then(|g| g.uid()), err, &ctx)
}
