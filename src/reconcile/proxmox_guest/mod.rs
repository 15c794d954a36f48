//! ProxmoxGuest: observe the guest, plan, apply, report.

pub mod addresses;
pub mod children;
pub mod desired;
pub mod identity;
pub mod plan;
pub mod references;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{
    api::{self, ChangeClass, ConditionState, GuestType, ManagementMode, PowerState, ProxmoxGuestSpec, ProxmoxGuestStatus, TaskRef},
    providers::pve::{self, ClusterResource, GuestKind, PveApi, Upid},
};

pub use identity::GuestIdentity;
pub use plan::{Action, Plan};
use plan::{Blocked, ObservedConfig, ObservedFirewall, ObservedGuest, PlanInput, ResolvedSource};

use super::{
    EventNote, POLL_TASK, RESYNC, ReconcileError, StatusSink, VERIFY_SOON,
    cache::{ClusterCache, DriftClock},
};

/// Everything one guest reconcile needs, none of it Kubernetes.
pub struct GuestCtx<'a, P: PveApi> {
    pub api: &'a P,
    pub cache: &'a ClusterCache,
    pub drift: &'a DriftClock,
    pub cluster: &'a str,
    /// Plan only: observe read-only, never allocate or write.
    pub dry_run: bool,
}

/// The resource as the reconciler sees it.
pub struct GuestObject<'a> {
    pub id: &'a GuestIdentity,
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

    // 1. A task in flight: poll it, never wait on it.
    if let Some(task) = status.current_task.clone() {
        if let Some(upid) = Upid::parse(&task.upid) {
            match ctx.api.task_status(&upid).await {
                Ok(st) if st.is_running() => {
                    status.observed_generation = generation;
                    set_conditions(&mut status, generation, &task_conditions(&task));
                    return Ok(Outcome {
                        status,
                        plan: Plan::default(),
                        events,
                        requeue: POLL_TASK,
                    });
                }
                Ok(st) => {
                    status.current_task = None;
                    ctx.cache.invalidate(ctx.cluster).await;
                    force_read = true;
                    if let Some(failure) = st.failure() {
                        let failure = failure.to_string();
                        if let Some(out) = rollback_after_failure(ctx, spec, &mut status, generation, &task, &failure, &upid).await? {
                            sink.save(&out.status).await.map_err(ReconcileError::Status)?;
                            return Ok(out);
                        }
                        if !ctx.dry_run {
                            sink.save(&status).await.map_err(ReconcileError::Status)?;
                        }
                        return Err(ReconcileError::TaskFailed {
                            op: task.operation,
                            message: failure,
                        });
                    }
                    events.push(EventNote::normal("TaskFinished", format!("{} finished", task.operation)));
                }
                Err(e) if e.is_transient() => return Err(ReconcileError::pve("polling task", e)),
                // The node forgot the task (restart): look at the guest instead.
                Err(_) => status.current_task = None,
            }
        } else {
            status.current_task = None;
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
    if let (None, Some(v)) = (&guest, status.vmid) {
        ctx.cache.reserve(ctx.cluster, v);
    }
    let mut source = None;
    let mut placement = None;
    let mut blocked = None;
    if guest.is_none() && foreign.is_none() && spec.mode == ManagementMode::Reconcile && !(spec.adopt && spec.vmid.is_some()) {
        match resolve_source(spec, &resources) {
            Ok(s) => source = Some(s),
            Err(b) => blocked = Some(b),
        }
        if blocked.is_none() {
            match choose_node(ctx, &id.uid, spec, source.as_ref()).await? {
                Ok(n) => placement = Some(n),
                Err(b) => blocked = Some(b),
            }
        }
        if let (None, Some(node), Some(src)) = (&blocked, &placement, &source) {
            blocked = check_references(ctx, spec, node, src).await?;
        }
        if blocked.is_none() && status.vmid.is_none() && spec.vmid.is_none() && !ctx.dry_run {
            let vmid = ctx
                .cache
                .allocate_vmid(ctx.cluster, ctx.api, &resources)
                .await
                .map_err(|e| ReconcileError::pve("allocating a VMID", e))?;
            status.vmid = Some(vmid);
            // Recorded before the create call: a restart finds the guest by this VMID.
            sink.save(&status).await.map_err(ReconcileError::Status)?;
        }
    }
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
    let was_settled = is_ready(&status) && status.observed_generation == generation;
    for action in &plan.actions {
        let g = guest.as_ref();
        let task = run_action(ctx, spec, g, action).await.map_err(|e| {
            if let (pve::ErrorClass::Conflict, Action::CreateGuest { .. } | Action::CloneGuest { .. }) = (e.class(), action) {
                ReconcileError::pve("creating guest (VMID taken)", e)
            } else {
                ReconcileError::pve(action.to_string(), e)
            }
        });
        let task = match task {
            // Our safety snapshot of this generation exists already (taken just
            // before a restart lost the status write): use it.
            Err(ReconcileError::Pve { source, .. })
                if source.class() == pve::ErrorClass::Conflict && matches!(action, Action::Snapshot { .. }) =>
            {
                None
            }
            Err(ReconcileError::Pve { source, .. })
                if source.class() == pve::ErrorClass::Conflict && spec.vmid.is_none() && status.vmid.is_some() =>
            {
                // Lost a race for an allocated VMID: forget it and allocate again next time.
                events.push(EventNote::warning(
                    "VmidCollision",
                    format!("VMID {} was taken; allocating another", status.vmid.unwrap_or_default()),
                ));
                status.vmid = None;
                sink.save(&status).await.map_err(ReconcileError::Status)?;
                return Ok(Outcome {
                    status,
                    plan,
                    events,
                    requeue: VERIFY_SOON,
                });
            }
            other => other?,
        };
        let drift = was_settled
            && matches!(
                action,
                Action::UpdateConfig { .. } | Action::ReplaceFirewallRules { .. } | Action::SetFirewallOptions { .. }
            );
        events.push(event_for(action, g.map(|g| g.vmid).or(vmid), drift));
        if let Action::Snapshot { name } = action {
            status.last_snapshot = Some(name.clone());
        }
        ctx.drift.expire(&id.uid);
        if let Some(upid) = task {
            let task = TaskRef {
                upid: upid.raw.clone(),
                operation: operation_name(action).into(),
                started: jiff::Timestamp::now().to_string(),
            };
            if matches!(action, Action::CreateGuest { .. } | Action::CloneGuest { .. }) {
                status.state = Some("creating".into());
            }
            set_conditions(&mut status, generation, &task_conditions(&task));
            status.current_task = Some(task);
            ctx.cache.invalidate(ctx.cluster).await;
            sink.save(&status).await.map_err(ReconcileError::Status)?;
            return Ok(Outcome {
                status,
                plan,
                events,
                requeue: POLL_TASK,
            });
        }
    }
    ctx.cache.invalidate(ctx.cluster).await;
    set_conditions(
        &mut status,
        generation,
        &[
            ConditionState::new(api::CONDITION_READY, false, "Applying", "changes written; verifying"),
            ConditionState::new(
                api::CONDITION_RECONCILING,
                true,
                "Applying",
                plan.actions.iter().map(|a| a.to_string()).collect::<Vec<_>>().join("; "),
            ),
            ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
        ],
    );
    Ok(Outcome {
        status,
        plan,
        events,
        requeue: VERIFY_SOON,
    })
}

/// Refresh the guest's addresses when its config was read (or none are known
/// yet) and its agent can answer; `Some` is when to come back for them.
async fn observe_addresses<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    g: &ObservedGuest,
    status: &mut ProxmoxGuestStatus,
) -> Option<Duration> {
    if !g.running {
        status.ips.clear();
        status.interfaces.clear();
        return None;
    }
    let unknown = status.ips.is_empty();
    if g.config.is_none() && !unknown {
        return None;
    }
    let kind = kind_of(g.guest_type);
    // Containers answer from the host at once; a VM's agent starts with its OS.
    let grace = if kind == GuestKind::Qemu {
        ctx.api.agent_boot_grace()
    } else {
        Duration::ZERO
    };
    let uptime = g.uptime + ctx.cache.snapshot_age(ctx.cluster).await;
    let wait = ctx.cache.agent.wait(uid, uptime, grace);
    if !wait.is_zero() {
        return unknown.then_some(wait);
    }
    let nics = match ctx.api.guest_interfaces(&g.node, kind, g.vmid).await {
        Ok(nics) => nics,
        // Still booting: ask again later, without calling it an error.
        Err(e) if e.is_agent_not_running() => return unknown.then(|| ctx.cache.agent.pause(uid)),
        Err(_) => return None,
    };
    if nics.iter().all(|n| n.ips.is_empty()) {
        // Up, but no lease yet.
        return unknown.then(|| ctx.cache.agent.pause(uid));
    }
    ctx.cache.agent.answered(uid);
    // Without a fresh config, the slots keep the MACs seen before.
    let cfg = match &g.config {
        Some(c) => c.clone(),
        None => addresses::config_from(&status.interfaces),
    };
    status.ips = nics.iter().flat_map(|n| n.ips.iter().cloned()).collect();
    status.interfaces = addresses::interfaces(&cfg, &nics);
    None
}

enum Identified {
    Ours(ObservedGuest),
    Foreign(ObservedGuest),
    None,
}

fn observed_from(r: &ClusterResource, guest_type: GuestType) -> ObservedGuest {
    ObservedGuest {
        vmid: r.vmid as u32,
        node: r.node.clone(),
        guest_type: match GuestKind::from_resource_type(&r.kind) {
            Some(GuestKind::Lxc) => GuestType::Lxc,
            Some(GuestKind::Qemu) => GuestType::Qemu,
            None => guest_type,
        },
        running: r.status.as_deref() == Some("running"),
        uptime: Duration::from_secs(r.uptime.unwrap_or(0)),
        lock: r.lock.clone(),
        tags: r.tag_list(),
        config: None,
        firewall: None,
    }
}

async fn identify<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    id: &GuestIdentity,
    spec: &ProxmoxGuestSpec,
    status: &ProxmoxGuestStatus,
    resources: &[ClusterResource],
) -> Result<Identified, ReconcileError> {
    let guests = || resources.iter().filter(|r| !r.template);
    if let Some(r) = guests().find(|r| id.has_tag(&r.tag_list())) {
        return Ok(Identified::Ours(observed_from(r, spec.guest_type)));
    }
    let hint = spec.vmid.or(status.vmid);
    let candidate = match hint {
        Some(v) => resources.iter().find(|r| r.vmid == v as u64),
        None if spec.adopt => {
            let named: Vec<_> = guests().filter(|r| r.name.as_deref() == Some(spec.name.as_str())).collect();
            if named.len() == 1 { Some(named[0]) } else { None }
        }
        None => None,
    };
    let Some(r) = candidate else {
        return Ok(Identified::None);
    };
    let mut g = observed_from(r, spec.guest_type);
    if r.template {
        return Ok(Identified::Foreign(g));
    }
    if r.lock.as_deref().is_some_and(|l| l == "clone" || l == "create") {
        // Being created right now: only we record a VMID before creating with it.
        if status.vmid == Some(g.vmid) {
            return Ok(Identified::Ours(g));
        }
    }
    // A clone carries our description line before its first config write adds the tag.
    let cfg = read_config(ctx.api, &g).await?;
    let ours = cfg.effective("description").is_some_and(|d| id.in_description(d));
    g.config = Some(cfg);
    if ours || spec.adopt {
        Ok(Identified::Ours(g))
    } else {
        Ok(Identified::Foreign(g))
    }
}

async fn read_config<P: PveApi>(api: &P, g: &ObservedGuest) -> Result<ObservedConfig, ReconcileError> {
    let entries = api
        .pending(&g.node, kind_of(g.guest_type), g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading guest config", e))?;
    let mut cfg = ObservedConfig::default();
    for e in entries {
        if let Some(v) = &e.value {
            cfg.current.insert(e.key.clone(), pve::codec::value_to_string(v));
        }
        if let Some(p) = &e.pending {
            cfg.pending.insert(e.key.clone(), pve::codec::value_to_string(p));
        }
        if e.delete {
            cfg.pending_delete.insert(e.key.clone());
        }
    }
    Ok(cfg)
}

async fn read_firewall<P: PveApi>(api: &P, g: &ObservedGuest) -> Result<ObservedFirewall, ReconcileError> {
    let k = kind_of(g.guest_type);
    let options = api
        .firewall_options(&g.node, k, g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading firewall options", e))?;
    let mut rules = api
        .firewall_rules(&g.node, k, g.vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading firewall rules", e))?;
    rules.sort_by_key(|r| r.pos);
    Ok(ObservedFirewall { options, rules })
}

fn resolve_source(spec: &ProxmoxGuestSpec, resources: &[ClusterResource]) -> Result<ResolvedSource, Blocked> {
    if let Some(c) = &spec.source.clone {
        let templates: Vec<&ClusterResource> = resources
            .iter()
            .filter(|r| r.template && r.kind == spec.guest_type.as_str())
            .filter(|r| match (&c.template_vmid, &c.template_name) {
                (Some(v), _) => r.vmid == *v as u64,
                (None, Some(n)) => r.name.as_deref() == Some(n.as_str()),
                _ => false,
            })
            .collect();
        let what = c.template_vmid.map_or_else(
            || format!("named {:?}", c.template_name.clone().unwrap_or_default()),
            |v| v.to_string(),
        );
        return match templates.as_slice() {
            [t] => Ok(ResolvedSource::Clone {
                template_node: t.node.clone(),
                template_vmid: t.vmid as u32,
            }),
            [] => Err(Blocked {
                reason: "TemplateNotFound",
                message: format!("no {} template {what} in the cluster; check source.clone", spec.guest_type.as_str()),
            }),
            _ => Err(Blocked {
                reason: "TemplateAmbiguous",
                message: format!("several templates {what}; use source.clone.templateVmid"),
            }),
        };
    }
    if let Some(t) = &spec.source.os_template {
        return Ok(ResolvedSource::OsTemplate(t.clone()));
    }
    if let Some(i) = &spec.source.iso {
        return Ok(ResolvedSource::Iso(i.image.clone()));
    }
    Err(Blocked {
        reason: "InvalidSource",
        message: "source needs one of clone, osTemplate, iso".into(),
    })
}

/// Whether the node has what the spec references; `Some` names what is missing.
async fn check_references<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    node: &str,
    source: &ResolvedSource,
) -> Result<Option<Blocked>, ReconcileError> {
    let refs = references::references(spec, source);
    let inventory = ctx
        .cache
        .inventory
        .node(ctx.cluster, node, ctx.api, &refs.listings())
        .await
        .map_err(|e| ReconcileError::pve(format!("listing storages and bridges of node {node}"), e))?;
    let missing = references::missing(node, &refs, &inventory);
    if !missing.is_empty() {
        ctx.cache.inventory.forget(ctx.cluster, node).await;
    }
    Ok((!missing.is_empty()).then(|| Blocked {
        reason: "MissingReference",
        message: format!("{}; fix the spec or add them on the node", missing.join("; ")),
    }))
}

/// The fixed node, or the online allowed node with the most free memory,
/// counting the guests this process placed moments ago (a batch created at
/// once spreads instead of piling onto one node).
async fn choose_node<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    uid: &str,
    spec: &ProxmoxGuestSpec,
    source: Option<&ResolvedSource>,
) -> Result<Result<String, Blocked>, ReconcileError> {
    let nodes = ctx.api.nodes().await.map_err(|e| ReconcileError::pve("listing nodes", e))?;
    if let Some(n) = &spec.node {
        return Ok(match nodes.iter().any(|i| &i.node == n) {
            true => Ok(n.clone()),
            false => Err(Blocked {
                reason: "NodeNotFound",
                message: format!(
                    "node '{n}' is not in the cluster (it has {}); fix spec.node",
                    nodes.iter().map(|i| i.node.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        });
    }
    let placed = ctx.cache.placements_besides(ctx.cluster, uid);
    let free = |n: &pve::NodeInfo| n.free_memory().saturating_sub(placed.get(&n.node).copied().unwrap_or(0));
    let best = nodes
        .iter()
        .filter(|n| n.status == "online")
        .filter(|n| spec.allowed_nodes.is_empty() || spec.allowed_nodes.contains(&n.node))
        .max_by_key(|n| (free(n), std::cmp::Reverse(n.node.clone())));
    Ok(match best {
        Some(n) => {
            if !ctx.dry_run {
                ctx.cache
                    .record_placement(ctx.cluster, uid, &n.node, (spec.memory_mib as u64) << 20);
            }
            Ok(n.node.clone())
        }
        None => Err(Blocked {
            reason: "NoNodeAvailable",
            message: match source {
                _ if spec.allowed_nodes.is_empty() => "no online node in the cluster".into(),
                _ => format!("none of allowedNodes {:?} is online", spec.allowed_nodes),
            },
        }),
    })
}

async fn run_action<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    g: Option<&ObservedGuest>,
    action: &Action,
) -> Result<Option<Upid>, pve::Error> {
    let kind = kind_of(spec.guest_type);
    let api = ctx.api;
    let target = || g.map(|g| (g.node.as_str(), g.vmid)).expect("plan only targets an existing guest");
    match action {
        Action::CreateGuest { node, params, .. } => api.create(node, kind, params.clone()).await.map(Some),
        Action::CloneGuest {
            template_node,
            template_vmid,
            params,
            ..
        } => api.clone_guest(template_node, kind, *template_vmid, params.clone()).await.map(Some),
        Action::UpdateConfig { params, .. } => {
            let (node, vmid) = target();
            api.update_config(node, kind, vmid, params.clone()).await
        }
        Action::ResizeDisk { disk, size_gib } => {
            let (node, vmid) = target();
            api.resize(node, kind, vmid, disk, &format!("{size_gib}G")).await
        }
        Action::SetFirewallOptions { params } => {
            let (node, vmid) = target();
            api.set_firewall_options(node, kind, vmid, params.clone()).await.map(|_| None)
        }
        Action::ReplaceFirewallRules { delete_positions, create } => {
            let (node, vmid) = target();
            for pos in delete_positions {
                api.delete_firewall_rule(node, kind, vmid, *pos).await?;
            }
            for rule in create {
                api.create_firewall_rule(node, kind, vmid, rule.clone()).await?;
            }
            Ok(None)
        }
        Action::Snapshot { name } => {
            let (node, vmid) = target();
            api.snapshot(node, kind, vmid, name).await.map(Some)
        }
        Action::Power(p) => {
            let (node, vmid) = target();
            api.power(node, kind, vmid, p.as_str()).await.map(Some)
        }
        Action::DeleteGuest => {
            let (node, vmid) = target();
            api.delete_guest(node, kind, vmid).await.map(Some)
        }
    }
}

fn operation_name(a: &Action) -> &'static str {
    match a {
        Action::CreateGuest { .. } => "create",
        Action::CloneGuest { .. } => "clone",
        Action::UpdateConfig { .. } => "config",
        Action::ResizeDisk { .. } => "resize",
        Action::SetFirewallOptions { .. } | Action::ReplaceFirewallRules { .. } => "firewall",
        Action::Snapshot { .. } => "snapshot",
        Action::Power(p) => p.as_str(),
        Action::DeleteGuest => "delete",
    }
}

fn event_for(a: &Action, vmid: Option<u32>, drift: bool) -> EventNote {
    let v = vmid.map_or(String::new(), |v| format!(" (VMID {v})"));
    let reason = match a {
        _ if drift => "DriftCorrected",
        Action::CreateGuest { .. } => "Creating",
        Action::CloneGuest { .. } => "Cloning",
        Action::UpdateConfig { .. } => "ConfigUpdated",
        Action::ResizeDisk { .. } => "DiskResized",
        Action::SetFirewallOptions { .. } | Action::ReplaceFirewallRules { .. } => "FirewallUpdated",
        Action::Snapshot { .. } => "SnapshotTaken",
        Action::Power(_) => "PowerChanged",
        Action::DeleteGuest => "Deleting",
    };
    let note = if drift {
        format!("guest changed outside the operator; corrected: {a}{v}")
    } else {
        format!("{a}{v}")
    };
    EventNote::normal(reason, note)
}

const REASON_ROLLED_BACK: &str = "RolledBack";

fn rolled_back(status: &ProxmoxGuestStatus, generation: Option<i64>) -> bool {
    api::find_condition(&status.conditions, api::CONDITION_STALLED)
        .is_some_and(|c| c.status == "True" && c.reason == REASON_ROLLED_BACK && c.observed_generation == generation)
}

/// A risky change failed after a safety snapshot: roll back to it and stall
/// until the spec changes, so the failing change is not retried in a loop.
async fn rollback_after_failure<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    status: &mut ProxmoxGuestStatus,
    generation: Option<i64>,
    task: &TaskRef,
    failure: &str,
    upid: &Upid,
) -> Result<Option<Outcome>, ReconcileError> {
    let risky = matches!(task.operation.as_str(), "reboot" | "resize" | "start");
    let Some(snap) = status.last_snapshot.clone() else {
        return Ok(None);
    };
    if ctx.dry_run
        || !risky
        || !spec.safety.as_ref().is_some_and(|s| s.snapshot_before_change)
        || !snap.starts_with(&format!("hlo-g{}-", generation.unwrap_or(0)))
    {
        return Ok(None);
    }
    let vmid: u32 = upid.id.parse().unwrap_or_default();
    let kind = kind_of(spec.guest_type);
    let rb = ctx
        .api
        .rollback(&upid.node, kind, vmid, &snap)
        .await
        .map_err(|e| ReconcileError::pve(format!("rolling back to {snap}"), e))?;
    status.current_task = Some(TaskRef {
        upid: rb.raw,
        operation: "rollback".into(),
        started: jiff::Timestamp::now().to_string(),
    });
    let message = format!(
        "{} failed ({failure}); rolled back to snapshot {snap}. Fix the spec to try again",
        task.operation
    );
    set_conditions(
        status,
        generation,
        &stalled_conditions(&Blocked {
            reason: REASON_ROLLED_BACK,
            message: message.clone(),
        }),
    );
    ctx.cache.invalidate(ctx.cluster).await;
    Ok(Some(Outcome {
        status: status.clone(),
        plan: Plan::default(),
        events: vec![EventNote::warning(REASON_ROLLED_BACK, message)],
        requeue: POLL_TASK,
    }))
}

/// The same conditions when a task starts and while it is polled, so polling writes nothing.
fn task_conditions(task: &TaskRef) -> [ConditionState; 3] {
    [
        ConditionState::new(
            api::CONDITION_READY,
            false,
            "TaskRunning",
            format!("waiting for {} ({})", task.operation, task.upid),
        ),
        ConditionState::new(
            api::CONDITION_RECONCILING,
            true,
            "TaskRunning",
            format!("{} in progress", task.operation),
        ),
        ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
    ]
}

fn is_ready(status: &ProxmoxGuestStatus) -> bool {
    api::find_condition(&status.conditions, api::CONDITION_READY).is_some_and(|c| c.status == "True")
}

fn paused_conditions(status: &ProxmoxGuestStatus) -> Vec<ConditionState> {
    let ready = is_ready(status);
    vec![
        ConditionState::new(
            api::CONDITION_READY,
            ready,
            "Paused",
            "mode: Paused; the operator neither observes nor writes",
        ),
        ConditionState::new(api::CONDITION_RECONCILING, false, "Paused", ""),
        ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""),
    ]
}

fn stalled_conditions(b: &Blocked) -> Vec<ConditionState> {
    vec![
        ConditionState::new(api::CONDITION_READY, false, b.reason, b.message.clone()),
        ConditionState::new(api::CONDITION_RECONCILING, false, b.reason, ""),
        ConditionState::new(api::CONDITION_STALLED, true, b.reason, b.message.clone()),
    ]
}

/// Conditions when there is nothing to write now.
fn settled_conditions(spec: &ProxmoxGuestSpec, guest: Option<&ObservedGuest>, plan: &Plan) -> Vec<ConditionState> {
    let stalled_ok = ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", "");
    let (ready, reason, message) = match guest {
        None if spec.mode == ManagementMode::ObserveOnly => {
            (false, "GuestAbsent", "mode: ObserveOnly and the guest does not exist".to_string())
        }
        None => (false, "Creating", "guest not created yet".to_string()),
        Some(_) if plan.is_noop() => {
            let power = if spec.power == PowerState::Running { "running" } else { "stopped" };
            (true, "Reconciled", format!("guest matches the spec ({power})"))
        }
        Some(_) if spec.mode == ManagementMode::ObserveOnly => (
            false,
            "DriftDetected",
            format!(
                "mode: ObserveOnly; differences: {}",
                plan.pending.iter().map(|p| p.field.clone()).collect::<Vec<_>>().join(", ")
            ),
        ),
        Some(_) => {
            let reboot: Vec<_> = plan
                .pending
                .iter()
                .filter(|p| p.class == ChangeClass::NeedsReboot)
                .map(|p| p.field.clone())
                .collect();
            let recreate: Vec<_> = plan
                .pending
                .iter()
                .filter(|p| p.class == ChangeClass::NeedsRecreate)
                .map(|p| p.field.clone())
                .collect();
            if !recreate.is_empty() {
                (
                    false,
                    "NeedsRecreate",
                    format!("{} cannot change on an existing guest; re-create it to apply", recreate.join(", ")),
                )
            } else if !reboot.is_empty() {
                (
                    false,
                    "PendingReboot",
                    format!("{} take effect after a reboot (updatePolicy: Manual)", reboot.join(", ")),
                )
            } else {
                (
                    false,
                    "Waiting",
                    plan.pending
                        .iter()
                        .map(|p| format!("{}={}", p.field, p.current.clone().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
        }
    };
    vec![
        ConditionState::new(api::CONDITION_READY, ready, reason, message),
        ConditionState::new(api::CONDITION_RECONCILING, false, if ready { "Reconciled" } else { reason }, ""),
        stalled_ok,
    ]
}

/// Result of one cleanup step on deletion.
pub enum CleanupOutcome {
    /// Nothing left to do outside Kubernetes: remove the finalizer.
    Done(Vec<EventNote>),
    /// Work in flight; look again after the given time.
    Requeue {
        status: ProxmoxGuestStatus,
        events: Vec<EventNote>,
        after: Duration,
    },
    /// A person must act (e.g. protection on); status says what.
    Blocked {
        status: ProxmoxGuestStatus,
        events: Vec<EventNote>,
    },
}

/// Deletion: `Delete` stops and destroys the guest with its disks; `Retain`
/// removes only the mark. A guest that is not ours is never touched.
pub async fn cleanup<P: PveApi, S: StatusSink<ProxmoxGuestStatus>>(
    ctx: &GuestCtx<'_, P>,
    obj: GuestObject<'_>,
    sink: &S,
) -> Result<CleanupOutcome, ReconcileError> {
    let GuestObject {
        id,
        spec,
        mut status,
        generation,
        ..
    } = obj;
    if spec.mode == ManagementMode::Paused {
        return Ok(CleanupOutcome::Done(vec![EventNote::normal(
            "Released",
            "mode: Paused; guest left as it is",
        )]));
    }
    if let Some(task) = status.current_task.clone()
        && let Some(upid) = Upid::parse(&task.upid)
    {
        match ctx.api.task_status(&upid).await {
            Ok(st) if st.is_running() => {
                return Ok(CleanupOutcome::Requeue {
                    status,
                    events: vec![],
                    after: POLL_TASK,
                });
            }
            Ok(_) | Err(_) => {
                status.current_task = None;
                ctx.cache.invalidate(ctx.cluster).await;
            }
        }
    }
    let resources = ctx
        .cache
        .resources(ctx.cluster, ctx.api)
        .await
        .map_err(|e| ReconcileError::pve("listing cluster resources", e))?;
    // Only a guest that carries our mark (or that we adopted and marked) is touched.
    let guest = match identify(
        ctx,
        id,
        &ProxmoxGuestSpec {
            adopt: false,
            ..spec.clone()
        },
        &status,
        &resources,
    )
    .await?
    {
        Identified::Ours(g) => g,
        Identified::Foreign(_) | Identified::None => {
            ctx.drift.forget(&id.uid);
            return Ok(CleanupOutcome::Done(vec![EventNote::normal(
                "Released",
                "no guest of ours exists; nothing to clean up",
            )]));
        }
    };
    let kind = kind_of(spec.guest_type);
    if spec.mode == ManagementMode::ObserveOnly {
        return Ok(CleanupOutcome::Done(vec![EventNote::normal(
            "Released",
            format!("mode: ObserveOnly; guest {} left as it is", guest.vmid),
        )]));
    }
    let cfg = match guest.config.clone() {
        Some(c) => c,
        None => read_config(ctx.api, &guest).await?,
    };
    match spec.deletion_policy {
        api::DeletionPolicy::Retain => {
            let params = plan::remove_mark_params(&cfg);
            ctx.api
                .update_config(&guest.node, kind, guest.vmid, params)
                .await
                .map_err(|e| ReconcileError::pve("removing the ownership mark", e))?;
            ctx.drift.forget(&id.uid);
            Ok(CleanupOutcome::Done(vec![EventNote::normal(
                "Retained",
                format!("guest {} kept; ownership mark removed", guest.vmid),
            )]))
        }
        api::DeletionPolicy::Delete => {
            if cfg.effective("protection") == Some("1") {
                let message = if spec.protection {
                    format!(
                        "guest {} has protection on; set spec.protection: false (or deletionPolicy: Retain) to let it be deleted",
                        guest.vmid
                    )
                } else {
                    format!(
                        "guest {} has protection on in Proxmox; turn it off there (or set deletionPolicy: Retain) to let it be deleted",
                        guest.vmid
                    )
                };
                // Honour a spec that turned protection off since the guest got it from us.
                if !spec.protection
                    && ctx
                        .api
                        .update_config(&guest.node, kind, guest.vmid, vec![("protection".into(), "0".into())])
                        .await
                        .is_ok()
                {
                    return Ok(CleanupOutcome::Requeue {
                        status,
                        events: vec![EventNote::normal("ConfigUpdated", "protection turned off for deletion")],
                        after: VERIFY_SOON,
                    });
                }
                set_conditions(
                    &mut status,
                    generation,
                    &stalled_conditions(&Blocked {
                        reason: "DeletionProtected",
                        message: message.clone(),
                    }),
                );
                return Ok(CleanupOutcome::Blocked {
                    status,
                    events: vec![EventNote::warning("DeletionProtected", message)],
                });
            }
            let (action, op) = if guest.running {
                (Action::Power(plan::PowerAction::Stop), "stop")
            } else {
                (Action::DeleteGuest, "delete")
            };
            let upid = run_action(ctx, spec, Some(&guest), &action)
                .await
                .map_err(|e| ReconcileError::pve(action.to_string(), e))?;
            let events = vec![event_for(&action, Some(guest.vmid), false)];
            if let Some(upid) = upid {
                status.current_task = Some(TaskRef {
                    upid: upid.raw,
                    operation: op.into(),
                    started: jiff::Timestamp::now().to_string(),
                });
                status.state = Some(if op == "delete" { "deleting" } else { "stopping" }.into());
                sink.save(&status).await.map_err(ReconcileError::Status)?;
            }
            ctx.cache.invalidate(ctx.cluster).await;
            Ok(CleanupOutcome::Requeue {
                status,
                events,
                after: POLL_TASK,
            })
        }
    }
}

#[cfg(test)]
mod plan_tests;
