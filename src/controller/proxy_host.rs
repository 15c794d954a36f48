//! ProxyHost controller glue: finalizer, target lookup, status, events.
//! The logic lives in `reconcile::proxy_host`.

use std::{sync::Arc, time::Instant};

use kube::{
    Api, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
        reflector::{ObjectRef, Store},
    },
};

use super::{
    context::Context,
    shared::{Error, StatusWriter, error_policy as shared_error_policy, publish_all, report_error},
};
use crate::{
    api::{PROXY_FINALIZER, ProxmoxGuest, ProxyHost},
    metrics::{ErrorLabels, KindLabels},
    reconcile::{
        ReconcileError,
        proxmox_guest::GuestIdentity,
        proxy_host::{self, ProxyObject},
    },
};

const KIND: &str = "ProxyHost";

pub async fn reconcile(obj: Arc<DeserializeGuard<ProxyHost>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let record = match &obj.0 {
        Ok(r) => r.clone(),
        Err(invalid) => return Err(super::shared::invalid_object::<ProxyHost>(&ctx, invalid).await),
    };
    let started = Instant::now();
    ctx.metrics.reconciles.get_or_create(&KindLabels { kind: KIND }).inc();
    let ns = record.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ProxyHost> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, PROXY_FINALIZER, Arc::new(record.clone()), |event| async {
        match event {
            FinalizerEvent::Apply(r) => apply(&r, &ctx, &api).await,
            FinalizerEvent::Cleanup(r) => cleanup(&r, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&KindLabels { kind: KIND })
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.backoff.reset(&record.uid().unwrap_or_default()),
        Err(e) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: KIND,
                    error: e.category(),
                })
                .inc();
            report_error(&record, record.status.clone(), &ctx, &api, e).await;
        }
    }
    result
}

fn identity(r: &ProxyHost) -> GuestIdentity {
    GuestIdentity::new(&r.namespace().unwrap_or_default(), &r.name_any(), r.uid().as_deref())
}

fn client<'a>(ctx: &'a Context, r: &ProxyHost) -> Result<&'a crate::providers::npm::Npm, ReconcileError> {
    ctx.proxy.get(&r.spec.provider).ok_or_else(|| {
        ReconcileError::Config(format!(
            "spec.provider {:?} names no endpoint in the config's proxy: section",
            r.spec.provider
        ))
    })
}

/// The target guest's addresses (`None` while it does not exist).
async fn target_ips(ctx: &Context, r: &ProxyHost) -> Result<Option<Vec<String>>, Error> {
    let Some(t) = &r.spec.target else { return Ok(None) };
    let guests: Api<ProxmoxGuest> = Api::namespaced(ctx.client.clone(), &r.namespace().unwrap_or_default());
    Ok(guests
        .get_opt(&t.name)
        .await
        .map_err(Error::Kube)?
        .map(|g| g.status.map(|s| s.ips).unwrap_or_default()))
}

async fn apply(r: &ProxyHost, ctx: &Context, api: &Api<ProxyHost>) -> Result<Action, Error> {
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
    StatusWriter::new(api.clone(), r.name_any(), r.status.as_ref())
        .apply(&out.status)
        .await
        .map_err(Error::Kube)?;
    Ok(Action::requeue(out.requeue))
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
    let ns = guest.namespace();
    let name = guest.name_any();
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|r| r.namespace() == ns && r.spec.target.as_ref().is_some_and(|t| t.name == name))
        .map(|r| ObjectRef::new(&r.name_any()).within(&r.namespace().unwrap_or_default()))
        .collect()
}
