//! BackupPolicy: the vzdump job on Proxmox VE for a set of guests, and each
//! member's newest backup. Planning is pure (`job`, `freshness`); this module
//! reads, writes what the plan says, and reports.

pub mod freshness;
pub mod job;
pub mod members;
pub mod run;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{EventNote, POLL_TASK, RESYNC, ReconcileError, StatusSink, conditions, proxmox_guest::GuestIdentity};
use crate::{
    api::{self, BackupPolicySpec, BackupPolicyStatus, ConditionState, ManagementMode},
    providers::pve::PveApi,
};
use freshness::Member;
use job::JobPlan;

pub struct PolicyObject<'a> {
    pub id: &'a GuestIdentity,
    pub spec: &'a BackupPolicySpec,
    pub status: BackupPolicyStatus,
    pub generation: Option<i64>,
    /// Resolved by the caller from `selector`, `vmids` and guests naming the policy.
    pub members: Vec<Member>,
    /// The `homelab.dev/backup-now` annotation's value.
    pub backup_now: Option<String>,
}

pub struct PolicyOutcome {
    pub status: BackupPolicyStatus,
    pub job: JobPlan,
    pub events: Vec<EventNote>,
    pub requeue: Duration,
}

fn set_conditions(status: &mut BackupPolicyStatus, generation: Option<i64>, wanted: &[ConditionState]) {
    status.conditions = api::merge_conditions(&status.conditions, wanted, generation, Time(jiff::Timestamp::now()));
}

/// One reconcile of a policy that is not being deleted: job, "back up now", then freshness.
pub async fn reconcile<P: PveApi, S: StatusSink<BackupPolicyStatus>>(
    api: &P,
    obj: PolicyObject<'_>,
    sink: &S,
    dry_run: bool,
) -> Result<PolicyOutcome, ReconcileError> {
    let PolicyObject {
        id,
        spec,
        mut status,
        generation,
        members,
        backup_now,
    } = obj;
    let mut events = vec![];
    if spec.management_mode == ManagementMode::Paused {
        return Ok(PolicyOutcome {
            status,
            job: JobPlan::Absent,
            events,
            requeue: RESYNC,
        });
    }
    let vmids: Vec<u32> = members.iter().map(|m| m.vmid).collect();
    let want = (!vmids.is_empty()).then(|| job::desired(spec, &vmids, id));
    let jobs = api.backup_jobs().await.map_err(|e| ReconcileError::pve("listing backup jobs", e))?;
    let plan = match job::plan(want.as_ref(), &jobs, id, spec.adopt_job_id.as_deref()) {
        Ok(p) => p,
        Err(b) => {
            set_conditions(&mut status, generation, &conditions(false, false, true, b.reason, &b.message));
            events.push(EventNote::warning(b.reason, b.message));
            return Ok(PolicyOutcome {
                status,
                job: JobPlan::Absent,
                events,
                requeue: RESYNC,
            });
        }
    };
    let writes = !dry_run && spec.management_mode == ManagementMode::Reconcile;
    if writes {
        write_job(api, &plan, &mut events).await?;
    }
    status.observed_generation = generation;
    status.job_id = match &plan {
        JobPlan::Create { id, .. } if writes => Some(id.clone()),
        JobPlan::Update { id, .. } | JobPlan::NoChange { id } => Some(id.clone()),
        JobPlan::Delete { id } if !writes => Some(id.clone()),
        _ => None,
    };
    status.next_run = jobs
        .iter()
        .find(|j| Some(&j.id) == status.job_id.as_ref())
        .and_then(|j| j.next_run)
        .and_then(|t| jiff::Timestamp::from_second(t as i64).ok())
        .map(|t| t.to_string());
    let in_flight = backup_now_step(api, spec, &members, backup_now.as_deref(), writes, &mut status, sink, &mut events).await?;
    observe_backups(api, spec, &members, &mut status).await?;
    report(spec, &plan, &mut status, generation, writes);
    Ok(PolicyOutcome {
        status,
        job: plan,
        events,
        requeue: if in_flight { POLL_TASK } else { RESYNC },
    })
}

/// Start a requested run, poll the one in flight; true while it runs.
#[allow(clippy::too_many_arguments)]
async fn backup_now_step<P: PveApi, S: StatusSink<BackupPolicyStatus>>(
    api: &P,
    spec: &BackupPolicySpec,
    members: &[Member],
    request: Option<&str>,
    writes: bool,
    status: &mut BackupPolicyStatus,
    sink: &S,
    events: &mut Vec<EventNote>,
) -> Result<bool, ReconcileError> {
    if writes
        && !members.is_empty()
        && let Some(r) = run::requested(request, status)
    {
        run::start(api, spec, members, r.clone(), status, sink).await?;
        events.push(EventNote::normal(
            "BackupStarted",
            format!("backup of {} guests started ({r})", members.len()),
        ));
    }
    let Some(last) = status.last_run.as_mut() else { return Ok(false) };
    let was_running = last.finished.is_none();
    if !run::poll(api, last).await? {
        return Ok(true);
    }
    if was_running {
        events.push(match last.failed.is_empty() {
            true => EventNote::normal("BackupFinished", "backup run finished: OK"),
            false => EventNote::warning(
                "BackupFailed",
                failed_line(last, |v| members.iter().find(|m| m.vmid == v).and_then(|m| m.name.clone())),
            ),
        });
    }
    Ok(false)
}

/// `backup failed for web01 (VMID 100): <error>; …`, names from `name_of`.
fn failed_line(run: &api::BackupRun, name_of: impl Fn(u32) -> Option<String>) -> String {
    let each: Vec<String> = run
        .failed
        .iter()
        .map(|f| match name_of(f.vmid) {
            Some(n) => format!("backup failed for {n} (VMID {}): {}", f.vmid, f.error),
            None => format!("backup failed for VMID {}: {}", f.vmid, f.error),
        })
        .collect();
    each.join("; ")
}

async fn write_job<P: PveApi>(api: &P, plan: &JobPlan, events: &mut Vec<EventNote>) -> Result<(), ReconcileError> {
    match plan {
        JobPlan::Create { id, params } => {
            api.create_backup_job(params.clone())
                .await
                .map_err(|e| ReconcileError::pve("creating the backup job", e))?;
            events.push(EventNote::normal("JobCreated", format!("backup job {id} created")));
        }
        JobPlan::Update { id, params } => {
            api.update_backup_job(id, params.clone())
                .await
                .map_err(|e| ReconcileError::pve("updating the backup job", e))?;
            let fields: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
            events.push(EventNote::normal("JobUpdated", format!("backup job {id}: {}", fields.join(", "))));
        }
        JobPlan::Delete { id } => {
            api.delete_backup_job(id)
                .await
                .map_err(|e| ReconcileError::pve("deleting the backup job", e))?;
            events.push(EventNote::normal(
                "JobDeleted",
                format!("backup job {id} deleted (its backups are kept)"),
            ));
        }
        JobPlan::NoChange { .. } | JobPlan::Absent => {}
    }
    Ok(())
}

/// Every member's newest backup from one listing of the storage (on the
/// node of the first member; a PBS or shared storage lists the same everywhere).
async fn observe_backups<P: PveApi>(
    api: &P,
    spec: &BackupPolicySpec,
    members: &[Member],
    status: &mut BackupPolicyStatus,
) -> Result<(), ReconcileError> {
    let node = match members.iter().find_map(|m| m.node.clone()) {
        Some(n) => Some(n),
        None => api
            .nodes()
            .await
            .map_err(|e| ReconcileError::pve("listing nodes", e))?
            .into_iter()
            .find(|n| n.status == "online")
            .map(|n| n.node),
    };
    let backups = match &node {
        Some(n) => api
            .storage_content(n, &spec.storage, Some("backup"))
            .await
            .map_err(|e| ReconcileError::pve(format!("listing backups on storage {}", spec.storage), e))?,
        None => vec![],
    };
    let max_age = freshness::parse_age(&spec.max_age).unwrap_or(Duration::from_secs(26 * 3600));
    let now = jiff::Timestamp::now().as_second().max(0) as u64;
    status.members = freshness::members(members, &backups, now, max_age);
    status.member_count = status.members.len() as u32;
    let fresh = status.members.iter().filter(|m| m.fresh).count();
    status.fresh = Some(format!("{fresh}/{}", status.members.len()));
    status.last_backup = status
        .members
        .iter()
        .filter_map(|m| m.newest.as_ref())
        .map(|b| b.time.clone())
        .max();
    Ok(())
}

/// Ready only when the job matches the spec (or was just made to) and every member is fresh.
fn report(spec: &BackupPolicySpec, plan: &JobPlan, status: &mut BackupPolicyStatus, generation: Option<i64>, wrote: bool) {
    let unfresh = freshness::unfresh(&status.members, &spec.max_age);
    let job_matches = matches!(plan, JobPlan::NoChange { .. } | JobPlan::Absent) || wrote;
    let wanted = if !job_matches {
        let what = match plan {
            JobPlan::Create { id, .. } => format!("job {id} does not exist"),
            JobPlan::Update { id, params } => {
                let fields: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
                format!("job {id} differs in {}", fields.join(", "))
            }
            JobPlan::Delete { id } => format!("job {id} exists but the policy has no members"),
            JobPlan::NoChange { .. } | JobPlan::Absent => String::new(),
        };
        let msg = format!("{what}; not written ({:?})", spec.management_mode);
        vec![
            ConditionState::new(api::CONDITION_READY, false, "DriftDetected", &msg),
            ConditionState::new(api::CONDITION_DEGRADED, true, "DriftDetected", msg),
        ]
    } else if status.members.is_empty() {
        let msg = "no members: the selector matches no ProxmoxGuest and vmids is empty";
        vec![
            ConditionState::new(api::CONDITION_READY, false, "NoMembers", msg),
            ConditionState::new(api::CONDITION_DEGRADED, true, "NoMembers", msg),
        ]
    } else if let Some(run) = status.last_run.as_ref().filter(|r| !r.failed.is_empty()) {
        let mut msg = failed_line(run, |v| status.members.iter().find(|m| m.vmid == v).and_then(|m| m.name.clone()));
        if !unfresh.is_empty() {
            msg = format!("{msg}; not fresh: {}", unfresh.join("; "));
        }
        vec![
            ConditionState::new(api::CONDITION_READY, false, "BackupFailed", &msg),
            ConditionState::new(api::CONDITION_DEGRADED, true, "BackupFailed", msg),
        ]
    } else if !unfresh.is_empty() {
        let msg = format!(
            "{} of {} members not fresh: {}",
            unfresh.len(),
            status.members.len(),
            unfresh.join("; ")
        );
        vec![
            ConditionState::new(api::CONDITION_READY, false, "BackupsNotFresh", &msg),
            ConditionState::new(api::CONDITION_DEGRADED, true, "BackupsNotFresh", msg),
        ]
    } else {
        let msg = format!("{} members backed up within {}", status.members.len(), spec.max_age);
        vec![
            ConditionState::new(api::CONDITION_READY, job_matches, "Fresh", msg),
            ConditionState::new(api::CONDITION_DEGRADED, false, "AsExpected", ""),
        ]
    };
    let mut all = wanted;
    all.push(ConditionState::new(api::CONDITION_RECONCILING, false, "AsExpected", ""));
    all.push(ConditionState::new(api::CONDITION_STALLED, false, "AsExpected", ""));
    set_conditions(status, generation, &all);
}

/// The policy goes: delete the job it created (`Delete`) or leave it
/// (`Retain`); backups are never deleted.
pub async fn cleanup<P: PveApi>(api: &P, id: &GuestIdentity, spec: &BackupPolicySpec) -> Result<Vec<EventNote>, ReconcileError> {
    let mut events = vec![];
    if spec.deletion_policy == api::DeletionPolicy::Retain || spec.management_mode != ManagementMode::Reconcile {
        return Ok(events);
    }
    let jobs = api.backup_jobs().await.map_err(|e| ReconcileError::pve("listing backup jobs", e))?;
    match job::plan(None, &jobs, id, spec.adopt_job_id.as_deref()) {
        Ok(plan) => write_job(api, &plan, &mut events).await?,
        // A job with our id but not our mark is not ours to delete.
        Err(b) => events.push(EventNote::warning(b.reason, b.message)),
    }
    Ok(events)
}
