//! ProxmoxGuest as both front ends drive it.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{GuestCtx, GuestObject, Outcome, Plan};
use crate::{
    api::{self, ProxmoxGuest, ProxmoxGuestStatus},
    config::SecretString,
    providers::pve::PveClient,
    reconcile::{
        Change, Cleanup, Env, ReconcileError, StatusSink,
        kind::{Fut, Kind, Lookup, Pass, SecretValue, generation, namespace, ready_cells},
        ownership::Identity,
    },
};

impl ProxmoxGuest {
    /// Whether the guest may still be created (so its creation inputs matter).
    fn may_create(&self) -> bool {
        self.status
            .as_ref()
            .is_none_or(|s| matches!(s.state.as_deref(), None | Some("absent")))
    }

    /// The cloud-init password, read only while the guest may still be created.
    async fn ci_password(&self, lookup: &dyn Lookup) -> Result<Option<SecretString>, ReconcileError> {
        let Some(r) = self.spec.cloud_init.as_ref().and_then(|c| c.password_secret_ref.as_ref()) else {
            return Ok(None);
        };
        if !self.may_create() {
            return Ok(None);
        }
        match lookup.secret(namespace(self), r).await? {
            SecretValue::Found(v) => Ok(Some(SecretString::new(v.expose().trim()))),
            SecretValue::Missing(why) => Err(ReconcileError::Config(format!("cloudInit.passwordSecretRef: {why}"))),
            // The one-shot commands read no Secrets: the guest is made without a password.
            SecretValue::NotRead => Ok(None),
        }
    }
}

impl<'a> GuestCtx<'a, PveClient> {
    /// A guest of `cluster`'s view of the shared environment.
    pub fn new(env: Env<'a>, cluster: &'a str) -> Result<Self, ReconcileError> {
        Ok(GuestCtx {
            api: env.providers.pve(cluster)?,
            cache: env.cache,
            drift: env.drift,
            cluster,
            on_takedown: None,
        })
    }
}

/// The guest's view of the shared environment; `on_takedown` is told before
/// the operator itself takes the guest down (when monitors run).
fn guest_ctx<'a>(
    env: Env<'a>,
    g: &'a ProxmoxGuest,
    on_takedown: &'a (dyn Fn() + Send + Sync),
) -> Result<GuestCtx<'a, PveClient>, ReconcileError> {
    let mut ctx = GuestCtx::new(env, &g.spec.cluster)?;
    ctx.on_takedown = env.monitors.is_some().then_some(on_takedown);
    Ok(ctx)
}

/// Monitors of the guest stay quiet while the operator itself takes it down:
/// from just before the task starts until it is seen finished.
fn takedown<'a>(env: Env<'a>, g: &'a ProxmoxGuest) -> impl Fn() + Send + Sync + 'a {
    move || {
        if let Some(m) = env.monitors {
            m.scheduler()
                .guest_busy(namespace(g), g.metadata.name.as_deref().unwrap_or(""), true);
        }
    }
}

fn is_true(conditions: &[Condition], type_: &str) -> bool {
    api::find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

impl Kind for ProxmoxGuest {
    type Status = ProxmoxGuestStatus;
    type Plan = Plan;
    /// The cloud-init password, when the guest is still to be made with one.
    type Inputs = Option<SecretString>;
    const KIND: &'static str = "ProxmoxGuest";
    const FINALIZER: &'static str = api::GUEST_FINALIZER;
    const TRANSIENT_RETRIES: u32 = 5;

    fn current_status(&self) -> Option<ProxmoxGuestStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: ProxmoxGuestStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut ProxmoxGuestStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, _env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Option<SecretString>> {
        Box::pin(self.ci_password(lookup))
    }

    fn plan<'a>(&'a self, env: Env<'a>, ci_password: &'a Option<SecretString>) -> Fut<'a, Outcome> {
        Box::pin(async move {
            let (id, spec) = (Identity::of(self), self.effective_spec());
            let down = takedown(env, self);
            let ctx = guest_ctx(env, self, &down)?;
            super::plan(&ctx, self.object(&id, &spec, ci_password.clone())).await
        })
    }

    fn reconcile<'a>(
        &'a self,
        env: Env<'a>,
        ci_password: Option<SecretString>,
        sink: &'a dyn StatusSink<ProxmoxGuestStatus>,
    ) -> Fut<'a, Outcome> {
        Box::pin(async move {
            let (id, spec) = (Identity::of(self), self.effective_spec());
            let down = takedown(env, self);
            let ctx = guest_ctx(env, self, &down)?;
            super::reconcile(&ctx, self.object(&id, &spec, ci_password), sink).await
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, sink: &'a dyn StatusSink<ProxmoxGuestStatus>) -> Fut<'a, Cleanup<ProxmoxGuestStatus>> {
        Box::pin(async move {
            let (id, spec) = (Identity::of(self), self.effective_spec());
            let down = takedown(env, self);
            let ctx = guest_ctx(env, self, &down)?;
            super::cleanup(&ctx, self.object(&id, &spec, None), sink).await
        })
    }

    fn changes(out: &Outcome) -> Vec<Change> {
        let p = &out.plan;
        let mut changes: Vec<Change> = p.blocked.iter().map(Change::blocked).collect();
        changes.extend(p.actions.iter().map(|a| Change::new(a.symbol(), a.to_string())));
        changes.extend(p.pending.iter().map(|c| {
            let to = c.desired.as_ref().map_or(String::new(), |d| format!(" → {d}"));
            Change::new('?', format!("{} ({:?}){to}", c.field, c.class))
        }));
        changes
    }

    /// Until Ready or Stalled or nothing is left to do; a guest whose DNS
    /// record or proxy host needs its address waits for the agent to report one.
    fn next_pass(&self, out: &Outcome) -> Pass {
        let s = &out.status;
        let ready = is_true(&s.conditions, api::CONDITION_READY);
        let publishes = self.spec.dns.is_some() || self.spec.proxy.is_some();
        let awaiting_address = publishes && s.state.as_deref() == Some("running") && s.ips.is_empty();
        if ready && awaiting_address {
            return Pass::UntilDeadline(out.requeue.min(Duration::from_secs(10)));
        }
        let stalled = is_true(&s.conditions, api::CONDITION_STALLED);
        let settled = out.plan.actions.is_empty() && s.current_task.is_none() && out.requeue > Duration::from_secs(5);
        match ready || stalled || settled {
            true => Pass::Done,
            false => Pass::Again(out.requeue.min(Duration::from_millis(250))),
        }
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "VMID", "NODE", "STATE", "IP", "READY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &ProxmoxGuestStatus, error: Option<&str>) -> Vec<String> {
        let mut row = vec![
            name.to_string(),
            s.vmid.map_or("-".into(), |v| v.to_string()),
            s.node.clone().unwrap_or_else(|| "-".into()),
            s.state.clone().unwrap_or_else(|| "-".into()),
            s.ips.first().cloned().unwrap_or_else(|| "-".into()),
        ];
        row.extend(ready_cells(&s.conditions, error));
        row
    }
}

impl ProxmoxGuest {
    fn object<'a>(&self, id: &'a Identity, spec: &'a api::ProxmoxGuestSpec, ci_password: Option<SecretString>) -> GuestObject<'a> {
        GuestObject {
            id,
            spec,
            status: self.status.clone().unwrap_or_default(),
            generation: generation(self),
            ci_password,
        }
    }
}
