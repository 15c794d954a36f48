//! BackupPolicy as both front ends drive it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::{
    Apis, PolicyObject, PolicyOutcome, PolicyPlan,
    freshness::Member,
    job::{self, JobPlan},
    members,
    pbs_jobs::PbsStep,
};
use crate::{
    api::{self, BackupPolicy, BackupPolicyStatus},
    providers::{pbs::PbsClient, pve::PveClient},
    reconcile::{
        Change, Cleanup, Env, POLL_TASK, ReconcileError, StatusSink,
        kind::{Fut, Kind, Lookup, Pass, namespace, ready_cells, waiting},
        ownership::Identity,
    },
};

fn apis<'a>(env: Env<'a>, p: &BackupPolicy) -> Result<Apis<'a, PveClient, PbsClient>, ReconcileError> {
    Ok(Apis {
        pve: env.providers.pve(&p.spec.cluster)?,
        pbs: p.spec.pbs.as_ref().and_then(|x| env.providers.pbs.get(&x.endpoint)),
        notifier: Some(&env.providers.notifier),
        snapshots: Some(super::pbs::SharedSnapshots {
            listings: &env.cache.snapshots,
            max_age: crate::reconcile::listings::max_age(env.drift.period()),
        }),
    })
}

/// What `plan` shows for a policy's job.
pub fn job_change(job: &JobPlan) -> Option<Change> {
    match job {
        JobPlan::Create { id, params } => {
            let get = |k: &str| params.iter().find(|(key, _)| key == k).map_or("", |(_, v)| v.as_str());
            Some(Change::new(
                '+',
                format!(
                    "create backup job {id}: {} to {} for VMIDs {} ({})",
                    get("schedule"),
                    get("storage"),
                    get("vmid"),
                    get("prune-backups")
                ),
            ))
        }
        JobPlan::Update { id, params } if job::marks_only(params) => Some(Change::new(
            '=',
            format!("adopt: add the ownership mark to backup job {id}'s comment"),
        )),
        JobPlan::Update { id, params } => {
            let fields: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Some(Change::new('~', format!("update backup job {id}: {}", fields.join(", "))))
        }
        JobPlan::Delete { id } => Some(Change::new('-', format!("delete backup job {id} (no members; backups are kept)"))),
        JobPlan::NoChange { .. } | JobPlan::Absent => None,
    }
}

/// A PBS job change as `plan` shows it.
fn pbs_change(step: &PbsStep) -> Change {
    let symbol = match step {
        PbsStep::Create { .. } => '+',
        PbsStep::Update { .. } | PbsStep::SetGcSchedule { .. } => '~',
        PbsStep::Delete { .. } => '-',
    };
    Change::new(symbol, format!("PBS: {}", step.describe()))
}

impl Kind for BackupPolicy {
    type Status = BackupPolicyStatus;
    type Plan = PolicyPlan;
    /// The guests it backs up.
    type Inputs = Vec<Member>;
    const KIND: &'static str = "BackupPolicy";
    const FINALIZER: &'static str = api::BACKUP_FINALIZER;

    fn current_status(&self) -> Option<BackupPolicyStatus> {
        self.status.clone()
    }

    fn set_status(&mut self, status: BackupPolicyStatus) {
        self.status = Some(status);
    }

    fn conditions_mut(status: &mut BackupPolicyStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }

    fn admit(&self) -> Result<(), String> {
        self.validate_cel().map_err(|e| e.to_string())
    }

    fn resolve<'a>(&'a self, env: Env<'a>, lookup: &'a dyn Lookup) -> Fut<'a, Vec<Member>> {
        Box::pin(async move {
            let guests = lookup.guests(namespace(self)).await?;
            if self.spec.all_guests || self.spec.pool.is_some() {
                let pve = env.providers.pve(&self.spec.cluster)?;
                let resources = env
                    .cache
                    .resources(&self.spec.cluster, pve)
                    .await
                    .map_err(|e| ReconcileError::pve("listing the cluster's guests", e))?;
                return Ok(members::from_cluster(self, &resources, &guests));
            }
            members::members(self, &guests).map_err(ReconcileError::Config)
        })
    }

    fn plan<'a>(&'a self, env: Env<'a>, members: &'a Vec<Member>) -> Fut<'a, PolicyOutcome> {
        Box::pin(async move {
            let id = Identity::of(self);
            super::plan(apis(env, self)?, PolicyObject::of(self, &id, members.clone())).await
        })
    }

    fn reconcile<'a>(&'a self, env: Env<'a>, members: Vec<Member>, sink: &'a dyn StatusSink<BackupPolicyStatus>) -> Fut<'a, PolicyOutcome> {
        Box::pin(async move {
            let id = Identity::of(self);
            let mut out = super::reconcile(apis(env, self)?, PolicyObject::of(self, &id, members), sink).await?;
            // Freshness changes with time alone: look again at least every drift period.
            out.requeue = out.requeue.min(env.drift.period().max(std::time::Duration::from_secs(1)));
            Ok(out)
        })
    }

    fn cleanup<'a>(&'a self, env: Env<'a>, _sink: &'a dyn StatusSink<BackupPolicyStatus>) -> Fut<'a, Cleanup<BackupPolicyStatus>> {
        Box::pin(async move {
            let events = super::cleanup(apis(env, self)?, &Identity::of(self), &self.spec).await?;
            Ok(Cleanup::Done(events))
        })
    }

    fn changes(out: &PolicyOutcome) -> Vec<Change> {
        let mut changes: Vec<Change> = job_change(&out.plan.job).into_iter().collect();
        changes.extend(out.plan.pbs_steps.iter().map(pbs_change));
        if changes.is_empty() {
            changes.extend(waiting(&out.status.conditions));
        }
        changes
    }

    /// A "back up now" run or a restore test in flight is followed until it ends.
    fn next_pass(&self, out: &PolicyOutcome) -> Pass {
        match out.requeue == POLL_TASK {
            true => Pass::UntilDeadline(std::time::Duration::from_millis(200)),
            false => Pass::Done,
        }
    }

    fn table_header() -> Vec<&'static str> {
        vec!["NAME", "JOB", "MEMBERS", "FRESH", "READY", "MESSAGE"]
    }

    fn table_row(name: &str, s: &BackupPolicyStatus, error: Option<&str>) -> Vec<String> {
        let mut row = vec![name.to_string()];
        match error {
            Some(e) => row.extend(["-", "-", "-", "False", e].map(String::from)),
            None => {
                row.push(s.job_id.clone().unwrap_or_else(|| "-".into()));
                row.push(s.member_count.to_string());
                row.push(s.fresh.clone().unwrap_or_else(|| "-".into()));
                row.extend(ready_cells(&s.conditions, None));
            }
        }
        row
    }
}
