//! The reconcile every kind shares under `run`: invalid objects, the
//! finalizer around the kind's reconcile and cleanup, inputs resolved from the
//! API server, events, status through the status subresource, metrics,
//! backoff, and errors put into conditions and events. What a kind needs of
//! Kubernetes beyond that (owned children, metrics) is its [`Controlled`] hook.

use std::sync::Arc;

use futures::future::BoxFuture;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};

use super::{
    context::Context,
    lookup::ApiLookup,
    shared::{Error, invalid_object, publish_all, report_error},
    status::StatusWriter,
};
use crate::{
    api,
    metrics::{ErrorLabels, KindLabels},
    reconcile::{Cleanup, Outcome, ReconcileError, kind::Kind},
};

/// One reconcile's result as the hooks see it.
pub type Reconciled<K> = Result<Outcome<<K as Kind>::Status, <K as Kind>::Plan>, ReconcileError>;

/// What a kind does with Kubernetes around the shared reconcile.
pub trait Controlled: Kind {
    /// After the kind's reconcile, before its events and status go out.
    fn after_reconcile<'a>(&'a self, _ctx: &'a Context, _result: &'a mut Reconciled<Self>) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    /// Before the kind's cleanup (`Err` ends this pass: children still going).
    fn before_cleanup<'a>(&'a self, _ctx: &'a Context) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async { Ok(()) })
    }

    /// After a cleanup step.
    fn after_cleanup(&self, _ctx: &Context, _step: &Cleanup<Self::Status>) {}
}

/// The controller's reconcile of kind `K`.
pub async fn reconcile<K: Controlled>(obj: Arc<DeserializeGuard<K>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let object = match &obj.0 {
        Ok(o) => o.clone(),
        Err(invalid) => return Err(invalid_object::<K>(&ctx, invalid).await),
    };
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.get_or_create(&KindLabels { kind: K::KIND }).inc();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_else(|| "default".into()));
    let writer = StatusWriter::new(api.clone(), object.name_any(), object.current_status().as_ref());
    let result = finalizer(&api, K::FINALIZER, Arc::new(object.clone()), |event| async {
        match event {
            FinalizerEvent::Apply(o) => apply(&*o, &ctx, &writer).await,
            FinalizerEvent::Cleanup(o) => cleanup(&*o, &ctx, &writer).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&KindLabels { kind: K::KIND })
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.backoff.reset(&object.uid().unwrap_or_default()),
        Err(e) if e.in_progress().is_some() => {}
        Err(e) => {
            let labels = ErrorLabels {
                kind: K::KIND,
                error: e.category(),
            };
            ctx.metrics.reconcile_errors.get_or_create(&labels).inc();
            report_error(&object, &writer, &ctx, e).await;
        }
    }
    result
}

async fn apply<K: Controlled>(obj: &K, ctx: &Context, writer: &StatusWriter<K>) -> Result<Action, Error> {
    let env = ctx.env();
    let lookup = ApiLookup::new(ctx.client.clone(), ctx.guests.get().cloned());
    let mut result = match obj.resolve(env, &lookup).await {
        Ok(inputs) => obj.reconcile(env, inputs, writer).await,
        Err(e) => Err(e),
    };
    obj.after_reconcile(ctx, &mut result).await?;
    let out = result?;
    publish_all(ctx, &obj.object_ref(&()), &out.events, "Reconcile").await;
    if K::STATUS_FROM_OUTCOME {
        writer.apply(&out.status).await.map_err(Error::Kube)?;
    }
    Ok(Action::requeue(out.requeue))
}

async fn cleanup<K: Controlled>(obj: &K, ctx: &Context, writer: &StatusWriter<K>) -> Result<Action, Error> {
    obj.before_cleanup(ctx).await?;
    let step = obj.cleanup(ctx.env(), writer).await?;
    obj.after_cleanup(ctx, &step);
    let reference = obj.object_ref(&());
    match step {
        Cleanup::Done(events) => {
            publish_all(ctx, &reference, &events, "Delete").await;
            Ok(Action::await_change())
        }
        Cleanup::Requeue { status, events, after } => {
            publish_all(ctx, &reference, &events, "Delete").await;
            writer.apply(&status).await.map_err(Error::Kube)?;
            // Returning Ok would remove the finalizer; the outside object is not gone yet.
            Err(Error::CleanupInProgress(after))
        }
        Cleanup::Blocked { mut status, events } => {
            publish_all(ctx, &reference, &events, "Delete").await;
            writer.apply(&status).await.map_err(Error::Kube)?;
            let stalled = api::find_condition(K::conditions_mut(&mut status), api::CONDITION_STALLED);
            let message = stalled.map(|c| c.message.clone()).unwrap_or_default();
            Err(Error::Reconcile(ReconcileError::Config(message)))
        }
    }
}
