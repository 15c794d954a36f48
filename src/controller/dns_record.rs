//! DnsRecord controller glue: finalizer, target lookup, status, events.
//! The logic lives in `reconcile::dns_record`.

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
    api::{DnsRecord, ProxmoxGuest},
    reconcile::{
        ReconcileError,
        dns_record::{self, DnsObject, Target},
    },
};

pub async fn reconcile(obj: Arc<DeserializeGuard<DnsRecord>>, ctx: Arc<Context>) -> Result<Action, Error> {
    reconcile_kind(obj, ctx, |r, c, a| Box::pin(apply(r, c, a)), |r, c, _| Box::pin(cleanup(r, c))).await
}

fn client<'a>(ctx: &'a Context, r: &DnsRecord) -> Result<&'a crate::providers::dns::DnsClient, ReconcileError> {
    Ok(ctx.providers.dns(&r.spec.provider)?)
}

/// The target guest's addresses, read from the apiserver.
async fn target(ctx: &Context, r: &DnsRecord) -> Result<Target, Error> {
    let Some(t) = &r.spec.target else { return Ok(Target::NoTarget) };
    Ok(guest_addresses(ctx, &r.namespace().unwrap_or_default(), &t.name, t.nic.as_deref())
        .await?
        .map_or(Target::Missing, Target::Ips))
}

async fn apply(r: &DnsRecord, ctx: &Context, writer: &StatusWriter<DnsRecord>) -> Result<Action, Error> {
    let dns = client(ctx, r)?;
    let id = identity(r);
    let obj = DnsObject {
        id: &id,
        spec: &r.spec,
        status: r.status.clone().unwrap_or_default(),
        generation: r.metadata.generation,
        target: target(ctx, r).await?,
    };
    let out = dns_record::reconcile(dns, obj, false).await?;
    publish_all(ctx, &r.object_ref(&()), &out.events, "Reconcile").await;
    writer.apply(&out.status).await.map_err(Error::Kube)?;
    // Outside state is re-read at least every --drift-interval, as for guests.
    Ok(Action::requeue(
        out.requeue.min(ctx.drift.period().max(std::time::Duration::from_secs(1))),
    ))
}

async fn cleanup(r: &DnsRecord, ctx: &Context) -> Result<Action, Error> {
    let events = dns_record::cleanup(client(ctx, r)?, &identity(r), &r.spec).await?;
    publish_all(ctx, &r.object_ref(&()), &events, "Delete").await;
    Ok(Action::await_change())
}

pub fn error_policy(obj: Arc<DeserializeGuard<DnsRecord>>, err: &Error, ctx: Arc<Context>) -> Action {
    shared_error_policy(obj.0.as_ref().ok().and_then(|r| r.uid()), err, &ctx)
}

/// The DnsRecords that publish this guest's addresses (for `Controller::watches`).
pub fn records_targeting(store: &Store<DeserializeGuard<DnsRecord>>, guest: &ProxmoxGuest) -> Vec<ObjectRef<DeserializeGuard<DnsRecord>>> {
    targeting(store, guest, |r: &DnsRecord| r.spec.target.as_ref().map(|t| t.name.as_str()))
}
