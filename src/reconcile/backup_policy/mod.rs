//! BackupPolicy: the vzdump job on Proxmox VE for a set of guests, and each
//! member's newest backup. Planning is pure (`job`, `freshness`); this module
//! reads, writes what the plan says, and reports.

pub mod alerts;
pub mod exported;
pub mod freshness;
pub mod job;
mod kind;
pub use kind::job_change;
pub mod members;
pub mod pbs;
pub mod pbs_jobs;
mod report;
pub mod restore_plan;
pub mod restore_test;
pub mod run;
pub mod scheduled;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{EventNote, Outcome, POLL_TASK, RESYNC, ReconcileError, StatusSink, conditions, ownership::Identity};
use crate::{
    api::{self, BackupPolicySpec, BackupPolicyStatus, ConditionState, ManagementMode},
    providers::{
        pbs::PbsApi,
        pve::{PveApi, StorageVolume},
    },
    reconcile::Blocked,
};
use freshness::Member;
use job::JobPlan;
use pbs_jobs::PbsStep;
use report::{failed_line, report};

pub struct PolicyObject<'a> {
    pub id: &'a Identity,
    pub spec: &'a BackupPolicySpec,
    pub status: BackupPolicyStatus,
    pub generation: Option<i64>,
    /// Resolved by the caller from `selector`, `vmids` and guests naming the policy.
    pub members: Vec<Member>,
    /// The `homelab.dev/backup-now` annotation's value.
    pub backup_now: Option<String>,
    /// The `homelab.dev/restore-test-now` annotation's value.
    pub restore_test_now: Option<String>,
    /// When the policy was created: the restore-test schedule counts from here.
    pub created: Option<jiff::Timestamp>,
}

impl<'a> PolicyObject<'a> {
    /// The policy as stored: spec, status, annotations; members resolved by the caller.
    pub fn of(p: &'a api::BackupPolicy, id: &'a Identity, members: Vec<Member>) -> Self {
        let annotation = |k: &str| p.metadata.annotations.as_ref().and_then(|a| a.get(k)).cloned();
        Self {
            id,
            spec: &p.spec,
            status: p.status.clone().unwrap_or_default(),
            generation: p.metadata.generation.or(Some(1)),
            members,
            backup_now: annotation(api::BACKUP_NOW_ANNOTATION),
            restore_test_now: annotation(api::RESTORE_TEST_NOW_ANNOTATION),
            created: p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// What a reconcile of a policy changes (or `plan` would).
#[derive(Debug, Default)]
pub struct PolicyPlan {
    pub job: JobPlan,
    /// PBS job changes (written when the policy's mode is `Reconcile`).
    pub pbs_steps: Vec<PbsStep>,
}

pub type PolicyOutcome = Outcome<BackupPolicyStatus, PolicyPlan>;

/// The outside systems a policy talks to: its cluster, and its backup server when `spec.pbs` names one.
pub struct Apis<'a, P, B> {
    pub pve: &'a P,
    pub pbs: Option<&'a B>,
    /// The shared notifier, for `spec.notify`.
    pub notifier: Option<&'a crate::notify::Notifier>,
    /// Datastore snapshot listings shared by the policies of one datastore
    /// (`None`: every reconcile lists).
    pub snapshots: Option<pbs::SharedSnapshots<'a>>,
}

fn set_conditions(status: &mut BackupPolicyStatus, generation: Option<i64>, wanted: &[ConditionState]) {
    status.conditions = api::merge_conditions(&status.conditions, wanted, generation, Time(jiff::Timestamp::now()));
}

fn blocked(mut status: BackupPolicyStatus, generation: Option<i64>, b: Blocked) -> PolicyOutcome {
    set_conditions(&mut status, generation, &conditions(false, false, true, b.reason, &b.message));
    Outcome {
        status,
        plan: PolicyPlan::default(),
        events: vec![EventNote::warning(b.reason, b.message)],
        requeue: RESYNC,
    }
}

/// The policy's jobs on PVE and PBS as they are, and what they should become.
struct Observed<'a, B> {
    jobs: Vec<crate::providers::pve::BackupJob>,
    plan: PolicyPlan,
    /// The PBS endpoint, its client and what it has, when `spec.pbs` names one.
    server: Option<(&'a api::PbsOptions, &'a B, pbs::Observed)>,
}

/// Read the jobs (and the PBS) and plan them; `Err` carries the outcome when
/// the policy is blocked (a job of the same id that is not ours).
async fn observe<'a, P: PveApi, B: PbsApi>(
    apis: &Apis<'a, P, B>,
    obj: &PolicyObject<'a>,
) -> Result<Result<Observed<'a, B>, PolicyOutcome>, ReconcileError> {
    let (spec, id) = (obj.spec, obj.id);
    if let Some(unknown) = spec.notify.iter().find(|c| !apis.notifier.is_some_and(|n| n.has(c))) {
        return Err(ReconcileError::Config(format!(
            "spec.notify: channel {unknown:?} is not in the config's notifications: section"
        )));
    }
    let vmids: Vec<u32> = obj.members.iter().map(|m| m.vmid).collect();
    // A job over the whole cluster or a pool stands even while it covers no one.
    let standing = spec.all_guests || spec.pool.is_some();
    let want = (standing || !vmids.is_empty()).then(|| job::desired(spec, &vmids, id));
    let jobs = apis
        .pve
        .backup_jobs()
        .await
        .map_err(|e| ReconcileError::pve("listing backup jobs", e))?;
    let job = match job::plan(want.as_ref(), &jobs, id, spec.adopt_job_id.as_deref()) {
        Ok(p) => p,
        Err(b) => return Ok(Err(blocked(obj.status.clone(), obj.generation, b))),
    };
    let names_storage = match &job {
        JobPlan::Create { .. } => true,
        JobPlan::Update { params, .. } => params.iter().any(|(k, _)| k == "storage"),
        _ => false,
    };
    if names_storage {
        storage_takes_backups(apis.pve, spec, &obj.members).await?;
    }
    let server = match (&spec.pbs, apis.pbs) {
        (Some(p), Some(b)) => Some((p, b, pbs::observe(b, p, apis.snapshots.as_ref()).await?)),
        (Some(p), None) => {
            return Err(ReconcileError::Config(format!(
                "spec.pbs.endpoint {:?} names no endpoint in the config's pbs: section",
                p.endpoint
            )));
        }
        (None, _) => None,
    };
    let pbs_steps = match server.as_ref().map(|(_, _, obs)| pbs::plan(Some(spec), obs, id)).transpose() {
        Ok(steps) => steps.unwrap_or_default(),
        Err(b) => return Ok(Err(blocked(obj.status.clone(), obj.generation, b))),
    };
    Ok(Ok(Observed {
        jobs,
        plan: PolicyPlan { job, pbs_steps },
        server,
    }))
}

/// PVE refuses a job whose storage does not exist or holds no backups:
/// checked first, from one node's storage listing (a member's, else the first online node).
async fn storage_takes_backups<P: PveApi>(api: &P, spec: &BackupPolicySpec, members: &[Member]) -> Result<(), ReconcileError> {
    let node = match members.iter().find_map(|m| m.node.clone()) {
        Some(n) => n,
        None => {
            let nodes = api.nodes().await.map_err(|e| ReconcileError::pve("listing the nodes", e))?;
            match nodes.into_iter().find(|n| n.status == "online") {
                Some(n) => n.node,
                None => return Ok(()),
            }
        }
    };
    let storages = api
        .node_storages(&node)
        .await
        .map_err(|e| ReconcileError::pve(format!("listing the storages of {node}"), e))?;
    let name = &spec.storage;
    match storages.iter().find(|s| &s.storage == name) {
        None => Err(ReconcileError::Config(format!(
            "spec.storage: storage {name:?} does not exist on node {node} (its storages: {})",
            storages.iter().map(|s| s.storage.as_str()).collect::<Vec<_>>().join(", ")
        ))),
        Some(s) if !s.accepts("backup") => Err(ReconcileError::Config(format!(
            "spec.storage: storage {name:?} does not hold backups (content: {}); add backup to its content or pick another",
            s.content
        ))),
        Some(_) => Ok(()),
    }
}

/// What reconciling would change, read-only: no job written, no backup or
/// restore test started, nobody notified.
pub async fn plan<P: PveApi, B: PbsApi>(apis: Apis<'_, P, B>, obj: PolicyObject<'_>) -> Result<PolicyOutcome, ReconcileError> {
    if obj.spec.management_mode == ManagementMode::Paused {
        return Ok(paused(obj.status));
    }
    match observe(&apis, &obj).await? {
        Ok(o) => follow(&apis, obj, o, None, vec![]).await,
        Err(out) => Ok(out),
    }
}

/// One reconcile of a policy that is not being deleted: the vzdump job, the
/// PBS jobs, "back up now", freshness, then the restore test and notifications.
pub async fn reconcile<P: PveApi, B: PbsApi>(
    apis: Apis<'_, P, B>,
    obj: PolicyObject<'_>,
    sink: &dyn StatusSink<BackupPolicyStatus>,
) -> Result<PolicyOutcome, ReconcileError> {
    let spec = obj.spec;
    if spec.management_mode == ManagementMode::Paused {
        return Ok(paused(obj.status));
    }
    let o = match observe(&apis, &obj).await? {
        Ok(o) => o,
        Err(out) => return Ok(out),
    };
    let mut events = vec![];
    let writes = spec.management_mode == ManagementMode::Reconcile;
    if writes {
        write_job(apis.pve, &o.plan.job, &mut events).await?;
        if let Some((p, b, obs)) = &o.server {
            pbs::apply(*b, &p.datastore, &o.plan.pbs_steps, obs, &mut events).await?;
        }
    }
    let id = obj.id;
    let mut out = follow(&apis, obj, o, writes.then_some(sink), events).await?;
    // While a run goes on, and once after it ends, snapshots are read fresh.
    if let (Some(shared), Some(p), true) = (&apis.snapshots, &spec.pbs, out.requeue < RESYNC) {
        shared.forget(p).await;
    }
    if let Some(n) = apis.notifier.filter(|_| !spec.notify.is_empty()) {
        alerts::notify(n, &spec.notify, id, &mut out.status).await;
    }
    Ok(out)
}

fn paused(status: BackupPolicyStatus) -> PolicyOutcome {
    Outcome {
        status,
        plan: PolicyPlan::default(),
        events: vec![],
        requeue: RESYNC,
    }
}

/// Everything after the jobs: status of the jobs, runs ("back up now" and
/// scheduled), each member's backups, the restore test, conditions. Backups
/// and restore tests start only with a `sink` to save their state through.
async fn follow<P: PveApi, B: PbsApi>(
    apis: &Apis<'_, P, B>,
    obj: PolicyObject<'_>,
    o: Observed<'_, B>,
    sink: Option<&dyn StatusSink<BackupPolicyStatus>>,
    mut events: Vec<EventNote>,
) -> Result<PolicyOutcome, ReconcileError> {
    let (api, spec, id, members, generation) = (apis.pve, obj.spec, obj.id, &obj.members, obj.generation);
    let mut status = obj.status;
    status.observed_generation = generation;
    status.job_id = job_id(&o.plan.job, sink.is_some());
    let due = status.next_run.take();
    status.next_run = next_run(&o.jobs, status.job_id.as_ref());
    status.pbs_jobs = o
        .server
        .as_ref()
        .map_or_else(Vec::new, |(p, _, obs)| pbs::job_states(obs, id, &p.datastore));
    let request = obj.backup_now.as_deref();
    let mut in_flight = backup_now_step(api, spec, members, request, sink, &mut status, &mut events).await?;
    let before = status.last_scheduled_run.clone();
    let following = scheduled::follow(api, members, due.as_deref(), &mut status).await?;
    let ended_now = status.last_scheduled_run.as_ref().is_some_and(|r| r.finished.is_some()) && status.last_scheduled_run != before;
    if ended_now {
        events.extend(scheduled_outcome(&status, members));
    }
    let backups = match &o.server {
        Some((_, _, obs)) => pbs::as_volumes(&spec.storage, &obs.snapshots),
        None => storage_backups(api, spec, members).await?,
    };
    observe_backups(spec, members, &backups, &mut status);
    if let (Some(rt), Some(sink)) = (spec.restore_test.as_ref(), sink) {
        let trigger = restore_trigger(rt, obj.restore_test_now.as_deref(), &status, obj.created).map_err(ReconcileError::Config)?;
        in_flight |= restore_test::step(api, rt, trigger, &mut status, sink, &mut events).await?;
    }
    report(spec, &o.plan.job, &o.plan.pbs_steps, &mut status, generation, sink.is_some());
    Ok(Outcome {
        status,
        plan: o.plan,
        events,
        requeue: match (in_flight, following) {
            (true, _) => POLL_TASK,
            // A scheduled run is watched, not driven: a slower look is enough.
            (false, true) => Duration::from_secs(30),
            (false, false) => RESYNC,
        },
    })
}

/// The job the policy has after this reconcile (a planned one only once written).
fn job_id(plan: &JobPlan, wrote: bool) -> Option<String> {
    match plan {
        JobPlan::Create { id, .. } if wrote => Some(id.clone()),
        JobPlan::Update { id, .. } | JobPlan::NoChange { id } => Some(id.clone()),
        JobPlan::Delete { id } if !wrote => Some(id.clone()),
        _ => None,
    }
}

fn next_run(jobs: &[crate::providers::pve::BackupJob], id: Option<&String>) -> Option<String> {
    jobs.iter()
        .find(|j| Some(&j.id) == id)
        .and_then(|j| j.next_run)
        .and_then(|t| jiff::Timestamp::from_second(t as i64).ok())
        .map(|t| t.to_string())
}

/// The event for a scheduled run that just ended.
fn scheduled_outcome(status: &BackupPolicyStatus, members: &[Member]) -> Option<EventNote> {
    let run = status.last_scheduled_run.as_ref()?;
    Some(match (run.failed.is_empty(), run.result.as_deref()) {
        (true, Some("OK")) => EventNote::normal(
            "ScheduledBackupFinished",
            format!("scheduled backup ({}) finished: OK", run.started),
        ),
        (true, other) => EventNote::warning(
            "ScheduledBackupMissing",
            format!("scheduled backup ({}): {}", run.started, other.unwrap_or("")),
        ),
        (false, _) => EventNote::warning(
            "BackupFailed",
            failed_line(run, |v| members.iter().find(|m| m.vmid == v).and_then(|m| m.name.clone())),
        ),
    })
}

fn restore_trigger(
    rt: &api::RestoreTest,
    request: Option<&str>,
    status: &BackupPolicyStatus,
    created: Option<jiff::Timestamp>,
) -> Result<Option<restore_test::Trigger>, String> {
    let now = jiff::Timestamp::now();
    let last = status.last_restore_test.as_ref();
    let due = restore_plan::due(rt, request, last, created.unwrap_or(now), now)?;
    Ok(due.map(|r| restore_test::Trigger {
        annotation: request.filter(|a| *a == r).map(str::to_string),
        request: r,
    }))
}

/// Start a requested run (with a `sink` to save it through), poll the one in flight; true while it runs.
async fn backup_now_step<P: PveApi>(
    api: &P,
    spec: &BackupPolicySpec,
    members: &[Member],
    request: Option<&str>,
    sink: Option<&dyn StatusSink<BackupPolicyStatus>>,
    status: &mut BackupPolicyStatus,
    events: &mut Vec<EventNote>,
) -> Result<bool, ReconcileError> {
    if let Some(sink) = sink.filter(|_| !members.is_empty())
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

/// Every member's backups from one listing of the storage (on the node of
/// the first member; a PBS or shared storage lists the same everywhere).
async fn storage_backups<P: PveApi>(api: &P, spec: &BackupPolicySpec, members: &[Member]) -> Result<Vec<StorageVolume>, ReconcileError> {
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
    match &node {
        Some(n) => api
            .storage_content(n, &spec.storage, Some("backup"))
            .await
            .map_err(|e| ReconcileError::pve(format!("listing backups on storage {}", spec.storage), e)),
        None => Ok(vec![]),
    }
}

fn observe_backups(spec: &BackupPolicySpec, members: &[Member], backups: &[StorageVolume], status: &mut BackupPolicyStatus) {
    let max_age = freshness::parse_age(&spec.max_age).unwrap_or(Duration::from_secs(26 * 3600));
    let now = jiff::Timestamp::now();
    let before = std::mem::take(&mut status.members);
    status.members = freshness::members(members, backups, now.as_second().max(0) as u64, max_age);
    for m in &mut status.members {
        let known = before.iter().find(|b| b.vmid == m.vmid).and_then(|b| b.since.clone());
        m.since = known.or_else(|| Some(now.to_string()));
    }
    status.member_count = status.members.len() as u32;
    let fresh = status.members.iter().filter(|m| m.fresh).count();
    status.fresh = Some(format!("{fresh}/{}", status.members.len()));
    status.last_backup = status
        .members
        .iter()
        .filter_map(|m| m.newest.as_ref())
        .map(|b| b.time.clone())
        .max();
}

/// The policy goes: delete the jobs it created on PVE and PBS (`Delete`) or
/// leave them (`Retain`); backups and the datastore's GC schedule stay.
pub async fn cleanup<P: PveApi, B: PbsApi>(
    apis: Apis<'_, P, B>,
    id: &Identity,
    spec: &BackupPolicySpec,
) -> Result<Vec<EventNote>, ReconcileError> {
    let mut events = vec![];
    if spec.deletion_policy == api::DeletionPolicy::Retain || spec.management_mode != ManagementMode::Reconcile {
        return Ok(events);
    }
    let jobs = apis
        .pve
        .backup_jobs()
        .await
        .map_err(|e| ReconcileError::pve("listing backup jobs", e))?;
    match job::plan(None, &jobs, id, spec.adopt_job_id.as_deref()) {
        Ok(plan) => write_job(apis.pve, &plan, &mut events).await?,
        // A job with our id but not our mark is not ours to delete.
        Err(b) => events.push(EventNote::warning(b.reason, b.message)),
    }
    if let (Some(p), Some(b)) = (&spec.pbs, apis.pbs) {
        let obs = pbs::observe(b, p, None).await?;
        match pbs::plan(None, &obs, id) {
            Ok(steps) => pbs::apply(b, &p.datastore, &steps, &obs, &mut events).await?,
            Err(blocked) => events.push(EventNote::warning(blocked.reason, blocked.message)),
        }
    }
    Ok(events)
}
