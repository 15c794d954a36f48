//! Deleting (or releasing) a guest when its resource goes away.

use super::*;

/// Result of one cleanup step on deletion.
pub type CleanupOutcome = crate::reconcile::Cleanup<ProxmoxGuestStatus>;

/// Whether the task in flight still runs (a finished or forgotten one is cleared).
async fn task_running<P: PveApi>(ctx: &GuestCtx<'_, P>, status: &mut ProxmoxGuestStatus) -> bool {
    let Some(upid) = status.current_task.as_ref().and_then(|t| Upid::parse(&t.upid)) else {
        return false;
    };
    if ctx.api.task_status(&upid).await.is_ok_and(|st| st.is_running()) {
        return true;
    }
    status.current_task = None;
    ctx.cache.invalidate(ctx.cluster).await;
    false
}

/// Deletion: `Delete` stops and destroys the guest with its disks; `Retain`
/// removes only the mark. A guest that is not ours is never touched.
pub async fn cleanup<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
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
    if task_running(ctx, &mut status).await {
        return Ok(CleanupOutcome::Requeue {
            status,
            events: vec![],
            after: POLL_TASK,
        });
    }
    let resources = ctx
        .cache
        .resources(ctx.cluster, ctx.api)
        .await
        .map_err(|e| ReconcileError::pve("listing cluster resources", e))?;
    // Only a guest that carries our mark (or that we adopted and marked) is touched.
    let marked_only = ProxmoxGuestSpec {
        adopt: false,
        ..spec.clone()
    };
    let guest = match identify(ctx, id, &marked_only, &status, &resources).await? {
        Identified::Ours(g) => g,
        Identified::Foreign(_) | Identified::None => {
            ctx.drift.forget(&id.uid);
            return Ok(CleanupOutcome::Done(vec![EventNote::normal(
                "Released",
                "no guest of ours exists; nothing to clean up",
            )]));
        }
    };
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
                .update_config(&guest.node, kind_of(spec.guest_type), guest.vmid, params)
                .await
                .map_err(|e| ReconcileError::pve("removing the ownership mark", e))?;
            ctx.drift.forget(&id.uid);
            Ok(CleanupOutcome::Done(vec![EventNote::normal(
                "Retained",
                format!("guest {} kept; ownership mark removed", guest.vmid),
            )]))
        }
        api::DeletionPolicy::Delete if cfg.effective("protection") == Some("1") => protected(ctx, spec, &guest, status, generation).await,
        api::DeletionPolicy::Delete => destroy(ctx, spec, &guest, status, sink).await,
    }
}

/// Protection on: turn it off when the spec no longer asks for it (it came
/// from us), else stall with what to change.
async fn protected<P: PveApi>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    guest: &ObservedGuest,
    mut status: ProxmoxGuestStatus,
    generation: Option<i64>,
) -> Result<CleanupOutcome, ReconcileError> {
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
    let off = vec![("protection".into(), "0".into())];
    if !spec.protection
        && ctx
            .api
            .update_config(&guest.node, kind_of(spec.guest_type), guest.vmid, off)
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
        &stalled_conditions(&Blocked::new("DeletionProtected", message.clone())),
    );
    Ok(CleanupOutcome::Blocked {
        status,
        events: vec![EventNote::warning("DeletionProtected", message)],
    })
}

/// Stop a running guest, then delete a stopped one; the task is polled next time.
async fn destroy<P: PveApi, S: StatusSink<ProxmoxGuestStatus> + ?Sized>(
    ctx: &GuestCtx<'_, P>,
    spec: &ProxmoxGuestSpec,
    guest: &ObservedGuest,
    mut status: ProxmoxGuestStatus,
    sink: &S,
) -> Result<CleanupOutcome, ReconcileError> {
    let (action, op) = if guest.running {
        (Action::Power(plan::PowerAction::Stop), "stop")
    } else {
        (Action::DeleteGuest, "delete")
    };
    let upid = run_action(ctx, spec, Some(guest), &action)
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
