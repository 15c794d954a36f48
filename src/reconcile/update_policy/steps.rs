//! One member's run, step by step: preflight, snapshot, update, reboot,
//! validation, and on failure rollback and validation again. Every step that
//! changes something is saved in status before its call, with what it
//! started (a task, a launched update), so a restarted operator resumes at
//! the same step: it polls what was started instead of starting it again.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{
    script::{self, PackageManager, RunFiles},
    shell::{Guest, GuestShell, Ran, ShellError},
};
use crate::{
    api::{MemberRun, RebootPolicy, UpdateMember, UpdateMode, UpdatePolicySpec, UpdatePolicyStatus, UpdateResult, UpdateStep},
    providers::pve::{PveUpdateApi, Upid},
    reconcile::{ReconcileError, StatusSink},
};

/// What validation found wrong with a guest (empty: all good).
pub trait Validator: Send + Sync {
    fn problems<'a>(&'a self, guest: &'a Guest) -> BoxFuture<'a, Result<Vec<String>, ReconcileError>>;
}

/// What every step of one run reads.
pub struct Ctx<'a, P> {
    pub api: &'a P,
    pub shell: &'a dyn GuestShell,
    pub spec: &'a UpdatePolicySpec,
    pub run: &'a str,
    pub validator: &'a dyn Validator,
    pub sink: &'a dyn StatusSink<UpdatePolicyStatus>,
    /// Marks the guest's monitors as in maintenance (true) or not.
    pub busy: &'a (dyn Fn(&str, bool) + Sync),
}

/// After one step: go on at once, or look again later.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Moved,
    Wait(Duration),
}

const POLL: Duration = Duration::from_secs(2);

/// The snapshot a run takes (PVE `pve-configid`, at most 40 characters).
pub fn snapshot_name(run: &str) -> String {
    format!("homelab-upd-{run}")
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

fn elapsed_since(t: Option<&str>) -> Duration {
    t.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(Duration::ZERO, |t| now().duration_since(t).unsigned_abs())
}

fn member_run(status: &mut UpdatePolicyStatus, i: usize) -> &mut MemberRun {
    status.members[i].last_run.get_or_insert_with(Default::default)
}

fn enter(run: &mut MemberRun, step: UpdateStep) {
    run.step = step;
    run.task = None;
    run.step_since = Some(now().to_string());
}

/// End the member's run with `result`.
pub fn finish(run: &mut MemberRun, result: UpdateResult, reason: Option<String>) {
    run.step = UpdateStep::Done;
    run.task = None;
    run.result = Some(result);
    run.reason = reason;
    run.finished = Some(now().to_string());
}

async fn save<P>(ctx: &Ctx<'_, P>, status: &UpdatePolicyStatus) -> Result<(), ReconcileError> {
    ctx.sink.save(status).await.map_err(ReconcileError::Status)
}

/// Advance member `i` as far as it goes without waiting.
pub async fn advance<P: PveUpdateApi>(
    ctx: &Ctx<'_, P>,
    status: &mut UpdatePolicyStatus,
    i: usize,
    guest: Option<&Guest>,
) -> Result<Duration, ReconcileError> {
    for _ in 0..12 {
        let step = member_run(status, i).step;
        if step == UpdateStep::Done {
            return Ok(Duration::MAX);
        }
        let Some(g) = guest else {
            let vmid = status.members[i].vmid;
            finish(
                member_run(status, i),
                UpdateResult::Skipped,
                Some(format!("no guest with VMID {vmid} on the cluster")),
            );
            return Ok(Duration::MAX);
        };
        let next = match step {
            UpdateStep::Waiting | UpdateStep::Preflight => {
                preflight(ctx, &mut status.members[i], g).await?;
                Next::Moved
            }
            UpdateStep::Snapshot => snapshot(ctx, status, i, g).await?,
            UpdateStep::Update => update(ctx, status, i, g).await?,
            UpdateStep::Reboot => reboot(ctx, status, i, g).await?,
            UpdateStep::Validate | UpdateStep::Revalidate => validate(ctx, status, i, g).await?,
            UpdateStep::Rollback => rollback(ctx, status, i, g).await?,
            UpdateStep::Done => Next::Moved,
        };
        if let Next::Wait(d) = next {
            return Ok(d);
        }
    }
    Ok(POLL)
}

/// Runs, answers, allows exec, has room; then what is pending. Changes
/// nothing outside and saves nothing: members' preflights may run at once.
pub async fn preflight<P>(ctx: &Ctx<'_, P>, m: &mut UpdateMember, g: &Guest) -> Result<(), ReconcileError> {
    let run = m.last_run.get_or_insert_with(Default::default);
    if run.started.is_none() {
        run.started = Some(now().to_string());
        enter(run, UpdateStep::Preflight);
    }
    let outcome = match inspect(ctx, m, g).await? {
        Err(why) => Some((UpdateResult::Skipped, Some(format!("preflight: {why}")))),
        Ok(()) => match (ctx.spec.mode, m.pending) {
            (UpdateMode::Check, _) => Some((UpdateResult::Checked, None)),
            (UpdateMode::Apply, 0) => Some((UpdateResult::UpToDate, None)),
            (UpdateMode::Apply, _) => None,
        },
    };
    let run = m.last_run.get_or_insert_with(Default::default);
    match outcome {
        Some((result, reason)) => finish(run, result, reason),
        None => {
            enter(run, UpdateStep::Snapshot);
            run.snapshot = Some(snapshot_name(ctx.run));
        }
    }
    Ok(())
}

/// The preflight's look at the guest: why it cannot be updated, or what is pending (on `m`).
async fn inspect<P>(ctx: &Ctx<'_, P>, m: &mut UpdateMember, g: &Guest) -> Result<Result<(), String>, ReconcileError> {
    if !g.running {
        return Ok(Err("the guest is not running".into()));
    }
    let probe = match ran(ctx.shell.run(g, &script::probe()).await)? {
        Ok(r) if r.exit == 0 => script::parse_probe(&r.out),
        Ok(r) => return Ok(Err(format!("the probe exited {}: {}", r.exit, r.last_words()))),
        Err(why) => return Ok(Err(why)),
    };
    let free_mib = probe.free_kib.unwrap_or(0) / 1024;
    if free_mib < ctx.spec.min_free_mi_b as u64 {
        return Ok(Err(format!(
            "{free_mib} MiB free on /, the policy needs {} MiB",
            ctx.spec.min_free_mi_b
        )));
    }
    let manager = PackageManager::detect(&probe.id, &probe.like);
    let custom = ctx.spec.commands.as_ref().and_then(|c| c.check.as_deref());
    if manager.is_none() && custom.is_none() {
        return Ok(Err(format!(
            "no known package manager for {:?}: set commands.check and commands.apply",
            probe.id
        )));
    }
    check(ctx, m, g, manager, custom).await
}

/// A shell's answer, or why the guest could not run it (a call failure is an error).
fn ran(r: Result<Ran, ShellError>) -> Result<Result<Ran, String>, ReconcileError> {
    match r {
        Ok(r) => Ok(Ok(r)),
        Err(ShellError::Unavailable(why)) => Ok(Err(why)),
        Err(ShellError::Call(e)) => Err(e),
    }
}

/// Run the check and record what is pending on the member.
pub async fn check<P>(
    ctx: &Ctx<'_, P>,
    member: &mut UpdateMember,
    g: &Guest,
    manager: Option<PackageManager>,
    custom: Option<&str>,
) -> Result<Result<(), String>, ReconcileError> {
    let r = match ran(ctx.shell.run(g, &script::check(manager, custom)).await)? {
        Ok(r) if r.exit == 0 => r,
        Ok(r) => return Ok(Err(format!("the check exited {}: {}", r.exit, r.last_words()))),
        Err(why) => return Ok(Err(why)),
    };
    let format = match custom {
        Some(_) => "custom",
        None => manager.map_or("custom", PackageManager::name),
    };
    let pending = script::parse_pending(format, &r.out);
    member.package_manager = manager.map(|m| m.name().to_string());
    member.pending = pending.packages.len() as u32;
    member.security = pending.security;
    member.packages = pending.packages.into_iter().take(20).collect();
    member.checked = Some(now().to_string());
    Ok(Ok(()))
}

/// Follow `task` until it ends: `Ok(None)` while it runs, else its exit status.
async fn task_end<P: PveUpdateApi>(api: &P, task: &str) -> Result<Option<String>, ReconcileError> {
    let Some(upid) = Upid::parse(task) else {
        return Ok(Some(format!("not a task: {task}")));
    };
    let s = api.task_status(&upid).await.map_err(|e| ReconcileError::pve("polling a task", e))?;
    Ok((s.status == "stopped").then(|| s.exitstatus.unwrap_or_else(|| "unknown".into())))
}

/// Take the snapshot; nothing is changed on a guest without one.
async fn snapshot<P: PveUpdateApi>(ctx: &Ctx<'_, P>, status: &mut UpdatePolicyStatus, i: usize, g: &Guest) -> Result<Next, ReconcileError> {
    let name = member_run(status, i).snapshot.clone().unwrap_or_else(|| snapshot_name(ctx.run));
    let Some(task) = member_run(status, i).task.clone() else {
        save(ctx, status).await?;
        match ctx.api.snapshot(&g.node, g.kind, g.vmid, &name).await {
            Ok(upid) => {
                member_run(status, i).task = Some(upid.raw);
                save(ctx, status).await?;
                return Ok(Next::Wait(POLL));
            }
            // Taken before a restart lost its task: go on once PVE's lock is gone.
            Err(e) if e.to_string().contains("already used") => {
                if g.lock.is_some() {
                    return Ok(Next::Wait(POLL));
                }
                enter(member_run(status, i), UpdateStep::Update);
                return Ok(Next::Moved);
            }
            Err(e) if e.is_transient() => return Err(ReconcileError::pve(format!("taking snapshot {name}"), e)),
            Err(e) => {
                let run = member_run(status, i);
                run.snapshot = None;
                finish(run, UpdateResult::Failed, Some(format!("snapshot: {e}; nothing was changed")));
                return Ok(Next::Moved);
            }
        }
    };
    match task_end(ctx.api, &task).await? {
        None => Ok(Next::Wait(POLL)),
        Some(exit) if exit == "OK" => {
            enter(member_run(status, i), UpdateStep::Update);
            Ok(Next::Moved)
        }
        Some(exit) => {
            let run = member_run(status, i);
            run.snapshot = None;
            finish(run, UpdateResult::Failed, Some(format!("snapshot: {exit}; nothing was changed")));
            Ok(Next::Moved)
        }
    }
}

/// The command the update runs.
fn apply_command(spec: &UpdatePolicySpec, member: &UpdateMember) -> Option<String> {
    let custom = spec.commands.as_ref().and_then(|c| c.apply.clone());
    custom.or_else(|| {
        member
            .package_manager
            .as_deref()
            .and_then(PackageManager::from_name)
            .map(|m| m.apply_command().to_string())
    })
}

/// Launch the update once, then read its files until it ends.
async fn update<P: PveUpdateApi>(ctx: &Ctx<'_, P>, status: &mut UpdatePolicyStatus, i: usize, g: &Guest) -> Result<Next, ReconcileError> {
    (ctx.busy)(&g.name, true);
    let timeout = Duration::from_secs(ctx.spec.timeout_minutes as u64 * 60);
    if !member_run(status, i).launched {
        let Some(command) = apply_command(ctx.spec, &status.members[i]) else {
            return to_rollback(status, i, "update: no command to run (set commands.apply)".into());
        };
        save(ctx, status).await?;
        // Launching twice is harmless: the guest runs a run's update once.
        match ran(ctx.shell.run(g, &script::launch(ctx.run, &command, timeout.as_secs())).await)? {
            Ok(r) if r.exit == 0 => {
                let run = member_run(status, i);
                run.launched = true;
                run.step_since = Some(now().to_string());
                save(ctx, status).await?;
            }
            Ok(r) => return to_rollback(status, i, format!("update: could not start ({}): {}", r.exit, r.last_words())),
            Err(why) if elapsed_since(member_run(status, i).step_since.as_deref()) > timeout => {
                return to_rollback(status, i, format!("update: could not start: {why}"));
            }
            Err(_) => return Ok(Next::Wait(POLL)),
        }
    }
    let files = match ran(ctx.shell.run(g, &script::result(ctx.run)).await)? {
        Ok(r) => script::parse_result(&r.out),
        // The agent restarts when it is itself upgraded: the run goes on, its files wait.
        Err(_) => RunFiles::Running { output: vec![] },
    };
    let overdue = elapsed_since(member_run(status, i).step_since.as_deref()) > timeout + POLL * 30;
    match files {
        RunFiles::Running { .. } if !overdue => Ok(Next::Wait(POLL)),
        RunFiles::Running { output } => {
            member_run(status, i).output = output;
            to_rollback(
                status,
                i,
                format!("update: still running after {} minutes", ctx.spec.timeout_minutes),
            )
        }
        RunFiles::Absent => to_rollback(status, i, "update: its files are gone from the guest".into()),
        RunFiles::Ended { rc, reboot, output } => {
            let run = member_run(status, i);
            run.output = output;
            if rc != 0 {
                let last = run.output.last().cloned().unwrap_or_default();
                return to_rollback(status, i, format!("update: exited {rc}: {last}"));
            }
            let wanted = match ctx.spec.reboot {
                RebootPolicy::IfRequired => reboot,
                RebootPolicy::Always => true,
                RebootPolicy::Never => false,
            };
            enter(run, if wanted { UpdateStep::Reboot } else { UpdateStep::Validate });
            Ok(Next::Moved)
        }
    }
}

fn to_rollback(status: &mut UpdatePolicyStatus, i: usize, reason: String) -> Result<Next, ReconcileError> {
    let run = member_run(status, i);
    run.reason = Some(reason);
    enter(run, UpdateStep::Rollback);
    Ok(Next::Moved)
}

async fn reboot<P: PveUpdateApi>(ctx: &Ctx<'_, P>, status: &mut UpdatePolicyStatus, i: usize, g: &Guest) -> Result<Next, ReconcileError> {
    (ctx.busy)(&g.name, true);
    let start = || async {
        ctx.api
            .power(&g.node, g.kind, g.vmid, "reboot")
            .await
            .map_err(|e| ReconcileError::pve("rebooting after the update", e))
    };
    match task_step(ctx, status, i, start).await? {
        None => Ok(Next::Wait(POLL)),
        Some(exit) if exit == "OK" => {
            let run = member_run(status, i);
            run.rebooted = true;
            enter(run, UpdateStep::Validate);
            Ok(Next::Moved)
        }
        Some(exit) => to_rollback(status, i, format!("reboot: {exit}")),
    }
}

/// A step that is one Proxmox task: started once (saved before the call and
/// with its UPID after), then polled. `None` while it runs, else its exit status.
async fn task_step<P, F, Fut>(
    ctx: &Ctx<'_, P>,
    status: &mut UpdatePolicyStatus,
    i: usize,
    start: F,
) -> Result<Option<String>, ReconcileError>
where
    P: PveUpdateApi,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Upid, ReconcileError>>,
{
    let Some(task) = member_run(status, i).task.clone() else {
        save(ctx, status).await?;
        let upid = start().await?;
        member_run(status, i).task = Some(upid.raw);
        save(ctx, status).await?;
        return Ok(None);
    };
    task_end(ctx.api, &task).await
}

/// The guest runs, answers, its monitors are Up and the command passes; by the deadline.
async fn validate<P: PveUpdateApi>(ctx: &Ctx<'_, P>, status: &mut UpdatePolicyStatus, i: usize, g: &Guest) -> Result<Next, ReconcileError> {
    let problems = problems(ctx, g).await?;
    let again = member_run(status, i).step == UpdateStep::Revalidate;
    let deadline = Duration::from_secs(ctx.spec.validation.timeout_seconds as u64);
    let late = elapsed_since(member_run(status, i).step_since.as_deref()) > deadline;
    if !problems.is_empty() && !late {
        return Ok(Next::Wait(POLL));
    }
    (ctx.busy)(&g.name, false);
    let run = member_run(status, i);
    match (again, problems.is_empty()) {
        (false, true) => {
            let before = status.members[i].pending;
            refresh_pending(ctx, &mut status.members[i], g).await?;
            let member = &mut status.members[i];
            let run = member.last_run.get_or_insert_with(Default::default);
            run.packages_changed = before.saturating_sub(member.pending);
            finish(run, UpdateResult::Updated, None);
            Ok(Next::Moved)
        }
        (false, false) => to_rollback(status, i, format!("validation: {}", problems.join("; "))),
        (true, true) => {
            let why = run.reason.clone();
            finish(run, UpdateResult::RolledBack, why);
            Ok(Next::Moved)
        }
        (true, false) => {
            let why = format!(
                "{}; after the rollback still: {}",
                run.reason.clone().unwrap_or_default(),
                problems.join("; ")
            );
            finish(run, UpdateResult::RolledBack, Some(why));
            Ok(Next::Moved)
        }
    }
}

/// What is wrong with the guest now: not running, no answer, the command, its monitors.
async fn problems<P>(ctx: &Ctx<'_, P>, g: &Guest) -> Result<Vec<String>, ReconcileError> {
    if !g.running {
        return Ok(vec!["the guest is not running".into()]);
    }
    let command = ctx.spec.validation.command.as_deref().unwrap_or("true");
    let mut out = match ran(ctx.shell.run(g, &script::validate(command)).await)? {
        Ok(r) if r.exit == 0 => vec![],
        Ok(r) => vec![format!("the validation command exited {}: {}", r.exit, r.last_words())],
        Err(why) => vec![format!("the guest does not answer: {why}")],
    };
    out.extend(ctx.validator.problems(g).await?);
    Ok(out)
}

/// After a good update: what is still pending (a failed check keeps the old figures).
async fn refresh_pending<P>(ctx: &Ctx<'_, P>, member: &mut UpdateMember, g: &Guest) -> Result<(), ReconcileError> {
    let manager = member.package_manager.as_deref().and_then(PackageManager::from_name);
    let custom = ctx.spec.commands.as_ref().and_then(|c| c.check.as_deref());
    check(ctx, member, g, manager, custom).await.map(|_| ())
}

/// Back to the snapshot, started; then validated again.
async fn rollback<P: PveUpdateApi>(ctx: &Ctx<'_, P>, status: &mut UpdatePolicyStatus, i: usize, g: &Guest) -> Result<Next, ReconcileError> {
    (ctx.busy)(&g.name, true);
    let Some(name) = member_run(status, i).snapshot.clone() else {
        let why = member_run(status, i).reason.clone();
        finish(member_run(status, i), UpdateResult::Failed, why);
        return Ok(Next::Moved);
    };
    let start = || async {
        ctx.api
            .rollback_and_start(&g.node, g.kind, g.vmid, &name)
            .await
            .map_err(|e| ReconcileError::pve(format!("rolling back to {name}"), e))
    };
    let end = task_step(ctx, status, i, start).await?;
    match end {
        None => Ok(Next::Wait(POLL)),
        Some(exit) if exit == "OK" => {
            let run = member_run(status, i);
            run.rolled_back = true;
            enter(run, UpdateStep::Revalidate);
            Ok(Next::Moved)
        }
        Some(exit) => {
            let run = member_run(status, i);
            let why = format!("{}; the rollback to {name} failed: {exit}", run.reason.clone().unwrap_or_default());
            finish(run, UpdateResult::Failed, Some(why));
            Ok(Next::Moved)
        }
    }
}
