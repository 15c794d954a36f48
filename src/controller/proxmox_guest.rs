//! ProxmoxGuest controller glue: finalizer, status via server-side apply,
//! events, error policy. The logic lives in `reconcile::proxmox_guest`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{
        controller::Action,
        events::{Event, EventType},
        finalizer::{Event as FinalizerEvent, finalizer},
    },
};

use super::context::Context;
use crate::{
    api::{self, ConditionState, FIELD_MANAGER, GUEST_FINALIZER, ProxmoxGuest, ProxmoxGuestStatus},
    config::SecretString,
    metrics::{ErrorLabels, KindLabels},
    reconcile::{
        EventNote, ReconcileError, StatusSink,
        proxmox_guest::{self, CleanupOutcome, GuestCtx, GuestIdentity, GuestObject},
    },
};

const KIND: &str = "ProxmoxGuest";

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
    /// Not a failure: deletion waits for a Proxmox task.
    #[error("deletion in progress; checking again in {0:?}")]
    CleanupInProgress(Duration),
}

impl Error {
    fn category(&self) -> &'static str {
        match self {
            Error::Reconcile(e) => e.category(),
            Error::Kube(_) => "KubernetesApi",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "Finalizer",
            },
            Error::InvalidObject(_) => "InvalidObject",
            Error::CleanupInProgress(_) => "CleanupInProgress",
        }
    }

    fn in_progress(&self) -> Option<Duration> {
        match self {
            Error::CleanupInProgress(d) => Some(*d),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(Error::CleanupInProgress(d)) => Some(*d),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_transient(&self) -> bool {
        match self {
            Error::Reconcile(e) => e.is_transient(),
            Error::Kube(_) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_transient(),
                _ => true,
            },
            Error::InvalidObject(_) => false,
            Error::CleanupInProgress(_) => true,
        }
    }
}

/// Writes status by server-side apply, and only when it changed.
pub struct KubeStatus {
    api: Api<ProxmoxGuest>,
    name: String,
    last: std::sync::Mutex<Option<ProxmoxGuestStatus>>,
}

impl KubeStatus {
    pub fn new(api: Api<ProxmoxGuest>, name: String, current: Option<ProxmoxGuestStatus>) -> Self {
        Self {
            api,
            name,
            last: std::sync::Mutex::new(current),
        }
    }

    pub async fn apply(&self, status: &ProxmoxGuestStatus) -> Result<(), kube::Error> {
        if self.last.lock().expect("status lock").as_ref() == Some(status) {
            return Ok(());
        }
        let patch = serde_json::json!({
            "apiVersion": format!("{}/{}", api::GROUP, api::VERSION),
            "kind": KIND,
            "status": status,
        });
        self.api
            .patch_status(&self.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
            .await?;
        *self.last.lock().expect("status lock") = Some(status.clone());
        Ok(())
    }
}

impl StatusSink<ProxmoxGuestStatus> for KubeStatus {
    async fn save(&self, status: &ProxmoxGuestStatus) -> Result<(), String> {
        self.apply(status).await.map_err(|e| e.to_string())
    }
}

async fn publish(ctx: &Context, reference: &ObjectReference, note: &EventNote, action: &str) {
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
    let guest = match &obj.0 {
        Ok(g) => g.clone(),
        Err(invalid) => {
            let reference = ObjectReference {
                api_version: Some(format!("{}/{}", api::GROUP, api::VERSION)),
                kind: Some(KIND.into()),
                name: invalid.metadata.name.clone(),
                namespace: invalid.metadata.namespace.clone(),
                uid: invalid.metadata.uid.clone(),
                ..Default::default()
            };
            let note = EventNote::warning("InvalidObject", format!("cannot read the resource: {}", invalid.error));
            publish(&ctx, &reference, &note, "Reconcile").await;
            return Err(Error::InvalidObject(invalid.error.clone()));
        }
    };
    let started = Instant::now();
    ctx.metrics.reconciles.get_or_create(&KindLabels { kind: KIND }).inc();
    let ns = guest.namespace().unwrap_or_else(|| "default".into());
    let api: Api<ProxmoxGuest> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, GUEST_FINALIZER, Arc::new(guest.clone()), |event| async {
        match event {
            FinalizerEvent::Apply(g) => apply(&g, &ctx, &api).await,
            FinalizerEvent::Cleanup(g) => cleanup(&g, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_duration
        .get_or_create(&KindLabels { kind: KIND })
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => ctx.backoff.reset(&guest.uid().unwrap_or_default()),
        Err(e) if e.in_progress().is_some() => {}
        Err(e) => {
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    kind: KIND,
                    error: e.category(),
                })
                .inc();
            report_error(&guest, &ctx, &api, e).await;
        }
    }
    result
}

fn object_parts(g: &ProxmoxGuest) -> (GuestIdentity, String) {
    let id = GuestIdentity::new(&g.namespace().unwrap_or_default(), &g.name_any(), g.uid().as_deref());
    (id, g.spec.cluster.clone())
}

fn guest_ctx<'a>(ctx: &'a Context, cluster: &'a str) -> Result<GuestCtx<'a, crate::providers::pve::PveClient>, ReconcileError> {
    let api = ctx.pve.get(cluster).ok_or_else(|| {
        ReconcileError::Config(format!(
            "spec.cluster {cluster:?} names no endpoint in the config's proxmox: section"
        ))
    })?;
    Ok(GuestCtx {
        api,
        cache: &ctx.cache,
        drift: &ctx.drift,
        cluster,
        dry_run: false,
    })
}

async fn apply(g: &ProxmoxGuest, ctx: &Context, api: &Api<ProxmoxGuest>) -> Result<Action, Error> {
    let (id, cluster) = object_parts(g);
    let gctx = guest_ctx(ctx, &cluster)?;
    let sink = KubeStatus::new(api.clone(), g.name_any(), g.status.clone());
    let obj = GuestObject {
        id: &id,
        spec: &g.spec,
        status: g.status.clone().unwrap_or_default(),
        generation: g.metadata.generation,
        ci_password: ci_password(ctx, g).await?,
    };
    let out = proxmox_guest::reconcile(&gctx, obj, &sink).await?;
    ctx.track_task(&id.uid, out.status.current_task.is_some());
    let reference = g.object_ref(&());
    for e in &out.events {
        publish(ctx, &reference, e, "Reconcile").await;
    }
    sink.apply(&out.status).await.map_err(Error::Kube)?;
    Ok(Action::requeue(out.requeue))
}

async fn cleanup(g: &ProxmoxGuest, ctx: &Context, api: &Api<ProxmoxGuest>) -> Result<Action, Error> {
    let (id, cluster) = object_parts(g);
    let gctx = guest_ctx(ctx, &cluster)?;
    let sink = KubeStatus::new(api.clone(), g.name_any(), g.status.clone());
    let obj = GuestObject {
        id: &id,
        spec: &g.spec,
        status: g.status.clone().unwrap_or_default(),
        generation: g.metadata.generation,
        ci_password: None,
    };
    let reference = g.object_ref(&());
    match proxmox_guest::cleanup(&gctx, obj, &sink).await? {
        CleanupOutcome::Done(events) => {
            ctx.track_task(&id.uid, false);
            for e in &events {
                publish(ctx, &reference, e, "Delete").await;
            }
            Ok(Action::await_change())
        }
        CleanupOutcome::Requeue { status, events, after } => {
            ctx.track_task(&id.uid, status.current_task.is_some());
            for e in &events {
                publish(ctx, &reference, e, "Delete").await;
            }
            sink.apply(&status).await.map_err(Error::Kube)?;
            // Returning Ok would remove the finalizer; the guest is not gone yet.
            Err(Error::CleanupInProgress(after))
        }
        CleanupOutcome::Blocked { status, events } => {
            for e in &events {
                publish(ctx, &reference, e, "Delete").await;
            }
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

/// Put the error where people look: a condition and one Warning event.
async fn report_error(g: &ProxmoxGuest, ctx: &Context, api: &Api<ProxmoxGuest>, e: &Error) {
    let transient = e.is_transient();
    let message = e.to_string();
    let mut status = g.status.clone().unwrap_or_default();
    let (degraded, stalled) = if transient { (true, false) } else { (false, true) };
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
            degraded,
            e.category(),
            if degraded { message.clone() } else { String::new() },
        ),
        ConditionState::new(
            api::CONDITION_STALLED,
            stalled,
            e.category(),
            if stalled { message.clone() } else { String::new() },
        ),
    ];
    status.conditions = api::merge_conditions(
        &status.conditions,
        &wanted,
        g.metadata.generation,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
    );
    let sink = KubeStatus::new(api.clone(), g.name_any(), g.status.clone());
    if let Err(err) = sink.apply(&status).await {
        tracing::warn!(error = %err, "writing error status");
    }
    publish(ctx, &g.object_ref(&()), &EventNote::warning(e.category(), message), "Reconcile").await;
}

pub fn error_policy(obj: Arc<DeserializeGuard<ProxmoxGuest>>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = match &obj.0 {
        Ok(g) => g.uid().unwrap_or_default(),
        Err(_) => return Action::await_change(),
    };
    if let Some(after) = err.in_progress() {
        return Action::requeue(after);
    }
    if err.is_transient() {
        let delay = ctx.backoff.next(&key);
        tracing::info!(error = %err, ?delay, "transient error; retrying");
        Action::requeue(delay)
    } else {
        // A person must act; the spec change will trigger us. Look again slowly anyway
        // in case the outside cause (missing template, permissions) was fixed.
        tracing::warn!(error = %err, "needs attention");
        Action::requeue(Duration::from_secs(600))
    }
}
