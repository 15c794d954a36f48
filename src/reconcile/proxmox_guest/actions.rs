//! Running plan actions against Proxmox, and rolling a failed change back.

use super::*;

pub(super) async fn run_action<P: PveApi>(
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
        Action::UpdateConfig { params, .. } | Action::MarkOwnership { params } => {
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
            if !matches!(p, plan::PowerAction::Start) {
                ctx.taking_down();
            }
            api.power(node, kind, vmid, p.as_str()).await.map(Some)
        }
        Action::DeleteGuest => {
            let (node, vmid) = target();
            ctx.taking_down();
            api.delete_guest(node, kind, vmid).await.map(Some)
        }
    }
}

pub(super) fn operation_name(a: &Action) -> &'static str {
    match a {
        Action::CreateGuest { .. } => "create",
        Action::CloneGuest { .. } => "clone",
        Action::UpdateConfig { .. } | Action::MarkOwnership { .. } => "config",
        Action::ResizeDisk { .. } => "resize",
        Action::SetFirewallOptions { .. } | Action::ReplaceFirewallRules { .. } => "firewall",
        Action::Snapshot { .. } => "snapshot",
        Action::Power(p) => p.as_str(),
        Action::DeleteGuest => "delete",
    }
}

pub(super) fn event_for(a: &Action, vmid: Option<u32>, drift: bool) -> EventNote {
    let v = vmid.map_or(String::new(), |v| format!(" (VMID {v})"));
    let reason = match a {
        _ if drift => "DriftCorrected",
        Action::CreateGuest { .. } => "Creating",
        Action::CloneGuest { .. } => "Cloning",
        Action::UpdateConfig { .. } => "ConfigUpdated",
        Action::MarkOwnership { .. } => "Adopted",
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

pub(super) const REASON_ROLLED_BACK: &str = "RolledBack";

pub(super) fn rolled_back(status: &ProxmoxGuestStatus, generation: Option<i64>) -> bool {
    api::find_condition(&status.conditions, api::CONDITION_STALLED)
        .is_some_and(|c| c.status == "True" && c.reason == REASON_ROLLED_BACK && c.observed_generation == generation)
}

/// A risky change failed after a safety snapshot: roll back to it and stall
/// until the spec changes, so the failing change is not retried in a loop.
pub(super) async fn rollback_after_failure<P: PveApi>(
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
    if !risky
        || !spec.safety.as_ref().is_some_and(|s| s.snapshot_before_change)
        || !snap.starts_with(&format!("hlo-g{}-", generation.unwrap_or(0)))
    {
        return Ok(None);
    }
    let vmid: u32 = upid.id.parse().unwrap_or_default();
    let kind = kind_of(spec.guest_type);
    ctx.taking_down();
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

/// What became of the task in flight.
pub(super) enum TaskSeen {
    /// No task was in flight.
    None,
    /// Still running: this reconcile ends here.
    Running(Box<Outcome>),
    /// Finished well (cleared from status).
    Finished,
    Failed(FailedTask),
}

/// A task that ended in failure (already cleared from status).
pub(super) struct FailedTask {
    task: TaskRef,
    upid: Upid,
    failure: String,
}

impl FailedTask {
    pub(super) fn error(self) -> ReconcileError {
        ReconcileError::TaskFailed {
            op: self.task.operation,
            message: self.failure,
        }
    }
}

/// Poll the task in flight, never wait on it. Read-only but for the status it clears.
pub(super) async fn task_step<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    status: &mut ProxmoxGuestStatus,
    generation: Option<i64>,
    events: &mut Vec<EventNote>,
) -> Result<TaskSeen, ReconcileError> {
    let Some(task) = status.current_task.clone() else {
        return Ok(TaskSeen::None);
    };
    let Some(upid) = Upid::parse(&task.upid) else {
        status.current_task = None;
        return Ok(TaskSeen::Finished);
    };
    match ctx.api.task_status(&upid).await {
        Ok(st) if st.is_running() => {
            status.observed_generation = generation;
            set_conditions(status, generation, &task_conditions(&task));
            Ok(TaskSeen::Running(Box::new(Outcome {
                status: status.clone(),
                plan: Plan::default(),
                events: std::mem::take(events),
                requeue: POLL_TASK,
            })))
        }
        Ok(st) => {
            status.current_task = None;
            ctx.cache.invalidate(ctx.cluster).await;
            if let Some(failure) = st.failure() {
                let failure = failure.to_string();
                return Ok(TaskSeen::Failed(FailedTask { task, upid, failure }));
            }
            events.push(EventNote::normal("TaskFinished", format!("{} finished", task.operation)));
            Ok(TaskSeen::Finished)
        }
        Err(e) if e.is_transient() => Err(ReconcileError::pve("polling task", e)),
        // The node forgot the task (restart): look at the guest instead.
        Err(_) => {
            status.current_task = None;
            Ok(TaskSeen::Finished)
        }
    }
}

/// A task failed: roll a risky change back to its safety snapshot, or
/// report the failure; either way the cleared task is saved.
pub(super) async fn task_failed<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    mut status: ProxmoxGuestStatus,
    generation: Option<i64>,
    f: FailedTask,
    sink: &S,
) -> Result<Outcome, ReconcileError> {
    if let Some(out) = rollback_after_failure(ctx, spec, &mut status, generation, &f.task, &f.failure, &f.upid).await? {
        sink.save(&out.status).await.map_err(ReconcileError::Status)?;
        return Ok(out);
    }
    sink.save(&status).await.map_err(ReconcileError::Status)?;
    Err(f.error())
}

/// Why an action was refused, as applying a plan treats it.
enum Refused {
    /// Our snapshot of this name exists already.
    SnapshotExists,
    /// A conflict on a VMID someone else took.
    VmidTaken(ReconcileError),
    Other(ReconcileError),
}

/// Run one action, sorting a refusal into what applying the plan does about it.
async fn run_checked<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    g: Option<&ObservedGuest>,
    action: &Action,
) -> Result<Option<Upid>, Refused> {
    run_action(ctx, spec, g, action).await.map_err(|e| {
        let conflict = e.class() == pve::ErrorClass::Conflict;
        match action {
            Action::Snapshot { .. } if conflict => Refused::SnapshotExists,
            Action::CreateGuest { .. } | Action::CloneGuest { .. } if conflict => {
                Refused::VmidTaken(ReconcileError::pve("creating guest (VMID taken)", e))
            }
            _ if conflict => Refused::VmidTaken(ReconcileError::pve(action.to_string(), e)),
            _ => Refused::Other(ReconcileError::pve(action.to_string(), e)),
        }
    })
}

/// Record the task an action started, so the next reconcile polls it.
fn started_task(action: &Action, upid: Upid, generation: Option<i64>, status: &mut ProxmoxGuestStatus) {
    let task = TaskRef {
        upid: upid.raw.clone(),
        operation: operation_name(action).into(),
        started: jiff::Timestamp::now().to_string(),
    };
    if matches!(action, Action::CreateGuest { .. } | Action::CloneGuest { .. }) {
        status.state = Some("creating".into());
    }
    set_conditions(status, generation, &task_conditions(&task));
    status.current_task = Some(task);
}

/// The guest a plan is applied to.
pub(super) struct ApplyTarget<'a> {
    pub uid: &'a str,
    pub spec: &'a ProxmoxGuestSpec,
    pub guest: Option<&'a ObservedGuest>,
    pub vmid: Option<u32>,
    pub generation: Option<i64>,
}

/// Run the plan's actions in order until one starts a task (polled next
/// time); a lost VMID race forgets the VMID, our own snapshot is reused.
pub(super) async fn apply_plan<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
    ctx: &GuestCtx<'_, P>,
    t: ApplyTarget<'_>,
    plan: Plan,
    mut status: ProxmoxGuestStatus,
    sink: &S,
    mut events: Vec<EventNote>,
) -> Result<Outcome, ReconcileError> {
    let was_settled = is_ready(&status) && status.observed_generation == t.generation;
    for action in &plan.actions {
        let g = t.guest;
        let task = match run_checked(ctx, t.spec, g, action).await {
            Ok(task) => task,
            // Our safety snapshot of this generation exists already (taken just
            // before a restart lost the status write): use it.
            Err(Refused::SnapshotExists) => None,
            Err(Refused::VmidTaken(_)) if t.spec.vmid.is_none() && status.vmid.is_some() => {
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
            Err(Refused::VmidTaken(e) | Refused::Other(e)) => return Err(e),
        };
        let drift = was_settled
            && matches!(
                action,
                Action::UpdateConfig { .. } | Action::ReplaceFirewallRules { .. } | Action::SetFirewallOptions { .. }
            );
        events.push(event_for(action, g.map(|g| g.vmid).or(t.vmid), drift));
        if let Action::Snapshot { name } = action {
            status.last_snapshot = Some(name.clone());
        }
        ctx.drift.expire(t.uid);
        if let Some(upid) = task {
            started_task(action, upid, t.generation, &mut status);
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
        t.generation,
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
