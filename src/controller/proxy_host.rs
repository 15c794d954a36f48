//! ProxyHost controller glue: finalizer, target lookup, status, events.
//! The logic lives in `reconcile::proxy_host`.

use std::sync::Arc;

use kube::{
    Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};

use super::{
    context::Context,
    shared::{Error, StatusWriter, error_policy as shared_error_policy, guest_addresses, identity, publish_all, reconcile_kind, targeting},
};
use crate::{
    api::{ProxmoxGuest, ProxyHost},
    reconcile::{
        ReconcileError,
        proxy_host::{self, ProxyObject},
    },
};

pub async fn reconcile(obj: Arc<DeserializeGuard<ProxyHost>>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_kind(obj, ctx, |r, c, a| Box::pin(apply(r, c, a)), |r, c, _| Box::pin(cleanup(r, c))).await
}

fn client<'a>(ctx: &'a Context, r: &ProxyHost) -> Result<&'a crate::providers::npm::Npm, ReconcileError> {
    Ok(ctx.providers.proxy(&r.spec.provider)?)
}

/// The target guest's addresses (`None` while it does not exist).
async fn target_ips(ctx: &Context, r: &ProxyHost) -> Result<Option<Vec<String>>, Error> {
    let Some(t) = &r.spec.target else { return Ok(None) };
    guest_addresses(ctx, &r.namespace().unwrap_or_default(), &t.name, t.nic.as_deref()).await
}

async fn apply(r: &ProxyHost, ctx: &Context, writer: &StatusWriter<ProxyHost>) -> Result<Action, Error> {
    let npm = client(ctx, r)?;
    let id = identity(r);
    let obj = ProxyObject {
        id: &id,
        spec: &r.spec,
        status: r.status.clone().unwrap_or_default(),
        generation: r.metadata.generation,
        target_ips: target_ips(ctx, r).await?,
    };
    let out = proxy_host::reconcile(npm, obj, false).await?;
    publish_all(ctx, &r.object_ref(&()), &out.events, "Reconcile").await;
    writer.apply(&out.status).await.map_err(Error::Kube)?;
    // Outside state is re-read at least every --drift-interval, as for guests.
    Ok(Action::requeue(
        out.requeue.min(ctx.drift.period().max(std::time::Duration::from_secs(1))),
    ))
}

async fn cleanup(r: &ProxyHost, ctx: &Context) -> Result<Action, Error> {
    let events = proxy_host::cleanup(client(ctx, r)?, &identity(r), &r.spec).await?;
    publish_all(ctx, &r.object_ref(&()), &events, "Delete").await;
    Ok(Action::await_change())
}

pub fn error_policy(obj: Arc<DeserializeGuard<ProxyHost>>, err: &Error, ctx: Arc<Context>) -> Action {
    shared_error_policy(obj.0.as_ref().ok().and_then(|r| r.uid()), err, &ctx)
}

/// The ProxyHosts that forward to this guest (for `Controller::watches`).
pub fn proxies_targeting(store: &Store<DeserializeGuard<ProxyHost>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<ProxyHost>>> {
    targeting(store, guest, |p: &ProxyHost| p.spec.target.as_ref().map(|t| t.name.as_str()))
}
