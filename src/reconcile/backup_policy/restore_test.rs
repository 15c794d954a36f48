//! A restore test, one phase per reconcile: restore the newest backup to a
//! scratch VMID, start it with its NICs' links down and wait until it runs,
//! then always destroy it. Every step is saved in status before the call that
//! needs it, so a restart resumes (and cleans up) instead of starting over.

use std::collections::HashSet;

use super::restore_plan::{self, kind_of};
use crate::{
    api::{BackupMember, BackupPolicyStatus, RestoreTest, RestoreTestRun},
    providers::pve::{ErrorClass, GuestKind, Params, PveApi, Upid},
    reconcile::{EventNote, ReconcileError, StatusSink},
};

pub const RESTORING: &str = "Restoring";
pub const STARTING: &str = "Starting";
pub const DESTROYING: &str = "Destroying";
pub const DONE: &str = "Done";

/// What starts a test, from `restore_plan::due`.
pub struct Trigger {
    pub request: String,
    /// The annotation value, when the annotation started it.
    pub annotation: Option<String>,
}

/// Start a due test and move the one in flight on; true while it runs.
pub async fn step<P: PveApi, S: StatusSink<BackupPolicyStatus> + ?Sized>(
    api: &P,
    rt: &RestoreTest,
    trigger: Option<Trigger>,
    status: &mut BackupPolicyStatus,
    sink: &S,
    events: &mut Vec<EventNote>,
) -> Result<bool, ReconcileError> {
    if let Some(t) = trigger {
        start(api, rt, t, status, sink, events).await?;
    }
    // A few phases can pass in one reconcile; a running task ends the loop.
    for _ in 0..6 {
        let Some(run) = status.last_restore_test.clone() else {
            return Ok(false);
        };
        if run.phase == DONE {
            return Ok(false);
        }
        let Some(next) = advance(api, rt, run, &status.members, events).await? else {
            return Ok(true);
        };
        status.last_restore_test = Some(next);
        sink.save(status).await.map_err(ReconcileError::Status)?;
    }
    Ok(true)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

async fn used_vmids<P: PveApi>(api: &P) -> Result<Vec<crate::providers::pve::ClusterResource>, ReconcileError> {
    api.cluster_resources()
        .await
        .map_err(|e| ReconcileError::pve("listing cluster resources", e))
}

async fn start<P: PveApi, S: StatusSink<BackupPolicyStatus> + ?Sized>(
    api: &P,
    rt: &RestoreTest,
    t: Trigger,
    status: &mut BackupPolicyStatus,
    sink: &S,
    events: &mut Vec<EventNote>,
) -> Result<(), ReconcileError> {
    let handled = t
        .annotation
        .clone()
        .or_else(|| status.last_restore_test.as_ref().and_then(|l| l.handled_request.clone()));
    let mut run = RestoreTestRun {
        request: t.request,
        node: rt.node.clone(),
        started: now().to_string(),
        handled_request: handled,
        phase: RESTORING.into(),
        ..Default::default()
    };
    let picked = restore_plan::pick_backup(&status.members).map(|(m, b)| (m.clone(), b.clone()));
    let used: HashSet<u64> = used_vmids(api).await?.iter().map(|r| r.vmid).collect();
    let scratch = restore_plan::free_vmid(rt.scratch_vmids, &used);
    let (Some((member, backup)), Some(vmid)) = (picked, scratch) else {
        let why = match scratch {
            None => format!("no free VMID in {}-{}", rt.scratch_vmids.first, rt.scratch_vmids.last),
            Some(_) => "no member has a backup to restore".into(),
        };
        finish(&mut run, Some(why.clone()));
        events.push(EventNote::warning("RestoreTestFailed", format!("restore test not started: {why}")));
        status.last_restore_test = Some(run);
        return Ok(());
    };
    run.backup = backup.volid.clone();
    run.guest = member.name.clone().unwrap_or_else(|| format!("VMID {}", member.vmid));
    run.scratch_vmid = vmid;
    // Saved before the create: after a restart the VMID is known and cleaned up.
    status.last_restore_test = Some(run.clone());
    sink.save(status).await.map_err(ReconcileError::Status)?;
    let kind = kind_of(&backup.volid);
    let mut params: Params = vec![
        ("vmid".into(), vmid.to_string()),
        ("storage".into(), rt.storage.clone()),
        ("unique".into(), "1".into()),
    ];
    match kind {
        GuestKind::Qemu => params.push(("archive".into(), backup.volid.clone())),
        GuestKind::Lxc => params.extend([("ostemplate".into(), backup.volid.clone()), ("restore".into(), "1".into())]),
    }
    events.push(EventNote::normal(
        "RestoreTestStarted",
        format!("restoring {} of {} to scratch VMID {vmid} on {}", backup.volid, run.guest, rt.node),
    ));
    match api.create(&rt.node, kind, params).await {
        Ok(upid) => run.upid = Some(upid.raw),
        // Someone took the VMID between our look and the create: nothing of ours to destroy.
        Err(e) if e.class() == ErrorClass::Conflict => finish(&mut run, Some(format!("restore refused: {e}"))),
        Err(e) => {
            run.result = Some(format!("restore failed: {e}"));
            run.phase = DESTROYING.into();
        }
    }
    status.last_restore_test = Some(run);
    sink.save(status).await.map_err(ReconcileError::Status)
}

fn finish(run: &mut RestoreTestRun, failure: Option<String>) {
    let end = now();
    if run.result.is_none() {
        run.result = Some(failure.unwrap_or_else(|| "OK".into()));
    }
    run.phase = DONE.into();
    run.upid = None;
    run.duration_seconds = run
        .started
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|s| end.duration_since(s).as_secs().max(0) as u64);
    run.finished = Some(end.to_string());
}

/// The task in flight: `None` while it runs, `Some(Err(exit))` when it failed.
async fn task<P: PveApi>(api: &P, run: &RestoreTestRun) -> Result<Option<Result<(), String>>, ReconcileError> {
    let Some(upid) = run.upid.as_deref().and_then(Upid::parse) else {
        return Ok(Some(Ok(())));
    };
    let st = match api.task_status(&upid).await {
        Ok(st) => st,
        Err(e) if e.is_transient() => return Err(ReconcileError::pve("polling the restore test", e)),
        Err(e) => return Ok(Some(Err(format!("task lost: {e}")))),
    };
    Ok(match (st.is_running(), st.failure()) {
        (true, _) => None,
        (false, Some(f)) => Some(Err(f.to_string())),
        (false, None) => Some(Ok(())),
    })
}

/// One phase further, or `None` while its task runs.
async fn advance<P: PveApi>(
    api: &P,
    rt: &RestoreTest,
    mut run: RestoreTestRun,
    members: &[BackupMember],
    events: &mut Vec<EventNote>,
) -> Result<Option<RestoreTestRun>, ReconcileError> {
    let kind = kind_of(&run.backup);
    let Some(outcome) = task(api, &run).await? else { return Ok(None) };
    run.upid = None;
    match (run.phase.as_str(), outcome) {
        (RESTORING | STARTING, Err(exit)) => {
            run.result = Some(format!(
                "{} failed: {exit}",
                if run.phase == RESTORING { "restore" } else { "start" }
            ));
            run.phase = DESTROYING.into();
        }
        (RESTORING, Ok(())) if rt.start => {
            isolate(api, &run.node, kind, run.scratch_vmid).await?;
            let upid = api
                .power(&run.node, kind, run.scratch_vmid, "start")
                .await
                .map_err(|e| ReconcileError::pve("starting the restored guest", e))?;
            run.upid = Some(upid.raw);
            run.phase = STARTING.into();
        }
        (RESTORING, Ok(())) => {
            isolate(api, &run.node, kind, run.scratch_vmid).await?;
            run.result = Some("OK".into());
            run.phase = DESTROYING.into();
        }
        (STARTING, Ok(())) => {
            let running = used_vmids(api)
                .await?
                .iter()
                .any(|r| r.vmid == run.scratch_vmid as u64 && r.status.as_deref() == Some("running"));
            run.result = Some(if running {
                "OK".into()
            } else {
                "the restored guest did not stay running".into()
            });
            run.phase = DESTROYING.into();
        }
        (_, Err(exit)) if run.phase == DESTROYING => {
            // A failed stop or delete: say so, and try again on the next step.
            events.push(EventNote::warning(
                "RestoreTestCleanup",
                format!("removing scratch VMID {}: {exit}", run.scratch_vmid),
            ));
        }
        _ => {}
    }
    if run.phase == DESTROYING && run.upid.is_none() {
        destroy(api, &mut run, members, events).await?;
    }
    Ok(Some(run))
}

/// Stop, then delete the scratch guest; done once it is gone. A member's VMID is never touched.
async fn destroy<P: PveApi>(
    api: &P,
    run: &mut RestoreTestRun,
    members: &[BackupMember],
    events: &mut Vec<EventNote>,
) -> Result<(), ReconcileError> {
    let vmid = run.scratch_vmid;
    let here = used_vmids(api).await?.into_iter().find(|r| r.vmid == vmid as u64);
    let Some(guest) = here.filter(|_| !members.iter().any(|m| m.vmid == vmid)) else {
        finish(run, None);
        let result = run.result.clone().unwrap_or_default();
        events.push(match result.as_str() {
            "OK" => EventNote::normal(
                "RestoreTestSucceeded",
                format!("{} restored and ran; scratch VMID {vmid} removed", run.backup),
            ),
            _ => EventNote::warning("RestoreTestFailed", format!("restore test of {}: {result}", run.backup)),
        });
        return Ok(());
    };
    let kind = GuestKind::from_resource_type(&guest.kind).unwrap_or(GuestKind::Qemu);
    let upid = match guest.status.as_deref() {
        Some("running") => api.power(&guest.node, kind, vmid, "stop").await,
        _ => api.delete_guest(&guest.node, kind, vmid).await,
    }
    .map_err(|e| ReconcileError::pve(format!("removing scratch VMID {vmid}"), e))?;
    run.upid = Some(upid.raw);
    Ok(())
}

/// Before it starts: every NIC of the restored guest link down, and its tags
/// replaced (the original's carry the operator's ownership mark).
async fn isolate<P: PveApi>(api: &P, node: &str, kind: GuestKind, vmid: u32) -> Result<(), ReconcileError> {
    let config = api
        .pending(node, kind, vmid)
        .await
        .map_err(|e| ReconcileError::pve("reading the restored guest's config", e))?;
    let params: Params = config
        .iter()
        .filter_map(|e| {
            let v = e.value.as_ref()?.as_str()?;
            let changed = match e.key.as_str() {
                "tags" => (v != restore_plan::SCRATCH_TAG).then(|| restore_plan::SCRATCH_TAG.to_string()),
                key => restore_plan::isolated_nic(key, v),
            };
            Some((e.key.clone(), changed?))
        })
        .collect();
    if params.is_empty() {
        return Ok(());
    }
    // A QEMU config task still holding the lock makes the start fail as
    // transient; the retry finds the links down already and only starts.
    api.update_config(node, kind, vmid, params)
        .await
        .map(drop)
        .map_err(|e| ReconcileError::pve("isolating the restored guest's NICs", e))
}
