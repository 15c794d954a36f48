//! A run over the members: when it starts, which members go next, when it
//! ends (with its one notification), and the snapshots kept after it.

use std::{collections::BTreeMap, time::Duration};

use super::{
    Apis, POLL, failed, guest_busy,
    members::Target,
    report,
    shell::{AgentShell, Guest, Routed},
    steps::{self, Ctx},
    subject,
};
use crate::{
    api::{
        KeptSnapshot, MemberRun, UpdateMember, UpdateMode, UpdatePolicy, UpdatePolicySpec, UpdatePolicyStatus, UpdateResult, UpdateRun,
        UpdateStep,
    },
    providers::pve::{GuestKind, PveUpdateApi, Upid},
    reconcile::{EventNote, ReconcileError, StatusSink},
};

/// A run's id: its start time, which names its snapshots and its files in the guests.
fn run_id(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%d-%H%M%S").to_string()
}

fn cron_next(schedule: &str, after: jiff::Timestamp) -> Result<jiff::Timestamp, ReconcileError> {
    let cron = crate::cron::parse("spec.schedule", schedule).map_err(ReconcileError::Config)?;
    cron.find_next_occurrence(&after.to_zoned(jiff::tz::TimeZone::UTC), false)
        .map(|z| z.timestamp())
        .map_err(|e| ReconcileError::Config(format!("spec.schedule {schedule:?}: {e}")))
}

/// Start a run when one is due and none is in flight: a new `update-now`
/// value, or the schedule's time. Returns what started it.
pub fn start_if_due(
    spec: &UpdatePolicySpec,
    status: &mut UpdatePolicyStatus,
    request: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Option<String>, ReconcileError> {
    let mut due = None;
    if let Some(schedule) = &spec.schedule {
        let next = match status.next_run.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
            Some(t) => t,
            None => cron_next(schedule, now)?,
        };
        if next <= now {
            due = Some(format!("schedule {next}"));
            status.next_run = Some(cron_next(schedule, now)?.to_string());
        } else {
            status.next_run = Some(next.to_string());
        }
    } else {
        status.next_run = None;
    }
    if let Some(r) = request.filter(|r| !r.is_empty() && status.last_request.as_deref() != Some(*r)) {
        status.last_request = Some(r.to_string());
        due = Some(r.to_string());
    }
    let in_flight = status.run.as_ref().is_some_and(|r| r.finished.is_none());
    let Some(request) = due.filter(|_| !in_flight) else {
        return Ok(None);
    };
    let id = run_id(now);
    for m in &mut status.members {
        m.last_run = Some(MemberRun {
            run: id.clone(),
            ..Default::default()
        });
    }
    let note = format!(
        "run {id} ({:?}) started by {request} over {} members",
        spec.mode,
        status.members.len()
    );
    status.run = Some(UpdateRun {
        id,
        request,
        mode: spec.mode,
        started: now.to_string(),
        finished: None,
        notified: false,
    });
    Ok(Some(note))
}

/// Whether a guest's update could start now and end inside a window.
fn window_fits(spec: &UpdatePolicySpec, now: jiff::Timestamp) -> Result<bool, ReconcileError> {
    if spec.windows.is_empty() || spec.mode == UpdateMode::Check {
        return Ok(true);
    }
    let need = jiff::SignedDuration::from_secs(spec.timeout_minutes as i64 * 60);
    for w in &spec.windows {
        let cron = crate::cron::parse("windows.schedule", &w.schedule).map_err(ReconcileError::Config)?;
        let len = jiff::SignedDuration::from_secs(w.duration_minutes as i64 * 60);
        let from = (now - len).to_zoned(jiff::tz::TimeZone::UTC);
        if let Ok(start) = cron.find_next_occurrence(&from, true)
            && start.timestamp() <= now
            && start.timestamp() + len >= now + need
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The members as the cluster shows them now, by VMID.
async fn guests<P: PveUpdateApi>(api: &P, targets: &[Target]) -> Result<BTreeMap<u32, Guest>, ReconcileError> {
    let resources = api
        .cluster_resources()
        .await
        .map_err(|e| ReconcileError::pve("listing the cluster's guests", e))?;
    Ok(targets
        .iter()
        .filter_map(|t| {
            let r = resources.iter().find(|r| r.vmid == t.vmid as u64)?;
            Some((
                t.vmid,
                Guest {
                    name: t.name.clone(),
                    vmid: t.vmid,
                    kind: GuestKind::from_resource_type(&r.kind).unwrap_or(t.kind),
                    node: r.node.clone(),
                    running: r.status.as_deref() == Some("running"),
                    lock: r.lock.clone(),
                },
            ))
        })
        .collect())
}

/// Let the next members in (at most `maxParallel` in flight; all of them for
/// a check), or skip those left when the run stops or the window is closed.
fn admit(spec: &UpdatePolicySpec, status: &mut UpdatePolicyStatus, run: &str, window_open: bool) {
    let of_run = |r: &Option<MemberRun>| r.as_ref().filter(|r| r.run == run).cloned();
    let runs: Vec<Option<MemberRun>> = status.members.iter().map(|m| of_run(&m.last_run)).collect();
    let stopped_by = status
        .members
        .iter()
        .zip(&runs)
        .find(|(_, r)| spec.stop_on_failure && r.as_ref().is_some_and(|r| failed(r.result)))
        .map(|(m, _)| m.name.clone());
    let mut in_flight = runs
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_some_and(|r| !matches!(r.step, UpdateStep::Waiting | UpdateStep::Done))
        })
        .count();
    let limit = match spec.mode {
        UpdateMode::Check => usize::MAX,
        UpdateMode::Apply => spec.max_parallel.max(1) as usize,
    };
    for m in &mut status.members {
        let Some(r) = m.last_run.as_mut().filter(|r| r.run == run && r.step == UpdateStep::Waiting) else {
            continue;
        };
        match (&stopped_by, window_open) {
            (Some(who), _) => steps::finish(r, UpdateResult::Skipped, Some(format!("stopped: the update of {who} failed"))),
            (None, false) => steps::finish(r, UpdateResult::Skipped, Some("outside the maintenance windows".into())),
            (None, true) if in_flight < limit => {
                r.step = UpdateStep::Preflight;
                in_flight += 1;
            }
            (None, true) => {}
        }
    }
}

/// Move every member of the run in flight on as far as it goes.
pub async fn advance<P: PveUpdateApi>(
    apis: &Apis<'_, P>,
    policy: &UpdatePolicy,
    targets: &[Target],
    status: &mut UpdatePolicyStatus,
    sink: &dyn StatusSink<UpdatePolicyStatus>,
) -> Result<Duration, ReconcileError> {
    let Some(run) = status.run.clone() else { return Ok(Duration::MAX) };
    let guests = guests(apis.pve, targets).await?;
    let agent = AgentShell { api: apis.pve };
    let shell = Routed {
        agent: &agent,
        ssh: apis.ssh,
    };
    let ctx = Ctx {
        api: apis.pve,
        shell: &shell,
        spec: &policy.spec,
        run: &run.id,
        validator: apis.validator,
        sink,
        busy: apis.busy,
    };
    let mut wait = Duration::MAX;
    // A run a person asked for (update-now) starts its guests at once; a scheduled one only inside a window.
    let scheduled = run.request.starts_with("schedule ");
    let open = || -> Result<bool, ReconcileError> { Ok(!scheduled || window_fits(&policy.spec, jiff::Timestamp::now())?) };
    admit(&policy.spec, status, &run.id, open()?);
    preflights(&ctx, status, &run.id, &guests).await?;
    // Admitting again after each member lets the next one in once one ends.
    for i in 0..status.members.len() {
        admit(&policy.spec, status, &run.id, open()?);
        let Some(r) = status.members[i].last_run.as_ref().filter(|r| r.run == run.id) else {
            continue;
        };
        if matches!(r.step, UpdateStep::Waiting | UpdateStep::Done) {
            continue;
        }
        let guest = guests.get(&status.members[i].vmid);
        wait = wait.min(steps::advance(&ctx, status, i, guest).await?);
        let r = status.members[i].last_run.as_ref().map(|r| r.step);
        (apis.busy)(&status.members[i].name, r.is_some_and(guest_busy));
    }
    admit(&policy.spec, status, &run.id, open()?);
    Ok(if report::in_flight(status, &run.id) { wait.min(POLL) } else { wait })
}

/// How many members' preflights run at once (they only read).
const PREFLIGHTS_AT_ONCE: usize = 16;

/// The preflights of the members admitted, at once: they only read the
/// guests, and a `Check` run is nothing else.
async fn preflights<P: PveUpdateApi>(
    ctx: &Ctx<'_, P>,
    status: &mut UpdatePolicyStatus,
    run: &str,
    guests: &BTreeMap<u32, Guest>,
) -> Result<(), ReconcileError> {
    use futures::{StreamExt, TryStreamExt};
    let due: Vec<(usize, UpdateMember, Guest)> = status
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.last_run.as_ref().is_some_and(|r| r.run == run && r.step == UpdateStep::Preflight))
        .filter_map(|(i, m)| Some((i, m.clone(), guests.get(&m.vmid)?.clone())))
        .collect();
    let done: Vec<(usize, UpdateMember)> = futures::stream::iter(due)
        .map(|(i, mut m, g)| async move { steps::preflight(ctx, &mut m, &g).await.map(|_| (i, m)) })
        .buffer_unordered(PREFLIGHTS_AT_ONCE)
        .try_collect()
        .await?;
    for (i, m) in done {
        status.members[i] = m;
    }
    Ok(())
}

/// End the run once no member is in flight: its summary, its snapshots
/// kept, its one notification.
pub async fn finish_if_done<P>(apis: &Apis<'_, P>, policy: &UpdatePolicy, status: &mut UpdatePolicyStatus) -> Option<EventNote> {
    let run = status.run.clone()?;
    if run.finished.is_some() || report::in_flight(status, &run.id) {
        return None;
    }
    let now = jiff::Timestamp::now();
    let keep = crate::human::parse_duration(&policy.spec.keep_snapshot).unwrap_or(Duration::from_secs(86400));
    let until = now + jiff::SignedDuration::try_from(keep).unwrap_or_default();
    for m in &status.members {
        if let Some(name) = m.last_run.as_ref().filter(|r| r.run == run.id).and_then(|r| r.snapshot.clone()) {
            status.snapshots.push(KeptSnapshot {
                vmid: m.vmid,
                name,
                keep_until: until.to_string(),
                task: None,
            });
        }
    }
    let summary = report::summary(status, &run.id);
    status.last_result = Some(summary.clone());
    if !policy.spec.notify.is_empty() {
        let msg = report::notification(status, &subject(policy), &run.id);
        apis.notifier.send_all(&policy.spec.notify, &msg).await;
    }
    if let Some(r) = status.run.as_mut() {
        r.finished = Some(now.to_string());
        r.notified = !policy.spec.notify.is_empty();
    }
    let bad = status
        .members
        .iter()
        .any(|m| m.last_run.as_ref().is_some_and(|r| r.run == run.id && failed(r.result)));
    Some(match bad {
        true => EventNote::warning("UpdateFailed", format!("run {}: {summary}", run.id)),
        false => EventNote::normal("RunFinished", format!("run {}: {summary}", run.id)),
    })
}

/// Delete the kept snapshots whose time is up (each saved with its task
/// before the delete, so a restart polls it).
pub async fn delete_kept_snapshots<P: PveUpdateApi>(
    apis: &Apis<'_, P>,
    cluster: &str,
    status: &mut UpdatePolicyStatus,
    sink: &dyn StatusSink<UpdatePolicyStatus>,
) -> Result<Duration, ReconcileError> {
    let now = jiff::Timestamp::now();
    let due = |k: &KeptSnapshot| k.task.is_some() || k.keep_until.parse::<jiff::Timestamp>().is_ok_and(|t| t <= now);
    if !status.snapshots.iter().any(due) {
        return Ok(status
            .snapshots
            .iter()
            .filter_map(|k| k.keep_until.parse::<jiff::Timestamp>().ok())
            .map(|t| now.duration_until(t).unsigned_abs())
            .min()
            .unwrap_or(Duration::MAX));
    }
    let resources = apis
        .cache
        .resources(cluster, apis.pve)
        .await
        .map_err(|e| ReconcileError::pve("listing the cluster's guests", e))?;
    let mut i = 0;
    while i < status.snapshots.len() {
        let k = status.snapshots[i].clone();
        let place = resources.iter().find(|r| r.vmid == k.vmid as u64);
        match (due(&k), place) {
            (false, _) => i += 1,
            // The guest is gone, and its snapshots with it.
            (true, None) => {
                status.snapshots.remove(i);
            }
            (true, Some(r)) => {
                let kind = GuestKind::from_resource_type(&r.kind).unwrap_or(GuestKind::Qemu);
                match delete_one(apis.pve, &r.node, kind, &mut status.snapshots[i]).await? {
                    true => {
                        status.snapshots.remove(i);
                    }
                    false => {
                        sink.save(status).await.map_err(ReconcileError::Status)?;
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(POLL)
}

/// One step of deleting a kept snapshot: true once it is gone.
async fn delete_one<P: PveUpdateApi>(api: &P, node: &str, kind: GuestKind, k: &mut KeptSnapshot) -> Result<bool, ReconcileError> {
    if let Some(upid) = k.task.as_deref().and_then(Upid::parse) {
        let s = api
            .task_status(&upid)
            .await
            .map_err(|e| ReconcileError::pve("polling a snapshot delete", e))?;
        return match (s.status.as_str(), s.exitstatus.as_deref()) {
            ("stopped", Some("OK")) => Ok(true),
            ("stopped", other) => Err(ReconcileError::TaskFailed {
                op: format!("deleting snapshot {} of VMID {}", k.name, k.vmid),
                message: other.unwrap_or("unknown").into(),
            }),
            _ => Ok(false),
        };
    }
    match api.delete_snapshot(node, kind, k.vmid, &k.name).await {
        Ok(upid) => {
            k.task = Some(upid.raw);
            Ok(false)
        }
        Err(e) if e.to_string().contains("does not exist") => Ok(true),
        Err(e) => Err(ReconcileError::pve(format!("deleting snapshot {} of VMID {}", k.name, k.vmid), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_are_pve_config_ids() {
        let name = steps::snapshot_name(&run_id("2026-12-06T18:00:59Z".parse().unwrap()));
        assert_eq!(name, "homelab-upd-20261206-180059");
        let re = regex::Regex::new("^[a-z][a-z0-9_-]+$").unwrap();
        assert!(re.is_match(&name) && name.len() <= 40);
    }

    #[test]
    fn a_window_must_hold_the_whole_timeout() {
        let spec: UpdatePolicySpec = serde_json::from_value(serde_json::json!({
            "mode": "Apply", "timeoutMinutes": 30,
            "windows": [{"schedule": "0 3 * * *", "durationMinutes": 60}],
        }))
        .unwrap();
        let at = |t: &str| window_fits(&spec, t.parse().unwrap()).unwrap();
        assert!(at("2026-12-06T03:00:00Z"));
        assert!(at("2026-12-06T03:30:00Z"), "ends exactly at the window's end");
        assert!(!at("2026-12-06T03:31:00Z"), "would run past the window");
        assert!(!at("2026-12-06T12:00:00Z"));
    }
}
