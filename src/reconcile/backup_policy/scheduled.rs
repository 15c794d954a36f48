//! The job's scheduled runs: once the `nextRun` the policy last saw has
//! passed, the member nodes' vzdump tasks started since then are found in
//! their task lists and followed like a "back up now" run. Between runs this
//! costs nothing.

use std::collections::BTreeSet;

use super::{freshness::Member, run};
use crate::{
    api::{BackupPolicyStatus, BackupRun, RunTask},
    providers::pve::PveApi,
    reconcile::ReconcileError,
};

/// How long after its time a scheduled run may take to show up (pvescheduler runs once a minute).
const GRACE: u64 = 15 * 60;

/// Follow the run due at `due` (RFC 3339, the previous `nextRun`); true while it is in flight.
pub async fn follow<P: PveApi>(
    api: &P,
    members: &[Member],
    due: Option<&str>,
    status: &mut BackupPolicyStatus,
) -> Result<bool, ReconcileError> {
    let now = jiff::Timestamp::now();
    if let Some(t) = due.and_then(|d| d.parse::<jiff::Timestamp>().ok()).filter(|t| *t <= now) {
        let request = format!("schedule {t}");
        if status.last_scheduled_run.as_ref().map(|r| r.request.as_str()) != Some(request.as_str()) {
            status.last_scheduled_run = Some(BackupRun {
                request,
                started: t.to_string(),
                ..Default::default()
            });
        }
    }
    let Some(run) = status.last_scheduled_run.as_mut().filter(|r| r.finished.is_none()) else {
        return Ok(false);
    };
    let since = run
        .started
        .parse::<jiff::Timestamp>()
        .map_or(0, |t| t.as_second().max(60) as u64 - 60);
    if run.tasks.is_empty() {
        let nodes: BTreeSet<&str> = members.iter().filter_map(|m| m.node.as_deref()).collect();
        for node in nodes {
            let tasks = api
                .node_tasks(node, "vzdump", since)
                .await
                .map_err(|e| ReconcileError::pve(format!("listing vzdump tasks on {node}"), e))?;
            run.tasks.extend(tasks.into_iter().map(|t| RunTask {
                node: node.to_string(),
                upid: t.upid,
                exit: None,
            }));
        }
        if run.tasks.is_empty() {
            if now.as_second() as u64 > since + 60 + GRACE {
                run.finished = Some(now.to_string());
                run.result = Some("no vzdump task ran on the members' nodes".into());
                return Ok(false);
            }
            return Ok(true);
        }
    }
    let ended = run::poll(api, run).await?;
    // Only members' failures belong to this policy (a task may also back up other jobs' guests).
    let ours: BTreeSet<u32> = members.iter().map(|m| m.vmid).collect();
    run.failed.retain(|f| ours.contains(&f.vmid));
    if ended {
        run.result = Some(match run.failed.len() {
            0 => "OK".into(),
            n => format!("{n} guests failed"),
        });
    }
    Ok(!ended)
}
