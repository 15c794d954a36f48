//! ProxmoxGuest: observe the guest, plan, apply, report.

mod actions;
pub mod addresses;
pub mod children;
mod conditions;
pub mod consistency;
mod creation;
mod deletion;
pub mod desired;
pub mod exported;
mod kind;
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
pub use observe::{observed_from, read_config, read_firewall};
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

pub type Outcome = super::Outcome<ProxmoxGuestStatus, Plan>;

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

/// What `plan` shows: the guest observed read-only and planned. It allocates
/// no VMID (0 stands for "allocated at apply"), starts and saves nothing.
pub async fn plan<P: PveApi>(ctx: &GuestCtx<'_, P>, obj: GuestObject<'_>) -> Result<Outcome, ReconcileError> {
    let GuestObject {
        id,
        spec,
        mut status,
        generation,
        ci_password,
    } = obj;
    if spec.mode == ManagementMode::Paused {
        return Ok(paused(status, generation));
    }
    consistent(spec)?;
    let mut events = vec![];
    let force_read = match task_step(ctx, &mut status, generation, &mut events).await? {
        TaskSeen::Running(out) => return Ok(*out),
        TaskSeen::Failed(f) => return Err(f.error()),
        TaskSeen::Finished => true,
        TaskSeen::None => needs_read(&status, generation),
    };
    let seen = observe_guest(ctx, id, spec, &mut status, force_read, &mut events).await?;
    let inputs = match seen.creating() {
        true => checked(ctx, spec, place(ctx, &id.uid, spec, &seen.resources, &status).await?).await?,
        false => CreationInputs::default(),
    };
    let vmid = spec.vmid.or(status.vmid).or(Some(0));
    let input = DecideInput {
        id,
        spec,
        generation,
        ci_password: ci_password.as_ref(),
        vmid,
    };
    Ok(match decide(ctx, input, seen, inputs, status, events).await? {
        Decided::Stop(out) => *out,
        Decided::Planned(p) => finish(ctx, spec, generation, *p),
    })
}

/// Fields that must agree, checked before any call: nothing is written for
/// (nor half-made from) a spec the outside systems would refuse or misread.
fn consistent(spec: &ProxmoxGuestSpec) -> Result<(), ReconcileError> {
    match consistency::problems(spec) {
        p if p.is_empty() => Ok(()),
        p => Err(ReconcileError::Config(p.join("; "))),
    }
}

/// One reconcile of a guest that is not being deleted: poll the task in
/// flight, observe, claim a VMID and node for a new guest (saved before the
/// create call), plan, and apply in order until a task starts.
pub async fn reconcile<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
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
    if spec.mode == ManagementMode::Paused {
        return Ok(paused(status, generation));
    }
    consistent(spec)?;
    let mut events = vec![];
    let force_read = match task_step(ctx, &mut status, generation, &mut events).await? {
        TaskSeen::Running(out) => return Ok(*out),
        TaskSeen::Failed(f) => return task_failed(ctx, spec, status, generation, f, sink).await,
        TaskSeen::Finished => true,
        TaskSeen::None => needs_read(&status, generation),
    };
    let seen = observe_guest(ctx, id, spec, &mut status, force_read, &mut events).await?;
    let mut inputs = CreationInputs::default();
    if seen.creating() {
        inputs = place(ctx, &id.uid, spec, &seen.resources, &status).await?;
        hold_node(ctx, &id.uid, spec, &inputs);
        inputs = checked(ctx, spec, inputs).await?;
        if inputs.blocked.is_none() && inputs.node.is_some() {
            claim_vmid(ctx, spec, &seen.resources, &mut status, sink).await?;
        }
    }
    let vmid = spec.vmid.or(status.vmid);
    let input = DecideInput {
        id,
        spec,
        generation,
        ci_password: ci_password.as_ref(),
        vmid,
    };
    let planned = match decide(ctx, input, seen, inputs, status, events).await? {
        Decided::Stop(out) => return Ok(*out),
        Decided::Planned(p) if p.plan.actions.is_empty() => return Ok(finish(ctx, spec, generation, *p)),
        Decided::Planned(p) => *p,
    };
    let target = ApplyTarget {
        uid: &id.uid,
        spec,
        guest: planned.guest.as_ref(),
        vmid,
        generation,
    };
    apply_plan(ctx, target, planned.plan, planned.status, sink, planned.events).await
}

fn paused(mut status: ProxmoxGuestStatus, generation: Option<i64>) -> Outcome {
    let wanted = paused_conditions(&status);
    set_conditions(&mut status, generation, &wanted);
    Outcome {
        status,
        plan: Plan::default(),
        events: vec![],
        requeue: RESYNC,
    }
}

/// A new spec, or a guest not Ready yet, reads the full config.
fn needs_read(status: &ProxmoxGuestStatus, generation: Option<i64>) -> bool {
    status.observed_generation != generation || !is_ready(status)
}

/// The guest as found: the cluster snapshot, ours (config read when due) or a foreign one at our VMID.
struct Seen {
    resources: std::sync::Arc<Vec<ClusterResource>>,
    guest: Option<ObservedGuest>,
    foreign: Option<ObservedGuest>,
}

impl Seen {
    fn creating(&self) -> bool {
        self.guest.is_none() && self.foreign.is_none()
    }
}

/// Find our guest: by tag in the bulk snapshot, else by the VMID we recorded;
/// read its config (and firewall) when forced or a drift check is due.
async fn observe_guest<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    id: &Identity,
    spec: &ProxmoxGuestSpec,
    status: &mut ProxmoxGuestStatus,
    force_read: bool,
    events: &mut Vec<EventNote>,
) -> Result<Seen, ReconcileError> {
    let resources = ctx
        .cache
        .resources(ctx.cluster, ctx.api)
        .await
        .map_err(|e| ReconcileError::pve("listing cluster resources", e))?;
    let mut found = identify(ctx, id, spec, status, &resources).await?;
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
    Ok(Seen { resources, guest, foreign })
}

/// The resource's side of a decision.
struct DecideInput<'a> {
    id: &'a Identity,
    spec: &'a ProxmoxGuestSpec,
    generation: Option<i64>,
    ci_password: Option<&'a crate::config::SecretString>,
    vmid: Option<u32>,
}

/// A plan with the status observed so far, not yet applied or settled.
struct Planned {
    status: ProxmoxGuestStatus,
    plan: Plan,
    events: Vec<EventNote>,
    guest: Option<ObservedGuest>,
    /// When to come back for addresses the agent has not reported yet.
    ask_addresses_in: Option<Duration>,
}

enum Decided {
    /// Nothing to plan: rolled back, or blocked until a person acts.
    Stop(Box<Outcome>),
    Planned(Box<Planned>),
}

/// Plan from what was observed and put the observed facts into status.
async fn decide<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    input: DecideInput<'_>,
    seen: Seen,
    inputs: CreationInputs,
    mut status: ProxmoxGuestStatus,
    mut events: Vec<EventNote>,
) -> Result<Decided, ReconcileError> {
    let DecideInput {
        id,
        spec,
        generation,
        ci_password,
        vmid,
    } = input;
    // One safety snapshot per spec generation: the name carries the generation.
    let snap_prefix = format!("hlo-g{}-", generation.unwrap_or(0));
    let snapshot_name = format!("{snap_prefix}{}", jiff::Timestamp::now().strftime("%Y%m%d%H%M%S"));
    let snapshot_taken = status.last_snapshot.as_deref().is_some_and(|s| s.starts_with(&snap_prefix));
    if rolled_back(&status, generation) {
        // A change of this generation failed and was rolled back: wait for a new spec.
        return Ok(Decided::Stop(Box::new(Outcome {
            status,
            plan: Plan::default(),
            events,
            requeue: RESYNC,
        })));
    }
    let plan = match inputs.blocked {
        Some(b) => Plan {
            blocked: Some(b),
            ..Default::default()
        },
        None => plan::plan(&PlanInput {
            spec,
            id,
            guest: seen.guest.as_ref(),
            foreign: seen.foreign.as_ref(),
            vmid,
            placement: inputs.node.as_deref(),
            source: inputs.source.as_ref(),
            ci_password: ci_password.map(|s| s.expose()),
            snapshot_name: (!snapshot_taken).then_some(snapshot_name.as_str()),
        }),
    };
    status.observed_generation = generation;
    status.pending_changes = plan.pending.clone();
    let ask_addresses_in = observe_facts(ctx, &id.uid, seen.guest.as_ref(), inputs.node, &mut status).await;
    if let Some(b) = &plan.blocked {
        set_conditions(&mut status, generation, &stalled_conditions(b));
        events.push(EventNote::warning(b.reason, b.message.clone()));
        return Ok(Decided::Stop(Box::new(Outcome {
            status,
            plan,
            events,
            requeue: RESYNC,
        })));
    }
    Ok(Decided::Planned(Box::new(Planned {
        status,
        plan,
        events,
        guest: seen.guest,
        ask_addresses_in,
    })))
}

/// Observed facts into status: VMID, node, power state, addresses.
async fn observe_facts<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    guest: Option<&ObservedGuest>,
    placement: Option<String>,
    status: &mut ProxmoxGuestStatus,
) -> Option<Duration> {
    match guest {
        Some(g) => {
            status.vmid = Some(g.vmid);
            status.node = Some(g.node.clone());
            status.state = Some(if g.running { "running" } else { "stopped" }.into());
            observe_addresses(ctx, uid, g, status).await
        }
        None => {
            status.state = Some("absent".into());
            status.node = placement.or(status.node.take());
            status.ips.clear();
            status.interfaces.clear();
            None
        }
    }
}

/// Nothing (more) to apply: conditions from what was seen, and when to look again.
fn finish<P: PveApi>(ctx: &GuestCtx<'_, P>, spec: &ProxmoxGuestSpec, generation: Option<i64>, p: Planned) -> Outcome {
    let Planned {
        mut status,
        plan,
        events,
        guest,
        ask_addresses_in,
    } = p;
    set_conditions(&mut status, generation, &settled_conditions(spec, guest.as_ref(), &plan));
    let requeue = if guest.is_none() && plan.actions.is_empty() {
        VERIFY_SOON
    } else {
        // Come back for the next drift check when it is due sooner than a
        // resync, or when the agent is worth asking for still unknown addresses.
        let drift = RESYNC.min(ctx.drift.period().max(VERIFY_SOON));
        ask_addresses_in.map_or(drift, |d: Duration| drift.min(d.max(VERIFY_SOON)))
    };
    Outcome {
        status,
        plan,
        events,
        requeue,
    }
}

#[cfg(test)]
mod plan_tests;
