//! ProxmoxGuest: observe the guest, plan, apply, report.

mod actions;
pub mod addresses;
pub mod children;
mod conditions;
mod creation;
mod deletion;
pub mod desired;
mod observe;
pub mod plan;
pub mod references;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{self, ChangeClass, ConditionState, GuestType, ManagementMode, PowerState, ProxmoxGuestSpec, ProxmoxGuestStatus, TaskRef},
    providers::pve::{self, ClusterResource, GuestKind, PveApi, Upid},
};

use actions::*;
use conditions::*;
use creation::*;
pub use deletion::{CleanupOutcome, cleanup};
use observe::*;
pub use plan::{Action, Plan};
use plan::{Blocked, ObservedConfig, ObservedFirewall, ObservedGuest, PlanInput, ResolvedSource};

use super::{
    EventNote, POLL_TASK, RESYNC, ReconcileError, StatusSink, VERIFY_SOON,
    cache::{ClusterCache, DriftClock},
    ownership::Identity,
};

/// Everything one guest reconcile needs, none of it Kubernetes.
pub struct GuestCtx<'a, P: PveApi> {
    pub api: &'a P,
    pub cache: &'a ClusterCache,
    pub drift: &'a DriftClock,
    pub cluster: &'a str,
    /// Plan only: observe read-only, never allocate or write.
    pub dry_run: bool,
    /// Told just before a task that takes the guest down (reboot, shutdown,
    /// stop, rollback, delete) starts, so its monitors hold their alerts
    /// before the first check can fail.
    pub on_takedown: Option<&'a (dyn Fn() + Send + Sync)>,
}

impl<P: PveApi> GuestCtx<'_, P> {
    fn taking_down(&self) {
        if let Some(f) = self.on_takedown {
            f();
        }
    }
}

/// The resource as the reconciler sees it.
pub struct GuestObject<'a> {
    pub id: &'a Identity,
    pub spec: &'a ProxmoxGuestSpec,
    pub status: ProxmoxGuestStatus,
    pub generation: Option<i64>,
    /// Cloud-init password (resolved by the caller from the Secret), used at creation.
    pub ci_password: Option<crate::config::SecretString>,
}

pub struct Outcome {
    pub status: ProxmoxGuestStatus,
    pub plan: Plan,
    pub events: Vec<EventNote>,
    pub requeue: Duration,
}

fn kind_of(t: GuestType) -> GuestKind {
    match t {
        GuestType::Qemu => GuestKind::Qemu,
        GuestType::Lxc => GuestKind::Lxc,
    }
}

fn now() -> Time {
    Time(jiff::Timestamp::now())
}

fn set_conditions(status: &mut ProxmoxGuestStatus, generation: Option<i64>, wanted: &[ConditionState]) {
    status.conditions = api::merge_conditions(&status.conditions, wanted, generation, now());
}

/// One reconcile of a guest that is not being deleted.
pub async fn reconcile<P: PveApi, S: StatusSink<ProxmoxGuestStatus>>(
    ctx: &GuestCtx<'_, P>,
    obj: GuestObject<'_>,
    sink: &S,
) -> Result<Outcome, ReconcileError> {
    let GuestObject {
        id,
        spec,
        mut status,
        generation,
        ci_password,
    } = obj;
    let mut events = vec![];
    if spec.mode == ManagementMode::Paused {
        let wanted = paused_conditions(&status);
        set_conditions(&mut status, generation, &wanted);
        return Ok(Outcome {
            status,
            plan: Plan::default(),
            events,
            requeue: RESYNC,
        });
    }
    let mut force_read = status.observed_generation != generation || !is_ready(&status);

    // 1. A task in flight.
    if status.current_task.is_some() {
        force_read = true;
        if let Some(out) = poll_task(ctx, spec, &mut status, generation, sink, &mut events).await? {
            return Ok(out);
        }
    }

    // 2. Find our guest: by tag in the bulk snapshot, else by the VMID we recorded.
    let resources = ctx
        .cache
        .resources(ctx.cluster, ctx.api)
        .await
        .map_err(|e| ReconcileError::pve("listing cluster resources", e))?;
    let mut found = identify(ctx, id, spec, &status, &resources).await?;
    if let Identified::Foreign(f) = &found
        && spec.vmid.is_none()
        && status.vmid == Some(f.vmid)
    {
        // Someone took the VMID we had allocated before we created anything: allocate again.
        events.push(EventNote::warning(
            "VmidCollision",
            format!("VMID {} was taken by another guest; allocating a new one", f.vmid),
        ));
        status.vmid = None;
        found = Identified::None;
    }

    let (guest, foreign) = match found {
        Identified::Ours(mut g) => {
            if g.config.is_none() && (force_read || ctx.drift.due(&id.uid)) {
                g.config = Some(read_config(ctx.api, &g).await?);
            }
            if g.config.is_some() {
                ctx.drift.mark_read(&id.uid);
                if spec.firewall.is_some() {
                    g.firewall = Some(read_firewall(ctx.api, &g).await?);
                }
            }
            (Some(g), None)
        }
        Identified::Foreign(f) => (None, Some(f)),
        Identified::None => (None, None),
    };

    // 3. Creation inputs: source, VMID, node. An allocated VMID stays ours
    // across failed attempts (it is in status) until the guest exists.
    let (source, placement, blocked) = if guest.is_none() && foreign.is_none() {
        creation_inputs(ctx, &id.uid, spec, &resources, &mut status, sink).await?
    } else {
        (None, None, None)
    };
    // A plan (dry run) never allocates: 0 stands for "allocated at apply".
    let vmid = spec.vmid.or(status.vmid).or(ctx.dry_run.then_some(0));
    // One safety snapshot per spec generation: the name carries the generation.
    let snap_prefix = format!("hlo-g{}-", generation.unwrap_or(0));
    let snapshot_name = format!("{snap_prefix}{}", jiff::Timestamp::now().strftime("%Y%m%d%H%M%S"));
    let snapshot_taken = status.last_snapshot.as_deref().is_some_and(|s| s.starts_with(&snap_prefix));
    if rolled_back(&status, generation) {
        // A change of this generation failed and was rolled back: wait for a new spec.
        return Ok(Outcome {
            status,
            plan: Plan::default(),
            events,
            requeue: RESYNC,
        });
    }
    let plan = match blocked {
        Some(b) => Plan {
            blocked: Some(b),
            ..Default::default()
        },
        None => plan::plan(&PlanInput {
            spec,
            id,
            guest: guest.as_ref(),
            foreign: foreign.as_ref(),
            vmid,
            placement: placement.as_deref(),
            source: source.as_ref(),
            ci_password: ci_password.as_ref().map(|s| s.expose()),
            snapshot_name: (!snapshot_taken).then_some(snapshot_name.as_str()),
        }),
    };

    // Observed facts into status.
    let mut ask_addresses_in = None;
    status.observed_generation = generation;
    status.pending_changes = plan.pending.clone();
    match &guest {
        Some(g) => {
            status.vmid = Some(g.vmid);
            status.node = Some(g.node.clone());
            status.state = Some(if g.running { "running" } else { "stopped" }.into());
            ask_addresses_in = observe_addresses(ctx, &id.uid, g, &mut status).await;
        }
        None => {
            status.state = Some("absent".into());
            status.node = placement.clone().or(status.node.take());
            status.ips.clear();
            status.interfaces.clear();
        }
    }

    if let Some(b) = &plan.blocked {
        set_conditions(&mut status, generation, &stalled_conditions(b));
        events.push(EventNote::warning(b.reason, b.message.clone()));
        return Ok(Outcome {
            status,
            plan,
            events,
            requeue: RESYNC,
        });
    }
    if ctx.dry_run || plan.actions.is_empty() {
        set_conditions(&mut status, generation, &settled_conditions(spec, guest.as_ref(), &plan));
        let requeue = if guest.is_none() && plan.actions.is_empty() {
            VERIFY_SOON
        } else {
            // Come back for the next drift check when it is due sooner than a
            // resync, or when the agent is worth asking for still unknown addresses.
            let drift = RESYNC.min(ctx.drift.period().max(VERIFY_SOON));
            ask_addresses_in.map_or(drift, |d: Duration| drift.min(d.max(VERIFY_SOON)))
        };
        return Ok(Outcome {
            status,
            plan,
            events,
            requeue,
        });
    }

    // 4. Apply, in order, until a task starts.
    let target = ApplyTarget {
        uid: &id.uid,
        spec,
        guest: guest.as_ref(),
        vmid,
        generation,
    };
    apply_plan(ctx, target, plan, status, sink, events).await
}

#[cfg(test)]
mod plan_tests;
