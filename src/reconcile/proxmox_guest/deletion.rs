//! Deleting (or releasing) a guest when its resource goes away.

use super::*;

/// Result of one cleanup step on deletion.
pub type CleanupOutcome = crate::reconcile::Cleanup<ProxmoxGuestStatus>;

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
